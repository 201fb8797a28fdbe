# floodgate: an Envoy ext_authz rate limiter.
#
#   make run     build and run the local stack (floodgate alone: flags from FLOODGATE_* env or ARGS=...)
#   make test    install test dependencies (memcached, Envoy), vet, run every test with -race
#   make build   build bin/floodgate
#   make bench   run the benchmarks
#   make lint    check formatting, vet and staticcheck; make fmt fixes formatting
#   make vulncheck  govulncheck: known vulnerabilities in the code's call graph
#   make fuzz    run every fuzz target for FUZZTIME (10s) each
#   make soak    10 minutes of mixed load with memcached restarts (SOAK_DURATION); not in CI

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Project-local tools (Envoy from scripts/deps.sh) come first.
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/.tools/venv/bin:$(PATH)

GO ?= go
# vtprotobuf: go-control-plane's generated marshalling code, which
# authz.Codec uses for Check responses (without it floodgate works the same,
# a little slower). Every go command below builds with it.
export GOFLAGS := $(strip $(GOFLAGS) -tags=vtprotobuf)
BIN := bin/floodgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
ifeq ($(strip $(VERSION)),)
VERSION := dev
endif
LDFLAGS := -s -w -X main.version=$(VERSION)
TEST_TIMEOUT ?= 15m
ARGS ?=
FUZZTIME ?= 10s
SOAK_DURATION ?= 10m
# Linters, pinned, run from the Go module proxy with go run (cached after the
# first run); they do not touch go.mod.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0

# Go files outside hidden directories (.tools, .git) and bin/.
GOFILES = $(shell find . -path './.*' -prune -o -path ./bin -prune -o -name '*.go' -print)

.PHONY: all deps build run test bench fmt lint vulncheck fuzz soak clean

all: build

deps:
	@bash scripts/deps.sh

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/floodgate

# scripts/run-stack.sh (when present) runs floodgate with Envoy and an
# upstream; without it, floodgate alone on the embedded store.
run: deps build
	@if [ -f scripts/run-stack.sh ]; then \
		exec bash scripts/run-stack.sh $(ARGS); \
	else \
		exec ./$(BIN) $(ARGS); \
	fi

# TestFrontProxyFlood (3,000 concurrent requests through Envoy, at most 1%
# undecided) runs on its own after the rest, so that the flood is measured
# on the machine, not beside the other packages' tests.
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -skip '^TestFrontProxyFlood$$' ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run '^TestFrontProxyFlood$$' ./envoy/

bench:
	GO=$(GO) bash scripts/bench.sh

fmt:
	gofmt -w $(GOFILES)

lint:
	@out=$$(gofmt -l $(GOFILES)); \
	if [ -n "$$out" ]; then echo "gofmt needed (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# govulncheck needs the Go vulnerability database at https://vuln.go.dev;
# where that host is unreachable (sandboxed CI), it says so and does not run.
vulncheck:
	@if curl -fsS -m 10 -o /dev/null https://vuln.go.dev/index/db.json.gz 2>/dev/null; then \
		$(GO) run $(GOVULNCHECK) ./...; \
	else \
		echo "vulncheck: https://vuln.go.dev is unreachable from this machine; govulncheck not run"; \
	fi

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) bash scripts/fuzz.sh

soak: deps
	SOAK_DURATION=$(SOAK_DURATION) GO=$(GO) bash scripts/soak.sh

clean:
	rm -rf bin dist coverage*
