# ---- Examples: built against the library the tests use, run by `make check`
# Included by the top-level Makefile.
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))

.PHONY: examples

examples: $(EXAMPLE_BINS)

$(BUILD)/examples/%: examples/%.c $(LIB_FOR_TESTS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Ilib/include $(EVENT_CFLAGS) -o $@ $< -L$(TEST_LIB_DIR) -levpol \
	    -Wl,-rpath,$(TEST_LIB_DIR) $(EVENT_LIBS) $(LDFLAGS)
