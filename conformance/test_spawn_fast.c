/*
 * test_spawn_fast.c — the real seam's fast spawn path (SUB-1): the child
 * cloned on the parent's memory (CLONE_VM | CLONE_VFORK) that lib/
 * spawn_clone.c runs when no stdio stream is a descriptor of the parent.
 * What only that path can get wrong: the stack it maps, a kernel without
 * close_range, the reap of a child that failed before exec, and the
 * parent's signal handlers, which must never run in the child (they would
 * run on the parent's memory).
 *
 * The seam is called directly (evpol_sys_real()->spawn), as evpol_loop_spawn
 * does. Tests that change process-wide state (a seccomp filter, signal
 * handlers, environ) run in a forked process, which makes no cmocka call.
 *
 * This program defines waitpid, which interposes on the C library's for
 * the whole process (as harness.c does for evpol_sys_set): it passes every
 * call through, but can make the next one fail with EINTR, which a real
 * signal does only by luck of timing.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436 /* the same number on every architecture */
#endif

/* A request the fast path takes: no stdio stream is a descriptor of the
 * parent (stdin /dev/null, the others inherited), an empty environment. */
static char *no_env[] = {NULL};

static evpol_sys_spawn_request fast_request(char **argv)
{
    evpol_sys_spawn_request req = {
        .file = argv[0], .argv = argv, .envp = no_env,
        .stdio = {EVPOL_SYS_STDIO_DEVNULL, EVPOL_SYS_STDIO_INHERIT, EVPOL_SYS_STDIO_INHERIT},
    };
    return req;
}

static atomic_int interrupt_next_wait;

pid_t waitpid(pid_t pid, int *status, int options)
{
    if (atomic_exchange(&interrupt_next_wait, 0)) {
        errno = EINTR;
        return -1;
    }
    return (pid_t)syscall(SYS_wait4, pid, status, options, NULL);
}

/* The fast path (no stdio stream is a descriptor of the parent) runs the
 * child on a stack it maps for the spawn: the mapping goes when the spawn
 * returns, or every spawn would leave 68 KiB of address space behind. */
static int count_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1; /* no cmocka call: forked processes count too */
    int n = 0;
    for (int c; (c = getc(f)) != EOF;)
        n += c == '\n';
    fclose(f);
    return n;
}

static void test_fast_path_unmaps_child_stack(void **state)
{
    (void)state;
    char *argv[] = {"/bin/true", NULL};
    evpol_sys_spawn_request req = fast_request(argv);
    /* The first count and spawn map what the next ones reuse (the
     * allocator's pools for fopen's buffer). */
    enum { WARM_UP = 2, SPAWNS = 8 };
    int mappings_before = 0;
    for (int i = 0; i < WARM_UP + SPAWNS; i++) {
        if (i == WARM_UP)
            mappings_before = count_mappings();
        else if (i < WARM_UP)
            (void)count_mappings();
        pid_t pid = -1;
        assert_int_equal(evpol_sys_real()->spawn(&pid, &req), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_true(mappings_before > 0);
    assert_int_equal(count_mappings(), mappings_before);
}

/* A kernel that refuses close_range's unshare (before 5.9, or a seccomp
 * filter): the fast path learns it from its first child, which touches
 * nothing of the parent's before that call, and the spawn succeeds on the
 * general path. Run in a forked process that installs such a filter; its
 * stdin, a pipe there, must still be that pipe afterwards (the failed
 * child shared the parent's descriptor table). No cmocka calls in it. */
static volatile sig_atomic_t doomed_children;

static void count_doomed(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code == CLD_EXITED && si->si_status == 127)
        doomed_children++;
}

static int spawn_without_close_range(int refusal)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)refusal),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 10;
    /* Every child that fails before exec exits with 127 (child_fail); the
     * children of the general path here exit with 9. SA_RESTART: the
     * waits are not this test's business. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = count_doomed;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) != 0)
        return 16;
    struct stat in_before, in_after;
    if (fstat(0, &in_before) != 0)
        return 11;
    char *argv[] = {"/bin/sh", "-c", "exit 9", NULL};
    evpol_sys_spawn_request req = fast_request(argv);
    for (int i = 0; i < 2; i++) {
        pid_t pid = -1;
        int status;
        if (evpol_sys_real()->spawn(&pid, &req) != 0 || pid <= 0)
            return 12;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 9)
            return 13;
    }
    if (fstat(0, &in_after) != 0 || in_after.st_ino != in_before.st_ino ||
        in_after.st_dev != in_before.st_dev)
        return 14;
    errno = 0;
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
        return 15; /* the failed child was reaped */
    /* Given up for good after the first refusal: the second spawn went
     * straight to the general path, without a doomed child. (SIGCHLD is
     * delivered by the time the reap of its child returns.) */
    if (doomed_children != 1)
        return 17;
    return 0;
}

static void check_without_close_range(int refusal)
{
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(dup2(fds[0], 0) == 0 ? spawn_without_close_range(refusal) : 20);
    close(fds[0]);
    close(fds[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("close_range refused with %s: step %d failed", strerror(refusal),
                 WEXITSTATUS(status));
}

/* The three refusals that mean "this kernel will never do it": ENOSYS
 * (before 5.9), EINVAL (a kernel without the unshare flag), EPERM (a
 * seccomp filter). */
static void test_fast_path_without_close_range(void **state)
{
    (void)state;
    check_without_close_range(ENOSYS);
    check_without_close_range(EINVAL);
    check_without_close_range(EPERM);
}


/* Run `body` in a forked process (which makes no cmocka call); it returns
 * 0, or the number of the step that failed. */
static void run_forked(int (*body)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(body());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("step %d failed", WEXITSTATUS(status));
}

/* A child that fails before exec (here: its cwd does not exist) is reaped
 * by the spawn, as posix_spawn does; a wait interrupted by a signal is
 * retried, not taken for the end of the wait (which would leave a zombie). */
static void test_fast_path_reap_retried_after_eintr(void **state)
{
    (void)state;
    char *argv[] = {"/bin/true", NULL};
    evpol_sys_spawn_request req = fast_request(argv);
    req.cwd = "/nonexistent-evpol-cwd";
    pid_t pid = -1;
    atomic_store(&interrupt_next_wait, 1);
    int e = evpol_sys_real()->spawn(&pid, &req);
    int interrupted = atomic_exchange(&interrupt_next_wait, 0) == 0;
    assert_int_equal(e, ENOENT);
    assert_true(interrupted); /* the spawn's reap was the wait interrupted */
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* no zombie left */
    assert_int_equal(errno, ECHILD);
}

extern char **environ;

/* Spawn "true" through the PATH search, with `path_entry` ("PATH=...") as
 * the parent's only environment variable (PATH is the parent's, as
 * posix_spawnp's), and wait for it. 0, or -1 when the spawn or the wait
 * failed. */
static int spawn_true_with_path(char *path_entry, int *status)
{
    char *argv[] = {"true", NULL};
    evpol_sys_spawn_request req = fast_request(argv);
    char *env[] = {path_entry, NULL};
    char **saved = environ;
    environ = env;
    pid_t pid = -1;
    int e = evpol_sys_real()->spawn(&pid, &req);
    environ = saved;
    if (e != 0 || pid <= 0)
        return -1;
    return waitpid(pid, status, 0) == pid ? 0 : -1;
}

/* The parent's caught handlers never run in the child, which runs on the
 * parent's memory until exec: they get their default action first. The
 * child is made to fault before exec: the search list of PATH (read only
 * by the child; getenv in the parent reads up to "PATH=") starts on a page
 * it cannot read. Its SIGSEGV must kill it (the default action), not run
 * the parent's handler. In a forked process, not dumpable (no core file
 * from the faulting child, which shares its memory). */
static volatile sig_atomic_t parents_handler_ran;

static void parents_segv_handler(int sig)
{
    (void)sig;
    parents_handler_ran = 1;
    syscall(SYS_exit_group, 99); /* a handler that returned would fault again */
}

static int spawn_with_unreadable_path(void)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 20;
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED || mprotect(m + page, (size_t)page, PROT_NONE) != 0)
        return 21;
    char *entry = m + page - 5;
    memcpy(entry, "PATH=", 5); /* its value: the unreadable page */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = parents_segv_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        return 22;
    int status;
    if (spawn_true_with_path(entry, &status) != 0)
        return 23;
    if (parents_handler_ran)
        return 25;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
        return 26;
    return 0;
}

static void test_fast_path_child_resets_caught_handlers(void **state)
{
    (void)state;
    run_forked(spawn_with_unreadable_path);
}

/* The PATH search builds each candidate in a buffer of PATH_MAX bytes; an
 * entry too long for it (by one byte: entry, '/', file and the NUL make
 * PATH_MAX + 1) is skipped and the search goes on, as for a missing
 * directory. In a forked process (environ changed). */
static int spawn_past_too_long_entry(void)
{
    static char path[5 + PATH_MAX + 16];
    size_t dlen = PATH_MAX + 1 - 1 - strlen("true") - 1;
    memcpy(path, "PATH=/", 6);
    memset(path + 6, 'x', dlen - 1);
    strcpy(path + 5 + dlen, ":/bin:/usr/bin");
    int status;
    if (spawn_true_with_path(path, &status) != 0)
        return 40;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 41;
    return 0;
}

static void test_fast_path_skips_entry_too_long(void **state)
{
    (void)state;
    run_forked(spawn_past_too_long_entry);
}

/* When the stack's guard page cannot be made (mprotect fails: the kernel
 * is out of memory for the mapping's split), the spawn fails with ENOMEM
 * and unmaps the stack, or every such failure would keep 68 KiB and a
 * mapping. In a forked process whose seccomp filter refuses every
 * mprotect to PROT_NONE with ENOMEM (x86_64, where the fast path is: the
 * argument's low half is its first word). */
static int spawn_with_guard_refused(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_NONE, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOMEM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 30;
    char *argv[] = {"/bin/true", NULL};
    evpol_sys_spawn_request req = fast_request(argv);
    /* The first counts map what the next ones reuse (fopen's buffer). */
    (void)count_mappings();
    (void)count_mappings();
    int before = count_mappings();
    pid_t pid = -1;
    if (evpol_sys_real()->spawn(&pid, &req) != ENOMEM)
        return 31;
    int after = count_mappings();
    if (before <= 0 || after != before)
        return 32; /* the stack's mapping stayed */
    return 0;
}

static void test_fast_path_unmaps_stack_when_guard_fails(void **state)
{
    (void)state;
    run_forked(spawn_with_guard_refused);
}

/* evpol_sys_spawn_request has padding after stdio[2] on LP64 (four
 * pointers, three ints): its bytes are whatever the caller's memory held,
 * and the spawn must read stdio[0..2] only. A request whose padding reads
 * as a stdio value, through a union (C11 allows reading the bytes of its
 * other member). */
typedef union padded_request {
    evpol_sys_spawn_request req;
    unsigned char bytes[sizeof(evpol_sys_spawn_request)];
} padded_request;

static void set_padding(padded_request *u, int value)
{
    size_t off = offsetof(evpol_sys_spawn_request, stdio) + sizeof u->req.stdio;
    assert_true(off + sizeof value <= sizeof u->bytes);
    memcpy(u->bytes + off, &value, sizeof value);
}

static int run_and_wait(const evpol_sys_spawn_request *req)
{
    pid_t pid = -1;
    int e = evpol_sys_real()->spawn(&pid, req);
    if (e != 0)
        fail_msg("spawn: %s", strerror(e));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The fast path: padding that reads as EVPOL_SYS_STDIO_DEVNULL must not
 * give the child a /dev/null on fd 3. */
static void test_fast_path_reads_three_streams_only(void **state)
{
    (void)state;
    char *argv[] = {"/bin/sh", "-c", "[ /proc/$$/fd/3 -ef /dev/null ] && exit 3; exit 0", NULL};
    padded_request u;
    u.req = fast_request(argv);
    set_padding(&u, EVPOL_SYS_STDIO_DEVNULL);
    assert_int_equal(run_and_wait(&u.req), 0);
}

/* The general path (a stream is a descriptor of the parent): padding that
 * reads as a closed descriptor must not become a dup2 onto fd 3, which
 * would fail the spawn with EBADF. */
static void test_general_path_reads_three_streams_only(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    int closed_fd = 100;
    while (fcntl(closed_fd, F_GETFD) != -1)
        closed_fd++;
    char *argv[] = {"/bin/true", NULL};
    padded_request u;
    u.req = fast_request(argv);
    u.req.stdio[0] = fds[0];
    set_padding(&u, closed_fd);
    int rc = run_and_wait(&u.req);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_fast_path_unmaps_child_stack, "SUB-1"),
        CLAUSE_TEST(test_fast_path_without_close_range, "SUB-1"),
        CLAUSE_TEST(test_fast_path_reap_retried_after_eintr, "SUB-1 SUB-4"),
        CLAUSE_TEST(test_fast_path_child_resets_caught_handlers, "SUB-1"),
        CLAUSE_TEST(test_fast_path_skips_entry_too_long, "SUB-1"),
        CLAUSE_TEST(test_fast_path_unmaps_stack_when_guard_fails, "SUB-1 SUB-4"),
        CLAUSE_TEST(test_fast_path_reads_three_streams_only, "SUB-1"),
        CLAUSE_TEST(test_general_path_reads_three_streams_only, "SUB-1"),
    };
    return harness_run_group("spawn_fast", tests, NULL, NULL);
}
