/*
 * test_faults.c — systematic fault injection, SQLite-style (ERR-1 and the
 * clauses of each operation).
 *
 * Two injectors:
 *  - the seam (evpol_sys_set): a table copied from evpol_sys_real() whose
 *    members pass through to the real kernel, except that the test can arm
 *    "fail the Nth call of member M" with a realistic errno (calloc -> NULL,
 *    pipe2/pidfd_open -> -1 EMFILE, thread_create -> EAGAIN, spawn -> ENOMEM
 *    or EAGAIN, sigaction -> -1 EINVAL, waitpid -> -1 EINTR or ECHILD, kill
 *    -> -1 EPERM, close -> the fd IS closed but -1 EIO is returned, as Linux
 *    does). Counters are atomics: watchers call the seam from their own
 *    threads. The table is installed only while no watcher is open.
 *  - libevent's own allocations, through event_set_mem_functions (installed
 *    once in main, before this program's first libevent call; the wrappers
 *    call the real malloc/realloc/free, so memory allocated earlier, e.g. by
 *    evthread_use_pthreads in evpol's constructor, stays compatible).
 *
 * For every public operation that can fail this way, the driver runs the
 * operation with the Nth call of member M failing, N = 1, 2, ... until the
 * operation succeeds with the fault not fired. Each time the fault fired:
 * the documented code (ENOMEM for memory, ESYSTEM with the injected errno
 * for a system call) with a message; no callback that should not run;
 * nothing leaked (fds, threads, zombies; memory through LeakSanitizer); the
 * same objects still usable: the operation succeeds unarmed and its effect
 * is checked (a child's exit delivered exactly once with its returncode).
 * Faults a function tolerates by design (a close that reports EIO, waitpid
 * EINTR, a stack size refused with EINVAL) must leave it succeeding.
 *
 * Faults after the point of no return (waitpid failing in a waiting thread,
 * a reader or a SIGCHLD handler) must not lose an exit status silently:
 * EINTR is retried, ECHILD is reported as returncode 255 with the CW-11
 * warning.
 */
#include "harness.h"
#include "watcher_tests.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_N 64

/* ------------------------------------------------------------------ */
/* The injector                                                        */
/* ------------------------------------------------------------------ */

enum member {
    M_WAITPID,
    M_PIDFD_OPEN,
    M_SIGACTION,
    M_SPAWN,
    M_KILL,
    M_THREAD_CREATE,
    M_CLOSE,
    M_PIPE2,
    M_CALLOC,
    M_EVMEM, /* libevent's malloc/realloc */
    M_COUNT
};

static const char *const member_names[M_COUNT] = {
    "waitpid", "pidfd_open", "sigaction", "spawn", "kill", "thread_create",
    "close", "pipe2", "calloc", "libevent malloc"};

static atomic_int calls[M_COUNT];   /* calls counted since armed */
static atomic_int fail_at[M_COUNT]; /* 0: not armed; else the call that fails */
static atomic_int fail_errno[M_COUNT];
static atomic_int fired[M_COUNT];
static atomic_bool any_thread[M_COUNT]; /* count calls from every thread */
static _Thread_local bool tls_armer;

/* Counts the call and says whether it is the one to fail. Allocations are
 * counted on the arming thread only (deterministic); system calls on every
 * thread when asked (watchers make them on their own threads). */
static bool should_fail(int m)
{
    if (atomic_load(&fail_at[m]) == 0)
        return false;
    if (!tls_armer && !atomic_load(&any_thread[m]))
        return false;
    int n = atomic_fetch_add(&calls[m], 1) + 1;
    if (n != atomic_load(&fail_at[m]))
        return false;
    atomic_store(&fired[m], 1);
    return true;
}

static void arm_on(int m, int n, int errnum, bool every_thread)
{
    atomic_store(&calls[m], 0);
    atomic_store(&fired[m], 0);
    atomic_store(&fail_errno[m], errnum);
    atomic_store(&any_thread[m], every_thread);
    tls_armer = true;
    atomic_store(&fail_at[m], n);
}

static void arm(int m, int n, int errnum)
{
    arm_on(m, n, errnum, false);
}

/* Disarm every member; true when member m's fault fired. */
static bool disarm(int m)
{
    for (int i = 0; i < M_COUNT; i++)
        atomic_store(&fail_at[i], 0);
    tls_armer = false;
    return m >= 0 && atomic_load(&fired[m]);
}

static pid_t f_waitpid(pid_t pid, int *status, int options)
{
    if (should_fail(M_WAITPID)) {
        errno = atomic_load(&fail_errno[M_WAITPID]);
        return -1;
    }
    return evpol_sys_real()->waitpid(pid, status, options);
}

static int f_pidfd_open(pid_t pid, unsigned int flags)
{
    if (should_fail(M_PIDFD_OPEN)) {
        errno = atomic_load(&fail_errno[M_PIDFD_OPEN]);
        return -1;
    }
    return evpol_sys_real()->pidfd_open(pid, flags);
}

static int f_sigaction(int signum, const struct sigaction *act, struct sigaction *old)
{
    if (should_fail(M_SIGACTION)) {
        errno = atomic_load(&fail_errno[M_SIGACTION]);
        return -1;
    }
    return evpol_sys_real()->sigaction(signum, act, old);
}

static int f_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    if (should_fail(M_SPAWN))
        return atomic_load(&fail_errno[M_SPAWN]);
    return evpol_sys_real()->spawn(pid, req);
}

static int f_kill(pid_t pid, int sig)
{
    if (should_fail(M_KILL)) {
        errno = atomic_load(&fail_errno[M_KILL]);
        return -1;
    }
    return evpol_sys_real()->kill(pid, sig);
}

static int f_thread_create(pthread_t *t, size_t stack, void *(*fn)(void *), void *arg)
{
    if (should_fail(M_THREAD_CREATE))
        return atomic_load(&fail_errno[M_THREAD_CREATE]);
    return evpol_sys_real()->thread_create(t, stack, fn, arg);
}

static int f_close(int fd)
{
    if (should_fail(M_CLOSE)) {
        /* Linux releases the fd even when close reports an error. */
        evpol_sys_real()->close(fd);
        errno = atomic_load(&fail_errno[M_CLOSE]);
        return -1;
    }
    return evpol_sys_real()->close(fd);
}

static int f_pipe2(int fds[2], int flags)
{
    if (should_fail(M_PIPE2)) {
        errno = atomic_load(&fail_errno[M_PIPE2]);
        return -1;
    }
    return evpol_sys_real()->pipe2(fds, flags);
}

static void *f_calloc(size_t n, size_t size)
{
    if (should_fail(M_CALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return evpol_sys_real()->calloc(n, size);
}

static void *ev_malloc(size_t size)
{
    if (should_fail(M_EVMEM)) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

static void *ev_realloc(void *p, size_t size)
{
    if (should_fail(M_EVMEM)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, size);
}

static void ev_free(void *p)
{
    free(p);
}

static void install_injector(void)
{
    disarm(-1);
    evpol_sys t = *evpol_sys_real();
    t.waitpid = f_waitpid;
    t.pidfd_open = f_pidfd_open;
    t.sigaction = f_sigaction;
    t.spawn = f_spawn;
    t.kill = f_kill;
    t.thread_create = f_thread_create;
    t.close = f_close;
    t.pipe2 = f_pipe2;
    t.calloc = f_calloc;
    assert_ok(evpol_sys_set(&t, NULL)); /* no watcher is open */
}

static void remove_injector(void)
{
    disarm(-1);
    assert_ok(evpol_sys_set(NULL, NULL));
}

static log_capture cap;

/* ------------------------------------------------------------------ */
/* The driver                                                          */
/* ------------------------------------------------------------------ */

/* One fixture for every case; each case uses what it needs. */
typedef struct fx {
    evpol_watcher_kind kind;
    evpol_backend backend;
    evpol_loop *loop;
    evpol_loop *made_loop; /* what an operation created */
    evpol_watcher *w;
    evpol_watcher *made_w;
    evpol_policy *policy;
    evpol_policy *made_policy;
    struct event_base *base;
    pid_t pid;
    int wfd;
    int fds[2];
    result res;
    volatile int flag;
    evpol_spawn_options opts;
    evpol_spawn_result sres;
    bool context; /* Fast: a spawn context is open */
} fx;

typedef struct fault_case {
    const char *name;
    void (*setup)(fx *f);
    int (*op)(fx *f, evpol_error *err);
    void (*failed)(fx *f);    /* after a failed op, before the retry (may be NULL) */
    void (*succeeded)(fx *f); /* check the op's effect and release it */
    void (*teardown)(fx *f);
    bool in_loop; /* run the op from a callback of f->loop (running) */
} fault_case;

typedef struct fault_spec {
    int member;
    int errnum;
    int want; /* the code when the fault fires; 0: tolerated, the op succeeds */
    int want2; /* another accepted code, or 0 */
    bool ok_too; /* success is accepted too (libevent falling back) */
    int max_n;   /* stop after this many calls (0: no limit) */
} fault_spec;

typedef struct armed_call {
    const fault_case *fc;
    fx *f;
    fault_spec s;
    int n; /* 0: unarmed */
    evpol_error err;
    int rc;
    bool fired;
    volatile int done;
} armed_call;

static void armed_run(armed_call *a)
{
    memset(&a->err, 0, sizeof a->err);
    if (a->n > 0)
        arm(a->s.member, a->n, a->s.errnum);
    a->rc = a->fc->op(a->f, &a->err);
    a->fired = disarm(a->s.member);
}

static void armed_cb(void *p)
{
    armed_call *a = p;
    armed_run(a);
    a->done = 1;
}

static void run_armed(armed_call *a)
{
    if (!a->fc->in_loop) {
        armed_run(a);
        return;
    }
    a->done = 0;
    assert_ok(evpol_loop_call_soon_threadsafe(a->f->loop, armed_cb, a, NULL));
    if (!run_until(a->f->loop, &a->done, 10000))
        fail_msg("%s: the operation never ran", a->fc->name);
}

static void check_failure(const armed_call *a)
{
    const fault_spec *s = &a->s;
    if (a->rc != s->want && (s->want2 == 0 || a->rc != s->want2))
        fail_msg("%s, %s call %d failing (errno %d): expected %s, got %d (%s): %s", a->fc->name,
                 member_names[s->member], a->n, s->errnum, evpol_strerror(s->want), a->rc,
                 evpol_strerror(a->rc), a->err.message);
    if (a->err.code != a->rc)
        fail_msg("%s: err.code %d but returned %d", a->fc->name, a->err.code, a->rc);
    if (a->err.message[0] == '\0')
        fail_msg("%s: empty error message", a->fc->name);
    if (a->rc == EVPOL_ESYSTEM && a->err.sys_errno != s->errnum)
        fail_msg("%s, %s failing: sys_errno %d, injected %d (%s)", a->fc->name,
                 member_names[s->member], a->err.sys_errno, s->errnum, a->err.message);
}

static void assert_no_children(void);

/* Returns how many times the fault fired (the N that reached member M). */
static int drive(const fault_case *fc, fx *proto, fault_spec s)
{
    int fired_total = 0;
    for (int n = 1; n <= MAX_N; n++) {
        resource_snapshot before = resources_now();
        struct sigaction sigchld_at_start, sigchld_at_end;
        assert_int_equal(sigaction(SIGCHLD, NULL, &sigchld_at_start), 0);
        fx f = *proto;
        fc->setup(&f);
        armed_call a = {.fc = fc, .f = &f, .s = s, .n = n};
        run_armed(&a);
        if (a.fired) {
            fired_total++;
            if ((s.want != 0 && !(s.ok_too && a.rc == 0)) || a.rc != 0) {
                check_failure(&a);
                if (fc->failed)
                    fc->failed(&f);
                /* The same objects are still usable. */
                armed_call again = {.fc = fc, .f = &f, .s = s, .n = 0};
                run_armed(&again);
                if (again.rc != 0)
                    fail_msg("%s: retry after %s call %d failed: %d (%s)", fc->name,
                             member_names[s.member], n, again.rc, again.err.message);
            }
        } else if (a.rc != 0) {
            fail_msg("%s: failed with no fault (n=%d, %s): %d (%s)", fc->name, n,
                     member_names[s.member], a.rc, a.err.message);
        }
        fc->succeeded(&f);
        fc->teardown(&f);
        assert_no_leaks(before);
        assert_no_children();
        assert_int_equal(sigaction(SIGCHLD, NULL, &sigchld_at_end), 0);
        if (sigchld_at_end.sa_handler != sigchld_at_start.sa_handler)
            fail_msg("%s (kind %d), %s call %d failing (rc %d: %s): the SIGCHLD disposition "
                     "changed", fc->name, (int)f.kind, member_names[s.member], n, a.rc,
                     a.err.message);
        if (!a.fired || n == s.max_n)
            return fired_total;
    }
    fail_msg("%s: %s still failing after %d calls", fc->name, member_names[s.member], MAX_N);
    return fired_total;
}

#define ENOMEM_SPEC(m) ((fault_spec){(m), ENOMEM, EVPOL_ENOMEM, 0, false, 0})
#define SYS_SPEC(m, e) ((fault_spec){(m), (e), EVPOL_ESYSTEM, 0, false, 0})
#define TOLERATED(m, e) ((fault_spec){(m), (e), 0, 0, false, 0})
/* libevent's allocations: ENOMEM, or (see test_libevent_oom_is_enomem,
 * which holds the library to ENOMEM) the code evpol gives today. */
#define EVMEM_SPEC(also) ((fault_spec){M_EVMEM, ENOMEM, EVPOL_ENOMEM, (also), false, 0})
/* A signal event: only event_new's allocation. When libevent's own
 * allocations inside event_add of a signal event fail, libevent leaves its
 * handler installed (evsig_add's error path does not restore the
 * disposition), which evpol cannot undo. */
#define EVMEM_SIGNAL_SPEC ((fault_spec){M_EVMEM, ENOMEM, EVPOL_ENOMEM, EVPOL_ERUNTIME, false, 1})
/* Inside event_base_new_with_config libevent may fall back to another
 * backend and succeed. */
#define EVMEM_BASE_SPEC(also) ((fault_spec){M_EVMEM, ENOMEM, EVPOL_ENOMEM, (also), true, 0})

static void expect_fired(const char *what, int n)
{
    if (n < 1)
        fail_msg("%s: the fault never fired (the operation does not reach it)", what);
}

static void noop(fx *f)
{
    (void)f;
}

/* ------------------------------------------------------------------ */
/* Shared fixture pieces                                               */
/* ------------------------------------------------------------------ */

static void open_loop(fx *f)
{
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &f->loop, NULL));
}

static void close_loop(fx *f)
{
    if (f->loop) {
        assert_ok(evpol_loop_close(f->loop, NULL));
        evpol_loop_unref(f->loop);
        f->loop = NULL;
    }
}

static bool is_sigchld_kind(evpol_watcher_kind k)
{
    return k == EVPOL_WATCHER_SAFE || k == EVPOL_WATCHER_FAST;
}

/* A loop and an attached, usable watcher of f->kind (Fast: context open). */
static void open_watcher(fx *f)
{
    open_loop(f);
    assert_ok(evpol_watcher_new(f->kind, &f->w, NULL));
    if (f->kind == EVPOL_WATCHER_MULTILOOP || is_sigchld_kind(f->kind))
        assert_ok(evpol_watcher_attach_loop(f->w, f->loop, NULL));
    if (f->kind == EVPOL_WATCHER_FAST) {
        assert_ok(evpol_watcher_enter(f->w, NULL));
        f->context = true;
    }
}

static void close_watcher(fx *f)
{
    if (f->context)
        assert_ok(evpol_watcher_exit(f->w, NULL));
    f->context = false;
    assert_ok(evpol_watcher_close(f->w, NULL));
    evpol_watcher_unref(f->w);
    f->w = NULL;
    close_loop(f);
}

/* Register a fresh waiting child on f->w, release it and check that its
 * exit arrives exactly once with its returncode: the watcher works. */
static void check_watcher_delivers(fx *f, evpol_watcher *w)
{
    result res;
    memset(&res, 0, sizeof res);
    int wfd;
    pid_t pid = spawn_waiting_child(&wfd, 9, 0);
    bool entered = false;
    if (evpol_watcher_kind_of(w) == EVPOL_WATCHER_FAST && !f->context) {
        assert_ok(evpol_watcher_enter(w, NULL));
        entered = true;
    }
    assert_ok(evpol_watcher_add_child_handler_on(w, f->loop, pid, on_exit_cb, &res, NULL));
    release_child(wfd);
    if (!run_until_count(f->loop, (volatile int *)&res.calls, 1, 10000))
        fail_msg("the watcher never reported pid %ld", (long)pid);
    assert_int_equal(atomic_load(&res.calls), 1);
    assert_int_equal(res.pid, pid);
    assert_int_equal(res.rc, 9);
    if (entered)
        assert_ok(evpol_watcher_exit(w, NULL));
}

/* ------------------------------------------------------------------ */
/* Loops                                                               */
/* ------------------------------------------------------------------ */

static void set_flag_cb(void *p)
{
    ((fx *)p)->flag = 1;
}

static int op_loop_new(fx *f, evpol_error *err)
{
    return evpol_loop_new(f->backend, &f->made_loop, err);
}

static void made_loop_runs(fx *f)
{
    assert_non_null(f->made_loop);
    f->flag = 0;
    assert_ok(evpol_loop_call_soon_threadsafe(f->made_loop, set_flag_cb, f, NULL));
    assert_true(run_until(f->made_loop, &f->flag, 10000));
    evpol_loop_unref(f->made_loop);
    f->made_loop = NULL;
}

static const fault_case case_loop_new = {"evpol_loop_new", noop, op_loop_new, NULL,
                                         made_loop_runs, noop, false};

static void test_loop_new(void **state)
{
    (void)state;
    install_injector();
    const evpol_backend backends[] = {EVPOL_BACKEND_DEFAULT, EVPOL_BACKEND_EPOLL,
                                      EVPOL_BACKEND_POLL, EVPOL_BACKEND_SELECT};
    for (size_t i = 0; i < 4; i++) {
        fx f = {.backend = backends[i]};
        expect_fired("loop_new calloc", drive(&case_loop_new, &f, ENOMEM_SPEC(M_CALLOC)));
    }
    remove_injector();
}

/* libevent's own allocations while making the event_base: the call fails
 * cleanly (or libevent falls back to another backend for DEFAULT). */
static void test_loop_new_libevent_oom(void **state)
{
    (void)state;
    install_injector();
    const evpol_backend backends[] = {EVPOL_BACKEND_DEFAULT, EVPOL_BACKEND_EPOLL,
                                      EVPOL_BACKEND_POLL, EVPOL_BACKEND_SELECT};
    for (size_t i = 0; i < 4; i++) {
        fx f = {.backend = backends[i]};
        expect_fired("loop_new libevent",
                     drive(&case_loop_new, &f, EVMEM_BASE_SPEC(0)));
    }
    remove_injector();
}

static void setup_base(fx *f)
{
    f->base = event_base_new();
    assert_non_null(f->base);
}

static int op_loop_from_base(fx *f, evpol_error *err)
{
    return evpol_loop_new_from_base(f->base, &f->made_loop, err);
}

static void teardown_base(fx *f)
{
    event_base_free(f->base);
    f->base = NULL;
}

static void test_loop_new_from_base(void **state)
{
    (void)state;
    install_injector();
    const fault_case c = {"evpol_loop_new_from_base", setup_base, op_loop_from_base, NULL,
                          made_loop_runs, teardown_base, false};
    fx f = {0};
    expect_fired("from_base calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("from_base libevent", drive(&c, &f, EVMEM_SPEC(0)));
    remove_injector();
}

static int op_call_soon(fx *f, evpol_error *err)
{
    f->flag = 0;
    return evpol_loop_call_soon_threadsafe(f->loop, set_flag_cb, f, err);
}

static int op_call_later(fx *f, evpol_error *err)
{
    f->flag = 0;
    return evpol_loop_call_later(f->loop, 0, set_flag_cb, f, err);
}

static void flag_gets_set(fx *f)
{
    assert_true(run_until(f->loop, &f->flag, 10000));
}

static void test_loop_calls(void **state)
{
    (void)state;
    install_injector();
    const fault_case soon = {"call_soon_threadsafe", open_loop, op_call_soon, NULL,
                             flag_gets_set, close_loop, false};
    const fault_case later = {"call_later", open_loop, op_call_later, NULL, flag_gets_set,
                              close_loop, false};
    fx f = {0};
    expect_fired("call_soon calloc", drive(&soon, &f, ENOMEM_SPEC(M_CALLOC)));
    drive(&soon, &f, EVMEM_SPEC(0)); /* event_active allocates nothing */
    expect_fired("call_later calloc", drive(&later, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("call_later libevent", drive(&later, &f, EVMEM_SPEC(0)));
    remove_injector();
}

static void reader_cb(int fd, void *arg)
{
    fx *f = arg;
    char c;
    ssize_t n = read(fd, &c, 1);
    (void)n;
    f->flag = 1;
}

static void setup_reader(fx *f)
{
    open_loop(f);
    assert_int_equal(pipe2(f->fds, O_CLOEXEC), 0);
    assert_int_equal(write(f->fds[1], "x", 1), 1);
    f->flag = 0;
}

static int op_add_reader(fx *f, evpol_error *err)
{
    return evpol_loop_add_reader(f->loop, f->fds[0], reader_cb, f, err);
}

static void reader_fires(fx *f)
{
    assert_true(run_until(f->loop, &f->flag, 10000));
    assert_int_equal(evpol_loop_remove_reader(f->loop, f->fds[0], NULL), 1);
}

static void teardown_reader(fx *f)
{
    close(f->fds[0]);
    close(f->fds[1]);
    close_loop(f);
}

static void sig_cb(int signum, void *arg)
{
    (void)signum;
    ((fx *)arg)->flag = 1;
}

static int op_add_signal(fx *f, evpol_error *err)
{
    f->flag = 0;
    return evpol_loop_add_signal_handler(f->loop, SIGUSR2, sig_cb, f, err);
}

static void raise_usr2(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR2);
}

static void signal_arrives(fx *f)
{
    assert_ok(evpol_loop_call_soon_threadsafe(f->loop, raise_usr2, NULL, NULL));
    assert_true(run_until(f->loop, &f->flag, 10000));
    assert_int_equal(evpol_loop_remove_signal_handler(f->loop, SIGUSR2, NULL), 1);
}

/* libevent refusing an event for lack of memory is out of memory: the
 * header lists ENOMEM for add_reader and add_signal_handler. */
static void test_loop_handlers(void **state)
{
    (void)state;
    install_injector();
    const fault_case reader = {"add_reader", setup_reader, op_add_reader, NULL, reader_fires,
                               teardown_reader, false};
    const fault_case sig = {"add_signal_handler", open_loop, op_add_signal, NULL,
                            signal_arrives, close_loop, false};
    fx f = {0};
    expect_fired("add_reader calloc", drive(&reader, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("add_signal calloc", drive(&sig, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("add_reader libevent", drive(&reader, &f, EVMEM_SPEC(0)));
    expect_fired("add_signal libevent", drive(&sig, &f, EVMEM_SIGNAL_SPEC));
    remove_injector();
}

/* ------------------------------------------------------------------ */
/* Policies                                                            */
/* ------------------------------------------------------------------ */

static int my_get_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    return evpol_policy_default_get_event_loop(self, out, err);
}
static int my_set_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    return evpol_policy_default_set_event_loop(self, loop, err);
}
static int my_new_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)self;
    return evpol_loop_new(EVPOL_BACKEND_DEFAULT, out, err);
}

static const evpol_policy_methods abstract_methods = {
    .size = sizeof(evpol_policy_methods),
    .get_event_loop = my_get_loop,
    .set_event_loop = my_set_loop,
    .new_event_loop = my_new_loop,
};

static int policy_variant; /* which constructor op_policy_new calls */

static int op_policy_new(fx *f, evpol_error *err)
{
    static const evpol_policy_methods custom = {.size = sizeof(evpol_policy_methods)};
    switch (policy_variant) {
    case 0: return evpol_policy_new_default(&f->made_policy, err);
    case 1: return evpol_policy_new_with_backend(f->backend, &f->made_policy, err);
    case 2: return evpol_policy_new_with_watcher_kind(f->kind, &f->made_policy, err);
    case 3: return evpol_policy_new_custom(&custom, f, &f->made_policy, err);
    default: return evpol_policy_new_abstract(&abstract_methods, f, &f->made_policy, err);
    }
}

static void made_policy_works(fx *f)
{
    assert_true(evpol_is_policy(f->made_policy));
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_new_event_loop(f->made_policy, &loop, NULL));
    evpol_loop_unref(loop);
    evpol_policy_unref(f->made_policy);
    f->made_policy = NULL;
}

static void test_policy_new(void **state)
{
    (void)state;
    install_injector();
    const fault_case c = {"policy_new", noop, op_policy_new, NULL, made_policy_works, noop,
                          false};
    const evpol_backend backends[] = {EVPOL_BACKEND_DEFAULT, EVPOL_BACKEND_EPOLL,
                                      EVPOL_BACKEND_POLL, EVPOL_BACKEND_SELECT};
    fx f = {.kind = EVPOL_WATCHER_AUTO};
    for (policy_variant = 0; policy_variant <= 4; policy_variant++) {
        if (policy_variant == 1) {
            for (size_t i = 0; i < 4; i++) {
                f.backend = backends[i];
                expect_fired("with_backend calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
            }
        } else {
            expect_fired("policy calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
        }
    }
    remove_injector();
}

/* evpol_policy_new_with_backend probes the backend with a loop: libevent
 * running out of memory there is ENOMEM, not ENOTSUP. */
static void test_policy_new_with_backend_libevent_oom(void **state)
{
    (void)state;
    install_injector();
    const fault_case c = {"policy_new_with_backend", noop, op_policy_new, NULL,
                          made_policy_works, noop, false};
    fx f = {.backend = EVPOL_BACKEND_DEFAULT};
    policy_variant = 1;
    expect_fired("with_backend libevent", drive(&c, &f, EVMEM_BASE_SPEC(0)));
    remove_injector();
}

static void setup_policy(fx *f)
{
    assert_ok(evpol_policy_new_with_watcher_kind(f->kind ? f->kind : EVPOL_WATCHER_THREADED,
                                                 &f->policy, NULL));
}

static void teardown_policy(fx *f)
{
    evpol_policy_unref(f->policy);
    f->policy = NULL;
    close_loop(f);
}

static int op_get_event_loop(fx *f, evpol_error *err)
{
    return evpol_policy_get_event_loop(f->policy, &f->made_loop, err);
}

static void got_loop(fx *f)
{
    evpol_loop *again = NULL;
    assert_true(evpol_is_loop(f->made_loop));
    assert_ok(evpol_policy_get_event_loop(f->policy, &again, NULL));
    assert_ptr_equal(again, f->made_loop); /* borrowed: the policy holds it */
    f->made_loop = NULL;
}

/* POL-10: the lazily created loop of the main thread. */
static void test_policy_get_event_loop_lazy(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    const fault_case c = {"policy_get_event_loop", setup_policy, op_get_event_loop, NULL,
                          got_loop, teardown_policy, false};
    fx f = {0};
    expect_fired("get_event_loop calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("get_event_loop libevent", drive(&c, &f, EVMEM_BASE_SPEC(0)));
    remove_injector();
    capture_stop();
}

static void reset_global(fx *f)
{
    (void)f;
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
}

static int op_top_get_event_loop(fx *f, evpol_error *err)
{
    return evpol_get_event_loop(&f->made_loop, err);
}

static void top_got_loop(fx *f)
{
    assert_true(evpol_is_loop(f->made_loop));
    f->made_loop = NULL;
}

static int op_get_policy(fx *f, evpol_error *err)
{
    return evpol_get_event_loop_policy(&f->made_policy, err);
}

static void got_policy(fx *f)
{
    evpol_policy *again = NULL;
    assert_true(evpol_is_policy(f->made_policy));
    assert_ok(evpol_get_event_loop_policy(&again, NULL));
    assert_ptr_equal(again, f->made_policy);
    f->made_policy = NULL;
}

/* POL-2: the process-wide default policy, made on first use. */
static void test_global_policy_lazy(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    const fault_case top = {"evpol_get_event_loop", reset_global, op_top_get_event_loop, NULL,
                            top_got_loop, reset_global, false};
    const fault_case pol = {"evpol_get_event_loop_policy", reset_global, op_get_policy, NULL,
                            got_policy, reset_global, false};
    fx f = {0};
    expect_fired("get_event_loop_policy calloc", drive(&pol, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("top get_event_loop calloc", drive(&top, &f, ENOMEM_SPEC(M_CALLOC)));
    remove_injector();
    capture_stop();
}

static void setup_policy_and_loop(fx *f)
{
    setup_policy(f);
    open_loop(f);
    if (f->kind != EVPOL_WATCHER_THREADED) {
        /* A watcher to attach (POL-16). */
        evpol_watcher *w = NULL;
        assert_ok(evpol_policy_get_child_watcher(f->policy, &w, NULL));
    }
}

static int op_set_event_loop(fx *f, evpol_error *err)
{
    return evpol_policy_set_event_loop(f->policy, f->loop, err);
}

static void loop_is_set(fx *f)
{
    evpol_loop *cur = NULL;
    assert_ok(evpol_policy_get_event_loop(f->policy, &cur, NULL));
    assert_ptr_equal(cur, f->loop);
    if (is_sigchld_kind(f->kind) || f->kind == EVPOL_WATCHER_MULTILOOP) {
        evpol_watcher *w = NULL;
        assert_ok(evpol_policy_get_child_watcher(f->policy, &w, NULL));
        check_watcher_delivers(f, w);
    }
    assert_ok(evpol_policy_set_event_loop(f->policy, NULL, NULL));
}

static void teardown_policy_and_watcher(fx *f)
{
    /* Close the watcher before its loop. */
    assert_ok(evpol_policy_set_child_watcher(f->policy, NULL, NULL));
    teardown_policy(f);
}

/* POL-12, POL-16: the per-thread slot, and attach_loop of the policy's
 * watcher from the main thread. */
static void test_policy_set_event_loop(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    const fault_case c = {"policy_set_event_loop", setup_policy_and_loop, op_set_event_loop,
                          NULL, loop_is_set, teardown_policy_and_watcher, false};
    const evpol_watcher_kind kinds[] = {EVPOL_WATCHER_THREADED, EVPOL_WATCHER_SAFE,
                                        EVPOL_WATCHER_FAST, EVPOL_WATCHER_MULTILOOP};
    for (size_t i = 0; i < 4; i++) {
        fx f = {.kind = kinds[i]};
        expect_fired("set_event_loop calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
        if (is_sigchld_kind(kinds[i]))
            expect_fired("set_event_loop libevent", drive(&c, &f, EVMEM_SIGNAL_SPEC));
        if (kinds[i] == EVPOL_WATCHER_MULTILOOP) {
            expect_fired("set_event_loop pipe2", drive(&c, &f, SYS_SPEC(M_PIPE2, EMFILE)));
            expect_fired("set_event_loop thread", drive(&c, &f, SYS_SPEC(M_THREAD_CREATE, EAGAIN)));
        }
    }
    remove_injector();
    capture_stop();
}

static int op_get_child_watcher(fx *f, evpol_error *err)
{
    return evpol_policy_get_child_watcher(f->policy, &f->made_w, err);
}

static void got_watcher(fx *f)
{
    evpol_watcher *again = NULL;
    assert_true(evpol_is_watcher(f->made_w));
    assert_ok(evpol_policy_get_child_watcher(f->policy, &again, NULL));
    assert_ptr_equal(again, f->made_w);
    int kind = evpol_watcher_kind_of(f->made_w);
    if (f->kind != EVPOL_WATCHER_AUTO)
        assert_int_equal(kind, f->kind);
    f->made_w = NULL;
}

/* POL-14: the policy's watcher, made on first use, for every kind. */
static void test_policy_get_child_watcher_lazy(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    const fault_case c = {"policy_get_child_watcher", setup_policy, op_get_child_watcher, NULL,
                          got_watcher, teardown_policy, false};
    const evpol_watcher_kind kinds[] = {EVPOL_WATCHER_THREADED, EVPOL_WATCHER_MULTILOOP,
                                        EVPOL_WATCHER_SAFE,     EVPOL_WATCHER_FAST,
                                        EVPOL_WATCHER_PIDFD,    EVPOL_WATCHER_AUTO};
    for (size_t i = 0; i < 6; i++) {
        fx f = {.kind = kinds[i]};
        expect_fired("get_child_watcher calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    }
    remove_injector();
    capture_stop();
}

/* PFD-4: AUTO picks Threaded when pidfd_open fails. */
static void test_auto_watcher_falls_back(void **state)
{
    (void)state;
    install_injector();
    evpol_watcher *w = NULL;
    arm(M_PIDFD_OPEN, 1, EMFILE);
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_AUTO, &w, NULL));
    assert_true(disarm(M_PIDFD_OPEN));
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_THREADED);
    evpol_watcher_unref(w);
    arm(M_CLOSE, 1, EIO); /* the probe's pidfd: closed anyway */
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_AUTO, &w, NULL));
    bool closed_fired = disarm(M_CLOSE);
    assert_int_equal(evpol_watcher_kind_of(w),
                     have_pidfd() ? EVPOL_WATCHER_PIDFD : EVPOL_WATCHER_THREADED);
    assert_true(closed_fired == have_pidfd());
    evpol_watcher_unref(w);
    remove_injector();
}

/* ------------------------------------------------------------------ */
/* Watchers                                                            */
/* ------------------------------------------------------------------ */

static int c_add(void *self, evpol_loop *loop, pid_t pid, evpol_child_fn cb, void *arg,
                 evpol_error *err)
{
    (void)self, (void)loop, (void)pid, (void)cb, (void)arg, (void)err;
    return 0;
}
static int c_remove(void *self, pid_t pid, evpol_error *err)
{
    (void)self, (void)pid, (void)err;
    return 0;
}
static int c_attach(void *self, evpol_loop *loop, evpol_error *err)
{
    (void)self, (void)loop, (void)err;
    return 0;
}
static int c_err(void *self, evpol_error *err)
{
    (void)self, (void)err;
    return 0;
}
static const evpol_watcher_methods custom_methods = {
    sizeof(evpol_watcher_methods), c_add, c_remove, c_attach, watcher_always_active,
    c_err, c_err, c_err, nop_watcher_destroy};

static int op_watcher_new(fx *f, evpol_error *err)
{
    if (f->kind == EVPOL_WATCHER_CUSTOM)
        return evpol_watcher_new_custom(&custom_methods, f, &f->made_w, err);
    return evpol_watcher_new(f->kind, &f->made_w, err);
}

static void made_watcher_works(fx *f)
{
    assert_true(evpol_is_watcher(f->made_w));
    if (f->kind != EVPOL_WATCHER_CUSTOM) {
        open_loop(f);
        if (f->kind == EVPOL_WATCHER_MULTILOOP || is_sigchld_kind(f->kind))
            assert_ok(evpol_watcher_attach_loop(f->made_w, f->loop, NULL));
        check_watcher_delivers(f, f->made_w);
        assert_ok(evpol_watcher_close(f->made_w, NULL));
        close_loop(f);
    }
    evpol_watcher_unref(f->made_w);
    f->made_w = NULL;
}

/* CW-6: a watcher of each kind is made or not at all. */
static void test_watcher_new(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    install_injector();
    const fault_case c = {"evpol_watcher_new", noop, op_watcher_new, NULL, made_watcher_works,
                          noop, false};
    fx f = {.kind = kind};
    expect_fired("watcher_new calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    remove_injector();
}

static void test_watcher_new_custom(void **state)
{
    (void)state;
    install_injector();
    const fault_case c = {"evpol_watcher_new_custom", noop, op_watcher_new, NULL,
                          made_watcher_works, noop, false};
    fx f = {.kind = EVPOL_WATCHER_CUSTOM};
    expect_fired("custom calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    f.kind = EVPOL_WATCHER_AUTO;
    expect_fired("auto calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    remove_injector();
}

static void setup_unattached(fx *f)
{
    open_loop(f);
    assert_ok(evpol_watcher_new(f->kind, &f->w, NULL));
}

static int op_attach(fx *f, evpol_error *err)
{
    return evpol_watcher_attach_loop(f->w, f->loop, err);
}

static struct sigaction sigchld_before;

static void attach_failed(fx *f)
{
    (void)f;
    /* Nothing half-installed: the SIGCHLD disposition is unchanged. */
    struct sigaction now;
    assert_int_equal(sigaction(SIGCHLD, NULL, &now), 0);
    assert_ptr_equal((void *)now.sa_handler, (void *)sigchld_before.sa_handler);
    if (f->kind == EVPOL_WATCHER_MULTILOOP)
        assert_int_equal(evpol_watcher_is_active(f->w), 0);
}

static void attached_works(fx *f)
{
    check_watcher_delivers(f, f->w);
}

static void teardown_attached(fx *f)
{
    assert_ok(evpol_watcher_close(f->w, NULL));
    evpol_watcher_unref(f->w);
    f->w = NULL;
    close_loop(f);
}

/* CW-5, MUL-1, SAF-1: attach_loop installs its SIGCHLD handling fully or
 * not at all. */
static void test_attach_loop(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    assert_int_equal(sigaction(SIGCHLD, NULL, &sigchld_before), 0);
    install_injector();
    const fault_case c = {"attach_loop", setup_unattached, op_attach, attach_failed,
                          attached_works, teardown_attached, false};
    fx f = {.kind = kind};
    if (kind == EVPOL_WATCHER_MULTILOOP) {
        expect_fired("attach pipe2", drive(&c, &f, SYS_SPEC(M_PIPE2, EMFILE)));
        expect_fired("attach sigaction", drive(&c, &f, SYS_SPEC(M_SIGACTION, EINVAL)));
        expect_fired("attach thread", drive(&c, &f, SYS_SPEC(M_THREAD_CREATE, EAGAIN)));
    } else {
        expect_fired("attach calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
        expect_fired("attach libevent", drive(&c, &f, EVMEM_SIGNAL_SPEC));
    }
    remove_injector();
}

static void setup_child(fx *f)
{
    open_watcher(f);
    memset(&f->res, 0, sizeof f->res);
    f->pid = spawn_waiting_child(&f->wfd, 7, 0);
}

static int op_add_child(fx *f, evpol_error *err)
{
    return evpol_watcher_add_child_handler_on(f->w, f->loop, f->pid, on_exit_cb, &f->res, err);
}

static void child_reported_once(fx *f)
{
    release_child(f->wfd);
    if (!run_until_count(f->loop, (volatile int *)&f->res.calls, 1, 10000))
        fail_msg("pid %ld was never reported", (long)f->pid);
    assert_int_equal(atomic_load(&f->res.calls), 1);
    assert_int_equal(f->res.pid, f->pid);
    assert_int_equal(f->res.rc, 7);
}

/* CW-1: registration either happens or fails with nothing left behind;
 * the child is reported exactly once after a successful retry. */
static void test_add_child_handler(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    capture_start(&cap);
    install_injector();
    const fault_case c = {"add_child_handler", setup_child, op_add_child, NULL,
                          child_reported_once, close_watcher, false};
    fx f = {.kind = kind};
    expect_fired("add calloc", drive(&c, &f, ENOMEM_SPEC(M_CALLOC)));
    switch (kind) {
    case EVPOL_WATCHER_THREADED:
        expect_fired("add thread", drive(&c, &f, SYS_SPEC(M_THREAD_CREATE, EAGAIN)));
        /* A refused stack size is retried with the default one. */
        expect_fired("add thread EINVAL", drive(&c, &f, TOLERATED(M_THREAD_CREATE, EINVAL)));
        break;
    case EVPOL_WATCHER_PIDFD:
        expect_fired("add pidfd_open", drive(&c, &f, SYS_SPEC(M_PIDFD_OPEN, EMFILE)));
        expect_fired("add libevent", drive(&c, &f, EVMEM_SPEC(0)));
        break;
    case EVPOL_WATCHER_MULTILOOP:
    case EVPOL_WATCHER_SAFE:
        /* The poll at registration retries EINTR. */
        expect_fired("add waitpid", drive(&c, &f, TOLERATED(M_WAITPID, EINTR)));
        break;
    default:
        break;
    }
    remove_injector();
    capture_stop();
}

/* ------------------------------------------------------------------ */
/* Faults after the point of no return                                 */
/* ------------------------------------------------------------------ */

/* Every waitpid the watcher makes after registration (on its threads, its
 * reader, its SIGCHLD handler) fails once with EINTR, in turn: the exit
 * status is never lost. */
static void test_waitpid_eintr_after_registration(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    install_injector();
    int fired_total = 0;
    for (int n = 1; n <= MAX_N; n++) {
        resource_snapshot before = resources_now();
        fx f = {.kind = kind};
        setup_child(&f);
        /* Armed first: a waiting thread calls waitpid at once. */
        arm_on(M_WAITPID, n, EINTR, true);
        assert_ok(op_add_child(&f, NULL));
        child_reported_once(&f);
        bool fired_now = disarm(M_WAITPID);
        close_watcher(&f);
        assert_no_leaks(before);
        if (!fired_now)
            break;
        fired_total++;
    }
    expect_fired("waitpid EINTR", fired_total);
    remove_injector();
}

/* CW-11: a waitpid that reports ECHILD after registration is a lost
 * status: returncode 255 and the warning, never silence. (The injected
 * ECHILD lies, so the child is still ours to reap afterwards.) */
static void test_waitpid_echild_reports_lost_status(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    capture_start(&cap);
    install_injector();
    resource_snapshot before = resources_now();
    fx f = {.kind = kind};
    setup_child(&f);
    /* The watcher's first waitpid for the child (the waiting thread's,
     * the reader's, or the poll at registration) reports ECHILD. */
    arm_on(M_WAITPID, 1, ECHILD, true);
    assert_ok(op_add_child(&f, NULL));
    release_child(f.wfd);
    if (!run_until_count(f.loop, (volatile int *)&f.res.calls, 1, 10000))
        fail_msg("the lost status was never reported");
    bool fired_now = disarm(M_WAITPID);
    assert_true(fired_now);
    assert_int_equal(atomic_load(&f.res.calls), 1);
    assert_int_equal(f.res.rc, 255);
    char needle[64];
    snprintf(needle, sizeof needle, "Unknown child process pid %ld", (long)f.pid);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, -1, needle), 1);
    /* The fault lied: the zombie is still there, ours to reap. */
    int status;
    assert_int_equal(waitpid(f.pid, &status, 0), f.pid);
    assert_int_equal(WEXITSTATUS(status), 7);
    close_watcher(&f);
    assert_no_leaks(before);
    remove_injector();
    capture_stop();
}

/* ------------------------------------------------------------------ */
/* Spawn                                                               */
/* ------------------------------------------------------------------ */

static char *const sh_argv[] = {"sh", "-c", "exit 3", NULL};

static void spawn_exit_cb(pid_t pid, int rc, void *arg)
{
    result *r = arg;
    r->pid = pid;
    r->rc = rc;
    atomic_fetch_add(&r->calls, 1);
}

static void setup_spawn(fx *f)
{
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
    open_loop(f);
    memset(&f->res, 0, sizeof f->res);
    f->opts = (evpol_spawn_options){.file = "/bin/sh",
                                    .argv = sh_argv,
                                    .cwd = "/",
                                    .stdio = {EVPOL_STDIO_PIPE, EVPOL_STDIO_PIPE,
                                              EVPOL_STDIO_DEVNULL},
                                    .on_exit = spawn_exit_cb,
                                    .arg = &f->res};
    if (f->kind == 0)
        return; /* the lazily created default policy and watcher */
    assert_ok(evpol_policy_new_with_watcher_kind(f->kind, &f->policy, NULL));
    assert_ok(evpol_set_event_loop_policy(f->policy, NULL));
    evpol_watcher *w = NULL;
    assert_ok(evpol_policy_get_child_watcher(f->policy, &w, NULL));
    assert_ok(evpol_policy_set_event_loop(f->policy, f->loop, NULL)); /* attaches */
}

static int op_spawn(fx *f, evpol_error *err)
{
    int rc = evpol_loop_spawn(f->loop, &f->opts, &f->sres, err);
    if (rc != 0) {
        /* Nothing handed to the caller. */
        assert_int_equal(f->sres.pid, -1);
        for (int i = 0; i < 3; i++)
            assert_int_equal(f->sres.stdio_fd[i], -1);
    }
    return rc;
}

static void assert_no_children(void)
{
    errno = 0;
    pid_t r = waitpid(-1, NULL, WNOHANG);
    if (r != -1 || errno != ECHILD) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "ps -o pid,ppid,stat,args --ppid %ld >&2", (long)getpid());
        if (system(cmd)) {}
    }
    assert_int_equal(r, -1);
    assert_int_equal(errno, ECHILD);
}

static void spawn_failed(fx *f)
{
    /* No exit callback for a spawn that failed, and no child. */
    assert_int_equal(atomic_load(&f->res.calls), 0);
    assert_no_children();
}

static void spawned_exits(fx *f)
{
    assert_true(f->sres.pid > 0);
    assert_true(f->sres.stdio_fd[0] >= 0 && f->sres.stdio_fd[1] >= 0);
    assert_int_equal(f->sres.stdio_fd[2], -1);
    close(f->sres.stdio_fd[0]);
    close(f->sres.stdio_fd[1]);
    if (!run_until_count(f->loop, (volatile int *)&f->res.calls, 1, 10000))
        fail_msg("on_exit never ran for pid %ld", (long)f->sres.pid);
    assert_int_equal(atomic_load(&f->res.calls), 1);
    assert_int_equal(f->res.pid, f->sres.pid);
    assert_int_equal(f->res.rc, 3);
}

static void teardown_spawn(fx *f)
{
    if (f->policy) {
        assert_ok(evpol_policy_set_child_watcher(f->policy, NULL, NULL));
        evpol_policy_unref(f->policy);
        f->policy = NULL;
    }
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
    close_loop(f);
}

static const fault_case case_spawn = {"evpol_loop_spawn", setup_spawn, op_spawn, spawn_failed,
                                      spawned_exits, teardown_spawn, true};

/* SUB-1, SUB-4: a spawn that fails leaves no process, no fd, no callback;
 * the retry spawns and the exit arrives once. */
static void test_spawn(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    capture_start(&cap);
    install_injector();
    fx f = {.kind = kind};
    expect_fired("spawn calloc", drive(&case_spawn, &f, ENOMEM_SPEC(M_CALLOC)));
    expect_fired("spawn pipe2", drive(&case_spawn, &f, SYS_SPEC(M_PIPE2, EMFILE)));
    expect_fired("spawn ENOMEM", drive(&case_spawn, &f, SYS_SPEC(M_SPAWN, ENOMEM)));
    expect_fired("spawn EAGAIN", drive(&case_spawn, &f, SYS_SPEC(M_SPAWN, EAGAIN)));
    expect_fired("spawn close", drive(&case_spawn, &f, TOLERATED(M_CLOSE, EIO)));
    switch (kind) {
    case EVPOL_WATCHER_THREADED:
        expect_fired("spawn thread", drive(&case_spawn, &f, SYS_SPEC(M_THREAD_CREATE, EAGAIN)));
        break;
    case EVPOL_WATCHER_PIDFD:
        expect_fired("spawn pidfd_open", drive(&case_spawn, &f, SYS_SPEC(M_PIDFD_OPEN, EMFILE)));
        expect_fired("spawn libevent", drive(&case_spawn, &f, EVMEM_SPEC(0)));
        break;
    default:
        break;
    }
    remove_injector();
    capture_stop();
}

/* POL-2, POL-14 through spawn: the default policy and its watcher, both
 * made lazily by the spawn itself. */
static void test_spawn_lazy_policy_and_watcher(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    fx f = {.kind = 0};
    expect_fired("lazy spawn calloc", drive(&case_spawn, &f, ENOMEM_SPEC(M_CALLOC)));
    remove_injector();
    capture_stop();
}

/* A registration failing after the process exists: spawn kills and reaps
 * it, also when kill reports an error or waitpid is interrupted. */
static int op_spawn_thread_fails(fx *f, evpol_error *err)
{
    arm(M_THREAD_CREATE, 1, EAGAIN);
    arm(M_KILL, 1, EPERM);
    arm_on(M_WAITPID, 1, EINTR, false);
    int rc = evpol_loop_spawn(f->loop, &f->opts, &f->sres, err);
    assert_true(atomic_load(&fired[M_KILL]));
    assert_true(atomic_load(&fired[M_WAITPID]));
    assert_true(disarm(M_THREAD_CREATE));
    return rc;
}

static void test_spawn_registration_fails_after_process(void **state)
{
    (void)state;
    capture_start(&cap);
    install_injector();
    resource_snapshot before = resources_now();
    fx f = {.kind = EVPOL_WATCHER_THREADED};
    setup_spawn(&f);
    evpol_error err = {0};
    memset(&f.sres, 0, sizeof f.sres);
    int rc = op_spawn_thread_fails(&f, &err);
    assert_int_equal(rc, EVPOL_ESYSTEM);
    assert_int_equal(err.sys_errno, EAGAIN);
    assert_true(err.message[0] != '\0');
    assert_int_equal(f.sres.pid, -1);
    spawn_failed(&f);
    assert_ok(op_spawn(&f, NULL));
    spawned_exits(&f);
    teardown_spawn(&f);
    assert_no_leaks(before);
    remove_injector();
    capture_stop();
}

/* ------------------------------------------------------------------ */
/* Close                                                               */
/* ------------------------------------------------------------------ */

/* MUL-4: close restores the saved SIGCHLD disposition. When the kernel
 * refuses the restore, close says so (ESYSTEM with the errno). */
static void test_multiloop_close_sigaction_fails(void **state)
{
    (void)state;
    struct sigaction orig;
    assert_int_equal(sigaction(SIGCHLD, NULL, &orig), 0);
    install_injector();
    resource_snapshot before = resources_now();
    /* The query failing: close still restores. */
    fx f = {.kind = EVPOL_WATCHER_MULTILOOP};
    setup_unattached(&f);
    assert_ok(evpol_watcher_attach_loop(f.w, f.loop, NULL));
    arm(M_SIGACTION, 1, EINVAL);
    assert_ok(evpol_watcher_close(f.w, NULL));
    assert_true(disarm(M_SIGACTION));
    struct sigaction now;
    assert_int_equal(sigaction(SIGCHLD, NULL, &now), 0);
    assert_ptr_equal((void *)now.sa_handler, (void *)orig.sa_handler);
    evpol_watcher_unref(f.w);
    close_loop(&f);
    /* The restore failing: an error with the errno. */
    setup_unattached(&f);
    assert_ok(evpol_watcher_attach_loop(f.w, f.loop, NULL));
    evpol_error err = {0};
    arm(M_SIGACTION, 2, EINVAL);
    assert_int_equal(evpol_watcher_close(f.w, &err), EVPOL_ESYSTEM);
    assert_true(disarm(M_SIGACTION));
    assert_int_equal(err.sys_errno, EINVAL);
    assert_true(err.message[0] != '\0');
    assert_int_equal(evpol_watcher_is_active(f.w), 0);
    evpol_watcher_unref(f.w);
    close_loop(&f);
    /* The watcher's handler stays installed (inert: it writes nowhere). */
    assert_int_equal(sigaction(SIGCHLD, &orig, NULL), 0);
    assert_no_leaks(before);
    remove_injector();
}

/* PFD-6, CW-8: a close that reports EIO still releases the fd. */
static void test_close_reports_eio(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
    install_injector();
    int fired_total = 0;
    for (int n = 1; n <= MAX_N; n++) {
        resource_snapshot before = resources_now();
        fx f = {.kind = kind};
        setup_child(&f);
        assert_ok(op_add_child(&f, NULL));
        arm_on(M_CLOSE, n, EIO, true);
        child_reported_once(&f);
        if (f.context)
            assert_ok(evpol_watcher_exit(f.w, NULL));
        f.context = false;
        assert_ok(evpol_watcher_close(f.w, NULL));
        bool fired_now = disarm(M_CLOSE);
        evpol_watcher_unref(f.w);
        close_loop(&f);
        assert_no_leaks(before);
        if (!fired_now)
            break;
        fired_total++;
    }
    if (kind == EVPOL_WATCHER_PIDFD || kind == EVPOL_WATCHER_MULTILOOP)
        expect_fired("close EIO", fired_total);
    remove_injector();
}

/* The pid table's growth failing is harmless: a fuller table is slower,
 * not wrong. */
static void test_childtab_grow_fails(void **state)
{
    (void)state;
    enum { NCHILD = 65 };
    install_injector();
    resource_snapshot before = resources_now();
    fx f = {.kind = EVPOL_WATCHER_SAFE};
    open_watcher(&f);
    static pid_t pids[NCHILD];
    static int wfds[NCHILD];
    atomic_int count = 0;
    for (int i = 0; i < NCHILD; i++) {
        pids[i] = spawn_waiting_child(&wfds[i], 0, 0);
        if (i == NCHILD - 1)
            arm(M_CALLOC, 2, ENOMEM); /* child record, then the bigger table */
        assert_ok(evpol_watcher_add_child_handler_on(f.w, f.loop, pids[i], on_exit_count,
                                                     &count, NULL));
    }
    assert_true(disarm(M_CALLOC));
    for (int i = 0; i < NCHILD; i++)
        release_child(wfds[i]);
    assert_true(run_until_count(f.loop, (volatile int *)&count, NCHILD, 10000));
    assert_int_equal(atomic_load(&count), NCHILD);
    close_watcher(&f);
    assert_no_leaks(before);
    remove_injector();
}

/* ------------------------------------------------------------------ */
/* libevent out of memory is ENOMEM                                    */
/* ------------------------------------------------------------------ */

/* The header lists ENOMEM for add_reader, add_signal_handler and
 * evpol_loop_new, and ENOTSUP for loop_new only when the backend is "not
 * available": libevent failing to allocate must be reported as ENOMEM.
 * Each call's result is recorded and everything released before the
 * checks, so that a failure here leaves nothing behind. */
static void test_libevent_oom_is_enomem(void **state)
{
    (void)state;
    install_injector();
    resource_snapshot before = resources_now();
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    evpol_error reader_err = {0}, signal_err = {0}, backend_err = {0};
    arm(M_EVMEM, 1, ENOMEM); /* event_new's allocation */
    int reader_rc = evpol_loop_add_reader(loop, fds[0], reader_cb, NULL, &reader_err);
    bool reader_fired = disarm(M_EVMEM);
    arm(M_EVMEM, 1, ENOMEM);
    int signal_rc = evpol_loop_add_signal_handler(loop, SIGUSR2, sig_cb, NULL, &signal_err);
    bool signal_fired = disarm(M_EVMEM);
    close(fds[0]);
    close(fds[1]);
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    /* An explicit backend: every allocation libevent makes while creating
     * the base fails in turn; the first error other than ENOMEM is kept. */
    int backend_rc = EVPOL_ENOMEM;
    for (int n = 1; n <= MAX_N; n++) {
        evpol_loop *l = NULL;
        evpol_error e = {0};
        arm(M_EVMEM, n, ENOMEM);
        int rc = evpol_loop_new(EVPOL_BACKEND_POLL, &l, &e);
        bool f = disarm(M_EVMEM);
        evpol_loop_unref(l);
        /* libevent survives some of its failed allocations (rc 0). */
        if (f && rc != 0 && rc != EVPOL_ENOMEM && backend_rc == EVPOL_ENOMEM) {
            backend_rc = rc;
            backend_err = e;
        }
        if (!f)
            break;
    }
    assert_no_leaks(before);
    remove_injector();
    assert_true(reader_fired && signal_fired);
    if (reader_rc != EVPOL_ENOMEM || signal_rc != EVPOL_ENOMEM || backend_rc != EVPOL_ENOMEM)
        fail_msg("libevent out of memory: add_reader %d (%s), add_signal_handler %d (%s), "
                 "evpol_loop_new(POLL) %d (%s); expected %d (out of memory) for each",
                 reader_rc, reader_err.message, signal_rc, signal_err.message, backend_rc,
                 backend_err.message, EVPOL_ENOMEM);
}


int main(void)
{
    /* Silences libevent's own warnings about the failures we cause. */
    event_set_log_callback(nop_libevent_log);
    /* Before this program's first libevent call (see the file comment). */
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    const harness_test tests[] = {
        CLAUSE_TEST(test_loop_new, "ERR-1 LOOP-1 POL-19 POL-20"),
        CLAUSE_TEST(test_loop_new_libevent_oom, "ERR-1 LOOP-1 POL-19 POL-20"),
        CLAUSE_TEST(test_loop_new_from_base, "ERR-1 LOOP-1"),
        CLAUSE_TEST(test_loop_calls, "ERR-1 LOOP-3"),
        CLAUSE_TEST(test_loop_handlers, "ERR-1 LOOP-4 LOOP-5"),
        CLAUSE_TEST(test_policy_new, "ERR-1 POL-7 POL-8 POL-19 POL-20"),
        CLAUSE_TEST(test_policy_new_with_backend_libevent_oom, "ERR-1 POL-20"),
        CLAUSE_TEST(test_policy_get_event_loop_lazy, "ERR-1 POL-9 POL-10"),
        CLAUSE_TEST(test_global_policy_lazy, "ERR-1 POL-2 POL-17"),
        CLAUSE_TEST(test_policy_set_event_loop, "ERR-1 POL-12 POL-16"),
        CLAUSE_TEST(test_policy_get_child_watcher_lazy, "ERR-1 POL-14"),
        CLAUSE_TEST(test_auto_watcher_falls_back, "PFD-4"),
        WATCHER_TESTS(test_watcher_new, W_ALL, "ERR-1 CW-6"),
        CLAUSE_TEST(test_watcher_new_custom, "ERR-1"),
        WATCHER_TESTS(test_attach_loop, W_MULTILOOP | W_SAFE | W_FAST,
            "ERR-1 CW-5 MUL-1@multiloop SAF-1@safe FST-3@fast"),
        WATCHER_TESTS(test_add_child_handler, W_ALL,
            "ERR-1 CW-1 THR-1@threaded MUL-2@multiloop SAF-6@safe CW-9@fast PFD-1@pidfd"),
        WATCHER_TESTS(test_waitpid_eintr_after_registration, W_ALL, "CW-1 CW-10"),
        WATCHER_TESTS(test_waitpid_echild_reports_lost_status, W_THREADED | W_MULTILOOP | W_SAFE | W_PIDFD,
            "CW-11"),
        WATCHER_TESTS(test_spawn, W_ALL, "ERR-1 SUB-1 SUB-4 CW-9"),
        CLAUSE_TEST(test_spawn_lazy_policy_and_watcher, "ERR-1 SUB-1 POL-2 POL-14"),
        CLAUSE_TEST(test_spawn_registration_fails_after_process, "ERR-1 SUB-1 THR-1"),
        CLAUSE_TEST(test_multiloop_close_sigaction_fails, "ERR-1 MUL-4"),
        WATCHER_TESTS(test_close_reports_eio, W_THREADED | W_MULTILOOP | W_PIDFD,
            "CW-8 PFD-6@pidfd"),
        CLAUSE_TEST(test_childtab_grow_fails, "CW-1 SAF-3"),
        CLAUSE_TEST(test_libevent_oom_is_enomem, "ERR-1 LOOP-1 LOOP-4 LOOP-5"),
    };
    return harness_run_group("faults", tests, NULL, NULL);
}
