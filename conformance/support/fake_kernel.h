/*
 * fake_kernel.h — a deterministic fake kernel behind evpol's syscall seam.
 *
 * Why: the interesting watcher bugs live in orderings the real kernel only
 * produces by luck (two exits coalesced into one SIGCHLD, a child exiting
 * between spawn and registration, a status stolen by another waitpid, EINTR,
 * a thread that cannot be created). The fake kernel produces them on demand,
 * so a test (or a fuzzer) states the ordering instead of hoping for it.
 *
 * How: fk_install() puts a table of fake system calls in evpol's seam
 * (evpol_sys_set); every kernel call the watchers and spawn make then lands
 * here. The fake models child processes of this process:
 *
 *   spawn (or fk_new_child)         -> a fake child, RUNNING
 *   fk_exit / fk_kill_by_signal /
 *   kill(pid, sig) / fk_exit_status -> ZOMBIE with a wait status
 *   waitpid that finds the zombie   -> returns pid + status, child GONE
 *   fk_reap_elsewhere               -> GONE without us seeing the status
 *
 * Honesty. The fake follows the real kernel's semantics, and
 * conformance/test_fake_kernel.c runs the same scenarios against real fork()
 * children and compares return values, errno and status decoding:
 *   - statuses use the kernel's encoding, so the W* macros decode them:
 *     exit code c -> (c & 0xff) << 8; killed by signal s -> s (no core bit);
 *   - waitpid(pid > 0, WNOHANG): zombie -> pid + status (child removed);
 *     running -> 0; not our child (never existed, already reaped) -> ECHILD;
 *   - waitpid(-1, WNOHANG): a zombie if there is one, 0 when only running
 *     children remain, ECHILD when there are no children at all;
 *   - waitpid(pid, 0) blocks (on a condition variable) until the child is a
 *     zombie, or fails with ECHILD when it is reaped elsewhere meanwhile;
 *   - waitpid with unknown option bits -> EINVAL, like the kernel;
 *   - kill(pid, 0) is an existence check (a zombie still exists); kill with
 *     a signal whose default action terminates makes the child a zombie
 *     killed by that signal; signals whose default action is to ignore,
 *     stop or continue (SIGCHLD, SIGURG, SIGWINCH, SIGSTOP, SIGTSTP,
 *     SIGTTIN, SIGTTOU, SIGCONT) leave it running (fake children keep the
 *     default dispositions); a signal number out of range -> EINVAL; an
 *     unknown pid -> ESRCH;
 *   - pidfd_open(fake pid) returns a REAL file descriptor (an eventfd,
 *     O_CLOEXEC | O_NONBLOCK) that becomes readable when the child exits and
 *     stays readable, as a pidfd does, so a loop reader on it fires for real;
 *     a gone pid -> ESRCH; flags other than 0 / PIDFD_NONBLOCK -> EINVAL.
 *
 * Where the fake must choose (documented, and selectable where it matters):
 *   - Reap order of waitpid(-1). Linux scans a parent's children in creation
 *     order and returns the first zombie it meets, so the default,
 *     FK_ORDER_SPAWN, returns the oldest-created zombie (checked against the
 *     kernel in test_fake_kernel.c). FK_ORDER_FIFO (first exited first) and
 *     FK_ORDER_LIFO (last exited first) explore other orderings.
 *   - Fake pids start at FK_PID_BASE (2^30), above the kernel's absolute
 *     PID_MAX_LIMIT (2^22 on 64-bit), so a fake pid can never be a real one.
 *   - Pass-through: calls about pids the fake did not create go to the real
 *     kernel (evpol_sys_real()), so real children keep working while the
 *     fake is installed. waitpid(-1) (and 0, -pgrp) sees both: fake zombies
 *     first, then real ones; ECHILD only when neither kind of child exists.
 *     A blocking waitpid(-1) while fake children exist polls the real kernel
 *     every few milliseconds (a wait, never an assertion). kill(pid <= 0)
 *     (process groups, broadcast) is refused with EPERM: a fake kernel under
 *     a fuzzer must never signal the whole session.
 *   - EINTR. fk_inject_eintr_blocking(n) makes the next n waitpid calls that
 *     block on fake children (or are blocked on them right now; a real
 *     child's blocking waitpid belongs to the real kernel) fail with EINTR:
 *     what a signal handler without SA_RESTART does to a blocked waitpid in
 *     a real kernel.
 *     fk_inject_eintr(n) makes the next n waitpid calls of ANY kind fail,
 *     WNOHANG ones included: the real kernel never does that (a WNOHANG call
 *     does not sleep); use it as a robustness stress, not as a model.
 *   - fk_exit_status(pid, raw) lets a test feed a raw status the real kernel
 *     only reports with WUNTRACED/WCONTINUED (e.g. 0x137f "stopped"), to
 *     check the "neither exited nor signalled" path (CW-10: 255).
 *   - fk_reap_elsewhere on a RUNNING child first makes it exit (a child
 *     cannot be reaped alive); its pidfds become readable either way.
 *
 * SIGCHLD. sigaction(SIGCHLD, ...) through the fake records the action in
 * the fake and returns the previously recorded one; it never reaches the
 * real kernel. The recorded action starts as the real disposition at
 * fk_install / fk_reset time. Other signals pass through. SIGCHLD is only
 * delivered when the test says so, never implicitly (unless
 * fk_set_auto_sigchld is used), so exits can be coalesced at will:
 *   fk_deliver_sigchld(FK_SIG_SEAM_HANDLER): call the recorded handler (when
 *     it is a function, not SIG_DFL/SIG_IGN) on the calling thread, with
 *     SIGCHLD and the action's sa_mask blocked during the call (unless
 *     SA_NODEFER), as the kernel would; SA_SIGINFO handlers get a siginfo
 *     with si_signo = SIGCHLD, si_code = CLD_EXITED.
 *   fk_deliver_sigchld(FK_SIG_REAL): kill(getpid(), SIGCHLD) through the
 *     real kernel. The Safe and Fast watchers receive SIGCHLD through
 *     libevent's signal events, which install their handler with the REAL
 *     sigaction (libevent is not behind the seam), so this is how they hear
 *     about fake exits.
 *   Both flags may be combined (FK_SIG_BOTH).
 *
 * Other calls: spawn makes a fake child (the program is not run; the
 * request's file and argv are only checked) unless fk_set_spawn_real(true),
 * which passes the request to the real kernel; thread_create, pipe2 and
 * close pass through, counted (threads to fk_set_thread_lower's table);
 * thread_join and thread_detach pass through; fk_fail_threads(n) makes the next n thread
 * creations fail with EAGAIN; fk_fail_spawn(e) the next spawn with errno e;
 * fk_spawn_exits_immediately(code) makes the next spawned child exit before
 * spawn returns (the race between exit and registration).
 *
 * Accounting: counters per system call, a few pointed ones (waitpid with
 * pid <= 0, sigaction on SIGCHLD), the balance of fds opened and closed
 * through the seam, open fake pidfds, and a log of the last FK_LOG_MAX calls.
 *
 * Threads: every function is thread-safe (one mutex). Given the same
 * sequence of fk_* calls and seam calls, the fake gives the same results
 * (pids are allocated sequentially from FK_PID_BASE; fk_reset restarts).
 * The fake never calls a handler or signals while holding its lock.
 */
#ifndef EVPOL_FAKE_KERNEL_H
#define EVPOL_FAKE_KERNEL_H

#include <evpol.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* 2^30: above PID_MAX_LIMIT (2^22), so never a real pid. */
#define FK_PID_BASE ((pid_t)0x40000000)

/* ---- installation ---- */

/* fk_reset(), then install the fake table in the seam. Call with no watcher
 * open (evpol_sys_set is not thread-safe). 0, or the evpol error code when
 * the seam refuses the table. */
int fk_install(void);
/* The thread members (thread_create, thread_join, thread_detach) of
 * `lower` make, join and detach the threads created through the fake (NULL:
 * the real kernel's); the fake still counts them and runs each under its
 * trampoline. For a fuzzer's pool of reused threads; `lower` must outlive
 * every thread it made. */
void fk_set_thread_lower(const evpol_sys *lower);
/* Restore the real kernel table. The fake's state is kept (threads still
 * blocked in a fake waitpid keep waiting until fk_exit or fk_reset). */
void fk_uninstall(void);
/* Forget every fake child (blocked waiters wake with ECHILD), close fake
 * pidfds still open, zero counters and the log, clear injected failures and
 * options, re-read the real SIGCHLD disposition as the recorded one. */
void fk_reset(void);
/* The fake table itself, e.g. to act as "outside code" calling sigaction. */
const evpol_sys *fk_sys(void);

/* ---- fake children ---- */

typedef enum fk_state {
    FK_GONE = 0, /* never existed, or reaped */
    FK_RUNNING = 1,
    FK_ZOMBIE = 2,
} fk_state;

bool fk_is_fake_pid(pid_t pid);
/* A new RUNNING fake child, as if forked (without going through spawn). */
pid_t fk_new_child(void);
/* Make a RUNNING child a zombie. 0, or -1 when pid is not a running fake
 * child. Each wakes blocked waiters and readies the child's pidfds. */
int fk_exit(pid_t pid, int code);
int fk_kill_by_signal(pid_t pid, int sig);
int fk_exit_status(pid_t pid, int raw_status);
/* Another waitpid took the child (running children exit first). 0, or -1
 * when the pid is unknown or already gone. */
int fk_reap_elsewhere(pid_t pid);
fk_state fk_child_state(pid_t pid);
int fk_count_children(void); /* running + zombie */
int fk_count_zombies(void);

typedef enum fk_order {
    FK_ORDER_SPAWN = 0, /* oldest-created zombie first (Linux; default) */
    FK_ORDER_FIFO = 1,  /* first-exited zombie first */
    FK_ORDER_LIFO = 2,  /* last-exited zombie first */
} fk_order;
void fk_set_reap_order(fk_order order);

/* ---- injected failures ---- */

void fk_inject_eintr(unsigned n);          /* next n waitpid calls, any kind */
void fk_inject_eintr_blocking(unsigned n); /* next n waitpid calls that block */
/* The next n waitpid calls asking for exactly `pid` (-1: any child) fail
 * with errno e, before the model looks at the child: a kernel error that
 * says nothing about it (the real kernel has few, e.g. EFAULT). */
void fk_fail_waitpid(pid_t pid, int e, unsigned n);
void fk_set_pidfd_errno(int e);            /* pidfd_open fails with e; 0: works */
void fk_fail_threads(unsigned n);          /* next n thread_create -> EAGAIN */
void fk_fail_spawn(int e);                 /* next spawn returns e */
void fk_spawn_exits_immediately(int code); /* next spawned child exits at once */
void fk_set_spawn_real(bool real);         /* spawn runs real programs */

/* ---- SIGCHLD ---- */

#define FK_SIG_SEAM_HANDLER 1u
#define FK_SIG_REAL 2u
#define FK_SIG_BOTH (FK_SIG_SEAM_HANDLER | FK_SIG_REAL)

/* Deliver one SIGCHLD (see above). Returns 1 when a recorded seam handler
 * was called, else 0. */
int fk_deliver_sigchld(unsigned flags);
/* After every fake exit (fk_exit, kill, ...), deliver SIGCHLD with these
 * flags from the thread that caused the exit. 0 (default): never. */
void fk_set_auto_sigchld(unsigned flags);
/* The recorded SIGCHLD action; returns true when it is a function handler
 * (neither SIG_DFL nor SIG_IGN). `out` may be NULL. */
bool fk_sigchld_action(struct sigaction *out);

/* ---- blocking waiters ---- */

/* Threads blocked in a fake waitpid that have seen the latest state: every
 * state change wakes the waiters it concerns (an exit or a reap elsewhere
 * of child P: P's waiters and every waitpid(-1); fk_reset and injected
 * EINTR: all) and takes them out of this count, and each counts again only
 * once it has looked and gone back to sleep; a waiter for another child
 * has nothing new to see. So "threads waiting in waitpid ==
 * fk_blocked_waiters()" means every waiter has reacted to every exit. */
int fk_blocked_waiters(void);
/* Wait (bounded, a hang guard only) until fk_blocked_waiters() >= n.
 * Returns 1 when reached, 0 on timeout. */
int fk_wait_blocked(int n, int timeout_ms);
/* Wait (bounded, a hang guard only) until every thread made through the
 * seam is blocked in a fake waitpid having seen the latest state, or has
 * returned (fk_threads_live() <= fk_blocked_waiters()); and until no such
 * thread is left (fk_threads_live() == 0). 1 when reached, 0 on timeout. */
int fk_wait_settled(int timeout_ms);
int fk_wait_no_threads(int timeout_ms);

/* ---- accounting ---- */

typedef enum fk_call_id {
    FK_WAITPID = 0,
    FK_PIDFD_OPEN,
    FK_SIGACTION,
    FK_SPAWN,
    FK_KILL,
    FK_THREAD_CREATE,
    FK_CLOSE,
    FK_PIPE2,
    FK_NCALLS
} fk_call_id;

/* One logged call. Arguments by call:
 *   waitpid: a = pid, b = options;   pidfd_open: a = pid, b = flags;
 *   sigaction: a = signum, b = (act != NULL);   spawn: a = 0, b = 0;
 *   kill: a = pid, b = sig;   thread_create: a = stack_size;
 *   close: a = fd;   pipe2: a = flags.
 * ret is the return value (spawn, thread_create: the error number or 0;
 * spawn's pid is in a); err the errno for -1 returns, else 0. */
typedef struct fk_call {
    fk_call_id call;
    long a, b;
    long ret;
    int err;
    bool fake; /* answered by the model, not passed through */
} fk_call;

#define FK_LOG_MAX 16384

const char *fk_call_name(fk_call_id id);
unsigned long fk_count(fk_call_id id);
/* waitpid calls with pid <= 0 (i.e. "any child": -1, 0, -pgrp). */
unsigned long fk_count_waitpid_any(void);
/* waitpid calls for exactly this pid: exact for fake pids (counted since
 * fk_reset), as far as the log reaches for real ones. */
unsigned long fk_count_waitpid_pid(pid_t pid);
/* sigaction calls on SIGCHLD, and those that changed it (act != NULL). */
unsigned long fk_count_sigchld_sigaction(void);
unsigned long fk_count_sigchld_sigaction_set(void);
/* Successful thread creations through the seam (since fk_reset). */
unsigned long fk_threads_created(void);
/* Threads created through the seam whose function has not returned yet
 * (every such thread runs under a trampoline that counts its return; not
 * reset by fk_reset, since threads may outlive a test). */
long fk_threads_live(void);
/* fds opened through the seam (pipe2: 2, pidfd_open: 1) minus fds closed
 * through it (successful close). 0 means balanced. */
long fk_fd_balance(void);
/* Fake pidfds not yet closed through the seam. */
int fk_open_pidfds(void);
/* Of those, the ones that are readable (their child has exited): exits a
 * pidfd user has not handled yet. */
int fk_ready_pidfds(void);
/* Copy the log, oldest first; returns the number copied (<= cap). Calls
 * beyond FK_LOG_MAX are counted but drop the oldest entries. */
size_t fk_calls(fk_call *out, size_t cap);

#endif
