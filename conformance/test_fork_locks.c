/*
 * test_fork_locks.c — the library's lock assertions in the child of a fork
 * (POL-21: the child goes on using the library).
 *
 * Written from evpol.h, lib/evpol-internal.h's description of
 * EVPOL__ASSERT_LOCKED, and SPEC.md. The children make no cmocka calls
 * (their state belongs to the parent): they report through their exit
 * status.
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

/* The library's lock assertions (EVPOL__ASSERT_LOCKED, on unless NDEBUG)
 * compare a mutex's owner with the calling thread's kernel id, which the
 * library caches per thread; the one thread of a fork's child has a new
 * id. A thread that has already taken the library's locks forks; the child
 * and then a grandchild take them again (a loop's wake-up, a policy's
 * per-thread slot). With the parent's id still cached an assertion would
 * abort the child. */
static int callbacks_run; /* in this process */

static void count_and_stop(void *loop)
{
    callbacks_run++;
    evpol_loop_stop(loop, NULL);
}

static bool take_library_locks(void)
{
    evpol_policy *p = NULL;
    evpol_loop *loop = NULL;
    bool ok = evpol_policy_new_default(&p, NULL) == 0 &&
              evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL) == 0;
    int before = callbacks_run;
    ok = ok && evpol_policy_set_event_loop(p, loop, NULL) == 0 &&
         evpol_policy_set_event_loop(p, NULL, NULL) == 0 &&
         evpol_loop_call_soon_threadsafe(loop, count_and_stop, loop, NULL) == 0 &&
         evpol_loop_run(loop, NULL) == 0 && callbacks_run == before + 1;
    evpol_loop_unref(loop);
    evpol_policy_unref(p);
    return ok;
}

/* The wait status of a child that takes the locks, then (depth > 1) forks
 * one more generation that does; -1 if fork failed. No cmocka calls. */
static int fork_taking_locks(int depth)
{
    pid_t pid = fork();
    if (pid == 0) {
        bool ok = take_library_locks();
        if (ok && depth > 1)
            ok = fork_taking_locks(depth - 1) == 0;
        _exit(ok ? 0 : 1);
    }
    int status = -1;
    if (pid > 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    return status;
}

static void *fork_taking_locks_thread(void *arg)
{
    int *status = arg;
    *status = take_library_locks() ? fork_taking_locks(2) : -2;
    return NULL;
}

static void test_fork_child_checks_its_own_locks(void **state)
{
    (void)state;
    reset_policy();
    resource_snapshot before = resources_now();
    assert_true(take_library_locks()); /* this thread's id is known now */
    assert_int_equal(fork_taking_locks(2), 0);
    int status = -1;
    pthread_t t = start_thread(fork_taking_locks_thread, &status);
    pthread_join(t, NULL);
    assert_int_equal(status, 0);
    reset_policy();
    assert_no_leaks(before);
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_fork_child_checks_its_own_locks, "POL-21"),
    };
    return harness_run_group("fork_locks", tests, NULL, NULL);
}
