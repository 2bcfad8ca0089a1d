/*
 * alloc_count.h — counting the memory blocks evpol and libevent hold, for
 * the leak check every conformance program and scenario run ends with.
 *
 * A leaked block shows no fd, thread or zombie: only counting finds it
 * without a sanitizer build. evpol's blocks are counted through its seam
 * (evpol_sys.calloc/free), libevent's through event_set_mem_functions. The
 * counting functions pass through to "inner" functions (the C library's,
 * or a test's own: a fake kernel's table, a fault injector), so a test can
 * swap those without leaving the count.
 */
#ifndef EVPOL_ALLOC_COUNT_H
#define EVPOL_ALLOC_COUNT_H

#include <evpol.h>

#include <stddef.h>

/* Install the counting libevent allocator: before this process's first
 * libevent allocation that is ever freed (blocks made earlier with the C
 * library's malloc stay valid, the inner functions being malloc's). */
void alloc_count_start_libevent(void);
/* Make libevent's counted allocations go to these (NULL: the C library's). */
void alloc_count_libevent_inner(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                void (*free_fn)(void *));

/* Turn `t` (a complete seam table) into its counting copy: its calloc and
 * free become the inner functions of the counting ones, which take their
 * place. Call alloc_count_use_inner(t) once that table is installed. */
evpol_sys alloc_count_seam(const evpol_sys *t);
void alloc_count_use_inner(const evpol_sys *t);

/* Blocks outstanding now. */
long alloc_count_evpol(void);
long alloc_count_libevent(void);

#endif
