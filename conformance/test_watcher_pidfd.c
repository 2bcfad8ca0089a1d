/*
 * test_watcher_pidfd.c — PidfdChildWatcher (PFD-1 ... PFD-6) and the child
 * watcher interface clauses as they apply to it (CW-x).
 *
 * Real children (fork), real threads, real signals. No timing assertions:
 * every wait is bounded by a generous hang guard only. The pidfd-specific
 * tests need pidfd_open (Linux 5.3+); where it is missing they are skipped,
 * except the fallback test (PFD-4), which fakes the refusal through the
 * syscall seam anyway.
 */
#include "harness.h"
#include "watcher_tests.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

#define REQUIRE_PIDFD()                                 \
    do {                                                \
        if (!have_pidfd()) {                            \
            skip();                                     \
        }                                               \
    } while (0)

/* Run the loop until a warning containing `needle` was logged. */
typedef struct log_watch {
    evpol_loop *loop;
    log_capture *cap;
    const char *needle;
    volatile int done;
    int ticks;
} log_watch;

static void log_tick(void *p)
{
    log_watch *lw = p;
    if (capture_count(lw->cap, EVPOL_LOG_WARNING, -1, lw->needle) > 0 || --lw->ticks <= 0) {
        lw->done = 1;
        return;
    }
    evpol_loop_call_later(lw->loop, 2, log_tick, lw, NULL);
}

static int run_until_logged(evpol_loop *loop, log_capture *cap, const char *needle)
{
    log_watch lw = {loop, cap, needle, 0, HANG_GUARD_MS / 2};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, log_tick, &lw, NULL));
    run_until(loop, &lw.done, HANG_GUARD_MS + 1000);
    return capture_count(cap, EVPOL_LOG_WARNING, -1, needle) > 0;
}

/* ---- a seam that counts waitpid calls and can refuse pidfd_open ---- */

static atomic_int seam_pidfd_errno;

static int refusing_pidfd_open(pid_t pid, unsigned int flags)
{
    int e = atomic_load(&seam_pidfd_errno);
    if (e) {
        errno = e;
        return -1;
    }
    return evpol_sys_real()->pidfd_open(pid, flags);
}

static void install_seam(void)
{
    evpol_sys s = *evpol_sys_real();
    s.pidfd_open = refusing_pidfd_open;
    atomic_store(&seam_pidfd_errno, 0);
    install_counting_seam(&s);
}

/* ---- CW-12: the loop that should run the callback is closed ----
 * The reader lives on the first registering loop; a replacement (CW-2) made
 * for another loop delivers there. If that loop is closed by then, nothing
 * is called and a warning is logged. */

static void test_closed_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *reader_loop = new_loop();
    evpol_loop *closed_loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 0, 0);
    result r1 = {0}, r2 = {0};
    assert_ok(register_in_loop(reader_loop, w, pid, on_exit_cb, &r1, NULL));
    assert_ok(evpol_watcher_add_child_handler_on(w, closed_loop, pid, on_exit_cb2, &r2, NULL));
    assert_int_equal(evpol_loop_close(closed_loop, NULL), 0);
    release_child(fd);
    char needle[96];
    snprintf(needle, sizeof needle, "that handles pid %ld is closed", (long)pid);
    assert_true(run_until_logged(reader_loop, cap, needle));
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, needle), 1);
    drain_loop(reader_loop);
    assert_int_equal(atomic_load(&r1.calls), 0);
    assert_int_equal(atomic_load(&r2.calls), 0);
    assert_true(reaped(pid));

    evpol_watcher_unref(w);
    evpol_loop_unref(closed_loop);
    free_loop(reader_loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* ---- THR-6, CW-8: close with children pending ---- */
/* ---- CW-8, PFD-6: close with children pending ----
 * Close removes every reader and closes every pidfd at once. A child still
 * running is left alone (no thread may wait for it): the test reaps it. */

/* The end of a test whose child exited before the watcher closed: close
 * reaped it, no pidfd is left open, no callback ran, even once the loop has
 * run what was ready; then the watcher and the loop go. */
static void end_reaped_by_close(pid_t pid, result *r, evpol_watcher *w, evpol_loop *loop)
{
    assert_true(reaped(pid));
    assert_int_equal(count_pidfds(NULL), 0);
    drain_loop(loop);
    assert_int_equal(atomic_load(&r->calls), 0);
    evpol_watcher_unref(w);
    free_loop(loop);
}

/* A child that has already exited when the watcher closes is reaped by
 * close: no zombie, no callback. */
static void test_close_reaps_exited(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    pid_t pid = fork_exit(0);
    result r = {0};
    /* Registered on a loop that is not running: the reader cannot fire. */
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, on_exit_cb, &r, NULL));
    wait_exited_not_reaped(pid);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    end_reaped_by_close(pid, &r, w, loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* The log hook that runs the child's loop for a few passes when close
 * reports its pending children: between taking the table and removing the
 * readers, the exited child's pidfd is readable and its reader fires. */
typedef struct run_in_close {
    evpol_loop *loop;
    int ticks;
    volatile int done;
    int ran;
} run_in_close;

static void close_tick(void *p)
{
    run_in_close *c = p;
    /* Each re-post runs in the next pass of the loop, which polls again. */
    if (++c->ticks < 3)
        assert_ok(evpol_loop_call_soon_threadsafe(c->loop, close_tick, c, NULL));
    else
        c->done = 1;
}

static void run_loop_in_close(evpol_log_level level, evpol_log_category cat, const char *msg,
                              void *arg)
{
    (void)level;
    (void)cat;
    run_in_close *c = arg;
    if (c->ran || !strstr(msg, "pending)"))
        return;
    c->ran = 1;
    assert_ok(evpol_loop_call_soon_threadsafe(c->loop, close_tick, c, NULL));
    run_until(c->loop, &c->done, HANG_GUARD_MS);
}

/* CW-8: the reader of an exited child fires while close is releasing it
 * (after the watcher let go of its children, before the reader is
 * removed): it leaves the child to close, which reaps it; nothing is
 * called, and the reader may fire again (it is level-triggered). */
static void test_reader_fires_during_close(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);
    pid_t pid = fork_exit(0);
    result r = {0};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, on_exit_cb, &r, NULL));
    wait_exited_not_reaped(pid);
    run_in_close c = {.loop = loop};
    evpol_set_log_hook(run_loop_in_close, &c);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    evpol_set_log_hook(NULL, NULL);
    assert_int_equal(c.ran, 1);
    assert_int_equal(c.done, 1);
    end_reaped_by_close(pid, &r, w, loop);
    assert_no_leaks(before);
}

/* ---- PFD-1: a pidfd per child, close-on-exec; no thread, no signal ---- */

static void test_pidfd_per_child_no_threads_no_signals(void **state)
{
    (void)state;
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    struct sigaction sa_before;
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa_before), 0);
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);

    enum { N = 4 };
    int fds[N];
    atomic_int calls = 0;
    for (int i = 0; i < N; i++) {
        pid_t pid = spawn_lone_child(&fds[i], 0, 0);
        assert_ok(register_in_loop(loop, w, pid, on_exit_count, &calls, NULL));
        int not_cloexec = 0;
        assert_int_equal(count_pidfds(&not_cloexec), i + 1);
        assert_int_equal(not_cloexec, 0);
    }
    assert_int_equal(resources_now().threads, before.threads);
    struct sigaction sa_now;
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa_now), 0);
    assert_true(sa_now.sa_handler == sa_before.sa_handler);
    for (int i = 0; i < N; i++)
        release_child(fds[i]);
    assert_true(run_until_count(loop, (volatile int *)&calls, N, HANG_GUARD_MS));
    assert_int_equal(resources_now().threads, before.threads);
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa_now), 0);
    assert_true(sa_now.sa_handler == sa_before.sa_handler);

    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

/* ---- PFD-6: each pidfd is closed once its child is handled ---- */

static void test_pidfd_closed_after_each_child(void **state)
{
    (void)state;
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);
    resource_snapshot base = resources_now();

    for (int i = 0; i < 5; i++) {
        int fd;
        pid_t pid = spawn_lone_child(&fd, i, 0);
        result r = {0};
        assert_ok(register_in_loop(loop, w, pid, on_exit_cb, &r, NULL));
        assert_int_equal(count_pidfds(NULL), 1);
        release_child(fd);
        assert_true(run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
        assert_int_equal(r.rc, i);
        assert_int_equal(count_pidfds(NULL), 0);
        assert_int_equal(resources_now().fds, base.fds);
    }
    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

/* ---- PFD-2: children it was not asked about are left alone ---- */

static void test_other_children_untouched(void **state)
{
    (void)state;
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);

    pid_t other = fork_exit(33);
    wait_exited_not_reaped(other);
    int fd;
    pid_t pid = spawn_lone_child(&fd, 0, 0);
    result r = {0};
    assert_ok(register_in_loop(loop, w, pid, on_exit_cb, &r, NULL));
    release_child(fd);
    assert_true(run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    /* The unrelated zombie is still ours to reap, with its status. */
    int st = 0;
    assert_int_equal(waitpid(other, &st, WNOHANG), other);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 33);

    evpol_watcher_unref(w);
    free_loop(loop);
    assert_no_leaks(before);
}

/* ---- PFD-3: one waitpid per exit, whatever the number of pending
 * children ---- */

/* ---- PFD-4: pidfd_open refused -> ENOTSUP, and AUTO picks Threaded ---- */

static void check_refused(int errnum, const char *why)
{
    install_seam();
    atomic_store(&seam_pidfd_errno, errnum);
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);
    pid_t pid = fork_exit(0);
    evpol_error err = {0};
    result r = {0};
    assert_int_equal(register_in_loop(loop, w, pid, on_exit_cb, &r, &err), EVPOL_ENOTSUP);
    assert_int_equal(err.code, EVPOL_ENOTSUP);
    assert_non_null(strstr(err.message, "pidfd_open"));
    assert_non_null(strstr(err.message, "ThreadedChildWatcher"));
    if (!strstr(err.message, why))
        fail_msg("'%s' does not say '%s'", err.message, why);
    /* Nothing registered. */
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 0);
    evpol_watcher_unref(w);

    evpol_watcher *aw = new_watcher(EVPOL_WATCHER_AUTO);
    assert_int_equal(evpol_watcher_kind_of(aw), EVPOL_WATCHER_THREADED);
    assert_string_equal(evpol_watcher_name(aw), "ThreadedChildWatcher");
    assert_ok(register_in_loop(loop, aw, pid, on_exit_cb, &r, NULL));
    assert_true(run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    assert_int_equal(r.rc, 0);
    evpol_watcher_unref(aw);
    free_loop(loop);
    assert_ok(evpol_sys_set(NULL, NULL));
}

static void test_pidfd_refused(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    check_refused(ENOSYS, "kernel older than 5.3");
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    check_refused(EPERM, "refused by a security policy"); /* seccomp */
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    /* With the real kernel, AUTO picks Pidfd where it works. */
    evpol_watcher *aw = new_watcher(EVPOL_WATCHER_AUTO);
    assert_int_equal(evpol_watcher_kind_of(aw),
                     have_pidfd() ? EVPOL_WATCHER_PIDFD : EVPOL_WATCHER_THREADED);
    evpol_watcher_unref(aw);
    assert_no_leaks(before);
}

/* ---- PFD-4: a pidfd numbered 0 is a working pidfd ----
 * With stdin closed, pidfd_open returns the lowest free descriptor, 0. AUTO's
 * probe must count that as pidfd_open working (and close it again), not as
 * a failure. The stand-in opens /dev/null: the kernel numbers it the same
 * way, and the test needs no pidfd support of its own. */

static int lowest_fd_pidfd_open(pid_t pid, unsigned int flags)
{
    (void)pid;
    (void)flags;
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void test_pidfd_numbered_zero(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_sys s = *evpol_sys_real();
    s.pidfd_open = lowest_fd_pidfd_open;
    install_counting_seam(&s);
    int saved = fcntl(0, F_DUPFD_CLOEXEC, 3);
    assert_true(saved >= 3);
    assert_int_equal(close(0), 0);
    evpol_watcher *aw = NULL;
    int rc = evpol_watcher_new(EVPOL_WATCHER_AUTO, &aw, NULL);
    /* The probe's descriptor was closed: fd 0 is free again. */
    int fd0_open = fcntl(0, F_GETFD) != -1;
    assert_int_equal(dup2(saved, 0), 0);
    assert_int_equal(close(saved), 0);
    assert_ok(rc);
    assert_int_equal(evpol_watcher_kind_of(aw), EVPOL_WATCHER_PIDFD);
    assert_false(fd0_open);
    evpol_watcher_unref(aw);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_no_leaks(before);
}

/* ---- registration failures with the real kernel's limits ---- */

typedef struct exit_box {
    volatile int done;
    pid_t pid;
    int rc;
} exit_box;

static void pidfd_exit_cb(pid_t pid, int rc, void *arg)
{
    exit_box *b = arg;
    b->pid = pid;
    b->rc = rc;
    __atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
}

/* PFD-1, ERR-1: no fd left for the pidfd: the errno is reported, nothing is
 * registered, and the same registration works once fds are available. */
static void test_pidfd_open_without_fds(void **state)
{
    (void)state;
    REQUIRE_PIDFD();
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    int wfd;
    pid_t pid = spawn_waiting_child(&wfd, 5, 0);
    exit_box box;
    memset(&box, 0, sizeof box);

    struct rlimit saved = forbid_new_fds();
    evpol_error err;
    memset(&err, 0, sizeof err);
    int rc = evpol_watcher_add_child_handler_on(w, loop, pid, pidfd_exit_cb, &box, &err);
    restore_fd_limit(saved);
    assert_int_equal(rc, EVPOL_ESYSTEM);
    assert_int_equal(err.code, EVPOL_ESYSTEM);
    assert_int_equal(err.sys_errno, EMFILE);
    char want[128];
    snprintf(want, sizeof want, "pidfd_open(%ld): %s", (long)pid, strerror(EMFILE));
    assert_string_equal(err.message, want);
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 0);

    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, pidfd_exit_cb, &box, NULL));
    release_child(wfd);
    assert_true(run_until(loop, &box.done, HANG_GUARD_MS));
    assert_int_equal(box.pid, pid);
    assert_int_equal(box.rc, 5);
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

/* PFD-1, PFD-6, ERR-1: a pidfd the loop's backend refuses to watch (made
 * deterministic through the seam: a regular file where the pidfd should
 * be) fails the registration with the loop's error, and the fd is closed. */
static int file_as_pidfd(pid_t pid, unsigned int flags)
{
    (void)pid;
    (void)flags;
    return memfd_create("not-a-pidfd", MFD_CLOEXEC);
}

static void test_pidfd_reader_refused(void **state)
{
    (void)state;
    evpol_sys t = *evpol_sys_real();
    t.pidfd_open = file_as_pidfd;
    resource_snapshot before = resources_now();
    assert_ok(evpol_sys_set(&t, NULL));
    evpol_watcher *w = new_watcher(EVPOL_WATCHER_PIDFD);
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_EPOLL, &loop, NULL));
    int fds_open = resources_now().fds;
    pid_t pid = fork_exit(0);
    exit_box box;
    memset(&box, 0, sizeof box);
    evpol_error err;
    memset(&err, 0, sizeof err);
    int rc = evpol_watcher_add_child_handler_on(w, loop, pid, pidfd_exit_cb, &box, &err);
    assert_int_equal(resources_now().fds, fds_open);
    assert_int_equal(rc, EVPOL_ESYSTEM);
    assert_int_equal(err.code, EVPOL_ESYSTEM);
    assert_int_equal(err.sys_errno, EPERM); /* epoll refuses regular files */
    char want[128];
    snprintf(want, sizeof want, "add_reader: libevent refused the event: %s", strerror(EPERM));
    assert_string_equal(err.message, want);
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 0);
    volatile int one = 1;
    assert_true(run_until(loop, &one, HANG_GUARD_MS));
    assert_int_equal(box.done, 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_ok(evpol_watcher_close(w, NULL));
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_no_leaks(before);
}

static void test_constant_work_per_exit(void **state)
{
    (void)state;
    check_constant_work_per_exit(EVPOL_WATCHER_PIDFD);
}

int main(void)
{
    const harness_test tests[] = {
        WATCHER_TEST(test_exit_codes, pidfd, "CW-1 CW-3 CW-10"),
        WATCHER_TEST(test_killed_by_signal, pidfd, "CW-10"),
        WATCHER_TEST(test_debug_logs_exit, pidfd, "LOOP-7"),
        WATCHER_TEST(test_exited_before_registration, pidfd, "CW-1"),
        WATCHER_TEST(test_loops_in_other_threads, pidfd, "CW-3"),
        WATCHER_TEST(test_replace, pidfd, "CW-2"),
        WATCHER_TEST(test_remove, pidfd, "CW-4"),
        WATCHER_TEST(test_remove_unknown, pidfd, "CW-4"),
        WATCHER_TEST(test_remove_then_add_again, pidfd, "CW-2 CW-4"),
        WATCHER_TEST(test_closed_loop, pidfd, "CW-12"),
        WATCHER_TEST(test_already_reaped, pidfd, "CW-11"),
        WATCHER_TEST(test_close_with_pending, pidfd, "CW-8 PFD-6"),
        WATCHER_TEST(test_close_reaps_exited, pidfd, "CW-8 PFD-6"),
        WATCHER_TEST(test_reader_fires_during_close, pidfd, "CW-8 PFD-6"),
        WATCHER_TEST(test_unref_with_pending, pidfd, "CW-8 PFD-6"),
        WATCHER_TEST(test_close_from_other_thread, pidfd, "CW-8"),
        WATCHER_TEST(test_state_and_errors, pidfd, "CW-1 CW-5 CW-6 CW-8 CW-9 PFD-5"),
        CLAUSE_TEST(test_pidfd_per_child_no_threads_no_signals, "PFD-1"),
        CLAUSE_TEST(test_pidfd_closed_after_each_child, "PFD-6"),
        CLAUSE_TEST(test_other_children_untouched, "PFD-2"),
        CLAUSE_TEST(test_constant_work_per_exit, "PFD-3"),
        CLAUSE_TEST(test_pidfd_refused, "PFD-4"),
        CLAUSE_TEST(test_pidfd_numbered_zero, "PFD-4"),
        CLAUSE_TEST(test_pidfd_open_without_fds, "PFD-1 ERR-1"),
        CLAUSE_TEST(test_pidfd_reader_refused, "PFD-1 PFD-6 ERR-1"),
        WATCHER_TEST(test_stress, pidfd, "PFD-3 PFD-6 CW-1 CW-3"),
    };
    return harness_run_group("watcher_pidfd", tests, NULL, NULL);
}
