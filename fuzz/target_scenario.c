/*
 * target_scenario.c — the scenario-file parser (scenarios/steps.c).
 *
 * Any text either parses, or fails with a message that says where
 * ("origin:LINE: ..." or "origin: ..."); never a crash, a leak (libFuzzer's
 * LeakSanitizer checks every input) or a silent half-result. What parses
 * must survive a round trip: writing the scenario in canonical form and
 * parsing that gives the same scenario, and formatting each step then
 * parsing the line gives the same step (steps.h promises both). Single
 * step lines are fed to scn_parse_step too, and every step that parses is
 * valid (scn_step_validate).
 */
#include "steps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *text, const char *detail)
    __attribute__((noreturn));
static void fail(const char *what, const char *text, const char *detail)
{
    fprintf(stderr, "\n==== evpol fuzz (scenario): %s ====\n%s\n--- input ---\n%s\n-------------\n",
            what, detail ? detail : "", text);
    abort();
}

static bool steps_equal(const scn_step *a, const scn_step *b)
{
    scn_step x = *a, y = *b;
    x.line = y.line = 0; /* where a step was read is not part of it */
    return scn_step_equal(&x, &y);
}

static void check_step_roundtrip(const scn_step *s, const char *text)
{
    char err[512], line[SCN_LINE_MAX * 2];
    if (scn_step_validate(s, err, sizeof err) != 0)
        fail("a parsed step is not valid", text, err);
    int n = scn_format_step(s, line, sizeof line);
    if (n < 0 || (size_t)n >= sizeof line)
        fail("a step does not format", text, NULL);
    scn_step back;
    if (scn_parse_step(line, &back, err, sizeof err) != 0) {
        char d[3 * SCN_LINE_MAX + 600];
        snprintf(d, sizeof d, "canonical line \"%s\" does not parse: %s", line, err);
        fail("format/parse round trip", text, d);
    }
    if (!steps_equal(s, &back)) {
        char d[3 * SCN_LINE_MAX + 600];
        snprintf(d, sizeof d, "canonical line \"%s\" parses to a different step", line);
        fail("format/parse round trip", text, d);
    }
}

static void check_error(const char *err, const char *text, const char *origin)
{
    if (!err[0])
        fail("parse failed without a message", text, NULL);
    if (strncmp(err, origin, strlen(origin)) != 0 || err[strlen(origin)] != ':')
        fail("parse error does not name its origin", text, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    /* The whole text as a scenario file. Embedded NUL bytes end the text
     * seen by the parser (scn_parse_file rejects them; the text API takes
     * a C string). */
    char err[1024] = "";
    scn_scenario sc;
    if (scn_parse_text(text, "fuzz.scn", &sc, err, sizeof err) == 0) {
        for (size_t i = 0; i < sc.nsteps; i++)
            check_step_roundtrip(&sc.steps[i], text);
        /* canonical form, parsed again, is the same scenario */
        char *out = NULL;
        size_t outlen = 0;
        FILE *f = open_memstream(&out, &outlen);
        if (!f) {
            scn_free(&sc);
            free(text);
            return 0;
        }
        if (scn_write(&sc, f) != 0)
            fail("scn_write failed", text, NULL);
        fclose(f);
        scn_scenario again;
        char err2[1024] = "";
        if (scn_parse_text(out, "canonical.scn", &again, err2, sizeof err2) != 0) {
            char d[2048];
            snprintf(d, sizeof d, "%s\n--- canonical form ---\n%s", err2, out);
            fail("the canonical form does not parse", text, d);
        }
        if (again.nsteps != sc.nsteps || strcmp(again.name, sc.name) != 0 ||
            scn_kinds(&again) != scn_kinds(&sc) || again.timeout != sc.timeout)
            fail("the canonical form parses to a different scenario", text, out);
        for (size_t i = 0; i < sc.nsteps; i++)
            if (!steps_equal(&sc.steps[i], &again.steps[i]))
                fail("the canonical form parses to a different step", text, out);
        scn_free(&again);
        free(out);
        scn_free(&sc);
    } else {
        check_error(err, text, "fuzz.scn");
    }

    /* Each line as a single step. */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        scn_step st;
        char e[512] = "";
        if (scn_parse_step(line, &st, e, sizeof e) == 0)
            check_step_roundtrip(&st, line);
        else if (!e[0])
            fail("scn_parse_step failed without a message", line, NULL);
    }
    free(text);
    return 0;
}
