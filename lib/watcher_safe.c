/*
 * watcher_safe.c — SafeChildWatcher (SAF-1 ... SAF-7).
 *
 * How it works: SIGCHLD is heard through the signal events of the loop
 * attached from the main thread (see watcher_sigchld.c). On each SIGCHLD the
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
#include "watcher-sigchld.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>

typedef struct safe_watcher {
    evpol__sigchld s; /* first */
} safe_watcher;

static evpol__sigchld *as_sigchld(evpol_watcher *w)
{
    return (evpol__sigchld *)w;
}

/* waitpid(pid, WNOHANG) for one registration. s->lock held, so that one
 * exit is taken by exactly one of add and the SIGCHLD handler. True when
 * the child is gone (c->exit set: decoded, or lost on ECHILD). An error
 * that says nothing about the child is left in *wait_errno (when it is
 * still 0) for the caller to log once the lock is released. */
static bool poll_child_locked(evpol__child *c, int *wait_errno)
{
    int status = 0;
    pid_t r;
    do
        r = evpol__sys.waitpid(c->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r < 0) {
        /* Anything but ECHILD says nothing about the child: ask again at
         * the next SIGCHLD. */
        if (errno != ECHILD) {
            if (!*wait_errno)
                *wait_errno = errno;
            return false;
        }
        evpol__exit_lost(&c->exit);
        return true;
    }
    evpol__exit_decode(c->pid, status, &c->exit);
    return true;
}

static evpol__child *safe_reap(evpol__sigchld *s)
{
    evpol__child *list = NULL;
    pid_t failed_pid = 0;
    int wait_errno = 0;
    pthread_mutex_lock(&s->lock);
    if (!evpol__watcher_closed(&s->base)) {
        for (size_t i = 0; i < s->tab.nbuckets; i++) {
            evpol__child *c = s->tab.buckets[i];
            while (c) {
                /* Removing c unlinks only c, so `next` stays valid. */
                evpol__child *next = c->next;
                int e = wait_errno;
                if (poll_child_locked(c, &wait_errno)) {
                    evpol__childtab_remove(&s->tab, c->pid);
                    c->next = list;
                    list = c;
                } else if (wait_errno != e) {
                    failed_pid = c->pid;
                }
                c = next;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (wait_errno)
        evpol__log_waitpid_error(s->base.ops->name, failed_pid, wait_errno);
    return list;
}

static int safe_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                    evpol_error *err)
{
    (void)loop; /* callbacks go to the attached loop */
    evpol__sigchld *s = as_sigchld(w);
    evpol__child *done = NULL;
    int wait_errno = 0;
    pthread_mutex_lock(&s->lock);
    evpol__child *c = evpol__sigchld_register_locked(s, pid, h);
    if (!c) {
        pthread_mutex_unlock(&s->lock);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    /* The child may have exited before it was registered (SAF-6). */
    if (poll_child_locked(c, &wait_errno)) {
        evpol__childtab_remove(&s->tab, pid);
        done = c;
    }
    pthread_mutex_unlock(&s->lock);
    if (wait_errno)
        evpol__log_waitpid_error(w->ops->name, pid, wait_errno);
    evpol__sigchld_post(s, done);
    return 0;
}

static int safe_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    (void)err;
    return evpol__sigchld_remove(as_sigchld(w), pid);
}

static int safe_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    return evpol__sigchld_attach(as_sigchld(w), loop, err);
}

static int safe_is_active(evpol_watcher *w)
{
    return evpol__sigchld_is_active(as_sigchld(w));
}

static evpol_loop *safe_get_loop(evpol_watcher *w)
{
    return evpol__sigchld_get_loop(as_sigchld(w));
}

static int safe_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    evpol__sigchld_close(as_sigchld(w));
    return 0;
}

static void safe_destroy(evpol_watcher *w)
{
    safe_watcher *sw = (safe_watcher *)w;
    evpol__sigchld_fini(&sw->s);
    evpol__sys.free(sw);
}

static const struct evpol_watcher_ops safe_ops = {
    .name = "SafeChildWatcher",
    .kind = EVPOL_WATCHER_SAFE,
    .add = safe_add,
    .remove = safe_remove,
    .attach = safe_attach,
    .is_active = safe_is_active,
    .close = safe_close,
    /* No enter/exit: the spawn context means nothing to Safe, since
     * add_child_handler polls the pid itself and so cannot miss an exit
     * between spawn and registration. */
    .destroy = safe_destroy,
    .get_loop = safe_get_loop,
    .needs_loop = false,
};

int evpol__safe_new(evpol_watcher **out, evpol_error *err)
{
    safe_watcher *sw = evpol__sys.calloc(1, sizeof *sw);
    if (!sw)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = evpol__sigchld_init(&sw->s, &safe_ops, safe_reap, err);
    if (rc) {
        evpol__sys.free(sw);
        return rc;
    }
    *out = &sw->s.base;
    return 0;
}
