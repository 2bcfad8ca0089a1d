/*
 * wcore.c — the shared core of watchers whose work outlives a call.
 *
 * Threaded (one thread per child) and Pidfd (one loop reader per child)
 * both have something that can still run after the watcher is closed or
 * freed: a waiting thread, a reader callback. Each of those holds a
 * reference to the core (lock, pid table, and a pointer to the watcher that
 * close clears), never to the watcher itself; it reaches the watcher only
 * under the core lock, with a reference the last unref cannot race with.
 */
#include "evpol-internal.h"

#include <stdlib.h>

int evpol__core_watcher_new(const struct evpol_watcher_ops *ops, evpol_watcher **out,
                            evpol_error *err)
{
    evpol__core_watcher *cw = evpol__sys.calloc(1, sizeof *cw);
    evpol__wcore *core = evpol__sys.calloc(1, sizeof *core);
    if (!cw || !core)
        goto nomem;
    int rc = pthread_mutex_init(&core->lock, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc) {
        evpol__sys.free(cw);
        evpol__sys.free(core);
        return evpol__fail_sys(err, rc, "cannot create watcher lock");
    }
    /* LCOV_EXCL_STOP */
    if (evpol__childtab_init(&core->tab) != 0) {
        pthread_mutex_destroy(&core->lock);
        goto nomem;
    }
    rc = evpol__watcher_init(&cw->base, ops, err);
    /* LCOV_EXCL_START: evpol__watcher_init fails only when pthread_rwlock_init
     * does, which glibc's never does */
    if (rc) {
        evpol__childtab_fini(&core->tab, NULL);
        pthread_mutex_destroy(&core->lock);
        evpol__sys.free(cw);
        evpol__sys.free(core);
        return rc;
    }
    /* LCOV_EXCL_STOP */
    atomic_init(&core->refs, 1); /* the watcher's */
    core->watcher = &cw->base;
    cw->core = core;
    *out = &cw->base;
    return 0;
nomem:
    evpol__sys.free(cw);
    evpol__sys.free(core);
    return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
}

evpol__wcore *evpol__core_of(evpol_watcher *w)
{
    return ((evpol__core_watcher *)w)->core;
}

void evpol__core_watcher_destroy(evpol_watcher *w)
{
    evpol__wcore *core = evpol__core_of(w);
    evpol__watcher_fini(w);
    evpol__sys.free(w);
    evpol__wcore_unref(core);
}

int evpol__core_watcher_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    (void)err;
    evpol__wcore *core = evpol__core_of(w);
    evpol_loop *old_loop = NULL;
    pthread_mutex_lock(&core->lock);
    /* Its thread or reader still reaps the child. */
    int removed = evpol__child_disarm(evpol__childtab_find(&core->tab, pid), &old_loop);
    pthread_mutex_unlock(&core->lock);
    evpol_loop_unref(old_loop);
    return removed;
}

/* Close: forget the watcher and take the pending registrations. */
static evpol__childtab wcore_detach(evpol__wcore *core)
{
    pthread_mutex_lock(&core->lock);
    core->watcher = NULL;
    evpol__childtab pending = core->tab;
    core->tab = (evpol__childtab){0};
    pthread_mutex_unlock(&core->lock);
    return pending;
}

void evpol__core_watcher_close(evpol_watcher *w, void (*release)(evpol__child *c),
                               const char *consequence)
{
    evpol__childtab pending = wcore_detach(evpol__core_of(w));
    if (pending.count)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                   "%s %p has registered but not finished child processes (%zu pending)%s",
                   w->ops->name, (void *)w, pending.count, consequence);
    evpol__childtab_fini(&pending, release);
}

void evpol__wcore_ref(evpol__wcore *core)
{
    atomic_fetch_add(&core->refs, 1);
}

void evpol__wcore_unref(evpol__wcore *core)
{
    if (atomic_fetch_sub(&core->refs, 1) != 1)
        return;
    evpol__childtab_fini(&core->tab, evpol__child_free);
    while (core->spare) {
        evpol__spare *next = core->spare->next;
        evpol__sys.free(core->spare);
        core->spare = next;
    }
    pthread_mutex_destroy(&core->lock);
    evpol__sys.free(core);
}

evpol_watcher *evpol__wcore_watcher_locked(evpol__wcore *core)
{
    if (core->watcher && evpol__watcher_try_ref(core->watcher))
        return core->watcher;
    return NULL;
}

void evpol__wcore_finish(evpol_watcher *w, evpol__child *c)
{
    if (!w) {
        evpol__child_free(c);
        return;
    }
    if (c->exit.kind == EVPOL_EXIT_LOST)
        evpol__warn_unknown_child(c->pid);
    evpol__deliver(w, c);
    /* May be the last reference: the watcher is then closed and freed here,
     * which is safe since the caller holds no lock. */
    evpol_watcher_unref(w);
}
