"""What the CPython runner cannot translate: steps and log texts that only
mean something for evpol, and the watchers this CPython lacks."""

import asyncio
import os

from steps import WATCHER_CLASS



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
# Errors CPython raises with assert: the message -> evpol's error code. FST-4
# (registering outside a spawn context) is one of CPython's rules, checked by
# FastChildWatcher.add_child_handler with `assert self._forks`; it is a
# runtime error in evpol. Only that message translates, so an unrelated
# assert still fails the step. (Under python -O CPython checks nothing; the
# runner never uses -O.)
ASSERTED_ERRORS = {"Must use the context manager": -1}
# evpol's text where CPython words the same warning differently.
TEXT_TRANSLATIONS = (("get_child_watcher is deprecated", "'get_child_watcher' is deprecated"),)


def version_has(kind):
    if kind == "pidfd":
        return hasattr(asyncio, "PidfdChildWatcher") and hasattr(os, "pidfd_open")
    return hasattr(asyncio, WATCHER_CLASS[kind])
