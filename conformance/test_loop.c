/*
 * test_loop.c — what the policy and the watchers need from a loop
 * (LOOP-1 ... LOOP-7).
 *
 * Written from evpol.h and SPEC.md. Worker threads never call cmocka
 * asserts: they record what they saw and the main thread asserts after
 * joining them. Hang guards (call_later, run_until) are generous and never
 * timing assertions.
 */
#include "alloc_count.h"
#include "harness.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define NTHREADS 8
#define TIMEOUT_MS 10000

typedef struct flag_stop {
    evpol_loop *loop;
    volatile int ran;
} flag_stop;

static void set_flag_and_stop(void *arg)
{
    flag_stop *fs = arg;
    fs->ran++;
    evpol_loop_stop(fs->loop, NULL);
}

static void set_flag(void *arg)
{
    flag_stop *fs = arg;
    fs->ran++;
}

/* ------------------------------------------------------------------ */
/* LOOP-1: wrapping a user's event_base                                */
/* ------------------------------------------------------------------ */

static void user_event_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (*(int *)arg)++;
}

static void test_wrap_user_base(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    struct event_base *base = event_base_new();
    assert_non_null(base);
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    /* A user event on the base, before evpol sees it. */
    int user_fired = 0;
    struct event *user_ev = event_new(base, fds[0], EV_READ | EV_PERSIST, user_event_cb, &user_fired);
    assert_non_null(user_ev);
    assert_int_equal(event_add(user_ev, NULL), 0);

    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new_from_base(base, &loop, NULL));
    assert_true(evpol_is_loop(loop));
    assert_ptr_equal(evpol_loop_base(loop), base);

    /* Running the evpol loop runs the base, user events included. */
    assert_int_equal(write(fds[1], "x", 1), 1);
    flag_stop fs = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag, &fs, NULL));
    volatile int *uf = &user_fired;
    assert_int_equal(run_until(loop, uf, TIMEOUT_MS), 1);
    assert_int_equal(fs.ran, 1);
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);

    /* Close releases evpol's events only. */
    assert_ok(evpol_loop_close(loop, NULL));
    assert_int_equal(evpol_loop_is_closed(loop), 1);
    assert_null(evpol_loop_base(loop));
    assert_true(event_pending(user_ev, EV_READ, NULL) != 0);
    evpol_loop_unref(loop);

    /* The base is still the user's and still works. */
    int once_fired = 0;
    struct timeval zero = {0, 0};
    assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, user_event_cb, &once_fired, &zero), 0);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(once_fired, 1);
    user_fired = 0;
    assert_int_equal(write(fds[1], "y", 1), 1);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(user_fired, 1);

    /* Last unref without an explicit close does not free the base either. */
    assert_ok(evpol_loop_new_from_base(base, &loop, NULL));
    flag_stop fs2 = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag_and_stop, &fs2, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(fs2.ran, 1);
    evpol_loop_unref(loop);
    once_fired = 0;
    assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, user_event_cb, &once_fired, &zero), 0);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(once_fired, 1);

    event_free(user_ev);
    event_base_free(base);
    close(fds[0]);
    close(fds[1]);

    evpol_error err = {0};
    check_error(evpol_loop_new_from_base(NULL, &loop, &err), &err, EVPOL_EINVAL);
    assert_no_leaks(before);
}

/* ------------------------------------------------------------------ */
/* LOOP-2: run, stop, is_running, is_closed, close                     */
/* ------------------------------------------------------------------ */

typedef struct inside {
    evpol_loop *loop;
    evpol_loop *other;
    int is_running;
    int rerun_rc;
    int other_run_rc;
    int close_rc;
    evpol_error close_err;
    int still_running_after_close;
    volatile int done;
} inside;

static void inside_cb(void *arg)
{
    inside *in = arg;
    in->is_running = evpol_loop_is_running(in->loop);
    in->rerun_rc = evpol_loop_run(in->loop, NULL);
    if (in->other)
        in->other_run_rc = evpol_loop_run(in->other, NULL);
    in->close_rc = evpol_loop_close(in->loop, &in->close_err);
    in->still_running_after_close = evpol_loop_is_running(in->loop);
    in->done = 1;
    evpol_loop_stop(in->loop, NULL);
}

static void test_run_stop_state(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop(), *other = new_loop();
    assert_int_equal(evpol_loop_is_running(loop), 0);
    assert_int_equal(evpol_loop_is_closed(loop), 0);

    inside in = {.loop = loop, .other = other, .rerun_rc = -100, .other_run_rc = -100,
                 .close_rc = -100};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, inside_cb, &in, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(in.done, 1);
    assert_int_equal(in.is_running, 1);
    /* Already running; another loop in the same thread. */
    assert_int_equal(in.rerun_rc, EVPOL_ERUNTIME);
    assert_int_equal(in.other_run_rc, EVPOL_ERUNTIME);
    assert_int_equal(evpol_loop_is_running(other), 0);
    /* Closing a running loop. */
    check_error(in.close_rc, &in.close_err, EVPOL_ERUNTIME);
    assert_int_equal(in.still_running_after_close, 1);

    assert_int_equal(evpol_loop_is_running(loop), 0);
    assert_int_equal(evpol_loop_is_closed(loop), 0);

    /* It runs again after being stopped. */
    flag_stop fs = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag_and_stop, &fs, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(fs.ran, 1);

    /* Close, twice. */
    assert_ok(evpol_loop_close(loop, NULL));
    assert_int_equal(evpol_loop_is_closed(loop), 1);
    assert_int_equal(evpol_loop_is_running(loop), 0);
    evpol_error err = {0};
    assert_int_equal(evpol_loop_close(loop, &err), 0);
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    assert_int_equal(evpol_loop_is_closed(loop), 1);

    /* A closed loop does not run nor stop. */
    memset(&err, 0, sizeof err);
    check_error(evpol_loop_run(loop, &err), &err, EVPOL_ERUNTIME);
    memset(&err, 0, sizeof err);
    check_error(evpol_loop_stop(loop, &err), &err, EVPOL_ERUNTIME);

    evpol_loop_unref(loop);
    evpol_loop_unref(other);
    assert_no_leaks(before);
}

typedef struct closer_thread {
    evpol_loop *loop;
    int rc;
    evpol_error err;
} closer_thread;

static void *closer_thread_fn(void *arg)
{
    closer_thread *ct = arg;
    ct->rc = evpol_loop_close(ct->loop, &ct->err);
    evpol_loop_stop(ct->loop, NULL);
    return NULL;
}

typedef struct close_from_other {
    closer_thread ct;
    pthread_t t;
} close_from_other;

static void start_closer(void *arg)
{
    close_from_other *cf = arg;
    /* The loop is running: another thread tries to close it. Joining from
     * here keeps the loop running for the whole attempt. */
    cf->t = start_thread(closer_thread_fn, &cf->ct);
    pthread_join(cf->t, NULL);
}

static void test_close_running_loop_runtime_error(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    close_from_other cf = {.ct = {.loop = loop, .rc = -100}};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, start_closer, &cf, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    check_error(cf.ct.rc, &cf.ct.err, EVPOL_ERUNTIME);
    assert_int_equal(evpol_loop_is_closed(loop), 0);
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
}

static void test_stop_before_run(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    flag_stop fs = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag, &fs, NULL));
    assert_ok(evpol_loop_stop(loop, NULL));
    /* Returns after one pass, having run what was ready. */
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(fs.ran, 1);
    assert_int_equal(evpol_loop_is_running(loop), 0);

    /* With nothing ready it returns too. */
    assert_ok(evpol_loop_stop(loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));

    /* The stop was used up: the next run lasts until the next stop. */
    flag_stop later = {loop, 0};
    assert_ok(evpol_loop_call_later(loop, 1, set_flag, &later, NULL));
    flag_stop by_cb = {loop, 0};
    assert_ok(evpol_loop_call_later(loop, 20, set_flag_and_stop, &by_cb, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(by_cb.ran, 1);
    assert_int_equal(later.ran, 1);

    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
}

/* ------------------------------------------------------------------ */
/* LOOP-3: call_soon_threadsafe                                        */
/* ------------------------------------------------------------------ */

typedef struct post_slot {
    atomic_int runs;
    pthread_t ran_on;
} post_slot;

typedef struct post_test {
    evpol_loop *loop;
    pthread_barrier_t start;
    post_slot slots[NTHREADS];
    atomic_int total;
    int rc[NTHREADS];
    volatile int guard_fired;
} post_test;

typedef struct poster {
    post_test *pt;
    int index;
} poster;

static void record_post(void *arg)
{
    poster *p = arg;
    post_slot *s = &p->pt->slots[p->index];
    atomic_fetch_add(&s->runs, 1);
    s->ran_on = pthread_self();
    if (atomic_fetch_add(&p->pt->total, 1) + 1 == NTHREADS)
        evpol_loop_stop(p->pt->loop, NULL);
}

static void *poster_fn(void *arg)
{
    poster *p = arg;
    pthread_barrier_wait(&p->pt->start);
    p->pt->rc[p->index] = evpol_loop_call_soon_threadsafe(p->pt->loop, record_post, p, NULL);
    return NULL;
}

/* Runs on the loop: lets the posters go, then the loop goes back to
 * waiting with nothing to do but a far-away guard timer. */
static void release_posters(void *arg)
{
    post_test *pt = arg;
    pthread_barrier_wait(&pt->start);
}

static void guard_timer(void *arg)
{
    post_test *pt = arg;
    pt->guard_fired = 1;
    evpol_loop_stop(pt->loop, NULL);
}

static void test_call_soon_threadsafe_from_threads(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    post_test *pt = calloc(1, sizeof *pt);
    assert_non_null(pt);
    pt->loop = new_loop();
    pthread_barrier_init(&pt->start, NULL, NTHREADS + 1);
    poster posters[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        posters[i] = (poster){pt, i};
        pt->rc[i] = -100;
        t[i] = start_thread(poster_fn, &posters[i]);
    }
    /* Only this guard would end the run if a post failed to wake the loop. */
    assert_ok(evpol_loop_call_later(pt->loop, TIMEOUT_MS, guard_timer, pt, NULL));
    assert_ok(evpol_loop_call_soon_threadsafe(pt->loop, release_posters, pt, NULL));
    assert_ok(evpol_loop_run(pt->loop, NULL));
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&pt->start);

    assert_int_equal(pt->guard_fired, 0);
    assert_int_equal(atomic_load(&pt->total), NTHREADS);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pt->rc[i], 0);
        assert_int_equal(atomic_load(&pt->slots[i].runs), 1);
        assert_true(pthread_equal(pt->slots[i].ran_on, pthread_self()));
    }
    assert_ok(evpol_loop_close(pt->loop, NULL));
    evpol_loop_unref(pt->loop);
    free(pt);
    assert_no_leaks(before);
}

/* A loop running in another thread, woken from this one. */
typedef struct loop_thread {
    evpol_loop *loop;
    pthread_t self;
    int run_rc;
} loop_thread;

static void *run_loop_thread(void *arg)
{
    loop_thread *lt = arg;
    lt->self = pthread_self();
    lt->run_rc = evpol_loop_run(lt->loop, NULL);
    return NULL;
}

typedef struct where {
    evpol_loop *loop;
    pthread_t ran_on;
    atomic_int runs;
    int stop;
} where;

static void record_where(void *arg)
{
    where *w = arg;
    w->ran_on = pthread_self();
    atomic_fetch_add(&w->runs, 1);
    if (w->stop)
        evpol_loop_stop(w->loop, NULL);
}

static void test_call_soon_threadsafe_wakes_loop_in_other_thread(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    /* Make sure the thread is inside run before we post. */
    where started = {.loop = loop};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, record_where, &started, NULL));
    loop_thread lt = {.loop = loop, .run_rc = -100};
    pthread_t t = start_thread(run_loop_thread, &lt);
    for (int i = 0; i < TIMEOUT_MS && atomic_load(&started.runs) == 0; i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&started.runs), 1);
    /* The loop now has nothing to do and no timer: only the post wakes it. */
    where w = {.loop = loop, .stop = 1};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, record_where, &w, NULL));
    pthread_join(t, NULL);
    assert_int_equal(lt.run_rc, 0);
    assert_int_equal(atomic_load(&w.runs), 1);
    assert_true(pthread_equal(w.ran_on, t));
    assert_true(pthread_equal(started.ran_on, t));
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
}

typedef struct order {
    evpol_loop *loop;
    int seen[200];
    int n;
} order;

typedef struct order_item {
    order *o;
    int index;
} order_item;

static void record_order(void *arg)
{
    order_item *it = arg;
    it->o->seen[it->o->n++] = it->index;
    if (it->o->n == 200)
        evpol_loop_stop(it->o->loop, NULL);
}

static void dropped_cb(void *arg)
{
    (*(int *)arg)++;
}

static void test_call_soon_threadsafe_order_and_close(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    order *o = calloc(1, sizeof *o);
    order_item *items = calloc(200, sizeof *items);
    assert_non_null(o);
    assert_non_null(items);
    o->loop = loop;
    for (int i = 0; i < 200; i++) {
        items[i] = (order_item){o, i};
        assert_ok(evpol_loop_call_soon_threadsafe(loop, record_order, &items[i], NULL));
    }
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(o->n, 200);
    for (int i = 0; i < 200; i++)
        assert_int_equal(o->seen[i], i);
    free(items);
    free(o);

    /* Pending calls of a loop closed before they ran are never called. */
    int dropped = 0;
    for (int i = 0; i < 5; i++)
        assert_ok(evpol_loop_call_soon_threadsafe(loop, dropped_cb, &dropped, NULL));
    assert_ok(evpol_loop_call_later(loop, 1, dropped_cb, &dropped, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    assert_int_equal(dropped, 0);
    evpol_error err = {0};
    check_error(evpol_loop_call_soon_threadsafe(loop, dropped_cb, &dropped, &err), &err,
                EVPOL_ERUNTIME);
    memset(&err, 0, sizeof err);
    check_error(evpol_loop_call_later(loop, 1, dropped_cb, &dropped, &err), &err, EVPOL_ERUNTIME);
    evpol_loop_unref(loop);
    assert_int_equal(dropped, 0);
}

/* ------------------------------------------------------------------ */
/* LOOP-4: signal handlers, main thread only                           */
/* ------------------------------------------------------------------ */

typedef struct sig_seen {
    evpol_loop *loop;
    volatile int count;
    int signum;
    pthread_t ran_on;
} sig_seen;

static void on_signal(int signum, void *arg)
{
    sig_seen *s = arg;
    s->signum = signum;
    s->ran_on = pthread_self();
    s->count++;
}

typedef struct sig_thread {
    evpol_loop *loop;
    int add_rc, remove_rc;
    evpol_error add_err, remove_err;
    sig_seen *seen;
} sig_thread;

static void *sig_thread_fn(void *arg)
{
    sig_thread *st = arg;
    st->add_rc = evpol_loop_add_signal_handler(st->loop, SIGUSR2, on_signal, st->seen, &st->add_err);
    st->remove_rc = evpol_loop_remove_signal_handler(st->loop, SIGUSR1, &st->remove_err);
    return NULL;
}

static void test_signal_handlers_main_thread_only(void **state)
{
    (void)state;
    /* If a bug left SIGUSR1 at its default action, raise would kill us. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, saved;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGUSR1, &ign, &saved);

    evpol_loop *loop = new_loop();
    sig_seen first = {.loop = loop}, second = {.loop = loop};
    assert_ok(evpol_loop_add_signal_handler(loop, SIGUSR1, on_signal, &first, NULL));
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(run_until(loop, &first.count, TIMEOUT_MS), 1);
    assert_int_equal(first.count, 1);
    assert_int_equal(first.signum, SIGUSR1);
    assert_true(pthread_equal(first.ran_on, pthread_self()));

    /* A second handler replaces the first. */
    assert_ok(evpol_loop_add_signal_handler(loop, SIGUSR1, on_signal, &second, NULL));
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(run_until(loop, &second.count, TIMEOUT_MS), 1);
    assert_int_equal(first.count, 1);
    assert_int_equal(second.signum, SIGUSR1);

    /* From another thread: a runtime error, nothing changes. */
    sig_thread st = {.loop = loop, .add_rc = -100, .remove_rc = -100, .seen = &first};
    pthread_t t = start_thread(sig_thread_fn, &st);
    pthread_join(t, NULL);
    check_error(st.add_rc, &st.add_err, EVPOL_ERUNTIME);
    check_error(st.remove_rc, &st.remove_err, EVPOL_ERUNTIME);

    /* Still installed after the failed remove. */
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(run_until_count(loop, &second.count, 2, TIMEOUT_MS), 1);
    assert_int_equal(second.count, 2);
    assert_int_equal(first.count, 1);
    assert_int_equal(evpol_loop_remove_signal_handler(loop, SIGUSR1, NULL), 1);
    assert_int_equal(evpol_loop_remove_signal_handler(loop, SIGUSR1, NULL), 0);
    assert_int_equal(evpol_loop_remove_signal_handler(loop, SIGUSR2, NULL), 0);

    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    sigaction(SIGUSR1, &saved, NULL);
}

/* The first and the last signal number are signals like any other (the
 * ones just outside are refused: test_errors). */
static void test_signal_numbers_at_the_edges(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    const int edges[] = {1, NSIG - 1};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        /* If a bug left the signal at its default action, raise would
         * end the program. */
        struct sigaction ign = {.sa_handler = SIG_IGN}, saved;
        sigemptyset(&ign.sa_mask);
        assert_int_equal(sigaction(edges[i], &ign, &saved), 0);
        sig_seen seen = {.loop = loop};
        assert_ok(evpol_loop_add_signal_handler(loop, edges[i], on_signal, &seen, NULL));
        assert_int_equal(raise(edges[i]), 0);
        assert_int_equal(run_until(loop, &seen.count, TIMEOUT_MS), 1);
        assert_int_equal(seen.signum, edges[i]);
        assert_int_equal(evpol_loop_remove_signal_handler(loop, edges[i], NULL), 1);
        assert_int_equal(sigaction(edges[i], &saved, NULL), 0);
    }
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
}

/* ------------------------------------------------------------------ */
/* LOOP-5: readers                                                     */
/* ------------------------------------------------------------------ */

typedef struct reader_seen {
    evpol_loop *loop;
    volatile int count;
    int fd;
    pthread_t ran_on;
    int stop;
} reader_seen;

static void on_readable(int fd, void *arg)
{
    reader_seen *r = arg;
    char buf[16];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    r->fd = fd;
    r->ran_on = pthread_self();
    r->count++;
    if (r->stop)
        evpol_loop_stop(r->loop, NULL);
}

typedef struct reader_thread {
    evpol_loop *loop;
    int fd_read, fd_write;
    reader_seen *seen;
    int add_rc;
} reader_thread;

static void *reader_thread_fn(void *arg)
{
    reader_thread *rt = arg;
    rt->add_rc = evpol_loop_add_reader(rt->loop, rt->fd_read, on_readable, rt->seen, NULL);
    if (write(rt->fd_write, "t", 1) != 1)
        rt->add_rc = -1000;
    return NULL;
}

static void test_reader_on_pipe(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    evpol_loop *loop = new_loop();
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);

    reader_seen r = {.loop = loop, .fd = -1};
    assert_ok(evpol_loop_add_reader(loop, fds[0], on_readable, &r, NULL));
    assert_int_equal(write(fds[1], "a", 1), 1);
    assert_int_equal(run_until(loop, &r.count, TIMEOUT_MS), 1);
    assert_int_equal(r.fd, fds[0]);
    assert_true(pthread_equal(r.ran_on, pthread_self()));

    /* A second reader replaces the first. */
    reader_seen r2 = {.loop = loop, .fd = -1};
    int first_count = r.count;
    assert_ok(evpol_loop_add_reader(loop, fds[0], on_readable, &r2, NULL));
    assert_int_equal(write(fds[1], "b", 1), 1);
    assert_int_equal(run_until(loop, &r2.count, TIMEOUT_MS), 1);
    assert_int_equal(r.count, first_count);

    assert_int_equal(evpol_loop_remove_reader(loop, fds[0], NULL), 1);
    assert_int_equal(evpol_loop_remove_reader(loop, fds[0], NULL), 0);

    /* Removed: a readable fd no longer calls it (one pass over what is
     * ready, the fd among it). */
    int r2_count = r2.count;
    assert_int_equal(write(fds[1], "c", 1), 1);
    assert_ok(evpol_loop_stop(loop, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(r2.count, r2_count);
    char buf[8];
    assert_true(read(fds[0], buf, sizeof buf) >= 1);

    /* From another thread while the loop runs here. */
    reader_seen r3 = {.loop = loop, .fd = -1, .stop = 1};
    reader_thread rt = {loop, fds[0], fds[1], &r3, -100};
    pthread_t t = start_thread(reader_thread_fn, &rt);
    assert_int_equal(run_until(loop, &r3.count, TIMEOUT_MS), 1);
    pthread_join(t, NULL);
    assert_int_equal(rt.add_rc, 0);
    assert_true(pthread_equal(r3.ran_on, pthread_self()));
    assert_int_equal(evpol_loop_remove_reader(loop, fds[0], NULL), 1);

    /* The loop does not own the fd: still open after close. */
    assert_ok(evpol_loop_add_reader(loop, fds[0], on_readable, &r, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    assert_int_equal(fcntl(fds[0], F_GETFD), FD_CLOEXEC);
    close(fds[0]);
    close(fds[1]);
    assert_no_leaks(before);
}

/* The loop finds a reader by its fd in an index as long as the highest fd
 * it was given: a reader on a high fd grows it, and the readers already in
 * it must survive the move while the old index is released. */
static void test_readers_on_low_and_high_fds(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    long blocks_before = alloc_count_evpol();
    evpol_loop *loop = new_loop();
    int low[2], high[2];
    assert_int_equal(pipe2(low, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(pipe2(high, O_CLOEXEC | O_NONBLOCK), 0);
    int high_fd = fcntl(high[0], F_DUPFD_CLOEXEC, 300);
    assert_true(high_fd >= 300);
    close(high[0]);
    high[0] = high_fd;

    reader_seen low_seen = {.loop = loop, .fd = -1, .stop = 1};
    reader_seen high_seen = {.loop = loop, .fd = -1, .stop = 1};
    assert_ok(evpol_loop_add_reader(loop, low[0], on_readable, &low_seen, NULL));
    assert_ok(evpol_loop_add_reader(loop, high[0], on_readable, &high_seen, NULL));

    assert_int_equal(write(low[1], "l", 1), 1);
    assert_int_equal(run_until(loop, &low_seen.count, TIMEOUT_MS), 1);
    assert_int_equal(low_seen.fd, low[0]);
    assert_int_equal(high_seen.count, 0);
    assert_int_equal(write(high[1], "h", 1), 1);
    assert_int_equal(run_until(loop, &high_seen.count, TIMEOUT_MS), 1);
    assert_int_equal(high_seen.fd, high[0]);
    assert_int_equal(low_seen.count, 1);

    assert_int_equal(evpol_loop_remove_reader(loop, low[0], NULL), 1);
    assert_int_equal(evpol_loop_remove_reader(loop, high[0], NULL), 1);
    assert_int_equal(evpol_loop_remove_reader(loop, high[0] + 1, NULL), 0);
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    assert_int_equal(alloc_count_evpol(), blocks_before);
    for (int i = 0; i < 2; i++) {
        close(low[i]);
        close(high[i]);
    }
    assert_no_leaks(before);
}

/* ------------------------------------------------------------------ */
/* LOOP-6: the running loop, per thread                                */
/* ------------------------------------------------------------------ */

typedef struct running_probe {
    evpol_loop *loop;
    int rc;
    evpol_loop *seen;
    /* For the thread test. */
    atomic_int in_loop;
    atomic_int may_stop;
} running_probe;

static void probe_running(void *arg)
{
    running_probe *p = arg;
    p->rc = evpol_get_running_loop(&p->seen, NULL);
    evpol_loop_stop(p->loop, NULL);
}

static void announce_running(void *arg)
{
    running_probe *p = arg;
    p->rc = evpol_get_running_loop(&p->seen, NULL);
    atomic_store(&p->in_loop, 1);
}

typedef struct thread_b {
    running_probe probe;
    int after_rc;
    int run_rc;
} thread_b;

static void *thread_b_fn(void *arg)
{
    thread_b *b = arg;
    b->run_rc = evpol_loop_run(b->probe.loop, NULL);
    evpol_loop *none = NULL;
    b->after_rc = evpol_get_running_loop(&none, NULL);
    return NULL;
}

static void test_running_loop_per_thread(void **state)
{
    (void)state;
    evpol_loop *a = new_loop(), *b = new_loop(), *seen = NULL;
    evpol_error err = {0};
    check_error(evpol_get_running_loop(&seen, &err), &err, EVPOL_ERUNTIME);
    assert_non_null(strstr(err.message, "no running event loop"));

    running_probe pa = {.loop = a, .rc = -100};
    assert_ok(evpol_loop_call_soon_threadsafe(a, probe_running, &pa, NULL));
    assert_ok(evpol_loop_run(a, NULL));
    assert_int_equal(pa.rc, 0);
    assert_ptr_equal(pa.seen, a);
    memset(&err, 0, sizeof err);
    check_error(evpol_get_running_loop(&seen, &err), &err, EVPOL_ERUNTIME);

    /* b runs in thread B: it is B's running loop, not ours. */
    thread_b tb = {.probe = {.loop = b, .rc = -100}, .after_rc = -100, .run_rc = -100};
    assert_ok(evpol_loop_call_soon_threadsafe(b, announce_running, &tb.probe, NULL));
    pthread_t t = start_thread(thread_b_fn, &tb);
    for (int i = 0; i < TIMEOUT_MS && !atomic_load(&tb.probe.in_loop); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&tb.probe.in_loop), 1);
    assert_int_equal(evpol_loop_is_running(b), 1);
    memset(&err, 0, sizeof err);
    check_error(evpol_get_running_loop(&seen, &err), &err, EVPOL_ERUNTIME);
    /* While b runs there, a runs here and is ours. */
    running_probe pa2 = {.loop = a, .rc = -100};
    assert_ok(evpol_loop_call_soon_threadsafe(a, probe_running, &pa2, NULL));
    assert_ok(evpol_loop_run(a, NULL));
    assert_ptr_equal(pa2.seen, a);
    assert_ok(evpol_loop_stop(b, NULL));
    pthread_join(t, NULL);
    assert_int_equal(tb.run_rc, 0);
    assert_int_equal(tb.probe.rc, 0);
    assert_ptr_equal(tb.probe.seen, b);
    assert_int_equal(tb.after_rc, EVPOL_ERUNTIME);

    evpol_loop_unref(a);
    evpol_loop_unref(b);
}

typedef struct eight {
    pthread_barrier_t *barrier;
    evpol_loop *loop;
    evpol_loop *seen;
    int rc_new, rc_run, rc_seen, is_running, barrier_ok;
} eight;

static void eight_cb(void *arg)
{
    eight *e = arg;
    /* All eight loops are running at this point. */
    int b = pthread_barrier_wait(e->barrier);
    e->barrier_ok = (b == 0 || b == PTHREAD_BARRIER_SERIAL_THREAD);
    e->rc_seen = evpol_get_running_loop(&e->seen, NULL);
    e->is_running = evpol_loop_is_running(e->loop);
    evpol_loop_stop(e->loop, NULL);
}

static void *eight_fn(void *arg)
{
    eight *e = arg;
    e->rc_new = evpol_loop_new(EVPOL_BACKEND_DEFAULT, &e->loop, NULL);
    if (e->rc_new != 0)
        return NULL;
    evpol_loop_call_soon_threadsafe(e->loop, eight_cb, e, NULL);
    e->rc_run = evpol_loop_run(e->loop, NULL);
    evpol_loop_close(e->loop, NULL);
    return NULL;
}

static void test_eight_loops_in_eight_threads(void **state)
{
    (void)state;
    resource_snapshot before = resources_now();
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    eight e[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].barrier = &barrier;
        e[i].rc_new = e[i].rc_run = e[i].rc_seen = -100;
        t[i] = start_thread(eight_fn, &e[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(e[i].rc_new, 0);
        assert_int_equal(e[i].rc_run, 0);
        assert_int_equal(e[i].barrier_ok, 1);
        assert_int_equal(e[i].rc_seen, 0);
        assert_ptr_equal(e[i].seen, e[i].loop);
        assert_int_equal(e[i].is_running, 1);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(e[i].loop, e[j].loop);
        evpol_loop_unref(e[i].loop);
    }
    assert_no_leaks(before);
}

/* ------------------------------------------------------------------ */
/* LOOP-7: the debug flag                                              */
/* ------------------------------------------------------------------ */

static void use_loop(evpol_loop *loop)
{
    flag_stop fs = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag, &fs, NULL));
    assert_int_equal(run_until(loop, &fs.ran, TIMEOUT_MS), 1);
    flag_stop fs2 = {loop, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag_and_stop, &fs2, NULL));
    assert_ok(evpol_loop_run(loop, NULL));
    assert_int_equal(fs2.ran, 1);
}

static void test_debug_flag(void **state)
{
    (void)state;
    evpol_loop *loop = new_loop();
    assert_int_equal(evpol_loop_get_debug(loop), 0);

    log_capture *cap = calloc(1, sizeof *cap);
    assert_non_null(cap);
    capture_start(cap);
    use_loop(loop);
    capture_stop();
    assert_int_equal(capture_count(cap, -1, EVPOL_LOG_CAT_DEBUG, NULL), 0);
    assert_int_equal(capture_count(cap, EVPOL_LOG_DEBUG, -1, NULL), 0);

    assert_ok(evpol_loop_set_debug(loop, true, NULL));
    assert_int_equal(evpol_loop_get_debug(loop), 1);
    capture_start(cap);
    use_loop(loop);
    capture_stop();
    /* Each step of the loop's life that use_loop took, naming the loop. */
    const char *const steps[] = {"loop %p running", "loop %p stopped",
                                 "stop requested for loop %p", "on loop %p"};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, steps[i], (void *)loop);
        if (capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, line) < 1)
            fail_msg("no debug line \"%s\"", line);
    }

    /* Another loop without the flag stays quiet meanwhile. */
    evpol_loop *quiet = new_loop();
    capture_start(cap);
    use_loop(quiet);
    capture_stop();
    assert_int_equal(capture_count(cap, -1, EVPOL_LOG_CAT_DEBUG, NULL), 0);
    evpol_loop_unref(quiet);

    assert_ok(evpol_loop_set_debug(loop, false, NULL));
    assert_int_equal(evpol_loop_get_debug(loop), 0);
    capture_start(cap);
    use_loop(loop);
    capture_stop();
    assert_int_equal(capture_count(cap, -1, EVPOL_LOG_CAT_DEBUG, NULL), 0);

    /* Set from another thread than the loop's: any thread. */
    assert_ok(evpol_loop_set_debug(loop, true, NULL));
    loop_thread lt = {.loop = loop, .run_rc = -100};
    capture_start(cap);
    where w = {.loop = loop, .stop = 1};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, record_where, &w, NULL));
    pthread_t t = start_thread(run_loop_thread, &lt);
    pthread_join(t, NULL);
    capture_stop();
    assert_int_equal(lt.run_rc, 0);
    assert_true(capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, NULL) >= 1);

    free(cap);
    evpol_loop_unref(loop);
}

/* ---- failures of libevent itself ---- */

static void noop_reader(int fd, void *arg)
{
    (void)fd;
    (void)arg;
}

/* LOOP-1: a backend libevent may not use (its EVENT_NO* switches, the way a
 * user disables one) is reported as unavailable; with none left at all no
 * base can be made; a backend whose own setup fails (epoll_create1 with no
 * fd left) reports the errno. Single-threaded while the environment and the
 * limit are changed; both are restored before any assertion. */
static void test_backend_unavailable(void **state)
{
    (void)state;
    evpol_error e_epoll, e_default, e_nofd;
    memset(&e_epoll, 0, sizeof e_epoll);
    memset(&e_default, 0, sizeof e_default);
    memset(&e_nofd, 0, sizeof e_nofd);
    evpol_loop *l_epoll = (evpol_loop *)&e_epoll, *l_default = (evpol_loop *)&e_default;
    evpol_loop *l_poll = NULL, *l_fallback = NULL, *l_nofd = (evpol_loop *)&e_nofd;

    event_set_log_callback(nop_libevent_log);
    setenv("EVENT_NOEPOLL", "1", 1);
    int rc_epoll = evpol_loop_new(EVPOL_BACKEND_EPOLL, &l_epoll, &e_epoll);
    int rc_poll = evpol_loop_new(EVPOL_BACKEND_POLL, &l_poll, NULL);
    int rc_fallback = evpol_loop_new(EVPOL_BACKEND_DEFAULT, &l_fallback, NULL);
    setenv("EVENT_NOPOLL", "1", 1);
    setenv("EVENT_NOSELECT", "1", 1);
    int rc_default = evpol_loop_new(EVPOL_BACKEND_DEFAULT, &l_default, &e_default);
    int rc_default_noerr = evpol_loop_new(EVPOL_BACKEND_DEFAULT, &l_default, NULL);
    unsetenv("EVENT_NOEPOLL");
    unsetenv("EVENT_NOPOLL");
    unsetenv("EVENT_NOSELECT");

    struct rlimit saved = forbid_new_fds();
    int rc_nofd = evpol_loop_new(EVPOL_BACKEND_EPOLL, &l_nofd, &e_nofd);
    restore_fd_limit(saved);
    event_set_log_callback(NULL);

    assert_int_equal(rc_epoll, EVPOL_ENOTSUP);
    assert_null(l_epoll);
    assert_int_equal(e_epoll.code, EVPOL_ENOTSUP);
    assert_string_equal(e_epoll.message, "libevent backend 'epoll' is disabled by EVENT_NOEPOLL");
    /* The other backends still work, and DEFAULT falls back to one. */
    assert_int_equal(rc_poll, 0);
    assert_int_equal(rc_fallback, 0);
    evpol_loop_unref(l_poll);
    evpol_loop_unref(l_fallback);

    assert_int_equal(rc_default, EVPOL_ENOTSUP);
    assert_int_equal(rc_default_noerr, EVPOL_ENOTSUP);
    assert_null(l_default);
    assert_string_equal(e_default.message, "no libevent backend is available");

    assert_int_equal(rc_nofd, EVPOL_ESYSTEM);
    assert_null(l_nofd);
    assert_int_equal(e_nofd.sys_errno, EMFILE);
    char want[128];
    snprintf(want, sizeof want, "cannot create an event_base (epoll): %s", strerror(EMFILE));
    assert_string_equal(e_nofd.message, want);

    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_EPOLL, &loop, NULL));
    evpol_loop_unref(loop);
}

/* LOOP-1: a user's base that is not notifiable (EVENT_BASE_FLAG_NOLOCK) is
 * made so by the wrap; when that is impossible (no fd left for its eventfd
 * or pipe) the wrap fails with the documented message and leaves the base
 * usable. */
static void test_wrap_base_that_cannot_be_woken(void **state)
{
    (void)state;
    struct event_config *cfg = event_config_new();
    assert_non_null(cfg);
    assert_int_equal(event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK), 0);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    assert_non_null(base);
    resource_snapshot before = resources_now();

    struct rlimit saved = forbid_new_fds();
    evpol_error err;
    memset(&err, 0, sizeof err);
    evpol_loop *loop = (evpol_loop *)&err;
    int rc = evpol_loop_new_from_base(base, &loop, &err);
    restore_fd_limit(saved);
    assert_int_equal(rc, EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    assert_null(loop);
    assert_string_equal(err.message, "the event_base cannot be woken from other threads");
    assert_int_equal(resources_now().fds, before.fds);

    /* With fds available again the same base can be wrapped. */
    assert_ok(evpol_loop_new_from_base(base, &loop, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    event_base_free(base);
}

/* LOOP-2: running a wrapped base's loop from inside the user's own
 * event_base_loop on that base is an error (libevent refuses a reentrant
 * loop), and the loop is left not running. */
typedef struct reentrant_state {
    evpol_loop *loop;
    struct event_base *base;
    int rc;
    int running_after;
    evpol_error err;
} reentrant_state;

static void reentrant_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reentrant_state *st = arg;
    st->rc = evpol_loop_run(st->loop, &st->err);
    st->running_after = evpol_loop_is_running(st->loop);
    event_base_loopbreak(st->base);
}


static void test_run_inside_users_dispatch_fails(void **state)
{
    (void)state;
    reentrant_state st;
    memset(&st, 0, sizeof st);
    st.base = event_base_new();
    assert_non_null(st.base);
    assert_ok(evpol_loop_new_from_base(st.base, &st.loop, NULL));
    struct timeval now = {0, 0};
    assert_int_equal(event_base_once(st.base, -1, EV_TIMEOUT, reentrant_cb, &st, &now), 0);
    event_set_log_callback(nop_libevent_log); /* its "reentrant invocation" line */
    assert_int_equal(event_base_dispatch(st.base), 0);
    event_set_log_callback(NULL);
    assert_int_equal(st.rc, EVPOL_ERUNTIME);
    assert_int_equal(st.err.code, EVPOL_ERUNTIME);
    assert_string_equal(st.err.message, "event_base_loop failed");
    assert_int_equal(st.running_after, 0);
    evpol_loop *none = NULL;
    assert_int_equal(evpol_get_running_loop(&none, NULL), EVPOL_ERUNTIME);
    /* Still usable the ordinary way. */
    volatile int flag = 1;
    assert_true(run_until(st.loop, &flag, TIMEOUT_MS));
    evpol_loop_unref(st.loop);
    event_base_free(st.base);
}

/* LOOP-5: an fd the backend cannot watch (epoll refuses regular files and
 * closed descriptors) is refused with the backend's errno, nothing is
 * registered, and the loop goes on working. */
static void test_reader_refused_by_backend(void **state)
{
    (void)state;
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_EPOLL, &loop, NULL));
    resource_snapshot before = resources_now();
    int file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    assert_true(file >= 0);
    evpol_error err;
    memset(&err, 0, sizeof err);
    event_set_log_callback(nop_libevent_log);
    assert_int_equal(evpol_loop_add_reader(loop, file, noop_reader, NULL, &err), EVPOL_ESYSTEM);
    event_set_log_callback(NULL);
    assert_int_equal(err.code, EVPOL_ESYSTEM);
    assert_int_equal(err.sys_errno, EPERM);
    char want[128];
    snprintf(want, sizeof want, "add_reader: libevent refused the event: %s", strerror(EPERM));
    assert_string_equal(err.message, want);
    assert_int_equal(evpol_loop_remove_reader(loop, file, NULL), 0);
    close(file);

    int closed_fd = dup(0);
    assert_true(closed_fd >= 0);
    close(closed_fd);
    memset(&err, 0, sizeof err);
    event_set_log_callback(nop_libevent_log);
    assert_int_equal(evpol_loop_add_reader(loop, closed_fd, noop_reader, NULL, &err),
                     EVPOL_ESYSTEM);
    event_set_log_callback(NULL);
    assert_int_equal(err.sys_errno, EBADF);
    assert_int_equal(evpol_loop_remove_reader(loop, closed_fd, NULL), 0);
    assert_int_equal(resources_now().fds, before.fds);

    volatile int flag = 1;
    assert_true(run_until(loop, &flag, TIMEOUT_MS));
    evpol_loop_unref(loop);
}

/* LOOP-3, issue 13: a call dropped by close gives its memory back through
 * the seam's free, as it took it through the seam's calloc, so that a seam
 * counting evpol's memory sees every block come back. */
static atomic_long seam_blocks;

static void *seam_calloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p)
        atomic_fetch_add(&seam_blocks, 1);
    return p;
}

static void seam_free(void *p)
{
    if (p)
        atomic_fetch_sub(&seam_blocks, 1);
    free(p);
}

static void never_called(void *arg)
{
    (void)arg;
    fail_msg("a call dropped by close ran");
}

static void test_dropped_call_freed_through_seam(void **state)
{
    (void)state;
    evpol_sys t = *evpol_sys_real();
    t.calloc = seam_calloc;
    t.free = seam_free;
    atomic_store(&seam_blocks, 0);
    assert_ok(evpol_sys_set(&t, NULL));
    evpol_loop *loop = NULL;
    assert_ok(evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, NULL));
    assert_ok(evpol_loop_call_soon_threadsafe(loop, never_called, NULL, NULL));
    assert_ok(evpol_loop_close(loop, NULL));
    evpol_loop_unref(loop);
    long left = atomic_load(&seam_blocks);
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_int_equal(left, 0);
}

int main(void)
{
    const harness_test tests[] = {
        CLAUSE_TEST(test_wrap_user_base, "LOOP-1"),
        CLAUSE_TEST(test_run_stop_state, "LOOP-2 LOOP-6"),
        CLAUSE_TEST(test_close_running_loop_runtime_error, "LOOP-2"),
        CLAUSE_TEST(test_stop_before_run, "LOOP-2"),
        CLAUSE_TEST(test_call_soon_threadsafe_from_threads, "LOOP-3"),
        CLAUSE_TEST(test_call_soon_threadsafe_wakes_loop_in_other_thread, "LOOP-3"),
        CLAUSE_TEST(test_call_soon_threadsafe_order_and_close, "LOOP-3 LOOP-2"),
        CLAUSE_TEST(test_dropped_call_freed_through_seam, "LOOP-3"),
        CLAUSE_TEST(test_signal_handlers_main_thread_only, "LOOP-4"),
        CLAUSE_TEST(test_signal_numbers_at_the_edges, "LOOP-4"),
        CLAUSE_TEST(test_reader_on_pipe, "LOOP-5"),
        CLAUSE_TEST(test_readers_on_low_and_high_fds, "LOOP-5"),
        CLAUSE_TEST(test_running_loop_per_thread, "LOOP-6"),
        CLAUSE_TEST(test_eight_loops_in_eight_threads, "LOOP-6 LOOP-2"),
        CLAUSE_TEST(test_debug_flag, "LOOP-7"),
        CLAUSE_TEST(test_backend_unavailable, "LOOP-1 POL-20 ERR-1"),
        CLAUSE_TEST(test_wrap_base_that_cannot_be_woken, "LOOP-1 ERR-1"),
        CLAUSE_TEST(test_run_inside_users_dispatch_fails, "LOOP-2 LOOP-6 ERR-1"),
        CLAUSE_TEST(test_reader_refused_by_backend, "LOOP-5 ERR-1"),
    };
    return harness_run_group("loop", tests, NULL, NULL);
}
