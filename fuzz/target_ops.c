/*
 * target_ops.c — the watchers against the reference model.
 *
 * The input decodes into a program of scenario steps (program.h); the
 * program runs on the fake kernel against one of the five watchers, the
 * one its first byte picks (fakeexec.h), and, step by step, against the
 * model (model.h) of that watcher. Each watcher is compared with its model
 * only, never with another watcher, so running one per input loses no
 * check and costs a fifth: the fuzzer learns which byte reaches which
 * watcher's code as it learns every other byte. Any
 * difference in a call's result, in the callbacks (child, returncode,
 * handler, loop, thread), in the warnings or in the SIGCHLD disposition
 * aborts after printing the program with what was expected and what
 * happened at every step; so does anything left behind after close.
 *
 * Environment: EVPOL_FUZZ_KINDS=safe,fast restricts the watchers the
 * input picks from; EVPOL_FUZZ_ALL_KINDS=1 runs every input on each of
 * them instead (the corpus replay: every committed input on every
 * watcher); EVPOL_FUZZ_TRACE=1 prints the trace of every run, also without
 * a finding.
 */
#include "fakeexec.h"
#include "model.h"
#include "program.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned kinds_selected(void)
{
    static unsigned mask;
    if (mask)
        return mask;
    const char *env = getenv("EVPOL_FUZZ_KINDS");
    if (env && *env) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", env);
        char *save = NULL;
        for (char *w = strtok_r(buf, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
            int k = scn_kind_index(w);
            if (k >= 0)
                mask |= 1u << k;
        }
    }
    if (!mask)
        mask = SCN_KINDS_ALL;
    return mask;
}

static fz_program prog;
static fz_outcome expected[FZ_MAX_STEPS], actual[FZ_MAX_STEPS];

static void print_trace(int kind, size_t upto, const char *why, const char *title)
{
    static char buf[8192];
    fprintf(stderr,
            "\n==== evpol fuzz (ops): %s watcher ====\n"
            "%s\n"
            "program (%s SIGCHLD; '# fuzz:' lines are fake-kernel directives):\n",
            fz_kind_name(kind),
            title, prog.auto_sigchld ? "automatic" : "held until '# fuzz: sigchld'");
    for (size_t i = 0; i <= upto && i < prog.nsteps; i++) {
        fz_format_step(&prog.steps[i], buf, sizeof buf);
        fprintf(stderr, "  [%2zu] %s%s%s\n", i, buf, prog.steps[i].epilogue ? "   (epilogue)" : "",
                i == upto && why ? "   <== HERE" : "");
        fz_format_outcome(&expected[i], buf, sizeof buf);
        if (buf[0])
            fprintf(stderr, "    expected:\n%s", buf);
        fz_format_outcome(&actual[i], buf, sizeof buf);
        if (buf[0])
            fprintf(stderr, "    actual:\n%s", buf);
    }
    if (why)
        fprintf(stderr, "difference:\n%s", why);
    fprintf(stderr, "watcher under test: %s\n", fz_kind_name(kind));
}

static void run_kind(int kind)
{
    static mdl m;
    char err[4096];
    mdl_init(&m, kind, prog.auto_sigchld);
    if (fx_begin(kind, prog.auto_sigchld, err, sizeof err) != 0) {
        fprintf(stderr, "evpol fuzz (ops): cannot set up %s: %s\n", fz_kind_name(kind), err);
        abort();
    }
    for (size_t i = 0; i < prog.nsteps; i++) {
        mdl_step(&m, &prog.steps[i], &expected[i]);
        fx_step(&prog.steps[i], &actual[i]);
        if (!fz_compare(&expected[i], &actual[i], true, err, sizeof err)) {
            print_trace(kind, i, err, "THE LIBRARY DIFFERS FROM THE MODEL");
            abort();
        }
    }
    if (getenv("EVPOL_FUZZ_TRACE"))
        print_trace(kind, prog.nsteps ? prog.nsteps - 1 : 0, NULL, "(EVPOL_FUZZ_TRACE: no difference)");
    if (fx_end(err, sizeof err) != 0) {
        print_trace(kind, prog.nsteps ? prog.nsteps - 1 : 0, NULL,
                    "after the program, the watcher left something behind:");
        fprintf(stderr, "%s", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int all = -1;
    if (all < 0) {
        const char *env = getenv("EVPOL_FUZZ_ALL_KINDS");
        all = env && *env && strcmp(env, "0") != 0;
    }
    fz_decode(data, size, &prog);
    unsigned mask = kinds_selected();
    int kinds[SCN_NKINDS], n = 0;
    for (int k = 0; k < SCN_NKINDS; k++)
        if (mask & (1u << k))
            kinds[n++] = k;
    if (all)
        for (int i = 0; i < n; i++)
            run_kind(kinds[i]);
    else
        run_kind(kinds[prog.pick % (unsigned)n]);
    return 0;
}
