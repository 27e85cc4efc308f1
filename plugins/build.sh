#!/usr/bin/env bash
# Builds the Rust plugins of this workspace (release): every default member for wasm32-wasip2, and `core-module`
# for wasm32-wasip1. The one place that says how the plugins are built: tests/src/plugins.rs and examples/run.sh
# both run this script, so their builds share cargo's cache and give the same bytes, hence the same digests.
#
# Usage: plugins/build.sh [cargo build options…]      (e.g. --quiet; passed to both cargo invocations)
# Environment: ARTGEN_PLUGINS_TARGET_DIR (default plugins/target), CARGO (default cargo), CARGO_HOME.
#
# Reproducibility: panic messages embed the source paths of registry crates ($CARGO_HOME/registry/src/…), so
# the cargo home is remapped to /cargo; without that, a digest pinned on one machine would not match another's
# build. Flags meant for the host workspace are dropped: they would change the bytes (and rebuild everything).
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target_dir=${ARTGEN_PLUGINS_TARGET_DIR:-$dir/target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
cargo_home=${CARGO_HOME:-$HOME/.cargo}
case $cargo_home in /*) ;; *) cargo_home=$PWD/$cargo_home ;; esac
export CARGO_HOME=$cargo_home
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR RUSTFLAGS CARGO_BUILD_RUSTFLAGS \
  RUSTDOCFLAGS CARGO_ENCODED_RUSTDOCFLAGS
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=$cargo_home=/cargo"
cd "$dir"
"${CARGO:-cargo}" build --release --target-dir "$target_dir" "$@"
"${CARGO:-cargo}" build --release --target wasm32-wasip1 -p core-module --target-dir "$target_dir" "$@"
