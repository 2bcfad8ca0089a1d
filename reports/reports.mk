# ---- Coverage and the reports page (reports/README.md); included by the
# top-level Makefile. The report makers live here; what they write goes to
# $(COV_REPORTS), in the build tree.
# `make coverage` builds the library and the suites again with gcc --coverage
# in $(COV_BUILD), runs the conformance suite, the scenarios and the fuzz
# corpus replay (when those targets exist) against it, and writes
# $(COV_REPORTS)/coverage/ (lcov + genhtml: lines, functions and branches of
# lib/ only), $(COV_REPORTS)/coverage.txt (the plain figures) and
# $(COV_REPORTS)/coverage-clauses.md (each conformance test run alone: which
# clause families reach which lines of lib/, and which lines none does). It
# fails when a run fails or lib/ is under a floor. The floors only ever go up.
# `make reports` writes $(COV_REPORTS)/index.html from whatever reports exist
# (a missing one shows as "not generated" with the target that makes it);
# `make reports-test` checks that page in headless Chromium and saves
# $(COV_REPORTS)/index.png.
COV_BUILD   ?= build/coverage
COV_REPORTS ?= build/reports
COV_CC      ?= gcc
COV_JOBS    ?= 2
# The issued floors are 95% of lines and 85% of branches. Measured
# 2026-11-25: 98.9% of lines, 94.6% of branches; the floors sit a little
# under that, because the few lines only a race reaches come and go between
# runs. They only ever go up.
COVERAGE_MIN_LINES    ?= 97
COVERAGE_MIN_BRANCHES ?= 92
COV_SHIM    := $(COV_BUILD)/reports-tools/cmocka-select.so
COV_MAKE     = $(MAKE) --no-print-directory BUILD=$(COV_BUILD) CC=$(COV_CC) OPT="-O0 -g" \
	CFLAGS=--coverage SANITIZE= EVPOL_LIB= REPORTS=$(COV_BUILD)/reports
CHROMIUM    ?= /usr/bin/chromium

.PHONY: coverage reports reports-test

$(COV_SHIM): reports/cmocka-select.c reports/cmocka-select.map | deps
	@mkdir -p $(@D)
	$(COV_CC) $(CSTD) $(WARN) -O2 -fPIC -shared -Wl,--version-script=reports/cmocka-select.map \
	    $(CMOCKA_CFLAGS) -o $@ $< -lgcov -ldl

coverage: $(COV_SHIM)
	@$(ENSURE_DEPS) lcov
	+@COV_MAKE='$(COV_MAKE)' COV_BUILD=$(COV_BUILD) COV_SHIM=$(abspath $(COV_SHIM)) COV_REPORTS=$(COV_REPORTS) \
	    COV_MIN_LINES=$(COVERAGE_MIN_LINES) COV_MIN_BRANCHES=$(COVERAGE_MIN_BRANCHES) \
	    COV_JOBS=$(COV_JOBS) COV_MAKEFILES='$(MAKEFILE_LIST)' reports/coverage.sh

reports: | deps
	@python3 reports/make-index --reports $(COV_REPORTS)

# playwright-core (reports/package.json, pinned by its lockfile) drives
# the system's Chromium; npm ci installs exactly the locked version.
reports/node_modules/.installed: reports/package.json reports/package-lock.json
	@command -v npm >/dev/null || { echo "reports-test needs node (>= 20) and npm" >&2; exit 1; }
	cd reports && npm ci --no-audit --no-fund
	@touch $@

reports-test: reports reports/node_modules/.installed
	@$(ENSURE_DEPS) chromium
	@command -v node >/dev/null || { echo "reports-test needs node (>= 20) and npm" >&2; exit 1; }
	@CHROMIUM=$(CHROMIUM) node reports/test_index_page.mjs $(COV_REPORTS)
