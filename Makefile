# Ferry's developer entry points. `make test` is what CI runs (.ci/run).
#
#   make build   compile everything; bin/ferry and bin/plugins/<name>
#   make test    lint, every test with -race, every fuzz target for a few seconds
#   make bench   benchmark tables (go run ./host/cmd/ferrybench)
#   make demo    mixed-path demo: UDP → TCP → Kafka (configs/udp-tcp-kafka.hcl); DEMO_FLAGS=-path=relay for the relay + portal one
#   make fmt     gofmt -w
#   make lint    go vet, gofmt, staticcheck (pinned) and go.mod tidiness
#   make clean   remove bin/ and test caches of this module
#   make proto   regenerate internal/pluginpb from its .proto files (not run by CI)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 1s
FUZZJOBS  ?= 2
TESTFLAGS ?=
TIMEOUT   ?= 12m
# staticcheck runs at this pinned release (go run fetches it from the module
# proxy once; nothing is added to go.mod).
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# How bin/ferry and bin/plugins/* are built (what ships; ferrybench's idle
# section builds the same way, and its test checks these two lines):
# - CGO_ENABLED=0: nothing in Ferry needs cgo (os/user and the resolver have
#   pure-Go paths on Linux); a static binary maps no libc and dynamic loader,
#   measured 1.4-1.6 MB less RSS per idle process. Tests keep cgo for -race.
# - -tags grpcnotrace: gRPC without golang.org/x/net/trace, whose
#   /debug/requests handlers (never served here) pull in html/template, and
#   a reachable template Execute makes the linker keep every exported method
#   of every type: bin/ferry 33.2 -> 28.7 MB, an idle node 2.7 MB less RSS.
RELEASE_ENV   ?= CGO_ENABLED=0
RELEASE_FLAGS ?= -tags grpcnotrace

# Examples run by `make demo`, in order.
DEMO_EXAMPLES ?= 01-node 02-worker 03-routing 03-routing-many-hops

.PHONY: all build test unit fuzz bench fmt lint demo clean proto

all: build

build:
	$(GO) build ./...
	@mkdir -p $(BIN)/plugins
	@if [ -d host/cmd/ferry ]; then \
		echo "$(RELEASE_ENV) go build $(RELEASE_FLAGS) -o $(BIN)/ferry ./host/cmd/ferry"; \
		$(RELEASE_ENV) $(GO) build $(RELEASE_FLAGS) -o $(BIN)/ferry ./host/cmd/ferry; \
	fi
	@for d in plugins/*/; do \
		[ -d "$$d" ] || continue; \
		name=$$(basename "$$d"); \
		ls "$$d"*.go >/dev/null 2>&1 || continue; \
		echo "$(RELEASE_ENV) go build $(RELEASE_FLAGS) -o $(BIN)/plugins/$$name ./$$d"; \
		$(RELEASE_ENV) $(GO) build $(RELEASE_FLAGS) -o $(BIN)/plugins/$$name ./$$d; \
	done

test: lint unit fuzz

unit:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(TESTFLAGS) ./...

# Every `func FuzzXxx` in a *_test.go file is run for $(FUZZTIME) in its
# package, on top of its seed corpus under testdata/fuzz/. Targets run
# $(FUZZJOBS) at a time with one fuzzing worker each (a run is mostly
# waiting out FUZZTIME and compiling); a failure prints the target's output
# and stops the rest. A run that ends in "context deadline exceeded" without
# writing a failing input is Go's own fuzz-coordinator race (go.dev/issue/75804,
# fixed in Go 1.27; seen here with go1.26.8), so that target runs once more.
fuzz:
	@{ grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=vendor '^func Fuzz' . || true; } | sort | while read -r f; do \
		dir=$$(dirname "$$f"); \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do echo "$$dir $$name"; done; \
	done | xargs -P $(FUZZJOBS) -L 1 sh -c ' \
		run() { $(GO) test -run "^$$" -fuzz "^$$1\$$" -fuzztime $(FUZZTIME) -parallel 1 "./$${0#./}" 2>&1; }; \
		if out=$$(run "$$1"); then echo "fuzz $$0 $$1 ($(FUZZTIME)): ok"; exit 0; fi; \
		if echo "$$out" | grep -q "context deadline exceeded" && ! echo "$$out" | grep -q "Failing input written"; then \
			echo "fuzz $$0 $$1: context deadline exceeded and no failing input (the Go fuzz coordinator race of go.dev/issue/75804, fixed in Go 1.27); running it again"; \
			if out=$$(run "$$1"); then echo "fuzz $$0 $$1 ($(FUZZTIME)): ok"; exit 0; fi; \
		fi; \
		echo "$$out"; echo "fuzz $$0 $$1: FAILED"; exit 255'

bench:
	$(GO) run ./host/cmd/ferrybench $(BENCHFLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './vendor/*')

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; echo "run: make fmt"; exit 1; fi
	@if ! $(GO) mod tidy -diff >/dev/null 2>&1; then echo "go.mod/go.sum are not tidy (direct dependencies must not be // indirect):"; $(GO) mod tidy -diff || true; echo "run: go mod tidy"; exit 1; fi
	$(STATICCHECK) ./...

# The mixed-protocol path (configs/udp-tcp-kafka.hcl: UDP → TCP → Kafka) with
# a Kafka broker (kfake) and a Go HTTP server inside the demo program; it
# prints the path with every hop's counters. Everything stops on exit, also
# on Ctrl-C. DEMO_FLAGS=-wait keeps it running so you can curl it yourself;
# DEMO_FLAGS=-path=relay shows the relay + TCP portal (configs/relay-portal.hcl).
demo: build
	$(GO) run ./examples/demo -ferry $(BIN)/ferry -plugins $(BIN)/plugins $(DEMO_FLAGS)

clean:
	rm -rf $(BIN)
	$(GO) clean -testcache

# Generated plugin protocol code. The generator versions match go.mod's
# google.golang.org/protobuf and the committed files' headers; protoc comes
# from the system (apt-get install protobuf-compiler).
PROTOC_GEN_GO_VERSION      ?= $(shell $(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
PROTOC_GEN_GO_GRPC_VERSION ?= v1.5.1
GOBIN_DIR                  := $(shell $(GO) env GOPATH)/bin

proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	@[ "$$($(GOBIN_DIR)/protoc-gen-go --version 2>/dev/null)" = "protoc-gen-go $(PROTOC_GEN_GO_VERSION)" ] || \
		$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@[ "$$($(GOBIN_DIR)/protoc-gen-go-grpc --version 2>/dev/null)" = "protoc-gen-go-grpc $(PROTOC_GEN_GO_GRPC_VERSION:v%=%)" ] || \
		$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH="$(GOBIN_DIR):$$PATH" protoc -I internal/pluginpb \
		--go_out=. --go_opt=module=github.com/ferryhq/ferry \
		--go-grpc_out=. --go-grpc_opt=module=github.com/ferryhq/ferry \
		internal/pluginpb/*.proto
