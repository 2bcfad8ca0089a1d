/*
 * test_watcher_threaded.c — ThreadedChildWatcher (THR-1 ... THR-6) and the
 * child watcher interface clauses as they apply to it (CW-x).
 *
 * Real children (fork), real threads, real signals. No timing assertions:
 * every wait is bounded by a generous hang guard only.
 */
#include "harness.h"
#include "watcher_tests.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

static int wait_log(log_capture *cap, int category, const char *needle)
{
    for (int waited = 0; waited < HANG_GUARD_MS; waited += 5) {
        if (capture_count(cap, EVPOL_LOG_WARNING, category, needle) > 0)
            return 1;
        sleep_ms(5);
    }
    return 0;
}

/* ---- a counting seam (THR-1, THR-3) ---- */

static atomic_int seam_thread_fail_errno;

static int failing_thread_create(pthread_t *t, size_t stack, void *(*fn)(void *), void *arg)
{
    int e = atomic_load(&seam_thread_fail_errno);
    if (e)
        return e;
    return evpol_sys_real()->thread_create(t, stack, fn, arg);
}

static void install_seam(void)
{
    evpol_sys s = *evpol_sys_real();
    s.thread_create = failing_thread_create;
    atomic_store(&seam_thread_fail_errno, 0);
    install_counting_seam(&s);
}

/* ---- CW-12: the loop that should run the callback is closed ---- */

static void test_closed_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 0, 0);
    result r = {0};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, on_exit_cb, &r, NULL));
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    release_child(fd);
    char needle[96];
    snprintf(needle, sizeof needle, "that handles pid %ld is closed", (long)pid);
    assert_true(wait_log(cap, EVPOL_LOG_CAT_RUNTIME, needle));
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, -1, needle), 1);
    assert_int_equal(atomic_load(&r.calls), 0);
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    assert_true(reaped(pid));

    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* ---- THR-6, CW-8: close with children pending ---- */

/* ---- THR-1: one waiting thread per child; a failed thread leaves no
 * registration ---- */

static void test_one_thread_per_child(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_THREADED);
    enum { N = 5 };
    int fds[N];
    atomic_int calls = 0;
    for (int i = 0; i < N; i++) {
        pid_t pid = spawn_lone_child(&fds[i], 0, 0);
        assert_ok(register_in_loop(loop, w, pid, on_exit_count, &calls, NULL));
        assert_int_equal(resources_now().threads, before.threads + i + 1);
    }
    for (int i = 0; i < N; i++)
        release_child(fds[i]);
    assert_true(run_until_count(loop, (volatile int *)&calls, N, HANG_GUARD_MS));
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

static void test_thread_creation_failure(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    install_seam();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_THREADED);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 4, 0);
    result r = {0};
    atomic_store(&seam_thread_fail_errno, EAGAIN);
    evpol_error err = {0};
    assert_int_equal(register_in_loop(loop, w, pid, on_exit_cb, &r, &err), EVPOL_ESYSTEM);
    assert_int_equal(err.code, EVPOL_ESYSTEM);
    assert_int_equal(err.sys_errno, EAGAIN);
    /* Nothing registered, no thread started. */
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 0);
    assert_int_equal(resources_now().threads, before.threads);

    atomic_store(&seam_thread_fail_errno, 0);
    assert_ok(register_in_loop(loop, w, pid, on_exit_cb, &r, NULL));
    release_child(fd);
    assert_true(run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    assert_int_equal(r.rc, 4);
    assert_int_equal(atomic_load(&r.calls), 1);

    evpol_watcher_unref(w);
    free_loop(loop);
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_no_leaks(before);
}

/* THR-1, THR-3: a waiting thread makes no allocation of evpol's (its block
 * is reused by the next registration), so glibc never gives it a malloc
 * arena of its own; the pending children's blocks are reused, not
 * allocated anew. Counted through the seam's calloc/free. */
static pthread_t alloc_main;
static atomic_int allocs_off_main, callocs;

static void *counting_calloc(size_t n, size_t size)
{
    atomic_fetch_add(&callocs, 1);
    if (!pthread_equal(pthread_self(), alloc_main))
        atomic_fetch_add(&allocs_off_main, 1);
    return calloc(n, size);
}

static void counting_free(void *p)
{
    if (p && !pthread_equal(pthread_self(), alloc_main))
        atomic_fetch_add(&allocs_off_main, 1);
    free(p);
}

static void test_waiting_threads_never_allocate(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_THREADED);
    evpol_sys t = *evpol_sys_real();
    t.calloc = counting_calloc;
    t.free = counting_free;
    alloc_main = pthread_self();
    atomic_store(&allocs_off_main, 0);
    assert_ok(evpol_sys_set(&t, NULL));

    enum { N = 4 };
    int first_round = 0;
    for (int round = 0; round < 2; round++) {
        int fds[N];
        atomic_int calls = 0;
        pid_t pids[N];
        for (int i = 0; i < N; i++)
            pids[i] = spawn_lone_child(&fds[i], 0, 0);
        /* Only the registrations are counted (the loop's own work, e.g. the
         * timers of run_until, varies from run to run). */
        atomic_store(&callocs, 0);
        for (int i = 0; i < N; i++)
            assert_ok(evpol_watcher_add_child_handler_on(w, loop, pids[i], on_exit_count,
                                                         &calls, NULL));
        int registration_callocs = atomic_load(&callocs);
        for (int i = 0; i < N; i++)
            release_child(fds[i]);
        assert_true(run_until_count(loop, (volatile int *)&calls, N, HANG_GUARD_MS));
        assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
        /* The second round does what the first did, except that it takes
         * the N blocks the waiting threads gave back instead of allocating. */
        if (round == 0)
            first_round = registration_callocs;
        else
            assert_int_equal(registration_callocs, first_round - N);
    }
    assert_int_equal(atomic_load(&allocs_off_main), 0);
    evpol_watcher_unref(w);
    free_loop(loop);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_no_leaks(before);
}

/* ---- THR-3: each exit costs one waitpid of its own, whatever the number
 * of pending children ---- */

static void test_constant_work_per_exit(void **state)
{
    (void)state;
    check_constant_work_per_exit(EVPOL_WATCHER_THREADED);
}

int main(void)
{
    const harness_test tests[] = {
        WATCHER_TEST(test_exit_codes, threaded, "CW-1 CW-3 CW-10 THR-5"),
        WATCHER_TEST(test_killed_by_signal, threaded, "CW-10"),
        WATCHER_TEST(test_debug_logs_exit, threaded, "LOOP-7"),
        WATCHER_TEST(test_exited_before_registration, threaded, "CW-1"),
        WATCHER_TEST(test_loops_in_other_threads, threaded, "THR-2 THR-5 CW-3"),
        WATCHER_TEST(test_replace, threaded, "CW-2 THR-1"),
        WATCHER_TEST(test_remove, threaded, "CW-4"),
        WATCHER_TEST(test_remove_unknown, threaded, "CW-4"),
        WATCHER_TEST(test_remove_then_add_again, threaded, "CW-2 CW-4"),
        WATCHER_TEST(test_closed_loop, threaded, "CW-12"),
        WATCHER_TEST(test_already_reaped, threaded, "CW-11"),
        WATCHER_TEST(test_close_with_pending, threaded, "THR-6 CW-8"),
        WATCHER_TEST(test_unref_with_pending, threaded, "THR-6 CW-8"),
        WATCHER_TEST(test_close_from_other_thread, threaded, "THR-6 CW-8"),
        WATCHER_TEST(test_state_and_errors, threaded, "CW-1 CW-5 CW-6 CW-8 CW-9"),
        CLAUSE_TEST(test_one_thread_per_child, "THR-1"),
        CLAUSE_TEST(test_thread_creation_failure, "THR-1"),
        CLAUSE_TEST(test_waiting_threads_never_allocate, "THR-1 THR-3"),
        CLAUSE_TEST(test_constant_work_per_exit, "THR-3"),
        WATCHER_TEST(test_stress, threaded, "THR-1 THR-2 THR-3 THR-5 CW-1"),
    };
    return harness_run_group("watcher_threaded", tests, NULL, NULL);
}
