/*
 * childtab.c — pid -> registered child, a chained hash table.
 *
 * Watchers keep one per watcher under their own lock. Lookups are O(1) on
 * average; the table doubles when it holds more entries than buckets.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>

#define CHILDTAB_MIN_BUCKETS 64

static size_t bucket_of(pid_t pid, size_t nbuckets)
{
    /* Fibonacci hashing spreads sequential pids over the buckets. */
    uint64_t h = (uint64_t)(uint32_t)pid * UINT64_C(11400714819323198485);
    return (size_t)(h >> 32) & (nbuckets - 1);
}

int evpol__childtab_init(evpol__childtab *t)
{
    t->buckets = evpol__sys.calloc(CHILDTAB_MIN_BUCKETS, sizeof *t->buckets);
    if (!t->buckets)
        return EVPOL_ENOMEM;
    t->nbuckets = CHILDTAB_MIN_BUCKETS;
    t->count = 0;
    return 0;
}

void evpol__childtab_fini(evpol__childtab *t, void (*fn)(evpol__child *c))
{
    if (!t->buckets)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *c = t->buckets[i];
        while (c) {
            evpol__child *next = c->next;
            c->next = NULL;
            if (fn)
                fn(c);
            c = next;
        }
    }
    evpol__sys.free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

evpol__child *evpol__childtab_find(const evpol__childtab *t, pid_t pid)
{
    evpol__child *c = t->buckets ? t->buckets[bucket_of(pid, t->nbuckets)] : NULL;
    while (c && c->pid != pid)
        c = c->next;
    return c;
}

static void grow(evpol__childtab *t)
{
    size_t n = t->nbuckets * 2;
    evpol__child **b = evpol__sys.calloc(n, sizeof *b);
    if (!b)
        return; /* a fuller table is slower, not wrong */
    for (size_t i = 0; i < t->nbuckets; i++) {
        evpol__child *c = t->buckets[i];
        while (c) {
            evpol__child *next = c->next;
            size_t j = bucket_of(c->pid, n);
            c->next = b[j];
            b[j] = c;
            c = next;
        }
    }
    evpol__sys.free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void evpol__childtab_insert(evpol__childtab *t, evpol__child *c)
{
    if (t->count >= t->nbuckets)
        grow(t);
    size_t i = bucket_of(c->pid, t->nbuckets);
    c->next = t->buckets[i];
    t->buckets[i] = c;
    t->count++;
}

evpol__child *evpol__childtab_remove(evpol__childtab *t, pid_t pid)
{
    if (!t->buckets)
        return NULL;
    evpol__child **link = &t->buckets[bucket_of(pid, t->nbuckets)];
    for (; *link; link = &(*link)->next) {
        evpol__child *c = *link;
        if (c->pid == pid) {
            *link = c->next;
            c->next = NULL;
            t->count--;
            return c;
        }
    }
    return NULL;
}

evpol__child *evpol__child_new(pid_t pid, const evpol__handler *h, evpol_loop *loop)
{
    evpol__child *c = evpol__sys.calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pid = pid;
    if (h)
        c->h = *h;
    c->loop = loop ? evpol_loop_ref(loop) : NULL;
    c->fd = -1;
    return c;
}

void evpol__child_free(evpol__child *c)
{
    if (!c)
        return;
    evpol_loop_unref(c->loop);
    evpol__sys.free(c);
}

int evpol__child_disarm(evpol__child *c, evpol_loop **old_loop)
{
    if (!c || !evpol__child_armed(c))
        return 0;
    c->h = (evpol__handler){0};
    *old_loop = c->loop;
    c->loop = NULL;
    return 1;
}

void evpol__childtab_reap_exited(const evpol__childtab *t, size_t *pending, size_t *running)
{
    *pending = *running = 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (const evpol__child *c = t->buckets[i]; c; c = c->next) {
            if (evpol__child_armed(c))
                (*pending)++;
            int status;
            pid_t r;
            do
                r = evpol__sys.waitpid(c->pid, &status, WNOHANG);
            while (r < 0 && errno == EINTR);
            /* Reaped now (no callback after close, CW-8), or gone already. */
            if (r == 0)
                (*running)++;
        }
    }
}

void evpol__warn_closed_with_children(evpol_watcher *w, size_t pending, size_t running)
{
    if (pending || running)
        evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_RESOURCE,
                   "%s %p closed with %zu pending child handler(s), which will not be called; "
                   "%zu child process(es) still running are left to the program",
                   w->ops->name, (void *)w, pending, running);
}
