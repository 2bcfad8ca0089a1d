/*
 * watcher_threaded.c — ThreadedChildWatcher (THR-1 ... THR-6).
 *
 * How it works: add_child_handler starts one detached, small-stack thread
 * per child (THR-1) that blocks in waitpid(pid, 0). When the child exits,
 * the thread takes the registration that is current at that moment out of
 * the watcher's pid table and hands it to the loop that was running in the
 * registering thread (THR-5), through evpol__deliver (a post that never
 * allocates). A second registration for the same pid only swaps the
 * callback of the existing record (CW-2); removing it clears the callback
 * but leaves the thread to reap the child, so no zombie is left (CW-4).
 *
 * Cost: one thread per pending child (64 KiB of stack, of which a few pages
 * are touched), created at registration; O(1) per exit, whatever the number
 * of pending children (THR-3). No signals are used, so loops may run in any
 * thread (THR-2).
 *
 * Callbacks run on the registering loop's thread, never on the waiting
 * thread. The waiting thread itself only runs the log hook (CW-11, CW-12).
 *
 * Lifetime: the waiting threads and the watcher share a reference-counted
 * core (lock, pid table, a pointer to the watcher that close clears). A
 * thread reaches the watcher only through that pointer, under the core
 * lock, and only after taking a watcher reference that the last unref
 * cannot race with; so a closed or freed watcher is never touched (THR-6).
 * After close, threads still reap their children and then exit: none
 * outlives its child, and none delivers anything.
 *
 * Known limit: between a thread's waitpid returning and it taking the core
 * lock, the pid is free; if the kernel hands the very same pid to a new
 * child and that child is registered within that window, the registration
 * is taken for the old child's. This needs a full wrap of the pid space in
 * a few instructions; waitpid cannot wait without reaping (WNOWAIT is
 * waitid-only), so we accept it as CPython does.
 */
#include "registry-internal.h"

#include <errno.h>
#include <stdlib.h>

/* Enough for waitpid, a post and a log line through the default hook (whose
 * stderr fprintf uses an 8 KiB buffer) or a modest user hook. 10,000 pending
 * children take about 700 MiB of address space and a few pages each of
 * memory. Sanitizers pad frames, so they get more. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WAITER_STACK_SIZE (512u * 1024u)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WAITER_STACK_SIZE (512u * 1024u)
#endif
#endif
#ifndef WAITER_STACK_SIZE
#define WAITER_STACK_SIZE (64u * 1024u)
#endif

/* What a waiting thread needs. The thread gives the block back to the core
 * (core->spare) instead of freeing it, and the next registration reuses
 * it: a waiting thread that never calls the allocator is never given a
 * malloc arena and tcache of its own by glibc (about 1 MiB of address
 * space per pending child otherwise). */
typedef struct thr_job {
    evpol__spare link; /* first: the block is kept as an evpol__spare */
    evpol__wcore *core;
    pid_t pid;
    /* The seam's waitpid, read at registration: the thread then never
     * reads evpol__sys, which a test may swap once this watcher is closed
     * even while its threads are still finishing. */
    pid_t (*waitpid)(pid_t pid, int *status, int options);
} thr_job;

static void *waiter_main(void *p)
{
    thr_job *job = p;
    evpol__wcore *core = job->core;
    pid_t pid = job->pid;
    pid_t (*waitpid_fn)(pid_t, int *, int) = job->waitpid;

    int status = 0;
    pid_t r;
    do
        r = waitpid_fn(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    evpol_exit_status exit;
    if (r == pid)
        evpol__exit_decode(pid, status, &exit);

    pthread_mutex_lock(&core->lock);
    job->link.next = core->spare;
    core->spare = &job->link;
    evpol__child *c = evpol__childtab_remove(&core->tab, pid);
    evpol_watcher *w = c ? evpol__wcore_watcher_locked(core) : NULL;
    pthread_mutex_unlock(&core->lock);

    if (c) {
        /* Anything but our pid means the status is lost, mostly ECHILD:
         * someone else reaped the child (CW-11). */
        if (r == pid)
            evpol__child_exited(c, &exit);
        else
            evpol__child_lost_exit(c);
        evpol__wcore_finish(w, c);
    }
    evpol__wcore_unref(core);
    return NULL;
}

static int thr_add(evpol_watcher *w, evpol_loop *loop, pid_t pid, const evpol__handler *h,
                   evpol_error *err)
{
    evpol__wcore *core = evpol__wcore_of(w);
    evpol_loop *old_loop = NULL;
    int rc = 0;

    pthread_mutex_lock(&core->lock);
    if (!core->watcher) {
        rc = evpol__fail(err, EVPOL_ERUNTIME, "add_child_handler: ThreadedChildWatcher is closed");
        goto out;
    }
    evpol__child *c = evpol__childtab_find(&core->tab, pid);
    if (c) {
        /* CW-2: the thread already waiting for pid delivers whatever
         * registration is current when the child exits. */
        evpol__child_replace(c, h, loop, &old_loop);
        goto out;
    }
    c = evpol__child_new(pid, h, loop);
    thr_job *job = (thr_job *)core->spare;
    if (job)
        core->spare = job->link.next;
    else
        job = evpol__sys.calloc(1, sizeof *job);
    if (!c || !job) {
        evpol__child_free(c);
        evpol__sys.free(job);
        rc = evpol__fail(err, EVPOL_ENOMEM, "out of memory");
        goto out;
    }
    evpol__childtab_insert(&core->tab, c);
    job->core = core;
    job->pid = pid;
    job->waitpid = evpol__sys.waitpid;
    evpol__wcore_ref(core);
    /* Created under the lock, so that a thread whose child is already gone
     * finds its record complete, and a failure leaves no trace. */
    pthread_t thread;
    int terr = evpol__sys.thread_create(&thread, WAITER_STACK_SIZE, waiter_main, job);
    if (terr == EINVAL) /* stack too small for this process's static TLS */
        terr = evpol__sys.thread_create(&thread, 0, waiter_main, job);
    if (terr != 0) {
        /* Never the last reference (the watcher holds one), so this cannot
         * free the core whose lock we hold. */
        atomic_fetch_sub(&core->refs, 1);
        evpol__childtab_remove(&core->tab, pid);
        evpol__child_free(c);
        evpol__sys.free(job);
        rc = evpol__fail_sys(err, terr, "cannot start a thread waiting for pid %ld", (long)pid);
        goto out;
    }
    evpol__sys.thread_detach(thread);
out:
    pthread_mutex_unlock(&core->lock);
    evpol_loop_unref(old_loop);
    return rc;
}

static int thr_close(evpol_watcher *w, evpol_error *err)
{
    (void)err;
    /* Threads still running find no record and only reap. */
    evpol__wcore_watcher_close(w, evpol__child_free, "");
    return 0;
}

static const struct evpol__watcher_ops thr_ops = {
    .name = "ThreadedChildWatcher",
    .kind = EVPOL_WATCHER_THREADED,
    .add = thr_add,
    .remove = evpol__wcore_watcher_remove, /* no attach: always active */
    .close = thr_close,
    .destroy = evpol__wcore_watcher_destroy,
    .needs_loop = true,
};

int evpol__threaded_new(evpol_watcher **out, evpol_error *err)
{
    return evpol__wcore_watcher_new(&thr_ops, sizeof(evpol__wcore_watcher), out, err);
}
