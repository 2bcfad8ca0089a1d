/*
 * watcher_fast.c — FastChildWatcher (FST-1 ... FST-8).
 *
 * How it works: SIGCHLD is heard through the signal events of the loop
 * attached from the main thread, as for SafeChildWatcher (FST-3, see
 * watcher_sigchld.c). On each SIGCHLD the watcher calls waitpid(-1, WNOHANG)
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
#include "sigchld-internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

typedef struct fast_watcher {
    evpol__sigchld s;         /* first */
    evpol__childtab zombies;  /* exits kept for a pending registration; under s.lock */
    int forks;                /* open spawn contexts; under s.lock */
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
        z->exit = *exit;
        return true;
    }
    z = evpol__child_new(pid, NULL, NULL);
    if (!z)
        return false;
    z->exit = *exit;
    evpol__childtab_insert(&f->zombies, z);
    return true;
}

static evpol__child *fast_reap(evpol__sigchld *s)
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
        if (!c && f->forks > 0)
            kept = keep_locked(f, pid, &exit);
        pthread_mutex_unlock(&s->lock);
        if (c) {
            c->exit = exit;
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
    evpol__sigchld *s = &f->s;
    pthread_mutex_lock(&s->lock);
    if (f->forks == 0) {
        pthread_mutex_unlock(&s->lock);
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "add_child_handler: Must use the context manager "
                           "(FastChildWatcher needs evpol_watcher_enter before the spawn)");
    }
    evpol__child *done = evpol__childtab_remove(&f->zombies, pid);
    if (done) {
        /* Already reaped while the context was open (FST-5). */
        done->h = *h;
        evpol__child *stale = evpol__childtab_remove(&s->tab, pid);
        pthread_mutex_unlock(&s->lock);
        evpol__child_free(stale);
        evpol__sigchld_post(s, done);
        return 0;
    }
    evpol__child *c = evpol__sigchld_register_locked(s, pid, h);
    pthread_mutex_unlock(&s->lock);
    if (!c)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    return 0;
}

static int fast_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    fast_watcher *f = as_fast(w);
    evpol__sigchld_close(&f->s);
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
    if (f->forks == INT_MAX) {
        pthread_mutex_unlock(&f->s.lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "enter: too many nested spawn contexts");
    }
    /* LCOV_EXCL_STOP */
    f->forks++;
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
     * context (watcher.c counts them after enter, before exit), so forks is
     * never 0 here; kept because a negative count would keep exits forever */
    if (f->forks == 0) {
        pthread_mutex_unlock(&f->s.lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "exit: no spawn context is open");
    }
    /* LCOV_EXCL_STOP */
    f->forks--;
    if (f->forks == 0)
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
    evpol__sigchld_fini(&f->s);
    evpol__sys.free(f);
}

static const struct evpol__watcher_ops fast_ops = {
    .name = "FastChildWatcher",
    .kind = EVPOL_WATCHER_FAST,
    .add = fast_add,
    .remove = evpol__sigchld_remove,
    .attach = evpol__sigchld_attach,
    .is_active = evpol__sigchld_is_active,
    .close = fast_close,
    .enter = fast_enter,
    .exit = fast_exit,
    .destroy = fast_destroy,
    .get_loop = evpol__sigchld_get_loop,
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
    int rc = evpol__sigchld_init(&f->s, &fast_ops, fast_reap, err);
    if (rc) {
        evpol__childtab_fini(&f->zombies, NULL);
        evpol__sys.free(f);
        return rc;
    }
    f->forks = 0;
    *out = &f->s.base;
    return 0;
}
