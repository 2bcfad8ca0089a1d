/*
 * fake_kernel.c — the deterministic fake kernel (see fake_kernel.h for the
 * model and the choices it makes).
 *
 * State lives in one static structure behind one mutex. Children are kept in
 * creation order (the order Linux scans them in), so FK_ORDER_SPAWN is just
 * "first zombie in the array". Every state change wakes the blocked waitpid
 * calls it concerns (wake: the child's own waiters and every waitpid(-1);
 * wake_all: all of them) and takes them out of the blocked count, so
 * fk_blocked_waiters counts only waiters that have seen the latest state:
 * tests use it to know that a waiting thread has reacted to an exit. A
 * waiter for another child is not woken: nothing it can return changed, so
 * it has seen the latest state already (waking it would cost a thread
 * switch per waiter and per exit, and one more for whoever waits for it to
 * block again). Real kernel calls that may block (waitpid without WNOHANG,
 * spawning a real program, creating a thread) and SIGCHLD handlers run
 * without the lock.
 */
#include "fake_kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef __WALL
#define __WALL 0x40000000
#endif
#ifndef __WCLONE
#define __WCLONE 0x80000000
#endif
#ifndef __WNOTHREAD
#define __WNOTHREAD 0x20000000
#endif

/* Options the kernel accepts for wait4 (others: EINVAL). */
#define FK_WAIT_VALID_OPTIONS \
    ((unsigned)(WNOHANG | WUNTRACED | WCONTINUED) | (unsigned)__WALL | (unsigned)__WCLONE | \
     (unsigned)__WNOTHREAD)

/* How often a blocking waitpid(-1) that must also watch real children
 * looks at them again. A polling period, never an assertion. */
#define FK_REAL_POLL_NS 5000000L

typedef struct fk_child {
    pid_t pid;
    fk_state state;
    int status;
    unsigned long exit_seq; /* order of becoming a zombie */
} fk_child;

/* A blocking waitpid asleep in the fake, on its own condition variable so
 * that a change wakes only the waiters it concerns. */
typedef struct fk_sleeper {
    struct fk_sleeper *next;
    pid_t pid; /* > 0: that child's waiter; else waitpid(-1) and the like */
    bool woken;
    pthread_cond_t cond;
} fk_sleeper;

/* A thread in wait_blocked_until: what it waits for. */
typedef struct fk_settler {
    struct fk_settler *next;
    bool (*reached)(long);
    long arg;
} fk_settler;

typedef struct fk_pidfd {
    int fd;
    pid_t pid;
} fk_pidfd;

static struct {
    pthread_mutex_t lock;

    fk_child *kids; /* creation order */
    /* waitpid calls per fake pid, indexed by pid - FK_PID_BASE. */
    unsigned long *waits;
    size_t capwaits;
    size_t nkids, capkids;
    pid_t next_pid;
    unsigned long exit_seq;
    fk_order order;

    unsigned eintr_any, eintr_blocking;
    pid_t fail_wait_pid; /* fk_fail_waitpid */
    int fail_wait_errno;
    unsigned fail_wait_n;
    int pidfd_errno;
    unsigned fail_threads;
    int fail_spawn;
    bool spawn_exit_pending;
    int spawn_exit_code;
    bool spawn_real;
    unsigned auto_sig;

    struct sigaction sigchld;

    fk_pidfd *pidfds;
    size_t npidfds, cappidfds;

    /* Waiters asleep with nothing new to look at: a state change takes the
     * waiters it wakes out of the count, and each counts itself again only
     * when it goes back to sleep. So "threads in waitpid == blocked" means
     * every waiter has seen the latest state. */
    int blocked;
    fk_sleeper *sleepers; /* the blocked ones */
    /* Broadcast when blocked grows or a seam thread returns, and only when
     * what one of `settlers` waits for holds (each would otherwise wake to
     * look and sleep again, once per waiter that blocks). */
    pthread_cond_t blocked_cond;
    fk_settler *settlers;

    unsigned long counts[FK_NCALLS];
    unsigned long waitpid_any, sigchld_calls, sigchld_sets, threads_created;
    long threads_live; /* not reset: threads outlive tests */
    long fds_opened, fds_closed;

    fk_call log[FK_LOG_MAX];
    size_t log_next, log_len;
} fk = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .blocked_cond = PTHREAD_COND_INITIALIZER,
    .next_pid = FK_PID_BASE,
};

static void lock(void)
{
    pthread_mutex_lock(&fk.lock);
}

static void unlock(void)
{
    pthread_mutex_unlock(&fk.lock);
}

/* Wake the blocked waitpid calls that child `pid` concerns (its own and
 * every waitpid(-1)), or all of them (pid 0), to look at a changed state.
 * Lock held. */
static void wake(pid_t pid)
{
    for (fk_sleeper **pp = &fk.sleepers; *pp;) {
        fk_sleeper *s = *pp;
        if (pid != 0 && s->pid > 0 && s->pid != pid) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        s->woken = true;
        fk.blocked--;
        pthread_cond_signal(&s->cond);
    }
}

static void wake_all(void)
{
    wake(0);
}

/* blocked grew or a thread returned: wake the settlers if one is done.
 * Lock held. */
static void notify_settlers(void)
{
    for (fk_settler *s = fk.settlers; s; s = s->next)
        if (s->reached(s->arg)) {
            pthread_cond_broadcast(&fk.blocked_cond);
            return;
        }
}

static const evpol_sys *real(void)
{
    return evpol_sys_real();
}

/* ---- log (lock held) ---- */

static void log_call(fk_call_id id, long a, long b, long ret, int err, bool fake)
{
    fk_call *c = &fk.log[fk.log_next];
    c->call = id;
    c->a = a;
    c->b = b;
    c->ret = ret;
    c->err = err;
    c->fake = fake;
    fk.log_next = (fk.log_next + 1) % FK_LOG_MAX;
    if (fk.log_len < FK_LOG_MAX)
        fk.log_len++;
}

/* ---- children (lock held) ---- */

bool fk_is_fake_pid(pid_t pid)
{
    return pid >= FK_PID_BASE;
}

static fk_child *find_child(pid_t pid)
{
    for (size_t i = 0; i < fk.nkids; i++)
        if (fk.kids[i].pid == pid)
            return &fk.kids[i];
    return NULL;
}

static void remove_child(fk_child *c)
{
    size_t i = (size_t)(c - fk.kids);
    pid_t pid = c->pid;
    memmove(&fk.kids[i], &fk.kids[i + 1], (fk.nkids - i - 1) * sizeof *fk.kids);
    fk.nkids--;
    wake(pid);
}

static pid_t add_child(void)
{
    if (fk.nkids == fk.capkids) {
        size_t cap = fk.capkids ? fk.capkids * 2 : 16;
        fk_child *k = realloc(fk.kids, cap * sizeof *k);
        if (!k)
            return -1;
        fk.kids = k;
        fk.capkids = cap;
    }
    size_t idx = (size_t)(fk.next_pid - FK_PID_BASE);
    if (idx >= fk.capwaits) {
        size_t cap = fk.capwaits ? fk.capwaits * 2 : 64;
        unsigned long *w = realloc(fk.waits, cap * sizeof *w);
        if (!w)
            return -1;
        memset(w + fk.capwaits, 0, (cap - fk.capwaits) * sizeof *w);
        fk.waits = w;
        fk.capwaits = cap;
    }
    fk_child *c = &fk.kids[fk.nkids++];
    c->pid = fk.next_pid++;
    c->state = FK_RUNNING;
    c->status = 0;
    c->exit_seq = 0;
    return c->pid;
}

/* A pidfd becomes readable when its process has exited; it stays so. */
static void ready_pidfds(pid_t pid)
{
    for (size_t i = 0; i < fk.npidfds; i++) {
        if (fk.pidfds[i].pid == pid) {
            uint64_t one = 1;
            ssize_t n = write(fk.pidfds[i].fd, &one, sizeof one);
            (void)n; /* an eventfd at its limit is readable anyway */
        }
    }
}

static void make_zombie(fk_child *c, int status)
{
    c->state = FK_ZOMBIE;
    c->status = status;
    c->exit_seq = ++fk.exit_seq;
    ready_pidfds(c->pid);
    wake(c->pid);
}

static fk_child *pick_zombie(void)
{
    fk_child *best = NULL;
    for (size_t i = 0; i < fk.nkids; i++) {
        fk_child *c = &fk.kids[i];
        if (c->state != FK_ZOMBIE)
            continue;
        if (fk.order == FK_ORDER_SPAWN)
            return c;
        if (!best || (fk.order == FK_ORDER_FIFO && c->exit_seq < best->exit_seq) ||
            (fk.order == FK_ORDER_LIFO && c->exit_seq > best->exit_seq))
            best = c;
    }
    return best;
}

static bool has_zombies_or_running(void)
{
    return fk.nkids > 0;
}

/* Whether the default action of `sig` terminates the process. */
static bool terminates(int sig)
{
    switch (sig) {
    case SIGCHLD:
    case SIGURG:
    case SIGWINCH:
    case SIGCONT:
    case SIGSTOP:
    case SIGTSTP:
    case SIGTTIN:
    case SIGTTOU:
        return false;
    default:
        return true;
    }
}

/* ---- SIGCHLD delivery ---- */

int fk_deliver_sigchld(unsigned flags)
{
    int ran = 0;
    if (flags & FK_SIG_SEAM_HANDLER) {
        lock();
        struct sigaction act = fk.sigchld;
        bool is_fn = (act.sa_flags & SA_SIGINFO) ? act.sa_sigaction != NULL
                                                 : (act.sa_handler != SIG_DFL &&
                                                    act.sa_handler != SIG_IGN);
        if (is_fn && (act.sa_flags & SA_RESETHAND)) {
            /* The kernel resets the action on delivery. */
            memset(&fk.sigchld, 0, sizeof fk.sigchld);
            fk.sigchld.sa_handler = SIG_DFL;
            sigemptyset(&fk.sigchld.sa_mask);
        }
        unlock();
        if (is_fn) {
            sigset_t block = act.sa_mask, old;
            if (!(act.sa_flags & SA_NODEFER))
                sigaddset(&block, SIGCHLD);
            pthread_sigmask(SIG_BLOCK, &block, &old);
            if (act.sa_flags & SA_SIGINFO) {
                siginfo_t info;
                memset(&info, 0, sizeof info);
                info.si_signo = SIGCHLD;
                info.si_code = CLD_EXITED;
                act.sa_sigaction(SIGCHLD, &info, NULL);
            } else {
                act.sa_handler(SIGCHLD);
            }
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            ran = 1;
        }
    }
    if (flags & FK_SIG_REAL)
        real()->kill(getpid(), SIGCHLD);
    return ran;
}

/* Called without the lock after a fake child exited. */
static void after_exit(void)
{
    lock();
    unsigned flags = fk.auto_sig;
    unlock();
    if (flags)
        fk_deliver_sigchld(flags);
}

/* ---- the fake system calls ---- */

static pid_t fake_waitpid(pid_t pid, int *status, int options)
{
    lock();
    fk.counts[FK_WAITPID]++;
    if (pid <= 0)
        fk.waitpid_any++;
    else if (fk_is_fake_pid(pid) && (size_t)(pid - FK_PID_BASE) < fk.capwaits)
        fk.waits[pid - FK_PID_BASE]++;
    if ((unsigned)options & ~FK_WAIT_VALID_OPTIONS) {
        log_call(FK_WAITPID, pid, options, -1, EINVAL, true);
        unlock();
        errno = EINVAL;
        return -1;
    }
    if (fk.eintr_any) {
        fk.eintr_any--;
        log_call(FK_WAITPID, pid, options, -1, EINTR, true);
        unlock();
        errno = EINTR;
        return -1;
    }
    if (fk.fail_wait_n && pid == fk.fail_wait_pid) {
        fk.fail_wait_n--;
        int e = fk.fail_wait_errno;
        log_call(FK_WAITPID, pid, options, -1, e, true);
        unlock();
        errno = e;
        return -1;
    }
    bool nohang = (options & WNOHANG) != 0;

    if (pid > 0 && !fk_is_fake_pid(pid)) {
        if (nohang) {
            pid_t r = real()->waitpid(pid, status, options);
            int e = r < 0 ? errno : 0;
            log_call(FK_WAITPID, pid, options, r, e, false);
            unlock();
            if (e)
                errno = e;
            return r;
        }
        unlock();
        pid_t r = real()->waitpid(pid, status, options);
        int e = r < 0 ? errno : 0;
        lock();
        log_call(FK_WAITPID, pid, options, r, e, false);
        unlock();
        if (e)
            errno = e;
        return r;
    }

    /* Which children this call is about: one fake pid, or "any" (-1, 0,
     * -pgrp: fake children share our process group). Another group holds
     * no fake child. */
    bool any = pid <= 0;
    bool fakes_in_scope = !any || pid == -1 || pid == 0 || pid == -getpgrp();

    for (;;) {
        fk_child *c = NULL;
        if (!any) {
            c = find_child(pid);
            if (!c) {
                log_call(FK_WAITPID, pid, options, -1, ECHILD, true);
                unlock();
                errno = ECHILD;
                return -1;
            }
            if (c->state != FK_ZOMBIE)
                c = NULL;
        } else if (fakes_in_scope) {
            c = pick_zombie();
        }
        if (c) {
            pid_t got = c->pid;
            if (status)
                *status = c->status;
            remove_child(c);
            log_call(FK_WAITPID, pid, options, got, 0, true);
            unlock();
            return got;
        }

        bool real_children = false;
        if (any) {
            int st = 0;
            pid_t r = real()->waitpid(pid, &st, options | WNOHANG);
            if (r > 0 || (r < 0 && errno != ECHILD)) {
                int e = r < 0 ? errno : 0;
                if (r > 0 && status)
                    *status = st;
                log_call(FK_WAITPID, pid, options, r, e, false);
                unlock();
                if (e)
                    errno = e;
                return r;
            }
            real_children = r == 0;
            bool fake_children = fakes_in_scope && has_zombies_or_running();
            if (!fake_children && !real_children) {
                log_call(FK_WAITPID, pid, options, -1, ECHILD, true);
                unlock();
                errno = ECHILD;
                return -1;
            }
            if (!fake_children && !nohang) {
                /* Only real children: let the real kernel block. */
                unlock();
                pid_t rr = real()->waitpid(pid, status, options);
                int e = rr < 0 ? errno : 0;
                lock();
                log_call(FK_WAITPID, pid, options, rr, e, false);
                unlock();
                if (e)
                    errno = e;
                return rr;
            }
        }
        if (nohang) {
            log_call(FK_WAITPID, pid, options, 0, 0, true);
            unlock();
            return 0;
        }
        /* The call blocks here: a pending "signal" interrupts it. */
        if (fk.eintr_blocking || fk.eintr_any) {
            if (fk.eintr_blocking)
                fk.eintr_blocking--;
            else
                fk.eintr_any--;
            log_call(FK_WAITPID, pid, options, -1, EINTR, true);
            unlock();
            errno = EINTR;
            return -1;
        }
        fk_sleeper me = {fk.sleepers, any ? -1 : pid, false, PTHREAD_COND_INITIALIZER};
        fk.sleepers = &me;
        fk.blocked++;
        notify_settlers();
        if (real_children) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += FK_REAL_POLL_NS;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&me.cond, &fk.lock, &ts);
        } else {
            while (!me.woken)
                pthread_cond_wait(&me.cond, &fk.lock);
        }
        if (!me.woken) { /* the real-child poll: still counted, still listed */
            for (fk_sleeper **pp = &fk.sleepers; *pp; pp = &(*pp)->next)
                if (*pp == &me) {
                    *pp = me.next;
                    break;
                }
            fk.blocked--;
        }
        pthread_cond_destroy(&me.cond);
    }
}

static bool reserve_pidfd(void)
{
    if (fk.npidfds < fk.cappidfds)
        return true;
    size_t cap = fk.cappidfds ? 2 * fk.cappidfds : 16;
    fk_pidfd *p = realloc(fk.pidfds, cap * sizeof *p);
    if (!p)
        return false;
    fk.pidfds = p;
    fk.cappidfds = cap;
    return true;
}

static int fake_pidfd_open(pid_t pid, unsigned int flags)
{
    lock();
    fk.counts[FK_PIDFD_OPEN]++;
    int e = 0, fd = -1;
    bool fake = true;
    if (fk.pidfd_errno) {
        e = fk.pidfd_errno;
    } else if (flags & ~(unsigned)O_NONBLOCK) { /* PIDFD_NONBLOCK == O_NONBLOCK */
        e = EINVAL;
    } else if (pid <= 0) {
        e = EINVAL;
    } else if (!fk_is_fake_pid(pid)) {
        fake = false;
        fd = real()->pidfd_open(pid, flags);
        e = fd < 0 ? errno : 0;
    } else {
        fk_child *c = find_child(pid);
        if (!c) {
            e = ESRCH;
        } else if (!reserve_pidfd()) {
            e = ENOMEM;
        } else {
            fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (fd < 0) {
                e = errno;
            } else {
                fk.pidfds[fk.npidfds].fd = fd;
                fk.pidfds[fk.npidfds].pid = pid;
                fk.npidfds++;
                if (c->state == FK_ZOMBIE)
                    ready_pidfds(pid);
            }
        }
    }
    if (fd >= 0)
        fk.fds_opened++;
    log_call(FK_PIDFD_OPEN, pid, flags, fd, e, fake);
    unlock();
    if (e) {
        errno = e;
        return -1;
    }
    return fd;
}

static int fake_sigaction(int signum, const struct sigaction *act, struct sigaction *old)
{
    lock();
    fk.counts[FK_SIGACTION]++;
    if (signum != SIGCHLD) {
        int r = real()->sigaction(signum, act, old);
        int e = r < 0 ? errno : 0;
        log_call(FK_SIGACTION, signum, act != NULL, r, e, false);
        unlock();
        if (e)
            errno = e;
        return r;
    }
    fk.sigchld_calls++;
    struct sigaction prev = fk.sigchld;
    if (act) {
        fk.sigchld_sets++;
        fk.sigchld = *act;
    }
    if (old)
        *old = prev;
    log_call(FK_SIGACTION, signum, act != NULL, 0, 0, true);
    unlock();
    return 0;
}

static int fake_spawn(pid_t *pid, const evpol_sys_spawn_request *req)
{
    lock();
    fk.counts[FK_SPAWN]++;
    if (fk.fail_spawn) {
        int e = fk.fail_spawn;
        fk.fail_spawn = 0;
        log_call(FK_SPAWN, 0, 0, e, 0, true);
        unlock();
        return e;
    }
    if (fk.spawn_real) {
        unlock();
        pid_t got = 0;
        int e = req ? real()->spawn(&got, req) : EINVAL;
        lock();
        log_call(FK_SPAWN, e ? 0 : got, 0, e, 0, false);
        unlock();
        if (!e && pid)
            *pid = got;
        return e;
    }
    if (!pid || !req || !req->file || !req->argv) {
        log_call(FK_SPAWN, 0, 0, EINVAL, 0, true);
        unlock();
        return EINVAL;
    }
    pid_t p = add_child();
    if (p < 0) {
        log_call(FK_SPAWN, 0, 0, ENOMEM, 0, true);
        unlock();
        return ENOMEM;
    }
    bool exited = false;
    if (fk.spawn_exit_pending) {
        fk.spawn_exit_pending = false;
        make_zombie(find_child(p), (fk.spawn_exit_code & 0xff) << 8);
        exited = true;
    }
    *pid = p;
    log_call(FK_SPAWN, p, 0, 0, 0, true);
    unlock();
    if (exited)
        after_exit();
    return 0;
}

static int fake_kill(pid_t pid, int sig)
{
    lock();
    fk.counts[FK_KILL]++;
    int e = 0;
    bool fake = true, exited = false;
    if (pid <= 0) {
        e = EPERM; /* never signal a process group from a fake */
    } else if (!fk_is_fake_pid(pid)) {
        fake = false;
        if (real()->kill(pid, sig) < 0)
            e = errno;
    } else if (sig < 0 || sig >= NSIG) {
        e = EINVAL;
    } else {
        fk_child *c = find_child(pid);
        if (!c)
            e = ESRCH;
        else if (sig != 0 && c->state == FK_RUNNING && terminates(sig)) {
            make_zombie(c, sig);
            exited = true;
        }
    }
    log_call(FK_KILL, pid, sig, e ? -1 : 0, e, fake);
    unlock();
    if (exited)
        after_exit();
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

/* Runs each thread created through the seam, so that the fake knows when
 * its function has returned (everything it did is done). */
typedef struct fk_tramp {
    void *(*fn)(void *);
    void *arg;
} fk_tramp;

static void *trampoline(void *p)
{
    fk_tramp t = *(fk_tramp *)p;
    free(p);
    void *ret = t.fn(t.arg);
    lock();
    fk.threads_live--;
    notify_settlers();
    unlock();
    return ret;
}

/* Where threads made through the fake come from (fk_set_thread_lower). */
static _Atomic(const evpol_sys *) thread_lower;

static const evpol_sys *threads(void)
{
    const evpol_sys *t = atomic_load(&thread_lower);
    return t ? t : real();
}

void fk_set_thread_lower(const evpol_sys *lower)
{
    atomic_store(&thread_lower, lower);
}

static int fake_thread_join(pthread_t thread, void **retval)
{
    return threads()->thread_join(thread, retval);
}

static int fake_thread_detach(pthread_t thread)
{
    return threads()->thread_detach(thread);
}

static int fake_thread_create(pthread_t *thread, size_t stack_size, void *(*fn)(void *), void *arg)
{
    lock();
    fk.counts[FK_THREAD_CREATE]++;
    if (fk.fail_threads) {
        fk.fail_threads--;
        log_call(FK_THREAD_CREATE, (long)stack_size, 0, EAGAIN, 0, true);
        unlock();
        return EAGAIN;
    }
    fk_tramp *t = malloc(sizeof *t);
    if (!t) {
        log_call(FK_THREAD_CREATE, (long)stack_size, 0, EAGAIN, 0, true);
        unlock();
        return EAGAIN;
    }
    t->fn = fn;
    t->arg = arg;
    /* Counted before the thread can finish. */
    fk.threads_live++;
    unlock();
    int rc = threads()->thread_create(thread, stack_size, trampoline, t);
    lock();
    if (!rc) {
        fk.threads_created++;
    } else {
        fk.threads_live--;
        free(t);
    }
    log_call(FK_THREAD_CREATE, (long)stack_size, 0, rc, 0, false);
    unlock();
    return rc;
}

static int fake_close(int fd)
{
    lock();
    fk.counts[FK_CLOSE]++;
    bool was_pidfd = false;
    for (size_t i = 0; i < fk.npidfds; i++) {
        if (fk.pidfds[i].fd == fd) {
            fk.pidfds[i] = fk.pidfds[--fk.npidfds];
            was_pidfd = true;
            break;
        }
    }
    int r = real()->close(fd);
    int e = r < 0 ? errno : 0;
    if (r == 0 || e == EINTR) /* Linux frees the fd even on EINTR */
        fk.fds_closed++;
    log_call(FK_CLOSE, fd, 0, r, e, was_pidfd);
    unlock();
    if (e)
        errno = e;
    return r;
}

static int fake_pipe2(int fds[2], int flags)
{
    lock();
    fk.counts[FK_PIPE2]++;
    int r = real()->pipe2(fds, flags);
    int e = r < 0 ? errno : 0;
    if (r == 0)
        fk.fds_opened += 2;
    log_call(FK_PIPE2, flags, 0, r, e, false);
    unlock();
    if (e)
        errno = e;
    return r;
}

static const evpol_sys fake_table = {
    .size = sizeof(evpol_sys),
    .waitpid = fake_waitpid,
    .pidfd_open = fake_pidfd_open,
    .sigaction = fake_sigaction,
    .spawn = fake_spawn,
    .kill = fake_kill,
    .thread_create = fake_thread_create,
    .close = fake_close,
    .pipe2 = fake_pipe2,
    .calloc = calloc, /* memory is not the kernel's to fake */
    .free = free,
    .thread_join = fake_thread_join,
    .thread_detach = fake_thread_detach,
};

/* ---- installation ---- */

const evpol_sys *fk_sys(void)
{
    return &fake_table;
}

int fk_install(void)
{
    fk_reset();
    return evpol_sys_set(&fake_table, NULL);
}

void fk_uninstall(void)
{
    evpol_sys_set(NULL, NULL);
}

void fk_reset(void)
{
    lock();
    fk.nkids = 0;
    fk.next_pid = FK_PID_BASE;
    fk.exit_seq = 0;
    fk.order = FK_ORDER_SPAWN;
    fk.eintr_any = fk.eintr_blocking = 0;
    fk.fail_wait_n = 0;
    fk.pidfd_errno = 0;
    fk.fail_threads = 0;
    fk.fail_spawn = 0;
    fk.spawn_exit_pending = false;
    fk.spawn_real = false;
    fk.auto_sig = 0;
    for (size_t i = 0; i < fk.npidfds; i++)
        real()->close(fk.pidfds[i].fd);
    fk.npidfds = 0;
    memset(fk.counts, 0, sizeof fk.counts);
    if (fk.waits)
        memset(fk.waits, 0, fk.capwaits * sizeof *fk.waits);
    fk.waitpid_any = fk.sigchld_calls = fk.sigchld_sets = fk.threads_created = 0;
    fk.fds_opened = fk.fds_closed = 0;
    fk.log_next = fk.log_len = 0;
    memset(&fk.sigchld, 0, sizeof fk.sigchld);
    if (real()->sigaction(SIGCHLD, NULL, &fk.sigchld) != 0) {
        fk.sigchld.sa_handler = SIG_DFL;
        sigemptyset(&fk.sigchld.sa_mask);
    }
    /* Waiters blocked on a forgotten child wake up with ECHILD. */
    wake_all();
    unlock();
}

/* ---- fake children ---- */

pid_t fk_new_child(void)
{
    lock();
    pid_t p = add_child();
    unlock();
    return p;
}

static int exit_with(pid_t pid, int status)
{
    lock();
    fk_child *c = fk_is_fake_pid(pid) ? find_child(pid) : NULL;
    if (!c || c->state != FK_RUNNING) {
        unlock();
        return -1;
    }
    make_zombie(c, status);
    unlock();
    after_exit();
    return 0;
}

int fk_exit(pid_t pid, int code)
{
    return exit_with(pid, (code & 0xff) << 8);
}

int fk_kill_by_signal(pid_t pid, int sig)
{
    if (sig <= 0 || sig >= NSIG)
        return -1;
    return exit_with(pid, sig);
}

int fk_exit_status(pid_t pid, int raw_status)
{
    return exit_with(pid, raw_status);
}

int fk_reap_elsewhere(pid_t pid)
{
    lock();
    fk_child *c = fk_is_fake_pid(pid) ? find_child(pid) : NULL;
    if (!c) {
        unlock();
        return -1;
    }
    bool exited = c->state == FK_RUNNING;
    if (exited)
        make_zombie(c, 0);
    remove_child(c);
    unlock();
    if (exited)
        after_exit();
    return 0;
}

fk_state fk_child_state(pid_t pid)
{
    lock();
    fk_child *c = fk_is_fake_pid(pid) ? find_child(pid) : NULL;
    fk_state s = c ? c->state : FK_GONE;
    unlock();
    return s;
}

int fk_count_children(void)
{
    lock();
    int n = (int)fk.nkids;
    unlock();
    return n;
}

int fk_count_zombies(void)
{
    lock();
    int n = 0;
    for (size_t i = 0; i < fk.nkids; i++)
        n += fk.kids[i].state == FK_ZOMBIE;
    unlock();
    return n;
}

void fk_set_reap_order(fk_order order)
{
    lock();
    fk.order = order;
    unlock();
}

/* ---- injected failures ---- */

void fk_inject_eintr(unsigned n)
{
    lock();
    fk.eintr_any = n;
    wake_all(); /* interrupts blocked waiters too */
    unlock();
}

void fk_fail_waitpid(pid_t pid, int e, unsigned n)
{
    lock();
    fk.fail_wait_pid = pid;
    fk.fail_wait_errno = e;
    fk.fail_wait_n = n;
    unlock();
}

void fk_inject_eintr_blocking(unsigned n)
{
    lock();
    fk.eintr_blocking = n;
    wake_all();
    unlock();
}

void fk_set_pidfd_errno(int e)
{
    lock();
    fk.pidfd_errno = e;
    unlock();
}

void fk_fail_threads(unsigned n)
{
    lock();
    fk.fail_threads = n;
    unlock();
}

void fk_fail_spawn(int e)
{
    lock();
    fk.fail_spawn = e;
    unlock();
}

void fk_spawn_exits_immediately(int code)
{
    lock();
    fk.spawn_exit_pending = true;
    fk.spawn_exit_code = code;
    unlock();
}

void fk_set_spawn_real(bool r)
{
    lock();
    fk.spawn_real = r;
    unlock();
}

/* ---- SIGCHLD ---- */

void fk_set_auto_sigchld(unsigned flags)
{
    lock();
    fk.auto_sig = flags;
    unlock();
}

bool fk_sigchld_action(struct sigaction *out)
{
    lock();
    struct sigaction act = fk.sigchld;
    unlock();
    if (out)
        *out = act;
    if (act.sa_flags & SA_SIGINFO)
        return act.sa_sigaction != NULL;
    return act.sa_handler != SIG_DFL && act.sa_handler != SIG_IGN;
}

/* ---- blocking waiters ---- */

int fk_blocked_waiters(void)
{
    lock();
    int n = fk.blocked;
    unlock();
    return n;
}

/* Sleep on blocked_cond (broadcast when a waiter blocks or a seam thread
 * returns and what a settler waits for holds) until reached(arg) holds;
 * the timeout is a hang guard. Returns 1 when reached, 0 on timeout. */
static int wait_blocked_until(bool (*reached)(long), long arg, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    lock();
    fk_settler me = {fk.settlers, reached, arg};
    fk.settlers = &me;
    while (!reached(arg))
        if (pthread_cond_timedwait(&fk.blocked_cond, &fk.lock, &deadline) == ETIMEDOUT)
            break;
    int ok = reached(arg);
    for (fk_settler **pp = &fk.settlers; *pp; pp = &(*pp)->next)
        if (*pp == &me) {
            *pp = me.next;
            break;
        }
    unlock();
    return ok;
}

static bool blocked_at_least(long n)
{
    return fk.blocked >= n;
}

static bool every_thread_blocked(long unused)
{
    (void)unused;
    return fk.threads_live <= fk.blocked;
}

static bool no_thread_live(long unused)
{
    (void)unused;
    return fk.threads_live == 0;
}

int fk_wait_blocked(int n, int timeout_ms)
{
    return wait_blocked_until(blocked_at_least, n, timeout_ms);
}

int fk_wait_settled(int timeout_ms)
{
    return wait_blocked_until(every_thread_blocked, 0, timeout_ms);
}

int fk_wait_no_threads(int timeout_ms)
{
    return wait_blocked_until(no_thread_live, 0, timeout_ms);
}

/* ---- accounting ---- */

const char *fk_call_name(fk_call_id id)
{
    static const char *const names[FK_NCALLS] = {
        "waitpid", "pidfd_open", "sigaction", "spawn", "kill", "thread_create", "close", "pipe2",
    };
    return (unsigned)id < FK_NCALLS ? names[id] : "?";
}

unsigned long fk_count(fk_call_id id)
{
    if ((unsigned)id >= FK_NCALLS)
        return 0;
    lock();
    unsigned long n = fk.counts[id];
    unlock();
    return n;
}

unsigned long fk_count_waitpid_any(void)
{
    lock();
    unsigned long n = fk.waitpid_any;
    unlock();
    return n;
}

unsigned long fk_count_waitpid_pid(pid_t pid)
{
    lock();
    unsigned long n = 0;
    if (fk_is_fake_pid(pid)) {
        size_t i = (size_t)(pid - FK_PID_BASE);
        n = i < fk.capwaits ? fk.waits[i] : 0;
        unlock();
        return n;
    }
    size_t start = (fk.log_next + FK_LOG_MAX - fk.log_len) % FK_LOG_MAX;
    for (size_t i = 0; i < fk.log_len; i++) {
        const fk_call *c = &fk.log[(start + i) % FK_LOG_MAX];
        n += c->call == FK_WAITPID && c->a == pid;
    }
    unlock();
    return n;
}

unsigned long fk_count_sigchld_sigaction(void)
{
    lock();
    unsigned long n = fk.sigchld_calls;
    unlock();
    return n;
}

unsigned long fk_count_sigchld_sigaction_set(void)
{
    lock();
    unsigned long n = fk.sigchld_sets;
    unlock();
    return n;
}

unsigned long fk_threads_created(void)
{
    lock();
    unsigned long n = fk.threads_created;
    unlock();
    return n;
}

long fk_threads_live(void)
{
    lock();
    long n = fk.threads_live;
    unlock();
    return n;
}

long fk_fd_balance(void)
{
    lock();
    long n = fk.fds_opened - fk.fds_closed;
    unlock();
    return n;
}

int fk_open_pidfds(void)
{
    lock();
    int n = (int)fk.npidfds;
    unlock();
    return n;
}

int fk_ready_pidfds(void)
{
    lock();
    int n = 0;
    for (size_t i = 0; i < fk.npidfds; i++) {
        fk_child *c = find_child(fk.pidfds[i].pid);
        n += !c || c->state == FK_ZOMBIE;
    }
    unlock();
    return n;
}

size_t fk_calls(fk_call *out, size_t cap)
{
    lock();
    size_t n = fk.log_len < cap ? fk.log_len : cap;
    /* The newest n entries would lose the start of a scenario; give the
     * oldest ones still kept. */
    size_t start = (fk.log_next + FK_LOG_MAX - fk.log_len) % FK_LOG_MAX;
    for (size_t i = 0; i < n; i++)
        out[i] = fk.log[(start + i) % FK_LOG_MAX];
    unlock();
    return n;
}
