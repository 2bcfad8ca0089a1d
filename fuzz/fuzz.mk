# ---- Fuzzing (fuzz/README.md) -----------------------------------------------
# Included by the top-level Makefile.
#
#   make fuzz FUZZ_SECONDS=N   each target N seconds under libFuzzer (ASan+UBSan;
#                              races also under TSan), into a scratch corpus in
#                              $(FUZZ_BUILD)/corpus seeded from fuzz/corpus;
#                              writes $(FUZZ_REPORTS)/fuzz.md
#   make fuzz-replay           every committed corpus file through every target,
#                              as plain programs (no libFuzzer): a regression test
#   make fuzz-afl              the AFL++ builds (see fuzz/README.md to run them)
#   make fuzz-planted          the planted-bug campaign (fuzz/planted/run.sh)
#   make fuzz-build            the libFuzzer binaries only
#   make fuzz-cmin             minimize the committed corpora, keeping coverage
#   make fuzz-ossfuzz-check    fuzz/oss-fuzz/build.sh as OSS-Fuzz and
#                              ClusterFuzzLite run it; their $OUT checked
#
# FUZZ_LIBSRC=DIR builds the fuzzers against another copy of lib/ (the planted
# bugs use it). The targets link the library's objects statically, with the
# wrapping fuzz/fakeexec.h explains (FUZZ_WRAP).

FUZZ_TARGETS  := ops races scenario
FUZZ_SECONDS  ?= 60
FUZZ_BUILD    ?= build/fuzz
FUZZ_REPORTS  ?= build/reports
FUZZ_CC       ?= clang
FUZZ_LIBSRC   ?= lib
FUZZ_ARGS     ?=
AFL_CC        ?= afl-clang-fast

FUZZ_WRAP     := -Wl,--wrap=poll -Wl,--wrap=evpol_loop_add_signal_handler \
                 -Wl,--wrap=evpol_loop_remove_signal_handler -Wl,--wrap=evpol__loop_post
FUZZ_BASE      = $(CSTD) $(WARN) -g -O1 -pthread -fno-omit-frame-pointer
FUZZ_INC       = -I$(FUZZ_LIBSRC)/include -I$(FUZZ_LIBSRC) -Iconformance/support -Iscenarios -Ifuzz
FUZZ_SUPPORT  := fuzz/program.c fuzz/model.c fuzz/fakeexec.c fuzz/pool.c \
                 conformance/support/fake_kernel.c $(sort $(wildcard scenarios/steps*.c))
FUZZ_HDRS     := $(wildcard fuzz/*.h) conformance/support/fake_kernel.h scenarios/steps.h scenarios/steps_internal.h \
                 lib/include/evpol.h
FUZZ_LIB_SRCS  = $(sort $(wildcard $(FUZZ_LIBSRC)/*.c))

FUZZ_LF   := $(FUZZ_BUILD)/libfuzzer
FUZZ_TSAN := $(FUZZ_BUILD)/tsan
FUZZ_AFL  := $(FUZZ_BUILD)/afl
FUZZ_RP   := $(BUILD)/fuzz

.PHONY: fuzz fuzz-build fuzz-replay fuzz-afl fuzz-planted fuzz-tsan fuzz-deps FORCE
FORCE:

fuzz-deps:
	@$(ENSURE_DEPS) clang

# A flavour: $(1) dir, $(2) compiler, $(3) compile flags, $(4) link flags
# (the engine), $(5) extra objects (the standalone driver). $(1)/flags
# changes when the flags do, so that every object is rebuilt then.
define FUZZ_FLAVOUR
$(1)/flags: FORCE
	@mkdir -p $$(@D)
	@echo '$(2) $(3) $(4) $$(FUZZ_LIBSRC)' | cmp -s - $$@ || echo '$(2) $(3) $(4) $$(FUZZ_LIBSRC)' > $$@
$(1)/lib/%.o: $$(FUZZ_LIBSRC)/%.c $$(FUZZ_LIBSRC)/evpol-internal.h $$(FUZZ_LIBSRC)/include/evpol.h $(1)/flags | deps fuzz-deps
	@mkdir -p $$(@D)
	$(2) $$(FUZZ_BASE) $(3) $$(FUZZ_INC) $$(EVENT_CFLAGS) -c $$< -o $$@
$(1)/obj/%.o: %.c $$(FUZZ_HDRS) $(1)/flags | deps fuzz-deps
	@mkdir -p $$(@D)
	$(2) $$(FUZZ_BASE) -Wno-missing-prototypes $(3) $$(FUZZ_INC) $$(EVENT_CFLAGS) -c $$< -o $$@
$(1)/OBJS = $$(patsubst $$(FUZZ_LIBSRC)/%.c,$(1)/lib/%.o,$$(FUZZ_LIB_SRCS)) \
            $$(patsubst %.c,$(1)/obj/%.o,$$(FUZZ_SUPPORT))
$(foreach t,$(FUZZ_TARGETS),
$(1)/$(t): $(1)/obj/fuzz/target_$(t).o $$($(1)/OBJS) $(5)
	$(2) $(4) -o $$@ $$^ $$(FUZZ_WRAP) $$(EVENT_LIBS) -pthread
)
endef

FUZZ_LF_CFLAGS   := -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined
FUZZ_LF_LDFLAGS  := -fsanitize=address,undefined,fuzzer
# TSan: no libFuzzer (its coverage counters are bytes every thread bumps, a
# data race for TSan); the standalone driver replays and mutates instead.
FUZZ_TSAN_CFLAGS := -fsanitize=thread
FUZZ_TSAN_LDFLAGS:= -fsanitize=thread
FUZZ_AFL_CFLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_AFL_LDFLAGS := -fsanitize=address,undefined

$(eval $(call FUZZ_FLAVOUR,$(FUZZ_LF),$(FUZZ_CC),$(FUZZ_LF_CFLAGS),$(FUZZ_LF_LDFLAGS),))
$(eval $(call FUZZ_FLAVOUR,$(FUZZ_TSAN),$(FUZZ_CC),$(FUZZ_TSAN_CFLAGS),$(FUZZ_TSAN_LDFLAGS),$(FUZZ_TSAN)/obj/fuzz/standalone.o))
$(eval $(call FUZZ_FLAVOUR,$(FUZZ_AFL),$(AFL_CC),$(FUZZ_AFL_CFLAGS),$(FUZZ_AFL_LDFLAGS),$(FUZZ_AFL)/obj/fuzz/standalone.o))

fuzz-build: $(addprefix $(FUZZ_LF)/,$(FUZZ_TARGETS))

fuzz-tsan: $(FUZZ_TSAN)/races
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_BIN=$(FUZZ_LF) \
	    FUZZ_TSAN_BIN=$(FUZZ_TSAN) FUZZ_REPORTS=$(FUZZ_REPORTS) fuzz/run.sh races-tsan $(FUZZ_ARGS)

fuzz: fuzz-build $(FUZZ_TSAN)/races
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_BIN=$(FUZZ_LF) \
	    FUZZ_TSAN_BIN=$(FUZZ_TSAN) FUZZ_REPORTS=$(FUZZ_REPORTS) \
	    fuzz/run.sh $(FUZZ_TARGETS) races-tsan $(FUZZ_ARGS)

fuzz-afl:
	@$(ENSURE_DEPS) afl++
	+@$(MAKE) --no-print-directory $(addprefix $(FUZZ_AFL)/,$(FUZZ_TARGETS))
	@echo "AFL++ builds in $(FUZZ_AFL): $(FUZZ_TARGETS)"
	@echo "run one (see fuzz/README.md for -M/-S on several cores):"
	@echo "  AFL_SKIP_CPUFREQ=1 afl-fuzz -i fuzz/corpus/ops -o $(FUZZ_BUILD)/afl-out -x fuzz/ops.dict -- $(FUZZ_AFL)/ops"

fuzz-planted:
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_REPORTS=$(FUZZ_REPORTS) fuzz/planted/run.sh $(FUZZ_ARGS)

# The replay: plain programs built like the rest of this build tree ($(CC),
# $(SANITIZE), $(CFLAGS): `make coverage` runs it instrumented), linking
# this tree's library objects.
$(FUZZ_RP)/obj/%.o: %.c $(FUZZ_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Wno-missing-prototypes -Ilib/include -Ilib -Iconformance/support \
	    -Iscenarios -Ifuzz $(EVENT_CFLAGS) -c $< -o $@

FUZZ_RP_OBJS := $(patsubst %.c,$(FUZZ_RP)/obj/%.o,$(FUZZ_SUPPORT) fuzz/standalone.c)

$(FUZZ_RP)/%: $(FUZZ_RP)/obj/fuzz/target_%.o $(FUZZ_RP_OBJS) $(LIB_OBJS)
	$(CC) $(BASE_CFLAGS) -o $@ $^ $(FUZZ_WRAP) $(EVENT_LIBS) $(LDFLAGS)

fuzz-replay: $(addprefix $(FUZZ_RP)/,$(FUZZ_TARGETS))
	@FUZZ_BIN=$(FUZZ_RP) fuzz/replay.sh $(FUZZ_TARGETS)

# fuzz/to-scenario and corpus seeding (fuzz/tool.c).
$(FUZZ_RP)/fuzz-tool: $(FUZZ_RP)/obj/fuzz/tool.o $(filter-out %/standalone.o,$(FUZZ_RP_OBJS)) $(LIB_OBJS)
	$(CC) $(BASE_CFLAGS) -o $@ $^ $(FUZZ_WRAP) $(EVENT_LIBS) $(LDFLAGS)

.PHONY: fuzz-tool fuzz-seed
fuzz-tool: $(FUZZ_RP)/fuzz-tool

# Seed fuzz/corpus/ops from the scenario files (what the fuzzer can run of
# them); run by hand after adding scenarios.
fuzz-seed: $(FUZZ_RP)/fuzz-tool
	@for s in scenarios/*.scn scenarios/regressions/*.scn; do \
	    [ -f "$$s" ] || continue; \
	    n=$$(basename $$s .scn); \
	    $(FUZZ_RP)/fuzz-tool encode $$s fuzz/corpus/ops/seed-scn-$$n 2>/dev/null && echo "seeded from $$s"; \
	done; true

# Objects made by pattern rules are intermediate for make; keep them, so
# that a second build compiles only what changed.
.PRECIOUS: $(FUZZ_RP)/obj/%.o $(FUZZ_LF)/obj/%.o $(FUZZ_LF)/lib/%.o \
           $(FUZZ_TSAN)/obj/%.o $(FUZZ_TSAN)/lib/%.o \
           $(FUZZ_AFL)/obj/%.o $(FUZZ_AFL)/lib/%.o

# build.sh as OSS-Fuzz and ClusterFuzzLite run it, and their $OUT checked
# (fuzz/oss-fuzz/check.sh).
.PHONY: fuzz-ossfuzz-check
fuzz-ossfuzz-check:
	@$(ENSURE_DEPS) clang libevent-dev pkg-config zip unzip
	@FUZZ_BUILD=$(FUZZ_BUILD) fuzz/oss-fuzz/check.sh

# Minimize the committed corpora, keeping their coverage (fuzz/cmin.sh).
.PHONY: fuzz-cmin
fuzz-cmin: fuzz-build
	@FUZZ_BIN=$(FUZZ_LF) FUZZ_BUILD=$(FUZZ_BUILD) fuzz/cmin.sh $(FUZZ_TARGETS)
