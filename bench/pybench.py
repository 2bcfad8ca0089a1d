"""pybench.py — evbench's tests for CPython asyncio's own child watchers.

    python3 pybench.py WATCHER throughput N K
    python3 pybench.py WATCHER latency N STAMP_EXIT
    python3 pybench.py WATCHER pending P1,P2,... M WARMUP

WATCHER is threaded, multiloop, safe, fast or pidfd: the asyncio class of
that name is installed with asyncio.set_child_watcher (deprecated since
3.12, removed in 3.14; the warnings are silenced) and attached to a fresh
loop, and children are started with asyncio.create_subprocess_exec and
awaited with Process.wait(), the public API a Python program uses. A child
counts as done when wait() returns its returncode, the asyncio counterpart
of evpol's on_exit callback. Output: "key=value" lines, the same keys as
evbench.c, plus lost=N: exits reported with returncode 255, i.e. a status
the watcher lost (CPython 3.11's MultiLoopChildWatcher does lose some under
load, bpo-38323). Those are the peer's defect, reported rather than fatal;
anything else that breaks the benchmark (another returncode, an exit never
seen: the alarm kills the run) exits non-zero.
"""
import asyncio
import mmap
import os
import resource
import signal
import statistics
import struct
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

WATCHERS = {
    "threaded": "ThreadedChildWatcher",
    "multiloop": "MultiLoopChildWatcher",
    "safe": "SafeChildWatcher",
    "fast": "FastChildWatcher",
    "pidfd": "PidfdChildWatcher",
}

TRUE = "/bin/true"
# stamp_exit sleeps this long before its stamp, as in evbench.c.
LAT_DELAY_US = "1000"
LOST = 255
lost = 0
SLEEP = ("/bin/sleep", "1000")


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def die(msg):
    sys.stderr.write("pybench: %s\n" % msg)
    sys.exit(1)


def check_rc(proc, rc, expected, what):
    global lost
    if rc == LOST:
        lost += 1
    elif rc != expected:
        die("%s (pid %d) returned %d, not %d" % (what, proc.pid, rc, expected))


def cpu_ns(who):
    ru = resource.getrusage(who)
    return int((ru.ru_utime + ru.ru_stime) * 1e9)


def usage_now():
    u = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmSize", "Threads"):
                u[key] = int(val.split()[0])
    # listdir's own fd is closed before it returns.
    u["fds"] = len(os.listdir("/proc/self/fd"))
    return u


async def spawn_and_wait(*argv):
    proc = await asyncio.create_subprocess_exec(*argv)
    return proc, await proc.wait()


async def run_true():
    proc, rc = await spawn_and_wait(TRUE)
    check_rc(proc, rc, 0, TRUE)


async def throughput(n, k):
    started = 0

    async def worker():
        nonlocal started
        while started < n:
            started += 1
            await run_true()

    cpu0 = cpu_ns(resource.RUSAGE_SELF)
    child0 = cpu_ns(resource.RUSAGE_CHILDREN)
    t0 = now_ns()
    await asyncio.gather(*(worker() for _ in range(min(k, n))))
    secs = (now_ns() - t0) / 1e9
    return {"n": n, "k": k, "elapsed_s": "%.6f" % secs, "ops_per_s": "%.2f" % (n / secs),
            "cpu_us_per_child": "%.2f" % ((cpu_ns(resource.RUSAGE_SELF) - cpu0) / n / 1000),
            "child_cpu_us_per_child": "%.2f" % ((cpu_ns(resource.RUSAGE_CHILDREN) - child0) / n / 1000)}


async def latency(n, prog):
    warm = 5
    path = "/dev/shm/pybench-%d" % os.getpid()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, (n + warm) * 8)
        stamps = mmap.mmap(fd, (n + warm) * 8)
        samples = []
        for slot in range(n + warm):
            proc = await asyncio.create_subprocess_exec(prog, path, str(slot), LAT_DELAY_US)
            rc = await proc.wait()
            t = now_ns()
            check_rc(proc, rc, 0, "stamp_exit")
            (stamp,) = struct.unpack_from("=Q", stamps, slot * 8)
            if stamp == 0 or stamp > t:
                die("stamp_exit %d left no valid stamp" % slot)
            if slot >= warm:
                samples.append(t - stamp)
        stamps.close()
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    rank = max(1, min(n, -(-99 * n // 100)))  # nearest rank, as evbench.c
    return {
        "n": n,
        "lat_median_us": "%.2f" % (statistics.median(samples) / 1000),
        "lat_p99_us": "%.2f" % (samples[rank - 1] / 1000),
        "lat_min_us": "%.2f" % (samples[0] / 1000),
    }


def sleeper_settled(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    rp = stat.rfind(")")
    return "(sleep)" in stat and stat[rp + 2 : rp + 3] == "S"


async def pending(levels, m, warm):
    for _ in range(max(1, warm)):
        await run_true()
    base = usage_now()
    sleepers = []
    medians, means, cpus, child_cpus = {}, {}, {}, {}
    for p in levels:
        while len(sleepers) < p:
            sleepers.append(await asyncio.create_subprocess_exec(*SLEEP))
        # Let a thousand dynamic loaders finish before measuring (evbench.c
        # does the same); blocking is fine, nothing is due meanwhile.
        deadline = time.monotonic() + 10
        for proc in sleepers:
            while not sleeper_settled(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.002)
        samples = []
        cpu0 = cpu_ns(resource.RUSAGE_SELF)
        child0 = cpu_ns(resource.RUSAGE_CHILDREN)
        for _ in range(m):
            t0 = now_ns()
            await run_true()
            samples.append(now_ns() - t0)
        cpus[p] = (cpu_ns(resource.RUSAGE_SELF) - cpu0) / m / 1000
        child_cpus[p] = (cpu_ns(resource.RUSAGE_CHILDREN) - child0) / m / 1000
        medians[p] = statistics.median(samples) / 1000
        means[p] = sum(samples) / len(samples) / 1000
    peak = usage_now()
    for proc in sleepers:
        proc.kill()
    for proc in sleepers:
        check_rc(proc, await proc.wait(), -signal.SIGKILL, "sleep")
    pmax = levels[-1]
    out = {"pmax": pmax, "m": m}
    for p in levels:
        out["op_us_p%d" % p] = "%.2f" % medians[p]
        out["op_mean_us_p%d" % p] = "%.2f" % means[p]
        out["cpu_us_p%d" % p] = "%.2f" % cpus[p]
        out["child_cpu_us_p%d" % p] = "%.2f" % child_cpus[p]
    out["rss_kib_per_child"] = "%.3f" % ((peak["VmRSS"] - base["VmRSS"]) / pmax)
    out["vsz_kib_per_child"] = "%.3f" % ((peak["VmSize"] - base["VmSize"]) / pmax)
    out["threads_per_child"] = "%.3f" % ((peak["Threads"] - base["Threads"]) / pmax)
    out["fds_per_child"] = "%.3f" % ((peak["fds"] - base["fds"]) / pmax)
    out["base_rss_kib"] = base["VmRSS"]
    out["base_threads"] = base["Threads"]
    out["base_fds"] = base["fds"]
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in WATCHERS:
        die("usage: pybench.py {%s} throughput|latency|pending ..." % "|".join(WATCHERS))
    signal.alarm(int(os.environ.get("EVBENCH_TIMEOUT", "300")))
    name, test, args = argv[1], argv[2], argv[3:]
    if test == "throughput" and len(args) == 2:
        coro = throughput(int(args[0]), int(args[1]))
    elif test == "latency" and len(args) == 2:
        coro = latency(int(args[0]), args[1])
    elif test == "pending" and len(args) == 3:
        levels = [int(p) for p in args[0].split(",")]
        coro = pending(levels, int(args[1]), int(args[2]))
    else:
        die("bad arguments for %s" % test)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    watcher = getattr(asyncio, WATCHERS[name])()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(loop)
    try:
        out = loop.run_until_complete(coro)
    finally:
        watcher.close()
        loop.close()
    print("impl=py-%s" % name)
    for key, val in out.items():
        print("%s=%s" % (key, val))
    print("lost=%d" % lost)


if __name__ == "__main__":
    main(sys.argv)
