/*
 * signal_state.h — the signal state the test runners start from.
 *
 * A shell may hand a test runner ignored or blocked signals (nohup ignores
 * SIGHUP, CI systems and `cmd &` ignore SIGINT and SIGQUIT, some ignore
 * SIGPIPE). Ignored dispositions and the mask survive fork and exec, so a
 * child meant to die of SIGHUP would live on, and one that raises a blocked
 * signal would exit normally. The conformance programs (harness.c) and the
 * scenario runner call this once, first, so what they check does not depend
 * on who started them.
 */
#ifndef EVPOL_SIGNAL_STATE_H
#define EVPOL_SIGNAL_STATE_H

/* Every catchable signal to SIG_DFL, no signal blocked in the calling
 * thread. Call it while the process has one thread. */
void signal_state_reset(void);

#endif
