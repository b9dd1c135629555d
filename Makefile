SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# go-nvml's cgo code calls NVML functions its header marks deprecated; every
# build of it would print about 50 -Wdeprecated-declarations warnings that say
# nothing about ttftlab. Go's default flags (-O2 -g) plus that one silencer;
# set CGO_CFLAGS in the environment to override.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

BUF_VERSION := v1.75.0
STATICCHECK_VERSION := v0.8.2
HELM_VERSION := v4.3.2
TMP_BIN := $(CURDIR)/.tmp/bin
BUF := $(TMP_BIN)/buf
STATICCHECK := $(TMP_BIN)/staticcheck
HELM := $(TMP_BIN)/helm
BIN := bin/ttftlab
GO_FILES := $(shell find . -name '*.go' -not -path './.tmp/*' 2>/dev/null)
OUT ?= results
RUN_FLAGS ?=

.PHONY: help
help: ## Show this help.
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: $(BIN) ## Build bin/ttftlab.

$(BIN): $(GO_FILES) go.mod go.sum
	go build -o $(BIN) ./cmd/ttftlab

# The test binary deploy/device-check.sh runs on a GPU host, next to bin/ttftlab.
bin/gpunode.test: $(GO_FILES) go.mod go.sum
	go test -c -o $@ ./gpunode

.PHONY: device-build
device-build: $(BIN) bin/gpunode.test ## Build what deploy/device-check.sh runs on a GPU host.

.PHONY: run
run: build ## Build, then run `ttftlab up` on the embedded defaults (simulated engine) and print the report.
	./$(BIN) up --out $(OUT) $(RUN_FLAGS)

.PHONY: test
test: ## Run the whole unit and in-process cluster suite with the race detector.
	go test -race -count=1 ./...

# The headless-Chromium tests of report.html and the live dashboard. They
# skip, saying why, when chromium cannot be installed; screenshots go to
# .tmp/artifacts (go test -artifacts).
.PHONY: test-browser
test-browser: ## Install chromium if missing, then test report.html and the dashboard in headless Chromium (screenshots in .tmp/artifacts).
	./scripts/install-chromium.sh
	mkdir -p .tmp/artifacts
	TTFTLAB_BROWSER=1 go test -count=1 -run 'InChromium' -artifacts -outputdir $(CURDIR)/.tmp/artifacts ./coordinator/results/ ./coordinator/

.PHONY: test-e2e
test-e2e: build ## Run the heavy multi-process scenarios.
	TTFTLAB_BIN=$(CURDIR)/$(BIN) go test -race -count=1 -run 'TestRealSimEngine|E2E' ./...
	# 50 agents in one process starve on 2 cores under the race detector.
	TTFTLAB_SCALE_E2E=1 go test -count=1 -run 'TestScaleSweep50AgentsE2E' ./coordinator/

# The multi-host scenarios across Linux network namespaces (e2e/netns):
# root, iproute2 and, for the delay scenario, the kernel's netem qdisc. A
# test that cannot run here skips, and its reason is printed at the end.
.PHONY: test-netns
test-netns: build ## Run the multi-host scenarios across network namespaces, veth pairs and a bridge (needs root).
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; status=0; \
	TTFTLAB_NETNS=1 TTFTLAB_BIN=$(CURDIR)/$(BIN) go test -race -count=1 -timeout 10m -v ./e2e/netns/ 2>&1 | tee "$$log" || status=$$?; \
	if grep -q -- '^--- SKIP' "$$log"; then echo "skipped in test-netns:"; grep -B1 -- '^--- SKIP' "$$log" | grep -v -- '^--$$'; fi; \
	exit $$status

# Every fuzz target, as package:FuzzName. `go test` runs one -fuzz target per
# package at a time, so they run one after another.
FUZZTIME ?= 10s
# The report renderers' targets run a count of inputs instead: under a time
# budget Go's fuzzing engine ran only a dozen of them in 5 s (against 300 a
# second by count). Under a time budget the engine can also end with
# "context deadline exceeded" when the budget runs out while it minimizes a
# new input; with no failing input written, that is not a failure.
FUZZ_BY_COUNT := FuzzRenderDir FuzzRenderKVScale FuzzRenderPrefix FuzzRenderPresets
FUZZCOUNT ?= 500x
FUZZ_TARGETS := \
	./internal/hdr:FuzzDecode \
	./internal/vllmlog:FuzzParseLog \
	./internal/vllmlog:FuzzParseLine \
	./gpunode:FuzzParseMetrics \
	./coordinator/results:FuzzRenderDir \
	./coordinator/results:FuzzDecodeEvent \
	./coordinator/results:FuzzRenderKVScale \
	./coordinator/results:FuzzParseRules \
	./coordinator/results:FuzzReadCompareRun \
	./coordinator/results:FuzzRenderPrefix \
	./coordinator/results:FuzzRenderPresets \
	./coordinator/results:FuzzBuildFleet \
	./coordinator/results:FuzzNumericJSON \
	./agent:FuzzParseCAPEM \
	./agent:FuzzCheckClient \
	./internal/sim:FuzzChunkTemplate \
	./agent:FuzzReadJSONL \
	./internal/oai:FuzzScanChunk \
	./internal/oai:FuzzStream \
	./internal/oai:FuzzSanitizeExcerpt \
	./internal/oai:FuzzH1Response \
	./internal/oai:FuzzParseTokenizeResponse \
	./internal/oai:FuzzParseRxCmsg \
	./coordinator:FuzzEngineExitFromWire \
	./coordinator:FuzzParseRunHeader \
	./internal/membership:FuzzPeerData \
	./internal/kvcalc:FuzzParseConfig

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s); fails if a Fuzz function is not listed.
	@listed="$(foreach t,$(FUZZ_TARGETS),$(lastword $(subst :, ,$(t))))"; \
	for fn in $$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort -u); do \
	  case " $$listed " in *" $$fn "*) ;; *) echo "$$fn is not in FUZZ_TARGETS: add it to the Makefile" >&2; exit 1;; esac; \
	done
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; ft=$(FUZZTIME); \
	  case " $(FUZZ_BY_COUNT) " in *" $$fn "*) ft=$(FUZZCOUNT);; esac; \
	  echo "fuzz $$fn in $$pkg for $$ft"; \
	  if out=$$(go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$ft $$pkg 2>&1); then echo "$$out"; else \
	    echo "$$out"; \
	    if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -qE 'Failing input written|/seed#'; then \
	      echo "$$fn: Go's fuzzing engine stopped on its own time budget (\"context deadline exceeded\", while it minimized a new input); no failing input was found"; \
	    else exit 1; fi; \
	  fi; \
	done

.PHONY: test-acceptance
test-acceptance: ## Run the slow experiment acceptance runs on the simulator (kvscale's 6-point grid, ~10 min).
	TTFTLAB_ACCEPTANCE=1 go test -count=1 -timeout 25m -run 'Acceptance' ./cmd/ttftlab/

.PHONY: bench
bench: ## Run the benchmarks (record the figures in docs/benchmarks.md).
	go test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-python
bench-python: ## Compare the agent's SSE client with the Python aiohttp reference client (needs python3-aiohttp).
	go test -run '^$$' -bench 'PythonReference' -benchtime 1x ./agent/

$(BUF):
	GOBIN=$(TMP_BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(STATICCHECK):
	GOBIN=$(TMP_BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Compiling helm takes a few minutes; it is installed once.
$(HELM):
	GOBIN=$(TMP_BIN) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

.PHONY: manifests
manifests: $(HELM) ## Render deploy/manifests/ttftlab.yaml from the Helm chart (commit it; test-deploy fails when it is stale).
	cd deploy && $(HELM) template ttftlab helm/ttftlab --namespace ttftlab -f manifests/values.yaml > manifests/ttftlab.yaml

.PHONY: test-deploy
test-deploy: $(HELM) build ## Lint and render the Helm chart, decode every object strictly, check the Slurm script and the Compose file.
	$(HELM) lint --strict deploy/helm/ttftlab
	$(HELM) lint --strict deploy/helm/ttftlab --set serviceMonitor.enabled=true --set security.tls.enabled=true
	$(HELM) template ttftlab deploy/helm/ttftlab --namespace ttftlab >/dev/null
	bash -n deploy/slurm/ttftlab.sbatch
	@if command -v shellcheck >/dev/null; then shellcheck deploy/slurm/ttftlab.sbatch; else echo "shellcheck not installed: deploy/slurm checked with bash -n only"; fi
	cd deploy && HELM=$(HELM) TTFTLAB_BIN=$(CURDIR)/$(BIN) go test -count=1 ./...

.PHONY: tools
tools: $(BUF) ## Install the pinned code generators into .tmp/bin.
	GOBIN=$(TMP_BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go
	GOBIN=$(TMP_BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc

.PHONY: proto
proto: tools ## Regenerate the committed protobuf code with pinned tools.
	$(BUF) lint
	$(BUF) generate

.PHONY: check
check: proto ## Fail if regenerating the protobuf code leaves a diff.
	@if [ -n "$$(git status --porcelain -- internal/gen)" ]; then \
	  echo "generated code is stale: run 'make proto' and commit internal/gen" >&2; \
	  git status --short -- internal/gen >&2; git diff --stat -- internal/gen >&2; exit 1; fi
	@echo "generated code is up to date"

.PHONY: lint
lint: tools $(STATICCHECK) ## gofmt, go vet, staticcheck and buf lint.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...
	$(BUF) lint

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf bin .tmp
