/*
 * program.h — what the fuzzers' inputs mean.
 *
 * A fuzz input decodes into a program: a list of steps in the scenario
 * vocabulary (scenarios/steps.h), so that a finding can be written back as a
 * scenario file, plus a few directives that only a fake kernel can carry
 * out and that steps.h has no word for (the kernel delivering one SIGCHLD
 * for every exit so far, EINTR, the order waitpid(-1) returns zombies in).
 *
 * The world a program runs in is fixed: loops L0 and L1, one watcher W0 of
 * the kind under test, which is also the current policy's watcher (so that
 * "spawn" uses it); the main thread runs L0 and every actor step runs inside
 * it; L1 only runs to deliver. Children are fake (the fake kernel of
 * conformance/support), named C0, C1, ... in the order the program creates
 * them ("child" or "spawn").
 *
 * Binary format (total: every byte string decodes to a valid program):
 *   byte 0   flags: bit 0 auto-SIGCHLD (each step that ends a child is
 *            followed by one SIGCHLD, as the kernel does); bit 1 clear: the
 *            program starts with "attach W0 L0"; bits 2-7 `pick`, the
 *            watcher the ops target runs it on (target_ops.c)
 *   then     one step per opcode byte (a table in program.c maps byte % 36
 *            to a step), each followed by its argument bytes (missing bytes
 *            read as 0). A step whose arguments name nothing valid (no child yet,
 *            a child that cannot be released) is skipped.
 * The decoder appends an epilogue that closes W0, kills every child and
 * delivers SIGCHLD, so "no callback after close" is checked on every input.
 */
#ifndef EVPOL_FUZZ_PROGRAM_H
#define EVPOL_FUZZ_PROGRAM_H

#include "steps.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_MAX_CHILDREN 12
#define FZ_MAX_BODY 48
#define FZ_MAX_STEPS (FZ_MAX_BODY + FZ_MAX_CHILDREN + 4)
#define FZ_MAX_HANDLER 4 /* H1..H4 */

typedef enum fz_kind {
    FZ_SCN = 0,        /* a scenario step, in `s` */
    FZ_SIGCHLD,        /* the kernel delivers one SIGCHLD now */
    FZ_EINTR,          /* the next n waitpid calls of any kind fail with EINTR */
    FZ_EINTR_BLOCKING, /* the next n blocking waitpid calls fail with EINTR */
    FZ_REAP_ORDER,     /* waitpid(-1) returns zombies in order n (fk_order) */
    FZ_FAIL_THREADS,   /* the next n thread creations fail with EAGAIN */
} fz_kind;

typedef struct fz_step {
    fz_kind kind;
    int n;
    scn_step s;
    bool epilogue; /* appended by the decoder */
} fz_step;

typedef struct fz_program {
    bool auto_sigchld;
    unsigned pick; /* 0..63: which watcher, modulo the number tried */
    size_t nsteps;
    fz_step steps[FZ_MAX_STEPS];
} fz_program;

/* Decode `size` bytes (never fails; an empty input is an empty program). */
void fz_decode(const uint8_t *data, size_t size, fz_program *p);

/* Encode a program back into bytes (epilogue steps are left out: the decoder
 * adds them again). Returns the number of bytes the encoding needs (as
 * snprintf), or 0 when a step has no encoding. */
size_t fz_encode(const fz_program *p, uint8_t *out, size_t cap);

/* Turn scenario steps into a program: steps the fuzzer cannot run on the
 * fake kernel (threads, policies, expectations, ...) are dropped; children
 * are renumbered in order of creation. Returns the number of steps kept. */
size_t fz_from_scenario(const scn_scenario *sc, fz_program *p);

/* One line of text: the scenario step in canonical form, or "# fuzz: ..."
 * for a directive. As snprintf. */
int fz_format_step(const fz_step *s, char *buf, size_t size);

/* True when a step ends children (for auto-SIGCHLD): CHILD now, RELEASE,
 * RELEASE_GATE, KILL, REAP (of a child still running). */
bool fz_step_may_end_children(const fz_step *s);

/* Signals the decoder uses for "kill", and whether the fake kernel (and the
 * real one, for a process with default dispositions) ends a child with it. */
bool fz_signal_terminates(int sig);

#endif
