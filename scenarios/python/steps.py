"""The scenario vocabulary for the CPython runner: the file format
(scenarios/README.md) parsed into Step and Scenario, as scenarios/steps.c
does for the C runner."""

import os
import re


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


def collect(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".scn"))
        else:
            files.append(p)
    return files


def is_heavy(sc):
    """Many children (each spawned through Python's subprocess machinery, a
    fork and an exec) or a long time limit: a run that is mostly CPU."""
    most = max((len(st.children) for st in sc.steps if st.children is not None), default=0)
    return sc.timeout > 60 or most > 100


def children_made(sc):
    """How many children the scenario starts: spawns (through the library or
    asyncio, the expensive way) count whole, outside code's children (one
    posix_spawn each) a fifth. The scheduler's guess for a run never timed."""
    n = 0.0
    for st in sc.steps:
        if st.children is not None and st.verb in ("spawn", "child"):
            n += len(st.children) * (1.0 if st.verb == "spawn" else 0.2)
    return n
