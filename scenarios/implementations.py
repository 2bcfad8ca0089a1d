#!/usr/bin/env python3
"""implementations.py — one scenario suite, every implementation: the matrix.

    implementations.py --reports DIR --evpol-runner BIN [--libuv-runner BIN]
                       [--pythons all|debian|PATH,...] [--expectations FILE]
                       [--spec conformance/SPEC.md] [-j N] [--runs N] [--reuse] PATH...

Runs the scenario files (PATH: files or directories) against
  - evpol: the C runner (scenarios/driver.c) linked to the library under test;
  - CPython: scenarios/python/runner.py under each interpreter found (Debian's
    /usr/bin/python3 first, then pyenv's 3.8 to 3.13, one per minor version);
  - libuv: the adapter over uv_spawn (scenarios/libuv/), where built;
and writes DIR/implementations.tsv (one row per scenario x implementation x
watcher) and DIR/implementations.html (the matrix: one row per scenario and
per clause, one column per implementation x watcher; each cell links to its
failing step and message, and to the known upstream bug when there is one).

The expectations file (scenarios/python/expectations.tsv) records what each
non-evpol cell does today, with the reason; web-platform-tests keeps its
metadata the same way. The run fails when an evpol cell fails, or when any
other cell differs from its recorded expectation: a scenario that starts to
pass on an implementation known to be wrong has stopped testing what it
claims, and one that starts to fail has found something new. Cells recorded
"flaky" (an upstream race) may go either way. Update the file on purpose.
A CPython cell that differs from its expectation is run once more, alone,
before it counts as unexpected: CPython's MultiLoop and Safe watchers race,
and one unlucky run must not fail the suite. The cell keeps the rerun's
result and says, in the reports, that it was rerun and what the first run gave.

One scheduler runs every implementation x scenario x watcher (a cell) at
once, not column by column: -j CPU-bound ("heavy": many children, or a long
time limit) runs at a time, the most expensive first by the CPU time the
last run measured (build/reports/implementations/*/scenarios.tsv, cpu_ms),
and beside them --runs light runs, the longest first, whatever column they
belong to: a light run mostly waits (for a child, or for a CPython watcher
that never delivers), which costs no CPU, so many overlap. Each CPython is
one runner.py --serve that forks every run from a zygote (python/zygote.py);
evpol is its C runner once per cell; libuv's runner is one job. The budget
(scenarios/README.md): the whole matrix in 5 minutes on 2 cores, which CPU
time alone decides (see there what was measured).

The last lines are the summary per implementation (passed, failed, n/a) and
"matrix: N cells, N unexpected".
"""

import argparse
import csv
import fnmatch
import glob
import html
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "python"))
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from steps import Scenario, children_made, collect as scenario_files, is_heavy  # noqa: E402

KINDS = ("threaded", "multiloop", "safe", "fast", "pidfd")
E = html.escape


def python_version(exe):
    try:
        out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30,
                             universal_newlines=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    v = out.stdout.strip()
    return v if re.fullmatch(r"3\.\d+", v) else None


def find_pythons(which):
    """[(label, executable)]: Debian's python3 first, then one per minor
    version; each interpreter left out is printed with the reason."""
    if which not in ("all", "debian"):
        cands = which.split(",")
    else:
        cands = ["/usr/bin/python3"]
        if which == "all":
            home = os.path.expanduser("~/.pyenv/versions")
            for d in sorted(glob.glob(os.path.join(home, "*")),
                            key=lambda p: [int(x) for x in re.findall(r"\d+", p)]):
                exe = os.path.join(d, "bin", "python3")
                if os.path.exists(exe):
                    cands.append(exe)
                else:
                    say("   skipped %s: no python3 (Python 2 has no asyncio)" % d)
    found, seen = [], set()
    for exe in cands:
        v = python_version(exe) if os.access(exe, os.X_OK) else None
        if v is None:
            say("   skipped %s: not a CPython 3 that runs" % exe)
            continue
        if v in seen:
            say("   skipped %s: CPython %s is already a column" % (exe, v))
            continue
        minor = int(v.split(".")[1])
        if not 8 <= minor <= 13:
            say("   skipped %s: CPython %s; the child watchers the suite drives exist in 3.8 "
                "to 3.13 (ThreadedChildWatcher and MultiLoopChildWatcher from 3.8, all of "
                "them gone in 3.14)" % (exe, v))
            continue
        seen.add(v)
        found.append(("cpython-" + v, exe))
    # Debian's is taken first (it wins its minor version); columns go by version.
    return sorted(found, key=lambda f: int(f[0].split(".")[1]))


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_clauses(paths):
    """scenario name -> list of clause IDs, from the files' clauses: headers."""
    out = {}
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.scn"))) if os.path.isdir(p) else [p]
        for f in files:
            name, clauses = None, []
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    m = re.match(r"^(name|clauses):\s*(.*)$", line.strip())
                    if m and m.group(1) == "name":
                        name = m.group(2)
                    elif m:
                        clauses += re.findall(r"[A-Z]+-\d+", m.group(2))
            if name:
                out[name] = clauses
    return out


def read_ext(spec):
    """Clause IDs the spec marks `ext` (evpol's guarantee beyond CPython)."""
    ext = set()
    if spec and os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^- ([A-Z]+-\d+)\s+([a-z+]+):", line)
                if m and "ext" in m.group(2).split("+"):
                    ext.add(m.group(1))
    return ext


def read_expectations(path):
    rows = []
    if not path or not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 5 or cols[3] not in ("pass", "fail", "na", "flaky"):
                raise SystemExit("%s:%d: expected implementation, watcher, scenario, "
                                 "pass|fail|na|flaky, reference, reason (tab-separated)" % (path, n))
            rows.append(dict(impl=cols[0], watcher=cols[1], scenario=cols[2], expected=cols[3],
                             reference=cols[4], reason=cols[5] if len(cols) > 5 else "",
                             line=n))
    return rows


def expectation(rows, impl, watcher, scenario):
    """The first row matching the cell (globs), or None."""
    def hit(value, pats):
        return any(fnmatch.fnmatchcase(value, p) for p in pats.split(","))
    for r in rows:
        if hit(impl, r["impl"]) and hit(watcher, r["watcher"]) and hit(scenario, r["scenario"]):
            return r
    return None


def say(line):
    """One whole line at once: columns run in threads and report as they go."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def previous_costs(out_dir):
    """(scenario, watcher) -> (cpu_ms, duration_ms) from the last run's report,
    to start the longest runs first; empty on a fresh tree."""
    path = os.path.join(out_dir, "scenarios.tsv")
    costs = {}
    if os.path.isfile(path):
        for r in read_tsv(path):
            try:
                costs[(r["scenario"], r["watcher"])] = (float(r.get("cpu_ms") or 0),
                                                        float(r.get("duration_ms") or 0))
            except ValueError:
                pass
    return costs


class Column:
    """One implementation: its jobs (cells still to run), and how to start one."""

    def __init__(self, label, out_dir):
        self.label, self.out_dir = label, out_dir
        self.costs = previous_costs(out_dir)
        self.rows = None          # the column's results, once it is done
        self.summary = "(no output)"
        self.cpu = 0.0            # CPU seconds of its runs (wait4)
        self.t0 = None

    def fresh(self):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "scenarios.tsv")
        if os.path.isfile(path):
            os.remove(path)   # a runner that dies must not leave the last run's results


class PythonColumn(Column):
    """A CPython: one runner.py --serve, which forks each run from its zygote
    when the scheduler asks for it."""

    def __init__(self, label, exe, out_dir, paths, on_result):
        super().__init__(label, out_dir)
        self.fresh()
        cmd = [exe, os.path.join(HERE, "python", "runner.py"), "--serve", "--reports", out_dir]
        say("== %s: %s" % (label, " ".join(cmd + paths)))
        self.proc = subprocess.Popen(cmd + paths, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, universal_newlines=True)
        listing = json.loads(self.proc.stdout.readline() or "[]")
        self.jobs = []
        for i, j in enumerate(listing):
            if j["status"] is None:
                self.jobs.append(Job(self, i, j["scenario"], j["watcher"], j["heavy"],
                                     children=j["children"]))
        self.lock = threading.Lock()
        self.dead = False
        self.on_result = on_result
        self.other = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        by_index = {j.index: j for j in self.jobs}
        for line in self.proc.stdout:
            try:
                r = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip("\n"))
                continue
            job = by_index.pop(r["index"])
            job.cpu = r["cpu_ms"] / 1000.0
            self.on_result(job)
        # The runner is gone: what it never answered is over too (finish()
        # reports the missing results), so the scheduler does not wait forever.
        with self.lock:
            self.dead = True
            for job in by_index.values():
                if job.started:
                    self.on_result(job)

    def start(self, job):
        with self.lock:
            try:
                if self.dead:
                    raise BrokenPipeError
                self.proc.stdin.write("%d %d\n" % (job.index, job.nice))
                self.proc.stdin.flush()
                job.started = True
                return
            except OSError:
                self.dead = True
        self.on_result(job)

    def finish(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.reader.join()
        self.proc.wait()
        lines = [l for l in self.other if l.strip()]
        self.summary = lines[-1] if lines else "(no output)"
        path = os.path.join(self.out_dir, "scenarios.tsv")
        if not os.path.isfile(path):
            raise SystemExit("%s wrote no %s; its output:\n%s" % (
                self.label, path, "\n".join(self.other)[-3000:]))
        self.rows = read_tsv(path)


def run_wait4(cmd):
    """Runs cmd; (exit code, its CPU seconds with every child it reaped, output)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return p.returncode, usage.ru_utime + usage.ru_stime, out


class EvpolColumn(Column):
    """evpol: the C runner once per cell (--only, --watchers), so its cells
    are scheduled with everyone else's; its report is put back together."""

    def __init__(self, label, runner, out_dir, paths, on_result):
        super().__init__(label, out_dir)
        self.fresh()
        self.runner, self.on_result = runner, on_result
        self.jobs = []
        say("== %s: %s, one run per cell" % (label, runner))
        for f in scenario_files(paths):
            sc = Scenario(f)
            for kind in KINDS:
                self.jobs.append(Job(self, len(self.jobs), sc.name, kind, is_heavy(sc), f,
                                     children_made(sc)))
        self.cells = os.path.join(out_dir, "cells")

    def start(self, job):
        def go():
            d = os.path.join(self.cells, "%s@%s" % (job.scenario, job.watcher))
            os.makedirs(d, exist_ok=True)
            rc, job.cpu, out = run_wait4(["nice", "-n", str(job.nice), self.runner, "--reports", d,
                                          "--only", job.scenario, "--watchers", job.watcher,
                                          job.path])
            rows = read_tsv(os.path.join(d, "scenarios.tsv")) if os.path.isfile(
                os.path.join(d, "scenarios.tsv")) else []
            job.row = next((r for r in rows if r["watcher"] == job.watcher), None)
            if job.row is None:
                job.row = dict(scenario=job.scenario, watcher=job.watcher, status="fail",
                               duration_ms="0", file=job.path,
                               detail="the runner wrote no result (exit %s): %s" % (
                                   rc, out.strip()[-500:]))
            job.row["cpu_ms"] = "%.0f" % (job.cpu * 1000)
            self.on_result(job)
        threading.Thread(target=go, daemon=True).start()

    def finish(self):
        self.rows = [j.row for j in self.jobs]
        n = lambda s: sum(1 for r in self.rows if r["status"] == s)
        self.summary = "%d passed, %d failed, %d n/a" % (n("pass"), n("fail"), n("skip"))
        with open(os.path.join(self.out_dir, "scenarios.tsv"), "w", encoding="utf-8") as f:
            cols = ("scenario", "watcher", "status", "duration_ms", "cpu_ms", "file", "detail")
            f.write("\t".join(cols) + "\n")
            for r in self.rows:
                f.write("\t".join(r.get(c, "") for c in cols) + "\n")


class WholeColumn(Column):
    """A runner run as one job (the libuv adapter: its runs are sequential,
    and few scenarios apply)."""

    def __init__(self, label, cmd, out_dir, on_result):
        super().__init__(label, out_dir)
        self.fresh()
        self.cmd, self.on_result = cmd, on_result
        cost = sum(c[1] for c in self.costs.values())
        self.jobs = [Job(self, 0, "(all)", "(all)", False)]
        # Light for the scheduler, but not niced: its runs include
        # thousand-children, under the file's own time limit (2026-12-02, at
        # nice 10 under another session's load, it hung at the spawn step).
        self.jobs[0].nice = 0
        self.jobs[0].wall = cost or 60000.0   # libuv's column took 64 s (2026-12-02)

    def start(self, job):
        def go():
            say("== %s: %s" % (self.label, " ".join(self.cmd)))
            rc, job.cpu, out = run_wait4(["nice", "-n", str(job.nice)] + self.cmd)
            tail = out.strip().splitlines()[-1:] or ["(no output)"]
            self.summary = tail[0]
            path = os.path.join(self.out_dir, "scenarios.tsv")
            if not os.path.isfile(path):
                raise SystemExit("%s wrote no %s; its output:\n%s" % (self.label, path,
                                                                       out[-3000:]))
            self.on_result(job)
        threading.Thread(target=go, daemon=True).start()

    def finish(self):
        self.rows = read_tsv(os.path.join(self.out_dir, "scenarios.tsv"))


class Job:
    def __init__(self, column, index, scenario, watcher, heavy, path=None, children=0.0):
        self.column, self.index, self.scenario, self.watcher = column, index, scenario, watcher
        self.heavy, self.path = heavy, path
        self.nice = 0 if heavy else LIGHT_NICE
        self.cpu = 0.0
        self.row = None
        self.started = False
        cpu, wall = column.costs.get((scenario, watcher), (0.0, 0.0))
        if not wall:
            # Never run here before: a guess, in ms, from the children the
            # run starts. Measured 2026-12-02: a spawn costs about 5 ms of CPU
            # on evpol, 20-30 on CPython from 3.10 (vfork), 30-110 on 3.8
            # and 3.9 (fork; a fork costs more with every thread the
            # Threaded watcher keeps).
            per_child = 5.0
            if isinstance(column, PythonColumn):
                per_child = 60.0 if column.label in ("cpython-3.8", "cpython-3.9") else 25.0
            wall = 3000.0 + children * per_child
        self.wall = wall
        self.cpu_cost = cpu or wall


# Light runs yield the CPU to heavy ones (they wait on children and
# watchers, and give up only 10 s after the last event, so a slower step
# costs them nothing), and a heavy run stays well inside its time limit:
# CPython 3.8's thousand-children@threaded needs about 110 s of CPU of its 360.
LIGHT_NICE = 10


def run_everything(columns, heavy_slots, light_slots):
    """One scheduler for every implementation x scenario x watcher.

    The CPU-bound runs (heavy: many children, or a long time limit) go first,
    the most expensive first (by the CPU the last run measured), at most
    heavy_slots at a time: on 2 cores, two of them already fill the machine.
    Beside them up to light_slots light runs, the longest (wall) first: most
    of their time is spent waiting (for a child, or for a CPython watcher
    that never delivers, SCN_WAIT_LIMIT), which costs no CPU, so many of them
    overlap well, whatever implementation they belong to."""
    cond = threading.Condition()
    state = {"heavy": 0, "light": 0, "left": 0}

    def on_result(job):
        with cond:
            state["heavy" if job.heavy else "light"] -= 1
            state["left"] -= 1
            job.column.cpu += job.cpu
            cond.notify_all()

    cols = [c(on_result) for c in columns]
    heavy = sorted((j for c in cols for j in c.jobs if j.heavy), key=lambda j: -j.cpu_cost)
    light = sorted((j for c in cols for j in c.jobs if not j.heavy), key=lambda j: -j.wall)
    state["left"] = len(heavy) + len(light)
    with cond:
        while heavy or light:
            if heavy and state["heavy"] < heavy_slots:
                job, kind = heavy.pop(0), "heavy"
            elif light and state["light"] < light_slots:
                job, kind = light.pop(0), "light"
            else:
                cond.wait()
                continue
            state[kind] += 1
            if job.column.t0 is None:
                job.column.t0 = time.monotonic()
            job.column.start(job)
        while state["left"]:
            cond.wait()
    for c in cols:
        c.finish()
        say("   %s: %s (CPU %.0f s)" % (c.label, c.summary, c.cpu))
    return cols


def rerun_cell(exe, out_dir, cell, paths):
    """Runs one CPython cell again, alone; its row of scenarios.tsv, or None."""
    cmd = [exe, os.path.join(HERE, "python", "runner.py"), "--reports", out_dir, "-j", "1",
           "--only", cell["scenario"], "--watchers", cell["watcher"]] + paths
    print("   rerun %s %s@%s" % (cell["impl"], cell["scenario"], cell["watcher"]), flush=True)
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(out_dir, "scenarios.tsv")
    if not os.path.isfile(path):
        return None
    for r in read_tsv(path):
        if r["scenario"] == cell["scenario"] and r["watcher"] == cell["watcher"]:
            return r
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", default="build/reports")
    ap.add_argument("--evpol-runner")
    ap.add_argument("--libuv-runner")
    ap.add_argument("--pythons", default="all")
    ap.add_argument("--expectations", default=os.path.join(HERE, "python", "expectations.tsv"))
    ap.add_argument("--spec", default=os.path.join(HERE, "..", "conformance", "SPEC.md"))
    ap.add_argument("-j", type=int, default=2,
                    help="CPU-bound (heavy) runs at once, over every implementation")
    ap.add_argument("--runs", type=int, default=24,
                    help="light runs at once beside them (they mostly wait)")
    ap.add_argument("--reuse", action="store_true",
                    help="judge the last run's results again, without running")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    t_start = time.monotonic()
    work = os.path.join(args.reports, "implementations")
    clauses = read_clauses(args.paths)
    ext = read_ext(args.spec)
    expect_rows = read_expectations(args.expectations)

    columns = []  # (label, reports directory, maker), in the matrix's order
    pythons = {}  # label -> executable, for reruns
    paths = args.paths
    if args.evpol_runner:
        out = os.path.join(work, "evpol")
        columns.append(("evpol", out, lambda on, out=out: EvpolColumn(
            "evpol", args.evpol_runner, out, paths, on)))
    for label, exe in find_pythons(args.pythons):
        pythons[label] = exe
        out = os.path.join(work, label)
        columns.append((label, out, lambda on, label=label, exe=exe, out=out: PythonColumn(
            label, exe, out, paths, on)))
    if args.libuv_runner:
        out = os.path.join(work, "libuv")
        # One job for the whole column: its thousand-children run has no
        # heavy slot of its own and shares the cores with every other run,
        # so it gets twice its file's limit (2026-12-02, 121 s against 120 s
        # at a load of 160, with two other sessions' runs beside the matrix).
        columns.append(("libuv", out, lambda on, out=out: WholeColumn(
            "libuv", [args.libuv_runner, "--timeout-scale", "2", "--reports", out] + paths,
            out, on)))
    if args.reuse:
        # --reuse: judge the results of the last run again (after editing the
        # expectations file) without running anything.
        impls = [(label, read_tsv(os.path.join(out, "scenarios.tsv"))) for label, out, _ in columns
                 if os.path.isfile(os.path.join(out, "scenarios.tsv"))]
    else:
        cols = run_everything([c[2] for c in columns], args.j, args.runs)
        impls = [(c.label, c.rows) for c in cols]
        cpu = sum(c.cpu for c in cols)

    # The cells.
    cells = []
    for label, rows in impls:
        for r in rows:
            status = {"skip": "na"}.get(r["status"], r["status"])
            cell = dict(impl=label, watcher=r["watcher"], scenario=r["scenario"], status=status,
                        detail=r.get("detail", ""), ms=r.get("duration_ms", ""),
                        expected="pass", reference="", reason="", verdict="ok", rerun="")
            if label == "evpol":
                if status == "fail":
                    cell["verdict"] = "evpol fails"
            else:
                e = expectation(expect_rows, label, r["watcher"], r["scenario"])
                if e:
                    cell.update(expected=e["expected"], reference=e["reference"],
                                reason=e["reason"])
                if status == "na":
                    # n/a comes from the scenario (except:), the version (no such
                    # watcher) or a step with no counterpart: never from what the
                    # implementation did, so it is never a change.
                    cell["expected"] = "na"
                elif cell["expected"] == "flaky":
                    pass
                elif status != cell["expected"]:
                    cell["verdict"] = "expected %s, got %s" % (cell["expected"], status)
                    if label in pythons and not args.reuse:
                        again = rerun_cell(pythons[label], os.path.join(work, label + "-rerun"),
                                           cell, args.paths)
                        first = "%s: %s" % (status, cell["detail"]) if cell["detail"] else status
                        cell["rerun"] = "rerun once; the first run gave %s" % first
                        if again is not None:
                            status = {"skip": "na"}.get(again["status"], again["status"])
                            cell.update(status=status, detail=again.get("detail", ""),
                                        ms=again.get("duration_ms", ""))
                        if status == cell["expected"]:
                            cell["verdict"] = "ok"
                        else:
                            cell["verdict"] = "expected %s, got %s (twice)" % (
                                cell["expected"], status)
            ext_clauses = [c for c in clauses.get(r["scenario"], []) if c in ext]
            cell["ext"] = " ".join(ext_clauses)
            cells.append(cell)

    write_tsv(os.path.join(args.reports, "implementations.tsv"), cells, clauses)
    write_html(os.path.join(args.reports, "implementations.html"), impls, cells, clauses, ext)

    # The summary.
    print()
    print("%-16s %7s %7s %7s %11s" % ("implementation", "passed", "failed", "n/a", "unexpected"))
    for label, _ in impls:
        mine = [c for c in cells if c["impl"] == label]
        n = lambda s: sum(1 for c in mine if c["status"] == s)
        print("%-16s %7d %7d %7d %11d" % (label, n("pass"), n("fail"), n("na"),
                                          sum(1 for c in mine if c["verdict"] != "ok")))
    for c in cells:
        if c["rerun"]:
            print("RERUN       %s %s@%s: %s; the rerun gave %s" % (
                c["impl"], c["scenario"], c["watcher"], c["rerun"][:300], c["status"]))
    bad = [c for c in cells if c["verdict"] != "ok"]
    for c in bad:
        print("UNEXPECTED  %s %s@%s: %s\n            %s" % (
            c["impl"], c["scenario"], c["watcher"], c["verdict"], c["detail"][:300]))
    print("reports: %s, %s" % (os.path.join(args.reports, "implementations.tsv"),
                               os.path.join(args.reports, "implementations.html")))
    print("matrix: %d cells, %d unexpected (%.0f s%s)" % (
        len(cells), len(bad), time.monotonic() - t_start,
        "" if args.reuse else ", runs' CPU %.0f s" % cpu))
    return 1 if bad else 0


def tsvf(s):
    return re.sub(r"[\t\r\n]+", " ", s or "")


def write_tsv(path, cells, clauses):
    with open(path, "w", encoding="utf-8") as f:
        f.write("scenario\tclauses\timplementation\twatcher\tstatus\texpected\tverdict\t"
                "reference\text\tdetail\n")
        for c in cells:
            f.write("\t".join(tsvf(x) for x in (
                c["scenario"], " ".join(clauses.get(c["scenario"], [])), c["impl"], c["watcher"],
                c["status"], c["expected"], c["verdict"], c["reference"] or c["reason"], c["ext"],
                "; ".join(x for x in (c["detail"], c["rerun"]) if x))) + "\n")


CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 20px; color: #1d2330; }
table { border-collapse: collapse; margin-bottom: 24px; }
th, td { border: 1px solid #e2e5eb; padding: 2px 5px; text-align: center; }
th.s, td.s { text-align: left; white-space: nowrap; }
td.pass { background: #e6f4ea; } td.fail { background: #fdecea; }
td.xfail { background: #fff4d6; } td.na { background: #f4f5f7; color: #8a93a3; }
td.bad { outline: 3px solid #b42318; }
a { color: inherit; } .detail { text-align: left; font-family: monospace; white-space: pre-wrap; }
th.impl { background: #f4f5f7; }
"""


def cell_class(c):
    if c["status"] == "fail" and c["verdict"] == "ok":
        cls = "xfail"
    else:
        cls = c["status"]
    return cls + (" bad" if c["verdict"] != "ok" else "")


def cell_text(c):
    if c["status"] == "fail":
        text = "fail" if c["verdict"] != "ok" else "xfail"
    else:
        text = {"na": "n/a"}.get(c["status"], c["status"])
    return text + (" (rerun)" if c["rerun"] else "")


def has_detail(c):
    """Whether the cell has a row in the details table (its link's target)."""
    return not (c["status"] == "pass" and c["verdict"] == "ok" and not c["rerun"])


def write_html(path, impls, cells, clauses, ext):
    cols = []
    for label, _ in impls:
        mine = {c["watcher"] for c in cells if c["impl"] == label}
        for k in list(KINDS) + sorted(mine - set(KINDS)):
            if k in mine:
                cols.append((label, k))
    by = {(c["impl"], c["watcher"], c["scenario"]): c for c in cells}
    scenarios = sorted({c["scenario"] for c in cells})
    out = ["<!doctype html><meta charset=utf-8><title>evpol: one suite, every implementation"
           "</title><style>%s</style>" % CSS,
           "<h1>One scenario suite, every implementation</h1>",
           "<p>Each cell: the scenario run against that implementation and watcher. "
           "<b>pass</b>; <b>xfail</b>: fails as recorded in the expectations file, with its "
           "reason (a known upstream bug, or a clause that is evpol's guarantee beyond "
           "CPython, marked <i>ext</i>); <b>fail</b> outlined: not as recorded; "
           "<b>n/a</b>: the watcher or a step does not exist there; <b>(rerun)</b>: the cell "
           "differed from its record and was run once more, the result shown is the "
           "rerun's. Click a cell for the failing step and message.</p>"]
    # Summary per implementation.
    out.append("<table><tr><th class=s>implementation</th><th>pass</th><th>fail (recorded)"
               "</th><th>fail (unexpected)</th><th>n/a</th></tr>")
    for label, _ in impls:
        mine = [c for c in cells if c["impl"] == label]
        out.append("<tr><td class=s>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>" % (
            E(label), sum(c["status"] == "pass" for c in mine),
            sum(c["status"] == "fail" and c["verdict"] == "ok" for c in mine),
            sum(c["verdict"] != "ok" for c in mine), sum(c["status"] == "na" for c in mine)))
    out.append("</table>")

    def header():
        h = ["<tr><th class=s rowspan=2>%s</th>"]
        for label, _ in impls:
            n = sum(1 for col in cols if col[0] == label)
            if n:
                h.append("<th class=impl colspan=%d>%s</th>" % (n, E(label)))
        h.append("</tr><tr>")
        h += ["<th>%s</th>" % E(k[:5]) for _, k in cols]
        h.append("</tr>")
        return "".join(h)

    def anchor(c):
        return "d-%s-%s-%s" % (c["impl"], c["watcher"], c["scenario"])

    out.append("<h2>Scenarios</h2><table>" + header() % "scenario")
    for s in scenarios:
        row = ["<tr><td class=s>%s<br><small>%s</small></td>" % (E(s), " ".join(
            E(c) + ("&nbsp;<i>ext</i>" if c in ext else "") for c in clauses.get(s, [])))]
        for label, k in cols:
            c = by.get((label, k, s))
            if not c:
                row.append("<td></td>")
                continue
            if has_detail(c):
                text = "<a href='#%s'>%s</a>" % (E(anchor(c)), cell_text(c))
            else:
                text = cell_text(c)   # a plain pass: nothing more to show
            row.append("<td class='%s' title='%s'>%s</td>" % (
                cell_class(c), E(c["detail"][:200], quote=True), text))
        out.append("".join(row) + "</tr>")
    out.append("</table>")

    # Per clause: a clause fails in a column when any of its scenarios does.
    all_clauses = sorted({c for cl in clauses.values() for c in cl},
                         key=lambda c: (c.split("-")[0], int(c.split("-")[1])))
    out.append("<h2>Clauses (through the scenarios' clause tags)</h2><table>" +
               header() % "clause")
    for cl in all_clauses:
        scs = [s for s in scenarios if cl in clauses.get(s, [])]
        row = ["<td class=s>%s%s</td>" % (E(cl), " <i>ext</i>" if cl in ext else "")]
        for label, k in cols:
            got = [by[(label, k, s)] for s in scs if (label, k, s) in by]
            sts = [g["status"] for g in got]
            if any(g["verdict"] != "ok" for g in got):
                cls, text = "fail bad", "fail"
            elif "fail" in sts:
                cls, text = "xfail", "xfail"
            elif "pass" in sts:
                cls, text = "pass", "pass"
            else:
                cls, text = "na", "n/a"
            row.append("<td class='%s'>%s</td>" % (cls, text))
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table>")

    # The details: every cell that is not a plain pass.
    out.append("<h2>Failures and n/a, with their reasons</h2><table>"
               "<tr><th class=s>cell</th><th>status</th><th class=s>reference / reason</th>"
               "<th class=s>failing step and message</th></tr>")
    for c in cells:
        if not has_detail(c):
            continue
        ref = c["reference"]
        link = ref
        m = re.match(r"^(gh|bpo)-(\d+)$", ref)
        if m:
            url = ("https://github.com/python/cpython/issues/%s" if m.group(1) == "gh"
                   else "https://bugs.python.org/issue%s") % m.group(2)
            link = "<a href='%s'>%s</a>" % (url, E(ref))
        else:
            link = E(ref)
        reason = " ".join(x for x in (link, E(c["reason"])) if x)
        if c["ext"] and c["status"] == "fail":
            reason += "<br><i>scenario covers ext clause(s): %s</i>" % E(c["ext"])
        if c["rerun"]:
            reason += "<br><i>%s</i>" % E(c["rerun"])
        out.append("<tr id='%s'><td class=s>%s %s@%s</td><td class='%s'>%s</td>"
                   "<td class=s style='white-space:normal;max-width:420px'>%s</td>"
                   "<td class=detail>%s</td></tr>" % (
                       E(anchor(c)), E(c["impl"]), E(c["scenario"]), E(c["watcher"]),
                       cell_class(c), E(cell_text(c) + ("" if c["verdict"] == "ok"
                                                        else ": " + c["verdict"])),
                       reason, E(c["detail"])))
    out.append("</table>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
