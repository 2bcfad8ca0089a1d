/*
 * spawn.c — evpol_loop_spawn (SUB-1 ... SUB-4), the watchers' consumer.
 *
 * What it does, in CPython's order (_make_subprocess_transport): take the
 * current policy's watcher (without the deprecation warning, as CPython
 * silences it), refuse to start anything while it is inactive (SUB-2,
 * CW-7), then, inside the watcher's spawn context (CW-9), create the pipes
 * and the process and register the exit. The watcher's callback may run on
 * any thread (Safe and Fast: the attached main loop; the others: `loop`
 * itself, inside the watcher's callback gate), so it only hands a record,
 * allocated before the process existed, to `loop` with evpol__loop_post;
 * on_exit then runs on `loop`'s thread (SUB-3), outside any watcher lock,
 * and no allocation happens once the child has exited.
 *
 * How the process is made lives behind the seam (evpol__sys.spawn; the
 * real one, in spawn_clone.c, is posix_spawnp or, when no stream is a
 * pipe, a vfork-style clone that copies only fds 0..2): no fork, so no
 * pthread_atfork handler runs, and an exec failure comes back as the
 * call's errno with the child already reaped, so SUB-4 needs no error pipe
 * and leaves no zombie. Every fd is created O_CLOEXEC and reaches the
 * child only as one of its standard streams; every other fd of the
 * process is closed in the child.
 *
 * Records outlive the call, so they are kept in one process-wide list. A
 * registration that ends without its callback (the watcher closed, or a
 * Threaded/MultiLoop/Pidfd loop closed before the exit) leaves an orphan,
 * which the next spawn after that close frees once it can prove the
 * callback can no longer run (sweep_orphans). Custom watchers give no such
 * proof, so their orphans are kept (reachable) until the process exits.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- records ---- */

/*
 * Who frees a record: while `in_spawn` is set (from allocation until the
 * registration has returned), always evpol_loop_spawn, since the exit can
 * be delivered, and on_exit run, before add_child_handler returns; after
 * that, rec_run / rec_drop for a posted record, the sweep for the others.
 */
typedef enum rec_state {
    REC_PENDING,  /* waiting for the watcher's callback */
    REC_POSTED,   /* handed to the loop: rec_run or rec_drop ends it */
    REC_FINISHED, /* rec_run or rec_drop ran while in_spawn: spawn frees it */
    REC_DONE,     /* the post failed (loop closed): unlinked by its freer */
} rec_state;

typedef struct spawn_rec {
    struct spawn_rec *prev, *next; /* the records list, under records_lock */
    rec_state state;               /* under records_lock */
    bool in_spawn;                 /* under records_lock */
    evpol__post post;
    evpol_loop *loop;       /* referenced */
    evpol_watcher *watcher; /* referenced: sweep_orphans reads its state */
    evpol_child_fn on_exit;
    evpol_child_status_fn on_exit_status; /* called instead when set */
    void *arg;
    pid_t pid;
    evpol_exit_status exit;
} spawn_rec;

static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER;
static spawn_rec *records;

/* Orphans appear only when a watcher or a loop closes, or a post finds its
 * loop closed; each of those bumps release_epoch. A sweep that found every
 * orphan there was records the epoch it started from in swept_epoch, and
 * spawns skip the walk of all pending records until the epoch moves. */
static atomic_uint release_epoch;
static unsigned swept_epoch; /* under records_lock */

void evpol__spawn_orphans_may_exist(void)
{
    atomic_fetch_add(&release_epoch, 1);
}

static void link_rec_locked(spawn_rec *r)
{
    EVPOL__ASSERT_LOCKED(&records_lock);
    r->prev = NULL;
    r->next = records;
    if (records)
        records->prev = r;
    records = r;
}

static void unlink_rec_locked(spawn_rec *r)
{
    EVPOL__ASSERT_LOCKED(&records_lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        records = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void free_rec(spawn_rec *r)
{
    evpol_loop_unref(r->loop);
    evpol_watcher_unref(r->watcher);
    evpol__sys.free(r);
}

static void warn_loop_closed(evpol_loop *loop, pid_t pid)
{
    /* The same line as the watchers' (CW-12). */
    evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
               "Loop %p that handles pid %ld is closed", (void *)loop, (long)pid);
}

/* Ends a posted record: unlinks it and says whether the caller frees it
 * (false while spawn still holds it: spawn frees it then). */
static bool finish_posted(spawn_rec *r)
{
    pthread_mutex_lock(&records_lock);
    unlink_rec_locked(r);
    bool spawn_frees = r->in_spawn;
    if (spawn_frees)
        r->state = REC_FINISHED;
    pthread_mutex_unlock(&records_lock);
    return !spawn_frees;
}

/* On `loop`'s thread, outside any watcher lock (SUB-3). */
static void rec_run(void *p)
{
    spawn_rec *r = p;
    /* Copied first: once finish_posted returns, spawn may free r. */
    evpol_child_fn on_exit = r->on_exit;
    evpol_child_status_fn on_exit_status = r->on_exit_status;
    void *arg = r->arg;
    pid_t pid = r->pid;
    evpol_exit_status exit = r->exit;
    evpol_loop *loop = r->loop; /* running, so alive without r's reference */
    bool we_free = finish_posted(r);
    evpol__log_debug(loop, "spawned process %ld exited with returncode %d", (long)pid,
                     exit.returncode);
    if (on_exit_status)
        on_exit_status(pid, &exit, arg);
    else
        on_exit(pid, exit.returncode, arg);
    if (we_free)
        free_rec(r);
}

/* `loop` was closed with the exit still queued: on_exit is never called. */
static void rec_drop(void *p)
{
    spawn_rec *r = p;
    evpol_loop *loop = r->loop;
    pid_t pid = r->pid;
    bool we_free = finish_posted(r);
    warn_loop_closed(loop, pid); /* the pointer is only printed */
    if (we_free)
        free_rec(r);
}

/*
 * The watcher's callback: any thread, possibly inside the watcher's gate,
 * so it never drops the watcher reference (which might be the last one, and
 * destroy the watcher under its own gate) and never allocates.
 */
static void on_child_status(pid_t pid, const evpol_exit_status *status, void *arg)
{
    spawn_rec *r = arg;
    pthread_mutex_lock(&records_lock);
    if (r->state != REC_PENDING) {
        /* A second call for one registration: a misbehaving custom watcher. */
        pthread_mutex_unlock(&records_lock);
        return;
    }
    r->state = REC_POSTED;
    r->exit = *status;
    pthread_mutex_unlock(&records_lock);
    /* Read before posting: once posted, r may be freed at any moment. */
    evpol_loop *loop = r->loop;
    if (evpol__loop_post(loop, &r->post, NULL) == 0)
        return;
    warn_loop_closed(loop, pid);
    pthread_mutex_lock(&records_lock);
    r->state = REC_DONE;
    pthread_mutex_unlock(&records_lock);
    evpol__spawn_orphans_may_exist();
}

/* The same for a custom watcher, which reports only a returncode: the
 * status is what that returncode reads as (see evpol_loop_spawn_ex). */
static void on_child_exit(pid_t pid, int returncode, void *arg)
{
    evpol_exit_status st = {.size = sizeof st, .returncode = returncode};
    if (returncode >= 0) {
        st.kind = EVPOL_EXIT_EXITED;
        st.code = returncode & 0xff;
        st.raw = st.code << 8;
    } else {
        st.kind = EVPOL_EXIT_KILLED;
        st.signal = -returncode;
        st.raw = st.signal & 0x7f;
    }
    on_child_status(pid, &st, arg);
}

/*
 * Can the watcher still call on_child_exit for this pending record?
 * CALLBACK_IMPOSSIBLE when:
 *  - the watcher is closed and its gate is free: every callback runs
 *    through the gate and rechecks `closed` inside it, so once a writer got
 *    the gate after close began, none is running and none will start. A
 *    try-lock, so a sweep run from inside one of that watcher's callbacks
 *    cannot wait for itself (CALLBACK_UNKNOWN: a later sweep looks again);
 *  - or the watcher delivers on the loop (needs_loop: Threaded, MultiLoop,
 *    Pidfd) and the loop is closed: those callbacks run only on that loop's
 *    thread while it runs, and a closed loop never runs again.
 * Custom watchers may call the callback from anywhere (a delegate watcher,
 * a thread of their own): never provably done.
 */
typedef enum { CALLBACK_POSSIBLE, CALLBACK_IMPOSSIBLE, CALLBACK_UNKNOWN } callback_fate;

static callback_fate callback_fate_of(spawn_rec *r)
{
    evpol_watcher *w = r->watcher;
    if (w->ops->kind == EVPOL_WATCHER_CUSTOM)
        return CALLBACK_POSSIBLE;
    if (evpol__watcher_closed(w)) {
        if (pthread_rwlock_trywrlock(&w->gate) != 0)
            return CALLBACK_UNKNOWN;
        pthread_rwlock_unlock(&w->gate);
        return CALLBACK_IMPOSSIBLE;
    }
    if (w->ops->needs_loop && evpol_loop_is_closed(r->loop) == 1)
        return CALLBACK_IMPOSSIBLE;
    return CALLBACK_POSSIBLE;
}

/* O(records still pending), but only after a close (release_epoch): a
 * spawn while children are pending must not cost more per pending child. */
static void sweep_orphans(void)
{
    spawn_rec *dead = NULL;
    unsigned epoch = atomic_load(&release_epoch);
    pthread_mutex_lock(&records_lock);
    if (epoch == swept_epoch) {
        pthread_mutex_unlock(&records_lock);
        return;
    }
    bool complete = true;
    for (spawn_rec *r = records, *next; r; r = next) {
        next = r->next;
        if (r->in_spawn) {
            /* Its spawn has not registered it yet; a close meanwhile may
             * still orphan it, so this sweep does not count as complete. */
            complete = false;
            continue;
        }
        callback_fate fate = r->state == REC_DONE      ? CALLBACK_IMPOSSIBLE
                             : r->state == REC_PENDING ? callback_fate_of(r)
                                                       : CALLBACK_POSSIBLE;
        if (fate == CALLBACK_UNKNOWN)
            complete = false;
        if (fate == CALLBACK_IMPOSSIBLE) {
            unlink_rec_locked(r);
            r->next = dead;
            dead = r;
        }
    }
    if (complete)
        swept_epoch = epoch;
    pthread_mutex_unlock(&records_lock);
    /* Unreferenced outside the lock: a last unref closes a watcher. */
    while (dead) {
        spawn_rec *next = dead->next;
        free_rec(dead);
        dead = next;
    }
}

/* ---- validation ---- */

static int check_args(evpol_loop *loop, const evpol_spawn_options *opts,
                      evpol_child_status_fn on_exit_status, evpol_spawn_result *result,
                      evpol_error *err)
{
    if (!loop)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: loop is NULL");
    if (!evpol_is_loop(loop))
        return evpol__fail(err, EVPOL_ETYPE, "evpol_loop_spawn: not an event loop");
    if (!opts)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: opts is NULL");
    if (!result)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: result is NULL");
    if (!opts->file)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: opts->file is NULL");
    if (!opts->argv || !opts->argv[0])
        return evpol__fail(err, EVPOL_EINVAL,
                           "evpol_loop_spawn: opts->argv must hold at least argv[0]");
    for (int i = 0; i < 3; i++) {
        evpol_stdio s = opts->stdio[i];
        if (s != EVPOL_STDIO_INHERIT && s != EVPOL_STDIO_DEVNULL && s != EVPOL_STDIO_PIPE)
            return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: opts->stdio[%d] is %d", i,
                               (int)s);
    }
    if (!opts->on_exit && !on_exit_status)
        return evpol__fail(err, EVPOL_EINVAL, "evpol_loop_spawn: opts->on_exit is NULL");
    if (evpol_loop_is_closed(loop) == 1)
        return evpol__fail(err, EVPOL_ERUNTIME, "evpol_loop_spawn: the event loop is closed");
    return 0;
}

/* ---- pipes and the child's setup ---- */

typedef struct spawn_fds {
    int parent[3]; /* ends kept by the caller, -1 when not a pipe */
    int child[3];  /* ends for the child, closed by us after the spawn */
} spawn_fds;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        evpol__sys.close(*fd);
    *fd = -1;
}

static void close_all(spawn_fds *f)
{
    for (int i = 0; i < 3; i++) {
        close_fd(&f->parent[i]);
        close_fd(&f->child[i]);
    }
}

/*
 * A child end numbered 0..2 (the caller runs with a standard stream closed)
 * could be overwritten by another stream's dup2 before its own dup2 runs in
 * the child; moving it to 3 or above makes the order of the file actions
 * irrelevant. Rare, hence the plain fcntl outside the seam (evpol.h lists
 * the calls outside it).
 */
static int lift_above_stdio(int *fd, evpol_error *err)
{
    if (*fd > 2)
        return 0;
    int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0)
        return evpol__fail_sys(err, errno, "evpol_loop_spawn: cannot move a pipe end");
    close_fd(fd);
    *fd = nfd;
    return 0;
}

static int make_pipes(const evpol_spawn_options *opts, spawn_fds *f, evpol_error *err)
{
    for (int i = 0; i < 3; i++) {
        if (opts->stdio[i] != EVPOL_STDIO_PIPE)
            continue;
        int p[2];
        if (evpol__sys.pipe2(p, O_CLOEXEC) != 0)
            return evpol__fail_sys(err, errno, "evpol_loop_spawn: cannot create a pipe");
        /* stdin: the child reads, the caller writes; stdout/stderr: the
         * other way round. */
        f->child[i] = i == 0 ? p[0] : p[1];
        f->parent[i] = i == 0 ? p[1] : p[0];
    }
    for (int i = 0; i < 3; i++) {
        int rc = f->child[i] >= 0 ? lift_above_stdio(&f->child[i], err) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

static int create_process(const evpol_spawn_options *opts, const spawn_fds *f, pid_t *pid,
                          evpol_error *err)
{
    evpol_sys_spawn_request req = {
        .file = opts->file,
        .argv = opts->argv,
        .envp = opts->envp ? opts->envp : environ,
        .cwd = opts->cwd,
    };
    for (int i = 0; i < 3; i++)
        req.stdio[i] = opts->stdio[i] == EVPOL_STDIO_PIPE      ? f->child[i]
                       : opts->stdio[i] == EVPOL_STDIO_DEVNULL ? EVPOL_SYS_STDIO_DEVNULL
                                                               : EVPOL_SYS_STDIO_INHERIT;
    int e = evpol__sys.spawn(pid, &req);
    /* A failed exec (ENOENT, EACCES, ...) is reported here, the child
     * already reaped (SUB-4). */
    if (e)
        return evpol__fail_sys(err, e, "evpol_loop_spawn: cannot execute '%s'", opts->file);
    /* A seam that breaks its contract must not make the clean-up that
     * follows a failure signal pid 0 or -1: as root, every process. */
    if (*pid <= 0)
        return evpol__fail_sys(err, ESRCH,
                               "evpol_loop_spawn: the spawn reported success without a process "
                               "(pid %ld)", (long)*pid);
    return 0;
}

/* The process exists but nobody will watch it: leave neither it nor its
 * zombie behind. */
static void kill_and_reap(pid_t pid)
{
    evpol__sys.kill(pid, SIGKILL);
    int status;
    /* ECHILD: a reap-everything watcher (Fast) got it first. */
    while (evpol__sys.waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* ---- evpol_loop_spawn ---- */

/* Registration succeeded: hand r over to the post or the sweep, or free it
 * when its story already ended during the registration. */
static void release_from_spawn(spawn_rec *r)
{
    pthread_mutex_lock(&records_lock);
    r->in_spawn = false;
    bool ended = r->state == REC_FINISHED || r->state == REC_DONE;
    if (r->state == REC_DONE)
        unlink_rec_locked(r);
    pthread_mutex_unlock(&records_lock);
    if (ended)
        free_rec(r);
}

static int spawn_in_context(evpol_loop *loop, evpol_watcher *w, const evpol_spawn_options *opts,
                            spawn_rec *r, spawn_fds *f, pid_t *out_pid, evpol_error *err)
{
    int rc = make_pipes(opts, f, err);
    if (rc)
        return rc;
    pid_t pid = -1;
    rc = create_process(opts, f, &pid, err);
    for (int i = 0; i < 3; i++)
        close_fd(&f->child[i]);
    if (rc)
        return rc;
    r->pid = pid;

    /* Linked before registering: the exit may be delivered (on another
     * thread) before add_child_handler even returns. */
    pthread_mutex_lock(&records_lock);
    link_rec_locked(r);
    pthread_mutex_unlock(&records_lock);
    rc = w->ops->kind == EVPOL_WATCHER_CUSTOM
             ? evpol_watcher_add_child_handler_on(w, loop, pid, on_child_exit, r, err)
             : evpol_watcher_add_child_status_handler_on(w, loop, pid, on_child_status, r, err);
    pthread_mutex_lock(&records_lock);
    if (rc)
        unlink_rec_locked(r); /* the caller frees it */
    pthread_mutex_unlock(&records_lock);
    if (rc) {
        kill_and_reap(pid);
        return rc;
    }
    release_from_spawn(r);
    *out_pid = pid;
    evpol__log_debug(loop, "spawned process %ld (%s) on loop %p", (long)pid, opts->file,
                     (void *)loop);
    return 0;
}

int evpol_loop_spawn(evpol_loop *loop, const evpol_spawn_options *opts,
                     evpol_spawn_result *result, evpol_error *err)
{
    return evpol_loop_spawn_ex(loop, opts, NULL, result, err);
}

int evpol_loop_spawn_ex(evpol_loop *loop, const evpol_spawn_options *opts,
                        evpol_child_status_fn on_exit_status, evpol_spawn_result *result,
                        evpol_error *err)
{
    if (result) {
        result->pid = -1;
        for (int i = 0; i < 3; i++)
            result->stdio_fd[i] = -1;
    }
    int rc = check_args(loop, opts, on_exit_status, result, err);
    if (rc)
        return rc;

    sweep_orphans();

    evpol_watcher *w = NULL;
    rc = evpol__current_child_watcher(&w, err);
    if (rc)
        return rc;
    /* SUB-2, CW-7: before anything is created, not even the context. */
    if (evpol_watcher_is_active(w) != 1) {
        rc = evpol__fail(err, EVPOL_ERUNTIME,
                         "evpol_loop_spawn: the child watcher (%s) is not activated, "
                         "subprocess support is not installed.",
                         evpol_watcher_name(w));
        evpol_watcher_unref(w);
        return rc;
    }

    spawn_rec *r = evpol__sys.calloc(1, sizeof *r);
    if (!r) {
        evpol_watcher_unref(w);
        return evpol__fail(err, EVPOL_ENOMEM, "out of memory");
    }
    r->state = REC_PENDING;
    r->in_spawn = true;
    r->loop = evpol_loop_ref(loop);
    r->watcher = w; /* the reference taken above, now the record's */
    r->on_exit = opts->on_exit;
    r->on_exit_status = on_exit_status;
    r->arg = opts->arg;
    r->pid = -1;
    r->post.fn = rec_run;
    r->post.drop = rec_drop;
    r->post.arg = r;

    /* The record keeps the watcher alive beyond the call; this reference
     * keeps it alive for the call even if the exit is delivered and the
     * record freed before we leave the context. */
    evpol_watcher_ref(w);
    rc = evpol_watcher_enter(w, err);
    if (rc) {
        free_rec(r);
        evpol_watcher_unref(w);
        return rc;
    }

    spawn_fds f = {{-1, -1, -1}, {-1, -1, -1}};
    pid_t pid = -1;
    rc = spawn_in_context(loop, w, opts, r, &f, &pid, err);
    if (rc)
        free_rec(r); /* not registered, not linked */

    evpol_error exit_err = {0};
    if (evpol_watcher_exit(w, &exit_err) != 0 && rc == 0 && !evpol__watcher_closed(w))
        /* The process runs and is registered: the caller needs its pid and
         * fds more than this error, which only the watcher can act on. */
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME,
                   "evpol_loop_spawn: leaving the spawn context of %s failed: %s",
                   evpol_watcher_name(w), exit_err.message);
    evpol_watcher_unref(w);

    if (rc) {
        close_all(&f);
        return rc;
    }
    result->pid = pid;
    for (int i = 0; i < 3; i++)
        result->stdio_fd[i] = f.parent[i];
    return 0;
}
