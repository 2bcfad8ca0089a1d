/*
 * registry-internal.h — the registry every built-in watcher keeps its
 * children in (registry.c). Never installed.
 *
 * A registration (evpol__child) is one registered pid. It is in one of
 * four states, told apart by its fields rather than by a tag:
 *   pending      in a watcher's table with a handler (evpol__child_armed);
 *   removed      in the table without a handler: remove_child_handler
 *                (CW-4) cleared it, but the watcher still reaps the child
 *                so that no zombie is left;
 *   exited-kept  out of every table with exit set, on its way to its loop
 *                (or, for Fast, kept for a registration that may follow,
 *                FST-5);
 *   lost         exit.kind == EVPOL_EXIT_LOST: someone else reaped the
 *                child (CW-11, evpol__child_lost).
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

/* One registered child. `loop` holds a reference when non-NULL. */
typedef struct evpol__child {
    pid_t pid;
    evpol__handler h;
    evpol_loop *loop;
    int fd;     /* per-watcher use (Pidfd: the pidfd), else -1 */
    void *data; /* per-watcher use (Pidfd: its reader's side) */
    struct evpol__child *next;
    evpol_exit_status exit; /* set by whoever reaped the child */
    /* Used by evpol__deliver. */
    evpol_watcher *watcher;
    evpol__post post;
} evpol__child;

/* Pending (a handler to call) rather than removed (CW-4)? */
static inline bool evpol__child_armed(const evpol__child *c)
{
    return c->h.cb || c->h.status_cb;
}

/* Was its status reaped elsewhere (CW-11)? */
static inline bool evpol__child_lost(const evpol__child *c)
{
    return c->exit.kind == EVPOL_EXIT_LOST;
}

/* Allocate a child record (fd = -1) with a copy of `h` (NULL: none);
 * takes a loop reference when loop set. */
EVPOL_HIDDEN evpol__child *evpol__child_new(pid_t pid, const evpol__handler *h,
                                            evpol_loop *loop);
/* Drop the loop reference and free. NULL is ignored. */
EVPOL_HIDDEN void evpol__child_free(evpol__child *c);
/* A second registration for a registered pid (CW-2): `c` gets `h` and
 * delivers to `loop` (referenced; NULL: none) from now on. *old_loop gets
 * the previous loop reference, to drop once the owner's lock is released. */
EVPOL_HIDDEN void evpol__child_replace(evpol__child *c, const evpol__handler *h,
                                       evpol_loop *loop, evpol_loop **old_loop);
/* remove_child_handler on a registered record (CW-4): 1 when it had a
 * callback, which it no longer has; 0 when it had none. The record stays,
 * so that whatever reaps the child still does and no zombie is left.
 * *old_loop gets the loop reference to drop once the lock is released. */
EVPOL_HIDDEN int evpol__child_disarm(evpol__child *c, evpol_loop **old_loop);

/* waitpid(c->pid, WNOHANG) for a registration of a watcher that polls
 * (Safe, MultiLoop), under the owner's `lock`, so that one exit is taken by
 * exactly one poller (the loser would see ECHILD and report a false 255).
 * True when the child is gone, with c->exit set (EVPOL_EXIT_LOST when its
 * status was reaped elsewhere, CW-11). An error that says nothing about the
 * child is left in *wait_errno (when it is still 0), for the caller to log
 * with evpol__log_waitpid_error once the lock is released. */
EVPOL_HIDDEN bool evpol__child_poll_locked(pthread_mutex_t *lock, evpol__child *c,
                                           int *wait_errno);
/* Free a list of records linked through ->next without calling anything. */
EVPOL_HIDDEN void evpol__child_list_free(evpol__child *list);
/* Hand each record of a list of reaped ones (exit set, out of every table)
 * to its loop with evpol__deliver, after the CW-11 warning for a lost one
 * that still has a handler. Takes ownership of the list; the caller holds
 * a reference to `w` and no lock. */
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
 * A record without a handler is simply freed. Any thread; never allocates. */
EVPOL_HIDDEN void evpol__deliver(evpol_watcher *w, evpol__child *c);

/* ---- the shared core of Threaded and Pidfd ---- */

/* What outlives a call: the lock, the pid table and a pointer to the
 * watcher that close clears. Threads and readers hold core references. */
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

/* A watcher with `ops` and a fresh core (the watcher holds one reference). */
EVPOL_HIDDEN int evpol__wcore_watcher_new(const struct evpol__watcher_ops *ops,
                                          evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN evpol__wcore *evpol__wcore_of(evpol_watcher *w);
/* ops->destroy and ops->remove for such watchers. */
EVPOL_HIDDEN void evpol__wcore_watcher_destroy(evpol_watcher *w);
EVPOL_HIDDEN int evpol__wcore_watcher_remove(evpol_watcher *w, pid_t pid, evpol_error *err);
/* What ops->close shares: forget the watcher, warn when registrations were
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
