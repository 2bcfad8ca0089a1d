/*
 * evpol-internal.h — what the library's source files share. Never installed.
 *
 * Layout of lib/:
 *   error.c      error codes, messages, the log hook, thread helpers
 *   sys.c        the syscall seam (evpol__sys) and its real table
 *   loop.c       evpol_loop on a libevent event_base
 *   policy.c     policies, the process-wide policy, per-thread loops
 *   watcher.c    the watcher interface: validation, dispatch, ref counting,
 *                the callback gate, delivery to loops, custom watchers
 *   childtab.c   pid -> registration table used by the watchers
 *   watcher_threaded.c, watcher_multiloop.c, watcher_safe.c,
 *   watcher_fast.c, watcher_pidfd.c   one file per watcher
 *   watcher_sigchld.c  what Safe and Fast share (SIGCHLD through the
 *                attached loop; CPython's BaseChildWatcher)
 *   spawn.c      evpol_loop_spawn
 */
#ifndef EVPOL_INTERNAL_H
#define EVPOL_INTERNAL_H

#include "evpol.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define EVPOL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define EVPOL_HIDDEN __attribute__((visibility("hidden")))

/* Type tags at the start of each public object, checked by evpol_is_*. */
enum {
    EVPOL_MAGIC_LOOP = 0x4c4f4f50,    /* "LOOP" */
    EVPOL_MAGIC_POLICY = 0x504f4c49,  /* "POLI" */
    EVPOL_MAGIC_WATCHER = 0x57415443, /* "WATC" */
    EVPOL_MAGIC_DEAD = 0x44454144,    /* "DEAD": freed */
};

/* ---- errors (error.c) ---- */

/* Fill *err (when non-NULL) and return `code`. */
EVPOL_HIDDEN int evpol__fail(evpol_error *err, int code, const char *fmt, ...) EVPOL_PRINTF(3, 4);
/* EVPOL_ESYSTEM with sys_errno = errnum; the message ends with strerror. */
EVPOL_HIDDEN int evpol__fail_sys(evpol_error *err, int errnum, const char *fmt, ...)
    EVPOL_PRINTF(3, 4);

/* ---- logging (error.c) ---- */

EVPOL_HIDDEN void evpol__log(evpol_log_level level, evpol_log_category cat, const char *fmt, ...)
    EVPOL_PRINTF(3, 4);
/* A debug line about `loop`: emitted only when the loop's debug flag is set
 * (LOOP-7). */
EVPOL_HIDDEN void evpol__log_debug(evpol_loop *loop, const char *fmt, ...) EVPOL_PRINTF(2, 3);
/* One deprecation warning line (ERR-3), unless the calling thread is inside
 * evpol__current_child_watcher. */
EVPOL_HIDDEN void evpol__deprecated(const char *what);

/* ---- policies (policy.c) ---- */

/* The current policy's watcher (*out_ref; out_ref not NULL), through its
 * (possibly overridden) get_child_watcher, with a reference for the caller
 * and without the deprecation warning: what spawn uses, as CPython's own
 * subprocess code silences that warning. */
EVPOL_HIDDEN int evpol__current_child_watcher(evpol_watcher **out_ref, evpol_error *err);
EVPOL_HIDDEN extern _Thread_local bool evpol__tls_quiet_deprecation;

/* ---- spawn (spawn.c) ---- */

/* Called after anything that can leave a spawn record without its callback
 * (a watcher or a loop closed): lets the next spawn look for orphans, which
 * it otherwise skips (the look is O(pending children)). Any thread. */
EVPOL_HIDDEN void evpol__spawn_orphans_may_exist(void);

/* ---- threads (error.c) ---- */

/* The main thread is the one whose tid equals the pid: right also in a
 * forked child, where the forking thread becomes the main thread. */
EVPOL_HIDDEN bool evpol__is_main_thread(void);
/* The calling thread's name (pthread_getname_np), never empty. */
EVPOL_HIDDEN void evpol__thread_name(char *buf, size_t size);

/* ---- syscall seam (sys.c) ---- */

/* The table in force, used as `evpol__sys.waitpid(...)`. Installed tables
 * are immutable and never freed, and the pointer to the current one is
 * atomic, so a thread that outlives its watcher (a Threaded waiter still
 * reaping) may call through the seam while a test installs another. */
extern EVPOL_HIDDEN _Atomic(const evpol_sys *) evpol__sys_table;
#define evpol__sys (*atomic_load_explicit(&evpol__sys_table, memory_order_acquire))


/* ---- loops (loop.c) ---- */

/* A unit of work posted to a loop from any thread. The node is owned by the
 * poster's record and lives until exactly one of fn or drop has been
 * called: fn on the loop's thread, or drop (on the thread closing the loop)
 * when the loop closes before fn ran. Posting never allocates, so an exit
 * already reaped can always be handed to its loop. */
typedef void (*evpol__drop_fn)(void *arg);
typedef struct evpol__post {
    struct evpol__post *next;
    evpol_callback_fn fn;
    evpol__drop_fn drop;
    void *arg;
} evpol__post;

/* Queue `node` and wake the loop. Returns ERUNTIME, calling neither fn nor
 * drop, when the loop is already closed. Any thread. */
EVPOL_HIDDEN int evpol__loop_post(evpol_loop *loop, evpol__post *node, evpol_error *err);
/* Hand the argument of `loop`'s handler for `signum` to the loop: it calls
 * drop(arg) when that handler goes (loop close, remove_signal_handler, or
 * another handler for the signal replacing it). For a
 * handler that must stay on its loop but whose owner is gone (a watcher
 * closed outside the main thread). Returns 0, or ERUNTIME when the loop is
 * closed or holds no handler with that argument: the caller keeps `arg`.
 * Any thread. */
EVPOL_HIDDEN int evpol__loop_give_signal_arg(evpol_loop *loop, int signum, void *arg,
                                             evpol__drop_fn drop);
/* The loop running in this thread or NULL. */
EVPOL_HIDDEN evpol_loop *evpol__running_loop(void);
/* Forget the running loop of this thread (fork child, POL-21). */
EVPOL_HIDDEN void evpol__reset_running_loop(void);

/* ---- watchers (watcher.c) ---- */

struct evpol__child;

/* What a registration calls: cb (the returncode) or status_cb (the whole
 * status), never both; neither once its handler was removed (CW-4). */
typedef struct evpol__handler {
    evpol_child_fn cb;
    evpol_child_status_fn status_cb;
    void *arg;
} evpol__handler;

/* The status `pid` exited with, as waitpid reported it (CW-10). A status
 * that is neither an exit nor a death by signal is logged as a warning
 * naming the pid and the raw status. */
EVPOL_HIDDEN void evpol__exit_decode(pid_t pid, int status, evpol_exit_status *out);
/* A status reaped elsewhere (CW-11): returncode 255, kind LOST. */
EVPOL_HIDDEN void evpol__exit_lost(evpol_exit_status *out);
/* waitpid failed with an error that says nothing about the child (neither
 * ECHILD nor EINTR): one error line with the errno and the pid asked for. */
EVPOL_HIDDEN void evpol__log_waitpid_error(const char *watcher, pid_t pid, int errnum);

/*
 * Every watcher starts with this base. The generic layer in watcher.c
 * validates arguments, rejects calls on closed watchers, and calls the ops
 * with the watcher's own lock NOT held.
 */
struct evpol_watcher_ops {
    const char *name;
    evpol_watcher_kind kind;
    /* add: `loop` is the loop to deliver on (referenced by the caller for
     * the duration of the call; take evpol_loop_ref to keep it). It is
     * non-NULL for watchers with needs_loop. `h` has exactly one callback
     * and is copied. */
    int (*add)(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
               evpol_error *err);
    /* 1 removed, 0 nothing to remove. */
    int (*remove)(evpol_watcher *w, pid_t pid, evpol_error *err);
    /* NULL attach: the watcher uses no loop of its own (attach_loop is
     * accepted and does nothing); NULL is_active: always active. */
    int (*attach)(evpol_watcher *w, evpol_loop *loop, evpol_error *err);
    int (*is_active)(evpol_watcher *w);
    /* Called exactly once, by the first evpol_watcher_close or by the last
     * unref. Release threads, fds, handlers; after it returns and the gate
     * is drained, no callback runs. */
    int (*close)(evpol_watcher *w, evpol_error *err);
    /* The spawn context; NULL when it means nothing to this watcher (the
     * generic layer counts contexts for every watcher anyway). */
    int (*enter)(evpol_watcher *w, evpol_error *err);
    int (*exit)(evpol_watcher *w, evpol_error *err);
    /* Free the watcher's memory (the struct that embeds the base). */
    void (*destroy)(evpol_watcher *w);
    /* The attached loop, referenced, or NULL; NULL get_loop: never one. */
    evpol_loop *(*get_loop)(evpol_watcher *w);
    /* add needs a delivery loop (Threaded, MultiLoop, Pidfd). */
    bool needs_loop;
};

struct evpol_watcher {
    uint32_t magic;
    atomic_int refs;
    atomic_bool closed;
    const struct evpol_watcher_ops *ops;
    /* Open spawn contexts (CW-9), counted here for every watcher so that an
     * exit without enter is an error whatever the watcher. */
    atomic_int contexts;
    /* Readers: callbacks running. Writer: close, waiting for them. */
    pthread_rwlock_t gate;
};

/* Initialise the base of a freshly allocated watcher (one reference). */
EVPOL_HIDDEN int evpol__watcher_init(evpol_watcher *w, const struct evpol_watcher_ops *ops,
                                     evpol_error *err);
/* Tear down the base; called by each ops->destroy before freeing. */
EVPOL_HIDDEN void evpol__watcher_fini(evpol_watcher *w);
EVPOL_HIDDEN bool evpol__watcher_closed(evpol_watcher *w);
/* Take a reference unless the count already reached zero (the watcher is
 * being destroyed by its last unref): for threads that find the watcher
 * through their own records rather than through a reference they hold. */
EVPOL_HIDDEN bool evpol__watcher_try_ref(evpol_watcher *w);

/* Call c's handler (which it has) with c->exit on the calling thread
 * through the gate: never after close has returned. Use it for every user
 * callback. */
EVPOL_HIDDEN void evpol__watcher_invoke(evpol_watcher *w, const struct evpol__child *c);

/* Deliver c's handler with c->exit on c->loop's thread through the gate
 * (THR-5, MUL-3, PFD), taking ownership of `c` (already unlinked from any
 * table; for Pidfd its fd already closed). Holds a watcher reference until
 * done. If the loop is closed (now or before the call runs) the callback is
 * not called and "Loop %p that handles pid %d is closed" is logged (CW-12).
 * A record without a handler is simply freed. Any thread; never allocates. */
EVPOL_HIDDEN void evpol__deliver(evpol_watcher *w, struct evpol__child *c);

/* The CW-11 warning for a child reaped elsewhere. */
EVPOL_HIDDEN void evpol__warn_unknown_child(pid_t pid);

/* ---- the shared core of Threaded and Pidfd (wcore.c) ---- */

/* What outlives a call: the lock, the pid table and a pointer to the
 * watcher that close clears. Threads and readers hold core references. */
typedef struct evpol__wcore evpol__wcore;
typedef struct evpol__core_watcher {
    evpol_watcher base;
    evpol__wcore *core;
} evpol__core_watcher;

/* A watcher with `ops` and a fresh core (the watcher holds one reference). */
EVPOL_HIDDEN int evpol__core_watcher_new(const struct evpol_watcher_ops *ops,
                                         evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN evpol__wcore *evpol__core_of(evpol_watcher *w);
/* ops->destroy and ops->remove for such watchers. */
EVPOL_HIDDEN void evpol__core_watcher_destroy(evpol_watcher *w);
EVPOL_HIDDEN int evpol__core_watcher_remove(evpol_watcher *w, pid_t pid, evpol_error *err);
EVPOL_HIDDEN void evpol__wcore_ref(evpol__wcore *core);
/* The last unref frees what is left in the table. */
EVPOL_HIDDEN void evpol__wcore_unref(evpol__wcore *core);

/* Constructors of the built-in watchers (one file each). */
EVPOL_HIDDEN int evpol__threaded_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__multiloop_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__safe_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__fast_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__pidfd_new(evpol_watcher **out, evpol_error *err);
/* Does pidfd_open work in this process (through the seam)? */
EVPOL_HIDDEN bool evpol__pidfd_usable(void);

/* ---- pid table (childtab.c) ---- */

/* One registered child. `loop` holds a reference when non-NULL. A handler
 * without a callback marks a child whose handler was removed but that is
 * still to be reaped, so that no zombie is left (CW-4). */
typedef struct evpol__child {
    pid_t pid;
    evpol__handler h;
    evpol_loop *loop;
    int fd;     /* per-watcher use (Pidfd: the pidfd), else -1 */
    void *data; /* per-watcher use */
    struct evpol__child *next;
    evpol_exit_status exit; /* set by whoever reaped the child */
    /* Used by evpol__deliver. */
    evpol_watcher *watcher;
    evpol__post post;
} evpol__child;

/* Has the record a handler to call (not removed, CW-4)? */
static inline bool evpol__child_armed(const evpol__child *c)
{
    return c->h.cb || c->h.status_cb;
}

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
/* Allocate a child record (fd = -1) with a copy of `h` (NULL: none);
 * takes a loop reference when loop set. */
EVPOL_HIDDEN evpol__child *evpol__child_new(pid_t pid, const evpol__handler *h,
                                            evpol_loop *loop);
/* Drop the loop reference and free. NULL is ignored. */
EVPOL_HIDDEN void evpol__child_free(evpol__child *c);
/* remove_child_handler on a registered record (CW-4): 1 when it had a
 * callback, which it no longer has; 0 when it had none. The record stays,
 * so that whatever reaps the child still does and no zombie is left.
 * *old_loop gets the loop reference to drop once the lock is released. */
EVPOL_HIDDEN int evpol__child_disarm(evpol__child *c, evpol_loop **old_loop);

/* What close does with the registrations it takes (CW-8), for the
 * watchers that reap only on a signal (MultiLoop, Safe, Fast): reap,
 * without a callback, every child that has already exited; count the
 * handlers that will never be called and the children still running,
 * which are left to the program. The table's lock held (no log line). */
EVPOL_HIDDEN void evpol__childtab_reap_exited(const evpol__childtab *t, size_t *pending,
                                              size_t *running);
/* Then, with no lock held: one resource warning saying both, if any. */
EVPOL_HIDDEN void evpol__warn_closed_with_children(evpol_watcher *w, size_t pending,
                                                   size_t running);

/* A block kept for reuse; whatever is kept starts with this link. */
typedef struct evpol__spare {
    struct evpol__spare *next;
} evpol__spare;

/* The core's fields (wcore.c), after evpol__childtab. */
struct evpol__wcore {
    pthread_mutex_t lock;
    atomic_int refs;        /* the watcher's, plus one per thread/reader */
    evpol_watcher *watcher; /* NULL once closed */
    evpol__childtab tab;    /* pid -> current registration */
    evpol__spare *spare;    /* Threaded: blocks its waiting threads gave back */
};

/* What ops->close shares: forget the watcher, warn when registrations were
 * pending (CW-8; `consequence` ends the line, "" for none) and hand each to
 * `release`, which frees it. */
EVPOL_HIDDEN void evpol__core_watcher_close(evpol_watcher *w, void (*release)(evpol__child *c),
                                            const char *consequence);
/* Under core->lock: a reference to the watcher, or NULL once it is closed
 * or being destroyed. */
EVPOL_HIDDEN evpol_watcher *evpol__wcore_watcher_locked(evpol__wcore *core);
/* After a child exited and its record `c` left the table with c->exit
 * set: with `w` (from evpol__wcore_watcher_locked, or NULL) warn if the
 * status was lost (CW-11), deliver, and drop `w`; without, just free `c`.
 * No lock held. */
EVPOL_HIDDEN void evpol__wcore_finish(evpol_watcher *w, evpol__child *c);

#endif /* EVPOL_INTERNAL_H */
