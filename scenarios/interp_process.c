/*
 * interp_process.c — the whole life of a scenario process: setup, the
 * director and the main thread's worker, teardown and leak checks (interp.h).
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
_Noreturn void scenario_process(const scn_scenario *sc, int kind, int status_fd, double timeout)
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
