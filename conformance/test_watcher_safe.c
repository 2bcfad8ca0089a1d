/*
 * test_watcher_safe.c — SafeChildWatcher (SAF-1 ... SAF-7), and the
 * behaviour it shares with FastChildWatcher (CW-x, run for both kinds; the
 * Fast-only clauses are in test_watcher_fast.c).
 *
 * Real children (fork + _exit), real SIGCHLD, loops run in the main thread
 * (libevent signal events, LOOP-4). Every registration is made inside the
 * watcher's spawn context, as evpol_loop_spawn does (CW-9): FastChildWatcher
 * requires it and SafeChildWatcher ignores it. Callbacks never call cmocka
 * asserts (they would longjmp out of a running loop): they record what they
 * saw and the test asserts afterwards.
 */
#include "alloc_count.h"
#include "attached_watcher.h"
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

/* Fork a waiting child and register it inside the spawn context. */
static pid_t watched_child(evpol_watcher *w, int *wfd, int code, int sig, evpol_child_fn cb,
                           void *arg)
{
    assert_ok(evpol_watcher_enter(w, NULL));
    pid_t pid = spawn_waiting_child(wfd, code, sig);
    assert_ok(evpol_watcher_add_child_handler(w, pid, cb, arg, NULL));
    assert_ok(evpol_watcher_exit(w, NULL));
    return pid;
}

static void *sigchld_handler_now(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa), 0);
    return (void *)(uintptr_t)sa.sa_handler;
}

/* ------------------------------------------------------------------ */
/* Shared behaviour, both kinds                                        */
/* ------------------------------------------------------------------ */

static void test_exit_codes(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    static const struct { int code, sig, rc; } cases[] = {
        {0, 0, 0}, {1, 0, 1}, {255, 0, 255}, {0, SIGKILL, -9}, {0, SIGTERM, -15},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    exit_rec rec[N];
    pid_t pids[N];
    int wfd[N];
    memset(rec, 0, sizeof rec);
    for (int i = 0; i < N; i++)
        pids[i] = watched_child(fx.w, &wfd[i], cases[i].code, cases[i].sig, record_exit, &rec[i]);
    for (int i = 0; i < N; i++)
        release_child(wfd[i]);
    volatile int total = 0;
    for (int i = 0; i < N; i++) {
        assert_true(run_until(fx.loop, &rec[i].count, TIMEOUT_MS));
        total++;
    }
    run_once(fx.loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rec[i].count, 1);
        assert_int_equal(rec[i].pid, pids[i]);
        assert_int_equal(rec[i].rc, cases[i].rc);
        assert_true(rec[i].on_main);
        assert_ptr_equal(rec[i].ran_on, fx.loop);
    }
    assert_int_equal(total, N);
    fx_close(&fx);
}

/* LOOP-7: with the attached loop's debug flag set, each exit the watcher
 * delivers is logged, naming the process. */
static void test_debug_logs_exit(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    log_capture *cap = capture_new();
    assert_ok(evpol_loop_set_debug(fx.loop, true, NULL));
    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 7, 0, record_exit, &rec);
    release_child(wfd);
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(rec.count, 1);
    assert_int_equal(rec.rc, 7);
    char line[96];
    snprintf(line, sizeof line, "process %ld exited with returncode 7", (long)pid);
    assert_int_equal(capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, line), 1);
    capture_free(cap);
    fx_close(&fx);
}

static void test_many_exit_together(void **state)
{
    /* Several children exit before the loop looks: their SIGCHLDs coalesce
     * into one wakeup, and every exit is still reported once. */
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    enum { N = 12 };
    exit_rec rec[N];
    pid_t pids[N];
    int wfd[N];
    memset(rec, 0, sizeof rec);
    volatile int done = 0;
    for (int i = 0; i < N; i++)
        pids[i] = watched_child(fx.w, &wfd[i], 10 + i, 0, record_exit, &rec[i]);
    for (int i = 0; i < N; i++)
        release_child(wfd[i]);
    for (int i = 0; i < N; i++)
        wait_exited_not_reaped(pids[i]);
    for (int i = 0; i < N; i++)
        if (run_until(fx.loop, &rec[i].count, TIMEOUT_MS))
            done++;
    run_once(fx.loop);
    assert_int_equal(done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rec[i].count, 1);
        assert_int_equal(rec[i].rc, 10 + i);
    }
    fx_close(&fx);
}

static void test_replace_handler(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    exit_rec first = {0}, second = {0};
    int wfd;
    assert_ok(evpol_watcher_enter(fx.w, NULL));
    pid_t pid = spawn_waiting_child(&wfd, 7, 0);
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &first, NULL));
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &second, NULL));
    assert_ok(evpol_watcher_exit(fx.w, NULL));
    release_child(wfd);
    assert_true(run_until(fx.loop, &second.count, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(first.count, 0);
    assert_int_equal(second.count, 1);
    assert_int_equal(second.pid, pid);
    assert_int_equal(second.rc, 7);
    fx_close(&fx);
}

static void test_remove_handler(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    log_capture cap;
    capture_start(&cap);
    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 3, 0, record_exit, &rec);
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, pid, NULL), 1);
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, pid, NULL), 0);
    assert_int_equal(evpol_watcher_remove_child_handler(fx.w, 999999, NULL), 0);
    release_child(wfd);
    /* The watcher still reaps it: no zombie is left behind. */
    assert_true(run_until_reaped(fx.loop, pid));
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(count_zombie_children(), 0);
    /* Silently: a removed handler is not an unknown child. */
    assert_int_equal(capture_count(&cap, -1, -1, "nknown"), 0);
    capture_stop();
    fx_close(&fx);
}

static void ignore_signal(int signum, void *arg)
{
    (void)signum;
    (void)arg;
}

/* The program took the watcher's SIGCHLD handler off its loop itself: the
 * switch to another loop finds no handler to remove (remove reports 0),
 * which is not an error. The old loop's link is freed all the same (it
 * is not left behind for a later attach to overwrite), and SIGCHLD is
 * heard on the new loop. */
static void test_attach_after_program_removed_handler(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    evpol_loop *b = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &b, NULL));
    assert_int_equal(evpol_loop_remove_signal_handler(fx.loop, SIGCHLD, NULL), 1);
    /* B's first signal handler also allocates B's index of handlers: have
     * it made now, so that the count below sees only the switch. */
    assert_ok(evpol_loop_add_signal_handler(b, SIGUSR1, ignore_signal, NULL, NULL));
    assert_int_equal(evpol_loop_remove_signal_handler(b, SIGUSR1, NULL), 1);
    long blocks = alloc_count_evpol();
    assert_ok(evpol_watcher_attach_loop(fx.w, b, NULL));
    /* The old link freed, the new one in its place, and B's record of the
     * handler: one block more. */
    assert_int_equal(alloc_count_evpol(), blocks + 1);
    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 9, 0, record_exit, &rec);
    release_child(wfd);
    assert_true(run_until(b, &rec.count, TIMEOUT_MS));
    run_once(b);
    assert_int_equal(rec.count, 1);
    assert_int_equal(rec.pid, pid);
    assert_int_equal(rec.rc, 9);
    assert_ptr_equal(rec.ran_on, b);
    /* B goes before fx_close counts the descriptors. */
    assert_int_equal(evpol_watcher_close(fx.w, NULL), 0);
    assert_int_equal(evpol_loop_close(b, NULL), 0);
    evpol_loop_unref(b);
    fx_close(&fx);
}

static void test_attach_switch_reaps_once_on_new_loop(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    evpol_loop *b = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &b, NULL));
    enum { N = 4 };
    exit_rec rec[N];
    pid_t pids[N];
    int wfd[N];
    memset(rec, 0, sizeof rec);
    for (int i = 0; i < N; i++)
        pids[i] = watched_child(fx.w, &wfd[i], 20 + i, 0, record_exit, &rec[i]);
    /* Exit while attached to A, whose loop never runs: only the switch to
     * B can report them (SAF-5). */
    for (int i = 0; i < N; i++)
        release_child(wfd[i]);
    for (int i = 0; i < N; i++)
        wait_exited_not_reaped(pids[i]);
    assert_ok(evpol_watcher_attach_loop(fx.w, b, NULL));
    for (int i = 0; i < N; i++)
        assert_true(run_until(b, &rec[i].count, TIMEOUT_MS));
    run_once(b);
    run_once(fx.loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rec[i].count, 1);
        assert_int_equal(rec[i].pid, pids[i]);
        assert_int_equal(rec[i].rc, 20 + i);
        assert_ptr_equal(rec[i].ran_on, b);
        assert_true(rec[i].on_main);
    }
    /* After the switch SIGCHLD is heard on B, and no longer on A. */
    exit_rec later = {0};
    int wfd2;
    pid_t pid = watched_child(fx.w, &wfd2, 42, 0, record_exit, &later);
    release_child(wfd2);
    assert_true(run_until(b, &later.count, TIMEOUT_MS));
    assert_int_equal(later.pid, pid);
    assert_int_equal(later.rc, 42);
    assert_ptr_equal(later.ran_on, b);
    run_once(fx.loop);
    assert_int_equal(later.count, 1);

    assert_int_equal(evpol_watcher_close(fx.w, NULL), 0);
    evpol_watcher_unref(fx.w);
    assert_int_equal(evpol_loop_close(b, NULL), 0);
    evpol_loop_unref(b);
    assert_int_equal(evpol_loop_close(fx.loop, NULL), 0);
    evpol_loop_unref(fx.loop);
    assert_no_leaks(fx.before);
}

static void test_detach_with_pending_warns(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    log_capture cap;
    capture_start(&cap);
    const char *text = "A loop is being detached from a child watcher with pending handlers";
    /* Nothing pending: no warning. */
    assert_ok(evpol_watcher_attach_loop(fx.w, NULL, NULL));
    assert_int_equal(capture_count(&cap, -1, -1, text), 0);
    assert_ok(evpol_watcher_attach_loop(fx.w, fx.loop, NULL));

    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 5, 0, record_exit, &rec);
    /* Switching to another loop is not detaching. */
    assert_ok(evpol_watcher_attach_loop(fx.w, fx.loop, NULL));
    assert_int_equal(capture_count(&cap, -1, -1, text), 0);
    assert_ok(evpol_watcher_attach_loop(fx.w, NULL, NULL));
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, text), 1);
    assert_int_equal(cap.count, 1);
    assert_string_equal(cap.lines[0].msg, text);
    /* Detached already: no second warning. */
    assert_ok(evpol_watcher_attach_loop(fx.w, NULL, NULL));
    assert_int_equal(capture_count(&cap, -1, -1, text), 1);
    capture_stop();
    assert_int_equal(evpol_watcher_is_active(fx.w), 0);

    /* Re-attached, the exit is reported. */
    release_child(wfd);
    wait_exited_not_reaped(pid);
    assert_ok(evpol_watcher_attach_loop(fx.w, fx.loop, NULL));
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    assert_int_equal(rec.rc, 5);
    fx_close(&fx);
}

typedef struct active_probe {
    evpol_watcher *w;
    int seen;
    volatile int done;
} active_probe;

static void probe_active(void *arg)
{
    active_probe *p = arg;
    p->seen = evpol_watcher_is_active(p->w);
    p->done = 1;
}

static void test_is_active_only_while_loop_runs(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    evpol_loop *loop = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new(kind, &w, NULL));
    assert_int_equal(evpol_watcher_is_active(w), 0); /* no loop */
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    assert_int_equal(evpol_watcher_is_active(w), 0); /* not running */
    active_probe p = {w, -1, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, probe_active, &p, NULL));
    assert_true(run_until(loop, &p.done, TIMEOUT_MS));
    assert_int_equal(p.seen, 1); /* inside the running loop */
    assert_int_equal(evpol_watcher_is_active(w), 0); /* stopped */
    assert_ok(evpol_watcher_attach_loop(w, NULL, NULL));
    p.done = 0;
    p.seen = -1;
    assert_ok(evpol_loop_call_soon_threadsafe(loop, probe_active, &p, NULL));
    assert_true(run_until(loop, &p.done, TIMEOUT_MS));
    assert_int_equal(p.seen, 0); /* running, but not attached */
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    p.done = 0;
    p.seen = -1;
    assert_ok(evpol_loop_call_soon_threadsafe(loop, probe_active, &p, NULL));
    assert_true(run_until(loop, &p.done, TIMEOUT_MS));
    assert_int_equal(p.seen, 0); /* closed */
    evpol_watcher_unref(w);
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

typedef struct thread_attach {
    evpol_watcher *w;
    evpol_loop *loop;
    int rc;
    evpol_error err;
} thread_attach;

static void *attach_in_thread(void *arg)
{
    thread_attach *t = arg;
    t->rc = evpol_watcher_attach_loop(t->w, t->loop, &t->err);
    return NULL;
}

static void attach_from_thread(thread_attach *t)
{
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, attach_in_thread, t), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
}

static void test_attach_outside_main_thread_fails(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    evpol_loop *a = NULL, *b = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &a, NULL));
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &b, NULL));
    assert_ok(evpol_watcher_new(kind, &w, NULL));

    thread_attach t = {w, a, 0, {0}};
    attach_from_thread(&t);
    assert_int_equal(t.rc, EVPOL_ERUNTIME);
    assert_int_equal(t.err.code, EVPOL_ERUNTIME);
    assert_non_null(strstr(t.err.message, "main thread"));

    /* Attached from the main thread, a switch from another thread fails and
     * changes nothing: exits are still heard on A. */
    assert_ok(evpol_watcher_attach_loop(w, a, NULL));
    thread_attach t2 = {w, b, 0, {0}};
    attach_from_thread(&t2);
    assert_int_equal(t2.rc, EVPOL_ERUNTIME);
    thread_attach t3 = {w, NULL, 0, {0}};
    attach_from_thread(&t3);
    assert_int_equal(t3.rc, EVPOL_ERUNTIME);

    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(w, &wfd, 9, 0, record_exit, &rec);
    release_child(wfd);
    assert_true(run_until(a, &rec.count, TIMEOUT_MS));
    assert_int_equal(rec.pid, pid);
    assert_int_equal(rec.rc, 9);
    assert_ptr_equal(rec.ran_on, a);

    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    evpol_watcher_unref(w);
    evpol_loop_close(a, NULL);
    evpol_loop_close(b, NULL);
    evpol_loop_unref(a);
    evpol_loop_unref(b);
    assert_no_leaks(before);
}

static void test_close_clears_and_detaches(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    void *disposition = sigchld_handler_now();
    evpol_loop *loop = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new(kind, &w, NULL));
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    /* libevent owns SIGCHLD while the watcher is attached. */
    assert_ptr_not_equal(sigchld_handler_now(), disposition);

    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(w, &wfd, 4, 0, record_exit, &rec);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_int_equal(evpol_watcher_close(w, NULL), 0); /* harmless twice */
    assert_ptr_equal(sigchld_handler_now(), disposition);
    assert_int_equal(evpol_watcher_is_active(w), 0);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_add_child_handler(w, pid, record_exit, &rec, &err),
                     EVPOL_ERUNTIME);
    assert_int_equal(evpol_watcher_attach_loop(w, loop, &err), EVPOL_ERUNTIME);

    /* The exit is not reported after close, and not reaped either. */
    release_child(wfd);
    wait_exited_not_reaped(pid);
    run_once(loop);
    run_once(loop);
    assert_int_equal(rec.count, 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 4);

    evpol_watcher_unref(w);
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

static void test_close_after_loop_closed(void **state)
{
    /* The attached loop is closed first: a posted exit is dropped with the
     * CW-12 warning, and the watcher still closes cleanly. */
    evpol_watcher_kind kind = test_watcher_kind(state);
    resource_snapshot before = resources_now();
    void *disposition = sigchld_handler_now();
    evpol_loop *loop = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new(kind, &w, NULL));
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    log_capture cap;
    capture_start(&cap);

    exit_rec rec = {0};
    int wfd;
    assert_ok(evpol_watcher_enter(w, NULL));
    pid_t pid = spawn_waiting_child(&wfd, 6, 0);
    release_child(wfd);
    wait_exited_not_reaped(pid);
    if (kind == EVPOL_WATCHER_FAST) {
        /* Let Fast reap and keep it inside the open context (FST-5). */
        assert_true(run_until_reaped(loop, pid));
    }
    /* Safe finds it at registration (SAF-6), Fast among its kept exits:
     * both post it to the attached loop. */
    assert_ok(evpol_watcher_add_child_handler(w, pid, record_exit, &rec, NULL));
    assert_ok(evpol_watcher_exit(w, NULL));
    assert_int_equal(rec.count, 0);
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    assert_int_equal(rec.count, 0);
    char msg[128];
    snprintf(msg, sizeof msg, "that handles pid %ld is closed", (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, msg), 1);
    capture_stop();
    assert_ptr_equal(sigchld_handler_now(), disposition);

    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    assert_int_equal(rec.count, 0);
    assert_no_leaks(before);
}

typedef struct close_probe {
    evpol_watcher *w;
    volatile int calls;
} close_probe;

static void close_from_callback(pid_t pid, int rc, void *arg)
{
    (void)pid;
    (void)rc;
    close_probe *p = arg;
    p->calls++;
    evpol_watcher_close(p->w, NULL);
}

static void test_close_inside_callback_stops_the_rest(void **state)
{
    /* Two exits reported by the same SIGCHLD; the first callback closes the
     * watcher, so the second is never called (CW-8: nothing after close). */
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    close_probe p = {fx.w, 0};
    int wfd[2];
    pid_t pids[2];
    for (int i = 0; i < 2; i++)
        pids[i] = watched_child(fx.w, &wfd[i], 0, 0, close_from_callback, &p);
    for (int i = 0; i < 2; i++)
        release_child(wfd[i]);
    for (int i = 0; i < 2; i++)
        wait_exited_not_reaped(pids[i]);
    assert_true(run_until(fx.loop, &p.calls, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(p.calls, 1);
    /* Whatever the watcher did not reap is ours to reap. */
    for (int i = 0; i < 2; i++)
        waitpid(pids[i], NULL, WNOHANG);
    fx_close(&fx);
}

/* ---- registration from another thread while the loop reaps ---- */

#define CONCURRENT_CHILDREN 200

typedef struct concurrent {
    evpol_watcher *w;
    exit_rec rec[CONCURRENT_CHILDREN];
    pid_t pids[CONCURRENT_CHILDREN];
    volatile int total;
    int errors;
} concurrent;

static void *concurrent_spawner(void *arg)
{
    concurrent *c = arg;
    /* SIGCHLD goes to the main thread. With a real kernel any thread would
     * do (libevent's handler only writes to its socketpair), but
     * ThreadSanitizer defers a signal until its thread reaches a safe point
     * and loses it when that thread exits first. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, NULL);
    for (int i = 0; i < CONCURRENT_CHILDREN; i++) {
        /* The context keeps Fast from dropping an exit it reaps on the
         * loop thread before this thread has registered it (FST-5). */
        if (evpol_watcher_enter(c->w, NULL) != 0) {
            c->errors++;
            continue;
        }
        pid_t pid = fork();
        if (pid == 0)
            _exit(i % 100);
        if (pid < 0)
            c->errors++;
        c->pids[i] = pid;
        if (pid > 0 && evpol_watcher_add_child_handler(c->w, pid, record_exit, &c->rec[i],
                                                       NULL) != 0)
            c->errors++;
        if (evpol_watcher_exit(c->w, NULL) != 0)
            c->errors++;
    }
    return NULL;
}

static void count_done(concurrent *c)
{
    int n = 0;
    for (int i = 0; i < CONCURRENT_CHILDREN; i++)
        n += __atomic_load_n(&c->rec[i].count, __ATOMIC_SEQ_CST);
    c->total = n;
}

typedef struct count_tick {
    evpol_loop *loop;
    concurrent *c;
} count_tick;

static void count_tick_fn(void *arg)
{
    count_tick *t = arg;
    count_done(t->c);
    if (t->c->total < CONCURRENT_CHILDREN)
        evpol_loop_call_later(t->loop, 1, count_tick_fn, t, NULL);
}

static void test_register_from_thread_while_loop_reaps(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    static concurrent c;
    memset(&c, 0, sizeof c);
    c.w = fx.w;
    static count_tick tick;
    tick.loop = fx.loop;
    tick.c = &c;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, concurrent_spawner, &c), 0);
    assert_ok(evpol_loop_call_soon_threadsafe(fx.loop, count_tick_fn, &tick, NULL));
    int reached = run_until_count(fx.loop, &c.total, CONCURRENT_CHILDREN, 60000);
    assert_int_equal(pthread_join(th, NULL), 0);
    run_once(fx.loop);
    count_done(&c);
    assert_int_equal(c.errors, 0);
    assert_true(reached);
    for (int i = 0; i < CONCURRENT_CHILDREN; i++) {
        assert_int_equal(c.rec[i].count, 1);
        assert_int_equal(c.rec[i].pid, c.pids[i]);
        assert_int_equal(c.rec[i].rc, i % 100);
        assert_true(c.rec[i].on_main);
    }
    assert_int_equal(count_zombie_children(), 0);
    fx_close(&fx);
}

/* ---- close from another thread: the handler cannot be removed there ---- */

static void test_close_outside_main_thread(void **state)
{
    /* close must still succeed (CW-8): the loop's SIGCHLD handler, which
     * only the main thread may remove, is cut from the watcher and left
     * inert, with a resource warning; it goes when the loop closes. */
    void *disposition = sigchld_handler_now();
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    log_capture cap;
    capture_start(&cap);
    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 3, 0, record_exit, &rec);
    assert_int_equal(close_in_other_thread(fx.w), 0);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "closed outside the main thread"), 1);
    /* The inert handler hears the SIGCHLD and does nothing. */
    release_child(wfd);
    wait_exited_not_reaped(pid);
    run_once(fx.loop);
    run_once(fx.loop);
    assert_int_equal(rec.count, 0);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), pid);
    capture_stop();
    evpol_watcher_unref(fx.w);
    assert_ptr_not_equal(sigchld_handler_now(), disposition);
    assert_int_equal(evpol_loop_close(fx.loop, NULL), 0);
    assert_ptr_equal(sigchld_handler_now(), disposition);
    evpol_loop_unref(fx.loop);
    assert_no_leaks(fx.before);
}

static void test_close_outside_main_thread_after_user_replaced_handler(void **state)
{
    check_close_after_user_replaced_handler(test_watcher_kind(state));
}

/* ---- stress: thousands of children, each exit exactly once ---- */

#define STRESS_TOTAL 2000
#define STRESS_INFLIGHT 64

typedef struct stress {
    evpol_watcher *w;
    pid_t pids[STRESS_INFLIGHT];
    int expect[STRESS_INFLIGHT];
    int spawned;
    volatile int done;
    int errors;
    char first_error[160];
} stress;

static void stress_error(stress *st, const char *what, long a, long b)
{
    if (st->errors++ == 0)
        snprintf(st->first_error, sizeof st->first_error, "%s (%ld, %ld)", what, a, b);
}

static void stress_exit(pid_t pid, int rc, void *arg);

static void stress_spawn(stress *st, int slot)
{
    int code = st->spawned % 256;
    if (evpol_watcher_enter(st->w, NULL) != 0) {
        stress_error(st, "enter failed", slot, 0);
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(code);
    if (pid < 0) {
        stress_error(st, "fork failed", errno, 0);
    } else {
        st->pids[slot] = pid;
        st->expect[slot] = code;
        st->spawned++;
        if (evpol_watcher_add_child_handler(st->w, pid, stress_exit, st, NULL) != 0)
            stress_error(st, "add_child_handler failed", pid, 0);
    }
    evpol_watcher_exit(st->w, NULL);
}

static void stress_exit(pid_t pid, int rc, void *arg)
{
    stress *st = arg;
    if (!pthread_equal(pthread_self(), harness_main_thread))
        stress_error(st, "callback off the loop's thread", pid, 0);
    int slot = -1;
    for (int i = 0; i < STRESS_INFLIGHT; i++)
        if (st->pids[i] == pid)
            slot = i;
    if (slot < 0) {
        stress_error(st, "unknown or repeated pid", pid, rc);
        return;
    }
    if (rc != st->expect[slot])
        stress_error(st, "wrong returncode", rc, st->expect[slot]);
    st->pids[slot] = 0;
    st->done++;
    if (st->spawned < STRESS_TOTAL)
        stress_spawn(st, slot);
}

static void stress_start(void *arg)
{
    stress *st = arg;
    for (int i = 0; i < STRESS_INFLIGHT; i++)
        stress_spawn(st, i);
}

static void test_stress_thousands_of_children(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    static stress st; /* big; callbacks reach it by pointer */
    memset(&st, 0, sizeof st);
    st.w = fx.w;
    assert_ok(evpol_loop_call_soon_threadsafe(fx.loop, stress_start, &st, NULL));
    int reached = run_until_count(fx.loop, &st.done, STRESS_TOTAL, 120000);
    run_once(fx.loop);
    if (st.errors)
        fail_msg("%d errors, first: %s", st.errors, st.first_error);
    assert_true(reached);
    assert_int_equal(st.spawned, STRESS_TOTAL);
    assert_int_equal(st.done, STRESS_TOTAL);
    assert_int_equal(count_zombie_children(), 0);
    fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* SafeChildWatcher only                                               */
/* ------------------------------------------------------------------ */

static void test_safe_identity(void **state)
{
    (void)state;
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_SAFE, &w, NULL));
    assert_string_equal(evpol_watcher_name(w), "SafeChildWatcher");
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_SAFE);
    /* The spawn context means nothing to Safe, but it still counts: an exit
     * without an enter is an error for every watcher (evpol.h). */
    assert_int_equal(evpol_watcher_exit(w, NULL), EVPOL_ERUNTIME);
    assert_ok(evpol_watcher_enter(w, NULL));
    assert_ok(evpol_watcher_exit(w, NULL));
    evpol_watcher_unref(w);
}

static void test_safe_leaves_unregistered_children(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    pid_t stranger = fork_exit(17);
    wait_exited_not_reaped(stranger);
    exit_rec rec = {0};
    int wfd;
    pid_t pid = watched_child(fx.w, &wfd, 1, 0, record_exit, &rec);
    release_child(wfd);
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    assert_int_equal(rec.pid, pid);
    /* The SIGCHLD of both was seen; the stranger is still ours to reap. */
    int status = 0;
    assert_int_equal(waitpid(stranger, &status, WNOHANG), stranger);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 17);
    fx_close(&fx);
}

static void test_safe_exited_before_registration(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    pid_t pid = fork_exit(33);
    wait_exited_not_reaped(pid);
    exit_rec rec = {0};
    assert_ok(evpol_watcher_add_child_handler(fx.w, pid, record_exit, &rec, NULL));
    /* Posted to the attached loop, not called from add. */
    assert_int_equal(rec.count, 0);
    assert_true(run_until(fx.loop, &rec.count, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(rec.count, 1);
    assert_int_equal(rec.pid, pid);
    assert_int_equal(rec.rc, 33);
    assert_true(rec.on_main);
    assert_ptr_equal(rec.ran_on, fx.loop);
    fx_close(&fx);
}

typedef struct thread_add {
    evpol_watcher *w;
    pid_t pid;
    exit_rec *rec;
    int rc;
} thread_add;

static void *add_in_thread(void *arg)
{
    thread_add *t = arg;
    t->rc = evpol_watcher_add_child_handler(t->w, t->pid, record_exit, t->rec, NULL);
    return NULL;
}

static void test_safe_registered_from_other_thread(void **state)
{
    /* Registration from any thread; the callback runs on the attached
     * loop's thread, here the main thread (CW-3). */
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    exit_rec rec[2];
    memset(rec, 0, sizeof rec);
    int wfd;
    pid_t alive = spawn_waiting_child(&wfd, 12, 0);
    pid_t dead = fork_exit(13);
    wait_exited_not_reaped(dead);
    thread_add t[2] = {{fx.w, alive, &rec[0], -1}, {fx.w, dead, &rec[1], -1}};
    for (int i = 0; i < 2; i++) {
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, add_in_thread, &t[i]), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(t[i].rc, 0);
    }
    release_child(wfd);
    assert_true(run_until(fx.loop, &rec[0].count, TIMEOUT_MS));
    assert_true(run_until(fx.loop, &rec[1].count, TIMEOUT_MS));
    assert_int_equal(rec[0].rc, 12);
    assert_int_equal(rec[1].rc, 13);
    assert_true(rec[0].on_main);
    assert_true(rec[1].on_main);
    fx_close(&fx);
}

static void test_safe_no_loop_reports_on_caller(void **state)
{
    /* With no loop attached there is no loop thread: an exit found at
     * registration is reported on the calling thread. */
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_SAFE, &w, NULL));
    pid_t pid = fork_exit(2);
    wait_exited_not_reaped(pid);
    exit_rec rec = {0};
    assert_ok(evpol_watcher_add_child_handler(w, pid, record_exit, &rec, NULL));
    assert_int_equal(rec.count, 1);
    assert_int_equal(rec.rc, 2);
    assert_true(rec.on_main);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    evpol_watcher_unref(w);
    assert_no_leaks(before);
}

static void test_safe_child_reaped_elsewhere(void **state)
{
    fixture fx;
    fx_open(&fx, test_watcher_kind(state));
    log_capture cap;
    capture_start(&cap);
    char msg[128];

    /* Reaped before registration: found at once. */
    pid_t early = fork_exit(8);
    assert_int_equal(waitpid(early, NULL, 0), early);
    exit_rec rec1 = {0};
    assert_ok(evpol_watcher_add_child_handler(fx.w, early, record_exit, &rec1, NULL));
    assert_true(run_until(fx.loop, &rec1.count, TIMEOUT_MS));
    assert_int_equal(rec1.pid, early);
    assert_int_equal(rec1.rc, 255);
    assert_true(rec1.on_main);
    snprintf(msg, sizeof msg, "Unknown child process pid %ld, will report returncode 255",
             (long)early);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, msg), 1);

    /* Reaped after registration, before the SIGCHLD was handled. */
    exit_rec rec2 = {0};
    int wfd;
    pid_t late = watched_child(fx.w, &wfd, 8, 0, record_exit, &rec2);
    release_child(wfd);
    assert_int_equal(waitpid(late, NULL, 0), late);
    assert_true(run_until(fx.loop, &rec2.count, TIMEOUT_MS));
    run_once(fx.loop);
    assert_int_equal(rec2.count, 1);
    assert_int_equal(rec2.pid, late);
    assert_int_equal(rec2.rc, 255);
    snprintf(msg, sizeof msg, "Unknown child process pid %ld, will report returncode 255",
             (long)late);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, msg), 1);
    capture_stop();
    fx_close(&fx);
}

int main(void)
{
    const harness_test tests[] = {
        WATCHER_TESTS(test_exit_codes, W_SAFE | W_FAST,
            "CW-1 CW-3 CW-10 SAF-1@safe SAF-3@safe FST-1@fast FST-3@fast"),
        WATCHER_TESTS(test_debug_logs_exit, W_SAFE | W_FAST, "LOOP-7"),
        WATCHER_TESTS(test_many_exit_together, W_SAFE | W_FAST,
            "CW-1 SAF-3@safe FST-1@fast FST-2@fast"),
        WATCHER_TESTS(test_replace_handler, W_SAFE | W_FAST, "CW-2"),
        WATCHER_TESTS(test_remove_handler, W_SAFE | W_FAST, "CW-4"),
        WATCHER_TESTS(test_attach_switch_reaps_once_on_new_loop, W_SAFE | W_FAST,
            "CW-5 SAF-5@safe FST-3@fast"),
        WATCHER_TESTS(test_attach_after_program_removed_handler, W_SAFE | W_FAST,
            "CW-5 SAF-5@safe FST-3@fast"),
        WATCHER_TESTS(test_detach_with_pending_warns, W_SAFE | W_FAST, "CW-5 SAF-4@safe"),
        WATCHER_TESTS(test_is_active_only_while_loop_runs, W_SAFE | W_FAST,
            "CW-6 SAF-2@safe FST-3@fast"),
        WATCHER_TESTS(test_attach_outside_main_thread_fails, W_SAFE | W_FAST,
            "SAF-1@safe SAF-2@safe FST-3@fast"),
        WATCHER_TESTS(test_close_clears_and_detaches, W_SAFE | W_FAST,
            "CW-8 SAF-7@safe FST-8@fast"),
        WATCHER_TESTS(test_close_after_loop_closed, W_SAFE | W_FAST,
            "CW-8 CW-12 SAF-6@safe SAF-7@safe FST-5@fast FST-8@fast"),
        WATCHER_TESTS(test_close_inside_callback_stops_the_rest, W_SAFE | W_FAST, "CW-8"),
        WATCHER_TESTS(test_register_from_thread_while_loop_reaps, W_SAFE | W_FAST,
            "CW-3 SAF-1@safe SAF-6@safe CW-9@fast FST-5@fast"),
        WATCHER_TESTS(test_close_outside_main_thread, W_SAFE | W_FAST,
            "CW-8 SAF-7@safe FST-8@fast"),
        WATCHER_TEST(test_close_outside_main_thread_after_user_replaced_handler, safe,
            "CW-8 SAF-7"),
        WATCHER_TESTS(test_stress_thousands_of_children, W_SAFE | W_FAST,
            "CW-1 CW-3 SAF-3@safe CW-9@fast FST-1@fast FST-2@fast"),
        WATCHER_TEST(test_safe_identity, safe, "CW-9"),
        WATCHER_TEST(test_safe_leaves_unregistered_children, safe, "SAF-3"),
        WATCHER_TEST(test_safe_exited_before_registration, safe, "SAF-6 CW-3"),
        WATCHER_TEST(test_safe_registered_from_other_thread, safe, "CW-3 SAF-1 SAF-6"),
        WATCHER_TEST(test_safe_no_loop_reports_on_caller, safe, "SAF-6 CW-3"),
        WATCHER_TEST(test_safe_child_reaped_elsewhere, safe, "CW-11"),
    };
    return harness_run_group("watcher_safe", tests, NULL, NULL);
}
