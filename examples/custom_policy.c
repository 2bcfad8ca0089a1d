/*
 * custom_policy.c — the README's example, built and run by `make check`.
 *
 * A custom policy overrides get_event_loop, counts the calls and delegates
 * to the default implementation ("super"). A second thread runs its own
 * loop and spawns /bin/echo there; the exit callback runs on that thread.
 * The program exits non-zero if anything is not as described.
 */
#include <evpol.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int lookups;

/* Override: count, then call super. */
static int counting_get_event_loop(evpol_policy *self, evpol_loop **out, evpol_error *err)
{
    lookups++;
    return evpol_policy_default_get_event_loop(self, out, err);
}

struct worker {
    pthread_t thread;
    int returncode;
    int exited_on_worker; /* the callback ran on the worker thread */
};

static void on_exit_cb(pid_t pid, int returncode, void *arg)
{
    struct worker *w = arg;
    (void)pid;
    w->returncode = returncode;
    w->exited_on_worker = pthread_equal(pthread_self(), w->thread);
    evpol_loop *loop;
    if (evpol_get_running_loop(&loop, NULL) == 0)
        evpol_loop_stop(loop, NULL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    evpol_error err;
    evpol_loop *loop;
    /* A non-main thread has no loop until it makes one (POL-11). */
    if (evpol_new_event_loop(&loop, &err) != 0 || evpol_set_event_loop(loop, &err) != 0) {
        fprintf(stderr, "worker: %s\n", err.message);
        return NULL;
    }
    char *argv[] = {"echo", "hello from a child of the worker thread", NULL};
    evpol_spawn_options opts = {
        .file = "echo",
        .argv = argv,
        .stdio = {EVPOL_STDIO_DEVNULL, EVPOL_STDIO_INHERIT, EVPOL_STDIO_INHERIT},
        .on_exit = on_exit_cb,
        .arg = w,
    };
    evpol_spawn_result res;
    if (evpol_loop_spawn(loop, &opts, &res, &err) != 0 || evpol_loop_run(loop, &err) != 0)
        fprintf(stderr, "worker: %s\n", err.message);
    evpol_set_event_loop(NULL, NULL);
    evpol_loop_unref(loop);
    return NULL;
}

int main(void)
{
    evpol_error err;
    evpol_policy *policy;
    evpol_policy_methods methods = {
        .size = sizeof methods,
        .get_event_loop = counting_get_event_loop, /* everything else: the default */
    };
    if (evpol_policy_new_custom(&methods, NULL, &policy, &err) != 0 ||
        evpol_set_event_loop_policy(policy, &err) != 0) {
        fprintf(stderr, "policy: %s\n", err.message);
        return 1;
    }
    evpol_policy_unref(policy); /* the process-wide slot keeps it */

    /* The main thread's first lookup creates its loop (with a deprecation
     * warning, as asyncio does); the second finds the same one. */
    evpol_set_log_level(EVPOL_LOG_ERROR);
    evpol_loop *a, *b;
    if (evpol_get_event_loop(&a, &err) != 0 || evpol_get_event_loop(&b, &err) != 0) {
        fprintf(stderr, "main: %s\n", err.message);
        return 1;
    }

    struct worker w = {.returncode = -1000};
    pthread_create(&w.thread, NULL, worker_main, &w);
    pthread_join(w.thread, NULL);

    evpol_set_event_loop_policy(NULL, NULL);
    printf("lookups through the override: %d, same loop: %s, child returncode: %d, "
           "callback on the worker thread: %s\n",
           lookups, a == b ? "yes" : "no", w.returncode, w.exited_on_worker ? "yes" : "no");
    return (lookups == 2 && a == b && w.returncode == 0 && w.exited_on_worker) ? 0 : 1;
}
