/*
 * model.c — the reference model (see model.h).
 *
 * One function per question the specification answers, each a few lines
 * over plain arrays: when does a watcher look at a child (hear), what does it
 * find (a status, or ECHILD: lost), to whom does it report (deliver), what
 * does each call return. The watchers differ only in when they look:
 *
 *   Threaded  at once, always: a thread per registration waits (THR-1);
 *             after close the thread still reaps, silently (THR-6)
 *   Pidfd     at once while the loop holding its reader is open (PFD-1)
 *   MultiLoop at registration and on each SIGCHLD once activated by the
 *             first attach (MUL-1, MUL-2), while its handler is in place
 *   Safe      at registration (SAF-6), at attach (SAF-5), on each SIGCHLD
 *             while attached (SAF-1, SAF-3)
 *   Fast      at attach and on each SIGCHLD while attached, reaping every
 *             child, registered or not (FST-1), keeping unknown exits while
 *             a spawn context is open (FST-5, FST-6, FST-7)
 *
 * Everything else is common: a registration replaced keeps only the latest
 * handler (CW-2); a removed one stays to be reaped but is never called
 * (CW-4); ECHILD means returncode 255 and a warning (CW-11); a closed
 * delivery loop means no call and a warning (CW-12); a closed watcher
 * refuses every call and calls nothing (CW-8).
 */
#include "model.h"

#include <evpol.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- outcomes ---- */

void fz_outcome_init(fz_outcome *o)
{
    /* Not the event array (15 KB, twice a step): only ev[0..nev) is read. */
    o->has_result = false;
    o->result = 0;
    o->nev = 0;
    o->overflow = false;
    o->disposition = FZ_DISP_START;
    o->active_in[0] = o->active_in[1] = -1;
}

void fz_outcome_add(fz_outcome *o, const fz_event *e)
{
    if (o->nev >= FZ_MAX_EVENTS) {
        o->overflow = true;
        return;
    }
    o->ev[o->nev++] = *e;
}

static void ev_callback(fz_outcome *o, int child, int rc, int handler, int loop)
{
    fz_event e;
    memset(&e, 0, sizeof e);
    e.type = FZ_EV_CALLBACK;
    e.child = child;
    e.rc = rc;
    e.handler = handler;
    e.loop = loop;
    fz_outcome_add(o, &e);
}

static void ev_warn(fz_outcome *o, fz_warning w, int child, int rc, bool optional)
{
    fz_event e;
    memset(&e, 0, sizeof e);
    e.type = FZ_EV_WARNING;
    e.warning = w;
    e.child = child;
    e.rc = rc;
    e.optional = optional;
    fz_outcome_add(o, &e);
}

/* ---- statuses (CW-10) ---- */

int mdl_returncode(int status)
{
    int low = status & 0x7f;
    if (low == 0)
        return (status >> 8) & 0xff; /* exited */
    if (low != 0x7f)
        return -low; /* killed by signal `low` */
    return 255;      /* stopped: neither */
}

int mdl_end_status(scn_end end, int number)
{
    if (end == SCN_END_SIGNAL)
        return number & 0x7f;
    return (number & 0xff) << 8;
}

/* ---- the model ---- */

void mdl_init(mdl *m, int kind, bool auto_sigchld)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->auto_sigchld = auto_sigchld;
    m->attached = FZ_LOOP_NONE;
    m->disposition = FZ_DISP_START;
    m->saved = FZ_DISP_START;
}

static bool is_sigchld_kind(const mdl *m)
{
    return m->kind == FZ_SAFE || m->kind == FZ_FAST;
}

/* Report an exit found for registration `r` (already taken out of the
 * table) to the loop `loop`. */
static void deliver(mdl *m, int c, int rc, bool lost, const mdl_reg *r, int loop, fz_outcome *o)
{
    if (!r->has_cb) {
        /* A removed handler is never called (CW-4); whether the lost
         * status of a child nobody waits for any more is worth a warning
         * the specification does not say. */
        if (lost)
            ev_warn(o, FZ_W_UNKNOWN_CHILD, c, 0, true);
        return;
    }
    if (lost)
        ev_warn(o, FZ_W_UNKNOWN_CHILD, c, 0, false); /* CW-11 */
    if (loop != FZ_LOOP_NONE && m->loop_closed[loop]) {
        ev_warn(o, FZ_W_LOOP_CLOSED, c, 0, false); /* CW-12 */
        return;
    }
    if (r->spawn && loop != r->loop) {
        /* Safe, Fast: the watcher reports on its loop; spawn passes the
         * exit on to the loop it was given (SUB-3). */
        loop = r->loop;
        if (m->loop_closed[loop]) {
            ev_warn(o, FZ_W_LOOP_CLOSED, c, 0, false);
            return;
        }
    }
    ev_callback(o, c, lost ? 255 : rc, r->handler, loop);
}

/* Where Safe and Fast report: the attached loop, or, with none, the
 * calling thread: every actor step runs inside L0. */
static int sigchld_target(const mdl *m)
{
    return m->attached != FZ_LOOP_NONE ? m->attached : 0;
}

/* waitpid(pid, WNOHANG) on a registered child, as MultiLoop and Safe do:
 * a zombie is reaped, a child that is not ours (reaped elsewhere, ECHILD)
 * is lost, a running one stays. */
#define TARGET_REG (-2) /* the registration's own delivery loop */

static void poll_registered(mdl *m, int c, int target, fz_outcome *o)
{
    mdl_reg *r = &m->reg[c];
    if (!r->present)
        return;
    mdl_child *ch = &m->child[c];
    if (ch->state == MDL_RUNNING)
        return;
    mdl_reg taken = *r;
    memset(r, 0, sizeof *r);
    if (ch->state == MDL_ZOMBIE) {
        ch->state = MDL_GONE;
        deliver(m, c, mdl_returncode(ch->status), false, &taken,
                target == TARGET_REG ? taken.loop : target, o);
    } else {
        deliver(m, c, 255, true, &taken, target == TARGET_REG ? taken.loop : target, o);
    }
}

/* waitpid(-1) until nothing is left (FST-1), in creation order (the order
 * does not matter to what is reported). */
static void fast_round(mdl *m, fz_outcome *o)
{
    for (int c = 0; c < m->nchildren; c++) {
        mdl_child *ch = &m->child[c];
        if (ch->state != MDL_ZOMBIE)
            continue;
        ch->state = MDL_GONE;
        int rc = mdl_returncode(ch->status);
        mdl_reg *r = &m->reg[c];
        if (r->present) {
            mdl_reg taken = *r;
            memset(r, 0, sizeof *r);
            deliver(m, c, rc, false, &taken, sigchld_target(m), o);
        } else if (m->contexts > 0) {
            m->kept[c] = true; /* FST-5; a newer status wins */
            m->kept_rc[c] = rc;
        } else {
            ev_warn(o, FZ_W_FAST_UNKNOWN_PID, c, rc, false); /* FST-7 */
        }
    }
}

/* One SIGCHLD round of a signal-driven watcher. */
static void round_all(mdl *m, fz_outcome *o)
{
    switch (m->kind) {
    case FZ_MULTILOOP:
        for (int c = 0; c < m->nchildren; c++)
            poll_registered(m, c, TARGET_REG, o);
        break;
    case FZ_SAFE:
        for (int c = 0; c < m->nchildren; c++)
            poll_registered(m, c, sigchld_target(m), o);
        break;
    case FZ_FAST:
        fast_round(m, o);
        break;
    default:
        break;
    }
}

/* The kernel delivers SIGCHLD. */
static void sigchld(mdl *m, fz_outcome *o)
{
    if (m->closed)
        return;
    if (m->kind == FZ_MULTILOOP) {
        if (m->activated && m->disposition == FZ_DISP_WATCHER)
            round_all(m, o);
    } else if (is_sigchld_kind(m)) {
        if (m->attached != FZ_LOOP_NONE && !m->loop_closed[m->attached])
            round_all(m, o);
    }
}

/* What the always-listening watchers do with no new event. */
static void settle(mdl *m, fz_outcome *o)
{
    for (int c = 0; c < m->nchildren; c++) {
        mdl_child *ch = &m->child[c];
        mdl_reg *r = &m->reg[c];
        if (m->kind == FZ_THREADED) {
            if (!r->present && !m->orphan[c])
                continue;
            if (ch->state == MDL_RUNNING)
                continue;
            m->orphan[c] = false;
            mdl_reg taken = *r;
            memset(r, 0, sizeof *r);
            if (!taken.present) {
                /* after close: the thread reaps and reports nothing */
                if (ch->state == MDL_ZOMBIE)
                    ch->state = MDL_GONE;
                continue;
            }
            if (ch->state == MDL_ZOMBIE) {
                ch->state = MDL_GONE;
                deliver(m, c, mdl_returncode(ch->status), false, &taken, taken.loop, o);
            } else {
                deliver(m, c, 255, true, &taken, taken.loop, o);
            }
        } else if (m->kind == FZ_PIDFD) {
            if (!r->present || m->loop_closed[r->reader_loop])
                continue;
            if (ch->state == MDL_RUNNING)
                continue;
            poll_registered(m, c, TARGET_REG, o);
        }
    }
}

static bool any_pending(const mdl *m, bool with_cb_only)
{
    for (int c = 0; c < m->nchildren; c++)
        if (m->reg[c].present && (m->reg[c].has_cb || !with_cb_only))
            return true;
    return false;
}

static int is_active(const mdl *m, int running_loop)
{
    if (m->closed)
        return 0;
    switch (m->kind) {
    case FZ_THREADED:
    case FZ_PIDFD:
        return 1;
    case FZ_MULTILOOP:
        return m->activated && m->disposition == FZ_DISP_WATCHER;
    default:
        /* SAF-2: only while the attached loop runs. */
        return m->attached != FZ_LOOP_NONE && m->attached == running_loop;
    }
}

/* ---- the calls ---- */

static void set_reg(mdl_reg *r, int handler, int loop, bool spawn)
{
    if (!r->present) {
        r->present = true;
        r->reader_loop = loop;
    }
    r->has_cb = true;
    r->handler = handler;
    r->loop = loop;
    r->spawn = spawn;
}

static int do_add(mdl *m, int c, int handler, int loop, bool spawn, fz_outcome *o)
{
    if (m->closed || m->loop_closed[loop])
        return EVPOL_ERUNTIME;
    mdl_child *ch = &m->child[c];
    mdl_reg once = {.present = true, .has_cb = true, .handler = handler, .loop = loop,
                    .spawn = spawn};
    switch (m->kind) {
    case FZ_THREADED:
        if (!m->reg[c].present && m->fail_threads > 0) {
            m->fail_threads--; /* its waiting thread cannot start */
            return EVPOL_ESYSTEM;
        }
        set_reg(&m->reg[c], handler, loop, spawn); /* the thread looks at once (settle) */
        break;
    case FZ_PIDFD:
        if (!m->reg[c].present && (ch->state == MDL_UNBORN || ch->state == MDL_GONE)) {
            /* pidfd_open: no such process */
            deliver(m, c, 255, true, &once, loop, o);
            break;
        }
        set_reg(&m->reg[c], handler, loop, spawn);
        break;
    case FZ_MULTILOOP:
        set_reg(&m->reg[c], handler, loop, spawn);
        poll_registered(m, c, TARGET_REG, o);
        break;
    case FZ_SAFE:
        set_reg(&m->reg[c], handler, loop, spawn);
        poll_registered(m, c, sigchld_target(m), o); /* SAF-6 */
        break;
    case FZ_FAST:
        if (m->contexts == 0)
            return EVPOL_ERUNTIME; /* FST-4 */
        if (m->kept[c]) {
            /* FST-5: reaped while a context was open */
            m->kept[c] = false;
            memset(&m->reg[c], 0, sizeof m->reg[c]);
            deliver(m, c, m->kept_rc[c], false, &once, sigchld_target(m), o);
            break;
        }
        set_reg(&m->reg[c], handler, loop, spawn);
        break;
    }
    return 0;
}

static int do_remove(mdl *m, int c)
{
    if (m->closed)
        return EVPOL_ERUNTIME;
    mdl_reg *r = &m->reg[c];
    if (r->present && r->has_cb) {
        r->has_cb = false; /* still reaped, never called (CW-4) */
        return 1;
    }
    return 0;
}

static int do_attach(mdl *m, int loop, fz_outcome *o)
{
    if (m->closed)
        return EVPOL_ERUNTIME;
    switch (m->kind) {
    case FZ_MULTILOOP:
        if (!m->activated) {
            if (m->fail_threads > 0) {
                m->fail_threads--; /* no reaper thread: nothing installed */
                return EVPOL_ESYSTEM;
            }
            /* MUL-1: the first attach installs the handler, saving the
             * previous one; the first round catches earlier exits. */
            m->activated = true;
            m->saved = m->disposition;
            if (m->saved == FZ_DISP_OUTSIDE)
                ev_warn(o, FZ_W_FOREIGN_HANDLER, -1, 0, false);
            m->disposition = FZ_DISP_WATCHER;
            round_all(m, o);
        }
        return 0;
    case FZ_SAFE:
    case FZ_FAST: {
        int old = m->attached;
        if (loop != FZ_LOOP_NONE && m->loop_closed[loop])
            return EVPOL_ERUNTIME; /* refused before anything changed (CW-5) */
        if (old != FZ_LOOP_NONE && loop == FZ_LOOP_NONE && any_pending(m, true))
            ev_warn(o, FZ_W_DETACH_PENDING, -1, 0, false); /* SAF-4 */
        m->attached = loop;
        if (loop != FZ_LOOP_NONE)
            round_all(m, o); /* SAF-5 */
        return 0;
    }
    default:
        return 0;
    }
}

/* MultiLoop, Safe and Fast at close (CW-8): every registered child that
 * has exited is reaped, running ones are left to the program; one resource
 * warning when handlers are pending or children still run. */
static void close_reap(mdl *m, fz_outcome *o, bool pending_cb)
{
    bool running = false;
    for (int c = 0; c < m->nchildren; c++) {
        if (!m->reg[c].present)
            continue;
        if (m->child[c].state == MDL_ZOMBIE)
            m->child[c].state = MDL_GONE;
        else if (m->child[c].state == MDL_RUNNING)
            running = true;
    }
    if (pending_cb || running)
        ev_warn(o, FZ_W_CLOSE_PENDING, -1, 0, true);
}

static int do_close(mdl *m, fz_outcome *o)
{
    if (m->closed)
        return 0;
    bool pending_cb = any_pending(m, true), pending = any_pending(m, false);
    switch (m->kind) {
    case FZ_THREADED:
        /* THR-6: a resource warning; threads go on reaping, silently. */
        if (pending)
            ev_warn(o, FZ_W_CLOSE_PENDING, -1, 0, !pending_cb);
        for (int c = 0; c < m->nchildren; c++)
            m->orphan[c] = m->reg[c].present;
        break;
    case FZ_PIDFD:
        if (pending)
            ev_warn(o, FZ_W_CLOSE_PENDING, -1, 0, true);
        /* exited children are reaped now, running ones left alone */
        for (int c = 0; c < m->nchildren; c++)
            if (m->reg[c].present && m->child[c].state == MDL_ZOMBIE)
                m->child[c].state = MDL_GONE;
        break;
    case FZ_MULTILOOP:
        if (m->activated) {
            /* MUL-4 */
            if (m->disposition != FZ_DISP_WATCHER)
                ev_warn(o, FZ_W_SIGCHLD_CHANGED, -1, 0, false);
            else
                m->disposition = m->saved;
            m->activated = false;
        }
        close_reap(m, o, pending_cb);
        break;
    default:
        close_reap(m, o, pending_cb);
        m->attached = FZ_LOOP_NONE;
        break;
    }
    memset(m->reg, 0, sizeof m->reg);
    memset(m->kept, 0, sizeof m->kept);
    m->closed = true;
    return 0;
}

static int do_exit_context(mdl *m, fz_outcome *o)
{
    if (m->closed || m->contexts == 0)
        return EVPOL_ERUNTIME;
    m->contexts--;
    if (m->kind == FZ_FAST && m->contexts == 0) {
        /* FST-6: kept exits nobody claimed are dropped */
        for (int c = 0; c < m->nchildren; c++) {
            if (m->kept[c])
                ev_warn(o, FZ_W_FAST_DROPPED, c, m->kept_rc[c], false);
            m->kept[c] = false;
        }
    }
    return 0;
}

static void exit_child(mdl *m, int c, int status);

/* evpol_loop_spawn from the actor (inside L0), the policy's watcher being
 * W0: refused unless the watcher is active (SUB-2, CW-7); otherwise the
 * process is created and registered inside a spawn context (CW-9), its exit
 * reported with handler H0 on `loop` (SUB-3). A program that cannot be run
 * is an error with no callback and nothing left (SUB-4). */
static int do_spawn(mdl *m, const scn_step *s, int loop, fz_outcome *o)
{
    int c = s->child_lo;
    if (m->loop_closed[loop] || !is_active(m, 0))
        return EVPOL_ERUNTIME;
    m->contexts++;
    if (s->end == SCN_END_EXEC_FAIL) {
        do_exit_context(m, o);
        return EVPOL_ESYSTEM;
    }
    mdl_child *ch = &m->child[c];
    ch->state = MDL_RUNNING;
    ch->end_status = mdl_end_status(s->end, s->number);
    ch->release = s->release;
    if (c + 1 > m->nchildren)
        m->nchildren = c + 1;
    if (s->release == SCN_REL_NOW)
        exit_child(m, c, ch->end_status); /* before it is registered */
    int rc = do_add(m, c, 0, loop, true, o);
    if (rc != 0) {
        /* nobody will watch it: killed and reaped at once */
        exit_child(m, c, SIGKILL);
        ch->state = MDL_GONE;
    }
    do_exit_context(m, o);
    return rc;
}

static void exit_child(mdl *m, int c, int status)
{
    mdl_child *ch = &m->child[c];
    if (ch->state != MDL_RUNNING)
        return;
    ch->state = MDL_ZOMBIE;
    ch->status = status;
    m->ended++;
}

static bool valid_child(const mdl *m, int c)
{
    return c >= 0 && c < FZ_MAX_CHILDREN && c < m->nchildren;
}

void mdl_step(mdl *m, const fz_step *st, fz_outcome *o)
{
    fz_outcome_init(o);
    m->ended = 0;

    switch (st->kind) {
    case FZ_SIGCHLD:
        sigchld(m, o);
        break;
    case FZ_FAIL_THREADS:
        m->fail_threads = st->n;
        break;
    case FZ_EINTR:
    case FZ_EINTR_BLOCKING:
    case FZ_REAP_ORDER:
        /* invisible: EINTR is retried, the reap order changes no outcome */
        break;
    case FZ_SCN: {
        const scn_step *s = &st->s;
        int c = s->child_lo;
        switch (s->op) {
        case SCN_OP_CHILD:
            if (c < 0 || c >= FZ_MAX_CHILDREN)
                break;
            m->child[c].state = MDL_RUNNING;
            m->child[c].end_status = mdl_end_status(s->end, s->number);
            m->child[c].release = s->release;
            if (c + 1 > m->nchildren)
                m->nchildren = c + 1;
            if (s->release == SCN_REL_NOW)
                exit_child(m, c, m->child[c].end_status);
            break;
        case SCN_OP_RELEASE:
            if (valid_child(m, c) && m->child[c].release == SCN_REL_WAIT)
                exit_child(m, c, m->child[c].end_status);
            break;
        case SCN_OP_RELEASE_GATE:
            for (int k = 0; k < m->nchildren; k++)
                if (m->child[k].release == SCN_REL_GATE)
                    exit_child(m, k, m->child[k].end_status);
            break;
        case SCN_OP_KILL:
            if (valid_child(m, c) && fz_signal_terminates(s->number))
                exit_child(m, c, s->number & 0x7f);
            break;
        case SCN_OP_REAP:
            if (!valid_child(m, c))
                break;
            o->has_result = true;
            if (m->child[c].state == MDL_RUNNING || m->child[c].state == MDL_ZOMBIE) {
                /* a running child first ends, then the outside waitpid
                 * takes it */
                if (m->child[c].state == MDL_RUNNING)
                    m->ended++;
                m->child[c].state = MDL_GONE;
                o->result = 0;
            } else {
                o->result = 1;
            }
            break;
        case SCN_OP_ADD_HANDLER: {
            if (!valid_child(m, c))
                break;
            int loop = s->obj2.type == SCN_T_LOOP ? s->obj2.index : 0;
            int h = s->handler == SCN_NONE ? 1 : s->handler;
            o->has_result = true;
            o->result = do_add(m, c, h, loop, false, o);
            break;
        }
        case SCN_OP_SPAWN:
            if (c < 0 || c >= FZ_MAX_CHILDREN)
                break;
            if (c + 1 > m->nchildren)
                m->nchildren = c + 1; /* the name is taken, even if no process comes */
            o->has_result = true;
            o->result = do_spawn(m, s, s->obj2.type == SCN_T_LOOP ? s->obj2.index : 0, o);
            break;
        case SCN_OP_REMOVE_HANDLER:
            if (!valid_child(m, c))
                break;
            o->has_result = true;
            o->result = do_remove(m, c);
            break;
        case SCN_OP_ATTACH:
            o->has_result = true;
            o->result =
                do_attach(m, s->obj2.type == SCN_T_LOOP ? s->obj2.index : FZ_LOOP_NONE, o);
            break;
        case SCN_OP_CLOSE_WATCHER:
            o->has_result = true;
            o->result = do_close(m, o);
            break;
        case SCN_OP_ACTIVE:
            o->has_result = true;
            o->result = is_active(m, 0);
            break;
        case SCN_OP_ENTER:
            o->has_result = true;
            if (m->closed) {
                o->result = EVPOL_ERUNTIME;
            } else {
                m->contexts++;
                o->result = 0;
            }
            break;
        case SCN_OP_EXIT:
            o->has_result = true;
            o->result = do_exit_context(m, o);
            break;
        case SCN_OP_CLOSE_LOOP:
            o->has_result = true;
            if (s->obj.index == 0) {
                o->result = EVPOL_ERUNTIME; /* L0 runs the actor: LOOP-2 */
            } else if (s->obj.index == 1) {
                m->loop_closed[1] = true;
                o->result = 0;
            }
            break;
        case SCN_OP_SIGCHLD_REPLACE:
            m->disposition = FZ_DISP_OUTSIDE;
            break;
        case SCN_OP_SIGCHLD_RESTORE:
            m->disposition = FZ_DISP_START;
            break;
        default:
            break;
        }
        break;
    }
    }

    /* auto-SIGCHLD: the kernel signals the exits of this step, at once */
    if (m->auto_sigchld && m->ended)
        sigchld(m, o);
    settle(m, o);

    o->disposition = m->disposition;
    for (int l = 0; l < FZ_NLOOPS; l++)
        o->active_in[l] = m->loop_closed[l] ? -1 : is_active(m, l);
}

/* ---- comparing ---- */

static bool same_event(const fz_event *a, const fz_event *b)
{
    if (a->type != b->type || b->wrong_thread || a->wrong_thread)
        return false;
    if (a->type == FZ_EV_CALLBACK)
        return a->child == b->child && a->rc == b->rc && a->handler == b->handler &&
               a->loop == b->loop;
    if (a->warning != b->warning)
        return false;
    switch (a->warning) {
    case FZ_W_UNKNOWN_CHILD:
    case FZ_W_LOOP_CLOSED:
        return a->child == b->child;
    case FZ_W_FAST_UNKNOWN_PID:
    case FZ_W_FAST_DROPPED:
        return a->child == b->child && a->rc == b->rc;
    case FZ_W_OTHER:
        return false; /* never expected */
    default:
        return true;
    }
}

static int format_event(const fz_event *e, char *buf, size_t size)
{
    if (e->type == FZ_EV_CALLBACK) {
        char loop[16];
        if (e->loop == FZ_LOOP_NONE)
            snprintf(loop, sizeof loop, "no loop");
        else
            snprintf(loop, sizeof loop, "L%d", e->loop);
        return snprintf(buf, size, "callback C%d rc=%d H%d on %s%s%s", e->child, e->rc,
                        e->handler, loop, e->wrong_thread ? " NOT ON THE LOOP'S THREAD" : "",
                        e->optional ? " (optional)" : "");
    }
    char what[64] = "";
    if (e->child >= 0)
        snprintf(what, sizeof what, " C%d", e->child);
    if (e->warning == FZ_W_FAST_UNKNOWN_PID || e->warning == FZ_W_FAST_DROPPED)
        snprintf(what + strlen(what), sizeof what - strlen(what), " rc=%d", e->rc);
    if (e->warning == FZ_W_OTHER)
        return snprintf(buf, size, "unexpected log line: %s", e->text);
    return snprintf(buf, size, "warning %s%s%s", fz_warning_name(e->warning), what,
                    e->optional ? " (optional)" : "");
}

typedef struct sbuf {
    char *p;
    size_t size, len;
} sbuf;

static void sput(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sput(sbuf *b, const char *fmt, ...)
{
    if (b->len >= b->size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len += (size_t)n;
    if (b->len >= b->size)
        b->len = b->size - 1;
}

static const char *disp_name(fz_disp d)
{
    switch (d) {
    case FZ_DISP_START: return "as at start";
    case FZ_DISP_WATCHER: return "the watcher's handler";
    case FZ_DISP_OUTSIDE: return "the outside handler";
    }
    return "?";
}

static const char *result_name(int r, char *buf, size_t size)
{
    const char *n = r < 0 ? scn_errcode_name(r) : NULL;
    if (n)
        return n;
    snprintf(buf, size, "%d", r);
    return buf;
}

bool fz_compare(const fz_outcome *exp, const fz_outcome *act, bool check_result, char *why,
                size_t size)
{
    sbuf b = {why, size, 0};
    if (size)
        why[0] = '\0';
    bool ok = true;
    char line[300], r1[16], r2[16];
    if (exp->overflow || act->overflow) {
        sput(&b, "    too many events in one step\n");
        ok = false;
    }
    if (check_result && exp->has_result && (!act->has_result || act->result != exp->result)) {
        sput(&b, "    result: expected %s, got %s\n", result_name(exp->result, r1, sizeof r1),
             act->has_result ? result_name(act->result, r2, sizeof r2) : "nothing");
        ok = false;
    }
    if (exp->disposition != act->disposition) {
        sput(&b, "    SIGCHLD disposition: expected %s, got %s\n", disp_name(exp->disposition),
             disp_name(act->disposition));
        ok = false;
    }
    for (int l = 0; l < FZ_NLOOPS; l++) {
        if (exp->active_in[l] >= 0 && act->active_in[l] >= 0 &&
            exp->active_in[l] != act->active_in[l]) {
            sput(&b, "    is_active inside L%d: expected %d, got %d\n", l, exp->active_in[l],
                 act->active_in[l]);
            ok = false;
        }
    }
    bool used[FZ_MAX_EVENTS] = {false};
    /* every required event happened */
    for (int i = 0; i < exp->nev; i++) {
        if (exp->ev[i].optional)
            continue;
        bool found = false;
        for (int j = 0; j < act->nev && !found; j++)
            if (!used[j] && same_event(&exp->ev[i], &act->ev[j]))
                used[j] = found = true;
        if (!found) {
            format_event(&exp->ev[i], line, sizeof line);
            sput(&b, "    missing: %s\n", line);
            ok = false;
        }
    }
    /* every other event was allowed, at most once */
    bool opt_used[FZ_MAX_EVENTS] = {false};
    for (int j = 0; j < act->nev; j++) {
        if (used[j])
            continue;
        bool allowed = false;
        for (int i = 0; i < exp->nev && !allowed; i++)
            if (exp->ev[i].optional && !opt_used[i] && same_event(&exp->ev[i], &act->ev[j]))
                opt_used[i] = allowed = true;
        if (!allowed) {
            format_event(&act->ev[j], line, sizeof line);
            sput(&b, "    unexpected: %s\n", line);
            ok = false;
        }
    }
    return ok;
}

void fz_format_outcome(const fz_outcome *o, char *buf, size_t size)
{
    sbuf b = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    char line[300], r[16];
    if (o->has_result)
        sput(&b, "      => %s\n", result_name(o->result, r, sizeof r));
    for (int i = 0; i < o->nev; i++) {
        format_event(&o->ev[i], line, sizeof line);
        sput(&b, "      %s\n", line);
    }
}

const char *fz_warning_name(fz_warning w)
{
    static const char *const names[FZ_W_COUNT_] = {
        "unknown-child (CW-11)",     "loop-closed (CW-12)",
        "detach-pending (SAF-4)",    "fast-unknown-pid (FST-7)",
        "fast-dropped (FST-6)",      "sigchld-changed (MUL-4)",
        "foreign-previous-handler",  "close-pending (resource)",
        "other",
    };
    return (unsigned)w < FZ_W_COUNT_ ? names[w] : "?";
}

const char *fz_kind_name(int kind)
{
    return scn_kind_name(kind);
}
