/*
 * evbench.c — one benchmark run of one implementation, in a fresh process.
 *
 *   evbench IMPL throughput N K
 *   evbench IMPL latency N STAMP_EXIT
 *   evbench IMPL pending P1,P2,... M WARMUP
 *
 * IMPL is one of the evpol watchers (evpol-threaded, evpol-multiloop,
 * evpol-safe, evpol-fast, evpol-pidfd; children started with
 * evpol_loop_spawn, i.e. real posix_spawn) or a peer written here on the
 * same workload: raw-wait (posix_spawn + blocking waitpid(-1)), raw-pidfd
 * (posix_spawn + pidfd_open + epoll) and libuv (uv_spawn). CPython's
 * watchers are measured by pybench.py with the same tests and output.
 *
 * Each run is its own process because the watchers change process-wide
 * state (a SIGCHLD disposition, reaping every child) and because resident
 * memory is measured as a delta. The results are printed as "key=value"
 * lines for bench/run.py; anything that shows the benchmark itself broke
 * (a spawn failing, an unexpected exit status, an exit never reported: the
 * alarm set below kills the run) exits non-zero.
 *
 * Why the code is callback-driven even for the raw peers: Safe and Fast are
 * active only while their loop runs, so every spawn has to happen from a
 * callback; the peers follow the same state machine so that the work per
 * child is identical.
 */
#include <evpol.h>
#include <uv.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("evbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- jobs ---- */

typedef enum job_kind { JOB_TRUE, JOB_STAMP, JOB_SLEEP } job_kind;

typedef struct job {
    job_kind kind;
    long slot;       /* JOB_STAMP: slot in the stamp file; JOB_SLEEP: index */
    pid_t pid;
    uint64_t t_spawn;
    struct job *hnext; /* raw-wait's pid table */
    int pidfd;         /* raw-pidfd */
    uv_process_t uvp;  /* libuv */
} job;

/* The benchmark's reaction to an exit; engines call it with the status
 * converted to asyncio's returncode. It never frees the job. */
static void job_exited(job *j, int rc);

static int returncode(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    return 255;
}

/* ---- engines ---- */

typedef struct engine {
    const char *name;
    void (*init)(void);
    /* Start argv and arrange for job_exited(j, rc); sets j->pid. */
    void (*spawn)(job *j, char *const argv[]);
    /* Call kickoff from inside the running loop, then run until stop. */
    void (*run)(void (*kickoff)(void));
    void (*stop)(void);
    void (*fini)(void);
} engine;

static void (*g_kickoff)(void);
static int g_stop;

/* raw-wait: posix_spawn, then block in waitpid(-1). The pid table maps an
 * exit back to its job. */

#define PID_BUCKETS 4096
static job *pid_tab[PID_BUCKETS];

static void pid_insert(job *j)
{
    unsigned b = (unsigned)j->pid % PID_BUCKETS;
    j->hnext = pid_tab[b];
    pid_tab[b] = j;
}

static job *pid_remove(pid_t pid)
{
    for (job **pp = &pid_tab[(unsigned)pid % PID_BUCKETS]; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->pid == pid) {
            job *j = *pp;
            *pp = j->hnext;
            return j;
        }
    }
    return NULL;
}

static void raw_spawn_only(job *j, char *const argv[])
{
    int e = posix_spawn(&j->pid, argv[0], NULL, NULL, argv, environ);
    if (e)
        die("posix_spawn(%s): %s", argv[0], strerror(e));
}

static void rawwait_init(void)
{
}

static void rawwait_spawn(job *j, char *const argv[])
{
    raw_spawn_only(j, argv);
    pid_insert(j);
}

static void rawwait_run(void (*kickoff)(void))
{
    kickoff();
    while (!g_stop) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            die("waitpid: %s (an exit was lost)", strerror(errno));
        }
        job *j = pid_remove(pid);
        if (!j)
            die("waitpid: unknown pid %ld", (long)pid);
        job_exited(j, returncode(status));
        free(j);
    }
}

static void raw_stop(void)
{
    g_stop = 1;
}

static void raw_fini(void)
{
}

/* raw-pidfd: posix_spawn, pidfd_open, epoll; waitid(P_PIDFD) reaps. */

static int g_epfd = -1;

static void rawpidfd_init(void)
{
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0)
        die("epoll_create1: %s", strerror(errno));
}

static void rawpidfd_spawn(job *j, char *const argv[])
{
    raw_spawn_only(j, argv);
    j->pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
    if (j->pidfd < 0)
        die("pidfd_open: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = j};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, j->pidfd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void rawpidfd_run(void (*kickoff)(void))
{
    kickoff();
    struct epoll_event evs[64];
    while (!g_stop) {
        int n = epoll_wait(g_epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            job *j = evs[i].data.ptr;
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PIDFD, (id_t)j->pidfd, &si, WEXITED) != 0)
                die("waitid(P_PIDFD): %s (an exit was lost)", strerror(errno));
            /* Out of the set before close: a child between vfork and exec
             * may still hold a copy of the pidfd, and epoll forgets an fd
             * only when its last copy is closed. */
            if (epoll_ctl(g_epfd, EPOLL_CTL_DEL, j->pidfd, NULL) != 0)
                die("epoll_ctl(DEL): %s", strerror(errno));
            close(j->pidfd);
            int rc = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
            job_exited(j, rc);
            free(j);
        }
    }
}

static void rawpidfd_fini(void)
{
    close(g_epfd);
}

/* libuv: uv_spawn with the three standard streams inherited, as the other
 * implementations do (libuv would otherwise open /dev/null in the child). */

static uv_loop_t *g_uv;

static void uvimpl_init(void)
{
    g_uv = uv_default_loop();
}

static void uv_closed(uv_handle_t *h)
{
    free(h->data);
}

static void uv_exited(uv_process_t *p, int64_t exit_status, int term_signal)
{
    job *j = p->data;
    job_exited(j, term_signal ? -term_signal : (int)exit_status);
    uv_close((uv_handle_t *)p, uv_closed);
}

static void uvimpl_spawn(job *j, char *const argv[])
{
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
    }
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = uv_exited;
    o.file = argv[0];
    o.args = (char **)argv;
    o.stdio_count = 3;
    o.stdio = stdio;
    j->uvp.data = j;
    int e = uv_spawn(g_uv, &j->uvp, &o);
    if (e)
        die("uv_spawn(%s): %s", argv[0], uv_strerror(e));
    j->pid = j->uvp.pid;
}

static void uvimpl_run(void (*kickoff)(void))
{
    kickoff();
    while (!g_stop)
        uv_run(g_uv, UV_RUN_ONCE);
}

static void uvimpl_fini(void)
{
    /* Let the last close callbacks run. */
    uv_run(g_uv, UV_RUN_NOWAIT);
}

/* evpol: one loop on the main thread, the watcher under test installed on
 * the default policy and attached to that loop (Safe, Fast and MultiLoop
 * need the attachment; Threaded and Pidfd ignore it). */

static evpol_watcher_kind g_kind;
static evpol_loop *g_loop;
static evpol_watcher *g_watcher;
static long g_warnings;

static void ev_log(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    (void)arg;
    /* set_child_watcher is deprecated, as in CPython: expected, not news. */
    if (cat == EVPOL_LOG_CAT_DEPRECATION || level < EVPOL_LOG_WARNING)
        return;
    if (g_warnings++ < 5)
        fprintf(stderr, "evbench: evpol warning: %s\n", msg);
}

static void evimpl_init(void)
{
    evpol_error err;
    evpol_set_log_hook(ev_log, NULL);
    if (evpol_loop_new(EVPOL_BACKEND_DEFAULT, &g_loop, &err) != 0)
        die("evpol_loop_new: %s", err.message);
    if (evpol_watcher_new(g_kind, &g_watcher, &err) != 0)
        die("evpol_watcher_new: %s", err.message);
    if (evpol_watcher_attach_loop(g_watcher, g_loop, &err) != 0)
        die("attach_loop: %s", err.message);
    if (evpol_set_child_watcher(g_watcher, &err) != 0)
        die("set_child_watcher: %s", err.message);
}

static void ev_exited(pid_t pid, int rc, void *arg)
{
    job *j = arg;
    if (pid != j->pid)
        die("evpol reported pid %ld for child %ld", (long)pid, (long)j->pid);
    job_exited(j, rc);
    free(j);
}

static void evimpl_spawn(job *j, char *const argv[])
{
    evpol_spawn_options o;
    memset(&o, 0, sizeof o);
    o.file = argv[0];
    o.argv = argv;
    o.on_exit = ev_exited;
    o.arg = j;
    evpol_spawn_result res;
    evpol_error err;
    if (evpol_loop_spawn(g_loop, &o, &res, &err) != 0)
        die("evpol_loop_spawn(%s): %s", argv[0], err.message);
    j->pid = res.pid;
}

static void ev_kick(void *arg)
{
    (void)arg;
    g_kickoff();
}

static void evimpl_run(void (*kickoff)(void))
{
    evpol_error err;
    g_kickoff = kickoff;
    if (evpol_loop_call_soon_threadsafe(g_loop, ev_kick, NULL, &err) != 0)
        die("call_soon_threadsafe: %s", err.message);
    if (evpol_loop_run(g_loop, &err) != 0)
        die("evpol_loop_run: %s", err.message);
}

static void evimpl_stop(void)
{
    evpol_loop_stop(g_loop, NULL);
}

static void evimpl_fini(void)
{
    evpol_error err;
    if (evpol_set_child_watcher(NULL, &err) != 0)
        die("set_child_watcher(NULL): %s", err.message);
    evpol_watcher_unref(g_watcher);
    if (evpol_loop_close(g_loop, &err) != 0)
        die("evpol_loop_close: %s", err.message);
    evpol_loop_unref(g_loop);
    if (g_warnings)
        die("%ld unexpected evpol warnings", g_warnings);
}

static const engine engines[] = {
    {"raw-wait", rawwait_init, rawwait_spawn, rawwait_run, raw_stop, raw_fini},
    {"raw-pidfd", rawpidfd_init, rawpidfd_spawn, rawpidfd_run, raw_stop, rawpidfd_fini},
    {"libuv", uvimpl_init, uvimpl_spawn, uvimpl_run, raw_stop, uvimpl_fini},
    {"evpol-threaded", evimpl_init, evimpl_spawn, evimpl_run, evimpl_stop, evimpl_fini},
    {"evpol-multiloop", evimpl_init, evimpl_spawn, evimpl_run, evimpl_stop, evimpl_fini},
    {"evpol-safe", evimpl_init, evimpl_spawn, evimpl_run, evimpl_stop, evimpl_fini},
    {"evpol-fast", evimpl_init, evimpl_spawn, evimpl_run, evimpl_stop, evimpl_fini},
    {"evpol-pidfd", evimpl_init, evimpl_spawn, evimpl_run, evimpl_stop, evimpl_fini},
};
static const evpol_watcher_kind engine_kinds[] = {
    0, 0, 0, EVPOL_WATCHER_THREADED, EVPOL_WATCHER_MULTILOOP, EVPOL_WATCHER_SAFE,
    EVPOL_WATCHER_FAST, EVPOL_WATCHER_PIDFD,
};

static const engine *E;

/* ---- process figures ---- */

typedef struct usage {
    long rss_kib, vsz_kib, threads, fds;
} usage;

static usage usage_now(void)
{
    usage u = {-1, -1, -1, 0};
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        die("/proc/self/status: %s", strerror(errno));
    char line[256];
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld", &u.rss_kib);
        sscanf(line, "VmSize: %ld", &u.vsz_kib);
        sscanf(line, "Threads: %ld", &u.threads);
    }
    fclose(f);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("/proc/self/fd: %s", strerror(errno));
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            u.fds++;
    closedir(d);
    u.fds--; /* the directory's own fd */
    return u;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted values. */
static double pct_us(const uint64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static double median_us(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    return n % 2 ? (double)v[n / 2] / 1000.0 : (double)(v[n / 2 - 1] + v[n / 2]) / 2000.0;
}

/* ---- the workloads ---- */

/* CPU time of the whole process (every thread), or of its reaped children:
 * less sensitive than wall time to the machine's other load. */
static uint64_t cpu_ns(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static uint64_t cpu_self0, cpu_children0;

static char *argv_true[] = {"/bin/true", NULL};
static char *argv_sleep[] = {"/bin/sleep", "1000", NULL};

static job *new_job(job_kind kind)
{
    job *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    j->pidfd = -1;
    return j;
}

static void spawn_true(void)
{
    job *j = new_job(JOB_TRUE);
    j->t_spawn = now_ns();
    E->spawn(j, argv_true);
}

/* throughput: N children of /bin/true, at most K at once. */

static long tp_n, tp_k, tp_started, tp_done;
static uint64_t tp_t0, tp_t1;

static void tp_kickoff(void)
{
    cpu_self0 = cpu_ns(RUSAGE_SELF);
    cpu_children0 = cpu_ns(RUSAGE_CHILDREN);
    tp_t0 = now_ns();
    while (tp_started < tp_k && tp_started < tp_n) {
        tp_started++;
        spawn_true();
    }
}

/* latency: children of stamp_exit, one at a time. */

static const char *lat_prog;
static char lat_file[64];
static volatile uint64_t *lat_stamps;
static uint64_t *lat_samples;
static long lat_n, lat_warm;

/* The child sleeps this long before its stamp and exit, so that the exit
 * finds its registration complete (see stamp_exit.c). */
#define LAT_DELAY_US "1000"

static void spawn_stamp(long slot)
{
    char num[32];
    snprintf(num, sizeof num, "%ld", slot);
    char *argv[] = {(char *)lat_prog, lat_file, num, LAT_DELAY_US, NULL};
    job *j = new_job(JOB_STAMP);
    j->slot = slot;
    E->spawn(j, argv);
}

static void lat_kickoff(void)
{
    spawn_stamp(0);
}

/* pending: memory per pending child and the cost of one spawn-and-reap
 * while P children of sleep are pending. */

static long *pend_levels;
static int pend_nlevels, pend_level;
static long pend_m, pend_warm, pend_ops_done;
static job **sleepers;
static long nsleepers, sleepers_alive;
static int killing;
static uint64_t *op_samples;
static usage u_base, u_peak;
static double *level_median_us, *level_mean_us, *level_cpu_us, *level_child_cpu_us;

static void pend_start_level(void);

static void pend_next_op(void)
{
    spawn_true();
}

/* Wait until every sleeper has reached its sleep, so that the measured
 * spawns do not compete with a thousand dynamic loaders starting up. */
static void wait_sleepers_settled(void)
{
    uint64_t deadline = now_ns() + 10ull * 1000000000u;
    long from = 0;
    while (from < nsleepers && now_ns() < deadline) {
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)sleepers[from]->pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        char *rp = n > 0 ? (buf[n] = '\0', strrchr(buf, ')')) : NULL;
        /* "S" once in nanosleep; the comm must also be sleep's, not ours. */
        if (rp && rp[1] == ' ' && rp[2] == 'S' && strstr(buf, "(sleep)")) {
            from++;
            continue;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void pend_start_level(void)
{
    long target = pend_levels[pend_level];
    while (nsleepers < target) {
        job *j = new_job(JOB_SLEEP);
        j->slot = nsleepers;
        sleepers[nsleepers++] = j;
        sleepers_alive++;
        E->spawn(j, argv_sleep);
    }
    wait_sleepers_settled();
    pend_ops_done = 0;
    cpu_self0 = cpu_ns(RUSAGE_SELF);
    cpu_children0 = cpu_ns(RUSAGE_CHILDREN);
    pend_next_op();
}

static void pend_kill_all(void)
{
    killing = 1;
    for (long i = 0; i < nsleepers; i++)
        if (kill(sleepers[i]->pid, SIGKILL) != 0)
            die("kill(%ld): %s", (long)sleepers[i]->pid, strerror(errno));
}

static void pend_kickoff(void)
{
    pend_ops_done = 0;
    pend_next_op();
}

static void pend_op_done(uint64_t dt)
{
    if (pend_warm > 0) {
        /* Warm-up: caches, the loop's tables, malloc's arenas. */
        if (--pend_warm > 0) {
            pend_next_op();
            return;
        }
        u_base = usage_now();
        pend_level = 0;
        pend_start_level();
        return;
    }
    op_samples[pend_ops_done++] = dt;
    if (pend_ops_done < pend_m) {
        pend_next_op();
        return;
    }
    level_cpu_us[pend_level] = (double)(cpu_ns(RUSAGE_SELF) - cpu_self0) / (double)pend_m / 1000.0;
    level_child_cpu_us[pend_level] =
        (double)(cpu_ns(RUSAGE_CHILDREN) - cpu_children0) / (double)pend_m / 1000.0;
    double sum = 0;
    for (long i = 0; i < pend_m; i++)
        sum += (double)op_samples[i];
    level_mean_us[pend_level] = sum / (double)pend_m / 1000.0;
    level_median_us[pend_level] = median_us(op_samples, (size_t)pend_m);
    if (++pend_level < pend_nlevels) {
        pend_start_level();
        return;
    }
    u_peak = usage_now();
    pend_kill_all();
}

/* ---- dispatch ---- */

static enum { T_THROUGHPUT, T_LATENCY, T_PENDING } g_test;

static void job_exited(job *j, int rc)
{
    switch (j->kind) {
    case JOB_TRUE:
        if (rc != 0)
            die("/bin/true (pid %ld) returned %d: exit status lost", (long)j->pid, rc);
        if (g_test == T_THROUGHPUT) {
            if (++tp_done == tp_n) {
                tp_t1 = now_ns();
                E->stop();
            } else if (tp_started < tp_n) {
                tp_started++;
                spawn_true();
            }
        } else {
            pend_op_done(now_ns() - j->t_spawn);
        }
        return;
    case JOB_STAMP: {
        uint64_t t = now_ns();
        if (rc != 0)
            die("stamp_exit (pid %ld) returned %d", (long)j->pid, rc);
        uint64_t stamp = lat_stamps[j->slot];
        if (stamp == 0 || stamp > t)
            die("stamp_exit %ld left no valid stamp", j->slot);
        if (j->slot >= lat_warm)
            lat_samples[j->slot - lat_warm] = t - stamp;
        if (j->slot + 1 < lat_warm + lat_n)
            spawn_stamp(j->slot + 1);
        else
            E->stop();
        return;
    }
    case JOB_SLEEP:
        if (!killing)
            die("sleep (pid %ld) exited with %d before it was killed", (long)j->pid, rc);
        if (rc != -SIGKILL)
            die("sleep (pid %ld) returned %d, not -SIGKILL: exit status lost", (long)j->pid, rc);
        sleepers[j->slot] = NULL;
        if (--sleepers_alive == 0)
            E->stop();
        return;
    }
}

static long parse_long(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0)
        die("bad %s: %s", what, s);
    return v;
}

static void usage_exit(void)
{
    fprintf(stderr, "usage: evbench IMPL throughput N K\n"
                    "       evbench IMPL latency N STAMP_EXIT\n"
                    "       evbench IMPL pending P1,P2,... M WARMUP\n"
                    "IMPL:");
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        fprintf(stderr, " %s", engines[i].name);
    fputc('\n', stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage_exit();
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++) {
        if (strcmp(argv[1], engines[i].name) == 0) {
            E = &engines[i];
            g_kind = engine_kinds[i];
        }
    }
    if (!E)
        usage_exit();
    /* The hang guard: a lost exit leaves the run waiting forever. */
    const char *limit = getenv("EVBENCH_TIMEOUT");
    alarm(limit ? (unsigned)parse_long(limit, "EVBENCH_TIMEOUT") : 300);

    void (*kickoff)(void);
    if (strcmp(argv[2], "throughput") == 0 && argc == 5) {
        g_test = T_THROUGHPUT;
        tp_n = parse_long(argv[3], "N");
        tp_k = parse_long(argv[4], "K");
        if (tp_n < 1 || tp_k < 1)
            usage_exit();
        kickoff = tp_kickoff;
    } else if (strcmp(argv[2], "latency") == 0 && argc == 5) {
        g_test = T_LATENCY;
        lat_n = parse_long(argv[3], "N");
        if (lat_n < 1)
            usage_exit();
        lat_warm = 5;
        lat_prog = argv[4];
        snprintf(lat_file, sizeof lat_file, "/dev/shm/evbench-%ld", (long)getpid());
        int fd = open(lat_file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            die("%s: %s", lat_file, strerror(errno));
        size_t len = (size_t)(lat_n + lat_warm) * sizeof(uint64_t);
        if (ftruncate(fd, (off_t)len) != 0)
            die("ftruncate: %s", strerror(errno));
        lat_stamps = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (lat_stamps == MAP_FAILED)
            die("mmap: %s", strerror(errno));
        close(fd);
        lat_samples = xcalloc((size_t)lat_n, sizeof *lat_samples);
        kickoff = lat_kickoff;
    } else if (strcmp(argv[2], "pending") == 0 && argc == 6) {
        g_test = T_PENDING;
        char *list = argv[3];
        pend_levels = xcalloc(strlen(list) + 1, sizeof *pend_levels);
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
            pend_levels[pend_nlevels++] = parse_long(tok, "P");
        for (int i = 0; i < pend_nlevels; i++)
            if (pend_levels[i] < 1 || (i && pend_levels[i] <= pend_levels[i - 1]))
                die("pending levels must be increasing and positive");
        pend_m = parse_long(argv[4], "M");
        pend_warm = parse_long(argv[5], "WARMUP");
        if (pend_m < 1 || pend_nlevels < 1)
            usage_exit();
        if (pend_warm < 1)
            pend_warm = 1;
        sleepers = xcalloc((size_t)pend_levels[pend_nlevels - 1], sizeof *sleepers);
        op_samples = xcalloc((size_t)pend_m, sizeof *op_samples);
        level_median_us = xcalloc((size_t)pend_nlevels, sizeof *level_median_us);
        level_mean_us = xcalloc((size_t)pend_nlevels, sizeof *level_mean_us);
        level_cpu_us = xcalloc((size_t)pend_nlevels, sizeof *level_cpu_us);
        level_child_cpu_us = xcalloc((size_t)pend_nlevels, sizeof *level_child_cpu_us);
        kickoff = pend_kickoff;
    } else {
        usage_exit();
    }

    E->init();
    E->run(kickoff);
    E->fini();

    printf("impl=%s\n", E->name);
    if (g_test == T_THROUGHPUT) {
        double secs = (double)(tp_t1 - tp_t0) / 1e9;
        printf("n=%ld\nk=%ld\nelapsed_s=%.6f\nops_per_s=%.2f\n", tp_n, tp_k, secs,
               (double)tp_n / secs);
        printf("cpu_us_per_child=%.2f\nchild_cpu_us_per_child=%.2f\n",
               (double)(cpu_ns(RUSAGE_SELF) - cpu_self0) / (double)tp_n / 1000.0,
               (double)(cpu_ns(RUSAGE_CHILDREN) - cpu_children0) / (double)tp_n / 1000.0);
    } else if (g_test == T_LATENCY) {
        unlink(lat_file);
        qsort(lat_samples, (size_t)lat_n, sizeof *lat_samples, cmp_u64);
        printf("n=%ld\nlat_median_us=%.2f\nlat_p99_us=%.2f\nlat_min_us=%.2f\n", lat_n,
               median_us(lat_samples, (size_t)lat_n), pct_us(lat_samples, (size_t)lat_n, 99),
               (double)lat_samples[0] / 1000.0);
    } else {
        long pmax = pend_levels[pend_nlevels - 1];
        printf("pmax=%ld\nm=%ld\n", pmax, pend_m);
        for (int i = 0; i < pend_nlevels; i++)
            printf("op_us_p%ld=%.2f\nop_mean_us_p%ld=%.2f\ncpu_us_p%ld=%.2f\nchild_cpu_us_p%ld=%.2f\n",
                   pend_levels[i], level_median_us[i], pend_levels[i], level_mean_us[i],
                   pend_levels[i], level_cpu_us[i], pend_levels[i], level_child_cpu_us[i]);
        printf("rss_kib_per_child=%.3f\n", (double)(u_peak.rss_kib - u_base.rss_kib) / pmax);
        printf("vsz_kib_per_child=%.3f\n", (double)(u_peak.vsz_kib - u_base.vsz_kib) / pmax);
        printf("threads_per_child=%.3f\n", (double)(u_peak.threads - u_base.threads) / pmax);
        printf("fds_per_child=%.3f\n", (double)(u_peak.fds - u_base.fds) / pmax);
        printf("base_rss_kib=%ld\nbase_threads=%ld\nbase_fds=%ld\n", u_base.rss_kib,
               u_base.threads, u_base.fds);
    }
    return 0;
}
