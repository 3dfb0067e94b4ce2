# deltaeds: build, test and benchmark.
# `make test` is what CI runs (see .ci/run); everything it needs is installed by targets here.

GO       ?= go
BIN      := bin/deltaeds
PKGS     := ./...
# Everything under e2e/ (the scenarios, their harness and the demo) runs in the e2e target,
# against a race-built binary; every other package in unit. No package runs in both.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '^github.com/deltaeds/deltaeds/e2e\(/\|$$\)')

# The targets run one at a time even under `make -j`: unit and e2e each load both cores and share
# .testbin, which testbin must have built first.
.NOTPARALLEL:

.PHONY: all build test fmt-check vet unit bench clean testbin clean-testbin

all: build

# The commit and version are passed explicitly, so `deltaeds version` shows them also where Go
# embeds no VCS stamp (-buildvcs=false, a tarball, a container build without .git).
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
VERSION ?= $(shell git describe --tags --exact-match 2>/dev/null || echo dev)
LDFLAGS := -X github.com/prometheus/common/version.Version=$(VERSION) -X github.com/prometheus/common/version.Revision=$(COMMIT)

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) .

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.testbin/*')); \
	if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# go.mod and go.sum are tidy (`go mod tidy -diff` prints what tidy would change and fails), and
# staticcheck, at a pinned version through the module proxy, finds nothing (staticcheck.conf).
STATICCHECK_VERSION := v0.8.2

.PHONY: lint tidy-check staticcheck

lint: tidy-check staticcheck

tidy-check:
	$(GO) mod tidy -diff

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# Real etcd, kube-apiserver, kube-controller-manager and kubectl for the e2e tests (internal/controlplane),
# built from the Go module proxy into .testbin/; cached, so a second run takes a second.
testbin:
	GO=$(GO) bash e2e/testbin/build.sh

clean-testbin:
	rm -rf .testbin

test: testbin fmt-check vet lint unit bench-smoke e2e image-test monitoring-test helm-test

# Micro-benchmarks of the store and the Delta server (go test -bench).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./xds/ ./delta/

# Side by side: deltaeds vs go-control-plane's LinearCache and SnapshotCache vs the wire limit
# (issue 6), each server a child process on loopback driven by the envoysim fleet. `make bench`
# runs the short profile (a few minutes on 2 cores) and writes bench/results/<timestamp>.json
# and .png; BENCH_FLAGS=-profile=full for the issue's full scale, -cpuprofile=DIR for pprof.
# The cluster-100k workload (issue 14) runs etcd and kube-apiserver from .testbin/ (make testbin)
# and builds deltaeds itself.
BENCH_BIN   := bin/edsbench
BENCH_FLAGS ?=

.PHONY: bench-micro bench-smoke

bench:
	$(GO) build -trimpath -o $(BENCH_BIN) ./bench/cmd/edsbench
	$(BENCH_BIN) -profile=short $(BENCH_FLAGS)

# Compiles the harness and runs the tiny profile (seconds), so it never rots.
bench-smoke:
	$(GO) build -trimpath -o $(BENCH_BIN) ./bench/cmd/edsbench
	$(BENCH_BIN) -profile=tiny -q -results=bin/bench-smoke

clean:
	rm -rf bin

# End to end (e2e/): the scenarios (e2e/doc.go lists them) against a real etcd, kube-apiserver
# and kube-controller-manager from .testbin/, with bin/deltaeds built from this tree by the tests
# themselves and fleets of envoysim clients. Both deltaeds and the tests run with the race
# detector, so a data race in the server fails its scenario. About 7 minutes on 2 cores once
# the binaries are cached (the faults under load of s12 are half of it).
E2E_FLAGS ?=

.PHONY: e2e demo

e2e: testbin
	DELTAEDS_E2E_RACE=1 $(GO) test -race -count=1 -timeout 30m $(E2E_FLAGS) ./e2e/...

# The README's first command: a local Kubernetes control plane, 50 Services x 20 pods over 3
# zones, deltaeds and 20 simulated Envoys through a rolling restart, with a live progress line and
# a summary. Ctrl-C stops everything and leaves no process behind. DEMO_FLAGS=-hold keeps it up
# afterwards; see bin/deltaeds-demo -help for the workload's size.
DEMO_FLAGS ?=

demo: testbin build
	$(GO) build -trimpath -o bin/deltaeds-demo ./e2e/demo
	bin/deltaeds-demo -deltaeds $(BIN) $(DEMO_FLAGS)

# The container image (deploy/image, its own Go module so go-containerregistry stays out of the
# product): a static binary (CGO off, -trimpath, stripped, VERSION and COMMIT in -ldflags) and
# /etc/passwd on an empty base, user 65532:65532, entrypoint `/deltaeds serve`, OCI labels; built
# without a Docker daemon into an OCI layout (bin/image/oci) and a `docker load`-able tarball
# (bin/image/deltaeds.tar). The Dockerfile builds the same image with Docker.
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
IMAGE_VERSION ?= $(VERSION)

.PHONY: image runc image-test monitoring-test helm-test

image:
	cd deploy/image && $(GO) run ./cmd/deltaeds-image -root ../.. -version '$(IMAGE_VERSION)' \
		-commit '$(COMMIT)' -arch $(IMAGE_ARCH) -layout ../../bin/image/oci -tarball ../../bin/image/deltaeds.tar

# runc, the OCI runtime the image test runs the image with, from Debian's packages (as root).
runc:
	@if command -v runc >/dev/null 2>&1; then runc --version | head -1; else \
		echo "installing runc (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc \
		|| { echo "make runc: could not install runc with apt-get (root and Debian's packages are needed)"; exit 1; }; \
		runc --version | head -1; fi

# The image's tests: the Dockerfile agrees with the builder, the image holds only a static binary
# and /etc/passwd, and it runs under runc (uid 65532, read-only root, no capabilities) as
# `deltaeds version` and as `deltaeds serve` against the real kube-apiserver with a client.
image-test: testbin runc image
	cd deploy/image && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 30m ./...

# The Grafana dashboard and the PrometheusRule (deploy/monitoring, its own Go module so Prometheus'
# server module stays out of the product): every query and rule parsed by Prometheus' own parser,
# every metric they name found on /metrics of the real deltaeds serving a client from the real
# kube-apiserver.
monitoring-test: testbin
	cd deploy/monitoring && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...

# The Helm chart (deploy/helm/chart; deploy/helm is its own Go module so Helm stays out of the
# product): rendered with Helm's Go library (no helm binary), it renders the kustomize base's
# objects with its default values, has a value for every flag of `deltaeds serve` (the binary
# accepts the args), and every rendering (defaults, mTLS, monitoring, node locality, namespaced,
# NetworkPolicy) is applied with server-side dry-run to the real kube-apiserver, with the
# Prometheus Operator's CRDs (fetched as a Go module); SubjectAccessReviews check its RBAC.
helm-test: testbin
	cd deploy/helm && $(GO) mod tidy -diff && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...
