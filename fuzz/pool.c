/*
 * pool.c — the thread pool under the fake kernel's threads (pool.h).
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Starting and ending a thread costs more than an input's work under ASan
 * and TSan (mapping, clearing and unmapping its shadow, stacks and
 * allocator caches), and the library starts one per Threaded registration
 * and per MultiLoop activation. So the fake kernel's threads come from
 * here (fk_set_thread_lower): a worker runs one thread function at a time
 * and goes back to the pool when the library joins or detaches it and the
 * function has returned. A worker looks to the library like a new thread:
 * it runs with its creator's signal mask (as pthread_create gives), and
 * its pthread_t, the one thread_create returned, is its own for the
 * function's whole life. What a fresh thread would not have is thread-local
 * state its previous function left set; the library leaves such state only
 * when a thread detaches itself (MultiLoop's orphaned reaper), and a worker
 * whose function did that ends instead of returning to the pool. When every
 * worker is busy, a real thread is made (pool_join and pool_detach pass
 * threads they do not know on to pthread).
 *
 * Under ThreadSanitizer a reused thread would also carry its history: a
 * detached function's accesses would happen before everything the next
 * function on that worker does, and before whatever its creator does after
 * handing it out, hiding races a fresh thread exposes. So there each
 * function runs in a fiber of its own (TSan's fiber API: its own
 * happens-before history on the same OS thread), ordered after its
 * creator's hand-off and before its joiner's return, as pthread_create
 * and pthread_join order a thread, and after nothing else. */
#define POOL_MAX 64

#if defined(__SANITIZE_THREAD__)
#define FX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FX_TSAN 1
#endif
#endif

#ifdef FX_TSAN
#include <sanitizer/tsan_interface.h>

/* Run fn in a fiber of its own; `order` is the function's own
 * synchronization object (created with the job, freed with it). */
static void *run_isolated(void *(*fn)(void *), void *arg, void *order)
{
    void *base = __tsan_get_current_fiber();
    void *fiber = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync);
    __tsan_acquire(order); /* after the creator's hand-off */
    void *ret = fn(arg);
    __tsan_release(order); /* before the joiner's return */
    __tsan_switch_to_fiber(base, __tsan_switch_to_fiber_no_sync);
    __tsan_destroy_fiber(fiber);
    return ret;
}
#define ORDER_NEW() malloc(1)
#define ORDER_RELEASE(o) __tsan_release(o)
#define ORDER_ACQUIRE(o) __tsan_acquire(o)
#else
static void *run_isolated(void *(*fn)(void *), void *arg, void *order)
{
    (void)order;
    return fn(arg);
}
#define ORDER_NEW() NULL
#define ORDER_RELEASE(o) ((void)(o))
#define ORDER_ACQUIRE(o) ((void)(o))
#endif

typedef struct pool_worker {
    pthread_t thread;
    pthread_cond_t wake;
    void *(*fn)(void *);
    void *arg;
    sigset_t mask;    /* the creator's, for fn */
    bool assigned;    /* fn given, not yet joined or detached-and-returned */
    bool finished;    /* fn returned */
    bool detached;
    bool retire;      /* fn detached itself: end instead of taking work */
    void *ret;
    void *order;      /* TSan: fn's own synchronization object */
} pool_worker;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t done; /* a function returned */
    int n;
    pool_worker w[POOL_MAX];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* The library let go of w's function and it has returned (lock held). */
static void job_done(pool_worker *w)
{
    w->assigned = false;
    free(w->order);
    w->order = NULL;
}

static void *pool_main(void *p)
{
    pool_worker *w = p;
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!w->assigned || w->finished)
            pthread_cond_wait(&w->wake, &pool.lock);
        void *(*fn)(void *) = w->fn;
        void *arg = w->arg;
        void *order = w->order;
        sigset_t mask = w->mask;
        pthread_mutex_unlock(&pool.lock);
        if (memcmp(&mask, &cur, sizeof mask) != 0) {
            pthread_sigmask(SIG_SETMASK, &mask, NULL);
            cur = mask;
        }
        void *ret = run_isolated(fn, arg, order);
        pthread_mutex_lock(&pool.lock);
        w->ret = ret;
        w->finished = true;
        if (w->detached)
            job_done(w);
        pthread_cond_broadcast(&pool.done);
        if (w->retire) {
            /* Never handed out again: its slot stays taken. */
            pthread_mutex_unlock(&pool.lock);
            return NULL;
        }
    }
}

/* The worker running (or having run) `t`, lock held; NULL: not ours. */
static pool_worker *pool_find(pthread_t t)
{
    for (int i = 0; i < pool.n; i++)
        if (pool.w[i].assigned && pthread_equal(pool.w[i].thread, t))
            return &pool.w[i];
    return NULL;
}

static int pool_create(pthread_t *thread, size_t stack, void *(*fn)(void *), void *arg)
{
    sigset_t mask;
    pthread_sigmask(SIG_SETMASK, NULL, &mask);
    pthread_mutex_lock(&pool.lock);
    pool_worker *w = NULL;
    for (int i = 0; i < pool.n && !w; i++)
        if (!pool.w[i].assigned && !pool.w[i].retire)
            w = &pool.w[i];
    bool fresh = !w && pool.n < POOL_MAX;
    if (fresh) {
        w = &pool.w[pool.n];
        memset(w, 0, sizeof *w);
        pthread_cond_init(&w->wake, NULL);
    }
    if (!w) {
        pthread_mutex_unlock(&pool.lock);
        return evpol_sys_real()->thread_create(thread, stack, fn, arg);
    }
    w->fn = fn;
    w->arg = arg;
    w->mask = mask;
    w->order = ORDER_NEW();
    ORDER_RELEASE(w->order);
    w->finished = w->detached = false;
    w->assigned = true;
    if (fresh) {
        /* Default stack: at least what any caller asks for here. */
        int rc = pthread_create(&w->thread, NULL, pool_main, w);
        if (rc != 0) {
            job_done(w);
            pthread_mutex_unlock(&pool.lock);
            return rc;
        }
        pool.n++;
    } else {
        pthread_cond_signal(&w->wake);
    }
    *thread = w->thread;
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

static int pool_join(pthread_t t, void **retval)
{
    pthread_mutex_lock(&pool.lock);
    pool_worker *w = pool_find(t);
    if (!w) {
        pthread_mutex_unlock(&pool.lock);
        return pthread_join(t, retval);
    }
    if (w->detached || pthread_equal(t, pthread_self())) {
        pthread_mutex_unlock(&pool.lock);
        return w->detached ? EINVAL : EDEADLK;
    }
    while (!w->finished)
        pthread_cond_wait(&pool.done, &pool.lock);
    ORDER_ACQUIRE(w->order);
    if (retval)
        *retval = w->ret;
    job_done(w);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

static int pool_detach(pthread_t t)
{
    pthread_mutex_lock(&pool.lock);
    pool_worker *w = pool_find(t);
    if (!w) {
        pthread_mutex_unlock(&pool.lock);
        return pthread_detach(t);
    }
    if (w->detached) {
        pthread_mutex_unlock(&pool.lock);
        return EINVAL;
    }
    w->detached = true;
    if (pthread_equal(t, pthread_self()))
        w->retire = true;
    if (w->finished)
        job_done(w);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

static evpol_sys pool_table;

static void pool_table_init(void)
{
    pool_table = *evpol_sys_real();
    pool_table.thread_create = pool_create;
    pool_table.thread_join = pool_join;
    pool_table.thread_detach = pool_detach;
}

const evpol_sys *fx_pool_table(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, pool_table_init);
    return &pool_table;
}
