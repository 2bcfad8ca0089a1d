/*
 * steps_format.c — the canonical text of a step (steps.h): the grammar steps.c
 * parses, written back, so that parse(format(step)) gives the same step.
 */
#include "steps.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- formatting ---- */

typedef struct outbuf {
    char *buf;
    size_t size;
    size_t len; /* what the full text needs */
} outbuf;

static void put(outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(outbuf *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = o->len < o->size ? o->buf + o->len : NULL;
    size_t room = o->len < o->size ? o->size - o->len : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void put_ref(outbuf *o, const scn_ref *r)
{
    switch (r->type) {
    case SCN_T_NONE: put(o, " none"); break;
    case SCN_T_THREAD:
        if (r->index == 0)
            put(o, " main");
        else
            put(o, " T%d", r->index);
        break;
    case SCN_T_LOOP: put(o, " L%d", r->index); break;
    case SCN_T_WATCHER: put(o, " W%d", r->index); break;
    case SCN_T_POLICY: put(o, " P%d", r->index); break;
    }
}

static void put_children(outbuf *o, const scn_step *s)
{
    if (s->child_lo == s->child_hi)
        put(o, " C%d", s->child_lo);
    else
        put(o, " C%d-C%d", s->child_lo, s->child_hi);
}

int scn_format_step(const scn_step *s, char *buf, size_t size)
{
    outbuf o = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    const scn_op_info *info = scn_op_get(s->op);
    if (!info) {
        put(&o, "<invalid step %d>", (int)s->op);
        return (int)o.len;
    }
    if (s->kinds != SCN_KINDS_ALL) {
        put(&o, "[");
        bool first = true;
        for (int k = 0; k < SCN_NKINDS; k++)
            if (s->kinds & (1u << k)) {
                put(&o, "%s%s", first ? "" : ",", scn_kind_name(k));
                first = false;
            }
        put(&o, "] ");
    }
    if (s->threads) {
        put(&o, "@");
        bool first = true;
        for (int i = 0; i < SCN_MAX_THREADS; i++)
            if (s->threads & (1u << i)) {
                if (i == 0)
                    put(&o, "%smain", first ? "" : ",");
                else
                    put(&o, "%sT%d", first ? "" : ",", i);
                first = false;
            }
        put(&o, " ");
    }
    put(&o, "%s", info->name);
    if (info->fields & SCN_F_OBJ)
        put_ref(&o, &s->obj);

    switch (s->op) {
    case SCN_OP_NEW_LOOP:
        if (s->variant)
            put(&o, " %s", scn_backend_name(s->variant));
        break;
    case SCN_OP_NEW_WATCHER:
        if (s->variant == SCN_WATCHER_AUTO)
            put(&o, " auto");
        else if (s->variant > 0)
            put(&o, " %s", scn_kind_name(s->variant - 1));
        break;
    case SCN_OP_NEW_POLICY:
        if (s->variant)
            put(&o, " %s", scn_policy_variant_name(s->variant));
        break;
    case SCN_OP_ATTACH:
    case SCN_OP_SAME: put_ref(&o, &s->obj2); break;
    case SCN_OP_CALLS: put(&o, " %s %d", scn_method_name(s->variant), s->number); break;
    default: break;
    }

    if (info->fields & SCN_F_CHILDREN)
        put_children(&o, s);

    switch (s->op) {
    case SCN_OP_SPAWN:
    case SCN_OP_CHILD:
        if (s->obj2.type == SCN_T_LOOP)
            put(&o, " on L%d", s->obj2.index);
        if (s->end == SCN_END_EXEC_FAIL)
            put(&o, " exec_fail");
        else
            put(&o, " %s %d", s->end == SCN_END_SIGNAL ? "signal" : "exit", s->number);
        if (s->release == SCN_REL_WAIT)
            put(&o, " wait");
        else if (s->release == SCN_REL_GATE)
            put(&o, " gate");
        break;
    case SCN_OP_ADD_HANDLER:
        if (s->handler != SCN_NONE)
            put(&o, " H%d", s->handler);
        if (s->obj2.type == SCN_T_LOOP)
            put(&o, " on L%d", s->obj2.index);
        break;
    case SCN_OP_KILL: put(&o, " %d", s->number); break;
    case SCN_OP_EXPECT:
        if (s->rc < 0)
            put(&o, " signal %d", -s->rc);
        else
            put(&o, " exit %d", s->rc);
        if (s->exp_thread != SCN_NONE) {
            if (s->exp_thread == 0)
                put(&o, " on main");
            else
                put(&o, " on T%d", s->exp_thread);
        }
        if (s->exp_loop != SCN_NONE)
            put(&o, " loop L%d", s->exp_loop);
        if (s->exp_handler != SCN_NONE)
            put(&o, " handler H%d", s->exp_handler);
        break;
    case SCN_OP_LOG:
    case SCN_OP_NO_LOG:
        if (s->level != SCN_NONE)
            put(&o, " level=%s", scn_level_name(s->level));
        if (s->category != SCN_NONE)
            put(&o, " cat=%s", scn_category_name(s->category));
        put(&o, " \"%s\"", s->text);
        if (s->op == SCN_OP_LOG && s->number != 1)
            put(&o, " min %d", s->number);
        break;
    case SCN_OP_SLEEP: put(&o, " %d", s->number); break;
    case SCN_OP_SOAK:
        if (s->number)
            put(&o, " %d", s->number);
        break;
    default: break;
    }

    if (s->result_kind == SCN_RES_ANY) {
        put(&o, " => any");
    } else if (s->result_kind == SCN_RES_VALUE) {
        const char *name = s->result < 0 ? scn_errcode_name(s->result) : NULL;
        if (name)
            put(&o, " => %s", name);
        else
            put(&o, " => %d", s->result);
    }
    return (int)o.len;
}

void scn_child_script(const scn_step *st, char *buf, size_t size)
{
    const char *wait = st->release != SCN_REL_NOW ? "read x; " : "";
    if (st->end == SCN_END_SIGNAL)
        snprintf(buf, size, "%skill -%d $$", wait, st->number);
    else
        snprintf(buf, size, "%sexit %d", wait, st->number);
}
