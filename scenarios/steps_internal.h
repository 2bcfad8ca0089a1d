/*
 * steps_internal.h — what the parser (steps.c) shares with the file reader
 * (steps_file.c); not part of the scenario vocabulary (steps.h).
 */
#ifndef EVPOL_SCENARIO_STEPS_INTERNAL_H
#define EVPOL_SCENARIO_STEPS_INTERNAL_H

#include "steps.h"

/* Writes the message to `err` (if any) and returns -1, for `return scn_fail(...)`. */
int scn_fail(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Strict decimal integer in [lo, hi]. */
bool scn_parse_int(const char *s, long lo, long hi, int *out);

/* The kinds named by the words of `s` (split at any of `seps`; "all" names
 * every kind) as a mask, or 0 when a word names no kind. Cuts `s` up. */
unsigned scn_kind_words(char *s, const char *seps);

#endif
