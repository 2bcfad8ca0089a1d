/*
 * fakeexec.h — run fuzz program steps against a real watcher on the fake
 * kernel, and report what happened in the model's terms (fz_outcome).
 *
 * The world: loops L0 and L1, watcher W0 of the kind under test, fake
 * children (conformance/support/fake_kernel.h). The main thread plays every
 * part: director steps (children, kill, reap, SIGCHLD) run on it outside any
 * loop; actor steps (add, remove, attach, close, ...) run inside L0, as a
 * scenario's main thread running L0 would run them.
 *
 * After each step the executor waits until the watcher has done everything
 * it can do without a new event, never by sleeping, each in the way that
 * watcher can be observed:
 *   Threaded   every thread created through the seam is blocked in the
 *              fake waitpid or has returned (fk_threads_live/_blocked);
 *   MultiLoop  its reaper thread has gone back to poll() on an empty pipe
 *              after the last SIGCHLD we delivered (poll is wrapped);
 *   Safe/Fast  the SIGCHLD handler they put on their loop has run to its
 *              end for the SIGCHLD we delivered (the loop's signal
 *              functions are wrapped);
 *   Pidfd      nothing to wait for: readers run when their loop runs;
 * then it runs every loop until what was posted to it has run (the
 * library's posts to a loop are wrapped and counted, so a loop runs again
 * only when something reached it).
 *
 * The threads the library makes through the seam come from a pool
 * (pool.c says how a reused thread still looks new to the library):
 * the fake kernel makes them through fk_set_thread_lower, and the library
 * gives them back through the seam's thread_join and thread_detach.
 *
 * The wrapping uses the linker: programs that use this file link the
 * library's objects with
 *     -Wl,--wrap=poll -Wl,--wrap=evpol_loop_add_signal_handler
 *     -Wl,--wrap=evpol_loop_remove_signal_handler -Wl,--wrap=evpol__loop_post
 * (FUZZ_WRAP in fuzz/fuzz.mk, fuzz/oss-fuzz/build.sh). Only calls
 * between separately compiled objects are wrapped, so this sees exactly the
 * watchers' calls. If a watcher stops making them (the library changed), the
 * wait's hang guard fires with a message naming the watcher.
 */
#ifndef EVPOL_FUZZ_FAKEEXEC_H
#define EVPOL_FUZZ_FAKEEXEC_H

#include "model.h"
#include "program.h"

#include <evpol.h>
#include <stdbool.h>
#include <stddef.h>

/* Hang guard for each wait (a safety net, never a timing assumption). */
#define FX_HANG_GUARD_MS 10000

/* Set up the world for `kind`. 0, or -1 with a message. */
int fx_begin(int kind, bool auto_sigchld, char *err, size_t size);
/* Run one step, wait as above, and collect its outcome. */
void fx_step(const fz_step *s, fz_outcome *out);
/* Tear the world down and check that the watcher left nothing behind (fds
 * through the seam, pidfds, threads, the real SIGCHLD disposition, stray
 * callbacks). 0 when clean, else -1 with the problems. */
int fx_end(char *problems, size_t size);

/* For the races target: the world's objects while a run is on. */
evpol_watcher *fx_watcher(void);
evpol_loop *fx_loop(int index);
pid_t fx_pid(int child);
int fx_child_of(pid_t pid);
/* Deliver one SIGCHLD and wait for the watcher to finish with it, then run
 * the loops (what fx_step does after a step). Main thread only. */
void fx_sigchld_and_settle(void);
/* Register a fake child created elsewhere as child `c` (main thread). */
void fx_set_pid(int child, pid_t pid);
/* Races: while on, the warnings the model knows are not recorded (their
 * number depends on the interleaving); any other log line still is, and
 * fx_end reports it. */
void fx_quiet(bool on);

#endif
