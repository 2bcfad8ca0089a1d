/*
 * registry.c — the registry core: what every built-in watcher does with a
 * registered child, whatever tells it of the exit (registry-internal.h
 * lists the states of a registration).
 *
 *   status decoding   waitpid's status -> evpol_exit_status (CW-10, CW-11)
 *   registrations     new, replace (CW-2), remove (CW-4), lists
 *   the pid table     pid -> registration, a chained hash table; one per
 *                     watcher under its owner's lock; O(1) lookups on
 *                     average, doubling when it holds more entries than
 *                     buckets
 *   close             reap the exited, warn about the rest (CW-8)
 *   delivery          to the registering loop without allocating, and the
 *                     callback gate (no callback after close)
 *   the shared core   of Threaded, Pidfd and MultiLoop, whose threads
 *                     and readers outlive a call: each reaches the
 *                     watcher only through the core (lock, pid table, and
 *                     a pointer to the watcher that close clears), under
 *                     the core lock, with a reference the last unref
 *                     cannot race with. Threaded's waiters and Pidfd's
 *                     readers hold core references; MultiLoop's reaper is
 *                     joined by close instead.
 */
#include "registry-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* ---- status decoding ---- */

void evpol__exit_decode(pid_t pid, int status, evpol_exit_status *out)
{
    *out = (evpol_exit_status){.size = sizeof *out, .raw = status};
    if (WIFEXITED(status)) {
        out->kind = EVPOL_EXIT_EXITED;
        out->code = WEXITSTATUS(status);
        out->returncode = out->code;
    } else if (WIFSIGNALED(status)) {
        out->kind = EVPOL_EXIT_KILLED;
        out->signal = WTERMSIG(status);
        out->core_dumped = WCOREDUMP(status) != 0;
        out->returncode = -out->signal;
    } else {
        /* asyncio's 255, which alone reads as exit(255) or a lost status. */
        out->kind = EVPOL_EXIT_UNKNOWN;
        out->returncode = 255;
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "pid %ld: wait status 0x%x is neither an exit nor a death by signal, "
                   "will report returncode 255",
                   (long)pid, (unsigned)status);
    }
}

void evpol__exit_lost(evpol_exit_status *out)
{
    *out = (evpol_exit_status){.size = sizeof *out, .kind = EVPOL_EXIT_LOST, .returncode = 255};
}

void evpol__log_waitpid_error(const char *watcher, pid_t pid, int errnum)
{
    /* CPython logs this as "Unknown exception in SIGCHLD handler". */
    evpol__log(EVPOL_LOG_ERROR, EVPOL_LOG_CAT_RUNTIME,
               "%s: waitpid(%ld) failed: %s (errno %d); the registration is kept and polled "
               "again at the next SIGCHLD",
               watcher, (long)pid, strerror(errnum), errnum);
}

void evpol__warn_unknown_child(pid_t pid)
{
    evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
               "Unknown child process pid %ld, will report returncode 255", (long)pid);
}

/* ---- registrations ---- */

/* The state transitions below are the only writes to c->state. */
#define EXIT_OF(c) ((c)->state & EVPOL__CHILD_EXIT_MASK)

static evpol__child *child_alloc(pid_t pid, unsigned state)
{
    evpol__child *c = evpol__sys.calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pid = pid;
    c->state = state;
    c->fd = -1;
    return c;
}

evpol__child *evpol__child_new(pid_t pid, const evpol__handler *h, evpol_loop *loop)
{
    evpol__child *c = child_alloc(pid, EVPOL__CHILD_RUNNING);
    if (!c)
        return NULL;
    c->h = *h;
    c->loop = loop ? evpol_loop_ref(loop) : NULL;
    return c;
}

evpol__child *evpol__child_new_kept(pid_t pid, const evpol_exit_status *exit)
{
    evpol__child *c = child_alloc(pid, EVPOL__CHILD_EXITED | EVPOL__CHILD_NO_HANDLER);
    if (c)
        c->exit = *exit;
    return c;
}

void evpol__child_free(evpol__child *c)
{
    if (!c)
        return;
    evpol_loop_unref(c->loop);
    evpol__sys.free(c);
}

void evpol__child_replace(evpol__child *c, const evpol__handler *h, evpol_loop *loop,
                          evpol_loop **old_loop)
{
    assert(EXIT_OF(c) == EVPOL__CHILD_RUNNING);
    *old_loop = c->loop;
    c->loop = loop ? evpol_loop_ref(loop) : NULL;
    c->h = *h;
    c->state = EVPOL__CHILD_RUNNING;
}

void evpol__child_claim(evpol__child *c, const evpol__handler *h)
{
    assert(c->state == (EVPOL__CHILD_EXITED | EVPOL__CHILD_NO_HANDLER));
    c->h = *h;
    c->state = EVPOL__CHILD_EXITED;
}

void evpol__child_rekeep(evpol__child *c, const evpol_exit_status *exit)
{
    assert(c->state == (EVPOL__CHILD_EXITED | EVPOL__CHILD_NO_HANDLER));
    c->exit = *exit;
}

int evpol__child_disarm(evpol__child *c, evpol_loop **old_loop)
{
    if (!c || !evpol__child_armed(c))
        return 0;
    assert(EXIT_OF(c) == EVPOL__CHILD_RUNNING);
    c->h = (evpol__handler){0};
    c->state |= EVPOL__CHILD_NO_HANDLER;
    *old_loop = c->loop;
    c->loop = NULL;
    return 1;
}

void evpol__child_exited(evpol__child *c, const evpol_exit_status *exit)
{
    assert(EXIT_OF(c) == EVPOL__CHILD_RUNNING);
    c->exit = *exit;
    c->state |= EVPOL__CHILD_EXITED;
}

void evpol__child_lost_exit(evpol__child *c)
{
    assert(EXIT_OF(c) == EVPOL__CHILD_RUNNING);
    evpol__exit_lost(&c->exit);
    c->state |= EVPOL__CHILD_LOST;
}

bool evpol__child_poll_locked(pthread_mutex_t *lock, evpol__child *c, int *wait_errno)
{
    EVPOL__ASSERT_LOCKED(lock);
    int status = 0;
    pid_t r;
    do
        r = evpol__sys.waitpid(c->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == c->pid) {
        evpol_exit_status exit;
        evpol__exit_decode(c->pid, status, &exit);
        evpol__child_exited(c, &exit);
        return true;
    }
    if (r < 0 && errno == ECHILD) {
        evpol__child_lost_exit(c);
        return true;
    }
    /* 0: still running. Any other error says nothing about the child:
     * keep the record and look again at the next SIGCHLD. */
    if (r < 0 && !*wait_errno)
        *wait_errno = errno;
    return false;
}

void evpol__child_list_free(evpol__child *list)
{
    while (list) {
        evpol__child *next = list->next;
        evpol__child_free(list);
        list = next;
    }
}

void evpol__child_list_deliver(evpol_watcher *w, evpol__child *list)
{
    while (list) {
        evpol__child *c = list;
        list = c->next;
        c->next = NULL;
        if (evpol__child_lost(c) && evpol__child_armed(c))
            evpol__warn_unknown_child(c->pid);
        evpol__deliver(w, c);
    }
}

/* ---- close ---- */

void evpol__childtab_reap_exited(const evpol__childtab *t, size_t *pending, size_t *running)
{
    *pending = *running = 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (const evpol__child *c = t->buckets[i]; c; c = c->next) {
            if (evpol__child_armed(c))
                (*pending)++;
            int status;
            pid_t r;
            do
                r = evpol__sys.waitpid(c->pid, &status, WNOHANG);
            while (r < 0 && errno == EINTR);
            /* Reaped now (no callback after close, CW-8), or gone already. */
            if (r == 0)
                (*running)++;
        }
    }
}

void evpol__warn_closed_with_children(evpol_watcher *w, size_t pending, size_t running)
{
    if (pending || running)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                   "%s %p closed with %zu pending child handler(s), which will not be called; "
                   "%zu child process(es) still running are left to the program",
                   w->ops->name, (void *)w, pending, running);
}

/* ---- the pid table ---- */

#define CHILDTAB_MIN_BUCKETS 64

static size_t bucket_of(pid_t pid, size_t nbuckets)
{
    /* Fibonacci hashing spreads sequential pids over the buckets. */
    uint64_t h = (uint64_t)(uint32_t)pid * UINT64_C(11400714819323198485);
    return (size_t)(h >> 32) & (nbuckets - 1);
}

int evpol__childtab_init(evpol__childtab *t)
{
    t->buckets = evpol__sys.calloc(CHILDTAB_MIN_BUCKETS, sizeof *t->buckets);
    if (!t->buckets)
        return EVPOL_ENOMEM;
    t->nbuckets = CHILDTAB_MIN_BUCKETS;
    t->count = 0;
    return 0;
}

void evpol__childtab_fini(evpol__childtab *t, void (*fn)(evpol__child *c))
{
    if (!t->buckets)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *c = t->buckets[i];
        while (c) {
            evpol__child *next = c->next;
            c->next = NULL;
            if (fn)
                fn(c);
            c = next;
        }
    }
    evpol__sys.free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

evpol__child *evpol__childtab_find(const evpol__childtab *t, pid_t pid)
{
    evpol__child *c = t->buckets ? t->buckets[bucket_of(pid, t->nbuckets)] : NULL;
    while (c && c->pid != pid)
        c = c->next;
    return c;
}

static void grow(evpol__childtab *t)
{
    size_t n = t->nbuckets * 2;
    evpol__child **b = evpol__sys.calloc(n, sizeof *b);
    if (!b)
        return; /* a fuller table is slower, not wrong */
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *c = t->buckets[i];
        while (c) {
            evpol__child *next = c->next;
            size_t j = bucket_of(c->pid, n);
            c->next = b[j];
            b[j] = c;
            c = next;
        }
    }
    evpol__sys.free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void evpol__childtab_insert(evpol__childtab *t, evpol__child *c)
{
    if (t->count >= t->nbuckets)
        grow(t);
    size_t i = bucket_of(c->pid, t->nbuckets);
    c->next = t->buckets[i];
    t->buckets[i] = c;
    t->count++;
}

evpol__child *evpol__childtab_remove(evpol__childtab *t, pid_t pid)
{
    if (!t->buckets)
        return NULL;
    evpol__child **link = &t->buckets[bucket_of(pid, t->nbuckets)];
    for (; *link; link = &(*link)->next) {
        evpol__child *c = *link;
        if (c->pid == pid) {
            *link = c->next;
            c->next = NULL;
            t->count--;
            return c;
        }
    }
    return NULL;
}

evpol__child *evpol__childtab_drain(evpol__childtab *t)
{
    evpol__child *list = NULL;
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *c = t->buckets[i];
        while (c) {
            evpol__child *next = c->next;
            evpol__childtab_remove(t, c->pid);
            c->next = list;
            list = c;
            c = next;
        }
    }
    return list;
}

size_t evpol__childtab_pending(const evpol__childtab *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (const evpol__child *c = t->buckets[i]; c; c = c->next)
            if (evpol__child_armed(c))
                n++;
    return n;
}

evpol__child *evpol__childtab_poll_locked(pthread_mutex_t *lock, evpol__childtab *t,
                                          pid_t *failed_pid, int *wait_errno)
{
    EVPOL__ASSERT_LOCKED(lock);
    evpol__child *gone = NULL;
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *next;
        for (evpol__child *c = t->buckets[i]; c; c = next) {
            /* Removing c unlinks only c, so `next` stays valid. */
            next = c->next;
            int e = *wait_errno;
            if (!evpol__child_poll_locked(lock, c, wait_errno)) {
                if (*wait_errno != e)
                    *failed_pid = c->pid;
                continue;
            }
            evpol__childtab_remove(t, c->pid);
            c->next = gone;
            gone = c;
        }
    }
    return gone;
}

/* ---- delivery ---- */

void evpol__watcher_invoke(evpol_watcher *w, const evpol__child *c)
{
    pthread_rwlock_rdlock(&w->gate);
    if (!evpol__watcher_closed(w)) {
        evpol_watcher *outer = evpol__tls_in_callback;
        evpol__tls_in_callback = w;
        if (c->h.status_cb)
            c->h.status_cb(c->pid, &c->exit, c->h.arg);
        else
            c->h.cb(c->pid, c->exit.returncode, c->h.arg);
        evpol__tls_in_callback = outer;
    }
    pthread_rwlock_unlock(&w->gate);
}

static void delivery_run(void *p)
{
    evpol__child *c = p;
    evpol_watcher *w = c->watcher;
    evpol__log_debug(c->loop, "process %ld exited with returncode %d", (long)c->pid,
                     c->exit.returncode);
    evpol__watcher_invoke(w, c);
    evpol__child_free(c);
    evpol_watcher_unref(w);
}

static void warn_loop_closed(evpol__child *c)
{
    evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
               "Loop %p that handles pid %ld is closed", (void *)c->loop, (long)c->pid);
}

static void delivery_drop(void *p)
{
    evpol__child *c = p;
    evpol_watcher *w = c->watcher;
    warn_loop_closed(c);
    evpol__child_free(c);
    evpol_watcher_unref(w);
}

void evpol__deliver(evpol_watcher *w, evpol__child *c)
{
    if (!evpol__child_armed(c) || evpol__watcher_closed(w)) {
        evpol__child_free(c);
        return;
    }
    /* Held until the callback ran or was dropped. The caller's own
     * reference keeps the count above zero, so this cannot revive a watcher
     * whose last unref is closing it. */
    evpol_watcher_ref(w);
    if (!c->loop) {
        /* No loop to hand it to: call it here. */
        evpol__watcher_invoke(w, c);
        evpol__child_free(c);
        evpol_watcher_unref(w);
        return;
    }
    c->watcher = w;
    c->post.fn = delivery_run;
    c->post.drop = delivery_drop;
    c->post.arg = c;
    if (evpol__loop_post(c->loop, &c->post, NULL) != 0)
        delivery_drop(c);
}

/* ---- the shared core of Threaded, Pidfd and MultiLoop ---- */

int evpol__wcore_watcher_new(const struct evpol__watcher_ops *ops, size_t size,
                             evpol_watcher **out, evpol_error *err)
{
    assert(size >= sizeof(evpol__wcore_watcher));
    evpol__wcore_watcher *cw = evpol__sys.calloc(1, size);
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

evpol__wcore *evpol__wcore_of(evpol_watcher *w)
{
    return ((evpol__wcore_watcher *)w)->core;
}

void evpol__wcore_watcher_destroy(evpol_watcher *w)
{
    evpol__wcore *core = evpol__wcore_of(w);
    evpol__watcher_fini(w);
    evpol__sys.free(w);
    evpol__wcore_unref(core);
}

int evpol__wcore_watcher_remove(evpol_watcher *w, pid_t pid, evpol_error *err)
{
    (void)err;
    evpol__wcore *core = evpol__wcore_of(w);
    evpol_loop *old_loop = NULL;
    pthread_mutex_lock(&core->lock);
    /* Its thread or reader still reaps the child. */
    int removed = evpol__child_disarm(evpol__childtab_find(&core->tab, pid), &old_loop);
    pthread_mutex_unlock(&core->lock);
    evpol_loop_unref(old_loop);
    return removed;
}

evpol__childtab evpol__wcore_detach(evpol__wcore *core)
{
    pthread_mutex_lock(&core->lock);
    core->watcher = NULL;
    evpol__childtab pending = core->tab;
    core->tab = (evpol__childtab){0};
    pthread_mutex_unlock(&core->lock);
    return pending;
}

void evpol__wcore_watcher_close(evpol_watcher *w, void (*release)(evpol__child *c),
                               const char *consequence)
{
    evpol__childtab pending = evpol__wcore_detach(evpol__wcore_of(w));
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
    EVPOL__ASSERT_LOCKED(&core->lock);
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
    if (evpol__child_lost(c))
        evpol__warn_unknown_child(c->pid);
    evpol__deliver(w, c);
    /* May be the last reference: the watcher is then closed and freed here,
     * which is safe since the caller holds no lock. */
    evpol_watcher_unref(w);
}
