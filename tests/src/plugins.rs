//! Builds the plugin workspace `plugins/` (design/plugins.md §11) once per test process and hands out the
//! `.wasm` files, for the engine's and the controller's transform tests.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! let built = artgen_e2e::plugins::build()?;            // Err if a Rust target is missing or cargo fails
//! let wasm = built.wasm("image-tag-setter");            // …/wasm32-wasip2/release/image_tag_setter.wasm
//! let pin = built.digest("image-tag-setter");           // "sha256:…", for `plugin.digest` and the allow-list
//! # let _ = (wasm, pin); Ok(()) }
//! ```
//!
//! `build()` runs `cargo build --release` in `plugins/` (every default member, for `wasm32-wasip2`) and
//! `cargo build --release --target wasm32-wasip1 -p core-module`. Both are no-ops when nothing changed. Test
//! processes that build at the same time are serialised by cargo's own lock on `plugins/target`. It never skips:
//! a missing target or a failed build is an `Err` that says what to do, and the caller decides (under `CI=true`
//! the message says the failure is fatal there).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Target of every plugin except `core-module`.
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";
/// Target of `core-module` (a core module, not a component).
pub const CORE_TARGET: &str = "wasm32-wasip1";

/// Typed samples (`[lib] crate-type = ["cdylib"]`, world `artgen:transform/plugin`).
pub const TYPED_SAMPLES: &[&str] = &[
    "values-templater",
    "image-tag-setter",
    "yaml-to-json",
    "secret-scanner",
];
/// Command-mode samples (`[[bin]]`, `wasi:cli/command`).
pub const COMMAND_SAMPLES: &[&str] = &["command-sample"];
/// Hostile plugins (`plugins/hostile/`); all typed components except `core-module`.
pub const HOSTILE: &[&str] = &[
    "infinite-loop",
    "memory-bomb",
    "path-escape",
    "network-attempt",
    "output-flood",
    "nondeterminism-probe",
    "panic",
    "disallowed-import",
    "core-module",
];

/// Every plugin crate `build()` produces.
pub fn all() -> impl Iterator<Item = &'static str> {
    TYPED_SAMPLES
        .iter()
        .chain(COMMAND_SAMPLES)
        .chain(HOSTILE)
        .copied()
}

/// The component-model preamble after `\0asm`: version `0x0d`, layer 1.
pub const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
/// The core-module preamble after `\0asm`: version 1, layer 0.
pub const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// The result of a successful `build()`.
#[derive(Debug)]
pub struct Built {
    target_dir: PathBuf,
}

impl Built {
    /// Path of the `.wasm` built from `crate_name` (the package name, e.g. `"values-templater"`).
    /// Panics if the crate is unknown or the file does not exist.
    pub fn wasm(&self, crate_name: &str) -> PathBuf {
        let path = self.path_of(crate_name);
        assert!(
            path.is_file(),
            "plugin {crate_name}: {} does not exist",
            path.display()
        );
        path
    }

    /// The bytes of [`Built::wasm`].
    pub fn bytes(&self, crate_name: &str) -> Vec<u8> {
        let path = self.wasm(crate_name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// `sha256:<hex>` of the file, as `plugin.digest` and the allow-list want it.
    pub fn digest(&self, crate_name: &str) -> String {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(self.bytes(crate_name)))
        )
    }

    /// `plugins/target`.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    fn path_of(&self, crate_name: &str) -> PathBuf {
        assert!(
            all().any(|c| c == crate_name),
            "unknown plugin crate {crate_name:?}"
        );
        let (target, file) = if crate_name == "core-module" {
            (CORE_TARGET, "core_module.wasm".to_owned())
        } else if COMMAND_SAMPLES.contains(&crate_name) {
            // A bin keeps its hyphens.
            (COMPONENT_TARGET, format!("{crate_name}.wasm"))
        } else {
            // A cdylib is named after its lib target: hyphens become underscores.
            (COMPONENT_TARGET, format!("{}.wasm", crate_name.replace('-', "_")))
        };
        self.target_dir.join(target).join("release").join(file)
    }
}

/// Whether `bytes` start with a component preamble.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == COMPONENT_VERSION
}

/// Whether `bytes` start with a core-module preamble.
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == CORE_MODULE_VERSION
}

/// `<repo>/plugins`.
pub fn plugins_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("plugins");
    dir.canonicalize().unwrap_or(dir)
}

/// Builds every plugin once per process; later calls return the same result.
pub fn build() -> Result<&'static Built, String> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT.get_or_init(build_uncached).as_ref().map_err(Clone::clone)
}

fn build_uncached() -> Result<Built, String> {
    let dir = plugins_dir();
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!("plugin workspace not found at {}", dir.display()));
    }
    check_targets(&dir)?;
    // CI keeps the wasm build cache outside the checkout (`ARTGEN_PLUGINS_TARGET_DIR`).
    let target_dir = std::env::var_os("ARTGEN_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    cargo(&dir, &target_dir, &["build", "--release"])?;
    cargo(
        &dir,
        &target_dir,
        &["build", "--release", "--target", CORE_TARGET, "-p", "core-module"],
    )?;
    let built = Built { target_dir };
    for name in all() {
        let path = built.path_of(name);
        if !path.is_file() {
            return Err(format!("plugin build finished but {} is missing", path.display()));
        }
    }
    Ok(built)
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn fail(message: String) -> String {
    if ci() {
        format!("{message} (CI=true: plugin tests cannot run, this is fatal)")
    } else {
        message
    }
}

/// Both wasm targets must be installed for the toolchain that builds `plugins/` (rust-toolchain.toml lists them).
fn check_targets(dir: &Path) -> Result<(), String> {
    let needed = [COMPONENT_TARGET, CORE_TARGET];
    let installed: Vec<String> = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .collect(),
        Ok(out) => {
            return Err(fail(format!(
                "`rustup target list --installed` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // No rustup: look in the sysroot of the rustc on PATH.
        Err(_) => {
            let out = Command::new("rustc")
                .args(["--print", "sysroot"])
                .current_dir(dir)
                .output()
                .map_err(|e| fail(format!("neither rustup nor rustc can be run: {e}")))?;
            let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            needed
                .iter()
                .filter(|t| sysroot.join("lib/rustlib").join(t).is_dir())
                .map(|t| t.to_string())
                .collect()
        }
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|t| !installed.iter().any(|i| i == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "Rust target(s) {} not installed; run `rustup target add {}` (rust-toolchain.toml lists them)",
            missing.join(", "),
            missing.join(" ")
        )))
    }
}

fn cargo(dir: &Path, target_dir: &Path, args: &[&str]) -> Result<(), String> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(dir);
    // Settings meant for the host workspace must not leak into the wasm build.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let shown = format!("cargo {} (in {})", args.join(" "), dir.display());
    let out = cmd.output().map_err(|e| {
        fail(format!(
            "{shown}: cannot run {}: {e}",
            Path::new(&program).display()
        ))
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    Err(fail(format!("{shown} failed ({}):\n{tail}", out.status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_plugin() {
        let built = build().unwrap_or_else(|e| panic!("{e}"));
        for name in all() {
            let bytes = built.bytes(name);
            assert_eq!(&bytes[..4], b"\0asm", "{name}: not wasm");
            if name == "core-module" {
                assert!(
                    is_core_module(&bytes),
                    "{name}: expected a core module, got {:02x?}",
                    &bytes[4..8]
                );
            } else {
                assert!(
                    is_component(&bytes),
                    "{name}: expected a component, got {:02x?}",
                    &bytes[4..8]
                );
            }
            assert!(built.digest(name).starts_with("sha256:") && built.digest(name).len() == 7 + 64);
        }
        assert_ne!(built.bytes("core-module")[4..8], built.bytes("panic")[4..8]);
        let file = |n: &str| built.wasm(n).file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(file("values-templater"), "values_templater.wasm");
        assert_eq!(file("command-sample"), "command-sample.wasm");
        assert!(
            built
                .wasm("core-module")
                .parent()
                .unwrap()
                .ends_with("wasm32-wasip1/release")
        );
        // A second call is the cached result.
        assert!(std::ptr::eq(built, build().unwrap()));
    }
}
