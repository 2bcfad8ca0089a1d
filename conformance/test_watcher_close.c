/*
 * test_watcher_close.c — what closing, attaching and inspecting a watcher
 * leave behind, with real children (issue 13).
 *
 *  - close reaps every registered child that has already exited, without a
 *    callback (CW-8), and leaves running ones to the program with a
 *    resource warning that counts them; for MultiLoop the child's handler
 *    is still set (registered before activation, so no reaper took it);
 *  - a refused attach_loop (closed loop) changes nothing: the watcher stays
 *    attached to its loop and delivers there (CW-5);
 *  - a callback may close its own watcher (CW-8), for every watcher;
 *  - evpol_watcher_get_loop names the attached loop, for every watcher.
 * Exit statuses (evpol_child_status_fn) are checked in test_watchers_fake.c
 * (every kind of status, on the fake kernel) and test_spawn.c
 * (evpol_loop_spawn_ex with real children).
 */
#include "watcher_tests.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static log_capture CAP;

/* Attach (Safe and Fast need the loop; MultiLoop's attach is activation,
 * left out when `activate` is false), then register inside a context. */
static evpol_watcher *open_watcher(evpol_watcher_kind kind, evpol_loop *loop, bool activate)
{
    evpol_watcher *w = new_watcher(kind);
    evpol_error err = {0};
    if ((kind != EVPOL_WATCHER_MULTILOOP || activate) &&
        evpol_watcher_attach_loop(w, loop, &err) != 0)
        fail_msg("attach_loop: %s", err.message);
    return w;
}

static void add_in_context(evpol_watcher *w, evpol_loop *loop, pid_t pid, result *r)
{
    evpol_error err = {0};
    assert_ok(evpol_watcher_enter(w, &err));
    if (evpol_watcher_add_child_handler_on(w, loop, pid, on_exit_cb, r, &err) != 0)
        fail_msg("add_child_handler: %s", err.message);
    assert_ok(evpol_watcher_exit(w, &err));
}

/* Issue 13 item 1: one child exits while the loop is not running, one is
 * still running, then the watcher is closed. */
static void close_reaps_exited_children(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = open_watcher(kind, loop, false);
    int fd_done, fd_running;
    pid_t done = spawn_waiting_child(&fd_done, 5, 0);
    pid_t running = spawn_waiting_child(&fd_running, 6, 0);
    result r_done = {0}, r_running = {0};
    add_in_context(w, loop, done, &r_done);
    add_in_context(w, loop, running, &r_running);
    release_child(fd_done);
    wait_exited_not_reaped(done);

    capture_start(&CAP);
    assert_ok(evpol_watcher_close(w, NULL));
    capture_stop();
    /* Reaped by close, without a callback (CW-8). */
    assert_true(reaped(done));
    assert_int_equal(atomic_load(&r_done.calls), 0);
    /* The running child is the program's: one warning counting it. */
    assert_int_equal(capture_count(&CAP, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "1 child process(es) still running"),
                     1);
    assert_false(reaped(running));
    release_child(fd_running);
    int status = 0;
    assert_int_equal(waitpid(running, &status, 0), running);
    assert_int_equal(WEXITSTATUS(status), 6);
    drain_loop(loop);
    assert_int_equal(atomic_load(&r_running.calls), 0);
    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

/* Issue 13 item 4: attach_loop with a closed loop fails and changes
 * nothing; the child pending on the old loop is still delivered there. */
static void refused_attach_keeps_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_loop *closed = new_loop();
    assert_ok(evpol_loop_close(closed, NULL));
    evpol_watcher *w = open_watcher(kind, loop, true);
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 7, 0);
    result r = {0};
    add_in_context(w, loop, pid, &r);

    capture_start(&CAP);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_attach_loop(w, closed, &err), EVPOL_ERUNTIME);
    capture_stop();
    assert_int_equal(capture_count(&CAP, -1, -1, "being detached"), 0);

    release_child(fd);
    if (!run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS))
        fail_msg("the exit was not delivered on the loop the watcher was attached to");
    assert_int_equal(r.pid, pid);
    assert_int_equal(r.rc, 7);
    assert_true(reaped(pid));
    assert_ok(evpol_watcher_close(w, NULL));
    evpol_watcher_unref(w);
    evpol_loop_unref(closed);
    free_loop(loop);
    assert_no_leaks(before);
}

/* The same when the refusal comes from the thread: Safe and Fast change
 * signal handlers only from the main thread (LOOP-4). The attached loop is
 * closed first, so that nothing but that rule can refuse. */
typedef struct attach_call {
    evpol_watcher *w;
    evpol_loop *loop;
    int rc;
} attach_call;

static void *attach_from_thread(void *p)
{
    attach_call *a = p;
    a->rc = evpol_watcher_attach_loop(a->w, a->loop, NULL);
    return NULL;
}

static void attach_off_main_thread_keeps_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    evpol_loop *loop = new_loop(), *other = new_loop();
    evpol_watcher *w = open_watcher(kind, loop, true);
    assert_ok(evpol_loop_close(loop, NULL));
    attach_call a = {w, other, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, attach_from_thread, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, EVPOL_ERUNTIME);
    evpol_loop *got = NULL;
    assert_ok(evpol_watcher_get_loop(w, &got, NULL));
    assert_ptr_equal(got, loop);
    assert_ok(evpol_watcher_close(w, NULL));
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    free_loop(other);
}

/* CW-8, issue 13: a callback may close its own watcher (evpol.h says so):
 * close returns at once instead of waiting for the callback it runs in,
 * and the watcher is closed and inactive afterwards, for every watcher. */
typedef struct closing {
    evpol_watcher *w;
    volatile int calls;
    int close_rc;
} closing;

static void close_own_watcher(pid_t pid, int rc, void *arg)
{
    (void)pid;
    (void)rc;
    closing *c = arg;
    c->close_rc = evpol_watcher_close(c->w, NULL);
    __atomic_add_fetch(&c->calls, 1, __ATOMIC_SEQ_CST);
}

static void callback_closes_own_watcher(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = open_watcher(kind, loop, true);
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 0, 0);
    closing c = {w, 0, -1};
    evpol_error err = {0};
    assert_ok(evpol_watcher_enter(w, &err));
    if (evpol_watcher_add_child_handler_on(w, loop, pid, close_own_watcher, &c, &err) != 0)
        fail_msg("add_child_handler: %s", err.message);
    assert_ok(evpol_watcher_exit(w, &err));
    release_child(fd);
    if (!run_until(loop, &c.calls, HANG_GUARD_MS))
        fail_msg("the callback never ran");
    assert_int_equal(c.close_rc, 0);
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_true(reaped(pid));
    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

/* Issue 13 item 7: the attached loop, borrowed, or NULL; Safe and Fast
 * keep one, the others deliver on each registering loop and keep none. */
static void get_loop_names_attached_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    bool keeps = kind == EVPOL_WATCHER_SAFE || kind == EVPOL_WATCHER_FAST;
    evpol_loop *loop = new_loop(), *other = new_loop();
    evpol_watcher *w = new_watcher(kind);
    evpol_loop *got = other;
    evpol_error err = {0};
    assert_ok(evpol_watcher_get_loop(w, &got, &err));
    assert_null(got);
    assert_ok(evpol_watcher_attach_loop(w, loop, &err));
    assert_ok(evpol_watcher_get_loop(w, &got, &err));
    assert_ptr_equal(got, keeps ? loop : NULL);
    assert_ok(evpol_watcher_attach_loop(w, other, &err));
    assert_ok(evpol_watcher_get_loop(w, &got, &err));
    assert_ptr_equal(got, keeps ? other : NULL);
    assert_ok(evpol_watcher_attach_loop(w, NULL, &err));
    assert_ok(evpol_watcher_get_loop(w, &got, &err));
    assert_null(got);
    assert_ok(evpol_watcher_attach_loop(w, loop, &err));
    assert_ok(evpol_watcher_close(w, &err));
    assert_ok(evpol_watcher_get_loop(w, &got, &err));
    assert_null(got);
    /* Arguments are validated, as everywhere (ERR-1). */
    assert_int_equal(evpol_watcher_get_loop(w, NULL, &err), EVPOL_EINVAL);
    assert_int_equal(evpol_watcher_get_loop(NULL, &got, &err), EVPOL_EINVAL);
    assert_int_equal(evpol_watcher_get_loop((evpol_watcher *)loop, &got, &err), EVPOL_ETYPE);
    assert_null(got);
    evpol_watcher_unref(w);
    free_loop(loop);
    free_loop(other);
}

int main(void)
{
    const harness_test tests[] = {
        WATCHER_TESTS(close_reaps_exited_children, W_MULTILOOP | W_SAFE | W_FAST,
            "CW-8 MUL-4@multiloop SAF-7@safe FST-8@fast"),
        WATCHER_TESTS(refused_attach_keeps_loop, W_SAFE | W_FAST, "CW-5 SAF-4@safe"),
        WATCHER_TESTS(attach_off_main_thread_keeps_loop, W_SAFE | W_FAST, "CW-5 SAF-4@safe"),
        WATCHER_TESTS(callback_closes_own_watcher, W_ALL,
            "CW-8 THR-6@threaded MUL-4@multiloop SAF-7@safe FST-8@fast PFD-6@pidfd"),
        WATCHER_TESTS(get_loop_names_attached_loop, W_ALL, "CW-5 ERR-1"),
    };
    return harness_run_group("tests", tests, NULL, NULL);
}
