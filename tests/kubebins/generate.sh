#!/usr/bin/env bash
# Regenerates go.mod and go.sum of the kube-apiserver + etcd wrapper module (design/test-control-plane.md §3).
# Run once per Kubernetes version bump and commit the result; build.sh never changes these files.
#
#   bash tests/kubebins/generate.sh            # k8s.io/kubernetes v1.37.2
#   K8S_VERSION=v1.36.3 bash tests/kubebins/generate.sh
#
# The replace list is generated from the release's own go.mod, never typed by hand: k8s.io/kubernetes requires
# every staging module at the placeholder v0.0.0 and redirects it to ./staging, which a dependency cannot use.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
case $K8S_VERSION in
v1.*.*) ;;
*) echo "generate.sh: K8S_VERSION must look like v1.MINOR.PATCH, got '$K8S_VERSION'" >&2; exit 2 ;;
esac
STAGING_VERSION=v0.${K8S_VERSION#v1.}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GO111MODULE=on

command -v go >/dev/null || { echo "generate.sh: 'go' not found on PATH (Go 1.26.x is required)" >&2; exit 1; }

rm -f go.mod go.sum
# 1. go mod init
go mod init artgen.local/kubebins
go mod edit -go=1.26.0

# 2. the release's go.mod, from the module proxy
info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$gomod" ] || { echo "generate.sh: no GoMod in 'go mod download -json' output:" >&2; printf '%s\n' "$info" >&2; exit 1; }

# 3. one replace for every `k8s.io/<x> v0.0.0` requirement
staging=$(awk '
	/^require[[:space:]]*\(/ { inreq = 1; next }
	inreq && /^\)/ { inreq = 0; next }
	inreq { line = $0 }
	/^require[[:space:]]+k8s\.io\// { line = $0; sub(/^require[[:space:]]+/, "", line) }
	line != "" {
		n = split(line, f, /[[:space:]]+/)
		i = 1; if (f[1] == "") i = 2
		if (f[i] ~ /^k8s\.io\// && f[i + 1] == "v0.0.0") print f[i]
		line = ""
	}
' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "generate.sh: found no k8s.io/* v0.0.0 requirement in $gomod" >&2; exit 1; }
for m in $staging; do
	go mod edit -replace "$m=$m@$STAGING_VERSION"
done
echo "generate.sh: $(printf '%s\n' "$staging" | wc -l) staging modules at $STAGING_VERSION:" $(printf '%s\n' "$staging" | sed 's#^k8s.io/##')

# Any non-local replace in the release's go.mod must be copied too (a dependency's replaces are ignored).
nonlocal=$(go mod edit -json "$gomod" | awk '
	/^\t"Replace": \[/ { r = 1; next }
	r && /^\t\]/ { r = 0 }
	r && /"New": \{/ { n = 1; next }
	r && n && /"Path":/ { if ($0 !~ /"Path": "\.\.?\//) print; n = 0 }
')
if [ -n "$nonlocal" ]; then
	echo "generate.sh: k8s.io/kubernetes@$K8S_VERSION has non-local replace directives; extend this script to copy them:" >&2
	printf '%s\n' "$nonlocal" >&2
	exit 1
fi

# 4. the two tools. kube-apiserver first, so that etcd's server module is pinned to what the Kubernetes
# dependency graph (k8s.io/apiserver and friends) already selects rather than to etcd's newest release.
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION"
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3 2>/dev/null || true)
if [ -z "$etcd_version" ]; then
	etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)
fi
echo "generate.sh: etcd server $etcd_version"
go get -tool "go.etcd.io/etcd/server/v3@$etcd_version"
go mod tidy
go mod verify
echo "generate.sh: wrote $here/go.mod and go.sum for k8s.io/kubernetes $K8S_VERSION"
