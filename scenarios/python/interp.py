"""The CPython runner's interpreter: one scenario run against asyncio, in
this process (runner.py --run), with the C runner's leak checks."""

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

from proc_state import children_of_self, open_fds, pidfd_works, process_state, thread_count
from steps import ERRCODES, EXC_CODE, NO_SUCH_PROGRAM, WATCHER_CLASS, Scenario
from translation import (ASSERTED_ERRORS, EVPOL_ONLY_VERBS, LOG_TEXTS, ON_LOOP_REASON,
                         TEXT_TRANSLATIONS, version_has)


# --------------------------------------------------------------------------
# One run: the scenario process
# --------------------------------------------------------------------------

class StepFailed(Exception):
    pass


class NotApplicable(Exception):
    pass


def code_of(exc):
    for cls, code in EXC_CODE:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, AssertionError) and str(exc) in ASSERTED_ERRORS:
        return ASSERTED_ERRORS[str(exc)]
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
        # Stop every loop before counting callbacks, as the C runner does: a
        # loop's stop runs in an iteration whose poll comes after every child
        # was reaped, so each delivery already due (a second pidfd reader of
        # a child registered twice, a callback posted from a waiting thread)
        # has run by the time the loop returns. Counting while the loops
        # still ran let such a second callback land after the count.
        for a in list(self.actors.values()):
            if a.loop is not None:
                a.loop.call_soon_threadsafe(a.loop.stop)
        for idx, a in list(self.actors.items()):
            end = time.monotonic() + self.guard
            while a.loop is not None and time.monotonic() < end:
                time.sleep(0.005)
        if "na" not in outcome and "fail" not in outcome:
            with self.cond:
                twice = [c for c, got in self.calls.items() if len(got) > 1]
                late = [c for c in self.never if self.calls.get(c)]
            if twice:
                outcome["fail"] = self.failure_text("callback ran twice: " + self.describe(twice[0]))
            elif late:
                outcome["fail"] = self.failure_text(
                    "a callback for a child named in never: " + self.describe(late[0]))
        # End the workers, close what the scenario made.
        for idx, a in list(self.actors.items()):
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


def outside_sigchld(signum, frame):
    """Outside code's SIGCHLD handler: does nothing."""


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
    # SIGPIPE stays ignored here, as Python has it (both ways of starting a
    # child reset it there): a write to a closed pipe then raises, with a
    # traceback in the run's detail, instead of killing the run silently
    # (one run on a loaded machine died of SIGPIPE with no message).
    for s in DEFAULT_SIGNALS:
        if s != signal.SIGPIPE:
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
