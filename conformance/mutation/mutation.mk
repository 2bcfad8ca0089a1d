# ---- Mutation testing (conformance/mutation/README.md) ----------------------
# Included by the top-level Makefile.
#
#   make mutation                 mutants of lib/*.c (a seeded sample of
#                                 MUTATION_SAMPLE, 0 = all), each built and run
#                                 against the conformance programs, the fuzz
#                                 replay and the scenarios, jailed in a PID
#                                 namespace; $(COV_REPORTS)/mutation.json, .txt and
#                                 $(COV_REPORTS)/mutation/index.html
#   make mutation FILES=lib/watcher_sigchld.c     one file
#   make mutation-ci              the small seeded sample CI runs (the quick
#                                 conformance programs and the fuzz replay)
#   make mutation-full            every mutant of every file
#
# The score counts killed / (killed + survived): equivalent mutants
# (conformance/mutation/equivalent.tsv, each with its reason) and mutants
# that do not compile are left out. Below the floor the target fails. The
# floors sit at what was measured and only ever go up.
# Measured 2026-12-02 (seed 1, 40 of 1306 mutants, the ci tier, load ~130):
# 32 killed / 39 (82.1%), one equivalent left out. The 85% floors written
# before were never enforced (run.py compared the last file's score, not
# the overall one, so a 75% run passed); MUTATION_CI_MIN is set to what the
# same sample measures now. Of its seven survivors five are in the watcher
# files issue 15 rewrites, one is a deleted lock only the TSan rerun sees,
# one is killed by test_watcher_safe, outside the ci tier. MUTATION_MIN
# (the same sample, every suite and the sanitizer reruns) was not measured.
MUTATION_SAMPLE   ?= 40
MUTATION_SEED     ?= 1
MUTATION_JOBS     ?= 2
MUTATION_TIER     ?= full
MUTATION_ARGS     ?=
# Survivors of the plain build run again against the TSan and ASan+UBSan
# builds (data races, use after free, reads out of bounds); 0 skips that.
MUTATION_SANITIZE ?= 1
FILES             ?=
MUTATION_MIN      ?= 85
MUTATION_CI_SAMPLE ?= 40
MUTATION_CI_SEED   ?= 1
MUTATION_CI_MIN    ?= 82
MUTATION_PY       := /usr/bin/python3 conformance/mutation/run.py

.PHONY: mutation mutation-ci mutation-full mutation-deps mutation-page

mutation-deps:
	@$(ENSURE_DEPS) python3-clang libclang1-14 util-linux

mutation-page: reports/node_modules/.installed
	@python3 reports/make-mutation-page --reports $(COV_REPORTS)

mutation: mutation-deps | deps
	@$(MUTATION_PY) --files "$(FILES)" --sample $(MUTATION_SAMPLE) --seed $(MUTATION_SEED) \
	    --jobs $(MUTATION_JOBS) --tier $(MUTATION_TIER) --floor $(MUTATION_MIN) \
	    --reports $(COV_REPORTS) $(if $(filter 1,$(MUTATION_SANITIZE)),--sanitize) \
	    $(MUTATION_ARGS); rc=$$?; \
	$(MAKE) --no-print-directory mutation-page; exit $$rc

mutation-ci:
	+@$(MAKE) --no-print-directory mutation MUTATION_SAMPLE=$(MUTATION_CI_SAMPLE) \
	    MUTATION_SEED=$(MUTATION_CI_SEED) MUTATION_TIER=ci MUTATION_MIN=$(MUTATION_CI_MIN) \
	    MUTATION_SANITIZE=0

mutation-full:
	+@$(MAKE) --no-print-directory mutation MUTATION_SAMPLE=0 MUTATION_SANITIZE=1
