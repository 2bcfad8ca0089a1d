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

include conformance/conformance.mk

.PHONY: tests

tests: $(CONF_BINS) $(EXAMPLE_BINS)

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

clean:
	rm -rf build

include scenarios/scenarios.mk
include bench/bench.mk
include reports/reports.mk
include fuzz/fuzz.mk
include lib/dist/dist.mk
include scenarios/implementations.mk
include conformance/mutation/mutation.mk
