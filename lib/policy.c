/*
 * policy.c — event-loop policies and the process-wide policy.
 *
 * A policy is a method table plus the state of the default implementation:
 * one loop slot per thread and the child watcher. Custom policies derived
 * from the default get the default's functions in their NULL slots; the
 * default functions reach the policy's other methods only through the table,
 * so overrides are seen from inside "super" (POL-8), as in Python.
 *
 * Per-thread slots are keyed by a serial number given to each thread on
 * first use, never by pthread_t: pthread_t values are reused once a thread
 * ends, and a new thread must not inherit a dead thread's loop. A pthread
 * key destructor clears a thread's slots in every live policy when the
 * thread exits, dropping the loop references they held.
 *
 * After fork() the child forgets every slot (POL-21) without touching the
 * loops: their event_bases share kernel objects (an epoll fd) with the
 * parent, and tearing them down in the child would disturb the parent.
 *
 * Lock order: registry_lock, then a policy's lock. No lock is held while a
 * method, a loop or a watcher is called.
 */
#include "evpol-internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct thread_slot {
    struct thread_slot *next;
    uint64_t thread;  /* serial of the owning thread */
    evpol_loop *loop; /* a reference, or NULL */
    bool set_called;
} thread_slot;

struct evpol_policy {
    uint32_t magic;
    atomic_int refs;
    evpol_policy_methods m; /* effective table */
    bool derived;           /* derived from the default (has default state) */
    void *user_data;
    evpol_backend backend;
    evpol_watcher_kind watcher_kind;

    pthread_mutex_t lock;
    thread_slot *slots;
    evpol_watcher *watcher; /* a reference, or NULL */

    struct evpol_policy *reg_next; /* registry of live derived policies */
};

/* ---- thread identity ---- */

static atomic_uint_least64_t next_thread_serial = 1;
static _Thread_local uint64_t tls_thread_serial;
static pthread_key_t thread_exit_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

static void thread_exited(void *value);

static void make_thread_key(void)
{
    if (pthread_key_create(&thread_exit_key, thread_exited) != 0)
        thread_exit_key = (pthread_key_t)-1;
}

static uint64_t thread_serial(void)
{
    if (!tls_thread_serial) {
        tls_thread_serial = atomic_fetch_add(&next_thread_serial, 1);
        pthread_once(&thread_key_once, make_thread_key);
        /* The key's value is the serial itself, so the destructor does not
         * depend on thread-local storage still being readable. */
        if (thread_exit_key != (pthread_key_t)-1)
            pthread_setspecific(thread_exit_key, (void *)(uintptr_t)tls_thread_serial);
    }
    return tls_thread_serial;
}

/* ---- registry of live derived policies (thread exit, fork) ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static evpol_policy *registry;

static void registry_add(evpol_policy *p)
{
    pthread_mutex_lock(&registry_lock);
    p->reg_next = registry;
    registry = p;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(evpol_policy *p)
{
    pthread_mutex_lock(&registry_lock);
    for (evpol_policy **link = &registry; *link; link = &(*link)->reg_next)
        if (*link == p) {
            *link = p->reg_next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

/* Unlink the calling thread's slot from `p` and return its loop reference.
 * Caller holds p->lock. */
static evpol_loop *take_slot_locked(evpol_policy *p, uint64_t thread)
{
    EVPOL__ASSERT_LOCKED(&p->lock);
    for (thread_slot **link = &p->slots; *link; link = &(*link)->next) {
        thread_slot *s = *link;
        if (s->thread == thread) {
            *link = s->next;
            evpol_loop *loop = s->loop;
            evpol__sys.free(s);
            return loop;
        }
    }
    return NULL;
}

static void thread_exited(void *value)
{
    uint64_t thread = (uint64_t)(uintptr_t)value;
    enum { BATCH = 64 };
    evpol_loop *loops[BATCH];
    size_t n = 0;
    pthread_mutex_lock(&registry_lock);
    for (evpol_policy *p = registry; p; p = p->reg_next) {
        pthread_mutex_lock(&p->lock);
        evpol_loop *loop = take_slot_locked(p, thread);
        pthread_mutex_unlock(&p->lock);
        if (loop && n < BATCH)
            loops[n++] = loop;
        else if (loop)
            evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                       "a thread exited holding loops in more than %d policies; one is leaked",
                       BATCH);
    }
    pthread_mutex_unlock(&registry_lock);
    /* Unref outside the locks: closing a loop runs its owners' drop hooks. */
    for (size_t i = 0; i < n; i++)
        evpol_loop_unref(loops[i]);
}

/* ---- the process-wide policy ---- */

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;
static evpol_policy *global_policy;

/* ---- fork ---- */

static void fork_prepare(void)
{
    pthread_mutex_lock(&global_lock);
    pthread_mutex_lock(&registry_lock);
    for (evpol_policy *p = registry; p; p = p->reg_next)
        pthread_mutex_lock(&p->lock);
}

static void fork_parent(void)
{
    for (evpol_policy *p = registry; p; p = p->reg_next)
        pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&registry_lock);
    pthread_mutex_unlock(&global_lock);
}

static void fork_child(void)
{
    for (evpol_policy *p = registry; p; p = p->reg_next) {
        /* Forget, do not free: see the file comment. */
        thread_slot *s = p->slots;
        while (s) {
            thread_slot *next = s->next;
            evpol__sys.free(s);
            s = next;
        }
        p->slots = NULL;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&registry_lock);
    pthread_mutex_unlock(&global_lock);
    evpol__reset_running_loop();
}

__attribute__((constructor)) static void evpol_policy_init(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- validation ---- */

bool evpol_is_policy(const void *p)
{
    return p && ((const evpol_policy *)p)->magic == EVPOL_MAGIC_POLICY;
}

#define CHECK_POLICY(p, fn)                                                          \
    do {                                                                             \
        if (!(p))                                                                    \
            return evpol__fail(err, EVPOL_EINVAL, fn ": policy is NULL");           \
        if (!evpol_is_policy(p))                                                     \
            return evpol__fail(err, EVPOL_ETYPE, fn ": not an event loop policy");  \
    } while (0)

#define CHECK_DERIVED(p, fn)                                                         \
    do {                                                                             \
        CHECK_POLICY(p, fn);                                                         \
        if (!(p)->derived)                                                           \
            return evpol__fail(err, EVPOL_ETYPE,                                     \
                               fn ": the policy does not derive from the default"); \
    } while (0)

/* ---- the default implementation ---- */

int evpol_policy_default_new_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err)
{
    CHECK_DERIVED(p, "new_event_loop");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "new_event_loop: out is NULL");
    return evpol_loop_new(p->backend, out, err);
}

int evpol_policy_default_set_event_loop(evpol_policy *p, evpol_loop *loop, evpol_error *err)
{
    CHECK_DERIVED(p, "set_event_loop");
    if (loop && !evpol_is_loop(loop))
        return evpol__fail(err, EVPOL_ETYPE, "set_event_loop: loop must be an evpol_loop or NULL");
    uint64_t self = thread_serial();

    pthread_mutex_lock(&p->lock);
    thread_slot *slot = p->slots;
    while (slot && slot->thread != self)
        slot = slot->next;
    if (!slot) {
        slot = evpol__sys.calloc(1, sizeof *slot);
        if (!slot) {
            pthread_mutex_unlock(&p->lock);
            return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        }
        slot->thread = self;
        slot->next = p->slots;
        p->slots = slot;
    }
    evpol_loop *old = slot->loop;
    slot->loop = evpol_loop_ref(loop);
    slot->set_called = true;
    evpol_watcher *w = p->watcher ? evpol_watcher_ref(p->watcher) : NULL;
    pthread_mutex_unlock(&p->lock);
    evpol_loop_unref(old);

    /* POL-16: the main thread's loop is the one a signal-based watcher
     * must use. */
    int rc = 0;
    if (w && evpol__is_main_thread())
        rc = evpol_watcher_attach_loop(w, loop, err);
    evpol_watcher_unref(w);
    return rc;
}

/* The calling thread's loop and whether set_event_loop was called here. */
static evpol_loop *current_slot(evpol_policy *p, bool *set_called)
{
    uint64_t self = thread_serial();
    evpol_loop *loop = NULL;
    *set_called = false;
    pthread_mutex_lock(&p->lock);
    for (thread_slot *s = p->slots; s; s = s->next)
        if (s->thread == self) {
            loop = s->loop;
            *set_called = s->set_called;
            break;
        }
    pthread_mutex_unlock(&p->lock);
    return loop;
}

int evpol_policy_default_get_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err)
{
    CHECK_DERIVED(p, "get_event_loop");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_event_loop: out is NULL");
    *out = NULL;
    bool set_called;
    evpol_loop *loop = current_slot(p, &set_called);
    if (!loop && !set_called && evpol__is_main_thread()) {
        /* POL-10: through the table, so overrides take part (POL-8). */
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, "There is no current event loop");
        evpol_loop *fresh = NULL;
        int rc = evpol_policy_new_event_loop(p, &fresh, err);
        if (rc)
            return rc;
        rc = evpol_policy_set_event_loop(p, fresh, err);
        /* The slot holds its own reference now (if the override stored it). */
        evpol_loop_unref(fresh);
        if (rc)
            return rc;
        loop = current_slot(p, &set_called);
    }
    if (!loop) {
        char name[64];
        evpol__thread_name(name, sizeof name);
        return evpol__fail(err, EVPOL_ERUNTIME, "There is no current event loop in thread '%s'.",
                           name);
    }
    *out = loop;
    return 0;
}

int evpol_policy_default_get_child_watcher(evpol_policy *p, evpol_watcher **out, evpol_error *err)
{
    CHECK_DERIVED(p, "get_child_watcher");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_child_watcher: out is NULL");
    *out = NULL;
    evpol__deprecated("get_child_watcher");
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    /* Created under the lock, so concurrent first calls make one watcher. */
    if (!p->watcher)
        rc = evpol_watcher_new(p->watcher_kind, &p->watcher, err);
    *out = p->watcher;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int evpol_policy_default_set_child_watcher(evpol_policy *p, evpol_watcher *w, evpol_error *err)
{
    CHECK_DERIVED(p, "set_child_watcher");
    if (w && !evpol_is_watcher(w))
        return evpol__fail(err, EVPOL_ETYPE, "set_child_watcher: not a child watcher");
    evpol__deprecated("set_child_watcher");
    pthread_mutex_lock(&p->lock);
    evpol_watcher *old = p->watcher;
    p->watcher = evpol_watcher_ref(w);
    pthread_mutex_unlock(&p->lock);
    /* POL-15 closes the previous watcher; setting the same one again keeps
     * it open rather than installing a closed watcher. */
    if (old && old != w)
        evpol_watcher_close(old, NULL);
    evpol_watcher_unref(old);
    return 0;
}

/* ---- construction ---- */

static const evpol_policy_methods default_methods = {
    .size = sizeof(evpol_policy_methods),
    .get_event_loop = evpol_policy_default_get_event_loop,
    .set_event_loop = evpol_policy_default_set_event_loop,
    .new_event_loop = evpol_policy_default_new_event_loop,
    .get_child_watcher = evpol_policy_default_get_child_watcher,
    .set_child_watcher = evpol_policy_default_set_child_watcher,
    .destroy = NULL,
};

static int policy_alloc(const evpol_policy_methods *m, bool derived, void *user_data,
                        evpol_backend backend, evpol_watcher_kind kind, evpol_policy **out,
                        evpol_error *err)
{
    evpol_policy *p = evpol__sys.calloc(1, sizeof *p);
    if (!p)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = pthread_mutex_init(&p->lock, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc) {
        evpol__sys.free(p);
        return evpol__fail_sys(err, rc, "cannot create policy lock");
    }
    /* LCOV_EXCL_STOP */
    p->magic = EVPOL_MAGIC_POLICY;
    atomic_init(&p->refs, 1);
    p->m = *m;
    p->derived = derived;
    p->user_data = user_data;
    p->backend = backend;
    p->watcher_kind = kind;
    if (derived) {
        if (!p->m.get_event_loop)
            p->m.get_event_loop = default_methods.get_event_loop;
        if (!p->m.set_event_loop)
            p->m.set_event_loop = default_methods.set_event_loop;
        if (!p->m.new_event_loop)
            p->m.new_event_loop = default_methods.new_event_loop;
        if (!p->m.get_child_watcher)
            p->m.get_child_watcher = default_methods.get_child_watcher;
        if (!p->m.set_child_watcher)
            p->m.set_child_watcher = default_methods.set_child_watcher;
        registry_add(p);
    }
    *out = p;
    return 0;
}

static int check_out(evpol_policy **out, evpol_error *err, const char *fn)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "%s: out is NULL", fn);
    *out = NULL;
    return 0;
}

int evpol_policy_new_default(evpol_policy **out, evpol_error *err)
{
    int rc = check_out(out, err, "evpol_policy_new_default");
    if (rc)
        return rc;
    return policy_alloc(&default_methods, true, NULL, EVPOL_BACKEND_DEFAULT,
                        EVPOL_WATCHER_THREADED, out, err);
}

int evpol_policy_new_with_backend(evpol_backend backend, evpol_policy **out, evpol_error *err)
{
    int rc = check_out(out, err, "evpol_policy_new_with_backend");
    if (rc)
        return rc;
    /* Probe once, so an unavailable backend fails here and not at the
     * policy's first loop. */
    evpol_loop *probe = NULL;
    rc = evpol_loop_new(backend, &probe, err);
    if (rc)
        return rc;
    evpol_loop_unref(probe);
    return policy_alloc(&default_methods, true, NULL, backend, EVPOL_WATCHER_THREADED, out, err);
}

int evpol_policy_new_with_watcher_kind(evpol_watcher_kind kind, evpol_policy **out,
                                       evpol_error *err)
{
    int rc = check_out(out, err, "evpol_policy_new_with_watcher_kind");
    if (rc)
        return rc;
    if (kind < EVPOL_WATCHER_THREADED || kind > EVPOL_WATCHER_AUTO)
        return evpol__fail(err, EVPOL_EINVAL, "invalid watcher kind %d for a policy", (int)kind);
    return policy_alloc(&default_methods, true, NULL, EVPOL_BACKEND_DEFAULT, kind, out, err);
}

static int check_methods(const evpol_policy_methods *m, evpol_error *err)
{
    if (!m)
        return evpol__fail(err, EVPOL_EINVAL, "policy methods are NULL");
    if (m->size != sizeof *m)
        return evpol__fail(err, EVPOL_ETYPE, "evpol_policy_methods has size %zu, expected %zu",
                           m->size, sizeof *m);
    return 0;
}

int evpol_policy_new_custom(const evpol_policy_methods *m, void *user_data, evpol_policy **out,
                            evpol_error *err)
{
    int rc = check_out(out, err, "evpol_policy_new_custom");
    if (!rc)
        rc = check_methods(m, err);
    if (rc)
        return rc;
    return policy_alloc(m, true, user_data, EVPOL_BACKEND_DEFAULT, EVPOL_WATCHER_THREADED, out,
                        err);
}

int evpol_policy_new_abstract(const evpol_policy_methods *m, void *user_data, evpol_policy **out,
                              evpol_error *err)
{
    int rc = check_out(out, err, "evpol_policy_new_abstract");
    if (!rc)
        rc = check_methods(m, err);
    if (rc)
        return rc;
    const char *missing = !m->get_event_loop   ? "get_event_loop"
                          : !m->set_event_loop ? "set_event_loop"
                          : !m->new_event_loop ? "new_event_loop"
                                               : NULL;
    if (missing)
        return evpol__fail(err, EVPOL_ETYPE, "abstract policy is missing required method %s",
                           missing);
    return policy_alloc(m, false, user_data, EVPOL_BACKEND_DEFAULT, EVPOL_WATCHER_THREADED, out,
                        err);
}

evpol_policy *evpol_policy_ref(evpol_policy *p)
{
    if (evpol_is_policy(p))
        atomic_fetch_add(&p->refs, 1);
    return p;
}

void evpol_policy_unref(evpol_policy *p)
{
    if (!evpol_is_policy(p))
        return;
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    if (p->m.destroy)
        p->m.destroy(p);
    if (p->derived)
        registry_remove(p);
    thread_slot *s = p->slots;
    p->slots = NULL;
    while (s) {
        thread_slot *next = s->next;
        evpol_loop_unref(s->loop);
        evpol__sys.free(s);
        s = next;
    }
    evpol_watcher_unref(p->watcher);
    p->magic = EVPOL_MAGIC_DEAD;
    pthread_mutex_destroy(&p->lock);
    evpol__sys.free(p);
}

void *evpol_policy_user_data(evpol_policy *p)
{
    return evpol_is_policy(p) ? p->user_data : NULL;
}

/* ---- dispatch through the table ---- */

int evpol_policy_get_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err)
{
    CHECK_POLICY(p, "get_event_loop");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_event_loop: out is NULL");
    *out = NULL;
    int rc = p->m.get_event_loop(p, out, err);
    if (rc)
        return rc;
    /* POL-9, whatever an override does. */
    if (!evpol_is_loop(*out)) {
        *out = NULL;
        return evpol__fail(err, EVPOL_ERUNTIME, "get_event_loop returned no event loop");
    }
    return 0;
}

int evpol_policy_set_event_loop(evpol_policy *p, evpol_loop *loop, evpol_error *err)
{
    CHECK_POLICY(p, "set_event_loop");
    if (loop && !evpol_is_loop(loop))
        return evpol__fail(err, EVPOL_ETYPE, "set_event_loop: loop must be an evpol_loop or NULL");
    return p->m.set_event_loop(p, loop, err);
}

int evpol_policy_new_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err)
{
    CHECK_POLICY(p, "new_event_loop");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "new_event_loop: out is NULL");
    *out = NULL;
    int rc = p->m.new_event_loop(p, out, err);
    if (rc)
        return rc;
    if (!evpol_is_loop(*out)) {
        *out = NULL;
        return evpol__fail(err, EVPOL_ERUNTIME, "new_event_loop returned no event loop");
    }
    return 0;
}

int evpol_policy_get_child_watcher(evpol_policy *p, evpol_watcher **out, evpol_error *err)
{
    CHECK_POLICY(p, "get_child_watcher");
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_child_watcher: out is NULL");
    *out = NULL;
    if (!p->m.get_child_watcher)
        return evpol__fail(err, EVPOL_ENOTSUP, "this policy has no child watcher");
    int rc = p->m.get_child_watcher(p, out, err);
    if (rc == 0 && !evpol_is_watcher(*out)) {
        *out = NULL;
        return evpol__fail(err, EVPOL_ERUNTIME, "get_child_watcher returned no watcher");
    }
    return rc;
}

int evpol_policy_set_child_watcher(evpol_policy *p, evpol_watcher *w, evpol_error *err)
{
    CHECK_POLICY(p, "set_child_watcher");
    if (w && !evpol_is_watcher(w))
        return evpol__fail(err, EVPOL_ETYPE, "set_child_watcher: not a child watcher");
    if (!p->m.set_child_watcher)
        return evpol__fail(err, EVPOL_ENOTSUP, "this policy has no child watcher");
    return p->m.set_child_watcher(p, w, err);
}

/* ---- the process-wide policy and top-level helpers ---- */

/* The current policy with a reference, so that a concurrent
 * evpol_set_event_loop_policy cannot free it under the caller. */
static int current_policy_ref(evpol_policy **out, evpol_error *err)
{
    pthread_mutex_lock(&global_lock);
    int rc = 0;
    if (!global_policy)
        rc = evpol_policy_new_default(&global_policy, err); /* POL-2 */
    *out = evpol_policy_ref(global_policy);
    pthread_mutex_unlock(&global_lock);
    return rc;
}

int evpol_get_event_loop_policy(evpol_policy **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_event_loop_policy: out is NULL");
    evpol_policy *p = NULL;
    int rc = current_policy_ref(&p, err);
    /* Borrowed by contract: the global slot keeps it alive until replaced. */
    evpol_policy_unref(p);
    *out = rc ? NULL : p;
    return rc;
}

int evpol_set_event_loop_policy(evpol_policy *p, evpol_error *err)
{
    if (p && !evpol_is_policy(p))
        return evpol__fail(err, EVPOL_ETYPE,
                           "set_event_loop_policy: policy must be an evpol_policy or NULL");
    pthread_mutex_lock(&global_lock);
    evpol_policy *old = global_policy;
    global_policy = evpol_policy_ref(p);
    pthread_mutex_unlock(&global_lock);
    evpol_policy_unref(old);
    return 0;
}

int evpol_get_event_loop(evpol_loop **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_event_loop: out is NULL");
    evpol_loop *running = evpol__running_loop();
    if (running) { /* POL-17 */
        *out = running;
        return 0;
    }
    evpol_policy *p;
    int rc = current_policy_ref(&p, err);
    if (!rc)
        rc = evpol_policy_get_event_loop(p, out, err);
    evpol_policy_unref(p);
    return rc;
}

#define WITH_CURRENT_POLICY(call)                \
    do {                                         \
        evpol_policy *p;                         \
        int rc = current_policy_ref(&p, err);    \
        if (!rc)                                 \
            rc = (call);                         \
        evpol_policy_unref(p);                   \
        return rc;                               \
    } while (0)

int evpol_set_event_loop(evpol_loop *loop, evpol_error *err)
{
    WITH_CURRENT_POLICY(evpol_policy_set_event_loop(p, loop, err));
}

int evpol_new_event_loop(evpol_loop **out, evpol_error *err)
{
    WITH_CURRENT_POLICY(evpol_policy_new_event_loop(p, out, err));
}

int evpol_get_child_watcher(evpol_watcher **out, evpol_error *err)
{
    WITH_CURRENT_POLICY(evpol_policy_get_child_watcher(p, out, err));
}

int evpol_set_child_watcher(evpol_watcher *w, evpol_error *err)
{
    WITH_CURRENT_POLICY(evpol_policy_set_child_watcher(p, w, err));
}

int evpol__current_child_watcher(evpol_watcher **out_ref, evpol_error *err)
{
    *out_ref = NULL;
    evpol_policy *p;
    int rc = current_policy_ref(&p, err);
    if (rc)
        return rc;
    if (p->m.get_child_watcher == evpol_policy_default_get_child_watcher) {
        /* The default's state is ours: reference the watcher under the lock,
         * so a concurrent set_child_watcher cannot free it first. */
        pthread_mutex_lock(&p->lock);
        if (!p->watcher)
            rc = evpol_watcher_new(p->watcher_kind, &p->watcher, err);
        *out_ref = evpol_watcher_ref(p->watcher);
        pthread_mutex_unlock(&p->lock);
    } else {
        /* An override owns its storage; reference what it returns. */
        bool outer = evpol__tls_quiet_deprecation;
        evpol__tls_quiet_deprecation = true;
        evpol_watcher *w = NULL;
        rc = evpol_policy_get_child_watcher(p, &w, err);
        evpol__tls_quiet_deprecation = outer;
        if (!rc)
            *out_ref = evpol_watcher_ref(w);
    }
    evpol_policy_unref(p);
    return rc;
}
