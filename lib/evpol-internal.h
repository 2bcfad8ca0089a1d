/*
 * evpol-internal.h — what the library's source files share. Never installed.
 *
 * Layout of lib/:
 *   error.c      error codes, messages, the log hook, thread helpers
 *   sys.c        the syscall seam (evpol__sys) and its real table
 *   spawn_clone.c  the real table's spawn (clone fast path, posix_spawnp)
 *   loop.c       evpol_loop on a libevent event_base
 *   policy.c     policies, the process-wide policy, per-thread loops
 *   watcher.c    the watcher interface: validation, dispatch, ref counting,
 *                custom watchers
 *   registry.c   what every built-in watcher does with a registered child:
 *                its state, the pid table, replace/remove, status
 *                decoding, close, delivery to loops and the callback gate;
 *                the core Threaded, Pidfd and MultiLoop share
 *                (registry-internal.h)
 *   watcher_threaded.c, watcher_pidfd.c, watcher_multiloop.c,
 *   watcher_sigchld.c (Safe and Fast)   how each watcher learns of an exit
 *   spawn.c      evpol_loop_spawn
 *
 * The life of an exit. spawn.c (or the program) registers a pid through
 * watcher.c, which validates and calls the watcher's ops->add; the
 * watcher file puts a registration, pending, in its table (registry.c,
 * whose header lists the states a registration goes through; Threaded,
 * Pidfd and MultiLoop keep theirs in the shared core, evpol__wcore).
 * From the kernel on, an exit passes through three files: the watcher's
 * own, registry.c and loop.c.
 *   Threaded   watcher_threaded.c: the pid's waiting thread returns from
 *              waitpid -> registry.c: decode, take the registration out of
 *              the table, evpol__deliver -> loop.c: evpol__loop_post wakes
 *              the registering loop, whose thread runs registry.c's
 *              delivery, which calls the callback through the gate.
 *   Pidfd      loop.c: the pidfd's reader fires on the registering loop ->
 *              watcher_pidfd.c: waitpid(pid, WNOHANG), close the pidfd ->
 *              registry.c: decode, deliver -> loop.c post -> callback.
 *   MultiLoop  watcher_multiloop.c: the SIGCHLD handler writes to the pipe,
 *              the reaper thread wakes -> registry.c: one poll round over
 *              the core's table (evpol__childtab_poll_locked), the
 *              watcher reached through the core, deliver -> loop.c post
 *              -> callback on each registering loop.
 *   Safe, Fast loop.c: the attached loop's SIGCHLD event fires on its
 *              thread -> watcher_sigchld.c: the reap (Safe: a poll round in
 *              registry.c; Fast: waitpid(-1) until nothing is left) ->
 *              registry.c: the callback through the gate, on that thread.
 *              An exit found at add or attach is posted through loop.c.
 * For evpol_loop_spawn the callback at the end is spawn.c's: it hands its
 * own record (spawn_rec, allocated before the process existed, so that
 * nothing allocates after the exit) once more to the spawning loop through
 * loop.c, where on_exit runs (SUB-3). spawn_rec is not a registration
 * and has none of its states: it is what one watcher callback carries
 * (its handler's argument), for any watcher including a custom one, and
 * outlives the registration when the watcher or the loop closes first
 * (spawn.c's orphan sweep frees it then: for MultiLoop, as for Threaded
 * and Pidfd, once the watcher or the delivery loop is closed).
 */
#ifndef EVPOL_INTERNAL_H
#define EVPOL_INTERNAL_H

#include "evpol.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define EVPOL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define EVPOL_HIDDEN __attribute__((visibility("hidden")))

/* The calling thread's kernel id, cached per thread (sys.c): glibc's
 * gettid() is a system call every time, and the lock assertions below ask
 * in every `_locked` call. 0 until the thread first asks; the child of a
 * fork() forgets it (its one thread has a new id) in an atfork handler
 * that sys.c registers before any thread can have asked. */
EVPOL_HIDDEN extern _Thread_local pid_t evpol__tid_cache;
EVPOL_HIDDEN pid_t evpol__tid_fill(void);

static inline pid_t evpol__tid(void)
{
    pid_t tid = evpol__tid_cache;
    return tid ? tid : evpol__tid_fill();
}

/* EVPOL__ASSERT_LOCKED(m): the precondition of every `_locked` function,
 * checked when NDEBUG is not defined (libevent's EVLOCK_ASSERT_LOCKED).
 * glibc records the owner of every mutex type, so the check is "held by
 * this thread"; elsewhere it can only be "held". */
#ifdef NDEBUG
#define EVPOL__ASSERT_LOCKED(m) ((void)0)
#else
#define EVPOL__ASSERT_LOCKED(m) assert(evpol__mutex_held(m))
static inline bool evpol__mutex_held(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    return m->__data.__owner == evpol__tid();
#else
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
        pthread_mutex_unlock(m);
    return rc == EBUSY;
#endif
}
#endif

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

/* The real table's spawn (spawn_clone.c): the clone fast path, else
 * posix_spawnp. Returns 0 or an errno value, as evpol_sys.spawn. */
EVPOL_HIDDEN int evpol__real_spawn(pid_t *pid, const evpol_sys_spawn_request *req);


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

/* What a registration calls: cb (the returncode) or status_cb (the whole
 * status), never both; neither once its handler was removed (CW-4). */
typedef struct evpol__handler {
    evpol_child_fn cb;
    evpol_child_status_fn status_cb;
    void *arg;
} evpol__handler;

/*
 * Every watcher starts with this base. The generic layer in watcher.c
 * validates arguments, rejects calls on closed watchers, and calls the ops
 * with the watcher's own lock NOT held.
 */
struct evpol__watcher_ops {
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
    const struct evpol__watcher_ops *ops;
    /* Open spawn contexts (CW-9), counted here for every watcher so that an
     * exit without enter is an error whatever the watcher. */
    atomic_int contexts;
    /* Readers: callbacks running. Writer: close, waiting for them. */
    pthread_rwlock_t gate;
};

/* Initialise the base of a freshly allocated watcher (one reference). */
EVPOL_HIDDEN int evpol__watcher_init(evpol_watcher *w, const struct evpol__watcher_ops *ops,
                                     evpol_error *err);
/* Tear down the base; called by each ops->destroy before freeing. */
EVPOL_HIDDEN void evpol__watcher_fini(evpol_watcher *w);
EVPOL_HIDDEN bool evpol__watcher_closed(evpol_watcher *w);
/* Take a reference unless the count already reached zero (the watcher is
 * being destroyed by its last unref): for threads that find the watcher
 * through their own records rather than through a reference they hold. */
EVPOL_HIDDEN bool evpol__watcher_try_ref(evpol_watcher *w);
/* The watcher whose callback this thread is running (set by
 * evpol__watcher_invoke), so that a callback may close its own watcher
 * without waiting for itself. */
EVPOL_HIDDEN extern _Thread_local evpol_watcher *evpol__tls_in_callback;

/* Constructors of the built-in watchers (one file each). */
EVPOL_HIDDEN int evpol__threaded_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__multiloop_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__safe_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__fast_new(evpol_watcher **out, evpol_error *err);
EVPOL_HIDDEN int evpol__pidfd_new(evpol_watcher **out, evpol_error *err);
/* Does pidfd_open work in this process (through the seam)? */
EVPOL_HIDDEN bool evpol__pidfd_usable(void);

#endif /* EVPOL_INTERNAL_H */
