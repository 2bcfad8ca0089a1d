#!/usr/bin/env python3
"""Run the scenario files (scenarios/*.scn) against CPython's own asyncio.

    runner.py [--reports DIR] [-j N] [--watchers LIST] [--only NAME]
              [--timeout-scale X] [--label NAME] [-v] PATH...

The same files, the same story, the same expectations as the C runner
(scenarios/driver.c, interp_*.c), but every step is carried out by the interpreter's
asyncio: its policies (asyncio.set_event_loop_policy, DefaultEventLoopPolicy
subclasses for the "watcher", "custom", "poll" and "select" variants), its
loops (one run_forever per scenario thread), its child watchers (Threaded,
MultiLoop, Safe, Fast, Pidfd) and loop.subprocess_exec for `spawn`. Standard
library only, and it runs on every CPython from 3.8 to 3.13: the matrix
(scenarios/implementations.py) runs it under each interpreter it finds.

Each scenario x watcher runs in its own process (this file again, with
--run) under a time limit, in its own process group, killed when it hangs.
After the last step the run releases every child, waits until none is left,
checks that no callback ran twice, stops and closes everything, then checks
what the C runner checks: fds (/proc/self/fd, number and target), threads
(/proc/self/task), children, and the SIGCHLD disposition.

A step that only means something for evpol (a C-only API, evpol's own log
text) cannot be translated: EVPOL_ONLY below says which and why. Where such
a step changes what happens next, the whole run is "n/a" with that reason;
where it only checks something, it is skipped and the run goes on (the
skipped steps are listed in the run's detail). A watcher the interpreter
lacks is n/a too. Results go to DIR/scenarios.tsv, in the C runner's
columns, with status pass, fail or na.
"""

import argparse
import asyncio
import concurrent.futures
import gc
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings

KINDS = ("threaded", "multiloop", "safe", "fast", "pidfd")
WATCHER_CLASS = {
    "threaded": "ThreadedChildWatcher",
    "multiloop": "MultiLoopChildWatcher",
    "safe": "SafeChildWatcher",
    "fast": "FastChildWatcher",
    "pidfd": "PidfdChildWatcher",
}
# evpol's error codes, and the exception each stands for in asyncio.
ERRCODES = ("OK", "ERUNTIME", "ETYPE", "EINVAL", "ENOMEM", "ESYSTEM", "ENOTSUP")
EXC_CODE = ((RuntimeError, -1), (TypeError, -2), (ValueError, -3), (MemoryError, -4),
            (OSError, -5), (NotImplementedError, -6))
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "ABRT": 6, "KILL": 9, "USR1": 10,
           "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "CHLD": 17,
           "CONT": 18, "STOP": 19}
LEVELS = ("debug", "info", "warning", "error")
CATEGORIES = ("runtime", "deprecation", "resource", "debug")
NO_SUCH_PROGRAM = "/nonexistent/scenario-no-such-program"

# Steps of the vocabulary that have no asyncio counterpart. A verb maps to
# (fatal, reason): fatal means later steps depend on what the step does, so
# the run as a whole is n/a. Log texts map the same way, matched on the
# step's text; a text with a version is a message CPython only has from
# that version on (the step is skipped before it).
EVPOL_ONLY_VERBS = {
    "soak": (True, "the soak measures evpol's RSS and fds over minutes; run by make soak only"),
}
# add_handler ... on L is evpol_watcher_add_child_handler_on, which names the
# loop; asyncio's add_child_handler always takes the running loop.
ON_LOOP_REASON = ("add_handler ... on L is evpol's add_child_handler_on (C API): asyncio "
                  "registers with the running loop only")
LOG_TEXTS = [
    # (substring of the step's text, minimum CPython version or None, reason when n/a)
    ("get_child_watcher is deprecated", (3, 12),
     "CPython deprecates get_child_watcher from 3.12 on (evpol follows 3.12)"),
    ("There is no current event loop", (3, 12),
     "CPython warns about an implicitly created loop in the policy from 3.12 on"),
    ("closed outside the main thread", None,
     "evpol's own resource warning; CPython's Safe/Fast close says nothing"),
    ("closed with", None,
     "evpol's own resource warning for MultiLoop; CPython's MultiLoop close says nothing"),
    ("set by non-evpol code", None,
     "outside code here is Python code (signal.signal), whose handler CPython saves silently; "
     "its warning is for a handler set outside Python"),
]
# evpol's text where CPython words the same warning differently.
TEXT_TRANSLATIONS = (("get_child_watcher is deprecated", "'get_child_watcher' is deprecated"),)


def version_has(kind):
    if kind == "pidfd":
        return hasattr(asyncio, "PidfdChildWatcher") and hasattr(os, "pidfd_open")
    return hasattr(asyncio, WATCHER_CLASS[kind])


# --------------------------------------------------------------------------
# The file format (scenarios/README.md). The C parser (steps.c) validates
# every file in `make scenarios`; this one reads the same grammar.
# --------------------------------------------------------------------------

class ParseError(Exception):
    pass


class Step:
    def __init__(self, line, text):
        self.line, self.text = line, text
        self.kinds = set(KINDS)
        self.threads = [0]
        self.verb = ""
        self.obj = self.obj2 = None     # ("L", 1) ... or ("none", None)
        self.children = None            # range of child indexes
        self.handler = None
        self.variant = None
        self.number = None
        self.end = None                 # ("exit", N) / ("signal", N) / ("exec_fail", None)
        self.release = "now"
        self.rc = None
        self.exp_thread = self.exp_loop = self.exp_handler = None
        self.level = self.category = None
        self.logtext = None
        self.result = 0                 # int, or "any"


TOKEN = re.compile(r'"([^"]*)"|(\S+)')


def tokenize(line):
    out = []
    for m in TOKEN.finditer(line):
        if m.group(2) is not None and m.group(2).startswith("#"):
            break
        out.append((m.group(1), True) if m.group(1) is not None else (m.group(2), False))
    return out


def parse_ref(word):
    if word == "none":
        return ("none", None)
    if word == "main":
        return ("T", 0)
    m = re.fullmatch(r"([TLWP])(\d+)", word)
    if not m:
        raise ParseError("bad object '%s'" % word)
    return (m.group(1), int(m.group(2)))


def parse_children(word):
    m = re.fullmatch(r"C(\d+)(?:-C(\d+))?", word)
    if not m:
        raise ParseError("bad children '%s'" % word)
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    return range(lo, hi + 1)


def parse_signal(word):
    if word.isdigit():
        return int(word)
    name = word[3:] if word.startswith("SIG") else word
    if name not in SIGNALS:
        raise ParseError("bad signal '%s'" % word)
    return SIGNALS[name]


def parse_kind_list(text):
    kinds = set()
    for w in text.replace(",", " ").split():
        if w == "all":
            kinds |= set(KINDS)
        elif w in KINDS:
            kinds.add(w)
        else:
            raise ParseError("unknown watcher '%s'" % w)
    return kinds


def parse_step(lineno, line):
    toks = tokenize(line)
    st = Step(lineno, " ".join('"%s"' % t if q else t for t, q in toks))
    i = 0
    if toks and not toks[0][1] and toks[0][0].startswith("["):
        inner = toks[0][0][1:-1]
        neg = inner.startswith("!")
        ks = parse_kind_list(inner[1:] if neg else inner)
        st.kinds = set(KINDS) - ks if neg else ks
        i += 1
    if i < len(toks) and not toks[i][1] and toks[i][0].startswith("@"):
        st.threads = [parse_ref(w)[1] for w in toks[i][0][1:].split(",")]
        i += 1
    words = [t for t, _ in toks[i:]]
    quoted = [q for _, q in toks[i:]]
    if "=>" in words:
        k = words.index("=>")
        res = words[k + 1]
        st.result = "any" if res == "any" else (-ERRCODES.index(res) if res in ERRCODES else int(res))
        words, quoted = words[:k], quoted[:k]
    st.verb = words[0]
    args = words[1:]
    q = quoted[1:]
    v = st.verb

    def take():
        return args.pop(0) if args else None

    if v in ("thread", "join", "new_loop", "close_loop", "start", "stop", "new_watcher",
             "attach", "close_watcher", "active", "enter", "exit", "new_policy", "set_policy",
             "set_child_watcher", "get_child_watcher", "set_loop", "get_loop",
             "new_event_loop", "running", "same", "drop", "add_handler", "remove_handler",
             "calls"):
        st.obj = parse_ref(take())
    if v in ("new_loop", "new_watcher", "new_policy"):
        st.variant = take()
    elif v in ("attach", "same"):
        st.obj2 = parse_ref(take())
    elif v == "calls":
        st.variant = take()
        st.number = int(take())
    if v in ("spawn", "child", "add_handler", "remove_handler", "release", "kill", "reap",
             "exited", "fork", "expect", "never", "reaped"):
        st.children = parse_children(take())
    if v in ("spawn", "child"):
        if args and args[0] == "on":
            take()
            st.obj2 = parse_ref(take())
        w = take()
        st.end = (w, None) if w == "exec_fail" else \
            (w, int(take()) if w == "exit" else parse_signal(take()))
        if args and args[0] in ("wait", "gate"):
            st.release = take()
    elif v == "add_handler":
        while args:
            w = take()
            if w == "on":
                st.obj2 = parse_ref(take())
            else:
                st.handler = int(w[1:])
    elif v == "kill":
        st.number = parse_signal(take())
    elif v == "expect":
        w, n = take(), take()
        st.rc = int(n) if w in ("exit", "rc") else -parse_signal(n)
        while args:
            w, a = take(), take()
            if w == "on":
                st.exp_thread = parse_ref(a)[1]
            elif w == "loop":
                st.exp_loop = parse_ref(a)[1]
            elif w == "handler":
                st.exp_handler = int(a[1:])
    elif v in ("log", "no_log"):
        st.number = 1
        while args:
            isq = q[len(q) - len(args)]
            w = take()
            if isq:
                st.logtext = w
            elif w.startswith("level="):
                st.level = w[6:]
            elif w.startswith("cat="):
                st.category = w[4:]
            elif w == "min":
                st.number = int(take())
    elif v in ("sleep", "soak"):
        st.number = int(take()) if args else None
    if v in ("active", "remove_handler", "same") and st.result == 0 and "=>" not in st.text:
        st.result = 1
    if v == "running" and st.obj == ("none", None) and "=>" not in st.text:
        st.result = -1
    return st


class Scenario:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.clauses = ""
        self.watchers = set(KINDS)
        self.except_reason = {}
        self.timeout = 60
        self.steps = []
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                m = re.match(r"^([a-z]+):\s*(.*)$", line)
                if m and m.group(1) in ("name", "description", "clauses", "watchers", "except",
                                        "timeout"):
                    key, value = m.group(1), m.group(2)
                    if key == "name":
                        self.name = value
                    elif key == "clauses":
                        self.clauses = value
                    elif key == "watchers":
                        self.watchers = parse_kind_list(value)
                    elif key == "except":
                        kinds, _, reason = value.partition("--")
                        for k in parse_kind_list(kinds):
                            self.except_reason[k] = reason.strip()
                    elif key == "timeout":
                        self.timeout = int(value)
                    continue
                try:
                    self.steps.append(parse_step(lineno, line))
                except (ParseError, ValueError, IndexError, TypeError) as e:
                    raise ParseError("%s:%d: %s" % (path, lineno, e))


# --------------------------------------------------------------------------
# One run: the scenario process
# --------------------------------------------------------------------------

class StepFailed(Exception):
    pass


class NotApplicable(Exception):
    pass


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


def code_of(exc):
    for cls, code in EXC_CODE:
        if isinstance(exc, cls):
            return code
    return None


def result_name(v):
    if isinstance(v, int) and v < 0 and -v < len(ERRCODES):
        return ERRCODES[-v]
    return str(v)


class Actor:
    """A scenario thread: runs steps handed to it, or a loop that runs them."""

    def __init__(self, run, index):
        self.run, self.index = run, index
        self.queue = []
        self.cond = threading.Condition()
        self.loop = None          # the loop it runs now
        self.ident = None

    def post(self, fn):
        """Run fn() on this thread (inside its loop if it runs one)."""
        done = concurrent.futures.Future()

        def call():
            try:
                r = fn()
                if asyncio.iscoroutine(r) or asyncio.isfuture(r):
                    task = asyncio.ensure_future(r)
                    task.add_done_callback(
                        lambda t: done.set_exception(t.exception()) if t.exception()
                        else done.set_result(t.result()))
                    return
                done.set_result(r)
            except BaseException as e:   # reported by the director
                done.set_exception(e)

        with self.cond:
            loop = self.loop
            if loop is not None:
                loop.call_soon_threadsafe(call)
            else:
                self.queue.append(call)
                self.cond.notify_all()
        return done

    def serve(self):
        self.ident = threading.get_ident()
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                call = self.queue.pop(0)
            if call is None:
                return
            call()

    def quit(self):
        with self.cond:
            self.queue.append(None)
            self.cond.notify_all()


class ExitProtocol(asyncio.SubprocessProtocol):
    def __init__(self, run, child):
        self.run, self.child = run, child
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def process_exited(self):
        self.run.record(self.child, self.transport.get_pid(), self.transport.get_returncode(), 0)
        self.transport.close()


class Run:
    def __init__(self, sc, kind, report):
        self.sc, self.kind, self.report = sc, kind, report
        self.guard = max(5.0, float(os.environ.get("SCN_WAIT_LIMIT", "10")))
        self.actors = {}
        self.loops = {}
        self.watchers = {}
        self.policies = {}
        self.all_watchers = []        # every watcher seen, closed in teardown
        self.all_loops = []
        self.pids = {}
        self.release_fd = {}
        self.gate_wr = None
        self.gate_rd = None
        self.calls = {}               # child -> [(pid, rc, thread, loop, handler)]
        self.never = set()
        self.logs = []
        self.events = 0               # callbacks and log lines so far
        self.cond = threading.Condition()
        self.skipped = []
        self.step = None

    # ---- what callbacks and log hooks record ----

    def record(self, child, pid, rc, handler):
        ident = threading.get_ident()
        thread = next((a.index for a in self.actors.values() if a.ident == ident), None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = next((i for i, l in self.loops.items() if l is running and l is not None), None)
        if loop is None and running is not None:
            loop = next((i for i, l in enumerate(self.all_loops) if l is running), None)
            loop = None if loop is None else "?"
        with self.cond:
            self.calls.setdefault(child, []).append((pid, rc, thread, loop, handler))
            self.events += 1
            self.cond.notify_all()

    def log(self, level, category, text):
        with self.cond:
            self.logs.append((level, category, text))
            self.events += 1
            self.cond.notify_all()

    # ---- helpers ----

    def fail(self, expected, actual):
        raise StepFailed("expected: %s\n        actual:   %s" % (expected, actual))

    def wait_for(self, pred, what, pending=None):
        """Wait until pred(). The guard counts from the last callback or log
        line, and not at all while pending() (a child still running: nothing
        can be late before it has exited), so a slow machine is never cut
        off; only the run's own time limit bounds that."""
        with self.cond:
            seen = self.events
            end = time.monotonic() + self.guard
            while not pred():
                if self.events != seen or (pending is not None and pending()):
                    seen = self.events
                    end = time.monotonic() + self.guard
                left = end - time.monotonic()
                if left <= 0:
                    self.fail(what, "not after %.0f s without a callback or log line" % self.guard)
                self.cond.wait(min(left, 0.05))

    def slot(self, ref):
        kind, idx = ref
        if kind == "none":
            return None
        table = {"L": self.loops, "W": self.watchers, "P": self.policies}[kind]
        return table.get(idx)

    def pid(self, child):
        if child not in self.pids:
            raise StepFailed("C%d was never created" % child)
        return self.pids[child]

    def actor_loop_slot(self, actor):
        return next((i for i, l in self.loops.items() if l is actor.loop and l is not None), None)

    def check_result(self, st, got, what=""):
        if st.result == "any":
            return
        if got != st.result:
            self.fail("%s=> %s" % (what, result_name(st.result)), "%s%s" % (what, result_name(got)))

    def call(self, st, fn, what=""):
        """fn() as a call that returns a value or raises: compare with => RESULT."""
        try:
            got = fn()
            if got is None or got is True or got is False:
                got = {None: 0, True: 1, False: 0}[got]
        except StepFailed:
            raise
        except Exception as e:
            code = code_of(e)
            if code is None and st.result != "any":
                self.fail("%s=> %s" % (what, result_name(st.result)),
                          "%sraised %s: %s" % (what, type(e).__name__, e))
            got = code
            self.last_exc = e
        self.check_result(st, got, what)
        return got

    # ---- children ----

    def script(self, end, release):
        wait = "read x; " if release != "now" else ""
        if end[0] == "signal":
            return "%skill -%d $$" % (wait, end[1])
        return "%sexit %d" % (wait, end[1])

    def stdin_for(self, child, release):
        if release == "wait":
            rd, wr = os.pipe2(os.O_CLOEXEC)
            self.release_fd[child] = wr
            return rd, True
        if release == "gate":
            if self.gate_wr is None:
                self.gate_rd, self.gate_wr = os.pipe2(os.O_CLOEXEC)
            return self.gate_rd, False
        return None, False

    def close_gate(self):
        if self.gate_wr is not None:
            os.close(self.gate_wr)
            os.close(self.gate_rd)
            self.gate_wr = self.gate_rd = None

    def outside_child(self, child, st):
        fd, own = self.stdin_for(child, st.release)
        actions = [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]
        if fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, fd, 0))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        try:
            self.pids[child] = os.posix_spawn(
                "/bin/sh", ["sh", "-c", self.script(st.end, st.release)], os.environ,
                file_actions=actions, setsigdef=DEFAULT_SIGNALS)
        finally:
            if own:
                os.close(fd)

    async def spawn_one(self, loop, child, st):
        fd, own = self.stdin_for(child, st.release)
        argv = [NO_SUCH_PROGRAM] if st.end[0] == "exec_fail" else \
            ["/bin/sh", "-c", self.script(st.end, st.release)]
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: ExitProtocol(self, child), *argv,
                stdin=fd if fd is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pids[child] = transport.get_pid()
        finally:
            if own:
                os.close(fd)

    # ---- the steps ----

    def on_actors(self, st, make):
        """Run an actor step on its thread(s): make(actor, children) -> callable."""
        kids = list(st.children) if st.children is not None else None
        futs = []
        n = len(st.threads)
        for i, t in enumerate(st.threads):
            actor = self.actors.get(t)
            if actor is None:
                raise StepFailed("thread T%d is not running" % t)
            share = None if kids is None else kids[len(kids) * i // n:len(kids) * (i + 1) // n]
            futs.append(actor.post(make(actor, share)))
        # A step may take as long as the run may (1,000 spawns on a loaded
        # machine): the run's own time limit is the only bound.
        for f in futs:
            f.result()

    async def spawn_all(self, loop, kids, st):
        for c in kids:
            try:
                await self.spawn_one(loop, c, st)
                got = 0
            except Exception as e:
                got = code_of(e)
                if got is None and st.result != "any":
                    self.fail("C%d: => %s" % (c, result_name(st.result)),
                              "C%d: raised %s: %s" % (c, type(e).__name__, e))
            self.check_result(st, got, "C%d: " % c)

    def step_spawn(self, st):
        before = children_of_self()

        def make(actor, kids):
            def go():
                loop = self.slot(st.obj2) if st.obj2 else actor.loop
                if loop is None or not loop.is_running():
                    # Nothing runs the loop: there is nowhere to deliver on_exit.
                    for c in kids:
                        self.check_result(st, -1, "C%d: " % c)
                    return None
                if loop is actor.loop:
                    return self.spawn_all(loop, kids, st)
                # Another thread's loop: the spawn runs there, as it must in asyncio.
                fut = asyncio.run_coroutine_threadsafe(self.spawn_all(loop, kids, st), loop)
                return fut.result() if actor.loop is None else asyncio.wrap_future(fut)
            return go
        self.on_actors(st, make)
        if st.result not in (0, "any"):
            # A spawn expected to fail creates no process. (evpol's runner also
            # counts the library's spawn calls through its seam; asyncio has
            # none, so the children list is the whole check here.)
            new = children_of_self() - before
            if new:
                self.fail("no process created", "new child process(es) %s" % sorted(new))

    def execute(self, st):
        v = st.verb
        if v == "thread":
            a = Actor(self, st.obj[1])
            self.actors[st.obj[1]] = a
            th = threading.Thread(target=a.serve, name="T%d" % st.obj[1], daemon=True)
            a.thread = th
            th.start()
            while a.ident is None:
                time.sleep(0.001)
        elif v == "join":
            a = self.actors.pop(st.obj[1])
            a.quit()
            a.thread.join(self.guard)
        elif v == "new_loop":
            self.loops[st.obj[1]] = self.new_loop(st.variant)
        elif v == "start":
            def nested(actor, _):
                # Inside a running loop: asyncio refuses, as evpol does.
                return lambda: self.call(st, lambda: self.slot(st.obj).run_forever())
            for t in st.threads:
                actor = self.actors[t]
                loop = self.slot(st.obj)
                if loop is None:
                    raise StepFailed("start: L%d is empty" % st.obj[1])
                if actor.loop is not None:
                    self.on_actors(st, nested)
                    continue
                started = threading.Event()
                err = []

                def run_it(actor=actor, loop=loop, started=started, err=err):
                    try:
                        loop.call_soon(started.set)
                        with actor.cond:
                            actor.loop = loop
                        loop.run_forever()
                    except Exception as e:
                        err.append(e)
                        started.set()
                    finally:
                        with actor.cond:
                            actor.loop = None
                        with self.cond:
                            self.cond.notify_all()
                with actor.cond:
                    actor.queue.append(run_it)
                    actor.cond.notify_all()
                if not started.wait(self.guard):
                    self.fail("L%d running" % st.obj[1], "not started")
                if err:
                    self.check_result(st, code_of(err[0]))
        elif v == "stop":
            loop = self.slot(st.obj)
            loop.call_soon_threadsafe(loop.stop)
            self.wait_for(lambda: all(a.loop is not loop for a in self.actors.values()),
                          "L%d's thread left the loop" % st.obj[1])
        elif v == "close_loop":
            self.on_actors(st, lambda a, _: lambda: self.call(st, lambda: self.slot(st.obj).close()))
        elif v == "new_watcher":
            self.watchers[st.obj[1]] = self.new_watcher(st.variant)
        elif v == "attach":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: self.slot(st.obj).attach_loop(self.slot(st.obj2))))
        elif v == "close_watcher":
            self.on_actors(st, lambda a, _: lambda: self.call(st, lambda: self.slot(st.obj).close()))
        elif v == "active":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: self.slot(st.obj).is_active()))
        elif v == "enter":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: self.slot(st.obj).__enter__() and None))
        elif v == "exit":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: self.slot(st.obj).__exit__(None, None, None)))
        elif v == "new_policy":
            self.policies[st.obj[1]] = self.new_policy(st.variant)
        elif v == "set_policy":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: asyncio.set_event_loop_policy(self.slot(st.obj))))
        elif v == "set_child_watcher":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: asyncio.set_child_watcher(self.slot(st.obj))))
        elif v == "get_child_watcher":
            def get():
                w = asyncio.get_child_watcher()
                self.watchers[st.obj[1]] = w
                self.remember_watcher(w)
            self.on_actors(st, lambda a, _: lambda: self.call(st, get))
        elif v == "set_loop":
            self.on_actors(st, lambda a, _: lambda: self.call(
                st, lambda: asyncio.set_event_loop(self.slot(st.obj))))
        elif v in ("get_loop", "new_event_loop"):
            def get():
                loop = asyncio.get_event_loop() if v == "get_loop" else asyncio.new_event_loop()
                self.loops[st.obj[1]] = loop
                self.remember_loop(loop)
            self.on_actors(st, lambda a, _: lambda: self.call(st, get))
        elif v == "running":
            def check():
                loop = asyncio.get_running_loop()
                if loop is not self.slot(st.obj):
                    self.fail("the running loop is %s" % self.ref_name(st.obj), repr(loop))
            self.on_actors(st, lambda a, _: lambda: self.call(st, check))
        elif v == "same":
            a, b = self.slot(st.obj), self.slot(st.obj2)
            self.check_result(st, 1 if a is not None and a is b else 0)
        elif v == "drop":
            {"L": self.loops, "W": self.watchers, "P": self.policies}[st.obj[0]].pop(st.obj[1], None)
        elif v == "spawn":
            self.step_spawn(st)
        elif v == "child":
            for c in st.children:
                self.outside_child(c, st)
        elif v == "add_handler":
            h = 1 if st.handler is None else st.handler

            def make(actor, kids):
                def go():
                    w = self.slot(st.obj)
                    for c in kids:
                        cb = (lambda child: lambda pid, rc, hh: self.record(child, pid, rc, hh))(c)
                        self.call(st, lambda: w.add_child_handler(self.pid(c), cb, h),
                                  "C%d: " % c)
                return go
            self.on_actors(st, make)
        elif v == "remove_handler":
            def make(actor, kids):
                def go():
                    w = self.slot(st.obj)
                    for c in kids:
                        self.call(st, lambda: w.remove_child_handler(self.pid(c)), "C%d: " % c)
                return go
            self.on_actors(st, make)
        elif v == "release":
            for c in st.children:
                fd = self.release_fd.pop(c, None)
                if fd is not None:
                    os.close(fd)
        elif v == "release_gate":
            self.close_gate()
        elif v == "kill":
            for c in st.children:
                os.kill(self.pid(c), st.number)
        elif v == "reap":
            for c in st.children:
                self.check_result(st, self.outside_reap(self.pid(c)), "C%d: " % c)
        elif v == "exited":
            for c in st.children:
                self.check_result(st, self.wait_exited(self.pid(c)), "C%d: " % c)
        elif v == "reaped":
            for c in st.children:
                pid = self.pid(c)
                self.wait_for(lambda: pid not in children_of_self(),
                              "C%d (pid %d) reaped" % (c, pid),
                              pending=lambda: process_state(pid).startswith("running"))
        elif v == "fork":
            c = st.children[0]

            def make(actor, _):
                return lambda: self.do_fork(c)
            self.on_actors(st, make)
        elif v in ("sigchld_replace", "sigchld_restore"):
            # signal.signal works from the main thread only: main does it.
            handler = outside_sigchld if v == "sigchld_replace" else self.sigchld_start
            self.actors[0].post(lambda: signal.signal(signal.SIGCHLD, handler)).result(self.guard)
        elif v == "expect":
            for c in st.children:
                self.expect(st, c)
        elif v == "never":
            for c in st.children:
                self.never.add(c)
                got = self.calls.get(c)
                if got:
                    self.fail("no callback for C%d" % c, self.describe(c))
        elif v in ("log", "no_log"):
            self.step_log(st)
        elif v == "calls":
            p = self.slot(st.obj)
            n = p.counts.get(st.variant, 0)
            if n < st.number:
                self.fail("%s called at least %d time(s)" % (st.variant, st.number), "%d" % n)
        elif v == "sleep":
            time.sleep(st.number / 1000.0)
        else:
            raise StepFailed("unknown step '%s'" % v)

    def ref_name(self, ref):
        return "none" if ref[0] == "none" else "%s%d" % ref

    def remember_watcher(self, w):
        if w is not None and all(x is not w for x in self.all_watchers):
            self.all_watchers.append(w)

    def remember_loop(self, loop):
        if loop is not None and all(x is not loop for x in self.all_loops):
            self.all_loops.append(loop)

    def new_loop(self, backend):
        sel = {None: selectors.DefaultSelector, "default": selectors.DefaultSelector,
               "epoll": getattr(selectors, "EpollSelector", selectors.DefaultSelector),
               "poll": selectors.PollSelector, "select": selectors.SelectSelector}[backend]
        loop = asyncio.SelectorEventLoop(sel())
        self.remember_loop(loop)
        return loop

    def new_watcher(self, variant):
        kind = self.kind if variant in (None, "kind") else variant
        if kind == "auto":
            # asyncio has no "auto"; 3.12's default policy picks Pidfd where
            # pidfd_open works and Threaded otherwise, as evpol's AUTO does.
            kind = "pidfd" if version_has("pidfd") and pidfd_works() else "threaded"
        if not version_has(kind):
            raise NotApplicable("%s is not in this CPython" % WATCHER_CLASS[kind])
        w = getattr(asyncio, WATCHER_CLASS[kind])()
        self.remember_watcher(w)
        return w

    def new_policy(self, variant):
        run = self
        base = asyncio.DefaultEventLoopPolicy
        if variant in (None, "default"):
            return base()
        if variant in ("poll", "select"):
            sel = selectors.PollSelector if variant == "poll" else selectors.SelectSelector

            class BackendPolicy(base):
                def new_event_loop(self):
                    loop = asyncio.SelectorEventLoop(sel())
                    run.remember_loop(loop)
                    return loop
            return BackendPolicy()
        if variant == "watcher":
            class WatcherPolicy(base):
                """The default policy whose lazily created watcher is the kind under test."""
                made = False

                def get_child_watcher(self):
                    if not self.made:
                        self.made = True
                        w = run.new_watcher(None)
                        super().set_child_watcher(w)
                        # As the default policy's lazy creation does: a watcher
                        # created from the main thread is attached to its loop.
                        if threading.current_thread() is threading.main_thread():
                            loop = getattr(self._local, "_loop", None)
                            if loop is not None:
                                w.attach_loop(loop)
                    return super().get_child_watcher()
            return WatcherPolicy()
        if variant == "custom":
            class CountingPolicy(base):
                def __init__(self):
                    super().__init__()
                    self.counts = {}

                def count(self, m):
                    self.counts[m] = self.counts.get(m, 0) + 1

                def get_event_loop(self):
                    self.count("get_event_loop")
                    return super().get_event_loop()

                def set_event_loop(self, loop):
                    self.count("set_event_loop")
                    return super().set_event_loop(loop)

                def new_event_loop(self):
                    self.count("new_event_loop")
                    loop = super().new_event_loop()
                    run.remember_loop(loop)
                    return loop

                def get_child_watcher(self):
                    self.count("get_child_watcher")
                    return super().get_child_watcher()

                def set_child_watcher(self, watcher):
                    self.count("set_child_watcher")
                    return super().set_child_watcher(watcher)
            return CountingPolicy()
        raise StepFailed("unknown policy variant %s" % variant)

    def outside_reap(self, pid):
        """Outside code's waitpid once the child has exited: 0 reaped it, 1 gone."""
        if self.wait_exited(pid) == 1:
            return 1
        try:
            got, _ = os.waitpid(pid, 0)
            return 0 if got == pid else 1
        except ChildProcessError:
            return 1

    def wait_exited(self, pid):
        # A child that has not exited yet is never late: the run's time limit
        # is the only bound (a loaded machine may take long to run it).
        while True:
            try:
                r = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                return 1
            if r is not None and r.si_pid == pid:
                return 0
            time.sleep(0.002)

    def do_fork(self, child):
        parent_loops = list(self.all_loops)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                try:
                    asyncio.get_running_loop()
                    code = 10
                except RuntimeError:
                    pass
                if code == 0:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            loop = asyncio.get_event_loop()
                            if any(loop is l for l in parent_loops):
                                code = 11
                        except RuntimeError:
                            pass
            except BaseException:
                code = 12
            os._exit(code)
        self.pids[child] = pid

    def describe(self, c):
        got = self.calls.get(c, [])
        pid = self.pids.get(c)
        if not got:
            return "C%d (pid %s): no callback; the process is %s" % (c, pid, process_state(pid))
        return "C%d (pid %s): %d callback(s): %s" % (c, pid, len(got), "; ".join(
            "returncode %s, on %s, in loop %s, handler H%s" % (
                rc, "T%d" % t if t is not None else "a non-scenario thread",
                "L%s" % l if l is not None else "none", h)
            for _, rc, t, l, h in got))

    def expect(self, st, c):
        pid = self.pid(c)
        try:
            self.wait_for(lambda: self.calls.get(c), "a callback for C%d (pid %d)" % (c, pid),
                          pending=lambda: process_state(pid).startswith("running"))
        except StepFailed as e:
            raise StepFailed("%s (the process is %s)" % (e, process_state(pid)))
        with self.cond:
            got = list(self.calls[c])
        want = "C%d (pid %d): one callback, returncode %d" % (c, pid, st.rc)
        ok = len(got) == 1 and got[0][1] == st.rc and got[0][0] == pid
        if st.exp_thread is not None:
            want += ", on T%d" % st.exp_thread
            ok = ok and got[0][2] == st.exp_thread
        if st.exp_loop is not None:
            want += ", in loop L%d" % st.exp_loop
            ok = ok and got[0][3] == st.exp_loop
        if st.exp_handler is not None:
            want += ", handler H%d" % st.exp_handler
            ok = ok and got[0][4] == st.exp_handler
        if not ok:
            self.fail(want, self.describe(c))

    def log_text(self, st):
        text = st.logtext
        for evpol_text, cpython_text in TEXT_TRANSLATIONS:
            text = text.replace(evpol_text, cpython_text)

        def sub(m):
            kind, idx = m.group(1), int(m.group(2))
            if kind == "C":
                return str(self.pid(idx))
            return repr(self.loops.get(idx))
        return re.sub(r"\{([CL])(\d+)\}", sub, text)

    def step_log(self, st):
        text = self.log_text(st)

        def matches():
            return [l for l in self.logs if text in l[2]
                    and (st.level is None or l[0] == st.level)
                    and (st.category is None or l[1] == st.category)]
        what = "a log line%s%s containing \"%s\"" % (
            " level=" + st.level if st.level else "", " cat=" + st.category if st.category else "",
            text)
        if st.verb == "no_log":
            with self.cond:
                found = matches()
            if found:
                self.fail("no " + what, found[0][2])
            return
        self.wait_for(lambda: len(matches()) >= st.number,
                      "%s%s" % (what, " (at least %d)" % st.number if st.number > 1 else ""))

    def not_applicable(self, st):
        """(fatal, reason) when the step has no asyncio counterpart, else None."""
        if st.verb in EVPOL_ONLY_VERBS:
            return EVPOL_ONLY_VERBS[st.verb]
        if st.verb == "add_handler" and st.obj2 is not None:
            target = self.slot(st.obj2)
            # Safe and Fast deliver to their attached loop whatever the call
            # says; a plain add_child_handler means the same there.
            if self.kind not in ("safe", "fast"):
                for t in st.threads:
                    a = self.actors.get(t)
                    if a is None or a.loop is not target:
                        return (True, ON_LOOP_REASON)
        if st.verb in ("log", "no_log"):
            for sub, since, reason in LOG_TEXTS:
                if sub in st.logtext and (since is None or sys.version_info[:2] < since):
                    return (False, reason)
        return None

    # ---- the run ----

    def main(self):
        self.sigchld_start = signal.getsignal(signal.SIGCHLD)
        fds_before = open_fds()
        threads_before = thread_count()
        kids_before = children_of_self()
        main = Actor(self, 0)
        main.ident = threading.get_ident()
        main.thread = threading.current_thread()
        self.actors[0] = main
        outcome = {}

        def director():
            try:
                self.direct()
                outcome["ok"] = True
            except NotApplicable as e:
                outcome["na"] = str(e)
            except StepFailed as e:
                outcome["fail"] = self.failure_text(str(e))
            except BaseException:
                outcome["fail"] = self.failure_text("raised " + traceback.format_exc().strip())
            try:
                self.teardown_director(outcome)
            except BaseException:
                outcome.setdefault("fail", "teardown raised " + traceback.format_exc().strip())
            main.quit()

        d = threading.Thread(target=director, name="director", daemon=True)
        d.start()
        main.serve()
        d.join()
        if "na" in outcome:
            self.report("N", outcome["na"])
            return
        if "fail" not in outcome:
            err = self.leak_checks(fds_before, threads_before, kids_before)
            if err:
                outcome["fail"] = "leak check: " + err
        if "fail" in outcome:
            self.report("F", outcome["fail"])
        else:
            self.report("P", "; ".join(self.skipped))

    def direct(self):
        for n, st in enumerate(self.sc.steps, 1):
            if self.kind not in st.kinds:
                continue
            self.step = (n, st)
            self.report("S", "%d %d %s" % (n, st.line, st.text))
            na = self.not_applicable(st)
            if na:
                fatal, reason = na
                if fatal:
                    raise NotApplicable("step %d (line %d) %s: %s" % (n, st.line, st.text, reason))
                self.skipped.append("step %d skipped: %s" % (n, reason))
                continue
            self.execute(st)
        self.step = None

    def failure_text(self, msg):
        where = "teardown"
        if self.step:
            n, st = self.step
            where = "step %d (line %d): %s" % (n, st.line, st.text)
        lines = ["%s\n        %s" % (where, msg)]
        if self.logs:
            lines.append("        recent log lines:")
            lines += ["          %s/%s: %s" % l for l in self.logs[-4:]]
        return "\n".join(lines)

    def teardown_director(self, outcome):
        # Let every child go and wait for the watchers to reap them.
        for fd in list(self.release_fd.values()):
            os.close(fd)
        self.release_fd.clear()
        self.close_gate()
        if "na" not in outcome and "fail" not in outcome:
            self.step = None
            end = time.monotonic() + self.guard
            ours = set(self.pids.values())
            while children_of_self() & ours and time.monotonic() < end:
                # Children still running are not late; zombies are.
                if any(process_state(p).startswith("running")
                       for p in children_of_self() & ours):
                    end = time.monotonic() + self.guard
                time.sleep(0.01)
            left = children_of_self() & ours
            if left:
                outcome["fail"] = self.failure_text(
                    "%d child process(es) never reaped (zombie or leaked): %s" % (
                        len(left), " ".join(
                            "C%d=%d" % (c, p) for c, p in sorted(self.pids.items()) if p in left)))
            with self.cond:
                twice = [c for c, got in self.calls.items() if len(got) > 1]
                late = [c for c in self.never if self.calls.get(c)]
            if "fail" not in outcome and twice:
                outcome["fail"] = self.failure_text("callback ran twice: " + self.describe(twice[0]))
            if "fail" not in outcome and late:
                outcome["fail"] = self.failure_text(
                    "a callback for a child named in never: " + self.describe(late[0]))
        # Stop every loop, end the workers, close what the scenario made.
        for a in list(self.actors.values()):
            if a.loop is not None:
                a.loop.call_soon_threadsafe(a.loop.stop)
        for idx, a in list(self.actors.items()):
            end = time.monotonic() + self.guard
            while a.loop is not None and time.monotonic() < end:
                time.sleep(0.005)
            if idx:
                a.quit()
                a.thread.join(self.guard)

        def close_all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for w in self.all_watchers:
                    try:
                        w.close()
                    except Exception:
                        pass
                for loop in self.all_loops:
                    if not loop.is_closed() and not loop.is_running():
                        loop.close()
                asyncio.set_event_loop_policy(None)
        self.actors[0].post(close_all).result(self.guard)
        self.loops.clear()
        self.watchers.clear()
        self.policies.clear()
        # Children left behind by a failing run are reaped here so that they
        # do not outlive it; they were already reported.
        for p in set(self.pids.values()) & children_of_self():
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except OSError:
                pass

    def leak_checks(self, fds_before, threads_before, kids_before):
        self.all_watchers.clear()
        self.all_loops.clear()
        gc.collect()
        end = time.monotonic() + self.guard
        while thread_count() > threads_before and time.monotonic() < end:
            time.sleep(0.01)
        n = thread_count()
        if n > threads_before:
            return "%d thread(s) left, %d before the scenario" % (n, threads_before)
        fds = open_fds()
        if fds != fds_before:
            diff = sorted(set(fds.items()) ^ set(fds_before.items()))
            return "%d fds open, %d before the scenario: %s" % (
                len(fds), len(fds_before), ", ".join("%d -> %s" % d for d in diff[:6]))
        kids = children_of_self() - kids_before
        if kids:
            return "%d child process(es) left: %s" % (len(kids), sorted(kids))
        if signal.getsignal(signal.SIGCHLD) != self.sigchld_start:
            return "SIGCHLD disposition changed: %r, %r before the scenario" % (
                signal.getsignal(signal.SIGCHLD), self.sigchld_start)
        return None


def process_state(pid):
    """running, a zombie, or reaped: what a missing callback left behind."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "reaped"
    return "a zombie (nobody reaped it)" if state == "Z" else "running (state %s)" % state


def outside_sigchld(signum, frame):
    """Outside code's SIGCHLD handler: does nothing."""


def pidfd_works():
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


# The signals a child starts with the default action for, as evpol's spawn
# does, whatever the shell that started the suite left ignored.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def run_one(path, kind):
    fd = int(os.environ["SCN_REPORT_FD"])

    def report(tag, text):
        os.write(fd, (json.dumps([tag, text]) + "\n").encode())

    # asyncio's subprocess_exec resets only SIGPIPE and SIGXFSZ in the child:
    # the run itself starts with the defaults so its children inherit them.
    for s in DEFAULT_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    sc = Scenario(path)
    run = Run(sc, kind, report)

    def showwarning(message, category, filename, lineno, file=None, line=None):
        cat = "deprecation" if issubclass(category, DeprecationWarning) else \
            "resource" if issubclass(category, ResourceWarning) else "runtime"
        run.log("warning", cat, str(message))
    warnings.showwarning = showwarning
    warnings.simplefilter("always")

    class Hook(logging.Handler):
        def emit(self, record):
            run.log(record.levelname.lower(), "runtime", record.getMessage())
    logger = logging.getLogger("asyncio")
    logger.addHandler(Hook())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if not version_has(kind):
        report("N", "%s is not in CPython %d.%d" % ((WATCHER_CLASS[kind],) + sys.version_info[:2]))
        return
    run.main()


# --------------------------------------------------------------------------
# The runner: one process per scenario x watcher
# --------------------------------------------------------------------------

def collect(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".scn"))
        else:
            files.append(p)
    return files


def launch(job, scale, verbose):
    sc, kind = job["sc"], job["kind"]
    rd, wr = os.pipe()
    env = dict(os.environ, SCN_REPORT_FD=str(wr))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run", sc.path, kind],
                            env=env, pass_fds=(wr,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    os.close(wr)
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
        stderr.append(proc.stderr.read().decode(errors="replace"))
    readers = [threading.Thread(target=read_reports), threading.Thread(target=read_stderr)]
    for r in readers:
        r.start()
    try:
        rc = proc.wait(timeout=limit)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        rc = proc.wait()
    else:
        # Whatever the run left behind in its process group goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    for r in readers:
        r.join()
    job["duration"] = time.monotonic() - t0
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


def main(argv):
    if argv[:1] == ["--run"]:
        run_one(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--watchers", default="all")
    ap.add_argument("--only")
    # The files' time limits are sized for evpol's spawn in C; a spawn through
    # asyncio's subprocess_exec (fork + exec of Popen, in Python) costs several
    # times as much, so the limits are tripled by default.
    ap.add_argument("--timeout-scale", type=float,
                    default=float(os.environ.get("SCN_TIMEOUT_SCALE", "3")))
    ap.add_argument("-v", action="store_true")
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
            job = {"sc": sc, "kind": kind, "duration": 0.0}
            if kind not in sc.watchers:
                job["status"], job["detail"] = "na", "the scenario is not for %s" % kind
            elif kind in sc.except_reason:
                job["status"], job["detail"] = "na", sc.except_reason[kind]
            elif not version_has(kind):
                job["status"], job["detail"] = "na", "%s is not in CPython %d.%d" % (
                    (WATCHER_CLASS[kind],) + sys.version_info[:2])
            jobs.append(job)
    todo = [j for j in jobs if "status" not in j]
    # The longest runs first, so the tail of the suite is short.
    todo.sort(key=lambda j: -len(j["sc"].steps) - 100 * (j["sc"].timeout > 60))
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.j)) as pool:
        list(pool.map(lambda j: launch(j, args.timeout_scale, args.v), todo))
    counts = {"pass": 0, "fail": 0, "na": 0}
    for j in jobs:
        counts[j["status"]] += 1
        if j["status"] == "fail":
            print("FAIL  %s@%s (%.0f ms)\n      %s" % (j["sc"].name, j["kind"], j["duration"] * 1000,
                                                     j["detail"]), flush=True)
    if args.reports:
        os.makedirs(args.reports, exist_ok=True)
        with open(os.path.join(args.reports, "scenarios.tsv"), "w") as f:
            f.write("scenario\twatcher\tstatus\tduration_ms\tfile\tdetail\n")
            for j in jobs:
                f.write("%s\t%s\t%s\t%.0f\t%s\t%s\n" % (
                    j["sc"].name, j["kind"], j["status"], j["duration"] * 1000, j["sc"].path,
                    tsv(j["detail"])))
    print("CPython %s (%s): %d passed, %d failed, %d n/a in %.1f s" % (
        sys.version.split()[0], sys.executable, counts["pass"], counts["fail"], counts["na"],
        time.monotonic() - t0), flush=True)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
