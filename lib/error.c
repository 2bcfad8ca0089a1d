/*
 * error.c — error values, the log hook, and thread identity.
 *
 * Errors are returned, never stored in global state (ERR-1). Log lines go
 * through one replaceable hook (ERR-2) guarded by a read-write lock, so that
 * once evpol_set_log_hook returns the old hook is neither running nor called
 * again: tests can free what their hook writes into.
 */
#include "evpol-internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *evpol_strerror(int code)
{
    switch (code) {
    case EVPOL_OK: return "success";
    case EVPOL_ERUNTIME: return "runtime error";
    case EVPOL_ETYPE: return "type error";
    case EVPOL_EINVAL: return "invalid argument";
    case EVPOL_ENOMEM: return "out of memory";
    case EVPOL_ESYSTEM: return "system call failed";
    case EVPOL_ENOTSUP: return "not supported";
    default: return "unknown error";
    }
}

static void fill_error(evpol_error *err, int code, int errnum, const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->code = code;
    err->sys_errno = errnum;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

int evpol__fail(evpol_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fill_error(err, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int evpol__fail_sys(evpol_error *err, int errnum, const char *fmt, ...)
{
    if (!err)
        return EVPOL_ESYSTEM;
    va_list ap;
    va_start(ap, fmt);
    fill_error(err, EVPOL_ESYSTEM, errnum, fmt, ap);
    va_end(ap);
    size_t len = strlen(err->message);
    char ebuf[96];
    /* GNU strerror_r returns the message, possibly not in ebuf. */
    const char *msg = strerror_r(errnum, ebuf, sizeof ebuf);
    snprintf(err->message + len, sizeof err->message - len, ": %s", msg);
    return EVPOL_ESYSTEM;
}

/* ---- logging ---- */

static pthread_rwlock_t log_lock = PTHREAD_RWLOCK_INITIALIZER;
static evpol_log_fn log_fn;
static void *log_arg;
static atomic_int log_min_level = EVPOL_LOG_DEBUG;

/* Indexed by the enums' values, which evpol.h fixes. */
static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const char *const category_names[] = {"runtime", "deprecation", "resource", "debug"};

static const char *level_name(evpol_log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

static const char *category_name(evpol_log_category cat)
{
    return (unsigned)cat < 4 ? category_names[cat] : "?";
}

void evpol_set_log_hook(evpol_log_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&log_lock);
    log_fn = fn;
    log_arg = arg;
    pthread_rwlock_unlock(&log_lock);
}

void evpol_set_log_level(evpol_log_level min_level)
{
    if (min_level < EVPOL_LOG_DEBUG)
        min_level = EVPOL_LOG_DEBUG;
    if (min_level > EVPOL_LOG_ERROR)
        min_level = EVPOL_LOG_ERROR;
    atomic_store(&log_min_level, (int)min_level);
}

static void vlog(evpol_log_level level, evpol_log_category cat, const char *fmt, va_list ap)
{
    if ((int)level < atomic_load(&log_min_level))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pthread_rwlock_rdlock(&log_lock);
    if (log_fn)
        log_fn(level, cat, msg, log_arg);
    else
        fprintf(stderr, "evpol: %s: %s: %s\n", level_name(level), category_name(cat), msg);
    pthread_rwlock_unlock(&log_lock);
}

void evpol__log(evpol_log_level level, evpol_log_category cat, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, cat, fmt, ap);
    va_end(ap);
}

void evpol__log_debug(evpol_loop *loop, const char *fmt, ...)
{
    if (!loop || evpol_loop_get_debug(loop) != 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(EVPOL_LOG_DEBUG, EVPOL_LOG_CAT_DEBUG, fmt, ap);
    va_end(ap);
}

_Thread_local bool evpol__tls_quiet_deprecation;

void evpol__deprecated(const char *what)
{
    if (evpol__tls_quiet_deprecation)
        return;
    evpol__log(EVPOL_LOG_WARNING, EVPOL_LOG_CAT_DEPRECATION,
               "%s is deprecated (as in Python 3.12)", what);
}

/* ---- threads ---- */

bool evpol__is_main_thread(void)
{
    return (pid_t)syscall(SYS_gettid) == getpid();
}

void evpol__thread_name(char *buf, size_t size)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    if (evpol__is_main_thread()) {
        snprintf(buf, size, "MainThread");
        return;
    }
    char name[16];
    if (pthread_getname_np(pthread_self(), name, sizeof name) == 0 && name[0])
        snprintf(buf, size, "%s", name);
    else
        snprintf(buf, size, "Thread-%ld", (long)syscall(SYS_gettid));
}
