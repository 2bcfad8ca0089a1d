/*
 * watcher_pidfd.c — PidfdChildWatcher (PFD-1 ... PFD-6).
 *
 * How it works: add_child_handler opens a pidfd for the child
 * (pidfd_open, Linux 5.3+; always close-on-exec) and adds a reader for it
 * on the registering loop (PFD-1). The pidfd becomes readable when the
 * child exits; the reader then reaps exactly that pid with
 * waitpid(pid, WNOHANG), removes itself, closes the pidfd (PFD-6) and hands
 * the current registration to its loop with evpol__deliver. No signal
 * handler, no thread, and no other process is ever waited for (PFD-2).
 * A second registration for the same pid keeps the pidfd and reader and
 * swaps the callback (CW-2); a removed handler leaves the reader in place
 * so the child is still reaped (CW-4).
 *
 * Cost: one fd and one loop event per pending child; O(1) per exit (PFD-3).
 *
 * Callbacks run on the thread of the loop that was running in the
 * registering thread (or the loop given to add_child_handler_on), one loop
 * iteration after the reader noticed the exit.
 *
 * Close: every pending reader is removed and every pidfd closed; a child
 * that has already exited is reaped, one still running is left alone and
 * becomes a zombie when it exits, to be reaped by whoever waits for it next
 * (a resource warning says so). Likewise, if the loop that holds a child's
 * reader is closed first, that child is only reaped when this watcher
 * closes.
 *
 * Lifetime: readers and the watcher share a reference-counted core (lock,
 * pid table, a pointer to the watcher that close clears). A reader reaches
 * the watcher only under the core lock and with a reference that the last
 * unref cannot race with. Close never holds the core lock while removing a
 * reader: evpol_loop_remove_reader waits for a reader callback running on
 * another thread, and that callback takes the core lock.
 *
 * Where pidfd_open fails with ENOSYS (old kernel) or EPERM (seccomp), add
 * reports ENOTSUP and EVPOL_WATCHER_AUTO picks ThreadedChildWatcher
 * (PFD-4).
 */
#include "registry-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Hangs off evpol__child.data: the reader's side of a registration, which
 * stays on the first registering loop even when a later registration
 * (CW-2) delivers to another loop. */
typedef struct pfd_reg {
    evpol__wcore *core;
    evpol_loop *reader_loop; /* referenced */
} pfd_reg;

static pid_t waitpid_nohang(pid_t pid, int *status)
{
    pid_t r;
    do
        r = evpol__sys.waitpid(pid, status, WNOHANG);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Release the reader side of `c` (already out of the table) and free it.
 * The caller holds no core lock. */
static void reg_release(evpol__child *c)
{
    pfd_reg *reg = c->data;
    if (c->fd >= 0) {
        /* Before close: the loop keys readers by fd, and the number may be
         * reused as soon as it is closed. */
        evpol_loop_remove_reader(reg->reader_loop, c->fd, NULL);
        evpol__sys.close(c->fd);
        c->fd = -1;
    }
    /* Only now: a reader callback running on another thread reads c->data
     * without the core lock, and remove_reader above waited for it. */
    c->data = NULL;
    evpol__wcore *core = reg->core;
    evpol_loop_unref(reg->reader_loop);
    evpol__sys.free(reg);
    evpol__wcore_unref(core);
}

static void on_pidfd_readable(int fd, void *arg)
{
    (void)fd;
    evpol__child *c = arg;
    pfd_reg *reg = c->data;
    evpol__wcore *core = reg->core;

    pthread_mutex_lock(&core->lock);
    if (!core->watcher) {
        /* Closing: close owns `c` and is waiting in remove_reader for us. */
        pthread_mutex_unlock(&core->lock);
        return;
    }
    int status = 0;
    pid_t r = waitpid_nohang(c->pid, &status);
    /* A readable pidfd means the process has exited, so 0 (the pid now
     * names another, running child of ours) or ECHILD both mean that
     * someone else reaped it: its status is lost (CW-11). */
    if (r == c->pid) {
        evpol_exit_status exit;
        evpol__exit_decode(c->pid, status, &exit);
        evpol__child_exited(c, &exit);
    } else {
        evpol__child_lost_exit(c);
    }
    evpol__childtab_remove(&core->tab, c->pid);
    evpol_watcher *w = evpol__wcore_watcher_locked(core);
    pthread_mutex_unlock(&core->lock);

    /* Our own loop's thread: removing our own reader does not wait. */
    reg_release(c);
    evpol__wcore_finish(w, c);
}

static int pfd_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                   evpol_error *err)
{
    evpol__wcore *core = evpol__wcore_of(w);
    evpol_loop *old_loop = NULL;
    evpol__child *unknown = NULL;
    int rc = 0;

    /* Everything under the core lock, so that a concurrent add, remove or
     * close sees a registration either complete or absent. add_reader only
     * takes the loop's locks, which never wait for us. */
    pthread_mutex_lock(&core->lock);
    if (!core->watcher) {
        rc = evpol__fail(err, EVPOL_ERUNTIME, "add_child_handler: PidfdChildWatcher is closed");
        goto out;
    }
    evpol__child *c = evpol__childtab_find(&core->tab, pid);
    if (c) {
        /* CW-2: same pidfd and reader, new callback and delivery loop. */
        evpol__child_replace(c, h, loop, &old_loop);
        goto out;
    }
    int fd = evpol__sys.pidfd_open(pid, 0);
    if (fd < 0) {
        int e = errno;
        if (e == ENOSYS || e == EPERM || e == EACCES) {
            rc = evpol__fail(err, EVPOL_ENOTSUP,
                             "PidfdChildWatcher: pidfd_open is not available here (%s); "
                             "use ThreadedChildWatcher",
                             e == ENOSYS ? "kernel older than 5.3" : "refused by a security policy");
        } else if (e == ESRCH) {
            /* No such process: it was reaped elsewhere (CW-11). */
            unknown = evpol__child_new(pid, h, loop);
            if (!unknown)
                rc = evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        } else {
            rc = evpol__fail_sys(err, e, "pidfd_open(%ld)", (long)pid);
        }
        goto out;
    }
    /* The kernel always sets close-on-exec on pidfds: nothing to do. */
    c = evpol__child_new(pid, h, loop);
    pfd_reg *reg = evpol__sys.calloc(1, sizeof *reg);
    if (!c || !reg) {
        evpol__child_free(c);
        evpol__sys.free(reg);
        evpol__sys.close(fd);
        rc = evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        goto out;
    }
    evpol__childtab_insert(&core->tab, c);
    c->fd = fd;
    reg->core = core;
    reg->reader_loop = evpol_loop_ref(loop);
    c->data = reg;
    evpol__wcore_ref(core);
    rc = evpol_loop_add_reader(loop, fd, on_pidfd_readable, c, err);
    if (rc != 0) {
        /* Never added, so nothing to remove: release by hand. */
        evpol__childtab_remove(&core->tab, pid);
        evpol__sys.close(fd);
        c->fd = -1;
        evpol_loop_unref(reg->reader_loop);
        evpol__sys.free(reg);
        c->data = NULL;
        /* Never the last reference (the watcher holds one). */
        atomic_fetch_sub(&core->refs, 1);
        evpol__child_free(c);
    }
out:
    pthread_mutex_unlock(&core->lock);
    evpol_loop_unref(old_loop);
    if (unknown) {
        evpol__warn_unknown_child(pid);
        /* The caller holds a reference to w for this call. */
        evpol__child_lost_exit(unknown);
        evpol__deliver(w, unknown);
    }
    return rc;
}

static void close_pending(evpol__child *c)
{
    int status;
    /* An exited child is reaped now; a running one is not waited for. */
    waitpid_nohang(c->pid, &status);
    reg_release(c);
    evpol__child_free(c);
}

static int pfd_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    evpol__wcore_watcher_close(w, close_pending, "; those still running will not be reaped");
    return 0;
}

static const struct evpol__watcher_ops pfd_ops = {
    .name = "PidfdChildWatcher",
    .kind = EVPOL_WATCHER_PIDFD,
    .add = pfd_add,
    .remove = evpol__wcore_watcher_remove, /* no attach: always active */
    .close = pfd_close,
    .destroy = evpol__wcore_watcher_destroy,
    .needs_loop = true,
};

int evpol__pidfd_new(evpol_watcher **out, evpol_error *err)
{
    return evpol__wcore_watcher_new(&pfd_ops, sizeof(evpol__wcore_watcher), out, err);
}

bool evpol__pidfd_usable(void)
{
    /* Not cached: the seam may be swapped (tests, fuzzers). */
    int fd = evpol__sys.pidfd_open(getpid(), 0);
    if (fd < 0)
        return false;
    evpol__sys.close(fd);
    return true;
}
