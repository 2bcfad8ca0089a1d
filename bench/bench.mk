# ---- Benchmarks (bench/README.md); included by the top-level Makefile -------
# `make bench` measures every watcher and the peers (raw posix_spawn +
# waitpid, pidfd + epoll, libuv, CPython asyncio's watchers on python3) on
# the same workloads: throughput, exit latency, memory per pending child
# and the cost of a spawn while P children are pending. Quick mode takes
# about a minute; `make bench-full` (or BENCH_MODE=full) the full sizes.
# Results: $(BENCH_REPORTS)/results.md, results.tsv and *.svg plots.
# Benchmarks report; they fail only when a benchmark itself breaks.
BENCH_MODE    ?= quick
BENCH_REPORTS ?= build/reports/bench
BENCH_ARGS    ?=
DEPS_BENCH    := libuv1-dev gnuplot-nox
BENCH_BINS    := $(BUILD)/bench/evbench $(BUILD)/bench/stamp_exit

.PHONY: bench bench-full bench-deps

bench-deps:
	@$(ENSURE_DEPS) $(DEPS_BENCH)

$(BUILD)/bench/stamp_exit: bench/stamp_exit.c | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -o $@ $< $(LDFLAGS)

$(BUILD)/bench/evbench: bench/evbench.c lib/include/evpol.h $(SHLIB) | deps bench-deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Ilib/include $$(pkg-config --cflags libuv) -o $@ $< \
	    -L$(BUILD) -levpol -Wl,-rpath,$(abspath $(BUILD)) $$(pkg-config --libs libuv) $(LDFLAGS)

bench: $(BENCH_BINS) | bench-deps
	python3 bench/run.py --mode $(BENCH_MODE) --bin $(BUILD)/bench --reports $(BENCH_REPORTS) \
	    --lib $(abspath $(SHLIB)) $(BENCH_ARGS)

bench-full:
	+$(MAKE) --no-print-directory bench BENCH_MODE=full
