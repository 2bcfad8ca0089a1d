/*
 * test_policy_cpython.c — CPython's PolicyTests watcher cases
 * (test_unix_events.py: test_get_child_watcher_thread,
 * test_child_watcher_replace_mainloop_existing), written anew.
 *
 * CPython looks at watcher._loop; evpol has no such accessor, so the
 * attached loop is observed the way a program sees it: a Safe watcher is
 * active only while the loop it is attached to is running (SAF-2).
 */
#include "harness.h"

#include <pthread.h>

typedef struct probe {
    evpol_watcher *w;
    evpol_loop *loop;
    int active; /* is_active seen from inside the running loop */
} probe;

static void probe_cb(void *arg)
{
    probe *p = arg;
    p->active = evpol_watcher_is_active(p->w);
    evpol_loop_stop(p->loop, NULL);
}

/* Is `w` active while `loop` runs (i.e. attached to it)? */
static int active_inside(evpol_watcher *w, evpol_loop *loop)
{
    probe p = {w, loop, -1};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, probe_cb, &p, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_true(p.active == 0 || p.active == 1);
    return p.active;
}

static void test_child_watcher_replace_mainloop_existing(void **state)
{
    (void)state;
    evpol_policy *policy;
    assert_ok(evpol_policy_new_default(&policy, NULL));
    evpol_loop *loop, *new_loop;
    assert_ok(evpol_policy_new_event_loop(policy, &loop, NULL));
    assert_ok(evpol_policy_set_event_loop(policy, loop, NULL));

    evpol_watcher *w;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_SAFE, &w, NULL));
    assert_ok(evpol_policy_set_child_watcher(policy, w, NULL));
    assert_ok(evpol_watcher_attach_loop(w, loop, NULL));
    assert_int_equal(active_inside(w, loop), 1);

    /* The main thread's set_event_loop moves the watcher (POL-16). */
    assert_ok(evpol_policy_new_event_loop(policy, &new_loop, NULL));
    assert_ok(evpol_policy_set_event_loop(policy, new_loop, NULL));
    assert_int_equal(active_inside(w, new_loop), 1);
    assert_int_equal(active_inside(w, loop), 0);

    /* And NULL detaches it. */
    assert_ok(evpol_policy_set_event_loop(policy, NULL, NULL));
    assert_int_equal(active_inside(w, new_loop), 0);
    assert_int_equal(active_inside(w, loop), 0);

    evpol_watcher_unref(w);
    evpol_policy_unref(policy); /* closes the watcher it holds */
    assert_ok(evpol_loop_close(loop, NULL));
    assert_ok(evpol_loop_close(new_loop, NULL));
    evpol_loop_unref(loop);
    evpol_loop_unref(new_loop);
}

typedef struct thread_case {
    evpol_policy *policy;
    evpol_watcher *expected;
    int got_loop;      /* get_event_loop succeeded after set */
    int same_watcher;  /* get_child_watcher returned the policy's watcher */
    int active_inside; /* the watcher was active inside this thread's loop */
} thread_case;

static void *thread_main(void *arg)
{
    thread_case *tc = arg;
    evpol_loop *loop = NULL, *current = NULL;
    if (evpol_policy_new_event_loop(tc->policy, &loop, NULL) != 0)
        return NULL;
    /* From a non-main thread: no attach_loop (POL-16). */
    evpol_policy_set_event_loop(tc->policy, loop, NULL);
    tc->got_loop = evpol_policy_get_event_loop(tc->policy, &current, NULL) == 0 && current == loop;
    evpol_watcher *w = NULL;
    tc->same_watcher = evpol_policy_get_child_watcher(tc->policy, &w, NULL) == 0 &&
                       w == tc->expected && evpol_watcher_kind_of(w) == EVPOL_WATCHER_SAFE;
    probe p = {w, loop, -1};
    if (evpol_loop_call_soon_threadsafe(loop, probe_cb, &p, NULL) == 0 &&
        evpol_loop_run(loop, NULL) == 0)
        tc->active_inside = p.active;
    evpol_policy_set_event_loop(tc->policy, NULL, NULL);
    evpol_loop_close(loop, NULL);
    evpol_loop_unref(loop);
    return NULL;
}

static void test_get_child_watcher_thread(void **state)
{
    (void)state;
    thread_case tc = {.active_inside = -1};
    assert_ok(evpol_policy_new_default(&tc.policy, NULL));
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_SAFE, &tc.expected, NULL));
    assert_ok(evpol_policy_set_child_watcher(tc.policy, tc.expected, NULL));

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_main, &tc), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(tc.got_loop);
    assert_true(tc.same_watcher);
    /* CPython: watcher._loop is None — the thread's loop was not attached. */
    assert_int_equal(tc.active_inside, 0);

    evpol_watcher_unref(tc.expected);
    evpol_policy_unref(tc.policy);
}

int main(void)
{
    evpol_set_log_level(EVPOL_LOG_ERROR); /* deprecation lines are expected */
    const harness_test tests[] = {
        CLAUSE_TEST(test_child_watcher_replace_mainloop_existing, "POL-16 CW-5 SAF-2 SAF-5"),
        CLAUSE_TEST(test_get_child_watcher_thread, "POL-16 POL-14 SAF-2"),
    };
    return harness_run_group("policy_cpython", tests, NULL, NULL);
}
