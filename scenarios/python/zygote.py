"""The zygote: one process of this interpreter that has imported the runner
(asyncio and the rest) once, and forks one scenario run per request.

A fresh interpreter costs about 0.2 s of CPU before a run's first step
(startup and imports; 2026-12-02, on the 2-core VM), about 1,000 times in
`make implementations`. Forking from a zygote gets back less than that on
this machine: the forked run pays a copy-on-write fault for each page it
writes that it shares with the zygote (a cross-CPU TLB flush each, once the
run has threads). Measured on 30 light runs, three times each, in CPU
seconds: fresh interpreters 10.5, zygote 11.3, zygote with gc.freeze()
9.6. A run forked from the zygote starts where a fresh one
would have been after its imports: its own process and session, stdin and
stdout on /dev/null, stderr to the driver, SIGCHLD at its default, no thread
but its main one (the zygote never starts one, so the fork is safe, and
3.12's warning about forking with threads has nothing to say), and it ends
through SystemExit, so the interpreter's own shutdown runs as it did.

The driver (Zygote, in runner.py's process) talks to it over one
SOCK_SEQPACKET pair: a request carries the run's report and stderr pipes as
SCM_RIGHTS; the zygote answers with the run's pid, and when it has reaped the
run, with its exit code and CPU time (wait4: the run and the children it
reaped). The zygote is the runs' parent, so it is the one that can reap.
"""

import array
import gc
import itertools
import json
import os
import select
import signal
import socket
import threading

MAX_MSG = 65536


def send_msg(sock, obj, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([json.dumps(obj).encode()], anc)


def recv_msg(sock):
    """(object, fds), or (None, []) at the end. Received fds are close-on-exec."""
    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(MAX_MSG, socket.CMSG_LEN(8 * fds.itemsize),
                                  socket.MSG_CMSG_CLOEXEC)
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if not msg:
        return None, list(fds)
    return json.loads(msg.decode()), list(fds)


class Zygote:
    """The driver's side: start(path, kind, report_fd, err_fd) -> a run."""

    def __init__(self, executable, runner):
        import subprocess
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([executable, runner, "--zygote", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.runs = {}
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def start(self, path, kind, report_fd, err_fd, nice=0):
        run = {"started": threading.Event(), "done": threading.Event(), "pid": None,
               "rc": None, "cpu": 0.0}
        with self.lock:
            rid = next(self.ids)
            self.runs[rid] = run
            send_msg(self.sock, {"id": rid, "path": path, "kind": kind, "nice": nice},
                     (report_fd, err_fd))
        run["started"].wait()
        return run

    def read(self):
        while True:
            try:
                msg, fds = recv_msg(self.sock)
            except OSError:
                msg, fds = None, []
            for fd in fds:
                os.close(fd)
            if msg is None:
                break
            with self.lock:
                run = self.runs.get(msg["id"])
                if msg.get("pid"):
                    run["pid"] = msg["pid"]
                    run["started"].set()
                else:
                    run.update(rc=msg["rc"], cpu=msg["cpu"])
                    del self.runs[msg["id"]]
                    run["done"].set()
        # The zygote is gone: every run it had is over, as far as we can know.
        with self.lock:
            for run in self.runs.values():
                run["started"].set()
                run["done"].set()
            self.runs.clear()

    def close(self):
        self.sock.shutdown(socket.SHUT_WR)
        self.proc.wait()
        self.reader.join()
        self.sock.close()


def serve(fd, run_one):
    """The zygote's loop. In a forked run it raises SystemExit (run_one's
    result), so the run ends through the interpreter's own shutdown."""
    sock = socket.socket(fileno=fd)
    # Every object imported so far moves out of the collector's sight: a
    # run's gc.collect() would otherwise write to each of their pages, and
    # each write to a page shared with the zygote is a copy-on-write fault
    # (measured: without this, forking from the zygote cost 7% more CPU
    # than a fresh interpreter; with it, 9% less).
    gc.freeze()
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    running = {}   # pid -> request id
    more = True
    while more or running:
        ready, _, _ = select.select([sock, wake_r] if more else [wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        while running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            send_msg(sock, {"id": running.pop(pid), "rc": rc,
                            "cpu": usage.ru_utime + usage.ru_stime})
        if sock not in ready:
            continue
        req, fds = recv_msg(sock)
        if req is None:
            more = False
            continue
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            os.close(wake_r)
            os.close(wake_w)
            child(req, fds, run_one)
        for f in fds:
            os.close(f)
        running[pid] = req["id"]
        send_msg(sock, {"id": req["id"], "pid": pid})


def child(req, fds, run_one):
    report_fd, err_fd = fds
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err_fd, 2)
    os.close(null)
    os.close(err_fd)
    os.environ["SCN_REPORT_FD"] = str(report_fd)
    if req["nice"]:
        os.nice(req["nice"])
    run_one(req["path"], req["kind"])
    raise SystemExit(0)
