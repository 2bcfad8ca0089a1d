/*
 * attached_watcher.c — see attached_watcher.h.
 */
#include "attached_watcher.h"

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
