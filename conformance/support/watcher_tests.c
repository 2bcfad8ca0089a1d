/*
 * watcher_tests.c — see watcher_tests.h. The test bodies at the end are
 * registered by test_watcher_threaded.c and test_watcher_pidfd.c, each with
 * its own watcher's clause tags.
 */
#include "watcher_tests.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void on_exit_cb(pid_t pid, int rc, void *arg)
{
    result *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->thread = pthread_self();
    r->tag = 1;
    atomic_fetch_add(&r->calls, 1);
}

void on_exit_cb2(pid_t pid, int rc, void *arg)
{
    result *r = arg;
    r->pid = pid;
    r->rc = rc;
    r->thread = pthread_self();
    r->tag = 2;
    atomic_fetch_add(&r->calls, 1);
}

void on_exit_count(pid_t pid, int rc, void *arg)
{
    (void)pid;
    (void)rc;
    atomic_fetch_add((atomic_int *)arg, 1);
}

evpol_watcher *new_watcher(evpol_watcher_kind kind)
{
    evpol_watcher *w = NULL;
    evpol_error err = {0};
    if (evpol_watcher_new(kind, &w, &err) != 0)
        fail_msg("evpol_watcher_new: %s", err.message);
    return w;
}

void free_loop(evpol_loop *loop)
{
    assert_int_equal(evpol_loop_close(loop, NULL), 0);
    evpol_loop_unref(loop);
}

/* True once `pid` is no child of ours any more (reaped by someone). */
int reaped(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 && errno == ECHILD;
}

void do_register(void *p)
{
    reg_req *r = p;
    r->rc = evpol_watcher_add_child_handler(r->w, r->pid, r->cb, r->arg, &r->err);
    __atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
}

int register_in_loop(evpol_loop *loop, evpol_watcher *w, pid_t pid, evpol_child_fn cb,
                     void *arg, evpol_error *err)
{
    reg_req r = {w, pid, cb, arg, 0, {0}, 0};
    assert_ok(evpol_loop_call_soon_threadsafe(loop, do_register, &r, NULL));
    if (!run_until(loop, &r.done, HANG_GUARD_MS))
        fail_msg("registration never ran");
    if (err)
        *err = r.err;
    return r.rc;
}

void set_flag(void *p)
{
    __atomic_store_n((volatile int *)p, 1, __ATOMIC_SEQ_CST);
}

/* Run the loop until a call posted now has run: everything posted to it
 * before (deliveries included) has run too. */
void drain_loop(evpol_loop *loop)
{
    volatile int flag = 0;
    assert_ok(evpol_loop_call_soon_threadsafe(loop, set_flag, (void *)&flag, NULL));
    if (!run_until(loop, &flag, HANG_GUARD_MS))
        fail_msg("the loop never drained");
}

atomic_int seam_waitpid_calls, seam_waitpid_returned;

pid_t counting_waitpid(pid_t pid, int *status, int options)
{
    atomic_fetch_add(&seam_waitpid_calls, 1);
    pid_t r = evpol_sys_real()->waitpid(pid, status, options);
    if (r > 0)
        atomic_fetch_add(&seam_waitpid_returned, 1);
    return r;
}

void install_counting_seam(const evpol_sys *base)
{
    evpol_sys s = base ? *base : *evpol_sys_real();
    s.waitpid = counting_waitpid;
    atomic_store(&seam_waitpid_calls, 0);
    atomic_store(&seam_waitpid_returned, 0);
    assert_ok(evpol_sys_set(&s, NULL));
}

void register_waiting_children(evpol_loop *loop, evpol_watcher *w, int n, int code, pid_t *pids,
                               int *fds, result *r)
{
    memset(r, 0, (size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) {
        pids[i] = spawn_lone_child(&fds[i], code, 0);
        assert_ok(register_in_loop(loop, w, pids[i], on_exit_cb, &r[i], NULL));
    }
}

int count_pidfds(int *not_cloexec)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len < 0)
            continue;
        target[len] = '\0';
        if (strcmp(target, "anon_inode:[pidfd]") != 0)
            continue;
        n++;
        int flags = fcntl(atoi(e->d_name), F_GETFD);
        if (not_cloexec && (flags < 0 || !(flags & FD_CLOEXEC)))
            (*not_cloexec)++;
    }
    closedir(d);
    return n;
}

void stress_cb(pid_t pid, int rc, void *arg)
{
    stress_cb_arg *a = arg;
    a->slot->rc = rc;
    if (pid != a->slot->pid || !pthread_equal(pthread_self(), a->st->self))
        a->slot->wrong_thread = 1;
    atomic_fetch_add(&a->slot->calls, 1);
    atomic_fetch_add(&a->st->delivered, 1);
}

void *stress_main(void *p)
{
    stress_thread *st = p;
    st->self = pthread_self();
    evpol_loop *loop = NULL;
    evpol_error err = {0};
    stress_cb_arg *args = calloc(STRESS_PER_THREAD, sizeof *args);
    if (!args || evpol_loop_new(EVPOL_BACKEND_DEFAULT, &loop, &err) != 0) {
        snprintf(st->failure, sizeof st->failure, "setup failed");
        free(args);
        return NULL;
    }
    for (int base = 0; base < STRESS_PER_THREAD; base += STRESS_BATCH) {
        for (int i = base; i < base + STRESS_BATCH; i++) {
            stress_slot *s = &st->slots[i];
            s->expected = (i * 7) % 256;
            s->pid = fork_exit(s->expected);
            args[i].st = st;
            args[i].slot = s;
            if (register_in_loop(loop, st->w, s->pid, stress_cb, &args[i], &err) != 0) {
                snprintf(st->failure, sizeof st->failure, "add_child_handler: %.150s", err.message);
                goto out;
            }
        }
        if (!run_until_count(loop, (volatile int *)&st->delivered, base + STRESS_BATCH,
                             HANG_GUARD_MS)) {
            snprintf(st->failure, sizeof st->failure, "only %d of %d delivered",
                     atomic_load(&st->delivered), base + STRESS_BATCH);
            goto out;
        }
    }
    drain_loop(loop);
    for (int i = 0; i < STRESS_PER_THREAD; i++) {
        stress_slot *s = &st->slots[i];
        if (atomic_load(&s->calls) != 1 || s->rc != s->expected || s->wrong_thread) {
            snprintf(st->failure, sizeof st->failure, "child %d: calls %d rc %d/%d wrong %d", i,
                     atomic_load(&s->calls), s->rc, s->expected, s->wrong_thread);
            goto out;
        }
    }
    st->ok = 1;
out:
    evpol_loop_close(loop, NULL);
    evpol_loop_unref(loop);
    free(args);
    return NULL;
}

void skip_unless_available(evpol_watcher_kind kind)
{
    if (kind == EVPOL_WATCHER_PIDFD && !have_pidfd())
        skip();
}

/* The opening most tests here share: the variant's watcher kind (skipped
 * where unavailable), a resource snapshot, a loop and a watcher. */
typedef struct watcher_fixture {
    evpol_watcher_kind kind;
    resource_snapshot before;
    evpol_loop *loop;
    evpol_watcher *w;
} watcher_fixture;

static watcher_fixture fixture_open(void **state)
{
    watcher_fixture f = {.kind = test_watcher_kind(state)};
    skip_unless_available(f.kind);
    f.before = resources_now();
    f.loop = new_loop();
    f.w = new_watcher(f.kind);
    return f;
}

/* Drop the fixture's watcher and loop; nothing the test made may be left. */
static void fixture_close(watcher_fixture *f)
{
    evpol_watcher_unref(f->w);
    free_loop(f->loop);
    assert_no_leaks(f->before);
}

/* ---- exit codes and the callback thread ---- */

void test_exit_codes(void **state)
{
    watcher_fixture f = fixture_open(state);

    static const int codes[] = {0, 1, 255, 42};
    enum { N = sizeof codes / sizeof codes[0] };
    result res[N];
    int fds[N];
    memset(res, 0, sizeof res);
    for (int i = 0; i < N; i++) {
        res[i].expected_pid = spawn_lone_child(&fds[i], codes[i], 0);
        res[i].expected_rc = codes[i];
        evpol_error err = {0};
        if (register_in_loop(f.loop, f.w, res[i].expected_pid, on_exit_cb, &res[i], &err) != 0)
            fail_msg("add_child_handler: %.150s", err.message);
    }
    for (int i = 0; i < N; i++)
        release_child(fds[i]);
    for (int i = 0; i < N; i++)
        assert_true(run_until_count(f.loop, (volatile int *)&res[i].calls, 1, HANG_GUARD_MS));
    drain_loop(f.loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&res[i].calls), 1);
        assert_int_equal(res[i].pid, res[i].expected_pid);
        assert_int_equal(res[i].rc, res[i].expected_rc);
        assert_true(pthread_equal(res[i].thread, pthread_self()));
    }
    assert_int_equal(evpol_watcher_close(f.w, NULL), 0);
    fixture_close(&f);
}

/* ---- LOOP-7: the loop's debug flag logs each exit it delivers ---- */

void test_debug_logs_exit(void **state)
{
    watcher_fixture f = fixture_open(state);
    log_capture *cap = capture_new();
    assert_ok(evpol_loop_set_debug(f.loop, true, NULL));

    result r = {0};
    int fd;
    r.expected_pid = spawn_lone_child(&fd, 7, 0);
    r.expected_rc = 7;
    assert_ok(register_in_loop(f.loop, f.w, r.expected_pid, on_exit_cb, &r, NULL));
    release_child(fd);
    assert_true(run_until_count(f.loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    drain_loop(f.loop);
    assert_int_equal(r.rc, 7);
    char line[96];
    snprintf(line, sizeof line, "process %ld exited with returncode 7", (long)r.expected_pid);
    assert_int_equal(capture_count(cap, EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, line), 1);

    capture_free(cap);
    assert_int_equal(evpol_watcher_close(f.w, NULL), 0);
    fixture_close(&f);
}

/* ---- death by signal ---- */

void test_killed_by_signal(void **state)
{
    watcher_fixture f = fixture_open(state);

    result term = {0}, killed = {0};
    int fd_term, fd_kill;
    pid_t p_term = spawn_lone_child(&fd_term, 0, SIGTERM);
    pid_t p_kill = spawn_lone_child(&fd_kill, 0, 0);
    assert_ok(register_in_loop(f.loop, f.w, p_term, on_exit_cb, &term, NULL));
    assert_ok(register_in_loop(f.loop, f.w, p_kill, on_exit_cb, &killed, NULL));
    release_child(fd_term);
    assert_int_equal(kill(p_kill, SIGKILL), 0);
    assert_true(run_until_count(f.loop, (volatile int *)&term.calls, 1, HANG_GUARD_MS));
    assert_true(run_until_count(f.loop, (volatile int *)&killed.calls, 1, HANG_GUARD_MS));
    close(fd_kill);
    drain_loop(f.loop);
    assert_int_equal(term.pid, p_term);
    assert_int_equal(term.rc, -SIGTERM);
    assert_int_equal(killed.pid, p_kill);
    assert_int_equal(killed.rc, -SIGKILL);
    assert_int_equal(atomic_load(&term.calls), 1);
    assert_int_equal(atomic_load(&killed.calls), 1);

    fixture_close(&f);
}

/* ---- a child that exited before it was registered ---- */

void test_exited_before_registration(void **state)
{
    watcher_fixture f = fixture_open(state);

    pid_t pid = fork_exit(7);
    wait_exited_not_reaped(pid);
    result r = {0};
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb, &r, NULL));
    assert_true(run_until_count(f.loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    drain_loop(f.loop);
    assert_int_equal(r.pid, pid);
    assert_int_equal(r.rc, 7);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_true(pthread_equal(r.thread, pthread_self()));

    fixture_close(&f);
}

/* ---- loops in non-main threads ---- */

enum { LOOP_THREADS = 4, CHILDREN_PER_THREAD = 6 };

typedef struct loop_thread {
    evpol_watcher *w;
    evpol_loop *loop;
    result res[CHILDREN_PER_THREAD];
    int ok;
    char failure[256];
} loop_thread;

static void *loop_thread_main(void *p)
{
    loop_thread *lt = p;
    int fds[CHILDREN_PER_THREAD];
    evpol_error err = {0};
    if (evpol_loop_new(EVPOL_BACKEND_DEFAULT, &lt->loop, &err) != 0) {
        snprintf(lt->failure, sizeof lt->failure, "loop_new: %.150s", err.message);
        return NULL;
    }
    for (int i = 0; i < CHILDREN_PER_THREAD; i++) {
        lt->res[i].expected_rc = i * 10 + 3;
        lt->res[i].expected_pid = spawn_lone_child(&fds[i], lt->res[i].expected_rc, 0);
        if (register_in_loop(lt->loop, lt->w, lt->res[i].expected_pid, on_exit_cb, &lt->res[i],
                             &err) != 0) {
            snprintf(lt->failure, sizeof lt->failure, "add_child_handler: %.150s", err.message);
            return NULL;
        }
    }
    for (int i = 0; i < CHILDREN_PER_THREAD; i++)
        release_child(fds[i]);
    for (int i = 0; i < CHILDREN_PER_THREAD; i++)
        if (!run_until_count(lt->loop, (volatile int *)&lt->res[i].calls, 1, HANG_GUARD_MS)) {
            snprintf(lt->failure, sizeof lt->failure, "no callback for child %d", i);
            return NULL;
        }
    drain_loop(lt->loop);
    for (int i = 0; i < CHILDREN_PER_THREAD; i++) {
        result *r = &lt->res[i];
        if (atomic_load(&r->calls) != 1 || r->pid != r->expected_pid ||
            r->rc != r->expected_rc || !pthread_equal(r->thread, pthread_self())) {
            snprintf(lt->failure, sizeof lt->failure,
                     "child %d: calls %d pid %ld/%ld rc %d/%d own thread %d", i,
                     atomic_load(&r->calls), (long)r->pid, (long)r->expected_pid, r->rc,
                     r->expected_rc, pthread_equal(r->thread, pthread_self()) != 0);
            return NULL;
        }
    }
    evpol_loop_close(lt->loop, NULL);
    evpol_loop_unref(lt->loop);
    lt->loop = NULL;
    lt->ok = 1;
    return NULL;
}

void test_loops_in_other_threads(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_watcher(kind);
    loop_thread lts[LOOP_THREADS];
    pthread_t th[LOOP_THREADS];
    memset(lts, 0, sizeof lts);
    for (int i = 0; i < LOOP_THREADS; i++) {
        lts[i].w = w;
        assert_int_equal(pthread_create(&th[i], NULL, loop_thread_main, &lts[i]), 0);
    }
    for (int i = 0; i < LOOP_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < LOOP_THREADS; i++)
        if (!lts[i].ok)
            fail_msg("thread %d: %s", i, lts[i].failure);
    evpol_watcher_unref(w);
    assert_no_leaks(before);
}

/* ---- remove ---- */

void test_remove(void **state)
{
    watcher_fixture f = fixture_open(state);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 0, 0);
    result r = {0};
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb, &r, NULL));
    assert_int_equal(evpol_watcher_remove_child_handler(f.w, pid, NULL), 1);
    assert_int_equal(evpol_watcher_remove_child_handler(f.w, pid, NULL), 0);
    release_child(fd);
    /* The watcher still reaps it: no zombie. */
    assert_true(run_until_reaped(f.loop, pid));
    assert_true(wait_threads_at_most(f.before.threads, HANG_GUARD_MS));
    drain_loop(f.loop);
    assert_int_equal(atomic_load(&r.calls), 0);

    fixture_close(&f);
}

void test_remove_unknown(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    evpol_watcher *w = new_watcher(kind);
    assert_int_equal(evpol_watcher_remove_child_handler(w, 12345678, NULL), 0);
    assert_int_equal(evpol_watcher_remove_child_handler(w, getpid(), NULL), 0);
    evpol_error err = {0};
    assert_int_equal(evpol_watcher_remove_child_handler(w, -3, &err), EVPOL_EINVAL);
    evpol_watcher_unref(w);
}

/* A removed handler then registered again is called (the same waiting
 * thread delivers it). */
void test_remove_then_add_again(void **state)
{
    watcher_fixture f = fixture_open(state);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 9, 0);
    result first = {0}, second = {0};
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb, &first, NULL));
    assert_int_equal(evpol_watcher_remove_child_handler(f.w, pid, NULL), 1);
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb2, &second, NULL));
    release_child(fd);
    assert_true(run_until_count(f.loop, (volatile int *)&second.calls, 1, HANG_GUARD_MS));
    drain_loop(f.loop);
    assert_int_equal(atomic_load(&first.calls), 0);
    assert_int_equal(atomic_load(&second.calls), 1);
    assert_int_equal(second.rc, 9);

    fixture_close(&f);
}

/* ---- the child was reaped elsewhere ---- */

void test_already_reaped(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    pid_t pid = fork_exit(3);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    result r = {0};
    assert_ok(register_in_loop(loop, w, pid, on_exit_cb, &r, NULL));
    assert_true(run_until_count(loop, (volatile int *)&r.calls, 1, HANG_GUARD_MS));
    drain_loop(loop);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_int_equal(r.pid, pid);
    assert_int_equal(r.rc, 255);
    assert_true(pthread_equal(r.thread, pthread_self()));
    char needle[128];
    snprintf(needle, sizeof needle, "Unknown child process pid %ld, will report returncode 255",
             (long)pid);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RUNTIME, needle), 1);

    evpol_watcher_unref(w);
    free_loop(loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* Close from another thread while the loop runs and children exit: no
 * callback after close returns, no deadlock. */
typedef struct closer {
    evpol_watcher *w;
    evpol_loop *loop;
    int *fds;
    int n;
    atomic_int *calls;
    int calls_at_close;
    volatile int done;
} closer;

static void *closer_main(void *p)
{
    closer *c = p;
    for (int i = 0; i < c->n; i++)
        release_child(c->fds[i]);
    /* Some exits race with the close. */
    evpol_watcher_close(c->w, NULL);
    c->calls_at_close = atomic_load(c->calls);
    __atomic_store_n(&c->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

void test_close_from_other_thread(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    enum { N = 8 };
    int fds[N];
    pid_t pids[N];
    atomic_int calls = 0;
    for (int i = 0; i < N; i++) {
        pids[i] = spawn_lone_child(&fds[i], 0, 0);
        assert_ok(register_in_loop(loop, w, pids[i], on_exit_count, &calls, NULL));
    }
    closer c = {w, loop, fds, N, &calls, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, closer_main, &c), 0);
    assert_true(run_until(loop, &c.done, HANG_GUARD_MS));
    pthread_join(th, NULL);
    drain_loop(loop);
    assert_int_equal(atomic_load(&calls), c.calls_at_close);
    assert_true(atomic_load(&calls) <= N);
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    for (int i = 0; i < N; i++) {
        if (!reaped(pids[i])) { /* Pidfd leaves running children alone */
            int st;
            assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        }
    }
    evpol_watcher_unref(w);
    free_loop(loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* ---- state checks and errors ---- */

void test_state_and_errors(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);
    evpol_error err = {0};

    assert_int_equal(evpol_watcher_kind_of(w), (int)kind);
    assert_string_equal(evpol_watcher_name(w), kind == EVPOL_WATCHER_THREADED
                                                   ? "ThreadedChildWatcher"
                                                   : "PidfdChildWatcher");
    assert_int_equal(evpol_watcher_is_active(w), 1);
    assert_int_equal(evpol_watcher_attach_loop(w, loop, NULL), 0);
    assert_int_equal(evpol_watcher_attach_loop(w, NULL, NULL), 0);
    assert_int_equal(evpol_watcher_is_active(w), 1); /* attach changes nothing */
    assert_int_equal(evpol_watcher_enter(w, NULL), 0);
    assert_int_equal(evpol_watcher_exit(w, NULL), 0);

    /* No running loop in this thread. */
    memset(&err, 0, sizeof err);
    assert_int_equal(evpol_watcher_add_child_handler(w, getpid(), on_exit_cb, NULL, &err),
                     EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    /* Invalid pids. */
    assert_int_equal(evpol_watcher_add_child_handler_on(w, loop, 0, on_exit_cb, NULL, &err),
                     EVPOL_EINVAL);
    assert_int_equal(evpol_watcher_add_child_handler_on(w, loop, -1, on_exit_cb, NULL, &err),
                     EVPOL_EINVAL);
    assert_int_equal(register_in_loop(loop, w, -5, on_exit_cb, NULL, &err), EVPOL_EINVAL);
    assert_int_equal(evpol_watcher_add_child_handler_on(w, loop, 1, NULL, NULL, &err),
                     EVPOL_EINVAL);

    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_int_equal(evpol_watcher_is_active(w), 0);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(register_in_loop(loop, w, getpid(), on_exit_cb, NULL, &err), EVPOL_ERUNTIME);
    assert_int_equal(err.code, EVPOL_ERUNTIME);
    assert_int_equal(evpol_watcher_add_child_handler_on(w, loop, getpid(), on_exit_cb, NULL, &err),
                     EVPOL_ERUNTIME);
    evpol_watcher_unref(w);
    free_loop(loop);
}

/* ---- stress: 2,000 children from 4 loops in 4 threads ---- */

void test_stress(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    evpol_watcher *w = new_watcher(kind);
    stress_thread sts[STRESS_THREADS];
    pthread_t th[STRESS_THREADS];
    memset(sts, 0, sizeof sts);
    for (int i = 0; i < STRESS_THREADS; i++) {
        sts[i].w = w;
        sts[i].slots = calloc(STRESS_PER_THREAD, sizeof(stress_slot));
        assert_non_null(sts[i].slots);
        assert_int_equal(pthread_create(&th[i], NULL, stress_main, &sts[i]), 0);
    }
    for (int i = 0; i < STRESS_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < STRESS_THREADS; i++) {
        if (!sts[i].ok)
            fail_msg("thread %d: %s", i, sts[i].failure);
        free(sts[i].slots);
    }
    evpol_watcher_unref(w);
    assert_int_equal(count_zombie_children(), 0);
    assert_no_leaks(before);
}

/* ---- replace: the second handler for a pid takes the first's place ---- */

void test_replace(void **state)
{
    watcher_fixture f = fixture_open(state);

    int fd;
    pid_t pid = spawn_lone_child(&fd, 5, 0);
    result first = {0}, second = {0};
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb, &first, NULL));
    resource_snapshot one = resources_now();
    assert_ok(register_in_loop(f.loop, f.w, pid, on_exit_cb2, &second, NULL));
    if (f.kind == EVPOL_WATCHER_PIDFD) {
        /* Still one pidfd for the pid, and no thread. */
        assert_int_equal(resources_now().fds, one.fds);
        assert_int_equal(resources_now().threads, f.before.threads);
    } else {
        /* Still one waiting thread for the pid (THR-1). */
        assert_int_equal(resources_now().threads, one.threads);
    }
    release_child(fd);
    assert_true(run_until_count(f.loop, (volatile int *)&second.calls, 1, HANG_GUARD_MS));
    assert_true(wait_threads_at_most(f.before.threads, HANG_GUARD_MS));
    drain_loop(f.loop);
    assert_int_equal(atomic_load(&first.calls), 0);
    assert_int_equal(atomic_load(&second.calls), 1);
    assert_int_equal(second.tag, 2);
    assert_int_equal(second.pid, pid);
    assert_int_equal(second.rc, 5);

    fixture_close(&f);
}

/* ---- close with children pending ---- */

void test_close_with_pending(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    resource_snapshot with_loop = resources_now();
    evpol_watcher *w = new_watcher(kind);
    int pidfds = kind == EVPOL_WATCHER_PIDFD ? 2 : 0;

    int fds[2];
    result r[2];
    pid_t pids[2];
    register_waiting_children(loop, w, 2, 0, pids, fds, r);
    assert_int_equal(count_pidfds(NULL), pidfds);
    assert_int_equal(evpol_watcher_close(w, NULL), 0);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "has registered but not finished child processes"),
                     1);
    assert_int_equal(evpol_watcher_close(w, NULL), 0); /* second close: harmless */
    assert_int_equal(capture_count(cap, -1, EVPOL_LOG_CAT_RESOURCE, NULL), 1);
    if (kind == EVPOL_WATCHER_PIDFD) {
        /* Pidfds closed by close itself; the pipes to the children remain. */
        assert_int_equal(count_pidfds(NULL), 0);
        assert_int_equal(resources_now().fds, with_loop.fds + 2);
    }
    for (int i = 0; i < 2; i++)
        release_child(fds[i]);
    if (kind == EVPOL_WATCHER_PIDFD) {
        /* Nothing watches the children any more: this thread reaps them. */
        for (int i = 0; i < 2; i++) {
            int st;
            assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        }
    } else {
        /* The waiting threads reap their children, then exit. */
        assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
        for (int i = 0; i < 2; i++)
            assert_true(reaped(pids[i]));
    }
    drain_loop(loop);
    for (int i = 0; i < 2; i++)
        assert_int_equal(atomic_load(&r[i].calls), 0);

    evpol_watcher_unref(w);
    free_loop(loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* The last unref closes it too. Threaded's waiting threads outlive the
 * watcher's memory without touching it; no Pidfd reader runs on freed
 * memory, even one whose child exited before the unref (run under
 * ASan/TSan). */
void test_unref_with_pending(void **state)
{
    evpol_watcher_kind kind = test_watcher_kind(state);
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    log_capture *cap = capture_new();
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);
    bool pidfd = kind == EVPOL_WATCHER_PIDFD;

    enum { N = 3 };
    int fds[N];
    pid_t pids[N];
    result r[N];
    register_waiting_children(loop, w, N, 1, pids, fds, r);
    if (pidfd) {
        release_child(fds[0]);
        wait_exited_not_reaped(pids[0]);
    }
    evpol_watcher_unref(w);
    assert_int_equal(capture_count(cap, EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                                   "has registered but not finished child processes"),
                     1);
    if (pidfd) {
        assert_true(reaped(pids[0]));
        for (int i = 1; i < N; i++) {
            release_child(fds[i]);
            int st;
            assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        }
    } else {
        for (int i = 0; i < N; i++)
            release_child(fds[i]);
        assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    }
    drain_loop(loop);
    for (int i = 0; i < N; i++) {
        assert_true(reaped(pids[i]));
        assert_int_equal(atomic_load(&r[i].calls), 0);
    }
    free_loop(loop);
    capture_free(cap);
    assert_no_leaks(before);
}

/* ---- each exit costs one waitpid, whatever the number pending ---- */

void check_constant_work_per_exit(evpol_watcher_kind kind)
{
    skip_unless_available(kind);
    resource_snapshot before = resources_now();
    install_counting_seam(NULL);
    evpol_loop *loop = new_loop();
    evpol_watcher *w = new_watcher(kind);

    enum { N = 40 };
    /* Threaded blocks one waitpid per pending child, each on its own pid;
     * Pidfd calls waitpid only for a child whose pidfd is readable. */
    int blocked = kind == EVPOL_WATCHER_THREADED ? N : 0;
    int fds[N];
    result r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        r[i].expected_pid = spawn_lone_child(&fds[i], i, 0);
        assert_ok(register_in_loop(loop, w, r[i].expected_pid, on_exit_cb, &r[i], NULL));
    }
    for (int waited = 0; atomic_load(&seam_waitpid_calls) < blocked && waited < HANG_GUARD_MS;
         waited += 5)
        sleep_ms(5);
    assert_int_equal(atomic_load(&seam_waitpid_calls), blocked);
    release_child(fds[N / 2]);
    assert_true(run_until_count(loop, (volatile int *)&r[N / 2].calls, 1, HANG_GUARD_MS));
    assert_int_equal(r[N / 2].rc, N / 2);
    /* The exit cost exactly one completed waitpid (and Threaded no new call). */
    assert_int_equal(atomic_load(&seam_waitpid_returned), 1);
    assert_int_equal(atomic_load(&seam_waitpid_calls), blocked ? blocked : 1);
    for (int i = 0; i < N; i++)
        if (i != N / 2)
            release_child(fds[i]);
    for (int i = 0; i < N; i++)
        assert_true(run_until_count(loop, (volatile int *)&r[i].calls, 1, HANG_GUARD_MS));
    assert_int_equal(atomic_load(&seam_waitpid_calls), N);
    assert_int_equal(atomic_load(&seam_waitpid_returned), N);

    evpol_watcher_unref(w);
    free_loop(loop);
    assert_true(wait_threads_at_most(before.threads, HANG_GUARD_MS));
    assert_ok(evpol_sys_set(NULL, NULL));
    assert_no_leaks(before);
}
