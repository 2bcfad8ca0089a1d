"""What this process holds, read from /proc: its children, its descriptors,
its threads, and the state of a process it spawned. The leak checks of a run
and its failure messages read them (interp.py)."""

import os


def children_of_self():
    pids = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % tid) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


def open_fds():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass
    return fds


def thread_count():
    return len(os.listdir("/proc/self/task"))


def process_state(pid):
    """running, a zombie, or reaped: what a missing callback left behind."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "reaped"
    return "a zombie (nobody reaped it)" if state == "Z" else "running (state %s)" % state


def pidfd_works():
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True
