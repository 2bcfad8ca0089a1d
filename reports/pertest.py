"""pertest.py — run one test (or any program) alone and read what of lib/ it ran.

Shared by reports/coverage-clauses (which clause families reach which lines)
and conformance/mutation/run.py (which tests reach which mutant). cmocka runs
all the tests of a program in one process, and gcov counts per process, so
the coverage of one test needs that test alone in a process: the shim
(reports/cmocka-select.c, preloaded) lists a program's tests
(EVPOL_TEST_LIST) and runs one (EVPOL_TEST_FILTER), and GCOV_PREFIX sends
each run's counters to a directory of its own, read back with
`gcov --json-format`.
"""

import json
import os
import shutil
import subprocess
import time


def rel(path, base, root):
    """PATH (relative to BASE) relative to ROOT."""
    return os.path.relpath(os.path.normpath(os.path.join(base, path)), root)


def list_tests(program, shim, work, env_base):
    """The names of PROGRAM's tests, in its order."""
    listing = os.path.join(work, os.path.basename(program) + ".list")
    if os.path.exists(listing):
        os.unlink(listing)
    env = dict(env_base, EVPOL_TEST_LIST=listing, LD_PRELOAD=shim,
               GCOV_PREFIX=os.path.join(work, "_listing"))
    r = subprocess.run([program], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0 or not os.path.exists(listing):
        raise RuntimeError("%s: could not list its tests (exit %s): %s"
                           % (program, r.returncode, r.stdout.decode(errors="replace")[-500:]))
    names = []
    with open(listing, encoding="utf-8") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if "\t" in raw:
                names.append(raw.split("\t", 1)[1])
    return names


class Measured:
    """What one run executed: rc, seconds, the (file, line) of lib/ with a
    count, and every function of lib/ gcov knows, (file, name) ->
    (first line, last line, times entered)."""

    def __init__(self):
        self.rc = None
        self.seconds = 0.0
        self.lines = set()
        self.functions = {}
        self.error = None


def run_measured(argv, env, d, build_lib, root, timeout, cwd=None):
    """Run ARGV (an instrumented program of the tree ROOT, with ENV: the
    shim preloaded, a test selected) with its counters sent to the fresh
    directory D; BUILD_LIB is the instrumented lib/ objects' directory
    relative to ROOT. The output goes to D/log. Returns a Measured."""
    out = Measured()
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    strip = len([p for p in os.path.abspath(root).split(os.sep) if p])
    env = dict(env, GCOV_PREFIX=d, GCOV_PREFIX_STRIP=str(strip))
    t0 = time.time()
    with open(os.path.join(d, "log"), "wb") as log:
        r = subprocess.run(["timeout", "--kill-after=10", str(int(timeout))] + argv, env=env,
                           cwd=cwd or root, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT)
    out.seconds = time.time() - t0
    out.rc = r.returncode
    # The counters of lib/ land in d/<build>/lib, beside which gcov needs the
    # notes files of the build.
    libdir = os.path.join(d, build_lib)
    gcdas = sorted(os.path.join(libdir, f) for f in os.listdir(libdir)
                   if f.endswith(".gcda")) if os.path.isdir(libdir) else []
    if not gcdas:
        out.error = "no coverage data (exit %s)" % out.rc
        return out
    for g in gcdas:
        note = os.path.join(root, build_lib, os.path.basename(g)[:-5] + ".gcno")
        os.symlink(os.path.abspath(note), g[:-5] + ".gcno")
    r = subprocess.run(["gcov", "--json-format", "--stdout"] + gcdas, cwd=d,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        out.error = "gcov failed: " + r.stderr.decode(errors="replace")[-300:]
        return out
    for doc in r.stdout.decode().splitlines():
        doc = doc.strip()
        if not doc.startswith("{"):
            continue
        data = json.loads(doc)
        cwd_of = data.get("current_working_directory", root)
        for fdata in data.get("files", []):
            fname = rel(fdata["file"], cwd_of, root)
            for ln in fdata.get("lines", []):
                if ln.get("count", 0) > 0:
                    out.lines.add((fname, ln["line_number"]))
            for fn in fdata.get("functions", []):
                out.functions[(fname, fn["name"])] = (fn["start_line"], fn["end_line"],
                                                      fn.get("execution_count", 0))
    shutil.rmtree(os.path.join(d, build_lib.split(os.sep)[0]), ignore_errors=True)
    return out
