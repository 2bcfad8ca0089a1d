/*
 * loop.c — evpol_loop, a thin loop over a libevent event_base.
 *
 * Thread safety comes from libevent's own layer: evthread_use_pthreads() is
 * switched on when the library loads, so every base made afterwards is
 * locked and notifiable, and event_active/event_add from any thread wake it.
 * Cross-thread calls (call_soon_threadsafe, watcher deliveries) go into one
 * mutex-protected FIFO drained by a single "wake" event that posters
 * activate. Keeping our own queue, rather than event_base_once, lets a closing
 * loop hand every undelivered item back to its owner (the drop hook), so
 * nothing posted is leaked and watchers can warn about lost exits (CW-12).
 *
 * Lock order: loop->lock, then libevent's base lock (taken inside
 * event_active/event_add). libevent never holds its lock while running our
 * callbacks, so callbacks may take loop->lock.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <ctype.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>

typedef struct loop_handle {
    struct loop_handle *prev, *next;
    struct event *ev;
    int key; /* fd for readers, signum for signal handlers, unused for timers */
    union {
        evpol_fd_fn fd_fn;
        evpol_signal_fn sig_fn;
        evpol_callback_fn timer_fn;
    } fn;
    void *arg;
    evpol__drop_fn drop_arg; /* set when the loop owns arg (evpol__loop_give_signal_arg) */
    evpol_loop *loop;
} loop_handle;

/*
 * A loop's readers, signal handlers or timers. With the Pidfd watcher every
 * pending child is a reader, so adding, finding and removing one must not
 * walk the others: the list is doubly linked, and readers and signal
 * handlers are also indexed by their key (fds and signal numbers are small
 * integers; libevent indexes its own fd map the same way).
 */
typedef struct handle_set {
    loop_handle *head;
    loop_handle **by_key; /* NULL for timers */
    size_t nkeys;
} handle_set;

struct evpol_loop {
    uint32_t magic;
    atomic_int refs;
    atomic_bool debug;

    pthread_mutex_t lock;
    struct event_base *base; /* NULL once closed */
    bool owns_base;
    bool closed;
    bool running;
    bool stop_requested;
    struct event *wake;
    evpol__post *queue_head, *queue_tail;
    handle_set readers, signals, timers;
};

static _Thread_local evpol_loop *tls_running;

/* ---- libevent thread support ---- */

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void enable_evthread(void)
{
    evthread_use_pthreads();
}

/* At load time, so that event_bases created by the program after linking
 * evpol are thread-safe too (needed for evpol_loop_new_from_base). */
__attribute__((constructor)) static void evpol_loop_init(void)
{
    pthread_once(&evthread_once, enable_evthread);
}

/* ---- validation ---- */

bool evpol_is_loop(const void *p)
{
    return p && ((const evpol_loop *)p)->magic == EVPOL_MAGIC_LOOP;
}

#define CHECK_LOOP(loop, fn)                                                            \
    do {                                                                                \
        if (!(loop))                                                                    \
            return evpol__fail(err, EVPOL_EINVAL, fn ": loop is NULL");                \
        if (!evpol_is_loop(loop))                                                       \
            return evpol__fail(err, EVPOL_ETYPE, fn ": not an event loop");            \
    } while (0)

static int fail_closed(evpol_error *err, const char *fn)
{
    return evpol__fail(err, EVPOL_ERUNTIME, "%s: the event loop is closed", fn);
}

/* ---- the wake event: runs posted calls, honours stop ---- */

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evpol_loop *loop = arg;

    pthread_mutex_lock(&loop->lock);
    evpol__post *batch = loop->queue_head;
    loop->queue_head = loop->queue_tail = NULL;
    pthread_mutex_unlock(&loop->lock);

    /* Calls posted while this batch runs re-activate the wake event and run
     * in the next pass, so a callback that re-posts itself cannot starve
     * the loop's other events. */
    while (batch) {
        evpol__post *next = batch->next;
        batch->next = NULL;
        batch->fn(batch->arg);
        batch = next;
    }

    pthread_mutex_lock(&loop->lock);
    bool stop = loop->stop_requested;
    loop->stop_requested = false;
    pthread_mutex_unlock(&loop->lock);
    if (stop)
        event_base_loopbreak(loop->base);
}

/* Caller holds loop->lock and has checked the loop is open. */
static void wake_locked(evpol_loop *loop)
{
    EVPOL__ASSERT_LOCKED(&loop->lock);
    event_active(loop->wake, EV_READ, 0);
}

/* ---- creation and lifetime ---- */

static int loop_alloc(struct event_base *base, bool owns_base, evpol_loop **out, evpol_error *err)
{
    evpol_loop *loop = evpol__sys.calloc(1, sizeof *loop);
    if (!loop)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    int rc = pthread_mutex_init(&loop->lock, NULL);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc) {
        evpol__sys.free(loop);
        return evpol__fail_sys(err, rc, "cannot create loop lock");
    }
    /* LCOV_EXCL_STOP */
    loop->wake = event_new(base, -1, 0, wake_cb, loop);
    if (!loop->wake) {
        pthread_mutex_destroy(&loop->lock);
        evpol__sys.free(loop);
        return evpol__fail(err, EVPOL_ENOMEM, "cannot create the loop's wake event");
    }
    loop->magic = EVPOL_MAGIC_LOOP;
    atomic_init(&loop->refs, 1);
    atomic_init(&loop->debug, false);
    loop->base = base;
    loop->owns_base = owns_base;
    *out = loop;
    return 0;
}

static const char *backend_method(evpol_backend backend)
{
    switch (backend) {
    case EVPOL_BACKEND_EPOLL: return "epoll";
    case EVPOL_BACKEND_POLL: return "poll";
    case EVPOL_BACKEND_SELECT: return "select";
    case EVPOL_BACKEND_DEFAULT: return NULL;
    }
    return NULL;
}

/* Turned off with EVENT_NO<METHOD> in the environment, which libevent
 * honours. (event_get_supported_methods would also tell what is compiled
 * in, but it allocates and frees a static array on every call: not
 * thread-safe, and evpol_loop_new is.) */
static bool method_disabled(const char *method)
{
    char var[32] = "EVENT_NO";
    for (size_t i = strlen(var); *method && i < sizeof var - 1; i++, method++)
        var[i] = (char)toupper((unsigned char)*method);
    return getenv(var) != NULL;
}

static struct event_base *new_base(evpol_backend backend, evpol_error *err, int *rc)
{
    /* Every method libevent 2.1 has: avoiding all but one forces that one. */
    static const char *const all_methods[] = {"epoll", "poll", "select", "devpoll", "kqueue",
                                              "evport", "win32"};
    const char *want = backend_method(backend);
    if (want && method_disabled(want)) {
        *rc = evpol__fail(err, EVPOL_ENOTSUP, "libevent backend '%s' is disabled by EVENT_NO%s",
                          want, want[0] == 'e' ? "EPOLL" : want[0] == 'p' ? "POLL" : "SELECT");
        return NULL;
    }
    struct event_config *cfg = event_config_new();
    if (!cfg) {
        *rc = evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; want && i < sizeof all_methods / sizeof all_methods[0]; i++)
        if (strcmp(all_methods[i], want) != 0 && event_config_avoid_method(cfg, all_methods[i])) {
            event_config_free(cfg);
            *rc = evpol__fail(err, EVPOL_ENOMEM, "out of memory");
            return NULL;
        }
    errno = 0;
    struct event_base *base = event_base_new_with_config(cfg);
    int e = errno;
    event_config_free(cfg);
    if (base)
        return base;
    /* No errno: libevent found no usable method (not compiled in, or all
     * disabled by the environment). ENOMEM: its allocations failed. Any
     * other: the method's own setup failed (epoll_create1 out of fds). */
    if (e == 0)
        *rc = want ? evpol__fail(err, EVPOL_ENOTSUP, "libevent backend '%s' is not available", want)
                   : evpol__fail(err, EVPOL_ENOTSUP, "no libevent backend is available");
    else if (e == ENOMEM)
        *rc = evpol__fail(err, EVPOL_ENOMEM, "cannot create an event_base: out of memory");
    else
        *rc = evpol__fail_sys(err, e, "cannot create an event_base (%s)", want ? want : "default");
    return NULL;
}

int evpol_loop_new(evpol_backend backend, evpol_loop **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_new: out is NULL");
    *out = NULL;
    if (backend != EVPOL_BACKEND_DEFAULT && !backend_method(backend))
        return evpol__fail(err, EVPOL_EINVAL, "unknown backend %d", (int)backend);
    pthread_once(&evthread_once, enable_evthread);
    int rc = 0;
    struct event_base *base = new_base(backend, err, &rc);
    if (!base)
        return rc;
    rc = loop_alloc(base, true, out, err);
    if (rc)
        event_base_free(base);
    return rc;
}

int evpol_loop_new_from_base(struct event_base *base, evpol_loop **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_new_from_base: out is NULL");
    *out = NULL;
    if (!base)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_new_from_base: base is NULL");
    if (evthread_make_base_notifiable(base) != 0)
        return evpol__fail(err, EVPOL_ERUNTIME, "the event_base cannot be woken from other threads");
    return loop_alloc(base, false, out, err);
}

evpol_loop *evpol_loop_ref(evpol_loop *loop)
{
    if (evpol_is_loop(loop))
        atomic_fetch_add(&loop->refs, 1);
    return loop;
}

void evpol_loop_unref(evpol_loop *loop)
{
    if (!evpol_is_loop(loop))
        return;
    if (atomic_fetch_sub(&loop->refs, 1) != 1)
        return;
    /* A running loop holds a reference, so this loop is not running. */
    evpol_loop_close(loop, NULL);
    loop->magic = EVPOL_MAGIC_DEAD;
    pthread_mutex_destroy(&loop->lock);
    evpol__sys.free(loop);
}

struct event_base *evpol_loop_base(evpol_loop *loop)
{
    if (!evpol_is_loop(loop))
        return NULL;
    pthread_mutex_lock(&loop->lock);
    struct event_base *base = loop->base;
    pthread_mutex_unlock(&loop->lock);
    return base;
}

/* ---- run / stop / close ---- */

int evpol_loop_run(evpol_loop *loop, evpol_error *err)
{
    CHECK_LOOP(loop, "evpol_loop_run");
    if (tls_running && tls_running != loop)
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "Cannot run the event loop while another loop is running");
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return fail_closed(err, "evpol_loop_run");
    }
    if (loop->running) {
        pthread_mutex_unlock(&loop->lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "This event loop is already running");
    }
    loop->running = true;
    if (loop->stop_requested)
        wake_locked(loop); /* stop before run: one pass, then return */
    pthread_mutex_unlock(&loop->lock);

    evpol_loop_ref(loop);
    tls_running = loop;
    evpol__log_debug(loop, "loop %p running", (void *)loop);
    int rc = event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    evpol__log_debug(loop, "loop %p stopped", (void *)loop);
    tls_running = NULL;

    pthread_mutex_lock(&loop->lock);
    loop->running = false;
    pthread_mutex_unlock(&loop->lock);
    evpol_loop_unref(loop);
    if (rc < 0)
        return evpol__fail(err, EVPOL_ERUNTIME, "event_base_loop failed");
    return 0;
}

int evpol_loop_stop(evpol_loop *loop, evpol_error *err)
{
    CHECK_LOOP(loop, "evpol_loop_stop");
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return fail_closed(err, "evpol_loop_stop");
    }
    loop->stop_requested = true;
    wake_locked(loop);
    pthread_mutex_unlock(&loop->lock);
    evpol__log_debug(loop, "stop requested for loop %p", (void *)loop);
    return 0;
}

int evpol_loop_is_running(evpol_loop *loop)
{
    if (!evpol_is_loop(loop))
        return EVPOL_EINVAL;
    pthread_mutex_lock(&loop->lock);
    int running = loop->running;
    pthread_mutex_unlock(&loop->lock);
    return running;
}

int evpol_loop_is_closed(evpol_loop *loop)
{
    if (!evpol_is_loop(loop))
        return EVPOL_EINVAL;
    pthread_mutex_lock(&loop->lock);
    int closed = loop->closed;
    pthread_mutex_unlock(&loop->lock);
    return closed;
}

static void free_handles(handle_set *set)
{
    for (loop_handle *h = set->head, *next; h; h = next) {
        next = h->next;
        event_free(h->ev);
        if (h->drop_arg)
            h->drop_arg(h->arg);
        evpol__sys.free(h);
    }
    evpol__sys.free(set->by_key);
}

int evpol_loop_close(evpol_loop *loop, evpol_error *err)
{
    CHECK_LOOP(loop, "evpol_loop_close");
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return 0;
    }
    if (loop->running) {
        pthread_mutex_unlock(&loop->lock);
        return evpol__fail(err, EVPOL_ERUNTIME, "Cannot close a running event loop");
    }
    loop->closed = true;
    evpol__post *pending = loop->queue_head;
    loop->queue_head = loop->queue_tail = NULL;
    handle_set readers = loop->readers, signals = loop->signals, timers = loop->timers;
    loop->readers = loop->signals = loop->timers = (handle_set){0};
    struct event_base *base = loop->base;
    struct event *wake = loop->wake;
    loop->base = NULL;
    loop->wake = NULL;
    pthread_mutex_unlock(&loop->lock);

    /* Not running and closed: no other thread can reach these any more. */
    free_handles(&readers);
    free_handles(&signals);
    free_handles(&timers);
    event_free(wake);
    if (loop->owns_base)
        event_base_free(base);

    /* Owners learn last, with the loop already unusable, so a drop hook that
     * tries to post again gets an error rather than a dangling queue. */
    while (pending) {
        evpol__post *next = pending->next;
        pending->next = NULL;
        if (pending->drop)
            pending->drop(pending->arg);
        pending = next;
    }
    evpol__spawn_orphans_may_exist();
    return 0;
}

/* ---- posting work ---- */

int evpol__loop_post(evpol_loop *loop, evpol__post *node, evpol_error *err)
{
    CHECK_LOOP(loop, "call_soon_threadsafe");
    node->next = NULL;
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return fail_closed(err, "call_soon_threadsafe");
    }
    if (loop->queue_tail)
        loop->queue_tail->next = node;
    else
        loop->queue_head = node;
    loop->queue_tail = node;
    wake_locked(loop);
    pthread_mutex_unlock(&loop->lock);
    return 0;
}

typedef struct soon_call {
    evpol__post post;
    evpol_callback_fn fn;
    void *arg;
} soon_call;

static void soon_run(void *p)
{
    soon_call *c = p;
    evpol_callback_fn fn = c->fn;
    void *arg = c->arg;
    evpol__sys.free(c);
    fn(arg);
}

/* Through the seam, as it was allocated: a drop must not bypass the
 * accounting of a test's calloc/free. */
static void soon_drop(void *p)
{
    evpol__sys.free(p);
}

int evpol_loop_call_soon_threadsafe(evpol_loop *loop, evpol_callback_fn fn, void *arg,
                                    evpol_error *err)
{
    CHECK_LOOP(loop, "call_soon_threadsafe");
    if (!fn)
        return evpol__fail(err, EVPOL_EINVAL, "call_soon_threadsafe: fn is NULL");
    soon_call *c = evpol__sys.calloc(1, sizeof *c);
    if (!c)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    c->fn = fn;
    c->arg = arg;
    c->post.fn = soon_run;
    c->post.drop = soon_drop;
    c->post.arg = c;
    int rc = evpol__loop_post(loop, &c->post, err);
    if (rc) {
        evpol__sys.free(c);
        return rc;
    }
    evpol__log_debug(loop, "call_soon_threadsafe(%p) on loop %p", (void *)(uintptr_t)fn,
                     (void *)loop);
    return 0;
}

/* ---- handle sets (under loop->lock) ---- */

static loop_handle *find_handle(const handle_set *set, int key)
{
    return (size_t)key < set->nkeys ? set->by_key[key] : NULL;
}

/* Room in the index for `key`; 0 or EVPOL_ENOMEM (the set unchanged). */
static int reserve_key(handle_set *set, int key)
{
    if ((size_t)key < set->nkeys)
        return 0;
    size_t n = set->nkeys ? set->nkeys : 64;
    while (n <= (size_t)key)
        n *= 2;
    loop_handle **by_key = evpol__sys.calloc(n, sizeof *by_key);
    if (!by_key)
        return EVPOL_ENOMEM;
    if (set->nkeys)
        memcpy(by_key, set->by_key, set->nkeys * sizeof *by_key);
    evpol__sys.free(set->by_key);
    set->by_key = by_key;
    set->nkeys = n;
    return 0;
}

/* Keyed sets: after reserve_key(set, h->key) succeeded. */
static void link_handle(handle_set *set, loop_handle *h, bool keyed)
{
    h->prev = NULL;
    h->next = set->head;
    if (set->head)
        set->head->prev = h;
    set->head = h;
    if (keyed)
        set->by_key[h->key] = h;
}

static void unlink_handle(handle_set *set, loop_handle *h, bool keyed)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        set->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    if (keyed)
        set->by_key[h->key] = NULL;
}

/* ---- timers ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_handle *t = arg;
    evpol_loop *loop = t->loop;
    pthread_mutex_lock(&loop->lock);
    unlink_handle(&loop->timers, t, false);
    pthread_mutex_unlock(&loop->lock);
    evpol_callback_fn fn = t->fn.timer_fn;
    void *fn_arg = t->arg;
    /* libevent does not touch a non-persistent event after its callback
     * starts, so freeing it here is safe. */
    event_free(t->ev);
    evpol__sys.free(t);
    fn(fn_arg);
}

int evpol_loop_call_later(evpol_loop *loop, unsigned msec, evpol_callback_fn fn, void *arg,
                          evpol_error *err)
{
    CHECK_LOOP(loop, "call_later");
    if (!fn)
        return evpol__fail(err, EVPOL_EINVAL, "call_later: fn is NULL");
    loop_handle *t = evpol__sys.calloc(1, sizeof *t);
    if (!t)
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    t->fn.timer_fn = fn;
    t->arg = arg;
    t->loop = loop;
    struct timeval tv = {(time_t)(msec / 1000), (suseconds_t)(msec % 1000) * 1000};
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        evpol__sys.free(t);
        return fail_closed(err, "call_later");
    }
    t->ev = evtimer_new(loop->base, timer_cb, t);
    if (!t->ev || evtimer_add(t->ev, &tv) != 0) {
        pthread_mutex_unlock(&loop->lock);
        if (t->ev)
            event_free(t->ev);
        evpol__sys.free(t);
        return evpol__fail(err, EVPOL_ENOMEM, "call_later: cannot add a timer");
    }
    link_handle(&loop->timers, t, false);
    pthread_mutex_unlock(&loop->lock);
    return 0;
}

/* ---- readers and signal handlers ---- */

static void reader_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    loop_handle *h = arg;
    /* The handle stays allocated while this runs: remove_reader from another
     * thread blocks in event_del until we return. fn/arg may be swapped by a
     * concurrent add_reader, so read them under the lock. */
    pthread_mutex_lock(&h->loop->lock);
    evpol_fd_fn fn = h->fn.fd_fn;
    void *fn_arg = h->arg;
    pthread_mutex_unlock(&h->loop->lock);
    fn((int)fd, fn_arg);
}

static void signal_cb(evutil_socket_t signum, short what, void *arg)
{
    (void)what;
    loop_handle *h = arg;
    pthread_mutex_lock(&h->loop->lock);
    evpol_signal_fn fn = h->fn.sig_fn;
    void *fn_arg = h->arg;
    pthread_mutex_unlock(&h->loop->lock);
    fn((int)signum, fn_arg);
}

/* Add or replace the handle keyed `key` in `set`. */
static int add_handle(evpol_loop *loop, handle_set *set, int key, short events,
                      event_callback_fn cb, void *fn, void *arg, const char *what,
                      evpol_error *err)
{
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return fail_closed(err, what);
    }
    loop_handle *h = find_handle(set, key);
    if (h) {
        evpol__drop_fn drop = h->drop_arg;
        void *old = h->arg;
        h->fn.fd_fn = (evpol_fd_fn)fn;
        h->arg = arg;
        h->drop_arg = NULL;
        pthread_mutex_unlock(&loop->lock);
        if (drop)
            drop(old);
        return 0;
    }
    h = evpol__sys.calloc(1, sizeof *h);
    if (!h || reserve_key(set, key) != 0) {
        evpol__sys.free(h);
        pthread_mutex_unlock(&loop->lock);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    h->key = key;
    h->fn.fd_fn = (evpol_fd_fn)fn;
    h->arg = arg;
    h->loop = loop;
    h->ev = event_new(loop->base, key, events | EV_PERSIST, cb, h);
    errno = 0;
    if (!h->ev || event_add(h->ev, NULL) != 0) {
        /* event_add fails for want of memory, or because the backend
         * refused the fd (epoll_ctl: a closed fd, a regular file). */
        int e = h->ev ? errno : ENOMEM;
        pthread_mutex_unlock(&loop->lock);
        if (h->ev)
            event_free(h->ev);
        evpol__sys.free(h);
        if (e == ENOMEM)
            return evpol__fail(err, EVPOL_ENOMEM, "%s: out of memory", what);
        return e ? evpol__fail_sys(err, e, "%s: libevent refused the event", what)
                 : evpol__fail(err, EVPOL_ERUNTIME, "%s: libevent refused the event", what);
    }
    link_handle(set, h, true);
    pthread_mutex_unlock(&loop->lock);
    return 0;
}

static int remove_handle(evpol_loop *loop, handle_set *set, int key, const char *what,
                         evpol_error *err)
{
    pthread_mutex_lock(&loop->lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->lock);
        return fail_closed(err, what);
    }
    loop_handle *h = find_handle(set, key);
    if (h)
        unlink_handle(set, h, true);
    pthread_mutex_unlock(&loop->lock);
    if (!h)
        return 0;
    /* Outside our lock: event_del waits for a callback running in another
     * thread, and that callback takes our lock. */
    event_free(h->ev);
    if (h->drop_arg)
        h->drop_arg(h->arg);
    evpol__sys.free(h);
    return 1;
}

int evpol_loop_add_reader(evpol_loop *loop, int fd, evpol_fd_fn fn, void *arg, evpol_error *err)
{
    CHECK_LOOP(loop, "add_reader");
    if (fd < 0)
        return evpol__fail(err, EVPOL_EINVAL, "add_reader: invalid fd %d", fd);
    if (!fn)
        return evpol__fail(err, EVPOL_EINVAL, "add_reader: fn is NULL");
    return add_handle(loop, &loop->readers, fd, EV_READ, reader_cb, (void *)(uintptr_t)fn, arg,
                      "add_reader", err);
}

int evpol_loop_remove_reader(evpol_loop *loop, int fd, evpol_error *err)
{
    CHECK_LOOP(loop, "remove_reader");
    if (fd < 0)
        return evpol__fail(err, EVPOL_EINVAL, "remove_reader: invalid fd %d", fd);
    return remove_handle(loop, &loop->readers, fd, "remove_reader", err);
}

static int check_signal(int signum, const char *what, evpol_error *err)
{
    if (signum <= 0 || signum >= NSIG || signum == SIGKILL || signum == SIGSTOP)
        return evpol__fail(err, EVPOL_EINVAL, "%s: invalid signal number %d", what, signum);
    if (!evpol__is_main_thread())
        return evpol__fail(err, EVPOL_ERUNTIME,
                           "%s: signal handlers can only be changed from the main thread", what);
    return 0;
}

int evpol_loop_add_signal_handler(evpol_loop *loop, int signum, evpol_signal_fn fn, void *arg,
                                  evpol_error *err)
{
    CHECK_LOOP(loop, "add_signal_handler");
    int rc = check_signal(signum, "add_signal_handler", err);
    if (rc)
        return rc;
    if (!fn)
        return evpol__fail(err, EVPOL_EINVAL, "add_signal_handler: fn is NULL");
    return add_handle(loop, &loop->signals, signum, EV_SIGNAL, signal_cb, (void *)(uintptr_t)fn,
                      arg, "add_signal_handler", err);
}

int evpol__loop_give_signal_arg(evpol_loop *loop, int signum, void *arg, evpol__drop_fn drop)
{
    pthread_mutex_lock(&loop->lock);
    loop_handle *h = loop->closed ? NULL : find_handle(&loop->signals, signum);
    bool given = h && h->arg == arg;
    if (given)
        h->drop_arg = drop;
    pthread_mutex_unlock(&loop->lock);
    return given ? 0 : EVPOL_ERUNTIME;
}

int evpol_loop_remove_signal_handler(evpol_loop *loop, int signum, evpol_error *err)
{
    CHECK_LOOP(loop, "remove_signal_handler");
    int rc = check_signal(signum, "remove_signal_handler", err);
    if (rc)
        return rc;
    return remove_handle(loop, &loop->signals, signum, "remove_signal_handler", err);
}

/* ---- debug flag and running loop ---- */

int evpol_loop_set_debug(evpol_loop *loop, bool enabled, evpol_error *err)
{
    CHECK_LOOP(loop, "set_debug");
    atomic_store(&loop->debug, enabled);
    return 0;
}

int evpol_loop_get_debug(evpol_loop *loop)
{
    if (!evpol_is_loop(loop))
        return EVPOL_EINVAL;
    return atomic_load(&loop->debug) ? 1 : 0;
}

int evpol_get_running_loop(evpol_loop **out, evpol_error *err)
{
    if (!out)
        return evpol__fail(err, EVPOL_EINVAL, "get_running_loop: out is NULL");
    *out = tls_running;
    if (!tls_running)
        return evpol__fail(err, EVPOL_ERUNTIME, "no running event loop");
    return 0;
}

evpol_loop *evpol__running_loop(void)
{
    return tls_running;
}

void evpol__reset_running_loop(void)
{
    tls_running = NULL;
}

