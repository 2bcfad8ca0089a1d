/*
 * attached_watcher.h — helpers of the programs of the watchers that reap
 * from the loop they are attached to (test_watcher_safe.c,
 * test_watcher_fast.c): an exit record that notes where the callback ran, a
 * loop with an attached watcher, and one pass of a loop.
 */
#ifndef EVPOL_ATTACHED_WATCHER_H
#define EVPOL_ATTACHED_WATCHER_H

#include "harness.h"

#include <pthread.h>

/* The thread that ran main(), recorded before it. */
extern pthread_t harness_main_thread;

typedef struct exit_rec {
    volatile int count;
    pid_t pid;
    int rc;
    int on_main;
    evpol_loop *ran_on; /* the running loop when the callback ran */
} exit_rec;

/* An evpol_child_fn recording into the exit_rec `arg`. */
void record_exit(pid_t pid, int rc, void *arg);

typedef struct fixture {
    resource_snapshot before;
    evpol_loop *loop;
    evpol_watcher *w;
    evpol_watcher_kind kind;
} fixture;

/* A new loop and a new watcher of `kind` attached to it. */
void fx_open(fixture *fx, evpol_watcher_kind kind);
/* Close both, and assert that nothing leaked since fx_open. */
void fx_close(fixture *fx);

/* Run the loop for one pass over what is ready. */
void run_once(evpol_loop *loop);

/* evpol_watcher_close(w) from a new thread; its return value. */
int close_in_other_thread(evpol_watcher *w);

/* CW-8, SAF-7/FST-8: the user replaced the watcher's SIGCHLD handler on its
 * loop, then the watcher is closed outside the main thread (shared by the
 * Safe and Fast programs, so that the ci tier of make mutation, which runs
 * test_watcher_fast only, has it too). */
void check_close_after_user_replaced_handler(evpol_watcher_kind kind);

#endif
