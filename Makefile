# Outpost — see README.md. `make` lists the targets.
GO          ?= go
BIN         := bin/outpost
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/outpost-mesh/outpost/node.Version=$(VERSION)
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2

.DEFAULT_GOAL := help
.PHONY: help build test unit e2e bench demo demo-stop lint tools clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/outpost
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/outpost

test: lint unit ## Lint, then run every test (unit, in-process clusters, real-binary tests)

unit: ## Run the Go tests with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

e2e: build ## Run the end-to-end tests against the real binary
	$(GO) test -count=1 -timeout 20m -run 'TestCLI|TestDurab|TestSIGTERM' ./cmd/outpost/

bench: ## Run the benchmarks and print the tables (README has the latest)
	./scripts/bench.sh

demo: build ## Start the embedded default (a one-node hub in ./outpost-data) and show it working
	./scripts/demo.sh

demo-stop: ## Stop the hub that `make demo` started
	./scripts/demo.sh stop

lint: tools ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

tools: ## Install the linters this Makefile uses
	@test -x $(STATICCHECK) || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## Remove build output (not ./outpost-data)
	rm -rf bin
