/*
 * fakeexec.c — real watchers on the fake kernel, one step at a time (see
 * fakeexec.h for the world and how each watcher is waited for).
 */
#include "fakeexec.h"

#include "fake_kernel.h"
#include "pool.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- wrapped library calls (see fakeexec.h) ---- */

int __real_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout);
int __real_evpol_loop_add_signal_handler(evpol_loop *loop, int signum, evpol_signal_fn fn,
                                         void *arg, evpol_error *err);
int __wrap_evpol_loop_add_signal_handler(evpol_loop *loop, int signum, evpol_signal_fn fn,
                                         void *arg, evpol_error *err);
int __real_evpol_loop_remove_signal_handler(evpol_loop *loop, int signum, evpol_error *err);
int __wrap_evpol_loop_remove_signal_handler(evpol_loop *loop, int signum, evpol_error *err);

/* MultiLoop's reaper: threads made through the seam while a MultiLoop
 * world runs. `ml.lock` orders our SIGCHLD deliveries (which write to its
 * pipe) against the reaper's look at the pipe before it blocks, so that
 * "blocked and not kicked since" means "finished with every SIGCHLD". */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int alive;
    bool blocked;
    bool kicked;
} ml = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false};

static _Thread_local bool tls_seam_thread;

int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (!tls_seam_thread || n != 1 || timeout >= 0)
        return __real_poll(fds, n, timeout);
    pthread_mutex_lock(&ml.lock);
    int r = __real_poll(fds, 1, 0);
    if (r != 0) {
        pthread_mutex_unlock(&ml.lock);
        return r;
    }
    ml.blocked = true;
    ml.kicked = false;
    pthread_cond_broadcast(&ml.cond);
    pthread_mutex_unlock(&ml.lock);
    r = __real_poll(fds, 1, -1);
    int e = errno;
    pthread_mutex_lock(&ml.lock);
    ml.blocked = false;
    pthread_mutex_unlock(&ml.lock);
    errno = e;
    return r;
}

/* Posts to each loop from the library's other files (deliveries, spawn's
 * exit forwarding), so that settle() knows which loop has work. */
struct evpol__post;
int __real_evpol__loop_post(evpol_loop *loop, struct evpol__post *node, evpol_error *err);
int __wrap_evpol__loop_post(evpol_loop *loop, struct evpol__post *node, evpol_error *err);

static atomic_ulong posts[FZ_NLOOPS];
static evpol_loop *_Atomic post_loops[FZ_NLOOPS];
#define FX_MAX_PASSES 16

int __wrap_evpol__loop_post(evpol_loop *loop, struct evpol__post *node, evpol_error *err)
{
    int rc = __real_evpol__loop_post(loop, node, err);
    for (int l = 0; l < FZ_NLOOPS; l++)
        if (loop == atomic_load(&post_loops[l]))
            atomic_fetch_add(&posts[l], 1);
    return rc;
}

/* Safe and Fast: the SIGCHLD handler on a loop, counted when it returns. */
typedef struct sig_slot {
    bool used;
    evpol_loop *loop;
    evpol_signal_fn fn;
    void *arg;
    atomic_ulong rounds;
} sig_slot;

#define NSLOTS 4
static sig_slot slots[NSLOTS];

static void sig_tramp(int signum, void *p)
{
    sig_slot *s = p;
    s->fn(signum, s->arg);
    atomic_fetch_add(&s->rounds, 1);
}

int __wrap_evpol_loop_add_signal_handler(evpol_loop *loop, int signum, evpol_signal_fn fn,
                                         void *arg, evpol_error *err)
{
    if (signum != SIGCHLD)
        return __real_evpol_loop_add_signal_handler(loop, signum, fn, arg, err);
    sig_slot *s = NULL;
    for (int i = 0; i < NSLOTS && !s; i++)
        if (slots[i].loop == loop)
            s = &slots[i];
    for (int i = 0; i < NSLOTS && !s; i++)
        if (!slots[i].loop)
            s = &slots[i];
    if (!s) /* more loops than a world has: not ours to count */
        return __real_evpol_loop_add_signal_handler(loop, signum, fn, arg, err);
    bool was_used = s->used;
    evpol_signal_fn old_fn = s->fn;
    void *old_arg = s->arg;
    s->loop = loop;
    s->fn = fn;
    s->arg = arg;
    int rc = __real_evpol_loop_add_signal_handler(loop, signum, sig_tramp, s, err);
    if (rc < 0) {
        s->fn = old_fn;
        s->arg = old_arg;
        s->used = was_used;
    } else {
        s->used = true;
    }
    return rc;
}

int __wrap_evpol_loop_remove_signal_handler(evpol_loop *loop, int signum, evpol_error *err)
{
    int rc = __real_evpol_loop_remove_signal_handler(loop, signum, err);
    if (signum == SIGCHLD && rc == 1)
        for (int i = 0; i < NSLOTS; i++)
            if (slots[i].loop == loop)
                slots[i].used = false;
    return rc;
}

/* ---- the world ---- */

static void outside_handler(int sig)
{
    (void)sig;
}

static struct {
    bool live;
    int kind;
    bool auto_sigchld;
    pthread_t main;
    evpol_loop *loop[FZ_NLOOPS];
    bool loop_closed[FZ_NLOOPS];
    evpol_watcher *w;
    int nchildren;
    pid_t pid[FZ_MAX_CHILDREN];
    int end_status[FZ_MAX_CHILDREN];
    scn_release release[FZ_MAX_CHILDREN];
    struct sigaction start_act; /* the fake's SIGCHLD action at the start */
    struct sigaction real_start; /* the real one */
    /* events go to `cur` while a step runs, else to `stray` */
    pthread_mutex_t lock;
    fz_outcome *cur;
    fz_outcome stray;
    /* spawn: the status the next spawned child exits with before spawn
     * returns (before its registration), or -1 */
    int spawn_exit_status;
    /* Safe/Fast: a SIGCHLD round to wait for */
    sig_slot *wait_slot;
    unsigned long wait_before;
    bool hung;
    char hang_what[160];
} G = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const int handler_ids[SCN_MAX_HANDLERS] = {0, 1, 2, 3, 4, 5, 6, 7};

evpol_watcher *fx_watcher(void)
{
    return G.w;
}

evpol_loop *fx_loop(int index)
{
    return index >= 0 && index < FZ_NLOOPS ? G.loop[index] : NULL;
}

pid_t fx_pid(int child)
{
    return child >= 0 && child < G.nchildren ? G.pid[child] : FK_PID_BASE + 4000 + child;
}

void fx_set_pid(int child, pid_t pid)
{
    if (child < 0 || child >= FZ_MAX_CHILDREN)
        return;
    G.pid[child] = pid;
    if (child + 1 > G.nchildren)
        G.nchildren = child + 1;
}

int fx_child_of(pid_t pid)
{
    for (int c = 0; c < G.nchildren; c++)
        if (G.pid[c] == pid)
            return c;
    return -100; /* never a child index: fails every comparison */
}

static void record(const fz_event *e)
{
    pthread_mutex_lock(&G.lock);
    fz_outcome_add(G.cur ? G.cur : &G.stray, e);
    pthread_mutex_unlock(&G.lock);
}

static void on_child(pid_t pid, int rc, void *arg)
{
    fz_event e;
    memset(&e, 0, sizeof e);
    e.type = FZ_EV_CALLBACK;
    e.child = fx_child_of(pid);
    e.rc = rc;
    e.handler = *(const int *)arg;
    evpol_loop *running = NULL;
    evpol_get_running_loop(&running, NULL);
    e.loop = FZ_LOOP_NONE;
    for (int l = 0; l < FZ_NLOOPS; l++)
        if (running && running == G.loop[l])
            e.loop = l;
    if (running && e.loop == FZ_LOOP_NONE)
        e.loop = 99;
    /* CW-3: every loop of this world runs on the main thread. */
    e.wrong_thread = !pthread_equal(pthread_self(), G.main);
    record(&e);
}

static atomic_bool quiet;

void fx_quiet(bool on)
{
    atomic_store(&quiet, on);
}

static void warn_event(fz_warning w, int child, int rc, const char *text)
{
    if (w != FZ_W_OTHER && atomic_load(&quiet))
        return;
    fz_event e;
    memset(&e, 0, sizeof e);
    e.type = FZ_EV_WARNING;
    e.warning = w;
    e.child = child;
    e.rc = rc;
    if (text)
        snprintf(e.text, sizeof e.text, "%s", text);
    record(&e);
}

/* Turn a log line into events (model.h names the lines). */
static void on_log(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    (void)arg;
    if (level < EVPOL_LOG_WARNING || cat == EVPOL_LOG_CAT_DEPRECATION || cat == EVPOL_LOG_CAT_DEBUG)
        return;
    long pid;
    int rc;
    const char *p;
    if (sscanf(msg, "Unknown child process pid %ld, will report returncode 255", &pid) == 1) {
        warn_event(FZ_W_UNKNOWN_CHILD, fx_child_of((pid_t)pid), 0, NULL);
    } else if ((p = strstr(msg, " that handles pid ")) && strncmp(msg, "Loop ", 5) == 0 &&
               sscanf(p, " that handles pid %ld is closed", &pid) == 1) {
        warn_event(FZ_W_LOOP_CLOSED, fx_child_of((pid_t)pid), 0, NULL);
    } else if (strstr(msg, "A loop is being detached from a child watcher with pending handlers")) {
        warn_event(FZ_W_DETACH_PENDING, -1, 0, NULL);
    } else if (sscanf(msg, "Caught subprocess termination from unknown pid: %ld -> %d", &pid,
                      &rc) == 2) {
        warn_event(FZ_W_FAST_UNKNOWN_PID, fx_child_of((pid_t)pid), rc, NULL);
    } else if ((p = strstr(msg, "Caught subprocesses termination from unknown pids: {"))) {
        p = strchr(p, '{') + 1;
        int n = 0;
        while (sscanf(p, "%ld: %d%n", &pid, &rc, &n) == 2) {
            warn_event(FZ_W_FAST_DROPPED, fx_child_of((pid_t)pid), rc, NULL);
            p += n;
            if (strncmp(p, ", ", 2) != 0)
                break;
            p += 2;
        }
        if (*p != '}')
            warn_event(FZ_W_OTHER, -1, 0, msg);
    } else if (strstr(msg, "is neither an exit nor a death by signal")) {
        /* A status like 0x7f (signal "127"): the returncode 255 it comes
         * with is what the model checks; the line itself is the
         * conformance suite's (unknown_status). */
    } else if (strstr(msg, "SIGCHLD handler was changed by outside code")) {
        warn_event(FZ_W_SIGCHLD_CHANGED, -1, 0, NULL);
    } else if (strstr(msg, "Previous SIGCHLD handler was set by non-evpol code")) {
        warn_event(FZ_W_FOREIGN_HANDLER, -1, 0, NULL);
    } else if (cat == EVPOL_LOG_CAT_RESOURCE && strstr(msg, "pending")) {
        warn_event(FZ_W_CLOSE_PENDING, -1, 0, NULL);
    } else {
        warn_event(FZ_W_OTHER, -1, 0, msg);
    }
}

/* ---- threads through the seam ---- */

typedef struct tpack {
    void *(*fn)(void *);
    void *arg;
    bool counted;
} tpack;

static void *tramp(void *p)
{
    tpack t = *(tpack *)p;
    free(p);
    tls_seam_thread = true;
    void *r = t.fn(t.arg);
    if (t.counted) {
        pthread_mutex_lock(&ml.lock);
        ml.alive--;
        pthread_cond_broadcast(&ml.cond);
        pthread_mutex_unlock(&ml.lock);
    }
    return r;
}

static int seam_thread_create(pthread_t *thread, size_t stack, void *(*fn)(void *), void *arg)
{
    tpack *t = malloc(sizeof *t);
    if (!t)
        return EAGAIN;
    t->fn = fn;
    t->arg = arg;
    t->counted = G.kind == FZ_MULTILOOP;
    if (t->counted) {
        pthread_mutex_lock(&ml.lock);
        ml.alive++;
        ml.blocked = false;
        pthread_mutex_unlock(&ml.lock);
    }
    int rc = fk_sys()->thread_create(thread, stack, tramp, t);
    if (rc != 0) {
        if (t->counted) {
            pthread_mutex_lock(&ml.lock);
            ml.alive--;
            pthread_cond_broadcast(&ml.cond);
            pthread_mutex_unlock(&ml.lock);
        }
        free(t);
    }
    return rc;
}


/* spawn: the fake kernel's, and the child may end before spawn returns. */
static int seam_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    int rc = fk_sys()->spawn(pid, req);
    if (rc == 0 && G.spawn_exit_status >= 0)
        fk_exit_status(*pid, G.spawn_exit_status);
    G.spawn_exit_status = -1;
    return rc;
}

/* ---- time, for hang guards only ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hang(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void hang(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(G.hang_what, sizeof G.hang_what, fmt, ap);
    va_end(ap);
    G.hung = true;
    char line[200];
    snprintf(line, sizeof line, "HANG: %s (no progress in %d ms)", G.hang_what, FX_HANG_GUARD_MS);
    warn_event(FZ_W_OTHER, -1, 0, line);
}

/* ---- running loops ---- */

typedef bool (*pred_fn)(void *arg);

typedef struct runctx {
    evpol_loop *loop;
    pred_fn pred;
    void *arg;
    bool yield;
    bool done;
    long long deadline;
    unsigned ticks;
} runctx;

static void tick(void *p)
{
    runctx *r = p;
    if (r->pred(r->arg)) {
        r->done = true;
        evpol_loop_stop(r->loop, NULL);
        return;
    }
    if ((++r->ticks & 63) == 0 && now_ms() > r->deadline) {
        evpol_loop_stop(r->loop, NULL);
        return;
    }
    if (r->yield)
        sched_yield();
    if (evpol_loop_call_soon_threadsafe(r->loop, tick, r, NULL) != 0)
        evpol_loop_stop(r->loop, NULL);
}

/* Run `loop` until pred holds (checked between the loop's callbacks). */
static bool run_until(int l, pred_fn pred, void *arg, bool yield)
{
    runctx r = {G.loop[l], pred, arg, yield, false, now_ms() + FX_HANG_GUARD_MS, 0};
    if (G.loop_closed[l] || evpol_loop_call_soon_threadsafe(G.loop[l], tick, &r, NULL) != 0)
        return false;
    evpol_loop_run(G.loop[l], NULL);
    return r.done;
}

typedef struct marker {
    int l;
    int reposts;
    bool done;
} marker;

static void mark(void *p)
{
    marker *m = p;
    /* Events the loop's last poll found ready and that have not run yet
     * (readers, signals) are still active: go behind them, so that one
     * run of the loop leaves nothing ready behind. */
    if (event_base_get_num_events(evpol_loop_base(G.loop[m->l]), EVENT_BASE_COUNT_ACTIVE) > 0 &&
        ++m->reposts < FX_MAX_PASSES &&
        evpol_loop_call_soon_threadsafe(G.loop[m->l], mark, m, NULL) == 0)
        return;
    /* SAF-2 and the like: what is_active says while this loop runs. */
    if (G.cur)
        G.cur->active_in[m->l] = evpol_watcher_is_active(G.w);
    m->done = true;
    evpol_loop_stop(G.loop[m->l], NULL);
}

/* Run everything posted to loop l so far, and every event of it that is
 * ready. */
static void flush(int l)
{
    if (G.loop_closed[l])
        return;
    marker m = {l, 0, false};
    if (evpol_loop_call_soon_threadsafe(G.loop[l], mark, &m, NULL) != 0)
        return;
    evpol_loop_run(G.loop[l], NULL);
}

/* ---- settling ---- */

static bool slot_round_done(void *arg)
{
    (void)arg;
    return atomic_load(&G.wait_slot->rounds) > G.wait_before;
}

static void settle(void)
{
    switch (G.kind) {
    case FZ_THREADED:
        /* every waiting thread has looked at the latest state */
        if (!fk_wait_settled(FX_HANG_GUARD_MS))
            hang("ThreadedChildWatcher: a waiting thread neither blocks nor ends");
        break;
    case FZ_MULTILOOP: {
        /* Every change of the condition broadcasts ml.cond (the poll
         * wrapper when the reaper blocks, a reaper's end), so this sleeps
         * until the event itself; the deadline is only the hang guard. */
        struct timespec guard;
        clock_gettime(CLOCK_REALTIME, &guard);
        guard.tv_sec += FX_HANG_GUARD_MS / 1000;
        pthread_mutex_lock(&ml.lock);
        while (ml.alive > 0 && !(ml.blocked && !ml.kicked)) {
            if (pthread_cond_timedwait(&ml.cond, &ml.lock, &guard) == ETIMEDOUT) {
                pthread_mutex_unlock(&ml.lock);
                hang("MultiLoopChildWatcher: the reaper never went back to poll() on its pipe");
                pthread_mutex_lock(&ml.lock);
                break;
            }
        }
        pthread_mutex_unlock(&ml.lock);
        break;
    }
    case FZ_SAFE:
    case FZ_FAST:
        if (G.wait_slot) {
            int l = -1;
            for (int i = 0; i < FZ_NLOOPS; i++)
                if (G.loop[i] == G.wait_slot->loop)
                    l = i;
            if (l >= 0 && !G.loop_closed[l] && !run_until(l, slot_round_done, NULL, false))
                hang("%s: its SIGCHLD handler on L%d never ran", fz_kind_name(G.kind), l);
            G.wait_slot = NULL;
        }
        break;
    default:
        break;
    }
    /* Readers fire, deliveries posted from one loop to another run. After
     * the first pass nothing new can reach a loop except through a post
     * (every waiting thread and reaper has settled, no fd becomes ready
     * while loops run, flush leaves no ready event behind), so a loop runs
     * again only when something was posted to it since it last ran; a run
     * of one loop can post to the other, hence the passes. */
    unsigned long seen[FZ_NLOOPS];
    for (int l = 0; l < FZ_NLOOPS; l++) {
        seen[l] = atomic_load(&posts[l]);
        flush(l);
    }
    for (int pass = 0; pass < FX_MAX_PASSES; pass++) {
        bool ran = false;
        for (int l = 0; l < FZ_NLOOPS; l++) {
            unsigned long now = atomic_load(&posts[l]);
            if (now != seen[l]) {
                seen[l] = now;
                flush(l);
                ran = true;
            }
        }
        if (!ran)
            return;
    }
    hang("deliveries keep posting to the loops after %d passes", FX_MAX_PASSES);
}

static void deliver_sigchld(void)
{
    struct sigaction act;
    bool is_fn = fk_sigchld_action(&act);
    bool watchers = is_fn && !(act.sa_flags & SA_SIGINFO) && act.sa_handler != outside_handler &&
                    !(G.start_act.sa_handler == act.sa_handler);
    G.wait_slot = NULL;
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].used) {
            G.wait_slot = &slots[i];
            G.wait_before = atomic_load(&slots[i].rounds);
        }
    pthread_mutex_lock(&ml.lock);
    int ran = fk_deliver_sigchld(FK_SIG_BOTH);
    if (ran && watchers)
        ml.kicked = true;
    pthread_mutex_unlock(&ml.lock);
}

void fx_sigchld_and_settle(void)
{
    deliver_sigchld();
    settle();
}

/* ---- steps ---- */

typedef struct actor_call {
    const scn_step *s;
    int result;
    bool done;
} actor_call;

static void run_actor(void *p)
{
    actor_call *a = p;
    const scn_step *s = a->s;
    pid_t pid = fx_pid(s->child_lo);
    switch (s->op) {
    case SCN_OP_ADD_HANDLER: {
        const int *h = &handler_ids[s->handler == SCN_NONE ? 1 : s->handler];
        if (s->obj2.type == SCN_T_LOOP)
            a->result = evpol_watcher_add_child_handler_on(G.w, G.loop[s->obj2.index], pid,
                                                           on_child, (void *)h, NULL);
        else
            a->result = evpol_watcher_add_child_handler(G.w, pid, on_child, (void *)h, NULL);
        break;
    }
    case SCN_OP_REMOVE_HANDLER: a->result = evpol_watcher_remove_child_handler(G.w, pid, NULL); break;
    case SCN_OP_ATTACH:
        a->result = evpol_watcher_attach_loop(
            G.w, s->obj2.type == SCN_T_LOOP ? G.loop[s->obj2.index] : NULL, NULL);
        break;
    case SCN_OP_CLOSE_WATCHER: a->result = evpol_watcher_close(G.w, NULL); break;
    case SCN_OP_ACTIVE: a->result = evpol_watcher_is_active(G.w); break;
    case SCN_OP_ENTER: a->result = evpol_watcher_enter(G.w, NULL); break;
    case SCN_OP_EXIT: a->result = evpol_watcher_exit(G.w, NULL); break;
    case SCN_OP_SPAWN: {
        int c = s->child_lo;
        if (c < 0 || c >= FZ_MAX_CHILDREN)
            break;
        static char *const argv[] = {"true", NULL};
        evpol_spawn_options opts;
        memset(&opts, 0, sizeof opts);
        opts.file = "true";
        opts.argv = argv;
        opts.on_exit = on_child;
        opts.arg = (void *)&handler_ids[0];
        evpol_spawn_result res;
        G.end_status[c] = mdl_end_status(s->end, s->number);
        G.release[c] = s->release;
        G.pid[c] = FK_PID_BASE + 4000 + c; /* no process (yet) */
        if (c + 1 > G.nchildren)
            G.nchildren = c + 1;
        if (s->end == SCN_END_EXEC_FAIL)
            fk_fail_spawn(ENOENT);
        else if (s->release == SCN_REL_NOW)
            G.spawn_exit_status = G.end_status[c];
        a->result = evpol_loop_spawn(s->obj2.type == SCN_T_LOOP ? G.loop[s->obj2.index] : G.loop[0],
                                     &opts, &res, NULL);
        fk_fail_spawn(0);
        G.spawn_exit_status = -1;
        if (a->result == 0)
            G.pid[c] = res.pid;
        break;
    }
    case SCN_OP_CLOSE_LOOP: {
        int l = s->obj.index;
        a->result = evpol_loop_close(G.loop[l], NULL);
        if (a->result == 0 && l != 0) {
            G.loop_closed[l] = true;
            for (int i = 0; i < NSLOTS; i++)
                if (slots[i].loop == G.loop[l])
                    slots[i].used = false;
        }
        break;
    }
    default: a->result = 0; break;
    }
    a->done = true;
    evpol_loop_stop(G.loop[0], NULL);
}

static bool is_actor(scn_op op)
{
    const scn_op_info *info = scn_op_get(op);
    return info && (info->fields & SCN_F_ACTOR);
}

static void end_child(int c, int status)
{
    if (fk_child_state(G.pid[c]) == FK_RUNNING)
        fk_exit_status(G.pid[c], status);
}

static struct sigaction outside_act(void)
{
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = outside_handler;
    sigemptyset(&a.sa_mask);
    return a;
}

static fz_disp disposition_now(void)
{
    struct sigaction act;
    bool is_fn = fk_sigchld_action(&act);
    bool start_fn = (G.start_act.sa_flags & SA_SIGINFO) ||
                    (G.start_act.sa_handler != SIG_DFL && G.start_act.sa_handler != SIG_IGN);
    if (!is_fn)
        return start_fn ? FZ_DISP_WATCHER : FZ_DISP_START;
    if (!(act.sa_flags & SA_SIGINFO) && act.sa_handler == outside_handler)
        return FZ_DISP_OUTSIDE;
    if (start_fn && act.sa_handler == G.start_act.sa_handler)
        return FZ_DISP_START;
    return FZ_DISP_WATCHER;
}

static void run_scn(const scn_step *s, fz_outcome *out)
{
    int c = s->child_lo;
    if (is_actor(s->op)) {
        actor_call a = {s, 0, false};
        if (evpol_loop_call_soon_threadsafe(G.loop[0], run_actor, &a, NULL) == 0)
            evpol_loop_run(G.loop[0], NULL);
        if (!a.done) {
            warn_event(FZ_W_OTHER, -1, 0, "the actor step never ran on L0");
            return;
        }
        out->has_result = true;
        out->result = a.result;
        return;
    }
    switch (s->op) {
    case SCN_OP_CHILD:
        if (c < 0 || c >= FZ_MAX_CHILDREN)
            return;
        G.pid[c] = fk_new_child();
        if (c + 1 > G.nchildren)
            G.nchildren = c + 1;
        G.end_status[c] = mdl_end_status(s->end, s->number);
        G.release[c] = s->release;
        if (s->release == SCN_REL_NOW)
            end_child(c, G.end_status[c]);
        break;
    case SCN_OP_RELEASE:
        if (c < G.nchildren && G.release[c] == SCN_REL_WAIT)
            end_child(c, G.end_status[c]);
        break;
    case SCN_OP_RELEASE_GATE:
        for (int k = 0; k < G.nchildren; k++)
            if (G.release[k] == SCN_REL_GATE)
                end_child(k, G.end_status[k]);
        break;
    case SCN_OP_KILL:
        if (c < G.nchildren)
            fk_sys()->kill(G.pid[c], s->number);
        break;
    case SCN_OP_REAP:
        if (c >= G.nchildren)
            return;
        out->has_result = true;
        if (fk_child_state(G.pid[c]) == FK_GONE) {
            out->result = 1;
        } else {
            fk_reap_elsewhere(G.pid[c]);
            out->result = 0;
        }
        break;
    case SCN_OP_SIGCHLD_REPLACE: {
        struct sigaction a = outside_act();
        fk_sys()->sigaction(SIGCHLD, &a, NULL);
        break;
    }
    case SCN_OP_SIGCHLD_RESTORE:
        fk_sys()->sigaction(SIGCHLD, &G.start_act, NULL);
        break;
    default:
        break;
    }
}

void fx_step(const fz_step *st, fz_outcome *out)
{
    fz_outcome_init(out);
    pthread_mutex_lock(&G.lock);
    G.cur = out;
    pthread_mutex_unlock(&G.lock);

    bool running[FZ_MAX_CHILDREN];
    for (int c = 0; c < G.nchildren; c++)
        running[c] = fk_child_state(G.pid[c]) == FK_RUNNING;
    int before = G.nchildren;

    switch (st->kind) {
    case FZ_SCN: run_scn(&st->s, out); break;
    case FZ_SIGCHLD: deliver_sigchld(); break;
    case FZ_EINTR: fk_inject_eintr((unsigned)st->n); break;
    case FZ_EINTR_BLOCKING: fk_inject_eintr_blocking((unsigned)st->n); break;
    case FZ_REAP_ORDER: fk_set_reap_order((fk_order)(st->n % 3)); break;
    case FZ_FAIL_THREADS: fk_fail_threads((unsigned)st->n); break;
    }

    if (G.auto_sigchld) {
        bool ended = false;
        for (int c = 0; c < G.nchildren; c++) {
            bool was = c < before ? running[c] : true;
            if (was && fk_child_state(G.pid[c]) != FK_RUNNING)
                ended = true;
        }
        if (ended)
            deliver_sigchld();
    }
    settle();
    out->disposition = disposition_now();

    pthread_mutex_lock(&G.lock);
    G.cur = NULL;
    pthread_mutex_unlock(&G.lock);
}

/* ---- begin / end ---- */

/* Each loop of a world wraps one of these (evpol_loop_new_from_base), kept
 * across worlds: a fresh evpol loop every time, but no new event_base
 * (its epoll and notification fds, libevent's checks of the process's
 * ids, its allocations), which cost more than a short program. fx_end
 * checks that closing the loop left the base as it found it. */
static struct event_base *bases[FZ_NLOOPS];

int fx_begin(int kind, bool auto_sigchld, char *err, size_t size)
{
    static bool hooked;
    if (!hooked) {
        evpol_set_log_hook(on_log, NULL);
        evpol_set_log_level(EVPOL_LOG_WARNING);
        hooked = true;
    }
    memset(slots, 0, sizeof slots);
    pthread_mutex_lock(&ml.lock);
    ml.alive = 0;
    ml.blocked = ml.kicked = false;
    pthread_mutex_unlock(&ml.lock);

    G.live = true;
    G.kind = kind;
    G.auto_sigchld = auto_sigchld;
    G.main = pthread_self();
    G.nchildren = 0;
    G.loop_closed[0] = G.loop_closed[1] = false;
    G.wait_slot = NULL;
    G.hung = false;
    G.cur = NULL;
    fz_outcome_init(&G.stray);
    sigaction(SIGCHLD, NULL, &G.real_start);

    static bool pooled;
    if (!pooled) {
        fk_set_thread_lower(fx_pool_table());
        pooled = true;
    }
    if (fk_install() != 0) {
        snprintf(err, size, "fk_install failed");
        return -1;
    }
    evpol_sys table = *fk_sys();
    table.thread_create = seam_thread_create;
    table.spawn = seam_spawn;
    G.spawn_exit_status = -1;
    evpol_error e = {0};
    if (evpol_sys_set(&table, &e) != 0) {
        snprintf(err, size, "evpol_sys_set: %s", e.message);
        return -1;
    }
    fk_sigchld_action(&G.start_act);
    for (int l = 0; l < FZ_NLOOPS; l++) {
        if (!bases[l] && !(bases[l] = event_base_new())) {
            snprintf(err, size, "event_base_new failed");
            return -1;
        }
        if (evpol_loop_new_from_base(bases[l], &G.loop[l], &e) != 0) {
            snprintf(err, size, "evpol_loop_new_from_base: %s", e.message);
            return -1;
        }
        atomic_store(&post_loops[l], G.loop[l]);
    }
    if (evpol_watcher_new((evpol_watcher_kind)scn_kind_to_evpol(kind), &G.w, &e) != 0) {
        snprintf(err, size, "evpol_watcher_new(%s): %s", fz_kind_name(kind), e.message);
        return -1;
    }
    /* spawn uses the current policy's watcher */
    if (evpol_set_child_watcher(G.w, &e) != 0) {
        snprintf(err, size, "evpol_set_child_watcher: %s", e.message);
        return -1;
    }
    return 0;
}

static void addp(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void addp(char *buf, size_t size, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
}

int fx_end(char *problems, size_t size)
{
    problems[0] = '\0';
    if (!G.live)
        return 0;
    /* After the epilogue the watcher is closed: it holds nothing (CW-8). */
    if (G.w && evpol_watcher_is_active(G.w) == 0 && !G.hung) {
        if (fk_fd_balance() != 0)
            addp(problems, size, "  fds opened through the kernel seam and never closed: %ld\n",
                 fk_fd_balance());
        if (fk_open_pidfds() != 0)
            addp(problems, size, "  pidfds still open after close: %d\n", fk_open_pidfds());
        pthread_mutex_lock(&ml.lock);
        int alive = ml.alive;
        pthread_mutex_unlock(&ml.lock);
        if (alive)
            addp(problems, size, "  MultiLoop reaper threads alive after close: %d\n", alive);
    }
    evpol_set_child_watcher(NULL, NULL);
    evpol_watcher_unref(G.w);
    G.w = NULL;
    for (int l = 0; l < FZ_NLOOPS; l++) {
        atomic_store(&post_loops[l], NULL);
        evpol_loop_close(G.loop[l], NULL);
        evpol_loop_unref(G.loop[l]);
        G.loop[l] = NULL;
        /* LOOP-1: closing releases every event evpol put on the base, and
         * only a clean base is used again. */
        int left = event_base_get_num_events(bases[l], EVENT_BASE_COUNT_ADDED |
                                                           EVENT_BASE_COUNT_ACTIVE |
                                                           EVENT_BASE_COUNT_VIRTUAL);
        if (left != 0) {
            addp(problems, size, "  L%d closed, but its event_base still holds %d event(s)\n", l,
                 left);
            event_base_free(bases[l]);
            bases[l] = NULL;
        }
    }
    /* Waiting threads still blocked on fake children wake (ECHILD) and
     * end; none may outlive that (THR-6). */
    fk_reset();
    if (!fk_wait_no_threads(FX_HANG_GUARD_MS))
        addp(problems, size, "  threads made through the seam still running: %ld\n",
             fk_threads_live());
    fk_uninstall();
    struct sigaction real_now;
    sigaction(SIGCHLD, NULL, &real_now);
    if (real_now.sa_handler != G.real_start.sa_handler)
        addp(problems, size, "  the real SIGCHLD disposition was not restored\n");
    pthread_mutex_lock(&G.lock);
    for (int i = 0; i < G.stray.nev; i++) {
        const fz_event *e = &G.stray.ev[i];
        if (e->type == FZ_EV_CALLBACK)
            addp(problems, size, "  callback outside any step: C%d rc=%d H%d\n", e->child, e->rc,
                 e->handler);
        else
            addp(problems, size, "  warning outside any step: %s %s\n",
                 fz_warning_name(e->warning), e->text);
    }
    fz_outcome_init(&G.stray);
    pthread_mutex_unlock(&G.lock);
    memset(slots, 0, sizeof slots);
    G.live = false;
    return problems[0] ? -1 : 0;
}
