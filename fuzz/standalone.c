/*
 * standalone.c — a main for fuzz targets built without libFuzzer.
 *
 *   target FILE|DIR...   run every file (directories: every regular file in
 *                        them, in name order) through LLVMFuzzerTestOneInput;
 *                        this is `make fuzz-replay`, and how a reproducer is
 *                        replayed under a debugger
 *   target               (AFL++ build) read test cases from AFL++: in
 *                        persistent mode when built with afl-clang-fast,
 *                        else one case from stdin
 *
 * Stress mode, for builds where libFuzzer cannot run (TSan: its coverage
 * counters are plain bytes every thread increments, which TSan reports):
 *   EVPOL_FUZZ_SECONDS=N   go over the inputs again and again for N seconds
 *   EVPOL_FUZZ_MUTATE=1    after the first pass, flip a few random bytes of
 *                          each input before running it
 *   EVPOL_FUZZ_ARTIFACT=P  write the input that crashed to P (as libFuzzer
 *                          does: from a sanitizer's death callback and a
 *                          SIGABRT handler, not before every input)
 *   EVPOL_FUZZ_SEED=N      the mutations' random seed (default: from the
 *                          time and pid), so that runs can differ on purpose
 *
 * The files are read once, then run from memory, each from an exact-size
 * copy (so that ASan sees overreads and mutations never accumulate).
 *
 * Exit status 0 when every input ran; a finding aborts, as under libFuzzer.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

#ifdef __AFL_FUZZ_TESTCASE_LEN
__AFL_FUZZ_INIT();
#endif

static const char *artifact;
static int mutate_round;
/* The input running now, for the crash handlers. */
static const uint8_t *volatile cur_data;
static volatile size_t cur_len;

/* Async-signal-safe: open, write, close. */
static void write_artifact(void)
{
    const uint8_t *d = cur_data;
    size_t len = cur_len;
    if (!artifact || !d)
        return;
    int fd = open(artifact, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    while (len > 0) {
        ssize_t n = write(fd, d, len);
        if (n <= 0)
            break;
        d += n;
        len -= (size_t)n;
    }
    close(fd);
}

/* A sanitizer's report ends in its death callback (TSan, ASan); a model
 * difference or a hang ends in abort(). */
__attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)(void));

static void on_abort(int sig)
{
    write_artifact();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void catch_crashes(void)
{
    if (!artifact)
        return;
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(write_artifact);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
}
static unsigned long long rng = 0x9e3779b97f4a7c15ull;

static unsigned long long next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void run_bytes(uint8_t *data, size_t len)
{
    if (mutate_round && len) {
        int flips = 1 + (int)(next_rand() % 3);
        for (int i = 0; i < flips; i++)
            data[next_rand() % len] = (uint8_t)next_rand();
    }
    cur_len = len;
    cur_data = data;
    LLVMFuzzerTestOneInput(data, len);
    cur_data = NULL;
}

/* The inputs, read once. */
typedef struct input {
    uint8_t *data;
    size_t len;
} input;

static input *inputs;
static size_t ninputs, inputs_cap;

static int load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "%s: out of memory\n", path);
        return -1;
    }
    uint8_t *fit = realloc(buf, len ? len : 1);
    if (fit)
        buf = fit;
    if (ninputs == inputs_cap) {
        size_t cap2 = inputs_cap ? inputs_cap * 2 : 256;
        input *ni = realloc(inputs, cap2 * sizeof *ni);
        if (!ni) {
            free(buf);
            fprintf(stderr, "%s: out of memory\n", path);
            return -1;
        }
        inputs = ni;
        inputs_cap = cap2;
    }
    inputs[ninputs].data = buf;
    inputs[ninputs].len = len;
    ninputs++;
    return 0;
}

static void run_input(const input *in)
{
    /* A copy of exactly `len` bytes, so that ASan sees overreads. */
    uint8_t *exact = malloc(in->len ? in->len : 1);
    if (exact) {
        memcpy(exact, in->data, in->len);
        run_bytes(exact, in->len);
    }
    free(exact);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return load_file(path);
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        names[n] = malloc(len);
        if (!names[n])
            break;
        snprintf(names[n], len, "%s/%s", path, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat fs;
        if (stat(names[i], &fs) == 0 && S_ISREG(fs.st_mode) && load_file(names[i]) != 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
#ifdef __AFL_FUZZ_TESTCASE_LEN
        __AFL_INIT();
        unsigned char *buf = __AFL_FUZZ_TESTCASE_BUF;
        while (__AFL_LOOP(1000)) {
            size_t len = (size_t)__AFL_FUZZ_TESTCASE_LEN;
            uint8_t *exact = malloc(len ? len : 1);
            if (!exact)
                continue;
            memcpy(exact, buf, len);
            LLVMFuzzerTestOneInput(exact, len);
            free(exact);
        }
        return 0;
#else
        static uint8_t in[1 << 20];
        size_t len = fread(in, 1, sizeof in, stdin);
        LLVMFuzzerTestOneInput(in, len);
        return 0;
#endif
    }
    const char *secs_env = getenv("EVPOL_FUZZ_SECONDS");
    const char *mut_env = getenv("EVPOL_FUZZ_MUTATE");
    artifact = getenv("EVPOL_FUZZ_ARTIFACT");
    long secs = secs_env ? atol(secs_env) : 0;
    const char *seed_env = getenv("EVPOL_FUZZ_SEED");
    if (seed_env && *seed_env)
        rng ^= strtoull(seed_env, NULL, 10) * 0x2545f4914f6cdd1dull;
    else
        rng ^= (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
    int count = 0, rc = 0, passes = 0;
    for (int i = 1; i < argc; i++)
        if (load_path(argv[i]) != 0)
            rc = 1;
    catch_crashes();
    time_t end = time(NULL) + secs;
    do {
        for (size_t i = 0; i < ninputs; i++, count++)
            run_input(&inputs[i]);
        passes++;
        mutate_round = mut_env && *mut_env == '1';
    } while (secs > 0 && time(NULL) < end && ninputs > 0);
    fprintf(stderr, "%s: %d input(s) ran in %d pass(es)\n", argv[0], count, passes);
    if (artifact)
        unlink(artifact); /* nothing crashed: no reproducer (of an earlier run) */
    for (size_t i = 0; i < ninputs; i++)
        free(inputs[i].data);
    free(inputs);
    return rc;
}
