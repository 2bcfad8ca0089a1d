/*
 * sys.c — the syscall seam.
 *
 * Watchers and spawn reach the kernel through evpol__sys, a table of
 * function pointers, for every call that tells them about children (the
 * few pipe calls outside it are listed in evpol.h, with why). The real
 * table costs one indirect call per system call; its spawn is in
 * spawn_clone.c. Tests and fuzzers install a deterministic fake kernel
 * with evpol_sys_set. evpol's own allocations go through it too, so that
 * tests can fail them.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int real_pidfd_open(pid_t pid, unsigned int flags)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, flags);
#else
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static int real_thread_create(pthread_t *thread, size_t stack_size, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc)
        return rc;
    /* LCOV_EXCL_STOP */
    if (stack_size)
        rc = pthread_attr_setstacksize(&attr, stack_size);
    if (!rc)
        rc = pthread_create(thread, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

#define REAL_SYS_MEMBERS                                                               \
    .waitpid = waitpid, .pidfd_open = real_pidfd_open, .sigaction = sigaction,        \
    .spawn = evpol__real_spawn, .kill = kill, .thread_create = real_thread_create,     \
    .close = close, .pipe2 = pipe2, .calloc = calloc, .free = free,                    \
    .thread_join = pthread_join, .thread_detach = pthread_detach

static const evpol_sys real_sys = {.size = sizeof(evpol_sys), REAL_SYS_MEMBERS};
/* What evpol_sys_real@EVPOL_0 returns (below): the same functions, and the
 * size of the table a program built against 0.1.0 knows. */
static const evpol_sys real_sys_0_1 = {.size = EVPOL_SYS_SIZE_0_1, REAL_SYS_MEMBERS};

_Atomic(const evpol_sys *) evpol__sys_table = &real_sys;

/* ---- the calling thread's id (evpol-internal.h) ---- */

_Thread_local pid_t evpol__tid_cache;

pid_t evpol__tid_fill(void)
{
    evpol__tid_cache = (pid_t)syscall(SYS_gettid);
    return evpol__tid_cache;
}

/* fork() leaves the child one thread, the forking one, under a new id;
 * only that thread's cache can be set, and this clears it. Registered by
 * a constructor, so before any thread of the process has asked, and with
 * nothing in the library's other child handlers that asserts a lock. (A
 * raw clone that shares memory, spawn_clone.c's child, shares the cache
 * too; it takes no evpol lock before it execs.) */
static void tid_forget(void)
{
    evpol__tid_cache = 0;
}

__attribute__((constructor)) static void evpol_sys_init(void)
{
    pthread_atfork(NULL, NULL, tid_forget);
}

/* Every table installed so far, each copied once and kept for the life of
 * the process (a thread may still be calling through an old one); a fuzzer
 * that installs the same table for every input reuses its copy. */
typedef struct installed_table {
    struct installed_table *next;
    evpol_sys table;
} installed_table;

static pthread_mutex_t installed_lock = PTHREAD_MUTEX_INITIALIZER;
static installed_table *installed;

/* evpol_sys_real has two versions (lib/evpol.map), as glibc versions a
 * function whose contract changed. A program built against 0.1.0 is bound
 * to evpol_sys_real@EVPOL_0: it knows the table up to `free`, and may copy
 * the result whole into its own (smaller) evpol_sys and hand that to
 * evpol_sys_set without setting `size`; its copy must then say the size
 * it really has. Programs built now are bound to the default version,
 * @@EVPOL_0.2, which returns the full table. Default visibility: the
 * versioned names are aliases and take their visibility from these (the
 * internal names themselves stay local, lib/evpol.map). */
EVPOL_API const evpol_sys *evpol__sys_real_0_1(void);
EVPOL_API const evpol_sys *evpol__sys_real_0_2(void);
__asm__(".symver evpol__sys_real_0_1, evpol_sys_real@EVPOL_0");
__asm__(".symver evpol__sys_real_0_2, evpol_sys_real@@EVPOL_0.2");

const evpol_sys *evpol__sys_real_0_1(void)
{
    return &real_sys_0_1;
}

const evpol_sys *evpol__sys_real_0_2(void)
{
    return &real_sys;
}

int evpol_sys_set(const evpol_sys *table, evpol_error *err)
{
    if (!table) {
        atomic_store_explicit(&evpol__sys_table, &real_sys, memory_order_release);
        return 0;
    }
    if (table->size != sizeof(evpol_sys) && table->size != EVPOL_SYS_SIZE_0_1)
        return evpol__fail(err, EVPOL_ETYPE, "evpol_sys table has size %zu, expected %zu or %zu",
                           table->size, sizeof(evpol_sys), (size_t)EVPOL_SYS_SIZE_0_1);
    /* An older, smaller table is read only up to its size; the members it
     * lacks are the real ones. */
    evpol_sys full = real_sys;
    memcpy(&full, table, table->size);
    full.size = sizeof full;
    if (!full.waitpid || !full.pidfd_open || !full.sigaction || !full.spawn || !full.kill ||
        !full.thread_create || !full.close || !full.pipe2 || !full.calloc || !full.free ||
        !full.thread_join || !full.thread_detach)
        return evpol__fail(err, EVPOL_ETYPE, "evpol_sys table has a NULL member");
    pthread_mutex_lock(&installed_lock);
    installed_table *t = installed;
    while (t && memcmp(&t->table, &full, sizeof full) != 0)
        t = t->next;
    if (!t) {
        /* The C library's calloc, not the seam's: this is the seam. */
        t = calloc(1, sizeof *t);
        /* LCOV_EXCL_START: the C library's calloc, which no test can fail */
        if (!t) {
            pthread_mutex_unlock(&installed_lock);
            return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        }
        /* LCOV_EXCL_STOP */
        t->table = full;
        t->next = installed;
        installed = t;
    }
    pthread_mutex_unlock(&installed_lock);
    atomic_store_explicit(&evpol__sys_table, &t->table, memory_order_release);
    return 0;
}
