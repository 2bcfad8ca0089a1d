/*
 * watcher_tests.h — helpers and test bodies shared by the programs of the
 * watchers that deliver to the registering loop (test_watcher_threaded.c,
 * test_watcher_pidfd.c): callback records, registering from inside a
 * running loop, draining a loop, waiting for a reap, the 2,000-children
 * stress thread, and the tests both watchers pass with the same body, so
 * that both are held to the same checks.
 */
#ifndef EVPOL_WATCHER_TESTS_H
#define EVPOL_WATCHER_TESTS_H

#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>

#define HANG_GUARD_MS 10000

enum { STRESS_THREADS = 4, STRESS_PER_THREAD = 500, STRESS_BATCH = 25 };

typedef struct result {
    pid_t expected_pid;
    int expected_rc;
    atomic_int calls;
    pid_t pid;
    int rc;
    pthread_t thread;
    int tag; /* which callback ran (replace tests) */
} result;

/* Registration from inside the running loop, i.e. through
 * evpol_watcher_add_child_handler and the calling thread's running loop. */
typedef struct reg_req {
    evpol_watcher *w;
    pid_t pid;
    evpol_child_fn cb;
    void *arg;
    int rc;
    evpol_error err;
    volatile int done;
} reg_req;

typedef struct stress_slot {
    pid_t pid;
    int expected;
    atomic_int calls;
    int rc;
    int wrong_thread;
} stress_slot;

typedef struct stress_thread {
    evpol_watcher *w;
    stress_slot *slots;
    int ok;
    char failure[200];
    atomic_int delivered;
    pthread_t self;
} stress_thread;

typedef struct stress_cb_arg {
    stress_thread *st;
    stress_slot *slot;
} stress_cb_arg;

void on_exit_cb(pid_t pid, int rc, void *arg);
void on_exit_cb2(pid_t pid, int rc, void *arg);
void on_exit_count(pid_t pid, int rc, void *arg);
evpol_watcher *new_watcher(evpol_watcher_kind kind);
void free_loop(evpol_loop *loop);
int reaped(pid_t pid);
void do_register(void *p);
int register_in_loop(evpol_loop *loop, evpol_watcher *w, pid_t pid, evpol_child_fn cb,
                     void *arg, evpol_error *err);
/* Fork `n` children waiting for release_child(fds[i]), then exiting with
 * `code`, each registered from inside `loop` with on_exit_cb and r[i]
 * (zeroed first). */
void register_waiting_children(evpol_loop *loop, evpol_watcher *w, int n, int code, pid_t *pids,
                               int *fds, result *r);
void set_flag(void *p);
void drain_loop(evpol_loop *loop);
/* A waitpid for the syscall seam that counts the calls, and those that
 * returned a child: the programs' seams start from it. */
extern atomic_int seam_waitpid_calls, seam_waitpid_returned;
pid_t counting_waitpid(pid_t pid, int *status, int options);
/* Installs `base` (NULL: the real calls) with counting_waitpid, the counts
 * at zero. */
void install_counting_seam(const evpol_sys *base);
/* Number of pidfds open in this process; those not close-on-exec are also
 * counted in *not_cloexec (when not NULL). */
int count_pidfds(int *not_cloexec);

void stress_cb(pid_t pid, int rc, void *arg);
void *stress_main(void *p);

/* Skips the running test when `kind` cannot work on this kernel (pidfd
 * before Linux 5.3). */
void skip_unless_available(evpol_watcher_kind kind);

/* Test bodies (the kind comes from *state): each program registers them
 * with its watcher and its clauses. */
void test_exit_codes(void **state);
void test_killed_by_signal(void **state);
void test_debug_logs_exit(void **state);
void test_exited_before_registration(void **state);
void test_loops_in_other_threads(void **state);
void test_replace(void **state);
void test_remove(void **state);
void test_remove_unknown(void **state);
void test_remove_then_add_again(void **state);
void test_already_reaped(void **state);
void test_close_from_other_thread(void **state);
void test_state_and_errors(void **state);
void test_stress(void **state);
void test_close_with_pending(void **state);
void test_unref_with_pending(void **state);
/* The body of each program's constant-work test, for its watcher. */
void check_constant_work_per_exit(evpol_watcher_kind kind);

#endif
