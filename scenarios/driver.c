/*
 * driver.c — the scenario suite driver: runs scenario files (scenarios/README.md)
 * against the watchers, one scenario process (interp.h) per run.
 *
 *   runner [--reports DIR] [-j N] [--watchers LIST] [--only NAME]
 *          [--timeout-scale X] [-v] PATH...
 *
 * PATH is a .scn file or a directory whose *.scn files are run (not
 * recursively). Each scenario runs once per watcher it applies to, each run
 * in its own process (forked from the runner, its own process group) with a
 * time limit: a hung run is killed and fails with its last step shown, so
 * it never hangs the suite. The runner is a child subreaper, so no stray
 * process of a killed run outlives the suite.
 */
#include "interp.h"

#include "signal_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The suite                                                                */
/* ------------------------------------------------------------------------ */

typedef enum { R_PENDING, R_PASS, R_FAIL, R_SKIP } result;

typedef struct job {
    const scn_scenario *sc;
    int kind; /* bit index */
    result res;
    char *detail; /* failure message or skip reason */
    char *info;   /* "I" lines */
    double start, duration, deadline, timeout;
    pid_t pid;
    int status_fd, err_fd;
    char *sbuf; /* status bytes not yet split into lines */
    size_t slen;
    char *ebuf; /* the tail of stderr */
    size_t elen;
    char *fail_lines;
    int last_step;
    char phase[128];
    bool passed_line, exited, timed_out;
    int wstatus;
} job;

static double timeout_scale = 1.0;
static bool verbose;
static int stderr_lines = 40;

static void append(char **dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(char **dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *add = NULL;
    if (vasprintf(&add, fmt, ap) < 0)
        add = NULL;
    va_end(ap);
    if (!add)
        return;
    size_t have = *dst ? strlen(*dst) : 0;
    char *n = realloc(*dst, have + strlen(add) + 1);
    if (n) {
        strcpy(n + have, add);
        *dst = n;
    }
    free(add);
}

static bool has_soak(const scn_scenario *sc, int *seconds)
{
    for (size_t i = 0; i < sc->nsteps; i++)
        if (sc->steps[i].op == SCN_OP_SOAK) {
            *seconds = soak_seconds(&sc->steps[i]);
            return true;
        }
    return false;
}

static void start_job(job *j)
{
    int sp[2], ep[2];
    if (pipe2(sp, O_CLOEXEC) != 0 || pipe2(ep, O_CLOEXEC) != 0) {
        perror("runner: pipe2");
        exit(2);
    }
    double t = (j->sc->timeout ? j->sc->timeout : DEFAULT_TIMEOUT_S) * timeout_scale;
    int soak = 0;
    if (has_soak(j->sc, &soak))
        t += soak;
    j->timeout = t;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("runner: fork");
        exit(2);
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(sp[0]);
        close(ep[0]);
        dup2(ep[1], 2);
        close(ep[1]);
        /* Keep only 0-2 and our status pipe, moved to 3: other jobs' pipes
         * must not leak into this run (nor count as its fds). */
        if (sp[1] != 3) {
            dup2(sp[1], 3);
            close(sp[1]);
        }
        fcntl(3, F_SETFD, FD_CLOEXEC);
        close_range(4, ~0u, 0);
        scenario_process(j->sc, j->kind, 3, t);
    }
    setpgid(pid, pid); /* also here, so that a kill never misses the group */
    close(sp[1]);
    close(ep[1]);
    j->pid = pid;
    j->status_fd = sp[0];
    j->err_fd = ep[0];
    j->start = now_s();
    j->deadline = j->start + t;
    j->last_step = -1;
}

static void handle_status_line(job *j, char *line)
{
    if (line[0] == 'S' && line[1] == ' ') {
        if (line[2] >= '0' && line[2] <= '9')
            j->last_step = atoi(line + 2), j->phase[0] = '\0';
        else
            snprintf(j->phase, sizeof j->phase, "%s", line + 2);
    } else if (line[0] == 'F' && line[1] == ' ') {
        append(&j->fail_lines, "%s\n", line + 2);
    } else if (line[0] == 'I' && line[1] == ' ') {
        append(&j->info, "%s\n", line + 2);
    } else if (line[0] == 'P') {
        j->passed_line = true;
    }
}

static bool drain(job *j, int *fd, bool is_status)
{
    char buf[8192];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return false;
    }
    char **b = is_status ? &j->sbuf : &j->ebuf;
    size_t *len = is_status ? &j->slen : &j->elen;
    char *nb = realloc(*b, *len + (size_t)n + 1);
    if (!nb)
        return true;
    memcpy(nb + *len, buf, (size_t)n);
    *len += (size_t)n;
    nb[*len] = '\0';
    *b = nb;
    if (is_status) {
        char *p = *b, *nl;
        while ((nl = memchr(p, '\n', *len - (size_t)(p - *b)))) {
            *nl = '\0';
            handle_status_line(j, p);
            p = nl + 1;
        }
        size_t rest = *len - (size_t)(p - *b);
        memmove(*b, p, rest);
        *len = rest;
    } else if (*len > 65536) {
        /* Keep the tail: sanitizer reports end with their summary. */
        memmove(*b, *b + *len - 65536, 65536);
        *len = 65536;
        (*b)[*len] = '\0';
    }
    return true;
}

static const char *step_line(const job *j, char *buf, size_t size)
{
    if (j->phase[0])
        snprintf(buf, size, "%s", j->phase);
    else if (j->last_step >= 0 && (size_t)j->last_step < j->sc->nsteps) {
        char line[SCN_LINE_MAX * 2];
        scn_format_step(&j->sc->steps[j->last_step], line, sizeof line);
        snprintf(buf, size, "step %d (line %d): %s", j->last_step + 1,
                 j->sc->steps[j->last_step].line, line);
    } else {
        snprintf(buf, size, "setup, before the first step");
    }
    return buf;
}

static bool sanitizer_report(const char *err)
{
    return err && (strstr(err, "ERROR: AddressSanitizer") || strstr(err, "ERROR: LeakSanitizer") ||
                   strstr(err, "WARNING: ThreadSanitizer") || strstr(err, "runtime error:") ||
                   strstr(err, "ERROR: ThreadSanitizer"));
}

static void finish_job(job *j)
{
    j->duration = now_s() - j->start;
    char where[SCN_LINE_MAX * 2 + 64];
    bool ok = j->passed_line && !j->timed_out && WIFEXITED(j->wstatus) &&
              WEXITSTATUS(j->wstatus) == 0 && !sanitizer_report(j->ebuf);
    j->res = ok ? R_PASS : R_FAIL;
    if (!ok) {
        if (j->fail_lines)
            append(&j->detail, "%s", j->fail_lines);
        if (j->timed_out)
            append(&j->detail, "hung: killed after %.0f s at %s\n", j->timeout,
                   step_line(j, where, sizeof where));
        else if (WIFSIGNALED(j->wstatus))
            append(&j->detail, "crashed with signal %d (%s) at %s\n", WTERMSIG(j->wstatus),
                   strsignal(WTERMSIG(j->wstatus)), step_line(j, where, sizeof where));
        else if (!j->fail_lines && (!WIFEXITED(j->wstatus) || WEXITSTATUS(j->wstatus) != 0))
            append(&j->detail, "exited with status %d at %s\n",
                   WIFEXITED(j->wstatus) ? WEXITSTATUS(j->wstatus) : -1,
                   step_line(j, where, sizeof where));
        else if (!j->fail_lines && !j->passed_line)
            append(&j->detail, "ended without a result at %s\n", step_line(j, where, sizeof where));
        if (j->ebuf && j->elen) {
            /* The last lines of stderr. */
            const char *p = j->ebuf + j->elen;
            int lines = 0;
            while (p > j->ebuf && lines < stderr_lines + 1)
                if (*--p == '\n')
                    lines++;
            append(&j->detail, "stderr (tail):\n%s%s", p == j->ebuf ? "" : "  ...",
                   p == j->ebuf ? p : p);
            if (j->ebuf[j->elen - 1] != '\n')
                append(&j->detail, "\n");
        }
    }
}

static void print_job(const job *j)
{
    const char *tag = j->res == R_PASS ? "PASS" : j->res == R_FAIL ? "FAIL" : "SKIP";
    if (j->res == R_SKIP) {
        if (verbose)
            printf("SKIP  %s@%s -- %s\n", j->sc->name, scn_kind_name(j->kind), j->detail);
        return;
    }
    printf("%s  %s@%s (%.0f ms)\n", tag, j->sc->name, scn_kind_name(j->kind), j->duration * 1000);
    if (j->info) {
        const char *p = j->info;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            printf("      %.*s\n", n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    if (j->res == R_FAIL && j->detail) {
        const char *p = j->detail;
        while (*p) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            printf("      %.*s\n", n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    fflush(stdout);
}

static int run_jobs(job *jobs, int njobs, int parallel)
{
    int next = 0, running = 0, done = 0;
    while (done < njobs) {
        while (next < njobs && running < parallel) {
            job *j = &jobs[next++];
            if (j->res == R_SKIP) {
                print_job(j);
                done++;
                continue;
            }
            start_job(j);
            running++;
        }
        struct pollfd pfd[64];
        job *owner[64];
        bool is_status[64];
        int n = 0;
        double soonest = now_s() + 0.2;
        for (int i = 0; i < next; i++) {
            job *j = &jobs[i];
            if (j->res != R_PENDING || j->pid <= 0)
                continue;
            if (j->deadline < soonest)
                soonest = j->deadline;
            if (j->status_fd >= 0 && n < 64) {
                pfd[n] = (struct pollfd){j->status_fd, POLLIN, 0};
                owner[n] = j;
                is_status[n++] = true;
            }
            if (j->err_fd >= 0 && n < 64) {
                pfd[n] = (struct pollfd){j->err_fd, POLLIN, 0};
                owner[n] = j;
                is_status[n++] = false;
            }
        }
        int ms = (int)((soonest - now_s()) * 1000);
        if (ms < 0)
            ms = 0;
        if (ms > 200)
            ms = 200;
        if (n)
            poll(pfd, (nfds_t)n, ms);
        else
            sleep_ms(ms > 5 ? 5 : ms);
        for (int i = 0; i < n; i++)
            if (pfd[i].revents)
                drain(owner[i], is_status[i] ? &owner[i]->status_fd : &owner[i]->err_fd,
                      is_status[i]);
        /* Reap: our jobs, and orphans handed to us as subreaper. */
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p <= 0)
                break;
            for (int i = 0; i < next; i++)
                if (jobs[i].pid == p && !jobs[i].exited) {
                    jobs[i].exited = true;
                    jobs[i].wstatus = st;
                    /* Whatever the run left in its group goes with it. */
                    kill(-p, SIGKILL);
                }
        }
        double now = now_s();
        for (int i = 0; i < next; i++) {
            job *j = &jobs[i];
            if (j->res != R_PENDING || j->pid <= 0)
                continue;
            if (!j->exited && now >= j->deadline && !j->timed_out) {
                j->timed_out = true;
                kill(-j->pid, SIGKILL);
                kill(j->pid, SIGKILL);
                j->deadline = now + 5; /* grace for the pipes to close */
            }
            /* Grandchildren may hold the pipes after the run died: give
             * them a moment, then stop listening. */
            if (j->exited && (j->status_fd >= 0 || j->err_fd >= 0) && now >= j->deadline) {
                if (j->status_fd >= 0)
                    close(j->status_fd), j->status_fd = -1;
                if (j->err_fd >= 0)
                    close(j->err_fd), j->err_fd = -1;
            }
            if (j->exited && j->status_fd < 0 && j->err_fd < 0) {
                finish_job(j);
                print_job(j);
                running--;
                done++;
            } else if (j->exited && j->deadline > now + 5) {
                j->deadline = now + 5;
            }
        }
    }
    return 0;
}

/* ---- reports ---- */

static void tsv_field(FILE *f, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++)
        fputc(*p == '\t' || *p == '\n' || *p == '\r' ? ' ' : *p, f);
}

static const char *first_line(const char *s, char *buf, size_t size)
{
    if (!s)
        return "";
    size_t n = strcspn(s, "\n");
    if (n >= size)
        n = size - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

static void md_cell(FILE *f, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '|')
            fputs("\\|", f);
        else if (*p == '\n')
            fputc(' ', f);
        else
            fputc(*p, f);
    }
}

static int write_reports(const char *dir, job *jobs, int njobs, int passed, int failed,
                         int skipped, double total_s)
{
    char path[PATH_MAX];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/scenarios.tsv", dir);
    FILE *f = fopen(path, "we");
    if (!f) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "scenario\twatcher\tstatus\tduration_ms\tfile\tdetail\n");
    for (int i = 0; i < njobs; i++) {
        job *j = &jobs[i];
        char fl[512];
        const char *st = j->res == R_PASS ? "pass" : j->res == R_FAIL ? "fail" : "skip";
        fprintf(f, "%s\t%s\t%s\t%.0f\t", j->sc->name, scn_kind_name(j->kind), st,
                j->duration * 1000);
        tsv_field(f, j->sc->origin);
        fputc('\t', f);
        tsv_field(f, j->res == R_PASS ? (j->info ? first_line(j->info, fl, sizeof fl) : "")
                                      : first_line(j->detail, fl, sizeof fl));
        fputc('\n', f);
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/scenarios.md", dir);
    f = fopen(path, "we");
    if (!f) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# Scenario suite\n\n");
    fprintf(f, "Stories run end to end with real children, threads and signals "
               "(scenarios/README.md). Each scenario runs once per watcher it applies to, "
               "in its own process, with leak checks after it.\n\n");
    fprintf(f, "**%d passed, %d failed**, %d not applicable; %.1f s in all%s.\n\n", passed, failed,
            skipped, total_s, SANITIZED ? " (sanitizer build)" : "");
    fprintf(f, "| scenario | watcher | status | duration | note |\n");
    fprintf(f, "|---|---|---|---:|---|\n");
    for (int i = 0; i < njobs; i++) {
        job *j = &jobs[i];
        char fl[512];
        const char *st = j->res == R_PASS ? "pass" : j->res == R_FAIL ? "**FAIL**" : "n/a";
        fprintf(f, "| %s | %s | %s | ", j->sc->name, scn_kind_name(j->kind), st);
        if (j->res == R_SKIP)
            fprintf(f, " | ");
        else
            fprintf(f, "%.0f ms | ", j->duration * 1000);
        md_cell(f, j->res == R_PASS ? (j->info ? first_line(j->info, fl, sizeof fl) : "")
                                    : first_line(j->detail, fl, sizeof fl));
        fprintf(f, " |\n");
    }
    if (failed) {
        fprintf(f, "\n## Failures\n");
        for (int i = 0; i < njobs; i++) {
            job *j = &jobs[i];
            if (j->res != R_FAIL)
                continue;
            fprintf(f, "\n### %s@%s\n\n%s\n\n```\n%s```\n", j->sc->name, scn_kind_name(j->kind),
                    j->sc->origin, j->detail ? j->detail : "");
        }
    }
    fprintf(f, "\n## Scenarios\n\n");
    const scn_scenario *prev = NULL;
    for (int i = 0; i < njobs; i++) {
        const scn_scenario *sc = jobs[i].sc;
        if (sc == prev)
            continue;
        prev = sc;
        fprintf(f, "- **%s** (`%s`): ", sc->name, sc->origin);
        md_cell(f, sc->description);
        if (sc->clauses[0]) {
            fprintf(f, " Clauses: ");
            md_cell(f, sc->clauses);
            fprintf(f, ".");
        }
        fprintf(f, "\n");
    }
    fclose(f);
    return 0;
}

/* ---- main ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_path(char ***files, int *n, const char *path)
{
    struct stat stt;
    if (stat(path, &stt) != 0) {
        fprintf(stderr, "runner: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    if (!S_ISDIR(stt.st_mode)) {
        *files = realloc(*files, (size_t)(*n + 1) * sizeof **files);
        (*files)[(*n)++] = strdup(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d)
        return;
    char **found = NULL;
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".scn") == 0) {
            found = realloc(found, (size_t)(nf + 1) * sizeof *found);
            if (asprintf(&found[nf], "%s/%s", path, e->d_name) < 0)
                exit(2);
            nf++;
        }
    }
    closedir(d);
    if (nf > 1)
        qsort(found, (size_t)nf, sizeof *found, cmp_str);
    for (int i = 0; i < nf; i++) {
        *files = realloc(*files, (size_t)(*n + 1) * sizeof **files);
        (*files)[(*n)++] = found[i];
    }
    free(found);
}

/* --roundtrip: every step formats to a line that parses back to an equal
 * step, and every scenario written with scn_write reads back the same. */
static int roundtrip(char **files, int nfiles)
{
    int bad = 0;
    for (int i = 0; i < nfiles; i++) {
        scn_scenario sc, back;
        char err[512];
        if (scn_parse_file(files[i], &sc, err, sizeof err) != 0) {
            printf("roundtrip: %s\n", err);
            bad++;
            continue;
        }
        for (size_t k = 0; k < sc.nsteps; k++) {
            char line[SCN_LINE_MAX * 2];
            scn_step again;
            scn_format_step(&sc.steps[k], line, sizeof line);
            if (scn_parse_step(line, &again, err, sizeof err) != 0 ||
                !scn_step_equal(&sc.steps[k], &again)) {
                printf("roundtrip: %s:%d: '%s' does not read back (%s)\n", files[i],
                       sc.steps[k].line, line, err);
                bad++;
            }
        }
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        if (!mem || scn_write(&sc, mem) != 0) {
            printf("roundtrip: %s: cannot write\n", files[i]);
            bad++;
        }
        if (mem)
            fclose(mem);
        if (text && scn_parse_text(text, files[i], &back, err, sizeof err) == 0) {
            bool same = back.nsteps == sc.nsteps && strcmp(back.name, sc.name) == 0 &&
                        back.watchers == sc.watchers && back.except == sc.except &&
                        back.timeout == sc.timeout && strcmp(back.description, sc.description) == 0;
            for (size_t k = 0; same && k < sc.nsteps; k++)
                same = scn_step_equal(&sc.steps[k], &back.steps[k]);
            if (!same) {
                printf("roundtrip: %s: scn_write output reads back differently\n", files[i]);
                bad++;
            }
            scn_free(&back);
        } else if (text) {
            printf("roundtrip: %s: scn_write output does not parse: %s\n", files[i], err);
            bad++;
        }
        free(text);
        scn_free(&sc);
    }
    printf("roundtrip: %d file(s), %d problem(s)\n", nfiles, bad);
    return bad ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: runner [--reports DIR] [-j N] [--watchers LIST] [--only NAME]\n"
            "              [--timeout-scale X] [--stderr-lines N] [-v] PATH...\n"
            "       runner --roundtrip PATH...   (check parse/format of the files)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *reports = NULL;
    int parallel = 1;
    unsigned only_kinds = SCN_KINDS_ALL;
    const char *only = NULL;
    bool do_roundtrip = false;
    char **files = NULL;
    int nfiles = 0;
    timeout_scale = SANITIZED ? 4.0 : 1.0;
    const char *env_scale = getenv("SCN_TIMEOUT_SCALE");
    if (env_scale && atof(env_scale) > 0)
        timeout_scale = atof(env_scale);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--reports") == 0 && i + 1 < argc) {
            reports = argv[++i];
        } else if (strcmp(a, "-j") == 0 && i + 1 < argc) {
            parallel = atoi(argv[++i]);
            if (parallel < 1 || parallel > 32)
                usage();
        } else if (strcmp(a, "--watchers") == 0 && i + 1 < argc) {
            char *list = strdup(argv[++i]);
            only_kinds = 0;
            for (char *s = NULL, *w = strtok_r(list, ", ", &s); w; w = strtok_r(NULL, ", ", &s)) {
                if (strcmp(w, "all") == 0) {
                    only_kinds = SCN_KINDS_ALL;
                    continue;
                }
                int k = scn_kind_index(w);
                if (k < 0) {
                    fprintf(stderr, "runner: unknown watcher '%s'\n", w);
                    return 2;
                }
                only_kinds |= 1u << k;
            }
            free(list);
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(a, "--timeout-scale") == 0 && i + 1 < argc) {
            timeout_scale = atof(argv[++i]);
            if (timeout_scale <= 0)
                usage();
        } else if (strcmp(a, "-v") == 0) {
            verbose = true;
        } else if (strcmp(a, "--stderr-lines") == 0 && i + 1 < argc) {
            stderr_lines = atoi(argv[++i]);
        } else if (strcmp(a, "--roundtrip") == 0) {
            do_roundtrip = true;
        } else if (a[0] == '-') {
            usage();
        } else {
            add_path(&files, &nfiles, a);
        }
    }
    if (!nfiles)
        usage();
    if (do_roundtrip) {
        int rc = roundtrip(files, nfiles);
        for (int i = 0; i < nfiles; i++)
            free(files[i]);
        free(files);
        return rc;
    }

    /* Orphans of killed runs come to us, and are reaped in run_jobs. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* 1,000 children in flight each hold a pipe or a pidfd. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Whatever the shell ignored or blocked, the scenario processes and
     * their children start from the defaults (signal_state.h). */
    signal_state_reset();
    signal(SIGPIPE, SIG_IGN);

    scn_scenario *scs = calloc((size_t)nfiles, sizeof *scs);
    int nparse_fail = 0;
    job *jobs = NULL;
    int njobs = 0;
    for (int i = 0; i < nfiles; i++) {
        char err[512];
        if (scn_parse_file(files[i], &scs[i], err, sizeof err) != 0) {
            printf("FAIL  %s: cannot be read: %s\n", files[i], err);
            nparse_fail++;
            continue;
        }
        if (only && strcmp(only, scs[i].name) != 0)
            continue;
        for (int k = 0; k < SCN_NKINDS; k++) {
            if (!(only_kinds & (1u << k)))
                continue;
            jobs = realloc(jobs, (size_t)(njobs + 1) * sizeof *jobs);
            job *j = &jobs[njobs++];
            memset(j, 0, sizeof *j);
            j->sc = &scs[i];
            j->kind = k;
            j->res = R_PENDING;
            j->status_fd = j->err_fd = -1;
            if (!(scs[i].watchers & (1u << k))) {
                /* Still a row in the reports: every scenario x watcher. */
                j->res = R_SKIP;
                append(&j->detail, "written for");
                for (int o = 0; o < SCN_NKINDS; o++)
                    if (scs[i].watchers & (1u << o))
                        append(&j->detail, " %s", scn_kind_name(o));
                append(&j->detail, " only");
            } else if (scs[i].except & (1u << k)) {
                j->res = R_SKIP;
                append(&j->detail, "%s", scs[i].except_reason[k]);
            }
        }
    }

    double t0 = now_s();
    run_jobs(jobs, njobs, parallel);
    double total = now_s() - t0;

    int passed = 0, failed = nparse_fail, skipped = 0;
    for (int i = 0; i < njobs; i++) {
        if (jobs[i].res == R_PASS)
            passed++;
        else if (jobs[i].res == R_FAIL)
            failed++;
        else
            skipped++;
    }
    if (reports && write_reports(reports, jobs, njobs, passed, failed, skipped, total) != 0)
        failed++;
    if (reports)
        printf("reports: %s/scenarios.md, %s/scenarios.tsv\n", reports, reports);
    printf("%d passed, %d failed\n", passed, failed);

    for (int i = 0; i < njobs; i++) {
        free(jobs[i].detail);
        free(jobs[i].info);
        free(jobs[i].sbuf);
        free(jobs[i].ebuf);
        free(jobs[i].fail_lines);
    }
    free(jobs);
    for (int i = 0; i < nfiles; i++) {
        scn_free(&scs[i]);
        free(files[i]);
    }
    free(scs);
    free(files);
    return failed || passed == 0 ? 1 : 0;
}
