/*
 * stamp_exit.c — the child of the exit-latency benchmark.
 *
 *   stamp_exit FILE SLOT
 *
 * Maps FILE (a /dev/shm file the parent also maps), stores the
 * CLOCK_MONOTONIC time in nanoseconds as the SLOT-th uint64_t and exits at
 * once with _exit(0): the parent's callback subtracts the stamp from its own
 * clock. Everything that can fail is done before the clock is read, so the
 * stamp is as close to the exit as a program can make it; what remains
 * (exit_group, the kernel's notification, the parent's wakeup) is what the
 * benchmark measures. Exit 2 on any error: the parent counts a wrong status
 * as a broken benchmark.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        _exit(2);
    char *end;
    long slot = strtol(argv[2], &end, 10);
    if (*end || slot < 0)
        _exit(2);
    int fd = open(argv[1], O_RDWR | O_CLOEXEC);
    if (fd < 0)
        _exit(2);
    size_t len = ((size_t)slot + 1) * sizeof(uint64_t);
    volatile uint64_t *stamps = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (stamps == MAP_FAILED)
        _exit(2);
    /* Touch the slot first, so the page fault is not between stamp and exit. */
    stamps[slot] = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    stamps[slot] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    _exit(0);
}
