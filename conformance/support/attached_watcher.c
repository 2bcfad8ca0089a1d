/*
 * attached_watcher.c — see attached_watcher.h.
 */
#include "attached_watcher.h"

#include <signal.h>
#include <unistd.h>

pthread_t harness_main_thread;

__attribute__((constructor)) static void record_main_thread(void)
{
    harness_main_thread = pthread_self();
}

void record_exit(pid_t pid, int rc, void *arg)
{
    exit_rec *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->on_main = pthread_equal(pthread_self(), harness_main_thread);
    evpol_loop *l = NULL;
    r->ran_on = evpol_get_running_loop(&l, NULL) == 0 ? l : NULL;
    __atomic_add_fetch(&r->count, 1, __ATOMIC_SEQ_CST);
}

void fx_open(fixture *fx, evpol_watcher_kind kind)
{
    fx->kind = kind;
    fx->before = resources_now();
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &fx->loop, NULL));
    assert_ok(evpol_watcher_new(fx->kind, &fx->w, NULL));
    assert_int_equal(evpol_watcher_kind_of(fx->w), fx->kind);
    assert_ok(evpol_watcher_attach_loop(fx->w, fx->loop, NULL));
}

void fx_close(fixture *fx)
{
    assert_int_equal(evpol_watcher_close(fx->w, NULL), 0);
    evpol_watcher_unref(fx->w);
    assert_int_equal(evpol_loop_close(fx->loop, NULL), 0);
    evpol_loop_unref(fx->loop);
    assert_no_leaks(fx->before);
}

void run_once(evpol_loop *loop)
{
    assert_ok(evpol_loop_stop(loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
}

typedef struct thread_close {
    evpol_watcher *w;
    int rc;
} thread_close;

static void *close_in_thread(void *arg)
{
    thread_close *t = arg;
    t->rc = evpol_watcher_close(t->w, NULL);
    return NULL;
}

int close_in_other_thread(evpol_watcher *w)
{
    thread_close t = {w, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, close_in_thread, &t), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    return t.rc;
}

static volatile int user_sigchld_calls;

static void user_sigchld(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    user_sigchld_calls++;
}

void check_close_after_user_replaced_handler(evpol_watcher_kind kind)
{
    /* The user replaced the watcher's SIGCHLD handler on the loop. A close
     * from another thread then has no handler of its own to leave inert:
     * the user's must not be taken for it (the loop would hand the user's
     * argument to the watcher's clean-up when it closes), and there is
     * nothing to warn about. */
    fixture fx;
    fx_open(&fx, kind);
    /* Static: were the loop to free it as the watcher's link, free() of a
     * pointer malloc never returned aborts the program. */
    static int user_arg;
    user_sigchld_calls = 0;
    assert_ok(evpol_loop_add_signal_handler(fx.loop, SIGCHLD, user_sigchld, &user_arg, NULL));
    log_capture cap;
    capture_start(&cap);
    assert_int_equal(close_in_other_thread(fx.w), 0);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, -1, "closed outside the main thread"),
                     0);
    capture_stop();
    /* The user's handler is still the loop's, and still called (the
     * signal is this thread's: kill delivers it before returning; the
     * bound only guards against a hang). */
    assert_int_equal(kill(getpid(), SIGCHLD), 0);
    for (int i = 0; i < 1000 && user_sigchld_calls == 0; i++)
        run_once(fx.loop);
    assert_int_equal(user_sigchld_calls, 1);
    evpol_watcher_unref(fx.w);
    assert_ok(evpol_loop_remove_signal_handler(fx.loop, SIGCHLD, NULL));
    assert_int_equal(evpol_loop_close(fx.loop, NULL), 0);
    evpol_loop_unref(fx.loop);
    /* The watcher's link was freed at the close, not left to the loop. */
    assert_no_leaks(fx.before);
}
