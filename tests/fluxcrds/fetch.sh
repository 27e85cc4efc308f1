#!/usr/bin/env bash
# Prints the directory holding Flux source-controller's CRDs (config/crd/bases of its Go module zip), fetched
# with the Go tooling at a pinned version (design/test-control-plane.md §2). Nothing is built and no third-party
# YAML is committed: the module cache ($(go env GOMODCACHE)) keeps the download, so later runs are offline.
#
#   bash tests/fluxcrds/fetch.sh            # github.com/fluxcd/source-controller v1.9.1, fallback v1.8.0
#   FLUX_SOURCE_CONTROLLER_VERSION=v1.8.0 bash tests/fluxcrds/fetch.sh
set -euo pipefail

module=github.com/fluxcd/source-controller
# Keep in step with FLUX_SOURCE_CONTROLLER_VERSIONS in tests/src/control_plane/binaries.rs.
versions=${FLUX_SOURCE_CONTROLLER_VERSION:-v1.9.1 v1.8.0}
say() { echo "fluxcrds: $*" >&2; }

command -v go >/dev/null || {
	say "error: 'go' not found on PATH; it is needed to fetch $module (install Go 1.26.x), or set"
	say "  ARTGEN_FLUX_CRDS_DIR to a directory holding source.toolkit.fluxcd.io_*.yaml"
	exit 1
}
# Outside any module; never build, never touch a go.mod.
cd /
export GOTOOLCHAIN=local GOFLAGS= GOWORK=off GO111MODULE=on

for v in $versions; do
	if out=$(go mod download -json "$module@$v" 2>&1); then
		dir=$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
		bases="$dir/config/crd/bases"
		if [ -n "$dir" ] && ls "$bases"/source.toolkit.fluxcd.io_*.yaml >/dev/null 2>&1; then
			say "$module@$v: $bases"
			echo "$bases"
			exit 0
		fi
		say "$module@$v has no config/crd/bases/source.toolkit.fluxcd.io_*.yaml"
	else
		say "go mod download -json $module@$v failed:"
		printf '%s\n' "$out" >&2
	fi
done
say "error: could not fetch the Flux source CRDs ($module $versions)"
exit 1
