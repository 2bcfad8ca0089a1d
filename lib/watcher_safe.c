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
#include "sigchld-internal.h"

#include <stdlib.h>

static evpol__sigchld *as_sigchld(evpol_watcher *w)
{
    return (evpol__sigchld *)w;
}

static evpol__child *safe_reap(evpol__sigchld *s)
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
    if (evpol__child_poll_locked(&s->lock, c, &wait_errno)) {
        evpol__childtab_remove(&s->tab, pid);
        done = c;
    }
    pthread_mutex_unlock(&s->lock);
    if (wait_errno)
        evpol__log_waitpid_error(w->ops->name, pid, wait_errno);
    evpol__sigchld_post(s, done);
    return 0;
}

static int safe_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    evpol__sigchld_close(as_sigchld(w));
    return 0;
}

static void safe_destroy(evpol_watcher *w)
{
    evpol__sigchld_fini(as_sigchld(w));
    evpol__sys.free(w);
}

static const struct evpol__watcher_ops safe_ops = {
    .name = "SafeChildWatcher",
    .kind = EVPOL_WATCHER_SAFE,
    .add = safe_add,
    .remove = evpol__sigchld_remove,
    .attach = evpol__sigchld_attach,
    .is_active = evpol__sigchld_is_active,
    .close = safe_close,
    /* No enter/exit: the spawn context means nothing to Safe, since
     * add_child_handler polls the pid itself and so cannot miss an exit
     * between spawn and registration. */
    .destroy = safe_destroy,
    .get_loop = evpol__sigchld_get_loop,
    .needs_loop = false,
};

int evpol__safe_new(evpol_watcher **out, evpol_error *err)
{
    evpol__sigchld *s = evpol__sys.calloc(1, sizeof *s);
    if (!s)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = evpol__sigchld_init(s, &safe_ops, safe_reap, err);
    if (rc) {
        evpol__sys.free(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}
