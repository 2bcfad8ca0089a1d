/*
 * pool.h — the thread pool under the fake kernel's threads.
 *
 * The fuzzers' worlds (fakeexec.h) make every library thread through the
 * fake kernel, and the fake kernel makes them through this pool
 * (fk_set_thread_lower): workers kept for the process, each running one
 * thread function at a time, that still look like new threads to the
 * library (pool.c says how, also under ThreadSanitizer).
 */
#ifndef EVPOL_FUZZ_POOL_H
#define EVPOL_FUZZ_POOL_H

#include <evpol.h>

/* The real system table with thread_create, thread_join and thread_detach
 * taken from the pool; valid for the whole process. */
const evpol_sys *fx_pool_table(void);

#endif
