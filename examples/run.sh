#!/usr/bin/env bash
# Builds every example generator with `artgen build` into OUT/<example>/ and prints each artifact with
# its revision. Usage: examples/run.sh [OUT]   (default OUT: target/examples)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/target/examples}
if [ -z "${ARTGEN:-}" ]; then
  cargo build --quiet --manifest-path "$root/Cargo.toml" -p artgen --bin artgen
  ARTGEN="${CARGO_TARGET_DIR:-$root/target}/debug/artgen"
fi
for dir in "$root"/examples/*/; do
  [ -f "$dir/generator.yaml" ] || continue
  name=$(basename "$dir")
  args=()
  for src in "$dir"sources/*/; do
    args+=(--source "$(basename "$src")=$src")
  done
  echo "== $name"
  "$ARTGEN" build -f "$dir/generator.yaml" "${args[@]}" -o "$out/$name"
done
