/*
 * program.c — decode fuzz inputs into programs of scenario steps, and back.
 *
 * The decoder keeps only what it needs to make every step meaningful for
 * every watcher (which children exist, which are still running and how
 * they end); everything that depends on the watcher (who reaps what, which
 * call fails) is left to the model and the library.
 */
#include "program.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef enum opc {
    OPC_CHILD,
    OPC_RELEASE,
    OPC_RELEASE_GATE,
    OPC_KILL,
    OPC_REAP,
    OPC_ADD,
    OPC_REMOVE,
    OPC_ATTACH,
    OPC_CLOSE_WATCHER,
    OPC_ACTIVE,
    OPC_ENTER,
    OPC_EXIT,
    OPC_CLOSE_LOOP,
    OPC_SIGCHLD_REPLACE,
    OPC_SIGCHLD_RESTORE,
    OPC_SIGCHLD,
    OPC_EINTR,
    OPC_EINTR_BLOCKING,
    OPC_REAP_ORDER,
    OPC_SPAWN,
    OPC_FAIL_THREADS,
} opc;

#define NOPCODES 36

/* byte % 36 -> step; the common steps appear more than once. */
static const opc opcode_table[NOPCODES] = {
    OPC_CHILD,        OPC_CHILD,         OPC_CHILD,         OPC_ADD,
    OPC_ADD,          OPC_ADD,           OPC_ADD,           OPC_RELEASE,
    OPC_RELEASE,      OPC_SIGCHLD,       OPC_SIGCHLD,       OPC_SIGCHLD,
    OPC_REMOVE,       OPC_REMOVE,        OPC_KILL,          OPC_REAP,
    OPC_REAP,         OPC_ATTACH,        OPC_ATTACH,        OPC_ENTER,
    OPC_ENTER,        OPC_EXIT,          OPC_EXIT,          OPC_RELEASE_GATE,
    OPC_ACTIVE,       OPC_CLOSE_WATCHER, OPC_CLOSE_LOOP,    OPC_SIGCHLD_REPLACE,
    OPC_SIGCHLD_RESTORE, OPC_EINTR,      OPC_EINTR_BLOCKING, OPC_REAP_ORDER,
    OPC_SPAWN,        OPC_SPAWN,         OPC_SPAWN,         OPC_FAIL_THREADS,
};

/* A child ending by a signal kills itself: only signals that end it. */
static const int end_signals[8] = {SIGHUP, SIGINT, SIGQUIT, SIGABRT,
                                   SIGKILL, SIGUSR1, SIGSEGV, SIGTERM};
/* kill from outside: SIGCONT leaves the child running. */
static const int kill_signals[8] = {SIGHUP, SIGINT, SIGQUIT, SIGKILL,
                                    SIGUSR1, SIGSEGV, SIGTERM, SIGCONT};

bool fz_signal_terminates(int sig)
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
        return sig > 0 && sig < 65;
    }
}

typedef struct cursor {
    const uint8_t *p;
    size_t n, i;
} cursor;

static uint8_t take(cursor *c)
{
    return c->i < c->n ? c->p[c->i++] : 0;
}

/* What the decoder knows about a child. */
typedef struct dchild {
    scn_release release;
    bool running;
} dchild;

typedef struct dstate {
    int nchildren;
    dchild kids[FZ_MAX_CHILDREN];
} dstate;

static fz_step *push(fz_program *p)
{
    if (p->nsteps >= FZ_MAX_STEPS)
        return NULL;
    fz_step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = FZ_SCN;
    return s;
}

static void set_w0(scn_step *s)
{
    s->obj.type = SCN_T_WATCHER;
    s->obj.index = 0;
}

static void set_loop(scn_ref *r, int loop)
{
    if (loop < 0) {
        r->type = SCN_T_NONE;
        r->index = SCN_NONE;
    } else {
        r->type = SCN_T_LOOP;
        r->index = loop;
    }
}

static void set_child(scn_step *s, int c)
{
    s->child_lo = s->child_hi = c;
}

static void scn_simple(fz_step *st, scn_op op)
{
    st->kind = FZ_SCN;
    scn_step_init(&st->s, op);
}

/* Apply a step's effect on which children run (decoder's view). */
static void track(dstate *d, const scn_step *s)
{
    switch (s->op) {
    case SCN_OP_CHILD:
    case SCN_OP_SPAWN:
        for (int c = s->child_lo; c <= s->child_hi && c < FZ_MAX_CHILDREN; c++) {
            d->kids[c].release = s->release;
            d->kids[c].running = s->release != SCN_REL_NOW;
            if (c + 1 > d->nchildren)
                d->nchildren = c + 1;
        }
        break;
    case SCN_OP_RELEASE:
    case SCN_OP_REAP:
        for (int c = s->child_lo; c <= s->child_hi && c < FZ_MAX_CHILDREN; c++)
            d->kids[c].running = false;
        break;
    case SCN_OP_KILL:
        if (fz_signal_terminates(s->number))
            for (int c = s->child_lo; c <= s->child_hi && c < FZ_MAX_CHILDREN; c++)
                d->kids[c].running = false;
        break;
    case SCN_OP_RELEASE_GATE:
        for (int c = 0; c < d->nchildren; c++)
            if (d->kids[c].release == SCN_REL_GATE)
                d->kids[c].running = false;
        break;
    default:
        break;
    }
}

void fz_decode(const uint8_t *data, size_t size, fz_program *p)
{
    memset(p, 0, sizeof *p);
    cursor cur = {data, size, 0};
    dstate d;
    memset(&d, 0, sizeof d);
    uint8_t flags = take(&cur);
    p->auto_sigchld = flags & 1;
    p->pick = flags >> 2;
    if (!(flags & 2)) {
        fz_step *st = push(p);
        scn_simple(st, SCN_OP_ATTACH);
        set_w0(&st->s);
        set_loop(&st->s.obj2, 0);
    }
    size_t body = 0;
    while (cur.i < cur.n && body < FZ_MAX_BODY) {
        opc op = opcode_table[take(&cur) % NOPCODES];
        fz_step st;
        memset(&st, 0, sizeof st);
        bool keep = true;
        switch (op) {
        case OPC_CHILD: {
            uint8_t e = take(&cur), num = take(&cur), rel = take(&cur);
            scn_simple(&st, SCN_OP_CHILD);
            if (d.nchildren >= FZ_MAX_CHILDREN) {
                keep = false;
                break;
            }
            set_child(&st.s, d.nchildren);
            if (e & 1) {
                st.s.end = SCN_END_SIGNAL;
                st.s.number = end_signals[num % 8];
            } else {
                st.s.end = SCN_END_EXIT;
                st.s.number = num;
            }
            st.s.release = (scn_release)(rel % 3);
            break;
        }
        case OPC_SPAWN: {
            uint8_t e = take(&cur), num = take(&cur), rel = take(&cur), l = take(&cur);
            scn_simple(&st, SCN_OP_SPAWN);
            if (d.nchildren >= FZ_MAX_CHILDREN) {
                keep = false;
                break;
            }
            set_child(&st.s, d.nchildren);
            switch (e % 3) {
            case 0:
                st.s.end = SCN_END_EXIT;
                st.s.number = num;
                break;
            case 1:
                st.s.end = SCN_END_SIGNAL;
                st.s.number = end_signals[num % 8];
                break;
            default:
                st.s.end = SCN_END_EXEC_FAIL;
                break;
            }
            st.s.release = st.s.end == SCN_END_EXEC_FAIL ? SCN_REL_NOW : (scn_release)(rel % 3);
            if (l % 3)
                set_loop(&st.s.obj2, l % 3 - 1);
            break;
        }
        case OPC_FAIL_THREADS:
            st.kind = FZ_FAIL_THREADS;
            st.n = 1 + take(&cur) % 2;
            break;
        case OPC_RELEASE: {
            uint8_t c = take(&cur);
            scn_simple(&st, SCN_OP_RELEASE);
            if (!d.nchildren) {
                keep = false;
                break;
            }
            int k = c % d.nchildren;
            keep = d.kids[k].running && d.kids[k].release == SCN_REL_WAIT;
            set_child(&st.s, k);
            break;
        }
        case OPC_RELEASE_GATE:
            scn_simple(&st, SCN_OP_RELEASE_GATE);
            break;
        case OPC_KILL: {
            uint8_t c = take(&cur), sig = take(&cur);
            scn_simple(&st, SCN_OP_KILL);
            if (!d.nchildren) {
                keep = false;
                break;
            }
            set_child(&st.s, c % d.nchildren);
            st.s.number = kill_signals[sig % 8];
            /* kill of a child already reaped fails (ESRCH): not the
             * watcher's business. */
            st.s.result_kind = SCN_RES_ANY;
            break;
        }
        case OPC_REAP: {
            uint8_t c = take(&cur);
            scn_simple(&st, SCN_OP_REAP);
            if (!d.nchildren) {
                keep = false;
                break;
            }
            set_child(&st.s, c % d.nchildren);
            break;
        }
        case OPC_ADD: {
            uint8_t c = take(&cur), h = take(&cur), l = take(&cur);
            scn_simple(&st, SCN_OP_ADD_HANDLER);
            if (!d.nchildren) {
                keep = false;
                break;
            }
            set_w0(&st.s);
            set_child(&st.s, c % d.nchildren);
            st.s.handler = 1 + h % FZ_MAX_HANDLER;
            switch (l % 4) {
            case 2: set_loop(&st.s.obj2, 0); break;
            case 3: set_loop(&st.s.obj2, 1); break;
            default: break; /* the loop the actor runs: L0 */
            }
            break;
        }
        case OPC_REMOVE: {
            uint8_t c = take(&cur);
            scn_simple(&st, SCN_OP_REMOVE_HANDLER);
            if (!d.nchildren) {
                keep = false;
                break;
            }
            set_w0(&st.s);
            set_child(&st.s, c % d.nchildren);
            break;
        }
        case OPC_ATTACH: {
            uint8_t l = take(&cur);
            scn_simple(&st, SCN_OP_ATTACH);
            set_w0(&st.s);
            set_loop(&st.s.obj2, l % 3 == 2 ? -1 : l % 3);
            break;
        }
        case OPC_CLOSE_WATCHER:
            scn_simple(&st, SCN_OP_CLOSE_WATCHER);
            set_w0(&st.s);
            break;
        case OPC_ACTIVE:
            scn_simple(&st, SCN_OP_ACTIVE);
            set_w0(&st.s);
            break;
        case OPC_ENTER:
            scn_simple(&st, SCN_OP_ENTER);
            set_w0(&st.s);
            break;
        case OPC_EXIT:
            scn_simple(&st, SCN_OP_EXIT);
            set_w0(&st.s);
            break;
        case OPC_CLOSE_LOOP:
            scn_simple(&st, SCN_OP_CLOSE_LOOP);
            set_loop(&st.s.obj, 1);
            break;
        case OPC_SIGCHLD_REPLACE:
            scn_simple(&st, SCN_OP_SIGCHLD_REPLACE);
            break;
        case OPC_SIGCHLD_RESTORE:
            scn_simple(&st, SCN_OP_SIGCHLD_RESTORE);
            break;
        case OPC_SIGCHLD:
            st.kind = FZ_SIGCHLD;
            break;
        case OPC_EINTR:
            st.kind = FZ_EINTR;
            st.n = 1 + take(&cur) % 4;
            break;
        case OPC_EINTR_BLOCKING:
            st.kind = FZ_EINTR_BLOCKING;
            st.n = 1 + take(&cur) % 4;
            break;
        case OPC_REAP_ORDER:
            st.kind = FZ_REAP_ORDER;
            st.n = take(&cur) % 3;
            break;
        }
        if (!keep)
            continue;
        fz_step *dst = push(p);
        if (!dst)
            break;
        *dst = st;
        if (st.kind == FZ_SCN)
            track(&d, &st.s);
        body++;
    }

    /* Epilogue: close, end every child, one more SIGCHLD. Nothing may be
     * called any more (CW-8). */
    fz_step *st = push(p);
    if (st) {
        scn_simple(st, SCN_OP_CLOSE_WATCHER);
        set_w0(&st->s);
        st->epilogue = true;
    }
    for (int c = 0; c < d.nchildren; c++) {
        if (!d.kids[c].running)
            continue;
        st = push(p);
        if (!st)
            break;
        scn_simple(st, SCN_OP_KILL);
        set_child(&st->s, c);
        st->s.number = SIGKILL;
        st->s.result_kind = SCN_RES_ANY;
        st->epilogue = true;
    }
    st = push(p);
    if (st) {
        st->kind = FZ_SIGCHLD;
        st->epilogue = true;
    }
}

/* ---- encoding ---- */

static int first_opcode(opc op)
{
    for (int i = 0; i < NOPCODES; i++)
        if (opcode_table[i] == op)
            return i;
    return 0;
}

static int index_of(const int *table, int n, int v)
{
    for (int i = 0; i < n; i++)
        if (table[i] == v)
            return i;
    return -1;
}

typedef struct outb {
    uint8_t *p;
    size_t cap, len;
} outb;

static void put8(outb *o, int v)
{
    if (o->len < o->cap)
        o->p[o->len] = (uint8_t)v;
    o->len++;
}

size_t fz_encode(const fz_program *p, uint8_t *out, size_t cap)
{
    outb o = {out, cap, 0};
    put8(&o, (p->auto_sigchld ? 1 : 0) | 2 | (int)(p->pick & 63) << 2);
    for (size_t i = 0; i < p->nsteps; i++) {
        const fz_step *st = &p->steps[i];
        if (st->epilogue)
            continue;
        switch (st->kind) {
        case FZ_SIGCHLD: put8(&o, first_opcode(OPC_SIGCHLD)); continue;
        case FZ_EINTR:
            put8(&o, first_opcode(OPC_EINTR));
            put8(&o, (st->n - 1) & 3);
            continue;
        case FZ_EINTR_BLOCKING:
            put8(&o, first_opcode(OPC_EINTR_BLOCKING));
            put8(&o, (st->n - 1) & 3);
            continue;
        case FZ_REAP_ORDER:
            put8(&o, first_opcode(OPC_REAP_ORDER));
            put8(&o, st->n);
            continue;
        case FZ_FAIL_THREADS:
            put8(&o, first_opcode(OPC_FAIL_THREADS));
            put8(&o, (st->n - 1) & 1);
            continue;
        case FZ_SCN: break;
        }
        const scn_step *s = &st->s;
        switch (s->op) {
        case SCN_OP_CHILD: {
            int num = s->number;
            if (s->end == SCN_END_SIGNAL) {
                num = index_of(end_signals, 8, s->number);
                if (num < 0)
                    return 0;
            }
            put8(&o, first_opcode(OPC_CHILD));
            put8(&o, s->end == SCN_END_SIGNAL);
            put8(&o, num);
            put8(&o, s->release);
            break;
        }
        case SCN_OP_SPAWN: {
            int num = s->number;
            if (s->end == SCN_END_SIGNAL) {
                num = index_of(end_signals, 8, s->number);
                if (num < 0)
                    return 0;
            }
            put8(&o, first_opcode(OPC_SPAWN));
            put8(&o, s->end == SCN_END_EXIT ? 0 : s->end == SCN_END_SIGNAL ? 1 : 2);
            put8(&o, num);
            put8(&o, s->release);
            put8(&o, s->obj2.type == SCN_T_LOOP ? 1 + s->obj2.index : 0);
            break;
        }
        case SCN_OP_RELEASE:
            put8(&o, first_opcode(OPC_RELEASE));
            put8(&o, s->child_lo);
            break;
        case SCN_OP_RELEASE_GATE: put8(&o, first_opcode(OPC_RELEASE_GATE)); break;
        case SCN_OP_KILL: {
            int k = index_of(kill_signals, 8, s->number);
            if (k < 0)
                return 0;
            put8(&o, first_opcode(OPC_KILL));
            put8(&o, s->child_lo);
            put8(&o, k);
            break;
        }
        case SCN_OP_REAP:
            put8(&o, first_opcode(OPC_REAP));
            put8(&o, s->child_lo);
            break;
        case SCN_OP_ADD_HANDLER: {
            int l = s->obj2.type == SCN_T_LOOP ? 2 + s->obj2.index : 0;
            put8(&o, first_opcode(OPC_ADD));
            put8(&o, s->child_lo);
            put8(&o, (s->handler == SCN_NONE ? 1 : s->handler) - 1);
            put8(&o, l);
            break;
        }
        case SCN_OP_REMOVE_HANDLER:
            put8(&o, first_opcode(OPC_REMOVE));
            put8(&o, s->child_lo);
            break;
        case SCN_OP_ATTACH:
            put8(&o, first_opcode(OPC_ATTACH));
            put8(&o, s->obj2.type == SCN_T_LOOP ? s->obj2.index : 2);
            break;
        case SCN_OP_CLOSE_WATCHER: put8(&o, first_opcode(OPC_CLOSE_WATCHER)); break;
        case SCN_OP_ACTIVE: put8(&o, first_opcode(OPC_ACTIVE)); break;
        case SCN_OP_ENTER: put8(&o, first_opcode(OPC_ENTER)); break;
        case SCN_OP_EXIT: put8(&o, first_opcode(OPC_EXIT)); break;
        case SCN_OP_CLOSE_LOOP: put8(&o, first_opcode(OPC_CLOSE_LOOP)); break;
        case SCN_OP_SIGCHLD_REPLACE: put8(&o, first_opcode(OPC_SIGCHLD_REPLACE)); break;
        case SCN_OP_SIGCHLD_RESTORE: put8(&o, first_opcode(OPC_SIGCHLD_RESTORE)); break;
        default: return 0;
        }
    }
    return o.len;
}

/* ---- from scenario files (corpus seeds) ---- */

/* The watcher a seed made from a scenario runs on (the ops target runs
 * each input on one, program.h): one the scenario applies to, and among
 * those one chosen by its name, so that seeds spread over the five instead
 * of all landing on the first. pick is taken modulo the kinds tried. */
static unsigned scenario_pick(const scn_scenario *sc)
{
    unsigned kinds = scn_kinds(sc) & SCN_KINDS_ALL;
    if (!kinds)
        kinds = SCN_KINDS_ALL;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *c = sc->name; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    int n = __builtin_popcount(kinds);
    int skip = (int)(h % (uint32_t)n);
    for (unsigned k = 0; k < SCN_NKINDS; k++)
        if ((kinds & (1u << k)) && skip-- == 0)
            return k;
    return 0;
}

size_t fz_from_scenario(const scn_scenario *sc, fz_program *p)
{
    memset(p, 0, sizeof *p);
    p->auto_sigchld = true; /* the real kernel signals every exit */
    p->pick = scenario_pick(sc);
    int map[SCN_MAX_CHILDREN];
    for (int i = 0; i < SCN_MAX_CHILDREN; i++)
        map[i] = -1;
    int nchildren = 0;
    dstate d;
    memset(&d, 0, sizeof d);

#define PUSH_OR_DONE()            \
    fz_step *st = push(p);        \
    if (!st || p->nsteps > FZ_MAX_BODY) { \
        if (st)                   \
            p->nsteps--;          \
        return p->nsteps;         \
    }

    for (size_t i = 0; i < sc->nsteps; i++) {
        const scn_step *in = &sc->steps[i];
        bool w0 = in->obj.type == SCN_T_WATCHER && in->obj.index == 0;
        switch (in->op) {
        case SCN_OP_SPAWN:
        case SCN_OP_CHILD:
            if (in->obj2.type == SCN_T_LOOP && in->obj2.index > 1)
                break;
            for (int c = in->child_lo; c <= in->child_hi; c++) {
                if (nchildren >= FZ_MAX_CHILDREN)
                    break;
                int k = nchildren++;
                map[c] = k;
                PUSH_OR_DONE();
                scn_simple(st, in->op);
                set_child(&st->s, k);
                st->s.end = in->end;
                st->s.number = in->number;
                if (in->end == SCN_END_SIGNAL && index_of(end_signals, 8, in->number) < 0)
                    st->s.number = SIGTERM;
                st->s.release = in->release;
                st->s.obj2 = in->obj2;
                track(&d, &st->s);
            }
            break;
        case SCN_OP_ADD_HANDLER:
            if (!w0 || (in->obj2.type == SCN_T_LOOP && in->obj2.index > 1))
                break;
            for (int c = in->child_lo; c <= in->child_hi; c++) {
                if (map[c] < 0)
                    continue;
                PUSH_OR_DONE();
                scn_simple(st, SCN_OP_ADD_HANDLER);
                set_w0(&st->s);
                set_child(&st->s, map[c]);
                int h = in->handler == SCN_NONE ? 1 : in->handler;
                st->s.handler = h < 1 ? 1 : 1 + (h - 1) % FZ_MAX_HANDLER;
                st->s.obj2 = in->obj2;
            }
            break;
        case SCN_OP_REMOVE_HANDLER:
        case SCN_OP_RELEASE:
        case SCN_OP_KILL:
        case SCN_OP_REAP:
            if (in->op == SCN_OP_REMOVE_HANDLER && !w0)
                break;
            for (int c = in->child_lo; c <= in->child_hi; c++) {
                if (map[c] < 0)
                    continue;
                int k = map[c];
                if (in->op == SCN_OP_RELEASE &&
                    (!d.kids[k].running || d.kids[k].release != SCN_REL_WAIT))
                    continue;
                if (in->op == SCN_OP_KILL && index_of(kill_signals, 8, in->number) < 0)
                    continue;
                PUSH_OR_DONE();
                scn_simple(st, in->op);
                if (in->op == SCN_OP_REMOVE_HANDLER)
                    set_w0(&st->s);
                set_child(&st->s, k);
                if (in->op == SCN_OP_KILL) {
                    st->s.number = in->number;
                    st->s.result_kind = SCN_RES_ANY;
                }
                track(&d, &st->s);
            }
            break;
        case SCN_OP_RELEASE_GATE: {
            PUSH_OR_DONE();
            scn_simple(st, SCN_OP_RELEASE_GATE);
            track(&d, &st->s);
            break;
        }
        case SCN_OP_ATTACH:
            if (!w0 || (in->obj2.type == SCN_T_LOOP && in->obj2.index > 1))
                break;
            {
                PUSH_OR_DONE();
                scn_simple(st, SCN_OP_ATTACH);
                set_w0(&st->s);
                st->s.obj2 = in->obj2;
            }
            break;
        case SCN_OP_SET_LOOP:
            /* the default policy's set_event_loop, from the main thread,
             * attaches its watcher (POL-16) */
            if ((in->threads & ~1u) || (in->obj.type == SCN_T_LOOP && in->obj.index > 1))
                break;
            {
                PUSH_OR_DONE();
                scn_simple(st, SCN_OP_ATTACH);
                set_w0(&st->s);
                st->s.obj2 = in->obj;
            }
            break;
        case SCN_OP_CLOSE_WATCHER:
        case SCN_OP_ACTIVE:
        case SCN_OP_ENTER:
        case SCN_OP_EXIT:
            if (!w0)
                break;
            {
                PUSH_OR_DONE();
                scn_simple(st, in->op);
                set_w0(&st->s);
            }
            break;
        case SCN_OP_CLOSE_LOOP:
            if (in->obj.index != 1)
                break;
            {
                PUSH_OR_DONE();
                scn_simple(st, SCN_OP_CLOSE_LOOP);
                set_loop(&st->s.obj, 1);
            }
            break;
        case SCN_OP_SIGCHLD_REPLACE:
        case SCN_OP_SIGCHLD_RESTORE: {
            PUSH_OR_DONE();
            scn_simple(st, in->op);
            break;
        }
        default:
            break;
        }
    }
#undef PUSH_OR_DONE
    return p->nsteps;
}

/* ---- text ---- */

int fz_format_step(const fz_step *s, char *buf, size_t size)
{
    static const char *const orders[3] = {"spawn", "fifo", "lifo"};
    switch (s->kind) {
    case FZ_SCN: return scn_format_step(&s->s, buf, size);
    case FZ_SIGCHLD: return snprintf(buf, size, "# fuzz: sigchld");
    case FZ_EINTR: return snprintf(buf, size, "# fuzz: eintr %d", s->n);
    case FZ_EINTR_BLOCKING: return snprintf(buf, size, "# fuzz: eintr_blocking %d", s->n);
    case FZ_REAP_ORDER:
        return snprintf(buf, size, "# fuzz: reap_order %s", orders[(unsigned)s->n % 3]);
    case FZ_FAIL_THREADS: return snprintf(buf, size, "# fuzz: fail_threads %d", s->n);
    }
    return snprintf(buf, size, "# fuzz: ?");
}

bool fz_step_may_end_children(const fz_step *s)
{
    if (s->kind != FZ_SCN)
        return false;
    switch (s->s.op) {
    case SCN_OP_CHILD:
    case SCN_OP_SPAWN: return s->s.release == SCN_REL_NOW;
    case SCN_OP_RELEASE:
    case SCN_OP_RELEASE_GATE:
    case SCN_OP_KILL:
    case SCN_OP_REAP:
        return true;
    default:
        return false;
    }
}
