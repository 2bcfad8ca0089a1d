#!/usr/bin/python3
"""run.py — mutation testing of evpol: build each mutant, run the suites on it.

    run.py [--files "lib/a.c ..."] [--sample N] [--seed S] [--jobs 2]
           [--tier full|conformance|ci] [--sanitize [SANS]] [--floor PCT] [--reports DIR]
           [--work DIR] [--keys FILE]

For each mutant (generate.py) in the sample, run only the tests that can
see it. Once per run, the coverage map (covmap.py) runs every unit of the
tier alone on a --coverage build: each conformance test, each fuzz target's
corpus replay, each scenario file (tier "full": every conformance program,
the replay and the scenarios; "conformance": no scenario; "ci": the
conformance programs but the four that wait on real children for seconds,
the replay). A mutant whose function no unit enters is NoCoverage (not
killed, listed apart) and is not even built. The others are written into a
worker's copy of the tree and built (one object, the shared library, and
the replay programs that link the objects when the replay reaches the
mutant; a mutant that does not compile is counted and discarded), then run
the units that reach them, those that execute the mutated line first,
stopping at the first failure: per conformance program one process running
its covering tests (the shim's EVPOL_TEST_NAMES), the replay of each
covering fuzz target, the covering scenario files in one runner.

A run that fails or crashes kills the mutant; one that outlives its limit
(from its units' durations in the map run) runs once more with twice that
limit, and only a second timeout (a hang) kills it, so a machine slowed by
other work does not pass for a deadlocked mutant. Every verdict is appended
to WORK/results.jsonl as it comes. With --sanitize, the covering
conformance tests also run against the TSan and the ASan+UBSan builds
(data races, reads out of bounds and use after free that the plain build
cannot see; only the sanitizer tree's library is rebuilt, its programs were
built once), placed among the plain runs by what each costs (plan());
--sanitize thread runs only the TSan build.

Every run is jailed: each program runs in a PID namespace of its own
(unshare --pid --fork --mount-proc), so a mutant that signals pid 0 or -1
reaches nothing outside it. If the kernel refuses the namespace, the run
stops before any mutant runs.

Two workers (both cores). Results: DIR/mutation.json (the mutation testing
report schema that Stryker and PIT share), DIR/mutation.txt (the score
overall, per file, per clause family of the killing tests) and the closing
line "mutation: K killed / N (S%)", N counting neither the equivalent
mutants (equivalent.tsv) nor those that did not compile; NoCoverage counts
as not killed. Below --floor the run fails.
"""
import argparse
import collections
import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

import covmap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
JAIL = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
BUILD = "build/default"
LIB_VERSION = "0.1.0"
# The programs that wait on real children for many seconds each; the ci
# tier leaves them out (the fake-kernel programs cover the same watchers).
REAL_KERNEL_WATCHER_PROGRAMS = ("test_watcher_threaded", "test_watcher_multiloop",
                                "test_watcher_pidfd", "test_watcher_safe")
# A timed-out program runs once more with this many times its limit before
# the mutant counts as killed by a hang (run_step).
HANG_RETRY = 2
# The sanitizer builds of --sanitize's default: TSan for data races (a
# deleted lock, the survivor of the plain build seen most, shows in the
# first TSan program that takes the lock: "unlock of an unlocked mutex"),
# ASan+UBSan for reads out of bounds and use after free.
SANITIZERS = ("thread", "address,undefined")
# The sanitizer builds run several times slower (TSan most): their runs get
# this many times the plain limit.
SANITIZER_LIMIT_FACTOR = 6
# The limit of each program's whole run in the sanitizer baseline (the
# slowest, test_watcher_threaded under TSan, takes 11 s on the idle machine).
BASELINE_LIMIT = 600
# What a second of a program's map run costs in each build, to order a
# mutant's runs (plan()). Measured on the idle machine (2026-12-03, whole
# programs): test_watcher_threaded 1.2 s plain, 10.7 s under TSan, 5.0 s
# under ASan+UBSan; test_watcher_safe 0.8, 6.2, 3.8; the short programs
# (test_loop, test_spawn) 1.1 to 2 times, mostly start-up.
SLOWDOWN = {None: 1, "thread": 8, "address,undefined": 4}
# The share of mutants that hang: 67 of the 400 of seed 1 (2026-12-03).
# With runs ordered by run time alone, 8 of those hangs met a sanitizer run
# first and cost 90 s each instead of 15.
P_HANG = 0.17

_print_lock = threading.Lock()


def say(*a):
    with _print_lock:
        print(*a, flush=True)


def sh(cmd, cwd, env=None, timeout=None):
    return subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")


def check_jail():
    try:
        r = subprocess.run(JAIL + ["sh", "-c", "test $$ = 1"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        r = None
        msg = str(e)
    if r is None or r.returncode != 0:
        msg = r.stdout.strip() if r is not None else msg
        sys.exit("mutation: cannot make a PID namespace for the mutants (%s).\n"
                 "mutation: mutants must run jailed (one may signal pid -1: as root, every "
                 "process); run it as root (CI is). Nothing was run." % (msg or "unshare failed"))


def load_equivalents(path):
    eq = {}
    if not os.path.exists(path):
        return eq
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            key, _, reason = line.rstrip("\n").partition("\t")
            if not reason.strip():
                sys.exit("mutation: %s: %s has no reason" % (path, key))
            eq[key] = reason.strip()
    return eq


def ignored(equivalents, m):
    """The verdict of a mutant listed in equivalent.tsv."""
    return {"status": "Ignored", "reason": "equivalent: " + equivalents[m["key"]]}


def clauses_of_scenarios():
    out = {}
    for d in ("scenarios", "scenarios/regressions"):
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            if name.endswith(".scn"):
                with open(os.path.join(ROOT, d, name), encoding="utf-8") as f:
                    m = re.search(r"^clauses:\s*(.*)$", f.read(), re.M)
                out[name[:-4]] = m.group(1).split() if m else []
    return out


class Worker:
    """A copy of the tree with its own build, for one mutant at a time."""

    def __init__(self, index, work):
        self.dir = os.path.join(work, "slot%d" % index)
        self.env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(self.dir, BUILD))

    def make(self, *targets, san=None, timeout=None):
        # Warnings stay warnings: a deleted call that leaves a function
        # unused is still a mutant to run, not one that "does not compile".
        cmd = ["make", "--no-print-directory", "-s", "CFLAGS=-Wno-error"]
        if san:
            cmd.append("SANITIZE=" + san)
        else:
            cmd.append("BUILD=" + BUILD)
        return sh(cmd + list(targets), self.dir, self.env, timeout)


def copy_tree(dst):
    """Copies the tree's files (tracked, and new ones not ignored) to DST;
    returns their paths."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True, check=True).stdout.split("\n")
    copied = []
    for f in files:
        if not f or not os.path.isfile(os.path.join(ROOT, f)):
            continue
        d = os.path.join(dst, f)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), d)
        copied.append(f)
    return copied


class Suite:
    """The units of the tier: conformance programs, whether the fuzz replay
    runs, the scenario files. Which of them a mutant runs is the coverage
    map's call (covmap.py)."""

    def __init__(self, tier, wdir):
        self.tier = tier
        self.programs = sorted(n for n in os.listdir(os.path.join(wdir, "conformance"))
                               if n.startswith("test_") and n.endswith(".c"))
        self.programs = [n[:-2] for n in self.programs]
        if tier == "ci":
            self.programs = [n for n in self.programs if n not in REAL_KERNEL_WATCHER_PROGRAMS]
        self.fuzz = True
        self.scenarios = []
        if tier == "full":
            for d in ("scenarios", "scenarios/regressions"):
                if os.path.isdir(os.path.join(wdir, d)):
                    self.scenarios += sorted(os.path.join(d, n) for n in
                                             os.listdir(os.path.join(wdir, d))
                                             if n.endswith(".scn"))


def run_step(w, argv, limit, env=None):
    """run_jailed, with a hang confirmed before it counts: a program that
    outlives its limit runs once more with HANG_RETRY times that limit, and
    only a second timeout is a hang. A machine loaded by other work slows
    every program; a mutant that deadlocks or loops hangs however long it
    gets. ("ok"|"fail"|"timeout", output, retried)."""
    outcome, out = run_jailed(w, argv, limit, env)
    if outcome != "timeout":
        return outcome, out, False
    outcome, out = run_jailed(w, argv, limit * HANG_RETRY, env)
    return outcome, out, True


def run_jailed(w, argv, limit, env=None):
    """("ok"|"fail"|"timeout", output)."""
    cmd = JAIL + ["timeout", "-k", "5", "%d" % int(limit)] + argv
    try:
        r = sh(cmd, w.dir, env or w.env, timeout=limit + 30)
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or "") if isinstance(e.stdout, str) else ""
    if r.returncode == 124 or r.returncode == 137:
        return "timeout", r.stdout
    return ("ok" if r.returncode == 0 else "fail"), r.stdout


FAILED_TEST = re.compile(r"^\[  FAILED  \] (\S+) \[([^\]]*)\]", re.M)
FAILED_SCN = re.compile(r"^FAIL\s+(\S+)@(\S+)", re.M)


def killers(step, output, scn_clauses):
    """The tests that failed, each with its clause IDs."""
    tests = {}
    if step.startswith("test_"):
        for m in FAILED_TEST.finditer(output):
            tests["%s: %s" % (step, m.group(1))] = m.group(2).split()
    elif step.startswith("scenarios"):
        for m in FAILED_SCN.finditer(output):
            tests["scenario %s@%s" % (m.group(1), m.group(2))] = scn_clauses.get(m.group(1), [])
    if not tests:
        tests[step] = []
    return tests


def mutate(text, m):
    b = text.encode()
    return (b[:m["offset"]] + m["replacement"].encode() + b[m["offset"] + m["length"]:]).decode()


def step_env(w, base, extra):
    """The environment of one run: BASE, and the shim when the run names
    its tests (EVPOL_TEST_NAMES)."""
    env = dict(base, **extra)
    if "EVPOL_TEST_NAMES" in extra:
        env["LD_PRELOAD"] = w.shim
    return env


def plan(m, cmap, sanitize, san_broken=None):
    """The runs of mutant M, each (sanitizer or None, covmap.Run), in the
    order they run: the verdict does not depend on the order (a mutant
    survives only if every run passes), the time does. A deleted lock
    passes every plain run and fails the first TSan run that takes the
    lock; with the sanitizer runs after all the plain ones it waited for
    the slow plain programs first (61 to 201 s for each of the first five
    such mutants of a full run: about half the worker time of its first
    hundred verdicts). So each run is placed by what it is expected to
    cost: the runs that execute the mutant's line first, then by
    expected_cost()."""
    out = [(None, r) for r in cmap.runs(m, BUILD)]
    for san in sanitize:
        # Only the conformance programs have sanitizer builds here.
        out += [(san, r) for r in cmap.runs(m, san_dir(san), line_only=True)
                if r.step.startswith("test_") and r.step not in (san_broken or {}).get(san, {})]
    out.sort(key=lambda sr: (not sr[1].on_line, expected_cost(*sr)))
    return out


def expected_cost(san, run):
    """Seconds a run is expected to cost: its map seconds times the build's
    slowdown when it passes, its two limits when the mutant hangs (P_HANG
    of them do). A hang then meets a short plain run (5 s, then 10) before
    a sanitizer run of the same tests (30 s, then 60), while a deleted lock
    still meets a short TSan run before a plain program that waits on real
    children for many seconds."""
    limit = run.limit * (SANITIZER_LIMIT_FACTOR if san else 1)
    return run.seconds * SLOWDOWN[san] + P_HANG * limit * (1 + HANG_RETRY)


def san_dir(san):
    return "build/san-" + san.replace(",", "-")


def san_env(w, san):
    # ASan wants its runtime first in the list of libraries; the shim,
    # preloaded, comes before it and interposes nothing ASan needs.
    return dict(w.env, LD_LIBRARY_PATH=os.path.join(w.dir, san_dir(san)),
                ASAN_OPTIONS="verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""))


class Pool:
    """The workers, each lent to one job at a time (each has a tree of its
    own)."""

    def __init__(self, workers):
        self.free, self.lock = list(workers), threading.Lock()

    @contextlib.contextmanager
    def lend(self):
        with self.lock:
            w = self.free.pop()
        try:
            yield w
        finally:
            with self.lock:
                self.free.append(w)


def sanitizer_baseline(pool, programs, sanitize):
    """{sanitizer: {program: reason}}: the conformance programs that fail
    under a sanitizer build of the unmutated tree. A kill under that build
    would then be unearned (the program fails whatever the mutant), so
    plan() leaves those programs out of that build's runs and the report
    names them. Once TSan's own background thread, started by a program's
    first thread, counted as a thread leak in whichever test came first."""
    jobs = [(san, p) for san in sanitize for p in programs]
    broken = {san: {} for san in sanitize}

    def one(job):
        san, prog = job
        with pool.lend() as w:
            outcome, out = run_jailed(w, [os.path.join(san_dir(san), "conformance", prog)],
                                      BASELINE_LIMIT, san_env(w, san))
        if outcome != "ok":
            failed = [t for t, _ in FAILED_TEST.findall(out)]
            last = out.strip().splitlines()[-1:] or ["no output"]
            broken[san][prog] = "%s without a mutant (%s)" % (
                "fails" if outcome == "fail" else "outlives %ds" % BASELINE_LIMIT,
                ", ".join(failed) or last[0][:120])

    with cf.ThreadPoolExecutor(max_workers=len(pool.free)) as ex:
        list(ex.map(one, jobs))
    return broken


def run_plan(w, runs, scn_clauses, slow):
    """Runs RUNS (plan()) in order. The verdict of the first that fails or
    hangs (Killed or Timeout), or None when all pass; those that passed
    only on the longer rerun are appended to SLOW."""
    built = {}
    for san, run in runs:
        env, limit, where = w.env, run.limit, run.step
        if san:
            if san not in built:
                # The sanitizer tree's programs were built once, at the
                # start; they load the library, so only the library is
                # rebuilt.
                r = w.make("%s/libevpol.so.%s" % (san_dir(san), LIB_VERSION), san=san,
                           timeout=1800)
                built[san] = r.returncode == 0
            if not built[san]:
                continue
            env = san_env(w, san)
            limit *= SANITIZER_LIMIT_FACTOR
            where += " under " + san
        outcome, out, retried = run_step(w, run.argv, limit, step_env(w, env, run.env))
        if outcome == "timeout":
            return {"status": "Timeout", "killers": {run.step: []},
                    "reason": "%s outlived its %ds limit, then %ds" % (
                        where, limit, limit * HANG_RETRY)}
        if outcome == "fail":
            return {"status": "Killed", "killers": killers(run.step, out, scn_clauses),
                    "reason": "%s failed%s" % (where, " (on the rerun after a timeout)"
                                               if retried else "")}
        if retried:
            slow.append(where)
    return None


def run_mutant(w, m, cmap, sanitize, scn_clauses, san_broken=None):
    runs = plan(m, cmap, sanitize, san_broken)
    if not runs:
        return {"status": "NoCoverage",
                "reason": "no unit of the tier enters %s (the coverage map)"
                          % (cmap.function_at(m["file"], m["line"]) or m.get("function")
                             or "this line")}
    src = os.path.join(w.dir, m["file"])
    with open(src, encoding="utf-8") as f:
        original = f.read()
    try:
        with open(src, "w", encoding="utf-8") as f:
            f.write(mutate(original, m))
        # Only what the plain runs need: the library (one object), and the
        # replay programs that link its objects when the replay reaches it.
        targets = ["%s/libevpol.so.%s" % (BUILD, LIB_VERSION)] + [
            "%s/fuzz/%s" % (BUILD, run.step.split()[1]) for san, run in runs
            if not san and run.step.startswith("fuzz-replay ")]
        r = w.make(*targets, timeout=600)
        if r.returncode != 0:
            return {"status": "CompileError", "reason": r.stdout[-400:]}
        slow = []  # programs that outlived their limit once, then passed
        verdict = run_plan(w, runs, scn_clauses, slow)
        if verdict:
            return verdict
        return {"status": "Survived", "slow": slow, "reason": "every unit that reaches it "
                "passed (%s)" % ", ".join(sorted({run.step for _, run in runs})) + (
                    " (%s outlived the limit once, then passed)" % ", ".join(slow)
                    if slow else "")}
    finally:
        with open(src, "w", encoding="utf-8") as f:
            f.write(original)


def report_json(mutants, results, equivalents, out_path):
    files = collections.OrderedDict()
    tests = {}
    for m in mutants:
        res = results.get(m["key"])
        if res is None:
            continue
        entry = files.setdefault(m["file"], {"language": "c", "mutants": []})
        status = res["status"]
        mut = {
            "id": m["key"],
            "mutatorName": m["mutator"],
            "replacement": m["replacement"],
            "location": {"start": {"line": m["line"], "column": m["column"]},
                         "end": {"line": m["end_line"], "column": m["end_column"]}},
            "status": status,
            "statusReason": res.get("reason", ""),
        }
        if res.get("killers"):
            ids = []
            for t, clauses in sorted(res["killers"].items()):
                tid = hashlib.sha1(t.encode()).hexdigest()[:12]
                tests.setdefault(tid, {"id": tid, "name": t + (" [%s]" % " ".join(clauses)
                                                                if clauses else "")})
                ids.append(tid)
            mut["killedBy"] = ids
        entry["mutants"].append(mut)
    for f, entry in files.items():
        with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
            entry["source"] = fh.read()
    doc = {
        "$schema": "https://git.io/mutation-testing-schema",
        "schemaVersion": "2",
        "thresholds": {"high": 95, "low": 80},
        "projectRoot": ".",
        "files": files,
        "testFiles": {"conformance, scenarios, fuzz replay": {"tests": list(tests.values())}},
        "framework": {"name": "evpol make mutation"},
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)


def score(rows):
    killed = sum(1 for r in rows if r in ("Killed", "Timeout"))
    # NoCoverage (no test reaches the mutant) counts as not killed, as in
    # the report schema's score.
    n = sum(1 for r in rows if r in ("Killed", "Timeout", "Survived", "NoCoverage"))
    return killed, n, (100.0 * killed / n if n else 0.0)


def listed(mutants, results, status):
    """The lines of mutation.txt naming the mutants of this status."""
    return ["  %s:%d  %s  (%s -> %s)" % (m["file"], m["line"], m["key"],
                                        " ".join(m["original"].split())[:60], m["replacement"])
            for m in mutants if results.get(m["key"], {}).get("status") == status]


def report_text(mutants, results, out_path, args):
    lines = []
    st = [results[m["key"]]["status"] for m in mutants if m["key"] in results]
    k, n, s = score(st)
    c = collections.Counter(st)
    lines.append("mutation: %d killed / %d (%.1f%%)" % (k, n, s))
    slow = sum(1 for m in mutants if results.get(m["key"], {}).get("slow"))
    lines.append("sample: %d of the %d mutants of %s (seed %s); %d equivalent (ignored), %d did "
                 "not compile, %d hung (counted killed: a program outlived its limit, then %d "
                 "times that limit); %d survivors passed a rerun after one timeout; %d reached "
                 "by no test (NoCoverage, counted not killed)"
                 % (len(st), args.total, " ".join(args.files), args.seed, c["Ignored"],
                    c["CompileError"], c["Timeout"], HANG_RETRY, slow, c["NoCoverage"]))
    if len(st) < len(mutants):
        lines.append("NOT MEASURED: %d mutants of the sample have no verdict (the run was "
                     "stopped before them); the score covers the other %d"
                     % (len(mutants) - len(st), len(st)))
    for san, progs in sorted(getattr(args, "san_broken", {}).items()):
        for prog, why in sorted(progs.items()):
            lines.append("sanitizer baseline: %s under %s %s: left out of that build's runs"
                         % (prog, san, why))
    lines.append("floor: %g%%" % args.floor)
    lines.append("")
    lines.append("per file:")
    per = collections.defaultdict(list)
    for m in mutants:
        if m["key"] in results:
            per[m["file"]].append(results[m["key"]]["status"])
    for f in sorted(per):
        fk, fn, fs = score(per[f])
        lines.append("  %-28s %4d / %-4d %5.1f%%" % (f, fk, fn, fs))
    lines.append("")
    lines.append("per clause family (mutants killed by a test tagged with it):")
    fam = collections.Counter()
    for m in mutants:
        res = results.get(m["key"])
        if not res or not res.get("killers"):
            continue
        fams = set()
        for clauses in res["killers"].values():
            fams.update(cl.split("-")[0] for cl in clauses)
        for x in fams or {"(program-level)"}:
            fam[x] += 1
    for x, v in sorted(fam.items()):
        lines.append("  %-16s %d" % (x, v))
    lines.append("")
    lines.append("survivors (gaps):")
    lines += listed(mutants, results, "Survived")
    lines.append("")
    lines.append("no coverage (no test of the tier enters the mutant's function: the clearest "
                 "gaps):")
    lines += listed(mutants, results, "NoCoverage")
    lines.append("")
    lines.append("hangs (killed by the time limit, twice):")
    for m in mutants:
        res = results.get(m["key"])
        if res and res["status"] == "Timeout":
            lines.append("  %s:%d  %s  (%s)" % (m["file"], m["line"], m["key"], res["reason"]))
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return lines[0], s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default="")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tier", choices=("full", "conformance", "ci"), default="full")
    ap.add_argument("--sanitize", nargs="?", const=" ".join(SANITIZERS), default="",
                    help="the sanitizer builds the covering conformance tests also run against, space-separated "
                         "(default: %s)" % " ".join(SANITIZERS))
    ap.add_argument("--floor", type=float, default=0.0)
    ap.add_argument("--reports", default="build/reports")
    ap.add_argument("--work", default="build/mutation")
    ap.add_argument("--keys", default="",
                    help="a file of mutant keys, one a line: run only those (a rerun of the "
                         "survivors of mutation.txt after closing gaps)")
    ap.add_argument("--results", default="",
                    help="results.jsonl files of earlier runs, space-separated: run nothing, "
                         "write the reports of the sample from their verdicts (a later file's "
                         "verdict for a mutant replaces an earlier one's: a --keys rerun after "
                         "closing gaps, or a sample split between runs)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="with --results: a mutant without a verdict is left out of the "
                         "reports (the headline says how many) instead of failing")
    args = ap.parse_args()
    os.chdir(ROOT)
    if not args.results:
        check_jail()
    args.files = args.files.split() or sorted(
        os.path.join("lib", f) for f in os.listdir("lib") if f.endswith(".c"))
    gen = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "generate.py")] + args.files,
                         stdout=subprocess.PIPE, check=True, text=True)
    mutants = json.loads(gen.stdout)
    args.total = len(mutants)
    if args.keys:
        with open(args.keys, encoding="utf-8") as f:
            wanted = {line.strip() for line in f if line.strip()}
        mutants = [m for m in mutants if m["key"] in wanted]
        unknown = wanted - {m["key"] for m in mutants}
        if unknown:
            sys.exit("mutation: %s: no such mutant in %s: %s"
                     % (args.keys, " ".join(args.files), " ".join(sorted(unknown))))
    if args.sample and args.sample < len(mutants):
        mutants = random.Random(args.seed).sample(mutants, args.sample)
    mutants.sort(key=lambda m: (m["file"], m["offset"], m["replacement"]))
    equivalents = load_equivalents(os.path.join(HERE, "equivalent.tsv"))

    if args.results:
        finish(args, mutants, merged_results(args.results.split(), mutants, equivalents,
                                             args.allow_missing), equivalents)
        return

    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    say("mutation: %d mutants of %d (%s), %d worker(s), building..." % (
        len(mutants), args.total, "seed %s" % args.seed if args.sample else "all", args.jobs))
    workers = [Worker(i, work) for i in range(args.jobs)]
    files = copy_tree(workers[0].dir)
    fuzz_bins = ["%s/fuzz/%s" % (BUILD, t) for t in covmap.FUZZ_TARGETS]
    r = workers[0].make("-j%d" % args.jobs, "all", "tests", "%s/scenarios/runner" % BUILD,
                        *fuzz_bins)
    if r.returncode != 0:
        sys.exit("mutation: the unmutated tree does not build:\n" + r.stdout[-3000:])
    args.sanitize = args.sanitize.split()
    unknown = [s for s in args.sanitize if s not in SANITIZERS]
    if unknown:
        sys.exit("mutation: --sanitize: no %s build (there are: %s)"
                 % (" ".join(unknown), " ".join(SANITIZERS)))
    for san in args.sanitize:
        r = workers[0].make("-j%d" % args.jobs, "tests", san=san)
        if r.returncode != 0:
            sys.exit("mutation: the %s build does not build:\n%s" % (san, r.stdout[-3000:]))
    for w in workers[1:]:
        shutil.copytree(workers[0].dir, w.dir, symlinks=True)
    suite = Suite(args.tier, workers[0].dir)
    t0 = time.time()
    cmap = covmap.build(workers[0].dir, files, suite.programs, suite.scenarios, suite.fuzz,
                        args.jobs, os.path.join(ROOT, "build", "mutation-cache"), say)
    for w in workers:
        w.shim = os.path.join(workers[0].dir, covmap.SHIM)
    say("mutation: coverage map ready in %.0fs (load %s)" % (
        time.time() - t0, open("/proc/loadavg").read().split()[0]))
    scn_clauses = clauses_of_scenarios()
    t0 = time.time()
    pool = Pool(workers)
    san_broken = sanitizer_baseline(pool, suite.programs, args.sanitize)
    args.san_broken = san_broken
    if args.sanitize:
        say("mutation: sanitizer baseline (each conformance program whole, unmutated) in %.0fs"
            % (time.time() - t0))
    for san in args.sanitize:
        for prog, why in sorted(san_broken[san].items()):
            say("mutation: WARNING: %s under %s %s: left out of that build's runs"
                % (prog, san, why))

    results = {}
    todo = []
    for m in mutants:
        if m["key"] in equivalents:
            results[m["key"]] = ignored(equivalents, m)
        else:
            todo.append(m)
    log_lock = threading.Lock()
    done = [0]

    def job(m):
        with pool.lend() as w:
            t0 = time.time()
            res = run_mutant(w, m, cmap, args.sanitize, scn_clauses, san_broken)
        results[m["key"]] = res
        with log_lock:
            # Each verdict as it comes, for triage while the run goes on.
            log.write(json.dumps(dict(res, key=m["key"], file=m["file"], line=m["line"])) + "\n")
            log.flush()
        done[0] += 1
        say("[%d/%d] %-9s %s:%d %s (%.0fs)" % (done[0], len(todo), res["status"], m["file"],
                                                m["line"], m["key"].split(":", 2)[2],
                                                time.time() - t0))

    with open(os.path.join(work, "results.jsonl"), "w", encoding="utf-8") as log, \
            cf.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        list(ex.map(job, todo))

    finish(args, mutants, results, equivalents)


def merged_results(paths, mutants, equivalents, allow_missing=False):
    """The verdicts of results.jsonl files for the sample: equivalents as
    Ignored, the last verdict of each other mutant; every mutant needs one
    unless allow_missing (a run stopped before its end)."""
    found = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    found[r["key"]] = {k: v for k, v in r.items()
                                       if k not in ("key", "file", "line")}
    results = {}
    missing = []
    for m in mutants:
        if m["key"] in equivalents:
            results[m["key"]] = ignored(equivalents, m)
        elif m["key"] in found:
            results[m["key"]] = found[m["key"]]
        else:
            missing.append(m["key"])
    if missing and not allow_missing:
        sys.exit("mutation: no verdict in %s for %d mutants of the sample, e.g. %s"
                 % (" ".join(paths), len(missing), missing[0]))
    return results


def finish(args, mutants, results, equivalents):
    os.makedirs(args.reports, exist_ok=True)
    report_json(mutants, results, equivalents, os.path.join(args.reports, "mutation.json"))
    headline, s = report_text(mutants, results, os.path.join(args.reports, "mutation.txt"), args)
    with open(os.path.join(args.reports, "mutation.txt"), encoding="utf-8") as f:
        sys.stdout.write(f.read())
    say("reports: %s/mutation.json, %s/mutation.txt" % (args.reports, args.reports))
    say(headline)
    if s < args.floor:
        say("mutation: %.1f%% is under the floor of %s%%" % (s, args.floor))
        sys.exit(1)


if __name__ == "__main__":
    main()
