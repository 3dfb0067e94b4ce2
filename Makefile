# deltaeds: build, test and benchmark.
# `make test` is what CI runs (see .ci/run); everything it needs is installed by targets here.

GO       ?= go
BIN      := bin/deltaeds
PKGS     := ./...

.PHONY: all build test fmt-check vet unit bench clean testbin clean-testbin

all: build

build:
	$(GO) build -trimpath -o $(BIN) .

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.testbin/*')); \
	if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 $(PKGS)

# Real etcd, kube-apiserver, kube-controller-manager and kubectl for the e2e tests (e2e/controlplane),
# built from the Go module proxy into .testbin/; cached, so a second run takes a second.
testbin:
	GO=$(GO) bash e2e/testbin/build.sh

clean-testbin:
	rm -rf .testbin

test: testbin fmt-check vet unit

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./xds/ ./delta/

clean:
	rm -rf bin
