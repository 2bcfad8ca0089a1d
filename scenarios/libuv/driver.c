/*
 * libuv/driver.c — the libuv adapter's suite driver: runs scenario files
 * against libuv's uv_spawn, each scenario in its own process (interp.h).
 *
 *   libuv-runner [--reports DIR] [-j N] [--timeout-scale X] [-v] PATH...
 *
 * Results: DIR/scenarios.tsv, watcher "uv". --timeout-scale (or
 * SCN_TIMEOUT_SCALE) multiplies each scenario's time limit, as it does for
 * evpol's runner (scenarios/driver.c).
 */
#include "interp.h"

#include <uv.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the runner: one process per scenario ---- */

static double timeout_scale = 1.0;

typedef struct result {
    char status[8];
    char detail[1500];
    double ms;
} result;

static void run_one(const scn_scenario *sc, result *res)
{
    int p[2];
    double t0 = now_s();
    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(res->status, sizeof res->status, "fail");
        snprintf(res->detail, sizeof res->detail, "pipe2: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(p[0]);
        run_scenario(sc, p[1]);
    }
    close(p[1]);
    double limit = t0 + (sc->timeout ? sc->timeout : 60);
    char buf[8192];
    size_t have = 0;
    int hung = 0;
    for (;;) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int ms = (int)((limit - now_s()) * 1000);
        if (ms <= 0) {
            hung = 1;
            break;
        }
        if (poll(&pf, 1, ms) <= 0)
            continue;
        ssize_t n = read(p[0], buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have >= sizeof buf - 1) /* keep the tail */
            have = 0;
    }
    buf[have] = '\0';
    close(p[0]);
    if (hung)
        kill(-pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    kill(-pid, SIGKILL);
    res->ms = (now_s() - t0) * 1000;
    /* The last report line that is not a step marker. */
    char *last = NULL, *step = NULL;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == 'S')
            step = line + 2;
        else
            last = line;
    }
    if (hung) {
        snprintf(res->status, sizeof res->status, "fail");
        snprintf(res->detail, sizeof res->detail, "hung: killed at step %s", step ? step : "?");
    } else if (!last) {
        snprintf(res->status, sizeof res->status, "fail");
        snprintf(res->detail, sizeof res->detail, "run ended (status 0x%x) at step %s", status,
                 step ? step : "?");
    } else {
        snprintf(res->status, sizeof res->status, "%s",
                 last[0] == 'P' ? "pass" : last[0] == 'N' ? "skip" : "fail");
        snprintf(res->detail, sizeof res->detail, "%s", last + 2);
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    const char *reports = NULL;
    int verbose = 0;
    char *files[1024];
    int nfiles = 0;
    const char *env_scale = getenv("SCN_TIMEOUT_SCALE");
    if (env_scale && atof(env_scale) > 0)
        timeout_scale = atof(env_scale);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reports") == 0 && i + 1 < argc) {
            reports = argv[++i];
        } else if (strcmp(argv[i], "--timeout-scale") == 0 && i + 1 < argc) {
            timeout_scale = atof(argv[++i]);
            if (timeout_scale <= 0) {
                fprintf(stderr, "libuv-runner: --timeout-scale needs a positive number\n");
                return 2;
            }
        } else if (strcmp(argv[i], "-j") == 0 && i + 1 < argc) {
            i++; /* runs are sequential: few scenarios apply */
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else {
            struct stat sb;
            if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
                DIR *d = opendir(argv[i]);
                struct dirent *e;
                int first = nfiles;
                while (d && (e = readdir(d)) && nfiles < 1024) {
                    size_t n = strlen(e->d_name);
                    if (n > 4 && strcmp(e->d_name + n - 4, ".scn") == 0) {
                        char *path = malloc(strlen(argv[i]) + n + 2);
                        if (!path)
                            return 2;
                        sprintf(path, "%s/%s", argv[i], e->d_name);
                        files[nfiles++] = path;
                    }
                }
                if (d)
                    closedir(d);
                qsort(files + first, (size_t)(nfiles - first), sizeof files[0], by_name);
            } else if (nfiles < 1024) {
                files[nfiles++] = argv[i];
            }
        }
    }
    FILE *tsv = NULL;
    if (reports) {
        mkdir(reports, 0777);
        char path[1024];
        snprintf(path, sizeof path, "%s/scenarios.tsv", reports);
        tsv = fopen(path, "we");
        if (!tsv) {
            fprintf(stderr, "libuv-runner: %s: %s\n", path, strerror(errno));
            return 2;
        }
        fprintf(tsv, "scenario\twatcher\tstatus\tduration_ms\tfile\tdetail\n");
    }
    int passed = 0, failed = 0, na = 0;
    double t0 = now_s();
    for (int i = 0; i < nfiles; i++) {
        scn_scenario sc;
        char err[512];
        result res = {{0}, {0}, 0};
        if (scn_parse_file(files[i], &sc, err, sizeof err) != 0) {
            fprintf(stderr, "libuv-runner: %s\n", err);
            failed++;
            continue;
        }
        /* Scaled here, before the fork: the runner's limit and the
         * scenario process's own step limit (interp.c) both read it. */
        sc.timeout = (int)((sc.timeout ? sc.timeout : 60) * timeout_scale + 0.5);
        const char *why = NULL;
        int fatal = 0;
        unsigned kind = kind_as(&sc);
        for (size_t k = 0; k < sc.nsteps && !fatal; k++)
            if (sc.steps[k].kinds & kind) {
                why = not_here(&sc.steps[k], &fatal);
                if (fatal) {
                    char line[256];
                    scn_format_step(&sc.steps[k], line, sizeof line);
                    snprintf(res.status, sizeof res.status, "skip");
                    snprintf(res.detail, sizeof res.detail, "step %zu (line %d) %s: %s", k + 1,
                             sc.steps[k].line, line, why);
                }
            }
        if (fatal) {
            /* n/a: decided from the file, nothing to run */
        } else if (!kind) {
            /* Neither Threaded nor Pidfd: Threaded's except: reason, if any. */
            snprintf(res.status, sizeof res.status, "skip");
            snprintf(res.detail, sizeof res.detail, "%s",
                     sc.except & SCN_KIND_THREADED
                         ? sc.except_reason[0]
                         : "the scenario is only for the signal-based watchers");
        } else {
            fflush(NULL);
            run_one(&sc, &res);
        }
        passed += strcmp(res.status, "pass") == 0;
        failed += strcmp(res.status, "fail") == 0;
        na += strcmp(res.status, "skip") == 0;
        if (strcmp(res.status, "fail") == 0 || verbose)
            printf("%s  %s@uv (%.0f ms)\n      %s\n", strcmp(res.status, "fail") ? res.status
                                                                                 : "FAIL",
                   sc.name, res.ms, res.detail);
        if (tsv) {
            for (char *q = res.detail; *q; q++)
                if (*q == '\t' || *q == '\n')
                    *q = ' ';
            fprintf(tsv, "%s\tuv\t%s\t%.0f\t%s\t%s\n", sc.name, res.status, res.ms, files[i],
                    res.detail);
        }
        scn_free(&sc);
    }
    if (tsv)
        fclose(tsv);
    printf("libuv %s: %d passed, %d failed, %d n/a in %.1f s\n", uv_version_string(), passed,
           failed, na, now_s() - t0);
    return failed ? 1 : 0;
}
