/*
 * harness.c — shared helpers for the conformance programs (see harness.h).
 */
#include "harness.h"
#include "signal_state.h"
#include "alloc_count.h"
#include "proc_count.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Before cmocka's main: every program starts from the default signal state,
 * however it was started (signal_state.h). */
__attribute__((constructor)) static void harness_default_signals(void)
{
    signal_state_reset();
}

const evpol_watcher_kind harness_kind_threaded = EVPOL_WATCHER_THREADED;
const evpol_watcher_kind harness_kind_multiloop = EVPOL_WATCHER_MULTILOOP;
const evpol_watcher_kind harness_kind_safe = EVPOL_WATCHER_SAFE;
const evpol_watcher_kind harness_kind_fast = EVPOL_WATCHER_FAST;
const evpol_watcher_kind harness_kind_pidfd = EVPOL_WATCHER_PIDFD;

evpol_watcher_kind test_watcher_kind(void **state)
{
    assert_non_null(state);
    assert_non_null(*state);
    return *(const evpol_watcher_kind *)*state;
}

const char *test_watcher_slug(evpol_watcher_kind kind)
{
    switch (kind) {
    case EVPOL_WATCHER_THREADED: return "threaded";
    case EVPOL_WATCHER_MULTILOOP: return "multiloop";
    case EVPOL_WATCHER_SAFE: return "safe";
    case EVPOL_WATCHER_FAST: return "fast";
    case EVPOL_WATCHER_PIDFD: return "pidfd";
    default: return "other";
    }
}

/* ---- registrations: one line per test, every watcher variant ---- */

static const struct {
    unsigned bit;
    const char *slug;
    const evpol_watcher_kind *kind;
} harness_variants[] = {
    {W_THREADED, "threaded", &harness_kind_threaded},
    {W_MULTILOOP, "multiloop", &harness_kind_multiloop},
    {W_SAFE, "safe", &harness_kind_safe},
    {W_FAST, "fast", &harness_kind_fast},
    {W_PIDFD, "pidfd", &harness_kind_pidfd},
};
enum { HARNESS_VARIANTS = sizeof harness_variants / sizeof harness_variants[0] };

/* "fn@slug [TAGS]" where TAGS keeps the tags of every watcher and those
 * written "ID@slug"; the clause-matrix tool derives the same name from the
 * source. NULL when out of memory. */
static char *variant_name(const char *fn, const char *slug, const char *tags)
{
    size_t cap = strlen(fn) + strlen(slug) + strlen(tags) + 5, len = 0;
    char *name = malloc(cap);
    if (!name)
        return NULL;
    len += (size_t)snprintf(name, cap, "%s@%s [", fn, slug);
    const char *p = tags;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        const char *at = memchr(p, '@', n);
        size_t id_len = at ? (size_t)(at - p) : n;
        if (!at || (n - id_len - 1 == strlen(slug) && memcmp(at + 1, slug, strlen(slug)) == 0)) {
            if (name[len - 1] != '[')
                name[len++] = ' ';
            memcpy(name + len, p, id_len);
            len += id_len;
        }
        p += n;
    }
    name[len++] = ']';
    name[len] = '\0';
    return name;
}

int harness_run_tests(const char *group, const harness_test *tests, size_t count,
                      CMFixtureFunction group_setup, CMFixtureFunction group_teardown)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        if (tests[i].watchers & ~(unsigned)W_ALL) {
            fprintf(stderr, "%s: %s names an unknown watcher bit\n", group, tests[i].test.name);
            return 1;
        }
        total += tests[i].watchers ? (size_t)__builtin_popcount(tests[i].watchers) : 1;
    }
    struct CMUnitTest *run = calloc(total ? total : 1, sizeof *run);
    char **names = calloc(total ? total : 1, sizeof *names);
    int rc = 1;
    if (!run || !names) {
        fprintf(stderr, "%s: out of memory for %zu tests\n", group, total);
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (!tests[i].watchers) {
            run[n++] = tests[i].test;
            continue;
        }
        for (size_t v = 0; v < HARNESS_VARIANTS; v++) {
            if (!(tests[i].watchers & harness_variants[v].bit))
                continue;
            names[n] = variant_name(tests[i].test.name, harness_variants[v].slug,
                                    tests[i].tags ? tests[i].tags : "");
            if (!names[n]) {
                fprintf(stderr, "%s: out of memory naming %s\n", group, tests[i].test.name);
                goto out;
            }
            run[n] = tests[i].test;
            run[n].name = names[n];
            run[n].initial_state = (void *)harness_variants[v].kind;
            n++;
        }
    }
    warm_up_threads();
    rc = _cmocka_run_group_tests(group, run, n, group_setup, group_teardown);
out:
    for (size_t i = 0; names && i < total; i++)
        free(names[i]);
    free(names);
    free(run);
    return rc;
}

void check_error(int rc, const evpol_error *err, int code)
{
    if (rc != code)
        fail_msg("expected %d (%s), got %d (%s): %s", code, evpol_strerror(code), rc,
                 evpol_strerror(rc), err->message);
    assert_int_equal(err->code, code);
    assert_true(err->message[0] != '\0');
}

/* ---- a policy of the user's own ---- */

int stub_policy_get_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)self;
    (void)out;
    if (err) {
        err->code = EVPOL_ERUNTIME;
        snprintf(err->message, sizeof err->message, "no loop");
    }
    return EVPOL_ERUNTIME;
}

int stub_policy_set_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    (void)self;
    (void)loop;
    (void)err;
    return 0;
}

int stub_policy_new_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)self;
    return evpol_loop_new(EVPOL_BACKEND_DEFAULT, out, err);
}

/* ---- a custom watcher's methods that do nothing ---- */

int nop_watcher_add(void *self, evpol_loop *loop, pid_t pid, evpol_child_fn cb, void *arg,
                    evpol_error *err)
{
    (void)self;
    (void)loop;
    (void)pid;
    (void)cb;
    (void)arg;
    (void)err;
    return 0;
}

int nop_watcher_remove(void *self, pid_t pid, evpol_error *err)
{
    (void)self;
    (void)pid;
    (void)err;
    return 0;
}

int nop_watcher_attach(void *self, evpol_loop *loop, evpol_error *err)
{
    (void)self;
    (void)loop;
    (void)err;
    return 0;
}

int nop_watcher_call(void *self, evpol_error *err)
{
    (void)self;
    (void)err;
    return 0;
}

int watcher_always_active(void *self)
{
    (void)self;
    return 1;
}

int watcher_never_active(void *self)
{
    (void)self;
    return 0;
}

void nop_watcher_destroy(void *self)
{
    (void)self;
}

void nop_libevent_log(int severity, const char *msg)
{
    (void)severity;
    (void)msg;
}

/* ---- threads, loops, policies ---- */

pthread_t start_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    if (rc != 0)
        fail_msg("pthread_create: %s", strerror(rc));
    return t;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

evpol_loop *new_loop(void)
{
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    if (evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, &err) != 0)
        fail_msg("evpol_loop_new: %s", err.message);
    assert_non_null(loop);
    return loop;
}

void reset_policy(void)
{
    evpol_error err = {0};
    if (evpol_set_event_loop_policy(NULL, &err) != 0)
        fail_msg("evpol_set_event_loop_policy(NULL): %s", err.message);
}

bool have_pidfd(void)
{
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* ---- log capture ---- */

static pthread_mutex_t capture_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    log_capture *cap = arg;
    pthread_mutex_lock(&capture_lock);
    if (cap->count < CAPTURE_MAX_LINES) {
        cap->lines[cap->count].level = level;
        cap->lines[cap->count].category = cat;
        snprintf(cap->lines[cap->count].msg, sizeof cap->lines[0].msg, "%s", msg);
        cap->count++;
    }
    pthread_mutex_unlock(&capture_lock);
}

void capture_start(log_capture *cap)
{
    memset(cap, 0, sizeof *cap);
    evpol_set_log_hook(capture_hook, cap);
}

void capture_stop(void)
{
    evpol_set_log_hook(NULL, NULL);
}

log_capture *capture_new(void)
{
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    return cap;
}

void capture_free(log_capture *cap)
{
    capture_stop();
    free(cap);
}

int capture_count(log_capture *cap, int level, int category, const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&capture_lock);
    for (int i = 0; i < cap->count; i++) {
        if (level >= 0 && (int)cap->lines[i].level != level)
            continue;
        if (category >= 0 && (int)cap->lines[i].category != category)
            continue;
        if (needle && !strstr(cap->lines[i].msg, needle))
            continue;
        n++;
    }
    pthread_mutex_unlock(&capture_lock);
    return n;
}

/* ---- running loops ---- */

typedef struct until_state {
    evpol_loop *loop;
    volatile int *value;
    int target;
    int remaining_ticks;
    int reached;
} until_state;

/* Polls every 2 ms; stops the loop when the target is reached or the safety
 * timeout expires. */
static void until_tick(void *arg)
{
    until_state *st = arg;
    if (__atomic_load_n(st->value, __ATOMIC_SEQ_CST) >= st->target) {
        st->reached = 1;
        evpol_loop_stop(st->loop, NULL);
        return;
    }
    if (--st->remaining_ticks <= 0) {
        evpol_loop_stop(st->loop, NULL);
        return;
    }
    evpol_loop_call_later(st->loop, 2, until_tick, st, NULL);
}

int run_until_count(evpol_loop *loop, volatile int *counter, int target, int timeout_ms)
{
    until_state st = {loop, counter, target, timeout_ms / 2 + 1, 0};
    evpol_error err = {0};
    if (evpol_loop_call_soon_threadsafe(loop, until_tick, &st, &err) != 0)
        fail_msg("run_until: %s", err.message);
    if (evpol_loop_run(loop, &err) != 0)
        fail_msg("run_until: %s", err.message);
    return st.reached || __atomic_load_n(counter, __ATOMIC_SEQ_CST) >= target;
}

int run_until(evpol_loop *loop, volatile int *flag, int timeout_ms)
{
    return run_until_count(loop, flag, 1, timeout_ms);
}

typedef struct reap_poll {
    evpol_loop *loop;
    pid_t pid;
    volatile int done;
} reap_poll;
static reap_poll the_reap_poll; /* static: a timed-out chain may outlive the caller */

static void reap_poll_tick(void *arg)
{
    reap_poll *p = arg;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno == ECHILD) {
        p->done = 1;
        return;
    }
    evpol_loop_call_later(p->loop, 1, reap_poll_tick, p, NULL);
}

int run_until_reaped(evpol_loop *loop, pid_t pid)
{
    the_reap_poll.loop = loop;
    the_reap_poll.pid = pid;
    the_reap_poll.done = 0;
    assert_ok(evpol_loop_call_soon_threadsafe(loop, reap_poll_tick, &the_reap_poll, NULL));
    return run_until(loop, &the_reap_poll.done, 10000);
}

/* ---- children ---- */

pid_t spawn_waiting_child(int *write_fd, int code, int sig)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        fail_msg("pipe2: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        char c;
        /* fork copies every fd (CLOEXEC only acts at exec): keep our read end
         * as fd 3 and drop the rest, above all the write ends of sibling
         * children, so that releasing one child (or the test process dying)
         * reaches exactly this child with EOF. */
        if (fds[0] != 3 && dup2(fds[0], 3) < 0)
            _exit(127);
        close_range(4, ~0u, 0);
        while (read(3, &c, 1) < 0 && errno == EINTR)
            ;
        if (sig > 0) {
            signal(sig, SIG_DFL);
            raise(sig);
        }
        _exit(code);
    }
    close(fds[0]);
    *write_fd = fds[1];
    return pid;
}

void release_child(int write_fd)
{
    /* Closing the write end wakes the child's read with EOF. */
    close(write_fd);
}

pid_t fork_exit(int code)
{
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0)
        _exit(code);
    return pid;
}

/* ---- resources ---- */

resource_snapshot resources_now(void)
{
    resource_snapshot s;
    /* opendir's own fd is counted while it reads: subtract it. */
    s.fds = count_dir("/proc/self/fd") - 1;
    s.threads = count_dir("/proc/self/task");
    return s;
}

int wait_threads_at_most(int threads, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 5) {
        if (resources_now().threads <= threads)
            return 1;
        sleep_ms(5);
    }
    return 0;
}

int count_zombie_children(void)
{
    /* waitid with WNOWAIT looks without reaping. */
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return 0; /* ECHILD: no children at all */
    return info.si_pid != 0 ? 1 : 0;
}

void assert_no_leaks(resource_snapshot before)
{
    if (!wait_threads_at_most(before.threads, 10000))
        fail_msg("thread leak: %d threads, %d before", resources_now().threads, before.threads);
    resource_snapshot now = resources_now();
    if (now.fds != before.fds)
        fail_msg("fd leak: %d fds open, %d before", now.fds, before.fds);
    if (count_zombie_children() != 0)
        fail_msg("a zombie child is left");
}

pid_t spawn_lone_child(int *write_fd, int code, int sig)
{
    return spawn_waiting_child(write_fd, code, sig);
}

struct rlimit forbid_new_fds(void)
{
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    int lowest = dup(0);
    assert_true(lowest >= 0);
    close(lowest);
    struct rlimit tight = saved;
    tight.rlim_cur = (rlim_t)lowest;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
    return saved;
}

void restore_fd_limit(struct rlimit saved)
{
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

static void *return_arg(void *arg)
{
    return arg;
}

void warm_up_threads(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, return_arg, NULL) == 0)
        pthread_join(t, NULL);
}

/* Block until `pid` has exited, without reaping it. */
void wait_exited_not_reaped(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) != 0)
        if (errno != EINTR)
            fail_msg("waitid(%ld): %s", (long)pid, strerror(errno));
}

void record_status(pid_t pid, const evpol_exit_status *st, void *arg)
{
    status_rec *r = arg;
    r->pid = pid;
    r->st = *st;
    r->thread = pthread_self();
    __atomic_add_fetch(&r->calls, 1, __ATOMIC_SEQ_CST);
}

void assert_status(const status_rec *r, pid_t pid, evpol_exit_kind kind, int code, int sig,
                   bool core, int raw, int returncode)
{
    assert_int_equal(__atomic_load_n(&r->calls, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(r->pid, pid);
    assert_true(pthread_equal(r->thread, pthread_self()));
    assert_int_equal(r->st.size, sizeof r->st);
    assert_int_equal(r->st.kind, kind);
    assert_int_equal(r->st.code, code);
    assert_int_equal(r->st.signal, sig);
    assert_int_equal(r->st.core_dumped, core);
    assert_int_equal(r->st.raw, raw);
    assert_int_equal(r->st.returncode, returncode);
}

/* ---- memory accounting (the leak check every program ends with) ----
 *
 * Counting (alloc_count.h) starts before main, and every program ends (at
 * exit) by checking that evpol's and libevent's outstanding blocks are
 * back to where main started; a difference fails the program.
 *
 * Tests install seam tables of their own (fake kernel, fault injection) and
 * test_faults its own libevent allocator: this file defines evpol_sys_set
 * and event_set_mem_functions, which the program's calls reach instead of
 * the libraries' (the executable's definition interposes). Each keeps the
 * counting functions installed and makes the test's the ones they pass
 * through to, so a fake table or a failing calloc is counted as the real. */

static long evpol_blocks_at_start, libevent_blocks_at_start;
static pid_t accounting_pid;

typedef int (*sys_set_fn)(const evpol_sys *, evpol_error *);

static sys_set_fn real_sys_set(void)
{
    static sys_set_fn fn;
    if (!fn)
        fn = (sys_set_fn)dlsym(RTLD_NEXT, "evpol_sys_set");
    if (!fn) {
        fprintf(stderr, "harness: evpol_sys_set not found in libevpol: %s\n", dlerror());
        _exit(2);
    }
    return fn;
}

int evpol_sys_set(const evpol_sys *table, evpol_error *err)
{
    const evpol_sys *t = table ? table : evpol_sys_real();
    /* A table evpol refuses goes to evpol unchanged: its errors are tested. */
    if (t->size != sizeof *t || !t->calloc || !t->free)
        return real_sys_set()(table, err);
    evpol_sys counting = alloc_count_seam(t);
    int rc = real_sys_set()(&counting, err);
    if (rc == 0)
        alloc_count_use_inner(t);
    return rc;
}

void event_set_mem_functions(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                             void (*free_fn)(void *))
{
    alloc_count_libevent_inner(malloc_fn, realloc_fn, free_fn);
}

static void check_memory_at_exit(void)
{
    if (getpid() != accounting_pid)
        return; /* a forked child that exits through exit() */
    /* The process-wide policy slot is the one thing a program may rightly
     * leave set (and evpol creates its default lazily): drop it first. */
    evpol_set_event_loop_policy(NULL, NULL);
    long evpol_left = alloc_count_evpol() - evpol_blocks_at_start;
    long libevent_left = alloc_count_libevent() - libevent_blocks_at_start;
    if (evpol_left == 0 && libevent_left == 0)
        return;
    fprintf(stderr,
            "harness: memory leak check failed: %ld evpol allocation(s) and %ld libevent "
            "allocation(s) outstanding at exit that were not before main\n",
            evpol_left, libevent_left);
    fflush(NULL);
    _exit(3);
}

__attribute__((constructor)) static void start_memory_accounting(void)
{
    alloc_count_start_libevent();
    evpol_error err = {0};
    if (evpol_sys_set(NULL, &err) != 0) {
        fprintf(stderr, "harness: cannot install the counting seam: %s\n", err.message);
        _exit(2);
    }
    accounting_pid = getpid();
    evpol_blocks_at_start = alloc_count_evpol();
    libevent_blocks_at_start = alloc_count_libevent();
    atexit(check_memory_at_exit);
}
