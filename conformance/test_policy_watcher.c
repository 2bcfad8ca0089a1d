/*
 * test_policy_watcher.c — the policy's child watcher (POL-14, POL-15,
 * POL-16, POL-18), with CPython's PolicyTests cases from
 * test_unix_events.py and test_events.py.
 *
 * A recording custom watcher (evpol_watcher_new_custom) observes what the
 * policy does to its watcher: attach_loop calls with their argument and
 * thread, close and destroy. Worker threads record, the main thread asserts.
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NTHREADS 8
#define MAX_ATTACH 64

typedef struct fake_object {
    uint32_t tag;
    char pad[252];
} fake_object;
static fake_object zeroed_object;

/* ------------------------------------------------------------------ */
/* A recording custom watcher                                          */
/* ------------------------------------------------------------------ */

typedef struct rec {
    pthread_mutex_t lock;
    int attaches;
    evpol_loop *attach_arg[MAX_ATTACH];
    pthread_t attach_thread[MAX_ATTACH];
    atomic_int closes, destroys;
    atomic_int active;
} rec;

static void rec_init(rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    atomic_store(&r->active, 1);
}

static int rec_attaches(rec *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->attaches;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static evpol_loop *rec_last_attach(rec *r)
{
    pthread_mutex_lock(&r->lock);
    evpol_loop *l = r->attaches ? r->attach_arg[r->attaches - 1] : (evpol_loop *)(void *)&zeroed_object;
    pthread_mutex_unlock(&r->lock);
    return l;
}

static int rec_attach(void *self, evpol_loop *loop, evpol_error *err)
{
    (void)err;
    rec *r = self;
    pthread_mutex_lock(&r->lock);
    if (r->attaches < MAX_ATTACH) {
        r->attach_arg[r->attaches] = loop;
        r->attach_thread[r->attaches] = pthread_self();
    }
    r->attaches++;
    pthread_mutex_unlock(&r->lock);
    return 0;
}
static int rec_is_active(void *self)
{
    return atomic_load(&((rec *)self)->active);
}
static int rec_close(void *self, evpol_error *err)
{
    (void)err;
    rec *r = self;
    atomic_fetch_add(&r->closes, 1);
    atomic_store(&r->active, 0);
    return 0;
}
static void rec_destroy(void *self)
{
    atomic_fetch_add(&((rec *)self)->destroys, 1);
}

static const evpol_watcher_methods rec_methods = {
    .size = sizeof(evpol_watcher_methods),
    .add_child_handler = nop_watcher_add,
    .remove_child_handler = nop_watcher_remove,
    .attach_loop = rec_attach,
    .is_active = rec_is_active,
    .close = rec_close,
    .enter = nop_watcher_call,
    .exit = nop_watcher_call,
    .destroy = rec_destroy,
};

static evpol_watcher *rec_new(rec *r)
{
    rec_init(r);
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new_custom(&rec_methods, r, &w, NULL));
    return w;
}

/* ------------------------------------------------------------------ */
/* POL-14                                                              */
/* ------------------------------------------------------------------ */

static void test_get_default_child_watcher(void **state)
{
    (void)state;
    reset_policy();
    resource_snapshot before = resources_now();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    log_capture cap;
    capture_start(&cap);
    evpol_watcher *w = NULL, *again = NULL;
    int rc = evpol_policy_get_child_watcher(p, &w, NULL);
    int deprecations_first = capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL);
    int rc2 = evpol_policy_get_child_watcher(p, &again, NULL);
    capture_stop();
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, 0);
    assert_non_null(w);
    assert_true(evpol_is_watcher(w));
    /* ThreadedChildWatcher by default (THR-4). */
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_THREADED);
    assert_string_equal(evpol_watcher_name(w), "ThreadedChildWatcher");
    assert_int_equal(evpol_watcher_is_active(w), 1);
    assert_ptr_equal(again, w);
    /* Deprecated: a warning on every call. */
    assert_int_equal(deprecations_first, 1);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 2);

    /* Borrowed from the policy: freeing the policy closes it. */
    evpol_policy_unref(p);

    /* The automatic choice (CPython 3.12's): Pidfd when it works. */
    assert_ok(evpol_policy_new_with_watcher_kind(EVPOL_WATCHER_AUTO, &p, NULL));
    capture_start(&cap);
    assert_ok(evpol_policy_get_child_watcher(p, &w, NULL));
    assert_ok(evpol_policy_get_child_watcher(p, &again, NULL));
    capture_stop();
    assert_int_equal(evpol_watcher_kind_of(w),
                     have_pidfd() ? EVPOL_WATCHER_PIDFD : EVPOL_WATCHER_THREADED);
    assert_ptr_equal(again, w);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 2);
    evpol_policy_unref(p);

    /* Another chosen kind. */
    assert_ok(evpol_policy_new_with_watcher_kind(EVPOL_WATCHER_SAFE, &p, NULL));
    capture_start(&cap);
    assert_ok(evpol_policy_get_child_watcher(p, &w, NULL));
    capture_stop();
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_SAFE);
    evpol_policy_unref(p);

    /* The process-wide default too. */
    capture_start(&cap);
    assert_ok(evpol_get_child_watcher(&w, NULL));
    assert_ok(evpol_get_child_watcher(&again, NULL));
    capture_stop();
    assert_int_equal(evpol_watcher_kind_of(w), EVPOL_WATCHER_THREADED);
    assert_ptr_equal(again, w);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 2);
    reset_policy();
    assert_no_leaks(before);
}

typedef struct concurrent_watcher {
    pthread_barrier_t *barrier;
    evpol_policy *policy;
    evpol_watcher *seen;
    int rc;
} concurrent_watcher;

static void *concurrent_watcher_fn(void *arg)
{
    concurrent_watcher *c = arg;
    pthread_barrier_wait(c->barrier);
    c->rc = evpol_policy_get_child_watcher(c->policy, &c->seen, NULL);
    return NULL;
}

static void test_default_child_watcher_created_once(void **state)
{
    (void)state;
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    for (int round = 0; round < 5; round++) {
        evpol_policy *p = NULL;
        assert_ok(evpol_policy_new_default(&p, NULL));
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, NTHREADS);
        concurrent_watcher c[NTHREADS];
        pthread_t t[NTHREADS];
        capture_start(cap);
        for (int i = 0; i < NTHREADS; i++) {
            c[i] = (concurrent_watcher){&barrier, p, NULL, -100};
            t[i] = start_thread(concurrent_watcher_fn, &c[i]);
        }
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(t[i], NULL);
        capture_stop();
        pthread_barrier_destroy(&barrier);
        for (int i = 0; i < NTHREADS; i++) {
            assert_int_equal(c[i].rc, 0);
            assert_non_null(c[i].seen);
            assert_ptr_equal(c[i].seen, c[0].seen);
        }
        assert_int_equal(evpol_watcher_kind_of(c[0].seen), EVPOL_WATCHER_THREADED);
        assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL),
                         NTHREADS);
        evpol_policy_unref(p);
    }
    free(cap);
}

static void test_get_child_watcher_after_set(void **state)
{
    (void)state;
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    evpol_watcher *fast = NULL, *got = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_FAST, &fast, NULL));
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_policy_set_child_watcher(p, fast, NULL));
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    capture_stop();
    assert_ptr_equal(got, fast);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 2);
    /* The policy took its own reference. */
    evpol_watcher_unref(fast);
    capture_start(&cap);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    capture_stop();
    assert_ptr_equal(got, fast);
    assert_true(evpol_is_watcher(got));
    assert_int_equal(evpol_watcher_kind_of(got), EVPOL_WATCHER_FAST);
    evpol_policy_unref(p);
}

/* ------------------------------------------------------------------ */
/* POL-15                                                              */
/* ------------------------------------------------------------------ */

static void test_set_child_watcher_closes_previous(void **state)
{
    (void)state;
    reset_policy();
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    rec ra, rb;
    evpol_watcher *a = rec_new(&ra), *b = rec_new(&rb), *got = NULL;

    assert_ok(evpol_policy_set_child_watcher(p, a, NULL));
    evpol_watcher_unref(a); /* the policy keeps it alive */
    assert_int_equal(atomic_load(&ra.destroys), 0);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    assert_ptr_equal(got, a);

    /* Replacing closes the previous one first. */
    assert_ok(evpol_policy_set_child_watcher(p, b, NULL));
    assert_int_equal(atomic_load(&ra.closes), 1);
    assert_int_equal(atomic_load(&ra.destroys), 1); /* last reference gone */
    assert_int_equal(atomic_load(&rb.closes), 0);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    assert_ptr_equal(got, b);
    assert_int_equal(evpol_watcher_is_active(b), 1);

    /* Something that is not a watcher: a type error, nothing changes. */
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    const void *bad[] = {loop, p, &zeroed_object};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evpol_error err = {0};
        check_error(evpol_policy_set_child_watcher(p, (evpol_watcher *)(uintptr_t)bad[i], &err),
                    &err, EVPOL_ETYPE);
        assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
        assert_ptr_equal(got, b);
        assert_int_equal(atomic_load(&rb.closes), 0);
        assert_int_equal(evpol_watcher_is_active(b), 1);
    }

    /* NULL is allowed: it closes the current one. */
    assert_ok(evpol_policy_set_child_watcher(p, NULL, NULL));
    assert_int_equal(atomic_load(&rb.closes), 1);
    assert_int_equal(evpol_watcher_is_active(b), 0);
    assert_int_equal(atomic_load(&rb.destroys), 0); /* we still hold b */
    evpol_watcher_unref(b);
    assert_int_equal(atomic_load(&rb.destroys), 1);
    /* ... and the next get creates a fresh default. */
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    assert_int_equal(evpol_watcher_kind_of(got), EVPOL_WATCHER_THREADED);

    /* A MultiLoop watcher is deactivated by the replacement (its SIGCHLD
     * handler removed). */
    evpol_watcher *ml = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_MULTILOOP, &ml, NULL));
    assert_ok(evpol_watcher_attach_loop(ml, loop, NULL));
    assert_int_equal(evpol_watcher_is_active(ml), 1);
    assert_ok(evpol_policy_set_child_watcher(p, ml, NULL));
    assert_int_equal(evpol_watcher_is_active(ml), 1);
    struct sigaction during;
    sigaction(SIGCHLD, NULL, &during);
    assert_ok(evpol_policy_set_child_watcher(p, NULL, NULL));
    assert_int_equal(evpol_watcher_is_active(ml), 0);
    struct sigaction after;
    sigaction(SIGCHLD, NULL, &after);
    assert_true(after.sa_handler == SIG_DFL || after.sa_handler != during.sa_handler);
    evpol_watcher_unref(ml);

    capture_stop();
    /* One deprecation per set and per get. */
    assert_true(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL) >= 8);
    free(cap);
    evpol_loop_unref(loop);
    evpol_policy_unref(p);
}

static void test_policy_releases_watcher(void **state)
{
    (void)state;
    log_capture cap;
    capture_start(&cap);
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    rec r;
    evpol_watcher *w = rec_new(&r);
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    evpol_watcher_unref(w);
    evpol_policy_unref(p);
    capture_stop();
    assert_int_equal(atomic_load(&r.closes), 1);
    assert_int_equal(atomic_load(&r.destroys), 1);
}

/* ------------------------------------------------------------------ */
/* POL-16                                                              */
/* ------------------------------------------------------------------ */

typedef struct thread_set {
    evpol_policy *policy;
    evpol_loop *loop;
    int rc_set, rc_get, rc_gw, rc_clear;
    evpol_loop *got;
    evpol_watcher *watcher;
} thread_set;

static void *thread_set_fn(void *arg)
{
    thread_set *ts = arg;
    ts->rc_set = evpol_policy_set_event_loop(ts->policy, ts->loop, NULL);
    ts->rc_get = evpol_policy_get_event_loop(ts->policy, &ts->got, NULL);
    ts->rc_gw = evpol_policy_get_child_watcher(ts->policy, &ts->watcher, NULL);
    ts->rc_clear = evpol_policy_set_event_loop(ts->policy, NULL, NULL);
    return NULL;
}

static void test_set_event_loop_attaches_watcher(void **state)
{
    (void)state;
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    evpol_loop *loop = NULL, *new_loop = NULL, *other = NULL;
    assert_ok(evpol_policy_new_event_loop(p, &loop, NULL));
    assert_ok(evpol_policy_new_event_loop(p, &new_loop, NULL));
    assert_ok(evpol_policy_new_event_loop(p, &other, NULL));
    assert_ok(evpol_policy_set_event_loop(p, loop, NULL));

    rec r;
    evpol_watcher *w = rec_new(&r);
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    int n = rec_attaches(&r);
    assert_ptr_equal(rec_last_attach(&r), loop);

    /* test_child_watcher_replace_mainloop_existing */
    assert_ok(evpol_policy_set_event_loop(p, new_loop, NULL));
    assert_int_equal(rec_attaches(&r), n + 1);
    assert_ptr_equal(rec_last_attach(&r), new_loop);
    assert_true(pthread_equal(r.attach_thread[n], pthread_self()));
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    assert_int_equal(rec_attaches(&r), n + 2);
    assert_null(rec_last_attach(&r));

    /* A failed set (not a loop) attaches nothing. */
    evpol_error err = {0};
    check_error(evpol_policy_set_event_loop(p, (evpol_loop *)(void *)&zeroed_object, &err), &err,
                EVPOL_ETYPE);
    assert_int_equal(rec_attaches(&r), n + 2);

    /* From another thread: no attach_loop (test_get_child_watcher_thread). */
    thread_set ts = {.policy = p, .loop = other, .rc_set = -100};
    pthread_t t = start_thread(thread_set_fn, &ts);
    pthread_join(t, NULL);
    assert_int_equal(ts.rc_set, 0);
    assert_int_equal(ts.rc_get, 0);
    assert_ptr_equal(ts.got, other);
    assert_int_equal(ts.rc_gw, 0);
    assert_ptr_equal(ts.watcher, w);
    assert_int_equal(ts.rc_clear, 0);
    assert_int_equal(rec_attaches(&r), n + 2);

    /* The top-level helper on the current policy, main thread. */
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    assert_ok(evpol_set_event_loop(loop, NULL));
    assert_int_equal(rec_attaches(&r), n + 3);
    assert_ptr_equal(rec_last_attach(&r), loop);
    assert_ok(evpol_set_event_loop(NULL, NULL));
    assert_int_equal(rec_attaches(&r), n + 4);
    assert_null(rec_last_attach(&r));
    reset_policy();

    evpol_watcher_unref(w);
    evpol_policy_unref(p);
    assert_int_equal(atomic_load(&r.closes), 1);
    assert_int_equal(atomic_load(&r.destroys), 1);
    evpol_loop_unref(loop);
    evpol_loop_unref(new_loop);
    evpol_loop_unref(other);
    capture_stop();
    free(cap);
}

/* Overrides calling "super" keep the attach; auto-creation attaches the
 * created loop (it goes through set_event_loop). */
typedef struct set_counter {
    atomic_int sets;
} set_counter;

static int counting_set(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    set_counter *sc = evpol_policy_user_data(self);
    atomic_fetch_add(&sc->sets, 1);
    return evpol_policy_default_set_event_loop(self, loop, err);
}

static void test_auto_created_loop_is_attached(void **state)
{
    (void)state;
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    set_counter sc = {0};
    evpol_policy_methods m = {.size = sizeof m, .set_event_loop = counting_set};
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_custom(&m, &sc, &p, NULL));
    rec r;
    evpol_watcher *w = rec_new(&r);
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    int n = rec_attaches(&r);
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_get_event_loop(p, &loop, NULL));
    assert_int_equal(atomic_load(&sc.sets), 1);
    assert_int_equal(rec_attaches(&r), n + 1);
    assert_ptr_equal(rec_last_attach(&r), loop);
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    assert_int_equal(rec_attaches(&r), n + 2);
    assert_null(rec_last_attach(&r));
    evpol_watcher_unref(w);
    evpol_policy_unref(p);
    assert_int_equal(atomic_load(&r.destroys), 1);
    capture_stop();
    free(cap);
}

/* ------------------------------------------------------------------ */
/* POL-18                                                              */
/* ------------------------------------------------------------------ */

typedef struct watcher_counter {
    atomic_int gets, sets;
} watcher_counter;

static int counting_get_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err)
{
    watcher_counter *wc = evpol_policy_user_data(self);
    atomic_fetch_add(&wc->gets, 1);
    return evpol_policy_default_get_child_watcher(self, out, err);
}

static int counting_set_watcher(evpol_policy *self, evpol_watcher *w, evpol_error *err)
{
    watcher_counter *wc = evpol_policy_user_data(self);
    atomic_fetch_add(&wc->sets, 1);
    return evpol_policy_default_set_child_watcher(self, w, err);
}

/* An abstract policy that keeps one watcher itself. */
typedef struct own_watcher {
    evpol_watcher *w;
    atomic_int gets, sets;
} own_watcher;

static int own_get_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err)
{
    (void)err;
    own_watcher *ow = evpol_policy_user_data(self);
    atomic_fetch_add(&ow->gets, 1);
    *out = ow->w;
    return 0;
}
static int own_set_watcher(evpol_policy *self, evpol_watcher *w, evpol_error *err)
{
    (void)err;
    own_watcher *ow = evpol_policy_user_data(self);
    atomic_fetch_add(&ow->sets, 1);
    ow->w = w;
    return 0;
}

static void test_top_level_watcher_helpers_use_current_policy(void **state)
{
    (void)state;
    reset_policy();
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    watcher_counter wc = {0};
    evpol_policy_methods m = {.size = sizeof m,
                              .get_child_watcher = counting_get_watcher,
                              .set_child_watcher = counting_set_watcher};
    evpol_policy *p = NULL, *q = NULL;
    assert_ok(evpol_policy_new_custom(&m, &wc, &p, NULL));
    assert_ok(evpol_policy_new_default(&q, NULL));
    rec rp, rq;
    evpol_watcher *wp = rec_new(&rp), *wq = rec_new(&rq), *got = NULL;
    assert_ok(evpol_policy_set_child_watcher(q, wq, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));

    assert_ok(evpol_set_child_watcher(wp, NULL));
    assert_int_equal(atomic_load(&wc.sets), 1);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    assert_ptr_equal(got, wp);
    assert_ok(evpol_get_child_watcher(&got, NULL));
    assert_ptr_equal(got, wp);
    assert_int_equal(atomic_load(&wc.gets), 2);

    /* Another current policy: the helpers follow it. */
    assert_ok(evpol_set_event_loop_policy(q, NULL));
    assert_ok(evpol_get_child_watcher(&got, NULL));
    assert_ptr_equal(got, wq);
    assert_int_equal(atomic_load(&wc.gets), 2);
    evpol_error err = {0};
    check_error(evpol_set_child_watcher((evpol_watcher *)(void *)&zeroed_object, &err), &err,
                EVPOL_ETYPE);
    assert_ok(evpol_get_child_watcher(&got, NULL));
    assert_ptr_equal(got, wq);
    assert_int_equal(atomic_load(&rq.closes), 0);
    assert_ok(evpol_set_child_watcher(NULL, NULL));
    assert_int_equal(atomic_load(&rq.closes), 1);
    assert_int_equal(atomic_load(&rp.closes), 0);

    /* An abstract policy's own watcher methods are used. */
    own_watcher ow = {0};
    evpol_policy_methods am = {.size = sizeof am,
                               .get_event_loop = stub_policy_get_loop,
                               .set_event_loop = stub_policy_set_loop,
                               .new_event_loop = stub_policy_new_loop,
                               .get_child_watcher = own_get_watcher,
                               .set_child_watcher = own_set_watcher};
    evpol_policy *ap = NULL;
    assert_ok(evpol_policy_new_abstract(&am, &ow, &ap, NULL));
    assert_ok(evpol_set_event_loop_policy(ap, NULL));
    assert_ok(evpol_set_child_watcher(wp, NULL));
    assert_int_equal(atomic_load(&ow.sets), 1);
    assert_ok(evpol_get_child_watcher(&got, NULL));
    assert_ptr_equal(got, wp);
    assert_int_equal(atomic_load(&ow.gets), 1);
    reset_policy();
    evpol_policy_unref(ap);

    evpol_watcher_unref(wq);
    evpol_policy_unref(q);
    evpol_policy_unref(p);
    /* Dropping the last reference closes it (once) and destroys it. */
    evpol_watcher_unref(wp);
    assert_int_equal(atomic_load(&rp.closes), 1);
    assert_int_equal(atomic_load(&rp.destroys), 1);
    assert_int_equal(atomic_load(&rq.destroys), 1);
    capture_stop();
    free(cap);
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_get_default_child_watcher, "POL-14 THR-4 ERR-3"),
        CLAUSE_TEST(test_default_child_watcher_created_once, "POL-14"),
        CLAUSE_TEST(test_get_child_watcher_after_set, "POL-14 POL-15"),
        CLAUSE_TEST(test_set_child_watcher_closes_previous, "POL-15"),
        CLAUSE_TEST(test_policy_releases_watcher, "POL-15"),
        CLAUSE_TEST(test_set_event_loop_attaches_watcher, "POL-16"),
        CLAUSE_TEST(test_auto_created_loop_is_attached, "POL-16 POL-8"),
        CLAUSE_TEST(test_top_level_watcher_helpers_use_current_policy, "POL-18"),
    };
    return harness_run_group("policy_watcher", tests, NULL, NULL);
}
