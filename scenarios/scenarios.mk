# ---- Scenario suite (scenarios/README.md); included by the top-level Makefile
# `make scenarios` builds the runner against this build's library, checks
# that a wrong expectation fails with a useful message (the selftest), then
# runs every scenarios/*.scn and scenarios/regressions/*.scn against each
# watcher it applies to, each run in its own process with a time limit, and
# writes $(REPORTS)/scenarios.md and .tsv. The runner's last line is
# "N passed, N failed". `make soak` runs the long soak (SOAK_SECONDS per
# watcher, default 120; SOAK_WATCHERS=all or a list such as threaded,pidfd).
#
# The runner is the suite driver (driver.c) over the interpreter
# (interp_*.c, interp.h); both read scenarios through the vocabulary
# (steps*.c, steps.h), which the libuv adapter and the fuzzers share.
SCN_BIN      := $(BUILD)/scenarios/runner
SCN_STEP_SRCS := $(sort $(wildcard scenarios/steps*.c))
SCN_STEP_OBJS := $(patsubst scenarios/%.c,$(BUILD)/scenarios/%.o,$(SCN_STEP_SRCS))
SCN_STEP_HDRS := scenarios/steps.h scenarios/steps_internal.h
SCN_RUN_SRCS := scenarios/driver.c $(sort $(wildcard scenarios/interp_*.c))
SCN_RUN_OBJS := $(patsubst scenarios/%.c,$(BUILD)/scenarios/%.o,$(SCN_RUN_SRCS))
SCN_OBJS     := $(SCN_STEP_OBJS) $(BUILD)/conformance/support/signal_state.o \
                $(BUILD)/conformance/support/alloc_count.o \
                $(BUILD)/conformance/support/proc_count.o
SCN_JOBS     ?= 2
SCN_ARGS     ?=
SOAK_SECONDS  ?= 120
SOAK_WATCHERS ?= all
RUN_SCN = env LD_LIBRARY_PATH=$(TEST_LIB_DIR) $(SCN_BIN)

.PHONY: scenarios soak

$(SCN_STEP_OBJS): $(BUILD)/scenarios/%.o: scenarios/%.c $(SCN_STEP_HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -c $< -o $@

$(SCN_RUN_OBJS): $(BUILD)/scenarios/%.o: scenarios/%.c scenarios/interp.h scenarios/steps.h \
		lib/include/evpol.h $(wildcard conformance/support/*.h) | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Ilib/include -Iscenarios -Iconformance/support -c $< -o $@

$(SCN_BIN): $(SCN_RUN_OBJS) $(SCN_OBJS) $(LIB_FOR_TESTS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -o $@ $(SCN_RUN_OBJS) $(SCN_OBJS) \
	    -L$(TEST_LIB_DIR) -levpol -Wl,-rpath,$(TEST_LIB_DIR) $(LDFLAGS)

scenarios: $(SCN_BIN)
	@rc=0; RUNNER="$(RUN_SCN)" scenarios/selftest.sh || rc=1; \
	$(RUN_SCN) --reports $(REPORTS) -j $(SCN_JOBS) $(SCN_ARGS) scenarios scenarios/regressions || rc=1; \
	exit $$rc

soak: $(SCN_BIN)
	SOAK_SECONDS=$(SOAK_SECONDS) $(RUN_SCN) --watchers $(SOAK_WATCHERS) $(SCN_ARGS) scenarios/soak
