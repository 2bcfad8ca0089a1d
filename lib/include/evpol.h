/*
 * evpol.h — asyncio's event-loop policies and child watchers for libevent.
 *
 * This header is the manual. Every public type is opaque; every function
 * says who owns each pointer, from which threads it may be called and which
 * errors it returns.
 *
 * Conventions used throughout
 * ---------------------------
 * - Fallible functions return 0 (EVPOL_OK) on success or a negative
 *   evpol_errcode. Functions that answer a yes/no question return 1 or 0,
 *   or a negative code when the question itself is invalid.
 * - Every fallible function takes a last argument `evpol_error *err`. It may
 *   be NULL; otherwise it receives the code, a readable message and, for
 *   EVPOL_ESYSTEM, the errno of the failed system call. On success *err is
 *   left untouched.
 * - No input makes the library abort, assert or crash (clause ERR-1): NULL
 *   pointers, objects of the wrong type, closed objects, negative or unknown
 *   pids and calls from the wrong thread are all reported as errors.
 * - Loops, policies and watchers are reference counted. A `_new` function
 *   hands the caller one reference; `_unref` drops it. Getters return
 *   borrowed pointers unless they say otherwise: take a reference with
 *   `_ref` to keep one beyond the lifetime stated at the getter.
 * - Warnings and debug lines go to the log hook (evpol_set_log_hook), never
 *   straight to a stream, so that programs and tests can filter them.
 *
 * Python asyncio names map to C as `asyncio.get_event_loop_policy()` ->
 * evpol_get_event_loop_policy(), a policy method `get_event_loop` ->
 * evpol_policy_get_event_loop(policy, ...), a watcher method
 * `add_child_handler` -> evpol_watcher_add_child_handler(watcher, ...).
 * Clause IDs (POL-1, CW-4, ...) refer to the specification, conformance/SPEC.md.
 */
#ifndef EVPOL_H
#define EVPOL_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EVPOL_VERSION_MAJOR 0
#define EVPOL_VERSION_MINOR 1
#define EVPOL_VERSION_PATCH 0

#if defined(__GNUC__)
#define EVPOL_API __attribute__((visibility("default")))
#else
#define EVPOL_API
#endif

struct event_base; /* libevent */
/* Declared by <signal.h> only with POSIX features enabled; the header must
 * also compile under plain -std=c11. */
struct sigaction;

/* ------------------------------------------------------------------------ */
/* Errors (ERR-1)                                                           */
/* ------------------------------------------------------------------------ */

typedef enum evpol_errcode {
    EVPOL_OK = 0,
    /* The call is not valid in the current state: no current loop, a closed
     * loop or watcher, the wrong thread, an inactive watcher (Python's
     * RuntimeError). */
    EVPOL_ERUNTIME = -1,
    /* An object of the wrong type, or a method table missing a required
     * method (Python's TypeError). */
    EVPOL_ETYPE = -2,
    /* An argument out of range: a NULL pointer where one is required, a
     * negative pid, an unknown signal number (Python's ValueError). */
    EVPOL_EINVAL = -3,
    /* Memory could not be allocated. */
    EVPOL_ENOMEM = -4,
    /* A system call failed; evpol_error.sys_errno holds its errno. */
    EVPOL_ESYSTEM = -5,
    /* The operation is not available here (e.g. pidfd_open missing or
     * refused by a seccomp filter, an abstract policy without watchers). */
    EVPOL_ENOTSUP = -6,
} evpol_errcode;

#define EVPOL_ERROR_MESSAGE_MAX 256

typedef struct evpol_error {
    int code;          /* an evpol_errcode */
    int sys_errno;     /* errno of the failed system call, or 0 */
    char message[EVPOL_ERROR_MESSAGE_MAX];
} evpol_error;

/* A static, human-readable name for an error code ("runtime error", ...).
 * Never NULL, also for unknown codes. Thread-safe. */
EVPOL_API const char *evpol_strerror(int code);

/* ------------------------------------------------------------------------ */
/* Logging (ERR-2, ERR-3, LOOP-7)                                           */
/* ------------------------------------------------------------------------ */

typedef enum evpol_log_level {
    EVPOL_LOG_DEBUG = 0,
    EVPOL_LOG_INFO = 1,
    EVPOL_LOG_WARNING = 2,
    EVPOL_LOG_ERROR = 3,
} evpol_log_level;

typedef enum evpol_log_category {
    EVPOL_LOG_CAT_RUNTIME = 0,     /* behaviour worth knowing (unknown pid, ...) */
    EVPOL_LOG_CAT_DEPRECATION = 1, /* a deprecated call (ERR-3) */
    EVPOL_LOG_CAT_RESOURCE = 2,    /* something released late or leaked */
    EVPOL_LOG_CAT_DEBUG = 3,       /* loop debug lines (LOOP-7) */
} evpol_log_category;

/* The log hook. Called on whichever thread produced the line (a watcher's
 * waiting thread, a loop's thread, the caller's thread); never from a signal
 * handler. `msg` is valid only during the call. The hook must not call
 * evpol_set_log_hook. */
typedef void (*evpol_log_fn)(evpol_log_level level, evpol_log_category category,
                             const char *msg, void *arg);

/* Replace the process-wide log hook; NULL restores the default, which writes
 * "evpol: LEVEL: CATEGORY: message" to stderr. Once this returns, the old
 * hook is not running and will not be called again. Thread-safe. */
EVPOL_API void evpol_set_log_hook(evpol_log_fn fn, void *arg);

/* Lines below this level are not passed to the hook (default: DEBUG, i.e.
 * everything; loop debug lines additionally need the loop's debug flag). */
EVPOL_API void evpol_set_log_level(evpol_log_level min_level);

/* ------------------------------------------------------------------------ */
/* Loops (LOOP-1 ... LOOP-7)                                                */
/* ------------------------------------------------------------------------ */

typedef struct evpol_loop evpol_loop;

/* Backends for new loops (POL-19, POL-20). DEFAULT is libevent's preferred
 * backend on this machine (epoll on Linux). */
typedef enum evpol_backend {
    EVPOL_BACKEND_DEFAULT = 0,
    EVPOL_BACKEND_EPOLL = 1,
    EVPOL_BACKEND_POLL = 2,
    EVPOL_BACKEND_SELECT = 3,
} evpol_backend;

typedef void (*evpol_callback_fn)(void *arg);

/* Create a loop with its own event_base on `backend`. The caller owns one
 * reference. Errors: EINVAL (out NULL, unknown backend), ENOTSUP (backend not
 * compiled into libevent, or disabled with EVENT_NO<BACKEND> in the
 * environment), ESYSTEM (the backend's own setup failed, e.g. out of fds),
 * ENOMEM. Thread-safe. */
EVPOL_API int evpol_loop_new(evpol_backend backend, evpol_loop **out, evpol_error *err);

/* Wrap an existing event_base (LOOP-1). The loop does not take ownership of
 * `base`: closing the loop releases evpol's events on it, never the base.
 * The base must have been created after evthread_use_pthreads() (evpol calls
 * it at load time, so any base made after linking evpol qualifies).
 * Errors: EINVAL, ENOMEM. */
EVPOL_API int evpol_loop_new_from_base(struct event_base *base, evpol_loop **out,
                                       evpol_error *err);

/* Reference counting. unref of the last reference closes the loop if needed
 * and frees it. A running loop holds a reference of its own, so the last
 * unref can never free a running loop. Thread-safe. NULL is ignored. */
EVPOL_API evpol_loop *evpol_loop_ref(evpol_loop *loop);
EVPOL_API void evpol_loop_unref(evpol_loop *loop);

/* True when `p` points at a live evpol loop (type check, POL-12). */
EVPOL_API bool evpol_is_loop(const void *p);

/* The underlying event_base (borrowed, valid until the loop is closed), or
 * NULL when the loop is closed or not a loop. */
EVPOL_API struct event_base *evpol_loop_base(evpol_loop *loop);

/* Run the loop in the calling thread until evpol_loop_stop (LOOP-2). While it
 * runs, it is this thread's running loop (LOOP-6). A stop requested before
 * run makes run return after one pass over what is ready.
 * Errors: ERUNTIME (closed, already running, or another loop is already
 * running in this thread), EINVAL. */
EVPOL_API int evpol_loop_run(evpol_loop *loop, evpol_error *err);

/* Ask a running loop to return from evpol_loop_run. Any thread.
 * Errors: ERUNTIME (closed), EINVAL. */
EVPOL_API int evpol_loop_stop(evpol_loop *loop, evpol_error *err);

/* 1 or 0; EINVAL when `loop` is not a loop. Any thread. */
EVPOL_API int evpol_loop_is_running(evpol_loop *loop);
EVPOL_API int evpol_loop_is_closed(evpol_loop *loop);

/* Close the loop: releases its events, pending calls (each dropped call's
 * owner is told, see evpol_loop_call_soon_threadsafe) and, when evpol created
 * it, the event_base. Closing a closed loop does nothing and returns 0.
 * Errors: ERUNTIME (the loop is running), EINVAL. Any thread. */
EVPOL_API int evpol_loop_close(evpol_loop *loop, evpol_error *err);

/* Schedule fn(arg) on the loop's thread at its next iteration and wake the
 * loop (LOOP-3). Safe from any thread. Calls run in the order scheduled.
 * If the loop is closed before fn runs, fn is not called. Errors: ERUNTIME
 * (closed), EINVAL (fn NULL), ENOMEM. */
EVPOL_API int evpol_loop_call_soon_threadsafe(evpol_loop *loop, evpol_callback_fn fn,
                                              void *arg, evpol_error *err);

/* Schedule fn(arg) on the loop's thread after `msec` milliseconds. Any thread.
 * The timer belongs to the loop; it is released when it fires or the loop
 * closes. Errors: ERUNTIME (closed), EINVAL, ENOMEM. */
EVPOL_API int evpol_loop_call_later(evpol_loop *loop, unsigned msec, evpol_callback_fn fn,
                                    void *arg, evpol_error *err);

/* Call fn(signum, arg) on the loop's thread when `signum` arrives (LOOP-4),
 * through libevent's signal events. A second handler for the same signal
 * replaces the first. Main thread only.
 * Errors: ERUNTIME (not the main thread, closed), EINVAL (bad signum or fn),
 * ENOMEM. */
typedef void (*evpol_signal_fn)(int signum, void *arg);
EVPOL_API int evpol_loop_add_signal_handler(evpol_loop *loop, int signum, evpol_signal_fn fn,
                                            void *arg, evpol_error *err);
/* Returns 1 if a handler was removed, 0 if none was set. Main thread only.
 * Errors as above. */
EVPOL_API int evpol_loop_remove_signal_handler(evpol_loop *loop, int signum, evpol_error *err);

/* Call fn(fd, arg) on the loop's thread whenever `fd` is readable (LOOP-5).
 * A second reader on the same fd replaces the first. The loop does not own
 * `fd`. Any thread. Errors: ERUNTIME (closed), EINVAL, ENOMEM, ESYSTEM (the
 * backend refused the fd: epoll will not watch a regular file). */
typedef void (*evpol_fd_fn)(int fd, void *arg);
EVPOL_API int evpol_loop_add_reader(evpol_loop *loop, int fd, evpol_fd_fn fn, void *arg,
                                    evpol_error *err);
/* Returns 1 if a reader was removed, 0 if none was registered. */
EVPOL_API int evpol_loop_remove_reader(evpol_loop *loop, int fd, evpol_error *err);

/* Debug flag (LOOP-7): debug-level lines about this loop reach the log hook
 * only while it is set. Any thread. */
EVPOL_API int evpol_loop_set_debug(evpol_loop *loop, bool enabled, evpol_error *err);
EVPOL_API int evpol_loop_get_debug(evpol_loop *loop);

/* The loop running in the calling thread (LOOP-6), borrowed: valid while it
 * runs. Errors: ERUNTIME "no running event loop". */
EVPOL_API int evpol_get_running_loop(evpol_loop **out, evpol_error *err);

/* ------------------------------------------------------------------------ */
/* Child watchers (CW-1 ... CW-12, THR, MUL, SAF, FST, PFD)                 */
/* ------------------------------------------------------------------------ */

typedef struct evpol_watcher evpol_watcher;

/* Called once when the child exits: returncode is the exit code, or -N when
 * signal N killed it (CW-10), or 255 when the exit status was lost (CW-11)
 * or was neither an exit nor a death by signal (CW-10; a warning naming the
 * pid and the raw status is logged then). 255 alone cannot tell those from
 * exit(255): a product that needs to, registers an evpol_child_status_fn.
 * Each watcher documents the thread it runs on (CW-3); see below. */
typedef void (*evpol_child_fn)(pid_t pid, int returncode, void *arg);

/* How a child ended, for evpol_child_status_fn. */
typedef enum evpol_exit_kind {
    /* It exited: `code` is its exit status (0..255). */
    EVPOL_EXIT_EXITED = 1,
    /* A signal killed it: `signal`, and `core_dumped`. */
    EVPOL_EXIT_KILLED = 2,
    /* Its status was reaped by someone else (waitpid said ECHILD, or the
     * pid was gone at registration): nothing is known (CW-11). */
    EVPOL_EXIT_LOST = 3,
    /* waitpid reported a status that is neither an exit nor a death by
     * signal (only a kernel or seam bug produces one): see `raw`. */
    EVPOL_EXIT_UNKNOWN = 4,
} evpol_exit_kind;

/* The whole exit status of a child. Passed by const pointer and valid only
 * during the callback; copy what you keep. Later versions may append
 * members: `size` is the size of the struct the library filled, so read a
 * member appended after 0.1 only when offsetof(member) < size. */
typedef struct evpol_exit_status {
    size_t size;
    evpol_exit_kind kind;
    int code;         /* EXITED: the exit status; else 0 */
    int signal;       /* KILLED: the signal number; else 0 */
    bool core_dumped; /* KILLED: the kernel wrote a core dump */
    int raw;          /* the status waitpid reported; 0 for LOST */
    int returncode;   /* what an evpol_child_fn gets for the same exit */
} evpol_exit_status;

/* Called once when the child exits, like evpol_child_fn, with the whole
 * status instead of the returncode; same threads (CW-3). */
typedef void (*evpol_child_status_fn)(pid_t pid, const evpol_exit_status *status, void *arg);

typedef enum evpol_watcher_kind {
    EVPOL_WATCHER_THREADED = 1,
    EVPOL_WATCHER_MULTILOOP = 2,
    EVPOL_WATCHER_SAFE = 3,
    EVPOL_WATCHER_FAST = 4,
    EVPOL_WATCHER_PIDFD = 5,
    /* Pidfd when pidfd_open works in this process, else Threaded (PFD-4). */
    EVPOL_WATCHER_AUTO = 6,
    EVPOL_WATCHER_CUSTOM = 7,
} evpol_watcher_kind;

/*
 * The built-in watchers. Each `new` hands the caller one reference.
 *
 * Threaded (THR): one small-stack thread per child blocks in waitpid(pid).
 *   Works with loops in any thread; O(1) per exit; one thread per pending
 *   child. Callback: on the loop the registering thread was running (or the
 *   spawn's loop), through call_soon_threadsafe. Always active.
 * MultiLoop (MUL): a process-wide SIGCHLD handler (sigaction, SA_RESTART)
 *   installed by the first attach_loop, whose handler only writes to a pipe;
 *   one internal reaper thread then polls each registered pid with
 *   waitpid(pid, WNOHANG): O(n) per SIGCHLD. Callback: on the registering
 *   thread's loop. Active while its handler is installed.
 * Safe (SAF): SIGCHLD through the attached (main-thread) loop's signal
 *   events; polls each registered pid: O(n). Callback: on the attached loop's
 *   thread. Active only while that loop is running.
 * Fast (FST): as Safe, but reaps with waitpid(-1) until nothing is left: O(1)
 *   per exit, and it reaps other code's children too. Registration needs an
 *   open spawn context.
 * Pidfd (PFD): pidfd_open per child and a reader on the registering loop; no
 *   signals, no threads: O(1). Callback: on the registering thread's loop.
 *   Always active. Fails with ENOTSUP where pidfd_open does not work.
 */
EVPOL_API int evpol_watcher_new(evpol_watcher_kind kind, evpol_watcher **out, evpol_error *err);

EVPOL_API evpol_watcher *evpol_watcher_ref(evpol_watcher *w);
/* Drops a reference; the last one closes the watcher if needed and frees it. */
EVPOL_API void evpol_watcher_unref(evpol_watcher *w);

/* True when `p` points at a live evpol watcher (type check, POL-15). */
EVPOL_API bool evpol_is_watcher(const void *p);

/* The kind, or a negative code when `w` is not a watcher. For AUTO the kind
 * actually chosen (PIDFD or THREADED) is returned. */
EVPOL_API int evpol_watcher_kind_of(evpol_watcher *w);
/* "ThreadedChildWatcher", ... or "custom"; never NULL. */
EVPOL_API const char *evpol_watcher_name(evpol_watcher *w);

/* Register cb(pid, returncode, arg) for when `pid` exits (CW-1); a second
 * registration for the same pid replaces the first (CW-2). Callbacks are
 * delivered on the loop running in the calling thread for Threaded,
 * MultiLoop and Pidfd (ERUNTIME when none is running), and on the attached
 * loop for Safe and Fast. `arg` is borrowed until the callback has run or
 * the handler was removed or the watcher closed.
 * Thread-safe. Errors: EINVAL (pid <= 0, cb NULL), ETYPE (not a watcher, or
 * `loop` not a loop), ERUNTIME (closed, no running loop, Fast outside a
 * spawn context), ESYSTEM, ENOMEM. */
EVPOL_API int evpol_watcher_add_child_handler(evpol_watcher *w, pid_t pid, evpol_child_fn cb,
                                              void *arg, evpol_error *err);

/* Same, delivering to `loop` instead of the calling thread's running loop
 * (for Safe and Fast `loop` is ignored: their callbacks run on the attached
 * loop). This is what evpol_loop_spawn uses. */
EVPOL_API int evpol_watcher_add_child_handler_on(evpol_watcher *w, evpol_loop *loop, pid_t pid,
                                                 evpol_child_fn cb, void *arg, evpol_error *err);

/* The same two, with a callback that receives the whole exit status
 * (evpol_exit_status) instead of the returncode. Either kind of handler
 * replaces the other for the same pid (CW-2); remove_child_handler removes
 * either. Custom watchers take only returncode callbacks (their method
 * table has no slot for these): ENOTSUP there. Errors otherwise as above. */
EVPOL_API int evpol_watcher_add_child_status_handler(evpol_watcher *w, pid_t pid,
                                                     evpol_child_status_fn cb, void *arg,
                                                     evpol_error *err);
EVPOL_API int evpol_watcher_add_child_status_handler_on(evpol_watcher *w, evpol_loop *loop,
                                                        pid_t pid, evpol_child_status_fn cb,
                                                        void *arg, evpol_error *err);

/* 1 if a handler was removed (it will never be called), 0 if there was none
 * (CW-4, for every watcher). The child is still reaped by the watcher.
 * Thread-safe. Errors: EINVAL (pid <= 0, w NULL), ETYPE (not a watcher),
 * ERUNTIME (closed). */
EVPOL_API int evpol_watcher_remove_child_handler(evpol_watcher *w, pid_t pid, evpol_error *err);

/* Detach from the current loop, then attach to `loop` (may be NULL) (CW-5).
 * Detaching with handlers pending logs a warning. On an error nothing
 * changed: the watcher is still attached where it was.
 * Errors: ERUNTIME (watcher or `loop` closed; Safe and Fast: not the main
 * thread), ETYPE (`loop` not a loop), ESYSTEM, ENOMEM. */
EVPOL_API int evpol_watcher_attach_loop(evpol_watcher *w, evpol_loop *loop, evpol_error *err);

/* The loop `w` is attached to, in *out (borrowed: valid while the watcher
 * stays attached to it, i.e. until the next attach_loop or close), or NULL
 * when it has none: always for Threaded, MultiLoop and Pidfd, which deliver
 * on each registering loop and keep no attached loop, for custom watchers,
 * and for a closed watcher. Any thread. Errors: EINVAL (out NULL, w NULL),
 * ETYPE (not a watcher). */
EVPOL_API int evpol_watcher_get_loop(evpol_watcher *w, evpol_loop **out, evpol_error *err);

/* 1 when ready to use (CW-6), 0 otherwise (closed watchers are inactive);
 * EINVAL when `w` is not a watcher. */
EVPOL_API int evpol_watcher_is_active(evpol_watcher *w);

/* Release every thread, fd, signal handler and pending registration (CW-8);
 * pending callbacks are never called afterwards. A second close returns 0.
 * What becomes of the children still registered: Threaded's threads go on
 * waiting and reap them (nothing is delivered); the other watchers reap
 * every one that has already exited and leave the running ones to the
 * program (one resource warning counts them), which may waitpid() them.
 * May be called from inside one of the watcher's own callbacks: close then
 * does not wait for that callback (it is the caller), only for others
 * running on other threads. Errors: EINVAL. */
EVPOL_API int evpol_watcher_close(evpol_watcher *w, evpol_error *err);

/* The spawn context (CW-9): enter before creating a process, exit after its
 * handler is registered. Contexts nest and count. Errors: ERUNTIME (closed,
 * exit without enter). */
EVPOL_API int evpol_watcher_enter(evpol_watcher *w, evpol_error *err);
EVPOL_API int evpol_watcher_exit(evpol_watcher *w, evpol_error *err);

/*
 * Custom watchers: fill in a method table; every method is required.
 * `self` is what evpol_watcher_user_data returns. evpol validates the
 * arguments (pid > 0, cb non-NULL, the watcher open) before calling a
 * method, and calls `destroy` once, when the last reference is dropped
 * (after `close`). The table has no slot for status callbacks
 * (evpol_child_status_fn), and keeps its 0.1 size: a custom watcher gets
 * only returncode registrations; evpol_watcher_add_child_status_handler
 * on one is ENOTSUP, and evpol_loop_spawn_ex derives the status from the
 * returncode it reports. evpol_watcher_get_loop gives NULL for it.
 */
typedef struct evpol_watcher_methods {
    size_t size; /* sizeof(evpol_watcher_methods) */
    int (*add_child_handler)(void *self, evpol_loop *loop, pid_t pid, evpol_child_fn cb,
                             void *arg, evpol_error *err);
    int (*remove_child_handler)(void *self, pid_t pid, evpol_error *err);
    int (*attach_loop)(void *self, evpol_loop *loop, evpol_error *err);
    int (*is_active)(void *self);
    int (*close)(void *self, evpol_error *err);
    int (*enter)(void *self, evpol_error *err);
    int (*exit)(void *self, evpol_error *err);
    void (*destroy)(void *self);
} evpol_watcher_methods;

/* `methods` is copied. Errors: ETYPE (size wrong or a method missing),
 * EINVAL, ENOMEM. */
EVPOL_API int evpol_watcher_new_custom(const evpol_watcher_methods *methods, void *self,
                                       evpol_watcher **out, evpol_error *err);
EVPOL_API void *evpol_watcher_user_data(evpol_watcher *w);

/* ------------------------------------------------------------------------ */
/* Policies (POL-1 ... POL-21)                                              */
/* ------------------------------------------------------------------------ */

typedef struct evpol_policy evpol_policy;

/*
 * A policy's methods. `self` is the policy itself, so an override can call
 * the default implementation ("super", POL-8) with evpol_policy_default_*.
 * The default implementations call the policy's own methods through the
 * table (evpol_policy_*), so overrides are seen by them.
 *
 * Ownership in the methods: get_event_loop returns a borrowed loop;
 * new_event_loop returns a new reference; set_event_loop does not take the
 * caller's reference (the policy takes its own).
 */
typedef struct evpol_policy_methods {
    size_t size; /* sizeof(evpol_policy_methods) */
    int (*get_event_loop)(evpol_policy *self, evpol_loop **out, evpol_error *err);
    int (*set_event_loop)(evpol_policy *self, evpol_loop *loop, evpol_error *err);
    int (*new_event_loop)(evpol_policy *self, evpol_loop **out, evpol_error *err);
    int (*get_child_watcher)(evpol_policy *self, evpol_watcher **out, evpol_error *err);
    int (*set_child_watcher)(evpol_policy *self, evpol_watcher *w, evpol_error *err);
    /* Called once when the last reference is dropped, before evpol frees its
     * own state; may be NULL. */
    void (*destroy)(evpol_policy *self);
} evpol_policy_methods;

/* The default policy (POL-19): per-thread loops, libevent's preferred
 * backend, the Threaded watcher by default. Caller owns one reference. */
EVPOL_API int evpol_policy_new_default(evpol_policy **out, evpol_error *err);

/* A default policy whose loops use `backend` (POL-20); otherwise identical
 * to the default. Errors: EINVAL, ENOTSUP (backend unavailable), ENOMEM. */
EVPOL_API int evpol_policy_new_with_backend(evpol_backend backend, evpol_policy **out,
                                            evpol_error *err);

/* A default policy whose lazily created watcher is of `kind` (e.g. AUTO). */
EVPOL_API int evpol_policy_new_with_watcher_kind(evpol_watcher_kind kind, evpol_policy **out,
                                                 evpol_error *err);

/* A subclass of the default policy (POL-8): each NULL method in `methods`
 * is inherited from the default. `user_data` is for the overrides.
 * `methods` is copied. Errors: ETYPE (size wrong), EINVAL, ENOMEM. */
EVPOL_API int evpol_policy_new_custom(const evpol_policy_methods *methods, void *user_data,
                                      evpol_policy **out, evpol_error *err);

/* A policy that does not derive from the default (AbstractEventLoopPolicy,
 * POL-7): get/set/new_event_loop are required (ETYPE when missing); missing
 * watcher methods make the watcher calls fail with ENOTSUP. */
EVPOL_API int evpol_policy_new_abstract(const evpol_policy_methods *methods, void *user_data,
                                        evpol_policy **out, evpol_error *err);

EVPOL_API evpol_policy *evpol_policy_ref(evpol_policy *p);
EVPOL_API void evpol_policy_unref(evpol_policy *p);
EVPOL_API bool evpol_is_policy(const void *p);
EVPOL_API void *evpol_policy_user_data(evpol_policy *p);

/* Method dispatch: these call the policy's (possibly overridden) method.
 * get_event_loop never yields NULL: it succeeds with a loop or fails
 * (POL-9). Errors: EINVAL/ETYPE for a non-policy, plus the method's own. */
EVPOL_API int evpol_policy_get_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err);
EVPOL_API int evpol_policy_set_event_loop(evpol_policy *p, evpol_loop *loop, evpol_error *err);
EVPOL_API int evpol_policy_new_event_loop(evpol_policy *p, evpol_loop **out, evpol_error *err);
/* Borrowed: valid until the policy's watcher is replaced or the policy
 * freed. Deprecated (ERR-3): logs a deprecation warning. */
EVPOL_API int evpol_policy_get_child_watcher(evpol_policy *p, evpol_watcher **out,
                                             evpol_error *err);
/* Closes the previous watcher, then takes a reference to `w` (NULL allowed)
 * (POL-15). Deprecated (ERR-3). Errors: ETYPE (not a watcher). */
EVPOL_API int evpol_policy_set_child_watcher(evpol_policy *p, evpol_watcher *w,
                                             evpol_error *err);

/* The default ("super") implementations, for overrides to call (POL-8).
 * Errors: ETYPE when `p` was made by evpol_policy_new_abstract. */
EVPOL_API int evpol_policy_default_get_event_loop(evpol_policy *p, evpol_loop **out,
                                                  evpol_error *err);
EVPOL_API int evpol_policy_default_set_event_loop(evpol_policy *p, evpol_loop *loop,
                                                  evpol_error *err);
EVPOL_API int evpol_policy_default_new_event_loop(evpol_policy *p, evpol_loop **out,
                                                  evpol_error *err);
EVPOL_API int evpol_policy_default_get_child_watcher(evpol_policy *p, evpol_watcher **out,
                                                     evpol_error *err);
EVPOL_API int evpol_policy_default_set_child_watcher(evpol_policy *p, evpol_watcher *w,
                                                     evpol_error *err);

/* The process-wide policy (POL-1, POL-2): borrowed, valid until the policy
 * is replaced. The default is created on first use, exactly once. Only fails
 * with ENOMEM. Thread-safe. */
EVPOL_API int evpol_get_event_loop_policy(evpol_policy **out, evpol_error *err);

/* Make `p` the process-wide policy, taking a reference to it (POL-3); NULL
 * restores a fresh default on next use (POL-4). Errors: ETYPE (not a
 * policy; the current policy is unchanged, POL-5). Thread-safe. */
EVPOL_API int evpol_set_event_loop_policy(evpol_policy *p, evpol_error *err);

/* Top-level helpers (POL-17, POL-18): the running loop of this thread if one
 * is running, else the current policy's get_event_loop. */
EVPOL_API int evpol_get_event_loop(evpol_loop **out, evpol_error *err);
EVPOL_API int evpol_set_event_loop(evpol_loop *loop, evpol_error *err);
EVPOL_API int evpol_new_event_loop(evpol_loop **out, evpol_error *err);
EVPOL_API int evpol_get_child_watcher(evpol_watcher **out, evpol_error *err);
EVPOL_API int evpol_set_child_watcher(evpol_watcher *w, evpol_error *err);

/* ------------------------------------------------------------------------ */
/* Subprocesses (SUB-1 ... SUB-4)                                           */
/* ------------------------------------------------------------------------ */

typedef enum evpol_stdio {
    EVPOL_STDIO_INHERIT = 0,
    EVPOL_STDIO_DEVNULL = 1,
    EVPOL_STDIO_PIPE = 2,
} evpol_stdio;

typedef struct evpol_spawn_options {
    const char *file;       /* program; searched in PATH when it has no '/' */
    char *const *argv;      /* NULL-terminated; argv[0] required */
    char *const *envp;      /* NULL: inherit the environment */
    const char *cwd;        /* NULL: inherit */
    evpol_stdio stdio[3];   /* stdin, stdout, stderr */
    evpol_child_fn on_exit; /* required; runs on the loop's thread (SUB-3) */
    void *arg;              /* borrowed until on_exit ran */
} evpol_spawn_options;

typedef struct evpol_spawn_result {
    pid_t pid;
    /* For each EVPOL_STDIO_PIPE stream, the parent's end (O_CLOEXEC, owned
     * by the caller: stdin's is for writing, the others for reading); -1
     * otherwise. */
    int stdio_fd[3];
} evpol_spawn_result;

/* Spawn a process and watch it with the current policy's watcher (SUB-1):
 * is_active is checked before anything is created (SUB-2, CW-7); the
 * process is created and registered inside the watcher's spawn context; on
 * exit, on_exit(pid, returncode, arg) runs on `loop`'s thread (SUB-3). An
 * exec failure is ESYSTEM with the errno, with no callback and nothing left
 * behind (SUB-4). Any thread.
 * The child gets only its stdin, stdout and stderr: every other descriptor
 * of this process is closed in the child, close-on-exec or not (as
 * asyncio's close_fds=True); it starts with no blocked signal and with the
 * default action for SIGPIPE, SIGXFSZ, SIGCHLD, SIGINT, SIGQUIT and SIGTERM
 * (see evpol_sys_spawn_request).
 * Errors: EINVAL, ERUNTIME (loop closed, watcher inactive), ESYSTEM, ENOMEM. */
EVPOL_API int evpol_loop_spawn(evpol_loop *loop, const evpol_spawn_options *opts,
                               evpol_spawn_result *result, evpol_error *err);

/* evpol_loop_spawn, telling the exit with the whole status: when
 * `on_exit_status` is not NULL it is called instead of opts->on_exit (which
 * may then be NULL), as on_exit_status(pid, status, opts->arg), on `loop`'s
 * thread (SUB-3). With a custom watcher, which reports only a returncode,
 * the status is derived from it: EXITED for 0..255 (255 included, as
 * asyncio), KILLED for -N with core_dumped false, `raw` rebuilt to match.
 * Errors as evpol_loop_spawn. */
EVPOL_API int evpol_loop_spawn_ex(evpol_loop *loop, const evpol_spawn_options *opts,
                                  evpol_child_status_fn on_exit_status,
                                  evpol_spawn_result *result, evpol_error *err);

/* ------------------------------------------------------------------------ */
/* Test seam: the kernel calls made by watchers and spawn                   */
/* ------------------------------------------------------------------------ */

/*
 * The system calls that decide what the watchers and spawn see of child
 * processes go through this table (waiting, pidfds, SIGCHLD dispositions,
 * creating and signalling processes and threads, the pipes and fds evpol
 * opens and closes), so that tests and fuzzers can put a deterministic fake
 * kernel in its place; so does every allocation of evpol's own memory.
 * Each member has the signature and errno convention of the system call it
 * names (spawn: see below). Production code never needs this.
 *
 * Not through the table, on purpose: the byte MultiLoop's SIGCHLD handler
 * writes to its wake pipe (a signal handler makes only async-signal-safe
 * calls, and must not depend on a table a test swaps), and the reaper's
 * poll, read and close-time write on that same pipe; and the fcntl that
 * moves a spawn pipe end above fd 2 when the caller runs with a standard
 * stream closed. None of them reports anything about a child; they act on
 * pipes the table's pipe2 created.
 *
 * The table grows only at its end, and `size` says which version a caller
 * filled: evpol_sys_set accepts sizeof(evpol_sys) or an earlier version's
 * size (EVPOL_SYS_SIZE_0_1, the table of 0.1.0, which ends at `free`), and
 * gives the members a smaller table lacks their real functions. So a
 * program built against 0.1.0 that fills a table of its own (size = its
 * sizeof) keeps working and keeps the real thread_join and thread_detach.
 * So does one that copies *evpol_sys_real() whole into its own table and
 * passes that on without setting `size`: evpol_sys_real is versioned
 * (ELF symbol versions), and a program linked against 0.1.0 is bound to
 * the version that returns a table whose size is EVPOL_SYS_SIZE_0_1.
 */

/* evpol_sys_spawn_request.stdio[i] when it is not a descriptor of the
 * parent. */
#define EVPOL_SYS_STDIO_INHERIT (-1) /* the parent's fd i, as it is */
#define EVPOL_SYS_STDIO_DEVNULL (-2) /* /dev/null, opened read-write */

/*
 * How evpol_loop_spawn asks for a process. The child it describes:
 * - runs `file`, searched in PATH when it has no '/' (posix_spawnp's
 *   search: PATH from this process's environment, "/bin:/usr/bin" when
 *   unset; an EACCES match is remembered and the search goes on; no
 *   /bin/sh fallback on ENOEXEC), with argv and envp;
 * - in cwd (NULL: the parent's directory);
 * - with exactly three descriptors, 0..2 as stdio[] says (a descriptor of
 *   the parent, always > 2, dup'ed onto fd i; the parent's fd i; or
 *   /dev/null); every other descriptor of the parent is closed in the
 *   child, close-on-exec or not;
 * - with no blocked signal (the spawning thread may be a loop or watcher
 *   thread that blocks some) and with the default action for the signals a
 *   parent commonly ignores for its own sake: SIGPIPE and SIGXFSZ (as
 *   CPython's restore_signals), SIGCHLD (ignoring it would make the child's
 *   own children vanish), and the termination requests SIGINT, SIGQUIT and
 *   SIGTERM. A SIGHUP ignored nohup-style is deliberately inherited; caught
 *   signals get their default action back (exec resets them anyway).
 */
typedef struct evpol_sys_spawn_request {
    const char *file;
    char *const *argv; /* NULL-terminated */
    char *const *envp; /* never NULL */
    const char *cwd;   /* NULL: the parent's */
    int stdio[3];      /* an fd > 2, EVPOL_SYS_STDIO_INHERIT or _DEVNULL */
} evpol_sys_spawn_request;

typedef struct evpol_sys {
    size_t size; /* sizeof(evpol_sys) */
    pid_t (*waitpid)(pid_t pid, int *status, int options);
    int (*pidfd_open)(pid_t pid, unsigned int flags);
    int (*sigaction)(int signum, const struct sigaction *act, struct sigaction *old);
    /* Create the process `req` describes. posix_spawnp's contract: 0 with
     * *pid set, or an errno value; a failure to set the child up or to
     * execute the program (ENOENT, EACCES, ENOEXEC, ...) is reported here,
     * the failed child already reaped, with nothing left behind (SUB-4). */
    int (*spawn)(pid_t *pid, const evpol_sys_spawn_request *req);
    int (*kill)(pid_t pid, int sig);
    /* pthread_create's contract; stack_size 0 means the default. */
    int (*thread_create)(pthread_t *thread, size_t stack_size, void *(*fn)(void *), void *arg);
    int (*close)(int fd);
    int (*pipe2)(int fds[2], int flags);
    /* calloc's and free's contracts. Every allocation evpol itself makes
     * goes through them, so that tests can fail any one of them and count
     * what is outstanding (libevent's own allocations are reached with
     * libevent's event_set_mem_functions). Memory may be allocated under
     * one table and freed under another: both must be the C library's, or
     * wrappers that pass through to it. */
    void *(*calloc)(size_t nmemb, size_t size);
    void (*free)(void *ptr);
    /* Appended after 0.1.0. pthread_join's and pthread_detach's contracts,
     * for the threads thread_create made: every thread the library starts
     * ends through one of them, so that a fake thread_create may hand out
     * threads of its own (a pool) and learn when the library lets one go. */
    int (*thread_join)(pthread_t thread, void **retval);
    int (*thread_detach)(pthread_t thread);
} evpol_sys;

/* The size of the 0.1.0 table: every member before thread_join. */
#define EVPOL_SYS_SIZE_0_1 offsetof(evpol_sys, thread_join)

/* Install `table` (copied; each distinct table is kept until the process
 * exits); NULL restores the real kernel. Any thread, but meant for when no
 * watcher is open: a call already in progress finishes with the old table,
 * so the fake would miss it. A table of size EVPOL_SYS_SIZE_0_1 gets the
 * real thread_join and thread_detach. Errors: ETYPE (size neither
 * sizeof(evpol_sys) nor EVPOL_SYS_SIZE_0_1, or a member NULL), ENOMEM. */
EVPOL_API int evpol_sys_set(const evpol_sys *table, evpol_error *err);
/* The real kernel's table, for fakes that pass some calls through. Its
 * size is sizeof(evpol_sys); a program linked against 0.1.0 gets the same
 * table with size EVPOL_SYS_SIZE_0_1 (see above). */
EVPOL_API const evpol_sys *evpol_sys_real(void);

#ifdef __cplusplus
}
#endif

#endif /* EVPOL_H */
