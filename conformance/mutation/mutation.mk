# ---- Mutation testing (conformance/mutation/README.md) ----------------------
# Included by the top-level Makefile.
#
#   make mutation                 mutants of lib/*.c (a seeded sample of
#                                 MUTATION_SAMPLE, 0 = all), each built and run
#                                 against the conformance tests, fuzz replays
#                                 and scenarios that reach it (a coverage map
#                                 made once per run, covmap.py), jailed in a PID
#                                 namespace; $(COV_REPORTS)/mutation.json, .txt and
#                                 $(COV_REPORTS)/mutation/index.html
#   make mutation FILES=lib/watcher_sigchld.c     one file
#   make mutation-ci              the small seeded sample CI runs (the quick
#                                 conformance programs and the fuzz replay,
#                                 the TSan build)
#   make mutation-full            every mutant of every file
#
# The score counts killed / (killed + survived): equivalent mutants
# (conformance/mutation/equivalent.tsv, each with its reason) and mutants
# that do not compile are left out. Below the floor the target fails. The
# floors sit at what was measured and only ever go up.
# The default sample is the issue's: 400 mutants of all of lib/ (seed 1),
# every suite and both sanitizer builds. Measured 2026-12-03 from a fresh
# clone on the idle 2-core machine: 383 killed / 384 (99.7%), 15
# equivalent left out, 1 did not compile, in 12 min 24 s (README.md,
# "Where it stands"). MUTATION_MIN is 97: under the measurement by ten
# mutants, so that a kill a slower or busier machine turns into a survivor
# (a race TSan sees on one interleaving, a hang judged by a time limit)
# does not fail it, and above the 95% the issue asks for; it was 85,
# never measured. mutation-ci: seed 1, 40 mutants (a subset of the 400),
# the ci tier and the TSan build. Without TSan (before 2026-12-03) its
# deleted locks were killed or not by luck: 39 / 40 in two CI runs of
# 2026-12-02, 36 / 39 in a fresh-clone CI run of 2026-12-03 (two deleted
# locks and a race-path unlock survived), just over the floor of 92. With
# TSan, measured 2026-12-03 on the loaded machine (load 14, a CI run
# beside it): 38 killed / 39 (97.4%) in 1 min 51 s; the survivor is
# watcher_pidfd.c:94, an unlock on the path where a pidfd turns readable
# while its watcher closes, which the full tier's test_watcher_pidfd
# kills. MUTATION_CI_MIN is 94: one kill under that (37/39 = 94.9%
# passes), so that one more survivor of that kind does not turn CI red.
# The 85% floors written before the second round were never enforced
# (run.py compared the last file's score, not the overall one, so a 75%
# run passed).
MUTATION_SAMPLE   ?= 400
MUTATION_SEED     ?= 1
MUTATION_JOBS     ?= 2
MUTATION_TIER     ?= full
MUTATION_ARGS     ?=
# The covering conformance tests also run against the TSan and ASan+UBSan
# builds (data races, use after free, reads out of bounds), ordered with
# the plain runs by cost; 0 skips them, "thread" runs only the TSan build.
MUTATION_SANITIZE ?= 1
FILES             ?=
MUTATION_MIN      ?= 97
MUTATION_CI_SAMPLE ?= 40
MUTATION_CI_SEED   ?= 1
MUTATION_CI_MIN    ?= 94
MUTATION_PY       := /usr/bin/python3 conformance/mutation/run.py

.PHONY: mutation mutation-ci mutation-full mutation-deps mutation-page

mutation-deps:
	@$(ENSURE_DEPS) python3-clang libclang1-14 util-linux

mutation-page: reports/node_modules/.installed
	@python3 reports/make-mutation-page --reports $(COV_REPORTS)

mutation: mutation-deps | deps
	@$(MUTATION_PY) --files "$(FILES)" --sample $(MUTATION_SAMPLE) --seed $(MUTATION_SEED) \
	    --jobs $(MUTATION_JOBS) --tier $(MUTATION_TIER) --floor $(MUTATION_MIN) \
	    --reports $(COV_REPORTS) $(if $(filter 1,$(MUTATION_SANITIZE)),--sanitize,$(if $(filter-out 0,$(MUTATION_SANITIZE)),--sanitize "$(MUTATION_SANITIZE)")) \
	    $(MUTATION_ARGS); rc=$$?; \
	$(MAKE) --no-print-directory mutation-page; exit $$rc

mutation-ci:
	+@$(MAKE) --no-print-directory mutation MUTATION_SAMPLE=$(MUTATION_CI_SAMPLE) \
	    MUTATION_SEED=$(MUTATION_CI_SEED) MUTATION_TIER=ci MUTATION_MIN=$(MUTATION_CI_MIN) \
	    MUTATION_SANITIZE=thread

mutation-full:
	+@$(MAKE) --no-print-directory mutation MUTATION_SAMPLE=0 MUTATION_SANITIZE=1
