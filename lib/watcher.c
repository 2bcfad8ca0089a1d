/*
 * watcher.c — the child watcher interface.
 *
 * The public evpol_watcher_* functions validate their arguments, reject
 * calls on closed watchers, and dispatch to the watcher's ops. Two
 * guarantees that CPython does not give are made here, once for every
 * watcher:
 *  - no callback after close (CW-8): every user callback runs through the
 *    watcher's gate (a read-write lock); close takes it for writing, so when
 *    close returns no callback is running and none will start;
 *  - an exit is delivered to a loop without allocating (evpol__deliver), so
 *    a reaped status is never lost to an out-of-memory error.
 */
#include "evpol-internal.h"

#include <stdlib.h>
#include <string.h>

/* The watcher whose callback this thread is running, so that a callback may
 * close its own watcher without waiting for itself. */
_Thread_local evpol_watcher *evpol__tls_in_callback;

int evpol__watcher_init(evpol_watcher *w, const struct evpol__watcher_ops *ops, evpol_error *err)
{
    int rc = pthread_rwlock_init(&w->gate, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc)
        return evpol__fail_sys(err, rc, "cannot create watcher lock");
    /* LCOV_EXCL_STOP */
    w->magic = EVPOL_MAGIC_WATCHER;
    atomic_init(&w->refs, 1);
    atomic_init(&w->closed, false);
    atomic_init(&w->contexts, 0);
    w->ops = ops;
    return 0;
}

void evpol__watcher_fini(evpol_watcher *w)
{
    w->magic = EVPOL_MAGIC_DEAD;
    pthread_rwlock_destroy(&w->gate);
}

bool evpol__watcher_closed(evpol_watcher *w)
{
    return atomic_load(&w->closed);
}

bool evpol__watcher_try_ref(evpol_watcher *w)
{
    int refs = atomic_load(&w->refs);
    do {
        if (refs <= 0)
            return false;
    } while (!atomic_compare_exchange_weak(&w->refs, &refs, refs + 1));
    return true;
}

bool evpol_is_watcher(const void *p)
{
    return p && ((const evpol_watcher *)p)->magic == EVPOL_MAGIC_WATCHER;
}

int evpol_watcher_new(evpol_watcher_kind kind, evpol_watcher **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_watcher_new: out is NULL");
    *out = NULL;
    switch (kind) {
    case EVPOL_WATCHER_THREADED: return evpol__threaded_new(out, err);
    case EVPOL_WATCHER_MULTILOOP: return evpol__multiloop_new(out, err);
    case EVPOL_WATCHER_SAFE: return evpol__safe_new(out, err);
    case EVPOL_WATCHER_FAST: return evpol__fast_new(out, err);
    case EVPOL_WATCHER_PIDFD: return evpol__pidfd_new(out, err);
    case EVPOL_WATCHER_AUTO:
        return evpol__pidfd_usable() ? evpol__pidfd_new(out, err) : evpol__threaded_new(out, err);
    case EVPOL_WATCHER_CUSTOM:
        return evpol__fail(err, EVPOL_EINVAL, "custom watchers are made by evpol_watcher_new_custom");
    }
    return evpol__fail(err, EVPOL_EINVAL, "unknown watcher kind %d", (int)kind);
}

evpol_watcher *evpol_watcher_ref(evpol_watcher *w)
{
    if (evpol_is_watcher(w))
        atomic_fetch_add(&w->refs, 1);
    return w;
}

void evpol_watcher_unref(evpol_watcher *w)
{
    if (!evpol_is_watcher(w))
        return;
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    evpol_watcher_close(w, NULL);
    w->ops->destroy(w);
}

int evpol_watcher_kind_of(evpol_watcher *w)
{
    if (!evpol_is_watcher(w))
        return EVPOL_EINVAL;
    return (int)w->ops->kind;
}

const char *evpol_watcher_name(evpol_watcher *w)
{
    return evpol_is_watcher(w) ? w->ops->name : "not a watcher";
}

#define CHECK_WATCHER(w, fn)                                                                   \
    do {                                                                                       \
        if (!(w))                                                                              \
            return evpol__fail(err, EVPOL_EINVAL, fn ": watcher is NULL");                    \
        if (!evpol_is_watcher(w))                                                              \
            return evpol__fail(err, EVPOL_ETYPE, fn ": not a child watcher");                 \
    } while (0)

#define CHECK_OPEN(w, fn)                                                                      \
    do {                                                                                       \
        CHECK_WATCHER(w, fn);                                                                  \
        if (evpol__watcher_closed(w))                                                          \
            return evpol__fail(err, EVPOL_ERUNTIME, fn ": %s is closed", (w)->ops->name);     \
    } while (0)

static int add_handler(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                       evpol_error *err)
{
    CHECK_OPEN(w, "add_child_handler");
    if (pid <= 0)
        return evpol__fail(err, EVPOL_EINVAL, "add_child_handler: invalid pid %ld", (long)pid);
    if (!h->cb && !h->status_cb)
        return evpol__fail(err, EVPOL_EINVAL, "add_child_handler: callback is NULL");
    if (h->status_cb && w->ops->kind == EVPOL_WATCHER_CUSTOM)
        return evpol__fail(err, EVPOL_ENOTSUP,
                           "add_child_status_handler: a custom watcher reports only a "
                           "returncode; use evpol_watcher_add_child_handler");
    if (loop && !evpol_is_loop(loop))
        return evpol__fail(err, EVPOL_ETYPE, "add_child_handler: not an event loop");
    if (loop && evpol_loop_is_closed(loop) == 1)
        return evpol__fail(err, EVPOL_ERUNTIME, "add_child_handler: the event loop is closed");
    if (w->ops->needs_loop && !loop)
        return evpol__fail(err, EVPOL_ERUNTIME, "add_child_handler: no running event loop");
    return w->ops->add(w, loop, pid, h, err);
}

int evpol_watcher_add_child_handler_on(evpol_watcher *w, evpol_loop *loop, pid_t pid,
                                       evpol_child_fn cb, void *arg, evpol_error *err)
{
    return add_handler(w, loop, pid, &(evpol__handler){.cb = cb, .arg = arg}, err);
}

int evpol_watcher_add_child_handler(evpol_watcher *w, pid_t pid, evpol_child_fn cb, void *arg,
                                    evpol_error *err)
{
    return evpol_watcher_add_child_handler_on(w, evpol__running_loop(), pid, cb, arg, err);
}

int evpol_watcher_add_child_status_handler_on(evpol_watcher *w, evpol_loop *loop, pid_t pid,
                                              evpol_child_status_fn cb, void *arg,
                                              evpol_error *err)
{
    return add_handler(w, loop, pid, &(evpol__handler){.status_cb = cb, .arg = arg}, err);
}

int evpol_watcher_add_child_status_handler(evpol_watcher *w, pid_t pid, evpol_child_status_fn cb,
                                           void *arg, evpol_error *err)
{
    return evpol_watcher_add_child_status_handler_on(w, evpol__running_loop(), pid, cb, arg, err);
}

int evpol_watcher_remove_child_handler(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    CHECK_OPEN(w, "remove_child_handler");
    if (pid <= 0)
        return evpol__fail(err, EVPOL_EINVAL, "remove_child_handler: invalid pid %ld", (long)pid);
    return w->ops->remove(w, pid, err);
}

int evpol_watcher_attach_loop(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    CHECK_OPEN(w, "attach_loop");
    if (loop && !evpol_is_loop(loop))
        return evpol__fail(err, EVPOL_ETYPE, "attach_loop: not an event loop");
    return w->ops->attach ? w->ops->attach(w, loop, err) : 0;
}

int evpol_watcher_get_loop(evpol_watcher *w, evpol_loop **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_loop: out is NULL");
    *out = NULL;
    CHECK_WATCHER(w, "get_loop");
    if (!w->ops->get_loop)
        return 0;
    /* Borrowed, as every getter's: our reference is only for the call. */
    evpol_loop *loop = w->ops->get_loop(w);
    *out = loop;
    evpol_loop_unref(loop);
    return 0;
}

int evpol_watcher_is_active(evpol_watcher *w)
{
    if (!evpol_is_watcher(w))
        return EVPOL_EINVAL;
    if (evpol__watcher_closed(w))
        return 0;
    return !w->ops->is_active || w->ops->is_active(w) ? 1 : 0;
}

int evpol_watcher_close(evpol_watcher *w, evpol_error *err)
{
    CHECK_WATCHER(w, "close");
    if (atomic_exchange(&w->closed, true))
        return 0;
    int rc = w->ops->close(w, err);
    /* Wait until no callback of this watcher is running (except our own
     * caller's, when a callback closes its own watcher). */
    if (evpol__tls_in_callback != w) {
        pthread_rwlock_wrlock(&w->gate);
        pthread_rwlock_unlock(&w->gate);
    }
    evpol__spawn_orphans_may_exist();
    return rc;
}

int evpol_watcher_enter(evpol_watcher *w, evpol_error *err)
{
    CHECK_OPEN(w, "enter");
    int rc = w->ops->enter ? w->ops->enter(w, err) : 0;
    if (rc == 0)
        atomic_fetch_add(&w->contexts, 1);
    return rc;
}

int evpol_watcher_exit(evpol_watcher *w, evpol_error *err)
{
    CHECK_OPEN(w, "exit");
    int open = atomic_load(&w->contexts);
    do {
        if (open <= 0)
            return evpol__fail(err, EVPOL_ERUNTIME, "exit: %s has no open spawn context",
                               w->ops->name);
    } while (!atomic_compare_exchange_weak(&w->contexts, &open, open - 1));
    int rc = w->ops->exit ? w->ops->exit(w, err) : 0;
    if (rc != 0)
        atomic_fetch_add(&w->contexts, 1);
    return rc;
}

/* ---- custom watchers ---- */

typedef struct custom_watcher {
    evpol_watcher base;
    evpol_watcher_methods m;
    void *self;
} custom_watcher;

static custom_watcher *as_custom(evpol_watcher *w)
{
    return (custom_watcher *)w;
}

static int custom_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                      evpol_error *err)
{
    /* Status handlers were refused above: h->cb is set. */
    return as_custom(w)->m.add_child_handler(as_custom(w)->self, loop, pid, h->cb, h->arg, err);
}

static int custom_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    return as_custom(w)->m.remove_child_handler(as_custom(w)->self, pid, err);
}

static int custom_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err)
{
    return as_custom(w)->m.attach_loop(as_custom(w)->self, loop, err);
}

static int custom_is_active(evpol_watcher *w)
{
    return as_custom(w)->m.is_active(as_custom(w)->self);
}

static int custom_close(evpol_watcher *w, evpol_error *err)
{
    return as_custom(w)->m.close(as_custom(w)->self, err);
}

static int custom_enter(evpol_watcher *w, evpol_error *err)
{
    return as_custom(w)->m.enter(as_custom(w)->self, err);
}

static int custom_exit(evpol_watcher *w, evpol_error *err)
{
    return as_custom(w)->m.exit(as_custom(w)->self, err);
}

static void custom_destroy(evpol_watcher *w)
{
    custom_watcher *cw = as_custom(w);
    cw->m.destroy(cw->self);
    evpol__watcher_fini(w);
    evpol__sys.free(cw);
}

static const struct evpol__watcher_ops custom_ops = {
    .name = "custom",
    .kind = EVPOL_WATCHER_CUSTOM,
    .add = custom_add,
    .remove = custom_remove,
    .attach = custom_attach,
    .is_active = custom_is_active,
    .close = custom_close,
    .enter = custom_enter,
    .exit = custom_exit,
    .destroy = custom_destroy,
    .needs_loop = false,
};

int evpol_watcher_new_custom(const evpol_watcher_methods *m, void *self, evpol_watcher **out,
                             evpol_error *err)
{
    if (!out || !m)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_watcher_new_custom: NULL argument");
    *out = NULL;
    if (m->size != sizeof *m)
        return evpol__fail(err, EVPOL_ETYPE,
                           "evpol_watcher_methods has size %zu, expected %zu", m->size, sizeof *m);
    if (!m->add_child_handler || !m->remove_child_handler || !m->attach_loop || !m->is_active ||
        !m->close || !m->enter || !m->exit || !m->destroy)
        return evpol__fail(err, EVPOL_ETYPE, "a custom watcher must implement every method");
    custom_watcher *cw = evpol__sys.calloc(1, sizeof *cw);
    if (!cw)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = evpol__watcher_init(&cw->base, &custom_ops, err);
    /* LCOV_EXCL_START: evpol__watcher_init fails only when pthread_rwlock_init
     * does, which glibc's never does */
    if (rc) {
        evpol__sys.free(cw);
        return rc;
    }
    /* LCOV_EXCL_STOP */
    cw->m = *m;
    cw->self = self;
    *out = &cw->base;
    return 0;
}

void *evpol_watcher_user_data(evpol_watcher *w)
{
    if (!evpol_is_watcher(w) || w->ops != &custom_ops)
        return NULL;
    return as_custom(w)->self;
}
