# ---- Release: dist, distcheck and the ABI check (included by the Makefile) --
# `make dist` packs the files git tracks (as they are in the working tree)
# into $(DIST_TARBALL). `make distcheck` proves that tarball is a complete
# project (lib/dist/distcheck.sh): unpacked alone in a fresh folder, with
# SIGHUP, SIGINT, SIGQUIT and SIGPIPE ignored as nohup and CI runners leave
# them, it runs the README's two commands, installs with DESTDIR, builds and
# runs examples/minimal.c through pkg-config against that install, runs
# `make abi-check`, and insists the build left nothing in the tree outside
# build/.
#
# ABI: lib/evpol.map exports only the public symbols, in the version node
# EVPOL_0. $(ABI_BASELINE) is the ABI of the released library (abidw, public
# header's types only). `make abi-check` compares this build (or EVPOL_LIB)
# with it: added functions pass and are listed; a removed or changed function
# or a public struct laid out differently fails. An incompatible change is
# made on purpose, in one commit: VERSION_MAJOR (the soname) goes up, the node
# in lib/evpol.map is renamed, and `make abi-baseline` writes the new
# baseline, lib/abi/libevpol-N.abi, replacing the old one.
DIST_NAME    := evpol-$(VERSION)
DIST_TARBALL := build/$(DIST_NAME).tar.gz
ABI_BASELINE := lib/abi/libevpol-$(VERSION_MAJOR).abi
ABI_LIB      := $(if $(EVPOL_LIB),$(LIB_FOR_TESTS),$(SHLIB))
ABIDW        := abidw --no-corpus-path --no-comp-dir-path --short-locs --headers-dir lib/include \
	--drop-private-types
DEPS_ABI     := abigail-tools

.PHONY: dist distcheck abi-check abi-baseline

# The archive is reproducible: names sorted, owner root, every mtime the
# last commit's.
dist:
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || \
	    { echo "make dist: needs a git checkout (it packs the files git tracks)" >&2; exit 1; }
	@mkdir -p $(dir $(DIST_TARBALL))
	git ls-files -z | tar --null --no-recursion -T - --transform 's,^,$(DIST_NAME)/,' --sort=name \
	    --owner=0 --group=0 --numeric-owner --mtime=@$$(git log -1 --format=%ct) -cf - | gzip -n -9 >$(DIST_TARBALL).tmp
	mv $(DIST_TARBALL).tmp $(DIST_TARBALL)
	@echo "dist: $(DIST_TARBALL) ($$(git ls-files | wc -l) files)"

distcheck: dist
	lib/dist/distcheck.sh $(DIST_TARBALL)

abi-check: $(ABI_LIB)
	@$(ENSURE_DEPS) $(DEPS_ABI)
	@ABIDW='$(ABIDW)' lib/abi/abi-check.sh $(ABI_LIB) $(ABI_BASELINE)

abi-baseline: $(SHLIB)
	@$(ENSURE_DEPS) $(DEPS_ABI)
	$(ABIDW) --out-file $(ABI_BASELINE) $(SHLIB)
	@echo "abi-baseline: $(ABI_BASELINE) written from $(SHLIB); commit it with the change that needs it"
