/*
 * test_sys_oom.c — evpol_sys_set when the C library's calloc fails (ERR-1).
 *
 * evpol_sys_set keeps a copy of every table it installs, in memory from the
 * C library's calloc (the seam cannot allocate the seam), under a lock that
 * every later evpol_sys_set takes. When that calloc fails, the call must
 * report it and leave both the lock and the seam in effect as they were.
 *
 * No seam reaches that calloc, so this program defines calloc itself: the
 * executable's definition interposes on the C library's for the whole
 * process (as harness.c does for evpol_sys_set), and fails exactly one call
 * on request. Nothing else runs while the request is armed: the program
 * has no other thread, and the harness's own evpol_sys_set wrapper has
 * already looked up the library's (its dlsym is done by the constructor).
 */
#include "harness.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_int fail_next_calloc;

/* Called through a volatile pointer: the compiler turns malloc followed by
 * memset to zero into calloc, which here would call itself. */
static void *(*volatile zero_fill)(void *, int, size_t) = memset;

/* Not instrumented by TSan: its runtime calls calloc (through glibc's
 * pthread_getattr_np) while it starts a thread, before that thread has the
 * state an instrumented function's entry hook needs (the harness starts one
 * before the first test, warm_up_threads). */
__attribute__((no_sanitize_thread)) void *calloc(size_t n, size_t size)
{
    if (atomic_exchange(&fail_next_calloc, 0)) {
        errno = ENOMEM;
        return NULL;
    }
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = malloc(n * size);
    if (p)
        zero_fill(p, 0, n * size);
    return p;
}

/* A table evpol has not seen yet (its waitpid differs from the real one's),
 * so that installing it needs a new copy. */
static pid_t marked_waitpid(pid_t pid, int *status, int options)
{
    return evpol_sys_real()->waitpid(pid, status, options);
}

static void test_sys_set_when_calloc_fails(void **state)
{
    (void)state;
    evpol_sys t = *evpol_sys_real();
    t.waitpid = marked_waitpid;
    evpol_error err = {0};

    atomic_store(&fail_next_calloc, 1);
    int rc = evpol_sys_set(&t, &err);
    /* The failure went to evpol_sys_set's calloc, not to someone else's. */
    assert_int_equal(atomic_load(&fail_next_calloc), 0);
    check_error(rc, &err, EVPOL_ENOMEM);
    assert_non_null(strstr(err.message, "out of memory"));

    /* The lock was given back: the same table installs now (a lock left
     * held makes this call wait forever). */
    memset(&err, 0, sizeof err);
    assert_int_equal(evpol_sys_set(&t, &err), 0);
    assert_int_equal(err.code, 0);
    assert_ok(evpol_sys_set(NULL, NULL));
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_sys_set_when_calloc_fails, "ERR-1"),
    };
    return harness_run_group("sys_oom", tests, NULL, NULL);
}
