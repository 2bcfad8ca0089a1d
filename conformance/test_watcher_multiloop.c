/*
 * test_watcher_multiloop.c — MultiLoopChildWatcher (MUL-1 ... MUL-7) and
 * the watcher interface clauses as they apply to it (CW-1 ... CW-12).
 *
 * Real children, real SIGCHLD, real threads. Worker threads never call
 * cmocka asserts (they would longjmp into the main thread's state): they
 * record what they saw and the main thread asserts after joining them.
 * Every test leaves the SIGCHLD disposition as the program started with
 * (checked), no watcher open and no child behind.
 */
#include "harness.h"
#include "alloc_count.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

/* ThreadSanitizer runs a signal handler only when the thread that took the
 * signal reaches one of its interception points: not while blocked in
 * read(2). */
#if defined(__SANITIZE_THREAD__)
#define SIGNALS_DEFERRED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIGNALS_DEFERRED 1
#endif
#endif
#ifndef SIGNALS_DEFERRED
#define SIGNALS_DEFERRED 0
#endif

/* The kernel may report this flag, set by the C library for its own use,
 * in a disposition read back with sigaction; glibc does not define it. */
#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

/* The disposition the program started with (SIG_DFL under cmocka). */
static struct sigaction g_orig_sigchld;

static struct sigaction current_sigchld(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa), 0);
    return sa;
}

static void assert_sigchld_original(void)
{
    struct sigaction cur = current_sigchld();
    assert_ptr_equal((void *)cur.sa_handler, (void *)g_orig_sigchld.sa_handler);
    assert_int_equal(cur.sa_flags & ~SA_RESTORER, g_orig_sigchld.sa_flags & ~SA_RESTORER);
}

static void restore_original_sigchld(void)
{
    assert_int_equal(sigaction(SIGCHLD, &g_orig_sigchld, NULL), 0);
}

/* Stands for a handler installed by code outside evpol. */
static void outside_handler(int signum)
{
    (void)signum;
}

static void install_outside_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = outside_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    assert_int_equal(sigaction(SIGCHLD, &sa, NULL), 0);
}

/* Watchers made by the running test. A test that fails leaves its watchers
 * open (cmocka jumps out of it), and an active one would make every later
 * test fail too; the next test's first watcher closes them. */
#define MAX_OPEN 8
static struct {
    evpol_watcher *w;
    const char *test;
} g_open[MAX_OPEN];

static void forget_watcher(evpol_watcher *w)
{
    for (int i = 0; i < MAX_OPEN; i++)
        if (g_open[i].w == w)
            g_open[i].w = NULL;
}

static void remember_watcher(evpol_watcher *w, const char *test)
{
    for (int i = 0; i < MAX_OPEN; i++) {
        if (g_open[i].w && strcmp(g_open[i].test, test) != 0) {
            evpol_watcher_close(g_open[i].w, NULL);
            evpol_watcher_unref(g_open[i].w);
            g_open[i].w = NULL;
            restore_original_sigchld();
            /* and its children */
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        }
    }
    for (int i = 0; i < MAX_OPEN; i++) {
        if (!g_open[i].w) {
            g_open[i].w = w;
            g_open[i].test = test;
            return;
        }
    }
}

#define new_multiloop() new_multiloop_in(__func__)
#define new_active_multiloop() new_active_multiloop_in(__func__)

static evpol_watcher *new_multiloop_in(const char *test)
{
    evpol_watcher *w = NULL;
    evpol_error err = {0};
    if (evpol_watcher_new(EVPOL_WATCHER_MULTILOOP, &w, &err) != 0)
        fail_msg("evpol_watcher_new: %s", err.message);
    remember_watcher(w, test);
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_MULTILOOP);
    assert_string_equal(evpol_watcher_name(w), "MultiLoopChildWatcher");
    return w;
}

static evpol_watcher *new_active_multiloop_in(const char *test)
{
    evpol_watcher *w = new_multiloop_in(test);
    evpol_error err = {0};
    if (evpol_watcher_attach_loop(w, NULL, &err) != 0)
        fail_msg("attach_loop: %s", err.message);
    assert_int_equal(evpol_watcher_is_active(w), 1);
    return w;
}

static void close_and_free(evpol_watcher *w)
{
    evpol_error err = {0};
    if (evpol_watcher_close(w, &err) != 0)
        fail_msg("close: %s", err.message);
    forget_watcher(w);
    evpol_watcher_unref(w);
}

/* One pass over what the loop has ready (posted deliveries included). */
static void flush_loop(evpol_loop *loop)
{
    assert_ok(evpol_loop_stop(loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
}

/* Wait (bounded) until `pid` has exited and is not reaped yet. */
static int wait_zombie(pid_t pid)
{
    for (int waited = 0; waited < TIMEOUT_MS; waited += 2) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return 1;
        sleep_ms(2);
    }
    return 0;
}

/* Wait (bounded) until someone else has reaped `pid`. */
static int wait_reaped(pid_t pid)
{
    for (int waited = 0; waited < TIMEOUT_MS; waited += 2) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
            return 1;
        sleep_ms(2);
    }
    return 0;
}

/* Threads of this process named as the reaper names itself. */
static int count_reapers(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue; /* exited meanwhile */
        if (fgets(comm, sizeof comm, f) && strncmp(comm, "evpol-multiloop", 15) == 0)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Wait (bounded) until exactly `n` reapers run: a new one names itself
 * only once started. */
static int wait_reapers(int n)
{
    for (int waited = 0; waited < TIMEOUT_MS; waited += 2) {
        if (count_reapers() == n)
            return 1;
        sleep_ms(2);
    }
    return 0;
}

/* What a callback saw. */
typedef struct exit_rec {
    volatile int *done; /* bumped once per call, when set */
    int calls;
    pid_t pid;
    int rc;
    pthread_t thread;
} exit_rec;

static void record_exit(pid_t pid, int rc, void *arg)
{
    exit_rec *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->thread = pthread_self();
    __atomic_add_fetch(&r->calls, 1, __ATOMIC_SEQ_CST);
    if (r->done)
        __atomic_add_fetch(r->done, 1, __ATOMIC_SEQ_CST);
}

static int calls_of(exit_rec *r)
{
    return __atomic_load_n(&r->calls, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------------ */
/* MUL-1, MUL-5, MUL-6: the handler                                    */
/* ------------------------------------------------------------------ */

static void test_handler_installed_on_first_attach(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_multiloop();
    /* Creation alone installs nothing. */
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_sigchld_original();

    /* CPython installs on the first attach_loop whatever its argument. */
    assert_ok(evpol_watcher_attach_loop(w, NULL, NULL));
    struct sigaction installed = current_sigchld();
    assert_true(installed.sa_handler != SIG_DFL && installed.sa_handler != SIG_IGN);
    assert_false(installed.sa_flags & SA_SIGINFO);
    assert_true(installed.sa_flags & SA_RESTART);
    assert_int_equal(evpol_watcher_is_active(w), 1);
    /* One reaper thread and one pipe. */
    assert_true(wait_reapers(1));
    assert_int_equal(resources_now().fds, before.fds + 2);

    /* Later attaches (CW-5: any loop, or none) change nothing. */
    evpol_loop *loop = new_loop();
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    assert_ok(evpol_watcher_attach_loop(w, NULL, NULL));
    struct sigaction again = current_sigchld();
    assert_ptr_equal((void *)again.sa_handler, (void *)installed.sa_handler);
    assert_int_equal(evpol_watcher_is_active(w), 1);
    assert_true(wait_reapers(1));

    assert_ok(evpol_watcher_close(w, NULL));
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_sigchld_original();
    forget_watcher(w);
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

static void test_attach_with_a_loop_installs(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_multiloop();
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    assert_int_equal(evpol_watcher_is_active(w), 1);
    assert_true(current_sigchld().sa_flags & SA_RESTART);
    close_and_free(w);
    assert_sigchld_original();
    evpol_loop_unref(loop);
}

static void test_close_restores_previous_handler(void **state)
{
    (void)state;
    install_outside_handler();
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    assert_true(current_sigchld().sa_handler != outside_handler);
    /* CPython's warning for a handler it did not set. */
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                                   "Previous SIGCHLD handler was set by non-evpol code"),
                     1);
    close_and_free(w);
    capture_stop();
    /* Unlike CPython, which falls back to SIG_DFL, the exact disposition
     * comes back. */
    struct sigaction cur = current_sigchld();
    assert_ptr_equal((void *)cur.sa_handler, (void *)outside_handler);
    assert_int_equal(cur.sa_flags & SA_RESTART, 0);
    assert_int_equal(capture_count(&cap, -1, -1, "changed by outside code"), 0);
    restore_original_sigchld();
    assert_sigchld_original();
}

static void test_previous_sig_ign_restored_quietly(void **state)
{
    (void)state;
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    assert_int_equal(sigaction(SIGCHLD, &ign, NULL), 0);

    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    assert_int_equal(capture_count(&cap, -1, -1, "SIGCHLD"), 0);

    /* While active, children are not auto-reaped as under SIG_IGN: the
     * watcher reports their status. */
    evpol_loop *loop = new_loop();
    volatile int done = 0;
    exit_rec r = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 42, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    release_child(fd);
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_int_equal(r.rc, 42);

    close_and_free(w);
    capture_stop();
    assert_true(current_sigchld().sa_handler == SIG_IGN);
    assert_int_equal(capture_count(&cap, -1, -1, "SIGCHLD"), 0);
    restore_original_sigchld();
    evpol_loop_unref(loop);
}

static void test_outside_code_replaced_handler(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    install_outside_handler();
    /* MUL-6: no longer installed, so no longer active. */
    assert_int_equal(evpol_watcher_is_active(w), 0);
    close_and_free(w);
    capture_stop();
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                                   "SIGCHLD handler was changed by outside code"),
                     1);
    /* Left alone. */
    assert_ptr_equal((void *)current_sigchld().sa_handler, (void *)outside_handler);
    restore_original_sigchld();
    assert_sigchld_original();
}

static void test_second_watcher_cannot_attach(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w1 = new_active_multiloop();
    struct sigaction mine = current_sigchld();
    evpol_watcher *w2 = new_multiloop();
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_attach_loop(w2, NULL, &err), EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "another MultiLoopChildWatcher"));
    assert_int_equal(evpol_watcher_is_active(w2), 0);
    assert_int_equal(evpol_watcher_is_active(w1), 1);

    /* Closing the inactive one touches nothing of the active one's. */
    close_and_free(w2);
    assert_ptr_equal((void *)current_sigchld().sa_handler, (void *)mine.sa_handler);
    assert_int_equal(evpol_watcher_is_active(w1), 1);

    /* Once the first is closed, another may take its place. */
    close_and_free(w1);
    assert_sigchld_original();
    evpol_watcher *w3 = new_active_multiloop();
    close_and_free(w3);
    capture_stop();
    assert_int_equal(capture_count(&cap, -1, -1, "SIGCHLD"), 0);
    assert_sigchld_original();
}

/* MUL-5: with SA_RESTART, a read blocked in the thread that takes SIGCHLD
 * is resumed, not failed with EINTR. The reaper blocks every signal and the
 * helper blocks SIGCHLD, so the main thread is the only one to take it. */
typedef struct restart_ctx {
    pid_t child;
    int child_fd;
    int wake_fd;
    int reaped;
} restart_ctx;

static void *restart_helper(void *arg)
{
    restart_ctx *rc = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sleep_ms(20); /* give the main thread time to block in read (not required) */
    release_child(rc->child_fd);
#if SIGNALS_DEFERRED
    /* The handler will only run once the main thread's read returns. */
    rc->reaped = wait_zombie(rc->child);
#else
    /* Reaped proves the handler ran, in the main thread (the only one
     * taking SIGCHLD), most likely while it was blocked in read. */
    rc->reaped = wait_reaped(rc->child);
#endif
    char byte = 'x';
    ssize_t n = write(rc->wake_fd, &byte, 1);
    (void)n;
    return NULL;
}

static void test_sa_restart_resumes_blocked_read(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    restart_ctx ctx = {.wake_fd = pfd[1]};
    ctx.child = spawn_waiting_child(&ctx.child_fd, 3, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, ctx.child, record_exit, &r, NULL));

    pthread_t helper;
    assert_int_equal(pthread_create(&helper, NULL, restart_helper, &ctx), 0);
    char byte = 0;
    ssize_t n = read(pfd[0], &byte, 1);
    int read_errno = errno;
    pthread_join(helper, NULL);
    if (n != 1)
        fail_msg("read returned %zd: %s", n, strerror(read_errno));
    assert_int_equal(byte, 'x');
    assert_true(ctx.reaped);

    /* Reaped (or, under TSan, the handler now due): wait for delivery. */
    volatile int done = 0;
    r.done = &done;
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 1);
    assert_int_equal(r.rc, 3);
    close(pfd[0]);
    close(pfd[1]);
    close_and_free(w);
    evpol_loop_unref(loop);
}

/* ------------------------------------------------------------------ */
/* The reaper's poll fails                                             */
/* ------------------------------------------------------------------ */

/* This program's poll interposes on the C library's for the whole process,
 * as test_sys_oom.c's calloc does: the watcher's reaper thread blocks in
 * poll on its wake-up pipe, and poll on one valid descriptor fails only
 * when the kernel cannot allocate (ENOMEM), which no test can arrange. On
 * request, the next call that looks like the reaper's (one descriptor, no
 * time limit; its events are not read: glibc declares the array
 * write-only) fails that way once. */
static atomic_int fail_next_reaper_poll;

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    static int (*real_poll)(struct pollfd *, nfds_t, int);
    if (n == 1 && timeout == -1 && atomic_exchange(&fail_next_reaper_poll, 0)) {
        errno = ENOMEM;
        return -1;
    }
    if (!real_poll)
        *(void **)&real_poll = dlsym(RTLD_NEXT, "poll");
    return real_poll(fds, n, timeout);
}

/* When its poll fails, the reaper logs it and stops (children exiting from
 * then on are not reported, as the message says) instead of spinning on the
 * failing call; closing the watcher afterwards still ends cleanly. */
static void test_reaper_stops_when_poll_fails(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    atomic_store(&fail_next_reaper_poll, 1);
    /* A child's exit wakes the reaper, whose next poll is the failing one
     * (or its first, if it had not reached poll yet). */
    volatile int done = 0;
    exit_rec r = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 3, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    release_child(fd);
    const char *needle = "poll on its pipe failed";
    for (int waited = 0; waited < TIMEOUT_MS && capture_count(cap, EVPOL_LOG_ERROR, -1, needle) == 0;
         waited += 5)
        sleep_ms(5);
    assert_int_equal(capture_count(cap, EVPOL_LOG_ERROR, EVPOL_LOG_CAT_RUNTIME, needle), 1);
    /* The reaper thread has ended: only the threads from before are left. */
    assert_true(wait_threads_at_most(before.threads, TIMEOUT_MS));
    assert_int_equal(atomic_load(&fail_next_reaper_poll), 0);
    close_and_free(w);
    /* Reaped by the watcher before its poll failed, or left to us. */
    if (waitpid(pid, NULL, 0) != pid)
        assert_int_equal(errno, ECHILD);
    flush_loop(loop);
    assert_true(calls_of(&r) <= 1);
    assert_int_equal(capture_count(cap, EVPOL_LOG_ERROR, -1, needle), 1);
    evpol_loop_unref(loop);
    capture_free(cap);
    assert_no_leaks(before);
    assert_sigchld_original();
}

/* ------------------------------------------------------------------ */
/* CW-1, CW-3, CW-10: exits                                            */
/* ------------------------------------------------------------------ */

static void test_exit_codes(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    struct {
        int code, sig, expect;
    } cases[] = {{0, 0, 0}, {1, 0, 1}, {255, 0, 255}, {0, SIGKILL, -9}, {0, SIGTERM, -15}};
    enum { N = sizeof cases / sizeof cases[0] };
    volatile int done = 0;
    exit_rec r[N];
    pid_t pids[N];
    int fds[N];
    for (int i = 0; i < N; i++) {
        r[i] = (exit_rec){.done = &done};
        pids[i] = spawn_waiting_child(&fds[i], cases[i].code, cases[i].sig);
        assert_ok(evpol_watcher_add_child_handler_on(w, loop, pids[i], record_exit, &r[i], NULL));
    }
    for (int i = 0; i < N; i++)
        release_child(fds[i]);
    assert_true(run_until_count(loop, &done, N, TIMEOUT_MS));
    flush_loop(loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(calls_of(&r[i]), 1);
        assert_int_equal(r[i].pid, pids[i]);
        assert_int_equal(r[i].rc, cases[i].expect);
        /* CW-3: on the loop's thread, here the test's own. */
        assert_true(pthread_equal(r[i].thread, pthread_self()));
    }
    close_and_free(w);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
    assert_sigchld_original();
}

/* LOOP-7: with the registering loop's debug flag set, the exit delivered to
 * it is logged, naming the process. */
static void test_debug_logs_exit(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    assert_ok(evpol_loop_set_debug(loop, true, NULL));
    volatile int done = 0;
    exit_rec r = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 7, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    release_child(fd);
    assert_true(run_until_count(loop, &done, 1, TIMEOUT_MS));
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 1);
    assert_int_equal(r.rc, 7);
    char line[96];
    snprintf(line, sizeof line, "process %ld exited with returncode 7", (long)pid);
    assert_int_equal(capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, line), 1);
    close_and_free(w);
    evpol_loop_unref(loop);
    capture_free(cap);
    assert_no_leaks(before);
    assert_sigchld_original();
}

static void test_child_exited_before_registration(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    pid_t pid = fork_exit(7);
    assert_true(wait_zombie(pid));
    volatile int done = 0;
    exit_rec r = {.done = &done};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    /* Never called inside add. */
    assert_int_equal(calls_of(&r), 0);
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 1);
    assert_int_equal(r.pid, pid);
    assert_int_equal(r.rc, 7);
    close_and_free(w);
    evpol_loop_unref(loop);
    assert_int_equal(count_zombie_children(), 0);
}

/* Before activation add works, as in CPython: an exit already there is
 * found at once; a later one waits for the handler, and the first poll
 * round after activation finds it. */
static void test_add_before_attach(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_multiloop();
    evpol_loop *loop = new_loop();
    volatile int done = 0;

    pid_t early = fork_exit(3);
    assert_true(wait_zombie(early));
    exit_rec re = {.done = &done};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, early, record_exit, &re, NULL));
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_int_equal(re.rc, 3);

    int fd;
    pid_t late = spawn_waiting_child(&fd, 4, 0);
    exit_rec rl = {.done = &done};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, late, record_exit, &rl, NULL));
    release_child(fd);
    /* Inactive: nobody reaps it yet. */
    assert_true(wait_zombie(late));
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_ok(evpol_watcher_attach_loop(w, NULL, NULL));
    assert_true(run_until_count(loop, &done, 2, TIMEOUT_MS));
    flush_loop(loop);
    assert_int_equal(calls_of(&re), 1);
    assert_int_equal(calls_of(&rl), 1);
    assert_int_equal(rl.pid, late);
    assert_int_equal(rl.rc, 4);
    close_and_free(w);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
    assert_sigchld_original();
}

/* ------------------------------------------------------------------ */
/* MUL-3: loops in several threads                                     */
/* ------------------------------------------------------------------ */

#define MT_THREADS 4
#define MT_CHILDREN 6

typedef struct mt_child {
    pid_t pid;
    int expect;
    int calls;
    int rc;
    pthread_t thread;
    struct mt_worker *worker;
} mt_child;

typedef struct mt_worker {
    int index;
    evpol_watcher *w;
    evpol_loop *loop;
    pthread_t self;
    mt_child kids[MT_CHILDREN];
    int finished;
    int add_rc;
    int run_rc;
    int fork_failed;
} mt_worker;

static void mt_on_exit(pid_t pid, int rc, void *arg)
{
    mt_child *k = arg;
    (void)pid;
    k->rc = rc;
    k->thread = pthread_self();
    k->calls++;
    if (++k->worker->finished == MT_CHILDREN)
        evpol_loop_stop(k->worker->loop, NULL);
}

/* Children that each read one byte, so that copies of the pipe inherited
 * by other workers' children cannot hold them back. */
static pid_t fork_reader(int rfd, int code)
{
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        while (read(rfd, &c, 1) < 0 && errno == EINTR)
            ;
        _exit(code);
    }
    return pid;
}

/* Runs on the worker's loop: registration through the running loop. */
static void mt_start(void *arg)
{
    mt_worker *wk = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        wk->fork_failed = 1;
        evpol_loop_stop(wk->loop, NULL);
        return;
    }
    for (int i = 0; i < MT_CHILDREN; i++) {
        mt_child *k = &wk->kids[i];
        k->worker = wk;
        k->expect = wk->index * 10 + i;
        k->pid = fork_reader(p[0], k->expect);
        if (k->pid < 0) {
            wk->fork_failed = 1;
            break;
        }
        int rc = evpol_watcher_add_child_handler(wk->w, k->pid, mt_on_exit, k, NULL);
        if (rc)
            wk->add_rc = rc;
    }
    char bytes[MT_CHILDREN] = {0};
    ssize_t n = write(p[1], bytes, sizeof bytes);
    (void)n;
    close(p[0]);
    close(p[1]);
}

static void mt_timeout(void *arg)
{
    evpol_loop_stop(((mt_worker *)arg)->loop, NULL);
}

static void *mt_worker_main(void *arg)
{
    mt_worker *wk = arg;
    wk->self = pthread_self();
    evpol_loop_call_soon_threadsafe(wk->loop, mt_start, wk, NULL);
    evpol_loop_call_later(wk->loop, TIMEOUT_MS, mt_timeout, wk, NULL);
    wk->run_rc = evpol_loop_run(wk->loop, NULL);
    return NULL;
}

static void test_callbacks_on_registering_threads(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_active_multiloop();
    mt_worker wk[MT_THREADS];
    pthread_t t[MT_THREADS];
    memset(wk, 0, sizeof wk);
    for (int i = 0; i < MT_THREADS; i++) {
        wk[i].index = i;
        wk[i].w = w;
        wk[i].loop = new_loop();
        assert_int_equal(pthread_create(&t[i], NULL, mt_worker_main, &wk[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < MT_THREADS; i++) {
        assert_int_equal(wk[i].fork_failed, 0);
        assert_int_equal(wk[i].add_rc, 0);
        assert_int_equal(wk[i].run_rc, 0);
        assert_int_equal(wk[i].finished, MT_CHILDREN);
        for (int j = 0; j < MT_CHILDREN; j++) {
            mt_child *k = &wk[i].kids[j];
            assert_int_equal(k->calls, 1);
            assert_int_equal(k->rc, k->expect);
            assert_true(pthread_equal(k->thread, wk[i].self));
        }
        evpol_loop_unref(wk[i].loop);
    }
    close_and_free(w);
    assert_no_leaks(before);
    assert_sigchld_original();
}

/* ------------------------------------------------------------------ */
/* CW-2, CW-4: replace and remove                                      */
/* ------------------------------------------------------------------ */

static void test_replace(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    volatile int done = 0;
    exit_rec first = {.done = &done}, second = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 9, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &first, NULL));
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &second, NULL));
    release_child(fd);
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_true(wait_reaped(pid));
    flush_loop(loop);
    assert_int_equal(calls_of(&first), 0);
    assert_int_equal(calls_of(&second), 1);
    assert_int_equal(second.rc, 9);
    close_and_free(w);
    evpol_loop_unref(loop);
}

/* The replacement also moves the delivery to the new registration's loop:
 * the old loop, never run, has nothing to drop when it closes. */
static void test_replace_moves_to_new_loop(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *old_loop = new_loop(), *new_loop_ = new_loop();
    volatile int done = 0;
    exit_rec first = {.done = &done}, second = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 10, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, old_loop, pid, record_exit, &first, NULL));
    assert_ok(evpol_watcher_add_child_handler_on(w, new_loop_, pid, record_exit, &second, NULL));
    release_child(fd);
    assert_true(run_until(new_loop_, &done, TIMEOUT_MS));
    assert_ok(evpol_loop_close(old_loop, NULL));
    assert_int_equal(calls_of(&first), 0);
    assert_int_equal(calls_of(&second), 1);
    assert_int_equal(second.rc, 10);
    close_and_free(w);
    capture_stop();
    assert_int_equal(capture_count(&cap, -1, -1, "is closed"), 0);
    evpol_loop_unref(old_loop);
    evpol_loop_unref(new_loop_);
}

static void test_remove(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 11, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 1);
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 0);
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid + 100000, NULL), 0);
    release_child(fd);
    /* The watcher still reaps it: no zombie. */
    assert_true(wait_reaped(pid));
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 0);
    close_and_free(w);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

static void test_remove_unknown_pid(void **state)
{
    (void)state;
    evpol_watcher *w = new_multiloop();
    assert_int_equal(evpol_watcher_remove_child_handler(w, 12345, NULL), 0);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_remove_child_handler(w, -1, &err), EVPOL_EINVAL);
    close_and_free(w);
}

/* ------------------------------------------------------------------ */
/* MUL-2: other code's children are left alone                         */
/* ------------------------------------------------------------------ */

static void test_unregistered_child_not_reaped(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    pid_t other = fork_exit(5);
    assert_true(wait_zombie(other));

    /* A registered exit makes the watcher poll. */
    volatile int done = 0;
    exit_rec r = {.done = &done};
    int fd;
    pid_t mine = spawn_waiting_child(&fd, 6, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, mine, record_exit, &r, NULL));
    release_child(fd);
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_int_equal(r.rc, 6);

    int status = 0;
    assert_int_equal(waitpid(other, &status, WNOHANG), other);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 5);
    close_and_free(w);
    evpol_loop_unref(loop);
}

/* ------------------------------------------------------------------ */
/* CW-11, CW-12: lost statuses, closed loops                           */
/* ------------------------------------------------------------------ */

static void test_status_reaped_elsewhere_at_add(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    pid_t pid = fork_exit(3);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    volatile int done = 0;
    exit_rec r = {.done = &done};
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_int_equal(r.pid, pid);
    assert_int_equal(r.rc, 255);
    close_and_free(w);
    capture_stop();
    char needle[96];
    snprintf(needle, sizeof needle, "Unknown child process pid %ld, will report returncode 255",
             (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, -1, needle), 1);
    evpol_loop_unref(loop);
}

/* The same through the reaper: registered while inactive, exited, reaped by
 * the program, then the first poll round after activation finds ECHILD. */
static void test_status_reaped_elsewhere_in_reaper(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_multiloop();
    evpol_loop *loop = new_loop();
    volatile int done = 0;
    exit_rec r = {.done = &done};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 1, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    release_child(fd);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_ok(evpol_watcher_attach_loop(w, NULL, NULL));
    assert_true(run_until(loop, &done, TIMEOUT_MS));
    assert_int_equal(r.rc, 255);
    close_and_free(w);
    capture_stop();
    char needle[64];
    snprintf(needle, sizeof needle, "Unknown child process pid %ld,", (long)pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, -1, needle), 1);
    evpol_loop_unref(loop);
}

static void test_closed_loop_not_called(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 2, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    release_child(fd);
    char needle[64];
    snprintf(needle, sizeof needle, "that handles pid %ld is closed", (long)pid);
    int seen = 0;
    for (int waited = 0; waited < TIMEOUT_MS && !seen; waited += 2) {
        seen = capture_count(&cap, EVPOL_LOG_WARNING, -1, needle);
        if (!seen)
            sleep_ms(2);
    }
    assert_int_equal(seen, 1);
    assert_true(wait_reaped(pid));
    assert_int_equal(calls_of(&r), 0);
    close_and_free(w);
    capture_stop();
    assert_int_equal(capture_count(&cap, -1, -1, "Loop "), 1);
    evpol_loop_unref(loop);
}

/* ------------------------------------------------------------------ */
/* CW-8: close                                                          */
/* ------------------------------------------------------------------ */

/* The watcher a seam calloc closes, once: a close that lands between the
 * public add's "is it open?" and MultiLoop's own look under its lock. */
static evpol_watcher *close_in_calloc;

static void *closing_calloc(size_t n, size_t size)
{
    evpol_watcher *w = close_in_calloc;
    close_in_calloc = NULL;
    if (w)
        assert_ok(evpol_watcher_close(w, NULL));
    return calloc(n, size);
}

/* CW-8: an add that a close overtakes fails as on a closed watcher and
 * keeps nothing (its record and loop reference are released). */
static void test_add_overtaken_by_close(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    long blocks = alloc_count_evpol();
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    evpol_sys t = *evpol_sys_real();
    t.calloc = closing_calloc;
    assert_ok(evpol_sys_set(&t, NULL));
    close_in_calloc = w;
    evpol_error err = {0};
    int rc = evpol_watcher_add_child_handler_on(w, loop, 12345, record_exit, NULL, &err);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_null(close_in_calloc);
    check_error(rc, &err, EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "is closed"));
    close_and_free(w);
    evpol_loop_unref(loop);
    assert_int_equal(alloc_count_evpol(), blocks);
    assert_sigchld_original();
    assert_no_leaks(before);
}

static void test_no_callback_after_close(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 12, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    close_and_free(w);
    capture_stop();
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "1 pending child handler"),
                     1);
    assert_sigchld_original();
    /* Left to the program: its status is still there for us. */
    release_child(fd);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 12);
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 0);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

/* Unref without close closes too; a removed handler's child that has
 * exited is the watcher's to reap, and that close reaps it (CW-4). The
 * watcher is left inactive so that only close can reap it. */
static void test_last_unref_closes(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 0, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    assert_int_equal(evpol_watcher_remove_child_handler(w, pid, NULL), 1);
    release_child(fd);
    assert_true(wait_zombie(pid));
    forget_watcher(w);
    evpol_watcher_unref(w);
    assert_int_equal(count_zombie_children(), 0);
    assert_sigchld_original();
    flush_loop(loop);
    assert_int_equal(calls_of(&r), 0);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

/* The last reference can be dropped by the reaper itself: here the
 * program drops its own while the reaper is delivering (held inside the
 * log hook by the closed-loop warning), so the reaper's is the last one and
 * the watcher is closed and freed on the reaper thread, which then must
 * leave without touching it (sanitizer builds check the memory). */
typedef struct hold_ctx {
    atomic_int in_hook;
    atomic_int release;
} hold_ctx;

static void holding_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    (void)level;
    (void)cat;
    hold_ctx *h = arg;
    if (!strstr(msg, "that handles pid"))
        return;
    atomic_store(&h->in_hook, 1);
    for (int waited = 0; waited < TIMEOUT_MS && !atomic_load(&h->release); waited += 1)
        sleep_ms(1);
}

static void test_last_reference_dropped_during_delivery(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    hold_ctx h;
    atomic_init(&h.in_hook, 0);
    atomic_init(&h.release, 0);
    evpol_watcher *w = new_active_multiloop();
    evpol_loop *loop = new_loop();
    exit_rec r = {0};
    int fd;
    pid_t pid = spawn_waiting_child(&fd, 1, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, record_exit, &r, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_set_log_hook(holding_hook, &h);
    release_child(fd);
    int entered = 0;
    for (int waited = 0; waited < TIMEOUT_MS && !entered; waited += 2) {
        entered = atomic_load(&h.in_hook);
        if (!entered)
            sleep_ms(2);
    }
    /* Not the last reference yet: the reaper holds one while delivering. */
    forget_watcher(w);
    evpol_watcher_unref(w);
    atomic_store(&h.release, 1);
    assert_true(entered);
    /* The reaper closes the watcher, restoring SIGCHLD, and exits. */
    assert_true(wait_threads_at_most(before.threads, TIMEOUT_MS));
    evpol_set_log_hook(NULL, NULL);
    assert_sigchld_original();
    assert_true(wait_reaped(pid));
    assert_int_equal(calls_of(&r), 0);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

static void test_double_close(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_sigchld_original();
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_attach_loop(w, NULL, &err), EVPOL_ERUNTIME);
    evpol_loop *loop = new_loop();
    assert_int_equal(evpol_watcher_add_child_handler_on(w, loop, 1, record_exit, NULL, &err),
                     EVPOL_ERUNTIME);
    assert_sigchld_original();
    forget_watcher(w);
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
}

static void test_close_never_attached(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_multiloop();
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    forget_watcher(w);
    evpol_watcher_unref(w);
    assert_sigchld_original();
    assert_no_leaks(before);
}

/* Spawn context: no-ops that nest (CW-9). */
static void test_spawn_context(void **state)
{
    (void)state;
    evpol_watcher *w = new_active_multiloop();
    assert_ok(evpol_watcher_enter(w, NULL));
    assert_ok(evpol_watcher_enter(w, NULL));
    assert_ok(evpol_watcher_exit(w, NULL));
    assert_ok(evpol_watcher_exit(w, NULL));
    close_and_free(w);
}

/* ------------------------------------------------------------------ */
/* Stress: many children from several threads                          */
/* ------------------------------------------------------------------ */

#define ST_THREADS 4
#define ST_PER_THREAD 500
#define ST_BATCH 25

typedef struct st_worker st_worker;
typedef struct st_child {
    pid_t pid;
    int calls;
    int rc;
    st_worker *worker;
} st_child;

struct st_worker {
    evpol_watcher *w;
    evpol_loop *loop;
    pthread_t self;
    st_child kids[ST_PER_THREAD];
    int next;     /* next child slot to start */
    int finished; /* exits delivered */
    int wrong_thread;
    int errors;
};

static void st_start_batch(void *arg);

static void st_on_exit(pid_t pid, int rc, void *arg)
{
    st_child *k = arg;
    st_worker *wk = k->worker;
    if (pid != k->pid)
        wk->errors++;
    if (!pthread_equal(pthread_self(), wk->self))
        wk->wrong_thread++;
    k->rc = rc;
    k->calls++;
    wk->finished++;
    if (wk->finished == ST_PER_THREAD)
        evpol_loop_stop(wk->loop, NULL);
    else if (wk->finished == wk->next)
        evpol_loop_call_soon_threadsafe(wk->loop, st_start_batch, wk, NULL);
}

static void st_start_batch(void *arg)
{
    st_worker *wk = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        wk->errors++;
        evpol_loop_stop(wk->loop, NULL);
        return;
    }
    int n = 0;
    for (; n < ST_BATCH && wk->next < ST_PER_THREAD; n++) {
        st_child *k = &wk->kids[wk->next];
        k->worker = wk;
        k->pid = fork_reader(p[0], wk->next % 200);
        if (k->pid < 0) {
            wk->errors++;
            break;
        }
        wk->next++;
        if (evpol_watcher_add_child_handler(wk->w, k->pid, st_on_exit, k, NULL) != 0)
            wk->errors++;
    }
    /* Released after registration, so most exits come through SIGCHLD. */
    char bytes[ST_BATCH] = {0};
    ssize_t wr = write(p[1], bytes, (size_t)n);
    (void)wr;
    close(p[0]);
    close(p[1]);
    if (wk->errors)
        evpol_loop_stop(wk->loop, NULL);
}

/* The loop runs until the last exit's callback (or an error) stops it: no
 * clock of its own, which would fail a slow but correct run on a loaded
 * machine. A lost exit hangs the program, and the runner's per-program time
 * limit reports that as the failure of its tests. */
static void *st_worker_main(void *arg)
{
    st_worker *wk = arg;
    wk->self = pthread_self();
    evpol_loop_call_soon_threadsafe(wk->loop, st_start_batch, wk, NULL);
    if (evpol_loop_run(wk->loop, NULL) != 0)
        wk->errors++;
    return NULL;
}

static void test_stress_many_children_many_threads(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = new_active_multiloop();
    st_worker *wk = calloc(ST_THREADS, sizeof *wk);
    assert_non_null(wk);
    pthread_t t[ST_THREADS];
    for (int i = 0; i < ST_THREADS; i++) {
        wk[i].w = w;
        wk[i].loop = new_loop();
        assert_int_equal(pthread_create(&t[i], NULL, st_worker_main, &wk[i]), 0);
    }
    for (int i = 0; i < ST_THREADS; i++)
        pthread_join(t[i], NULL);
    close_and_free(w);
    capture_stop();
    int total = 0;
    for (int i = 0; i < ST_THREADS; i++) {
        assert_int_equal(wk[i].errors, 0);
        assert_int_equal(wk[i].wrong_thread, 0);
        assert_int_equal(wk[i].finished, ST_PER_THREAD);
        for (int j = 0; j < ST_PER_THREAD; j++) {
            assert_int_equal(wk[i].kids[j].calls, 1);
            assert_int_equal(wk[i].kids[j].rc, j % 200);
            total++;
        }
        evpol_loop_unref(wk[i].loop);
    }
    assert_int_equal(total, ST_THREADS * ST_PER_THREAD);
    assert_int_equal(capture_count(&cap, -1, -1, "Unknown child"), 0);
    assert_int_equal(capture_count(&cap, -1, -1, "pending"), 0);
    free(wk);
    assert_no_leaks(before);
    assert_sigchld_original();
}

int main(void)
{
    assert_int_equal(sigaction(SIGCHLD, NULL, &g_orig_sigchld), 0);
    const harness_test tests[] = {
        WATCHER_TEST(test_handler_installed_on_first_attach, multiloop,
                     "MUL-1 MUL-5 MUL-6 CW-5 CW-6 CW-8"),
        WATCHER_TEST(test_attach_with_a_loop_installs, multiloop, "MUL-1 MUL-5 CW-5"),
        CLAUSE_TEST(test_close_restores_previous_handler, "MUL-1 MUL-4"),
        CLAUSE_TEST(test_previous_sig_ign_restored_quietly, "MUL-1 MUL-4"),
        CLAUSE_TEST(test_outside_code_replaced_handler, "MUL-4 MUL-6"),
        CLAUSE_TEST(test_second_watcher_cannot_attach, "MUL-1 MUL-6"),
        CLAUSE_TEST(test_sa_restart_resumes_blocked_read, "MUL-5 MUL-7"),
        WATCHER_TEST(test_exit_codes, multiloop, "CW-1 CW-3 CW-10"),
        WATCHER_TEST(test_debug_logs_exit, multiloop, "LOOP-7"),
        WATCHER_TEST(test_reaper_stops_when_poll_fails, multiloop, "ERR-1 ERR-2"),
        WATCHER_TEST(test_child_exited_before_registration, multiloop, "CW-1 CW-10"),
        WATCHER_TEST(test_add_before_attach, multiloop, "CW-1 CW-6 MUL-1 MUL-6"),
        WATCHER_TEST(test_callbacks_on_registering_threads, multiloop, "CW-3 MUL-3"),
        WATCHER_TEST(test_replace, multiloop, "CW-2"),
        WATCHER_TEST(test_replace_moves_to_new_loop, multiloop, "CW-2 MUL-3"),
        WATCHER_TEST(test_remove, multiloop, "CW-4"),
        WATCHER_TEST(test_remove_unknown_pid, multiloop, "CW-4"),
        CLAUSE_TEST(test_unregistered_child_not_reaped, "MUL-2"),
        WATCHER_TEST(test_status_reaped_elsewhere_at_add, multiloop, "CW-11"),
        WATCHER_TEST(test_status_reaped_elsewhere_in_reaper, multiloop, "CW-11 MUL-2"),
        WATCHER_TEST(test_closed_loop_not_called, multiloop, "CW-12"),
        WATCHER_TEST(test_no_callback_after_close, multiloop, "CW-8 MUL-4"),
        WATCHER_TEST(test_add_overtaken_by_close, multiloop, "CW-8"),
        WATCHER_TEST(test_last_unref_closes, multiloop, "CW-4 CW-8"),
        WATCHER_TEST(test_last_reference_dropped_during_delivery, multiloop, "CW-8 CW-12"),
        WATCHER_TEST(test_double_close, multiloop, "CW-8"),
        WATCHER_TEST(test_close_never_attached, multiloop, "CW-8"),
        WATCHER_TEST(test_spawn_context, multiloop, "CW-9"),
        WATCHER_TEST(test_stress_many_children_many_threads, multiloop, "CW-1 MUL-2 MUL-3"),
    };
    return harness_run_group("watcher_multiloop", tests, NULL, NULL);
}
