/*
 * interp.h — the scenario interpreter: what runs inside one scenario process.
 *
 * The interpreter's files, by subject:
 *  - interp_state.c: the shared state, reporting to the driver, the log hook,
 *    children and process helpers, the counting seam, the custom policy, slots;
 *  - interp_actors.c: actor steps and the life of a scenario thread;
 *  - interp_director.c: the director, which runs the steps in order;
 *  - interp_process.c: teardown, leak checks, the whole life of the process.
 * The suite driver (driver.c) forks one scenario process per run and calls
 * scenario_process() in it.
 *
 * Inside a run (the "scenario process"):
 *  - the process's main thread is scenario thread T0 ("main"); "thread Tn"
 *    starts others. A thread either waits for steps, or runs a loop
 *    ("@T start L1"), in which case its steps are posted into that loop with
 *    evpol_loop_call_soon_threadsafe and run inside it, so they see a
 *    running loop as product code would;
 *  - a separate director thread reads the steps in order, hands actor steps
 *    to their thread(s) and waits for them to finish, and runs the other
 *    steps (expectations, outside code) itself. Expectations wait for what
 *    they expect with a hang guard only: nothing is timed;
 *  - children are real processes (/bin/sh), signals are real, the kernel is
 *    real (no fake seam);
 *  - after the last step: release every child, wait until every child is
 *    reaped, check that no callback ran twice, stop the loops, join the
 *    threads, drop every object; then the main thread checks that nothing
 *    leaked: fds (/proc/self/fd, by number and target), threads
 *    (/proc/self/task), children (none left, running or zombie), the SIGCHLD
 *    disposition (sigaction before/after).
 *
 * The scenario process reports to the runner through a pipe: "S n" when
 * step n starts (so that a hung or crashed run shows its last step), "F ..."
 * lines for a failure, "I ..." for information (soak figures), "P" for a
 * pass. Its stderr goes to the runner too, which fails the run on any
 * sanitizer report.
 */
#ifndef EVPOL_SCENARIO_INTERP_H
#define EVPOL_SCENARIO_INTERP_H

#include "proc_count.h"
#include "steps.h"

#include <evpol.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define DEFAULT_TIMEOUT_S 60
#define SOAK_DEFAULT_S 120
/* Soak uses the last children slots, so that scenarios keep C0.. for theirs. */
#define SOAK_BATCH 32
#define SOAK_FIRST_CHILD (SCN_MAX_CHILDREN - SOAK_BATCH)
#define NO_SUCH_PROGRAM "/nonexistent/evpol-scenario/no-such-program"

typedef enum origin { ORIGIN_NONE = 0, ORIGIN_SPAWN, ORIGIN_OUTSIDE, ORIGIN_FORK } origin;

typedef struct child_rec {
    pid_t pid;        /* 0: never created */
    int release_fd;   /* write end of a "wait" child's stdin, or -1 */
    origin how;
    int count;        /* callbacks so far */
    int hcount[SCN_MAX_HANDLERS];
    int rc, thread, loop, handler; /* of the last callback */
    pid_t cb_pid;     /* the pid the last callback was given */
    bool never;       /* "never": no callback may ever run */
    /* The watcher of its last add_handler (compared, never dereferenced):
     * closing that watcher must leave no zombie of it (CW-8). */
    const evpol_watcher *registered_with;
} child_rec;

typedef struct cbarg {
    int child, handler;
} cbarg;

typedef struct cmd {
    const scn_step *step;
    int lo, hi;    /* this thread's share of the children */
    int expected;  /* the value each call must return */
    bool check;    /* compare with `expected` */
    bool done;
    int rc;        /* the value obtained (the first mismatch, if any) */
    int child;     /* the child the mismatch was for, or -1 */
    bool script;   /* a scenario error (not the library's answer) */
    char msg[400];
} cmd;

typedef struct worker {
    int index;
    bool exists;
    pthread_t tid;
    bool quit;
    cmd *pending;      /* a step for this thread */
    cmd *starting;     /* a "start" waiting for its loop to run */
    evpol_loop *running; /* the loop this thread runs (it holds its own ref) */
    int running_slot;
} worker;

typedef struct pol_slot {
    atomic_int calls[SCN_M_COUNT_];
} pol_slot;

typedef struct log_line {
    int level, category;
    char msg[400];
} log_line;

typedef struct scn_state {
    pthread_mutex_t m; /* everything below except where noted */
    pthread_cond_t cv;
    worker workers[SCN_MAX_THREADS];
    evpol_loop *loops[SCN_MAX_LOOPS];
    evpol_watcher *watchers[SCN_MAX_WATCHERS];
    evpol_policy *policies[SCN_MAX_POLICIES];
    child_rec children[SCN_MAX_CHILDREN];

    /* Director-only. */
    int gate_wr;
    struct sigaction sigchld_start;
    const scn_scenario *sc;
    int kind;        /* bit index of the watcher under test */
    double deadline; /* expectations give up here (hang guard) */
    int status_fd;
    pid_t pid;
    const scn_step *cur;
    int cur_index;
} scn_state;

typedef struct fd_set_snap {
    int n;
    int fd[256];
    char target[256][96];
} fd_set_snap;

extern scn_state S;
extern pol_slot pol_slots[SCN_MAX_POLICIES];
extern cbarg cbargs[SCN_MAX_CHILDREN][SCN_MAX_HANDLERS];
extern _Thread_local worker *tls_worker;
extern atomic_long spawn_calls;

void status_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double now_s(void);
void sleep_ms(int ms);
void describe_value(int v, char *buf, size_t size);
_Noreturn void fail_step(const scn_step *st, const char *expected, const char *actual);
_Noreturn void fail_phase(const char *phase, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_hook(evpol_log_level level, evpol_log_category cat, const char *msg, void *arg);
void substitute(const char *in, char *out, size_t size);
int log_count(const scn_step *st, const char *needle);
int loop_slot_locked(evpol_loop *loop);
void child_cb(pid_t pid, int returncode, void *arg);
void reset_child_locked(int ci);
int child_state(pid_t pid);
const char *child_state_name(pid_t pid);
int list_children(pid_t *out, int cap);
void snap_fds(fd_set_snap *s);
int count_fds(void);
long rss_kib(void);
void install_counting_seam(void);
int cp_get_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err);
int cp_set_event_loop(evpol_policy *self, evpol_loop *loop, evpol_error *err);
int cp_new_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err);
int cp_get_child_watcher(evpol_policy *self, evpol_watcher **out, evpol_error *err);
int cp_set_child_watcher(evpol_policy *self, evpol_watcher *w, evpol_error *err);
int fork_child_checks(void);
evpol_loop *loop_ref_at(scn_ref r);
evpol_watcher *watcher_at(scn_ref r);
evpol_policy *policy_at(scn_ref r);
void put_loop(int i, evpol_loop *l);
void put_watcher(int i, evpol_watcher *w);
void put_policy(int i, evpol_policy *p);
pid_t child_pid(int ci);
int close_watcher_checked(cmd *c, evpol_watcher *w, evpol_error *err);
void exec_in_loop(void *arg);
void worker_main(worker *w);
void *worker_thread(void *arg);
void make_gate(void);
void close_gate(void);
void stop_loop(const scn_step *st, evpol_loop *loop);
void join_thread(const scn_step *st, int t);
int soak_seconds(const scn_step *st);
void run_step(const scn_step *st);
_Noreturn void scenario_process(const scn_scenario *sc, int kind, int status_fd, double timeout);

#endif
