/*
 * cmocka-select.c — an LD_PRELOAD shim for the coverage runs (make coverage).
 *
 * 1. Run one test of a cmocka program, or list its tests, without touching
 *    the program. Per-test coverage needs each test in a process of its own
 *    (gcov counts per process), and cmocka 1.1.5 has a test filter only as a
 *    function, cmocka_set_test_filter(), which no conformance program calls.
 *    The shim interposes _cmocka_run_group_tests (what
 *    cmocka_run_group_tests_name expands to) and reads the environment:
 *
 *      EVPOL_TEST_LIST=FILE     appends "GROUP<TAB>TEST NAME" for every test
 *                               to FILE and ends the process at once
 *                               (_exit(0) of libc: no test runs, no exit
 *                               handler, no gcov dump);
 *      EVPOL_TEST_FILTER=NAME   runs only the tests whose name matches NAME
 *                               (cmocka's glob: '*' and '?'; test names use
 *                               neither, so a full name selects one test);
 *      EVPOL_TEST_NAMES=LIST    runs only the tests named in LIST, full names
 *                               one a line, in one process (make mutation
 *                               runs the few tests that reach a mutant: one
 *                               process per program instead of one per
 *                               test). A group none of whose tests is named
 *                               runs nothing, not even its setup.
 *
 *    Without any of these variables it changes nothing.
 *
 * 2. Count what forked children execute. gcov writes its counters from an
 *    exit handler, and a forked child that ends with _exit() (the harness's
 *    children, the fork checks of POL-21) runs none: the code it executed
 *    after fork, such as the library's pthread_atfork child handler, would
 *    look never run. The shim's _exit and _Exit write the counters first
 *    (__gcov_dump, from the shim's own copy of libgcov, walks the list of
 *    every instrumented object of the process through the shared
 *    __gcov_master; in a process without instrumented code it finds
 *    nothing to write).
 *
 *    That is only sound if the child starts from zero. A child inherits its
 *    parent's counters, including those of functions other threads were in
 *    the middle of at fork time: entered, never finished. Written out, such
 *    half-runs make gcov's arc solver credit arcs that never ran (an "out of
 *    memory" branch of pidfd_add, seen in test_stress). GCC resets a child's
 *    counters only when the call site was compiled as a GNU dialect (it then
 *    rewrites fork() into __gcov_fork); under -std=c11 it does not. So the
 *    shim resets them itself, from a fork child handler registered before
 *    any other: it interposes __register_atfork (what pthread_atfork calls)
 *    and puts its own handler first, so that the handlers registered after
 *    it, the library's included, are counted.
 *
 * The shim needs only libc at load time (cmocka is looked up when a cmocka
 * program calls in), so preloading it into a shell or make is harmless.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

/* libgcov (linked statically into this shim). */
extern void __gcov_dump(void);
extern void __gcov_reset(void);
/* This object's handle, for the atfork registration (crtbeginS.o). */
extern void *__dso_handle;

typedef int (*run_group_fn)(const char *, const struct CMUnitTest *const, const size_t,
                            CMFixtureFunction, CMFixtureFunction);
typedef void (*set_filter_fn)(const char *);
typedef void (*exit_fn)(int);

static _Noreturn void real_exit(const char *name, int status)
{
    exit_fn next = (exit_fn)dlsym(RTLD_NEXT, name);
    if (next)
        next(status);
    /* Only when libc lacks the symbol, which glibc never does. */
    for (;;)
        syscall(SYS_exit_group, status);
}

typedef int (*register_atfork_fn)(void (*)(void), void (*)(void), void (*)(void), void *);
/* glibc's, declared in no public header. */
int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                      void *dso_handle);

static void reset_in_child(void)
{
    __gcov_reset();
}

/* Registers reset_in_child once, ahead of the handler being registered.
 * The first registration in a process usually comes from a library's
 * constructor, which runs before this shim's (a preloaded object is
 * initialised after the libraries the program needs): hence the
 * interposition rather than a constructor alone. */
static int register_reset(register_atfork_fn real)
{
    static atomic_flag done = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&done))
        return 0;
    return real(NULL, NULL, reset_in_child, &__dso_handle);
}

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                      void *dso_handle)
{
    register_atfork_fn real = (register_atfork_fn)dlsym(RTLD_NEXT, "__register_atfork");
    if (!real)
        return ENOSYS;
    register_reset(real);
    return real(prepare, parent, child, dso_handle);
}

__attribute__((constructor)) static void shim_init(void)
{
    register_atfork_fn real = (register_atfork_fn)dlsym(RTLD_NEXT, "__register_atfork");
    if (real)
        register_reset(real);
}

void _exit(int status)
{
    __gcov_dump();
    real_exit("_exit", status);
}

void _Exit(int status)
{
    __gcov_dump();
    real_exit("_Exit", status);
}

static run_group_fn next_run_group(void)
{
    run_group_fn next = (run_group_fn)dlsym(RTLD_NEXT, "_cmocka_run_group_tests");
    if (!next) {
        fprintf(stderr, "cmocka-select: no _cmocka_run_group_tests after the shim\n");
        real_exit("_exit", 3);
    }
    return next;
}

/* Whether NAME is one of the lines of LIST. */
static int named(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        if (n == len && memcmp(p, name, n) == 0)
            return 1;
        p += n + (eol ? 1 : 0);
    }
    return 0;
}

static int run_named(const char *group_name, const struct CMUnitTest *const tests,
                     const size_t num_tests, CMFixtureFunction group_setup,
                     CMFixtureFunction group_teardown, const char *list)
{
    struct CMUnitTest *subset = calloc(num_tests ? num_tests : 1, sizeof *subset);
    if (!subset) {
        fprintf(stderr, "cmocka-select: out of memory for %zu tests\n", num_tests);
        real_exit("_exit", 3);
    }
    size_t n = 0;
    for (size_t i = 0; i < num_tests; i++)
        if (tests[i].name && named(list, tests[i].name))
            subset[n++] = tests[i];
    int rc = n ? next_run_group()(group_name, subset, n, group_setup, group_teardown) : 0;
    free(subset);
    return rc;
}

int _cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                            const size_t num_tests, CMFixtureFunction group_setup,
                            CMFixtureFunction group_teardown)
{
    const char *list = getenv("EVPOL_TEST_LIST");
    if (list && *list) {
        FILE *f = fopen(list, "ae");
        if (!f) {
            perror(list);
            real_exit("_exit", 3);
        }
        for (size_t i = 0; i < num_tests; i++)
            if (tests[i].test_func && tests[i].name)
                fprintf(f, "%s\t%s\n", group_name ? group_name : "", tests[i].name);
        real_exit("_exit", fclose(f) == 0 ? 0 : 3);
    }

    const char *names = getenv("EVPOL_TEST_NAMES");
    if (names && *names)
        return run_named(group_name, tests, num_tests, group_setup, group_teardown, names);

    const char *filter = getenv("EVPOL_TEST_FILTER");
    if (filter && *filter) {
        set_filter_fn set = (set_filter_fn)dlsym(RTLD_DEFAULT, "cmocka_set_test_filter");
        if (!set) {
            fprintf(stderr, "cmocka-select: this cmocka has no cmocka_set_test_filter\n");
            real_exit("_exit", 3);
        }
        set(filter);
    }

    return next_run_group()(group_name, tests, num_tests, group_setup, group_teardown);
}
