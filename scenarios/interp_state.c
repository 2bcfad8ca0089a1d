/*
 * interp_state.c — the scenario process's state and the helpers every part of
 * the interpreter uses (interp.h).
 */
#include "interp.h"

#include "alloc_count.h"
#include "signal_state.h"

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

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_ms(int ms)
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
void describe_value(int v, char *buf, size_t size)
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

scn_state S;

pol_slot pol_slots[SCN_MAX_POLICIES];
cbarg cbargs[SCN_MAX_CHILDREN][SCN_MAX_HANDLERS];
_Thread_local worker *tls_worker;

/* The log, under its own leaf lock (the hook runs inside library code). */
static pthread_mutex_t log_m = PTHREAD_MUTEX_INITIALIZER;
static log_line *logs;
static size_t nlogs, caplogs, logs_dropped;

/* ------------------------------------------------------------------------ */
/* Reporting to the runner                                                  */
/* ------------------------------------------------------------------------ */

void status_line(const char *fmt, ...)
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
_Noreturn void fail_step(const scn_step *st, const char *expected, const char *actual)
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

_Noreturn void fail_phase(const char *phase, const char *fmt, ...)
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

void log_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
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
void substitute(const char *in, char *out, size_t size)
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

int log_count(const scn_step *st, const char *needle)
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
int loop_slot_locked(evpol_loop *loop)
{
    if (!loop)
        return SCN_NONE;
    for (int i = 0; i < SCN_MAX_LOOPS; i++)
        if (S.loops[i] == loop)
            return i;
    return -2;
}

void child_cb(pid_t pid, int returncode, void *arg)
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

void reset_child_locked(int ci)
{
    child_rec *r = &S.children[ci];
    if (r->release_fd >= 0)
        close(r->release_fd);
    memset(r, 0, sizeof *r);
    r->release_fd = -1;
    r->thread = r->loop = r->handler = SCN_NONE;
}

/* Is `pid` our child: 2 running, 1 exited (zombie), 0 not ours (reaped). */
int child_state(pid_t pid)
{
    if (pid <= 0)
        return 0;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return 0;
    return si.si_pid == pid ? 1 : 2;
}

const char *child_state_name(pid_t pid)
{
    switch (child_state(pid)) {
    case 2: return "still running";
    case 1: return "exited, not reaped (zombie)";
    default: return "reaped";
    }
}

/* The pids of every child of this process, from /proc/self/task/<tid>/children. */
int list_children(pid_t *out, int cap)
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

void snap_fds(fd_set_snap *s)
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

int count_fds(void)
{
    return count_dir("/proc/self/fd") - 1;
}

long rss_kib(void)
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

/* ------------------------------------------------------------------------ */
/* Counting the library's process creations                                 */
/* ------------------------------------------------------------------------ */

/* The real kernel's table with spawn wrapped to count calls: every process
 * evpol creates goes through it (the seam), so "no process created" is
 * exact, even for one the library would kill and reap at once. */
static int (*real_spawn)(pid_t *, const evpol_sys_spawn_request *);
atomic_long spawn_calls;

static int counting_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    atomic_fetch_add(&spawn_calls, 1);
    return real_spawn(pid, req);
}

void install_counting_seam(void)
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

int cp_get_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    count_call(self, SCN_M_GET_EVENT_LOOP);
    return evpol_policy_default_get_event_loop(self, out, err);
}
int cp_set_event_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    count_call(self, SCN_M_SET_EVENT_LOOP);
    return evpol_policy_default_set_event_loop(self, loop, err);
}
int cp_new_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    count_call(self, SCN_M_NEW_EVENT_LOOP);
    return evpol_policy_default_new_event_loop(self, out, err);
}
int cp_get_child_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err)
{
    count_call(self, SCN_M_GET_CHILD_WATCHER);
    return evpol_policy_default_get_child_watcher(self, out, err);
}
int cp_set_child_watcher(evpol_policy *self, evpol_watcher *w, evpol_error *err)
{
    count_call(self, SCN_M_SET_CHILD_WATCHER);
    return evpol_policy_default_set_child_watcher(self, w, err);
}

/* ------------------------------------------------------------------------ */
/* Fork step: what the forked child checks (POL-21)                         */
/* ------------------------------------------------------------------------ */

int fork_child_checks(void)
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

evpol_loop *loop_ref_at(scn_ref r)
{
    return r.type == SCN_T_LOOP ? S.loops[r.index] : NULL;
}
evpol_watcher *watcher_at(scn_ref r)
{
    return r.type == SCN_T_WATCHER ? S.watchers[r.index] : NULL;
}
evpol_policy *policy_at(scn_ref r)
{
    return r.type == SCN_T_POLICY ? S.policies[r.index] : NULL;
}

/* Store a reference in a slot, dropping the previous one outside S.m: the
 * last unref runs library code, and callbacks (child_cb) take S.m. */
#define SWAP_SLOT(slot, ref, old) \
    (pthread_mutex_lock(&S.m), (old) = (slot), (slot) = (ref), pthread_mutex_unlock(&S.m))
void put_loop(int i, evpol_loop *l)
{
    evpol_loop *old;
    SWAP_SLOT(S.loops[i], l, old);
    evpol_loop_unref(old);
}
void put_watcher(int i, evpol_watcher *w)
{
    evpol_watcher *old;
    SWAP_SLOT(S.watchers[i], w, old);
    evpol_watcher_unref(old);
}
void put_policy(int i, evpol_policy *p)
{
    evpol_policy *old;
    SWAP_SLOT(S.policies[i], p, old);
    evpol_policy_unref(old);
}

pid_t child_pid(int ci)
{
    pthread_mutex_lock(&S.m);
    pid_t pid = S.children[ci].pid;
    pthread_mutex_unlock(&S.m);
    return pid;
}

/* ------------------------------------------------------------------------ */
