# syntax=docker/dockerfile:1
#
# deltaeds: a static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t deltaeds .
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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/deltaeds /deltaeds
# 65532:65532, the distroless nonroot user; the Deployment sets the same numeric ids.
USER nonroot:nonroot
# 18000: Delta xDS and grpc.health.v1 (gRPC). 18001: /healthz, /readyz, /metrics, /debug/.
EXPOSE 18000 18001
ENTRYPOINT ["/deltaeds", "serve"]
