/*
 * runner.c — runs scenario files (scenarios/README.md) against the watchers.
 *
 *   runner [--reports DIR] [-j N] [--watchers LIST] [--only NAME]
 *          [--timeout-scale X] [-v] PATH...
 *
 * PATH is a .scn file or a directory whose *.scn files are run (not
 * recursively). Each scenario runs once per watcher it applies to, each run
 * in its own process (forked from the runner, its own process group) with a
 * time limit: a hung run is killed and fails with its last step shown, so
 * it never hangs the suite. The runner is a child subreaper, so no stray
 * process of a killed run outlives the suite.
 *
 * Inside a run (the "scenario process"):
 *  - the process's main thread is scenario thread T0 ("main"); "thread Tn"
 *    starts others. A thread either waits for steps, or runs a loop
 *    ("@T start L1"), in which case its steps are posted into that loop with
 *    evpol_loop_call_soon_threadsafe and run inside it, so they see a
 *    running loop as product code would;
 *  - a separate director thread reads the steps in order, hands actor steps
 *    to their thread(s) and waits for them to finish, and runs the other
 *    steps (expectations, outside code) itself. Expectations wait for what
 *    they expect with a hang guard only: nothing is timed;
 *  - children are real processes (/bin/sh), signals are real, the kernel is
 *    real (no fake seam);
 *  - after the last step: release every child, wait until every child is
 *    reaped, check that no callback ran twice, stop the loops, join the
 *    threads, drop every object; then the main thread checks that nothing
 *    leaked: fds (/proc/self/fd, by number and target), threads
 *    (/proc/self/task), children (none left, running or zombie), the SIGCHLD
 *    disposition (sigaction before/after).
 *
 * The scenario process reports to the runner through a pipe: "S n" when
 * step n starts (so that a hung or crashed run shows its last step), "F ..."
 * lines for a failure, "I ..." for information (soak figures), "P" for a
 * pass. Its stderr goes to the runner too, which fails the run on any
 * sanitizer report.
 */
#include "signal_state.h"
#include "steps.h"

#include "alloc_count.h"

#include <evpol.h>

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

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define DEFAULT_TIMEOUT_S 60
#define SOAK_DEFAULT_S 120
/* Soak uses the last children slots, so that scenarios keep C0.. for theirs. */
#define SOAK_BATCH 32
#define SOAK_FIRST_CHILD (SCN_MAX_CHILDREN - SOAK_BATCH)
#define NO_SUCH_PROGRAM "/nonexistent/evpol-scenario/no-such-program"

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static const char *code_name(int rc)
{
    const char *n = scn_errcode_name(rc);
    return n ? n : NULL;
}

/* "ERUNTIME", "OK" or the number. */
static void describe_value(int v, char *buf, size_t size)
{
    const char *n = v <= 0 ? code_name(v) : NULL;
    if (n)
        snprintf(buf, size, "%s", n);
    else
        snprintf(buf, size, "%d", v);
}

/* ------------------------------------------------------------------------ */
/* The scenario process: state                                              */
/* ------------------------------------------------------------------------ */

typedef enum origin { ORIGIN_NONE = 0, ORIGIN_SPAWN, ORIGIN_OUTSIDE, ORIGIN_FORK } origin;

typedef struct child_rec {
    pid_t pid;        /* 0: never created */
    int release_fd;   /* write end of a "wait" child's stdin, or -1 */
    origin how;
    int count;        /* callbacks so far */
    int hcount[SCN_MAX_HANDLERS];
    int rc, thread, loop, handler; /* of the last callback */
    pid_t cb_pid;     /* the pid the last callback was given */
    bool never;       /* "never": no callback may ever run */
    /* The watcher of its last add_handler (compared, never dereferenced):
     * closing that watcher must leave no zombie of it (CW-8). */
    const evpol_watcher *registered_with;
} child_rec;

typedef struct cbarg {
    int child, handler;
} cbarg;

typedef struct cmd {
    const scn_step *step;
    int lo, hi;    /* this thread's share of the children */
    int expected;  /* the value each call must return */
    bool check;    /* compare with `expected` */
    bool done;
    int rc;        /* the value obtained (the first mismatch, if any) */
    int child;     /* the child the mismatch was for, or -1 */
    bool script;   /* a scenario error (not the library's answer) */
    char msg[400];
} cmd;

typedef struct worker {
    int index;
    bool exists;
    pthread_t tid;
    bool quit;
    cmd *pending;      /* a step for this thread */
    cmd *starting;     /* a "start" waiting for its loop to run */
    evpol_loop *running; /* the loop this thread runs (it holds its own ref) */
    int running_slot;
} worker;

typedef struct pol_slot {
    atomic_int calls[SCN_M_COUNT_];
} pol_slot;

typedef struct log_line {
    int level, category;
    char msg[400];
} log_line;

static struct {
    pthread_mutex_t m; /* everything below except where noted */
    pthread_cond_t cv;
    worker workers[SCN_MAX_THREADS];
    evpol_loop *loops[SCN_MAX_LOOPS];
    evpol_watcher *watchers[SCN_MAX_WATCHERS];
    evpol_policy *policies[SCN_MAX_POLICIES];
    child_rec children[SCN_MAX_CHILDREN];

    /* Director-only. */
    int gate_wr;
    struct sigaction sigchld_start;
    const scn_scenario *sc;
    int kind;        /* bit index of the watcher under test */
    double deadline; /* expectations give up here (hang guard) */
    int status_fd;
    pid_t pid;
    const scn_step *cur;
    int cur_index;
} S;

static pol_slot pol_slots[SCN_MAX_POLICIES];
static cbarg cbargs[SCN_MAX_CHILDREN][SCN_MAX_HANDLERS];
static _Thread_local worker *tls_worker;

/* The log, under its own leaf lock (the hook runs inside library code). */
static pthread_mutex_t log_m = PTHREAD_MUTEX_INITIALIZER;
static log_line *logs;
static size_t nlogs, caplogs, logs_dropped;

/* ------------------------------------------------------------------------ */
/* Reporting to the runner                                                  */
/* ------------------------------------------------------------------------ */

static void status_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status_line(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    write_all(S.status_fd, buf, (size_t)n);
}

/* Each line of `text` as an "F " line. */
static void status_failure_text(const char *text)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        status_line("F %.*s", n, p);
        p += n;
        if (*p == '\n')
            p++;
    }
}

static void status_recent_log(void)
{
    pthread_mutex_lock(&log_m);
    size_t first = nlogs > 8 ? nlogs - 8 : 0;
    if (nlogs)
        status_line("F   recent log lines:");
    for (size_t i = first; i < nlogs; i++)
        status_line("F     %s/%s: %s", scn_level_name(logs[i].level),
                    scn_category_name(logs[i].category), logs[i].msg);
    pthread_mutex_unlock(&log_m);
}

/* A failure at the current step: step, expected, actual. Ends the run. */
static _Noreturn void fail_step(const scn_step *st, const char *expected, const char *actual)
{
    char line[SCN_LINE_MAX * 2] = "";
    if (st)
        scn_format_step(st, line, sizeof line);
    /* A step made by the runner itself (soak's spawns) is not in the file:
     * report the file's step that made it. */
    uintptr_t p = (uintptr_t)st, first = (uintptr_t)S.sc->steps,
              end = (uintptr_t)(S.sc->steps + S.sc->nsteps);
    int idx = p >= first && p < end ? (int)(st - S.sc->steps) : S.cur_index;
    status_line("F step %d (line %d): %s", idx + 1, st ? st->line : 0, line);
    char buf[4096];
    snprintf(buf, sizeof buf, "  expected: %s\n  actual:   %s", expected, actual);
    status_failure_text(buf);
    status_recent_log();
    _exit(1);
}

static _Noreturn void fail_phase(const char *phase, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static _Noreturn void fail_phase(const char *phase, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    status_line("F %s:", phase);
    char ind[4200];
    snprintf(ind, sizeof ind, "  %s", buf);
    status_failure_text(ind);
    status_recent_log();
    _exit(1);
}

/* ------------------------------------------------------------------------ */
/* Log hook                                                                 */
/* ------------------------------------------------------------------------ */

static void log_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    (void)arg;
    /* A forked child (fork step) must not take locks another thread of the
     * parent may have held at fork time. */
    if (getpid() != S.pid)
        return;
    pthread_mutex_lock(&log_m);
    if (nlogs == caplogs) {
        size_t cap = caplogs ? caplogs * 2 : 256;
        log_line *n = cap <= 200000 ? realloc(logs, cap * sizeof *n) : NULL;
        if (!n) {
            logs_dropped++;
            pthread_mutex_unlock(&log_m);
            return;
        }
        logs = n;
        caplogs = cap;
    }
    log_line *l = &logs[nlogs++];
    l->level = (int)level;
    l->category = (int)cat;
    snprintf(l->msg, sizeof l->msg, "%s", msg);
    pthread_mutex_unlock(&log_m);
}

/* "{C3}" -> pid of C3, "{L1}" -> %p of L1. */
static void substitute(const char *in, char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = in; *p && o + 1 < size;) {
        int idx;
        char type;
        int used = 0;
        if (*p == '{' && sscanf(p, "{%c%d}%n", &type, &idx, &used) == 2 && used > 0 &&
            p[used - 1] == '}') {
            char rep[64] = "";
            if (type == 'C' && idx >= 0 && idx < SCN_MAX_CHILDREN) {
                pthread_mutex_lock(&S.m);
                snprintf(rep, sizeof rep, "%ld", (long)S.children[idx].pid);
                pthread_mutex_unlock(&S.m);
            } else if (type == 'L' && idx >= 0 && idx < SCN_MAX_LOOPS) {
                pthread_mutex_lock(&S.m);
                snprintf(rep, sizeof rep, "%p", (void *)S.loops[idx]);
                pthread_mutex_unlock(&S.m);
            } else {
                used = 0;
            }
            if (used) {
                size_t n = strlen(rep);
                if (o + n >= size)
                    n = size - o - 1;
                memcpy(out + o, rep, n);
                o += n;
                p += used;
                continue;
            }
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

static int log_count(const scn_step *st, const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&log_m);
    for (size_t i = 0; i < nlogs; i++) {
        if (st->level != SCN_NONE && logs[i].level != st->level)
            continue;
        if (st->category != SCN_NONE && logs[i].category != st->category)
            continue;
        if (strstr(logs[i].msg, needle))
            n++;
    }
    pthread_mutex_unlock(&log_m);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Callbacks and process helpers                                            */
/* ------------------------------------------------------------------------ */

/* Slot of `loop`, SCN_NONE for no loop, -2 for a loop not in any slot. S.m held. */
static int loop_slot_locked(evpol_loop *loop)
{
    if (!loop)
        return SCN_NONE;
    for (int i = 0; i < SCN_MAX_LOOPS; i++)
        if (S.loops[i] == loop)
            return i;
    return -2;
}

static void child_cb(pid_t pid, int returncode, void *arg)
{
    const cbarg *a = arg;
    evpol_loop *running = NULL;
    if (evpol_get_running_loop(&running, NULL) != 0)
        running = NULL;
    pthread_mutex_lock(&S.m);
    child_rec *r = &S.children[a->child];
    r->count++;
    r->hcount[a->handler]++;
    r->rc = returncode;
    r->thread = tls_worker ? tls_worker->index : -1;
    r->loop = loop_slot_locked(running);
    r->handler = a->handler;
    r->cb_pid = pid;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
}

static void reset_child_locked(int ci)
{
    child_rec *r = &S.children[ci];
    if (r->release_fd >= 0)
        close(r->release_fd);
    memset(r, 0, sizeof *r);
    r->release_fd = -1;
    r->thread = r->loop = r->handler = SCN_NONE;
}

/* Is `pid` our child: 2 running, 1 exited (zombie), 0 not ours (reaped). */
static int child_state(pid_t pid)
{
    if (pid <= 0)
        return 0;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return 0;
    return si.si_pid == pid ? 1 : 2;
}

static const char *child_state_name(pid_t pid)
{
    switch (child_state(pid)) {
    case 2: return "still running";
    case 1: return "exited, not reaped (zombie)";
    default: return "reaped";
    }
}

/* The pids of every child of this process, from /proc/self/task/<tid>/children. */
static int list_children(pid_t *out, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[320];
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        long pid;
        while (fscanf(f, "%ld", &pid) == 1)
            if (n < cap)
                out[n++] = (pid_t)pid;
        fclose(f);
    }
    closedir(d);
    return n;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

typedef struct fd_set_snap {
    int n;
    int fd[256];
    char target[256][96];
} fd_set_snap;

static void snap_fds(fd_set_snap *s)
{
    s->n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == self)
            continue;
        if (s->n < 256) {
            char path[64];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t k = readlink(path, s->target[s->n], sizeof s->target[0] - 1);
            s->target[s->n][k > 0 ? k : 0] = '\0';
            s->fd[s->n++] = fd;
        } else {
            s->n++;
        }
    }
    closedir(d);
}

static int count_fds(void)
{
    return count_dir("/proc/self/fd") - 1;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return -1;
    long size = 0, res = 0;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* The shell line a child runs. */
static void child_script(const scn_step *st, char *buf, size_t size)
{
    const char *wait = st->release != SCN_REL_NOW ? "read x; " : "";
    if (st->end == SCN_END_SIGNAL)
        snprintf(buf, size, "%skill -%d $$", wait, st->number);
    else
        snprintf(buf, size, "%sexit %d", wait, st->number);
}

/* ------------------------------------------------------------------------ */
/* Counting the library's process creations                                 */
/* ------------------------------------------------------------------------ */

/* The real kernel's table with spawn wrapped to count calls: every process
 * evpol creates goes through it (the seam), so "no process created" is
 * exact, even for one the library would kill and reap at once. */
static int (*real_spawn)(pid_t *, const evpol_sys_spawn_request *);
static atomic_long spawn_calls;

static int counting_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    atomic_fetch_add(&spawn_calls, 1);
    return real_spawn(pid, req);
}

static void install_counting_seam(void)
{
    evpol_sys t = *evpol_sys_real();
    real_spawn = t.spawn;
    t.spawn = counting_spawn;
    /* Memory shows no fd, thread or child: only counting finds a leak. */
    evpol_sys counting = alloc_count_seam(&t);
    evpol_sys_set(&counting, NULL);
}

/* ------------------------------------------------------------------------ */
/* Custom policy (POL-8): every method counts, then calls super             */
/* ------------------------------------------------------------------------ */

static void count_call(evpol_policy *self, scn_method m)
{
    pol_slot *ps = evpol_policy_user_data(self);
    if (ps)
        atomic_fetch_add(&ps->calls[m], 1);
}

static int cp_get_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    count_call(self, SCN_M_GET_EVENT_LOOP);
    return evpol_policy_default_get_event_loop(self, out, err);
}
static int cp_set_event_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    count_call(self, SCN_M_SET_EVENT_LOOP);
    return evpol_policy_default_set_event_loop(self, loop, err);
}
static int cp_new_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    count_call(self, SCN_M_NEW_EVENT_LOOP);
    return evpol_policy_default_new_event_loop(self, out, err);
}
static int cp_get_child_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err)
{
    count_call(self, SCN_M_GET_CHILD_WATCHER);
    return evpol_policy_default_get_child_watcher(self, out, err);
}
static int cp_set_child_watcher(evpol_policy *self, evpol_watcher *w, evpol_error *err)
{
    count_call(self, SCN_M_SET_CHILD_WATCHER);
    return evpol_policy_default_set_child_watcher(self, w, err);
}

/* ------------------------------------------------------------------------ */
/* Fork step: what the forked child checks (POL-21)                         */
/* ------------------------------------------------------------------------ */

static int fork_child_checks(void)
{
    alarm(30); /* a lock inherited held would hang us: die instead */
    evpol_loop *l = NULL;
    /* The forking thread's running loop is not ours. */
    if (evpol_get_running_loop(&l, NULL) != EVPOL_ERUNTIME)
        return 10;
    /* Neither are the parent's per-thread loops. */
    l = NULL;
    if (evpol_get_event_loop(&l, NULL) == 0)
        for (int i = 0; i < SCN_MAX_LOOPS; i++)
            if (l && l == S.loops[i])
                return 11;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Slots                                                                    */
/* ------------------------------------------------------------------------ */

static evpol_loop *loop_ref_at(scn_ref r)
{
    return r.type == SCN_T_LOOP ? S.loops[r.index] : NULL;
}
static evpol_watcher *watcher_at(scn_ref r)
{
    return r.type == SCN_T_WATCHER ? S.watchers[r.index] : NULL;
}
static evpol_policy *policy_at(scn_ref r)
{
    return r.type == SCN_T_POLICY ? S.policies[r.index] : NULL;
}

/* Store a reference in a slot, dropping the previous one. */
static void put_loop(int i, evpol_loop *l)
{
    pthread_mutex_lock(&S.m);
    evpol_loop *old = S.loops[i];
    S.loops[i] = l;
    pthread_mutex_unlock(&S.m);
    evpol_loop_unref(old);
}
static void put_watcher(int i, evpol_watcher *w)
{
    pthread_mutex_lock(&S.m);
    evpol_watcher *old = S.watchers[i];
    S.watchers[i] = w;
    pthread_mutex_unlock(&S.m);
    evpol_watcher_unref(old);
}
static void put_policy(int i, evpol_policy *p)
{
    pthread_mutex_lock(&S.m);
    evpol_policy *old = S.policies[i];
    S.policies[i] = p;
    pthread_mutex_unlock(&S.m);
    evpol_policy_unref(old);
}

static pid_t child_pid(int ci)
{
    pthread_mutex_lock(&S.m);
    pid_t pid = S.children[ci].pid;
    pthread_mutex_unlock(&S.m);
    return pid;
}

/* ------------------------------------------------------------------------ */
/* Actor steps: run on a scenario thread                                    */
/* ------------------------------------------------------------------------ */

static int do_spawn_one(const scn_step *st, int ci, evpol_error *err)
{
    evpol_loop *loop = NULL;
    if (st->obj2.type == SCN_T_LOOP)
        loop = S.loops[st->obj2.index];
    else if (evpol_get_running_loop(&loop, NULL) != 0)
        loop = NULL; /* spawn then answers EINVAL, which the step may expect */
    char script[64];
    child_script(st, script, sizeof script);
    char *argv_sh[] = {"sh", "-c", script, NULL};
    char *argv_fail[] = {"no-such-program", NULL};
    evpol_spawn_options o;
    memset(&o, 0, sizeof o);
    bool fails = st->end == SCN_END_EXEC_FAIL;
    o.file = fails ? NO_SUCH_PROGRAM : "/bin/sh";
    o.argv = fails ? argv_fail : argv_sh;
    o.stdio[0] = st->release == SCN_REL_WAIT   ? EVPOL_STDIO_PIPE
                 : st->release == SCN_REL_GATE ? EVPOL_STDIO_INHERIT /* fd 0 is the gate */
                                               : EVPOL_STDIO_DEVNULL;
    o.stdio[1] = o.stdio[2] = EVPOL_STDIO_DEVNULL;
    o.on_exit = child_cb;
    o.arg = &cbargs[ci][0];
    pthread_mutex_lock(&S.m);
    reset_child_locked(ci);
    pthread_mutex_unlock(&S.m);
    evpol_spawn_result res;
    int rc = evpol_loop_spawn(loop, &o, &res, err);
    if (rc == 0) {
        pthread_mutex_lock(&S.m);
        S.children[ci].pid = res.pid;
        S.children[ci].how = ORIGIN_SPAWN;
        S.children[ci].release_fd = res.stdio_fd[0];
        pthread_mutex_unlock(&S.m);
        for (int i = 1; i < 3; i++)
            if (res.stdio_fd[i] >= 0)
                close(res.stdio_fd[i]);
    }
    return rc;
}

static int do_fork(cmd *c, int ci)
{
    pthread_mutex_lock(&S.m);
    reset_child_locked(ci);
    pthread_mutex_unlock(&S.m);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fork_child_checks());
    if (pid < 0) {
        snprintf(c->msg, sizeof c->msg, "fork: %s", strerror(errno));
        c->script = true;
        return EVPOL_ESYSTEM;
    }
    pthread_mutex_lock(&S.m);
    S.children[ci].pid = pid;
    S.children[ci].how = ORIGIN_FORK;
    pthread_mutex_unlock(&S.m);
    return 0;
}

static int close_watcher_checked(cmd *c, evpol_watcher *w, evpol_error *err);

/* One call for one child (or the one call of a step without children). */
static int exec_one(cmd *c, int ci, evpol_error *err)
{
    const scn_step *st = c->step;
    evpol_loop *l = NULL;
    evpol_watcher *w = NULL;
    switch (st->op) {
    case SCN_OP_CLOSE_LOOP: return evpol_loop_close(loop_ref_at(st->obj), err);
    case SCN_OP_START:
        /* Only reached inside a running loop: a nested run. */
        return evpol_loop_run(loop_ref_at(st->obj), err);
    case SCN_OP_ATTACH:
        return evpol_watcher_attach_loop(watcher_at(st->obj), loop_ref_at(st->obj2), err);
    case SCN_OP_CLOSE_WATCHER: return close_watcher_checked(c, watcher_at(st->obj), err);
    case SCN_OP_ACTIVE: return evpol_watcher_is_active(watcher_at(st->obj));
    case SCN_OP_ENTER: return evpol_watcher_enter(watcher_at(st->obj), err);
    case SCN_OP_EXIT: return evpol_watcher_exit(watcher_at(st->obj), err);
    case SCN_OP_SET_POLICY: return evpol_set_event_loop_policy(policy_at(st->obj), err);
    case SCN_OP_SET_CHILD_WATCHER: return evpol_set_child_watcher(watcher_at(st->obj), err);
    case SCN_OP_GET_CHILD_WATCHER: {
        int rc = evpol_get_child_watcher(&w, err);
        if (rc == 0)
            put_watcher(st->obj.index, evpol_watcher_ref(w));
        return rc;
    }
    case SCN_OP_SET_LOOP: return evpol_set_event_loop(loop_ref_at(st->obj), err);
    case SCN_OP_GET_LOOP: {
        int rc = evpol_get_event_loop(&l, err);
        if (rc == 0)
            put_loop(st->obj.index, evpol_loop_ref(l));
        return rc;
    }
    case SCN_OP_NEW_EVENT_LOOP: {
        int rc = evpol_new_event_loop(&l, err);
        if (rc == 0)
            put_loop(st->obj.index, l);
        return rc;
    }
    case SCN_OP_RUNNING: {
        int rc = evpol_get_running_loop(&l, err);
        if (rc == 0 && st->obj.type == SCN_T_LOOP && l != S.loops[st->obj.index]) {
            pthread_mutex_lock(&S.m);
            int slot = loop_slot_locked(l);
            pthread_mutex_unlock(&S.m);
            if (slot >= 0)
                snprintf(c->msg, sizeof c->msg, "the running loop is L%d", slot);
            else
                snprintf(c->msg, sizeof c->msg, "the running loop is %p, in no slot", (void *)l);
            c->script = true;
            return 1;
        }
        return rc;
    }
    case SCN_OP_SPAWN: return do_spawn_one(st, ci, err);
    case SCN_OP_ADD_HANDLER: {
        int h = st->handler == SCN_NONE ? 1 : st->handler;
        pid_t pid = child_pid(ci);
        w = watcher_at(st->obj);
        int rc = st->obj2.type == SCN_T_LOOP
                     ? evpol_watcher_add_child_handler_on(w, loop_ref_at(st->obj2), pid, child_cb,
                                                          &cbargs[ci][h], err)
                     : evpol_watcher_add_child_handler(w, pid, child_cb, &cbargs[ci][h], err);
        if (rc == 0) {
            pthread_mutex_lock(&S.m);
            S.children[ci].registered_with = w;
            pthread_mutex_unlock(&S.m);
        }
        return rc;
    }
    case SCN_OP_REMOVE_HANDLER:
        return evpol_watcher_remove_child_handler(watcher_at(st->obj), child_pid(ci), err);
    case SCN_OP_FORK: return do_fork(c, ci);
    default:
        snprintf(c->msg, sizeof c->msg, "step is not an actor step");
        c->script = true;
        return EVPOL_EINVAL;
    }
}

static void complete(cmd *c)
{
    pthread_mutex_lock(&S.m);
    c->done = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
}

static void exec_cmd(cmd *c)
{
    const scn_step *st = c->step;
    bool per_child = (scn_op_get(st->op)->fields & SCN_F_CHILDREN) != 0;
    int lo = per_child ? c->lo : 0, hi = per_child ? c->hi : 0;
    c->rc = c->expected;
    c->child = -1;
    for (int ci = lo; ci <= hi; ci++) {
        evpol_error err;
        memset(&err, 0, sizeof err);
        c->msg[0] = '\0';
        int rc = exec_one(c, per_child ? ci : -1, &err);
        if (!c->msg[0] && rc < 0)
            snprintf(c->msg, sizeof c->msg, "%s", err.message);
        if (c->script || (c->check && rc != c->expected)) {
            c->rc = rc;
            c->child = per_child ? ci : -1;
            break;
        }
        c->rc = rc;
    }
}

/* ---- a thread's life ---- */

static void loop_started(void *arg)
{
    worker *w = arg;
    evpol_loop *running = NULL;
    evpol_get_running_loop(&running, NULL);
    pthread_mutex_lock(&S.m);
    cmd *c = NULL;
    if (tls_worker == w && w->running == running) {
        c = w->starting;
        w->starting = NULL;
    }
    pthread_mutex_unlock(&S.m);
    if (c) {
        c->rc = 0;
        complete(c);
    }
}

/* Runs a step posted into the loop this thread runs. */
static void exec_in_loop(void *arg)
{
    worker *w = arg;
    pthread_mutex_lock(&S.m);
    cmd *c = tls_worker == w ? w->pending : NULL;
    if (c)
        w->pending = NULL;
    pthread_mutex_unlock(&S.m);
    if (!c)
        return;
    exec_cmd(c);
    complete(c);
}

static void run_loop(worker *w, cmd *c)
{
    evpol_loop *loop = loop_ref_at(c->step->obj);
    evpol_error err;
    memset(&err, 0, sizeof err);
    pthread_mutex_lock(&S.m);
    w->starting = c;
    w->running = loop;
    w->running_slot = c->step->obj.index;
    pthread_mutex_unlock(&S.m);
    int rc = evpol_loop_call_soon_threadsafe(loop, loop_started, w, &err);
    if (rc == 0)
        rc = evpol_loop_run(loop, &err);
    pthread_mutex_lock(&S.m);
    cmd *starting = w->starting, *pending = w->pending;
    w->starting = w->pending = NULL;
    w->running = NULL;
    w->running_slot = SCN_NONE;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
    if (starting) { /* the run failed before it started */
        starting->rc = rc == 0 ? EVPOL_ERUNTIME : rc;
        snprintf(starting->msg, sizeof starting->msg, "%s",
                 rc ? err.message : "the loop returned before it ran anything");
        complete(starting);
    }
    if (pending) {
        pending->rc = EVPOL_ERUNTIME;
        pending->script = true;
        snprintf(pending->msg, sizeof pending->msg, "the loop stopped before the step ran");
        complete(pending);
    }
}

static void worker_main(worker *w)
{
    tls_worker = w;
    pthread_mutex_lock(&S.m);
    for (;;) {
        if (w->quit)
            break;
        if (!w->pending) {
            pthread_cond_wait(&S.cv, &S.m);
            continue;
        }
        cmd *c = w->pending;
        w->pending = NULL;
        pthread_mutex_unlock(&S.m);
        if (c->step->op == SCN_OP_START) {
            run_loop(w, c);
        } else {
            exec_cmd(c);
            complete(c);
        }
        pthread_mutex_lock(&S.m);
    }
    pthread_mutex_unlock(&S.m);
}

static void *worker_thread(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "T%d", w->index);
    pthread_setname_np(pthread_self(), name);
    worker_main(w);
    return NULL;
}

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

static void make_gate(void)
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

static void close_gate(void)
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
    child_script(st, script, sizeof script);
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
static int close_watcher_checked(cmd *c, evpol_watcher *w, evpol_error *err)
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

static void stop_loop(const scn_step *st, evpol_loop *loop)
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

static void join_thread(const scn_step *st, int t)
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

static int soak_seconds(const scn_step *st)
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

static void run_step(const scn_step *st)
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

/* ---- teardown ---- */

static void teardown(void)
{
    status_line("S teardown: release every child");
    pthread_mutex_lock(&S.m);
    for (int i = 0; i < SCN_MAX_CHILDREN; i++)
        if (S.children[i].release_fd >= 0) {
            close(S.children[i].release_fd);
            S.children[i].release_fd = -1;
        }
    pthread_mutex_unlock(&S.m);
    close_gate();

    /* Every child must be reaped by someone while the loops still run. */
    status_line("S teardown: wait until every child is reaped");
    static pid_t left[8192];
    int n;
    /* Exited children are reaped at once by a working watcher; the guard
     * only bounds how long a leaked child delays the report. */
    double settle_until = now_s() + (SANITIZED ? 45 : 15);
    if (settle_until > S.deadline)
        settle_until = S.deadline;
    while ((n = list_children(left, 8192)) > 0 && now_s() < settle_until)
        sleep_ms(5);
    if (n > 0) {
        char buf[2048];
        int o = 0;
        for (int i = 0; i < n && i < 10; i++) {
            int ci = -1;
            pthread_mutex_lock(&S.m);
            for (int c = 0; c < SCN_MAX_CHILDREN && ci < 0; c++)
                if (S.children[c].pid == left[i])
                    ci = c;
            pthread_mutex_unlock(&S.m);
            char name[16] = "?";
            if (ci >= 0)
                snprintf(name, sizeof name, "C%d", ci);
            o += snprintf(buf + o, sizeof buf - (size_t)o, "\n  %s (pid %ld): %s", name,
                          (long)left[i], child_state_name(left[i]));
        }
        fail_phase("teardown", "%d child process(es) never reaped (zombie or leaked):%s", n, buf);
    }

    /* Let deliveries already posted to the loops run, then stop them. */
    status_line("S teardown: stop the loops");
    for (int t = 0; t < SCN_MAX_THREADS; t++) {
        pthread_mutex_lock(&S.m);
        evpol_loop *l = S.workers[t].exists ? S.workers[t].running : NULL;
        if (l)
            evpol_loop_ref(l);
        pthread_mutex_unlock(&S.m);
        if (l) {
            stop_loop(NULL, l);
            evpol_loop_unref(l);
        }
    }

    status_line("S teardown: exactly once");
    pthread_mutex_lock(&S.m);
    for (int i = 0; i < SCN_MAX_CHILDREN; i++) {
        child_rec r = S.children[i];
        if (r.count > 1 || (r.never && r.count)) {
            pthread_mutex_unlock(&S.m);
            fail_phase("teardown", "C%d (pid %ld): %d callback(s)%s (handler counts: H0 %d, H1 %d, "
                       "H2 %d, H3 %d)",
                       i, (long)r.pid, r.count, r.never ? ", expected none ever" : ", expected at most one",
                       r.hcount[0], r.hcount[1], r.hcount[2], r.hcount[3]);
        }
    }
    pthread_mutex_unlock(&S.m);

    status_line("S teardown: join the threads");
    for (int t = 1; t < SCN_MAX_THREADS; t++)
        if (S.workers[t].exists)
            join_thread(NULL, t);

}

/* On the main thread, as a product would at exit: Safe and Fast can only
 * remove their main-thread signal handlers there. */
static void drop_everything(void)
{
    status_line("S teardown: drop every object");
    for (int i = 0; i < SCN_MAX_WATCHERS; i++)
        put_watcher(i, NULL);
    for (int i = 0; i < SCN_MAX_POLICIES; i++)
        put_policy(i, NULL);
    /* The process-wide policy holds the main thread's loop and its watcher. */
    evpol_set_event_loop_policy(NULL, NULL);
    for (int i = 0; i < SCN_MAX_LOOPS; i++) {
        if (S.loops[i])
            evpol_loop_close(S.loops[i], NULL);
        put_loop(i, NULL);
    }
}

static void *director_thread(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "director");
    const scn_scenario *sc = S.sc;
    for (size_t i = 0; i < sc->nsteps; i++) {
        const scn_step *st = &sc->steps[i];
        if (!(st->kinds & (1u << S.kind)))
            continue;
        S.cur = st;
        S.cur_index = (int)i;
        status_line("S %zu", i);
        run_step(st);
    }
    teardown();
    pthread_mutex_lock(&S.m);
    S.workers[0].quit = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
    return NULL;
}

static void *nothing(void *arg)
{
    return arg;
}

static bool same_disposition(const struct sigaction *a, const struct sigaction *b)
{
    /* SA_RESTORER is libc's business. */
    int mask = ~0x04000000;
    return a->sa_handler == b->sa_handler && (a->sa_flags & mask) == (b->sa_flags & mask);
}

/* The whole life of a scenario process. Never returns. */
static _Noreturn void scenario_process(const scn_scenario *sc, int kind, int status_fd,
                                       double timeout)
{
    memset(&S, 0, sizeof S);
    pthread_mutex_init(&S.m, NULL);
    pthread_cond_init(&S.cv, NULL);
    S.sc = sc;
    S.kind = kind;
    S.status_fd = status_fd;
    S.pid = getpid();
    S.gate_wr = -1;
    /* Leave a little time to report before the runner kills us. */
    S.deadline = now_s() + (timeout > 20 ? timeout - 5 : timeout * 0.75);
    for (int c = 0; c < SCN_MAX_CHILDREN; c++) {
        S.children[c].release_fd = -1;
        for (int h = 0; h < SCN_MAX_HANDLERS; h++)
            cbargs[c][h] = (cbarg){c, h};
    }

    /* Before this process's first libevent allocation; the functions pass
     * through to malloc, so blocks the runner made before fork stay valid. */
    alloc_count_start_libevent();
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }

    /* One-time state of the runtimes (a sanitizer's helper thread, libevent
     * and evpol globals) before the baseline. */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
    evpol_loop *warm = NULL;
    if (evpol_loop_new(EVPOL_BACKEND_DEFAULT, &warm, NULL) == 0) {
        evpol_loop_close(warm, NULL);
        evpol_loop_unref(warm);
    }

    static fd_set_snap fds_before, fds_after;
    snap_fds(&fds_before);
    int threads_before = count_dir("/proc/self/task");
    sigaction(SIGCHLD, NULL, &S.sigchld_start);

    evpol_set_log_hook(log_hook, NULL);
    install_counting_seam();
    long libevent_before = alloc_count_libevent();
    make_gate();

    worker *main_w = &S.workers[0];
    main_w->index = 0;
    main_w->exists = true;
    main_w->tid = pthread_self();
    main_w->running_slot = SCN_NONE;

    pthread_t director;
    int e = pthread_create(&director, NULL, director_thread, NULL);
    if (e)
        fail_phase("setup", "cannot start the director: %s", strerror(e));
    worker_main(main_w);
    pthread_join(director, NULL);
    drop_everything();

    /* ---- leak checks ---- */
    status_line("S teardown: leak checks");
    double guard = now_s() + 10 * (SANITIZED ? 3 : 1);
    int threads_now;
    while ((threads_now = count_dir("/proc/self/task")) > threads_before && now_s() < guard)
        sleep_ms(5);
    if (threads_now != threads_before)
        fail_phase("leak check", "%d thread(s) left, %d before the scenario", threads_now,
                   threads_before);

    snap_fds(&fds_after);
    char buf[2048];
    int o = 0;
    for (int i = 0; i < fds_after.n && i < 256; i++) {
        bool found = false;
        for (int j = 0; j < fds_before.n && j < 256 && !found; j++)
            found = fds_before.fd[j] == fds_after.fd[i] &&
                    strcmp(fds_before.target[j], fds_after.target[i]) == 0;
        if (!found && o < (int)sizeof buf - 200)
            o += snprintf(buf + o, sizeof buf - (size_t)o, "\n  fd %d (%s) is open", fds_after.fd[i],
                          fds_after.target[i]);
    }
    for (int j = 0; j < fds_before.n && j < 256; j++) {
        bool found = false;
        for (int i = 0; i < fds_after.n && i < 256 && !found; i++)
            found = fds_before.fd[j] == fds_after.fd[i];
        if (!found && o < (int)sizeof buf - 200)
            o += snprintf(buf + o, sizeof buf - (size_t)o, "\n  fd %d (%s) was closed by someone",
                          fds_before.fd[j], fds_before.target[j]);
    }
    if (o || fds_after.n != fds_before.n)
        fail_phase("leak check", "%d fds open, %d before the scenario:%s", fds_after.n,
                   fds_before.n, buf);

    static pid_t kids[64];
    int nkids = list_children(kids, 64);
    if (nkids > 0)
        fail_phase("leak check", "%d child process(es) left (the first: pid %ld, %s)", nkids,
                   (long)kids[0], child_state_name(kids[0]));

    long evpol_left = alloc_count_evpol();
    long libevent_left = alloc_count_libevent() - libevent_before;
    if (evpol_left || libevent_left)
        fail_phase("leak check",
                   "memory: %ld evpol allocation(s) and %ld libevent allocation(s) outstanding "
                   "that were not before the scenario",
                   evpol_left, libevent_left);

    struct sigaction now;
    sigaction(SIGCHLD, NULL, &now);
    if (!same_disposition(&now, &S.sigchld_start))
        fail_phase("leak check",
                   "the SIGCHLD disposition changed: handler %p flags %#x, %p flags %#x before",
                   (void *)(uintptr_t)now.sa_handler, (unsigned)now.sa_flags,
                   (void *)(uintptr_t)S.sigchld_start.sa_handler,
                   (unsigned)S.sigchld_start.sa_flags);

    evpol_set_log_hook(NULL, NULL);
    status_line("P");
    /* exit, not _exit: sanitizers report at exit. */
    exit(0);
}

/* ------------------------------------------------------------------------ */
/* The suite                                                                */
/* ------------------------------------------------------------------------ */

typedef enum { R_PENDING, R_PASS, R_FAIL, R_SKIP } result;

typedef struct job {
    const scn_scenario *sc;
    int kind; /* bit index */
    result res;
    char *detail; /* failure message or skip reason */
    char *info;   /* "I" lines */
    double start, duration, deadline, timeout;
    pid_t pid;
    int status_fd, err_fd;
    char *sbuf; /* status bytes not yet split into lines */
    size_t slen;
    char *ebuf; /* the tail of stderr */
    size_t elen;
    char *fail_lines;
    int last_step;
    char phase[128];
    bool passed_line, exited, timed_out;
    int wstatus;
} job;

static double timeout_scale = 1.0;
static bool verbose;
static int stderr_lines = 40;

static void append(char **dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(char **dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *add = NULL;
    if (vasprintf(&add, fmt, ap) < 0)
        add = NULL;
    va_end(ap);
    if (!add)
        return;
    size_t have = *dst ? strlen(*dst) : 0;
    char *n = realloc(*dst, have + strlen(add) + 1);
    if (n) {
        strcpy(n + have, add);
        *dst = n;
    }
    free(add);
}

static bool has_soak(const scn_scenario *sc, int *seconds)
{
    for (size_t i = 0; i < sc->nsteps; i++)
        if (sc->steps[i].op == SCN_OP_SOAK) {
            *seconds = soak_seconds(&sc->steps[i]);
            return true;
        }
    return false;
}

static void start_job(job *j)
{
    int sp[2], ep[2];
    if (pipe2(sp, O_CLOEXEC) != 0 || pipe2(ep, O_CLOEXEC) != 0) {
        perror("runner: pipe2");
        exit(2);
    }
    double t = (j->sc->timeout ? j->sc->timeout : DEFAULT_TIMEOUT_S) * timeout_scale;
    int soak = 0;
    if (has_soak(j->sc, &soak))
        t += soak;
    j->timeout = t;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("runner: fork");
        exit(2);
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(sp[0]);
        close(ep[0]);
        dup2(ep[1], 2);
        close(ep[1]);
        /* Keep only 0-2 and our status pipe, moved to 3: other jobs' pipes
         * must not leak into this run (nor count as its fds). */
        if (sp[1] != 3) {
            dup2(sp[1], 3);
            close(sp[1]);
        }
        fcntl(3, F_SETFD, FD_CLOEXEC);
        close_range(4, ~0u, 0);
        scenario_process(j->sc, j->kind, 3, t);
    }
    setpgid(pid, pid); /* also here, so that a kill never misses the group */
    close(sp[1]);
    close(ep[1]);
    j->pid = pid;
    j->status_fd = sp[0];
    j->err_fd = ep[0];
    j->start = now_s();
    j->deadline = j->start + t;
    j->last_step = -1;
}

static void handle_status_line(job *j, char *line)
{
    if (line[0] == 'S' && line[1] == ' ') {
        if (line[2] >= '0' && line[2] <= '9')
            j->last_step = atoi(line + 2), j->phase[0] = '\0';
        else
            snprintf(j->phase, sizeof j->phase, "%s", line + 2);
    } else if (line[0] == 'F' && line[1] == ' ') {
        append(&j->fail_lines, "%s\n", line + 2);
    } else if (line[0] == 'I' && line[1] == ' ') {
        append(&j->info, "%s\n", line + 2);
    } else if (line[0] == 'P') {
        j->passed_line = true;
    }
}

static bool drain(job *j, int *fd, bool is_status)
{
    char buf[8192];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return false;
    }
    char **b = is_status ? &j->sbuf : &j->ebuf;
    size_t *len = is_status ? &j->slen : &j->elen;
    char *nb = realloc(*b, *len + (size_t)n + 1);
    if (!nb)
        return true;
    memcpy(nb + *len, buf, (size_t)n);
    *len += (size_t)n;
    nb[*len] = '\0';
    *b = nb;
    if (is_status) {
        char *p = *b, *nl;
        while ((nl = memchr(p, '\n', *len - (size_t)(p - *b)))) {
            *nl = '\0';
            handle_status_line(j, p);
            p = nl + 1;
        }
        size_t rest = *len - (size_t)(p - *b);
        memmove(*b, p, rest);
        *len = rest;
    } else if (*len > 65536) {
        /* Keep the tail: sanitizer reports end with their summary. */
        memmove(*b, *b + *len - 65536, 65536);
        *len = 65536;
        (*b)[*len] = '\0';
    }
    return true;
}

static const char *step_line(const job *j, char *buf, size_t size)
{
    if (j->phase[0])
        snprintf(buf, size, "%s", j->phase);
    else if (j->last_step >= 0 && (size_t)j->last_step < j->sc->nsteps) {
        char line[SCN_LINE_MAX * 2];
        scn_format_step(&j->sc->steps[j->last_step], line, sizeof line);
        snprintf(buf, size, "step %d (line %d): %s", j->last_step + 1,
                 j->sc->steps[j->last_step].line, line);
    } else {
        snprintf(buf, size, "setup, before the first step");
    }
    return buf;
}

static bool sanitizer_report(const char *err)
{
    return err && (strstr(err, "ERROR: AddressSanitizer") || strstr(err, "ERROR: LeakSanitizer") ||
                   strstr(err, "WARNING: ThreadSanitizer") || strstr(err, "runtime error:") ||
                   strstr(err, "ERROR: ThreadSanitizer"));
}

static void finish_job(job *j)
{
    j->duration = now_s() - j->start;
    char where[SCN_LINE_MAX * 2 + 64];
    bool ok = j->passed_line && !j->timed_out && WIFEXITED(j->wstatus) &&
              WEXITSTATUS(j->wstatus) == 0 && !sanitizer_report(j->ebuf);
    j->res = ok ? R_PASS : R_FAIL;
    if (!ok) {
        if (j->fail_lines)
            append(&j->detail, "%s", j->fail_lines);
        if (j->timed_out)
            append(&j->detail, "hung: killed after %.0f s at %s\n", j->timeout,
                   step_line(j, where, sizeof where));
        else if (WIFSIGNALED(j->wstatus))
            append(&j->detail, "crashed with signal %d (%s) at %s\n", WTERMSIG(j->wstatus),
                   strsignal(WTERMSIG(j->wstatus)), step_line(j, where, sizeof where));
        else if (!j->fail_lines && (!WIFEXITED(j->wstatus) || WEXITSTATUS(j->wstatus) != 0))
            append(&j->detail, "exited with status %d at %s\n",
                   WIFEXITED(j->wstatus) ? WEXITSTATUS(j->wstatus) : -1,
                   step_line(j, where, sizeof where));
        else if (!j->fail_lines && !j->passed_line)
            append(&j->detail, "ended without a result at %s\n", step_line(j, where, sizeof where));
        if (j->ebuf && j->elen) {
            /* The last lines of stderr. */
            const char *p = j->ebuf + j->elen;
            int lines = 0;
            while (p > j->ebuf && lines < stderr_lines + 1)
                if (*--p == '\n')
                    lines++;
            append(&j->detail, "stderr (tail):\n%s%s", p == j->ebuf ? "" : "  ...",
                   p == j->ebuf ? p : p);
            if (j->ebuf[j->elen - 1] != '\n')
                append(&j->detail, "\n");
        }
    }
}

static void print_job(const job *j)
{
    const char *tag = j->res == R_PASS ? "PASS" : j->res == R_FAIL ? "FAIL" : "SKIP";
    if (j->res == R_SKIP) {
        if (verbose)
            printf("SKIP  %s@%s -- %s\n", j->sc->name, scn_kind_name(j->kind), j->detail);
        return;
    }
    printf("%s  %s@%s (%.0f ms)\n", tag, j->sc->name, scn_kind_name(j->kind), j->duration * 1000);
    if (j->info) {
        const char *p = j->info;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            printf("      %.*s\n", n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    if (j->res == R_FAIL && j->detail) {
        const char *p = j->detail;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            printf("      %.*s\n", n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    fflush(stdout);
}

static int run_jobs(job *jobs, int njobs, int parallel)
{
    int next = 0, running = 0, done = 0;
    while (done < njobs) {
        while (next < njobs && running < parallel) {
            job *j = &jobs[next++];
            if (j->res == R_SKIP) {
                print_job(j);
                done++;
                continue;
            }
            start_job(j);
            running++;
        }
        struct pollfd pfd[64];
        job *owner[64];
        bool is_status[64];
        int n = 0;
        double soonest = now_s() + 0.2;
        for (int i = 0; i < next; i++) {
            job *j = &jobs[i];
            if (j->res != R_PENDING || j->pid <= 0)
                continue;
            if (j->deadline < soonest)
                soonest = j->deadline;
            if (j->status_fd >= 0 && n < 64) {
                pfd[n] = (struct pollfd){j->status_fd, POLLIN, 0};
                owner[n] = j;
                is_status[n++] = true;
            }
            if (j->err_fd >= 0 && n < 64) {
                pfd[n] = (struct pollfd){j->err_fd, POLLIN, 0};
                owner[n] = j;
                is_status[n++] = false;
            }
        }
        int ms = (int)((soonest - now_s()) * 1000);
        if (ms < 0)
            ms = 0;
        if (ms > 200)
            ms = 200;
        if (n)
            poll(pfd, (nfds_t)n, ms);
        else
            sleep_ms(ms > 5 ? 5 : ms);
        for (int i = 0; i < n; i++)
            if (pfd[i].revents)
                drain(owner[i], is_status[i] ? &owner[i]->status_fd : &owner[i]->err_fd,
                      is_status[i]);
        /* Reap: our jobs, and orphans handed to us as subreaper. */
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p <= 0)
                break;
            for (int i = 0; i < next; i++)
                if (jobs[i].pid == p && !jobs[i].exited) {
                    jobs[i].exited = true;
                    jobs[i].wstatus = st;
                    /* Whatever the run left in its group goes with it. */
                    kill(-p, SIGKILL);
                }
        }
        double now = now_s();
        for (int i = 0; i < next; i++) {
            job *j = &jobs[i];
            if (j->res != R_PENDING || j->pid <= 0)
                continue;
            if (!j->exited && now >= j->deadline && !j->timed_out) {
                j->timed_out = true;
                kill(-j->pid, SIGKILL);
                kill(j->pid, SIGKILL);
                j->deadline = now + 5; /* grace for the pipes to close */
            }
            /* Grandchildren may hold the pipes after the run died: give
             * them a moment, then stop listening. */
            if (j->exited && (j->status_fd >= 0 || j->err_fd >= 0) && now >= j->deadline) {
                if (j->status_fd >= 0)
                    close(j->status_fd), j->status_fd = -1;
                if (j->err_fd >= 0)
                    close(j->err_fd), j->err_fd = -1;
            }
            if (j->exited && j->status_fd < 0 && j->err_fd < 0) {
                finish_job(j);
                print_job(j);
                running--;
                done++;
            } else if (j->exited && j->deadline > now + 5) {
                j->deadline = now + 5;
            }
        }
    }
    return 0;
}

/* ---- reports ---- */

static void tsv_field(FILE *f, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++)
        fputc(*p == '\t' || *p == '\n' || *p == '\r' ? ' ' : *p, f);
}

static const char *first_line(const char *s, char *buf, size_t size)
{
    if (!s)
        return "";
    size_t n = strcspn(s, "\n");
    if (n >= size)
        n = size - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

static void md_cell(FILE *f, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '|')
            fputs("\\|", f);
        else if (*p == '\n')
            fputc(' ', f);
        else
            fputc(*p, f);
    }
}

static int write_reports(const char *dir, job *jobs, int njobs, int passed, int failed,
                         int skipped, double total_s)
{
    char path[PATH_MAX];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/scenarios.tsv", dir);
    FILE *f = fopen(path, "we");
    if (!f) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "scenario\twatcher\tstatus\tduration_ms\tfile\tdetail\n");
    for (int i = 0; i < njobs; i++) {
        job *j = &jobs[i];
        char fl[512];
        const char *st = j->res == R_PASS ? "pass" : j->res == R_FAIL ? "fail" : "skip";
        fprintf(f, "%s\t%s\t%s\t%.0f\t", j->sc->name, scn_kind_name(j->kind), st,
                j->duration * 1000);
        tsv_field(f, j->sc->origin);
        fputc('\t', f);
        tsv_field(f, j->res == R_PASS ? (j->info ? first_line(j->info, fl, sizeof fl) : "")
                                      : first_line(j->detail, fl, sizeof fl));
        fputc('\n', f);
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/scenarios.md", dir);
    f = fopen(path, "we");
    if (!f) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# Scenario suite\n\n");
    fprintf(f, "Stories run end to end with real children, threads and signals "
               "(scenarios/README.md). Each scenario runs once per watcher it applies to, "
               "in its own process, with leak checks after it.\n\n");
    fprintf(f, "**%d passed, %d failed**, %d not applicable; %.1f s in all%s.\n\n", passed, failed,
            skipped, total_s, SANITIZED ? " (sanitizer build)" : "");
    fprintf(f, "| scenario | watcher | status | duration | note |\n");
    fprintf(f, "|---|---|---|---:|---|\n");
    for (int i = 0; i < njobs; i++) {
        job *j = &jobs[i];
        char fl[512];
        const char *st = j->res == R_PASS ? "pass" : j->res == R_FAIL ? "**FAIL**" : "n/a";
        fprintf(f, "| %s | %s | %s | ", j->sc->name, scn_kind_name(j->kind), st);
        if (j->res == R_SKIP)
            fprintf(f, " | ");
        else
            fprintf(f, "%.0f ms | ", j->duration * 1000);
        md_cell(f, j->res == R_PASS ? (j->info ? first_line(j->info, fl, sizeof fl) : "")
                                    : first_line(j->detail, fl, sizeof fl));
        fprintf(f, " |\n");
    }
    if (failed) {
        fprintf(f, "\n## Failures\n");
        for (int i = 0; i < njobs; i++) {
            job *j = &jobs[i];
            if (j->res != R_FAIL)
                continue;
            fprintf(f, "\n### %s@%s\n\n%s\n\n```\n%s```\n", j->sc->name, scn_kind_name(j->kind),
                    j->sc->origin, j->detail ? j->detail : "");
        }
    }
    fprintf(f, "\n## Scenarios\n\n");
    const scn_scenario *prev = NULL;
    for (int i = 0; i < njobs; i++) {
        const scn_scenario *sc = jobs[i].sc;
        if (sc == prev)
            continue;
        prev = sc;
        fprintf(f, "- **%s** (`%s`): ", sc->name, sc->origin);
        md_cell(f, sc->description);
        if (sc->clauses[0]) {
            fprintf(f, " Clauses: ");
            md_cell(f, sc->clauses);
            fprintf(f, ".");
        }
        fprintf(f, "\n");
    }
    fclose(f);
    return 0;
}

/* ---- main ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_path(char ***files, int *n, const char *path)
{
    struct stat stt;
    if (stat(path, &stt) != 0) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    if (!S_ISDIR(stt.st_mode)) {
        *files = realloc(*files, (size_t)(*n + 1) * sizeof **files);
        (*files)[(*n)++] = strdup(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d)
        return;
    char **found = NULL;
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".scn") == 0) {
            found = realloc(found, (size_t)(nf + 1) * sizeof *found);
            if (asprintf(&found[nf], "%s/%s", path, e->d_name) < 0)
                exit(2);
            nf++;
        }
    }
    closedir(d);
    if (nf > 1)
        qsort(found, (size_t)nf, sizeof *found, cmp_str);
    for (int i = 0; i < nf; i++) {
        *files = realloc(*files, (size_t)(*n + 1) * sizeof **files);
        (*files)[(*n)++] = found[i];
    }
    free(found);
}

/* --roundtrip: every step formats to a line that parses back to an equal
 * step, and every scenario written with scn_write reads back the same. */
static int roundtrip(char **files, int nfiles)
{
    int bad = 0;
    for (int i = 0; i < nfiles; i++) {
        scn_scenario sc, back;
        char err[512];
        if (scn_parse_file(files[i], &sc, err, sizeof err) != 0) {
            printf("roundtrip: %s\n", err);
            bad++;
            continue;
        }
        for (size_t k = 0; k < sc.nsteps; k++) {
            char line[SCN_LINE_MAX * 2];
            scn_step again;
            scn_format_step(&sc.steps[k], line, sizeof line);
            if (scn_parse_step(line, &again, err, sizeof err) != 0 ||
                !scn_step_equal(&sc.steps[k], &again)) {
                printf("roundtrip: %s:%d: '%s' does not read back (%s)\n", files[i],
                       sc.steps[k].line, line, err);
                bad++;
            }
        }
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        if (!mem || scn_write(&sc, mem) != 0) {
            printf("roundtrip: %s: cannot write\n", files[i]);
            bad++;
        }
        if (mem)
            fclose(mem);
        if (text && scn_parse_text(text, files[i], &back, err, sizeof err) == 0) {
            bool same = back.nsteps == sc.nsteps && strcmp(back.name, sc.name) == 0 &&
                        back.watchers == sc.watchers && back.except == sc.except &&
                        back.timeout == sc.timeout && strcmp(back.description, sc.description) == 0;
            for (size_t k = 0; same && k < sc.nsteps; k++)
                same = scn_step_equal(&sc.steps[k], &back.steps[k]);
            if (!same) {
                printf("roundtrip: %s: scn_write output reads back differently\n", files[i]);
                bad++;
            }
            scn_free(&back);
        } else if (text) {
            printf("roundtrip: %s: scn_write output does not parse: %s\n", files[i], err);
            bad++;
        }
        free(text);
        scn_free(&sc);
    }
    printf("roundtrip: %d file(s), %d problem(s)\n", nfiles, bad);
    return bad ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: runner [--reports DIR] [-j N] [--watchers LIST] [--only NAME]\n"
            "              [--timeout-scale X] [--stderr-lines N] [-v] PATH...\n"
            "       runner --roundtrip PATH...   (check parse/format of the files)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *reports = NULL;
    int parallel = 1;
    unsigned only_kinds = SCN_KINDS_ALL;
    const char *only = NULL;
    bool do_roundtrip = false;
    char **files = NULL;
    int nfiles = 0;
    timeout_scale = SANITIZED ? 4.0 : 1.0;
    const char *env_scale = getenv("SCN_TIMEOUT_SCALE");
    if (env_scale && atof(env_scale) > 0)
        timeout_scale = atof(env_scale);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--reports") == 0 && i + 1 < argc) {
            reports = argv[++i];
        } else if (strcmp(a, "-j") == 0 && i + 1 < argc) {
            parallel = atoi(argv[++i]);
            if (parallel < 1 || parallel > 32)
                usage();
        } else if (strcmp(a, "--watchers") == 0 && i + 1 < argc) {
            char *list = strdup(argv[++i]);
            only_kinds = 0;
            for (char *s = NULL, *w = strtok_r(list, ", ", &s); w; w = strtok_r(NULL, ", ", &s)) {
                if (strcmp(w, "all") == 0) {
                    only_kinds = SCN_KINDS_ALL;
                    continue;
                }
                int k = scn_kind_index(w);
                if (k < 0) {
                    fprintf(stderr, "runner: unknown watcher '%s'\n", w);
                    return 2;
                }
                only_kinds |= 1u << k;
            }
            free(list);
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(a, "--timeout-scale") == 0 && i + 1 < argc) {
            timeout_scale = atof(argv[++i]);
            if (timeout_scale <= 0)
                usage();
        } else if (strcmp(a, "-v") == 0) {
            verbose = true;
        } else if (strcmp(a, "--stderr-lines") == 0 && i + 1 < argc) {
            stderr_lines = atoi(argv[++i]);
        } else if (strcmp(a, "--roundtrip") == 0) {
            do_roundtrip = true;
        } else if (a[0] == '-') {
            usage();
        } else {
            add_path(&files, &nfiles, a);
        }
    }
    if (!nfiles)
        usage();
    if (do_roundtrip) {
        int rc = roundtrip(files, nfiles);
        for (int i = 0; i < nfiles; i++)
            free(files[i]);
        free(files);
        return rc;
    }

    /* Orphans of killed runs come to us, and are reaped in run_jobs. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* 1,000 children in flight each hold a pipe or a pidfd. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Whatever the shell ignored or blocked, the scenario processes and
     * their children start from the defaults (signal_state.h). */
    signal_state_reset();
    signal(SIGPIPE, SIG_IGN);

    scn_scenario *scs = calloc((size_t)nfiles, sizeof *scs);
    int nparse_fail = 0;
    job *jobs = NULL;
    int njobs = 0;
    for (int i = 0; i < nfiles; i++) {
        char err[512];
        if (scn_parse_file(files[i], &scs[i], err, sizeof err) != 0) {
            printf("FAIL  %s: cannot be read: %s\n", files[i], err);
            nparse_fail++;
            continue;
        }
        if (only && strcmp(only, scs[i].name) != 0)
            continue;
        for (int k = 0; k < SCN_NKINDS; k++) {
            if (!(only_kinds & (1u << k)))
                continue;
            jobs = realloc(jobs, (size_t)(njobs + 1) * sizeof *jobs);
            job *j = &jobs[njobs++];
            memset(j, 0, sizeof *j);
            j->sc = &scs[i];
            j->kind = k;
            j->res = R_PENDING;
            j->status_fd = j->err_fd = -1;
            if (!(scs[i].watchers & (1u << k))) {
                /* Still a row in the reports: every scenario x watcher. */
                j->res = R_SKIP;
                append(&j->detail, "written for");
                for (int o = 0; o < SCN_NKINDS; o++)
                    if (scs[i].watchers & (1u << o))
                        append(&j->detail, " %s", scn_kind_name(o));
                append(&j->detail, " only");
            } else if (scs[i].except & (1u << k)) {
                j->res = R_SKIP;
                append(&j->detail, "%s", scs[i].except_reason[k]);
            }
        }
    }

    double t0 = now_s();
    run_jobs(jobs, njobs, parallel);
    double total = now_s() - t0;

    int passed = 0, failed = nparse_fail, skipped = 0;
    for (int i = 0; i < njobs; i++) {
        if (jobs[i].res == R_PASS)
            passed++;
        else if (jobs[i].res == R_FAIL)
            failed++;
        else
            skipped++;
    }
    if (reports && write_reports(reports, jobs, njobs, passed, failed, skipped, total) != 0)
        failed++;
    if (reports)
        printf("reports: %s/scenarios.md, %s/scenarios.tsv\n", reports, reports);
    printf("%d passed, %d failed\n", passed, failed);

    for (int i = 0; i < njobs; i++) {
        free(jobs[i].detail);
        free(jobs[i].info);
        free(jobs[i].sbuf);
        free(jobs[i].ebuf);
        free(jobs[i].fail_lines);
    }
    free(jobs);
    for (int i = 0; i < nfiles; i++) {
        scn_free(&scs[i]);
        free(files[i]);
    }
    free(scs);
    free(files);
    return failed || passed == 0 ? 1 : 0;
}
