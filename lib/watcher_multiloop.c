/*
 * watcher_multiloop.c — MultiLoopChildWatcher (MUL-1 ... MUL-7).
 *
 * How it works: the first attach_loop, whatever its argument (CPython's
 * policy calls it from the main thread; the loop itself is not used),
 * activates the watcher: it makes a self-pipe, installs a process-wide
 * SIGCHLD handler with sigaction (MUL-1, MUL-5), saving the previous
 * disposition, and starts one internal reaper thread. The handler only
 * writes one byte to the pipe (MUL-7). The reaper blocks on the pipe; on
 * each wake, and once right after activation to catch children that exited
 * before the handler existed, it polls every registered pid with
 * waitpid(pid, WNOHANG) (MUL-2): other code's children are never reaped.
 * add_child_handler also polls its pid at once, so a child that exited
 * before registration is reported (also before activation).
 *
 * The pipe's poll, read and write are direct system calls, not the seam's
 * (evpol.h says why): the handler cannot depend on a swappable table.
 *
 * Cost: O(n) waitpid calls per SIGCHLD for n registered children (signals
 * coalesce, so one wake may report many exits). One thread and two fds per
 * active watcher, whatever the number of children.
 *
 * Callbacks run on the loop that was running in the registering thread
 * (MUL-3), or the loop given to add_child_handler_on, through
 * evpol__deliver: never on the reaper thread, never inside add. The reaper
 * only runs the log hook (CW-11, CW-12).
 *
 * One per process: the SIGCHLD disposition is process-wide and a signal
 * handler cannot carry a pointer, so at most one MultiLoop watcher is
 * active at a time. A second one's attach_loop fails with ERUNTIME and
 * leaves it inactive, rather than taking over: a takeover would silently
 * strand the first watcher's pending children, while the failure is
 * visible at once (spawn checks is_active, CW-7). Replacing the policy's
 * watcher works because set_child_watcher closes the old one first; attach
 * the new one after that.
 *
 * Close (CW-8, MUL-4) restores the saved disposition if ours is still in
 * place (else warns and leaves the outside handler alone), stops and joins
 * the reaper, closes the pipe and frees the registrations. No callback is
 * called after close. Every registered child that has already exited is
 * reaped then, so none is left a zombie; children still running are left
 * to the program, as in CPython, which can still waitpid() them (one
 * resource warning counts them and the handlers that will not be called).
 *
 * After fork(), the child process inherits the handler and the pipe but
 * not the reaper; closing the inherited watcher there restores the
 * disposition and closes the fds without waiting for a thread that does
 * not exist. The inherited handler may make the parent's reaper poll once
 * for nothing, which is harmless.
 */
#include "registry-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the SIGCHLD handler needs lock-free atomics");

/* ---- process-wide state, shared with the signal handler ---- */

/* The write end of the active watcher's pipe, or -1. An atomic int rather
 * than a pointer to the watcher: the handler needs nothing else, and a
 * lock-free atomic is async-signal-safe. */
static atomic_int g_wake_fd = -1;
/* Handlers between reading g_wake_fd and finishing their write. Close waits
 * for zero after clearing g_wake_fd, so that no handler can write into an
 * fd number that has been closed and reused. */
static atomic_int g_in_handler;

/* Serialises activation and deactivation (the sigaction calls and g_owner). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
typedef struct ml_watcher ml_watcher;
static ml_watcher *g_owner; /* the active watcher; under g_lock */

/* Set on the reaper thread when its own watcher was closed and freed from
 * under it (it dropped the last reference): it must then leave without
 * touching the watcher. */
static _Thread_local bool tls_reaper_orphaned;

/* The registrations live in the shared core (registry.c): its lock guards
 * the pid table, and every waitpid on a registered pid is made under it,
 * so that the reaper and add never both wait for the same pid (the loser
 * would see ECHILD and report a false 255). It is never held while calling
 * into a loop or the log hook. What is here is the mechanism. */
struct ml_watcher {
    evpol__wcore_watcher cw; /* first: the ops receive &cw.base */

    /* Under g_lock. */
    atomic_bool active; /* handler installed by us and not yet removed */
    struct sigaction saved;
    int pipe_rd, pipe_wr;
    pthread_t reaper;
    bool reaper_started;
    pid_t owner_pid; /* process that started the reaper */

    atomic_bool stopping; /* the reaper should exit at its next wake */
};

static ml_watcher *as_ml(evpol_watcher *w)
{
    return (ml_watcher *)w;
}

/* MUL-7: only async-signal-safe work (an atomic load, write(2)), errno
 * preserved for the interrupted code. */
static void on_sigchld(int signum)
{
    (void)signum;
    int saved_errno = errno;
    atomic_fetch_add(&g_in_handler, 1);
    int fd = atomic_load(&g_wake_fd);
    if (fd >= 0) {
        char byte = 0;
        /* EAGAIN when the pipe is full is fine: a byte is already waiting,
         * and the reaper polls every pid on each wake. */
        ssize_t n = write(fd, &byte, 1);
        (void)n;
    }
    atomic_fetch_sub(&g_in_handler, 1);
    errno = saved_errno;
}

static bool disposition_is_ours(const struct sigaction *sa)
{
    /* sa_handler and sa_sigaction share storage on Linux, so this is also
     * right for an SA_SIGINFO handler (which is never ours). */
    return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == on_sigchld;
}

static bool disposition_is_known(const struct sigaction *sa)
{
    return sa->sa_handler == SIG_DFL || sa->sa_handler == SIG_IGN || disposition_is_ours(sa);
}

/* Stop the handler from writing to the pipe; g_lock held. */
static void disconnect_handler(void)
{
    atomic_store(&g_wake_fd, -1);
    /* A handler that read the old fd finishes in a few instructions; when
     * it runs on this very thread it has already returned. */
    while (atomic_load(&g_in_handler) != 0)
        sched_yield();
}

/* ---- reaping ---- */

/* One poll round over every registered pid (MUL-2). Returns false when the
 * watcher was freed during delivery (the reaper must leave at once). */
static bool reap_registered(ml_watcher *m)
{
    evpol__wcore *core = m->cw.core;
    pid_t failed_pid = 0;
    int wait_errno = 0;
    pthread_mutex_lock(&core->lock);
    /* Once close has begun the table is empty (evpol__wcore_detach). */
    evpol__child *done =
        evpol__childtab_poll_locked(&core->lock, &core->tab, &failed_pid, &wait_errno);
    /* The reference keeps the watcher alive while we deliver; without one,
     * the last unref is closing the watcher and nothing may be delivered
     * any more. */
    evpol_watcher *w = done ? evpol__wcore_watcher_locked(core) : NULL;
    pthread_mutex_unlock(&core->lock);
    if (wait_errno)
        evpol__log_waitpid_error(m->cw.base.ops->name, failed_pid, wait_errno);
    if (!w) {
        evpol__child_list_free(done);
        return true;
    }
    evpol__child_list_deliver(w, done);
    /* May be the last reference: the watcher is then closed and freed on
     * this thread (ml_close sees that and sets tls_reaper_orphaned). */
    evpol_watcher_unref(w);
    return !tls_reaper_orphaned;
}

/* Block until the handler (or close) writes to the pipe, then empty it.
 * Emptying before polling means a SIGCHLD arriving during the poll round
 * leaves a byte for the next one. Returns false when the reaper should stop. */
static bool wait_for_wake(ml_watcher *m)
{
    struct pollfd pfd = {.fd = m->pipe_rd, .events = POLLIN};
    int n;
    do /* the reaper blocks every signal, but EINTR costs nothing to handle */
        n = poll(&pfd, 1, -1);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        /* Poll on one valid fd fails only when the kernel cannot allocate
         * its wait-queue entry (test_reaper_stops_when_poll_fails makes it
         * fail). Stop rather than spin on a call that keeps failing. */
        evpol__log(EVPOL_LOG_ERROR, EVPOL_LOG_CAT_RUNTIME,
                   "MultiLoopChildWatcher: poll on its pipe failed (%s); "
                   "children exiting from now on are not reported",
                   strerror(errno));
        return false;
    }
    char buf[64];
    while (read(m->pipe_rd, buf, sizeof buf) > 0)
        ;
    return !atomic_load(&m->stopping);
}

static void *reaper_main(void *p)
{
    ml_watcher *m = p;
    pthread_setname_np(pthread_self(), "evpol-multiloop");
    do {
        if (!reap_registered(m))
            return NULL; /* orphaned: m is freed */
    } while (wait_for_wake(m));
    return NULL;
}

/* ---- ops ---- */

static int ml_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                  evpol_error *err)
{
    evpol__wcore *core = evpol__wcore_of(w);
    /* Allocated before locking; unused (and freed) for a replacement. */
    evpol__child *fresh = evpol__child_new(pid, h, loop);
    if (!fresh)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    evpol_loop *old_loop = NULL;
    evpol__child *done = NULL;
    int wait_errno = 0;

    pthread_mutex_lock(&core->lock);
    if (!core->watcher) {
        pthread_mutex_unlock(&core->lock);
        evpol__child_free(fresh);
        return evpol__fail(err, EVPOL_ERUNTIME, "add_child_handler: %s is closed", w->ops->name);
    }
    evpol__child *c = evpol__childtab_find(&core->tab, pid);
    if (c) {
        /* CW-2: swap the registration in place. */
        evpol__child_replace(c, h, loop, &old_loop);
    } else {
        evpol__childtab_insert(&core->tab, fresh);
        c = fresh;
        fresh = NULL;
    }
    /* The child may have exited before it was registered (or before the
     * handler existed): look now, as CPython does. */
    if (evpol__child_poll_locked(&core->lock, c, &wait_errno)) {
        evpol__childtab_remove(&core->tab, pid);
        done = c;
    }
    pthread_mutex_unlock(&core->lock);
    if (wait_errno)
        evpol__log_waitpid_error(w->ops->name, pid, wait_errno);

    evpol__child_free(fresh);
    evpol_loop_unref(old_loop);
    /* Never the callback itself: evpol__deliver posts it to the loop. The
     * caller's reference keeps the watcher alive meanwhile. */
    evpol__child_list_deliver(w, done);
    return 0;
}

/* Has close begun? */
static bool ml_closing(ml_watcher *m)
{
    evpol__wcore *core = m->cw.core;
    pthread_mutex_lock(&core->lock);
    bool closing = !core->watcher;
    pthread_mutex_unlock(&core->lock);
    return closing;
}

/* Undo a partial activation; g_lock held. */
static void abandon_activation(ml_watcher *m, bool handler_installed)
{
    if (handler_installed)
        evpol__sys.sigaction(SIGCHLD, &m->saved, NULL);
    disconnect_handler();
    evpol__sys.close(m->pipe_rd);
    evpol__sys.close(m->pipe_wr);
    m->pipe_rd = m->pipe_wr = -1;
}

static int ml_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    /* The loop is not used: callbacks go to each registering thread's loop.
     * CPython, too, only uses the first attach_loop as the moment to
     * install its handler. */
    (void)loop;
    ml_watcher *m = as_ml(w);
    int rc = 0;
    bool foreign_previous = false;

    pthread_mutex_lock(&g_lock);
    if (ml_closing(m)) {
        rc = evpol__fail(err, EVPOL_ERUNTIME, "attach_loop: %s is closed", w->ops->name);
        goto out;
    }
    if (atomic_load(&m->active))
        goto out;
    if (g_owner) {
        rc = evpol__fail(err, EVPOL_ERUNTIME,
                         "attach_loop: another MultiLoopChildWatcher (%p) already handles "
                         "SIGCHLD in this process; close it first",
                         (void *)g_owner);
        goto out;
    }

    int fds[2];
    if (evpol__sys.pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = evpol__fail_sys(err, errno, "attach_loop: cannot create the SIGCHLD pipe");
        goto out;
    }
    m->pipe_rd = fds[0];
    m->pipe_wr = fds[1];
    atomic_store(&g_wake_fd, m->pipe_wr);

    /* SA_RESTART, as CPython's siginterrupt(SIGCHLD, False): code that is
     * interrupted by SIGCHLD mostly resumes instead of failing with EINTR
     * (MUL-5). No SA_NOCLDSTOP: it would spare one useless poll round when
     * a child stops or continues, but it changes which events the kernel
     * reports for the whole process, and we keep the disposition CPython
     * leaves in force so that programs behave as they do under asyncio; a
     * stop only costs one O(n) round of WNOHANG waits that reap nothing.
     * The mask stays empty: the handler is reentrant. */
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_sigchld;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_RESTART;
    if (evpol__sys.sigaction(SIGCHLD, &act, &m->saved) != 0) {
        int e = errno;
        abandon_activation(m, false);
        rc = evpol__fail_sys(err, e, "attach_loop: cannot install the SIGCHLD handler");
        goto out;
    }
    /* CPython cannot restore a handler set from C and falls back to
     * SIG_DFL; we saved the whole disposition, so we restore it exactly,
     * but it will not run while we are active: say so. */
    foreign_previous = !disposition_is_known(&m->saved);

    /* Started after the handler is in place: its first poll round then
     * catches every child that exited before. All signals blocked in it, so
     * that it never takes a signal meant for the program's threads. */
    atomic_store(&m->stopping, false);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int terr = evpol__sys.thread_create(&m->reaper, 0, reaper_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (terr != 0) {
        abandon_activation(m, true);
        rc = evpol__fail_sys(err, terr, "attach_loop: cannot start the reaper thread");
        foreign_previous = false;
        goto out;
    }
    m->reaper_started = true;
    m->owner_pid = getpid();
    atomic_store(&m->active, true);
    g_owner = m;
out:
    pthread_mutex_unlock(&g_lock);
    if (foreign_previous)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "Previous SIGCHLD handler was set by non-evpol code: it will not be called "
                   "while MultiLoopChildWatcher is active, and is restored on watcher close");
    return rc;
}

/* MUL-6: true exactly while our handler is installed, which outside code
 * can undo behind our back, so ask the kernel. */
static int ml_is_active(evpol_watcher *w)
{
    ml_watcher *m = as_ml(w);
    if (!atomic_load(&m->active))
        return 0;
    struct sigaction cur;
    if (evpol__sys.sigaction(SIGCHLD, NULL, &cur) != 0)
        return 0;
    return disposition_is_ours(&cur);
}

static int ml_close(evpol_watcher *w, evpol_error *err)
{
    ml_watcher *m = as_ml(w);
    int rc = 0;
    bool changed_outside = false;
    bool join = false;

    /* From here add fails, remove finds nothing and the reaper's poll
     * rounds find an empty table: the registrations are close's. */
    evpol__childtab tab = evpol__wcore_detach(evpol__wcore_of(w));

    pthread_mutex_lock(&g_lock);
    if (atomic_load(&m->active)) {
        struct sigaction cur;
        if (evpol__sys.sigaction(SIGCHLD, NULL, &cur) == 0 && !disposition_is_ours(&cur)) {
            changed_outside = true;
        } else if (evpol__sys.sigaction(SIGCHLD, &m->saved, NULL) != 0) {
            rc = evpol__fail_sys(err, errno, "close: cannot restore the SIGCHLD handler");
        }
        disconnect_handler();
        atomic_store(&m->active, false);
        g_owner = NULL;
    }
    if (m->reaper_started) {
        m->reaper_started = false;
        if (m->owner_pid != getpid()) {
            /* Forked child: the reaper does not exist here. */
        } else if (pthread_equal(pthread_self(), m->reaper)) {
            /* The reaper dropped the last reference while delivering: it
             * cannot wait for itself, and must not touch m once we return. */
            evpol__sys.thread_detach(m->reaper);
            tls_reaper_orphaned = true;
        } else {
            join = true;
        }
    }
    pthread_mutex_unlock(&g_lock);

    if (changed_outside)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "SIGCHLD handler was changed by outside code");

    if (join) {
        atomic_store(&m->stopping, true);
        char byte = 0;
        /* EAGAIN means the pipe is full, so the reaper wakes anyway. */
        ssize_t n = write(m->pipe_wr, &byte, 1);
        (void)n;
        evpol__sys.thread_join(m->reaper, NULL);
    }
    if (m->pipe_rd >= 0) {
        evpol__sys.close(m->pipe_rd);
        evpol__sys.close(m->pipe_wr);
        m->pipe_rd = m->pipe_wr = -1;
    }

    /* Every registration is close's since evpol__wcore_detach. */
    size_t pending, running;
    evpol__childtab_reap_exited(&tab, &pending, &running);
    evpol__warn_closed_with_children(w, pending, running);
    evpol__childtab_fini(&tab, evpol__child_free);
    return rc;
}

static const struct evpol__watcher_ops ml_ops = {
    .name = "MultiLoopChildWatcher",
    .kind = EVPOL_WATCHER_MULTILOOP,
    .add = ml_add,
    .remove = evpol__wcore_watcher_remove, /* the reaper still reaps the child */
    .attach = ml_attach,
    .is_active = ml_is_active,
    .close = ml_close,
    .destroy = evpol__wcore_watcher_destroy,
    .needs_loop = true,
};

int evpol__multiloop_new(evpol_watcher **out, evpol_error *err)
{
    int rc = evpol__wcore_watcher_new(&ml_ops, sizeof(ml_watcher), out, err);
    if (rc)
        return rc;
    ml_watcher *m = as_ml(*out);
    m->pipe_rd = m->pipe_wr = -1;
    atomic_init(&m->active, false);
    atomic_init(&m->stopping, false);
    return 0;
}
