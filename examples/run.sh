#!/usr/bin/env bash
# Builds every example generator with `artgen build` into OUT/<example>/ and prints each artifact with
# its revision. Usage: examples/run.sh [OUT]   (default OUT: target/examples)
#
# Each `sources/<alias>/` directory of an example is passed as `--source <alias>=<dir>`. An example whose
# generator uses a source `plugins` without such a directory (transforms/) gets the Rust plugins instead:
# `plugins/build.sh` builds them (the script the tests use, so the bytes and the cargo cache are the same),
# its release directory becomes `--source plugins=…`, and every `plugin.digest` pinned in the generator is
# checked against the built file and allowed with `--plugin-allow-digest`. A plugin that does not match its
# pin fails the run, printing the actual digest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/target/examples}
if [ -z "${ARTGEN:-}" ]; then
  cargo build --quiet --manifest-path "$root/Cargo.toml" -p artgen --bin artgen
  ARTGEN="${CARGO_TARGET_DIR:-$root/target}/debug/artgen"
fi

plugins_release=
build_plugins() {
  if [ -z "$plugins_release" ]; then
    echo "== building plugins/ (plugins/build.sh)"
    "$root/plugins/build.sh" --quiet
    local target_dir=${ARTGEN_PLUGINS_TARGET_DIR:-$root/plugins/target}
    case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
    plugins_release=$target_dir/wasm32-wasip2/release
  fi
}

# `<path> <digest>` for every transform whose plugin comes from the `plugins` source, written as
#   source: {alias: plugins, path: <file>}
#   digest: sha256:<hex>
pins() {
  awk '
    /source: *\{ *alias: *plugins *, *path: */ {
      p = $0; sub(/.*path: */, "", p); sub(/[ ,}].*/, "", p)
    }
    /digest: *"?sha256:/ && p != "" {
      d = $0; sub(/.*digest: *"?/, "", d); sub(/[" ].*/, "", d); print p, d; p = ""
    }' "$1"
}

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

for dir in "$root"/examples/*/; do
  [ -f "$dir/generator.yaml" ] || continue
  name=$(basename "$dir")
  args=()
  for src in "$dir"sources/*/; do
    args+=(--source "$(basename "$src")=$src")
  done
  if grep -Eq 'alias: *plugins' "$dir/generator.yaml" && [ ! -d "$dir/sources/plugins" ]; then
    build_plugins
    args+=(--source "plugins=$plugins_release")
    npins=0
    while read -r path digest; do
      file=$plugins_release/$path
      if [ ! -f "$file" ]; then
        echo "examples/$name: $file was not built" >&2
        exit 1
      fi
      actual=sha256:$(sha256 "$file")
      if [ "$actual" != "$digest" ]; then
        echo "examples/$name: $path is $actual but generator.yaml pins $digest" >&2
        echo "  (the plugin's sources, plugins/Cargo.lock or the toolchain changed; if that is intended, pin $actual)" >&2
        exit 1
      fi
      args+=(--plugin-allow-digest "$digest")
      npins=$((npins + 1))
    done < <(pins "$dir/generator.yaml")
    if [ "$npins" -eq 0 ]; then
      echo "examples/$name: uses the plugins source but pins no plugin.digest run.sh can read" >&2
      exit 1
    fi
  fi
  echo "== $name"
  "$ARTGEN" build -f "$dir/generator.yaml" "${args[@]}" -o "$out/$name"
done
