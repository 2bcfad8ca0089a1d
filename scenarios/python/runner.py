#!/usr/bin/env python3
"""Run the scenario files (scenarios/*.scn) against CPython's own asyncio.

    runner.py [--reports DIR] [-j N] [--watchers LIST] [--only NAME]
              [--timeout-scale X] [--serve] [-v] PATH...

The same files, the same story, the same expectations as the C runner
(scenarios/driver.c, interp_*.c), but every step is carried out by the interpreter's
asyncio: its policies (asyncio.set_event_loop_policy, DefaultEventLoopPolicy
subclasses for the "watcher", "custom", "poll" and "select" variants), its
loops (one run_forever per scenario thread), its child watchers (Threaded,
MultiLoop, Safe, Fast, Pidfd) and loop.subprocess_exec for `spawn`. Standard
library only, and it runs on every CPython from 3.8 to 3.13: the matrix
(scenarios/implementations.py) runs it under each interpreter it finds.

Each scenario x watcher runs in its own process under a time limit, in its
own session, killed when it hangs: forked from the zygote (zygote.py), a
process of the same interpreter that imported this runner once, so a run
does not pay for an interpreter's start (`--run FILE KIND` runs one in this
process, for debugging). -j N runs N heavy runs (more than 100 children, or
a time limit above 60 s) at once and 2N light ones beside them; --serve
leaves the choice of what runs when to implementations.py, which schedules
every implementation together.

After the last step the run releases every child, waits until none is left,
checks that no callback ran twice, stops and closes everything, then checks
what the C runner checks: fds (/proc/self/fd, number and target), threads
(/proc/self/task), children, and the SIGCHLD disposition.

A step that only means something for evpol (a C-only API, evpol's own log
text) cannot be translated: translation.py says which and why. Where such
a step changes what happens next, the whole run is "n/a" with that reason;
where it only checks something, it is skipped and the run goes on (the
skipped steps are listed in the run's detail). A watcher the interpreter
lacks is n/a too. Results go to DIR/scenarios.tsv, in the C runner's
columns (and cpu_ms: the run's CPU time, with the children it reaped), with
status pass, fail or na.
"""

import sys

# The runner imports its own modules (steps.py, interp.py) from the source
# tree, which must stay as the tarball has it: no __pycache__ there.
sys.dont_write_bytecode = True

import argparse
import concurrent.futures
import json
import os
import re
import signal
import threading
import time

import zygote
from interp import run_one
from steps import (KINDS, WATCHER_CLASS, Scenario, children_made, collect, is_heavy,
                   parse_kind_list)
from translation import version_has


# --------------------------------------------------------------------------
# The runner: one process per scenario x watcher
# --------------------------------------------------------------------------

def launch(job, scale, verbose, zygote, nice=0):
    sc, kind = job["sc"], job["kind"]
    rd, wr = os.pipe2(os.O_CLOEXEC)
    err_rd, err_wr = os.pipe2(os.O_CLOEXEC)
    t0 = time.monotonic()
    run = zygote.start(os.path.abspath(sc.path), kind, wr, err_wr, nice)
    os.close(wr)
    os.close(err_wr)
    limit = sc.timeout * scale
    out = []
    stderr = []

    def read_reports():
        with os.fdopen(rd, "rb") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass

    def read_stderr():
        with os.fdopen(err_rd, "rb") as f:
            stderr.append(f.read().decode(errors="replace"))
    readers = [threading.Thread(target=read_reports), threading.Thread(target=read_stderr)]
    for r in readers:
        r.start()
    hung = not run["done"].wait(limit)
    # A hung run is killed; whatever a finished run left behind in its
    # process group goes too.
    if run["pid"]:
        try:
            os.killpg(run["pid"], signal.SIGKILL)
        except OSError:
            pass
    run["done"].wait()
    for r in readers:
        r.join()
    rc = run["rc"]
    job["duration"] = time.monotonic() - t0
    job["cpu"] = run["cpu"]
    final = [o for o in out if o[0] in ("P", "F", "N")]
    last_step = next((o[1] for o in reversed(out) if o[0] == "S"), None)
    tail = "\n".join(("".join(stderr)).strip().splitlines()[-6:])
    if hung:
        job["status"], job["detail"] = "fail", "hung: killed after %.0f s at step %s" % (
            limit, last_step or "(none)")
    elif not final:
        job["status"], job["detail"] = "fail", "run exited with %s at step %s: %s" % (
            rc, last_step or "(none)", tail)
    else:
        tag, text = final[-1]
        job["status"] = {"P": "pass", "F": "fail", "N": "na"}[tag]
        job["detail"] = text
        if tag == "P" and rc != 0:
            job["status"], job["detail"] = "fail", "run exited with %s: %s" % (rc, tail)
    if verbose:
        print("  %s %s@%s %s" % (job["status"], sc.name, kind, job["detail"]), flush=True)
    return job


def tsv(s):
    return re.sub(r"[\t\r\n]+", " ", s or "")


def schedule(todo, args, zyg):
    # The longest runs first, so the tail of the suite is short.
    todo.sort(key=lambda j: -len(j["sc"].steps) - 100 * (j["sc"].timeout > 60))
    # A heavy run keeps a core busy for its whole length; most light runs
    # spend theirs waiting (for a child, or for a CPython watcher that never
    # delivers: SCN_WAIT_LIMIT). So -j N runs N heavy runs and, beside them,
    # 2N light ones: the light runs fill the time the heavy ones leave idle
    # without ever putting more than N heavy runs on the cores.
    heavy = [j for j in todo if is_heavy(j["sc"])]
    light = [j for j in todo if not is_heavy(j["sc"])]
    n = max(1, args.j)
    with concurrent.futures.ThreadPoolExecutor(n) as heavy_pool, \
            concurrent.futures.ThreadPoolExecutor(2 * n) as light_pool:
        done = [heavy_pool.submit(launch, j, args.timeout_scale, args.v, zyg) for j in heavy]
        done += [light_pool.submit(launch, j, args.timeout_scale, args.v, zyg) for j in light]
        for f in done:
            f.result()


def serve_jobs(jobs, args, zyg):
    """--serve: the scheduler is implementations.py, for every implementation
    at once. The first line out lists the jobs (JSON: scenario, watcher,
    heavy, and status for a run decided without running); each line in is
    the index of a job to start now, and the niceness to start it with; each result goes out as one JSON line
    when its run ends. The end of input: wait for the runs, then report."""
    out_lock = threading.Lock()

    def put(obj):
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()
    put([{"scenario": j["sc"].name, "watcher": j["kind"], "heavy": is_heavy(j["sc"]),
          "children": children_made(j["sc"]), "status": j.get("status")} for j in jobs])

    def one(i, nice):
        j = launch(jobs[i], args.timeout_scale, False, zyg, nice)
        put({"index": i, "status": j["status"], "detail": j["detail"],
             "duration_ms": round(j["duration"] * 1000), "cpu_ms": round(j["cpu"] * 1000)})
    threads = []
    for line in sys.stdin:
        t = threading.Thread(target=one, args=tuple(int(w) for w in line.split()))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def main(argv):
    if argv[:1] == ["--run"]:
        run_one(argv[1], argv[2])
        return 0
    if argv[:1] == ["--zygote"]:
        zygote.serve(int(argv[1]), run_one)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports")
    ap.add_argument("-j", type=int, default=2, help="heavy runs at once (and twice as many light ones)")
    ap.add_argument("--watchers", default="all")
    ap.add_argument("--only")
    # The files' time limits are sized for evpol's spawn in C; a spawn through
    # asyncio's subprocess_exec (fork + exec of Popen, in Python) costs several
    # times as much, so the limits are tripled by default.
    ap.add_argument("--timeout-scale", type=float,
                    default=float(os.environ.get("SCN_TIMEOUT_SCALE", "3")))
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--serve", action="store_true",
                    help="run the jobs another scheduler asks for (implementations.py)")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    wanted = parse_kind_list(args.watchers)
    jobs = []
    for path in collect(args.paths):
        sc = Scenario(path)
        if args.only and sc.name != args.only:
            continue
        for kind in KINDS:
            if kind not in wanted:
                continue
            job = {"sc": sc, "kind": kind, "duration": 0.0, "cpu": 0.0}
            if kind not in sc.watchers:
                job["status"], job["detail"] = "na", "the scenario is not for %s" % kind
            elif kind in sc.except_reason:
                job["status"], job["detail"] = "na", sc.except_reason[kind]
            elif not version_has(kind):
                job["status"], job["detail"] = "na", "%s is not in CPython %d.%d" % (
                    (WATCHER_CLASS[kind],) + sys.version_info[:2])
            jobs.append(job)
    todo = [j for j in jobs if "status" not in j]
    t0 = time.monotonic()
    zyg = zygote.Zygote(sys.executable, os.path.abspath(__file__))
    if args.serve:
        serve_jobs(jobs, args, zyg)
    else:
        schedule(todo, args, zyg)
    zyg.close()
    counts = {"pass": 0, "fail": 0, "na": 0}
    for j in jobs:
        if "status" not in j:
            j["status"], j["detail"] = "fail", "never started (--serve was not asked to)"
        counts[j["status"]] += 1
        if j["status"] == "fail" and not args.serve:
            print("FAIL  %s@%s (%.0f ms)\n      %s" % (j["sc"].name, j["kind"], j["duration"] * 1000,
                                                     j["detail"]), flush=True)
    if args.reports:
        os.makedirs(args.reports, exist_ok=True)
        with open(os.path.join(args.reports, "scenarios.tsv"), "w") as f:
            f.write("scenario\twatcher\tstatus\tduration_ms\tcpu_ms\tfile\tdetail\n")
            for j in jobs:
                f.write("%s\t%s\t%s\t%.0f\t%.0f\t%s\t%s\n" % (
                    j["sc"].name, j["kind"], j["status"], j["duration"] * 1000, j["cpu"] * 1000,
                    j["sc"].path,
                    tsv(j["detail"])))
    print("CPython %s (%s): %d passed, %d failed, %d n/a in %.1f s" % (
        sys.version.split()[0], sys.executable, counts["pass"], counts["fail"], counts["na"],
        time.monotonic() - t0), flush=True)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
