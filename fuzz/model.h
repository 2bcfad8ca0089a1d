/*
 * model.h — a reference model of the child watchers, with no I/O.
 *
 * The model is the specification (conformance/SPEC.md: CW, THR, MUL, SAF,
 * FST, PFD, and the guarantees evpol.h adds beyond CPython: remove is
 * honoured by every watcher, each exit is delivered exactly once, nothing
 * runs after remove or close, a replaced handler is never called) written
 * as a small state machine over the steps of a fuzz program (program.h).
 * For each step it says what the library must do: the call's result, the
 * callbacks (child, returncode, handler, loop) and the warnings, and the
 * SIGCHLD disposition left in the (fake) kernel. It knows nothing of
 * threads, locks or file descriptors: "when" is "by the end of this step",
 * since the executor waits after each step until the watcher has done all
 * it can do without a new event (see fakeexec.h).
 *
 * Where the specification leaves a choice, an event is marked optional: it
 * may happen at most once, or not at all (e.g. the resource warning of a
 * close with children pending, which only THR-6 requires).
 */
#ifndef EVPOL_FUZZ_MODEL_H
#define EVPOL_FUZZ_MODEL_H

#include "program.h"

#include <stdbool.h>
#include <stddef.h>

/* Kind indices are the scenario's (steps.h): threaded 0, multiloop 1,
 * safe 2, fast 3, pidfd 4. */
enum { FZ_THREADED = 0, FZ_MULTILOOP = 1, FZ_SAFE = 2, FZ_FAST = 3, FZ_PIDFD = 4 };

#define FZ_LOOP_NONE (-1)
#define FZ_NLOOPS 2

typedef enum fz_ev_type {
    FZ_EV_CALLBACK = 0,
    FZ_EV_WARNING = 1,
} fz_ev_type;

typedef enum fz_warning {
    FZ_W_UNKNOWN_CHILD = 0, /* CW-11 "Unknown child process pid P, will report returncode 255" */
    FZ_W_LOOP_CLOSED,       /* CW-12 "Loop X that handles pid P is closed" */
    FZ_W_DETACH_PENDING,    /* SAF-4 "A loop is being detached ... pending handlers" */
    FZ_W_FAST_UNKNOWN_PID,  /* FST-7 "Caught subprocess termination from unknown pid: P -> RC" */
    FZ_W_FAST_DROPPED,      /* FST-6 "... from unknown pids: {P: RC, ...}", one event per pid */
    FZ_W_SIGCHLD_CHANGED,   /* MUL-4 "SIGCHLD handler was changed by outside code" */
    FZ_W_FOREIGN_HANDLER,   /* MultiLoop activated over a handler it cannot vouch for */
    FZ_W_CLOSE_PENDING,     /* THR-6 and the like: resource warning, close with pending children */
    FZ_W_OTHER,             /* any other warning or error line: never expected */
    FZ_W_COUNT_
} fz_warning;

typedef struct fz_event {
    fz_ev_type type;
    fz_warning warning;
    int child;    /* child index, or -1 */
    int rc;       /* callbacks, FST-6/7 */
    int handler;  /* callbacks: 1..4 */
    int loop;     /* callbacks: loop it ran on, FZ_LOOP_NONE for no running loop */
    bool optional;
    bool wrong_thread; /* executor: a callback not on the main thread */
    char text[200];    /* FZ_W_OTHER: the line */
} fz_event;

#define FZ_MAX_EVENTS 64

/* SIGCHLD disposition in the (fake) kernel. */
typedef enum fz_disp {
    FZ_DISP_START = 0, /* what it was when the program started */
    FZ_DISP_WATCHER,   /* a handler installed by the watcher (MultiLoop) */
    FZ_DISP_OUTSIDE,   /* sigchld_replace's handler */
} fz_disp;

typedef struct fz_outcome {
    bool has_result;
    int result;
    int nev;
    fz_event ev[FZ_MAX_EVENTS];
    bool overflow;
    fz_disp disposition;
    /* is_active as seen from inside each loop while it runs (-1: not
     * looked at, e.g. a closed loop). */
    int active_in[FZ_NLOOPS];
} fz_outcome;

void fz_outcome_init(fz_outcome *o);
void fz_outcome_add(fz_outcome *o, const fz_event *e);

/* ---- the model ---- */

typedef enum mdl_cstate { MDL_UNBORN = 0, MDL_RUNNING, MDL_ZOMBIE, MDL_GONE } mdl_cstate;

typedef struct mdl_child {
    mdl_cstate state;
    int status;     /* wait status once exited */
    int end_status; /* the status it exits with when released */
    scn_release release;
} mdl_child;

typedef struct mdl_reg {
    bool present;     /* the watcher holds a registration (it will reap) */
    bool has_cb;      /* ... with a handler (not removed) */
    int handler;
    int loop;         /* delivery loop (Threaded, MultiLoop, Pidfd) */
    int reader_loop;  /* Pidfd: the loop holding the pidfd reader */
    bool spawn;       /* made by spawn: the exit is passed on to `loop` (SUB-3) */
} mdl_reg;

typedef struct mdl {
    int kind;
    bool auto_sigchld;
    int nchildren;
    mdl_child child[FZ_MAX_CHILDREN];
    bool loop_closed[FZ_NLOOPS];
    /* the watcher */
    bool closed;
    int contexts;      /* open spawn contexts */
    int attached;      /* Safe, Fast: attached loop or FZ_LOOP_NONE */
    bool activated;    /* MultiLoop: its handler was installed */
    fz_disp saved;     /* MultiLoop: the disposition it saved */
    mdl_reg reg[FZ_MAX_CHILDREN];
    bool orphan[FZ_MAX_CHILDREN]; /* Threaded: a thread still reaps it after close */
    bool kept[FZ_MAX_CHILDREN];   /* Fast: exit kept for a registration */
    int kept_rc[FZ_MAX_CHILDREN];
    fz_disp disposition;
    int ended;        /* children that ended during the current step */
    int fail_threads; /* thread creations still to fail (fake kernel) */
} mdl;

void mdl_init(mdl *m, int kind, bool auto_sigchld);
/* Run one step; `out` receives what the library must do. */
void mdl_step(mdl *m, const fz_step *s, fz_outcome *out);

/* waitpid status -> asyncio returncode (CW-10), written from the W* rules. */
int mdl_returncode(int status);
/* The wait status of a child ending as `end`/`number` says. */
int mdl_end_status(scn_end end, int number);

/* ---- comparing ---- */

/* Compare what happened with what the model expects. Returns true when they
 * agree; otherwise writes a readable explanation to why. */
bool fz_compare(const fz_outcome *expected, const fz_outcome *actual, bool check_result,
                char *why, size_t size);

/* One line per event, for traces. */
void fz_format_outcome(const fz_outcome *o, char *buf, size_t size);
const char *fz_warning_name(fz_warning w);
const char *fz_kind_name(int kind);

#endif
