//! Sandboxed WASI transforms (design/plugins.md): after the copy operations have staged an artifact's
//! tree into a real directory, [`Host::run_all`] runs the artifact's `transforms:` over it, in order, and
//! leaves it checked and normalised for packing.
//!
//! ```text
//! let host = Host::new(HostOptions { cache_dir: Some(dir), concurrency: 0 })?;   // once per process
//! let reports = host.run_all(&work, &artifact.transforms, |t| read_plugin(&src[&t.plugin.source.alias],
//!     &t.plugin.source.path), &ctx, &read_source_dirs, &admission)?;
//! ```
//!
//! [`Host::run_all`] blocks: call it on a blocking thread (`spawn_blocking`), never on an async worker.
//! For each transform, in this order (§5): admission of *every* transform and its config (cheap, nothing
//! is read), then per transform: read the plugin bytes, verify the pin, compile or load from the caches,
//! `describe()` once per digest, run in a fresh store, check and normalise the tree. A failure returns
//! [`crate::Error::Transform`] carrying every report so far (the failing one last); under
//! `failurePolicy: Ignore` a build-time failure instead restores the tree and the next transform runs.
//!
//! All wasmtime code lives in [`wasm`]; this module and its siblings are plain Rust.

pub mod admission;
pub mod report;
mod schema;
pub mod tree;
mod wasm;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest as _, Sha256};

pub use self::admission::{Admission, Allowed, DEFAULT_LIMITS, HARD_CEILINGS, Limits};
pub use self::report::{
    Diagnostic, Mode, PluginInfo, Reason, Severity, TransformError, TransformReport, TransformResult,
};
pub use self::wasm::{BLOCKING_THREAD, CacheStats};

use crate::error::Error;
use crate::spec::{FailurePolicy, Transform};

/// Largest plugin component accepted (§7).
pub const MAX_COMPONENT_BYTES: u64 = 50 << 20;
/// Largest config, as canonical JSON (§2).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// On-disk compiled-code cache (`--plugin-cache-dir`); `None` keeps compiled code in memory only.
    /// Must be private to this process (created 0700; a directory others can access is not used).
    pub cache_dir: Option<PathBuf>,
    /// Transforms that may run at once across all callers (`--plugin-concurrency`); 0 = `min(cores, 4)`.
    pub concurrency: usize,
}

/// The source list a plugin sees in `context.sources`, in spec order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub alias: String,
    /// Flux kind, e.g. `GitRepository`.
    pub kind: String,
    pub revision: String,
    pub digest: String,
}

/// What a plugin learns about where it runs (`context` in the WIT; `transform` is filled per step and
/// `mount` per granted source).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransformContext {
    pub namespace: String,
    pub generator: String,
    pub artifact: String,
    /// pathPattern captures.
    pub labels: BTreeMap<String, String>,
    pub sources: Vec<SourceInfo>,
}

/// What [`Host::inspect`] finds in a component (for `artgen plugin describe`).
#[derive(Clone, Debug)]
pub struct PluginDescription {
    pub digest: String,
    pub mode: Mode,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `describe()` (typed mode only).
    pub info: Option<PluginInfo>,
}

/// A plugin that cannot be used, outside of a build ([`Host::inspect`], [`Host::precompile`]).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    pub reason: Reason,
    pub message: String,
}

/// A counting semaphore (`--plugin-concurrency`).
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut n = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *n == 0 {
            n = self.cv.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.cv.notify_one();
    }
}

/// The plugin host: one per process (it shares the process-wide wasm engine and owns the compiled-code
/// caches). `Send + Sync`; share it with `Arc`.
pub struct Host {
    runtime: wasm::Runtime,
    permits: Permits,
    /// Deterministic failures by run-input hash (design/plugins.md §8): a backoff retry of the same inputs
    /// re-reports the failure without running the plugin again.
    failures: Mutex<Memo>,
}

/// A bounded map of failed steps; the oldest entry goes first.
#[derive(Default)]
struct Memo {
    steps: HashMap<[u8; 32], Step>,
    order: VecDeque<[u8; 32]>,
}

const MEMO_ENTRIES: usize = 512;

impl Memo {
    fn get(&self, key: &[u8; 32]) -> Option<Step> {
        self.steps.get(key).cloned()
    }

    fn insert(&mut self, key: [u8; 32], step: &Step) {
        if self.steps.insert(key, step.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MEMO_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.steps.remove(&old);
            }
        }
    }
}

/// Everything a run's outcome depends on: the seed (digest, config, input tree, name), the limits, the
/// context (sources by digest) and the mounts.
fn memo_key(
    seed: &[u8; 32],
    limits: &Limits,
    ctx: &TransformContext,
    mounts: &[(String, PathBuf)],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"artgen/transform-memo/v1");
    h.update(seed);
    let aliases: Vec<&str> = mounts.iter().map(|(a, _)| a.as_str()).collect();
    h.update(format!("{limits:?}\n{ctx:?}\n{aliases:?}").as_bytes());
    h.finalize().into()
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads `<root>/<path>` without following any symlink, refusing files over 50 MiB. For the
/// `plugin_bytes` callback of [`Host::run_all`].
pub fn read_plugin(root: &Path, path: &str) -> io::Result<Vec<u8>> {
    let mut dir = Dir::open_ambient_dir(root, ambient_authority())?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let Some((last, parents)) = segs.split_last() else {
        return Err(io::Error::new(io::ErrorKind::NotFound, "empty path"));
    };
    for seg in parents {
        if *seg == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path escapes the source",
            ));
        }
        let md = dir.symlink_metadata(seg)?;
        if !md.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("'{seg}' is not a directory (symlinks are not followed)"),
            ));
        }
        dir = dir.open_dir(seg)?;
    }
    let md = dir.symlink_metadata(last)?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file (symlinks are not followed)",
        ));
    }
    let mut buf = Vec::with_capacity(md.len().min(MAX_COMPONENT_BYTES) as usize);
    dir.open(last)?
        .take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Canonical JSON (RFC 8785 style): object keys sorted by UTF-16 code units at every level, no
/// whitespace, numbers in ECMAScript form (`1.0` → `1`, `1e21` → `1e+21`), strings with minimal escapes.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&es_number(n.as_f64().unwrap_or(0.0)));
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(&o[k], out);
            }
            out.push('}');
        }
    }
}

/// ECMAScript `Number.prototype.toString` for finite doubles (JSON has no NaN or infinities).
fn es_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let neg = x < 0.0;
    // Shortest round-trip digits and exponent, e.g. "1.2345e21".
    let e = format!("{:e}", x.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let sign = if n > 0 { "+" } else { "-" };
        let rest = if k > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        format!("{rest}e{sign}{}", (n - 1).abs())
    };
    if neg { format!("-{body}") } else { body }
}

/// `sha256("artgen/transform/v1" ‖ digest ‖ config ‖ input-tree-digest ‖ name)`, each part
/// length-prefixed (§9).
fn seed(digest: &str, config: &str, tree: &[u8; 32], name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        b"artgen/transform/v1".as_slice(),
        digest.as_bytes(),
        config.as_bytes(),
        tree.as_slice(),
        name.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The outcome of one step, before it becomes a report.
#[derive(Clone, Default)]
struct Step {
    digest: String,
    mode: Option<Mode>,
    info: Option<PluginInfo>,
    fuel_used: u64,
    peak_memory: u64,
    instantiate: std::time::Duration,
    diagnostics: Vec<Diagnostic>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    failure: Option<(Reason, String)>,
}

impl Step {
    /// Details can carry plugin-chosen text (file names, stderr): always sanitised.
    fn failed(mut self, reason: Reason, detail: String) -> Step {
        self.failure = Some((reason, report::sanitize(&detail, 1024)));
        self
    }
}

fn tree_error(e: tree::TreeError) -> (Reason, String) {
    (Reason::TransformOutputInvalid, format!("invalid output: {e}"))
}

impl Host {
    pub fn new(opts: HostOptions) -> Result<Host, Error> {
        let runtime = wasm::Runtime::new(opts.cache_dir.as_deref())
            .map_err(|e| Error::io("starting the plugin host", io::Error::other(e)))?;
        let n = if opts.concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
        } else {
            opts.concurrency
        };
        Ok(Host {
            runtime,
            permits: Permits {
                free: Mutex::new(n),
                cv: Condvar::new(),
            },
            failures: Mutex::default(),
        })
    }

    /// Compile and cache counters.
    pub fn stats(&self) -> CacheStats {
        self.runtime.stats()
    }

    /// Compiles (or loads) and checks a component, warming the caches (`artgen plugin precompile`).
    pub fn precompile(&self, bytes: &[u8]) -> Result<String, PluginError> {
        let digest = digest_of(bytes);
        self.load(&digest, bytes)?;
        Ok(digest)
    }

    /// Mode, imports, exports and `describe()` of a component (`artgen plugin describe`).
    pub fn inspect(&self, bytes: &[u8]) -> Result<PluginDescription, PluginError> {
        let digest = digest_of(bytes);
        let loaded = self.load(&digest, bytes)?;
        let info = self
            .runtime
            .describe(&loaded)
            .map_err(|(reason, message)| PluginError { reason, message })?;
        Ok(PluginDescription {
            digest,
            mode: loaded.mode,
            imports: loaded.imports.clone(),
            exports: loaded.exports.clone(),
            info,
        })
    }

    fn load(&self, digest: &str, bytes: &[u8]) -> Result<std::sync::Arc<wasm::Loaded>, PluginError> {
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(PluginError {
                reason: Reason::PluginIncompatible,
                message: "the component is larger than 50 MiB".into(),
            });
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.runtime
            .load(hex, bytes)
            .map_err(|(reason, message)| PluginError { reason, message })
    }

    /// Runs `transforms` over the staged tree in `work` (a real directory; the plugin sees it as `/work`).
    ///
    /// * `plugin_bytes` returns a transform's `.wasm` bytes (e.g. [`read_plugin`] on the plugin source's
    ///   tree, or a `--plugin-file`); any error is `PluginNotFound`. It is only called once the
    ///   transform has passed admission.
    /// * `sources` maps an alias to the directory mounted read-only at `/sources/<alias>` when a
    ///   transform's `readSources` asks for it and the admission allows it.
    ///
    /// Returns one report per transform. On failure returns [`Error::Transform`], whose
    /// [`TransformError::reports`] holds the reports so far, the failing transform's last; the tree in
    /// `work` is then in an unspecified state and must not be packed.
    pub fn run_all<F>(
        &self,
        work: &Path,
        transforms: &[Transform],
        plugin_bytes: F,
        ctx: &TransformContext,
        sources: &BTreeMap<String, PathBuf>,
        admission: &Admission,
    ) -> Result<Vec<TransformReport>, Error>
    where
        F: Fn(&Transform) -> io::Result<Vec<u8>>,
    {
        let mut reports: Vec<TransformReport> = Vec::new();
        if transforms.is_empty() {
            return Ok(reports);
        }
        let finish = |reports: &mut Vec<TransformReport>, t: &Transform, step: Step, started: Instant| {
            let (result, reason, message) = match &step.failure {
                None => (TransformResult::Succeeded, None, String::new()),
                Some((r, d)) => (
                    TransformResult::Failed,
                    Some(*r),
                    TransformError {
                        artifact: ctx.artifact.clone(),
                        transform: t.name.clone(),
                        digest: step.digest.clone(),
                        reason: *r,
                        detail: d.clone(),
                        diagnostics: vec![],
                        reports: vec![],
                    }
                    .to_string(),
                ),
            };
            reports.push(TransformReport {
                artifact: ctx.artifact.clone(),
                name: t.name.clone(),
                plugin_digest: step.digest.clone(),
                result,
                reason,
                message,
                fuel_used: step.fuel_used,
                peak_memory_bytes: step.peak_memory,
                duration: started.elapsed(),
                instantiate_time: step.instantiate,
                diagnostics: step.diagnostics.clone(),
                mode: step.mode,
                plugin: step.info.clone(),
                stdout: String::from_utf8_lossy(&step.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&step.stderr).into_owned(),
            });
            step
        };
        let error = |reports: &Vec<TransformReport>, t: &Transform, step: Step| {
            let (reason, detail) = step.failure.unwrap_or((Reason::TransformFailed, String::new()));
            let mut diagnostics = step.diagnostics;
            diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
            Error::Transform(Box::new(TransformError {
                artifact: ctx.artifact.clone(),
                transform: t.name.clone(),
                digest: step.digest,
                reason,
                detail,
                diagnostics,
                reports: reports.clone(),
            }))
        };

        // 1. Admission and config of every transform, before anything is read or compiled.
        let mut prepared = Vec::with_capacity(transforms.len());
        for t in transforms {
            let started = Instant::now();
            let base = Step {
                digest: t.plugin.digest.clone(),
                ..Default::default()
            };
            let admitted = match admission::admit(t, admission, sources) {
                Ok(a) => a,
                Err((reason, detail)) => {
                    let step = finish(&mut reports, t, base.failed(reason, detail), started);
                    return Err(error(&reports, t, step));
                }
            };
            let config = canonical_json(
                t.config
                    .as_ref()
                    .unwrap_or(&serde_json::Value::Object(Default::default())),
            );
            if config.len() > MAX_CONFIG_BYTES {
                let step = base.failed(
                    Reason::PluginConfigInvalid,
                    format!(
                        "config is {} bytes as canonical JSON; at most 1 MiB is allowed",
                        config.len()
                    ),
                );
                let step = finish(&mut reports, t, step, started);
                return Err(error(&reports, t, step));
            }
            prepared.push((t, admitted, config));
        }

        // 2. The input tree: checked, normalised, digested for the seed.
        let mut tree_digest = tree::check_and_normalize(work, None, true)
            .map_err(|e| {
                Error::io(
                    "preparing the transform work tree",
                    io::Error::other(e.to_string()),
                )
            })?
            .digest;

        // 3. Each transform in order.
        let last = prepared.len() - 1;
        for (i, (t, admitted, config)) in prepared.iter().enumerate() {
            let started = Instant::now();
            let ignore = t.failure_policy.unwrap_or_default() == FailurePolicy::Ignore;
            let snapshot = if ignore {
                Some(tree::Snapshot::take(work).map_err(|e| Error::io("snapshotting the work tree", e))?)
            } else {
                None
            };
            let (step, digest_after) = self.step(
                work,
                t,
                admitted,
                config,
                ctx,
                &plugin_bytes,
                admission,
                &tree_digest,
                i == last,
            );
            match &step.failure {
                None => {
                    finish(&mut reports, t, step, started);
                    if let Some(d) = digest_after {
                        tree_digest = d;
                    }
                }
                Some((reason, detail)) if ignore && reason.ignorable() => {
                    let mut step = Step {
                        failure: None,
                        ..step
                    };
                    let (reason, detail) = (*reason, detail.clone());
                    step.diagnostics.insert(
                        0,
                        Diagnostic::host(
                            Severity::Warning,
                            "artgen.transform-ignored",
                            report::sanitize(
                                &format!("{reason}: {detail}; changes discarded (failurePolicy: Ignore)"),
                                1024,
                            ),
                        ),
                    );
                    if let Some(s) = snapshot {
                        s.restore(work)
                            .map_err(|e| Error::io("restoring the work tree", e))?;
                    }
                    tree_digest = tree::check_and_normalize(work, None, true)
                        .map_err(|e| Error::io("restoring the work tree", io::Error::other(e.to_string())))?
                        .digest;
                    finish(&mut reports, t, step, started);
                    if let Some(r) = reports.last_mut() {
                        r.result = TransformResult::Ignored;
                        r.reason = Some(reason);
                        r.message = TransformError {
                            artifact: ctx.artifact.clone(),
                            transform: t.name.clone(),
                            digest: r.plugin_digest.clone(),
                            reason,
                            detail,
                            diagnostics: vec![],
                            reports: vec![],
                        }
                        .to_string();
                    }
                }
                Some(_) => {
                    let step = finish(&mut reports, t, step, started);
                    return Err(error(&reports, t, step));
                }
            }
        }
        Ok(reports)
    }

    /// One transform: bytes, pin, load, describe, run, post-run check. Returns the step and, when the
    /// tree was accepted and another transform follows, its new digest.
    #[allow(clippy::too_many_arguments)]
    fn step<F>(
        &self,
        work: &Path,
        t: &Transform,
        admitted: &admission::Admitted,
        config: &str,
        ctx: &TransformContext,
        plugin_bytes: &F,
        admission: &Admission,
        tree_digest: &[u8; 32],
        is_last: bool,
    ) -> (Step, Option<[u8; 32]>)
    where
        F: Fn(&Transform) -> io::Result<Vec<u8>>,
    {
        let mut step = Step {
            digest: t.plugin.digest.clone(),
            ..Default::default()
        };
        let src = &t.plugin.source;
        let bytes = match plugin_bytes(t) {
            Ok(b) => b,
            Err(e) => {
                let detail = format!("plugin '{}' not found in source '{}': {e}", src.path, src.alias);
                return (
                    step.failed(Reason::PluginNotFound, report::sanitize(&detail, 512)),
                    None,
                );
            }
        };
        let actual = digest_of(&bytes);
        if actual != t.plugin.digest {
            if admission.allow_any {
                step.diagnostics.push(Diagnostic::host(
                    Severity::Warning,
                    "artgen.digest-mismatch",
                    format!(
                        "plugin '{}' has digest {actual}, not the pinned {} (allowed by --allow-any-plugin)",
                        src.path, t.plugin.digest
                    ),
                ));
                step.digest = actual.clone();
            } else {
                let detail = format!(
                    "plugin '{}' from source '{}' has digest {actual}, but the spec pins {}",
                    src.path, src.alias, t.plugin.digest
                );
                return (step.failed(Reason::PluginDigestMismatch, detail), None);
            }
        }
        let loaded = match self.load(&actual, &bytes) {
            Ok(l) => l,
            Err(e) => return (step.failed(e.reason, e.message), None),
        };
        drop(bytes);
        step.mode = Some(loaded.mode);
        match self.runtime.describe(&loaded) {
            Ok(info) => step.info = info,
            Err((reason, detail)) => return (step.failed(reason, detail), None),
        }
        if let Some(schema) = step.info.as_ref().and_then(|i| i.config_schema.as_deref()) {
            match schema::check(schema, config) {
                Ok(found) if found.is_empty() => {}
                Ok(found) => {
                    let detail = format!(
                        "config does not match the plugin's schema: {}",
                        report::first_errors(&found)
                    );
                    step.diagnostics = found;
                    return (step.failed(Reason::PluginConfigInvalid, detail), None);
                }
                Err(e) => {
                    return (
                        step.failed(Reason::PluginIncompatible, format!("describe(): {e}")),
                        None,
                    );
                }
            }
        }

        let seed = seed(&step.digest, config, tree_digest, &t.name);
        let memo = memo_key(&seed, &admitted.limits, ctx, &admitted.mounts);
        if let Some(mut failed) = self.memo().get(&memo) {
            failed.diagnostics.push(Diagnostic::host(
                Severity::Info,
                "artgen.memoised",
                "the same plugin, config, tree and limits failed before; not run again",
            ));
            return (failed, None);
        }
        let (step, digest) = self.run_step(step, work, t, admitted, config, ctx, &loaded, seed, is_last);
        if let Some((reason, _)) = &step.failure
            && reason.is_deterministic()
            && reason.kind() == crate::error::ErrorKind::Build
        {
            self.memo().insert(memo, &step);
        }
        (step, digest)
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the loaded plugin in a fresh store, then checks and normalises the tree it left.
    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &self,
        mut step: Step,
        work: &Path,
        t: &Transform,
        admitted: &admission::Admitted,
        config: &str,
        ctx: &TransformContext,
        loaded: &wasm::Loaded,
        seed: [u8; 32],
        is_last: bool,
    ) -> (Step, Option<[u8; 32]>) {
        let limits = &admitted.limits;
        let out_limits = tree::OutputLimits {
            entries: limits.output_files,
            bytes: limits.output_bytes,
        };
        let ran = {
            let _permit = self.permits.acquire();
            let watchdog = tree::Watchdog::start(work, out_limits).ok();
            let job = wasm::Job {
                work,
                mounts: &admitted.mounts,
                config,
                ctx,
                transform: &t.name,
                limits,
                seed,
                watchdog: watchdog.as_ref().map(|w| w.tripped.clone()),
            };
            self.runtime.run(loaded, &job)
        };
        step.fuel_used = ran.fuel_used;
        step.peak_memory = ran.peak_memory;
        step.instantiate = ran.instantiate;
        for (what, dropped) in [("stdout", ran.stdout_dropped), ("stderr", ran.stderr_dropped)] {
            if dropped > 0 {
                step.diagnostics.push(Diagnostic::host(
                    Severity::Warning,
                    "artgen.log-truncated",
                    format!("{what} was cut to 64 KiB ({dropped} bytes dropped)"),
                ));
            }
        }
        step.stdout = ran.stdout;
        step.stderr = ran.stderr;
        match ran.outcome {
            wasm::Outcome::Succeeded(d) => {
                step.diagnostics.extend(d);
                step.diagnostics = report::cap_diagnostics(std::mem::take(&mut step.diagnostics));
                match tree::check_and_normalize(work, Some(&out_limits), !is_last) {
                    Ok(summary) => {
                        let digest = (!is_last).then_some(summary.digest);
                        (step, digest)
                    }
                    Err(e) => {
                        let (r, d) = tree_error(e);
                        (step.failed(r, d), None)
                    }
                }
            }
            wasm::Outcome::Failed {
                reason,
                detail,
                diagnostics,
            } => {
                step.diagnostics.extend(diagnostics);
                step.diagnostics = report::cap_diagnostics(std::mem::take(&mut step.diagnostics));
                (step.failed(reason, detail), None)
            }
            wasm::Outcome::Exited(_) => (
                step.failed(Reason::TransformFailed, "internal: unparsed exit".into()),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_and_normalises_numbers() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"b":1.0,"a":[1e21,0.000001,1e-7,-2.5,100,"x\u0001"],"é":null,"Z":true}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"Z":true,"a":[1e+21,0.000001,1e-7,-2.5,100,"x\u0001"],"b":1,"é":null}"#
        );
        assert_eq!(es_number(123.456), "123.456");
        assert_eq!(es_number(1e20), "100000000000000000000");
        assert_eq!(es_number(1.5e-10), "1.5e-10");
    }

    #[test]
    fn seed_depends_on_every_part() {
        let t = [0u8; 32];
        let a = seed("sha256:1", "{}", &t, "x");
        assert_eq!(a, seed("sha256:1", "{}", &t, "x"));
        assert_ne!(a, seed("sha256:1", "{}", &t, "y"));
        assert_ne!(a, seed("sha256:1", "{} ", &t, "x"));
        assert_ne!(seed("sha256:1", "ab", &t, "x"), seed("sha256:1a", "b", &t, "x"));
    }

    #[test]
    fn read_plugin_does_not_follow_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("p")).unwrap();
        std::fs::write(d.path().join("p/x.wasm"), b"abc").unwrap();
        std::os::unix::fs::symlink("p", d.path().join("q")).unwrap();
        std::os::unix::fs::symlink("x.wasm", d.path().join("p/y.wasm")).unwrap();
        assert_eq!(read_plugin(d.path(), "p/x.wasm").unwrap(), b"abc");
        assert!(read_plugin(d.path(), "q/x.wasm").is_err());
        assert!(read_plugin(d.path(), "p/y.wasm").is_err());
        assert!(read_plugin(d.path(), "p/missing.wasm").is_err());
    }
}
