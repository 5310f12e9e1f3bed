# The appliance image: included by the root Makefile.
#   make image [ARCH=x86-64|arm64]   build rookery-$(VERSION)-$(ARCH).raw (+ .raw.zst, SHA256SUMS)
#   make images                      both architectures
#   make vm                          boot this machine's image in QEMU (built if missing)
#   make test-qemu                   build both and run tests/qemu/ against each
HOST_ARCH := $(shell uname -m | sed 's/x86_64/x86-64/; s/aarch64/arm64/')
ARCH ?= $(HOST_ARCH)
IMAGE_OUT := mkosi.output
# Caches live outside the clone so fresh clones (CI) reuse them on the same machine.
IMAGE_CACHE ?= /var/cache/rookery-mkosi
# Daemons shipped in the image: each has daemons/<d>/systemd/rookery-<d>.service. Each gets
# its system user rookery-<d> (member of group rookery) from a generated sysusers.d file.
IMAGE_DAEMONS := $(foreach u,$(wildcard daemons/*/systemd/rookery-*.service),$(word 2,$(subst /, ,$(u))))
RUST_TARGET_x86-64 := x86_64-unknown-linux-gnu
RUST_TARGET_arm64 := aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER := aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu := aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu := aarch64-linux-gnu-ar

.PHONY: image-deps image images vm test-qemu test-qemu-netem test-bins
# (stage-ARCH and image-ARCH are pattern rules: they must not be .PHONY, or make skips them;
# they have no files of their own name, so they always run.)

image-deps:
	bash scripts/install-image-deps.sh

# Cross-built daemons, their units and the factory config, as an extra tree for mkosi.
stage-%: deps image-deps webui-build
	@start=$$(date +%s); set -x; \
	$(CARGO) build --release --locked --target $(RUST_TARGET_$*) \
	  $(foreach d,$(IMAGE_DAEMONS),-p rookery-$(d)) -p rookeryctl; \
	{ rc=$$?; set +x; } 2>/dev/null; \
	echo "image: daemons for $* (release, $(RUST_TARGET_$*)) built in $$(( $$(date +%s) - start ))s"; exit $$rc
	rm -rf image/build/$*
	install -d image/build/$*/usr/bin image/build/$*/usr/lib/systemd/system \
	  image/build/$*/usr/lib/sysusers.d image/build/$*/etc/rookery \
	  image/build/$*/usr/share/doc/rookery
	install -m 0755 target/$(RUST_TARGET_$*)/release/rookeryctl image/build/$*/usr/bin/
	for d in $(IMAGE_DAEMONS); do \
	  install -m 0755 target/$(RUST_TARGET_$*)/release/rookery-$$d image/build/$*/usr/bin/; \
	  install -m 0644 daemons/$$d/systemd/*.service image/build/$*/usr/lib/systemd/system/; \
	  install -m 0644 etc/rookery/$$d.toml image/build/$*/etc/rookery/; \
	  printf 'u rookery-%s - "Rookery %s" /var/lib/rookery/%s\nm rookery-%s rookery\n' $$d $$d $$d $$d \
	    > image/build/$*/usr/lib/sysusers.d/rookery-$$d.conf; \
	done
	install -m 0644 docs/*.md image/build/$*/usr/share/doc/rookery/
	# The web console (architecture-independent), where apid's [webui] directory expects it.
	install -d image/build/$*/usr/share/rookery/webui
	cp -r webui/dist/. image/build/$*/usr/share/rookery/webui/
	chmod -R u=rwX,go=rX image/build/$*/usr/share/rookery/webui

image-%: stage-%
	mkdir -p $(IMAGE_OUT) $(IMAGE_CACHE)/cache $(IMAGE_CACHE)/packages
	@start=$$(date +%s); \
	mkosi --architecture=$* --image-version=$(VERSION) --output=rookery-$(VERSION)-$* \
	  --output-dir=$(IMAGE_OUT) --cache-dir=$(IMAGE_CACHE)/cache \
	  --package-cache-dir=$(IMAGE_CACHE)/packages --extra-tree=image/build/$* --force build; \
	echo "image: mkosi built rookery-$(VERSION)-$*.raw in $$(( $$(date +%s) - start ))s"
	cd $(IMAGE_OUT) && zstd -q -f -T0 -10 rookery-$(VERSION)-$*.raw -o rookery-$(VERSION)-$*.raw.zst && \
	  sha256sum rookery-$(VERSION)-*.raw rookery-$(VERSION)-*.raw.zst > SHA256SUMS && \
	  ls -l rookery-$(VERSION)-$*.raw rookery-$(VERSION)-$*.raw.zst

image: image-$(ARCH)
images: image-x86-64 image-arm64

# Builds the image only when it is missing (`make image` rebuilds it); host tools always.
vm: image-deps
	[ -f $(IMAGE_OUT)/rookery-$(VERSION)-$(HOST_ARCH).raw ] || $(MAKE) image-$(HOST_ARCH)
	bash tests/qemu/vm.sh $(IMAGE_OUT)/rookery-$(VERSION)-$(HOST_ARCH).raw $(HOST_ARCH)

# The workspace's debug test binaries: run.sh's hosttests (tests/qemu/hosttests) run some of
# them inside the VM of this machine's architecture, whose kernel has sch_netem (a no-op
# after `cargo test --workspace`).
test-bins: deps
	$(CARGO) test --workspace --no-run --locked

# Both architectures' boots at once, then the hosttests (tc netem accuracy, from test-bins)
# in a VM of this machine's architecture running alone.
test-qemu: image-x86-64 image-arm64 deps test-bins
	ROOKERY_QEMU_HOSTTESTS=1 bash tests/qemu/run.sh $(IMAGE_OUT) $(VERSION)

# Only the tc netem accuracy tests (tests/qemu/hosttests) in a VM of this machine's
# architecture, whose kernel has sch_netem (this CI kernel has none); `make test-qemu` runs
# them too, after the other boots.
test-qemu-netem: image-$(HOST_ARCH) deps test-bins
	ROOKERY_QEMU_HOSTTESTS=1 ROOKERY_QEMU_MATCH=hosttests bash tests/qemu/run.sh $(IMAGE_OUT) $(VERSION) $(HOST_ARCH)
