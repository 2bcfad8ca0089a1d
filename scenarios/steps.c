/*
 * steps.c — parse, validate and format scenario steps and files (steps.h).
 *
 * The parser is a tokenizer plus one small grammar per op; the formatter
 * writes the canonical form of the same grammar. Both are total: any input
 * gives either a valid step or an error message, never a crash, so fuzzers
 * may feed them arbitrary bytes.
 */
#include "steps.h"

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

static int fail(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errsize, const char *fmt, ...)
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
            return fail(err, errsize, "%s is missing", what);
        if (r->index != SCN_NONE)
            return fail(err, errsize, "%s: none has no index", what);
        return 0;
    }
    if ((int)r->type < 0 || r->type > SCN_T_POLICY || !(types & TY(r->type)))
        return fail(err, errsize, "%s has the wrong type", what);
    if (r->index < 0 || r->index >= slot_limit(r->type))
        return fail(err, errsize, "%s index %d is out of range", what, r->index);
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
        return fail(err, errsize, "unknown step kind %d", (int)s->op);
    unsigned f = info->fields;
    if (s->kinds == 0 || (s->kinds & ~SCN_KINDS_ALL))
        return fail(err, errsize, "%s: bad watcher set", info->name);
    if (s->threads & ~((1u << SCN_MAX_THREADS) - 1))
        return fail(err, errsize, "%s: bad thread set", info->name);
    if (s->threads && !(f & (SCN_F_ACTOR | SCN_F_THREADS)))
        return fail(err, errsize, "%s runs on the director and takes no @thread", info->name);
    if (__builtin_popcount(s->threads) > 1 && !multi_thread_ok(s->op))
        return fail(err, errsize, "%s runs on one thread only", info->name);
    if (s->op == SCN_OP_SOAK && __builtin_popcount(s->threads) > 1)
        return fail(err, errsize, "soak spawns from one thread");

    /* obj */
    if (f & SCN_F_OBJ) {
        if (check_ref(&s->obj, info->obj_types, (f & SCN_F_OBJ_NONE) != 0, info->name, err,
                      errsize))
            return -1;
    } else if (s->obj.type != SCN_T_NONE || s->obj.index != SCN_NONE) {
        return fail(err, errsize, "%s takes no object", info->name);
    }
    if ((s->op == SCN_OP_THREAD || s->op == SCN_OP_JOIN) && s->obj.index == 0)
        return fail(err, errsize, "%s: the main thread always exists", info->name);

    /* obj2: a loop, except for "same", where it has obj's type */
    if (f & SCN_F_OBJ2) {
        bool none_ok = (f & SCN_F_OBJ2_OPT) || s->op == SCN_OP_ATTACH;
        unsigned types = s->op == SCN_OP_SAME ? TY(s->obj.type) : TY(SCN_T_LOOP);
        if (check_ref(&s->obj2, types, none_ok, info->name, err, errsize))
            return -1;
    } else if (s->obj2.type != SCN_T_NONE || s->obj2.index != SCN_NONE) {
        return fail(err, errsize, "%s takes no second object", info->name);
    }

    /* children */
    if (f & SCN_F_CHILDREN) {
        if (s->child_lo < 0 || s->child_hi < s->child_lo || s->child_hi >= SCN_MAX_CHILDREN)
            return fail(err, errsize, "%s: bad child range", info->name);
        if ((f & SCN_F_ONE_CHILD) && s->child_lo != s->child_hi)
            return fail(err, errsize, "%s takes one child", info->name);
        int nthreads = __builtin_popcount(s->threads);
        if (nthreads > 1 && s->child_hi - s->child_lo + 1 < nthreads)
            return fail(err, errsize, "%s: fewer children than threads", info->name);
    } else if (s->child_lo != SCN_NONE || s->child_hi != SCN_NONE) {
        return fail(err, errsize, "%s takes no children", info->name);
    }

    /* handler */
    if (f & SCN_F_HANDLER) {
        if (s->handler != SCN_NONE && (s->handler < 1 || s->handler >= SCN_MAX_HANDLERS))
            return fail(err, errsize, "%s: handler must be H1..H%d", info->name,
                        SCN_MAX_HANDLERS - 1);
    } else if (s->handler != SCN_NONE) {
        return fail(err, errsize, "%s takes no handler", info->name);
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
        return fail(err, errsize, "%s: variant %d out of range", info->name, s->variant);

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
        return fail(err, errsize, "%s: number %d out of range %ld..%ld", info->name, s->number, lo,
                    hi);

    /* end / release */
    if (f & SCN_F_END) {
        if ((int)s->end < 0 || s->end > SCN_END_EXEC_FAIL)
            return fail(err, errsize, "%s: bad end", info->name);
        if ((int)s->release < 0 || s->release > SCN_REL_GATE)
            return fail(err, errsize, "%s: bad release", info->name);
        if (s->end == SCN_END_EXEC_FAIL && (s->op != SCN_OP_SPAWN || s->release != SCN_REL_NOW))
            return fail(err, errsize, "exec_fail is for spawn only, without wait or gate");
    } else if (s->end != SCN_END_EXIT || s->release != SCN_REL_NOW) {
        return fail(err, errsize, "%s takes no child end", info->name);
    }

    /* outcome */
    if (f & SCN_F_OUTCOME) {
        if (!s->has_rc)
            return fail(err, errsize, "expect needs exit N, signal N or rc N");
        if (s->rc < -64 || s->rc > 255)
            return fail(err, errsize, "expect: returncode %d out of range", s->rc);
        if (s->exp_thread != SCN_NONE && (s->exp_thread < 0 || s->exp_thread >= SCN_MAX_THREADS))
            return fail(err, errsize, "expect: bad thread");
        if (s->exp_loop != SCN_NONE && (s->exp_loop < 0 || s->exp_loop >= SCN_MAX_LOOPS))
            return fail(err, errsize, "expect: bad loop");
        if (s->exp_handler != SCN_NONE &&
            (s->exp_handler < 0 || s->exp_handler >= SCN_MAX_HANDLERS))
            return fail(err, errsize, "expect: bad handler");
    } else if (s->has_rc || s->rc || s->exp_thread != SCN_NONE || s->exp_loop != SCN_NONE ||
               s->exp_handler != SCN_NONE) {
        return fail(err, errsize, "%s takes no outcome", info->name);
    }

    /* text */
    if (f & SCN_F_TEXT) {
        if (!text_ok(s->text))
            return fail(err, errsize, "%s: text must be 1..%d characters without quotes",
                        info->name, SCN_TEXT_MAX - 1);
        if (s->level != SCN_NONE && (s->level < 0 || s->level >= COUNT(level_names)))
            return fail(err, errsize, "%s: bad level", info->name);
        if (s->category != SCN_NONE &&
            (s->category < 0 || s->category >= COUNT(category_names)))
            return fail(err, errsize, "%s: bad category", info->name);
    } else if (s->text[0] || s->level != SCN_NONE || s->category != SCN_NONE) {
        return fail(err, errsize, "%s takes no text", info->name);
    }

    if ((int)s->result_kind < 0 || s->result_kind > SCN_RES_ANY)
        return fail(err, errsize, "%s: bad result kind", info->name);
    if (s->result_kind != SCN_RES_VALUE && s->result != 0)
        return fail(err, errsize, "%s: result value without => value", info->name);
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
        return fail(err, errsize, "line longer than %d characters", SCN_LINE_MAX);
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
            return fail(err, errsize, "too many words (at most %d)", MAX_TOKENS);
        if (*p == '"') {
            char *end = strchr(p + 1, '"');
            if (!end)
                return fail(err, errsize, "unterminated quoted text");
            *end = '\0';
            t->quoted[t->n] = true;
            t->tok[t->n++] = p + 1;
            p = end + 1;
            if (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
                return fail(err, errsize, "text after a closing quote");
            continue;
        }
        t->quoted[t->n] = false;
        t->tok[t->n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '"')
            p++;
        if (*p == '"')
            return fail(err, errsize, "quote inside a word");
        if (*p)
            *p++ = '\0';
    }
    return 0;
}

/* Strict decimal integer in [lo, hi]. */
static bool parse_int(const char *s, long lo, long hi, int *out)
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
    if (!parse_int(s + 1, 0, slot_limit(t) - 1, &i))
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
        if (tmp[0] == '+' || !parse_int(tmp, 0, SCN_MAX_CHILDREN - 1, lo))
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
        !parse_int(tmp, 0, SCN_MAX_CHILDREN - 1, lo) ||
        !parse_int(second, 0, SCN_MAX_CHILDREN - 1, hi))
        return false;
    return *lo <= *hi;
}

static bool parse_handler(const char *s, int *h)
{
    return s[0] == 'H' && s[1] != '+' && s[1] != '-' && parse_int(s + 1, 0, SCN_MAX_HANDLERS - 1, h);
}

static bool parse_signal(const char *s, int *sig)
{
    static const struct {
        const char *name;
        int num;
    } sigs[] = {{"HUP", 1},  {"INT", 2},   {"QUIT", 3},  {"ILL", 4},   {"ABRT", 6},
                {"KILL", 9}, {"USR1", 10}, {"SEGV", 11}, {"USR2", 12}, {"PIPE", 13},
                {"ALRM", 14}, {"TERM", 15}, {"CHLD", 17}, {"CONT", 18}, {"STOP", 19}};
    if (parse_int(s, 1, 64, sig))
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
    unsigned m = 0;
    char *save = NULL;
    for (char *w = strtok_r(tmp + (negate ? 1 : 0), ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (strcmp(w, "all") == 0) {
            m |= SCN_KINDS_ALL;
            continue;
        }
        int k = scn_kind_index(w);
        if (k < 0)
            return false;
        m |= 1u << k;
    }
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
    if (parse_int(s, -1000000, 1000000, &v)) {
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
        return fail(err, errsize, "%s: expected exit N, signal N or exec_fail", verb);
    if (strcmp(w, "exec_fail") == 0) {
        s->end = SCN_END_EXEC_FAIL;
        return 0;
    }
    const char *v = next(c);
    if (strcmp(w, "exit") == 0) {
        s->end = SCN_END_EXIT;
        if (!v || !parse_int(v, 0, 255, &s->number))
            return fail(err, errsize, "%s: exit needs a code 0..255", verb);
        return 0;
    }
    if (strcmp(w, "signal") == 0) {
        s->end = SCN_END_SIGNAL;
        if (!v || !parse_signal(v, &s->number))
            return fail(err, errsize, "%s: signal needs a signal number or name", verb);
        return 0;
    }
    return fail(err, errsize, "%s: expected exit N, signal N or exec_fail, got '%s'", verb, w);
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
            return fail(err, errsize, "%s: expected an object (L1, W1, P1, T1, none), got '%s'",
                        verb, w ? w : "nothing");
    }

    switch (s->op) {
    case SCN_OP_NEW_LOOP:
        if ((w = next(c))) {
            int b = name_index(backend_names, COUNT(backend_names), w);
            if (b < 0)
                return fail(err, errsize, "new_loop: unknown backend '%s'", w);
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
                    return fail(err, errsize, "new_watcher: unknown kind '%s'", w);
                s->variant = 1 + k;
            }
        }
        break;
    case SCN_OP_NEW_POLICY:
        if ((w = next(c))) {
            int v = name_index(policy_names, SCN_POLICY_COUNT_, w);
            if (v < 0)
                return fail(err, errsize, "new_policy: unknown variant '%s'", w);
            s->variant = v;
        }
        break;
    case SCN_OP_ATTACH:
    case SCN_OP_SAME:
        w = next(c);
        if (!w || !parse_ref(w, &s->obj2))
            return fail(err, errsize, "%s: expected %s", verb,
                        s->op == SCN_OP_SAME ? "an object of the same type" : "a loop or none");
        break;
    case SCN_OP_CALLS:
        w = next(c);
        if (!w || (s->variant = name_index(method_names, SCN_M_COUNT_, w)) < 0)
            return fail(err, errsize, "calls: expected a method name");
        w = next(c);
        if (!w || !parse_int(w, 0, 1000000, &s->number))
            return fail(err, errsize, "calls: expected a minimum count");
        break;
    default: break;
    }

    if (info->fields & SCN_F_CHILDREN) {
        w = next(c);
        if (!w || !parse_children(w, &s->child_lo, &s->child_hi))
            return fail(err, errsize, "%s: expected children C1 or C1-C9, got '%s'", verb,
                        w ? w : "nothing");
    }

    switch (s->op) {
    case SCN_OP_SPAWN:
    case SCN_OP_CHILD:
        if (s->op == SCN_OP_SPAWN && peek(c) && strcmp(peek(c), "on") == 0) {
            next(c);
            w = next(c);
            if (!w || !parse_ref(w, &s->obj2) || s->obj2.type != SCN_T_LOOP)
                return fail(err, errsize, "spawn: 'on' needs a loop");
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
                    return fail(err, errsize, "add_handler: bad handler '%s'", w);
            } else if (strcmp(w, "on") == 0) {
                w = next(c);
                if (!w || !parse_ref(w, &s->obj2) || s->obj2.type != SCN_T_LOOP)
                    return fail(err, errsize, "add_handler: 'on' needs a loop");
            } else {
                return fail(err, errsize, "add_handler: unexpected '%s'", w);
            }
        }
        break;
    case SCN_OP_KILL:
        w = next(c);
        if (!w || !parse_signal(w, &s->number))
            return fail(err, errsize, "kill: expected a signal");
        break;
    case SCN_OP_EXPECT: {
        w = next(c);
        const char *v = next(c);
        if (!w || !v)
            return fail(err, errsize, "expect: expected exit N, signal N or rc N");
        s->has_rc = true;
        int n;
        if (strcmp(w, "exit") == 0 && parse_int(v, 0, 255, &n))
            s->rc = n;
        else if (strcmp(w, "signal") == 0 && parse_signal(v, &n))
            s->rc = -n;
        else if (strcmp(w, "rc") == 0 && parse_int(v, -64, 255, &n))
            s->rc = n;
        else
            return fail(err, errsize, "expect: expected exit N, signal N or rc N, got '%s %s'", w,
                        v);
        while ((w = peek(c)) && strcmp(w, "=>") != 0) {
            next(c);
            const char *arg = next(c);
            scn_ref r;
            if (!arg)
                return fail(err, errsize, "expect: '%s' needs an argument", w);
            if (strcmp(w, "on") == 0 && parse_ref(arg, &r) && r.type == SCN_T_THREAD)
                s->exp_thread = r.index;
            else if (strcmp(w, "loop") == 0 && parse_ref(arg, &r) && r.type == SCN_T_LOOP)
                s->exp_loop = r.index;
            else if (strcmp(w, "handler") == 0 && parse_handler(arg, &s->exp_handler))
                ;
            else
                return fail(err, errsize, "expect: bad '%s %s' (on T, loop L, handler H)", w, arg);
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
            return fail(err, errsize, "%s: expected level=, cat= or \"text\", got '%s'", verb, w);
        }
        if (!peek_quoted(c))
            return fail(err, errsize, "%s: expected \"text\"", verb);
        w = next(c);
        if (strlen(w) >= SCN_TEXT_MAX || !*w)
            return fail(err, errsize, "%s: text must be 1..%d characters", verb, SCN_TEXT_MAX - 1);
        strcpy(s->text, w);
        if (s->op == SCN_OP_LOG && peek(c) && strcmp(peek(c), "min") == 0) {
            next(c);
            w = next(c);
            if (!w || !parse_int(w, 1, 1000000, &s->number))
                return fail(err, errsize, "log: min needs a count");
        }
        break;
    case SCN_OP_SLEEP:
        w = next(c);
        if (!w || !parse_int(w, 0, 60000, &s->number))
            return fail(err, errsize, "sleep: expected milliseconds 0..60000");
        break;
    case SCN_OP_SOAK:
        if ((w = peek(c)) && strcmp(w, "=>") != 0) {
            next(c);
            if (!parse_int(w, 0, 86400, &s->number))
                return fail(err, errsize, "soak: expected seconds");
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
        return fail(err, errsize, "out of memory");
    int rc = -1;
    scn_step s;
    scn_step_init(&s, SCN_OP_INVALID);
    if (tokenize(line, t, err, errsize))
        goto out;
    int i = 0;
    if (i < t->n && !t->quoted[i] && t->tok[i][0] == '[') {
        if (!parse_kinds(t->tok[i], &s.kinds)) {
            fail(err, errsize, "bad watcher list '%s'", t->tok[i]);
            goto out;
        }
        i++;
    }
    if (i < t->n && !t->quoted[i] && t->tok[i][0] == '@') {
        if (!parse_threads(t->tok[i], &s.threads)) {
            fail(err, errsize, "bad thread list '%s'", t->tok[i]);
            goto out;
        }
        i++;
    }
    if (i >= t->n || t->quoted[i]) {
        fail(err, errsize, "expected a step");
        goto out;
    }
    s.op = scn_op_by_name(t->tok[i]);
    if (s.op == SCN_OP_INVALID) {
        fail(err, errsize, "unknown step '%s'", t->tok[i]);
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
                fail(err, errsize, "'=>' must be followed by one result (OK, ERUNTIME, ..., a number, any)");
                goto out;
            }
            end = j;
            break;
        }
    cursor c = {t, i, end};
    if (parse_args(&c, &s, err, errsize))
        goto out;
    if (c.i != c.end) {
        fail(err, errsize, "%s: unexpected '%s'", scn_op_get(s.op)->name, t->tok[c.i]);
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
                put(&o, "%s%s", first ? "" : ",", kind_names[k]);
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

/* ---- scenarios ---- */

void scn_init(scn_scenario *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->watchers = SCN_KINDS_ALL;
}

void scn_free(scn_scenario *sc)
{
    free(sc->steps);
    sc->steps = NULL;
    sc->nsteps = sc->cap = 0;
}

int scn_append(scn_scenario *sc, const scn_step *s, char *err, size_t errsize)
{
    if (scn_step_validate(s, err, errsize))
        return -1;
    if (sc->nsteps == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 32;
        if (cap > 1000000)
            return fail(err, errsize, "too many steps");
        scn_step *n = realloc(sc->steps, cap * sizeof *n);
        if (!n)
            return fail(err, errsize, "out of memory");
        sc->steps = n;
        sc->cap = cap;
    }
    sc->steps[sc->nsteps++] = *s;
    return 0;
}

unsigned scn_kinds(const scn_scenario *sc)
{
    return sc->watchers & ~sc->except & SCN_KINDS_ALL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* A list of kinds separated by spaces or commas; "all". */
static bool parse_kind_list(char *s, unsigned *mask)
{
    unsigned m = 0;
    char *save = NULL;
    for (char *w = strtok_r(s, " ,\t", &save); w; w = strtok_r(NULL, " ,\t", &save)) {
        if (strcmp(w, "all") == 0) {
            m |= SCN_KINDS_ALL;
            continue;
        }
        int k = scn_kind_index(w);
        if (k < 0)
            return false;
        m |= 1u << k;
    }
    if (!m)
        return false;
    *mask = m;
    return true;
}

static bool copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

static int parse_header(scn_scenario *sc, char *key, char *value, char *err, size_t errsize)
{
    if (strcmp(key, "name") == 0) {
        if (!*value || !copy_text(sc->name, sizeof sc->name, value))
            return fail(err, errsize, "name: 1..%d characters", SCN_NAME_MAX - 1);
        for (char *p = sc->name; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                return fail(err, errsize, "name: letters, digits, '-', '_' and '.' only");
        return 0;
    }
    if (strcmp(key, "description") == 0) {
        /* Several description lines are joined with one space. The limit
         * is exact, so that any joined description also parses back as the
         * single line scn_write makes of it. */
        size_t have = strlen(sc->description);
        if (have + (have ? 1 : 0) + strlen(value) + 1 > sizeof sc->description)
            return fail(err, errsize, "description too long");
        if (have)
            strcat(sc->description, " ");
        strcat(sc->description, value);
        return 0;
    }
    if (strcmp(key, "clauses") == 0) {
        if (!copy_text(sc->clauses, sizeof sc->clauses, value))
            return fail(err, errsize, "clauses too long");
        return 0;
    }
    if (strcmp(key, "watchers") == 0) {
        if (!parse_kind_list(value, &sc->watchers))
            return fail(err, errsize, "watchers: 'all' or a list of threaded multiloop safe fast pidfd");
        return 0;
    }
    if (strcmp(key, "except") == 0) {
        /* except: safe fast -- reason */
        char *sep = strstr(value, "--");
        if (!sep)
            return fail(err, errsize, "except: KINDS -- REASON");
        *sep = '\0';
        char *reason = trim(sep + 2);
        unsigned m;
        if (!parse_kind_list(value, &m) || m == SCN_KINDS_ALL)
            return fail(err, errsize, "except: a list of watcher kinds (not all)");
        if (!*reason || strlen(reason) >= SCN_REASON_MAX)
            return fail(err, errsize, "except: a reason of 1..%d characters", SCN_REASON_MAX - 1);
        sc->except |= m;
        for (int k = 0; k < SCN_NKINDS; k++)
            if (m & (1u << k))
                strcpy(sc->except_reason[k], reason);
        return 0;
    }
    if (strcmp(key, "timeout") == 0) {
        if (!parse_int(value, 1, 86400, &sc->timeout))
            return fail(err, errsize, "timeout: seconds 1..86400");
        return 0;
    }
    return fail(err, errsize, "unknown header '%s'", key);
}

int scn_parse_text(const char *text, const char *origin, scn_scenario *out, char *err,
                   size_t errsize)
{
    scn_init(out);
    if (origin)
        copy_text(out->origin, sizeof out->origin, origin);
    else
        origin = "<text>";
    const char *p = text;
    int lineno = 0;
    bool in_steps = false;
    char msg[256];
    char line[SCN_LINE_MAX + 2];
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (n > SCN_LINE_MAX) {
            fail(err, errsize, "%s:%d: line longer than %d characters", origin, lineno,
                 SCN_LINE_MAX);
            goto bad;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl ? nl + 1 : p + n;
        if (memchr(line, '\0', n) != NULL && strlen(line) != n) {
            fail(err, errsize, "%s:%d: NUL byte", origin, lineno);
            goto bad;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        /* A header line is "key: value" with a known lowercase key. */
        char *colon = strchr(s, ':');
        if (colon && !in_steps) {
            bool key_ok = colon > s;
            for (char *k = s; k < colon; k++)
                if (!islower((unsigned char)*k))
                    key_ok = false;
            if (key_ok) {
                *colon = '\0';
                if (parse_header(out, s, trim(colon + 1), msg, sizeof msg)) {
                    fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
                    goto bad;
                }
                continue;
            }
        }
        in_steps = true;
        scn_step st;
        if (scn_parse_step(s, &st, msg, sizeof msg)) {
            fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
            goto bad;
        }
        st.line = lineno;
        if (scn_append(out, &st, msg, sizeof msg)) {
            fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
            goto bad;
        }
    }
    if (!out->name[0]) {
        fail(err, errsize, "%s: missing 'name:' header", origin);
        goto bad;
    }
    if (!scn_kinds(out)) {
        fail(err, errsize, "%s: applies to no watcher", origin);
        goto bad;
    }
    return 0;
bad:
    scn_free(out);
    return -1;
}

int scn_parse_file(const char *path, scn_scenario *out, char *err, size_t errsize)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return fail(err, errsize, "%s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return fail(err, errsize, "out of memory");
    }
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                return fail(err, errsize, "%s: too large", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return fail(err, errsize, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    buf[len] = '\0';
    if (bad || strlen(buf) != len) {
        free(buf);
        return fail(err, errsize, "%s: unreadable or contains NUL bytes", path);
    }
    int rc = scn_parse_text(buf, path, out, err, errsize);
    free(buf);
    return rc;
}

int scn_write(const scn_scenario *sc, FILE *f)
{
    fprintf(f, "name: %s\n", sc->name);
    if (sc->description[0])
        fprintf(f, "description: %s\n", sc->description);
    if (sc->clauses[0])
        fprintf(f, "clauses: %s\n", sc->clauses);
    if (sc->watchers == SCN_KINDS_ALL) {
        fprintf(f, "watchers: all\n");
    } else {
        fprintf(f, "watchers:");
        for (int k = 0; k < SCN_NKINDS; k++)
            if (sc->watchers & (1u << k))
                fprintf(f, " %s", kind_names[k]);
        fprintf(f, "\n");
    }
    /* One except line per distinct reason. */
    unsigned done = 0;
    for (int k = 0; k < SCN_NKINDS; k++) {
        if (!(sc->except & (1u << k)) || (done & (1u << k)))
            continue;
        fprintf(f, "except:");
        for (int j = k; j < SCN_NKINDS; j++)
            if ((sc->except & (1u << j)) && !(done & (1u << j)) &&
                strcmp(sc->except_reason[j], sc->except_reason[k]) == 0) {
                fprintf(f, " %s", kind_names[j]);
                done |= 1u << j;
            }
        fprintf(f, " -- %s\n", sc->except_reason[k]);
    }
    if (sc->timeout)
        fprintf(f, "timeout: %d\n", sc->timeout);
    fprintf(f, "\n");
    char line[SCN_LINE_MAX * 2];
    for (size_t i = 0; i < sc->nsteps; i++) {
        scn_format_step(&sc->steps[i], line, sizeof line);
        fprintf(f, "%s\n", line);
    }
    return ferror(f) ? -1 : 0;
}
