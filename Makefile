# Outpost — see README.md. `make` lists the targets.
GO          ?= go
BIN         := bin/outpost
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/outpost-mesh/outpost/node.Version=$(VERSION)
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2

.DEFAULT_GOAL := help
SHELL := /bin/bash
.PHONY: help build test test-deps unit e2e bench bench-ota bench-clusters bench-images demo demo-stop lint tools clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/outpost
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/outpost

test: test-deps lint unit e2e ## Install what the tests need, lint, then every test (run as root: e2e uses network namespaces)

test-deps: tools ## Install the test dependencies (apt packages, staticcheck) that are missing
	./scripts/test-deps.sh

unit: ## Run the Go tests with the race detector (the OCI conformance suite included: test-deps builds it)
	OUTPOST_OCI_CONFORMANCE=$$(ls $(CURDIR)/.build/tools/oci-conformance-* 2>/dev/null | head -1) $(GO) test -race -count=1 -timeout 25m ./...

e2e: ## Multi-host tests: real outpost processes in network namespaces (root)
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/ 2>&1 | tee .e2e.log | grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

bench: ## Run the benchmarks and print the tables (README has the latest)
	./scripts/bench.sh

bench-ota: build ## The 10,000-node OTA benchmark: hub, 100 sites, simulated nodes in a namespace (root; ~10 min, ~16 GiB)
	@command -v iptables >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null)
	$(GO) build -o bin/otascale ./e2e/otascale
	./bin/otascale run -outpost $(BIN)

bench-clusters: build ## Tunnel vs direct, ssh -R and remotedialer (loopback and a 100 Mbit/s link), then 1,000 Clusters on one kube-apiserver (root)
	@command -v sshd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null)
	./scripts/kube-peers.sh >/dev/null
	$(GO) build -o bin/tunnelbench ./e2e/tunnelbench
	cd e2e/tunnelbench/rdpeer && GOTOOLCHAIN=go1.27.3 GOWORK=off $(GO) build -o $(CURDIR)/bin/rdpeer .
	./bin/tunnelbench run -rdpeer bin/rdpeer
	$(GO) test -run '^$$' -bench ThousandClusters -benchtime 1x ./clusters/

bench-images: build ## The image cache against CNCF Distribution: warm pull, peer fetch over QUIC (also across 1 Gbit/s), WAN bytes of a site of 10 (root; ~5 min)
	@command -v curl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null)
	OUTPOST_BIN=$(CURDIR)/$(BIN) $(GO) test -tags e2e,imagebench -count=1 -timeout 20m -run '^TestImageBench$$' -v ./e2e/

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
