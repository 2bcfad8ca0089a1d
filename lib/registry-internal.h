/*
 * registry-internal.h — the registry every built-in watcher keeps its
 * children in (registry.c). Never installed.
 *
 * A registration (evpol__child) is one registered pid. Its `state`
 * holds two facts, and registry.c alone changes it, at one place per
 * transition (debug builds assert that the transition is possible):
 *   the exit     RUNNING (not reaped yet: the record is in its watcher's
 *                table), EXITED (status recorded in ->exit) or LOST (the
 *                status was reaped elsewhere, CW-11: returncode 255);
 *   the handler  kept, or NO_HANDLER: remove_child_handler cleared it
 *                (CW-4), or a Fast kept exit has none yet.
 * The four states a reader meets:
 *   pending      RUNNING with a handler (evpol__child_new,
 *                evpol__child_replace);
 *   removed      RUNNING | NO_HANDLER (evpol__child_disarm): the watcher
 *                still reaps the child so that no zombie is left, and
 *                then only frees the record (after the CW-11 warning for
 *                Threaded and Pidfd when the status was lost);
 *   exited-kept  EXITED (evpol__child_exited), out of every table, on its
 *                way to its loop; or, for Fast, an exit kept for a
 *                registration that may follow (FST-5,
 *                evpol__child_new_kept), NO_HANDLER until claimed
 *                (evpol__child_claim);
 *   lost         LOST (evpol__child_lost_exit), out of every table.
 * What every watcher does with a registration is here, once: register or
 * replace (CW-2, evpol__child_replace), remove (CW-4, evpol__child_disarm),
 * decode the status (CW-10), deliver a list of reaped registrations
 * (evpol__child_list_deliver), and close (CW-8: reap the exited, warn
 * about the rest). Each watcher file holds only how it learns of an exit.
 */
#ifndef EVPOL_REGISTRY_INTERNAL_H
#define EVPOL_REGISTRY_INTERNAL_H

#include "evpol-internal.h"

#include <sys/types.h>

/* ---- status decoding ---- */

/* The status `pid` exited with, as waitpid reported it (CW-10). A status
 * that is neither an exit nor a death by signal is logged as a warning
 * naming the pid and the raw status. */
EVPOL_HIDDEN void evpol__exit_decode(pid_t pid, int status, evpol_exit_status *out);
/* A status reaped elsewhere (CW-11): returncode 255, kind LOST. */
EVPOL_HIDDEN void evpol__exit_lost(evpol_exit_status *out);
/* waitpid failed with an error that says nothing about the child (neither
 * ECHILD nor EINTR): one error line with the errno and the pid asked for. */
EVPOL_HIDDEN void evpol__log_waitpid_error(const char *watcher, pid_t pid, int errnum);
/* The CW-11 warning for a child reaped elsewhere. */
EVPOL_HIDDEN void evpol__warn_unknown_child(pid_t pid);

/* ---- registrations ---- */

/* The two facts of a registration's state (above), or-ed together. */
enum {
    EVPOL__CHILD_RUNNING = 0,
    EVPOL__CHILD_EXITED = 1,
    EVPOL__CHILD_LOST = 2,
    EVPOL__CHILD_EXIT_MASK = 3,
    EVPOL__CHILD_NO_HANDLER = 4,
};

/* One registered child. `loop` holds a reference when non-NULL. */
typedef struct evpol__child {
    pid_t pid;
    unsigned state; /* EVPOL__CHILD_*; changed by registry.c only */
    evpol__handler h;
    evpol_loop *loop;
    int fd;     /* per-watcher use (Pidfd: the pidfd), else -1 */
    void *data; /* per-watcher use (Pidfd: its reader's side) */
    struct evpol__child *next;
    evpol_exit_status exit; /* once EXITED or LOST */
    /* Used by evpol__deliver. */
    evpol_watcher *watcher;
    evpol__post post;
} evpol__child;

/* Has it a handler to call (not removed, CW-4)? */
static inline bool evpol__child_armed(const evpol__child *c)
{
    return !(c->state & EVPOL__CHILD_NO_HANDLER);
}

/* Was its status reaped elsewhere (CW-11)? */
static inline bool evpol__child_lost(const evpol__child *c)
{
    return (c->state & EVPOL__CHILD_EXIT_MASK) == EVPOL__CHILD_LOST;
}

/* A pending registration (RUNNING, fd = -1) with a copy of `h`; takes a
 * loop reference when loop set. NULL when out of memory. */
EVPOL_HIDDEN evpol__child *evpol__child_new(pid_t pid, const evpol__handler *h,
                                            evpol_loop *loop);
/* Fast's kept exit (FST-5): EXITED | NO_HANDLER, with `exit`. */
EVPOL_HIDDEN evpol__child *evpol__child_new_kept(pid_t pid, const evpol_exit_status *exit);
/* Drop the loop reference and free. NULL is ignored. */
EVPOL_HIDDEN void evpol__child_free(evpol__child *c);
/* A second registration for a registered (RUNNING) pid (CW-2), pending
 * or removed: `c` is pending with `h` and delivers to `loop` (referenced;
 * NULL: none) from now on. *old_loop gets the previous loop reference, to
 * drop once the owner's lock is released. */
EVPOL_HIDDEN void evpol__child_replace(evpol__child *c, const evpol__handler *h,
                                       evpol_loop *loop, evpol_loop **old_loop);
/* Fast's registration of a kept exit (FST-5): `c` (EXITED | NO_HANDLER)
 * gets `h`. */
EVPOL_HIDDEN void evpol__child_claim(evpol__child *c, const evpol__handler *h);
/* A newer exit for the pid of a kept one (EXITED | NO_HANDLER; the pid
 * was reused): the newer status wins. */
EVPOL_HIDDEN void evpol__child_rekeep(evpol__child *c, const evpol_exit_status *exit);
/* remove_child_handler on a registered (RUNNING) record (CW-4): 1 when it
 * had a handler, which it no longer has (NO_HANDLER); 0 when it had none
 * or `c` is NULL. The record stays, so that whatever reaps the child still
 * does and no zombie is left. *old_loop gets the loop reference to drop
 * once the lock is released. */
EVPOL_HIDDEN int evpol__child_disarm(evpol__child *c, evpol_loop **old_loop);
/* The RUNNING child exited with `exit` (from evpol__exit_decode): EXITED,
 * the handler fact unchanged. */
EVPOL_HIDDEN void evpol__child_exited(evpol__child *c, const evpol_exit_status *exit);
/* Its status was reaped elsewhere (CW-11): RUNNING becomes LOST, the
 * handler fact unchanged; ->exit says returncode 255. */
EVPOL_HIDDEN void evpol__child_lost_exit(evpol__child *c);

/* waitpid(c->pid, WNOHANG) for a registration of a watcher that polls
 * (Safe, MultiLoop), under the owner's `lock`, so that one exit is taken by
 * exactly one poller (the loser would see ECHILD and report a false 255).
 * True when the child is gone, EXITED or LOST (its status reaped
 * elsewhere, CW-11). An error that says nothing about the child is left
 * in *wait_errno (when it is still 0), for the caller to log with
 * evpol__log_waitpid_error once the lock is released. */
EVPOL_HIDDEN bool evpol__child_poll_locked(pthread_mutex_t *lock, evpol__child *c,
                                           int *wait_errno);
/* Free a list of records linked through ->next without calling anything. */
EVPOL_HIDDEN void evpol__child_list_free(evpol__child *list);
/* Hand each record of a list of reaped ones (EXITED or LOST, out of every
 * table) to its loop with evpol__deliver, after the CW-11 warning for a
 * lost one that still has a handler. Takes ownership of the list; the
 * caller holds a reference to `w` and no lock. */
EVPOL_HIDDEN void evpol__child_list_deliver(evpol_watcher *w, evpol__child *list);

/* ---- the pid table ---- */

/* A hash table pid -> child. Not locked: its owner locks. */
typedef struct evpol__childtab {
    evpol__child **buckets;
    size_t nbuckets;
    size_t count;
} evpol__childtab;

EVPOL_HIDDEN int evpol__childtab_init(evpol__childtab *t);
/* Calls fn on every entry (which fn then owns), then frees the buckets. */
EVPOL_HIDDEN void evpol__childtab_fini(evpol__childtab *t, void (*fn)(evpol__child *c));
EVPOL_HIDDEN evpol__child *evpol__childtab_find(const evpol__childtab *t, pid_t pid);
/* Insert `c` (whose pid is not in the table) into an initialised table.
 * Never fails: without memory to grow, the chains just get longer. */
EVPOL_HIDDEN void evpol__childtab_insert(evpol__childtab *t, evpol__child *c);
/* Unlink and return the entry for pid, or NULL. */
EVPOL_HIDDEN evpol__child *evpol__childtab_remove(evpol__childtab *t, pid_t pid);
/* Unlink every record of `t` and return them as a list; the table stays
 * valid and empty. */
EVPOL_HIDDEN evpol__child *evpol__childtab_drain(evpol__childtab *t);
/* One poll round (evpol__child_poll_locked) over every registration of
 * `t`, whose owner's `lock` is held: the children gone, unlinked, as a
 * list. The first error that said nothing about a child is left in
 * *wait_errno, with that child's pid in *failed_pid. */
EVPOL_HIDDEN evpol__child *evpol__childtab_poll_locked(pthread_mutex_t *lock, evpol__childtab *t,
                                                       pid_t *failed_pid, int *wait_errno);
/* Number of registrations that still have a callback. */
EVPOL_HIDDEN size_t evpol__childtab_pending(const evpol__childtab *t);

/* What close does with the registrations it takes (CW-8), for the
 * watchers that reap only on a signal (MultiLoop, Safe, Fast): reap,
 * without a callback, every child that has already exited; count the
 * handlers that will never be called and the children still running,
 * which are left to the program. The table's owner locks (no log line). */
EVPOL_HIDDEN void evpol__childtab_reap_exited(const evpol__childtab *t, size_t *pending,
                                              size_t *running);
/* Then, with no lock held: one resource warning saying both, if any. */
EVPOL_HIDDEN void evpol__warn_closed_with_children(evpol_watcher *w, size_t pending,
                                                   size_t running);

/* ---- delivery ---- */

/* Call c's handler (which it has) with c->exit on the calling thread
 * through the gate: never after close has returned. Use it for every user
 * callback. */
EVPOL_HIDDEN void evpol__watcher_invoke(evpol_watcher *w, const evpol__child *c);

/* Deliver c's handler with c->exit on c->loop's thread through the gate
 * (THR-5, MUL-3, PFD), taking ownership of `c` (already unlinked from any
 * table; for Pidfd its fd already closed). Holds a watcher reference until
 * done. If the loop is closed (now or before the call runs) the callback is
 * not called and "Loop %p that handles pid %d is closed" is logged (CW-12).
 * A record without a handler is simply freed. Any thread; never allocates.
 * The caller holds a reference to w for the call. */
EVPOL_HIDDEN void evpol__deliver(evpol_watcher *w, evpol__child *c);

/* ---- the shared core of Threaded, Pidfd and MultiLoop ---- */

/* What outlives a call: the lock, the pid table and a pointer to the
 * watcher that close clears. Threaded's waiters and Pidfd's readers hold
 * core references; MultiLoop's reaper is joined by close. */
typedef struct evpol__wcore evpol__wcore;
typedef struct evpol__wcore_watcher {
    evpol_watcher base;
    evpol__wcore *core;
} evpol__wcore_watcher;

/* A block kept for reuse; whatever is kept starts with this link. */
typedef struct evpol__spare {
    struct evpol__spare *next;
} evpol__spare;

struct evpol__wcore {
    pthread_mutex_t lock;
    atomic_int refs;        /* the watcher's, plus one per thread/reader */
    evpol_watcher *watcher; /* NULL once closed */
    evpol__childtab tab;    /* pid -> current registration */
    evpol__spare *spare;    /* Threaded: blocks its waiting threads gave back */
};

/* A zeroed watcher of `size` bytes (a struct that starts with an
 * evpol__wcore_watcher) with `ops` and a fresh core (the watcher holds one
 * reference). */
EVPOL_HIDDEN int evpol__wcore_watcher_new(const struct evpol__watcher_ops *ops, size_t size,
                                          evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN evpol__wcore *evpol__wcore_of(evpol_watcher *w);
/* ops->destroy and ops->remove for such watchers. */
EVPOL_HIDDEN void evpol__wcore_watcher_destroy(evpol_watcher *w);
EVPOL_HIDDEN int evpol__wcore_watcher_remove(evpol_watcher *w, pid_t pid, evpol_error *err);
/* Close's first step: forget the watcher (add then fails, remove finds
 * nothing, and no thread or reader can reach it) and take the
 * registrations, which the caller then owns. */
EVPOL_HIDDEN evpol__childtab evpol__wcore_detach(evpol__wcore *core);
/* What ops->close shares: evpol__wcore_detach, warn when registrations were
 * pending (CW-8; `consequence` ends the line, "" for none) and hand each to
 * `release`, which frees it. */
EVPOL_HIDDEN void evpol__wcore_watcher_close(evpol_watcher *w, void (*release)(evpol__child *c),
                                             const char *consequence);
EVPOL_HIDDEN void evpol__wcore_ref(evpol__wcore *core);
/* The last unref frees what is left in the table. */
EVPOL_HIDDEN void evpol__wcore_unref(evpol__wcore *core);
/* Under core->lock: a reference to the watcher, or NULL once it is closed
 * or being destroyed. */
EVPOL_HIDDEN evpol_watcher *evpol__wcore_watcher_locked(evpol__wcore *core);
/* After a child exited and its record `c` left the table with c->exit
 * set: with `w` (from evpol__wcore_watcher_locked, or NULL) warn if the
 * status was lost (CW-11), deliver, and drop `w`; without, just free `c`.
 * No lock held. */
EVPOL_HIDDEN void evpol__wcore_finish(evpol_watcher *w, evpol__child *c);

#endif /* EVPOL_REGISTRY_INTERNAL_H */
