/*
 * steps_file.c — scenario files (steps.h): the header lines, the steps, and
 * the canonical file scn_write gives back.
 */
#include "steps_internal.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- scenarios ---- */

void scn_init(scn_scenario *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->watchers = SCN_KINDS_ALL;
}

void scn_free(scn_scenario *sc)
{
    free(sc->steps);
    sc->steps = NULL;
    sc->nsteps = sc->cap = 0;
}

int scn_append(scn_scenario *sc, const scn_step *s, char *err, size_t errsize)
{
    if (scn_step_validate(s, err, errsize))
        return -1;
    if (sc->nsteps == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 32;
        if (cap > 1000000)
            return scn_fail(err, errsize, "too many steps");
        scn_step *n = realloc(sc->steps, cap * sizeof *n);
        if (!n)
            return scn_fail(err, errsize, "out of memory");
        sc->steps = n;
        sc->cap = cap;
    }
    sc->steps[sc->nsteps++] = *s;
    return 0;
}

unsigned scn_kinds(const scn_scenario *sc)
{
    return sc->watchers & ~sc->except & SCN_KINDS_ALL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* A list of kinds separated by spaces or commas; "all". */
static bool parse_kind_list(char *s, unsigned *mask)
{
    unsigned m = scn_kind_words(s, " ,\t");
    if (!m)
        return false;
    *mask = m;
    return true;
}

static bool copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

static int parse_header(scn_scenario *sc, char *key, char *value, char *err, size_t errsize)
{
    if (strcmp(key, "name") == 0) {
        if (!*value || !copy_text(sc->name, sizeof sc->name, value))
            return scn_fail(err, errsize, "name: 1..%d characters", SCN_NAME_MAX - 1);
        for (char *p = sc->name; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                return scn_fail(err, errsize, "name: letters, digits, '-', '_' and '.' only");
        return 0;
    }
    if (strcmp(key, "description") == 0) {
        /* Several description lines are joined with one space. The limit
         * is exact, so that any joined description also parses back as the
         * single line scn_write makes of it. */
        size_t have = strlen(sc->description);
        if (have + (have ? 1 : 0) + strlen(value) + 1 > sizeof sc->description)
            return scn_fail(err, errsize, "description too long");
        if (have)
            strcat(sc->description, " ");
        strcat(sc->description, value);
        return 0;
    }
    if (strcmp(key, "clauses") == 0) {
        if (!copy_text(sc->clauses, sizeof sc->clauses, value))
            return scn_fail(err, errsize, "clauses too long");
        return 0;
    }
    if (strcmp(key, "watchers") == 0) {
        if (!parse_kind_list(value, &sc->watchers))
            return scn_fail(err, errsize, "watchers: 'all' or a list of threaded multiloop safe fast pidfd");
        return 0;
    }
    if (strcmp(key, "except") == 0) {
        /* except: safe fast -- reason */
        char *sep = strstr(value, "--");
        if (!sep)
            return scn_fail(err, errsize, "except: KINDS -- REASON");
        *sep = '\0';
        char *reason = trim(sep + 2);
        unsigned m;
        if (!parse_kind_list(value, &m) || m == SCN_KINDS_ALL)
            return scn_fail(err, errsize, "except: a list of watcher kinds (not all)");
        if (!*reason || strlen(reason) >= SCN_REASON_MAX)
            return scn_fail(err, errsize, "except: a reason of 1..%d characters", SCN_REASON_MAX - 1);
        sc->except |= m;
        for (int k = 0; k < SCN_NKINDS; k++)
            if (m & (1u << k))
                strcpy(sc->except_reason[k], reason);
        return 0;
    }
    if (strcmp(key, "timeout") == 0) {
        if (!scn_parse_int(value, 1, 86400, &sc->timeout))
            return scn_fail(err, errsize, "timeout: seconds 1..86400");
        return 0;
    }
    return scn_fail(err, errsize, "unknown header '%s'", key);
}

int scn_parse_text(const char *text, const char *origin, scn_scenario *out, char *err,
                   size_t errsize)
{
    scn_init(out);
    if (origin)
        copy_text(out->origin, sizeof out->origin, origin);
    else
        origin = "<text>";
    const char *p = text;
    int lineno = 0;
    bool in_steps = false;
    char msg[256];
    char line[SCN_LINE_MAX + 2];
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (n > SCN_LINE_MAX) {
            scn_fail(err, errsize, "%s:%d: line longer than %d characters", origin, lineno,
                 SCN_LINE_MAX);
            goto bad;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl ? nl + 1 : p + n;
        if (memchr(line, '\0', n) != NULL && strlen(line) != n) {
            scn_fail(err, errsize, "%s:%d: NUL byte", origin, lineno);
            goto bad;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        /* A header line is "key: value" with a known lowercase key. */
        char *colon = strchr(s, ':');
        if (colon && !in_steps) {
            bool key_ok = colon > s;
            for (char *k = s; k < colon; k++)
                if (!islower((unsigned char)*k))
                    key_ok = false;
            if (key_ok) {
                *colon = '\0';
                if (parse_header(out, s, trim(colon + 1), msg, sizeof msg)) {
                    scn_fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
                    goto bad;
                }
                continue;
            }
        }
        in_steps = true;
        scn_step st;
        if (scn_parse_step(s, &st, msg, sizeof msg)) {
            scn_fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
            goto bad;
        }
        st.line = lineno;
        if (scn_append(out, &st, msg, sizeof msg)) {
            scn_fail(err, errsize, "%s:%d: %s", origin, lineno, msg);
            goto bad;
        }
    }
    if (!out->name[0]) {
        scn_fail(err, errsize, "%s: missing 'name:' header", origin);
        goto bad;
    }
    if (!scn_kinds(out)) {
        scn_fail(err, errsize, "%s: applies to no watcher", origin);
        goto bad;
    }
    return 0;
bad:
    scn_free(out);
    return -1;
}

int scn_parse_file(const char *path, scn_scenario *out, char *err, size_t errsize)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return scn_fail(err, errsize, "%s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return scn_fail(err, errsize, "out of memory");
    }
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                return scn_fail(err, errsize, "%s: too large", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return scn_fail(err, errsize, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    buf[len] = '\0';
    if (bad || strlen(buf) != len) {
        free(buf);
        return scn_fail(err, errsize, "%s: unreadable or contains NUL bytes", path);
    }
    int rc = scn_parse_text(buf, path, out, err, errsize);
    free(buf);
    return rc;
}

int scn_write(const scn_scenario *sc, FILE *f)
{
    fprintf(f, "name: %s\n", sc->name);
    if (sc->description[0])
        fprintf(f, "description: %s\n", sc->description);
    if (sc->clauses[0])
        fprintf(f, "clauses: %s\n", sc->clauses);
    if (sc->watchers == SCN_KINDS_ALL) {
        fprintf(f, "watchers: all\n");
    } else {
        fprintf(f, "watchers:");
        for (int k = 0; k < SCN_NKINDS; k++)
            if (sc->watchers & (1u << k))
                fprintf(f, " %s", scn_kind_name(k));
        fprintf(f, "\n");
    }
    /* One except line per distinct reason. */
    unsigned done = 0;
    for (int k = 0; k < SCN_NKINDS; k++) {
        if (!(sc->except & (1u << k)) || (done & (1u << k)))
            continue;
        fprintf(f, "except:");
        for (int j = k; j < SCN_NKINDS; j++)
            if ((sc->except & (1u << j)) && !(done & (1u << j)) &&
                strcmp(sc->except_reason[j], sc->except_reason[k]) == 0) {
                fprintf(f, " %s", scn_kind_name(j));
                done |= 1u << j;
            }
        fprintf(f, " -- %s\n", sc->except_reason[k]);
    }
    if (sc->timeout)
        fprintf(f, "timeout: %d\n", sc->timeout);
    fprintf(f, "\n");
    char line[SCN_LINE_MAX * 2];
    for (size_t i = 0; i < sc->nsteps; i++) {
        scn_format_step(&sc->steps[i], line, sizeof line);
        fprintf(f, "%s\n", line);
    }
    return ferror(f) ? -1 : 0;
}
