/*
 * test_errors.c — errors and logging (ERR-1 ... ERR-3).
 *
 * ERR-1 is checked by walking every public function of evpol.h with NULL,
 * wrong-type, closed and out-of-range inputs: each must return the
 * documented code, with err->code equal to it and a non-empty message, and
 * must behave the same with a NULL error struct. Where the header leaves the
 * choice open (a wrong-type object where only EINVAL is listed), both
 * EINVAL and ETYPE are accepted.
 */
#include "harness.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

/* Something that is neither a loop, a policy nor a watcher. */
typedef struct fake_object {
    uint32_t tag;
    char pad[508];
} fake_object;
static fake_object zeroed_object;
static fake_object random_object = {0xdeadbeefu, "random bytes, not an evpol object"};

#define FAKE_LOOP(o) ((evpol_loop *)(void *)&(o))
#define FAKE_POLICY(o) ((evpol_policy *)(void *)&(o))
#define FAKE_WATCHER(o) ((evpol_watcher *)(void *)&(o))

static void check_code(const char *what, int rc, const evpol_error *err, int c1, int c2)
{
    if (rc != c1 && rc != c2)
        fail_msg("%s: expected %s%s%s, got %d (%s): %s", what, evpol_strerror(c1),
                 c2 != c1 ? " or " : "", c2 != c1 ? evpol_strerror(c2) : "", rc,
                 evpol_strerror(rc), err->message);
    if (err->code != rc)
        fail_msg("%s: err->code %d but returned %d", what, err->code, rc);
    if (err->message[0] == '\0')
        fail_msg("%s: empty error message", what);
}

/*
 * EXPECT(expr, code): `expr` uses E as its evpol_error pointer. It is run
 * with an error struct, then again with E = NULL: both must fail the same.
 */
#define EXPECT2(expr, c1, c2)                                                \
    do {                                                                     \
        evpol_error expect_err_;                                             \
        memset(&expect_err_, 0, sizeof expect_err_);                         \
        evpol_error *E = &expect_err_;                                       \
        int expect_rc1_ = (expr);                                            \
        check_code(#expr, expect_rc1_, &expect_err_, (c1), (c2));            \
        E = NULL;                                                            \
        int expect_rc2_ = (expr);                                            \
        if (expect_rc2_ != expect_rc1_)                                      \
            fail_msg("%s: %d with an error struct, %d without", #expr,       \
                     expect_rc1_, expect_rc2_);                              \
    } while (0)
#define EXPECT(expr, code) EXPECT2(expr, code, code)
/* A wrong-type object: ETYPE, or EINVAL where the header lists only it. */
#define EXPECT_BADOBJ(expr) EXPECT2(expr, EVPOL_EINVAL, EVPOL_ETYPE)

static void noop_cb(void *arg)
{
    (void)arg;
}
static void noop_signal(int signum, void *arg)
{
    (void)signum;
    (void)arg;
}
static void noop_fd(int fd, void *arg)
{
    (void)fd;
    (void)arg;
}
static void noop_child(pid_t pid, int rc, void *arg)
{
    (void)pid;
    (void)rc;
    (void)arg;
}

static void assert_no_children(void)
{
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* ------------------------------------------------------------------ */
/* evpol_strerror                                                      */
/* ------------------------------------------------------------------ */

static void test_strerror(void **state)
{
    (void)state;
    const int codes[] = {EVPOL_OK, EVPOL_ERUNTIME, EVPOL_ETYPE, EVPOL_EINVAL,
                         EVPOL_ENOMEM, EVPOL_ESYSTEM, EVPOL_ENOTSUP};
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = evpol_strerror(codes[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, evpol_strerror(codes[j]));
    }
    const int unknown[] = {1, 42, -7, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = evpol_strerror(unknown[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        for (size_t j = 1; j < n; j++)
            assert_string_not_equal(s, evpol_strerror(codes[j]));
    }
}

/* ------------------------------------------------------------------ */
/* Loops                                                               */
/* ------------------------------------------------------------------ */

static void test_loop_functions_bad_input(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_loop *loop = NULL, *closed = NULL, *out = NULL;
    evpol_policy *policy = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &closed, NULL));
    assert_ok(evpol_loop_close(closed, NULL));
    assert_ok(evpol_policy_new_default(&policy, NULL));
    evpol_loop *const not_loops[] = {FAKE_LOOP(zeroed_object), FAKE_LOOP(random_object),
                                     (evpol_loop *)(void *)policy};

    /* Construction. */
    EXPECT(evpol_loop_new(EVPOL_BACKEND_DEFAULT, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_new((evpol_backend)99, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_new((evpol_backend)-1, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_new_from_base(NULL, &out, E), EVPOL_EINVAL);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    EXPECT(evpol_loop_new_from_base(base, NULL, E), EVPOL_EINVAL);
    event_base_free(base);

    /* Reference counting and type checks never crash. */
    assert_null(evpol_loop_ref(NULL));
    evpol_loop_unref(NULL);
    evpol_loop_unref(FAKE_LOOP(zeroed_object));
    evpol_loop_unref((evpol_loop *)(void *)policy);
    assert_false(evpol_is_loop(NULL));
    assert_true(evpol_is_loop(loop));
    for (size_t i = 0; i < 3; i++) {
        assert_false(evpol_is_loop(not_loops[i]));
        assert_null(evpol_loop_base(not_loops[i]));
    }
    assert_null(evpol_loop_base(NULL));
    assert_null(evpol_loop_base(closed));
    assert_non_null(evpol_loop_base(loop));

    /* NULL loop. */
    EXPECT(evpol_loop_run(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_stop(NULL, E), EVPOL_EINVAL);
    assert_int_equal(evpol_loop_is_running(NULL), EVPOL_EINVAL);
    assert_int_equal(evpol_loop_is_closed(NULL), EVPOL_EINVAL);
    EXPECT(evpol_loop_close(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_call_soon_threadsafe(NULL, noop_cb, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_call_later(NULL, 1, noop_cb, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_add_signal_handler(NULL, SIGUSR1, noop_signal, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_remove_signal_handler(NULL, SIGUSR1, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_add_reader(NULL, 0, noop_fd, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_remove_reader(NULL, 0, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_set_debug(NULL, true, E), EVPOL_EINVAL);
    assert_true(evpol_loop_get_debug(NULL) < 0);

    /* Objects that are not loops. */
    for (size_t i = 0; i < 3; i++) {
        evpol_loop *bad = not_loops[i];
        EXPECT_BADOBJ(evpol_loop_run(bad, E));
        EXPECT_BADOBJ(evpol_loop_stop(bad, E));
        assert_int_equal(evpol_loop_is_running(bad), EVPOL_EINVAL);
        assert_int_equal(evpol_loop_is_closed(bad), EVPOL_EINVAL);
        EXPECT_BADOBJ(evpol_loop_close(bad, E));
        EXPECT_BADOBJ(evpol_loop_call_soon_threadsafe(bad, noop_cb, NULL, E));
        EXPECT_BADOBJ(evpol_loop_call_later(bad, 1, noop_cb, NULL, E));
        EXPECT_BADOBJ(evpol_loop_add_signal_handler(bad, SIGUSR1, noop_signal, NULL, E));
        EXPECT_BADOBJ(evpol_loop_remove_signal_handler(bad, SIGUSR1, E));
        EXPECT_BADOBJ(evpol_loop_add_reader(bad, 0, noop_fd, NULL, E));
        EXPECT_BADOBJ(evpol_loop_remove_reader(bad, 0, E));
        EXPECT_BADOBJ(evpol_loop_set_debug(bad, true, E));
        assert_true(evpol_loop_get_debug(bad) < 0);
    }
    assert_int_equal(zeroed_object.tag, 0);

    /* Out-of-range arguments on a good loop. */
    EXPECT(evpol_loop_call_soon_threadsafe(loop, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_call_later(loop, 1, NULL, NULL, E), EVPOL_EINVAL);
    /* SIGKILL and SIGSTOP cannot be caught: a handler for them is refused too. */
    const int bad_signals[] = {0, -1, -SIGUSR1, NSIG, 100000, INT_MAX, INT_MIN, SIGKILL, SIGSTOP};
    for (size_t i = 0; i < sizeof bad_signals / sizeof bad_signals[0]; i++) {
        EXPECT(evpol_loop_add_signal_handler(loop, bad_signals[i], noop_signal, NULL, E),
               EVPOL_EINVAL);
        EXPECT(evpol_loop_remove_signal_handler(loop, bad_signals[i], E), EVPOL_EINVAL);
    }
    EXPECT(evpol_loop_add_signal_handler(loop, SIGUSR1, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_add_reader(loop, -1, noop_fd, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_add_reader(loop, INT_MIN, noop_fd, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_add_reader(loop, 0, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_loop_remove_reader(loop, -1, E), EVPOL_EINVAL);
    EXPECT(evpol_get_running_loop(&out, E), EVPOL_ERUNTIME);
    {
        evpol_error err = {0};
        int rc = evpol_get_running_loop(NULL, &err);
        check_code("evpol_get_running_loop(NULL)", rc, &err, EVPOL_EINVAL, EVPOL_ERUNTIME);
    }

    /* A closed loop. */
    assert_int_equal(evpol_loop_is_closed(closed), 1);
    assert_int_equal(evpol_loop_is_running(closed), 0);
    assert_int_equal(evpol_loop_close(closed, NULL), 0);
    EXPECT(evpol_loop_run(closed, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_stop(closed, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_call_soon_threadsafe(closed, noop_cb, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_call_later(closed, 1, noop_cb, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_add_signal_handler(closed, SIGUSR1, noop_signal, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_remove_signal_handler(closed, SIGUSR1, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_add_reader(closed, 0, noop_fd, NULL, E), EVPOL_ERUNTIME);
    {
        /* Undocumented for a closed loop: "none registered" or an error. */
        evpol_error err = {0};
        int rc = evpol_loop_remove_reader(closed, 0, &err);
        if (rc != 0)
            check_code("remove_reader(closed)", rc, &err, EVPOL_ERUNTIME, EVPOL_ERUNTIME);
    }
    {
        evpol_error err = {0};
        int rc = evpol_loop_set_debug(closed, true, &err);
        if (rc != 0)
            check_code("set_debug(closed)", rc, &err, EVPOL_ERUNTIME, EVPOL_ERUNTIME);
        int d = evpol_loop_get_debug(closed);
        assert_true(d == 0 || d == 1 || d == EVPOL_ERUNTIME);
    }

    evpol_policy_unref(policy);
    evpol_loop_unref(closed);
    evpol_loop_unref(loop);
    assert_no_leaks(before);
}

/* ------------------------------------------------------------------ */
/* Watchers                                                            */
/* ------------------------------------------------------------------ */

typedef struct stub_watcher {
    atomic_int adds, closes, destroys;
} stub_watcher;

static int stub_add(void *self, evpol_loop *loop, pid_t pid, evpol_child_fn cb, void *arg,
                    evpol_error *err)
{
    (void)loop;
    (void)pid;
    (void)cb;
    (void)arg;
    (void)err;
    atomic_fetch_add(&((stub_watcher *)self)->adds, 1);
    return 0;
}
static int stub_close(void *self, evpol_error *err)
{
    (void)err;
    atomic_fetch_add(&((stub_watcher *)self)->closes, 1);
    return 0;
}
static void stub_destroy(void *self)
{
    atomic_fetch_add(&((stub_watcher *)self)->destroys, 1);
}

static const evpol_watcher_methods stub_methods = {
    .size = sizeof(evpol_watcher_methods),
    .add_child_handler = stub_add,
    .remove_child_handler = nop_watcher_remove,
    .attach_loop = nop_watcher_attach,
    .is_active = watcher_always_active,
    .close = stub_close,
    .enter = nop_watcher_call,
    .exit = nop_watcher_call,
    .destroy = stub_destroy,
};

/* Inputs that are bad for every watcher, open or closed. */
static void check_watcher_bad_args(evpol_watcher *w, evpol_loop *loop, evpol_loop *closed_loop)
{
    const pid_t bad_pids[] = {0, -1, -2, INT_MIN};
    for (size_t i = 0; i < sizeof bad_pids / sizeof bad_pids[0]; i++) {
        EXPECT(evpol_watcher_add_child_handler(w, bad_pids[i], noop_child, NULL, E), EVPOL_EINVAL);
        EXPECT(evpol_watcher_add_child_handler_on(w, loop, bad_pids[i], noop_child, NULL, E),
               EVPOL_EINVAL);
        EXPECT(evpol_watcher_remove_child_handler(w, bad_pids[i], E), EVPOL_EINVAL);
    }
    EXPECT(evpol_watcher_add_child_handler(w, 12345, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_add_child_handler_on(w, loop, 12345, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_add_child_handler_on(w, FAKE_LOOP(zeroed_object), 12345, noop_child, NULL,
                                              E),
           EVPOL_ETYPE);
    EXPECT(evpol_watcher_add_child_handler_on(w, (evpol_loop *)(void *)w, 12345, noop_child, NULL,
                                              E),
           EVPOL_ETYPE);
    EXPECT(evpol_watcher_add_child_handler_on(w, closed_loop, 12345, noop_child, NULL, E),
           EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_attach_loop(w, FAKE_LOOP(random_object), E), EVPOL_ETYPE);
    EXPECT(evpol_watcher_attach_loop(w, (evpol_loop *)(void *)w, E), EVPOL_ETYPE);
}

static void check_closed_watcher(evpol_watcher *w, int kind, evpol_loop *loop)
{
    EXPECT(evpol_watcher_add_child_handler(w, 12345, noop_child, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_add_child_handler_on(w, loop, 12345, noop_child, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_remove_child_handler(w, 12345, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_attach_loop(w, loop, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_attach_loop(w, NULL, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_enter(w, E), EVPOL_ERUNTIME);
    EXPECT(evpol_watcher_exit(w, E), EVPOL_ERUNTIME);
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_true(evpol_is_watcher(w));
    assert_int_equal(evpol_watcher_kind_of(w), kind);
    assert_non_null(evpol_watcher_name(w));
}

static void test_watcher_functions_bad_input(void **state)
{
    (void)state;
    reset_policy();
    resource_snapshot before = resources_now();
    evpol_loop *loop = NULL, *closed_loop = NULL;
    evpol_policy *policy = NULL;
    evpol_watcher *out = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &closed_loop, NULL));
    assert_ok(evpol_loop_close(closed_loop, NULL));
    assert_ok(evpol_policy_new_default(&policy, NULL));
    evpol_watcher *const not_watchers[] = {FAKE_WATCHER(zeroed_object), FAKE_WATCHER(random_object),
                                           (evpol_watcher *)(void *)loop,
                                           (evpol_watcher *)(void *)policy};

    /* Construction. */
    EXPECT(evpol_watcher_new(EVPOL_WATCHER_THREADED, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_new((evpol_watcher_kind)0, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_new((evpol_watcher_kind)99, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_new((evpol_watcher_kind)-1, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_new(EVPOL_WATCHER_CUSTOM, &out, E), EVPOL_EINVAL);

    stub_watcher sw = {0};
    EXPECT(evpol_watcher_new_custom(NULL, &sw, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_new_custom(&stub_methods, &sw, NULL, E), EVPOL_EINVAL);
    for (int missing = 0; missing < 9; missing++) {
        evpol_watcher_methods m = stub_methods;
        switch (missing) {
        case 0: m.add_child_handler = NULL; break;
        case 1: m.remove_child_handler = NULL; break;
        case 2: m.attach_loop = NULL; break;
        case 3: m.is_active = NULL; break;
        case 4: m.close = NULL; break;
        case 5: m.enter = NULL; break;
        case 6: m.exit = NULL; break;
        case 7: m.destroy = NULL; break;
        case 8: m.size = sizeof m + 16; break;
        }
        EXPECT(evpol_watcher_new_custom(&m, &sw, &out, E), EVPOL_ETYPE);
    }
    assert_int_equal(atomic_load(&sw.destroys), 0);

    /* NULL and objects that are not watchers. */
    assert_null(evpol_watcher_ref(NULL));
    evpol_watcher_unref(NULL);
    evpol_watcher_unref(FAKE_WATCHER(zeroed_object));
    evpol_watcher_unref((evpol_watcher *)(void *)loop);
    assert_false(evpol_is_watcher(NULL));
    assert_true(evpol_watcher_kind_of(NULL) < 0);
    assert_non_null(evpol_watcher_name(NULL));
    assert_null(evpol_watcher_user_data(NULL));
    assert_int_equal(evpol_watcher_is_active(NULL), EVPOL_EINVAL);
    EXPECT(evpol_watcher_add_child_handler(NULL, 12345, noop_child, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_add_child_handler_on(NULL, loop, 12345, noop_child, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_remove_child_handler(NULL, 12345, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_attach_loop(NULL, loop, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_close(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_enter(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_watcher_exit(NULL, E), EVPOL_EINVAL);
    for (size_t i = 0; i < sizeof not_watchers / sizeof not_watchers[0]; i++) {
        evpol_watcher *bad = not_watchers[i];
        assert_false(evpol_is_watcher(bad));
        assert_true(evpol_watcher_kind_of(bad) < 0);
        assert_non_null(evpol_watcher_name(bad));
        assert_null(evpol_watcher_user_data(bad));
        assert_int_equal(evpol_watcher_is_active(bad), EVPOL_EINVAL);
        EXPECT_BADOBJ(evpol_watcher_add_child_handler(bad, 12345, noop_child, NULL, E));
        EXPECT_BADOBJ(evpol_watcher_add_child_handler_on(bad, loop, 12345, noop_child, NULL, E));
        EXPECT_BADOBJ(evpol_watcher_remove_child_handler(bad, 12345, E));
        EXPECT_BADOBJ(evpol_watcher_attach_loop(bad, loop, E));
        EXPECT_BADOBJ(evpol_watcher_close(bad, E));
        EXPECT_BADOBJ(evpol_watcher_enter(bad, E));
        EXPECT_BADOBJ(evpol_watcher_exit(bad, E));
    }
    assert_int_equal(evpol_loop_is_closed(loop), 0);

    /* Every built-in kind, open then closed. */
    const evpol_watcher_kind kinds[] = {EVPOL_WATCHER_THREADED, EVPOL_WATCHER_MULTILOOP,
                                        EVPOL_WATCHER_SAFE,     EVPOL_WATCHER_FAST,
                                        EVPOL_WATCHER_PIDFD,    EVPOL_WATCHER_AUTO};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        evpol_watcher *w = NULL;
        evpol_error err = {0};
        int rc = evpol_watcher_new(kinds[i], &w, &err);
        if (kinds[i] == EVPOL_WATCHER_PIDFD && !have_pidfd()) {
            check_code("new(PIDFD)", rc, &err, EVPOL_ENOTSUP, EVPOL_ENOTSUP);
            continue;
        }
        if (rc != 0)
            fail_msg("evpol_watcher_new(%d): %s", (int)kinds[i], err.message);
        int kind = evpol_watcher_kind_of(w);
        if (kinds[i] == EVPOL_WATCHER_AUTO)
            assert_int_equal(kind, have_pidfd() ? EVPOL_WATCHER_PIDFD : EVPOL_WATCHER_THREADED);
        else
            assert_int_equal(kind, (int)kinds[i]);
        assert_true(evpol_is_watcher(w));
        assert_non_null(evpol_watcher_name(w));
        assert_null(evpol_watcher_user_data(w));
        check_watcher_bad_args(w, loop, closed_loop);
        /* No running loop in this thread: the watchers that deliver to the
         * registering thread's loop refuse; Fast refuses outside a spawn
         * context. (Safe would register a pid, so it is not tried.) */
        if (kind == EVPOL_WATCHER_THREADED || kind == EVPOL_WATCHER_MULTILOOP ||
            kind == EVPOL_WATCHER_PIDFD || kind == EVPOL_WATCHER_FAST)
            EXPECT(evpol_watcher_add_child_handler(w, 12345, noop_child, NULL, E), EVPOL_ERUNTIME);
        assert_ok(evpol_watcher_close(w, NULL));
        check_closed_watcher(w, kind, loop);
        evpol_watcher_unref(w);
    }

    /* A custom watcher: evpol validates before calling its methods. */
    evpol_watcher *cw = NULL;
    assert_ok(evpol_watcher_new_custom(&stub_methods, &sw, &cw, NULL));
    assert_ptr_equal(evpol_watcher_user_data(cw), &sw);
    assert_int_equal(evpol_watcher_kind_of(cw), EVPOL_WATCHER_CUSTOM);
    check_watcher_bad_args(cw, loop, closed_loop);
    assert_int_equal(atomic_load(&sw.adds), 0);
    assert_ok(evpol_watcher_close(cw, NULL));
    assert_int_equal(atomic_load(&sw.closes), 1);
    check_closed_watcher(cw, EVPOL_WATCHER_CUSTOM, loop);
    assert_int_equal(atomic_load(&sw.closes), 1);
    assert_int_equal(atomic_load(&sw.adds), 0);
    evpol_watcher_unref(cw);
    assert_int_equal(atomic_load(&sw.destroys), 1);

    evpol_policy_unref(policy);
    evpol_loop_unref(loop);
    evpol_loop_unref(closed_loop);
    assert_no_leaks(before);
    reset_policy();
}

/* "Contexts nest and count. Errors: ERUNTIME (closed, exit without
 * enter)": for every built-in watcher, whether or not its context does
 * anything. */
static void test_watcher_exit_without_enter(void **state)
{
    (void)state;
    const evpol_watcher_kind kinds[] = {EVPOL_WATCHER_THREADED, EVPOL_WATCHER_MULTILOOP,
                                        EVPOL_WATCHER_SAFE, EVPOL_WATCHER_FAST,
                                        EVPOL_WATCHER_PIDFD};
    char failures[512] = "";
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        evpol_watcher *w = NULL;
        if (kinds[i] == EVPOL_WATCHER_PIDFD && !have_pidfd())
            continue;
        assert_ok(evpol_watcher_new(kinds[i], &w, NULL));
        evpol_error err = {0};
        int rc_bare = evpol_watcher_exit(w, &err);
        /* Balanced, nested: fine; one exit too many: an error. */
        int rc_e1 = evpol_watcher_enter(w, NULL);
        int rc_e2 = evpol_watcher_enter(w, NULL);
        int rc_x1 = evpol_watcher_exit(w, NULL);
        int rc_x2 = evpol_watcher_exit(w, NULL);
        evpol_error err2 = {0};
        int rc_x3 = evpol_watcher_exit(w, &err2);
        if (rc_bare != EVPOL_ERUNTIME || err.message[0] == '\0' || rc_e1 || rc_e2 || rc_x1 ||
            rc_x2 || rc_x3 != EVPOL_ERUNTIME || err2.message[0] == '\0') {
            size_t len = strlen(failures);
            snprintf(failures + len, sizeof failures - len,
                     " %s(exit=%d enter=%d,%d exit=%d,%d extra exit=%d)", evpol_watcher_name(w),
                     rc_bare, rc_e1, rc_e2, rc_x1, rc_x2, rc_x3);
        }
        evpol_watcher_unref(w);
    }
    if (failures[0])
        fail_msg("exit without enter must be ERUNTIME:%s", failures);
}

/* Contexts count under threads: each exit takes exactly one context,
 * however enters and exits of other threads interleave with it, so after
 * every thread has balanced its own, one more exit is an error. */
/* Enough rounds that the threads' compare-and-swaps on the count collide
 * many times: an exit that loses or doubles its decrement under contention
 * (the count's retry loop inverted) failed this in 2 of 5 runs with
 * 200,000 rounds, in 8 of 8 with 2,000,000 (0.3 s on two idle cores). */
enum { CONTEXT_THREADS = 2, CONTEXT_ROUNDS = 2000000 };

typedef struct context_worker {
    evpol_watcher *w;
    pthread_barrier_t *start; /* all threads go at once, so their rounds overlap */
    int failed;               /* enters or exits that did not return 0 */
} context_worker;

static void *enter_exit_rounds(void *arg)
{
    context_worker *cw = arg;
    pthread_barrier_wait(cw->start);
    for (int i = 0; i < CONTEXT_ROUNDS; i++) {
        if (evpol_watcher_enter(cw->w, NULL) != 0)
            cw->failed++;
        if (evpol_watcher_exit(cw->w, NULL) != 0)
            cw->failed++;
    }
    return NULL;
}

static void test_watcher_contexts_count_across_threads(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_THREADED, &w, NULL));
    context_worker workers[CONTEXT_THREADS];
    pthread_t threads[CONTEXT_THREADS];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, CONTEXT_THREADS), 0);
    for (int i = 0; i < CONTEXT_THREADS; i++) {
        workers[i] = (context_worker){.w = w, .start = &start};
        assert_int_equal(pthread_create(&threads[i], NULL, enter_exit_rounds, &workers[i]), 0);
    }
    for (int i = 0; i < CONTEXT_THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(workers[i].failed, 0);
    }
    pthread_barrier_destroy(&start);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_exit(w, &err), EVPOL_ERUNTIME);
    assert_true(err.message[0] != '\0');
    evpol_watcher_unref(w);
    assert_no_leaks(before);
}

/* ------------------------------------------------------------------ */
/* Policies                                                            */
/* ------------------------------------------------------------------ */

static void test_policy_functions_bad_input(void **state)
{
    (void)state;
    reset_policy();
    evpol_policy *p = NULL, *abstract = NULL, *out = NULL, *cur = NULL;
    evpol_loop *loop = NULL, *lout = NULL;
    evpol_watcher *wout = NULL, *w = NULL;
    stub_watcher sw = {0};
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new_custom(&stub_methods, &sw, &w, NULL));
    const evpol_policy_methods abs_m = {.size = sizeof abs_m,
                                        .get_event_loop = stub_policy_get_loop,
                                        .set_event_loop = stub_policy_set_loop,
                                        .new_event_loop = stub_policy_new_loop};
    assert_ok(evpol_policy_new_abstract(&abs_m, NULL, &abstract, NULL));
    assert_ok(evpol_set_event_loop_policy(p, NULL));

    /* Construction. */
    EXPECT(evpol_policy_new_default(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_backend(EVPOL_BACKEND_DEFAULT, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_backend((evpol_backend)99, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_backend((evpol_backend)-3, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_watcher_kind(EVPOL_WATCHER_THREADED, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_watcher_kind((evpol_watcher_kind)99, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_watcher_kind((evpol_watcher_kind)0, &out, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_with_watcher_kind(EVPOL_WATCHER_CUSTOM, &out, E), EVPOL_EINVAL);
    evpol_policy_methods m = {.size = sizeof m};
    EXPECT(evpol_policy_new_custom(&m, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT2(evpol_policy_new_custom(NULL, NULL, &out, E), EVPOL_EINVAL, EVPOL_ETYPE);
    m.size = 3;
    EXPECT(evpol_policy_new_custom(&m, NULL, &out, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_new_abstract(&abs_m, NULL, NULL, E), EVPOL_EINVAL);
    EXPECT2(evpol_policy_new_abstract(NULL, NULL, &out, E), EVPOL_EINVAL, EVPOL_ETYPE);
    evpol_policy_methods partial = abs_m;
    partial.new_event_loop = NULL;
    EXPECT(evpol_policy_new_abstract(&partial, NULL, &out, E), EVPOL_ETYPE);

    /* Reference counting and type checks. */
    assert_null(evpol_policy_ref(NULL));
    evpol_policy_unref(NULL);
    evpol_policy_unref(FAKE_POLICY(zeroed_object));
    evpol_policy_unref((evpol_policy *)(void *)loop);
    assert_false(evpol_is_policy(NULL));
    assert_false(evpol_is_policy(loop));
    assert_false(evpol_is_policy(w));
    assert_false(evpol_is_policy(&zeroed_object));
    assert_false(evpol_is_policy(&random_object));
    assert_true(evpol_is_policy(p));
    assert_null(evpol_policy_user_data(NULL));
    assert_null(evpol_policy_user_data(FAKE_POLICY(random_object)));

    /* Method dispatch on NULL and non-policies. */
    evpol_policy *const not_policies[] = {NULL, FAKE_POLICY(zeroed_object), FAKE_POLICY(random_object),
                                          (evpol_policy *)(void *)loop, (evpol_policy *)(void *)w};
    for (size_t i = 0; i < sizeof not_policies / sizeof not_policies[0]; i++) {
        evpol_policy *bad = not_policies[i];
        EXPECT_BADOBJ(evpol_policy_get_event_loop(bad, &lout, E));
        EXPECT_BADOBJ(evpol_policy_set_event_loop(bad, loop, E));
        EXPECT_BADOBJ(evpol_policy_new_event_loop(bad, &lout, E));
        EXPECT_BADOBJ(evpol_policy_get_child_watcher(bad, &wout, E));
        EXPECT_BADOBJ(evpol_policy_set_child_watcher(bad, w, E));
        EXPECT_BADOBJ(evpol_policy_default_get_event_loop(bad, &lout, E));
        EXPECT_BADOBJ(evpol_policy_default_set_event_loop(bad, loop, E));
        EXPECT_BADOBJ(evpol_policy_default_new_event_loop(bad, &lout, E));
        EXPECT_BADOBJ(evpol_policy_default_get_child_watcher(bad, &wout, E));
        EXPECT_BADOBJ(evpol_policy_default_set_child_watcher(bad, w, E));
        if (bad)
            EXPECT(evpol_set_event_loop_policy(bad, E), EVPOL_ETYPE);
    }
    assert_int_equal(atomic_load(&sw.closes), 0);

    /* NULL outputs. */
    EXPECT(evpol_policy_get_event_loop(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_new_event_loop(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_get_child_watcher(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_default_get_event_loop(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_default_new_event_loop(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_policy_default_get_child_watcher(p, NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_get_event_loop(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_new_event_loop(NULL, E), EVPOL_EINVAL);
    EXPECT(evpol_get_child_watcher(NULL, E), EVPOL_EINVAL);
    {
        evpol_error err = {0};
        int rc = evpol_get_event_loop_policy(NULL, &err);
        if (rc != 0)
            check_code("evpol_get_event_loop_policy(NULL)", rc, &err, EVPOL_EINVAL, EVPOL_EINVAL);
    }

    /* Wrong-type arguments. */
    evpol_loop *const not_loops[] = {FAKE_LOOP(zeroed_object), (evpol_loop *)(void *)p,
                                     (evpol_loop *)(void *)w};
    evpol_watcher *const not_watchers[] = {FAKE_WATCHER(random_object), (evpol_watcher *)(void *)p,
                                           (evpol_watcher *)(void *)loop};
    for (size_t i = 0; i < 3; i++) {
        EXPECT(evpol_policy_set_event_loop(p, not_loops[i], E), EVPOL_ETYPE);
        EXPECT(evpol_policy_default_set_event_loop(p, not_loops[i], E), EVPOL_ETYPE);
        EXPECT(evpol_set_event_loop(not_loops[i], E), EVPOL_ETYPE);
        EXPECT(evpol_policy_set_child_watcher(p, not_watchers[i], E), EVPOL_ETYPE);
        EXPECT(evpol_policy_default_set_child_watcher(p, not_watchers[i], E), EVPOL_ETYPE);
        EXPECT(evpol_set_child_watcher(not_watchers[i], E), EVPOL_ETYPE);
    }
    assert_ok(evpol_get_event_loop_policy(&cur, NULL));
    assert_ptr_equal(cur, p);

    /* An abstract policy: no "super", no watchers. */
    EXPECT(evpol_policy_default_get_event_loop(abstract, &lout, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_default_set_event_loop(abstract, loop, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_default_new_event_loop(abstract, &lout, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_default_get_child_watcher(abstract, &wout, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_default_set_child_watcher(abstract, w, E), EVPOL_ETYPE);
    EXPECT(evpol_policy_get_child_watcher(abstract, &wout, E), EVPOL_ENOTSUP);
    EXPECT(evpol_policy_set_child_watcher(abstract, w, E), EVPOL_ENOTSUP);
    assert_int_equal(atomic_load(&sw.closes), 0);

    evpol_watcher_unref(w);
    assert_int_equal(atomic_load(&sw.destroys), 1);
    evpol_policy_unref(abstract);
    evpol_policy_unref(p);
    evpol_loop_unref(loop);
    reset_policy();
}

/* ------------------------------------------------------------------ */
/* Spawn and the syscall seam                                          */
/* ------------------------------------------------------------------ */

static void test_spawn_bad_options(void **state)
{
    (void)state;
    reset_policy();
    resource_snapshot before = resources_now();
    evpol_loop *loop = NULL, *closed = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &closed, NULL));
    assert_ok(evpol_loop_close(closed, NULL));
    char *argv[] = {"true", NULL};
    char *no_argv0[] = {NULL};
    const evpol_spawn_options good = {.file = "true", .argv = argv, .on_exit = noop_child};
    evpol_spawn_result res;
    evpol_spawn_options o;

    EXPECT(evpol_loop_spawn(NULL, &good, &res, E), EVPOL_EINVAL);
    EXPECT_BADOBJ(evpol_loop_spawn(FAKE_LOOP(zeroed_object), &good, &res, E));
    EXPECT(evpol_loop_spawn(closed, &good, &res, E), EVPOL_ERUNTIME);
    EXPECT(evpol_loop_spawn(loop, NULL, &res, E), EVPOL_EINVAL);
    o = good;
    o.argv = NULL;
    EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
    o = good;
    o.argv = no_argv0;
    EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
    o = good;
    o.on_exit = NULL;
    EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
    o = good;
    o.file = NULL;
    EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
    for (int s = 0; s < 3; s++) {
        o = good;
        o.stdio[s] = (evpol_stdio)7;
        EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
        o.stdio[s] = (evpol_stdio)-1;
        EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_EINVAL);
    }
    assert_no_children();

    /* A program that cannot be executed: ESYSTEM with its errno. */
    o = good;
    o.file = "/nonexistent/evpol-no-such-program";
    {
        evpol_error err = {0};
        int rc = evpol_loop_spawn(loop, &o, &res, &err);
        check_code("spawn(nonexistent)", rc, &err, EVPOL_ESYSTEM, EVPOL_ESYSTEM);
        assert_int_equal(err.sys_errno, ENOENT);
    }
    assert_no_children();

    evpol_loop_unref(closed);
    evpol_loop_unref(loop);
    reset_policy();
    assert_no_leaks(before);
}

static void test_spawn_inactive_watcher(void **state)
{
    (void)state;
    reset_policy();
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    stub_watcher sw = {0};
    evpol_watcher_methods m = stub_methods;
    m.is_active = watcher_never_active;
    evpol_watcher *w = NULL;
    assert_ok(evpol_watcher_new_custom(&m, &sw, &w, NULL));
    log_capture cap;
    capture_start(&cap);
    assert_ok(evpol_set_child_watcher(w, NULL));
    capture_stop();
    char *argv[] = {"true", NULL};
    const evpol_spawn_options o = {.file = "true", .argv = argv, .on_exit = noop_child};
    evpol_spawn_result res;
    EXPECT(evpol_loop_spawn(loop, &o, &res, E), EVPOL_ERUNTIME);
    assert_int_equal(atomic_load(&sw.adds), 0);
    assert_no_children();
    evpol_watcher_unref(w);
    reset_policy();
    assert_int_equal(atomic_load(&sw.closes), 1);
    assert_int_equal(atomic_load(&sw.destroys), 1);
    evpol_loop_unref(loop);
}

static pid_t fake_waitpid(pid_t pid, int *status, int options)
{
    return waitpid(pid, status, options);
}

static void test_sys_set_bad_table(void **state)
{
    (void)state;
    const evpol_sys *real = evpol_sys_real();
    assert_non_null(real);
    assert_int_equal(real->size, sizeof(evpol_sys));
    assert_non_null(real->waitpid);
    assert_non_null(real->pidfd_open);
    assert_non_null(real->sigaction);
    assert_non_null(real->spawn);
    assert_non_null(real->kill);
    assert_non_null(real->thread_create);
    assert_non_null(real->close);
    assert_non_null(real->pipe2);
    assert_non_null(real->calloc);
    assert_non_null(real->free);

    evpol_sys t = *real;
    t.size = sizeof t - 1;
    EXPECT(evpol_sys_set(&t, E), EVPOL_ETYPE);
    t.size = sizeof t + 8;
    EXPECT(evpol_sys_set(&t, E), EVPOL_ETYPE);
    t.size = 0;
    EXPECT(evpol_sys_set(&t, E), EVPOL_ETYPE);
    for (int i = 0; i < 10; i++) {
        t = *real;
        switch (i) {
        case 0: t.waitpid = NULL; break;
        case 1: t.pidfd_open = NULL; break;
        case 2: t.sigaction = NULL; break;
        case 3: t.spawn = NULL; break;
        case 4: t.kill = NULL; break;
        case 5: t.thread_create = NULL; break;
        case 6: t.close = NULL; break;
        case 7: t.pipe2 = NULL; break;
        case 8: t.calloc = NULL; break;
        case 9: t.free = NULL; break;
        }
        EXPECT(evpol_sys_set(&t, E), EVPOL_ETYPE);
    }
    /* A complete table is accepted; NULL restores the real kernel. */
    t = *real;
    t.waitpid = fake_waitpid;
    assert_ok(evpol_sys_set(&t, NULL));
    assert_ptr_equal(evpol_sys_real(), real);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_ok(evpol_sys_set(real, NULL));
    assert_ok(evpol_sys_set(NULL, NULL));
}

/* ------------------------------------------------------------------ */
/* ERR-2: the log hook                                                  */
/* ------------------------------------------------------------------ */

typedef struct hook_record {
    atomic_int calls;
    evpol_log_level level;
    evpol_log_category category;
    char msg[512];
    void *arg_seen;
} hook_record;

static void record_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg)
{
    hook_record *r = arg;
    r->level = level;
    r->category = cat;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "(null)");
    r->arg_seen = arg;
    atomic_fetch_add(&r->calls, 1);
}

/* Emits exactly one deprecation warning (POL-10): a fresh default policy's
 * get_event_loop in the main thread. */
static void emit_deprecation(void)
{
    evpol_policy *p = NULL;
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));
    assert_ok(evpol_policy_get_event_loop(p, &loop, NULL));
    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    evpol_policy_unref(p);
}

/* Emits debug lines (LOOP-7): a loop with the debug flag, used once. */
static void stop_cb(void *arg)
{
    evpol_loop_stop(arg, NULL);
}
static void emit_debug(void)
{
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_loop_set_debug(loop, true, NULL));
    assert_ok(evpol_loop_call_soon_threadsafe(loop, stop_cb, loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    evpol_loop_unref(loop);
}

/* Run `fn` with stderr redirected into a buffer. */
static void capture_stderr(void (*fn)(void), char *buf, size_t size)
{
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fds[1], 2), 2);
    close(fds[1]);
    fn();
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    size_t have = 0;
    ssize_t n;
    while (have + 1 < size && (n = read(fds[0], buf + have, size - 1 - have)) > 0)
        have += (size_t)n;
    buf[have] = '\0';
    close(fds[0]);
}

static void test_log_hook(void **state)
{
    (void)state;
    hook_record a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    evpol_set_log_hook(record_hook, &a);
    emit_deprecation();
    assert_int_equal(atomic_load(&a.calls), 1);
    assert_int_equal(a.level, EVPOL_LOG_WARNING);
    assert_int_equal(a.category, EVPOL_LOG_CAT_DEPRECATION);
    assert_true(a.msg[0] != '\0');
    assert_ptr_equal(a.arg_seen, &a);

    /* Replacing: the old hook is never called again. */
    evpol_set_log_hook(record_hook, &b);
    emit_deprecation();
    assert_int_equal(atomic_load(&a.calls), 1);
    assert_int_equal(atomic_load(&b.calls), 1);
    assert_ptr_equal(b.arg_seen, &b);

    /* Debug lines carry their own level and category. */
    memset(&b, 0, sizeof b);
    emit_debug();
    assert_true(atomic_load(&b.calls) >= 1);
    assert_int_equal(b.level, EVPOL_LOG_DEBUG);
    assert_int_equal(b.category, EVPOL_LOG_CAT_DEBUG);
    assert_true(b.msg[0] != '\0');

    evpol_set_log_hook(NULL, NULL);
    char buf[1024];
    capture_stderr(emit_deprecation, buf, sizeof buf);
    assert_non_null(strstr(buf, "evpol: "));
    assert_int_equal(atomic_load(&a.calls), 1);
    assert_int_equal(atomic_load(&b.calls) >= 1, 1);
}

/* A hook running in this thread while a second thread replaces it. */
typedef struct swap_ctx {
    atomic_int in_hook;        /* the old hook is running */
    atomic_int setter_tid;     /* the replacing thread, once it starts */
    atomic_int replaced;       /* its evpol_set_log_hook has returned */
    atomic_int running_at_return; /* ... while the old hook was running */
    atomic_int setter_slept;   /* it was seen asleep (in the hook lock) */
    pthread_t setter;
    bool started;
} swap_ctx;

static void *replace_hook_thread(void *arg)
{
    swap_ctx *c = arg;
    atomic_store(&c->setter_tid, (int)syscall(SYS_gettid));
    evpol_set_log_hook(NULL, NULL);
    atomic_store(&c->running_at_return, atomic_load(&c->in_hook));
    atomic_store(&c->replaced, 1);
    return NULL;
}

/* Thread `tid` of this process is asleep in the kernel ('S'). Between
 * publishing its tid and returning from evpol_set_log_hook the replacing
 * thread sleeps only if it waits for the hook lock. */
static bool thread_asleep(int tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *end = strrchr(buf, ')'); /* the name may hold spaces */
    return end && end[1] == ' ' && end[2] == 'S';
}

static void blocking_hook(evpol_log_level level, evpol_log_category cat, const char *msg,
                          void *arg)
{
    (void)level;
    (void)cat;
    (void)msg;
    swap_ctx *c = arg;
    atomic_store(&c->in_hook, 1);
    if (c->started)
        return;
    c->started = true;
    c->setter = start_thread(replace_hook_thread, c);
    /* Stay in the hook until the replacing thread has returned (the bug)
     * or is asleep waiting for this hook to return. */
    for (int waited = 0; waited < TIMEOUT_MS && !atomic_load(&c->replaced); waited++) {
        int tid = atomic_load(&c->setter_tid);
        if (tid && thread_asleep(tid)) {
            atomic_store(&c->setter_slept, 1);
            break;
        }
        sleep_ms(1);
    }
    /* Joined by the test: the setter may still wait for this hook. */
    atomic_store(&c->in_hook, 0);
}

/* evpol.h: once evpol_set_log_hook returns, the old hook is not running.
 * A second thread replaces the hook while it runs here: its call returns
 * only after this hook has. */
static void test_log_hook_replaced_while_running(void **state)
{
    (void)state;
    swap_ctx c;
    atomic_init(&c.in_hook, 0);
    atomic_init(&c.setter_tid, 0);
    atomic_init(&c.replaced, 0);
    atomic_init(&c.running_at_return, 0);
    atomic_init(&c.setter_slept, 0);
    c.started = false;
    evpol_set_log_hook(blocking_hook, &c);
    emit_deprecation();
    assert_true(c.started);
    pthread_join(c.setter, NULL);
    assert_int_equal(atomic_load(&c.replaced), 1);
    assert_int_equal(atomic_load(&c.running_at_return), 0);
    assert_int_equal(atomic_load(&c.setter_slept), 1);
    /* The replacement took: the next line goes to stderr, not here. */
    char buf[1024];
    capture_stderr(emit_deprecation, buf, sizeof buf);
    assert_non_null(strstr(buf, "evpol: "));
}

static void test_default_hook_writes_stderr(void **state)
{
    (void)state;
    evpol_set_log_hook(NULL, NULL);
    char buf[4096];
    capture_stderr(emit_deprecation, buf, sizeof buf);
    /* "evpol: LEVEL: CATEGORY: message" */
    if (strncmp(buf, "evpol: ", 7) != 0)
        fail_msg("unexpected stderr output: '%s'", buf);
    if (!strcasestr(buf, "warning: deprecation: "))
        fail_msg("level/category missing: '%s'", buf);
    assert_non_null(strchr(buf, '\n'));
    assert_int_equal(strchr(buf, '\n')[1], '\0');

    /* A hook, then NULL: back to stderr. */
    hook_record r;
    memset(&r, 0, sizeof r);
    evpol_set_log_hook(record_hook, &r);
    capture_stderr(emit_deprecation, buf, sizeof buf);
    assert_string_equal(buf, "");
    assert_int_equal(atomic_load(&r.calls), 1);
    evpol_set_log_hook(NULL, NULL);
    capture_stderr(emit_deprecation, buf, sizeof buf);
    assert_true(strncmp(buf, "evpol: ", 7) == 0);
    assert_int_equal(atomic_load(&r.calls), 1);
}

static void test_log_level_filters(void **state)
{
    (void)state;
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);

    capture_start(cap);
    evpol_set_log_level(EVPOL_LOG_INFO);
    emit_debug();
    emit_deprecation();
    evpol_set_log_level(EVPOL_LOG_DEBUG);
    capture_stop();
    assert_int_equal(capture_count(cap, EVPOL_LOG_DEBUG, -1, NULL), 0);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);

    capture_start(cap);
    evpol_set_log_level(EVPOL_LOG_ERROR);
    emit_debug();
    emit_deprecation();
    evpol_set_log_level(EVPOL_LOG_DEBUG);
    capture_stop();
    assert_int_equal(cap->count, 0);

    /* Back at DEBUG everything passes again. */
    capture_start(cap);
    emit_debug();
    emit_deprecation();
    capture_stop();
    assert_true(capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, NULL) >= 1);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);

    /* Out-of-range levels never crash. */
    evpol_set_log_level((evpol_log_level)-5);
    evpol_set_log_level((evpol_log_level)99);
    evpol_set_log_level(EVPOL_LOG_DEBUG);
    free(cap);
}

/* ------------------------------------------------------------------ */
/* ERR-3: deprecations in their own category                           */
/* ------------------------------------------------------------------ */

static void test_deprecations_category(void **state)
{
    (void)state;
    reset_policy();
    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    stub_watcher sw = {0};
    evpol_watcher *w = NULL, *got = NULL;
    assert_ok(evpol_watcher_new_custom(&stub_methods, &sw, &w, NULL));
    evpol_policy *p = NULL;
    assert_ok(evpol_policy_new_default(&p, NULL));

    /* Each deprecated call, one at a time. */
    capture_start(cap);
    assert_ok(evpol_policy_set_child_watcher(p, w, NULL));
    capture_stop();
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
    assert_int_equal(cap->count, 1);

    capture_start(cap);
    assert_ok(evpol_policy_get_child_watcher(p, &got, NULL));
    capture_stop();
    assert_ptr_equal(got, w);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);
    assert_int_equal(cap->count, 1);

    capture_start(cap);
    evpol_loop *loop = NULL;
    assert_ok(evpol_policy_get_event_loop(p, &loop, NULL));
    capture_stop();
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 1);

    /* The top-level helpers, on the current policy. */
    assert_ok(evpol_set_event_loop_policy(p, NULL));
    capture_start(cap);
    assert_ok(evpol_get_child_watcher(&got, NULL));
    assert_ok(evpol_set_child_watcher(NULL, NULL));
    capture_stop();
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION, NULL), 2);
    assert_int_equal(capture_count(cap, -1, EVPOL_LOG_CAT_RUNTIME, NULL), 0);

    /* A program can drop them by category and keep the rest. */
    capture_start(cap);
    assert_ok(evpol_set_child_watcher(NULL, NULL));
    capture_stop();
    for (int i = 0; i < cap->count; i++)
        assert_int_equal(cap->lines[i].category, EVPOL_LOG_CAT_DEPRECATION);

    assert_ok(evpol_policy_set_event_loop(p, NULL, NULL));
    evpol_policy_unref(p);
    evpol_watcher_unref(w);
    reset_policy();
    assert_int_equal(atomic_load(&sw.destroys), 1);
    free(cap);
}

/* ---- the default output names every level and category it is given ---- */

static void flag_child(pid_t pid, int rc, void *arg)
{
    int *box = arg;
    box[1] = (int)pid;
    box[2] = rc;
    __atomic_store_n(&box[0], 1, __ATOMIC_SEQ_CST);
}

/* A runtime-category warning (CW-11): a Threaded registration for a child
 * this process already reaped, delivered on a loop we run. */
static int unknown_box[3];
static pid_t unknown_pid;
static void emit_runtime(void)
{
    evpol_loop *loop = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_THREADED, &w, NULL));
    unknown_pid = fork_exit(0);
    int status;
    assert_int_equal(waitpid(unknown_pid, &status, 0), unknown_pid);
    memset(unknown_box, 0, sizeof unknown_box);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, unknown_pid, flag_child, unknown_box,
                                                 NULL));
    assert_true(run_until(loop, &unknown_box[0], TIMEOUT_MS));
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
}

/* A resource-category warning (CW-8): closing a Threaded watcher with a
 * child still pending. */
static int pending_fd = -1;
static void emit_resource(void)
{
    evpol_loop *loop = NULL;
    evpol_watcher *w = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_watcher_new(EVPOL_WATCHER_THREADED, &w, NULL));
    pid_t pid = spawn_waiting_child(&pending_fd, 0, 0);
    assert_ok(evpol_watcher_add_child_handler_on(w, loop, pid, noop_child, NULL, NULL));
    assert_ok(evpol_watcher_close(w, NULL));
    /* Released here: the child holds the capture pipe as its stderr. The
     * closed watcher's thread still reaps it once it exits. */
    release_child(pending_fd);
    evpol_watcher_unref(w);
    evpol_loop_unref(loop);
}

static void test_default_output_names_levels_and_categories(void **state)
{
    (void)state;
    /* TSan's helper thread is already started (harness_run_tests). */
    resource_snapshot before = resources_now();
    evpol_set_log_hook(NULL, NULL);
    char buf[8192];

    /* debug level, debug category (LOOP-7 lines of a loop with its flag). */
    capture_stderr(emit_debug, buf, sizeof buf);
    if (strncmp(buf, "evpol: debug: debug: ", 21) != 0 || !strstr(buf, "\nevpol: debug: debug: loop ") ||
        !strstr(buf, " running\n"))
        fail_msg("debug line: '%s'", buf);

    /* warning level, runtime category: CW-11's exact text. */
    capture_stderr(emit_runtime, buf, sizeof buf);
    assert_int_equal(unknown_box[1], unknown_pid);
    assert_int_equal(unknown_box[2], 255);
    char want[160];
    snprintf(want, sizeof want,
             "evpol: warning: runtime: Unknown child process pid %ld, will report returncode 255\n",
             (long)unknown_pid);
    assert_string_equal(buf, want);

    /* warning level, resource category: the pending child at close. */
    capture_stderr(emit_resource, buf, sizeof buf);
    if (strncmp(buf, "evpol: warning: resource: ThreadedChildWatcher ", 47) != 0 ||
        !strstr(buf, " has registered but not finished child processes (1 pending)\n"))
        fail_msg("resource line: '%s'", buf);
    assert_no_leaks(before);
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_strerror, "ERR-1"),
        CLAUSE_TEST(test_loop_functions_bad_input, "ERR-1"),
        CLAUSE_TEST(test_watcher_functions_bad_input, "ERR-1"),
        CLAUSE_TEST(test_watcher_exit_without_enter, "ERR-1 CW-9"),
        CLAUSE_TEST(test_watcher_contexts_count_across_threads, "ERR-1 CW-9"),
        CLAUSE_TEST(test_policy_functions_bad_input, "ERR-1 POL-5 POL-12 POL-15"),
        CLAUSE_TEST(test_spawn_bad_options, "ERR-1 SUB-4"),
        CLAUSE_TEST(test_spawn_inactive_watcher, "ERR-1 SUB-2 CW-7"),
        CLAUSE_TEST(test_sys_set_bad_table, "ERR-1"),
        CLAUSE_TEST(test_log_hook, "ERR-2"),
        CLAUSE_TEST(test_default_hook_writes_stderr, "ERR-2"),
        CLAUSE_TEST(test_log_hook_replaced_while_running, "ERR-2"),
        CLAUSE_TEST(test_log_level_filters, "ERR-2 LOOP-7"),
        CLAUSE_TEST(test_deprecations_category, "ERR-3"),
        CLAUSE_TEST(test_default_output_names_levels_and_categories, "ERR-2 LOOP-7 CW-11 CW-8"),
    };
    return harness_run_group("errors", tests, NULL, NULL);
}
