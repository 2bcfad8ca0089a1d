/*
 * interp_actors.c — actor steps: what a scenario thread runs, directly or
 * posted into the loop it runs (interp.h).
 */
#include "interp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Actor steps: run on a scenario thread                                    */
/* ------------------------------------------------------------------------ */

static int do_spawn_one(const scn_step *st, int ci, evpol_error *err)
{
    evpol_loop *loop = NULL;
    if (st->obj2.type == SCN_T_LOOP)
        loop = S.loops[st->obj2.index];
    else if (evpol_get_running_loop(&loop, NULL) != 0)
        loop = NULL; /* spawn then answers EINVAL, which the step may expect */
    char script[64];
    scn_child_script(st, script, sizeof script);
    char *argv_sh[] = {"sh", "-c", script, NULL};
    char *argv_fail[] = {"no-such-program", NULL};
    evpol_spawn_options o;
    memset(&o, 0, sizeof o);
    bool fails = st->end == SCN_END_EXEC_FAIL;
    o.file = fails ? NO_SUCH_PROGRAM : "/bin/sh";
    o.argv = fails ? argv_fail : argv_sh;
    o.stdio[0] = st->release == SCN_REL_WAIT   ? EVPOL_STDIO_PIPE
                 : st->release == SCN_REL_GATE ? EVPOL_STDIO_INHERIT /* fd 0 is the gate */
                                               : EVPOL_STDIO_DEVNULL;
    o.stdio[1] = o.stdio[2] = EVPOL_STDIO_DEVNULL;
    o.on_exit = child_cb;
    o.arg = &cbargs[ci][0];
    pthread_mutex_lock(&S.m);
    reset_child_locked(ci);
    pthread_mutex_unlock(&S.m);
    evpol_spawn_result res;
    int rc = evpol_loop_spawn(loop, &o, &res, err);
    if (rc == 0) {
        pthread_mutex_lock(&S.m);
        S.children[ci].pid = res.pid;
        S.children[ci].how = ORIGIN_SPAWN;
        S.children[ci].release_fd = res.stdio_fd[0];
        pthread_mutex_unlock(&S.m);
        for (int i = 1; i < 3; i++)
            if (res.stdio_fd[i] >= 0)
                close(res.stdio_fd[i]);
    }
    return rc;
}

static int do_fork(cmd *c, int ci)
{
    pthread_mutex_lock(&S.m);
    reset_child_locked(ci);
    pthread_mutex_unlock(&S.m);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fork_child_checks());
    if (pid < 0) {
        snprintf(c->msg, sizeof c->msg, "fork: %s", strerror(errno));
        c->script = true;
        return EVPOL_ESYSTEM;
    }
    pthread_mutex_lock(&S.m);
    S.children[ci].pid = pid;
    S.children[ci].how = ORIGIN_FORK;
    pthread_mutex_unlock(&S.m);
    return 0;
}


/* One call for one child (or the one call of a step without children). */
static int exec_one(cmd *c, int ci, evpol_error *err)
{
    const scn_step *st = c->step;
    evpol_loop *l = NULL;
    evpol_watcher *w = NULL;
    switch (st->op) {
    case SCN_OP_CLOSE_LOOP: return evpol_loop_close(loop_ref_at(st->obj), err);
    case SCN_OP_START:
        /* Only reached inside a running loop: a nested run. */
        return evpol_loop_run(loop_ref_at(st->obj), err);
    case SCN_OP_ATTACH:
        return evpol_watcher_attach_loop(watcher_at(st->obj), loop_ref_at(st->obj2), err);
    case SCN_OP_CLOSE_WATCHER: return close_watcher_checked(c, watcher_at(st->obj), err);
    case SCN_OP_ACTIVE: return evpol_watcher_is_active(watcher_at(st->obj));
    case SCN_OP_ENTER: return evpol_watcher_enter(watcher_at(st->obj), err);
    case SCN_OP_EXIT: return evpol_watcher_exit(watcher_at(st->obj), err);
    case SCN_OP_SET_POLICY: return evpol_set_event_loop_policy(policy_at(st->obj), err);
    case SCN_OP_SET_CHILD_WATCHER: return evpol_set_child_watcher(watcher_at(st->obj), err);
    case SCN_OP_GET_CHILD_WATCHER: {
        int rc = evpol_get_child_watcher(&w, err);
        if (rc == 0)
            put_watcher(st->obj.index, evpol_watcher_ref(w));
        return rc;
    }
    case SCN_OP_SET_LOOP: return evpol_set_event_loop(loop_ref_at(st->obj), err);
    case SCN_OP_GET_LOOP: {
        int rc = evpol_get_event_loop(&l, err);
        if (rc == 0)
            put_loop(st->obj.index, evpol_loop_ref(l));
        return rc;
    }
    case SCN_OP_NEW_EVENT_LOOP: {
        int rc = evpol_new_event_loop(&l, err);
        if (rc == 0)
            put_loop(st->obj.index, l);
        return rc;
    }
    case SCN_OP_RUNNING: {
        int rc = evpol_get_running_loop(&l, err);
        if (rc == 0 && st->obj.type == SCN_T_LOOP && l != S.loops[st->obj.index]) {
            pthread_mutex_lock(&S.m);
            int slot = loop_slot_locked(l);
            pthread_mutex_unlock(&S.m);
            if (slot >= 0)
                snprintf(c->msg, sizeof c->msg, "the running loop is L%d", slot);
            else
                snprintf(c->msg, sizeof c->msg, "the running loop is %p, in no slot", (void *)l);
            c->script = true;
            return 1;
        }
        return rc;
    }
    case SCN_OP_SPAWN: return do_spawn_one(st, ci, err);
    case SCN_OP_ADD_HANDLER: {
        int h = st->handler == SCN_NONE ? 1 : st->handler;
        pid_t pid = child_pid(ci);
        w = watcher_at(st->obj);
        int rc = st->obj2.type == SCN_T_LOOP
                     ? evpol_watcher_add_child_handler_on(w, loop_ref_at(st->obj2), pid, child_cb,
                                                          &cbargs[ci][h], err)
                     : evpol_watcher_add_child_handler(w, pid, child_cb, &cbargs[ci][h], err);
        if (rc == 0) {
            pthread_mutex_lock(&S.m);
            S.children[ci].registered_with = w;
            pthread_mutex_unlock(&S.m);
        }
        return rc;
    }
    case SCN_OP_REMOVE_HANDLER:
        return evpol_watcher_remove_child_handler(watcher_at(st->obj), child_pid(ci), err);
    case SCN_OP_FORK: return do_fork(c, ci);
    default:
        snprintf(c->msg, sizeof c->msg, "step is not an actor step");
        c->script = true;
        return EVPOL_EINVAL;
    }
}

static void complete(cmd *c)
{
    pthread_mutex_lock(&S.m);
    c->done = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
}

static void exec_cmd(cmd *c)
{
    const scn_step *st = c->step;
    bool per_child = (scn_op_get(st->op)->fields & SCN_F_CHILDREN) != 0;
    int lo = per_child ? c->lo : 0, hi = per_child ? c->hi : 0;
    c->rc = c->expected;
    c->child = -1;
    for (int ci = lo; ci <= hi; ci++) {
        evpol_error err;
        memset(&err, 0, sizeof err);
        c->msg[0] = '\0';
        int rc = exec_one(c, per_child ? ci : -1, &err);
        if (!c->msg[0] && rc < 0)
            snprintf(c->msg, sizeof c->msg, "%s", err.message);
        if (c->script || (c->check && rc != c->expected)) {
            c->rc = rc;
            c->child = per_child ? ci : -1;
            break;
        }
        c->rc = rc;
    }
}

/* ---- a thread's life ---- */

static void loop_started(void *arg)
{
    worker *w = arg;
    evpol_loop *running = NULL;
    evpol_get_running_loop(&running, NULL);
    pthread_mutex_lock(&S.m);
    cmd *c = NULL;
    if (tls_worker == w && w->running == running) {
        c = w->starting;
        w->starting = NULL;
    }
    pthread_mutex_unlock(&S.m);
    if (c) {
        c->rc = 0;
        complete(c);
    }
}

/* Runs a step posted into the loop this thread runs. */
void exec_in_loop(void *arg)
{
    worker *w = arg;
    pthread_mutex_lock(&S.m);
    cmd *c = tls_worker == w ? w->pending : NULL;
    if (c)
        w->pending = NULL;
    pthread_mutex_unlock(&S.m);
    if (!c)
        return;
    exec_cmd(c);
    complete(c);
}

static void run_loop(worker *w, cmd *c)
{
    evpol_loop *loop = loop_ref_at(c->step->obj);
    evpol_error err;
    memset(&err, 0, sizeof err);
    pthread_mutex_lock(&S.m);
    w->starting = c;
    w->running = loop;
    w->running_slot = c->step->obj.index;
    pthread_mutex_unlock(&S.m);
    int rc = evpol_loop_call_soon_threadsafe(loop, loop_started, w, &err);
    if (rc == 0)
        rc = evpol_loop_run(loop, &err);
    pthread_mutex_lock(&S.m);
    cmd *starting = w->starting, *pending = w->pending;
    w->starting = w->pending = NULL;
    w->running = NULL;
    w->running_slot = SCN_NONE;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.m);
    if (starting) { /* the run failed before it started */
        starting->rc = rc == 0 ? EVPOL_ERUNTIME : rc;
        snprintf(starting->msg, sizeof starting->msg, "%s",
                 rc ? err.message : "the loop returned before it ran anything");
        complete(starting);
    }
    if (pending) {
        pending->rc = EVPOL_ERUNTIME;
        pending->script = true;
        snprintf(pending->msg, sizeof pending->msg, "the loop stopped before the step ran");
        complete(pending);
    }
}

void worker_main(worker *w)
{
    tls_worker = w;
    pthread_mutex_lock(&S.m);
    for (;;) {
        if (w->quit)
            break;
        if (!w->pending) {
            pthread_cond_wait(&S.cv, &S.m);
            continue;
        }
        cmd *c = w->pending;
        w->pending = NULL;
        pthread_mutex_unlock(&S.m);
        if (c->step->op == SCN_OP_START) {
            run_loop(w, c);
        } else {
            exec_cmd(c);
            complete(c);
        }
        pthread_mutex_lock(&S.m);
    }
    pthread_mutex_unlock(&S.m);
}

void *worker_thread(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "T%d", w->index);
    pthread_setname_np(pthread_self(), name);
    worker_main(w);
    return NULL;
}
