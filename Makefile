# Rookery: the front door. `make test` is what CI runs (.ci/run); `make vm` boots the appliance.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VERSION := $(shell cat .version)
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build test test-rust webui-build webui-test fmt-check clippy doc lockfile-check \
        test-ci-script test-schemathesis ci-selftest-pass ci-selftest-fail help bench ansible-lint

all: build

help:
	@echo "make vm    build the appliance image for this machine and boot it in QEMU"
	@echo "make test  everything CI runs: installs, fmt, clippy, docs, tests"
	@echo "make bench our daemons against their named peers, side by side (see docs/benchmarks.md)"

# Idempotent installer of what a fresh Debian machine lacks (needs root the first time).
deps:
	bash scripts/install-build-deps.sh
	bash scripts/install-probed-test-deps.sh
	bash scripts/install-packetd-build-deps.sh
	bash scripts/install-ingestd-test-deps.sh
	bash scripts/install-apid-test-deps.sh
	bash scripts/install-postgres-test-deps.sh
	bash scripts/install-ansible-deps.sh
	bash scripts/install-webui-deps.sh

build: deps
	$(CARGO) build --workspace --locked

fmt-check: deps
	$(CARGO) fmt --all --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

doc: deps
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked

test-rust: deps
	$(CARGO) test --workspace --locked

# The web console (webui/): type-check against apid's OpenAPI document and bundle into webui/dist.
webui-build: deps
	cd webui && npm run build

# Unit tests (vitest), then Debian's Chromium against real apid, probed, licensed, ingestd and packetd on
# loopback (the binaries are built once here and reused); writes docs/screenshots/*.png.
webui-test: webui-build
	$(CARGO) build --locked -p rookery-apid -p rookery-probed -p rookery-licensed -p rookery-ingestd -p rookery-packetd --bins
	cd webui && npm test
	cd webui && npm run e2e

# schemathesis (PyPI, in /opt/rookery-test-venv) fuzzes a real apid, with real licensed and
# probed, against apid's OpenAPI document: anonymously and as an admin, bounded in examples
# and time (about four minutes); any 5xx but the contract's 503, undocumented answer or
# dropped connection fails.
test-schemathesis: deps
	$(CARGO) build --locked -p rookery-apid -p rookery-licensed -p rookery-probed --bins
	sh daemons/apid/scripts/schemathesis.sh target/debug 20

# The build must not have changed Cargo.lock (a stale lock would drift in CI).
lockfile-check:
	git diff --exit-code -- Cargo.lock

# .ci/run must fail when a step fails, and pass when all pass; ARCHITECTURE.md must not drift.
test-ci-script:
	bash tests/ci/ci_run_propagates_failure.sh
	bash tests/ci/architecture_paths_exist.sh

ci-selftest-pass:
	@true

ci-selftest-fail:
	@echo "ci-selftest-fail: failing on purpose" >&2; false

# ansible/: ansible-lint (production profile, offline) and its table of factory keys current
# with etc/rookery/*.toml. The playbooks run against the VM in `make test-qemu` (part of `make test`).
ansible-lint: deps
	cd ansible && PATH=/opt/rookery-test-venv/bin:$$PATH ansible-lint --nocolor -q
	/opt/rookery-test-venv/bin/python ansible/tools/factory-keys.py --check ansible/roles/rookery/vars/main.yml

# Last, the appliance: both images built (release, aarch64 cross-compiled) and booted under
# QEMU with every check of tests/qemu/ (image/image.mk; about 33 of make test's 50 minutes on a
# cold 2-core machine, see docs/image.md).
test: deps fmt-check clippy doc test-rust webui-test test-schemathesis lockfile-check test-ci-script ansible-lint test-qemu
	@echo "make test: all steps passed"

# Benchmarks: each bench/*.sh runs one daemon and its peer in one run and prints ratios.
# Never part of `make test` (timings belong here, not in tests).
bench: deps
	bash scripts/install-bench-deps.sh
	@for b in bench/*.sh; do echo "== $$b"; bash "$$b"; done

include image/image.mk
