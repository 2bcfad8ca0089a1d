"""covmap.py — which tests reach which code of lib/, so a mutant runs only those.

A test that never executes a mutated line behaves on the mutant exactly as
on the code (execution is the same up to the first time it reaches that
line), so running it cannot kill the mutant. The tools of the field skip it
(PIT, Stryker's perTest coverage analysis, mull); so does `make mutation`.
Once per run, on a --coverage build of the worker's copy of the tree, every
unit of the tier runs alone with its counters sent apart (reports/pertest.py,
the machinery of reports/coverage-clauses):

  each conformance test (one process per test, through the shim's
  EVPOL_TEST_FILTER), each fuzz target's corpus replay, each scenario file
  (the runner runs it on every watcher it names).

The map then says, for each function of lib/, which units enter it. A mutant
runs the units that enter its function, not only those that execute its
line: a threaded test may reach a line only when a race goes one way, and
the function is the unit a race does not hide (a test whose thread enters a
function once in a run reaches its other lines in other runs far more often
than it misses the function altogether). The units that execute the line
itself go first: they are the likeliest to kill. A mutant in a function no
unit enters is NoCoverage: no test of the tier can see it.

Each unit's duration in the map run (an -O0 build with counters, slower than
the plain one) sets the limit of the runs it is part of.
"""

import collections
import concurrent.futures as cf
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "reports"))
import pertest  # noqa: E402

COV_BUILD = "build/coverage"
SHIM = COV_BUILD + "/reports-tools/cmocka-select.so"
FUZZ_TARGETS = ("ops", "races", "scenario")
# The limit of a run: this many times the map-run seconds of its units,
# and at least UNIT_MIN_LIMIT; a hang is still confirmed by a second run
# at twice the limit (run.py).
UNIT_FACTOR = 4
UNIT_MIN_LIMIT = 5.0


def cov_make(wdir, *targets):
    cmd = ["make", "--no-print-directory", "-s", "BUILD=" + COV_BUILD, "CC=gcc",
           "OPT=-O0 -g", "CFLAGS=--coverage", "GCOV_SHARED_LIST=1", "SANITIZE=", "EVPOL_LIB=",
           "REPORTS=%s/reports" % COV_BUILD] + list(targets)
    return subprocess.run(cmd, cwd=wdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")


def tree_hash(wdir, files):
    h = hashlib.sha1()
    for f in sorted(files):
        h.update(f.encode() + b"\0")
        with open(os.path.join(wdir, f), "rb") as fh:
            h.update(hashlib.sha1(fh.read()).digest())
    return h.hexdigest()[:16]


# One process of a mutant's runs: STEP names it (a conformance program,
# "fuzz-replay TARGET", "scenarios"), ARGV and ENV (added to the worker's)
# start it, LIMIT is its time limit; ON_LINE: it holds a unit that executes
# the mutant's line; SECONDS: its units' map-run seconds.
Run = collections.namedtuple("Run", "step argv env limit on_line kind_rank seconds")


class Map:
    """units: uid -> {kind: test|fuzz|scenario, program, name, seconds, ok};
    funcs: file -> [[start, end, name]]; entered: "file\\tfunction" -> [uid];
    lines: "file\\tline" -> [uid]."""

    def __init__(self, doc):
        self.units = doc["units"]
        self.funcs = doc["funcs"]
        self.entered = {k: set(v) for k, v in doc["entered"].items()}
        self.lines = {k: set(v) for k, v in doc["lines"].items()}

    def doc(self):
        return {"units": self.units, "funcs": self.funcs,
                "entered": {k: sorted(v) for k, v in self.entered.items()},
                "lines": {k: sorted(v) for k, v in self.lines.items()}}

    def function_at(self, f, line):
        best = None
        for start, end, name in self.funcs.get(f, []):
            if start <= line <= end and (best is None or start > best[0]):
                best = (start, name)
        return best[1] if best else None

    def covering(self, m):
        """(units that execute the mutant's line, the other units that enter
        its function), each a set of uids."""
        on_line = self.lines.get("%s\t%d" % (m["file"], m["line"]), set())
        # A mutant in a macro's body lies outside every function; gcov puts
        # the expanded code on the lines that use the macro. generate.py
        # names the function the mutated expansion is in.
        fn = self.function_at(m["file"], m["line"]) or m.get("function")
        in_fn = self.entered.get("%s\t%s" % (m["file"], fn), set()) if fn else set()
        return on_line, in_fn - on_line

    def runs(self, m, build, line_only=False):
        """The runs of mutant M against BUILD (the plain tree, or a sanitizer
        tree for the conformance programs): [Run], the runs holding a unit
        that executes the line first, then the quickest; [] when no unit
        reaches M. LINE_ONLY: only the units that execute the line when
        there are any (the sanitizer reruns)."""
        on_line, rest = self.covering(m)
        if line_only and on_line:
            rest = set()
        groups = {}
        for uid in on_line | rest:
            u = self.units[uid]
            step = u["program"] if u["kind"] == "test" else (
                "fuzz-replay " + u["name"] if u["kind"] == "fuzz" else "scenarios")
            g = groups.setdefault(step, {"kind": u["kind"], "units": [], "first": False})
            g["units"].append(u)
            g["first"] = g["first"] or uid in on_line
        out = []
        for step, g in groups.items():
            seconds = sum(u["seconds"] for u in g["units"])
            env = {}
            if g["kind"] == "test":
                argv = [os.path.join(build, "conformance", step)]
                if all(u["ok"] for u in g["units"]):
                    env = {"EVPOL_TEST_NAMES": "\n".join(u["name"] for u in g["units"])}
                else:
                    # A test that fails alone needs an earlier one of its
                    # program: the whole program runs.
                    seconds = sum(u["seconds"] for u in self.units.values()
                                  if u["kind"] == "test" and u["program"] == step)
            elif g["kind"] == "fuzz":
                argv = ["sh", "-c", "FUZZ_BIN=%s/fuzz fuzz/replay.sh %s"
                        % (build, g["units"][0]["name"])]
            else:
                argv = [os.path.join(build, "scenarios", "runner"), "-j", "1"] + sorted(
                    u["name"] for u in g["units"])
            out.append(Run(step, argv, env, max(UNIT_MIN_LIMIT, UNIT_FACTOR * seconds),
                           g["first"], {"test": 0, "fuzz": 1, "scenario": 2}[g["kind"]],
                           seconds))
        out.sort(key=lambda r: (not r.on_line, r.kind_rank, r.seconds))
        return out



def build(wdir, files, programs, scenarios, fuzz, jobs, cache_dir, say):
    """The map of the tree copied in WDIR (FILES: its files, for the cache
    key) for these units: PROGRAMS (conformance program names), SCENARIOS
    (.scn paths relative to the tree), FUZZ (whether the replay is a
    unit). Reused from CACHE_DIR when the same tree and units were mapped
    before."""
    key = tree_hash(wdir, files) + hashlib.sha1(
        json.dumps([programs, scenarios, fuzz]).encode()).hexdigest()[:8]
    cached = os.path.join(cache_dir, "covmap-%s.json" % key)
    if os.path.exists(cached):
        with open(cached, encoding="utf-8") as f:
            say("mutation: coverage map from %s" % cached)
            return Map(json.load(f))
    targets = ["-j%d" % jobs, "all", SHIM] + \
        ["%s/conformance/%s" % (COV_BUILD, p) for p in programs]
    if scenarios:
        targets.append("%s/scenarios/runner" % COV_BUILD)
    if fuzz:
        targets += ["%s/fuzz/%s" % (COV_BUILD, t) for t in FUZZ_TARGETS]
    r = cov_make(wdir, *targets)
    if r.returncode != 0:
        sys.exit("mutation: the coverage build of the map does not build:\n" + r.stdout[-3000:])
    work = os.path.join(wdir, COV_BUILD, "pertest")
    shim = os.path.join(wdir, SHIM)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(wdir, COV_BUILD), LD_PRELOAD=shim)
    env.pop("CMOCKA_MESSAGE_OUTPUT", None)
    env.pop("CMOCKA_XML_FILE", None)
    os.makedirs(work, exist_ok=True)
    jobs_list = []  # (uid, unit, argv, extra env)
    for p in programs:
        prog = os.path.join(wdir, COV_BUILD, "conformance", p)
        try:
            names = pertest.list_tests(prog, shim, work, env)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            sys.exit("mutation: coverage map: %s" % e)
        for i, n in enumerate(names):
            jobs_list.append(("%s#%d" % (p, i), {"kind": "test", "program": p, "name": n},
                              [prog], {"EVPOL_TEST_FILTER": n}))
    if fuzz:
        for t in FUZZ_TARGETS:
            jobs_list.append(("fuzz:" + t, {"kind": "fuzz", "program": "fuzz-replay", "name": t},
                              ["sh", "-c", "FUZZ_BIN=%s/fuzz fuzz/replay.sh %s" % (COV_BUILD, t)],
                              {}))
    for s in scenarios:
        jobs_list.append(("scn:" + s, {"kind": "scenario", "program": "scenarios", "name": s},
                          [os.path.join(COV_BUILD, "scenarios", "runner"), "-j", "1", s], {}))
    build_lib = os.path.join(COV_BUILD, "lib")
    say("mutation: coverage map: %d units (%d tests, %d fuzz targets, %d scenario files), "
        "each alone on the --coverage build, %d at a time..." % (
            len(jobs_list), sum(1 for j in jobs_list if j[1]["kind"] == "test"),
            len(FUZZ_TARGETS) if fuzz else 0, len(scenarios), jobs))

    def one(job):
        uid, unit, argv, extra = job
        d = os.path.join(work, uid.replace("/", "_").replace(":", "_").replace("#", "_"))
        return job, pertest.run_measured(argv, dict(env, **extra), d, build_lib, wdir, 1800)

    units, funcs, entered, lines = {}, {}, {}, {}
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        for (uid, unit, argv, _), res in ex.map(one, jobs_list):
            if res.error and res.rc == 0:
                sys.exit("mutation: coverage map: %s: %s" % (uid, res.error))
            if res.rc != 0 and unit["kind"] != "test":
                sys.exit("mutation: the unmutated %s fails alone (exit %s); fix the suite "
                         "first" % (uid, res.rc))
            units[uid] = dict(unit, seconds=round(res.seconds, 3), ok=res.rc == 0)
            for f, ln in res.lines:
                lines.setdefault("%s\t%d" % (f, ln), set()).add(uid)
            for (f, name), (start, end, count) in res.functions.items():
                funcs.setdefault(f, {})[name] = [start, end, name]
                if count > 0:
                    entered.setdefault("%s\t%s" % (f, name), set()).add(uid)
    cmap = Map({"units": units, "funcs": {f: sorted(v.values()) for f, v in funcs.items()},
                "entered": entered, "lines": lines})
    os.makedirs(cache_dir, exist_ok=True)
    with open(cached + ".tmp", "w", encoding="utf-8") as f:
        json.dump(cmap.doc(), f)
    os.replace(cached + ".tmp", cached)
    failing = sorted(u for u, v in units.items() if not v["ok"])
    say("mutation: coverage map done: %d units%s" % (
        len(units), "; failing alone (their program runs whole): " + " ".join(failing)
        if failing else ""))
    return cmap
