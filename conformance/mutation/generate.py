#!/usr/bin/python3
"""generate.py — single-token mutants of evpol's C sources, from the syntax tree.

    generate.py [--cflags "..."] FILE.c... > mutants.json

Parses each file with libclang (Debian's python3-clang) and emits, as JSON,
one mutant per applicable operator and site:

  relational   <  <=  >  >=  flipped to the negation (< becomes >=, ...)
  equality     == and != swapped
  logical      && and || swapped
  negation     a unary ! removed
  return       return 0 / 1 / -1 / true / false with another constant
  call         a call statement (a call whose value is discarded) deleted
  increment    ++ and -- swapped
  boundary     an integer literal compared against moved by one (n -> n+1)

Only code spelled in the file itself is mutated: a site whose text is not
the operator the tree says (a macro expansion) is skipped. A mutant is
named by a key that survives edits elsewhere in the file
(file:function:mutator:original->replacement#n, n counting the same
mutation within the function), which the committed list of equivalent
mutants (equivalent.tsv) refers to.
"""
import argparse
import json
import os
import shlex
import sys

import clang.cindex as ci

LIBCLANG = "/usr/lib/llvm-14/lib/libclang-14.so.1"

RELATIONAL = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
EQUALITY = {"==": "!=", "!=": "=="}
LOGICAL = {"&&": "||", "||": "&&"}
RETURNS = {"0": "-1", "1": "0", "-1": "0", "true": "false", "false": "true"}


def load_libclang():
    if not ci.Config.loaded and os.path.exists(LIBCLANG):
        ci.Config.set_library_file(LIBCLANG)


class Collector:
    def __init__(self, path, text):
        self.path = path
        self.text = text  # bytes
        self.mutants = []
        self.seen = set()

    def here(self, cursor_or_loc):
        f = cursor_or_loc.file
        return f is not None and os.path.abspath(f.name) == os.path.abspath(self.path)

    def add(self, func, mutator, offset, original, replacement):
        if self.text[offset:offset + len(original)].decode("utf-8", "replace") != original:
            return  # not spelled here: a macro expansion
        if (offset, replacement) in self.seen:
            return
        self.seen.add((offset, replacement))
        line = self.text.count(b"\n", 0, offset) + 1
        col = offset - (self.text.rfind(b"\n", 0, offset) + 1) + 1
        self.mutants.append({
            "file": self.path, "function": func or "", "mutator": mutator,
            "offset": offset, "length": len(original.encode()),
            "original": original, "replacement": replacement,
            "line": line, "column": col,
            "end_line": line, "end_column": col + len(original.encode()),
        })

    def operator_token(self, cursor):
        """The operator of a binary expression: the first token after the LHS."""
        kids = list(cursor.get_children())
        if len(kids) != 2:
            return None
        lhs_end = kids[0].extent.end.offset
        for tok in cursor.get_tokens():
            if tok.extent.start.offset >= lhs_end:
                return tok
        return None

    def walk(self, cursor, func=None, parent=None):
        for c in cursor.get_children():
            if c.location.file is not None and not self.here(c.location):
                continue
            f = func
            if c.kind == ci.CursorKind.FUNCTION_DECL and c.is_definition():
                f = c.spelling
            if f:
                self.visit(c, f, cursor)
            self.walk(c, f, cursor)

    def visit(self, c, func, parent):
        K = ci.CursorKind
        if c.kind == K.BINARY_OPERATOR:
            tok = self.operator_token(c)
            if tok is None:
                return
            op, off = tok.spelling, tok.extent.start.offset
            if op in RELATIONAL:
                self.add(func, "relational", off, op, RELATIONAL[op])
            if op in EQUALITY:
                self.add(func, "equality", off, op, EQUALITY[op])
            if op in LOGICAL:
                self.add(func, "logical", off, op, LOGICAL[op])
            if op in RELATIONAL or op in EQUALITY:
                for kid in c.get_children():
                    if kid.kind == K.INTEGER_LITERAL:
                        toks = list(kid.get_tokens())
                        if len(toks) == 1 and toks[0].spelling.isdigit():
                            v = toks[0].spelling
                            self.add(func, "boundary", toks[0].extent.start.offset, v,
                                     str(int(v) + 1))
        elif c.kind == K.UNARY_OPERATOR:
            toks = list(c.get_tokens())
            if not toks:
                return
            first, last = toks[0], toks[-1]
            if first.spelling == "!":
                self.add(func, "negation", first.extent.start.offset, "!", "")
            for t in (first, last):
                if t.spelling in ("++", "--"):
                    self.add(func, "increment", t.extent.start.offset, t.spelling,
                             "--" if t.spelling == "++" else "++")
        elif c.kind == K.RETURN_STMT:
            toks = [t for t in c.get_tokens()]
            # return <const> ;
            inner = [t.spelling for t in toks[1:]]
            if inner and inner[-1] == ";":
                inner = inner[:-1]
            const = "".join(inner)
            if const in RETURNS and len(toks) >= 2:
                start = toks[1].extent.start.offset
                self.add(func, "return", start, const, RETURNS[const])
        elif c.kind == K.CALL_EXPR and parent is not None and parent.kind in (
                K.COMPOUND_STMT, K.IF_STMT, K.FOR_STMT, K.WHILE_STMT, K.DO_STMT):
            if parent.kind != K.COMPOUND_STMT and c.extent.start.offset in (
                    k.extent.start.offset for k in list(parent.get_children())[:1]):
                return  # the condition of an if/while, not a statement
            s, e = c.extent.start.offset, c.extent.end.offset
            if not self.here(c.extent.start) or not self.here(c.extent.end) or e <= s:
                return
            original = self.text[s:e].decode("utf-8", "replace")
            if "\n" in original and len(original) > 400:
                return
            self.add(func, "call", s, original, "(void)0")


def mutants_of(path, args):
    index = ci.Index.create()
    tu = index.parse(path, args=args)
    errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if errors:
        raise SystemExit("generate: %s does not parse: %s" % (path, errors[0]))
    with open(path, "rb") as f:
        text = f.read()
    col = Collector(path, text)
    col.walk(tu.cursor)
    col.mutants.sort(key=lambda m: m["offset"])
    counts = {}
    for m in col.mutants:
        base = "%s:%s:%s:%s->%s" % (m["file"], m["function"], m["mutator"],
                                     " ".join(m["original"].split()), m["replacement"])
        counts[base] = counts.get(base, 0) + 1
        m["key"] = "%s#%d" % (base, counts[base])
    return col.mutants


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cflags", default="")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    load_libclang()
    args = ["-std=c11", "-D_GNU_SOURCE", "-Ilib/include", "-Ilib"] + shlex.split(a.cflags)
    out = []
    for path in a.files:
        out.extend(mutants_of(path, args))
    json.dump(out, sys.stdout, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
