/*
 * watcher_sigchld.c — SafeChildWatcher (SAF-1 ... SAF-7) and
 * FastChildWatcher (FST-1 ... FST-8), which hear SIGCHLD the same way
 * (CPython's BaseChildWatcher) and differ only in how they reap: Safe
 * polls each registered pid, Fast calls waitpid(-1) until nothing is left.
 * The shared part owns the attachment (the loop's SIGCHLD handler and its
 * switch from loop to loop, SAF-5), the pid table, activity (SAF-2) and
 * delivery; each watcher's section below holds its reap function and what
 * else is its own.
 *
 * How it works: attach_loop(loop) installs a SIGCHLD handler with
 * evpol_loop_add_signal_handler, i.e. a libevent signal event, so the
 * handler runs as an ordinary callback on the thread running that loop,
 * never in signal context. Both the install and its removal are main-thread
 * only (LOOP-4): attaching or detaching from another thread fails with the
 * loop's runtime error and changes nothing. Switching loops removes the
 * handler from the old loop, installs it on the new one and then reaps once,
 * for children that exited while no handler listened (SAF-5).
 *
 * The handler's argument is a small "link" rather than the watcher itself,
 * so that a watcher closed where its handler cannot be removed (another
 * thread, CW-8 must still succeed) can cut the link: the handler then stays
 * on the loop, inert, until that loop closes or replaces it. Such links are
 * kept on a list for the life of the process (a few bytes each) because
 * nothing tells us when the loop lets go of them.
 *
 * Limits inherited from libevent: signals go to one event_base at a time
 * (the one that most recently added a signal event), and a loop keeps one
 * handler per signal, so two of these watchers, or a watcher and other
 * SIGCHLD code, must not share a loop or use two loops at once.
 *
 * Threads: the SIGCHLD handler reaps on the loop's thread and calls the
 * callbacks there directly, through the watcher's gate. An exit found
 * elsewhere (at registration or at a loop switch, possibly on another
 * thread) is posted to the attached loop instead, so callbacks always run on
 * the attached loop's thread; with no loop attached there is no such thread
 * and the callback runs on the calling thread. User callbacks never run with
 * a watcher lock held.
 */
#include "registry-internal.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

typedef struct sigchld_watcher sigchld_watcher;
struct sigchld_link;

/* Reap what has exited, without holding s->lock on entry. Returns the
 * reaped records as a list linked through ->next, each unlinked from every
 * table, EXITED or LOST (registry-internal.h; records without a handler
 * are only to be freed). */
typedef evpol__child *(*reap_fn)(sigchld_watcher *s);

struct sigchld_watcher {
    evpol_watcher base; /* first: the ops receive &base */
    /* Guards loop, tab and the kind's own state. Never held while a user
     * callback or a loop function runs. */
    pthread_mutex_t lock;
    /* Serialises attach and close, which call the loop's signal functions
     * without `lock` held. Never taken by the SIGCHLD handler, so that a
     * handler running on the loop's thread can never wait for it. */
    pthread_mutex_t attach_lock;
    evpol_loop *loop;          /* attached loop, referenced; under lock */
    struct sigchld_link *link; /* handler argument; under attach_lock */
    evpol__childtab tab;       /* pid -> registration; under lock */
    reap_fn reap;
};

struct sigchld_link {
    sigchld_watcher *s; /* NULL once the watcher let go; under link_lock */
    evpol_loop *loop;   /* the loop holding the handler; not referenced */
};

/* Guards every link's `s`. Held only for a pointer read or write. */
static pthread_mutex_t link_lock = PTHREAD_MUTEX_INITIALIZER;

static void free_link(void *link)
{
    evpol__sys.free(link);
}

static evpol_loop *get_loop(sigchld_watcher *s)
{
    pthread_mutex_lock(&s->lock);
    evpol_loop *loop = s->loop ? evpol_loop_ref(s->loop) : NULL;
    pthread_mutex_unlock(&s->lock);
    return loop;
}

/* ops->get_loop: the attached loop, referenced, or NULL. */
static evpol_loop *sigchld_get_loop(evpol_watcher *w)
{
    return get_loop((sigchld_watcher *)w);
}

/* Initialise the shared part of a freshly allocated watcher. */
static int sigchld_init(sigchld_watcher *s, const struct evpol__watcher_ops *ops, reap_fn reap,
                        evpol_error *err)
{
    int rc = pthread_mutex_init(&s->lock, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc)
        return evpol__fail_sys(err, rc, "cannot create watcher lock");
    /* LCOV_EXCL_STOP */
    rc = pthread_mutex_init(&s->attach_lock, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc) {
        pthread_mutex_destroy(&s->lock);
        return evpol__fail_sys(err, rc, "cannot create watcher lock");
    }
    /* LCOV_EXCL_STOP */
    if (evpol__childtab_init(&s->tab) != 0) {
        pthread_mutex_destroy(&s->attach_lock);
        pthread_mutex_destroy(&s->lock);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    rc = evpol__watcher_init(&s->base, ops, err);
    /* LCOV_EXCL_START: evpol__watcher_init fails only when pthread_rwlock_init
     * does, which glibc's never does */
    if (rc) {
        evpol__childtab_fini(&s->tab, NULL);
        pthread_mutex_destroy(&s->attach_lock);
        pthread_mutex_destroy(&s->lock);
        return rc;
    }
    /* LCOV_EXCL_STOP */
    s->loop = NULL;
    s->link = NULL;
    s->reap = reap;
    return 0;
}

/* Free the table and locks and the base (the caller frees the memory). */
static void sigchld_fini(sigchld_watcher *s)
{
    evpol__childtab_fini(&s->tab, evpol__child_free);
    pthread_mutex_destroy(&s->attach_lock);
    pthread_mutex_destroy(&s->lock);
    evpol__watcher_fini(&s->base);
}

/* ---- registrations ---- */

/* Register or replace (CW-2) the handler for pid. Returns the record in
 * the table, or NULL when out of memory. */
static evpol__child *sigchld_register_locked(sigchld_watcher *s, pid_t pid,
                                             const evpol__handler *h)
{
    EVPOL__ASSERT_LOCKED(&s->lock);
    evpol__child *c = evpol__childtab_find(&s->tab, pid);
    if (c) {
        evpol_loop *no_loop; /* Safe and Fast records hold none */
        evpol__child_replace(c, h, NULL, &no_loop);
        return c;
    }
    c = evpol__child_new(pid, h, NULL);
    if (!c)
        return NULL;
    evpol__childtab_insert(&s->tab, c);
    return c;
}

/* ops->remove (CW-4): the registration stays with no handler so that the
 * child is still reaped, never left a zombie. */
static int sigchld_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    (void)err;
    sigchld_watcher *s = (sigchld_watcher *)w;
    evpol_loop *no_loop = NULL; /* Safe and Fast records hold none */
    pthread_mutex_lock(&s->lock);
    int removed = evpol__child_disarm(evpol__childtab_find(&s->tab, pid), &no_loop);
    pthread_mutex_unlock(&s->lock);
    return removed;
}

/* ---- delivery ---- */

/* On the attached loop's thread, from the SIGCHLD handler. */
static void run_here(sigchld_watcher *s, evpol_loop *loop, evpol__child *list)
{
    while (list) {
        evpol__child *c = list;
        list = c->next;
        c->next = NULL;
        if (evpol__child_armed(c)) {
            if (evpol__child_lost(c))
                evpol__warn_unknown_child(c->pid);
            else
                evpol__log_debug(loop, "process %ld exited with returncode %d", (long)c->pid,
                                 c->exit.returncode);
            evpol__watcher_invoke(&s->base, c);
        }
        evpol__child_free(c);
    }
}

/* Hand reaped records to the attached loop's thread (each through
 * evpol__loop_post), or, with no loop attached, call them on the calling
 * thread. Used where the caller may not be on the loop's thread: add and
 * attach. Takes ownership of the list. */
static void sigchld_post(sigchld_watcher *s, evpol__child *list)
{
    if (!list)
        return;
    evpol_loop *loop = get_loop(s);
    for (evpol__child *c = list; c; c = c->next) {
        evpol_loop_unref(c->loop);
        c->loop = loop && evpol__child_armed(c) ? evpol_loop_ref(loop) : NULL;
    }
    /* Never allocates: each record carries its own post node. */
    evpol__child_list_deliver(&s->base, list);
    evpol_loop_unref(loop);
}

/* ---- the SIGCHLD handler ---- */

static void on_sigchld(int signum, void *arg)
{
    (void)signum;
    struct sigchld_link *link = arg;
    pthread_mutex_lock(&link_lock);
    sigchld_watcher *s = link->s;
    evpol_loop *loop = link->loop;
    /* The reference keeps the watcher alive should another thread drop
     * the last one while we reap. */
    if (s)
        evpol_watcher_ref(&s->base);
    pthread_mutex_unlock(&link_lock);
    if (!s)
        return;
    if (!evpol__watcher_closed(&s->base))
        run_here(s, loop, s->reap(s));
    evpol_watcher_unref(&s->base);
}

/* Take the handler off the attached loop. attach_lock held. Returns 0, or
 * the loop's error with nothing changed. When `closing`, never fails: a
 * handler that cannot be removed is made inert instead. */
static int unhook(sigchld_watcher *s, bool closing, evpol_error *err)
{
    struct sigchld_link *link = s->link;
    if (!link)
        return 0;
    /* s->loop holds a reference to link->loop, so it is still valid. */
    int rc = 0;
    if (evpol_loop_is_closed(link->loop) != 1)
        rc = evpol_loop_remove_signal_handler(link->loop, SIGCHLD, closing ? NULL : err);
    /* A loop closed meanwhile released its signal events with it. */
    bool gone = rc >= 0 || evpol_loop_is_closed(link->loop) == 1;
    if (!gone && !closing)
        return rc;
    pthread_mutex_lock(&link_lock);
    link->s = NULL;
    pthread_mutex_unlock(&link_lock);
    /* The inert handler stays on its loop, which frees the link when the
     * handler goes; a loop closed meanwhile already freed the handler. */
    if (!gone && evpol__loop_give_signal_arg(link->loop, SIGCHLD, link, free_link) != 0)
        gone = true;
    if (gone) {
        free_link(link);
    } else {
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                   "%s closed outside the main thread: its SIGCHLD handler stays, inert, "
                   "on loop %p until that loop is closed",
                   s->base.ops->name, (void *)link->loop);
    }
    s->link = NULL;
    return 0;
}

/* Install the handler on `loop` with `link` (which it then owns).
 * attach_lock held, no loop attached. */
static int hook(sigchld_watcher *s, evpol_loop *loop, struct sigchld_link *link,
                evpol_error *err)
{
    link->s = s;
    link->loop = loop;
    int rc = evpol_loop_add_signal_handler(loop, SIGCHLD, on_sigchld, link, err);
    if (rc < 0) {
        evpol__sys.free(link);
        return rc;
    }
    s->link = link;
    pthread_mutex_lock(&s->lock);
    s->loop = evpol_loop_ref(loop);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void warn_detached_pending(sigchld_watcher *s)
{
    pthread_mutex_lock(&s->lock);
    size_t pending = evpol__childtab_pending(&s->tab);
    pthread_mutex_unlock(&s->lock);
    if (pending)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "A loop is being detached from a child watcher with pending handlers");
}

/* ops->attach (CW-5, SAF-4, SAF-5). */
static int sigchld_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    sigchld_watcher *s = (sigchld_watcher *)w;
    /* Everything that can be known to fail is checked before the old loop
     * is let go, so that a refused attach changes nothing. */
    if (loop && evpol_loop_is_closed(loop) == 1)
        return evpol__fail(err, EVPOL_ERUNTIME, "attach_loop: the event loop is closed");
    if (loop && !evpol__is_main_thread()) /* LOOP-4, as the loop would say */
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "attach_loop: signal handlers can only be changed from the main thread");
    struct sigchld_link *link = NULL;
    if (loop && !(link = evpol__sys.calloc(1, sizeof *link)))
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    pthread_mutex_lock(&s->attach_lock);
    int rc = unhook(s, false, err);
    if (rc < 0) {
        pthread_mutex_unlock(&s->attach_lock);
        evpol__sys.free(link);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    evpol_loop *old = s->loop;
    s->loop = NULL;
    pthread_mutex_unlock(&s->lock);
    if (old && !loop)
        warn_detached_pending(s);
    if (loop) {
        rc = hook(s, loop, link, err);
        if (rc < 0) {
            /* Left detached (the loop was closed meanwhile by another
             * thread, or out of memory in libevent): say so, as for any
             * detach. */
            pthread_mutex_unlock(&s->attach_lock);
            if (old)
                warn_detached_pending(s);
            evpol_loop_unref(old);
            return rc;
        }
    }
    pthread_mutex_unlock(&s->attach_lock);
    /* Only now: dropping the last reference closes the old loop, whose
     * dropped deliveries release watcher references, which may in turn
     * close this watcher and need attach_lock. */
    evpol_loop_unref(old);
    if (!loop)
        return 0;
    /* Children that exited while no handler listened (SAF-5). */
    sigchld_post(s, s->reap(s));
    return 0;
}

/* ops->is_active (SAF-2, FST-3). */
static int sigchld_is_active(evpol_watcher *w)
{
    evpol_loop *loop = sigchld_get_loop(w);
    int active = loop && evpol_loop_is_running(loop) == 1;
    evpol_loop_unref(loop);
    return active;
}

/* The shared half of ops->close: detach from the loop (which may be
 * closed already), reap the children that already exited, warn about the
 * rest (evpol__childtab_reap_exited) and free every registration. */
static void sigchld_close(sigchld_watcher *s)
{
    pthread_mutex_lock(&s->attach_lock);
    unhook(s, true, NULL);
    pthread_mutex_lock(&s->lock);
    evpol_loop *old = s->loop;
    s->loop = NULL;
    size_t pending, running;
    evpol__childtab_reap_exited(&s->tab, &pending, &running);
    evpol__child *list = evpol__childtab_drain(&s->tab);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&s->attach_lock);
    evpol__warn_closed_with_children(&s->base, pending, running);
    evpol_loop_unref(old);
    evpol__child_list_free(list);
}

/* ---- SafeChildWatcher ---- */

/*
 * How it works: SIGCHLD is heard through the signal events of the loop
 * attached from the main thread (the shared part above). On each SIGCHLD the
 * watcher polls every registered pid with waitpid(pid, WNOHANG); it never
 * calls waitpid(-1), so children it was not asked about are left to whoever
 * waits for them (SAF-3). add_child_handler polls its pid at once, so a
 * child that exited before it was registered is still reported (SAF-6).
 *
 * Cost: O(n) waitpid calls per SIGCHLD for n registered children (signals
 * coalesce, so one SIGCHLD may stand for several exits). No thread, no fd.
 *
 * Threads: callbacks run on the attached loop's thread. The SIGCHLD handler
 * calls them there directly; an exit found by add_child_handler or by
 * attach_loop is posted to the attached loop. With no loop attached, an exit
 * found by add_child_handler is reported on the calling thread. The watcher
 * is active only while its attached loop runs (SAF-2).
 *
 * A removed handler (CW-4) keeps its pid registered without a callback, so
 * the child is still reaped and never left a zombie. A pid reaped by someone
 * else is reported with returncode 255 and the CW-11 warning.
 */

static sigchld_watcher *as_sigchld(evpol_watcher *w)
{
    return (sigchld_watcher *)w;
}

static evpol__child *safe_reap(sigchld_watcher *s)
{
    evpol__child *list = NULL;
    pid_t failed_pid = 0;
    int wait_errno = 0;
    pthread_mutex_lock(&s->lock);
    if (!evpol__watcher_closed(&s->base))
        list = evpol__childtab_poll_locked(&s->lock, &s->tab, &failed_pid, &wait_errno);
    pthread_mutex_unlock(&s->lock);
    if (wait_errno)
        evpol__log_waitpid_error(s->base.ops->name, failed_pid, wait_errno);
    return list;
}

static int safe_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                    evpol_error *err)
{
    (void)loop; /* callbacks go to the attached loop */
    sigchld_watcher *s = as_sigchld(w);
    evpol__child *done = NULL;
    int wait_errno = 0;
    pthread_mutex_lock(&s->lock);
    evpol__child *c = sigchld_register_locked(s, pid, h);
    if (!c) {
        pthread_mutex_unlock(&s->lock);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    /* The child may have exited before it was registered (SAF-6). */
    if (evpol__child_poll_locked(&s->lock, c, &wait_errno)) {
        evpol__childtab_remove(&s->tab, pid);
        done = c;
    }
    pthread_mutex_unlock(&s->lock);
    if (wait_errno)
        evpol__log_waitpid_error(w->ops->name, pid, wait_errno);
    sigchld_post(s, done);
    return 0;
}

static int safe_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    sigchld_close(as_sigchld(w));
    return 0;
}

static void safe_destroy(evpol_watcher *w)
{
    sigchld_fini(as_sigchld(w));
    evpol__sys.free(w);
}

static const struct evpol__watcher_ops safe_ops = {
    .name = "SafeChildWatcher",
    .kind = EVPOL_WATCHER_SAFE,
    .add = safe_add,
    .remove = sigchld_remove,
    .attach = sigchld_attach,
    .is_active = sigchld_is_active,
    .close = safe_close,
    /* No enter/exit: the spawn context means nothing to Safe, since
     * add_child_handler polls the pid itself and so cannot miss an exit
     * between spawn and registration. */
    .destroy = safe_destroy,
    .get_loop = sigchld_get_loop,
    .needs_loop = false,
};

int evpol__safe_new(evpol_watcher **out, evpol_error *err)
{
    sigchld_watcher *s = evpol__sys.calloc(1, sizeof *s);
    if (!s)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = sigchld_init(s, &safe_ops, safe_reap, err);
    if (rc) {
        evpol__sys.free(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}

/* ---- FastChildWatcher ---- */

/*
 * How it works: SIGCHLD is heard through the signal events of the loop
 * attached from the main thread, as for SafeChildWatcher (FST-3, the
 * shared part above). On each SIGCHLD the watcher calls waitpid(-1, WNOHANG)
 * until nothing more has exited (signals coalesce, FST-1), so it reaps
 * every child of the process, also other code's: that is its documented
 * price. A reaped pid nobody registered yet is kept while a spawn context is
 * open (it may be a child being registered right now, FST-5) and reported
 * at once when registered; when the last context exits, kept exits are
 * dropped with a warning (FST-6). Outside a context it is logged and
 * forgotten (FST-7). Registration needs an open context (FST-4).
 *
 * Cost: O(1) per exit (one waitpid and one table lookup, FST-2), plus one
 * final waitpid per SIGCHLD. No thread, no fd.
 *
 * Threads: callbacks run on the attached loop's thread. The SIGCHLD handler
 * calls them there directly; a kept exit claimed by add_child_handler and
 * an exit found by attach_loop are posted to the attached loop (with no loop
 * attached, a kept exit is reported on the calling thread).
 *
 * FST-7 is a warning in the runtime category, as in CPython, which logs it
 * with logger.warning whatever the loop's debug flag.
 */

typedef struct fast_watcher {
    sigchld_watcher s;       /* first */
    evpol__childtab zombies; /* exits kept for a pending registration; under s.lock */
    /* Open spawn contexts, as FST-4 (registration needs one), FST-5 (keep
     * unknown exits while one is open) and FST-6 (drop them when the last
     * closes) see them: under s.lock, with the kept exits, which
     * watcher.c's own count (changed outside that lock) cannot be. */
    int keep_contexts;
} fast_watcher;

static fast_watcher *as_fast(evpol_watcher *w)
{
    return (fast_watcher *)w;
}

/* Keep an unknown exit for a registration that may follow. s.lock held.
 * False when there is no memory to keep it. */
static bool keep_locked(fast_watcher *f, pid_t pid, const evpol_exit_status *exit)
{
    EVPOL__ASSERT_LOCKED(&f->s.lock);
    /* A pid reused since an earlier kept exit: the newer status wins. */
    evpol__child *z = evpol__childtab_find(&f->zombies, pid);
    if (z) {
        evpol__child_rekeep(z, exit);
        return true;
    }
    z = evpol__child_new_kept(pid, exit);
    if (!z)
        return false;
    evpol__childtab_insert(&f->zombies, z);
    return true;
}

static evpol__child *fast_reap(sigchld_watcher *s)
{
    fast_watcher *f = (fast_watcher *)s;
    evpol__child *list = NULL;
    pthread_mutex_lock(&s->lock);
    evpol_loop *loop = s->loop ? evpol_loop_ref(s->loop) : NULL;
    pthread_mutex_unlock(&s->lock);
    while (!evpol__watcher_closed(&s->base)) {
        int status = 0;
        pid_t pid = evpol__sys.waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        /* Anything but ECHILD (no child left) says nothing about the
         * children: they stay registered for the next SIGCHLD. */
        if (pid < 0 && errno != ECHILD)
            evpol__log_waitpid_error(s->base.ops->name, -1, errno);
        /* 0: the rest are alive. */
        if (pid <= 0)
            break;
        evpol_exit_status exit;
        evpol__exit_decode(pid, status, &exit);
        int rc = exit.returncode;
        bool kept = false;
        pthread_mutex_lock(&s->lock);
        evpol__child *c = evpol__childtab_remove(&s->tab, pid);
        if (!c && f->keep_contexts > 0)
            kept = keep_locked(f, pid, &exit);
        pthread_mutex_unlock(&s->lock);
        if (c) {
            evpol__child_exited(c, &exit);
            c->next = list;
            list = c;
        } else if (kept) {
            evpol__log_debug(loop, "unknown process %ld exited with returncode %d", (long)pid, rc);
        } else {
            evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                       "Caught subprocess termination from unknown pid: %ld -> %d", (long)pid, rc);
        }
    }
    evpol_loop_unref(loop);
    return list;
}

static int fast_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                    evpol_error *err)
{
    (void)loop; /* callbacks go to the attached loop */
    fast_watcher *f = as_fast(w);
    sigchld_watcher *s = &f->s;
    pthread_mutex_lock(&s->lock);
    if (f->keep_contexts == 0) {
        pthread_mutex_unlock(&s->lock);
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "add_child_handler: Must use the context manager "
                           "(FastChildWatcher needs evpol_watcher_enter before the spawn)");
    }
    evpol__child *done = evpol__childtab_remove(&f->zombies, pid);
    if (done) {
        /* Already reaped while the context was open (FST-5). */
        evpol__child_claim(done, h);
        evpol__child *stale = evpol__childtab_remove(&s->tab, pid);
        pthread_mutex_unlock(&s->lock);
        evpol__child_free(stale);
        sigchld_post(s, done);
        return 0;
    }
    evpol__child *c = sigchld_register_locked(s, pid, h);
    pthread_mutex_unlock(&s->lock);
    if (!c)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    return 0;
}

static int fast_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    fast_watcher *f = as_fast(w);
    sigchld_close(&f->s);
    pthread_mutex_lock(&f->s.lock);
    evpol__child *kept = evpol__childtab_drain(&f->zombies);
    pthread_mutex_unlock(&f->s.lock);
    evpol__child_list_free(kept);
    return 0;
}

static int fast_enter(evpol_watcher *w, evpol_error *err)
{
    fast_watcher *f = as_fast(w);
    pthread_mutex_lock(&f->s.lock);
    /* LCOV_EXCL_START: needs 2^31 nested contexts, too many for a test */
    if (f->keep_contexts == INT_MAX) {
        pthread_mutex_unlock(&f->s.lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "enter: too many nested spawn contexts");
    }
    /* LCOV_EXCL_STOP */
    f->keep_contexts++;
    pthread_mutex_unlock(&f->s.lock);
    return 0;
}

/* Format kept exits as CPython prints its dict: {pid: rc, ...}. */
static void format_kept(const evpol__child *list, char *buf, size_t size)
{
    size_t len = 0;
    int n = snprintf(buf, size, "{");
    len = (size_t)n;
    for (const evpol__child *c = list; c; c = c->next) {
        n = snprintf(buf + len, size - len, "%s%ld: %d", c == list ? "" : ", ", (long)c->pid,
                     c->exit.returncode);
        if (n < 0 || (size_t)n >= size - len - 8) {
            /* Leave room to say that the list goes on. */
            snprintf(buf + len, size - len, ", ...}");
            return;
        }
        len += (size_t)n;
    }
    snprintf(buf + len, size - len, "}");
}

static int fast_exit(evpol_watcher *w, evpol_error *err)
{
    fast_watcher *f = as_fast(w);
    evpol__child *dropped = NULL;
    pthread_mutex_lock(&f->s.lock);
    /* LCOV_EXCL_START: evpol_watcher_exit calls this only for an open
     * context (watcher.c counts them after enter, before exit), so
     * keep_contexts is never 0 here; kept because a negative count would
     * keep exits forever */
    if (f->keep_contexts == 0) {
        pthread_mutex_unlock(&f->s.lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "exit: no spawn context is open");
    }
    /* LCOV_EXCL_STOP */
    f->keep_contexts--;
    if (f->keep_contexts == 0)
        dropped = evpol__childtab_drain(&f->zombies);
    pthread_mutex_unlock(&f->s.lock);
    if (dropped) {
        char victims[400];
        format_kept(dropped, victims, sizeof victims);
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "Caught subprocesses termination from unknown pids: %s", victims);
        evpol__child_list_free(dropped);
    }
    return 0;
}

static void fast_destroy(evpol_watcher *w)
{
    fast_watcher *f = as_fast(w);
    evpol__childtab_fini(&f->zombies, evpol__child_free);
    sigchld_fini(&f->s);
    evpol__sys.free(f);
}

static const struct evpol__watcher_ops fast_ops = {
    .name = "FastChildWatcher",
    .kind = EVPOL_WATCHER_FAST,
    .add = fast_add,
    .remove = sigchld_remove,
    .attach = sigchld_attach,
    .is_active = sigchld_is_active,
    .close = fast_close,
    .enter = fast_enter,
    .exit = fast_exit,
    .destroy = fast_destroy,
    .get_loop = sigchld_get_loop,
    .needs_loop = false,
};

int evpol__fast_new(evpol_watcher **out, evpol_error *err)
{
    fast_watcher *f = evpol__sys.calloc(1, sizeof *f);
    if (!f)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    if (evpol__childtab_init(&f->zombies) != 0) {
        evpol__sys.free(f);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    int rc = sigchld_init(&f->s, &fast_ops, fast_reap, err);
    if (rc) {
        evpol__childtab_fini(&f->zombies, NULL);
        evpol__sys.free(f);
        return rc;
    }
    f->keep_contexts = 0;
    *out = &f->s.base;
    return 0;
}
