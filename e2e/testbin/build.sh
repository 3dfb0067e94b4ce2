#!/usr/bin/env bash
# Builds the real control-plane binaries that the e2e tests run (see internal/controlplane):
#   etcd, kube-apiserver, kube-controller-manager, kubectl
# into .testbin/ at the repository root (git-ignored), from source through the Go module proxy.
#
# There is no download site for these binaries here, and `go install ...@version` fails for both
# projects (their go.mod files carry replace directives), so each is built from a throwaway wrapper
# module generated under .testbin/src/. Nothing generated here is committed.
#
# Cached: a component is skipped when its binaries exist and its stamp file records the same recipe
# (versions and the RECIPE revision below). Remove .testbin/ (or run `make clean-testbin`) to force a rebuild.
#
# Usage: e2e/testbin/build.sh [OUT_DIR]   (default: <repo>/.testbin)
set -euo pipefail

ETCD_VERSION=v3.6.16
K8S_VERSION=v1.37.2
# Kubernetes publishes its staging modules (k8s.io/api, k8s.io/apiserver, ...) as v0.<minor>.<patch>.
K8S_STAGING_VERSION=v0.${K8S_VERSION#v1.}
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
# The go directive of the generated wrapper modules.
WRAPPER_GO=1.26.0
# Bump to force a rebuild when the recipe below changes in a way the versions do not show.
RECIPE=1

GO=${GO:-go}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/.testbin}
SRC=$OUT/src

# The wrapper modules are builds of their own: do not let the caller's workspace, vendoring or
# VCS stamping (the wrappers sit inside this git checkout) leak in. Static binaries, no gcc needed.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
# Keep peak memory in check on small machines (kube-apiserver alone peaks near 3 GB).
BUILD_FLAGS=(-p 2 -trimpath)

log() { printf 'testbin: %s\n' "$*" >&2; }

mkdir -p "$OUT" "$SRC"

# One build at a time per output folder (two `make` runs racing would both build).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUT/.lock"
	flock 9
fi

# up_to_date STAMP_FILE EXPECTED BINARY...: true when every binary exists and the stamp matches.
up_to_date() {
	local stamp=$1 want=$2
	shift 2
	[[ -f $stamp && "$(cat "$stamp")" == "$want" ]] || return 1
	local b
	for b in "$@"; do
		[[ -x $OUT/$b ]] || return 1
	done
}

build_etcd() {
	local want="etcd $ETCD_VERSION recipe=$RECIPE"
	local stamp=$OUT/etcd.stamp
	if up_to_date "$stamp" "$want" etcd; then
		log "etcd $ETCD_VERSION up to date"
		return
	fi
	log "building etcd $ETCD_VERSION (cold: 1-2 min)"
	local dir=$SRC/etcd
	rm -rf "$dir" "$stamp"
	mkdir -p "$dir"
	cat >"$dir/go.mod" <<EOF
module deltaeds.local/testbin/etcd

go $WRAPPER_GO

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
	cat >"$dir/main.go" <<'EOF'
// Command etcd is etcd's own main, wrapped so that it builds from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	(
		cd "$dir"
		"$GO" mod tidy
		"$GO" build "${BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$OUT/etcd.tmp" .
	)
	mv -f "$OUT/etcd.tmp" "$OUT/etcd"
	echo "$want" >"$stamp"
}

build_kubernetes() {
	local bins=(kube-apiserver kube-controller-manager kubectl)
	local want="kubernetes $K8S_VERSION staging=$K8S_STAGING_VERSION recipe=$RECIPE"
	local stamp=$OUT/kubernetes.stamp
	if up_to_date "$stamp" "$want" "${bins[@]}"; then
		log "kubernetes $K8S_VERSION up to date"
		return
	fi
	log "building ${bins[*]} $K8S_VERSION (cold: 6-15 min on 2 cores, ~3 GB of memory)"
	local dir=$SRC/kubernetes
	rm -rf "$dir" "$stamp"
	mkdir -p "$dir"

	# k8s.io/kubernetes replaces its staging modules with local paths (./staging/src/k8s.io/...),
	# which do not exist in the published module: replace each with its published version, taking
	# the list from the module's own go.mod. The sample modules are not published and not needed.
	local info kmod
	info=$(cd "$dir" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION")
	kmod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	[[ -f $kmod ]] || {
		log "cannot find the go.mod of k8s.io/kubernetes@$K8S_VERSION (got '$kmod')"
		exit 1
	}
	local staging
	staging=$(grep -E '^[[:space:]]*(replace[[:space:]]+)?k8s\.io/[^[:space:]]+[[:space:]]+=>[[:space:]]+\./staging/' "$kmod" |
		sed -E 's/^[[:space:]]*(replace[[:space:]]+)?(k8s\.io\/[^[:space:]]+).*/\2/' |
		grep -vE '^k8s\.io/(sample-cli-plugin|sample-controller)$' | sort -u)
	[[ -n $staging ]] || {
		log "found no staging replace directives in $kmod"
		exit 1
	}
	{
		echo "module deltaeds.local/testbin/kubernetes"
		echo
		echo "go $WRAPPER_GO"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "tool ("
		echo "	k8s.io/kubernetes/cmd/kube-apiserver"
		echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
		echo "	k8s.io/kubernetes/cmd/kubectl"
		echo ")"
		echo
		echo "replace ("
		local m
		for m in $staging; do
			echo "	$m => $m $K8S_STAGING_VERSION"
		done
		echo ")"
	} >"$dir/go.mod"

	# Without these the binaries report v0.0.0-master, which kubectl and the apiserver complain about.
	local ldflags="-s -w"
	ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

	local tmp=$OUT/kubernetes.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	(
		cd "$dir"
		"$GO" mod tidy
		# One invocation: the three commands share most packages, compiled once.
		"$GO" build "${BUILD_FLAGS[@]}" -ldflags "$ldflags" -o "$tmp/" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kubectl
	)
	local b
	for b in "${bins[@]}"; do
		mv -f "$tmp/$b" "$OUT/$b"
	done
	rmdir "$tmp"
	echo "$want" >"$stamp"
}

start=$SECONDS
build_etcd
build_kubernetes
log "ready in $OUT ($((SECONDS - start)) s): etcd kube-apiserver kube-controller-manager kubectl"
