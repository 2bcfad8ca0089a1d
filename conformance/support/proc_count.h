/*
 * proc_count.h — counting a process's own resources through /proc, for the
 * leak checks of the conformance programs (harness.c), the scenario runner
 * and the libuv adapter.
 */
#ifndef EVPOL_PROC_COUNT_H
#define EVPOL_PROC_COUNT_H

/* The entries of a folder, "." and ".." aside (e.g. "/proc/self/fd",
 * "/proc/self/task"); -1 when it cannot be opened. */
int count_dir(const char *path);

#endif
