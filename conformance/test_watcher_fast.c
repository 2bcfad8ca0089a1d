/*
 * test_watcher_fast.c — what only FastChildWatcher does (FST-1 ... FST-8):
 * the spawn context it requires, the exits it keeps for a registration to
 * come, and its warnings about children nobody registered. The behaviour it
 * shares with SafeChildWatcher (exit codes, replace, remove, attach, close,
 * stress) runs for both kinds in test_watcher_safe.c.
 *
 * Real children, real SIGCHLD, loops run in the main thread. FastChildWatcher
 * reaps every child of the process (waitpid(-1)), so each test lets it reap
 * what it forks; callbacks only record, the test asserts afterwards.
 */
#include "attached_watcher.h"
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

/* ------------------------------------------------------------------ */

static void test_fast_identity(void **state)
{
    (void)state;
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_FAST, &w, NULL));
    assert_string_equal(evpol_watcher_name(w), "FastChildWatcher");
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_FAST);
    evpol_watcher_unref(w);
}

static void test_fast_add_needs_context(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    evpol_error err = {0};
    exit_rec rec = {0};
    int wfd;
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t pid = spawn_waiting_child(&wfd, 0, 0);
    assert_ok(evpol_watcher_exit(fx.w, NULL));

    /* Outside the context: refused (CPython: "Must use the context
     * manager"), nothing registered. */
    assert_int_equal(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, &err),
                     EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "Must use the context manager"));
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, pid, NULL), 0);

    /* exit without enter is an error too, and leaves the count at zero. */
    memset(&err, 0, sizeof err);
    assert_int_equal(evpol_watcher_exit(fx.w, &err), EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    assert_int_equal(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL),
                     EVPOL_ERUNTIME);

    /* Contexts nest: registration works until the outermost exit. */
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    assert_int_equal(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL),
                     EVPOL_ERUNTIME);

    release_child(wfd);
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    assert_int_equal(rec.pid, pid);
    assert_int_equal(rec.rc, 0);
    fx_close(&fx);
}

static void test_fast_kept_exit_reported_at_registration(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture cap;
    capture_start(&cap);
    /* LOOP-7: the kept exit is logged with the loop's debug flag. */
    assert_ok(evpol_loop_set_debug(fx.loop, true, NULL));
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t pid = fork_exit(44);
    wait_exited_not_reaped(pid);
    /* The watcher reaps it before it is registered and keeps its status. */
    assert_true(run_until_reaped(fx.loop, pid));
    exit_rec rec = {0};
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(rec.count, 1);
    assert_int_equal(rec.pid, pid);
    assert_int_equal(rec.rc, 44);
    assert_true(rec.on_main);
    assert_ptr_equal(rec.ran_on, fx.loop);
    /* Claimed, so neither dropped nor unknown. */
    assert_int_equal(capture_count(&cap, -1, -1, "Caught subprocess"), 0);
    char line[96];
    snprintf(line, sizeof line, "unknown process %ld exited with returncode 44", (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, line), 1);
    capture_stop();
    fx_close(&fx);
}

static void test_fast_kept_exits_dropped_at_last_exit(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t a = fork_exit(3);
    pid_t b = fork_exit(4);
    assert_true(run_until_reaped(fx.loop, a));
    assert_true(run_until_reaped(fx.loop, b));
    /* Not the last context: kept. */
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    assert_int_equal(capture_count(&cap, -1, -1, "Caught subprocesses"), 0);
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    const char *head = "Caught subprocesses termination from unknown pids: ";
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, head), 1);
    char pa[32], pb[32];
    snprintf(pa, sizeof pa, "%ld: 3", (long)a);
    snprintf(pb, sizeof pb, "%ld: 4", (long)b);
    assert_int_equal(capture_count(&cap, -1, -1, pa), 1);
    assert_int_equal(capture_count(&cap, -1, -1, pb), 1);
    /* Dropped: the next context does not find them. */
    exit_rec rec = {0};
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    assert_ok(evpol_watcher_add_child_handler(fx.w, a, record_exit, &rec, NULL));
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, a, NULL), 1);
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(capture_count(&cap, -1, -1, head), 1);
    capture_stop();
    fx_close(&fx);
}

static void test_fast_unknown_child_without_context(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture cap;
    capture_start(&cap);
    pid_t pid = fork_exit(6);
    assert_true(run_until_reaped(fx.loop, pid));
    char msg[128];
    snprintf(msg, sizeof msg, "Caught subprocess termination from unknown pid: %ld -> 6",
             (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, msg), 1);
    /* Forgotten: a later registration (in a context) finds nothing. */
    exit_rec rec = {0};
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, pid, NULL), 1);
    capture_stop();
    fx_close(&fx);
}

/* Install the seam `t`, then a Fast watcher on a new loop, the log captured,
 * one spawn context open. */
static void open_fast_in_context(const evpol_sys *t, fixture *fx, log_capture *cap)
{
    assert_ok(evpol_sys_set(t, NULL));
    fx_open(fx, EVPOL_WATCHER_FAST);
    capture_start(cap);
    assert_ok(evpol_watcher_enter(fx->w, NULL));
}

/* FST-5 with no memory to keep the exit: the status cannot be kept for a
 * registration to come, so the child is an unknown one now, and the user
 * hears it as the warning (a kept exit is only a debug line). The seam's
 * waitpid arms a failure of the next calloc when it returns the child: the
 * one that would keep the exit (the loop's own timers are not allocated
 * between the two). */
static _Atomic pid_t keep_target;
static atomic_int calloc_armed, calloc_failed;

static pid_t arming_waitpid(pid_t pid, int *status, int options)
{
    pid_t r = evpol_sys_real()->waitpid(pid, status, options);
    if (r > 0 && r == atomic_load(&keep_target))
        atomic_store(&calloc_armed, 1);
    return r;
}

static void *arming_calloc(size_t n, size_t size)
{
    if (atomic_exchange(&calloc_armed, 0)) {
        atomic_fetch_add(&calloc_failed, 1);
        errno = ENOMEM;
        return NULL;
    }
    return evpol_sys_real()->calloc(n, size);
}

static void test_fast_no_memory_to_keep_an_exit(void **state)
{
    (void)state;
    evpol_sys s = *evpol_sys_real();
    s.waitpid = arming_waitpid;
    s.calloc = arming_calloc;
    atomic_store(&keep_target, 0);
    atomic_store(&calloc_armed, 0);
    atomic_store(&calloc_failed, 0);
    fixture fx;
    log_capture cap;
    open_fast_in_context(&s, &fx, &cap);
    pid_t pid = fork_exit(9);
    atomic_store(&keep_target, pid);
    wait_exited_not_reaped(pid);
    assert_true(run_until_reaped(fx.loop, pid));
    assert_int_equal(atomic_load(&calloc_failed), 1);
    char msg[128];
    snprintf(msg, sizeof msg, "Caught subprocess termination from unknown pid: %ld -> 9",
             (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, msg), 1);
    /* Not kept: a registration in the context finds nothing to report. */
    exit_rec rec = {0};
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, pid, NULL), 1);
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    assert_int_equal(capture_count(&cap, -1, -1, "Caught subprocesses"), 0);
    capture_stop();
    fx_close(&fx);
    assert_ok(evpol_sys_set(NULL, NULL));
}

static void test_fast_reaps_other_code_children(void **state)
{
    /* The price of waitpid(-1): a child nobody registered is reaped, and
     * whoever waits for it later gets ECHILD. */
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture cap;
    capture_start(&cap);
    pid_t stranger = fork_exit(1);
    wait_exited_not_reaped(stranger);
    exit_rec rec = {0};
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    int wfd;
    pid_t pid = spawn_waiting_child(&wfd, 2, 0);
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    release_child(wfd);
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    assert_true(run_until_reaped(fx.loop, stranger));
    errno = 0;
    assert_int_equal(waitpid(stranger, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    assert_int_equal(rec.rc, 2);
    capture_stop();
    fx_close(&fx);
}

static void test_fast_close_clears_kept_exits(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t pid = fork_exit(9);
    assert_true(run_until_reaped(fx.loop, pid));
    exit_rec rec = {0};
    int wfd;
    pid_t pending = spawn_waiting_child(&wfd, 1, 0);
    assert_ok(evpol_watcher_add_child_handler(fx.w, pending, record_exit, &rec, NULL));
    /* Close inside the open context: the kept exit and the handler go
     * without a word, and nothing is called afterwards. */
    assert_int_equal(evpol_watcher_close(fx.w, NULL), 0);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_exit(fx.w, &err), EVPOL_ERUNTIME);
    release_child(wfd);
    wait_exited_not_reaped(pending);
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(capture_count(&cap, -1, -1, "Caught subprocess"), 0);
    assert_int_equal(waitpid(pending, NULL, 0), pending);
    capture_stop();
    fx_close(&fx);
}

/* FST-6: more kept exits than the warning line can list end with "...". */
enum { MANY_KEPT = 60 };
static void test_fast_many_kept_exits_truncated(void **state)
{
    (void)state;
    fixture fx;
    fx_open(&fx, EVPOL_WATCHER_FAST);
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t pids[MANY_KEPT];
    for (int i = 0; i < MANY_KEPT; i++)
        pids[i] = fork_exit(i);
    for (int i = 0; i < MANY_KEPT; i++)
        assert_true(run_until_reaped(fx.loop, pids[i]));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    capture_stop();
    const char *head = "Caught subprocesses termination from unknown pids: {";
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, head), 1);
    assert_int_equal(cap->count, 1);
    const char *msg = cap->lines[0].msg;
    size_t len = strlen(msg);
    assert_true(len > 6);
    assert_string_equal(msg + len - 6, ", ...}");
    /* Some, not all, of the pids are listed, each once with its code. */
    int listed = 0;
    for (int i = 0; i < MANY_KEPT; i++) {
        char entry[32];
        snprintf(entry, sizeof entry, "%ld: %d", (long)pids[i], i);
        if (strstr(msg, entry))
            listed++;
    }
    assert_true(listed > 0);
    assert_true(listed < MANY_KEPT);
    free(cap);
    fx_close(&fx);
}

/* FST-5: a pid kept twice while the context is open (the kernel reused it)
 * is kept once, with the newer status. The reuse is made deterministic
 * through the seam's waitpid. */
#define REUSED_PID ((pid_t)999999)
static volatile int reuse_served;
static pid_t reuse_waitpid(pid_t pid, int *status, int options)
{
    if (pid == -1) {
        int n = __atomic_load_n(&reuse_served, __ATOMIC_SEQ_CST);
        if (n < 2) {
            *status = (n == 0 ? 1 : 7) << 8; /* exit 1, then exit 7 */
            __atomic_store_n(&reuse_served, n + 1, __ATOMIC_SEQ_CST);
            return REUSED_PID;
        }
    }
    return evpol_sys_real()->waitpid(pid, status, options);
}

static void test_fast_reused_pid_keeps_newer_status(void **state)
{
    (void)state;
    evpol_sys t = *evpol_sys_real();
    t.waitpid = reuse_waitpid;
    /* Nothing fabricated until the context is open (attach_loop reaps). */
    __atomic_store_n(&reuse_served, 2, __ATOMIC_SEQ_CST);
    fixture fx;
    log_capture cap;
    open_fast_in_context(&t, &fx, &cap);
    __atomic_store_n(&reuse_served, 0, __ATOMIC_SEQ_CST);
    assert_int_equal(kill(getpid(), SIGCHLD), 0);
    assert_true(run_until_count(fx.loop, &reuse_served, 2, TIMEOUT_MS));
    run_once(fx.loop);
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    capture_stop();
    char want[96];
    snprintf(want, sizeof want, "Caught subprocesses termination from unknown pids: {%ld: 7}",
             (long)REUSED_PID);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, want), 1);
    assert_int_equal(capture_count(&cap, -1, -1, "Caught subprocess"), 1);
    fx_close(&fx);
    assert_ok(evpol_sys_set(NULL, NULL));
}

static void test_close_outside_main_thread_after_user_replaced_handler(void **state)
{
    check_close_after_user_replaced_handler(test_watcher_kind(state));
}

int main(void)
{
    const harness_test tests[] = {
        WATCHER_TEST(test_fast_identity, fast, "CW-9"),
        WATCHER_TEST(test_fast_add_needs_context, fast, "FST-4 CW-9"),
        WATCHER_TEST(test_fast_kept_exit_reported_at_registration, fast, "FST-5 CW-3 LOOP-7"),
        WATCHER_TEST(test_fast_kept_exits_dropped_at_last_exit, fast, "FST-6 CW-9"),
        WATCHER_TEST(test_fast_unknown_child_without_context, fast, "FST-7"),
        WATCHER_TEST(test_fast_no_memory_to_keep_an_exit, fast, "FST-5 FST-7"),
        WATCHER_TEST(test_close_outside_main_thread_after_user_replaced_handler, fast,
            "CW-8 FST-8"),
        WATCHER_TEST(test_fast_reaps_other_code_children, fast, "FST-1"),
        WATCHER_TEST(test_fast_close_clears_kept_exits, fast, "FST-8 CW-8"),
        WATCHER_TEST(test_fast_many_kept_exits_truncated, fast, "FST-6"),
        WATCHER_TEST(test_fast_reused_pid_keeps_newer_status, fast, "FST-5 FST-6"),
    };
    return harness_run_group("watcher_fast", tests, NULL, NULL);
}
