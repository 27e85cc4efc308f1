//! Builds the plugin workspace `plugins/` (design/plugins.md §11) once per test process and hands out the
//! `.wasm` files, for the engine's and the controller's transform tests.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! let built = artgen_e2e::plugins::build()?;            // Err if a target or `go` is missing, or a build fails
//! let wasm = built.wasm("image-tag-setter");            // …/wasm32-wasip2/release/image_tag_setter.wasm
//! let pin = built.digest("image-tag-setter");           // "sha256:…", for `plugin.digest` and the allow-list
//! # let _ = (wasm, pin); Ok(()) }
//! ```
//!
//! `build()` runs `plugins/build.sh`, i.e. `cargo build --release` in `plugins/` (every default member, for
//! `wasm32-wasip2`) and `cargo build --release --target wasm32-wasip1 -p core-module`, with the flags that make the
//! bytes independent of the machine (`--remap-path-prefix` of the cargo home; `examples/run.sh` uses the same
//! script, so the two share cargo's cache). Both are no-ops when nothing changed. Test processes that build at the
//! same time are serialised by cargo's own lock on `plugins/target`.
//!
//! It also builds the Go sample (`plugins/go-command`, [`GO_SAMPLES`]) with mainline Go
//! (`GOOS=wasip1 GOARCH=wasm go build`, a core module) and adapts it into a `wasi:cli/command` component with
//! `wit-component` and the wasmtime 48.0.8 preview1 command adapter (design/plugins.md §12), giving
//! `<target>/go/go_command.wasm`.
//!
//! It never skips: a missing target, a missing `go` or a failed build is an `Err` that says what to do, and the
//! caller decides (under `CI=true` the message says the failure is fatal there).

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
/// Command-mode samples in Go (`plugins/<name>/`, a main package): wasip1 core modules adapted into
/// `wasi:cli/command` components, written to `<target>/go/<name with _>.wasm`.
pub const GO_SAMPLES: &[&str] = &["go-command"];
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
        .chain(GO_SAMPLES)
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
        if GO_SAMPLES.contains(&crate_name) {
            return go_output(&self.target_dir, crate_name);
        }
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
    // CI keeps the wasm build cache outside the checkout (`ARTGEN_PLUGINS_TARGET_DIR`). Absolute, since the
    // builds run in other directories than this process.
    let target_dir = match std::env::var_os("ARTGEN_PLUGINS_TARGET_DIR") {
        Some(d) => std::path::absolute(PathBuf::from(d))
            .map_err(|e| fail(format!("ARTGEN_PLUGINS_TARGET_DIR: {e}")))?,
        None => dir.join("target"),
    };
    cargo(&dir, &target_dir)?;
    for name in GO_SAMPLES {
        go(&dir.join(name), &target_dir, name)?;
    }
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

/// Runs `plugins/build.sh` (shared with `examples/run.sh`: same flags, same bytes, one cargo cache).
fn cargo(dir: &Path, target_dir: &Path) -> Result<(), String> {
    let script = dir.join("build.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .env("ARTGEN_PLUGINS_TARGET_DIR", target_dir)
        .current_dir(dir);
    // `CARGO` (the cargo running these tests) is passed on: the script uses it. The script also drops the host
    // workspace's settings (`RUSTFLAGS`, `CARGO_TARGET_DIR`, …).
    let shown = format!(
        "{} (cargo build --release in {})",
        script.display(),
        dir.display()
    );
    let out = cmd
        .output()
        .map_err(|e| fail(format!("{shown}: cannot run bash: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(fail(format!(
        "{shown} failed ({}):\n{}",
        out.status,
        tail(&out.stderr)
    )))
}

/// The last 60 lines of a tool's stderr.
fn tail(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `<target>/go/<name with _>.wasm`: the adapted component of a [`GO_SAMPLES`] entry.
fn go_output(target_dir: &Path, name: &str) -> PathBuf {
    target_dir
        .join("go")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds the Go main package in `src` for wasip1 and adapts the core module into a command component at
/// [`go_output`]. The core module is kept next to it as `<name>.core.wasm`.
///
/// The build is made independent of the machine and of the user's Go settings: `-trimpath` (no file system
/// paths), `-buildvcs=false` (no VCS stamp), `-ldflags=-s -w` (no symbol table, no DWARF: smaller, faster to
/// compile in the host), `GOENV=off` and a fixed `GOFLAGS` (a `go env -w` file or `GOFLAGS` cannot add flags),
/// `GOTOOLCHAIN=local` (never downloads a toolchain), `GOPROXY=off` (the sample uses the standard library only).
/// The bytes then depend on the Go release (and the sources) only. The build cache is `$GOCACHE`, else
/// `<target>/go/cache`, so CI caching `ARTGEN_PLUGINS_TARGET_DIR` keeps it.
fn go(src: &Path, target_dir: &Path, name: &str) -> Result<(), String> {
    let out_dir = target_dir.join("go");
    std::fs::create_dir_all(&out_dir).map_err(|e| fail(format!("creating {}: {e}", out_dir.display())))?;
    let go = std::env::var_os("GO").unwrap_or_else(|| "go".into());
    let file = name.replace('-', "_");
    // Per process, then renamed: test processes building at the same time never see a partial file.
    let tmp = |what: &str| out_dir.join(format!(".{file}.{what}.{}.tmp", std::process::id()));
    let core_tmp = tmp("core");
    let mut cmd = Command::new(&go);
    cmd.args(["build", "-ldflags=-s -w", "-o"])
        .arg(&core_tmp)
        .arg(".")
        .current_dir(src)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .env("CGO_ENABLED", "0")
        .env("GOENV", "off")
        .env("GOFLAGS", "-trimpath -buildvcs=false -mod=readonly")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOWORK", "off");
    for var in ["GOWASM", "GOEXPERIMENT", "GODEBUG", "GOAMD64", "CC", "CGO_CFLAGS"] {
        cmd.env_remove(var);
    }
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", out_dir.join("cache"));
    }
    let shown = format!("GOOS=wasip1 GOARCH=wasm go build (in {})", src.display());
    let out = cmd.output().map_err(|e| {
        fail(format!(
            "{shown}: cannot run {}: {e}; the Go sample {name} needs Go >= 1.26 on PATH (or $GO)",
            Path::new(&go).display()
        ))
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&core_tmp);
        return Err(fail(format!(
            "{shown} failed ({}):\n{}",
            out.status,
            tail(&out.stderr)
        )));
    }
    let core = std::fs::read(&core_tmp).map_err(|e| fail(format!("reading {}: {e}", core_tmp.display())))?;
    let wit = src.join("wit");
    let component = adapt_command(&core, wit.is_dir().then_some(wit.as_path()))
        .map_err(|e| fail(format!("adapting {name} into a component: {e}")))?;
    let publish = |tmp: &Path, bytes: &[u8], dest: &Path| -> Result<(), String> {
        if std::fs::read(dest).is_ok_and(|b| b == bytes) {
            let _ = std::fs::remove_file(tmp);
            return Ok(()); // unchanged: keep the file (and its mtime)
        }
        std::fs::write(tmp, bytes)
            .and_then(|()| std::fs::rename(tmp, dest))
            .map_err(|e| fail(format!("writing {}: {e}", dest.display())))
    };
    publish(&core_tmp, &core, &out_dir.join(format!("{file}.core.wasm")))?;
    publish(&tmp("component"), &component, &go_output(target_dir, name))
}

/// Adapts a wasip1 core module (a `_start` command) into a `wasi:cli/command` component with the preview1
/// command adapter of wasmtime 48.0.8, like `wasm-tools component new --adapt` (design/plugins.md §12).
///
/// `wit_dir` (a WIT package with `deps/`, e.g. `plugins/go-command/wit`) declares the component-model imports
/// the module makes itself (`//go:wasmimport wasi:cli/exit@0.2.12 exit-with-code`): its only world is embedded
/// into the module first, like `wasm-tools component embed`.
pub fn adapt_command(core_module: &[u8], wit_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    let mut module = core_module.to_vec();
    if let Some(dir) = wit_dir {
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve
            .push_dir(dir)
            .map_err(|e| format!("{}: {e:#}", dir.display()))?;
        let world = resolve
            .select_world(&[pkg], None)
            .map_err(|e| format!("{}: {e:#}", dir.display()))?;
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .map_err(|e| format!("embedding the WIT of {}: {e:#}", dir.display()))?;
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| {
            e.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|mut e| e.encode())
        .map_err(|e| format!("{e:#}"))
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
        assert_eq!(file("go-command"), "go_command.wasm");
        let go_core = std::fs::read(built.target_dir().join("go/go_command.core.wasm")).unwrap();
        assert!(is_core_module(&go_core), "go build gives a core module");
        let wit = plugins_dir().join("go-command/wit");
        assert_eq!(
            adapt_command(&go_core, Some(&wit)).unwrap(),
            built.bytes("go-command"),
            "adapting is deterministic"
        );
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
