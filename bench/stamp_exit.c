/*
 * stamp_exit.c — the child of the exit-latency benchmark.
 *
 *   stamp_exit FILE SLOT [DELAY_US]
 *
 * Maps FILE (a /dev/shm file the parent also maps), sleeps DELAY_US
 * microseconds (default 0), stores the CLOCK_MONOTONIC time in nanoseconds
 * as the SLOT-th uint64_t and exits at once with _exit(0): the parent's
 * callback subtracts the stamp from its own clock.
 *
 * Why the sleep: the benchmark measures the exit path of a child that the
 * watcher is already waiting for. Without it, on a busy 2-core machine the
 * parent, woken when the child's exec released it from posix_spawn, often
 * gets a CPU only after the child has exited, and the figure would include
 * the rest of the registration (for Threaded, creating the waiting thread). Everything that can fail is done before the clock is read, so the
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
    if (argc != 3 && argc != 4)
        _exit(2);
    char *end;
    long slot = strtol(argv[2], &end, 10);
    if (*end || slot < 0)
        _exit(2);
    long delay_us = argc == 4 ? strtol(argv[3], &end, 10) : 0;
    if (*end || delay_us < 0 || delay_us > 10000000)
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
    struct timespec pause = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    while (nanosleep(&pause, &pause) != 0)
        ;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    stamps[slot] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    _exit(0);
}
