/*
 * libuv/interp.c — one scenario run against libuv's uv_spawn, in its own
 * process (interp.h); libuv/driver.c runs the suite.
 *
 *   libuv-runner [--reports DIR] [-j N] [-v] PATH...
 *
 * libuv has no policy and no child watcher: a loop is explicit, uv_spawn
 * starts a child on it and its exit_cb runs on that loop. So this adapter
 * runs the part of the vocabulary that means something there (threads,
 * loops started and stopped, spawn with every child end, outside children,
 * release, kill, reap, exited, reaped, expect, never) and the clauses it can
 * express: spawn, exit codes, death by signal, loops in several threads, a
 * loop run by another thread, a child reaped by someone else.
 *
 * Set-up steps with no libuv counterpart (policies, get/set_child_watcher,
 * set_loop, new_watcher, drop, the spawn context) are skipped: the loop a
 * spawn names is all libuv needs. log/no_log are skipped too (libuv logs
 * nothing). A scenario with a step that would change what happens next and
 * cannot be expressed (registering a pid libuv did not spawn, watcher state,
 * the policy's loops, fork, SIGCHLD replacement) is n/a as a whole, with that
 * step as the reason. Steps marked for some watchers run as for the watcher
 * kind_as() names: Threaded, or Pidfd where Threaded is excluded.
 *
 * Each scenario runs in its own process (forked, its own process group, the
 * scenario's time limit), with the C runner's leak checks: fds, threads,
 * children, SIGCHLD disposition. Results: DIR/scenarios.tsv, watcher "uv".
 */
#include "interp.h"
#include "proc_count.h"

#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define GUARD_S 10.0              /* wait limit without progress */
#define NO_SUCH_PROGRAM "/nonexistent/scenario-no-such-program"

/* ---- the run's state ---- */

typedef struct cmd cmd;
struct cmd {
    int (*fn)(cmd *); /* 1 when it signalled done itself (the cmd may be gone) */
    const scn_step *st;
    int lo, hi, loop; /* children share; the loop a spawn names */
    int done;
    char msg[512];    /* failure, "" when fine */
    cmd *next;
};

typedef struct lslot {
    uv_loop_t loop;
    uv_async_t wake;
    int inited;
    int stop_req;
    cmd *q; /* steps posted while a thread runs it */
} lslot;

typedef struct actor {
    pthread_t th;
    int used;
    int running; /* loop index it runs, or -1 */
    int quit;
    cmd *q;
} actor;

typedef struct child {
    pid_t pid;
    int release_wr;
    int ncalls;
    int rc, thread, loop;
    int never;
    uv_process_t proc;
} child;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    actor actors[SCN_MAX_THREADS];
    lslot loops[SCN_MAX_LOOPS];
    child kids[SCN_MAX_CHILDREN];
    int gate_rd, gate_wr;
    long events;
    int report_fd;
    const scn_step *step;
    int stepno;
    double step_limit; /* an actor step may take this long (the run's limit) */
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static __thread int tls_thread = -1;
static __thread int tls_loop = -1;

double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void report(char tag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(char tag, const char *fmt, ...)
{
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "%c ", tag);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    for (int i = 2; i < n; i++)
        if (buf[i] == '\n')
            buf[i] = ' ';
    buf[n++] = '\n';
    if (write(S.report_fd, buf, (size_t)n) < 0)
        _exit(3);
}

/* The first failure ends the run: the scenario process reports and exits. */
static void fail_run(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail_run(const char *fmt, ...)
{
    char msg[1024], line[256] = "teardown";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (S.step)
        scn_format_step(S.step, line, sizeof line);
    if (S.step)
        report('F', "step %d (line %d): %s -- %s", S.stepno, S.step->line, line, msg);
    else
        report('F', "teardown -- %s", msg);
    _exit(1);
}

/* ---- children of this process ---- */

/* waitid without reaping: ECHILD means no such child (any more). */
static int has_children(void)
{
    siginfo_t si;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 || errno != ECHILD;
}

/* A child still running is never late: the guards count only after it exited. */
static int running(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z';
}

static int is_child(pid_t pid)
{
    siginfo_t si;
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 || errno != ECHILD;
}

/* The stdin a child gets: its own release pipe, the gate, or -1 (/dev/null). */
static int stdin_for(int c, scn_release rel, int *own)
{
    *own = 0;
    if (rel == SCN_REL_WAIT) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            fail_run("pipe2: %s", strerror(errno));
        S.kids[c].release_wr = p[1];
        *own = 1;
        return p[0];
    }
    if (rel == SCN_REL_GATE) {
        if (S.gate_wr < 0) {
            int p[2];
            if (pipe2(p, O_CLOEXEC) != 0)
                fail_run("pipe2: %s", strerror(errno));
            S.gate_rd = p[0];
            S.gate_wr = p[1];
        }
        return S.gate_rd;
    }
    return -1;
}

static void close_gate(void)
{
    if (S.gate_wr >= 0) {
        close(S.gate_wr);
        close(S.gate_rd);
    }
    S.gate_wr = S.gate_rd = -1;
}

/* ---- what exit_cb records ---- */

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    child *k = p->data;
    pthread_mutex_lock(&S.mu);
    k->ncalls++;
    k->rc = term_signal ? -term_signal : (int)exit_status;
    k->thread = tls_thread;
    k->loop = tls_loop;
    S.events++;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    uv_close((uv_handle_t *)p, NULL);
}

/* ---- threads and loops ---- */

static void run_cmds(cmd *c)
{
    while (c) {
        cmd *next = c->next;
        if (c->fn(c)) {
            c = next;
            continue;
        }
        pthread_mutex_lock(&S.mu);
        c->done = 1;
        pthread_cond_broadcast(&S.cv);
        pthread_mutex_unlock(&S.mu);
        c = next;
    }
}

static cmd *take_list(cmd **q)
{
    cmd *c = *q;
    *q = NULL;
    return c;
}

static void append(cmd **q, cmd *c)
{
    while (*q)
        q = &(*q)->next;
    *q = c;
}

static void on_wake(uv_async_t *a)
{
    lslot *l = a->data;
    pthread_mutex_lock(&S.mu);
    cmd *c = take_list(&l->q);
    int stop = l->stop_req;
    l->stop_req = 0;
    pthread_mutex_unlock(&S.mu);
    run_cmds(c);
    if (stop)
        uv_stop(&l->loop);
}

static void *actor_main(void *arg)
{
    actor *a = arg;
    tls_thread = (int)(a - S.actors);
    pthread_mutex_lock(&S.mu);
    for (;;) {
        while (!a->q && !a->quit)
            pthread_cond_wait(&S.cv, &S.mu);
        if (!a->q && a->quit)
            break;
        cmd *c = take_list(&a->q);
        pthread_mutex_unlock(&S.mu);
        run_cmds(c);
        pthread_mutex_lock(&S.mu);
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

static void post(int t, cmd *c)
{
    actor *a = &S.actors[t];
    pthread_mutex_lock(&S.mu);
    if (a->running >= 0) {
        append(&S.loops[a->running].q, c);
        uv_async_send(&S.loops[a->running].wake);
    } else {
        append(&a->q, c);
        pthread_cond_broadcast(&S.cv);
    }
    pthread_mutex_unlock(&S.mu);
}

/* Wait until pred() (called with S.mu held); the guard restarts with every
 * callback, so a slow machine that still delivers is never cut off. */
static void wait_until(int (*pred)(void *), void *arg, const char *what, double guard,
                       pid_t pending)
{
    pthread_mutex_lock(&S.mu);
    long seen = S.events;
    double end = now_s() + guard;
    while (!pred(arg)) {
        if (S.events != seen || (pending > 0 && running(pending))) {
            seen = S.events;
            end = now_s() + guard;
        }
        if (now_s() > end) {
            pthread_mutex_unlock(&S.mu);
            fail_run("expected %s: not after %.0f s without a callback", what, guard);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&S.cv, &S.mu, &ts);
    }
    pthread_mutex_unlock(&S.mu);
}

static int cmd_done(void *arg)
{
    return ((cmd *)arg)->done;
}

/* Runs a step on each of its threads (children split evenly), waits for all. */
static void on_actors(const scn_step *st, int (*fn)(cmd *), int loop)
{
    cmd cmds[SCN_MAX_THREADS];
    int ts[SCN_MAX_THREADS], n = 0;
    unsigned mask = st->threads ? st->threads : 1u;
    for (int t = 0; t < SCN_MAX_THREADS; t++)
        if (mask & (1u << t)) {
            if (!S.actors[t].used)
                fail_run("thread T%d is not running", t);
            ts[n++] = t;
        }
    int total = st->child_lo == SCN_NONE ? 0 : st->child_hi - st->child_lo + 1;
    for (int i = 0; i < n; i++) {
        memset(&cmds[i], 0, sizeof cmds[i]);
        cmds[i].fn = fn;
        cmds[i].st = st;
        cmds[i].loop = loop;
        cmds[i].lo = st->child_lo + total * i / n;
        cmds[i].hi = st->child_lo + total * (i + 1) / n - 1;
        post(ts[i], &cmds[i]);
    }
    for (int i = 0; i < n; i++) {
        wait_until(cmd_done, &cmds[i], "the step to finish", S.step_limit, 0);
        if (cmds[i].msg[0])
            fail_run("%s", cmds[i].msg);
    }
}

static int expected_result(const scn_step *st)
{
    return st->result_kind == SCN_RES_VALUE ? st->result : 0;
}

static int do_spawn(cmd *c)
{
    const scn_step *st = c->st;
    int l = c->loop >= 0 ? c->loop : tls_loop;
    if (l < 0 || tls_loop != l) {
        snprintf(c->msg, sizeof c->msg, "spawn: no running loop%s on this thread",
                 c->loop >= 0 ? " (the one named)" : "");
        return 0;
    }
    for (int i = c->lo; i <= c->hi; i++) {
        child *k = &S.kids[i];
        int own, fd = stdin_for(i, st->release, &own);
        char sh[128];
        scn_child_script(st, sh, sizeof sh);
        char *args[] = {"sh", "-c", sh, NULL};
        uv_stdio_container_t stdio[3] = {
            {.flags = fd >= 0 ? UV_INHERIT_FD : UV_IGNORE, .data.fd = fd},
            {.flags = UV_IGNORE},
            {.flags = UV_IGNORE},
        };
        uv_process_options_t o = {
            .exit_cb = on_exit_cb,
            .file = st->end == SCN_END_EXEC_FAIL ? NO_SUCH_PROGRAM : "/bin/sh",
            .args = args,
            .stdio_count = 3,
            .stdio = stdio,
        };
        k->proc.data = k;
        int r = uv_spawn(&S.loops[l].loop, &k->proc, &o);
        if (own)
            close(fd);
        /* Every libuv error is a system error: the vocabulary's ESYSTEM. */
        int got = r == 0 ? 0 : -5;
        if (r == 0)
            k->pid = k->proc.pid;
        else
            uv_close((uv_handle_t *)&k->proc, NULL);
        if (st->result_kind != SCN_RES_ANY && got != expected_result(st)) {
            snprintf(c->msg, sizeof c->msg, "C%d: expected => %s, got %s (%s)", i,
                     scn_errcode_name(expected_result(st)) ? scn_errcode_name(expected_result(st))
                                                           : "?",
                     scn_errcode_name(got), r ? uv_strerror(r) : "created");
            return 0;
        }
    }
    return 0;
}

static int do_start(cmd *c)
{
    int l = c->st->obj.index;
    if (tls_loop >= 0) {
        snprintf(c->msg, sizeof c->msg, "start: this thread already runs L%d", tls_loop);
        return 0;
    }
    actor *a = &S.actors[tls_thread];
    pthread_mutex_lock(&S.mu);
    a->running = l;
    c->done = 1; /* done once L runs: steps posted from now on queue in it */
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    tls_loop = l;
    uv_run(&S.loops[l].loop, UV_RUN_DEFAULT);
    tls_loop = -1;
    pthread_mutex_lock(&S.mu);
    a->running = -1;
    /* What was posted after the stop runs on the thread itself. */
    append(&a->q, take_list(&S.loops[l].q));
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    return 1;
}

static int loop_left(void *arg)
{
    int l = *(int *)arg;
    for (int t = 0; t < SCN_MAX_THREADS; t++)
        if (S.actors[t].used && S.actors[t].running == l)
            return 0;
    return 1;
}

static void stop_loop(int l)
{
    pthread_mutex_lock(&S.mu);
    S.loops[l].stop_req = 1;
    uv_async_send(&S.loops[l].wake);
    pthread_mutex_unlock(&S.mu);
    wait_until(loop_left, &l, "the loop's thread to leave it", GUARD_S, 0);
}

/* ---- director steps ---- */

static void outside_child(int c, const scn_step *st)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, def;
    int own, fd = stdin_for(c, st->release, &own);
    posix_spawn_file_actions_init(&fa);
    if (fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigemptyset(&def);
    int sigs[] = {SIGPIPE, SIGXFSZ, SIGCHLD, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&def, sigs[i]);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char sh[128];
    scn_child_script(st, sh, sizeof sh);
    char *args[] = {"sh", "-c", sh, NULL};
    int r = posix_spawn(&S.kids[c].pid, "/bin/sh", &fa, &at, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (own)
        close(fd);
    if (r != 0)
        fail_run("posix_spawn: %s", strerror(r));
}

/* 0: the child has exited and is a zombie; 1: someone already reaped it.
 * Bounded by the run's time limit only: a loaded machine may be slow. */
static int wait_exited(pid_t pid)
{
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT | WNOHANG) != 0)
            return 1;
        if (si.si_pid == pid)
            return 0;
        usleep(2000);
    }
}

static int has_call(void *arg)
{
    return S.kids[*(int *)arg].ncalls > 0;
}

static void check_value(const scn_step *st, int c, int got)
{
    if (st->result_kind == SCN_RES_ANY)
        return;
    int want = st->result_kind == SCN_RES_VALUE ? st->result : 0;
    if (got != want)
        fail_run("C%d: expected => %d, got %d", c, want, got);
}

static pid_t pid_of(int c)
{
    if (S.kids[c].pid <= 0)
        fail_run("C%d was never created", c);
    return S.kids[c].pid;
}

/* Steps with no libuv counterpart: NULL when the step runs here. */
const char *not_here(const scn_step *st, int *fatal)
{
    *fatal = 0;
    switch (st->op) {
    case SCN_OP_NEW_POLICY: case SCN_OP_SET_POLICY: case SCN_OP_GET_CHILD_WATCHER:
    case SCN_OP_SET_CHILD_WATCHER: case SCN_OP_SET_LOOP: case SCN_OP_NEW_WATCHER:
    case SCN_OP_DROP: case SCN_OP_ENTER: case SCN_OP_EXIT:
        return "libuv has no policy or watcher: a spawn names its loop";
    case SCN_OP_LOG: case SCN_OP_NO_LOG:
        return "libuv logs nothing";
    case SCN_OP_THREAD: case SCN_OP_JOIN: case SCN_OP_NEW_LOOP: case SCN_OP_START:
    case SCN_OP_STOP: case SCN_OP_SPAWN: case SCN_OP_CHILD: case SCN_OP_RELEASE:
    case SCN_OP_RELEASE_GATE: case SCN_OP_KILL: case SCN_OP_REAP: case SCN_OP_EXITED:
    case SCN_OP_EXPECT: case SCN_OP_NEVER: case SCN_OP_REAPED: case SCN_OP_SLEEP:
        return NULL;
    case SCN_OP_ADD_HANDLER: case SCN_OP_REMOVE_HANDLER:
        *fatal = 1;
        return "libuv cannot watch a process it did not spawn";
    case SCN_OP_GET_LOOP: case SCN_OP_NEW_EVENT_LOOP: case SCN_OP_RUNNING: case SCN_OP_SAME:
    case SCN_OP_CALLS:
        *fatal = 1;
        return "libuv has no current loop per thread and no policy";
    default:
        *fatal = 1;
        return "no libuv counterpart (watcher state, fork, SIGCHLD replacement or soak)";
    }
}

static void run_step(const scn_step *st)
{
    switch (st->op) {
    case SCN_OP_THREAD: {
        actor *a = &S.actors[st->obj.index];
        a->used = 1;
        a->running = -1;
        if (pthread_create(&a->th, NULL, actor_main, a) != 0)
            fail_run("pthread_create failed");
        break;
    }
    case SCN_OP_JOIN: {
        actor *a = &S.actors[st->obj.index];
        pthread_mutex_lock(&S.mu);
        a->quit = 1;
        pthread_cond_broadcast(&S.cv);
        pthread_mutex_unlock(&S.mu);
        pthread_join(a->th, NULL);
        memset(a, 0, sizeof *a);
        a->running = -1;
        break;
    }
    case SCN_OP_NEW_LOOP: {
        lslot *l = &S.loops[st->obj.index];
        if (l->inited)
            fail_run("L%d already exists (the adapter does not replace loops)", st->obj.index);
        /* libuv picks its backend (epoll) itself: poll and select have no counterpart. */
        if (uv_loop_init(&l->loop) != 0 || uv_async_init(&l->loop, &l->wake, on_wake) != 0)
            fail_run("uv_loop_init failed");
        l->wake.data = l;
        l->inited = 1;
        break;
    }
    case SCN_OP_START:
        if (!S.loops[st->obj.index].inited)
            fail_run("L%d was never created", st->obj.index);
        on_actors(st, do_start, -1);
        break;
    case SCN_OP_STOP:
        stop_loop(st->obj.index);
        break;
    case SCN_OP_SPAWN: {
        if (st->obj2.type == SCN_T_LOOP) {
            /* uv_spawn runs on the loop's own thread, as libuv requires. */
            int owner = -1;
            for (int t = 0; t < SCN_MAX_THREADS; t++)
                if (S.actors[t].used && S.actors[t].running == st->obj2.index)
                    owner = t;
            if (owner < 0)
                fail_run("spawn on L%d: nothing runs it", st->obj2.index);
            scn_step copy = *st;
            copy.threads = 1u << owner;
            on_actors(&copy, do_spawn, st->obj2.index);
        } else {
            on_actors(st, do_spawn, -1);
        }
        break;
    }
    case SCN_OP_CHILD:
        for (int c = st->child_lo; c <= st->child_hi; c++)
            outside_child(c, st);
        break;
    case SCN_OP_RELEASE:
        for (int c = st->child_lo; c <= st->child_hi; c++)
            if (S.kids[c].release_wr >= 0) {
                close(S.kids[c].release_wr);
                S.kids[c].release_wr = -1;
            }
        break;
    case SCN_OP_RELEASE_GATE:
        close_gate();
        break;
    case SCN_OP_KILL:
        for (int c = st->child_lo; c <= st->child_hi; c++)
            kill(pid_of(c), st->number);
        break;
    case SCN_OP_REAP:
        for (int c = st->child_lo; c <= st->child_hi; c++) {
            pid_t p = pid_of(c);
            int got = wait_exited(p);
            if (got == 0)
                got = waitpid(p, NULL, 0) == p ? 0 : 1;
            check_value(st, c, got);
        }
        break;
    case SCN_OP_EXITED:
        for (int c = st->child_lo; c <= st->child_hi; c++)
            check_value(st, c, wait_exited(pid_of(c)));
        break;
    case SCN_OP_REAPED:
        for (int c = st->child_lo; c <= st->child_hi; c++) {
            pid_t p = pid_of(c);
            double end = now_s() + GUARD_S;
            while (is_child(p)) {
                if (running(p))
                    end = now_s() + GUARD_S;
                if (now_s() > end)
                    fail_run("C%d (pid %d) reaped: still a child after %.0f s", c, (int)p,
                             GUARD_S);
                usleep(5000);
            }
        }
        break;
    case SCN_OP_EXPECT:
        for (int c = st->child_lo; c <= st->child_hi; c++) {
            char what[64];
            snprintf(what, sizeof what, "a callback for C%d", c);
            wait_until(has_call, &c, what, GUARD_S, pid_of(c));
            pthread_mutex_lock(&S.mu);
            child k = S.kids[c];
            pthread_mutex_unlock(&S.mu);
            int ok = k.ncalls == 1 && k.rc == st->rc &&
                     (st->exp_thread == SCN_NONE || st->exp_thread == k.thread) &&
                     (st->exp_loop == SCN_NONE || st->exp_loop == k.loop) &&
                     (st->exp_handler == SCN_NONE || st->exp_handler == 0);
            if (!ok)
                fail_run("expected C%d: one callback, returncode %d, on T%d, in loop L%d; "
                         "actual: %d callback(s), returncode %d, on T%d, in loop L%d",
                         c, st->rc, st->exp_thread, st->exp_loop, k.ncalls, k.rc, k.thread,
                         k.loop);
        }
        break;
    case SCN_OP_NEVER:
        for (int c = st->child_lo; c <= st->child_hi; c++) {
            S.kids[c].never = 1;
            if (S.kids[c].ncalls)
                fail_run("C%d: expected no callback, got %d", c, S.kids[c].ncalls);
        }
        break;
    case SCN_OP_SLEEP:
        usleep((useconds_t)st->number * 1000);
        break;
    default:
        fail_run("unsupported step");
    }
}

static void teardown(void)
{
    S.step = NULL;
    for (int c = 0; c < SCN_MAX_CHILDREN; c++)
        if (S.kids[c].release_wr >= 0) {
            close(S.kids[c].release_wr);
            S.kids[c].release_wr = -1;
        }
    close_gate();
    double end = now_s() + GUARD_S;
    while (has_children() && now_s() < end) {
        for (int c = 0; c < SCN_MAX_CHILDREN; c++)
            if (S.kids[c].pid > 0 && running(S.kids[c].pid)) {
                end = now_s() + GUARD_S;
                break;
            }
        usleep(10000);
    }
    for (int c = 0; c < SCN_MAX_CHILDREN; c++)
        if (S.kids[c].pid > 0 && is_child(S.kids[c].pid))
            fail_run("C%d (pid %d) never reaped (zombie or leaked)", c, (int)S.kids[c].pid);
    if (has_children())
        fail_run("a child process never reaped");
    for (int c = 0; c < SCN_MAX_CHILDREN; c++) {
        if (S.kids[c].ncalls > 1)
            fail_run("C%d: exit_cb ran %d times", c, S.kids[c].ncalls);
        if (S.kids[c].never && S.kids[c].ncalls)
            fail_run("C%d: a callback for a child named in never", c);
    }
    for (int l = 0; l < SCN_MAX_LOOPS; l++)
        if (S.loops[l].inited && !loop_left(&l))
            stop_loop(l);
    for (int t = 0; t < SCN_MAX_THREADS; t++)
        if (S.actors[t].used) {
            pthread_mutex_lock(&S.mu);
            S.actors[t].quit = 1;
            pthread_cond_broadcast(&S.cv);
            pthread_mutex_unlock(&S.mu);
            pthread_join(S.actors[t].th, NULL);
        }
    for (int l = 0; l < SCN_MAX_LOOPS; l++)
        if (S.loops[l].inited) {
            uv_close((uv_handle_t *)&S.loops[l].wake, NULL);
            uv_run(&S.loops[l].loop, UV_RUN_DEFAULT);
            int r = uv_loop_close(&S.loops[l].loop);
            if (r != 0)
                fail_run("uv_loop_close(L%d): %s", l, uv_strerror(r));
        }
}

static int same_sigaction(const struct sigaction *a, const struct sigaction *b)
{
    /* SA_RESTORER is libc's business, as in the C runner. */
    int mask = ~0x04000000;
    return a->sa_handler == b->sa_handler && (a->sa_flags & mask) == (b->sa_flags & mask);
}

unsigned kind_as(const scn_scenario *sc)
{
    unsigned kinds = scn_kinds(sc);
    if (kinds & SCN_KIND_THREADED)
        return SCN_KIND_THREADED;
    return kinds & SCN_KIND_PIDFD;
}

_Noreturn void run_scenario(const scn_scenario *sc, int report_fd)
{
    S.report_fd = report_fd;
    unsigned kind = kind_as(sc);
    /* libuv creates process-wide state (its signal pipe) on first use and
     * keeps it: a throwaway loop makes it before the "before" snapshot. */
    uv_loop_t warm;
    uv_loop_init(&warm);
    uv_loop_close(&warm);
    struct sigaction chld0, chld1;
    sigaction(SIGCHLD, NULL, &chld0);
    S.step_limit = sc->timeout ? sc->timeout : 60;
    int fds0 = count_dir("/proc/self/fd"), threads0 = count_dir("/proc/self/task");
    for (int c = 0; c < SCN_MAX_CHILDREN; c++)
        S.kids[c].release_wr = -1;
    S.gate_rd = S.gate_wr = -1;
    for (int t = 0; t < SCN_MAX_THREADS; t++)
        S.actors[t].running = -1;
    /* The main thread is T0 like any scenario thread: a worker stands in for
     * it (libuv has no main-thread duty), so the director can be this one. */
    S.actors[0].used = 1;
    pthread_create(&S.actors[0].th, NULL, actor_main, &S.actors[0]);
    for (size_t i = 0; i < sc->nsteps; i++) {
        const scn_step *st = &sc->steps[i];
        if (!(st->kinds & kind))
            continue;
        S.step = st;
        S.stepno = (int)i + 1;
        report('S', "%d", S.stepno);
        int fatal;
        const char *why = not_here(st, &fatal);
        if (why && fatal) {
            char line[256];
            scn_format_step(st, line, sizeof line);
            report('N', "step %d (line %d) %s: %s", S.stepno, st->line, line, why);
            _exit(0);
        }
        if (!why)
            run_step(st);
    }
    teardown();
    double end = now_s() + GUARD_S;
    while (count_dir("/proc/self/task") > threads0 && now_s() < end)
        usleep(10000);
    int fds1 = count_dir("/proc/self/fd"), threads1 = count_dir("/proc/self/task");
    sigaction(SIGCHLD, NULL, &chld1);
    if (threads1 > threads0)
        fail_run("leak check: %d thread(s), %d before the scenario", threads1, threads0);
    if (fds1 != fds0)
        fail_run("leak check: %d fds open, %d before the scenario", fds1, fds0);
    if (!same_sigaction(&chld0, &chld1))
        fail_run("leak check: the SIGCHLD disposition changed (handler %p flags 0x%x, "
                 "%p flags 0x%x before the scenario)", (void *)chld1.sa_handler,
                 (unsigned)chld1.sa_flags, (void *)chld0.sa_handler, (unsigned)chld0.sa_flags);
    report('P', "%s", "");
    _exit(0);
}
