# Gatehouse: `make help` lists the targets. Two of them set everything up:
#   make demo   the whole platform in one process, in-memory, demo seed
#   make test   every test, e2e in containers included (builds what it needs)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Pinned tool versions, installed into ./bin (never assumed on PATH).
BUF_VERSION                  := v1.75.0
PROTOC_GEN_GO_VERSION        := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
OPA_VERSION                  := v1.22.3
GOLANGCI_LINT_VERSION        := v2.15.0

BIN       := $(CURDIR)/bin
DIST      := $(CURDIR)/dist
SERVICES  := issuer pdp gateway invoice support
# Every Go module but e2e (whose tests need the images).
MODULES   := $(filter-out e2e,$(shell sed -n 's|^\t\./||p' go.work))
PKGS      := $(addsuffix /...,$(addprefix ./,$(MODULES)))
IMAGE_TAG ?= local

export TESTCONTAINERS_RYUK_DISABLED ?= true

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## ---- the two commands of the README ----

.PHONY: demo
demo: ## Run all of Gatehouse in one process on in-memory stores (dev only).
	go run ./deploy/demo

.PHONY: test
test: check unit e2e ## Every check and test, e2e in containers included.

## ---- pieces ----

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) go install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)
$(BIN)/opa:
	GOBIN=$(BIN) go install github.com/open-policy-agent/opa@$(OPA_VERSION)
$(BIN)/golangci-lint:
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go $(BIN)/opa $(BIN)/golangci-lint ## Install the pinned tools into ./bin.

# The demo policy signing key (deploy/policy-signing): anyone can sign with it,
# so only the demo and the tests trust it.
POLICY_SIGNING_KEY    ?= deploy/policy-signing/demo.key.pem
POLICY_SIGNING_KEY_ID ?= gatehouse-demo
GENERATED             := proto/gen policies/.signatures.json docs/permissions.md

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go ## Regenerate Go code from proto/, docs/permissions.md from the catalog, and re-sign policies/.
	cd proto && $(BIN)/buf generate
	cd services/pdp && go run ./cmd/permdoc -catalog ../../policies/gatehouse/data.json -o ../../docs/permissions.md
	cd services/pdp && go run ./cmd/gatehouse policy sign -dir ../../policies -signing-key ../../$(POLICY_SIGNING_KEY) -key-id $(POLICY_SIGNING_KEY_ID)

.PHONY: check-generated
check-generated: generate ## Fail when committed generated files (code, permissions doc, policy signature) are stale.
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		git status --porcelain -- $(GENERATED); \
		echo "generated files are stale: run 'make generate' and commit the result" >&2; exit 1; fi

.PHONY: proto-check
proto-check: $(BIN)/buf ## buf lint, and buf breaking against the main branch.
	cd proto && $(BIN)/buf lint
	@if git rev-parse --verify --quiet main >/dev/null && git cat-file -e main:proto/buf.yaml 2>/dev/null; then \
		cd proto && $(BIN)/buf breaking --against '../.git#branch=main,subdir=proto'; \
	else echo "buf breaking: main has no proto module yet, nothing to compare"; fi

.PHONY: policy-test
policy-test: $(BIN)/opa ## Run the Rego policy tests with opa test.
	$(BIN)/opa test policies/ -v

.PHONY: check-work
check-work: ## Fail when go.work or go.mod files are not tidy.
	go work sync
	@if [ -n "$$(git status --porcelain -- go.work go.work.sum '*/go.mod' '*/go.sum')" ]; then \
		git status --porcelain -- go.work go.work.sum '*/go.mod' '*/go.sum'; \
		echo "go work sync changed files: commit them" >&2; exit 1; fi

.PHONY: fmt-check
fmt-check: ## Fail when Go files are not gofmt-ed.
	@out="$$(gofmt -l $(MODULES))"; if [ -n "$$out" ]; then echo "$$out"; echo "run gofmt -w" >&2; exit 1; fi

.PHONY: vet
vet: ## go vet every module.
	go vet $(PKGS)

.PHONY: lint
lint: $(BIN)/golangci-lint ## golangci-lint (.golangci.yml) in every module.
	@for m in $(filter-out proto,$(MODULES)) e2e; do echo "golangci-lint $$m"; (cd $$m && $(BIN)/golangci-lint run ./...); done

.PHONY: check
check: fmt-check vet lint check-work check-generated proto-check policy-test docs-check ## Static checks: format, vet, lint, go.work, generated code and docs, proto, policies.

.PHONY: unit
unit: postgres-image ## Unit and integration tests (Postgres via testcontainers), race detector on.
	GATEHOUSE_POSTGRES_IMAGE="$$(deploy/postgres/image.sh)" go test -race -count=1 $(PKGS)

.PHONY: build
build: ## Build every module.
	go build $(PKGS)

.PHONY: dist
dist: ## Static service binaries (CGO off) into dist/ for the images.
	@mkdir -p $(DIST)
	@for s in $(SERVICES); do \
		echo "go build $$s"; \
		CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $(DIST)/$$s ./services/$$s/cmd/$$s; \
	done
	cp /etc/ssl/certs/ca-certificates.crt $(DIST)/ca-certificates.crt

.PHONY: postgres-image
postgres-image: ## Make sure a Postgres image exists (built from Debian packages when offline).
	@deploy/postgres/image.sh >/dev/null

.PHONY: images
images: dist postgres-image ## Build every service image locally (FROM scratch) and the Postgres image.
	@for s in $(SERVICES); do \
		echo "docker build gatehouse/$$s:$(IMAGE_TAG)"; \
		docker build -q --label org.gatehouse.image=service -f deploy/docker/$$s.Dockerfile -t gatehouse/$$s:$(IMAGE_TAG) . >/dev/null; \
	done
	@# Rebuilt images leave their predecessors untagged: remove those (ours only).
	@docker image prune -f --filter dangling=true --filter label=org.gatehouse.image=service >/dev/null
	@echo "GATEHOUSE_POSTGRES_IMAGE=$$(deploy/postgres/image.sh)" > .env
	@echo "images ready; .env names the Postgres image for docker compose"

.PHONY: e2e
e2e: images ## End-to-end suites against the containerised stack.
	cd e2e && GATEHOUSE_POSTGRES_IMAGE="$$(../deploy/postgres/image.sh)" GATEHOUSE_IMAGE_TAG=$(IMAGE_TAG) go test -count=1 -timeout 20m ./...

.PHONY: docs
docs: ## Regenerate generated docs (configuration reference, attack scenarios).
	go test ./deploy/demo -run TestConfigurationReferenceIsCurrent -count=1 -update
	cd e2e && go test ./attacks/catalogue -run TestCatalogueDoc -count=1 -update

.PHONY: docs-check
docs-check: ## Fail when generated docs are stale.
	go test ./deploy/demo -run TestConfigurationReferenceIsCurrent -count=1
	cd e2e && go test ./attacks/catalogue -run TestCatalogueDoc -count=1

.PHONY: bench
bench: ## Hot-path benchmarks: token verification, PDP decisions, token issuance.
	go test -run '^$$' -bench . -benchmem ./libs/accesstoken/... ./services/pdp/... ./services/issuer/...

.PHONY: bench-pdp
bench-pdp: tools postgres-image ## Loopback load run: the PDP against stock OPA server on the same bundle and inputs (docs/benchmarks.md; ~20 min).
	GATEHOUSE_POSTGRES_IMAGE="$$(deploy/postgres/image.sh)" scripts/bench-pdp.sh

.PHONY: clean
clean: ## Remove build output (not the tools).
	rm -rf $(DIST)
