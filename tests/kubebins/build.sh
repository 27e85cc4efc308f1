#!/usr/bin/env bash
# Provides kube-apiserver and etcd, built from the Go module proxy through this wrapper module
# (design/test-control-plane.md §4), in a versioned cache directory:
#
#   ${ARTGEN_KUBE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artgen/kube}/<key>/{kube-apiserver,etcd}
#   <key> = k8s-<version>-<go version>-<os>-<arch>-<first 12 hex of sha256(go.mod ‖ go.sum)>
#
# A cache hit costs nothing. Otherwise the build runs under flock on <cache>/.lock, into a temporary directory
# that is moved into place, so concurrent callers build once. Progress goes to stderr; the last line on stdout is
# the directory holding both binaries. Extra `go build` flags (for example `-p 1` when memory is tight) can be
# passed in ARTGEN_GO_BUILD_FLAGS.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "kubebins: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v go >/dev/null || die "'go' not found on PATH. Install Go 1.26.x (https://go.dev/doc/install or the
  golang-1.26 package), then run: bash tests/kubebins/build.sh
  Or point TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD (or KUBEBUILDER_ASSETS) at existing binaries."

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly GO111MODULE=on GOWORK=off
cd "$here"

k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes) || die "cannot read k8s.io/kubernetes from $here/go.mod"
go_version=$(go env GOVERSION)
goos=$(go env GOOS)
goarch=$(go env GOARCH)
sum=$(cat go.mod go.sum | sha256sum | cut -c1-12)
key="k8s-$k8s_version-$go_version-$goos-$goarch-$sum"
cache=${ARTGEN_KUBE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artgen/kube}
dest="$cache/$key"

have() { [ -x "$dest/kube-apiserver" ] && [ -x "$dest/etcd" ]; }
if have; then
	say "cache hit: $dest"
	echo "$dest"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
	say "waiting for the build lock $cache/.lock (another build is running)"
	flock 9
fi
# Check again: another process may have finished the build while we waited.
if have; then
	say "cache hit after waiting for the lock: $dest"
	echo "$dest"
	exit 0
fi

tmp=$(mktemp -d "$cache/.build-$key-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${k8s_version#v1.}
minor=${minor%%.*}
ldv="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1"
ldv="$ldv -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
say "building kube-apiserver $k8s_version and etcd $etcd_version with $go_version into $dest"
say "(cold: 10-25 min on 2 cores; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE))"

# shellcheck disable=SC2086 # ARTGEN_GO_BUILD_FLAGS is a list of flags
go build ${ARTGEN_GO_BUILD_FLAGS:-} -trimpath -ldflags "-s -w $ldv" -o "$tmp/kube-apiserver" \
	k8s.io/kubernetes/cmd/kube-apiserver
say "kube-apiserver done"
# shellcheck disable=SC2086
go build ${ARTGEN_GO_BUILD_FLAGS:-} -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
say "etcd done"

"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version >&2
printf 'kubernetes=%s\netcd=%s\ngo=%s\n' "$k8s_version" "$etcd_version" "$go_version" >"$tmp/VERSIONS"
chmod 0755 "$tmp"
if ! mv -T "$tmp" "$dest" 2>/dev/null; then
	have || die "could not move $tmp to $dest"
fi
trap - EXIT
say "installed $dest"
echo "$dest"
