/*
 * test_policy.c — the process-wide policy and the default policy's
 * per-thread loops (POL-1 ... POL-13, POL-17, POL-19 ... POL-21).
 *
 * Written from evpol.h and SPEC.md, not from policy.c. Worker threads
 * never call cmocka asserts (they longjmp into the main thread's state):
 * they record what they saw, and the main thread asserts after joining.
 * Every test leaves the process-wide policy reset (NULL) so that tests are
 * independent.
 */
#include "alloc_count.h"
#include "harness.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 8
#define TIMEOUT_MS 10000

/* Something that is neither a loop, a policy nor a watcher. */
typedef struct fake_object {
    uint32_t tag;
    char pad[252];
} fake_object;
static fake_object zeroed_object;
static fake_object random_object = {0x12345678u, "not an evpol object"};

/* ------------------------------------------------------------------ */
/* POL-1, POL-2, POL-3, POL-4, POL-5                                   */
/* ------------------------------------------------------------------ */

static void test_get_policy_returns_current(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p1 = NULL, *p2 = NULL;
    assert_ok(evpol_get_event_loop_policy(&p1, NULL));
    assert_non_null(p1);
    assert_true(evpol_is_policy(p1));
    assert_ok(evpol_get_event_loop_policy(&p2, NULL));
    assert_ptr_equal(p1, p2);

    /* It is a default policy: the "super" methods accept it. */
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_default_new_event_loop(p1, &loop, NULL));
    assert_true(evpol_is_loop(loop));
    evpol_loop_unref(loop);
    reset_policy();
}

typedef struct concurrent_get {
    pthread_barrier_t *barrier;
    evpol_policy *seen;
    int rc;
} concurrent_get;

static void *concurrent_get_thread(void *arg)
{
    concurrent_get *g = arg;
    pthread_barrier_wait(g->barrier);
    g->rc = evpol_get_event_loop_policy(&g->seen, NULL);
    return NULL;
}

static void test_default_policy_created_once_concurrently(void **state)
{
    (void)state;
    /* Run it a few times: each round starts with no policy at all. */
    for (int round = 0; round < 5; round++) {
        reset_policy();
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, NTHREADS);
        concurrent_get g[NTHREADS];
        pthread_t t[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            g[i] = (concurrent_get){&barrier, NULL, -100};
            t[i] = start_thread(concurrent_get_thread, &g[i]);
        }
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&barrier);
        for (int i = 0; i < NTHREADS; i++) {
            assert_int_equal(g[i].rc, 0);
            assert_non_null(g[i].seen);
            assert_ptr_equal(g[i].seen, g[0].seen);
        }
        assert_true(evpol_is_policy(g[0].seen));
        evpol_policy *mine = NULL;
        assert_ok(evpol_get_event_loop_policy(&mine, NULL));
        assert_ptr_equal(mine, g[0].seen);
    }
    reset_policy();
}

typedef struct destroy_count {
    atomic_int destroyed;
} destroy_count;

static void count_destroy(evpol_policy *self)
{
    destroy_count *dc = evpol_policy_user_data(self);
    atomic_fetch_add(&dc->destroyed, 1);
}

static void test_set_policy(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL, *cur = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, p);
    /* The process keeps its own reference. */
    evpol_policy_unref(p);
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, p);
    assert_true(evpol_is_policy(cur));
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_new_event_loop(cur, &loop, NULL));
    evpol_loop_unref(loop);

    /* Replacing the policy drops the process's reference exactly once. */
    destroy_count dc = {0};
    evpol_policy_methods m = {.size = sizeof m, .destroy = count_destroy};
    evpol_policy *custom = NULL;
    assert_ok(evpol_policy_new_custom(&m, &dc, &custom, NULL));
    assert_ptr_equal(evpol_policy_user_data(custom), &dc);
    assert_ok(evpol_set_event_loop_policy(custom, NULL));
    evpol_policy_unref(custom);
    assert_int_equal(atomic_load(&dc.destroyed), 0);
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, custom);
    reset_policy();
    assert_int_equal(atomic_load(&dc.destroyed), 1);
}

static void test_set_policy_null_restores_fresh_default(void **state)
{
    (void)state;
    reset_policy();
    /* A custom policy is replaced by a fresh default. Keep our reference so
     * that the allocator cannot hand the same address to the new default. */
    int marker = 0;
    evpol_policy_methods m = {.size = sizeof m};
    evpol_policy *custom = NULL, *cur = NULL;
    assert_ok(evpol_policy_new_custom(&m, &marker, &custom, NULL));
    assert_ok(evpol_set_event_loop_policy(custom, NULL));
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, custom);
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_non_null(cur);
    assert_ptr_not_equal(cur, custom);
    assert_true(evpol_is_policy(cur));
    assert_null(evpol_policy_user_data(cur));

    /* A lazily created default is also replaced by a fresh one. */
    evpol_policy *first = evpol_policy_ref(cur);
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
    evpol_policy *second = NULL;
    assert_ok(evpol_get_event_loop_policy(&second, NULL));
    assert_ptr_not_equal(second, first);
    assert_true(evpol_is_policy(second));

    evpol_policy_unref(first);
    evpol_policy_unref(custom);
    reset_policy();
}

static void test_set_policy_non_policy_type_error(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL, *cur = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));

    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    const void *bad[] = {loop, &zeroed_object, &random_object};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evpol_error err = {0};
        int rc = evpol_set_event_loop_policy((evpol_policy *)(uintptr_t)bad[i], &err);
        check_error(rc, &err, EVPOL_ETYPE);
        assert_ok(evpol_get_event_loop_policy(&cur, NULL));
        assert_ptr_equal(cur, p);
    }
    /* Without an error struct too. */
    assert_int_equal(evpol_set_event_loop_policy((evpol_policy *)(void *)loop, NULL), EVPOL_ETYPE);
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, p);
    evpol_loop_unref(loop);

    /* An abstract policy must have get/set/new_event_loop. */
    const evpol_policy_methods full = {.size = sizeof full,
                                       .get_event_loop = stub_policy_get_loop,
                                       .set_event_loop = stub_policy_set_loop,
                                       .new_event_loop = stub_policy_new_loop};
    for (int missing = 0; missing < 4; missing++) {
        evpol_policy_methods m = full;
        if (missing == 0)
            m.get_event_loop = NULL;
        else if (missing == 1)
            m.set_event_loop = NULL;
        else if (missing == 2)
            m.new_event_loop = NULL;
        else
            m.size = sizeof m - 1;
        evpol_policy *ap = NULL;
        evpol_error err = {0};
        int rc = evpol_policy_new_abstract(&m, NULL, &ap, &err);
        check_error(rc, &err, EVPOL_ETYPE);
        assert_ok(evpol_get_event_loop_policy(&cur, NULL));
        assert_ptr_equal(cur, p);
    }
    /* The complete table is accepted. */
    evpol_policy *ap = NULL;
    assert_ok(evpol_policy_new_abstract(&full, NULL, &ap, NULL));
    assert_true(evpol_is_policy(ap));
    evpol_policy_unref(ap);

    /* A custom (derived) policy table with the wrong size is refused too. */
    evpol_policy_methods bad_size = {.size = sizeof bad_size + 8};
    evpol_policy *cp = NULL;
    evpol_error err = {0};
    check_error(evpol_policy_new_custom(&bad_size, NULL, &cp, &err), &err, EVPOL_ETYPE);

    evpol_policy_unref(p);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-6: one loop per thread                                          */
/* ------------------------------------------------------------------ */

typedef struct per_thread {
    pthread_barrier_t *barrier;
    evpol_loop *mine;
    evpol_loop *seen_top;    /* evpol_get_event_loop */
    evpol_loop *seen_policy; /* evpol_policy_get_event_loop */
    evpol_loop *seen_after;  /* after every thread set its own */
    int rc_new, rc_set, rc_get, rc_get2, rc_clear, rc_after_clear;
} per_thread;

static void *per_thread_fn(void *arg)
{
    per_thread *pt = arg;
    evpol_policy *policy = NULL;
    pt->rc_new = evpol_new_event_loop(&pt->mine, NULL);
    pt->rc_set = evpol_set_event_loop(pt->mine, NULL);
    /* Everyone has set their loop before anyone reads. */
    pthread_barrier_wait(pt->barrier);
    pt->rc_get = evpol_get_event_loop(&pt->seen_top, NULL);
    evpol_get_event_loop_policy(&policy, NULL);
    pt->rc_get2 = evpol_policy_get_event_loop(policy, &pt->seen_policy, NULL);
    pthread_barrier_wait(pt->barrier);
    evpol_get_event_loop(&pt->seen_after, NULL);
    pthread_barrier_wait(pt->barrier);
    pt->rc_clear = evpol_set_event_loop(NULL, NULL);
    evpol_loop *none = NULL;
    pt->rc_after_clear = evpol_get_event_loop(&none, NULL);
    evpol_loop_unref(pt->mine);
    return NULL;
}

static void test_per_thread_loops(void **state)
{
    (void)state;
    reset_policy();
    evpol_loop *main_loop = NULL, *seen = NULL;
    assert_ok(evpol_new_event_loop(&main_loop, NULL));
    assert_ok(evpol_set_event_loop(main_loop, NULL));

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    per_thread pt[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&pt[i], 0, sizeof pt[i]);
        pt[i].barrier = &barrier;
        t[i] = start_thread(per_thread_fn, &pt[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);

    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pt[i].rc_new, 0);
        assert_int_equal(pt[i].rc_set, 0);
        assert_int_equal(pt[i].rc_get, 0);
        assert_int_equal(pt[i].rc_get2, 0);
        assert_ptr_equal(pt[i].seen_top, pt[i].mine);
        assert_ptr_equal(pt[i].seen_policy, pt[i].mine);
        assert_ptr_equal(pt[i].seen_after, pt[i].mine);
        assert_ptr_not_equal(pt[i].mine, main_loop);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(pt[i].mine, pt[j].mine);
        assert_int_equal(pt[i].rc_clear, 0);
        /* A non-main thread after set_event_loop(NULL): no loop (POL-11). */
        assert_int_equal(pt[i].rc_after_clear, EVPOL_ERUNTIME);
    }
    /* The main thread's loop was not touched by the others. */
    assert_ok(evpol_get_event_loop(&seen, NULL));
    assert_ptr_equal(seen, main_loop);

    assert_ok(evpol_set_event_loop(NULL, NULL));
    evpol_loop_unref(main_loop);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-7: a policy with one loop for the whole process                 */
/* ------------------------------------------------------------------ */

typedef struct global_storage {
    pthread_mutex_t lock;
    evpol_loop *loop;
    atomic_int destroyed;
} global_storage;

static int global_get(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    global_storage *gs = evpol_policy_user_data(self);
    pthread_mutex_lock(&gs->lock);
    evpol_loop *loop = gs->loop;
    pthread_mutex_unlock(&gs->lock);
    if (!loop) {
        if (err) {
            err->code = EVPOL_ERUNTIME;
            err->sys_errno = 0;
            snprintf(err->message, sizeof err->message, "no process-wide loop");
        }
        return EVPOL_ERUNTIME;
    }
    *out = loop;
    return 0;
}

static int global_set(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    (void)err;
    global_storage *gs = evpol_policy_user_data(self);
    evpol_loop_ref(loop);
    pthread_mutex_lock(&gs->lock);
    evpol_loop *old = gs->loop;
    gs->loop = loop;
    pthread_mutex_unlock(&gs->lock);
    evpol_loop_unref(old);
    return 0;
}

static void global_destroy(evpol_policy *self)
{
    global_storage *gs = evpol_policy_user_data(self);
    evpol_loop_unref(gs->loop);
    gs->loop = NULL;
    atomic_fetch_add(&gs->destroyed, 1);
}

typedef struct global_reader {
    pthread_barrier_t *barrier;
    evpol_loop *seen;
    int rc;
    int set_rc;
    evpol_loop *to_set;
} global_reader;

static void *global_reader_fn(void *arg)
{
    global_reader *r = arg;
    pthread_barrier_wait(r->barrier);
    r->rc = evpol_get_event_loop(&r->seen, NULL);
    if (r->to_set)
        r->set_rc = evpol_set_event_loop(r->to_set, NULL);
    return NULL;
}

static void test_custom_policy_one_loop_per_process(void **state)
{
    (void)state;
    reset_policy();
    global_storage gs = {.lock = PTHREAD_MUTEX_INITIALIZER};
    evpol_policy_methods m = {.size = sizeof m,
                              .get_event_loop = global_get,
                              .set_event_loop = global_set,
                              .new_event_loop = stub_policy_new_loop,
                              .destroy = global_destroy};
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_abstract(&m, &gs, &p, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    evpol_policy_unref(p);

    /* No loop yet: the policy's own error comes back, in the main thread
     * too (nothing outside the policy creates a loop). */
    evpol_loop *seen = NULL;
    evpol_error err = {0};
    check_error(evpol_get_event_loop(&seen, &err), &err, EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "no process-wide loop"));

    evpol_loop *loop = NULL;
    assert_ok(evpol_new_event_loop(&loop, NULL));
    assert_ok(evpol_set_event_loop(loop, NULL));

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    global_reader r[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        r[i] = (global_reader){&barrier, NULL, -100, 0, NULL};
        t[i] = start_thread(global_reader_fn, &r[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(r[i].rc, 0);
        assert_ptr_equal(r[i].seen, loop);
    }

    /* A loop set by another thread is the main thread's loop too. */
    evpol_loop *other = NULL;
    assert_ok(evpol_new_event_loop(&other, NULL));
    pthread_barrier_init(&barrier, NULL, 1);
    global_reader setter = {&barrier, NULL, -100, -100, other};
    pthread_t st = start_thread(global_reader_fn, &setter);
    pthread_join(st, NULL);
    pthread_barrier_destroy(&barrier);
    assert_int_equal(setter.set_rc, 0);
    assert_ok(evpol_get_event_loop(&seen, NULL));
    assert_ptr_equal(seen, other);

    /* Without watcher methods the watcher calls are not supported. */
    evpol_watcher *w = NULL;
    evpol_error werr = {0};
    check_error(evpol_get_child_watcher(&w, &werr), &werr, EVPOL_ENOTSUP);

    /* An abstract policy has no "super". */
    evpol_error serr = {0};
    assert_ok(evpol_get_event_loop_policy(&p, NULL));
    check_error(evpol_policy_default_get_event_loop(p, &seen, &serr), &serr, EVPOL_ETYPE);

    evpol_loop_unref(loop);
    evpol_loop_unref(other);
    reset_policy();
    assert_int_equal(atomic_load(&gs.destroyed), 1);
    assert_null(gs.loop);
}

/* ------------------------------------------------------------------ */
/* POL-8: overrides and "super"                                        */
/* ------------------------------------------------------------------ */

typedef struct counting {
    atomic_int get_calls, set_calls, new_calls;
    evpol_loop *last_set;
    evpol_loop *last_new;
} counting;

static int counting_get(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    counting *c = evpol_policy_user_data(self);
    atomic_fetch_add(&c->get_calls, 1);
    return evpol_policy_default_get_event_loop(self, out, err);
}

static int counting_set(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    counting *c = evpol_policy_user_data(self);
    atomic_fetch_add(&c->set_calls, 1);
    c->last_set = loop;
    return evpol_policy_default_set_event_loop(self, loop, err);
}

static int counting_new(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    counting *c = evpol_policy_user_data(self);
    atomic_fetch_add(&c->new_calls, 1);
    int rc = evpol_policy_default_new_event_loop(self, out, err);
    if (rc == 0)
        c->last_new = *out;
    return rc;
}

static void test_custom_policy_overrides_call_super(void **state)
{
    (void)state;
    reset_policy();
    counting c = {0};
    evpol_policy_methods m = {.size = sizeof m,
                              .get_event_loop = counting_get,
                              .set_event_loop = counting_set,
                              .new_event_loop = counting_new};
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_custom(&m, &c, &p, NULL));
    assert_ptr_equal(evpol_policy_user_data(p), &c);

    /* Main thread, nothing set: the default get_event_loop creates the loop
     * through the overridden new_event_loop and set_event_loop. */
    log_capture cap;
    capture_start(&cap);
    evpol_loop *loop = NULL, *again = NULL;
    int rc = evpol_policy_get_event_loop(p, &loop, NULL);
    capture_stop();
    assert_int_equal(rc, 0);
    assert_non_null(loop);
    assert_true(evpol_is_loop(loop));
    assert_int_equal(atomic_load(&c.get_calls), 1);
    assert_int_equal(atomic_load(&c.new_calls), 1);
    assert_int_equal(atomic_load(&c.set_calls), 1);
    assert_ptr_equal(c.last_new, loop);
    assert_ptr_equal(c.last_set, loop);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);

    /* The second call finds it: no new loop, no set. */
    assert_ok(evpol_policy_get_event_loop(p, &again, NULL));
    assert_ptr_equal(again, loop);
    assert_int_equal(atomic_load(&c.get_calls), 2);
    assert_int_equal(atomic_load(&c.new_calls), 1);
    assert_int_equal(atomic_load(&c.set_calls), 1);

    /* The top-level helpers dispatch to the overrides of the current
     * policy. */
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    evpol_loop *fresh = NULL;
    assert_ok(evpol_new_event_loop(&fresh, NULL));
    assert_int_equal(atomic_load(&c.new_calls), 2);
    assert_ptr_equal(c.last_new, fresh);
    assert_ok(evpol_set_event_loop(fresh, NULL));
    assert_int_equal(atomic_load(&c.set_calls), 2);
    assert_ptr_equal(c.last_set, fresh);
    assert_ok(evpol_get_event_loop(&again, NULL));
    assert_ptr_equal(again, fresh);
    assert_int_equal(atomic_load(&c.get_calls), 3);
    evpol_loop_unref(fresh);

    /* Inherited methods (NULL in the table) behave as the default. */
    evpol_policy_methods only_new = {.size = sizeof only_new, .new_event_loop = counting_new};
    counting c2 = {0};
    evpol_policy *p2 = NULL;
    assert_ok(evpol_policy_new_custom(&only_new, &c2, &p2, NULL));
    capture_start(&cap);
    assert_ok(evpol_policy_get_event_loop(p2, &loop, NULL));
    capture_stop();
    assert_int_equal(atomic_load(&c2.new_calls), 1);
    assert_ptr_equal(c2.last_new, loop);
    assert_ok(evpol_policy_set_event_loop(p2, NULL, NULL));
    evpol_policy_unref(p2);

    assert_ok(evpol_set_event_loop(NULL, NULL));
    evpol_policy_unref(p);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-9, POL-10, POL-11, POL-12, POL-13                               */
/* ------------------------------------------------------------------ */

static int null_get(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)self;
    (void)err;
    *out = NULL;
    return 0; /* a broken override: "success" without a loop */
}

static int non_loop_get(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)self;
    (void)err;
    *out = (evpol_loop *)(void *)&zeroed_object;
    return 0;
}

typedef struct no_loop_thread {
    evpol_policy *policy;
    evpol_loop *out;
    int rc;
    evpol_error err;
    int deprecations;
} no_loop_thread;

static void *no_loop_thread_fn(void *arg)
{
    no_loop_thread *n = arg;
    pthread_setname_np(pthread_self(), "evpol-worker");
    n->out = NULL;
    n->rc = evpol_policy_get_event_loop(n->policy, &n->out, &n->err);
    return NULL;
}

static void test_get_event_loop_never_null(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy_methods m = {.size = sizeof m, .get_event_loop = null_get};
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_custom(&m, NULL, &p, NULL));
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    check_error(evpol_policy_get_event_loop(p, &loop, &err), &err, EVPOL_ERUNTIME);
    /* Through the top-level helper too. */
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    memset(&err, 0, sizeof err);
    check_error(evpol_get_event_loop(&loop, &err), &err, EVPOL_ERUNTIME);
    evpol_policy_unref(p);

    /* A "loop" that is not a loop is not passed on either. */
    evpol_policy_methods m2 = {.size = sizeof m2, .get_event_loop = non_loop_get};
    assert_ok(evpol_policy_new_custom(&m2, NULL, &p, NULL));
    memset(&err, 0, sizeof err);
    loop = NULL;
    int rc = evpol_policy_get_event_loop(p, &loop, &err);
    assert_true(rc < 0);
    assert_int_equal(err.code, rc);
    assert_true(err.message[0] != '\0');
    evpol_policy_unref(p);

    /* The default policy, in a thread without a loop: an error, not NULL. */
    assert_ok(evpol_policy_new_default(&p, NULL));
    no_loop_thread n = {.policy = p};
    pthread_t t = start_thread(no_loop_thread_fn, &n);
    pthread_join(t, NULL);
    check_error(n.rc, &n.err, EVPOL_ERUNTIME);
    evpol_policy_unref(p);
    reset_policy();
}

static void test_main_thread_creates_loop_with_deprecation(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));

    log_capture cap;
    capture_start(&cap);
    evpol_loop *loop = NULL, *again = NULL;
    int rc = evpol_policy_get_event_loop(p, &loop, NULL);
    int rc2 = evpol_policy_get_event_loop(p, &again, NULL);
    capture_stop();
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, 0);
    assert_non_null(loop);
    assert_true(evpol_is_loop(loop));
    assert_int_equal(evpol_loop_is_closed(loop), 0);
    assert_int_equal(evpol_loop_is_running(loop), 0);
    assert_ptr_equal(again, loop);
    /* One warning, for the creation only, in the deprecation category. */
    assert_int_equal(capture_count(&cap, -1, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
    /* The loop is usable. */
    volatile int ran = 0;
    assert_int_equal(run_until(loop, &ran, 0), 0);

    /* The same through the top-level helper with the process-wide default. */
    capture_start(&cap);
    evpol_loop *top = NULL, *top2 = NULL;
    rc = evpol_get_event_loop(&top, NULL);
    rc2 = evpol_get_event_loop(&top2, NULL);
    capture_stop();
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, 0);
    assert_true(evpol_is_loop(top));
    assert_ptr_equal(top2, top);
    assert_ptr_not_equal(top, loop);
    assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);

    /* Both loops belong to their policies: releasing those frees them. */
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    evpol_policy_unref(p);
    reset_policy();
}

static void test_non_main_thread_no_loop_runtime_error(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    log_capture cap;
    capture_start(&cap);
    no_loop_thread n = {.policy = p};
    pthread_t t = start_thread(no_loop_thread_fn, &n);
    pthread_join(t, NULL);
    capture_stop();
    check_error(n.rc, &n.err, EVPOL_ERUNTIME);
    if (!strstr(n.err.message, "There is no current event loop in thread"))
        fail_msg("unexpected message: %s", n.err.message);
    if (!strstr(n.err.message, "evpol-worker"))
        fail_msg("thread name missing from: %s", n.err.message);
    /* No loop was created, so nothing was deprecated. */
    assert_int_equal(capture_count(&cap, -1, EVPOL_LOG_CAT_DEPRECATION, NULL), 0);
    evpol_policy_unref(p);
    reset_policy();
}

static void test_after_set_null_runtime_error(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    log_capture cap;
    capture_start(&cap);
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    int rc = evpol_policy_get_event_loop(p, &loop, &err);
    capture_stop();
    check_error(rc, &err, EVPOL_ERUNTIME);
    if (!strstr(err.message, "There is no current event loop in thread"))
        fail_msg("unexpected message: %s", err.message);
    if (!strstr(err.message, "MainThread"))
        fail_msg("thread name missing from: %s", err.message);
    assert_int_equal(capture_count(&cap, -1, EVPOL_LOG_CAT_DEPRECATION, NULL), 0);

    /* Setting a loop then clearing it has the same effect. */
    evpol_policy_unref(p);
    assert_ok(evpol_policy_new_default(&p, NULL));
    evpol_loop *l = NULL;
    assert_ok(evpol_policy_new_event_loop(p, &l, NULL));
    assert_ok(evpol_policy_set_event_loop(p, l, NULL));
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    memset(&err, 0, sizeof err);
    check_error(evpol_policy_get_event_loop(p, &loop, &err), &err, EVPOL_ERUNTIME);
    evpol_loop_unref(l);
    evpol_policy_unref(p);

    /* And for the top-level helpers. */
    assert_ok(evpol_set_event_loop(NULL, NULL));
    memset(&err, 0, sizeof err);
    check_error(evpol_get_event_loop(&loop, &err), &err, EVPOL_ERUNTIME);
    reset_policy();
}

static void test_set_event_loop_type_error(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL, *other = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_policy_new_default(&other, NULL));
    evpol_loop *old_loop = NULL, *loop = NULL, *seen = NULL;
    assert_ok(evpol_policy_new_event_loop(p, &old_loop, NULL));
    assert_ok(evpol_policy_set_event_loop(p, old_loop, NULL));

    const void *bad[] = {other, &zeroed_object, &random_object};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evpol_error err = {0};
        int rc = evpol_policy_set_event_loop(p, (evpol_loop *)(uintptr_t)bad[i], &err);
        check_error(rc, &err, EVPOL_ETYPE);
        assert_ok(evpol_policy_get_event_loop(p, &seen, NULL));
        assert_ptr_equal(seen, old_loop);
    }
    /* The top-level helper and the "super" implementation check too. */
    evpol_error err = {0};
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    check_error(evpol_set_event_loop((evpol_loop *)(void *)other, &err), &err, EVPOL_ETYPE);
    memset(&err, 0, sizeof err);
    check_error(evpol_policy_default_set_event_loop(p, (evpol_loop *)(void *)&zeroed_object, &err),
                &err, EVPOL_ETYPE);
    assert_ok(evpol_get_event_loop(&seen, NULL));
    assert_ptr_equal(seen, old_loop);

    /* test_set_event_loop: a new loop replaces the old one. */
    assert_ok(evpol_policy_new_event_loop(p, &loop, NULL));
    assert_ok(evpol_policy_set_event_loop(p, loop, NULL));
    assert_ok(evpol_policy_get_event_loop(p, &seen, NULL));
    assert_ptr_equal(seen, loop);
    assert_ptr_not_equal(seen, old_loop);

    /* The policy holds its own reference. */
    evpol_loop_unref(loop);
    assert_ok(evpol_policy_get_event_loop(p, &seen, NULL));
    assert_ptr_equal(seen, loop);
    assert_true(evpol_is_loop(seen));
    assert_int_equal(evpol_loop_is_closed(seen), 0);

    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    evpol_loop_unref(old_loop);
    evpol_policy_unref(p);
    evpol_policy_unref(other);
    reset_policy();
}

typedef struct new_in_thread {
    evpol_policy *policy;
    int rc_new1, rc_new2, rc_get;
    evpol_loop *a, *b, *got;
} new_in_thread;

static void *new_in_thread_fn(void *arg)
{
    new_in_thread *n = arg;
    n->rc_new1 = evpol_policy_new_event_loop(n->policy, &n->a, NULL);
    n->rc_new2 = evpol_policy_new_event_loop(n->policy, &n->b, NULL);
    n->rc_get = evpol_policy_get_event_loop(n->policy, &n->got, NULL);
    return NULL;
}

static void test_new_event_loop_distinct_not_current(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    evpol_loop *loops[4] = {0};
    for (int i = 0; i < 4; i++) {
        assert_ok(evpol_policy_new_event_loop(p, &loops[i], NULL));
        assert_non_null(loops[i]);
        assert_true(evpol_is_loop(loops[i]));
        assert_int_equal(evpol_loop_is_closed(loops[i]), 0);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(loops[i], loops[j]);
    }
    /* None of them became current. */
    evpol_loop *seen = NULL;
    evpol_error err = {0};
    check_error(evpol_policy_get_event_loop(p, &seen, &err), &err, EVPOL_ERUNTIME);
    /* The caller owns them: they stay alive after the policy is gone. */
    evpol_policy_unref(p);
    for (int i = 0; i < 4; i++) {
        assert_true(evpol_is_loop(loops[i]));
        volatile int never = 0;
        assert_int_equal(run_until(loops[i], &never, 0), 0);
        assert_ok(evpol_loop_close(loops[i], NULL));
        evpol_loop_unref(loops[i]);
    }

    /* In another thread too; and in the main thread of a fresh policy the
     * created loop is not what get_event_loop auto-creates. */
    assert_ok(evpol_policy_new_default(&p, NULL));
    new_in_thread n = {.policy = p};
    pthread_t t = start_thread(new_in_thread_fn, &n);
    pthread_join(t, NULL);
    assert_int_equal(n.rc_new1, 0);
    assert_int_equal(n.rc_new2, 0);
    assert_ptr_not_equal(n.a, n.b);
    assert_int_equal(n.rc_get, EVPOL_ERUNTIME);
    evpol_loop_unref(n.a);
    evpol_loop_unref(n.b);

    evpol_loop *mine = NULL, *cur = NULL;
    assert_ok(evpol_policy_new_event_loop(p, &mine, NULL));
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_policy_get_event_loop(p, &cur, NULL));
    capture_stop();
    assert_ptr_not_equal(cur, mine);
    evpol_loop_unref(mine);
    evpol_policy_unref(p);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-17: the top-level get_event_loop prefers the running loop       */
/* ------------------------------------------------------------------ */

typedef struct inside_running {
    evpol_loop *running;
    evpol_loop *seen;
    int rc;
    int policy_calls_before, policy_calls_inside;
    atomic_int *policy_calls;
    volatile int done;
} inside_running;

static void inside_running_cb(void *arg)
{
    inside_running *ir = arg;
    if (ir->policy_calls)
        ir->policy_calls_before = atomic_load(ir->policy_calls);
    ir->rc = evpol_get_event_loop(&ir->seen, NULL);
    if (ir->policy_calls)
        ir->policy_calls_inside = atomic_load(ir->policy_calls);
    ir->done = 1;
    evpol_loop_stop(ir->running, NULL);
}

static void test_top_level_get_event_loop_returns_running_loop(void **state)
{
    (void)state;
    reset_policy();
    evpol_loop *current = NULL, *running = NULL, *seen = NULL;
    assert_ok(evpol_new_event_loop(&current, NULL));
    assert_ok(evpol_set_event_loop(current, NULL));
    assert_ok(evpol_new_event_loop(&running, NULL));

    inside_running ir = {.running = running, .rc = -100};
    assert_ok(evpol_loop_call_soon_threadsafe(running, inside_running_cb, &ir, NULL));
    assert_ok(evpol_loop_run(running, NULL));
    assert_int_equal(ir.done, 1);
    assert_int_equal(ir.rc, 0);
    assert_ptr_equal(ir.seen, running);

    /* Outside it, the policy answers. */
    assert_ok(evpol_get_event_loop(&seen, NULL));
    assert_ptr_equal(seen, current);

    assert_ok(evpol_set_event_loop(NULL, NULL));
    evpol_loop_unref(current);
    evpol_loop_unref(running);
    reset_policy();
}

typedef struct failing_policy {
    atomic_int calls;
} failing_policy;

static int failing_get(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    (void)out;
    failing_policy *fp = evpol_policy_user_data(self);
    atomic_fetch_add(&fp->calls, 1);
    if (err) {
        err->code = EVPOL_ENOTSUP;
        err->sys_errno = 0;
        snprintf(err->message, sizeof err->message, "TestError from the policy");
    }
    return EVPOL_ENOTSUP;
}

static void test_top_level_get_event_loop_asks_policy(void **state)
{
    (void)state;
    reset_policy();
    failing_policy fp = {0};
    evpol_policy_methods m = {.size = sizeof m, .get_event_loop = failing_get};
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_custom(&m, &fp, &p, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    evpol_policy_unref(p);

    evpol_loop *loop = NULL, *seen = NULL;
    assert_ok(evpol_new_event_loop(&loop, NULL));
    evpol_error err = {0};
    assert_int_equal(evpol_get_event_loop(&seen, &err), EVPOL_ENOTSUP);
    assert_non_null(strstr(err.message, "TestError"));
    assert_int_equal(atomic_load(&fp.calls), 1);
    assert_ok(evpol_set_event_loop(NULL, NULL));
    memset(&err, 0, sizeof err);
    assert_int_equal(evpol_get_event_loop(&seen, &err), EVPOL_ENOTSUP);
    assert_int_equal(atomic_load(&fp.calls), 2);
    memset(&err, 0, sizeof err);
    check_error(evpol_get_running_loop(&seen, &err), &err, EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "no running"));

    /* While a loop runs, the policy is not consulted. */
    inside_running ir = {.running = loop, .rc = -100, .policy_calls = &fp.calls};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, inside_running_cb, &ir, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(ir.rc, 0);
    assert_ptr_equal(ir.seen, loop);
    assert_int_equal(ir.policy_calls_inside, ir.policy_calls_before);

    memset(&err, 0, sizeof err);
    assert_int_equal(evpol_get_event_loop(&seen, &err), EVPOL_ENOTSUP);
    evpol_loop_unref(loop);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-19, POL-20: backends                                            */
/* ------------------------------------------------------------------ */

static const char *preferred_method(void)
{
    static char name[32];
    struct event_base *b = event_base_new();
    assert_non_null(b);
    snprintf(name, sizeof name, "%s", event_base_get_method(b));
    event_base_free(b);
    return name;
}

static void test_default_backend(void **state)
{
    (void)state;
    reset_policy();
    const char *want = preferred_method();
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_new_event_loop(p, &loop, NULL));
    assert_non_null(evpol_loop_base(loop));
    assert_string_equal(event_base_get_method(evpol_loop_base(loop)), want);
    evpol_loop_unref(loop);

    /* Also the auto-created main-thread loop and the process default. */
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_policy_get_event_loop(p, &loop, NULL));
    capture_stop();
    assert_string_equal(event_base_get_method(evpol_loop_base(loop)), want);
    evpol_policy_unref(p);

    assert_ok(evpol_new_event_loop(&loop, NULL));
    assert_string_equal(event_base_get_method(evpol_loop_base(loop)), want);
    evpol_loop_unref(loop);
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_string_equal(event_base_get_method(evpol_loop_base(loop)), want);
    evpol_loop_unref(loop);
    reset_policy();
}

typedef struct stop_cb_state {
    evpol_loop *loop;
    volatile int ran;
} stop_cb_state;

static void mark_and_stop(void *arg)
{
    stop_cb_state *s = arg;
    s->ran = 1;
    evpol_loop_stop(s->loop, NULL);
}

static void test_backend_policies(void **state)
{
    (void)state;
    reset_policy();
    static const struct {
        evpol_backend backend;
        const char *method;
    } cases[] = {
        {EVPOL_BACKEND_EPOLL, "epoll"},
        {EVPOL_BACKEND_POLL, "poll"},
        {EVPOL_BACKEND_SELECT, "select"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        evpol_policy *p = NULL;
        assert_ok(evpol_policy_new_with_backend(cases[i].backend, &p, NULL));
        assert_true(evpol_is_policy(p));
        evpol_loop *a = NULL, *b = NULL, *seen = NULL;
        assert_ok(evpol_policy_new_event_loop(p, &a, NULL));
        assert_ok(evpol_policy_new_event_loop(p, &b, NULL));
        assert_ptr_not_equal(a, b);
        assert_string_equal(event_base_get_method(evpol_loop_base(a)), cases[i].method);

        /* Otherwise the default: per-thread loops, no loop in a thread,
         * auto-creation in the main thread with a warning. */
        no_loop_thread n = {.policy = p};
        pthread_t t = start_thread(no_loop_thread_fn, &n);
        pthread_join(t, NULL);
        check_error(n.rc, &n.err, EVPOL_ERUNTIME);

        log_capture cap;
        capture_start(&cap);
        assert_ok(evpol_policy_get_event_loop(p, &seen, NULL));
        capture_stop();
        assert_int_equal(capture_count(&cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
        assert_ptr_not_equal(seen, a);
        assert_string_equal(event_base_get_method(evpol_loop_base(seen)), cases[i].method);

        assert_ok(evpol_policy_set_event_loop(p, a, NULL));
        assert_ok(evpol_policy_get_event_loop(p, &seen, NULL));
        assert_ptr_equal(seen, a);

        /* Its loops run. */
        stop_cb_state s = {a, 0};
        assert_ok(evpol_loop_call_soon_threadsafe(a, mark_and_stop, &s, NULL));
        assert_ok(evpol_loop_run(a, NULL));
        assert_int_equal(s.ran, 1);

        /* As the process-wide policy. */
        assert_ok(evpol_set_event_loop_policy(p, NULL));
        evpol_loop *c = NULL;
        assert_ok(evpol_new_event_loop(&c, NULL));
        assert_string_equal(event_base_get_method(evpol_loop_base(c)), cases[i].method);
        evpol_loop_unref(c);
        reset_policy();

        assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
        evpol_loop_unref(a);
        evpol_loop_unref(b);
        evpol_policy_unref(p);
    }

    evpol_policy *p = NULL;
    evpol_error err = {0};
    check_error(evpol_policy_new_with_backend((evpol_backend)99, &p, &err), &err, EVPOL_EINVAL);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* POL-21: fork                                                        */
/* ------------------------------------------------------------------ */

/* What the child saw; written to a pipe in one write. */
typedef struct fork_report {
    int running_rc;       /* evpol_get_running_loop */
    int get_rc;           /* policy get_event_loop */
    int top_rc;           /* evpol_get_event_loop */
    uintptr_t new_loop;   /* what get_event_loop returned */
    uintptr_t top_loop;
    int is_loop;
    int deprecations;
    int new_loop_runs;    /* the new loop can run a callback */
    long blocks_released; /* evpol's blocks the fork freed in the child */
    int fresh_policy_rc;  /* a policy made and released after the fork */
} fork_report;

static void child_ran(void *arg)
{
    stop_cb_state *s = arg;
    s->ran = 1;
    evpol_loop_stop(s->loop, NULL);
}

/* In the child: no cmocka calls (their state belongs to the parent). */
static void child_report_and_exit(int fd, long blocks_at_fork)
{
    fork_report r;
    memset(&r, 0, sizeof r);
    /* The policies' per-thread slots are freed by the fork's child
     * handler, the loops they held forgotten. */
    r.blocks_released = blocks_at_fork - alloc_count_evpol();
    evpol_loop *loop = NULL;
    r.running_rc = evpol_get_running_loop(&loop, NULL);
    log_capture *cap = calloc(1, sizeof *cap);
    if (!cap)
        _exit(3);
    capture_start(cap);
    evpol_policy *p = NULL;
    evpol_get_event_loop_policy(&p, NULL);
    evpol_loop *nl = NULL;
    r.get_rc = evpol_policy_get_event_loop(p, &nl, NULL);
    r.new_loop = (uintptr_t)nl;
    evpol_loop *tl = NULL;
    r.top_rc = evpol_get_event_loop(&tl, NULL);
    r.top_loop = (uintptr_t)tl;
    capture_stop();
    r.deprecations = capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL);
    r.is_loop = nl ? evpol_is_loop(nl) : 0;
    if (r.get_rc == 0 && nl) {
        stop_cb_state s = {nl, 0};
        if (evpol_loop_call_soon_threadsafe(nl, child_ran, &s, NULL) == 0 &&
            evpol_loop_run(nl, NULL) == 0)
            r.new_loop_runs = s.ran;
    }
    /* Every lock the fork took is free again in the child: making and
     * releasing a policy takes the list of policies' lock (a hang here
     * fails the test too). */
    evpol_policy *fresh = NULL;
    r.fresh_policy_rc = evpol_policy_new_default(&fresh, NULL);
    evpol_policy_unref(fresh);
    ssize_t n = write(fd, &r, sizeof r);
    _exit(n == (ssize_t)sizeof r ? 0 : 4);
}

typedef struct fork_ctx {
    evpol_loop *loop;
    int report_fd;
    pid_t child;
    int fork_errno;
} fork_ctx;

static void fork_from_callback(void *arg)
{
    fork_ctx *fc = arg;
    long blocks = alloc_count_evpol();
    pid_t pid = fork();
    if (pid == 0)
        child_report_and_exit(fc->report_fd, blocks);
    fc->child = pid;
    fc->fork_errno = pid < 0 ? errno : 0;
    evpol_loop_stop(fc->loop, NULL);
}

typedef struct fork_result {
    int ok_setup;
    int status;
    fork_report report;
    ssize_t got;
    uintptr_t parent_loop;
    int parent_running_after;
    uintptr_t parent_seen_after;
} fork_result;

/* Make `loop` current (process-wide policy), run it, fork in a callback,
 * collect the child's report. Any thread; no cmocka calls. */
static void fork_while_running(evpol_loop *loop, fork_result *res)
{
    int fds[2];
    memset(res, 0, sizeof *res);
    res->parent_loop = (uintptr_t)loop;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return;
    fork_ctx fc = {loop, fds[1], -1, 0};
    if (evpol_set_event_loop(loop, NULL) != 0 ||
        evpol_loop_call_soon_threadsafe(loop, fork_from_callback, &fc, NULL) != 0 ||
        evpol_loop_run(loop, NULL) != 0 || fc.child <= 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    close(fds[1]);
    res->ok_setup = 1;
    size_t have = 0;
    while (have < sizeof res->report) {
        ssize_t n = read(fds[0], (char *)&res->report + have, sizeof res->report - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    res->got = (ssize_t)have;
    close(fds[0]);
    while (waitpid(fc.child, &res->status, 0) < 0 && errno == EINTR)
        ;
    /* The parent keeps its loop. */
    evpol_loop *seen = NULL;
    evpol_get_event_loop(&seen, NULL);
    res->parent_seen_after = (uintptr_t)seen;
    res->parent_running_after = evpol_loop_is_running(loop);
    evpol_set_event_loop(NULL, NULL);
}

/* `slots`: the threads with a loop set in the process-wide policy when
 * the fork happened. */
static void check_fork_result(const fork_result *res, long slots)
{
    assert_int_equal(res->ok_setup, 1);
    assert_int_equal(res->got, (ssize_t)sizeof res->report);
    assert_true(WIFEXITED(res->status));
    assert_int_equal(WEXITSTATUS(res->status), 0);
    /* The child has no running loop ... */
    assert_int_equal(res->report.running_rc, EVPOL_ERUNTIME);
    /* ... and no current loop: its main thread gets a new one, with the
     * deprecation warning. */
    assert_int_equal(res->report.get_rc, 0);
    assert_int_equal(res->report.is_loop, 1);
    assert_true(res->report.new_loop != 0);
    assert_true(res->report.new_loop != res->parent_loop);
    assert_int_equal(res->report.deprecations, 1);
    assert_int_equal(res->report.top_rc, 0);
    assert_true(res->report.top_loop == res->report.new_loop);
    assert_int_equal(res->report.new_loop_runs, 1);
    assert_int_equal(res->report.blocks_released, slots);
    assert_int_equal(res->report.fresh_policy_rc, 0);
    /* The parent is unaffected. */
    assert_true(res->parent_seen_after == res->parent_loop);
    assert_int_equal(res->parent_running_after, 0);
}

static void *fork_thread_fn(void *arg)
{
    fork_result *res = arg;
    pthread_setname_np(pthread_self(), "evpol-forker");
    evpol_loop *loop = NULL;
    if (evpol_new_event_loop(&loop, NULL) != 0)
        return NULL;
    fork_while_running(loop, res);
    evpol_loop_unref(loop);
    return NULL;
}

static void test_fork_resets_loops(void **state)
{
    (void)state;
    reset_policy();
    resource_snapshot before = resources_now();

    /* From the main thread. */
    evpol_loop *loop = NULL;
    assert_ok(evpol_new_event_loop(&loop, NULL));
    fork_result res;
    fork_while_running(loop, &res);
    check_fork_result(&res, 1);
    evpol_loop_unref(loop);

    /* From another thread, while the main thread has its own loop: the
     * forking thread becomes the child's main thread. */
    evpol_loop *main_loop = NULL;
    assert_ok(evpol_new_event_loop(&main_loop, NULL));
    assert_ok(evpol_set_event_loop(main_loop, NULL));
    fork_result tres;
    memset(&tres, 0, sizeof tres);
    pthread_t t = start_thread(fork_thread_fn, &tres);
    pthread_join(t, NULL);
    check_fork_result(&tres, 2);
    assert_true(tres.report.new_loop != (uintptr_t)main_loop);
    evpol_loop *seen = NULL;
    assert_ok(evpol_get_event_loop(&seen, NULL));
    assert_ptr_equal(seen, main_loop);
    assert_ok(evpol_set_event_loop(NULL, NULL));
    evpol_loop_unref(main_loop);

    reset_policy();
    assert_no_leaks(before);
}

/* ---- paths a policy reaches only in unusual conditions ---- */

/* POL-6: the per-thread bookkeeping survives a process that has no thread
 * key left for it (the key only releases loops at thread exit). Checked in
 * a fresh run of this program (EVPOL_TEST_KEY_EXHAUSTION set), which has
 * never made its thread key, whatever this process's tests did before. */
static int key_exhausted_child(void)
{
    enum { MAXKEYS = 4096 };
    static pthread_key_t keys[MAXKEYS];
    int n = 0;
    while (n < MAXKEYS && pthread_key_create(&keys[n], NULL) == 0)
        n++;
    int ok = n < MAXKEYS; /* the table is full */
    evpol_policy *p = NULL;
    evpol_loop *loop = NULL, *got = NULL;
    ok = ok && evpol_policy_new_default(&p, NULL) == 0;
    ok = ok && evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL) == 0;
    ok = ok && evpol_policy_set_event_loop(p, loop, NULL) == 0;
    ok = ok && evpol_policy_get_event_loop(p, &got, NULL) == 0 && got == loop;
    ok = ok && evpol_policy_set_event_loop(p, NULL, NULL) == 0;
    evpol_error err;
    memset(&err, 0, sizeof err);
    ok = ok && evpol_policy_get_event_loop(p, &got, &err) == EVPOL_ERUNTIME;
    ok = ok && strcmp(err.message, "There is no current event loop in thread 'MainThread'.") == 0;
    evpol_loop_unref(loop);
    evpol_policy_unref(p);
    for (int i = 0; i < n; i++)
        pthread_key_delete(keys[i]);
    return ok ? 0 : 1;
}

extern char **environ;

static void test_no_thread_key_left(void **state)
{
    (void)state;
    /* This process's environment (coverage's GCOV_PREFIX, ...) plus one. */
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    assert_non_null(envp);
    memcpy(envp, environ, n * sizeof *envp);
    envp[n] = "EVPOL_TEST_KEY_EXHAUSTION=1";
    char *argv[] = {"test_policy", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp);
    free(envp);
    assert_int_equal(rc, 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* POL-11: a thread without a name (pthread_setname_np to "") is named
 * Thread-<tid> in the error. */
typedef struct nameless_result {
    int rc;
    long tid;
    evpol_error err;
} nameless_result;

static void *nameless_thread(void *arg)
{
    nameless_result *r = arg;
    pthread_setname_np(pthread_self(), "");
    r->tid = (long)gettid();
    evpol_policy *p = NULL;
    evpol_loop *loop = NULL;
    if (evpol_policy_new_default(&p, NULL) != 0)
        return NULL;
    r->rc = evpol_policy_get_event_loop(p, &loop, &r->err);
    evpol_policy_unref(p);
    return NULL;
}

static void test_nameless_thread_in_error(void **state)
{
    (void)state;
    nameless_result r;
    memset(&r, 0, sizeof r);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, nameless_thread, &r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(r.rc, EVPOL_ERUNTIME);
    char want[128];
    snprintf(want, sizeof want, "There is no current event loop in thread 'Thread-%ld'.", r.tid);
    assert_string_equal(r.err.message, want);
}

/* POL-8, POL-9, POL-10, POL-13, POL-14: errors of overrides reach the
 * caller unchanged, also through the default get_event_loop that calls
 * them, and an override that "succeeds" without an object is an error. */
enum { OV_DEFAULT, OV_FAIL, OV_NOTHING };
typedef struct override_modes {
    int new_loop, set_loop, get_watcher;
    int set_calls;
} override_modes;

static int ov_fail(evpol_error *err, int code, const char *msg)
{
    if (err) {
        err->code = code;
        err->sys_errno = 0;
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return code;
}

static int ov_new_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    override_modes *m = evpol_policy_user_data(self);
    if (m->new_loop == OV_FAIL)
        return ov_fail(err, EVPOL_ENOTSUP, "no loops in this policy");
    if (m->new_loop == OV_NOTHING) {
        *out = NULL;
        return 0;
    }
    return evpol_policy_default_new_event_loop(self, out, err);
}

static int ov_set_event_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err)
{
    override_modes *m = evpol_policy_user_data(self);
    m->set_calls++;
    if (m->set_loop == OV_FAIL)
        return ov_fail(err, EVPOL_ERUNTIME, "set_event_loop refused");
    return evpol_policy_default_set_event_loop(self, loop, err);
}

static int ov_get_child_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err)
{
    override_modes *m = evpol_policy_user_data(self);
    if (m->get_watcher == OV_NOTHING) {
        *out = NULL;
        return 0;
    }
    return evpol_policy_default_get_child_watcher(self, out, err);
}

static void expect_error(int rc, const evpol_error *err, int code, const char *msg)
{
    assert_int_equal(rc, code);
    assert_int_equal(err->code, code);
    assert_string_equal(err->message, msg);
}

static void test_override_failures_reach_caller(void **state)
{
    (void)state;
    evpol_policy_methods m;
    memset(&m, 0, sizeof m);
    m.size = sizeof m;
    m.new_event_loop = ov_new_event_loop;
    m.set_event_loop = ov_set_event_loop;
    m.get_child_watcher = ov_get_child_watcher;
    override_modes modes;
    memset(&modes, 0, sizeof modes);
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_custom(&m, &modes, &p, NULL));
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    evpol_error err;
    evpol_loop *loop = NULL;

    /* new_event_loop fails: directly, and inside POL-10's creation. */
    modes.new_loop = OV_FAIL;
    memset(&err, 0, sizeof err);
    expect_error(evpol_policy_new_event_loop(p, &loop, &err), &err, EVPOL_ENOTSUP,
                 "no loops in this policy");
    assert_null(loop);
    memset(&err, 0, sizeof err);
    loop = (evpol_loop *)&err;
    expect_error(evpol_policy_get_event_loop(p, &loop, &err), &err, EVPOL_ENOTSUP,
                 "no loops in this policy");
    assert_null(loop);
    assert_int_equal(modes.set_calls, 0);

    /* new_event_loop "succeeds" with nothing (POL-9, POL-13). */
    modes.new_loop = OV_NOTHING;
    memset(&err, 0, sizeof err);
    expect_error(evpol_policy_new_event_loop(p, &loop, &err), &err, EVPOL_ERUNTIME,
                 "new_event_loop returned no event loop");
    assert_null(loop);
    memset(&err, 0, sizeof err);
    expect_error(evpol_policy_get_event_loop(p, &loop, &err), &err, EVPOL_ERUNTIME,
                 "new_event_loop returned no event loop");
    assert_null(loop);

    /* set_event_loop fails inside POL-10: the error is returned and the
     * fresh loop is not kept (ASan: not leaked). */
    modes.new_loop = OV_DEFAULT;
    modes.set_loop = OV_FAIL;
    memset(&err, 0, sizeof err);
    expect_error(evpol_policy_get_event_loop(p, &loop, &err), &err, EVPOL_ERUNTIME,
                 "set_event_loop refused");
    assert_null(loop);
    assert_int_equal(modes.set_calls, 1);
    /* Each attempt warned once, as POL-10 says. */
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION,
                                   "There is no current event loop"),
                     3);

    /* get_child_watcher "succeeds" with nothing (POL-14). */
    modes.get_watcher = OV_NOTHING;
    evpol_watcher *w = (evpol_watcher *)&err;
    memset(&err, 0, sizeof err);
    expect_error(evpol_policy_get_child_watcher(p, &w, &err), &err, EVPOL_ERUNTIME,
                 "get_child_watcher returned no watcher");
    assert_null(w);
    capture_stop();
    free(cap);
    evpol_policy_unref(p);
}

/* POL-6: a thread that set loops in more policies than its exit handler
 * batches (64) has all but one released at exit, and says which it leaks. */
enum { MANY_POLICIES = 65 };
typedef struct many_policies {
    evpol_policy *p[MANY_POLICIES];
    evpol_loop *loop[MANY_POLICIES];
    int ok;
} many_policies;

static void *set_many_loops(void *arg)
{
    many_policies *mp = arg;
    mp->ok = 1;
    for (int i = 0; i < MANY_POLICIES; i++)
        if (evpol_policy_set_event_loop(mp->p[i], mp->loop[i], NULL) != 0)
            mp->ok = 0;
    return NULL;
}

/* POL-15 closes the previous watcher, but setting the watcher already set
 * again replaces nothing: it stays open. */
static void test_set_same_child_watcher_keeps_it_open(void **state)
{
    (void)state;
    reset_policy();
    log_capture *cap = capture_new(); /* the deprecation warnings */
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_THREADED, &w, NULL));
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    assert_int_equal(evpol_watcher_is_active(w), 1);
    evpol_watcher *got = NULL;
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    assert_ptr_equal(got, w);
    capture_free(cap);
    evpol_policy_unref(p);
    assert_ok(evpol_watcher_close(w, NULL));
    evpol_watcher_unref(w);
}

static void test_thread_exit_with_loops_in_many_policies(void **state)
{
    (void)state;
    many_policies *mp = calloc(1, sizeof *mp);
    assert_non_null(mp);
    for (int i = 0; i < MANY_POLICIES; i++) {
        assert_ok(evpol_policy_new_default(&mp->p[i], NULL));
        assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &mp->loop[i], NULL));
    }
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, set_many_loops, mp), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    capture_stop();
    assert_int_equal(mp->ok, 1);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "a thread exited holding loops in more than 64 policies; "
                                   "one is leaked"),
                     1);
    assert_int_equal(cap->count, 1);
    /* The policies are visited newest first, so the oldest one's reference
     * is the one leaked: drop it by hand (ASan checks it was exactly that
     * one: any other would be freed twice or leak). */
    evpol_loop_unref(mp->loop[0]);
    for (int i = 0; i < MANY_POLICIES; i++) {
        assert_int_equal(evpol_loop_is_closed(mp->loop[i]), 0);
        evpol_loop_unref(mp->loop[i]);
        evpol_policy_unref(mp->p[i]);
    }
    free(cap);
    free(mp);
}

int main(void)
{
    if (getenv("EVPOL_TEST_KEY_EXHAUSTION"))
        return key_exhausted_child(); /* test_no_thread_key_left's fresh run */
    const harness_test tests[] = {
        CLAUSE_TEST(test_get_policy_returns_current, "POL-1"),
        CLAUSE_TEST(test_default_policy_created_once_concurrently, "POL-2 POL-1"),
        CLAUSE_TEST(test_set_policy, "POL-3"),
        CLAUSE_TEST(test_set_policy_null_restores_fresh_default, "POL-4"),
        CLAUSE_TEST(test_set_policy_non_policy_type_error, "POL-5"),
        CLAUSE_TEST(test_per_thread_loops, "POL-6"),
        CLAUSE_TEST(test_custom_policy_one_loop_per_process, "POL-7"),
        CLAUSE_TEST(test_custom_policy_overrides_call_super, "POL-8 POL-10"),
        CLAUSE_TEST(test_get_event_loop_never_null, "POL-9"),
        CLAUSE_TEST(test_main_thread_creates_loop_with_deprecation, "POL-10 ERR-3"),
        CLAUSE_TEST(test_non_main_thread_no_loop_runtime_error, "POL-11"),
        CLAUSE_TEST(test_after_set_null_runtime_error, "POL-11 POL-12"),
        CLAUSE_TEST(test_set_event_loop_type_error, "POL-12"),
        CLAUSE_TEST(test_new_event_loop_distinct_not_current, "POL-13"),
        CLAUSE_TEST(test_top_level_get_event_loop_returns_running_loop, "POL-17"),
        CLAUSE_TEST(test_top_level_get_event_loop_asks_policy, "POL-17 LOOP-6"),
        CLAUSE_TEST(test_default_backend, "POL-19"),
        CLAUSE_TEST(test_backend_policies, "POL-20"),
        CLAUSE_TEST(test_fork_resets_loops, "POL-21"),
        CLAUSE_TEST(test_nameless_thread_in_error, "POL-11"),
        CLAUSE_TEST(test_override_failures_reach_caller, "POL-8 POL-9 POL-10 POL-13 POL-14"),
        CLAUSE_TEST(test_thread_exit_with_loops_in_many_policies, "POL-6"),
        CLAUSE_TEST(test_set_same_child_watcher_keeps_it_open, "POL-15"),
        CLAUSE_TEST(test_no_thread_key_left, "POL-6 POL-11"),
    };
    return harness_run_group("policy", tests, NULL, NULL);
}
