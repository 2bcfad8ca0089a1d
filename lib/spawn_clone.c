/*
 * spawn_clone.c — the real table's spawn (evpol_sys.spawn): how the seam
 * makes a child process.
 *
 * Two ways to make the process evpol_sys_spawn_request describes, with the
 * same result (the guarantees listed in evpol.h).
 *
 * The general path is posix_spawnp. glibc creates the child with
 * CLONE_VM | CLONE_VFORK, so the cost does not grow with the parent's
 * memory and no pthread_atfork handler runs (a fork would run every handler
 * of the program and of libevent, and could deadlock on a lock held by
 * another thread); it reports a failed exec through its return value after
 * reaping the child (SUB-4). But the child gets a copy of the parent's
 * whole descriptor table, which exec (or closefrom) then empties one
 * descriptor at a time: a spawn costs more the more descriptors the parent
 * holds, e.g. one pidfd per pending child with the Pidfd watcher.
 *
 * The fast path, used when no stdio stream is a descriptor of the parent
 * (only inherited or /dev/null streams), does what glibc does but starts
 * the child on the parent's descriptor table (CLONE_FILES) and has it
 * unshare the table with close_range(3, ~0U, CLOSE_RANGE_UNSHARE) (Linux
 * 5.9): since the range covers every descriptor above 2, the kernel copies
 * only 0..2, so the cost no longer depends on how many the parent holds.
 * The child shares the parent's memory, stack of the spawning thread
 * excepted, and its thread-local storage: until exec it makes raw system
 * calls only (no errno, no lock, no sanitizer runtime), on a stack of its
 * own, with every signal blocked until it has reset the handlers.
 *
 * Only sys.c's real table calls this; everything else spawns through the
 * seam (evpol__sys.spawn), so that tests and fuzzers can fake it.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The signals a child always starts with the default action for (see
 * evpol_sys_spawn_request), on both paths. */
static const int default_action_signals[] = {SIGPIPE, SIGXFSZ, SIGCHLD, SIGINT, SIGQUIT, SIGTERM};
#define N_DEFAULT_ACTION_SIGNALS (sizeof default_action_signals / sizeof default_action_signals[0])

/* x86_64 only: the only architecture this was run on (the trampoline
 * below and the kernel's struct sigaction are per architecture). */
#if defined(__linux__) && defined(__x86_64__)
#define FAST_SPAWN 1
#else
#define FAST_SPAWN 0
#endif

#if FAST_SPAWN

#define EVPOL__XSTR(x) #x
#define EVPOL__STR(x) EVPOL__XSTR(x)

#ifndef SYS_close_range
#define SYS_close_range 436 /* the same number on every architecture */
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

/* Code that runs in the child before exec: no sanitizer instrumentation
 * (its runtime state belongs to the parent's thread, whose memory the
 * child shares), and every helper inlined or marked the same way. */
#if defined(__clang__)
#if __has_attribute(disable_sanitizer_instrumentation)
#define CHILD_CODE                                                                             \
    __attribute__((disable_sanitizer_instrumentation,                                         \
                   no_sanitize("address", "thread", "undefined")))
#else
#define CHILD_CODE __attribute__((no_sanitize("address", "thread", "undefined")))
#endif
#else
#define CHILD_CODE __attribute__((no_sanitize_address, no_sanitize_thread, no_sanitize_undefined))
#endif

/* A system call without the C library: returns -errno on failure. */
CHILD_CODE static inline long raw_syscall(long n, long a, long b, long c, long d)
{
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

/*
 * clone(flags, stack) that runs fn(arg) on `stack` in the child and exits
 * the child with its return value: glibc's clone() without the C library,
 * because sanitizers intercept clone() and, taking it for a fork, run their
 * after-fork code in a child that shares the parent's memory (TSan then
 * believes the parent itself was forked). Returns the pid or -errno.
 */
__attribute__((visibility("hidden"))) long evpol__clone_run(unsigned long flags, void *stack,
                                                           int (*fn)(void *), void *arg);
__asm__(".pushsection .text\n"
        ".globl evpol__clone_run\n"
        ".hidden evpol__clone_run\n"
        ".type evpol__clone_run,@function\n"
        "evpol__clone_run:\n"
        "    and $-16, %rsi\n"        /* the child's stack, 16-byte aligned */
        "    sub $16, %rsi\n"
        "    mov %rdx, 0(%rsi)\n"     /* fn */
        "    mov %rcx, 8(%rsi)\n"     /* arg */
        "    mov $" EVPOL__STR(SYS_clone) ", %eax\n"
        "    xor %edx, %edx\n"        /* parent_tid */
        "    xor %r10d, %r10d\n"      /* child_tid */
        "    xor %r8d, %r8d\n"        /* tls */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n"        /* the child: the outermost frame */
        "    pop %rax\n"
        "    pop %rdi\n"
        "    call *%rax\n"
        "    mov %eax, %edi\n"
        "    mov $" EVPOL__STR(SYS_exit_group) ", %eax\n"
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n"
        ".size evpol__clone_run, .-evpol__clone_run\n"
        ".popsection\n");

/* The kernel's struct sigaction on x86_64 (with SA_RESTORER's field; a
 * 64-bit signal set). */
typedef struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
} kernel_sigaction;

#define KERNEL_SIGSET_SIZE 8 /* bytes of the kernel's sigset_t */
#define KERNEL_NSIG 64

typedef struct fast_child {
    const evpol_sys_spawn_request *req;
    const char *path; /* the PATH search list; NULL when file has a '/' */
    /* Written by the child before it exits, read by the parent after the
     * child released it (CLONE_VFORK): 0 when the exec succeeded. */
    volatile int err;
    volatile int close_range_failed;
} fast_child;

CHILD_CODE __attribute__((noreturn)) static void child_fail(fast_child *c, long err)
{
    c->err = (int)err;
    for (;;)
        raw_syscall(SYS_exit_group, 127, 0, 0, 0);
}

CHILD_CODE static bool child_resets(int sig)
{
    for (size_t i = 0; i < N_DEFAULT_ACTION_SIGNALS; i++)
        if (default_action_signals[i] == sig)
            return true;
    return false;
}

CHILD_CODE static void child_signals(void)
{
    /* The parent's handlers must not run here (this memory is the
     * parent's): caught signals get their default action before the mask
     * opens, as do the six of evpol.h. Ignored ones stay ignored. */
    for (int sig = 1; sig <= KERNEL_NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        kernel_sigaction old;
        if (!child_resets(sig)) {
            if (raw_syscall(SYS_rt_sigaction, sig, 0, (long)&old, KERNEL_SIGSET_SIZE) != 0)
                continue; /* LCOV_EXCL_LINE: reading a valid signal's action */
            if (old.handler == SIG_DFL || old.handler == SIG_IGN)
                continue;
        }
        kernel_sigaction dfl = {SIG_DFL, 0, 0, 0};
        raw_syscall(SYS_rt_sigaction, sig, (long)&dfl, 0, KERNEL_SIGSET_SIZE);
    }
}

CHILD_CODE static void child_stdio(fast_child *c)
{
    for (int i = 0; i < 3; i++) {
        if (c->req->stdio[i] != EVPOL_SYS_STDIO_DEVNULL)
            continue;
        /* Without O_CLOEXEC: it may land on i itself (fd i closed). */
        long fd = raw_syscall(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDWR, 0);
        if (fd < 0)
            child_fail(c, -fd);
        if (fd != i) {
            long rc = raw_syscall(SYS_dup3, fd, i, 0, 0);
            if (rc < 0)
                child_fail(c, -rc); /* LCOV_EXCL_LINE: fd and i are valid and distinct */
            raw_syscall(SYS_close, fd, 0, 0, 0);
        }
    }
}

CHILD_CODE static size_t child_strlen(const char *s)
{
    const volatile char *p = s; /* volatile: not turned into a strlen call */
    size_t n = 0;
    while (p[n])
        n++;
    return n;
}

/* posix_spawnp's search (glibc's __spawni_child): try each PATH entry, an
 * empty one meaning the current directory; EACCES is remembered and the
 * search goes on, as it does after the errors of a missing or unusable
 * entry; any other error means the program was found but cannot run. */
CHILD_CODE __attribute__((noreturn)) static void child_exec(fast_child *c)
{
    const evpol_sys_spawn_request *req = c->req;
    if (!c->path) {
        long rc = raw_syscall(SYS_execve, (long)req->file, (long)req->argv, (long)req->envp, 0);
        child_fail(c, -rc);
    }
    char buf[PATH_MAX];
    volatile char *dst = buf; /* volatile: not turned into memcpy calls */
    size_t flen = child_strlen(req->file);
    bool eacces = false;
    long err = ENOENT;
    for (const char *p = c->path;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        size_t dlen = (size_t)(end - p);
        size_t need = dlen + (dlen > 0) + flen + 1;
        if (need > sizeof buf) {
            err = ENOENT; /* an entry too long for a path is skipped, as glibc does */
        } else {
            size_t n = 0;
            for (size_t i = 0; i < dlen; i++)
                dst[n++] = p[i];
            if (dlen > 0)
                dst[n++] = '/';
            for (size_t i = 0; i <= flen; i++)
                dst[n++] = req->file[i];
            err = -raw_syscall(SYS_execve, (long)buf, (long)req->argv, (long)req->envp, 0);
        }
        switch (err) {
        case EACCES:
            eacces = true;
            break;
        case ENOENT:
        case ENOTDIR:
        case ESTALE:
        case ENODEV:
        case ETIMEDOUT:
            break;
        default:
            child_fail(c, err);
        }
        if (!*end)
            break;
        p = end + 1;
    }
    child_fail(c, eacces ? EACCES : err);
}

/* The child: starts with every signal blocked, on the parent's memory and
 * descriptor table. */
CHILD_CODE static int child_main(void *arg)
{
    fast_child *c = arg;
    /* First, while the table is still the parent's: nothing else touches
     * it before this succeeded. */
    long rc = raw_syscall(SYS_close_range, 3, (long)~0U, CLOSE_RANGE_UNSHARE, 0);
    if (rc < 0) {
        /* LCOV_EXCL_START: this machine's kernel has close_range */
        c->close_range_failed = 1;
        child_fail(c, -rc);
        /* LCOV_EXCL_STOP */
    }
    child_signals();
    child_stdio(c);
    if (c->req->cwd) {
        rc = raw_syscall(SYS_chdir, (long)c->req->cwd, 0, 0, 0);
        if (rc < 0)
            child_fail(c, -rc);
    }
    unsigned long none = 0;
    raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, KERNEL_SIGSET_SIZE);
    child_exec(c);
}

#define CHILD_STACK (64 * 1024)
#define CHILD_GUARD (4 * 1024)

/* Set once the kernel turned close_range's unshare down (before 5.9, or a
 * seccomp filter): the general path from then on. */
static atomic_bool fast_spawn_unavailable;

enum { FAST_UNAVAILABLE = -1 };

static int fast_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    fast_child c = {.req = req, .path = NULL, .err = 0, .close_range_failed = 0};
    if (!strchr(req->file, '/')) {
        /* posix_spawnp's: the parent's PATH, not envp's. */
        c.path = getenv("PATH");
        if (!c.path)
            c.path = "/bin:/usr/bin";
        if (strlen(req->file) > NAME_MAX)
            return ENAMETOOLONG;
    }
    if (!req->file[0])
        return ENOENT;

    size_t size = CHILD_STACK + CHILD_GUARD;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return errno; /* LCOV_EXCL_LINE: out of address space */
    /* The stack grows down, into the guard page. */
    if (mprotect(stack, CHILD_GUARD, PROT_NONE) != 0) {
        /* LCOV_EXCL_START: out of memory for the mapping's split */
        int e = errno;
        munmap(stack, size);
        return e;
        /* LCOV_EXCL_STOP */
    }

    /* Every signal blocked, the C library's own included (as glibc's
     * posix_spawn does): no handler of the parent can run in the child
     * before child_signals reset it. */
    unsigned long all = ~0UL, old = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, KERNEL_SIGSET_SIZE);
    long p = evpol__clone_run(CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, stack + size,
                              child_main, &c);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, KERNEL_SIGSET_SIZE);
    munmap(stack, size);
    if (p < 0)
        return (int)-p; /* LCOV_EXCL_LINE: process or memory limits */
    if (c.err) {
        /* The child exited without exec: reap it, as posix_spawn does.
         * ECHILD: a reap-everything watcher (Fast) got it first. */
        int status;
        while (waitpid(p, &status, 0) < 0 && errno == EINTR)
            ;
        if (c.close_range_failed) {
            /* LCOV_EXCL_START: this machine's kernel has close_range */
            if (c.err == ENOSYS || c.err == EINVAL || c.err == EPERM)
                atomic_store(&fast_spawn_unavailable, true);
            return FAST_UNAVAILABLE;
            /* LCOV_EXCL_STOP */
        }
        return c.err;
    }
    *pid = (pid_t)p;
    return 0;
}

#endif /* FAST_SPAWN */

static int file_actions(const evpol_sys_spawn_request *req, posix_spawn_file_actions_t *fa)
{
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (req->stdio[i] >= 0)
            rc = posix_spawn_file_actions_adddup2(fa, req->stdio[i], i);
        else if (req->stdio[i] == EVPOL_SYS_STDIO_DEVNULL)
            /* Opened by the child straight onto fd i: the parent never
             * holds a /dev/null descriptor that could leak. */
            rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null", O_RDWR, 0);
    }
    if (!rc && req->cwd)
        rc = posix_spawn_file_actions_addchdir_np(fa, req->cwd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Only 0..2 reach the child, close-on-exec or not: the descriptors
     * above were dup2'ed onto them already. */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
#endif
    return rc;
}

static int spawn_attr(posix_spawnattr_t *attr)
{
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (size_t i = 0; i < N_DEFAULT_ACTION_SIGNALS; i++)
        sigaddset(&defaults, default_action_signals[i]);
    int rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setsigmask(attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(attr, &defaults);
    return rc;
}

static int general_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc)
        return rc;
    /* LCOV_EXCL_STOP */
    rc = posix_spawnattr_init(&attr);
    /* LCOV_EXCL_START: cannot fail in glibc (POSIX allows it elsewhere) */
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    /* LCOV_EXCL_STOP */
    /* EBADF for a descriptor above the open-file limit; ENOMEM from
     * glibc's own malloc, outside the seam. The attributes cannot fail:
     * constant flags and sets that glibc only copies. */
    rc = file_actions(req, &fa);
    if (!rc)
        rc = spawn_attr(&attr);
    if (!rc)
        rc = posix_spawnp(pid, req->file, &fa, &attr, req->argv, req->envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int evpol__real_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
#if FAST_SPAWN
    bool fast = !atomic_load_explicit(&fast_spawn_unavailable, memory_order_relaxed);
    for (int i = 0; i < 3 && fast; i++)
        fast = req->stdio[i] < 0;
    if (fast) {
        int rc = fast_spawn(pid, req);
        if (rc != FAST_UNAVAILABLE)
            return rc;
    }
#endif
    return general_spawn(pid, req);
}
