/*
 * steps.h — the scenario vocabulary: step kinds, a decoded step, a decoded
 * scenario, and the functions that turn them into text and back.
 *
 * This is the one place that defines what a scenario can say. The runner's
 * interpreter (interp_*.c) executes decoded steps; a fuzzer can decode its input into the
 * same structs (fill a scn_step, check it with scn_step_validate) and write
 * a finding back as a scenario file with scn_write, which the runner then
 * replays from scenarios/regressions/. The text format is documented in
 * scenarios/README.md; scn_format_step always produces the canonical form,
 * and scn_parse_step(scn_format_step(s)) == s for every valid s.
 *
 * Keep this stable: add new ops at the end of scn_op, never renumber, never
 * change the meaning of a field for an existing op.
 *
 * Nothing here aborts: every parse error is a return code plus a message.
 */
#ifndef EVPOL_SCENARIO_STEPS_H
#define EVPOL_SCENARIO_STEPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- limits ---- */

#define SCN_MAX_THREADS 8     /* T0 (= main, the process's main thread) .. T7 */
#define SCN_MAX_LOOPS 8       /* L0 .. L7 */
#define SCN_MAX_WATCHERS 4    /* W0 .. W3 */
#define SCN_MAX_POLICIES 4    /* P0 .. P3 */
#define SCN_MAX_CHILDREN 4096 /* C0 .. C4095 */
#define SCN_MAX_HANDLERS 8    /* H0 (spawn's own on_exit) .. H7 */
#define SCN_TEXT_MAX 200      /* log text, without quotes or newlines */
#define SCN_NAME_MAX 64
#define SCN_DESC_MAX 512
#define SCN_REASON_MAX 200
#define SCN_LINE_MAX 1024     /* longest step or header line */

#define SCN_NONE (-1)

/* ---- watcher kinds a scenario or a step applies to (bit masks) ---- */

enum {
    SCN_KIND_THREADED = 1u << 0,
    SCN_KIND_MULTILOOP = 1u << 1,
    SCN_KIND_SAFE = 1u << 2,
    SCN_KIND_FAST = 1u << 3,
    SCN_KIND_PIDFD = 1u << 4,
    SCN_KINDS_ALL = 0x1fu,
};
#define SCN_NKINDS 5
/* "threaded", "multiloop", "safe", "fast", "pidfd" for bit index 0..4. */
const char *scn_kind_name(int index);
/* Bit index of a kind name, or -1. */
int scn_kind_index(const char *name);
/* evpol_watcher_kind value for a bit index (EVPOL_WATCHER_THREADED, ...). */
int scn_kind_to_evpol(int index);

/* ---- object references ---- */

typedef enum scn_type {
    SCN_T_NONE = 0, /* "none" (NULL) or absent */
    SCN_T_THREAD,   /* T0..T7, T0 spelled "main" */
    SCN_T_LOOP,     /* L0..L7 */
    SCN_T_WATCHER,  /* W0..W3 */
    SCN_T_POLICY,   /* P0..P3 */
} scn_type;

typedef struct scn_ref {
    scn_type type;
    int index; /* SCN_NONE with SCN_T_NONE */
} scn_ref;

/* ---- step kinds ----
 *
 * "actor" steps run on a scenario thread (default: main, T0; "@T1,T2" names
 * others: each runs the step, inside the loop it is running if any). All the
 * others are run by the director (the thread that reads the scenario and
 * waits for expectations) and take no "@".
 */
typedef enum scn_op {
    SCN_OP_INVALID = 0,
    /* threads and loops */
    SCN_OP_THREAD,        /* thread T1                       start a worker thread */
    SCN_OP_JOIN,          /* join T1                         end it (must not run a loop) */
    SCN_OP_NEW_LOOP,      /* new_loop L1 [backend]           evpol_loop_new */
    SCN_OP_CLOSE_LOOP,    /* close_loop L1                   evpol_loop_close (actor) */
    SCN_OP_START,         /* @T start L1                     T runs L1 until stopped (actor) */
    SCN_OP_STOP,          /* stop L1                         evpol_loop_stop; wait for run to return */
    /* watchers */
    SCN_OP_NEW_WATCHER,   /* new_watcher W1 [kind]           kind under test by default */
    SCN_OP_ATTACH,        /* attach W1 L1|none               (actor) */
    SCN_OP_CLOSE_WATCHER, /* close_watcher W1                (actor) */
    SCN_OP_ACTIVE,        /* active W1 => 1|0                is_active (actor) */
    SCN_OP_ENTER,         /* enter W1                        spawn context (actor) */
    SCN_OP_EXIT,          /* exit W1                         (actor) */
    /* policies and the top-level functions */
    SCN_OP_NEW_POLICY,    /* new_policy P1 [variant]         see scn_policy_variant */
    SCN_OP_SET_POLICY,    /* set_policy P1|none              (actor) */
    SCN_OP_SET_CHILD_WATCHER, /* set_child_watcher W1|none   top-level (actor) */
    SCN_OP_GET_CHILD_WATCHER, /* get_child_watcher W1        top-level, keeps a ref (actor) */
    SCN_OP_SET_LOOP,      /* set_loop L1|none                top-level set_event_loop (actor) */
    SCN_OP_GET_LOOP,      /* get_loop L1                     top-level get_event_loop (actor) */
    SCN_OP_NEW_EVENT_LOOP, /* new_event_loop L1              top-level (actor) */
    SCN_OP_RUNNING,       /* running L1|none                 get_running_loop is L1 (actor) */
    SCN_OP_SAME,          /* same L1 L2 => 1|0               same object (two L, W or P) */
    SCN_OP_DROP,          /* drop L1|W1|P1                   drop the scenario's reference */
    /* children */
    SCN_OP_SPAWN,         /* spawn C1[-C9] [on L1] END [wait|gate]  evpol_loop_spawn (actor) */
    SCN_OP_CHILD,         /* child C1[-C9] END [wait|gate]   outside code's process */
    SCN_OP_ADD_HANDLER,   /* add_handler W1 C1[-C9] [H1] [on L1]  (actor) */
    SCN_OP_REMOVE_HANDLER, /* remove_handler W1 C1 => 1|0    (actor) */
    SCN_OP_RELEASE,       /* release C1[-C9]                 let "wait" children exit */
    SCN_OP_RELEASE_GATE,  /* release_gate                    let every "gate" child exit */
    SCN_OP_KILL,          /* kill C1[-C9] SIGNAL             outside code's kill() */
    SCN_OP_REAP,          /* reap C1[-C9] => 0|1             outside waitpid: 0 reaped, 1 gone */
    SCN_OP_EXITED,        /* exited C1 => 0|1                wait until exited: 0 zombie, 1 reaped */
    SCN_OP_FORK,          /* @T fork C1                      fork(); the child checks POL-21 (actor) */
    SCN_OP_SIGCHLD_REPLACE, /* sigchld_replace               outside code's sigaction(SIGCHLD) */
    SCN_OP_SIGCHLD_RESTORE, /* sigchld_restore               back to the scenario's start */
    /* expectations */
    SCN_OP_EXPECT,        /* expect C1[-C9] OUTCOME [on T] [loop L] [handler H] */
    SCN_OP_NEVER,         /* never C1[-C9]                   no callback, now or ever */
    SCN_OP_REAPED,        /* reaped C1[-C9]                  wait until someone reaped it */
    SCN_OP_LOG,           /* log [level=L] [cat=C] "text" [min N]  wait for a log line */
    SCN_OP_NO_LOG,        /* no_log [level=L] [cat=C] "text" no such line so far */
    SCN_OP_CALLS,         /* calls P1 METHOD N               custom policy method called >= N */
    SCN_OP_SLEEP,         /* sleep MS                        never for correctness, only to widen races */
    SCN_OP_SOAK,          /* @T soak [SECONDS]               spawn continuously, RSS/fds flat */
    SCN_OP_COUNT_
} scn_op;

/* Which fields an op uses (for fuzzers and the validator). */
enum {
    SCN_F_OBJ = 1u << 0,      /* obj (type per op, see scn_op_info.obj_types) */
    SCN_F_OBJ_NONE = 1u << 1, /* obj may be "none" */
    SCN_F_OBJ2 = 1u << 2,     /* obj2: a loop (for "same": of obj's type) */
    SCN_F_OBJ2_OPT = 1u << 3, /* obj2 optional ("on L1") */
    SCN_F_CHILDREN = 1u << 4, /* child_lo..child_hi */
    SCN_F_ONE_CHILD = 1u << 5,/* exactly one child */
    SCN_F_HANDLER = 1u << 6,  /* handler (optional) */
    SCN_F_VARIANT = 1u << 7,  /* variant */
    SCN_F_NUMBER = 1u << 8,   /* number */
    SCN_F_END = 1u << 9,      /* end + release */
    SCN_F_OUTCOME = 1u << 10, /* rc, exp_thread, exp_loop, exp_handler */
    SCN_F_TEXT = 1u << 11,    /* text, level, category */
    SCN_F_ACTOR = 1u << 12,   /* runs on scenario threads (threads mask) */
    SCN_F_THREADS = 1u << 13, /* director op that still takes "@T" (soak) */
};

typedef struct scn_op_info {
    const char *name;     /* the verb */
    unsigned fields;      /* SCN_F_* */
    unsigned obj_types;   /* bit (1 << scn_type) for each type obj may have */
} scn_op_info;

/* Info for an op, or NULL for an invalid one. */
const scn_op_info *scn_op_get(scn_op op);
/* The op for a verb, or SCN_OP_INVALID. */
scn_op scn_op_by_name(const char *verb);

/* ---- variants ---- */

/* new_loop: the backend (evpol_backend values). */
typedef enum scn_backend {
    SCN_BACKEND_DEFAULT = 0, SCN_BACKEND_EPOLL = 1, SCN_BACKEND_POLL = 2, SCN_BACKEND_SELECT = 3,
} scn_backend;

/* new_watcher: 0 = the kind under test, else 1 + kind bit index, or AUTO. */
enum { SCN_WATCHER_UNDER_TEST = 0, SCN_WATCHER_AUTO = 1 + SCN_NKINDS };

/* new_policy */
typedef enum scn_policy_variant {
    SCN_POLICY_DEFAULT = 0, /* evpol_policy_new_default (Threaded watcher) */
    SCN_POLICY_WATCHER,     /* new_with_watcher_kind(kind under test) */
    SCN_POLICY_CUSTOM,      /* new_custom: every method overridden, counting, calling super */
    SCN_POLICY_POLL,        /* new_with_backend(POLL) */
    SCN_POLICY_SELECT,      /* new_with_backend(SELECT) */
    SCN_POLICY_COUNT_
} scn_policy_variant;

/* calls: the custom policy's methods. */
typedef enum scn_method {
    SCN_M_GET_EVENT_LOOP = 0, SCN_M_SET_EVENT_LOOP, SCN_M_NEW_EVENT_LOOP,
    SCN_M_GET_CHILD_WATCHER, SCN_M_SET_CHILD_WATCHER, SCN_M_COUNT_
} scn_method;

/* How a child ends (spawn, child). */
typedef enum scn_end {
    SCN_END_EXIT = 0,  /* exit NUMBER (0..255) */
    SCN_END_SIGNAL,    /* killed by signal NUMBER (it kills itself) */
    SCN_END_EXEC_FAIL, /* spawn only: the program does not exist */
} scn_end;

/* When a child ends. */
typedef enum scn_release {
    SCN_REL_NOW = 0, /* at once */
    SCN_REL_WAIT,    /* when "release Cn" closes its own stdin pipe */
    SCN_REL_GATE,    /* when "release_gate" closes the shared gate */
} scn_release;

/* Expected result of the call a step makes. */
typedef enum scn_result_kind {
    SCN_RES_DEFAULT = 0, /* OK (0) */
    SCN_RES_VALUE,       /* exactly `result` (an evpol_errcode or a value) */
    SCN_RES_ANY,         /* not checked */
} scn_result_kind;

/* ---- a decoded step ---- */

typedef struct scn_step {
    scn_op op;
    unsigned kinds;   /* watchers it applies to; SCN_KINDS_ALL by default */
    unsigned threads; /* bit i = Ti runs it (actor ops, soak); 0 = default (main) */
    scn_ref obj;      /* the object the op acts on */
    scn_ref obj2;     /* a second object: a loop ("same": obj's type), SCN_T_NONE when absent */
    int child_lo, child_hi; /* inclusive, SCN_NONE when unused */
    int handler;      /* 0..7, SCN_NONE = default (H1 for add_handler) */
    int variant;      /* backend / watcher kind / policy variant / method */
    int number;       /* exit code, signal, count, milliseconds, seconds */
    scn_end end;
    scn_release release;
    /* expect: the callback's returncode and where it ran. */
    bool has_rc;
    int rc;
    int exp_thread;   /* SCN_NONE: any */
    int exp_loop;     /* SCN_NONE: any */
    int exp_handler;  /* SCN_NONE: any */
    /* log / no_log */
    int level;        /* evpol_log_level or SCN_NONE */
    int category;     /* evpol_log_category or SCN_NONE */
    char text[SCN_TEXT_MAX];
    /* the call's result */
    scn_result_kind result_kind;
    int result;
    int line;         /* source line, 0 when built in memory */
} scn_step;

/* A step of kind `op` with every field at its default. */
void scn_step_init(scn_step *s, scn_op op);
/* 0 when every field is in range for its op; else -1 and a message. */
int scn_step_validate(const scn_step *s, char *err, size_t errsize);
/* Parse one step line (no header lines, no comments). 0 or -1 + message.
 * On success *out is valid (scn_step_validate passes). */
int scn_parse_step(const char *line, scn_step *out, char *err, size_t errsize);
/* Canonical text of a step (no newline). Returns the length that the full
 * text needs, as snprintf. */
int scn_format_step(const scn_step *s, char *buf, size_t size);
/* The /bin/sh line a child of a spawn or outside step runs: its end (exit
 * code or signal), after reading its stdin when it waits for a release. */
void scn_child_script(const scn_step *st, char *buf, size_t size);
/* Field-wise equality, ignoring `line` (for round-trip checks). */
bool scn_step_equal(const scn_step *a, const scn_step *b);

/* ---- a decoded scenario ---- */

typedef struct scn_scenario {
    char name[SCN_NAME_MAX];
    char description[SCN_DESC_MAX];
    char clauses[SCN_DESC_MAX]; /* free text, e.g. "CW-2 SAF-6" */
    unsigned watchers;          /* kinds it applies to (before except) */
    unsigned except;            /* kinds excluded, each with a reason */
    char except_reason[SCN_NKINDS][SCN_REASON_MAX];
    int timeout;                /* seconds; 0: the runner's default */
    char origin[512];           /* file it was read from, or "" */
    scn_step *steps;
    size_t nsteps, cap;
} scn_scenario;

/* An empty scenario (applies to every watcher). */
void scn_init(scn_scenario *sc);
void scn_free(scn_scenario *sc);
/* Append a copy of `s` (after scn_step_validate). 0 or -1 (no memory or
 * invalid; message in err). */
int scn_append(scn_scenario *sc, const scn_step *s, char *err, size_t errsize);
/* Parse a whole scenario text. `origin` names it in messages. On error,
 * the message starts with "origin:LINE: ". */
int scn_parse_text(const char *text, const char *origin, scn_scenario *out, char *err,
                   size_t errsize);
int scn_parse_file(const char *path, scn_scenario *out, char *err, size_t errsize);
/* Write the scenario in canonical form (header, then one step per line).
 * 0, or -1 on a write error. */
int scn_write(const scn_scenario *sc, FILE *f);
/* Kinds the scenario runs against: watchers & ~except. */
unsigned scn_kinds(const scn_scenario *sc);

/* Names used in the text, for messages. */
const char *scn_errcode_name(int code); /* "ERUNTIME", ... or NULL */
const char *scn_method_name(int m);
const char *scn_policy_variant_name(int v);
const char *scn_backend_name(int b);
const char *scn_level_name(int level);
const char *scn_category_name(int category);

#endif
