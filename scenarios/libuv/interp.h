/*
 * libuv/interp.h — what the libuv adapter's suite driver (driver.c) calls in
 * the interpreter (interp.c).
 */
#ifndef EVPOL_SCENARIO_LIBUV_INTERP_H
#define EVPOL_SCENARIO_LIBUV_INTERP_H

#include "steps.h"

#define KIND_AS SCN_KIND_THREADED /* which [kinds] steps run: see interp.c */

double now_s(void);

/* Why `st` cannot run on libuv, or NULL when it runs here; *fatal when the
 * scenario as a whole is then n/a rather than the step skipped. */
const char *not_here(const scn_step *st, int *fatal);

/* Runs `sc` in this process and reports on `report_fd`; never returns. */
_Noreturn void run_scenario(const scn_scenario *sc, int report_fd);

#endif
