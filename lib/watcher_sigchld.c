/*
 * watcher_sigchld.c — the part SafeChildWatcher and FastChildWatcher share
 * (CPython's BaseChildWatcher): hearing SIGCHLD through one attached loop.
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
#include "sigchld-internal.h"

#include <signal.h>
#include <stdlib.h>

struct evpol__sigchld_link {
    evpol__sigchld *s;   /* NULL once the watcher let go; under link_lock */
    evpol_loop *loop;    /* the loop holding the handler; not referenced */
};

/* Guards every link's `s`. Held only for a pointer read or write. */
static pthread_mutex_t link_lock = PTHREAD_MUTEX_INITIALIZER;

static void free_link(void *link)
{
    evpol__sys.free(link);
}

static evpol_loop *get_loop(evpol__sigchld *s)
{
    pthread_mutex_lock(&s->lock);
    evpol_loop *loop = s->loop ? evpol_loop_ref(s->loop) : NULL;
    pthread_mutex_unlock(&s->lock);
    return loop;
}

int evpol__sigchld_init(evpol__sigchld *s, const struct evpol__watcher_ops *ops,
                        evpol__reap_fn reap, evpol_error *err)
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

void evpol__sigchld_fini(evpol__sigchld *s)
{
    evpol__childtab_fini(&s->tab, evpol__child_free);
    pthread_mutex_destroy(&s->attach_lock);
    pthread_mutex_destroy(&s->lock);
    evpol__watcher_fini(&s->base);
}

/* ---- registrations ---- */

evpol__child *evpol__sigchld_register_locked(evpol__sigchld *s, pid_t pid,
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

int evpol__sigchld_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    (void)err;
    evpol__sigchld *s = (evpol__sigchld *)w;
    evpol_loop *no_loop = NULL; /* Safe and Fast records hold none */
    pthread_mutex_lock(&s->lock);
    int removed = evpol__child_disarm(evpol__childtab_find(&s->tab, pid), &no_loop);
    pthread_mutex_unlock(&s->lock);
    return removed;
}

/* ---- delivery ---- */

/* On the attached loop's thread, from the SIGCHLD handler. */
static void run_here(evpol__sigchld *s, evpol_loop *loop, evpol__child *list)
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

void evpol__sigchld_post(evpol__sigchld *s, evpol__child *list)
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
    struct evpol__sigchld_link *link = arg;
    pthread_mutex_lock(&link_lock);
    evpol__sigchld *s = link->s;
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
static int unhook(evpol__sigchld *s, bool closing, evpol_error *err)
{
    struct evpol__sigchld_link *link = s->link;
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
static int hook(evpol__sigchld *s, evpol_loop *loop, struct evpol__sigchld_link *link,
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

static void warn_detached_pending(evpol__sigchld *s)
{
    pthread_mutex_lock(&s->lock);
    size_t pending = evpol__childtab_pending(&s->tab);
    pthread_mutex_unlock(&s->lock);
    if (pending)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "A loop is being detached from a child watcher with pending handlers");
}

int evpol__sigchld_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    evpol__sigchld *s = (evpol__sigchld *)w;
    /* Everything that can be known to fail is checked before the old loop
     * is let go, so that a refused attach changes nothing. */
    if (loop && evpol_loop_is_closed(loop) == 1)
        return evpol__fail(err, EVPOL_ERUNTIME, "attach_loop: the event loop is closed");
    if (loop && !evpol__is_main_thread()) /* LOOP-4, as the loop would say */
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "attach_loop: signal handlers can only be changed from the main thread");
    struct evpol__sigchld_link *link = NULL;
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
    evpol__sigchld_post(s, s->reap(s));
    return 0;
}

int evpol__sigchld_is_active(evpol_watcher *w)
{
    evpol_loop *loop = evpol__sigchld_get_loop(w);
    int active = loop && evpol_loop_is_running(loop) == 1;
    evpol_loop_unref(loop);
    return active;
}

void evpol__sigchld_close(evpol__sigchld *s)
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

evpol_loop *evpol__sigchld_get_loop(evpol_watcher *w)
{
    return get_loop((evpol__sigchld *)w);
}
