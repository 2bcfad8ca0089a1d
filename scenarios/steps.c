/*
 * steps.c — parse and validate scenario steps (steps.h); steps_format.c
 * writes them back, steps_file.c reads and writes whole scenario files.
 *
 * The parser is a tokenizer plus one small grammar per op; the formatter
 * writes the canonical form of the same grammar. Both are total: any input
 * gives either a valid step or an error message, never a crash, so fuzzers
 * may feed them arbitrary bytes.
 */
#include "steps_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

static const char *const kind_names[SCN_NKINDS] = {"threaded", "multiloop", "safe", "fast",
                                                   "pidfd"};

const char *scn_kind_name(int index)
{
    return index >= 0 && index < SCN_NKINDS ? kind_names[index] : "?";
}

int scn_kind_index(const char *name)
{
    for (int i = 0; i < SCN_NKINDS; i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

unsigned scn_kind_words(char *s, const char *seps)
{
    unsigned m = 0;
    char *save = NULL;
    for (char *w = strtok_r(s, seps, &save); w; w = strtok_r(NULL, seps, &save)) {
        if (strcmp(w, "all") == 0) {
            m |= SCN_KINDS_ALL;
            continue;
        }
        int k = scn_kind_index(w);
        if (k < 0)
            return 0;
        m |= 1u << k;
    }
    return m;
}

int scn_kind_to_evpol(int index)
{
    /* evpol_watcher_kind: THREADED 1, MULTILOOP 2, SAFE 3, FAST 4, PIDFD 5. */
    static const int map[SCN_NKINDS] = {1, 2, 3, 4, 5};
    return index >= 0 && index < SCN_NKINDS ? map[index] : -1;
}

static const char *const backend_names[] = {"default", "epoll", "poll", "select"};
static const char *const policy_names[SCN_POLICY_COUNT_] = {"default", "watcher", "custom", "poll",
                                                            "select"};
static const char *const method_names[SCN_M_COUNT_] = {
    "get_event_loop", "set_event_loop", "new_event_loop", "get_child_watcher", "set_child_watcher"};
static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const char *const category_names[] = {"runtime", "deprecation", "resource", "debug"};
static const char *const errcode_names[] = {"OK",     "ERUNTIME", "ETYPE",  "EINVAL",
                                            "ENOMEM", "ESYSTEM",  "ENOTSUP"};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *scn_errcode_name(int code)
{
    return code <= 0 && -code < COUNT(errcode_names) ? errcode_names[-code] : NULL;
}
const char *scn_method_name(int m)
{
    return m >= 0 && m < SCN_M_COUNT_ ? method_names[m] : "?";
}
const char *scn_policy_variant_name(int v)
{
    return v >= 0 && v < SCN_POLICY_COUNT_ ? policy_names[v] : "?";
}
const char *scn_backend_name(int b)
{
    return b >= 0 && b < COUNT(backend_names) ? backend_names[b] : "?";
}
const char *scn_level_name(int level)
{
    return level >= 0 && level < COUNT(level_names) ? level_names[level] : "?";
}
const char *scn_category_name(int category)
{
    return category >= 0 && category < COUNT(category_names) ? category_names[category] : "?";
}

/* ---- the op table ---- */

#define TY(t) (1u << (t))
#define A SCN_F_ACTOR

static const scn_op_info op_table[SCN_OP_COUNT_] = {
    [SCN_OP_THREAD] = {"thread", SCN_F_OBJ, TY(SCN_T_THREAD)},
    [SCN_OP_JOIN] = {"join", SCN_F_OBJ, TY(SCN_T_THREAD)},
    [SCN_OP_NEW_LOOP] = {"new_loop", SCN_F_OBJ | SCN_F_VARIANT, TY(SCN_T_LOOP)},
    [SCN_OP_CLOSE_LOOP] = {"close_loop", A | SCN_F_OBJ, TY(SCN_T_LOOP)},
    [SCN_OP_START] = {"start", A | SCN_F_OBJ, TY(SCN_T_LOOP)},
    [SCN_OP_STOP] = {"stop", SCN_F_OBJ, TY(SCN_T_LOOP)},
    [SCN_OP_NEW_WATCHER] = {"new_watcher", SCN_F_OBJ | SCN_F_VARIANT, TY(SCN_T_WATCHER)},
    [SCN_OP_ATTACH] = {"attach", A | SCN_F_OBJ | SCN_F_OBJ2, TY(SCN_T_WATCHER)},
    [SCN_OP_CLOSE_WATCHER] = {"close_watcher", A | SCN_F_OBJ, TY(SCN_T_WATCHER)},
    [SCN_OP_ACTIVE] = {"active", A | SCN_F_OBJ, TY(SCN_T_WATCHER)},
    [SCN_OP_ENTER] = {"enter", A | SCN_F_OBJ, TY(SCN_T_WATCHER)},
    [SCN_OP_EXIT] = {"exit", A | SCN_F_OBJ, TY(SCN_T_WATCHER)},
    [SCN_OP_NEW_POLICY] = {"new_policy", SCN_F_OBJ | SCN_F_VARIANT, TY(SCN_T_POLICY)},
    [SCN_OP_SET_POLICY] = {"set_policy", A | SCN_F_OBJ | SCN_F_OBJ_NONE, TY(SCN_T_POLICY)},
    [SCN_OP_SET_CHILD_WATCHER] = {"set_child_watcher", A | SCN_F_OBJ | SCN_F_OBJ_NONE,
                                  TY(SCN_T_WATCHER)},
    [SCN_OP_GET_CHILD_WATCHER] = {"get_child_watcher", A | SCN_F_OBJ, TY(SCN_T_WATCHER)},
    [SCN_OP_SET_LOOP] = {"set_loop", A | SCN_F_OBJ | SCN_F_OBJ_NONE, TY(SCN_T_LOOP)},
    [SCN_OP_GET_LOOP] = {"get_loop", A | SCN_F_OBJ, TY(SCN_T_LOOP)},
    [SCN_OP_NEW_EVENT_LOOP] = {"new_event_loop", A | SCN_F_OBJ, TY(SCN_T_LOOP)},
    [SCN_OP_RUNNING] = {"running", A | SCN_F_OBJ | SCN_F_OBJ_NONE, TY(SCN_T_LOOP)},
    [SCN_OP_SAME] = {"same", SCN_F_OBJ | SCN_F_OBJ2, TY(SCN_T_LOOP) | TY(SCN_T_WATCHER) | TY(SCN_T_POLICY)},
    [SCN_OP_DROP] = {"drop", SCN_F_OBJ, TY(SCN_T_LOOP) | TY(SCN_T_WATCHER) | TY(SCN_T_POLICY)},
    [SCN_OP_SPAWN] = {"spawn", A | SCN_F_CHILDREN | SCN_F_OBJ2 | SCN_F_OBJ2_OPT | SCN_F_END, 0},
    [SCN_OP_CHILD] = {"child", SCN_F_CHILDREN | SCN_F_END, 0},
    [SCN_OP_ADD_HANDLER] = {"add_handler",
                            A | SCN_F_OBJ | SCN_F_CHILDREN | SCN_F_HANDLER | SCN_F_OBJ2 |
                                SCN_F_OBJ2_OPT,
                            TY(SCN_T_WATCHER)},
    [SCN_OP_REMOVE_HANDLER] = {"remove_handler", A | SCN_F_OBJ | SCN_F_CHILDREN,
                               TY(SCN_T_WATCHER)},
    [SCN_OP_RELEASE] = {"release", SCN_F_CHILDREN, 0},
    [SCN_OP_RELEASE_GATE] = {"release_gate", 0, 0},
    [SCN_OP_KILL] = {"kill", SCN_F_CHILDREN | SCN_F_NUMBER, 0},
    [SCN_OP_REAP] = {"reap", SCN_F_CHILDREN, 0},
    [SCN_OP_EXITED] = {"exited", SCN_F_CHILDREN, 0},
    [SCN_OP_FORK] = {"fork", A | SCN_F_CHILDREN | SCN_F_ONE_CHILD, 0},
    [SCN_OP_SIGCHLD_REPLACE] = {"sigchld_replace", 0, 0},
    [SCN_OP_SIGCHLD_RESTORE] = {"sigchld_restore", 0, 0},
    [SCN_OP_EXPECT] = {"expect", SCN_F_CHILDREN | SCN_F_OUTCOME, 0},
    [SCN_OP_NEVER] = {"never", SCN_F_CHILDREN, 0},
    [SCN_OP_REAPED] = {"reaped", SCN_F_CHILDREN, 0},
    [SCN_OP_LOG] = {"log", SCN_F_TEXT | SCN_F_NUMBER, 0},
    [SCN_OP_NO_LOG] = {"no_log", SCN_F_TEXT, 0},
    [SCN_OP_CALLS] = {"calls", SCN_F_OBJ | SCN_F_VARIANT | SCN_F_NUMBER, TY(SCN_T_POLICY)},
    [SCN_OP_SLEEP] = {"sleep", SCN_F_NUMBER, 0},
    [SCN_OP_SOAK] = {"soak", SCN_F_THREADS | SCN_F_NUMBER, 0},
};

#undef A

const scn_op_info *scn_op_get(scn_op op)
{
    if ((int)op <= SCN_OP_INVALID || (int)op >= SCN_OP_COUNT_)
        return NULL;
    return &op_table[op];
}

scn_op scn_op_by_name(const char *verb)
{
    for (int i = 1; i < SCN_OP_COUNT_; i++)
        if (op_table[i].name && strcmp(op_table[i].name, verb) == 0)
            return (scn_op)i;
    return SCN_OP_INVALID;
}

/* Ops a "@T1,T2" list may name several threads for. */
static bool multi_thread_ok(scn_op op)
{
    return op == SCN_OP_SPAWN || op == SCN_OP_ADD_HANDLER || op == SCN_OP_REMOVE_HANDLER ||
           op == SCN_OP_SET_LOOP || op == SCN_OP_ACTIVE || op == SCN_OP_RUNNING;
}

/* ---- steps ---- */

void scn_step_init(scn_step *s, scn_op op)
{
    memset(s, 0, sizeof *s);
    s->op = op;
    s->kinds = SCN_KINDS_ALL;
    s->obj.type = SCN_T_NONE;
    s->obj.index = SCN_NONE;
    s->obj2.type = SCN_T_NONE;
    s->obj2.index = SCN_NONE;
    s->child_lo = s->child_hi = SCN_NONE;
    s->handler = SCN_NONE;
    s->exp_thread = s->exp_loop = s->exp_handler = SCN_NONE;
    s->level = s->category = SCN_NONE;
    s->result_kind = SCN_RES_DEFAULT;
    /* Defaults the grammar leaves implicit. */
    if (op == SCN_OP_LOG)
        s->number = 1;
}

int scn_fail(char *err, size_t errsize, const char *fmt, ...)
{
    if (err && errsize) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsize, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int slot_limit(scn_type t)
{
    switch (t) {
    case SCN_T_THREAD: return SCN_MAX_THREADS;
    case SCN_T_LOOP: return SCN_MAX_LOOPS;
    case SCN_T_WATCHER: return SCN_MAX_WATCHERS;
    case SCN_T_POLICY: return SCN_MAX_POLICIES;
    default: return 0;
    }
}

static int check_ref(const scn_ref *r, unsigned types, bool none_ok, const char *what, char *err,
                     size_t errsize)
{
    if (r->type == SCN_T_NONE) {
        if (!none_ok)
            return scn_fail(err, errsize, "%s is missing", what);
        if (r->index != SCN_NONE)
            return scn_fail(err, errsize, "%s: none has no index", what);
        return 0;
    }
    if ((int)r->type < 0 || r->type > SCN_T_POLICY || !(types & TY(r->type)))
        return scn_fail(err, errsize, "%s has the wrong type", what);
    if (r->index < 0 || r->index >= slot_limit(r->type))
        return scn_fail(err, errsize, "%s index %d is out of range", what, r->index);
    return 0;
}

static bool text_ok(const char *t)
{
    size_t n = strnlen(t, SCN_TEXT_MAX);
    if (n == 0 || n >= SCN_TEXT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] == '"' || t[i] == '\n' || t[i] == '\r' || t[i] == '\0')
            return false;
    return true;
}

int scn_step_validate(const scn_step *s, char *err, size_t errsize)
{
    const scn_op_info *info = scn_op_get(s->op);
    if (!info)
        return scn_fail(err, errsize, "unknown step kind %d", (int)s->op);
    unsigned f = info->fields;
    if (s->kinds == 0 || (s->kinds & ~SCN_KINDS_ALL))
        return scn_fail(err, errsize, "%s: bad watcher set", info->name);
    if (s->threads & ~((1u << SCN_MAX_THREADS) - 1))
        return scn_fail(err, errsize, "%s: bad thread set", info->name);
    if (s->threads && !(f & (SCN_F_ACTOR | SCN_F_THREADS)))
        return scn_fail(err, errsize, "%s runs on the director and takes no @thread", info->name);
    if (__builtin_popcount(s->threads) > 1 && !multi_thread_ok(s->op))
        return scn_fail(err, errsize, "%s runs on one thread only", info->name);
    if (s->op == SCN_OP_SOAK && __builtin_popcount(s->threads) > 1)
        return scn_fail(err, errsize, "soak spawns from one thread");

    /* obj */
    if (f & SCN_F_OBJ) {
        if (check_ref(&s->obj, info->obj_types, (f & SCN_F_OBJ_NONE) != 0, info->name, err,
                      errsize))
            return -1;
    } else if (s->obj.type != SCN_T_NONE || s->obj.index != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no object", info->name);
    }
    if ((s->op == SCN_OP_THREAD || s->op == SCN_OP_JOIN) && s->obj.index == 0)
        return scn_fail(err, errsize, "%s: the main thread always exists", info->name);

    /* obj2: a loop, except for "same", where it has obj's type */
    if (f & SCN_F_OBJ2) {
        bool none_ok = (f & SCN_F_OBJ2_OPT) || s->op == SCN_OP_ATTACH;
        unsigned types = s->op == SCN_OP_SAME ? TY(s->obj.type) : TY(SCN_T_LOOP);
        if (check_ref(&s->obj2, types, none_ok, info->name, err, errsize))
            return -1;
    } else if (s->obj2.type != SCN_T_NONE || s->obj2.index != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no second object", info->name);
    }

    /* children */
    if (f & SCN_F_CHILDREN) {
        if (s->child_lo < 0 || s->child_hi < s->child_lo || s->child_hi >= SCN_MAX_CHILDREN)
            return scn_fail(err, errsize, "%s: bad child range", info->name);
        if ((f & SCN_F_ONE_CHILD) && s->child_lo != s->child_hi)
            return scn_fail(err, errsize, "%s takes one child", info->name);
        int nthreads = __builtin_popcount(s->threads);
        if (nthreads > 1 && s->child_hi - s->child_lo + 1 < nthreads)
            return scn_fail(err, errsize, "%s: fewer children than threads", info->name);
    } else if (s->child_lo != SCN_NONE || s->child_hi != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no children", info->name);
    }

    /* handler */
    if (f & SCN_F_HANDLER) {
        if (s->handler != SCN_NONE && (s->handler < 1 || s->handler >= SCN_MAX_HANDLERS))
            return scn_fail(err, errsize, "%s: handler must be H1..H%d", info->name,
                        SCN_MAX_HANDLERS - 1);
    } else if (s->handler != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no handler", info->name);
    }

    /* variant */
    int vmax = 0;
    switch (s->op) {
    case SCN_OP_NEW_LOOP: vmax = COUNT(backend_names); break;
    case SCN_OP_NEW_WATCHER: vmax = SCN_WATCHER_AUTO + 1; break;
    case SCN_OP_NEW_POLICY: vmax = SCN_POLICY_COUNT_; break;
    case SCN_OP_CALLS: vmax = SCN_M_COUNT_; break;
    default: vmax = 1; break;
    }
    if (s->variant < 0 || s->variant >= vmax)
        return scn_fail(err, errsize, "%s: variant %d out of range", info->name, s->variant);

    /* number */
    long lo = 0, hi = 0;
    switch (s->op) {
    case SCN_OP_SPAWN:
    case SCN_OP_CHILD:
        if (s->end == SCN_END_EXIT)
            hi = 255;
        else if (s->end == SCN_END_SIGNAL)
            lo = 1, hi = 64;
        break;
    case SCN_OP_KILL: lo = 1, hi = 64; break;
    case SCN_OP_LOG: lo = 1, hi = 1000000; break;
    case SCN_OP_CALLS: hi = 1000000; break;
    case SCN_OP_SLEEP: hi = 60000; break;
    case SCN_OP_SOAK: hi = 86400; break;
    default: break;
    }
    if (s->number < lo || s->number > hi)
        return scn_fail(err, errsize, "%s: number %d out of range %ld..%ld", info->name, s->number, lo,
                    hi);

    /* end / release */
    if (f & SCN_F_END) {
        if ((int)s->end < 0 || s->end > SCN_END_EXEC_FAIL)
            return scn_fail(err, errsize, "%s: bad end", info->name);
        if ((int)s->release < 0 || s->release > SCN_REL_GATE)
            return scn_fail(err, errsize, "%s: bad release", info->name);
        if (s->end == SCN_END_EXEC_FAIL && (s->op != SCN_OP_SPAWN || s->release != SCN_REL_NOW))
            return scn_fail(err, errsize, "exec_fail is for spawn only, without wait or gate");
    } else if (s->end != SCN_END_EXIT || s->release != SCN_REL_NOW) {
        return scn_fail(err, errsize, "%s takes no child end", info->name);
    }

    /* outcome */
    if (f & SCN_F_OUTCOME) {
        if (!s->has_rc)
            return scn_fail(err, errsize, "expect needs exit N, signal N or rc N");
        if (s->rc < -64 || s->rc > 255)
            return scn_fail(err, errsize, "expect: returncode %d out of range", s->rc);
        if (s->exp_thread != SCN_NONE && (s->exp_thread < 0 || s->exp_thread >= SCN_MAX_THREADS))
            return scn_fail(err, errsize, "expect: bad thread");
        if (s->exp_loop != SCN_NONE && (s->exp_loop < 0 || s->exp_loop >= SCN_MAX_LOOPS))
            return scn_fail(err, errsize, "expect: bad loop");
        if (s->exp_handler != SCN_NONE &&
            (s->exp_handler < 0 || s->exp_handler >= SCN_MAX_HANDLERS))
            return scn_fail(err, errsize, "expect: bad handler");
    } else if (s->has_rc || s->rc || s->exp_thread != SCN_NONE || s->exp_loop != SCN_NONE ||
               s->exp_handler != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no outcome", info->name);
    }

    /* text */
    if (f & SCN_F_TEXT) {
        if (!text_ok(s->text))
            return scn_fail(err, errsize, "%s: text must be 1..%d characters without quotes",
                        info->name, SCN_TEXT_MAX - 1);
        if (s->level != SCN_NONE && (s->level < 0 || s->level >= COUNT(level_names)))
            return scn_fail(err, errsize, "%s: bad level", info->name);
        if (s->category != SCN_NONE &&
            (s->category < 0 || s->category >= COUNT(category_names)))
            return scn_fail(err, errsize, "%s: bad category", info->name);
    } else if (s->text[0] || s->level != SCN_NONE || s->category != SCN_NONE) {
        return scn_fail(err, errsize, "%s takes no text", info->name);
    }

    if ((int)s->result_kind < 0 || s->result_kind > SCN_RES_ANY)
        return scn_fail(err, errsize, "%s: bad result kind", info->name);
    if (s->result_kind != SCN_RES_VALUE && s->result != 0)
        return scn_fail(err, errsize, "%s: result value without => value", info->name);
    return 0;
}

/* ---- tokenizer ---- */

#define MAX_TOKENS 24

typedef struct tokens {
    int n;
    char *tok[MAX_TOKENS];
    bool quoted[MAX_TOKENS];
    char buf[SCN_LINE_MAX + 8];
} tokens;

static int tokenize(const char *line, tokens *t, char *err, size_t errsize)
{
    size_t len = strnlen(line, SCN_LINE_MAX + 1);
    if (len > SCN_LINE_MAX)
        return scn_fail(err, errsize, "line longer than %d characters", SCN_LINE_MAX);
    memcpy(t->buf, line, len);
    t->buf[len] = '\0';
    t->n = 0;
    char *p = t->buf;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p || *p == '#')
            break;
        if (t->n == MAX_TOKENS)
            return scn_fail(err, errsize, "too many words (at most %d)", MAX_TOKENS);
        if (*p == '"') {
            char *end = strchr(p + 1, '"');
            if (!end)
                return scn_fail(err, errsize, "unterminated quoted text");
            *end = '\0';
            t->quoted[t->n] = true;
            t->tok[t->n++] = p + 1;
            p = end + 1;
            if (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
                return scn_fail(err, errsize, "text after a closing quote");
            continue;
        }
        t->quoted[t->n] = false;
        t->tok[t->n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '"')
            p++;
        if (*p == '"')
            return scn_fail(err, errsize, "quote inside a word");
        if (*p)
            *p++ = '\0';
    }
    return 0;
}

bool scn_parse_int(const char *s, long lo, long hi, int *out)
{
    if (!s || !*s)
        return false;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    if (strlen(p) > 9)
        return false;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* "L3", "W0", "P1", "T2", "main" (T0), "none". */
static bool parse_ref(const char *s, scn_ref *r)
{
    if (strcmp(s, "none") == 0) {
        r->type = SCN_T_NONE;
        r->index = SCN_NONE;
        return true;
    }
    if (strcmp(s, "main") == 0) {
        r->type = SCN_T_THREAD;
        r->index = 0;
        return true;
    }
    scn_type t;
    switch (s[0]) {
    case 'T': t = SCN_T_THREAD; break;
    case 'L': t = SCN_T_LOOP; break;
    case 'W': t = SCN_T_WATCHER; break;
    case 'P': t = SCN_T_POLICY; break;
    default: return false;
    }
    if (s[1] == '+' || s[1] == '-')
        return false;
    int i;
    if (!scn_parse_int(s + 1, 0, slot_limit(t) - 1, &i))
        return false;
    r->type = t;
    r->index = i;
    return true;
}

/* "C3" or "C1-C1000". */
static bool parse_children(const char *s, int *lo, int *hi)
{
    if (s[0] != 'C')
        return false;
    char tmp[64];
    if (strlen(s) >= sizeof tmp)
        return false;
    strcpy(tmp, s + 1);
    char *dash = strchr(tmp, '-');
    if (!dash) {
        if (tmp[0] == '+' || !scn_parse_int(tmp, 0, SCN_MAX_CHILDREN - 1, lo))
            return false;
        *hi = *lo;
        return true;
    }
    *dash = '\0';
    const char *second = dash + 1;
    if (second[0] != 'C')
        return false;
    second++;
    if (tmp[0] == '+' || second[0] == '+' || second[0] == '-' ||
        !scn_parse_int(tmp, 0, SCN_MAX_CHILDREN - 1, lo) ||
        !scn_parse_int(second, 0, SCN_MAX_CHILDREN - 1, hi))
        return false;
    return *lo <= *hi;
}

static bool parse_handler(const char *s, int *h)
{
    return s[0] == 'H' && s[1] != '+' && s[1] != '-' && scn_parse_int(s + 1, 0, SCN_MAX_HANDLERS - 1, h);
}

static bool parse_signal(const char *s, int *sig)
{
    static const struct {
        const char *name;
        int num;
    } sigs[] = {{"HUP", 1},  {"INT", 2},   {"QUIT", 3},  {"ILL", 4},   {"ABRT", 6},
                {"KILL", 9}, {"USR1", 10}, {"SEGV", 11}, {"USR2", 12}, {"PIPE", 13},
                {"ALRM", 14}, {"TERM", 15}, {"CHLD", 17}, {"CONT", 18}, {"STOP", 19}};
    if (scn_parse_int(s, 1, 64, sig))
        return true;
    const char *n = strncmp(s, "SIG", 3) == 0 ? s + 3 : s;
    for (int i = 0; i < COUNT(sigs); i++)
        if (strcmp(n, sigs[i].name) == 0) {
            *sig = sigs[i].num;
            return true;
        }
    return false;
}

static bool parse_kinds(const char *s, unsigned *mask)
{
    size_t n = strlen(s);
    if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n > 80)
        return false;
    char tmp[96];
    memcpy(tmp, s + 1, n - 2);
    tmp[n - 2] = '\0';
    bool negate = tmp[0] == '!';
    unsigned m = scn_kind_words(tmp + (negate ? 1 : 0), ",");
    if (!m)
        return false;
    if (negate)
        m = SCN_KINDS_ALL & ~m;
    if (!m)
        return false;
    *mask = m;
    return true;
}

static bool parse_threads(const char *s, unsigned *mask)
{
    if (s[0] != '@' || strlen(s) > 80)
        return false;
    char tmp[96];
    strcpy(tmp, s + 1);
    unsigned m = 0;
    char *save = NULL;
    for (char *w = strtok_r(tmp, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        scn_ref r;
        if (!parse_ref(w, &r) || r.type != SCN_T_THREAD)
            return false;
        if (m & (1u << r.index))
            return false;
        m |= 1u << r.index;
    }
    if (!m)
        return false;
    *mask = m;
    return true;
}

static bool parse_result(const char *s, scn_step *st)
{
    if (strcmp(s, "any") == 0) {
        st->result_kind = SCN_RES_ANY;
        st->result = 0;
        return true;
    }
    int idx = name_index(errcode_names, COUNT(errcode_names), s);
    if (idx >= 0) {
        st->result_kind = SCN_RES_VALUE;
        st->result = -idx;
        return true;
    }
    int v;
    if (scn_parse_int(s, -1000000, 1000000, &v)) {
        st->result_kind = SCN_RES_VALUE;
        st->result = v;
        return true;
    }
    return false;
}

/* Argument cursor over the tokens after the verb. */
typedef struct cursor {
    tokens *t;
    int i, end;
} cursor;

static const char *peek(cursor *c)
{
    return c->i < c->end ? c->t->tok[c->i] : NULL;
}
static bool peek_quoted(cursor *c)
{
    return c->i < c->end && c->t->quoted[c->i];
}
static const char *next(cursor *c)
{
    return c->i < c->end ? c->t->tok[c->i++] : NULL;
}

/* END := exit N | signal N | exec_fail */
static int parse_end(cursor *c, scn_step *s, const char *verb, char *err, size_t errsize)
{
    const char *w = next(c);
    if (!w)
        return scn_fail(err, errsize, "%s: expected exit N, signal N or exec_fail", verb);
    if (strcmp(w, "exec_fail") == 0) {
        s->end = SCN_END_EXEC_FAIL;
        return 0;
    }
    const char *v = next(c);
    if (strcmp(w, "exit") == 0) {
        s->end = SCN_END_EXIT;
        if (!v || !scn_parse_int(v, 0, 255, &s->number))
            return scn_fail(err, errsize, "%s: exit needs a code 0..255", verb);
        return 0;
    }
    if (strcmp(w, "signal") == 0) {
        s->end = SCN_END_SIGNAL;
        if (!v || !parse_signal(v, &s->number))
            return scn_fail(err, errsize, "%s: signal needs a signal number or name", verb);
        return 0;
    }
    return scn_fail(err, errsize, "%s: expected exit N, signal N or exec_fail, got '%s'", verb, w);
}

static int parse_args(cursor *c, scn_step *s, char *err, size_t errsize)
{
    const scn_op_info *info = scn_op_get(s->op);
    const char *verb = info->name;
    const char *w;

    /* The object, for ops that start with one. */
    if (info->fields & SCN_F_OBJ) {
        w = next(c);
        if (!w || !parse_ref(w, &s->obj))
            return scn_fail(err, errsize, "%s: expected an object (L1, W1, P1, T1, none), got '%s'",
                        verb, w ? w : "nothing");
    }

    switch (s->op) {
    case SCN_OP_NEW_LOOP:
        if ((w = next(c))) {
            int b = name_index(backend_names, COUNT(backend_names), w);
            if (b < 0)
                return scn_fail(err, errsize, "new_loop: unknown backend '%s'", w);
            s->variant = b;
        }
        break;
    case SCN_OP_NEW_WATCHER:
        if ((w = next(c))) {
            if (strcmp(w, "auto") == 0) {
                s->variant = SCN_WATCHER_AUTO;
            } else if (strcmp(w, "kind") == 0) {
                s->variant = SCN_WATCHER_UNDER_TEST;
            } else {
                int k = scn_kind_index(w);
                if (k < 0)
                    return scn_fail(err, errsize, "new_watcher: unknown kind '%s'", w);
                s->variant = 1 + k;
            }
        }
        break;
    case SCN_OP_NEW_POLICY:
        if ((w = next(c))) {
            int v = name_index(policy_names, SCN_POLICY_COUNT_, w);
            if (v < 0)
                return scn_fail(err, errsize, "new_policy: unknown variant '%s'", w);
            s->variant = v;
        }
        break;
    case SCN_OP_ATTACH:
    case SCN_OP_SAME:
        w = next(c);
        if (!w || !parse_ref(w, &s->obj2))
            return scn_fail(err, errsize, "%s: expected %s", verb,
                        s->op == SCN_OP_SAME ? "an object of the same type" : "a loop or none");
        break;
    case SCN_OP_CALLS:
        w = next(c);
        if (!w || (s->variant = name_index(method_names, SCN_M_COUNT_, w)) < 0)
            return scn_fail(err, errsize, "calls: expected a method name");
        w = next(c);
        if (!w || !scn_parse_int(w, 0, 1000000, &s->number))
            return scn_fail(err, errsize, "calls: expected a minimum count");
        break;
    default: break;
    }

    if (info->fields & SCN_F_CHILDREN) {
        w = next(c);
        if (!w || !parse_children(w, &s->child_lo, &s->child_hi))
            return scn_fail(err, errsize, "%s: expected children C1 or C1-C9, got '%s'", verb,
                        w ? w : "nothing");
    }

    switch (s->op) {
    case SCN_OP_SPAWN:
    case SCN_OP_CHILD:
        if (s->op == SCN_OP_SPAWN && peek(c) && strcmp(peek(c), "on") == 0) {
            next(c);
            w = next(c);
            if (!w || !parse_ref(w, &s->obj2) || s->obj2.type != SCN_T_LOOP)
                return scn_fail(err, errsize, "spawn: 'on' needs a loop");
        }
        if (parse_end(c, s, verb, err, errsize))
            return -1;
        if ((w = peek(c)) && (strcmp(w, "wait") == 0 || strcmp(w, "gate") == 0)) {
            next(c);
            s->release = w[0] == 'w' ? SCN_REL_WAIT : SCN_REL_GATE;
        }
        break;
    case SCN_OP_ADD_HANDLER:
        while ((w = peek(c)) && strcmp(w, "=>") != 0) {
            next(c);
            if (w[0] == 'H') {
                if (!parse_handler(w, &s->handler))
                    return scn_fail(err, errsize, "add_handler: bad handler '%s'", w);
            } else if (strcmp(w, "on") == 0) {
                w = next(c);
                if (!w || !parse_ref(w, &s->obj2) || s->obj2.type != SCN_T_LOOP)
                    return scn_fail(err, errsize, "add_handler: 'on' needs a loop");
            } else {
                return scn_fail(err, errsize, "add_handler: unexpected '%s'", w);
            }
        }
        break;
    case SCN_OP_KILL:
        w = next(c);
        if (!w || !parse_signal(w, &s->number))
            return scn_fail(err, errsize, "kill: expected a signal");
        break;
    case SCN_OP_EXPECT: {
        w = next(c);
        const char *v = next(c);
        if (!w || !v)
            return scn_fail(err, errsize, "expect: expected exit N, signal N or rc N");
        s->has_rc = true;
        int n;
        if (strcmp(w, "exit") == 0 && scn_parse_int(v, 0, 255, &n))
            s->rc = n;
        else if (strcmp(w, "signal") == 0 && parse_signal(v, &n))
            s->rc = -n;
        else if (strcmp(w, "rc") == 0 && scn_parse_int(v, -64, 255, &n))
            s->rc = n;
        else
            return scn_fail(err, errsize, "expect: expected exit N, signal N or rc N, got '%s %s'", w,
                        v);
        while ((w = peek(c)) && strcmp(w, "=>") != 0) {
            next(c);
            const char *arg = next(c);
            scn_ref r;
            if (!arg)
                return scn_fail(err, errsize, "expect: '%s' needs an argument", w);
            if (strcmp(w, "on") == 0 && parse_ref(arg, &r) && r.type == SCN_T_THREAD)
                s->exp_thread = r.index;
            else if (strcmp(w, "loop") == 0 && parse_ref(arg, &r) && r.type == SCN_T_LOOP)
                s->exp_loop = r.index;
            else if (strcmp(w, "handler") == 0 && parse_handler(arg, &s->exp_handler))
                ;
            else
                return scn_fail(err, errsize, "expect: bad '%s %s' (on T, loop L, handler H)", w, arg);
        }
        break;
    }
    case SCN_OP_LOG:
    case SCN_OP_NO_LOG:
        while ((w = peek(c)) && !peek_quoted(c) && strcmp(w, "=>") != 0) {
            next(c);
            if (strncmp(w, "level=", 6) == 0 &&
                (s->level = name_index(level_names, COUNT(level_names), w + 6)) >= 0)
                continue;
            if (strncmp(w, "cat=", 4) == 0 &&
                (s->category = name_index(category_names, COUNT(category_names), w + 4)) >= 0)
                continue;
            return scn_fail(err, errsize, "%s: expected level=, cat= or \"text\", got '%s'", verb, w);
        }
        if (!peek_quoted(c))
            return scn_fail(err, errsize, "%s: expected \"text\"", verb);
        w = next(c);
        if (strlen(w) >= SCN_TEXT_MAX || !*w)
            return scn_fail(err, errsize, "%s: text must be 1..%d characters", verb, SCN_TEXT_MAX - 1);
        strcpy(s->text, w);
        if (s->op == SCN_OP_LOG && peek(c) && strcmp(peek(c), "min") == 0) {
            next(c);
            w = next(c);
            if (!w || !scn_parse_int(w, 1, 1000000, &s->number))
                return scn_fail(err, errsize, "log: min needs a count");
        }
        break;
    case SCN_OP_SLEEP:
        w = next(c);
        if (!w || !scn_parse_int(w, 0, 60000, &s->number))
            return scn_fail(err, errsize, "sleep: expected milliseconds 0..60000");
        break;
    case SCN_OP_SOAK:
        if ((w = peek(c)) && strcmp(w, "=>") != 0) {
            next(c);
            if (!scn_parse_int(w, 0, 86400, &s->number))
                return scn_fail(err, errsize, "soak: expected seconds");
        }
        break;
    default: break;
    }
    return 0;
}

int scn_parse_step(const char *line, scn_step *out, char *err, size_t errsize)
{
    tokens *t = malloc(sizeof *t);
    if (!t)
        return scn_fail(err, errsize, "out of memory");
    int rc = -1;
    scn_step s;
    scn_step_init(&s, SCN_OP_INVALID);
    if (tokenize(line, t, err, errsize))
        goto out;
    int i = 0;
    if (i < t->n && !t->quoted[i] && t->tok[i][0] == '[') {
        if (!parse_kinds(t->tok[i], &s.kinds)) {
            scn_fail(err, errsize, "bad watcher list '%s'", t->tok[i]);
            goto out;
        }
        i++;
    }
    if (i < t->n && !t->quoted[i] && t->tok[i][0] == '@') {
        if (!parse_threads(t->tok[i], &s.threads)) {
            scn_fail(err, errsize, "bad thread list '%s'", t->tok[i]);
            goto out;
        }
        i++;
    }
    if (i >= t->n || t->quoted[i]) {
        scn_fail(err, errsize, "expected a step");
        goto out;
    }
    s.op = scn_op_by_name(t->tok[i]);
    if (s.op == SCN_OP_INVALID) {
        scn_fail(err, errsize, "unknown step '%s'", t->tok[i]);
        goto out;
    }
    {
        unsigned kinds = s.kinds, threads = s.threads;
        scn_step_init(&s, s.op);
        s.kinds = kinds;
        s.threads = threads;
    }
    i++;
    /* "=> RESULT" ends the line. */
    int end = t->n;
    for (int j = i; j < t->n; j++)
        if (!t->quoted[j] && strcmp(t->tok[j], "=>") == 0) {
            if (j != t->n - 2 || !parse_result(t->tok[j + 1], &s)) {
                scn_fail(err, errsize, "'=>' must be followed by one result (OK, ERUNTIME, ..., a number, any)");
                goto out;
            }
            end = j;
            break;
        }
    cursor c = {t, i, end};
    if (parse_args(&c, &s, err, errsize))
        goto out;
    if (c.i != c.end) {
        scn_fail(err, errsize, "%s: unexpected '%s'", scn_op_get(s.op)->name, t->tok[c.i]);
        goto out;
    }
    if (scn_step_validate(&s, err, errsize))
        goto out;
    *out = s;
    rc = 0;
out:
    free(t);
    return rc;
}

bool scn_step_equal(const scn_step *a, const scn_step *b)
{
    return a->op == b->op && a->kinds == b->kinds && a->threads == b->threads &&
           a->obj.type == b->obj.type && a->obj.index == b->obj.index &&
           a->obj2.type == b->obj2.type && a->obj2.index == b->obj2.index &&
           a->child_lo == b->child_lo && a->child_hi == b->child_hi &&
           a->handler == b->handler && a->variant == b->variant && a->number == b->number &&
           a->end == b->end && a->release == b->release && a->has_rc == b->has_rc &&
           a->rc == b->rc && a->exp_thread == b->exp_thread && a->exp_loop == b->exp_loop &&
           a->exp_handler == b->exp_handler && a->level == b->level &&
           a->category == b->category && strncmp(a->text, b->text, SCN_TEXT_MAX) == 0 &&
           a->result_kind == b->result_kind && a->result == b->result;
}
