# syntax=docker/dockerfile:1
#
# deltaeds: a static binary on an empty base, running as 65532:65532 (nonroot).
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t deltaeds .
#
# `make image` builds the same image without Docker (deploy/image); deploy/image's test parses
# this file and fails when the two disagree (build flags, files, user, entrypoint, ports, labels),
# so change both together.
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the Go toolchain cross-compiles; nothing runs under emulation).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so source changes reuse the module cache layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/deltaeds .

FROM scratch
ARG VERSION=dev
ARG COMMIT=unknown
# /etc/passwd and /etc/group naming the nonroot user; nothing else: no shell, no package manager.
COPY deploy/image/rootfs/ /
COPY --from=build /out/deltaeds /deltaeds
LABEL org.opencontainers.image.title="deltaeds" \
      org.opencontainers.image.source="https://github.com/deltaeds/deltaeds" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
# Numeric, so Kubernetes' runAsNonRoot can verify it; the Deployment sets the same ids.
USER 65532:65532
WORKDIR /
# 18000: Delta xDS and grpc.health.v1 (gRPC). 18001: /healthz, /readyz, /metrics, /debug/.
EXPOSE 18000 18001
ENTRYPOINT ["/deltaeds", "serve"]
