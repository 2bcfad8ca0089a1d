/*
 * target_races.c — real threads racing on one watcher over the fake kernel.
 *
 * Where target_ops runs one step at a time, this lets threads collide: two
 * "owner" threads create children (inside a spawn context, as spawn does),
 * register, replace and remove handlers; a "kernel" thread ends children,
 * kills them, reaps them behind the watcher's back (ECHILD), delivers
 * SIGCHLD, injects EINTR and may close the watcher in the middle of it
 * all (its "yield" with an argument of 0xc0 or more), in the order the input gives and with
 * input-chosen yields in between; the main thread runs the loop the
 * callbacks are delivered on. The interleaving is the scheduler's, so the
 * checks are the invariants that hold for every interleaving:
 *
 *   - each registration (one add) is called at most once, for its own
 *     child, on the loop's thread (CW-1, CW-3);
 *   - a child's real status reaches at most one callback; a callback with
 *     the real status means nobody else reaped it (exactly-once, CW-11);
 *   - a handler whose remove returned 1 is never called (CW-4);
 *   - once every child has ended and a last SIGCHLD was handled, the latest
 *     registration of each child that was not removed has been called
 *     exactly once (Fast: only for a child registered once and not reaped
 *     elsewhere, its documented limits);
 *   - nothing is called after close returns (CW-8), nothing is left behind,
 *     also when the kernel thread closes the watcher in the middle of the
 *     race, with registrations and deliveries in flight;
 * and, under ASan and TSan, no memory error and no data race.
 *
 * Input: byte 0 picks the watcher (% 5) and the reap order; then each byte
 * is an operation, bits 7-6 choosing the thread (0: owner 1, 1: owner 2,
 * 2-3: kernel), bits 5-0 the operation, followed by its argument byte.
 * EVPOL_FUZZ_TRACE=1 prints what each run did.
 */
#include "fakeexec.h"
#include "fake_kernel.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OWNERS 2
#define PER_OWNER 4
#define NCHILD (OWNERS * PER_OWNER)
#define MAX_OPS 24
#define MAX_ADDS 128
#define MAX_CALLS 512
/* The kernel thread's "yield" with an argument from here on closes the
 * watcher instead. */
#define CLOSE_ARG 0xc0

typedef struct op {
    uint8_t code, arg;
} op;

typedef struct script {
    int n;
    op ops[MAX_OPS];
} script;

/* One add: its child and what became of it. */
typedef struct reg {
    int child;
    int owner;
} reg;

typedef struct call {
    int reg;
    pid_t pid;
    int rc;
    bool wrong_thread;
    bool after_close;
} call;

static struct {
    int kind;
    script own[OWNERS], kern;
    pthread_t main;
    /* children */
    pid_t pid[NCHILD];
    atomic_int published[NCHILD]; /* index into pid[], in publish order */
    atomic_int npublished;
    /* what the kernel thread did to each child */
    atomic_int ended_rc[NCHILD];   /* returncode it ended with; INT32_MIN: not yet */
    atomic_bool reaped_elsewhere[NCHILD];
    /* registrations, by id (the callback's arg) */
    atomic_int nregs;
    reg regs[MAX_ADDS];
    int reg_ids[MAX_ADDS];
    /* owner's view of each child (only its owner writes it) */
    int latest[NCHILD];     /* latest add that returned 0, or -1 */
    bool removed[NCHILD];   /* remove returned 1 after it */
    int nadds[NCHILD];
    bool removed_reg[MAX_ADDS]; /* remove returned 1 while this add was latest */
    /* callbacks */
    atomic_int ncalls;
    call calls[MAX_CALLS];
    atomic_bool closed;
    atomic_bool closed_early; /* by the kernel thread, during the race */
    /* loop control */
    atomic_int running_workers;
    /* The worker threads live as long as the process: creating three
     * threads per input cost more than the input itself (under ASan and
     * TSan a thread's start and end map and unmap its shadow). Each input
     * releases them through `start` and takes them back through `finish`. */
    pthread_barrier_t start, finish;
} R;

static void on_child(pid_t pid, int rc, void *arg)
{
    int id = *(const int *)arg;
    int i = atomic_fetch_add(&R.ncalls, 1);
    if (i >= MAX_CALLS)
        return;
    R.calls[i].reg = id;
    R.calls[i].pid = pid;
    R.calls[i].rc = rc;
    R.calls[i].wrong_thread = !pthread_equal(pthread_self(), R.main);
    R.calls[i].after_close = atomic_load(&R.closed);
}

static void yield_n(int n)
{
    for (int i = 0; i < n; i++)
        sched_yield();
}

static int new_reg(int child, int owner)
{
    int id = atomic_fetch_add(&R.nregs, 1);
    if (id >= MAX_ADDS)
        return -1;
    R.regs[id].child = child;
    R.regs[id].owner = owner;
    R.reg_ids[id] = id;
    return id;
}

static void add_handler(int owner, int c)
{
    evpol_watcher *w = fx_watcher();
    int id = new_reg(c, owner);
    if (id < 0)
        return;
    evpol_watcher_enter(w, NULL);
    int rc = evpol_watcher_add_child_handler_on(w, fx_loop(0), R.pid[c], on_child,
                                                &R.reg_ids[id], NULL);
    evpol_watcher_exit(w, NULL);
    if (rc == 0) {
        R.latest[c] = id;
        R.removed[c] = false;
        R.nadds[c]++;
    }
}

static void worker_done(void *arg)
{
    (void)arg;
    if (atomic_fetch_sub(&R.running_workers, 1) == 1)
        evpol_loop_stop(fx_loop(0), NULL);
}

static void run_owner(int o)
{
    evpol_watcher *w = fx_watcher();
    int made = 0;
    for (int i = 0; i < R.own[o].n; i++) {
        op x = R.own[o].ops[i];
        switch (x.code % 4) {
        case 0: { /* spawn: context, process, registration */
            if (made >= PER_OWNER)
                break;
            int c = o * PER_OWNER + made++;
            evpol_watcher_enter(w, NULL);
            R.pid[c] = fk_new_child();
            R.latest[c] = -1;
            int k = atomic_fetch_add(&R.npublished, 1);
            atomic_store(&R.published[k], c);
            yield_n(x.arg % 3);
            add_handler(o, c);
            evpol_watcher_exit(w, NULL);
            break;
        }
        case 1: /* replace */
            if (made)
                add_handler(o, o * PER_OWNER + x.arg % made);
            break;
        case 2: { /* remove */
            if (!made)
                break;
            int c = o * PER_OWNER + x.arg % made;
            int r = evpol_watcher_remove_child_handler(w, R.pid[c], NULL);
            if (r == 1 && R.latest[c] >= 0) {
                R.removed[c] = true;
                R.removed_reg[R.latest[c]] = true;
            }
            break;
        }
        default:
            yield_n(x.arg % 8);
            break;
        }
    }
}

/* Close while the owners register and deliveries are in flight, on the
 * loop's thread (where Safe and Fast must be closed): from its return on,
 * nothing may be called, although deliveries may be queued behind it. */
static void close_now(void *arg)
{
    (void)arg;
    if (evpol_watcher_close(fx_watcher(), NULL) == 0) {
        atomic_store(&R.closed, true);
        atomic_store(&R.closed_early, true);
    }
}

static int pick_child(uint8_t sel)
{
    int n = atomic_load(&R.npublished);
    if (!n)
        return -1;
    return atomic_load(&R.published[sel % n]);
}

static const int kill_sigs[4] = {SIGTERM, SIGKILL, SIGINT, SIGUSR1};

static void run_kernel(void)
{
    for (int i = 0; i < R.kern.n; i++) {
        op x = R.kern.ops[i];
        int c;
        switch (x.code % 6) {
        case 0: /* exit */
            /* never 255: that is the returncode of a lost status */
            if ((c = pick_child(x.arg)) >= 0 && fk_exit(R.pid[c], x.arg % 200) == 0)
                atomic_store(&R.ended_rc[c], x.arg % 200);
            break;
        case 1: /* killed by a signal */
            if ((c = pick_child(x.arg)) >= 0) {
                int sig = kill_sigs[x.arg % 4];
                if (fk_kill_by_signal(R.pid[c], sig) == 0)
                    atomic_store(&R.ended_rc[c], -sig);
            }
            break;
        case 2: /* reaped by someone else */
            if ((c = pick_child(x.arg)) >= 0 && fk_reap_elsewhere(R.pid[c]) == 0)
                atomic_store(&R.reaped_elsewhere[c], true);
            break;
        case 3:
            fk_deliver_sigchld(FK_SIG_BOTH);
            break;
        case 4:
            if (x.arg & 1)
                fk_inject_eintr(1 + x.arg % 3);
            else
                fk_inject_eintr_blocking(1 + x.arg % 3);
            break;
        default:
            if (x.arg >= CLOSE_ARG) {
                evpol_loop_call_soon_threadsafe(fx_loop(0), close_now, NULL, NULL);
                break;
            }
            yield_n(x.arg % 8);
            break;
        }
    }
}

/* Worker 0 and 1 are the owners, worker OWNERS the kernel. */
static void *worker_main(void *p)
{
    int id = (int)(intptr_t)p;
    for (;;) {
        pthread_barrier_wait(&R.start);
        if (id < OWNERS)
            run_owner(id);
        else
            run_kernel();
        evpol_loop_call_soon_threadsafe(fx_loop(0), worker_done, NULL, NULL);
        pthread_barrier_wait(&R.finish);
    }
    return NULL;
}

static void start_workers(void)
{
    static bool started;
    if (started)
        return;
    pthread_barrier_init(&R.start, NULL, OWNERS + 2);
    pthread_barrier_init(&R.finish, NULL, OWNERS + 2);
    for (int t = 0; t <= OWNERS; t++) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker_main, (void *)(intptr_t)t) != 0) {
            fprintf(stderr, "evpol fuzz (races): cannot start the worker threads\n");
            abort();
        }
        pthread_detach(th);
    }
    started = true;
}

static void decode(const uint8_t *d, size_t n)
{
    memset(&R.own, 0, sizeof R.own);
    memset(&R.kern, 0, sizeof R.kern);
    uint8_t b0 = n ? d[0] : 0;
    R.kind = b0 % 5;
    fk_set_reap_order((fk_order)((b0 / 5) % 3));
    for (size_t i = 1; i < n; i += 2) {
        uint8_t b = d[i], arg = i + 1 < n ? d[i + 1] : 0;
        script *s = (b >> 6) == 0 ? &R.own[0] : (b >> 6) == 1 ? &R.own[1] : &R.kern;
        if (s->n < MAX_OPS)
            s->ops[s->n++] = (op){(uint8_t)(b & 0x3f), arg};
    }
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    static const char *const names[3] = {"owner 1", "owner 2", "kernel"};
    static const char *const oname[4] = {"spawn+add", "replace", "remove", "yield"};
    static const char *const kname[6] = {"exit", "kill", "reap-elsewhere", "sigchld", "eintr",
                                         "yield"};
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\n==== evpol fuzz (races): %s watcher ====\n", fz_kind_name(R.kind));
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nscripts:\n");
    for (int t = 0; t < 3; t++) {
        const script *s = t < 2 ? &R.own[t] : &R.kern;
        fprintf(stderr, "  %s:", names[t]);
        for (int i = 0; i < s->n; i++)
            fprintf(stderr, " %s(%d)",
                    t < 2                                              ? oname[s->ops[i].code % 4]
                    : s->ops[i].code % 6 == 5 && s->ops[i].arg >= CLOSE_ARG ? "close"
                                                                       : kname[s->ops[i].code % 6],
                    s->ops[i].arg);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "children:\n");
    int np = atomic_load(&R.npublished);
    for (int k = 0; k < np; k++) {
        int c = atomic_load(&R.published[k]);
        int rc = atomic_load(&R.ended_rc[c]);
        fprintf(stderr, "  C%d pid %ld: ended rc %d%s, %d add(s), latest reg %d%s\n", c,
                (long)R.pid[c], rc, atomic_load(&R.reaped_elsewhere[c]) ? ", reaped elsewhere" : "",
                R.nadds[c], R.latest[c], R.removed[c] ? " (removed)" : "");
    }
    int nc = atomic_load(&R.ncalls);
    fprintf(stderr, "callbacks:\n");
    for (int i = 0; i < nc && i < MAX_CALLS; i++)
        fprintf(stderr, "  reg %d (C%d) pid %ld rc %d%s%s\n", R.calls[i].reg,
                R.regs[R.calls[i].reg].child, (long)R.calls[i].pid, R.calls[i].rc,
                R.calls[i].wrong_thread ? " NOT ON THE LOOP'S THREAD" : "",
                R.calls[i].after_close ? " AFTER CLOSE" : "");
    abort();
}

static void check(void)
{
    int nc = atomic_load(&R.ncalls);
    if (nc > MAX_CALLS)
        fail("more than %d callbacks", MAX_CALLS);
    int nregs = atomic_load(&R.nregs);
    int per_reg[MAX_ADDS] = {0};
    int real_status[NCHILD] = {0};
    for (int i = 0; i < nc; i++) {
        const call *k = &R.calls[i];
        if (k->reg < 0 || k->reg >= nregs)
            fail("callback with an unknown registration %d", k->reg);
        int c = R.regs[k->reg].child;
        if (k->after_close)
            fail("reg %d (C%d) called after close returned (CW-8)", k->reg, c);
        if (k->wrong_thread)
            fail("reg %d (C%d) called outside the loop's thread (CW-3)", k->reg, c);
        if (k->pid != R.pid[c])
            fail("reg %d for C%d called with pid %ld (CW-1)", k->reg, c, (long)k->pid);
        if (++per_reg[k->reg] > 1)
            fail("reg %d (C%d) called twice", k->reg, c);
        if (R.removed_reg[k->reg])
            fail("reg %d (C%d) called although remove_child_handler returned 1 (CW-4)", k->reg,
                 c);
        int ended = atomic_load(&R.ended_rc[c]);
        if (k->rc != 255) { /* the real status (255: lost, CW-11) */
            if (k->rc != ended)
                fail("reg %d (C%d) got returncode %d, the child ended with %d", k->reg, c, k->rc,
                     ended);
            if (atomic_load(&R.reaped_elsewhere[c]))
                fail("reg %d (C%d) got the real status although someone else reaped the child",
                     k->reg, c);
            if (++real_status[c] > 1)
                fail("the status of C%d reached two callbacks (exactly once)", c);
        }
    }
    /* A watcher closed during the race owes nothing more (CW-8 drops
     * what was pending); the checks above still hold. */
    if (atomic_load(&R.closed_early))
        return;
    int np = atomic_load(&R.npublished);
    for (int k = 0; k < np; k++) {
        int c = atomic_load(&R.published[k]);
        int id = R.latest[c];
        if (id < 0 || R.removed[c])
            continue;
        bool reaped = atomic_load(&R.reaped_elsewhere[c]);
        if (R.kind == FZ_FAST && (reaped || R.nadds[c] > 1))
            continue; /* Fast cannot see those: its documented limits */
        if (per_reg[id] != 1)
            fail("C%d ended, its latest handler (reg %d) was called %d times, expected once",
                 c, id, per_reg[id]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&R.pid, 0, sizeof R.pid);
    memset(R.removed_reg, 0, sizeof R.removed_reg);
    memset(R.nadds, 0, sizeof R.nadds);
    memset(R.removed, 0, sizeof R.removed);
    for (int c = 0; c < NCHILD; c++) {
        atomic_store(&R.ended_rc[c], INT32_MIN);
        atomic_store(&R.reaped_elsewhere[c], false);
        R.latest[c] = -1;
    }
    atomic_store(&R.npublished, 0);
    atomic_store(&R.nregs, 0);
    atomic_store(&R.ncalls, 0);
    atomic_store(&R.closed, false);
    atomic_store(&R.closed_early, false);
    R.main = pthread_self();

    char err[2048];
    uint8_t b0 = size ? data[0] : 0;
    if (fx_begin(b0 % 5, false, err, sizeof err) != 0) {
        fprintf(stderr, "evpol fuzz (races): %s\n", err);
        abort();
    }
    decode(data, size);
    fx_quiet(true);
    evpol_watcher *w = fx_watcher();
    if (R.kind != FZ_THREADED && R.kind != FZ_PIDFD &&
        evpol_watcher_attach_loop(w, fx_loop(0), NULL) != 0)
        fail("attach_loop failed");

    start_workers();
    atomic_store(&R.running_workers, OWNERS + 1);
    pthread_barrier_wait(&R.start);
    /* Deliveries run here while the workers race. */
    evpol_loop_run(fx_loop(0), NULL);
    pthread_barrier_wait(&R.finish);

    /* Every child ends; one more SIGCHLD; everything is delivered. */
    int np = atomic_load(&R.npublished);
    for (int k = 0; k < np; k++) {
        int c = atomic_load(&R.published[k]);
        if (fk_exit(R.pid[c], 0) == 0)
            atomic_store(&R.ended_rc[c], 0);
    }
    fx_sigchld_and_settle();
    check();
    if (getenv("EVPOL_FUZZ_TRACE")) {
        fprintf(stderr, "races: %s: %d registration(s), %d callback(s):", fz_kind_name(R.kind),
                atomic_load(&R.nregs), atomic_load(&R.ncalls));
        for (int i = 0; i < atomic_load(&R.ncalls) && i < MAX_CALLS; i++)
            fprintf(stderr, " reg%d/C%d:rc=%d", R.calls[i].reg, R.regs[R.calls[i].reg].child,
                    R.calls[i].rc);
        fprintf(stderr, "\n");
    }

    /* CW-8: after close, nothing is called, even for new exits. */
    evpol_watcher_close(w, NULL);
    atomic_store(&R.closed, true);
    fx_sigchld_and_settle();
    int nc = atomic_load(&R.ncalls);
    for (int i = 0; i < nc && i < MAX_CALLS; i++)
        if (R.calls[i].after_close)
            fail("reg %d called after close returned (CW-8)", R.calls[i].reg);
    if (fx_end(err, sizeof err) != 0)
        fail("after close, the watcher left something behind:\n%s", err);
    fx_quiet(false);
    return 0;
}
