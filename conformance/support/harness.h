/*
 * harness.h — what every conformance test program shares.
 *
 * Clause tags: each test is registered with CLAUSE_TEST(fn, "POL-1 POL-2"),
 * which becomes a cmocka test named "fn [POL-1 POL-2]". The clause matrix
 * tool (conformance/tools/clause-matrix) reads those names, from the source
 * and from cmocka's XML results; never keep a separate list.
 *
 * Watcher variants: a test body that applies to several watchers takes the
 * kind from *state (test_watcher_kind()) and is registered once for all of
 * them with WATCHER_TESTS(fn, W_SAFE | W_FAST, "CW-1 SAF-3@safe"): one cmocka
 * test per watcher named "fn@safe [CW-1 SAF-3]", "fn@fast [CW-1]", so that
 * the matrix has one row per clause x watcher. A tag written "ID@watcher"
 * belongs to that watcher's test only (the clauses of one watcher's family,
 * or a CW clause only one watcher's variant proves). WATCHER_TEST(fn, kind,
 * "CW-1") registers a single variant.
 *
 * A program lists its tests in a `const harness_test tests[]` and runs them
 * with harness_run_group(), which expands the variants in the order of the
 * W_* bits (threaded, multiloop, safe, fast, pidfd).
 */
#ifndef EVPOL_HARNESS_H
#define EVPOL_HARNESS_H

#include <evpol.h>
#include <pthread.h>
#include <sys/resource.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* One registration: a cmocka test as it is, or (watchers != 0) a body run
 * once per watcher named in `watchers`, tagged with `tags`. */
typedef struct harness_test {
    struct CMUnitTest test;
    unsigned watchers;
    const char *tags;
} harness_test;

enum {
    W_THREADED = 1u << 0,
    W_MULTILOOP = 1u << 1,
    W_SAFE = 1u << 2,
    W_FAST = 1u << 3,
    W_PIDFD = 1u << 4,
    W_ALL = W_THREADED | W_MULTILOOP | W_SAFE | W_FAST | W_PIDFD,
};

#define CLAUSE_TEST(fn, clauses) \
    { { #fn " [" clauses "]", fn, NULL, NULL, NULL }, 0, NULL }
#define CLAUSE_TEST_SETUP(fn, setup, teardown, clauses) \
    { { #fn " [" clauses "]", fn, setup, teardown, NULL }, 0, NULL }
/* A test outside the clause matrix (a check of the test support itself). */
#define UNTAGGED_TEST(fn) { cmocka_unit_test(fn), 0, NULL }

/* The kinds are stored in static storage so that &kind is a valid prestate. */
extern const evpol_watcher_kind harness_kind_threaded, harness_kind_multiloop,
    harness_kind_safe, harness_kind_fast, harness_kind_pidfd;
#define HARNESS_KIND_PTR(k) ((void *)&harness_kind_##k)
#define WATCHER_TEST(fn, k, clauses) \
    { { #fn "@" #k " [" clauses "]", fn, NULL, NULL, HARNESS_KIND_PTR(k) }, 0, NULL }
#define WATCHER_TESTS(fn, watcher_bits, clauses) \
    { { #fn, fn, NULL, NULL, NULL }, (watcher_bits), clauses }

/* Runs the tests of one program as one cmocka group (cmocka's return value:
 * the number of failed tests); a registration the harness cannot expand
 * fails the run. */
int harness_run_tests(const char *group, const harness_test *tests, size_t count,
                      CMFixtureFunction group_setup, CMFixtureFunction group_teardown);
#define harness_run_group(group, tests, group_setup, group_teardown) \
    harness_run_tests(group, tests, sizeof(tests) / sizeof((tests)[0]), group_setup, group_teardown)

/* The watcher kind of a WATCHER_TEST. */
evpol_watcher_kind test_watcher_kind(void **state);
const char *test_watcher_slug(evpol_watcher_kind kind); /* "threaded", ... */

/* Assert an evpol call succeeded; on failure print the error message. */
#define assert_ok(expr)                                                             \
    do {                                                                            \
        evpol_error harness_err_ = {0};                                             \
        (void)harness_err_;                                                         \
        int harness_rc_ = (expr);                                                   \
        if (harness_rc_ < 0)                                                        \
            fail_msg("%s failed: %d (%s)", #expr, harness_rc_, evpol_strerror(harness_rc_)); \
    } while (0)

/* Assert an evpol call failed with `code` (rc and err->code) and said why. */
void check_error(int rc, const evpol_error *err, int code);

/* ---- a policy of the user's own (evpol_policy_new_abstract) ---- */

/* Loop methods of a policy that keeps no loop: get fails with
 * EVPOL_ERUNTIME, set accepts and keeps nothing, new makes a loop on the
 * default backend. */
int stub_policy_get_loop(evpol_policy *self, evpol_loop **out, evpol_error *err);
int stub_policy_set_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err);
int stub_policy_new_loop(evpol_policy *self, evpol_loop **out, evpol_error *err);

/* ---- a custom watcher's methods that do nothing (evpol_watcher_methods) ----
 * For the methods a program's custom watcher does not record: each ignores
 * its arguments and succeeds. nop_watcher_call serves enter, exit and
 * close. */

int nop_watcher_add(void *self, evpol_loop *loop, pid_t pid, evpol_child_fn cb, void *arg,
                    evpol_error *err);
int nop_watcher_remove(void *self, pid_t pid, evpol_error *err);
int nop_watcher_attach(void *self, evpol_loop *loop, evpol_error *err);
int nop_watcher_call(void *self, evpol_error *err);
int watcher_always_active(void *self);
int watcher_never_active(void *self);
void nop_watcher_destroy(void *self);

/* A libevent log callback that drops libevent's own lines (for the
 * failures a test causes on purpose). */
void nop_libevent_log(int severity, const char *msg);

/* ---- threads, loops, policies ---- */

/* pthread_create, failing the test when it fails. */
pthread_t start_thread(void *(*fn)(void *), void *arg);
/* Sleep `ms` milliseconds, resumed after signals. */
void sleep_ms(int ms);
/* A new loop on the default backend, failing the test when it cannot. */
evpol_loop *new_loop(void);
/* Back to no policy set (the default one is made again on demand). */
void reset_policy(void);
/* The real kernel supports pidfd_open (Linux 5.3+). */
bool have_pidfd(void);

/* ---- log capture ---- */

#define CAPTURE_MAX_LINES 256
typedef struct log_capture {
    int count;
    struct {
        evpol_log_level level;
        evpol_log_category category;
        char msg[512];
    } lines[CAPTURE_MAX_LINES];
} log_capture;

/* Install a hook recording every line (thread-safe); capture_stop restores
 * the default hook. */
void capture_start(log_capture *cap);
void capture_stop(void);
/* capture_start on a capture of its own (a capture is too large for some
 * threads' stacks); capture_free stops it and frees it. */
log_capture *capture_new(void);
void capture_free(log_capture *cap);
/* Number of captured lines whose message contains `needle` (and, when
 * level >= 0 / category >= 0, has that level / category). */
int capture_count(log_capture *cap, int level, int category, const char *needle);

/* ---- running a loop in tests ---- */

/* Run `loop` in the calling thread until *flag becomes nonzero or
 * `timeout_ms` passes (a safety net against hangs, never a timing
 * assertion). Returns 1 when the flag was set, 0 on timeout. */
int run_until(evpol_loop *loop, volatile int *flag, int timeout_ms);
/* Same with a counter: until *counter >= target. */
int run_until_count(evpol_loop *loop, volatile int *counter, int target, int timeout_ms);
/* Run `loop` (in the calling thread) until `pid` is no child waiting to be
 * reaped any more: 1 once a watcher reaped it, 0 after a 10 s hang guard. */
int run_until_reaped(evpol_loop *loop, pid_t pid);

/* ---- children ---- */

/* fork a child that waits for a byte on a pipe (write_fd, returned to the
 * caller) then exits with `code` (or raises `sig` when sig > 0). The child
 * keeps no other inherited fd, so it never holds a sibling's write end:
 * releasing one child among several works, children may be forked from
 * several threads at once, and if the test dies the child gets EOF and
 * exits instead of lingering. */
pid_t spawn_waiting_child(int *write_fd, int code, int sig);
/* Release such a child. */
void release_child(int write_fd);
/* fork a child that exits with `code` at once. */
pid_t fork_exit(int code);

/* ---- whole exit statuses (evpol_child_status_fn) ---- */

typedef struct status_rec {
    volatile int calls; /* counted atomically */
    pid_t pid;
    evpol_exit_status st; /* a copy: the callback's pointer is borrowed */
    pthread_t thread;
} status_rec;

/* An evpol_child_status_fn recording into the status_rec `arg`. */
void record_status(pid_t pid, const evpol_exit_status *st, void *arg);
/* Assert `r` was called once, for `pid`, on this thread, with a status of
 * `kind` whose other members are (code, sig, core, raw, returncode). */
void assert_status(const status_rec *r, pid_t pid, evpol_exit_kind kind, int code, int sig,
                   bool core, int raw, int returncode);

/* ---- resource accounting (leak checks) ---- */

typedef struct resource_snapshot {
    int fds;     /* entries in /proc/self/fd */
    int threads; /* entries in /proc/self/task */
} resource_snapshot;

resource_snapshot resources_now(void);
/* Assert fds and threads are back to `before` (waits a little for exiting
 * threads to disappear from /proc), and that no zombie child remains. */
void assert_no_leaks(resource_snapshot before);
/* Number of zombie children of this process. */
int count_zombie_children(void);

/* Wait (bounded) until no thread beyond `threads` remains. */
int wait_threads_at_most(int threads, int timeout_ms);

/* The same as spawn_waiting_child (an older name kept for its callers). */
pid_t spawn_lone_child(int *write_fd, int code, int sig);

/* Block until `pid` has exited, without reaping it (waitid WNOWAIT). */
void wait_exited_not_reaped(pid_t pid);

/* Sanitizer runtimes start a helper thread of their own with the first
 * pthread_create (TSan's background thread), and keep it: a test whose
 * snapshot is taken before the program's first thread would count it as a
 * leak. harness_run_tests calls this before the first test, so it holds
 * for every program and for any selection of its tests. */
void warm_up_threads(void);

/* Lower RLIMIT_NOFILE's soft limit to the lowest free fd, so that no new
 * fd can be made (EMFILE); returns the limit to restore with
 * restore_fd_limit. */
struct rlimit forbid_new_fds(void);
void restore_fd_limit(struct rlimit saved);

#endif
