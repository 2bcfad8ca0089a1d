/*
 * libuv/interp.h — what the libuv adapter's suite driver (driver.c) calls in
 * the interpreter (interp.c).
 */
#ifndef EVPOL_SCENARIO_LIBUV_INTERP_H
#define EVPOL_SCENARIO_LIBUV_INTERP_H

#include "steps.h"

/* The watcher libuv stands in for, whose [kinds] steps and except: lines
 * apply to it: Threaded, which like libuv delivers each exit to the loop that
 * spawned it; or, for a scenario Threaded is excluded from, Pidfd, which like
 * libuv reaps inside that loop (a paused loop reaps nothing). 0: neither. */
unsigned kind_as(const scn_scenario *sc);

double now_s(void);

/* Why `st` cannot run on libuv, or NULL when it runs here; *fatal when the
 * scenario as a whole is then n/a rather than the step skipped. */
const char *not_here(const scn_step *st, int *fatal);

/* Runs `sc` in this process and reports on `report_fd`; never returns. */
_Noreturn void run_scenario(const scn_scenario *sc, int report_fd);

#endif
