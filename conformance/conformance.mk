# ---- Conformance suite (conformance/README.md) -------------------------------
# Included by the top-level Makefile, after the library's variables and
# rules and before `tests`, which lists $(CONF_BINS).
#
#   make conformance     every conformance program (each under a time limit),
#                        after the scenarios and the fuzz-corpus replay; the
#                        clause matrix in $(REPORTS)/clauses.tsv and .html
#
# Every conformance/test_*.c is one cmocka program, linked with the helper
# library in conformance/support/.
CONF_SRCS    := $(sort $(wildcard conformance/test_*.c))
CONF_BINS    := $(patsubst conformance/%.c,$(BUILD)/conformance/%,$(CONF_SRCS))
SUPPORT_SRCS := $(sort $(wildcard conformance/support/*.c))
SUPPORT_OBJS := $(patsubst conformance/support/%.c,$(BUILD)/conformance/support/%.o,$(SUPPORT_SRCS))
SUPPORT_HDRS := $(wildcard conformance/support/*.h)

# The support objects are shared by every test program: keep them.
.SECONDARY: $(SUPPORT_OBJS)

.PHONY: conformance

$(BUILD)/conformance/support/%.o: conformance/support/%.c $(SUPPORT_HDRS) lib/include/evpol.h | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Wno-missing-prototypes -Ilib/include -Iconformance/support $(CMOCKA_CFLAGS) $(EVENT_CFLAGS) -c $< -o $@

$(BUILD)/conformance/%: conformance/%.c $(SUPPORT_OBJS) $(SUPPORT_HDRS) $(LIB_FOR_TESTS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Wno-missing-prototypes -Ilib/include -Iconformance/support $(CMOCKA_CFLAGS) $(EVENT_CFLAGS) \
	    -o $@ $< $(SUPPORT_OBJS) -L$(TEST_LIB_DIR) -levpol -Wl,-rpath,$(TEST_LIB_DIR) $(CMOCKA_LIBS) $(EVENT_LIBS) $(LDFLAGS)

# The suite runner (conformance/tools/run-tests.sh) gives each program a time
# limit, collects cmocka's JUnit XML, then conformance/tools/clause-matrix
# writes the clause matrix and prints the failures, the per-family table and
# the closing line "N passed, N failed".
CLAUSES_MD ?= conformance/SPEC.md
NA_TSV     ?= conformance/na.tsv
MATRIX_SELFTEST := conformance/test_matrix_tool.sh conformance/test_broken_build.sh
RUN_TESTS = LD_LIBRARY_PATH=$(TEST_LIB_DIR) conformance/tools/run-tests.sh --reports $(REPORTS) \
	--sources conformance --clauses $(CLAUSES_MD) --na $(NA_TSV)

conformance: $(if $(EVPOL_LIB),$(LIB_FOR_TESTS),all)
	@echo "library under test: $(if $(EVPOL_LIB),$(EVPOL_LIB_FILE),$(abspath $(SHLIB)))"
	$(call build_programs,$(CONF_BINS))
	@rc=0; $(MAKE) --no-print-directory scenarios || rc=1; \
	$(if $(EVPOL_LIB),echo "fuzz-corpus replay skipped: it links this tree's objects and not EVPOL_LIB";, \
	    $(MAKE) --no-print-directory fuzz-replay || rc=1;) \
	$(RUN_TESTS) $(CONF_BINS) || rc=1; \
	exit $$rc
