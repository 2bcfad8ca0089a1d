#!/usr/bin/env python3
"""run.py — run the benchmarks and write build/reports/bench (make bench).

    python3 bench/run.py --mode quick|full --bin BUILD/bench --reports DIR
                         [--lib LIBEVPOL] [--only IMPL,...] [--tests T,...]
                         [--repeats R]

Runs evbench (evpol's watchers, raw posix_spawn + waitpid, raw pidfd +
epoll, libuv) and pybench.py (CPython asyncio's watchers on the python3 in
PATH) on the same workloads, each run in a fresh process, the
implementations interleaved within each repeat so that a change in the
machine's load hits all of them alike. Every figure is the median over the
repeats. Writes results.md, results.tsv, runs.tsv (every run), runs.log
(each run's command and stderr) and the gnuplot plots *.svg.

Exit status: 0 when every benchmark ran, 1 when one broke (an evpol
watcher, a raw peer or libuv failed: a lost or wrong exit status, a hang, a
crash). Timings never fail the run. A CPython watcher that breaks is
reported and left out, since that is CPython's defect (3.11's
MultiLoopChildWatcher loses exits under load, bpo-38323), unless every run
of it broke, which points at the benchmark itself.
"""
import argparse
import datetime
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

EVPOL = ["evpol-threaded", "evpol-multiloop", "evpol-safe", "evpol-fast", "evpol-pidfd"]
RAW = ["raw-wait", "raw-pidfd"]
PY = ["py-threaded", "py-multiloop", "py-safe", "py-fast", "py-pidfd"]
PEERS = RAW + ["libuv"] + PY
IMPLS = EVPOL + PEERS
LABEL = {
    "evpol-threaded": "evpol Threaded",
    "evpol-multiloop": "evpol MultiLoop",
    "evpol-safe": "evpol Safe",
    "evpol-fast": "evpol Fast",
    "evpol-pidfd": "evpol Pidfd",
    "raw-wait": "raw spawn+waitpid",
    "raw-pidfd": "raw pidfd+epoll",
    "libuv": "libuv uv_spawn",
    "py-threaded": "CPython Threaded",
    "py-multiloop": "CPython MultiLoop",
    "py-safe": "CPython Safe",
    "py-fast": "CPython Fast",
    "py-pidfd": "CPython Pidfd",
}

MODES = {
    # About a minute on a 2-core machine: fewer children than the full
    # sizes, and P up to 300 instead of 1,000 (say so in the report).
    "quick": dict(repeats=3, n=200, lat_n=100, levels=[10, 100, 300], m=20, warm=10),
    "full": dict(repeats=7, n=2000, lat_n=1000, levels=[10, 100, 1000], m=100, warm=20),
}

# metric -> (unit, higher is better, title)
METRICS = {}


def metric(key, unit, higher, title):
    METRICS[key] = (unit, higher, title)


metric("tp_k1", "children/s", True, "throughput, K=1")
metric("tp_k64", "children/s", True, "throughput, K=64")
metric("cpu_k1", "us", False, "parent CPU per child, K=1")
metric("cpu_k64", "us", False, "parent CPU per child, K=64")
metric("lat_median_us", "us", False, "exit latency, median")
metric("lat_p99_us", "us", False, "exit latency, p99")
metric("rss_kib_per_child", "KiB", False, "resident memory per pending child")
metric("vsz_kib_per_child", "KiB", False, "address space per pending child")
metric("threads_per_child", "threads", False, "threads per pending child")
metric("fds_per_child", "fds", False, "fds per pending child")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def machine_notes(lib):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    py = shutil.which("python3") or "python3"
    return [
        ("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S %z").strip()),
        ("nproc", str(os.cpu_count())),
        ("kernel", platform.release()),
        ("CPU model", cpu),
        ("load average at start", " ".join(open("/proc/loadavg").read().split()[:3])),
        ("glibc", os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "?"),
        ("compiler", sh("${CC:-cc} --version | head -1")),
        ("evpol", lib or "?"),
        ("libevent", sh("pkg-config --modversion libevent")),
        ("libuv", sh("pkg-config --modversion libuv")),
        ("python3", "%s (%s)" % (sh("python3 -c 'import sys; print(sys.version.split()[0])'"), py)),
    ]


class Runner:
    def __init__(self, args, cfg):
        self.args = args
        self.cfg = cfg
        self.log = open(os.path.join(args.reports, "runs.log"), "w")
        self.runs = []  # (rep, test, impl, ok, dict, seconds, note)

    def command(self, impl, test):
        c = self.cfg
        if impl.startswith("py-"):
            base = [self.args.python, os.path.join(HERE, "pybench.py"), impl[3:]]
        else:
            base = [os.path.join(self.args.bin, "evbench"), impl]
        if test == "tp_k1":
            return base + ["throughput", str(c["n"]), "1"]
        if test == "tp_k64":
            return base + ["throughput", str(c["n"]), "64"]
        if test == "latency":
            return base + ["latency", str(c["lat_n"]), os.path.join(self.args.bin, "stamp_exit")]
        if test == "pending":
            return base + ["pending", ",".join(map(str, c["levels"])), str(c["m"]), str(c["warm"])]
        raise ValueError(test)

    def run(self, rep, test, impl):
        cmd = self.command(impl, test)
        env = dict(os.environ, EVBENCH_TIMEOUT=str(self.args.timeout))
        load = open("/proc/loadavg").read().split()[0]
        t0 = time.monotonic()
        note = ""
        # stderr goes to a file: a broken peer can print millions of lines
        # (CPython's MultiLoopChildWatcher, when it livelocks).
        # stdout to a file too, not a pipe: the children of a run killed by
        # its alarm still hold its stdout, and a pipe would wait for them.
        with tempfile.TemporaryFile() as errf, tempfile.TemporaryFile() as outf:
            try:
                rc = subprocess.run(cmd, stdout=outf, stderr=errf, env=env,
                                    timeout=self.args.timeout + 30).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            outf.seek(0)
            out = outf.read().decode(errors="replace")
            err = head_tail(errf)
            if rc == -1:
                err = "timeout after %ds\n" % (self.args.timeout + 30) + err
        secs = time.monotonic() - t0
        orphans = kill_orphans()
        if orphans:
            err += "bench: killed %d processes this run left behind\n" % orphans
        vals = {}
        for line in out.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                vals[k.strip()] = v.strip()
        ok = rc == 0
        if rc != 0:
            note = "exit status %d" % rc if rc > 0 else ("killed by signal %d" % -rc if rc < -1 else "timeout")
        elif int(vals.get("lost", "0")):
            note = "lost %s exit statuses" % vals["lost"]
        self.log.write("### rep %d %s %s: %s %.2fs%s\n$ %s\n" % (
            rep + 1, test, impl, "ok" if ok else "BROKEN", secs, " (%s)" % note if note else "",
            " ".join(cmd)))
        if err:
            self.log.write(err if err.endswith("\n") else err + "\n")
        self.log.flush()
        vals["load1"] = load
        self.runs.append((rep, test, impl, ok, vals, secs, note))
        status = "ok" if ok else "BROKEN"
        print("  %-8s %-16s %6.2fs %s%s" % (test, impl, secs, status, " (%s)" % note if note else ""),
              flush=True)


def become_subreaper():
    """Adopt the orphans of our runs (prctl PR_SET_CHILD_SUBREAPER), so that a
    run killed by its alarm does not leave its `sleep 1000` children behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_orphans():
    """Kill and reap whatever a finished run left behind; returns how many."""
    me = str(os.getpid())
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:].split()[1] == me:
            try:
                os.kill(int(pid), 9)
                os.waitpid(int(pid), 0)
                n += 1
            except OSError:
                pass
    return n


def head_tail(f, keep=30, chunk=16384):
    """The first and last `keep` lines of an open binary file."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    head = f.read(chunk)
    if size <= chunk:
        lines = head.decode(errors="replace").splitlines()
        if len(lines) <= 2 * keep:
            return "\n".join(lines) + ("\n" if lines else "")
        return "\n".join(lines[:keep] + ["... (%d lines left out)" % (len(lines) - 2 * keep)] +
                         lines[-keep:]) + "\n"
    f.seek(max(chunk, size - chunk))
    tail = f.read()
    first = head.decode(errors="replace").splitlines()[:keep]
    last = tail.decode(errors="replace").splitlines()[-keep:]
    return "\n".join(first + ["... (%d bytes left out)" % (size - len(head) - len(tail))] +
                     last) + "\n"


def figures(vals, test, levels):
    """The metrics one run yields."""
    f = {}
    try:
        if test in ("tp_k1", "tp_k64"):
            f[test] = float(vals["ops_per_s"])
            f["cpu_" + test[3:]] = float(vals["cpu_us_per_child"])
        elif test == "latency":
            f["lat_median_us"] = float(vals["lat_median_us"])
            f["lat_p99_us"] = float(vals["lat_p99_us"])
        elif test == "pending":
            for p in levels:
                for k in ("op_us_p%d", "cpu_us_p%d", "child_cpu_us_p%d"):
                    f[k % p] = float(vals[k % p])
            for k in ("rss_kib_per_child", "vsz_kib_per_child", "threads_per_child", "fds_per_child"):
                f[k] = float(vals[k])
    except (KeyError, ValueError):
        return None
    return f


def fmt(v, digits=None):
    if v is None:
        return "—"
    if digits is not None:
        return "%.*f" % (digits, v)
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.3f" % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="quick", choices=sorted(MODES))
    ap.add_argument("--bin", required=True, help="directory holding evbench and stamp_exit")
    ap.add_argument("--reports", default="build/reports/bench")
    ap.add_argument("--lib", default="")
    ap.add_argument("--only", default="", help="comma-separated implementations")
    ap.add_argument("--tests", default="", help="comma-separated: tp_k1,tp_k64,latency,pending")
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=0,
                    help="seconds per run before it counts as hung (default: 30 quick, 60 full)")
    ap.add_argument("--python", default="python3", help="interpreter for pybench.py")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness for the runs (negative needs root; 0 leaves it alone)")
    args = ap.parse_args()

    # The machine is shared: a higher priority, the same for every
    # implementation, keeps other jobs from landing in the middle of a run.
    # Without the privilege the runs simply keep the normal priority.
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError:
            pass

    cfg = dict(MODES[args.mode])
    if not args.timeout:
        # Runs take seconds; a hang (CPython's MultiLoop watcher can lose an
        # exit or livelock) should cost little.
        args.timeout = 30 if args.mode == "quick" else 60
    if args.repeats:
        cfg["repeats"] = args.repeats
    impls = [i for i in IMPLS if not args.only or i in args.only.split(",")]
    tests = ["tp_k1", "tp_k64", "latency", "pending"]
    if args.tests:
        tests = [t for t in tests if t in args.tests.split(",")]
    levels = cfg["levels"]
    for p in levels:
        metric("op_us_p%d" % p, "us", False, "spawn-and-reap with P=%d pending, wall time" % p)
    for p in levels:
        metric("cpu_us_p%d" % p, "us", False, "spawn-and-reap with P=%d pending, parent CPU" % p)
    for p in levels:
        metric("child_cpu_us_p%d" % p, "us", False, "spawn-and-reap with P=%d pending, child CPU" % p)

    become_subreaper()
    os.makedirs(args.reports, exist_ok=True)
    for name in os.listdir(args.reports):
        if re.match(r".*\.(svg|dat|gp|tsv|md|log)$", name):
            os.unlink(os.path.join(args.reports, name))
    notes = machine_notes(args.lib)
    notes.append(("priority of the runs", "nice %d" % os.getpriority(os.PRIO_PROCESS, 0)))
    t_start = time.monotonic()
    r = Runner(args, cfg)
    print("bench: %s mode, %d repeats, %d implementations, tests %s" % (
        args.mode, cfg["repeats"], len(impls), ",".join(tests)), flush=True)
    for rep in range(cfg["repeats"]):
        print("repeat %d/%d (load %s)" % (rep + 1, cfg["repeats"], open("/proc/loadavg").read().split()[0]),
              flush=True)
        for test in tests:
            # A new order for each repeat and test (seeded, so a rerun
            # repeats it): the machine's other load comes in bursts of a
            # few seconds, which should not always hit the same neighbours.
            order = list(impls)
            random.Random("%d/%s" % (rep, test)).shuffle(order)
            for impl in order:
                r.run(rep, test, impl)
    elapsed = time.monotonic() - t_start
    notes.append(("load average at end", " ".join(open("/proc/loadavg").read().split()[:3])))
    loads = sorted(float(x[4]["load1"]) for x in r.runs)
    if loads:
        notes.append(("1-min load average when each run started",
                      "min %.2f, median %.2f, max %.2f (per run: runs.tsv)" % (
                          loads[0], statistics.median(loads), loads[-1])))
    notes.append(("benchmark wall time", "%.0f s" % elapsed))

    # ---- medians ----
    per = {}      # (metric, impl) -> [values]
    broken = {}   # impl -> [notes]
    lossy = {}    # impl -> [notes]
    for rep, test, impl, ok, vals, secs, note in r.runs:
        f = figures(vals, test, levels) if ok else None
        if f is None:
            broken.setdefault(impl, []).append("%s rep %d: %s" % (test, rep + 1, note or "no figures"))
            continue
        if note:
            lossy.setdefault(impl, []).append("%s rep %d: %s" % (test, rep + 1, note))
        for k, v in f.items():
            per.setdefault((k, impl), []).append(v)
    med = {key: statistics.median(v) for key, v in per.items()}

    write_tsv_runs(args.reports, r.runs)
    write_results(args, cfg, impls, tests, levels, notes, per, med, broken, lossy)
    plots(args.reports, impls, tests, levels, med)

    fatal = []
    for impl, why in sorted(broken.items()):
        if not impl.startswith("py-"):
            fatal.append("%s: %s" % (impl, "; ".join(why)))
        else:
            tried = sum(1 for x in r.runs if x[2] == impl)
            if len(why) == tried:
                fatal.append("%s: every run broke: %s" % (impl, "; ".join(why)))
    print("bench: results in %s/results.md (%.0f s)" % (args.reports, elapsed))
    if fatal:
        print("bench: BROKEN benchmarks (see %s/runs.log):" % args.reports)
        for line in fatal:
            print("  " + line)
        return 1
    return 0


def write_tsv_runs(reports, runs):
    keys = []
    for run in runs:
        for k in run[4]:
            if k not in keys and k != "impl":
                keys.append(k)
    with open(os.path.join(reports, "runs.tsv"), "w") as f:
        f.write("\t".join(["repeat", "test", "impl", "status", "seconds"] + keys + ["note"]) + "\n")
        for rep, test, impl, ok, vals, secs, note in runs:
            f.write("\t".join([str(rep + 1), test, impl, "ok" if ok else "broken", "%.2f" % secs] +
                              [vals.get(k, "") for k in keys] + [note]) + "\n")


def cost(key, v):
    """Lower is better for every cost: throughput becomes time per child."""
    if v is None:
        return None
    return 1.0 / v if METRICS[key][1] else v


def raw_limit(key, med):
    vals = [med.get((key, i)) for i in RAW]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return max(vals) if METRICS[key][1] else min(vals)


def ratio(key, v, ref):
    """Cost of v relative to ref: below 1 is better than ref."""
    cv, cr = cost(key, v), cost(key, ref)
    if cv is None or cr is None or cr <= 1e-9:
        return None
    return cv / cr


def write_results(args, cfg, impls, tests, levels, notes, per, med, broken, lossy):
    keys = [k for k in METRICS if any((k, i) in med for i in impls)]
    peers = [p for p in PEERS if p in impls]

    with open(os.path.join(args.reports, "results.tsv"), "w") as f:
        f.write("\t".join(["metric", "unit", "impl", "median", "runs", "ratio_raw_limit"] +
                          ["ratio_" + p for p in peers]) + "\n")
        for k in keys:
            lim = raw_limit(k, med)
            for i in impls:
                v = med.get((k, i))
                if v is None:
                    continue
                row = [k, METRICS[k][0], i, "%.4g" % v, ",".join("%.4g" % x for x in per[(k, i)]),
                       fmt(ratio(k, v, lim), 3)]
                row += [fmt(ratio(k, v, med.get((k, p))), 3) for p in peers]
                f.write("\t".join(row) + "\n")

    md = []
    w = md.append
    c = cfg
    w("# evpol benchmarks (%s mode)\n" % args.mode)
    w("Generated by `make bench%s` (bench/run.py). Each figure is the **median of %d runs**, "
      "each run a fresh process; within a repeat the implementations run interleaved, "
      "so a change in the machine's load hits all of them alike.\n" % (
          "-full" if args.mode == "full" else "", c["repeats"]))
    sizes = ("throughput: N=%d children of /bin/true per run (K=1 and K=64 at once); "
             "exit latency: %d children of bench/stamp_exit per run, one at a time; "
             "pending: %s children of `sleep` pending, %d spawn-and-reaps of /bin/true measured "
             "at each P (median per op)." % (
                 c["n"], c["lat_n"], " then ".join(map(str, levels)), c["m"]))
    w("Sizes: " + sizes)
    if args.mode == "quick":
        w("\n**Quick mode uses fewer children than the specified workload** (full mode, "
          "`make bench-full`: N=2000, 1000 latency samples, P = 10, 100, 1000 with memory "
          "measured at 1000 pending): here N=%d, %d latency samples, P up to %d and memory "
          "per child measured with %d pending. Targets stated for P=1,000 are judged at P=%d." % (
              c["n"], c["lat_n"], levels[-1], levels[-1], levels[-1]))
    w("")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k, v in notes:
        w("| %s | %s |" % (k, v))
    w("\nThe machine is shared (other jobs run at the same time), so absolute figures are noisy; "
      "ratios between implementations measured in the same run are the figures to read.\n")

    w("## Targets\n")
    w(targets(med, levels, args.mode))

    w("\n## How to read the ratios\n")
    w("A ratio is the implementation's **cost relative to** the column's reference: time per child "
      "for throughput (so 1.10 means 10% fewer children per second), microseconds for latency and "
      "spawn cost, resident KiB, threads or fds for memory. Below 1 is better than the reference. "
      "The *raw limit* is the better of the two raw peers (posix_spawn + blocking waitpid; "
      "posix_spawn + pidfd_open + epoll) for that figure. — means no ratio (a zero or missing "
      "reference).\n")

    sections = [
        ("Throughput", ["tp_k1", "tp_k64", "cpu_k1", "cpu_k64"],
         "N children of /bin/true, at most K running at once; a child counts when its exit status "
         "reached the callback (evpol: the on_exit of evpol_loop_spawn; libuv: exit_cb; raw: "
         "waitpid/waitid returned; CPython: `await proc.wait()` returned). Figure: children per "
         "second; then the parent's CPU time per child (every thread, getrusage), which the "
         "machine's other load disturbs much less than throughput: on 2 cores the children's own "
         "exec (about 0.5 ms of CPU each for /bin/true) bounds throughput, and the parent's CPU "
         "per child is what an implementation adds to it."),
        ("Exit latency", ["lat_median_us", "lat_p99_us"],
         "Time from the child's last CLOCK_MONOTONIC reading, just before _exit(0) "
         "(bench/stamp_exit.c writes it to a shared /dev/shm page), to the callback, children run "
         "one at a time. Per run: median and p99 (nearest rank) of the samples."),
        ("Memory per pending child", ["rss_kib_per_child", "threads_per_child", "fds_per_child",
                                      "vsz_kib_per_child"],
         "With %d children of `sleep` pending (all registered), the parent's growth since before the "
         "first was started, from /proc/self/status (VmRSS, VmSize, Threads) and /proc/self/fd, "
         "divided by %d. Kernel memory (a thread's kernel stack, a pidfd's file) is not in VmRSS." % (
             levels[-1], levels[-1])),
        ("Scaling with pending children",
         ["op_us_p%d" % p for p in levels] + ["cpu_us_p%d" % p for p in levels] +
         ["child_cpu_us_p%d" % p for p in levels],
         "Cost of one spawn-and-reap of /bin/true while P other children are pending: the wall "
         "time from the spawn call to the callback (median of %d), and, less sensitive to the "
         "machine's other load, the CPU time per spawn-and-reap of the parent (every thread, "
         "getrusage RUSAGE_SELF) and of the reaped children (RUSAGE_CHILDREN: exec and the dynamic "
         "loader of /bin/true, which dominate). O(1) watchers stay flat; O(n) ones show their "
         "slope." % c["m"]),
    ]
    for title, ks, text in sections:
        ks = [k for k in ks if k in keys]
        if not ks:
            continue
        w("## %s\n" % title)
        w(text + "\n")
        for k in ks:
            lim = raw_limit(k, med)
            w("### %s (%s)\n" % (METRICS[k][2], METRICS[k][0]))
            head = ["implementation", "median", "runs", "vs raw limit"] + ["vs " + p for p in peers]
            w("| " + " | ".join(head) + " |")
            w("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
            for i in impls:
                v = med.get((k, i))
                if v is None:
                    continue
                runs = ", ".join(fmt(x) for x in per[(k, i)])
                row = ["**%s**" % LABEL[i] if i in EVPOL else LABEL[i], fmt(v), runs,
                       fmt(ratio(k, v, lim), 2)]
                row += [fmt(ratio(k, v, med.get((k, p))), 2) for p in peers]
                w("| " + " | ".join(row) + " |")
            w("")
        if title.startswith("Exit"):
            lim = raw_limit("lat_median_us", med)
            if lim is not None:
                w("Median above the raw limit (%s us): " % fmt(lim) + ", ".join(
                    "%s %+.1f us" % (LABEL[i], med[("lat_median_us", i)] - lim)
                    for i in impls if ("lat_median_us", i) in med) + ".\n")
        if title.startswith("Scaling"):
            w("Growth from P=%d to P=%d (cost at %d / cost at %d) and slope in us per 1,000 "
              "pending children:\n" % (levels[0], levels[-1], levels[-1], levels[0]))
            w("| implementation | wall growth | wall slope | parent CPU growth | parent CPU slope "
              "| child CPU slope |")
            w("|---|---:|---:|---:|---:|---:|")
            span = (levels[-1] - levels[0]) / 1000.0
            for i in impls:
                cells = []
                for k in ("op_us_p%d", "cpu_us_p%d", "child_cpu_us_p%d"):
                    a, b = med.get((k % levels[0], i)), med.get((k % levels[-1], i))
                    if a is None or b is None or a <= 0:
                        cells.append(None)
                    else:
                        cells.append((b / a, (b - a) / span))
                if cells[0] is None:
                    continue
                row = [LABEL[i], "%.3f" % cells[0][0], "%+.1f" % cells[0][1]]
                row += ["%.3f" % cells[1][0], "%+.1f" % cells[1][1]] if cells[1] else ["—", "—"]
                row += ["%+.1f" % cells[2][1]] if cells[2] else ["—"]
                w("| " + " | ".join(row) + " |")
            w("")
        if title.startswith("Throughput"):
            w("![throughput](throughput.svg)\n")
        if title.startswith("Exit"):
            w("![exit latency](latency.svg)\n")
        if title.startswith("Scaling"):
            w("![scaling](scaling.svg)\n")

    w("## Runs that broke or lost exits\n")
    if not broken and not lossy:
        w("None: every run completed and every exit status reached its callback.\n")
    for what, d in (("broke (left out of the medians)", broken), ("lost exit statuses", lossy)):
        for impl, why in sorted(d.items()):
            w("- %s %s: %s" % (LABEL[impl], what, "; ".join(why)))
    if "py-multiloop" in broken or "py-multiloop" in lossy:
        w("\nCPython's MultiLoopChildWatcher has a known race (bpo-38323; CPython skips its "
          "subprocess tests for this watcher): its SIGCHLD handler, a Python-level handler "
          "that runs between bytecodes of the main thread, can run inside add_child_handler's own "
          "waitpid, so one exit is reaped twice and reported as returncode 255 "
          "(\"Unknown child process pid ...\"); some runs also lose an exit altogether or livelock "
          "in that handler, printing tracebacks until the run's alarm kills it. Runs that lost "
          "statuses are kept but flagged; runs that hung are left out.")
    w("\nEvery run's command and stderr: runs.log; every run's figures: runs.tsv.\n")

    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        w("## Analysis\n")
        w("From bench/ANALYSIS.md (written by hand from these benchmarks and profiles; the figures "
          "above are this run's):\n")
        with open(analysis) as f:
            text = f.read()
        # Drop the file's own title; keep its sections one level down.
        text = re.sub(r"\A# .*\n", "", text)
        w(re.sub(r"^## ", "### ", text, flags=re.M))

    with open(os.path.join(args.reports, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def targets(med, levels, mode):
    rows = []

    def row(name, measured, ok):
        rows.append("| %s | %s | %s |" % (name, measured, "—" if ok is None else ("reached" if ok else "**missed**")))

    lim = raw_limit("tp_k64", med)
    for i in ("evpol-pidfd", "evpol-threaded", "evpol-fast"):
        v = med.get(("tp_k64", i))
        r = ratio("tp_k64", v, lim)
        row("%s throughput at K=64 within 1.15x of the raw limit" % LABEL[i],
            "%s/s vs %s/s: %sx" % (fmt(v), fmt(lim), fmt(r, 3)) if r else "not measured",
            None if r is None else r <= 1.15)
        others = [p for p in ["libuv"] + PY if ("tp_k64", p) in med]
        if v is not None and others:
            best = max(others, key=lambda p: med[("tp_k64", p)])
            ahead = all(v > med[("tp_k64", p)] for p in others)
            row("%s throughput at K=64 ahead of libuv and every CPython watcher" % LABEL[i],
                "%s/s; best of those: %s %s/s" % (fmt(v), LABEL[best], fmt(med[("tp_k64", best)])),
                ahead)
    lim = raw_limit("lat_median_us", med)
    for i in EVPOL:
        v = med.get(("lat_median_us", i))
        if v is None or lim is None:
            continue
        row("%s exit latency median under 50 us above the raw limit" % LABEL[i],
            "%s us vs %s us: %+.1f us" % (fmt(v), fmt(lim), v - lim), v - lim < 50)
    v = med.get(("rss_kib_per_child", "evpol-threaded"))
    if v is not None:
        row("evpol Threaded under 64 KiB resident per pending child", "%s KiB" % fmt(v), v < 64)
    lo, hi = "op_us_p%d" % levels[0], "op_us_p%d" % levels[-1]
    for i in ("evpol-pidfd", "evpol-fast"):
        a, b = med.get((lo, i)), med.get((hi, i))
        if a is None or b is None:
            continue
        judged = "" if levels[-1] >= 1000 else " (judged at P=%d in quick mode)" % levels[-1]
        row("%s flat (within 10%%) from P=10 to P=1,000%s" % (LABEL[i], judged),
            "%s us at P=%d, %s us at P=%d: %.3fx" % (fmt(a), levels[0], fmt(b), levels[-1], b / a),
            b / a <= 1.10)
    return "| target | measured (medians) | result |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def plots(reports, impls, tests, levels, med):
    gp = shutil.which("gnuplot")
    if not gp:
        print("bench: gnuplot not found, no plots")
        return
    jobs = []
    have = [i for i in impls if ("tp_k1", i) in med or ("tp_k64", i) in med]
    if have:
        with open(os.path.join(reports, "throughput.dat"), "w") as f:
            f.write("# impl K=1 K=64\n")
            for i in have:
                f.write('"%s" %s %s\n' % (LABEL[i], med.get(("tp_k1", i), "NaN"), med.get(("tp_k64", i), "NaN")))
        jobs.append(("throughput", """
set terminal svg size 1000,520 dynamic font 'sans,11' noenhanced
set output '{out}/throughput.svg'
set title 'Throughput: children of /bin/true per second (median)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'children / s'
set yrange [0:*]
set grid ytics
set xtics rotate by -35 scale 0
set key top right
plot %s
""" % ", ".join("'{out}/throughput.dat' using %d:xtic(1) title '%s'" % (col, title)
                for col, key, title in ((2, "tp_k1", "K=1"), (3, "tp_k64", "K=64"))
                if any((key, i) in med for i in have))))
    have = [i for i in impls if ("lat_median_us", i) in med]
    if have:
        with open(os.path.join(reports, "latency.dat"), "w") as f:
            f.write("# impl median p99\n")
            for i in have:
                f.write('"%s" %s %s\n' % (LABEL[i], med[("lat_median_us", i)], med.get(("lat_p99_us", i), "NaN")))
        jobs.append(("latency", """
set terminal svg size 1000,520 dynamic font 'sans,11' noenhanced
set output '{out}/latency.svg'
set title 'Exit latency: child _exit to callback (median of runs)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'microseconds'
set logscale y
set grid ytics
set xtics rotate by -35 scale 0
set key top left
plot '{out}/latency.dat' using 2:xtic(1) title 'median', '' using 3 title 'p99'
"""))
    have = [i for i in impls if all(("op_us_p%d" % p, i) in med for p in levels)]
    if have:
        # Two panels: the wall time the target speaks of, and the parent's
        # CPU time, where the O(n) slopes stand out of the machine's noise.
        with open(os.path.join(reports, "scaling.dat"), "w") as f:
            for i in have:
                f.write('# %s: P wall_us parent_cpu_us\n' % LABEL[i])
                for p in levels:
                    f.write("%d %s %s\n" % (p, med[("op_us_p%d" % p, i)],
                                            med.get(("cpu_us_p%d" % p, i), "NaN")))
                f.write("\n\n")

        def plot(col):
            return ", ".join(
                "'{out}/scaling.dat' index %d using 1:%d with linespoints lw %s dt %d pt %d "
                "title '%s'" % (n, col, 2.5 if i in EVPOL else 1.5, 1 if i in EVPOL else 2,
                                n % 13 + 1, LABEL[i]) for n, i in enumerate(have))
        xr = "[%g:%g]" % (levels[0] / 1.6, levels[-1] * 1.6)
        jobs.append(("scaling", """
set terminal svg size 1300,560 dynamic font 'sans,11' noenhanced
set output '{out}/scaling.svg'
set multiplot layout 1,2 title 'One spawn-and-reap of /bin/true while P other children are pending (medians)'
set logscale x
set xrange %s
set xtics (%s)
set xlabel 'P: other children pending'
set grid
set key top left font ',9'
set title 'wall time, spawn call to callback'
set ylabel 'microseconds'
plot %s
set title 'parent CPU time (all threads)'
unset key
plot %s
unset multiplot
""" % (xr, ", ".join(str(p) for p in levels), plot(2), plot(3))))
    for name, script in jobs:
        path = os.path.join(reports, name + ".gp")
        with open(path, "w") as f:
            f.write(script.replace("{out}", reports))
        p = subprocess.run([gp, path], capture_output=True, text=True)
        if p.returncode != 0:
            print("bench: gnuplot %s failed: %s" % (name, p.stderr.strip()))


if __name__ == "__main__":
    sys.exit(main())
