/*
 * watcher_tests.c — see watcher_tests.h.
 */
#include "watcher_tests.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

void on_exit_cb(pid_t pid, int rc, void *arg)
{
    result *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->thread = pthread_self();
    r->tag = 1;
    atomic_fetch_add(&r->calls, 1);
}

void on_exit_cb2(pid_t pid, int rc, void *arg)
{
    result *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->thread = pthread_self();
    r->tag = 2;
    atomic_fetch_add(&r->calls, 1);
}

void on_exit_count(pid_t pid, int rc, void *arg)
{
    (void)pid;
    (void)rc;
    atomic_fetch_add((atomic_int *)arg, 1);
}

evpol_loop *new_loop(void)
{
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    if (evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, &err) != 0)
        fail_msg("evpol_loop_new: %s", err.message);
    return loop;
}

evpol_watcher *new_watcher(evpol_watcher_kind kind)
{
    evpol_watcher *w = NULL;
    evpol_error err = {0};
    if (evpol_watcher_new(kind, &w, &err) != 0)
        fail_msg("evpol_watcher_new: %s", err.message);
    return w;
}

void free_loop(evpol_loop *loop)
{
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    evpol_loop_unref(loop);
}

/* True once `pid` is no child of ours any more (reaped by someone). */
int reaped(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 && errno == ECHILD;
}

void do_register(void *p)
{
    reg_req *r = p;
    r->rc = evpol_watcher_add_child_handler(r->w, r->pid, r->cb, r->arg, &r->err);
    __atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
}

int register_in_loop(evpol_loop *loop, evpol_watcher *w, pid_t pid, evpol_child_fn cb,
                     void *arg, evpol_error *err)
{
    reg_req r = {w, pid, cb, arg, 0, {0}, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, do_register, &r, NULL));
    if (!run_until(loop, &r.done, HANG_GUARD_MS))
        fail_msg("registration never ran");
    if (err)
        *err = r.err;
    return r.rc;
}

void set_flag(void *p)
{
    __atomic_store_n((volatile int *)p, 1, __ATOMIC_SEQ_CST);
}

/* Run the loop until a call posted now has run: everything posted to it
 * before (deliveries included) has run too. */
void drain_loop(evpol_loop *loop)
{
    volatile int flag = 0;
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag, (void *)&flag, NULL));
    if (!run_until(loop, &flag, HANG_GUARD_MS))
        fail_msg("the loop never drained");
}

void reap_tick(void *p)
{
    reap_watch *rw = p;
    if (reaped(rw->pid) || --rw->ticks <= 0) {
        rw->done = 1;
        return;
    }
    evpol_loop_call_later(rw->loop, 2, reap_tick, rw, NULL);
}

int run_until_reaped(evpol_loop *loop, pid_t pid)
{
    reap_watch rw = {loop, pid, 0, HANG_GUARD_MS / 2};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, reap_tick, &rw, NULL));
    run_until(loop, &rw.done, HANG_GUARD_MS + 1000);
    return reaped(pid);
}

void stress_cb(pid_t pid, int rc, void *arg)
{
    stress_cb_arg *a = arg;
    a->slot->rc = rc;
    if (pid != a->slot->pid || !pthread_equal(pthread_self(), a->st->self))
        a->slot->wrong_thread = 1;
    atomic_fetch_add(&a->slot->calls, 1);
    atomic_fetch_add(&a->st->delivered, 1);
}

void *stress_main(void *p)
{
    stress_thread *st = p;
    st->self = pthread_self();
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    stress_cb_arg *args = calloc(STRESS_PER_THREAD, sizeof *args);
    if (!args || evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, &err) != 0) {
        snprintf(st->failure, sizeof st->failure, "setup failed");
        free(args);
        return NULL;
    }
    for (int base = 0; base < STRESS_PER_THREAD; base += STRESS_BATCH) {
        for (int i = base; i < base + STRESS_BATCH; i++) {
            stress_slot *s = &st->slots[i];
            s->expected = (i * 7) % 256;
            s->pid = fork_exit(s->expected);
            args[i].st = st;
            args[i].slot = s;
            if (register_in_loop(loop, st->w, s->pid, stress_cb, &args[i], &err) != 0) {
                snprintf(st->failure, sizeof st->failure, "add_child_handler: %.150s", err.message);
                goto out;
            }
        }
        if (!run_until_count(loop, (volatile int *)&st->delivered, base + STRESS_BATCH,
                             HANG_GUARD_MS)) {
            snprintf(st->failure, sizeof st->failure, "only %d of %d delivered",
                     atomic_load(&st->delivered), base + STRESS_BATCH);
            goto out;
        }
    }
    drain_loop(loop);
    for (int i = 0; i < STRESS_PER_THREAD; i++) {
        stress_slot *s = &st->slots[i];
        if (atomic_load(&s->calls) != 1 || s->rc != s->expected || s->wrong_thread) {
            snprintf(st->failure, sizeof st->failure, "child %d: calls %d rc %d/%d wrong %d", i,
                     atomic_load(&s->calls), s->rc, s->expected, s->wrong_thread);
            goto out;
        }
    }
    st->ok = 1;
out:
    evpol_loop_close(loop, NULL);
    evpol_loop_unref(loop);
    free(args);
    return NULL;
}
