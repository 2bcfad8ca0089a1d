/*
 * interp_director.c — the director: runs the steps in order, hands actor steps
 * to their threads and checks expectations (interp.h).
 */
#include "interp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------------ */
/* The director                                                             */
/* ------------------------------------------------------------------------ */

static int default_expected(const scn_step *st)
{
    switch (st->op) {
    case SCN_OP_ACTIVE:
    case SCN_OP_SAME:
    case SCN_OP_REMOVE_HANDLER: return 1;
    case SCN_OP_RUNNING: return st->obj.type == SCN_T_NONE ? EVPOL_ERUNTIME : 0;
    default: return 0;
    }
}

static int expected_of(const scn_step *st)
{
    return st->result_kind == SCN_RES_VALUE ? st->result : default_expected(st);
}

static double time_left(void)
{
    return S.deadline - now_s();
}

/* Wait on S.cv (S.m held) for at most `ms`, bounded by the deadline. */
static void timed_wait_locked(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&S.cv, &S.m, &ts);
}

static void result_text(const cmd *c, char *buf, size_t size)
{
    char v[32];
    describe_value(c->rc, v, sizeof v);
    char who[48] = "";
    if (c->child >= 0)
        snprintf(who, sizeof who, " for C%d", c->child);
    if (c->msg[0])
        snprintf(buf, size, "%s%s (%s)", v, who, c->msg);
    else
        snprintf(buf, size, "%s%s", v, who);
}

static void expected_text(const scn_step *st, char *buf, size_t size)
{
    describe_value(expected_of(st), buf, size);
}

static void dispatch(const scn_step *st)
{
    unsigned threads = st->threads ? st->threads : 1u;
    int n = __builtin_popcount(threads);
    cmd cmds[SCN_MAX_THREADS];
    int total = st->child_lo >= 0 ? st->child_hi - st->child_lo + 1 : 0;
    int k = 0;
    int next_child = st->child_lo;
    for (int t = 0; t < SCN_MAX_THREADS; t++) {
        if (!(threads & (1u << t)))
            continue;
        cmd *c = &cmds[k];
        memset(c, 0, sizeof *c);
        c->step = st;
        c->expected = expected_of(st);
        c->check = st->result_kind != SCN_RES_ANY;
        c->child = -1;
        if (total) {
            int share = total / n + (k < total % n ? 1 : 0);
            c->lo = next_child;
            c->hi = next_child + share - 1;
            next_child += share;
        }
        k++;
    }

    /* "No process created" is checked for a spawn expected to fail. */
    bool check_none = st->op == SCN_OP_SPAWN && st->result_kind == SCN_RES_VALUE &&
                      st->result != 0 && n == 1;
    static pid_t before[8192], after[8192];
    int nbefore = check_none ? list_children(before, 8192) : 0;
    long spawns_before = atomic_load(&spawn_calls);

    k = 0;
    for (int t = 0; t < SCN_MAX_THREADS; t++) {
        if (!(threads & (1u << t)))
            continue;
        cmd *c = &cmds[k++];
        worker *w = &S.workers[t];
        pthread_mutex_lock(&S.m);
        if (!w->exists) {
            pthread_mutex_unlock(&S.m);
            char msg[64];
            snprintf(msg, sizeof msg, "thread T%d does not exist (no 'thread T%d' step)", t, t);
            fail_step(st, "a step for an existing thread", msg);
        }
        if (w->pending)
            fail_step(st, "an idle thread", "the thread still has a step pending");
        w->pending = c;
        evpol_loop *running = w->running;
        if (running && !w->starting) {
            pthread_mutex_unlock(&S.m);
            evpol_error err;
            memset(&err, 0, sizeof err);
            if (evpol_loop_call_soon_threadsafe(running, exec_in_loop, w, &err) != 0) {
                pthread_mutex_lock(&S.m);
                w->pending = NULL;
                pthread_mutex_unlock(&S.m);
                char msg[400];
                snprintf(msg, sizeof msg, "cannot post the step into T%d's loop: %s", t,
                         err.message);
                fail_step(st, "the step runs", msg);
            }
        } else {
            pthread_cond_broadcast(&S.cv);
            pthread_mutex_unlock(&S.m);
        }
    }

    /* Wait for every thread; the runner's time limit catches a step that
     * never returns, showing this step. */
    pthread_mutex_lock(&S.m);
    for (int i = 0; i < n; i++)
        while (!cmds[i].done)
            timed_wait_locked(100);
    pthread_mutex_unlock(&S.m);

    for (int i = 0; i < n; i++) {
        cmd *c = &cmds[i];
        if (c->script || (c->check && c->rc != c->expected)) {
            char exp[64], act[600];
            expected_text(st, exp, sizeof exp);
            result_text(c, act, sizeof act);
            if (c->script)
                fail_step(st, st->op == SCN_OP_RUNNING ? "the named loop" : exp, act);
            fail_step(st, exp, act);
        }
    }

    if (check_none) {
        long spawns = atomic_load(&spawn_calls) - spawns_before;
        /* exec_fail must try (and fail) exactly once; anything else never. */
        long allowed = st->end == SCN_END_EXEC_FAIL ? 1 : 0;
        if (spawns > allowed) {
            char msg[128];
            snprintf(msg, sizeof msg, "evpol tried to create %ld process(es)", spawns);
            fail_step(st, "the error, before any process is created", msg);
        }
        int nafter = list_children(after, 8192);
        for (int i = 0; i < nafter; i++) {
            bool seen = false;
            for (int j = 0; j < nbefore && !seen; j++)
                seen = after[i] == before[j];
            if (!seen) {
                char msg[128];
                snprintf(msg, sizeof msg, "a process (pid %ld) was created", (long)after[i]);
                fail_step(st, "the error, with no process created", msg);
            }
        }
    }
}

/* ---- director steps ---- */

/* The handler "outside code" installs: it does nothing, as a program that
 * only wanted to interrupt a system call would. */
static void outside_sigchld(int sig)
{
    (void)sig;
}

void make_gate(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fail_phase("setup", "pipe2: %s", strerror(errno));
    /* dup2 clears close-on-exec: the gate's read end is every child's
     * inherited stdin. */
    if (dup2(p[0], 0) < 0)
        fail_phase("setup", "dup2: %s", strerror(errno));
    close(p[0]);
    S.gate_wr = p[1];
}

void close_gate(void)
{
    if (S.gate_wr >= 0)
        close(S.gate_wr);
    S.gate_wr = -1;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, 0);
        close(fd);
    }
}

static void outside_child(const scn_step *st, int ci)
{
    char script[64];
    scn_child_script(st, script, sizeof script);
    char *argv[] = {"sh", "-c", script, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    /* Outside code's child dies of its signal even though the runner
     * ignores SIGPIPE for itself. */
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int p[2] = {-1, -1};
    if (st->release == SCN_REL_WAIT) {
        if (pipe2(p, O_CLOEXEC) != 0)
            fail_step(st, "a pipe", strerror(errno));
        posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    } else if (st->release == SCN_REL_NOW) {
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pthread_mutex_lock(&S.m);
    reset_child_locked(ci);
    pthread_mutex_unlock(&S.m);
    pid_t pid = -1;
    int e = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (p[0] >= 0)
        close(p[0]);
    if (e) {
        if (p[1] >= 0)
            close(p[1]);
        fail_step(st, "the outside child is created", strerror(e));
    }
    pthread_mutex_lock(&S.m);
    S.children[ci].pid = pid;
    S.children[ci].how = ORIGIN_OUTSIDE;
    S.children[ci].release_fd = p[1];
    pthread_mutex_unlock(&S.m);
}

static void require_created(const scn_step *st, int ci, pid_t pid)
{
    if (pid > 0)
        return;
    char msg[64];
    snprintf(msg, sizeof msg, "C%d was never created", ci);
    fail_step(st, "an existing child", msg);
}

static void outcome_text(int rc, char *buf, size_t size)
{
    if (rc < 0)
        snprintf(buf, size, "returncode %d (signal %d)", rc, -rc);
    else
        snprintf(buf, size, "returncode %d", rc);
}

static void thread_text(int t, char *buf, size_t size)
{
    if (t == 0)
        snprintf(buf, size, "main");
    else if (t > 0)
        snprintf(buf, size, "T%d", t);
    else
        snprintf(buf, size, "a thread that is not a scenario thread");
}

static void loop_text(int l, char *buf, size_t size)
{
    if (l >= 0)
        snprintf(buf, size, "L%d", l);
    else if (l == SCN_NONE)
        snprintf(buf, size, "no running loop");
    else
        snprintf(buf, size, "a loop in no slot");
}

static void do_expect(const scn_step *st)
{
    for (int ci = st->child_lo; ci <= st->child_hi; ci++) {
        pthread_mutex_lock(&S.m);
        while (S.children[ci].pid > 0 && S.children[ci].count == 0 && time_left() > 0)
            timed_wait_locked(50);
        child_rec r = S.children[ci];
        pthread_mutex_unlock(&S.m);
        require_created(st, ci, r.pid);

        char exp[256], act[512], o[64], t[64], l[64];
        outcome_text(st->rc, o, sizeof o);
        int n = snprintf(exp, sizeof exp, "C%d (pid %ld): one callback, %s", ci, (long)r.pid, o);
        if (st->exp_thread != SCN_NONE) {
            thread_text(st->exp_thread, t, sizeof t);
            n += snprintf(exp + n, sizeof exp - (size_t)n, ", on %s", t);
        }
        if (st->exp_loop != SCN_NONE) {
            loop_text(st->exp_loop, l, sizeof l);
            n += snprintf(exp + n, sizeof exp - (size_t)n, ", in loop %s", l);
        }
        if (st->exp_handler != SCN_NONE)
            snprintf(exp + n, sizeof exp - (size_t)n, ", handler H%d", st->exp_handler);

        if (r.count == 0) {
            snprintf(act, sizeof act, "C%d (pid %ld): no callback (hang guard expired); the child is %s",
                     ci, (long)r.pid, child_state_name(r.pid));
            fail_step(st, exp, act);
        }
        outcome_text(r.rc, o, sizeof o);
        thread_text(r.thread, t, sizeof t);
        loop_text(r.loop, l, sizeof l);
        snprintf(act, sizeof act, "C%d (pid %ld): %d callback(s), %s, on %s, in loop %s, handler H%d%s",
                 ci, (long)r.pid, r.count, o, t, l, r.handler,
                 r.cb_pid != r.pid ? " -- for ANOTHER pid" : "");
        if (r.count != 1 || r.rc != st->rc || r.cb_pid != r.pid ||
            (st->exp_thread != SCN_NONE && r.thread != st->exp_thread) ||
            (st->exp_loop != SCN_NONE && r.loop != st->exp_loop) ||
            (st->exp_handler != SCN_NONE && r.handler != st->exp_handler))
            fail_step(st, exp, act);
    }
}

static void do_never(const scn_step *st)
{
    for (int ci = st->child_lo; ci <= st->child_hi; ci++) {
        pthread_mutex_lock(&S.m);
        child_rec r = S.children[ci];
        S.children[ci].never = true;
        pthread_mutex_unlock(&S.m);
        /* A child that was never created (exec failure) may be named too. */
        if (r.count) {
            char act[256], o[64];
            outcome_text(r.rc, o, sizeof o);
            snprintf(act, sizeof act, "C%d (pid %ld): %d callback(s), the last with %s, handler H%d",
                     ci, (long)r.pid, r.count, o, r.handler);
            fail_step(st, "no callback", act);
        }
    }
}

/* Poll (no reaping) until `want(state)` or the deadline. */
static int wait_child_state(pid_t pid, bool (*want)(int))
{
    int s;
    while (!want(s = child_state(pid)) && time_left() > 0)
        sleep_ms(2);
    return s;
}
static bool is_gone(int s)
{
    return s == 0;
}
static bool is_exited(int s)
{
    return s <= 1;
}

/* close_watcher: evpol_watcher_close, then no child registered with it
 * that had exited before the close may be left a zombie: close reaps those
 * (CW-8; Threaded's waiting threads reap them just after, hence the wait). */
int close_watcher_checked(cmd *c, evpol_watcher *w, evpol_error *err)
{
    static pid_t exited[SCN_MAX_CHILDREN];
    int n = 0;
    pthread_mutex_lock(&S.m);
    for (int ci = 0; ci < SCN_MAX_CHILDREN; ci++)
        if (w && S.children[ci].pid > 0 && S.children[ci].registered_with == w &&
            child_state(S.children[ci].pid) == 1)
            exited[n++] = S.children[ci].pid;
    pthread_mutex_unlock(&S.m);
    int rc = evpol_watcher_close(w, err);
    if (rc != 0)
        return rc;
    for (int i = 0; i < n; i++) {
        if (wait_child_state(exited[i], is_gone) != 0) {
            snprintf(c->msg, sizeof c->msg,
                     "pid %ld had exited before the close and is still a zombie after it",
                     (long)exited[i]);
            c->script = true;
            return 1;
        }
    }
    return 0;
}

static void do_child_step(const scn_step *st)
{
    for (int ci = st->child_lo; ci <= st->child_hi; ci++) {
        pid_t pid = st->op == SCN_OP_CHILD ? 0 : child_pid(ci);
        if (st->op != SCN_OP_CHILD)
            require_created(st, ci, pid);
        char msg[256], exp[64];
        switch (st->op) {
        case SCN_OP_CHILD: outside_child(st, ci); break;
        case SCN_OP_RELEASE: {
            pthread_mutex_lock(&S.m);
            int fd = S.children[ci].release_fd;
            S.children[ci].release_fd = -1;
            pthread_mutex_unlock(&S.m);
            if (fd < 0) {
                snprintf(msg, sizeof msg, "C%d is not a 'wait' child, or was released already", ci);
                fail_step(st, "a child to release", msg);
            }
            close(fd);
            break;
        }
        case SCN_OP_KILL:
            if (kill(pid, st->number) != 0) {
                snprintf(msg, sizeof msg, "kill(%ld, %d): %s", (long)pid, st->number,
                         strerror(errno));
                fail_step(st, "the signal is sent", msg);
            }
            break;
        case SCN_OP_REAP:
        case SCN_OP_EXITED: {
            int s = wait_child_state(pid, is_exited);
            if (s == 2) {
                snprintf(msg, sizeof msg, "C%d (pid %ld) did not exit (hang guard expired)", ci,
                         (long)pid);
                fail_step(st, "the child exits", msg);
            }
            int got = s == 1 ? 0 : 1;
            if (st->op == SCN_OP_REAP && s == 1) {
                int status;
                pid_t r;
                do
                    r = waitpid(pid, &status, WNOHANG);
                while (r < 0 && errno == EINTR);
                got = r == pid ? 0 : 1; /* a watcher may have won the race */
            }
            if (st->result_kind != SCN_RES_ANY && got != expected_of(st)) {
                describe_value(expected_of(st), exp, sizeof exp);
                snprintf(msg, sizeof msg, "%d: C%d (pid %ld) %s", got, ci, (long)pid,
                         got == 0 ? (st->op == SCN_OP_REAP ? "was reaped here" : "is a zombie")
                                  : "had already been reaped by someone else");
                fail_step(st, exp, msg);
            }
            break;
        }
        case SCN_OP_REAPED: {
            int s = wait_child_state(pid, is_gone);
            if (s != 0) {
                snprintf(msg, sizeof msg, "C%d (pid %ld) is %s (hang guard expired)", ci, (long)pid,
                         child_state_name(pid));
                fail_step(st, "the child reaped", msg);
            }
            break;
        }
        default: break;
        }
    }
}

static void do_log(const scn_step *st)
{
    char needle[SCN_TEXT_MAX + 256];
    substitute(st->text, needle, sizeof needle);
    int n = log_count(st, needle);
    if (st->op == SCN_OP_LOG) {
        while (n < st->number && time_left() > 0) {
            sleep_ms(2);
            n = log_count(st, needle);
        }
        if (n < st->number) {
            char exp[512], act[128];
            snprintf(exp, sizeof exp, "at least %d log line(s) containing \"%s\"", st->number,
                     needle);
            snprintf(act, sizeof act, "%d such line(s) (hang guard expired)", n);
            fail_step(st, exp, act);
        }
    } else if (n != 0) {
        char exp[512], act[128];
        snprintf(exp, sizeof exp, "no log line containing \"%s\"", needle);
        snprintf(act, sizeof act, "%d such line(s)", n);
        fail_step(st, exp, act);
    }
}

void stop_loop(const scn_step *st, evpol_loop *loop)
{
    evpol_error err;
    memset(&err, 0, sizeof err);
    int rc = evpol_loop_stop(loop, &err);
    if (st && st->result_kind != SCN_RES_ANY && rc != expected_of(st)) {
        char exp[32], act[400], v[32];
        expected_text(st, exp, sizeof exp);
        describe_value(rc, v, sizeof v);
        snprintf(act, sizeof act, "%s (%s)", v, err.message);
        fail_step(st, exp, act);
    }
    if (rc != 0 || !loop)
        return;
    /* Wait until no scenario thread runs it any more. */
    pthread_mutex_lock(&S.m);
    for (;;) {
        bool running = false;
        for (int t = 0; t < SCN_MAX_THREADS; t++)
            running |= S.workers[t].exists && S.workers[t].running == loop;
        if (!running)
            break;
        timed_wait_locked(100);
    }
    pthread_mutex_unlock(&S.m);
}

static void start_thread(const scn_step *st, int t)
{
    worker *w = &S.workers[t];
    if (w->exists)
        fail_step(st, "a new thread", "the thread exists already");
    pthread_mutex_lock(&S.m);
    w->index = t;
    w->quit = false;
    w->running = NULL;
    w->running_slot = SCN_NONE;
    w->exists = true;
    pthread_mutex_unlock(&S.m);
    int e = pthread_create(&w->tid, NULL, worker_thread, w);
    if (e) {
        w->exists = false;
        fail_step(st, "the thread starts", strerror(e));
    }
}

void join_thread(const scn_step *st, int t)
{
    worker *w = &S.workers[t];
    pthread_mutex_lock(&S.m);
    if (!w->exists) {
        pthread_mutex_unlock(&S.m);
        if (st)
            fail_step(st, "an existing thread", "no such thread");
        return;
    }
    if (w->running) {
        pthread_mutex_unlock(&S.m);
        if (st)
            fail_step(st, "a thread that runs no loop", "it is running a loop: stop it first");
        return;
    }
    w->quit = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
    pthread_join(w->tid, NULL);
    pthread_mutex_lock(&S.m);
    w->exists = false;
    pthread_mutex_unlock(&S.m);
}

static void check_value(const scn_step *st, int rc, const char *msg)
{
    if (st->result_kind == SCN_RES_ANY || rc == expected_of(st))
        return;
    char exp[32], act[400], v[32];
    expected_text(st, exp, sizeof exp);
    describe_value(rc, v, sizeof v);
    if (msg && *msg)
        snprintf(act, sizeof act, "%s (%s)", v, msg);
    else
        snprintf(act, sizeof act, "%s", v);
    fail_step(st, exp, act);
}

int soak_seconds(const scn_step *st)
{
    const char *env = getenv("SOAK_SECONDS");
    if (env && atoi(env) > 0)
        return atoi(env);
    return st->number > 0 ? st->number : SOAK_DEFAULT_S;
}

/* Spawn children continuously from one thread; check RSS and fds stay flat. */
static void do_soak(const scn_step *st)
{
    int seconds = soak_seconds(st);
    unsigned threads = st->threads ? st->threads : 1u;
    scn_step spawn;
    scn_step_init(&spawn, SCN_OP_SPAWN);
    spawn.threads = threads;
    spawn.child_lo = SOAK_FIRST_CHILD;
    spawn.child_hi = SCN_MAX_CHILDREN - 1;
    spawn.line = st->line;
    double start = now_s(), warm = start + (seconds / 5.0 < 3 ? 3 : seconds / 5.0);
    long rss0 = -1, rss_max = 0, rss_end = 0;
    int fds0 = -1, fds_end = 0, threads0 = -1, threads_end = 0;
    long total = 0;
    while (now_s() < start + seconds) {
        spawn.number = (int)(total % 7);
        dispatch(&spawn);
        for (int ci = spawn.child_lo; ci <= spawn.child_hi; ci++) {
            pthread_mutex_lock(&S.m);
            while (S.children[ci].count == 0 && time_left() > 0)
                timed_wait_locked(50);
            child_rec r = S.children[ci];
            pthread_mutex_unlock(&S.m);
            if (r.count != 1 || r.rc != spawn.number) {
                char exp[64], act[128];
                snprintf(exp, sizeof exp, "one callback with returncode %d", spawn.number);
                snprintf(act, sizeof act, "C%d: %d callback(s), returncode %d (after %ld children)",
                         ci, r.count, r.rc, total);
                fail_step(st, exp, act);
            }
            /* The watcher reaps before it calls back: no zombie may stay. */
            if (wait_child_state(r.pid, is_gone) != 0) {
                char act[128];
                snprintf(act, sizeof act, "C%d (pid %ld) is %s", ci, (long)r.pid,
                         child_state_name(r.pid));
                fail_step(st, "every child reaped", act);
            }
        }
        total += SOAK_BATCH;
        /* Between batches nothing is in flight, so fds must be exactly flat. */
        long rss = rss_kib();
        int fds = count_fds();
        int nthreads = count_dir("/proc/self/task");
        if (now_s() >= warm) {
            if (rss0 < 0) {
                rss0 = rss;
                fds0 = fds;
                threads0 = nthreads;
            }
            if (rss > rss_max)
                rss_max = rss;
            if (fds != fds0) {
                char act[128];
                snprintf(act, sizeof act, "%d fds after %ld children, %d after the warm-up", fds,
                         total, fds0);
                fail_step(st, "a flat fd count", act);
            }
        }
        rss_end = rss;
        fds_end = fds;
        threads_end = nthreads;
        /* Steady deadline for the hang guard: a soak may run for hours. */
        S.deadline = now_s() + 60;
    }
    status_line("I soak: %ld children in %d s; RSS %ld KiB after warm-up, %ld KiB max, %ld KiB at "
                "the end; fds %d -> %d; threads %d -> %d",
                total, seconds, rss0, rss_max, rss_end, fds0, fds_end, threads0, threads_end);
    /* Sanitizer runtimes keep freed memory in quarantine: RSS says nothing there. */
    long allowed = rss0 / 5 > 8192 ? rss0 / 5 : 8192;
    if (!SANITIZED && rss0 > 0 && rss_end > rss0 + allowed) {
        char act[160];
        snprintf(act, sizeof act, "RSS grew from %ld KiB to %ld KiB over %ld children", rss0,
                 rss_end, total);
        fail_step(st, "a flat RSS (growth within max(8 MiB, 20%))", act);
    }
}

void run_step(const scn_step *st)
{
    evpol_error err;
    memset(&err, 0, sizeof err);
    const scn_op_info *info = scn_op_get(st->op);
    if (info->fields & SCN_F_ACTOR) {
        dispatch(st);
        return;
    }
    switch (st->op) {
    case SCN_OP_THREAD: start_thread(st, st->obj.index); break;
    case SCN_OP_JOIN: join_thread(st, st->obj.index); break;
    case SCN_OP_NEW_LOOP: {
        evpol_loop *l = NULL;
        int rc = evpol_loop_new((evpol_backend)st->variant, &l, &err);
        check_value(st, rc, err.message);
        if (rc == 0)
            put_loop(st->obj.index, l);
        break;
    }
    case SCN_OP_STOP: stop_loop(st, S.loops[st->obj.index]); break;
    case SCN_OP_NEW_WATCHER: {
        int kind = st->variant == SCN_WATCHER_UNDER_TEST ? scn_kind_to_evpol(S.kind)
                   : st->variant == SCN_WATCHER_AUTO     ? EVPOL_WATCHER_AUTO
                                                         : scn_kind_to_evpol(st->variant - 1);
        evpol_watcher *w = NULL;
        int rc = evpol_watcher_new((evpol_watcher_kind)kind, &w, &err);
        check_value(st, rc, err.message);
        if (rc == 0)
            put_watcher(st->obj.index, w);
        break;
    }
    case SCN_OP_NEW_POLICY: {
        evpol_policy *p = NULL;
        int rc;
        int i = st->obj.index;
        for (int m = 0; m < SCN_M_COUNT_; m++)
            atomic_store(&pol_slots[i].calls[m], 0);
        switch (st->variant) {
        case SCN_POLICY_WATCHER:
            rc = evpol_policy_new_with_watcher_kind((evpol_watcher_kind)scn_kind_to_evpol(S.kind),
                                                    &p, &err);
            break;
        case SCN_POLICY_CUSTOM: {
            evpol_policy_methods m;
            memset(&m, 0, sizeof m);
            m.size = sizeof m;
            m.get_event_loop = cp_get_event_loop;
            m.set_event_loop = cp_set_event_loop;
            m.new_event_loop = cp_new_event_loop;
            m.get_child_watcher = cp_get_child_watcher;
            m.set_child_watcher = cp_set_child_watcher;
            rc = evpol_policy_new_custom(&m, &pol_slots[i], &p, &err);
            break;
        }
        case SCN_POLICY_POLL: rc = evpol_policy_new_with_backend(EVPOL_BACKEND_POLL, &p, &err); break;
        case SCN_POLICY_SELECT:
            rc = evpol_policy_new_with_backend(EVPOL_BACKEND_SELECT, &p, &err);
            break;
        default: rc = evpol_policy_new_default(&p, &err); break;
        }
        check_value(st, rc, err.message);
        if (rc == 0)
            put_policy(i, p);
        break;
    }
    case SCN_OP_SAME: {
        const void *a = NULL, *b = NULL;
        pthread_mutex_lock(&S.m);
        switch (st->obj.type) {
        case SCN_T_LOOP: a = S.loops[st->obj.index], b = S.loops[st->obj2.index]; break;
        case SCN_T_WATCHER: a = S.watchers[st->obj.index], b = S.watchers[st->obj2.index]; break;
        case SCN_T_POLICY: a = S.policies[st->obj.index], b = S.policies[st->obj2.index]; break;
        default: break;
        }
        pthread_mutex_unlock(&S.m);
        check_value(st, a && a == b, NULL);
        break;
    }
    case SCN_OP_DROP:
        switch (st->obj.type) {
        case SCN_T_LOOP: put_loop(st->obj.index, NULL); break;
        case SCN_T_WATCHER: put_watcher(st->obj.index, NULL); break;
        case SCN_T_POLICY: put_policy(st->obj.index, NULL); break;
        default: break;
        }
        break;
    case SCN_OP_CHILD:
    case SCN_OP_RELEASE:
    case SCN_OP_KILL:
    case SCN_OP_REAP:
    case SCN_OP_EXITED:
    case SCN_OP_REAPED: do_child_step(st); break;
    case SCN_OP_RELEASE_GATE:
        close_gate();
        make_gate();
        break;
    case SCN_OP_SIGCHLD_REPLACE: {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        /* Outside code taking SIGCHLD for itself, with a handler of its
         * own (SIG_IGN would make the kernel reap every child). */
        sa.sa_handler = outside_sigchld;
        sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
        if (sigaction(SIGCHLD, &sa, NULL) != 0)
            fail_step(st, "sigaction succeeds", strerror(errno));
        break;
    }
    case SCN_OP_SIGCHLD_RESTORE:
        if (sigaction(SIGCHLD, &S.sigchld_start, NULL) != 0)
            fail_step(st, "sigaction succeeds", strerror(errno));
        break;
    case SCN_OP_EXPECT: do_expect(st); break;
    case SCN_OP_NEVER: do_never(st); break;
    case SCN_OP_LOG:
    case SCN_OP_NO_LOG: do_log(st); break;
    case SCN_OP_CALLS: {
        int got = atomic_load(&pol_slots[st->obj.index].calls[st->variant]);
        if (got < st->number) {
            char exp[96], act[64];
            snprintf(exp, sizeof exp, "%s called at least %d time(s)", scn_method_name(st->variant),
                     st->number);
            snprintf(act, sizeof act, "%d call(s)", got);
            fail_step(st, exp, act);
        }
        break;
    }
    case SCN_OP_SLEEP: sleep_ms(st->number); break;
    case SCN_OP_SOAK: do_soak(st); break;
    default: fail_step(st, "a known step", "unknown step");
    }
}
