/*
 * alloc_count.c — see alloc_count.h.
 */
#include "alloc_count.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long evpol_blocks, libevent_blocks;

static void *(*_Atomic inner_calloc)(size_t, size_t) = calloc;
static void (*_Atomic inner_free)(void *) = free;
static void *(*_Atomic inner_malloc)(size_t) = malloc;
static void *(*_Atomic inner_realloc)(void *, size_t) = realloc;
static void (*_Atomic inner_ev_free)(void *) = free;
/* Read with an explicit atomic_load where they are called: GCC compiles a
 * call through an _Atomic function pointer as a plain load, which TSan
 * reports against a test swapping the seam while a Threaded waiter frees. */

/* A block counts while it is held: made by a call that returned it, until
 * the free that takes it back. */
static void *counted(atomic_long *blocks, void *p)
{
    if (p)
        atomic_fetch_add(blocks, 1);
    return p;
}

static void *uncounted(atomic_long *blocks, void *p)
{
    if (p)
        atomic_fetch_sub(blocks, 1);
    return p;
}

static void *counting_calloc(size_t n, size_t size)
{
    return counted(&evpol_blocks, atomic_load(&inner_calloc)(n, size));
}

static void counting_free(void *p)
{
    atomic_load(&inner_free)(uncounted(&evpol_blocks, p));
}

static void *counting_ev_malloc(size_t size)
{
    return counted(&libevent_blocks, atomic_load(&inner_malloc)(size));
}

static void *counting_ev_realloc(void *old, size_t size)
{
    void *p = atomic_load(&inner_realloc)(old, size);
    return old ? p : counted(&libevent_blocks, p);
}

static void counting_ev_free(void *p)
{
    atomic_load(&inner_ev_free)(uncounted(&libevent_blocks, p));
}

void alloc_count_start_libevent(void)
{
    /* By name: the harness defines event_set_mem_functions itself, so that
     * a test's call only changes the inner functions. */
    typedef void (*mem_fn)(void *(*)(size_t), void *(*)(void *, size_t), void (*)(void *));
    mem_fn set = (mem_fn)dlsym(RTLD_NEXT, "event_set_mem_functions");
    if (!set) {
        fprintf(stderr, "alloc_count: event_set_mem_functions not found in libevent: %s\n",
                dlerror());
        _exit(2);
    }
    set(counting_ev_malloc, counting_ev_realloc, counting_ev_free);
}

void alloc_count_libevent_inner(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                void (*free_fn)(void *))
{
    inner_malloc = malloc_fn ? malloc_fn : malloc;
    inner_realloc = realloc_fn ? realloc_fn : realloc;
    inner_ev_free = free_fn ? free_fn : free;
}

evpol_sys alloc_count_seam(const evpol_sys *t)
{
    evpol_sys counting = *t;
    counting.calloc = counting_calloc;
    counting.free = counting_free;
    return counting;
}

void alloc_count_use_inner(const evpol_sys *t)
{
    inner_calloc = t->calloc;
    inner_free = t->free;
}

long alloc_count_evpol(void)
{
    return atomic_load(&evpol_blocks);
}

long alloc_count_libevent(void)
{
    return atomic_load(&libevent_blocks);
}
