/*
 * sigchld-internal.h — what SafeChildWatcher and FastChildWatcher share
 * (CPython's BaseChildWatcher). Private to watcher_sigchld.c,
 * watcher_safe.c and watcher_fast.c.
 *
 * Both watchers hear SIGCHLD through the signal events of one attached loop
 * (SAF-1, FST-3) and differ only in how they reap: Safe polls each
 * registered pid, Fast calls waitpid(-1) until nothing is left. The shared
 * part owns the attachment (the loop's SIGCHLD handler and its switch from
 * loop to loop, SAF-5), the pid table, activity (SAF-2) and delivery.
 */
#ifndef EVPOL_SIGCHLD_INTERNAL_H
#define EVPOL_SIGCHLD_INTERNAL_H

#include "registry-internal.h"

typedef struct evpol__sigchld evpol__sigchld;
struct evpol__sigchld_link;

/* Reap what has exited, without holding s->lock on entry. Returns the
 * reaped records as a list linked through ->next, each unlinked from every
 * table, with ->exit set (records without a handler are only to be freed;
 * those whose exit is EVPOL_EXIT_LOST had their status reaped elsewhere,
 * CW-11). */
typedef evpol__child *(*evpol__reap_fn)(evpol__sigchld *s);

struct evpol__sigchld {
    evpol_watcher base; /* first: the ops receive &base */
    /* Guards loop, tab and the kind's own state. Never held while a user
     * callback or a loop function runs. */
    pthread_mutex_t lock;
    /* Serialises attach and close, which call the loop's signal functions
     * without `lock` held. Never taken by the SIGCHLD handler, so that a
     * handler running on the loop's thread can never wait for it. */
    pthread_mutex_t attach_lock;
    evpol_loop *loop;                  /* attached loop, referenced; under lock */
    struct evpol__sigchld_link *link;  /* handler argument; under attach_lock */
    evpol__childtab tab;               /* pid -> registration; under lock */
    evpol__reap_fn reap;
};

/* Initialise the shared part of a freshly allocated watcher. */
int evpol__sigchld_init(evpol__sigchld *s, const struct evpol__watcher_ops *ops,
                        evpol__reap_fn reap, evpol_error *err);
/* Free the tables and locks and the base (the caller frees the memory). */
void evpol__sigchld_fini(evpol__sigchld *s);

/* The ops Safe and Fast share, used as they are in both tables. */
/* ops->attach (CW-5, SAF-4, SAF-5). */
int evpol__sigchld_attach(evpol_watcher *w, evpol_loop *loop, evpol_error *err);
/* ops->get_loop: the attached loop, referenced, or NULL. */
evpol_loop *evpol__sigchld_get_loop(evpol_watcher *w);
/* ops->is_active (SAF-2, FST-3). */
int evpol__sigchld_is_active(evpol_watcher *w);
/* ops->remove (CW-4): the registration stays with no handler so that the
 * child is still reaped, never left a zombie. */
int evpol__sigchld_remove(evpol_watcher *w, pid_t pid, evpol_error *err);
/* The shared half of ops->close: detach from the loop (which may be
 * closed already), reap the children that already exited, warn about the
 * rest (evpol__childtab_reap_exited) and free every registration. */
void evpol__sigchld_close(evpol__sigchld *s);

/* Register or replace (CW-2) the handler for pid. Called with s->lock
 * held; returns the record in the table, or NULL when out of memory. */
evpol__child *evpol__sigchld_register_locked(evpol__sigchld *s, pid_t pid,
                                             const evpol__handler *h);
/* Hand reaped records to the attached loop's thread (each through
 * evpol__loop_post), or, with no loop attached, call them on the calling
 * thread. Used where the caller may not be on the loop's thread: add and
 * attach. Takes ownership of the list. */
void evpol__sigchld_post(evpol__sigchld *s, evpol__child *list);

#endif /* EVPOL_SIGCHLD_INTERNAL_H */
