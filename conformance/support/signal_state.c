/*
 * signal_state.c — see signal_state.h.
 */
#include "signal_state.h"

#include <signal.h>
#include <string.h>

void signal_state_reset(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    /* glibc reserves two real-time signals for itself: sigaction refuses
     * them (EINVAL), as it does SIGKILL and SIGSTOP; nothing to reset there. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    (void)pthread_sigmask(SIG_SETMASK, &none, NULL);
}
