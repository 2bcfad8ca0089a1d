/*
 * test_cw_inactive.c — CW-7 / SUB-2 for each watcher: spawning while the
 * current watcher is inactive fails with a runtime error before any process,
 * pipe or fd is created.
 *
 * Each watcher has its own way of being inactive:
 *   Threaded, Pidfd  only once closed (they are otherwise always active);
 *   MultiLoop        before attach_loop installs its SIGCHLD handler (MUL-6);
 *   Safe, Fast       while the attached loop is not running (SAF-2, FST-3).
 */
#include "harness.h"

#include <errno.h>
#include <sys/wait.h>

/* True when this process has no child at all (nothing was created). */
static int no_children(void)
{
    return waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

static void count_exit(pid_t pid, int returncode, void *arg)
{
    (void)pid;
    (void)returncode;
    (*(int *)arg)++;
}

static void test_spawn_refused_when_inactive(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    assert_true(no_children());
    evpol_loop *loop;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    evpol_watcher *w;
    assert_ok(evpol_watcher_new(kind, &w, NULL));

    switch (kind) {
    case EVPOL_WATCHER_THREADED:
    case EVPOL_WATCHER_PIDFD:
        assert_int_equal(evpol_watcher_is_active(w), 1);
        assert_ok(evpol_watcher_close(w, NULL));
        break;
    case EVPOL_WATCHER_MULTILOOP:
        break; /* not attached yet */
    case EVPOL_WATCHER_SAFE:
    case EVPOL_WATCHER_FAST:
        assert_ok(evpol_watcher_attach_loop(w, loop, NULL)); /* attached, not running */
        break;
    default:
        fail_msg("unexpected kind");
    }
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_ok(evpol_set_child_watcher(w, NULL));

    resource_snapshot before = resources_now();
    char *argv[] = {"true", NULL};
    int called = 0;
    evpol_spawn_options opts = {
        .file = "true",
        .argv = argv,
        .stdio = {EVPOL_STDIO_PIPE, EVPOL_STDIO_PIPE, EVPOL_STDIO_DEVNULL},
        .on_exit = count_exit,
        .arg = &called,
    };
    evpol_spawn_result res = {.pid = 0, .stdio_fd = {-1, -1, -1}};
    evpol_error err = {0};
    assert_int_equal(evpol_loop_spawn(loop, &opts, &res, &err), EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    assert_true(err.message[0] != '\0');
    /* Nothing was created: no child, no pipe, no /dev/null fd. */
    assert_true(no_children());
    assert_int_equal(resources_now().fds, before.fds);
    assert_int_equal(res.stdio_fd[0], -1);
    assert_int_equal(called, 0);

    /* Leave the policy with a fresh default watcher (this closes ours). */
    assert_ok(evpol_set_child_watcher(NULL, NULL));
    evpol_watcher_unref(w);
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    assert_ok(evpol_set_event_loop_policy(NULL, NULL));
}

int main(void)
{
    evpol_set_log_level(EVPOL_LOG_ERROR); /* the deprecation lines are expected */
    const harness_test tests[] = {
        WATCHER_TESTS(test_spawn_refused_when_inactive, W_ALL,
            "CW-7 CW-6 SUB-2 MUL-6@multiloop SAF-2@safe FST-3@fast"),
    };
    return harness_run_group("cw_inactive", tests, NULL, NULL);
}
