/*
 * tool.c — fuzz inputs <-> scenario files (fuzz/to-scenario runs it).
 *
 *   fuzz-tool to-scenario INPUT [NAME]
 *       An ops input (a finding) as a scenario file on stdout: the program's
 *       steps in the scenario vocabulary, with the model's expectations
 *       after each step (results, "expect", "log", and "never" at the end),
 *       per watcher kind where they differ. Fake-kernel directives become
 *       comments. On stderr: whether the program, run with automatic
 *       SIGCHLD (what a real kernel does) and without the directives, still
 *       differs from the model on the fake kernel: if it does not, the
 *       finding needs the fake kernel and the input itself must stay the
 *       reproducer (fuzz/corpus/ops/).
 *   fuzz-tool decode INPUT...
 *       Print each ops input as a program, with the model's outcome per
 *       step for each watcher.
 *   fuzz-tool encode SCENARIO OUTPUT
 *       A scenario file as an ops input (steps the fuzzer cannot run are
 *       dropped): how the corpus is seeded from scenarios/.
 */
#include "fakeexec.h"
#include "model.h"
#include "program.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_input(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return -1;
    *out = buf;
    *len = n;
    return 0;
}

/* ---- the model over a whole program, for every kind ---- */

static fz_outcome outcomes[SCN_NKINDS][FZ_MAX_STEPS];
static mdl models[SCN_NKINDS][FZ_MAX_STEPS]; /* state after each step */

static void model_all(const fz_program *p)
{
    for (int k = 0; k < SCN_NKINDS; k++) {
        mdl m;
        mdl_init(&m, k, p->auto_sigchld);
        for (size_t i = 0; i < p->nsteps; i++) {
            mdl_step(&m, &p->steps[i], &outcomes[k][i]);
            models[k][i] = m;
        }
    }
}

/* Does the library differ from the model for this program, for kind k? */
static bool differs(const fz_program *p, int k)
{
    char err[4096];
    mdl m;
    mdl_init(&m, k, p->auto_sigchld);
    if (fx_begin(k, p->auto_sigchld, err, sizeof err) != 0)
        return true;
    bool diff = false;
    for (size_t i = 0; i < p->nsteps && !diff; i++) {
        fz_outcome e, a;
        mdl_step(&m, &p->steps[i], &e);
        fx_step(&p->steps[i], &a);
        diff = !fz_compare(&e, &a, true, err, sizeof err);
    }
    if (fx_end(err, sizeof err) != 0)
        diff = true;
    return diff;
}

/* ---- writing steps with kind prefixes ---- */

static void put_step(FILE *f, const scn_step *s, unsigned kinds)
{
    scn_step t = *s;
    t.kinds = kinds;
    char line[SCN_LINE_MAX * 2];
    scn_format_step(&t, line, sizeof line);
    fprintf(f, "%s\n", line);
}

static const char *warning_text(const fz_event *e, char *buf, size_t size)
{
    switch (e->warning) {
    case FZ_W_UNKNOWN_CHILD:
        snprintf(buf, size, "Unknown child process pid {C%d}, will report returncode 255", e->child);
        break;
    case FZ_W_LOOP_CLOSED: snprintf(buf, size, "that handles pid {C%d} is closed", e->child); break;
    case FZ_W_DETACH_PENDING:
        snprintf(buf, size, "A loop is being detached from a child watcher with pending handlers");
        break;
    case FZ_W_FAST_UNKNOWN_PID:
        snprintf(buf, size, "Caught subprocess termination from unknown pid: {C%d} -> %d", e->child,
                 e->rc);
        break;
    case FZ_W_FAST_DROPPED: snprintf(buf, size, "{C%d}: %d", e->child, e->rc); break;
    case FZ_W_SIGCHLD_CHANGED: snprintf(buf, size, "SIGCHLD handler was changed by outside code"); break;
    case FZ_W_FOREIGN_HANDLER:
        snprintf(buf, size, "Previous SIGCHLD handler was set by non-evpol code");
        break;
    default: return NULL; /* optional ones: not asserted */
    }
    return buf;
}

/* The scenario form of one kind's expectation, as a step. */
static bool expectation(const fz_event *e, scn_step *s, int warn_count)
{
    char text[SCN_TEXT_MAX];
    if (e->optional)
        return false;
    if (e->type == FZ_EV_CALLBACK) {
        scn_step_init(s, SCN_OP_EXPECT);
        s->child_lo = s->child_hi = e->child;
        s->has_rc = true;
        s->rc = e->rc;
        s->exp_loop = e->loop >= 0 ? e->loop : SCN_NONE;
        s->exp_thread = e->loop == 0 ? 0 : e->loop == 1 ? 1 : SCN_NONE;
        s->exp_handler = e->handler;
        return true;
    }
    if (!warning_text(e, text, sizeof text))
        return false;
    scn_step_init(s, SCN_OP_LOG);
    s->level = 2; /* warning */
    snprintf(s->text, sizeof s->text, "%s", text);
    s->number = warn_count > 1 ? warn_count : 1;
    return true;
}

static bool step_equal(const scn_step *a, const scn_step *b)
{
    scn_step x = *a, y = *b;
    x.kinds = y.kinds = SCN_KINDS_ALL;
    return scn_step_equal(&x, &y);
}

/* Expectation lines after step i: each distinct line once, prefixed with
 * the kinds that expect it. */
static void put_expectations(FILE *f, size_t i, unsigned kinds, int counts[SCN_NKINDS][FZ_W_COUNT_],
                             const bool racy[SCN_NKINDS][FZ_MAX_CHILDREN])
{
    scn_step lines[SCN_NKINDS * FZ_MAX_EVENTS];
    unsigned masks[SCN_NKINDS * FZ_MAX_EVENTS];
    int n = 0;
    for (int k = 0; k < SCN_NKINDS; k++) {
        if (!(kinds & (1u << k)))
            continue;
        const fz_outcome *o = &outcomes[k][i];
        for (int j = 0; j < o->nev; j++) {
            const fz_event *e = &o->ev[j];
            if (e->child >= 0 && e->child < FZ_MAX_CHILDREN && racy[k][e->child])
                continue;
            int cnt = 0;
            if (e->type == FZ_EV_WARNING && !e->optional) {
                counts[k][e->warning]++;
                cnt = e->child < 0 ? counts[k][e->warning] : 1;
            }
            scn_step s;
            if (!expectation(e, &s, cnt))
                continue;
            int at = -1;
            for (int x = 0; x < n && at < 0; x++)
                if (step_equal(&lines[x], &s))
                    at = x;
            if (at < 0) {
                lines[n] = s;
                masks[n++] = 0;
                at = n - 1;
            }
            masks[at] |= 1u << k;
        }
    }
    for (int x = 0; x < n; x++)
        put_step(f, &lines[x], masks[x]);
}

static int to_scenario(const char *path, const char *name)
{
    uint8_t *data;
    size_t len;
    if (read_input(path, &data, &len))
        return 1;
    fz_program orig, prog;
    fz_decode(data, len, &orig);
    free(data);

    /* What a real kernel does: every exit signalled at once; the fake
     * kernel's directives have no meaning there. */
    prog = orig;
    prog.auto_sigchld = true;
    prog.nsteps = 0;
    bool had_directives = false;
    size_t from_orig[FZ_MAX_STEPS];
    for (size_t i = 0; i < orig.nsteps; i++) {
        if (orig.steps[i].kind != FZ_SCN && !orig.steps[i].epilogue) {
            had_directives = true;
            continue;
        }
        from_orig[prog.nsteps] = i;
        prog.steps[prog.nsteps++] = orig.steps[i];
    }

    unsigned failing = 0, failing_orig = 0;
    for (int k = 0; k < SCN_NKINDS; k++) {
        if (differs(&orig, k))
            failing_orig |= 1u << k;
        if (differs(&prog, k))
            failing |= 1u << k;
    }
    model_all(&prog);

    FILE *f = stdout;
    fprintf(f, "# Converted by fuzz/to-scenario from %s.\n", path);
    fprintf(f, "# Expectations are the reference model's (fuzz/model.c) for a kernel that\n"
               "# signals every exit at once; the original program ran with SIGCHLD %s%s.\n",
            orig.auto_sigchld ? "automatic" : "held until each '# fuzz: sigchld'",
            had_directives ? " and fake-kernel directives (kept below as comments)" : "");
    fprintf(f, "name: %s\n", name);
    fprintf(f, "description: Found by fuzz/target_ops (fuzz/README.md); the library differed from\n"
               "description: the model for: ");
    for (int k = 0; k < SCN_NKINDS; k++)
        if (failing_orig & (1u << k))
            fprintf(f, "%s ", scn_kind_name(k));
    if (!failing_orig)
        fprintf(f, "none (this library passes it)");
    fprintf(f, "\nwatchers: all\n\n");
    fprintf(f, "new_policy P1 watcher\nset_policy P1\nnew_loop L0\nnew_loop L1\n"
               "get_child_watcher W0\nthread T1\n@T1 start L1\nstart L0\n\n");

    int counts[SCN_NKINDS][FZ_W_COUNT_];
    memset(counts, 0, sizeof counts);
    bool racy[SCN_NKINDS][FZ_MAX_CHILDREN];
    memset(racy, 0, sizeof racy);
    bool called[SCN_NKINDS][FZ_MAX_CHILDREN];
    memset(called, 0, sizeof called);
    int nchildren = 0;

    size_t di = 0; /* the original's directives, as comments where they were */
    for (size_t i = 0; i < prog.nsteps; i++) {
        const fz_step *st = &prog.steps[i];
        for (; di < from_orig[i]; di++) {
            char line[256];
            fz_format_step(&orig.steps[di], line, sizeof line);
            fprintf(f, "%s\n", line);
        }
        di = from_orig[i] + 1;
        if (st->kind != FZ_SCN) {
            char line[256];
            fz_format_step(st, line, sizeof line);
            fprintf(f, "%s (epilogue)\n", line);
            continue;
        }
        scn_step s = st->s;
        if (s.op == SCN_OP_CHILD || s.op == SCN_OP_SPAWN)
            if (s.child_hi + 1 > nchildren)
                nchildren = s.child_hi + 1;
        /* The call's result, per kind. */
        unsigned done = 0;
        for (int k = 0; k < SCN_NKINDS; k++) {
            if (done & (1u << k))
                continue;
            const fz_outcome *o = &outcomes[k][i];
            scn_step t = s;
            if (o->has_result && t.result_kind != SCN_RES_ANY) {
                t.result_kind = o->result == 0 && s.op != SCN_OP_ACTIVE && s.op != SCN_OP_REAP &&
                                        s.op != SCN_OP_REMOVE_HANDLER
                                    ? SCN_RES_DEFAULT
                                    : SCN_RES_VALUE;
                t.result = t.result_kind == SCN_RES_VALUE ? o->result : 0;
            }
            /* A Safe/Fast watcher on L1 is active in the runner (T1 runs L1)
             * but not here; and an outside reap races the watcher there. */
            bool sf = k == FZ_SAFE || k == FZ_FAST;
            if ((s.op == SCN_OP_ACTIVE || s.op == SCN_OP_SPAWN) && sf &&
                models[k][i].attached == 1) {
                t.result_kind = SCN_RES_ANY;
                t.result = 0;
            }
            if (s.op == SCN_OP_REAP) {
                t.result_kind = SCN_RES_ANY;
                t.result = 0;
            }
            unsigned mask = 0;
            for (int j = k; j < SCN_NKINDS; j++) {
                const fz_outcome *oj = &outcomes[j][i];
                bool same = oj->has_result == o->has_result &&
                            (!o->has_result || oj->result == o->result);
                bool sfj = j == FZ_SAFE || j == FZ_FAST;
                if (sfj != sf && (s.op == SCN_OP_ACTIVE || s.op == SCN_OP_SPAWN))
                    same = same && models[j][i].attached == models[k][i].attached;
                if (!(done & (1u << j)) && same)
                    mask |= 1u << j;
            }
            done |= mask;
            if (st->epilogue && s.op == SCN_OP_KILL)
                fprintf(f, "# epilogue: end every child\n");
            put_step(f, &t, mask);
        }
        if (s.op == SCN_OP_REAP) {
            fprintf(f, "# an outside reap races the watcher on a real kernel: no expectation on "
                       "C%d from here\n",
                    s.child_lo);
            for (int k = 0; k < SCN_NKINDS; k++)
                racy[k][s.child_lo] = true;
        }
        for (int k = 0; k < SCN_NKINDS; k++) {
            const fz_outcome *o = &outcomes[k][i];
            for (int j = 0; j < o->nev; j++)
                if (o->ev[j].type == FZ_EV_CALLBACK && o->ev[j].child >= 0 &&
                    o->ev[j].child < FZ_MAX_CHILDREN)
                    called[k][o->ev[j].child] = true;
        }
        put_expectations(f, i, SCN_KINDS_ALL, counts, racy);
    }
    /* Children never reported, per kind (racy ones excepted). */
    for (int c = 0; c < nchildren; c++) {
        unsigned mask = 0;
        for (int k = 0; k < SCN_NKINDS; k++)
            if (!called[k][c] && !racy[k][c])
                mask |= 1u << k;
        if (mask) {
            scn_step s;
            scn_step_init(&s, SCN_OP_NEVER);
            s.child_lo = s.child_hi = c;
            put_step(f, &s, mask);
        }
    }

    fprintf(stderr, "to-scenario: the input differs from the model for:");
    for (int k = 0; k < SCN_NKINDS; k++)
        if (failing_orig & (1u << k))
            fprintf(stderr, " %s", scn_kind_name(k));
    fprintf(stderr, "%s\n", failing_orig ? "" : " nothing (not a finding?)");
    if (failing_orig && !(failing & failing_orig))
        fprintf(stderr,
                "to-scenario: with automatic SIGCHLD and without the fake-kernel directives it no\n"
                "to-scenario: longer differs: the finding needs the fake kernel. Keep the input as\n"
                "to-scenario: the reproducer (fuzz/corpus/ops/); the scenario may pass.\n");
    else if (failing_orig)
        fprintf(stderr,
                "to-scenario: it still differs with automatic SIGCHLD: the scenario should fail\n"
                "to-scenario: until the bug is fixed. Check it: make scenarios SCN_ARGS=FILE\n");
    return 0;
}

static int decode_cmd(int argc, char **argv)
{
    for (int a = 0; a < argc; a++) {
        uint8_t *data;
        size_t len;
        if (read_input(argv[a], &data, &len))
            return 1;
        fz_program p;
        fz_decode(data, len, &p);
        free(data);
        model_all(&p);
        printf("# %s: %zu step(s), SIGCHLD %s\n", argv[a], p.nsteps,
               p.auto_sigchld ? "automatic" : "held");
        for (size_t i = 0; i < p.nsteps; i++) {
            char line[SCN_LINE_MAX * 2], out[4096];
            fz_format_step(&p.steps[i], line, sizeof line);
            printf("%s%s\n", line, p.steps[i].epilogue ? "   # (epilogue)" : "");
            for (int k = 0; k < SCN_NKINDS; k++) {
                fz_format_outcome(&outcomes[k][i], out, sizeof out);
                if (out[0])
                    printf("  # %s:\n%s", scn_kind_name(k), out);
            }
        }
    }
    return 0;
}

static int encode_cmd(const char *scn, const char *out)
{
    scn_scenario sc;
    char err[512];
    if (scn_parse_file(scn, &sc, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fz_program p;
    size_t kept = fz_from_scenario(&sc, &p);
    scn_free(&sc);
    if (!kept) {
        fprintf(stderr, "%s: nothing the fuzzer can run\n", scn);
        return 2;
    }
    uint8_t buf[1024];
    size_t n = fz_encode(&p, buf, sizeof buf);
    if (!n || n > sizeof buf) {
        fprintf(stderr, "%s: cannot encode\n", scn);
        return 1;
    }
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) {
        fprintf(stderr, "%s: %s\n", out, strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "to-scenario") == 0)
        return to_scenario(argv[2], argc > 3 ? argv[3] : "fuzz-finding");
    if (argc >= 3 && strcmp(argv[1], "decode") == 0)
        return decode_cmd(argc - 2, argv + 2);
    if (argc == 4 && strcmp(argv[1], "encode") == 0)
        return encode_cmd(argv[2], argv[3]);
    fprintf(stderr, "usage: %s to-scenario INPUT [NAME] | decode INPUT... | encode SCENARIO OUTPUT\n",
            argv[0]);
    return 2;
}
