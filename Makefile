# evpol — top-level build: the variables every part shares, `all`, `check`
# and one fragment per subject (lib/lib.mk, examples/examples.mk,
# scenarios/scenarios.mk, bench/bench.mk, reports/reports.mk, fuzz/fuzz.mk,
# lib/dist/dist.mk, scenarios/implementations.mk, conformance/mutation/mutation.mk).
#
#   make                 build libevpol.so, libevpol.a and evpol.pc
#   make check           all tests (conformance suite, examples)
#   make conformance     the conformance suite with its clause summary
#   make install         PREFIX=/usr/local DESTDIR=
#   make check SANITIZE=address,undefined   (or SANITIZE=thread)
#
# Every target first makes sure the Debian packages it needs are installed
# ($(ENSURE_DEPS)): missing ones are installed as root or through sudo, or
# the build stops with the command to run. Everything the build writes,
# reports included, goes under build/.

.DEFAULT_GOAL := all

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR    ?=

VERSION_MAJOR := 0
VERSION       := 0.1.0
SONAME        := libevpol.so.$(VERSION_MAJOR)

CC ?= cc
SANITIZE ?=

# Each sanitizer build gets its own tree, so switching never mixes objects.
# EVPOL_LIB=/path/to/libevpol.so.N (or an installed prefix holding
# lib/libevpol.so.N) runs the suite against that build of the library
# instead of this tree's: the test programs are built in their own tree and
# linked, with a RUNPATH, to a link to it.
EVPOL_LIB ?=
ifneq ($(EVPOL_LIB),)
EVPOL_LIB_FILE := $(abspath $(if $(wildcard $(EVPOL_LIB)/lib/libevpol.so.0),$(EVPOL_LIB)/lib/libevpol.so.0,$(EVPOL_LIB)))
BUILD ?= build/verify
endif

ifeq ($(SANITIZE),)
BUILD ?= build/default
else
BUILD ?= build/san-$(subst $(comma),-,$(SANITIZE))
endif
comma := ,

ENSURE_DEPS := lib/ensure-deps.sh
DEPS_BUILD := libevent-dev libcmocka-dev pkg-config python3
DEPS_TOOLS := lcov clang

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CSTD    := -std=c11 -D_GNU_SOURCE
OPT     ?= -O2 -g
SANFLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all)
BASE_CFLAGS = $(CSTD) $(WARN) $(OPT) -pthread $(SANFLAGS) $(CFLAGS)

# Evaluated when a recipe runs, i.e. after the dependency check.
EVENT_CFLAGS = $(shell pkg-config --cflags libevent libevent_pthreads)
EVENT_LIBS   = $(shell pkg-config --libs libevent libevent_pthreads)
CMOCKA_CFLAGS = $(shell pkg-config --cflags cmocka)
CMOCKA_LIBS   = $(shell pkg-config --libs cmocka)

# Where the suites write their reports: the default build to build/reports,
# any other build tree (sanitizers, BUILD=...) to $(BUILD)/reports, so runs
# never mix.
REPORTS ?= $(if $(filter build/default,$(BUILD)),build/reports,$(BUILD)/reports)

# The library and the examples first: the test programs' rules name
# $(LIB_FOR_TESTS) and $(EXAMPLE_BINS).
include lib/lib.mk
include examples/examples.mk

# Conformance: every conformance/test_*.c is one cmocka program, linked with
# the support code in conformance/support/.
CONF_SRCS    := $(sort $(wildcard conformance/test_*.c))
CONF_BINS    := $(patsubst conformance/%.c,$(BUILD)/conformance/%,$(CONF_SRCS))
SUPPORT_SRCS := $(sort $(wildcard conformance/support/*.c))
SUPPORT_OBJS := $(patsubst conformance/support/%.c,$(BUILD)/conformance/support/%.o,$(SUPPORT_SRCS))
SUPPORT_HDRS := $(wildcard conformance/support/*.h)

# The support objects are shared by every test program: keep them.
.SECONDARY: $(SUPPORT_OBJS)

$(BUILD)/conformance/support/%.o: conformance/support/%.c $(SUPPORT_HDRS) lib/include/evpol.h | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Wno-missing-prototypes -Ilib/include -Iconformance/support $(CMOCKA_CFLAGS) $(EVENT_CFLAGS) -c $< -o $@

$(BUILD)/conformance/%: conformance/%.c $(SUPPORT_OBJS) $(SUPPORT_HDRS) $(LIB_FOR_TESTS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Wno-missing-prototypes -Ilib/include -Iconformance/support $(CMOCKA_CFLAGS) $(EVENT_CFLAGS) \
	    -o $@ $< $(SUPPORT_OBJS) -L$(TEST_LIB_DIR) -levpol -Wl,-rpath,$(TEST_LIB_DIR) $(CMOCKA_LIBS) $(EVENT_LIBS) $(LDFLAGS)

.PHONY: conformance tests

tests: $(CONF_BINS) $(EXAMPLE_BINS)

# The suite runner (build-aux/run-tests.sh) gives each program a time limit,
# collects cmocka's JUnit XML, then build-aux/clause-matrix writes the clause
# matrix and prints the failures, the per-family table and the closing line
# "N passed, N failed", in $(REPORTS).
CLAUSES_MD ?= conformance/SPEC.md
NA_TSV     ?= conformance/na.tsv
MATRIX_SELFTEST := conformance/test_matrix_tool.sh conformance/test_broken_build.sh
RUN_TESTS = LD_LIBRARY_PATH=$(TEST_LIB_DIR) build-aux/run-tests.sh --reports $(REPORTS) \
	--sources conformance --clauses $(CLAUSES_MD) --na $(NA_TSV)

# Builds what builds: a program that fails to compile must not stop the
# others from running, and must not leave a stale binary that would test
# old code. Its tests are then reported as "did not build" failures.
define build_programs
	+@$(MAKE) --no-print-directory -k $(1) || true
	+@for b in $(1); do $(MAKE) --no-print-directory -s $$b >/dev/null 2>&1 || rm -f $$b; done
endef

# Gaps (clauses without a test) fail `make conformance`, not `make check`.
# Scenarios and the fuzz-corpus replay run first and the conformance runner
# last, so that the closing line is the suite's total; any part failing
# fails the target.
.PHONY: all check clean

all: $(SHLIB) $(STLIB) $(PCFILE)

check: all
	$(call build_programs,$(CONF_BINS) $(EXAMPLE_BINS))
	@rc=0; $(MAKE) --no-print-directory scenarios || rc=1; \
	$(MAKE) --no-print-directory fuzz-replay || rc=1; \
	EVPOL_BUILD=$(BUILD) EVPOL_SANFLAGS="$(SANFLAGS)" $(RUN_TESTS) --allow-gaps $(CONF_BINS) -- \
	    $(EXAMPLE_BINS) $(MATRIX_SELFTEST) lib/dist/test-install.sh lib/abi/test-abi-check.sh || rc=1; \
	exit $$rc

conformance: $(if $(EVPOL_LIB),$(LIB_FOR_TESTS),all)
	@echo "library under test: $(if $(EVPOL_LIB),$(EVPOL_LIB_FILE),$(abspath $(SHLIB)))"
	$(call build_programs,$(CONF_BINS))
	@rc=0; $(MAKE) --no-print-directory scenarios || rc=1; \
	$(if $(EVPOL_LIB),echo "fuzz-corpus replay skipped: it links this tree's objects and not EVPOL_LIB";, \
	    $(MAKE) --no-print-directory fuzz-replay || rc=1;) \
	$(RUN_TESTS) $(CONF_BINS) || rc=1; \
	exit $$rc

clean:
	rm -rf build

include scenarios/scenarios.mk
include bench/bench.mk
include reports/reports.mk
include fuzz/fuzz.mk
include lib/dist/dist.mk
include scenarios/implementations.mk
include conformance/mutation/mutation.mk
