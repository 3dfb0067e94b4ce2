// Package image builds deltaeds' container image without a Docker daemon: a static deltaeds
// binary (CGO off, -trimpath, stripped, version and commit in -ldflags) and /etc/passwd and
// /etc/group naming the nonroot user (rootfs/), in one layer on an empty base, run as
// 65532:65532 with the entrypoint `/deltaeds serve`, labelled with the OCI version and revision,
// written as an OCI image layout and a `docker load`-able tarball (go-containerregistry).
//
// It is its own Go module (deploy/image/go.mod, with a replace for the main module), so that
// go-containerregistry, the Dockerfile parser and the OCI runtime-spec types stay out of the
// product's module graph. `make image` runs cmd/deltaeds-image; `make image-test` runs the tests:
// the Dockerfile, which stays for Docker users, must build the same thing (same build flags,
// files, user, entrypoint, ports, labels), and the image must run under a real OCI runtime (runc)
// as uid 65532 on a read-only root and serve an envoysim client from a real kube-apiserver.
//
// It must never: add a shell or any file beyond the binary and rootfs/, run as root, need a
// writable root filesystem, or be imported by the product.
package image
