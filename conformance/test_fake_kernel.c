/*
 * test_fake_kernel.c — the fake kernel's own behaviour, and its honesty.
 *
 * Honesty tests run one scenario twice, once with real fork() children and
 * the real kernel, once with fake children through the fake table, and
 * compare what waitpid/kill/pidfd_open return, their errno, and the raw
 * status (so WIFEXITED, WEXITSTATUS, WIFSIGNALED, WTERMSIG agree). The
 * watcher tests on the fake kernel are only worth what this agreement is.
 *
 * The self-tests have no clause (they test test support code); they are
 * registered with cmocka_unit_test and are not part of the clause matrix.
 */
#include "fake_kernel.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A scenario's observable result. */
typedef struct outcome {
    pid_t ret; /* the pid, 0 or -1; compared as "pid" / 0 / -1 */
    int err;   /* errno when ret == -1 */
    int status;
} outcome;

static outcome do_waitpid(const evpol_sys *k, pid_t pid, int options)
{
    outcome o = {0, 0, -12345};
    errno = 0;
    o.ret = k->waitpid(pid, &o.status, options);
    o.err = o.ret < 0 ? errno : 0;
    return o;
}

/* Compare a real and a fake outcome; the pids differ, so a positive ret is
 * compared as "the pid we asked about". */
static void assert_same(outcome real, pid_t real_pid, outcome fake, pid_t fake_pid)
{
    if (real.ret > 0) {
        assert_int_equal(real.ret, real_pid);
        assert_int_equal(fake.ret, fake_pid);
        assert_int_equal(fake.status, real.status);
        assert_int_equal(WIFEXITED(fake.status), WIFEXITED(real.status));
        assert_int_equal(WIFSIGNALED(fake.status), WIFSIGNALED(real.status));
        if (WIFEXITED(real.status))
            assert_int_equal(WEXITSTATUS(fake.status), WEXITSTATUS(real.status));
        if (WIFSIGNALED(real.status))
            assert_int_equal(WTERMSIG(fake.status), WTERMSIG(real.status));
    } else {
        assert_int_equal(fake.ret, real.ret);
        assert_int_equal(fake.err, real.err);
    }
}

/* Block until a real child is a zombie, without reaping it. */
static void wait_zombie(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) != 0)
        assert_int_equal(errno, EINTR);
}

static void setup_fake(void)
{
    fk_reset();
}

/* ------------------------------------------------------------------ */
/* Honesty: the same scenario on the real kernel and on the fake        */
/* ------------------------------------------------------------------ */

static void honest_exit_code(void **state)
{
    (void)state;
    const evpol_sys *realk = evpol_sys_real();
    setup_fake();

    pid_t rp = fork_exit(3);
    wait_zombie(rp);
    outcome r = do_waitpid(realk, rp, WNOHANG);

    pid_t fp = fk_new_child();
    fk_exit(fp, 3);
    outcome f = do_waitpid(fk_sys(), fp, WNOHANG);

    assert_same(r, rp, f, fp);
    assert_true(WIFEXITED(f.status));
    assert_int_equal(WEXITSTATUS(f.status), 3);
    assert_int_equal(f.status, 3 << 8);
}

static void honest_exit_code_wraps(void **state)
{
    (void)state;
    setup_fake();
    /* exit(300) is seen as 300 & 0xff = 44 by the parent. */
    pid_t rp = fork_exit(300);
    outcome r = do_waitpid(evpol_sys_real(), rp, 0);
    pid_t fp = fk_new_child();
    fk_exit(fp, 300);
    outcome f = do_waitpid(fk_sys(), fp, 0);
    assert_same(r, rp, f, fp);
    assert_int_equal(WEXITSTATUS(f.status), 44);
}

static void honest_killed_by_sigterm(void **state)
{
    (void)state;
    setup_fake();
    int wfd;
    pid_t rp = spawn_waiting_child(&wfd, 0, 0);
    assert_int_equal(evpol_sys_real()->kill(rp, SIGTERM), 0);
    outcome r = do_waitpid(evpol_sys_real(), rp, 0);
    release_child(wfd);

    /* Both ways of killing a fake child: the seam's kill and the helper. */
    pid_t fp = fk_new_child();
    assert_int_equal(fk_sys()->kill(fp, SIGTERM), 0);
    outcome f = do_waitpid(fk_sys(), fp, 0);
    assert_same(r, rp, f, fp);

    pid_t fp2 = fk_new_child();
    assert_int_equal(fk_kill_by_signal(fp2, SIGTERM), 0);
    outcome f2 = do_waitpid(fk_sys(), fp2, 0);
    assert_same(r, rp, f2, fp2);
    assert_true(WIFSIGNALED(f2.status));
    assert_int_equal(WTERMSIG(f2.status), SIGTERM);
}

static void honest_running_nohang(void **state)
{
    (void)state;
    setup_fake();
    int wfd;
    pid_t rp = spawn_waiting_child(&wfd, 0, 0);
    outcome r = do_waitpid(evpol_sys_real(), rp, WNOHANG);

    pid_t fp = fk_new_child();
    outcome f = do_waitpid(fk_sys(), fp, WNOHANG);
    assert_same(r, rp, f, fp);
    assert_int_equal(f.ret, 0);

    release_child(wfd);
    assert_int_equal(waitpid(rp, NULL, 0), rp);
    fk_exit(fp, 0);
    assert_int_equal(fk_sys()->waitpid(fp, NULL, 0), fp);
}

static void honest_reaped_elsewhere(void **state)
{
    (void)state;
    setup_fake();
    pid_t rp = fork_exit(4);
    assert_int_equal(waitpid(rp, NULL, 0), rp); /* "elsewhere" */
    outcome r = do_waitpid(evpol_sys_real(), rp, WNOHANG);

    pid_t fp = fk_new_child();
    fk_exit(fp, 4);
    assert_int_equal(fk_reap_elsewhere(fp), 0);
    outcome f = do_waitpid(fk_sys(), fp, WNOHANG);
    assert_same(r, rp, f, fp);
    assert_int_equal(f.ret, -1);
    assert_int_equal(f.err, ECHILD);

    /* A second waitpid after our own successful one: ECHILD too. */
    pid_t rp2 = fork_exit(5);
    assert_int_equal(waitpid(rp2, NULL, 0), rp2);
    outcome r2 = do_waitpid(evpol_sys_real(), rp2, 0);
    pid_t fp2 = fk_new_child();
    fk_exit(fp2, 5);
    assert_int_equal(fk_sys()->waitpid(fp2, NULL, 0), fp2);
    outcome f2 = do_waitpid(fk_sys(), fp2, 0);
    assert_same(r2, rp2, f2, fp2);
}

static void honest_any_without_children(void **state)
{
    (void)state;
    setup_fake();
    outcome r = do_waitpid(evpol_sys_real(), -1, WNOHANG);
    outcome f = do_waitpid(fk_sys(), -1, WNOHANG);
    assert_same(r, -1, f, -1);
    assert_int_equal(f.ret, -1);
    assert_int_equal(f.err, ECHILD);
    /* Blocking, too: ECHILD at once rather than blocking forever. */
    r = do_waitpid(evpol_sys_real(), -1, 0);
    f = do_waitpid(fk_sys(), -1, 0);
    assert_same(r, -1, f, -1);
}

static void honest_any_running_only(void **state)
{
    (void)state;
    setup_fake();
    int wfd;
    pid_t rp = spawn_waiting_child(&wfd, 0, 0);
    outcome r = do_waitpid(evpol_sys_real(), -1, WNOHANG);
    release_child(wfd);
    assert_int_equal(waitpid(rp, NULL, 0), rp);

    /* No real child now: the fake one alone decides. */
    pid_t fp = fk_new_child();
    outcome f = do_waitpid(fk_sys(), -1, WNOHANG);
    assert_same(r, -1, f, -1);
    assert_int_equal(f.ret, 0);
    fk_exit(fp, 0);
    assert_int_equal(fk_sys()->waitpid(-1, NULL, WNOHANG), fp);
}

/* Linux scans children in creation order: the oldest-created zombie is
 * returned first whatever the order of exits. FK_ORDER_SPAWN mimics it. */
static void honest_reap_order(void **state)
{
    (void)state;
    setup_fake();
    int wa, wb, wc;
    pid_t a = spawn_waiting_child(&wa, 1, 0);
    pid_t b = spawn_waiting_child(&wb, 2, 0);
    pid_t c = spawn_waiting_child(&wc, 3, 0);
    release_child(wc);
    wait_zombie(c);
    release_child(wb);
    wait_zombie(b);
    release_child(wa);
    wait_zombie(a);
    pid_t real_order[3];
    for (int i = 0; i < 3; i++)
        real_order[i] = waitpid(-1, NULL, WNOHANG);

    pid_t fa = fk_new_child(), fb = fk_new_child(), fc = fk_new_child();
    fk_exit(fc, 3);
    fk_exit(fb, 2);
    fk_exit(fa, 1);
    pid_t fake_order[3];
    for (int i = 0; i < 3; i++)
        fake_order[i] = fk_sys()->waitpid(-1, NULL, WNOHANG);

    pid_t rmap[3] = {a, b, c}, fmap[3] = {fa, fb, fc};
    for (int i = 0; i < 3; i++) {
        int ri = -1, fi = -1;
        for (int j = 0; j < 3; j++) {
            if (real_order[i] == rmap[j])
                ri = j;
            if (fake_order[i] == fmap[j])
                fi = j;
        }
        assert_true(ri >= 0);
        assert_int_equal(fi, ri);
    }
    assert_int_equal(fake_order[0], fa);
}

static void honest_invalid_options(void **state)
{
    (void)state;
    setup_fake();
    pid_t rp = fork_exit(0);
    wait_zombie(rp);
    outcome r = do_waitpid(evpol_sys_real(), rp, 0x1000);
    pid_t fp = fk_new_child();
    fk_exit(fp, 0);
    outcome f = do_waitpid(fk_sys(), fp, 0x1000);
    assert_same(r, rp, f, fp);
    assert_int_equal(f.err, EINVAL);
    /* Nothing was reaped by the failed calls. */
    assert_int_equal(waitpid(rp, NULL, 0), rp);
    assert_int_equal(fk_sys()->waitpid(fp, NULL, 0), fp);
}

static void honest_kill(void **state)
{
    (void)state;
    setup_fake();
    const evpol_sys *rk = evpol_sys_real(), *fk = fk_sys();
    int wfd;
    pid_t rp = spawn_waiting_child(&wfd, 9, 0);
    pid_t fp = fk_new_child();

    /* Existence check on a running child. */
    assert_int_equal(rk->kill(rp, 0), 0);
    assert_int_equal(fk->kill(fp, 0), 0);
    /* A signal whose default action is to ignore leaves it running. */
    assert_int_equal(rk->kill(rp, SIGCHLD), 0);
    assert_int_equal(fk->kill(fp, SIGCHLD), 0);
    assert_int_equal(rk->waitpid(rp, NULL, WNOHANG), 0);
    assert_int_equal(fk->waitpid(fp, NULL, WNOHANG), 0);
    /* A bad signal number. */
    errno = 0;
    assert_int_equal(rk->kill(rp, 1000), -1);
    int rerr = errno;
    errno = 0;
    assert_int_equal(fk->kill(fp, 1000), -1);
    assert_int_equal(errno, rerr);

    /* A zombie still exists for kill(pid, 0), and ignores signals. */
    release_child(wfd);
    wait_zombie(rp);
    fk_exit(fp, 9);
    assert_int_equal(rk->kill(rp, 0), 0);
    assert_int_equal(fk->kill(fp, 0), 0);
    assert_int_equal(rk->kill(rp, SIGKILL), 0);
    assert_int_equal(fk->kill(fp, SIGKILL), 0);
    outcome r = do_waitpid(rk, rp, 0);
    outcome f = do_waitpid(fk, fp, 0);
    assert_same(r, rp, f, fp);
    assert_int_equal(WEXITSTATUS(f.status), 9);

    /* Reaped: no such process. */
    errno = 0;
    assert_int_equal(rk->kill(rp, 0), -1);
    rerr = errno;
    errno = 0;
    assert_int_equal(fk->kill(fp, 0), -1);
    assert_int_equal(errno, rerr);
    assert_int_equal(errno, ESRCH);
}

static int poll_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, 0);
    return n == 1 && (p.revents & POLLIN);
}

static void honest_pidfd(void **state)
{
    (void)state;
    setup_fake();
    const evpol_sys *rk = evpol_sys_real(), *fk = fk_sys();
    int wfd;
    pid_t rp = spawn_waiting_child(&wfd, 0, 0);
    int rfd = rk->pidfd_open(rp, 0);
    if (rfd < 0) {
        release_child(wfd);
        waitpid(rp, NULL, 0);
        skip(); /* no pidfd_open here: nothing to compare with */
    }
    pid_t fp = fk_new_child();
    int ffd = fk->pidfd_open(fp, 0);
    assert_true(ffd >= 0);
    assert_true(fcntl(ffd, F_GETFD) & FD_CLOEXEC);

    /* Running: not readable. */
    assert_int_equal(poll_readable(ffd), poll_readable(rfd));
    assert_int_equal(poll_readable(ffd), 0);
    /* Exited: readable; still readable after the reap. */
    release_child(wfd);
    wait_zombie(rp);
    fk_exit(fp, 0);
    assert_int_equal(poll_readable(ffd), poll_readable(rfd));
    assert_int_equal(poll_readable(ffd), 1);
    assert_int_equal(rk->waitpid(rp, NULL, 0), rp);
    assert_int_equal(fk->waitpid(fp, NULL, 0), fp);
    assert_int_equal(poll_readable(ffd), poll_readable(rfd));
    assert_int_equal(rk->close(rfd), 0);
    assert_int_equal(fk->close(ffd), 0);

    /* Gone: ESRCH. Bad flags: EINVAL. */
    errno = 0;
    assert_int_equal(rk->pidfd_open(rp, 0), -1);
    int rerr = errno;
    errno = 0;
    assert_int_equal(fk->pidfd_open(fp, 0), -1);
    assert_int_equal(errno, rerr);
    pid_t fp2 = fk_new_child();
    errno = 0;
    assert_int_equal(rk->pidfd_open(getpid(), 1), -1);
    rerr = errno;
    errno = 0;
    assert_int_equal(fk->pidfd_open(fp2, 1), -1);
    assert_int_equal(errno, rerr);
    /* pidfd_open of a zombie works and is readable at once. */
    fk_exit(fp2, 0);
    int zfd = fk->pidfd_open(fp2, 0);
    assert_true(zfd >= 0);
    assert_int_equal(poll_readable(zfd), 1);
    assert_int_equal(fk->close(zfd), 0);
    assert_int_equal(fk_open_pidfds(), 0);
    assert_int_equal(fk_fd_balance(), 0);
    fk_reset();
}

/* ------------------------------------------------------------------ */
/* Self-tests                                                         */
/* ------------------------------------------------------------------ */

static void fake_pids_are_deterministic(void **state)
{
    (void)state;
    fk_reset();
    pid_t a = fk_new_child(), b = fk_new_child();
    assert_int_equal(a, FK_PID_BASE);
    assert_int_equal(b, FK_PID_BASE + 1);
    assert_true(fk_is_fake_pid(a));
    assert_false(fk_is_fake_pid(getpid()));
    assert_int_equal(fk_count_children(), 2);
    fk_reset();
    assert_int_equal(fk_count_children(), 0);
    assert_int_equal(fk_new_child(), FK_PID_BASE);
    fk_reset();
}

static void fake_states_and_helpers(void **state)
{
    (void)state;
    fk_reset();
    pid_t p = fk_new_child();
    assert_int_equal(fk_child_state(p), FK_RUNNING);
    assert_int_equal(fk_exit(p, 1), 0);
    assert_int_equal(fk_child_state(p), FK_ZOMBIE);
    assert_int_equal(fk_count_zombies(), 1);
    /* Only a running child can exit. */
    assert_int_equal(fk_exit(p, 2), -1);
    assert_int_equal(fk_kill_by_signal(p, SIGTERM), -1);
    assert_int_equal(fk_exit(12345, 0), -1);
    assert_int_equal(fk_kill_by_signal(fk_new_child(), 0), -1);
    int st = 0;
    assert_int_equal(fk_sys()->waitpid(p, &st, WNOHANG), p);
    assert_int_equal(st, 1 << 8);
    assert_int_equal(fk_child_state(p), FK_GONE);
    assert_int_equal(fk_reap_elsewhere(p), -1);
    /* A raw status beyond exit/signal (stopped): delivered as is. */
    pid_t q = fk_new_child();
    assert_int_equal(fk_exit_status(q, 0x137f), 0);
    assert_int_equal(fk_sys()->waitpid(q, &st, WNOHANG), q);
    assert_int_equal(st, 0x137f);
    assert_false(WIFEXITED(st));
    assert_false(WIFSIGNALED(st));
    /* Reaping a running child elsewhere: it exited, and it is gone. */
    pid_t r = fk_new_child();
    assert_int_equal(fk_reap_elsewhere(r), 0);
    assert_int_equal(fk_child_state(r), FK_GONE);
    errno = 0;
    assert_int_equal(fk_sys()->waitpid(r, &st, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    fk_reset();
}

static void fake_reap_orders(void **state)
{
    (void)state;
    static const fk_order orders[3] = {FK_ORDER_SPAWN, FK_ORDER_FIFO, FK_ORDER_LIFO};
    for (int o = 0; o < 3; o++) {
        fk_reset();
        fk_set_reap_order(orders[o]);
        pid_t a = fk_new_child(), b = fk_new_child(), c = fk_new_child();
        fk_exit(b, 2);
        fk_exit(c, 3);
        fk_exit(a, 1);
        pid_t got[3];
        for (int i = 0; i < 3; i++)
            got[i] = fk_sys()->waitpid(-1, NULL, WNOHANG);
        errno = 0;
        assert_int_equal(fk_sys()->waitpid(-1, NULL, WNOHANG), -1);
        assert_int_equal(errno, ECHILD);
        pid_t want[3][3] = {{a, b, c}, {b, c, a}, {a, c, b}};
        for (int i = 0; i < 3; i++)
            assert_int_equal(got[i], want[o][i]);
    }
    fk_reset();
}

typedef struct waiter {
    pthread_t thread;
    pid_t pid;
    int options;
    pid_t ret;
    int err;
    int status;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    errno = 0;
    w->ret = fk_sys()->waitpid(w->pid, &w->status, w->options);
    w->err = w->ret < 0 ? errno : 0;
    return NULL;
}

static void start_waiter(waiter *w, pid_t pid, int options)
{
    memset(w, 0, sizeof *w);
    w->pid = pid;
    w->options = options;
    assert_int_equal(pthread_create(&w->thread, NULL, waiter_main, w), 0);
}

static void fake_blocking_waitpid(void **state)
{
    (void)state;
    fk_reset();
    /* Woken by the exit. */
    pid_t p = fk_new_child();
    waiter w;
    start_waiter(&w, p, 0);
    assert_true(fk_wait_blocked(1, 10000));
    fk_exit(p, 7);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, p);
    assert_int_equal(WEXITSTATUS(w.status), 7);
    assert_int_equal(fk_blocked_waiters(), 0);

    /* Woken with ECHILD when reaped elsewhere. */
    p = fk_new_child();
    start_waiter(&w, p, 0);
    assert_true(fk_wait_blocked(1, 10000));
    fk_reap_elsewhere(p);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, -1);
    assert_int_equal(w.err, ECHILD);

    /* Interrupted while blocked; the child is still there afterwards. */
    p = fk_new_child();
    start_waiter(&w, p, 0);
    assert_true(fk_wait_blocked(1, 10000));
    fk_inject_eintr_blocking(1);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, -1);
    assert_int_equal(w.err, EINTR);
    assert_int_equal(fk_child_state(p), FK_RUNNING);

    /* waitpid(-1, 0) blocks until some child exits. */
    pid_t q = fk_new_child();
    start_waiter(&w, -1, 0);
    assert_true(fk_wait_blocked(1, 10000));
    fk_exit(q, 1);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, q);

    /* A blocked waiter wakes with ECHILD on fk_reset. */
    start_waiter(&w, p, 0);
    assert_true(fk_wait_blocked(1, 10000));
    fk_reset();
    pthread_join(w.thread, NULL);
    assert_int_equal(w.err, ECHILD);
}

static void fake_eintr(void **state)
{
    (void)state;
    fk_reset();
    pid_t p = fk_new_child();
    fk_exit(p, 0);
    /* Blocking-only EINTR does not hit a call that does not block. */
    fk_inject_eintr_blocking(1);
    assert_int_equal(fk_sys()->waitpid(p, NULL, 0), p);
    p = fk_new_child();
    errno = 0;
    assert_int_equal(fk_sys()->waitpid(p, NULL, WNOHANG), 0);
    /* ... but a call that would block takes it. */
    errno = 0;
    assert_int_equal(fk_sys()->waitpid(p, NULL, 0), -1);
    assert_int_equal(errno, EINTR);
    /* fk_inject_eintr hits any call, WNOHANG too, n times. */
    fk_exit(p, 0);
    fk_inject_eintr(2);
    for (int i = 0; i < 2; i++) {
        errno = 0;
        assert_int_equal(fk_sys()->waitpid(p, NULL, WNOHANG), -1);
        assert_int_equal(errno, EINTR);
    }
    assert_int_equal(fk_sys()->waitpid(p, NULL, WNOHANG), p);
    fk_reset();
}

static volatile sig_atomic_t handler_calls;
static volatile sig_atomic_t handler_saw_sigchld_blocked;
static pthread_t handler_thread;

static void seam_handler(int sig)
{
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    handler_saw_sigchld_blocked = sigismember(&cur, SIGCHLD);
    handler_thread = pthread_self();
    if (sig == SIGCHLD)
        handler_calls++;
}

static void seam_info_handler(int sig, siginfo_t *info, void *uc)
{
    (void)uc;
    if (sig == SIGCHLD && info && info->si_signo == SIGCHLD && info->si_code == CLD_EXITED)
        handler_calls++;
}

static void fake_sigchld_recorded_not_real(void **state)
{
    (void)state;
    fk_reset();
    struct sigaction real_before, act, old, now;
    sigaction(SIGCHLD, NULL, &real_before);
    memset(&act, 0, sizeof act);
    act.sa_handler = seam_handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    assert_int_equal(fk_sys()->sigaction(SIGCHLD, &act, &old), 0);
    /* The previous one is what the real kernel had. */
    assert_true(old.sa_handler == real_before.sa_handler);
    /* The real kernel was not touched. */
    sigaction(SIGCHLD, NULL, &now);
    assert_true(now.sa_handler == real_before.sa_handler);
    assert_true(fk_sigchld_action(&now));
    assert_true(now.sa_handler == seam_handler);
    assert_int_equal(now.sa_flags & SA_RESTART, SA_RESTART);
    /* Replacing returns the recorded one. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    assert_int_equal(fk_sys()->sigaction(SIGCHLD, &dfl, &old), 0);
    assert_true(old.sa_handler == seam_handler);
    assert_false(fk_sigchld_action(NULL));
    assert_int_equal(fk_count_sigchld_sigaction(), 2);
    assert_int_equal(fk_count_sigchld_sigaction_set(), 2);

    /* Another signal passes through to the real kernel. */
    struct sigaction usr, prev, back;
    memset(&usr, 0, sizeof usr);
    usr.sa_handler = SIG_IGN;
    assert_int_equal(fk_sys()->sigaction(SIGUSR2, &usr, &prev), 0);
    sigaction(SIGUSR2, NULL, &back);
    assert_true(back.sa_handler == SIG_IGN);
    sigaction(SIGUSR2, &prev, NULL);
    assert_int_equal(fk_count_sigchld_sigaction(), 2);
    assert_int_equal(fk_count(FK_SIGACTION), 3);
    fk_reset();
}

static void fake_deliver_sigchld_seam(void **state)
{
    (void)state;
    fk_reset();
    handler_calls = 0;
    /* Nothing recorded (SIG_DFL): nothing runs. */
    assert_int_equal(fk_deliver_sigchld(FK_SIG_SEAM_HANDLER), 0);
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = seam_handler;
    sigemptyset(&act.sa_mask);
    fk_sys()->sigaction(SIGCHLD, &act, NULL);

    /* Three exits, one delivery: coalesced, the handler runs once, on
     * this thread, with SIGCHLD blocked. */
    pid_t a = fk_new_child(), b = fk_new_child(), c = fk_new_child();
    fk_exit(a, 0);
    fk_exit(b, 0);
    fk_exit(c, 0);
    assert_int_equal(handler_calls, 0);
    assert_int_equal(fk_deliver_sigchld(FK_SIG_SEAM_HANDLER), 1);
    assert_int_equal(handler_calls, 1);
    assert_true(pthread_equal(handler_thread, pthread_self()));
    assert_int_equal(handler_saw_sigchld_blocked, 1);
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    assert_false(sigismember(&cur, SIGCHLD));

    /* Auto delivery: one per exit. */
    handler_calls = 0;
    fk_set_auto_sigchld(FK_SIG_SEAM_HANDLER);
    pid_t d = fk_new_child();
    fk_exit(d, 0);
    assert_int_equal(handler_calls, 1);
    pid_t e = fk_new_child();
    fk_sys()->kill(e, SIGKILL);
    assert_int_equal(handler_calls, 2);
    fk_set_auto_sigchld(0);

    /* SA_SIGINFO handlers get a siginfo. */
    handler_calls = 0;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = seam_info_handler;
    act.sa_flags = SA_SIGINFO;
    sigemptyset(&act.sa_mask);
    fk_sys()->sigaction(SIGCHLD, &act, NULL);
    assert_int_equal(fk_deliver_sigchld(FK_SIG_SEAM_HANDLER), 1);
    assert_int_equal(handler_calls, 1);

    /* SIG_IGN: nothing runs. */
    memset(&act, 0, sizeof act);
    act.sa_handler = SIG_IGN;
    fk_sys()->sigaction(SIGCHLD, &act, NULL);
    assert_int_equal(fk_deliver_sigchld(FK_SIG_SEAM_HANDLER), 0);
    assert_int_equal(handler_calls, 1);
    fk_reset();
}

static volatile sig_atomic_t real_sigchld_seen;
static void real_handler(int sig)
{
    (void)sig;
    real_sigchld_seen = 1;
}

static void fake_deliver_sigchld_real(void **state)
{
    (void)state;
    fk_reset();
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = real_handler;
    sigemptyset(&act.sa_mask);
    assert_int_equal(sigaction(SIGCHLD, &act, &old), 0);
    real_sigchld_seen = 0;
    assert_int_equal(fk_deliver_sigchld(FK_SIG_REAL), 0);
    for (int i = 0; i < 10000 && !real_sigchld_seen; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(real_sigchld_seen, 1);
    sigaction(SIGCHLD, &old, NULL);
    fk_reset();
}

static void fake_kill_rules(void **state)
{
    (void)state;
    fk_reset();
    errno = 0;
    assert_int_equal(fk_sys()->kill(0, SIGTERM), -1);
    assert_int_equal(errno, EPERM);
    errno = 0;
    assert_int_equal(fk_sys()->kill(-1, SIGKILL), -1);
    assert_int_equal(errno, EPERM);
    errno = 0;
    assert_int_equal(fk_sys()->kill(FK_PID_BASE + 99, 0), -1);
    assert_int_equal(errno, ESRCH);
    pid_t p = fk_new_child();
    static const int ignored[] = {SIGCHLD, SIGURG, SIGWINCH, SIGCONT, SIGSTOP, SIGTSTP};
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) {
        assert_int_equal(fk_sys()->kill(p, ignored[i]), 0);
        assert_int_equal(fk_child_state(p), FK_RUNNING);
    }
    assert_int_equal(fk_sys()->kill(p, SIGUSR1), 0);
    int st;
    assert_int_equal(fk_sys()->waitpid(p, &st, WNOHANG), p);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGUSR1);
    /* A real pid passes through: our own process exists. */
    assert_int_equal(fk_sys()->kill(getpid(), 0), 0);
    assert_int_equal(fk_count(FK_KILL), 11);
    fk_reset();
}

static void fake_pidfd_failures(void **state)
{
    (void)state;
    fk_reset();
    pid_t p = fk_new_child();
    fk_set_pidfd_errno(ENOSYS);
    errno = 0;
    assert_int_equal(fk_sys()->pidfd_open(p, 0), -1);
    assert_int_equal(errno, ENOSYS);
    /* Also for real pids: "pidfd_open does not work in this process". */
    errno = 0;
    assert_int_equal(fk_sys()->pidfd_open(getpid(), 0), -1);
    assert_int_equal(errno, ENOSYS);
    fk_set_pidfd_errno(EPERM);
    errno = 0;
    assert_int_equal(fk_sys()->pidfd_open(p, 0), -1);
    assert_int_equal(errno, EPERM);
    fk_set_pidfd_errno(0);
    int fd = fk_sys()->pidfd_open(p, 0);
    assert_true(fd >= 0);
    assert_int_equal(fk_open_pidfds(), 1);
    assert_int_equal(fk_fd_balance(), 1);
    /* Reaped elsewhere: the pidfd is readable (the process exited). */
    fk_reap_elsewhere(p);
    assert_int_equal(poll_readable(fd), 1);
    assert_int_equal(fk_sys()->close(fd), 0);
    assert_int_equal(fk_open_pidfds(), 0);
    assert_int_equal(fk_fd_balance(), 0);
    /* fk_reset closes forgotten pidfds. */
    resource_snapshot before = resources_now();
    pid_t q = fk_new_child();
    assert_true(fk_sys()->pidfd_open(q, 0) >= 0);
    assert_int_equal(resources_now().fds, before.fds + 1);
    fk_reset();
    assert_int_equal(resources_now().fds, before.fds);
}

static void *thread_body(void *arg)
{
    *(int *)arg = 42;
    return NULL;
}

static void fake_threads(void **state)
{
    (void)state;
    fk_reset();
    int v = 0;
    pthread_t t;
    fk_fail_threads(2);
    assert_int_equal(fk_sys()->thread_create(&t, 0, thread_body, &v), EAGAIN);
    assert_int_equal(fk_sys()->thread_create(&t, 64 * 1024, thread_body, &v), EAGAIN);
    long live = fk_threads_live();
    assert_int_equal(fk_sys()->thread_create(&t, 64 * 1024, thread_body, &v), 0);
    pthread_join(t, NULL);
    assert_int_equal(v, 42);
    assert_int_equal(fk_threads_live(), live); /* its function returned */
    assert_int_equal(fk_threads_created(), 1);
    assert_int_equal(fk_count(FK_THREAD_CREATE), 3);
    fk_reset();
}

static evpol_sys_spawn_request spawn_req(const char *file, char **argv)
{
    extern char **environ;
    evpol_sys_spawn_request r = {.file = file, .argv = argv, .envp = environ, .cwd = NULL,
                                 .stdio = {EVPOL_SYS_STDIO_INHERIT, EVPOL_SYS_STDIO_INHERIT,
                                           EVPOL_SYS_STDIO_INHERIT}};
    return r;
}

static void fake_spawn(void **state)
{
    (void)state;
    fk_reset();
    char *argv[] = {"true", NULL};
    evpol_sys_spawn_request req = spawn_req("true", argv);
    pid_t p = 0;
    assert_int_equal(fk_sys()->spawn(&p, &req), 0);
    assert_true(fk_is_fake_pid(p));
    assert_int_equal(fk_child_state(p), FK_RUNNING);
    /* Exec failure. */
    fk_fail_spawn(ENOENT);
    pid_t q = 0;
    evpol_sys_spawn_request nope = spawn_req("nope", argv);
    assert_int_equal(fk_sys()->spawn(&q, &nope), ENOENT);
    assert_int_equal(q, 0);
    evpol_sys_spawn_request no_argv = spawn_req("true", NULL);
    assert_int_equal(fk_sys()->spawn(&q, &no_argv), EINVAL);
    assert_int_equal(fk_sys()->spawn(&q, NULL), EINVAL);
    /* The child exits before spawn returns: a zombie at once. */
    fk_spawn_exits_immediately(6);
    assert_int_equal(fk_sys()->spawn(&q, &req), 0);
    assert_int_equal(fk_child_state(q), FK_ZOMBIE);
    int st;
    assert_int_equal(fk_sys()->waitpid(q, &st, WNOHANG), q);
    assert_int_equal(WEXITSTATUS(st), 6);
    /* The next one runs again. */
    assert_int_equal(fk_sys()->spawn(&q, &req), 0);
    assert_int_equal(fk_child_state(q), FK_RUNNING);
    fk_reset();
}

static void fake_passthrough_real_children(void **state)
{
    (void)state;
    fk_reset();
    /* A real spawn, reaped through the fake by its real pid. */
    fk_set_spawn_real(true);
    char *argv[] = {"sh", "-c", "exit 5", NULL};
    evpol_sys_spawn_request req = spawn_req("sh", argv);
    pid_t rp = 0;
    assert_int_equal(fk_sys()->spawn(&rp, &req), 0);
    assert_false(fk_is_fake_pid(rp));
    int st = 0;
    assert_int_equal(fk_sys()->waitpid(rp, &st, 0), rp);
    assert_int_equal(WEXITSTATUS(st), 5);
    fk_set_spawn_real(false);

    /* waitpid(-1) sees fake zombies first, then real ones, and 0 while
     * either kind still runs. */
    int wfd;
    pid_t real_child = spawn_waiting_child(&wfd, 8, 0);
    pid_t fake_child = fk_new_child();
    assert_int_equal(fk_sys()->waitpid(-1, NULL, WNOHANG), 0);
    release_child(wfd);
    wait_zombie(real_child);
    fk_exit(fake_child, 1);
    assert_int_equal(fk_sys()->waitpid(-1, &st, WNOHANG), fake_child);
    assert_int_equal(fk_sys()->waitpid(-1, &st, WNOHANG), real_child);
    assert_int_equal(WEXITSTATUS(st), 8);
    errno = 0;
    assert_int_equal(fk_sys()->waitpid(-1, &st, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);

    /* A blocking waitpid(-1) with a fake child running still notices a
     * real child's exit. */
    pid_t still = fk_new_child();
    real_child = spawn_waiting_child(&wfd, 2, 0);
    waiter w;
    start_waiter(&w, -1, 0);
    assert_true(fk_wait_blocked(1, 10000));
    release_child(wfd);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, real_child);
    assert_int_equal(WEXITSTATUS(w.status), 2);
    fk_exit(still, 0);
    assert_int_equal(fk_sys()->waitpid(still, NULL, 0), still);
    assert_int_equal(count_zombie_children(), 0);
    fk_reset();
}

static void fake_fd_accounting_and_log(void **state)
{
    (void)state;
    fk_reset();
    int fds[2];
    assert_int_equal(fk_sys()->pipe2(fds, O_CLOEXEC), 0);
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    assert_int_equal(fk_fd_balance(), 2);
    assert_int_equal(fk_sys()->close(fds[0]), 0);
    assert_int_equal(fk_fd_balance(), 1);
    assert_int_equal(fk_sys()->close(fds[1]), 0);
    assert_int_equal(fk_fd_balance(), 0);
    errno = 0;
    assert_int_equal(fk_sys()->close(fds[1]), -1);
    assert_int_equal(errno, EBADF);
    assert_int_equal(fk_fd_balance(), 0);

    pid_t p = fk_new_child();
    fk_sys()->waitpid(p, NULL, WNOHANG);
    fk_sys()->waitpid(-1, NULL, WNOHANG);
    assert_int_equal(fk_count(FK_PIPE2), 1);
    assert_int_equal(fk_count(FK_CLOSE), 3);
    assert_int_equal(fk_count(FK_WAITPID), 2);
    assert_int_equal(fk_count_waitpid_any(), 1);
    assert_int_equal(fk_count_waitpid_pid(p), 1);

    fk_call log[16];
    size_t n = fk_calls(log, 16);
    assert_int_equal(n, 6);
    assert_int_equal(log[0].call, FK_PIPE2);
    assert_int_equal(log[3].call, FK_CLOSE);
    assert_int_equal(log[3].ret, -1);
    assert_int_equal(log[3].err, EBADF);
    assert_int_equal(log[4].call, FK_WAITPID);
    assert_int_equal(log[4].a, p);
    assert_int_equal(log[4].b, WNOHANG);
    assert_int_equal(log[4].ret, 0);
    assert_true(log[4].fake);
    assert_int_equal(log[5].a, -1);
    assert_string_equal(fk_call_name(FK_WAITPID), "waitpid");
    assert_string_equal(fk_call_name(FK_PIPE2), "pipe2");
    fk_reset();
    assert_int_equal(fk_calls(log, 16), 0);
}

static void fake_installs_in_seam(void **state)
{
    (void)state;
    assert_int_equal(fk_install(), 0);
    /* Installing starts from a clean kernel. */
    assert_int_equal(fk_count_children(), 0);
    assert_int_equal(fk_count(FK_WAITPID), 0);
    fk_uninstall();
    /* The state survives uninstalling; only the table changes. */
    pid_t p = fk_new_child();
    assert_int_equal(fk_child_state(p), FK_RUNNING);
    fk_reset();
}

/* ------------------------------------------------------------------ */
/* The seam's thread members: join and detach go through it             */
/* ------------------------------------------------------------------ */

/* A lower thread table under the fake (fk_set_thread_lower): real
 * threads, every call counted, as a fuzzer's pool would see them. */
static atomic_int lower_creates, lower_joins, lower_detaches;

static int counting_create(pthread_t *t, size_t stack, void *(*fn)(void *), void *arg)
{
    atomic_fetch_add(&lower_creates, 1);
    return evpol_sys_real()->thread_create(t, stack, fn, arg);
}

static int counting_join(pthread_t t, void **ret)
{
    atomic_fetch_add(&lower_joins, 1);
    return pthread_join(t, ret);
}

static int counting_detach(pthread_t t)
{
    atomic_fetch_add(&lower_detaches, 1);
    return pthread_detach(t);
}

static void seam_child_done(pid_t pid, int rc, void *arg)
{
    (void)pid;
    *(int *)arg = rc;
}

static void stop_loop(void *arg)
{
    evpol_loop_stop(arg, NULL);
}

/* Register a fake child with a Threaded watcher, end it, and run the loop
 * until its callback has run: the waiting thread made through the seam
 * ended and reported. */
static void threaded_round_trip(evpol_loop *loop)
{
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_THREADED, &w, NULL));
    pid_t p = fk_new_child();
    int rc = -1;
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, p, seam_child_done, &rc, NULL));
    assert_int_equal(fk_exit(p, 7), 0);
    assert_true(fk_wait_no_threads(10000));
    /* The delivery was posted before the thread ended: one run takes it. */
    assert_ok(evpol_loop_call_soon_threadsafe(loop, stop_loop, loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(rc, 7);
    assert_ok(evpol_watcher_close(w, NULL));
    evpol_watcher_unref(w);
}

/* MultiLoop: activate on `loop` (its reaper is made through the seam),
 * then close (the reaper joined). */
static void multiloop_round_trip(evpol_loop *loop)
{
    evpol_watcher *m = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_MULTILOOP, &m, NULL));
    assert_ok(evpol_watcher_attach_loop(m, loop, NULL));
    assert_ok(evpol_watcher_close(m, NULL));
    assert_int_equal(fk_threads_live(), 0);
    evpol_watcher_unref(m);
}

static evpol_sys counting_lower;

/* Put the counting table under the fake, counts at zero. */
static void install_counting_lower(void)
{
    counting_lower = *evpol_sys_real();
    counting_lower.thread_create = counting_create;
    counting_lower.thread_join = counting_join;
    counting_lower.thread_detach = counting_detach;
    atomic_store(&lower_creates, 0);
    atomic_store(&lower_joins, 0);
    atomic_store(&lower_detaches, 0);
    fk_set_thread_lower(&counting_lower);
}

static void uninstall_counting_lower(void)
{
    fk_uninstall();
    fk_set_thread_lower(NULL);
    fk_reset();
}

static void seam_join_detach(void **state)
{
    (void)state;
    install_counting_lower();
    assert_int_equal(fk_install(), 0);
    evpol_loop *loop = new_loop();

    /* Threaded detaches its waiter through the seam. */
    threaded_round_trip(loop);
    assert_int_equal(atomic_load(&lower_creates), 1);
    assert_int_equal(atomic_load(&lower_detaches), 1);
    assert_int_equal(atomic_load(&lower_joins), 0);

    /* MultiLoop joins its reaper through the seam on close. */
    multiloop_round_trip(loop);
    assert_int_equal(atomic_load(&lower_creates), 2);
    assert_int_equal(atomic_load(&lower_joins), 1);
    assert_int_equal(atomic_load(&lower_detaches), 1);

    evpol_loop_unref(loop);
    uninstall_counting_lower();
}

/* Set one member of a table held in bytes (it may be smaller than
 * evpol_sys). */
#define SET_MEMBER(bytes, member, value)                                                   \
    do {                                                                                   \
        __typeof__(((evpol_sys *)0)->member) v_ = (value);                                 \
        memcpy((bytes) + offsetof(evpol_sys, member), &v_, sizeof v_);                     \
    } while (0)

static void seam_old_size_table(void **state)
{
    (void)state;
    /* What a program built against 0.1.0 passes: its smaller table, here on
     * the heap so that a read past it is an error AddressSanitizer reports. */
    unsigned char *old = malloc(EVPOL_SYS_SIZE_0_1);
    assert_non_null(old);
    memcpy(old, fk_sys(), EVPOL_SYS_SIZE_0_1);
    evpol_error e = {0};
    SET_MEMBER(old, size, EVPOL_SYS_SIZE_0_1 + sizeof(void *));
    check_error(evpol_sys_set((const evpol_sys *)(void *)old, &e), &e, EVPOL_ETYPE);
    SET_MEMBER(old, size, EVPOL_SYS_SIZE_0_1);
    SET_MEMBER(old, waitpid, NULL);
    check_error(evpol_sys_set((const evpol_sys *)(void *)old, &e), &e, EVPOL_ETYPE);
    SET_MEMBER(old, waitpid, fk_sys()->waitpid);

    fk_reset();
    install_counting_lower();
    assert_ok(evpol_sys_set((const evpol_sys *)(void *)old, NULL));
    free(old); /* the seam keeps its own copy */
    evpol_loop *loop = new_loop();

    /* The fake's thread_create still runs; the table has no join or
     * detach, so the library uses the real ones, not the fake's. */
    threaded_round_trip(loop);
    multiloop_round_trip(loop);
    assert_int_equal(atomic_load(&lower_creates), 2);
    assert_int_equal(atomic_load(&lower_detaches), 0);
    assert_int_equal(atomic_load(&lower_joins), 0);

    evpol_loop_unref(loop);
    uninstall_counting_lower();
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(honest_exit_code, "CW-10"),
        CLAUSE_TEST(honest_exit_code_wraps, "CW-10"),
        CLAUSE_TEST(honest_killed_by_sigterm, "CW-10"),
        CLAUSE_TEST(honest_running_nohang, "CW-10"),
        CLAUSE_TEST(honest_reaped_elsewhere, "CW-11"),
        CLAUSE_TEST(honest_any_without_children, "CW-11"),
        UNTAGGED_TEST(honest_any_running_only),
        UNTAGGED_TEST(honest_reap_order),
        UNTAGGED_TEST(honest_invalid_options),
        UNTAGGED_TEST(honest_kill),
        UNTAGGED_TEST(honest_pidfd),
        UNTAGGED_TEST(fake_pids_are_deterministic),
        UNTAGGED_TEST(fake_states_and_helpers),
        UNTAGGED_TEST(fake_reap_orders),
        UNTAGGED_TEST(fake_blocking_waitpid),
        UNTAGGED_TEST(fake_eintr),
        UNTAGGED_TEST(fake_sigchld_recorded_not_real),
        UNTAGGED_TEST(fake_deliver_sigchld_seam),
        UNTAGGED_TEST(fake_deliver_sigchld_real),
        UNTAGGED_TEST(fake_kill_rules),
        UNTAGGED_TEST(fake_pidfd_failures),
        UNTAGGED_TEST(fake_threads),
        UNTAGGED_TEST(fake_spawn),
        UNTAGGED_TEST(fake_passthrough_real_children),
        UNTAGGED_TEST(fake_fd_accounting_and_log),
        UNTAGGED_TEST(fake_installs_in_seam),
        UNTAGGED_TEST(seam_join_detach),
        UNTAGGED_TEST(seam_old_size_table),
    };
    return harness_run_group("fake_kernel", tests, NULL, NULL);
}
