//! Everything that touches wasmtime (design/plugins.md §6, pitfalls §13: keep every `wasmtime*` import
//! here). One [`Engine`] per process; per [`super::Host`] a [`Runtime`] with the compiled-code caches; a
//! fresh [`Store`] per transform.
//!
//! Exports are called with wasmtime's async API on a private current-thread tokio runtime that lives on the
//! calling (blocking) thread, so a wall-clock deadline also covers a guest blocked in a host call (a sleep,
//! a poll), which fuel cannot see. Running wasm yields to the host every [`YIELD_FUEL`] units of fuel, and
//! [`race`] checks the deadline and the output watchdog at each yield: the wall-clock backstop of design
//! §6/§7 without epoch interruption, whose check on every loop and call cost about 6 % of a 1,000-file
//! transform on top of fuel's.

mod bindings;
mod cache;
mod limiter;
mod pipe;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, OperatorCost, Store, Trap};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use self::bindings::PluginPre;
use self::bindings::artgen::transform::types as wit;
use self::limiter::Limiter;
use self::pipe::CappedPipe;
use super::admission::{Limits, format_bytes, format_count, format_duration};
use super::report::{
    Diagnostic, Mode, PluginInfo, Reason, Severity, cap_diagnostics, first_errors, sanitize,
};
use super::{SourceInfo, TransformContext};

/// Export of a typed plugin (any 0.1.x).
const TYPED_EXPORT: &str = "artgen:transform/transformer@0.1";
/// Export of a command-mode plugin (any 0.2.x).
const COMMAND_EXPORT: &str = "wasi:cli/run@0.2";
/// Packages a plugin may import, at 0.2.x. Sockets are linked but every call is denied.
const ALLOWED_WASI: [&str; 6] = ["cli", "io", "clocks", "filesystem", "random", "sockets"];
/// The types-only interface a typed plugin imports implicitly.
const TYPES_IMPORT: &str = "artgen:transform/types@0.1";
/// Name of the blocking-pool threads of the plugin runtime (see [`eager_writes`]).
pub const BLOCKING_THREAD: &str = "artgen-wasi-io";
/// Fuel between two yields of running wasm to [`race`]: about 2 ms of compute, so a deadline or a
/// tripped watchdog stops a spinning guest within that; a yield costs a few microseconds.
const YIELD_FUEL: u64 = 10_000_000;
/// The `wasi:io/streams` instance wasmtime-wasi 48 defines; imports of older 0.2.x versions resolve to it.
const WASI_STREAMS: &str = "wasi:io/streams@0.2.12";
/// Captured stdout/stderr per run (§7).
pub(crate) const LOG_CAP: usize = 64 << 10;
/// Limits of the `describe()` store.
const DESCRIBE_LIMITS: Limits = Limits {
    fuel: 1_000_000_000,
    timeout: Duration::from_secs(10),
    memory: 128 << 20,
    output_bytes: 0,
    output_files: 0,
};
const LRU_ENTRIES: usize = 64;

/// Per-store state.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    deadline: Instant,
    timed_out: bool,
    output_exceeded: bool,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Shared {
    engine: Engine,
    linker: Linker<State>,
}

/// The process-wide engine and linker.
fn shared() -> Result<&'static Shared, String> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut cfg = Config::new();
            cfg.consume_fuel(true)
                // Per-byte costs for bulk memory operations are part of the default table.
                .operator_cost(OperatorCost::new())
                .cranelift_nan_canonicalization(true)
                .relaxed_simd_deterministic(true)
                .max_wasm_stack(1 << 20);
            let engine = Engine::new(&cfg).map_err(|e| format!("creating the wasm engine: {e:#}"))?;
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .map_err(|e| format!("linking WASI: {e:#}"))?;
            eager_writes(&mut linker).map_err(|e| format!("linking WASI: {e:#}"))?;
            // The types-only interface of the typed world: an instance with no functions.
            linker
                .instance("artgen:transform/types@0.1.0")
                .map_err(|e| format!("linking artgen:transform/types: {e:#}"))?;
            Ok(Shared { engine, linker })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Redefines `output-stream.write` to complete the write before it returns.
///
/// wasmtime-wasi hands every non-blocking file `write` to tokio's blocking pool and the guest then waits
/// for it (`blocking-flush` or `subscribe` + `block`): two thread switches per write, which made up most
/// of a 1,000-file transform's time. `allow_blocking_current_thread` covers the `blocking-*` calls only.
/// A write that finishes at once is one a non-blocking stream may always do; the stream is ready again
/// when the call returns, and a failure is reported by this call (`last-operation-failed`) instead of the
/// next one. Other streams (stdout, stderr) behave as before: `blocking_write_and_flush` of a stream that
/// is ready is its `write` plus `flush`.
fn eager_writes(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynOutputStream;
    use wasmtime_wasi::p2::bindings::io::streams::{Host as _, StreamError as WitStreamError};

    linker.allow_shadowing(true);
    let mut streams = linker.instance(WASI_STREAMS)?;
    streams.func_wrap_async(
        "[method]output-stream.write",
        |mut cx: wasmtime::StoreContextMut<'_, State>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            Box::new(async move {
                let table = &mut cx.data_mut().table;
                let written = table
                    .get_mut(&stream)?
                    .blocking_write_and_flush(bytes.into())
                    .await;
                let r: Result<(), WitStreamError> = match written {
                    Ok(()) => Ok(()),
                    Err(e) => Err(table.convert_stream_error(e)?),
                };
                Ok((r,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `f` to completion on this thread's private current-thread runtime. Must be called from a thread
/// that is not driving an async runtime (a plain thread or `spawn_blocking`).
fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Named for tests: wasmtime-wasi's `spawn_blocking` starts these, and a transform should not.
            .thread_name(BLOCKING_THREAD)
            .build()
            .expect("building the plugin runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

enum Pre {
    Typed(PluginPre<State>),
    Command(CommandPre<State>),
}

/// A compiled, checked, pre-linked plugin.
pub(crate) struct Loaded {
    pre: Pre,
    pub mode: Mode,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `describe()`, once per digest (typed mode only). A timeout is not kept: it depends on load.
    info: Mutex<Option<Result<PluginInfo, Failure>>>,
}

/// A plugin verdict that is not "runs": `(reason, detail)`.
pub(crate) type Failure = (Reason, String);

#[derive(Clone)]
enum Entry {
    Ok(Arc<Loaded>),
    Incompatible(String),
}

/// Counters for tests and metrics (`artgen_plugin_cache_lookups_total{tier}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `Component::new` calls.
    pub compiles: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    /// Time spent compiling, summed.
    pub compile_time: Duration,
}

/// One host's compiled-code caches.
pub(crate) struct Runtime {
    shared: &'static Shared,
    disk: Option<cache::Disk>,
    lru: Mutex<cache::Lru<Entry>>,
    /// One compile at a time; also makes loading single-flight per digest.
    compile_lock: Mutex<()>,
    compiles: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compile_nanos: AtomicU64,
}

/// One transform to run.
pub(crate) struct Job<'a> {
    pub work: &'a Path,
    pub mounts: &'a [(String, PathBuf)],
    /// Canonical JSON.
    pub config: &'a str,
    pub ctx: &'a TransformContext,
    pub transform: &'a str,
    pub limits: &'a Limits,
    pub seed: [u8; 32],
    pub watchdog: Option<Arc<AtomicBool>>,
}

pub(crate) enum Outcome {
    Succeeded(Vec<Diagnostic>),
    /// Command mode, before stdout is parsed (never returned from [`Runtime::run`]).
    Exited(i32),
    Failed {
        reason: Reason,
        detail: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// What one run produced.
pub(crate) struct Ran {
    pub outcome: Outcome,
    /// Store setup excluded: `InstancePre::instantiate` alone.
    pub instantiate: Duration,
    pub fuel_used: u64,
    pub peak_memory: u64,
    pub stdout: Vec<u8>,
    pub stdout_dropped: u64,
    pub stderr: Vec<u8>,
    pub stderr_dropped: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first 8 bytes: a component, a core module, or not WebAssembly.
fn check_preamble(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(
            "this is a core WebAssembly module, not a component (e.g. built for wasm32-wasip1). Build it for \
             wasm32-wasip2, or adapt it with `wasm-tools component new --adapt \
             wasi_snapshot_preview1.command.wasm` and run it in command mode"
                .into(),
        ),
        Some([0, b'a', b's', b'm', ..]) => {
            Err("unsupported WebAssembly binary version (expected a component)".into())
        }
        _ => Err("not a WebAssembly binary".into()),
    }
}

fn versioned(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.') || rest.is_empty())
}

/// Whether an import is on the allow-list: `wasi:{cli,io,clocks,filesystem,random,sockets}/*@0.2.*`.
fn import_allowed(name: &str) -> bool {
    if versioned(name, TYPES_IMPORT) {
        return true;
    }
    let Some(rest) = name.strip_prefix("wasi:") else {
        return false;
    };
    let Some((pkg, rest)) = rest.split_once('/') else {
        return false;
    };
    let Some((_iface, version)) = rest.split_once('@') else {
        return false;
    };
    ALLOWED_WASI.contains(&pkg) && (version == "0.2" || version.starts_with("0.2."))
}

impl Runtime {
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, String> {
        let shared = shared()?;
        let disk = match cache_dir {
            None => None,
            Some(dir) => match cache::Disk::open(dir, &shared.engine) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "not using the compiled-plugin cache");
                    None
                }
            },
        };
        Ok(Runtime {
            shared,
            disk,
            lru: Mutex::new(cache::Lru::new(LRU_ENTRIES)),
            compile_lock: Mutex::new(()),
            compiles: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compile_nanos: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiles: self.compiles.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compile_time: Duration::from_nanos(self.compile_nanos.load(Ordering::Relaxed)),
        }
    }

    fn cached(&self, key: &str) -> Option<Result<Arc<Loaded>, Failure>> {
        let e = lock(&self.lru).get(key)?;
        self.memory_hits.fetch_add(1, Ordering::Relaxed);
        Some(match e {
            Entry::Ok(l) => Ok(l),
            Entry::Incompatible(m) => Err((Reason::PluginIncompatible, m)),
        })
    }

    /// Compiles (or loads from a cache) and checks a plugin. `digest_hex` must be the sha256 of `bytes`.
    /// Verdicts, negative ones too, are cached per digest.
    pub fn load(&self, digest_hex: &str, bytes: &[u8]) -> Result<Arc<Loaded>, Failure> {
        check_preamble(bytes).map_err(|m| (Reason::PluginIncompatible, m))?;
        if let Some(hit) = self.cached(digest_hex) {
            return hit;
        }
        let _one = lock(&self.compile_lock);
        if let Some(hit) = self.cached(digest_hex) {
            return hit;
        }
        let engine = &self.shared.engine;
        let from_disk = self.disk.as_ref().and_then(|d| d.load(engine, digest_hex));
        let component = match from_disk {
            Some(c) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                Ok(c)
            }
            None => {
                let started = Instant::now();
                self.compiles.fetch_add(1, Ordering::Relaxed);
                let c = Component::new(engine, bytes);
                self.compile_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                match c {
                    Ok(c) => {
                        if let Some(d) = &self.disk {
                            d.store(digest_hex, &c);
                        }
                        Ok(c)
                    }
                    Err(e) => Err(format!("the component does not compile: {}", err_chain(&e))),
                }
            }
        };
        let entry = match component.and_then(|c| self.check(&c)) {
            Ok(l) => Entry::Ok(Arc::new(l)),
            Err(m) => Entry::Incompatible(m),
        };
        lock(&self.lru).put(digest_hex.to_owned(), entry.clone());
        match entry {
            Entry::Ok(l) => Ok(l),
            Entry::Incompatible(m) => Err((Reason::PluginIncompatible, m)),
        }
    }

    /// Checks imports and exports, picks the mode and pre-links.
    fn check(&self, c: &Component) -> Result<Loaded, String> {
        let engine = &self.shared.engine;
        let ty = c.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let bad: Vec<&str> = imports
            .iter()
            .map(String::as_str)
            .filter(|n| !import_allowed(n))
            .collect();
        if !bad.is_empty() {
            return Err(format!(
                "the component imports interfaces outside the allow-list \
                 (wasi:{{cli,io,clocks,filesystem,random,sockets}}@0.2.*): {}",
                bad.join(", ")
            ));
        }
        let typed = exports.iter().any(|n| versioned(n, TYPED_EXPORT));
        let command = exports.iter().any(|n| versioned(n, COMMAND_EXPORT));
        let link_err = |e: wasmtime::Error| format!("the component cannot be linked: {}", err_chain(&e));
        let instance_pre = self.shared.linker.instantiate_pre(c).map_err(link_err)?;
        let (pre, mode) = if typed {
            let pre = PluginPre::new(instance_pre).map_err(|e| {
                format!(
                    "the export artgen:transform/transformer does not match the 0.1.0 contract: {}",
                    err_chain(&e)
                )
            })?;
            (Pre::Typed(pre), Mode::Typed)
        } else if command {
            let pre = CommandPre::new(instance_pre).map_err(|e| {
                format!(
                    "the export wasi:cli/run does not match WASI 0.2: {}",
                    err_chain(&e)
                )
            })?;
            (Pre::Command(pre), Mode::Command)
        } else {
            return Err(format!(
                "the component exports neither artgen:transform/transformer@0.1.0 (typed mode) nor \
                 wasi:cli/run@0.2.x (command mode); it exports: [{}]",
                exports.join(", ")
            ));
        };
        Ok(Loaded {
            pre,
            mode,
            imports,
            exports,
            info: Mutex::new(None),
        })
    }

    /// `describe()` of a typed plugin, run once per digest in a small store; `None` for command mode.
    pub fn describe(&self, loaded: &Loaded) -> Result<Option<PluginInfo>, Failure> {
        let Pre::Typed(pre) = &loaded.pre else {
            return Ok(None);
        };
        let mut cached = lock(&loaded.info);
        if let Some(r) = &*cached {
            return r.clone().map(Some);
        }
        let r = self.call_describe(pre);
        if !matches!(r, Err((reason, _)) if !reason.is_deterministic()) {
            *cached = Some(r.clone());
        }
        r.map(Some)
    }

    fn call_describe(&self, pre: &PluginPre<State>) -> Result<PluginInfo, Failure> {
        let stdout = CappedPipe::new(LOG_CAP);
        let stderr = CappedPipe::new(LOG_CAP);
        let wasi = wasi_ctx(None, &[], &stdout, &stderr, None, &[0; 32])
            .map_err(|e| (Reason::PluginIncompatible, e))?;
        let mut store = self.store(wasi, &DESCRIBE_LIMITS)?;
        let r = race(&mut store, DESCRIBE_LIMITS.timeout, None, async |store| {
            let p = pre.instantiate_async(&mut *store).await?;
            p.artgen_transform_transformer().call_describe(&mut *store).await
        });
        match r {
            Ok(info) => Ok(PluginInfo {
                name: sanitize(&info.name, 128),
                version: sanitize(&info.version, 128),
                description: sanitize(&info.description, 1024),
                config_schema: info.config_schema.filter(|s| s.len() <= 1 << 20),
            }),
            Err(e) => {
                let (reason, detail) = classify(store.data(), &e, &DESCRIBE_LIMITS, &stderr.peek());
                Err((reason, format!("describe(): {detail}")))
            }
        }
    }

    fn store(&self, wasi: WasiCtx, limits: &Limits) -> Result<Store<State>, Failure> {
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory),
            deadline: Instant::now() + limits.timeout,
            timed_out: false,
            output_exceeded: false,
        };
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| (Reason::TransformTrapped, format!("setting fuel: {e:#}")))?;
        store.fuel_async_yield_interval(Some(YIELD_FUEL)).map_err(|e| {
            (
                Reason::TransformTrapped,
                format!("setting the yield interval: {e:#}"),
            )
        })?;
        Ok(store)
    }

    /// Runs one transform in a fresh store.
    pub fn run(&self, loaded: &Loaded, job: &Job<'_>) -> Ran {
        let stdout = CappedPipe::new(LOG_CAP);
        let stderr = CappedPipe::new(LOG_CAP);
        let wctx = wit_context(job);
        let stdin = match loaded.mode {
            Mode::Typed => None,
            Mode::Command => Some(command_stdin(job.config, &wctx)),
        };
        let fail = |reason, detail: String| Ran {
            outcome: Outcome::Failed {
                reason,
                detail,
                diagnostics: vec![],
            },
            instantiate: Duration::ZERO,
            fuel_used: 0,
            peak_memory: 0,
            stdout: vec![],
            stdout_dropped: 0,
            stderr: vec![],
            stderr_dropped: 0,
        };
        let wasi = match wasi_ctx(Some(job.work), job.mounts, &stdout, &stderr, stdin, &job.seed) {
            Ok(w) => w,
            Err(e) => return fail(Reason::TransformFailed, e),
        };
        let mut store = match self.store(wasi, job.limits) {
            Ok(s) => s,
            Err((r, d)) => return fail(r, d),
        };
        let limits = job.limits;
        let instantiate = std::cell::Cell::new(Duration::ZERO);
        let outcome = match &loaded.pre {
            Pre::Typed(pre) => {
                let r = race(&mut store, limits.timeout, job.watchdog.clone(), async |store| {
                    let started = Instant::now();
                    let p = pre.instantiate_async(&mut *store).await?;
                    instantiate.set(started.elapsed());
                    let t = p.artgen_transform_transformer();
                    let checked = t.call_validate_config(&mut *store, job.config).await?;
                    if checked.iter().any(|d| d.severity == wit::Severity::Error) {
                        return Ok(Err(wit::Failure::InvalidConfig(checked)));
                    }
                    let r = t.call_transform(&mut *store, job.config, &wctx).await?;
                    Ok(r.map(|mut ok| {
                        let mut all = checked;
                        all.append(&mut ok.diagnostics);
                        ok.diagnostics = all;
                        ok
                    }))
                });
                match r {
                    Ok(Ok(ok)) => Outcome::Succeeded(diagnostics(ok.diagnostics)),
                    Ok(Err(wit::Failure::InvalidConfig(d))) => {
                        let d = diagnostics(d);
                        Outcome::Failed {
                            reason: Reason::PluginConfigInvalid,
                            detail: format!("invalid config: {}", first_errors(&d)),
                            diagnostics: d,
                        }
                    }
                    Ok(Err(wit::Failure::Rejected(d))) => {
                        let d = diagnostics(d);
                        Outcome::Failed {
                            reason: Reason::TransformFailed,
                            detail: format!("rejected: {}", first_errors(&d)),
                            diagnostics: d,
                        }
                    }
                    Ok(Err(wit::Failure::Internal(m))) => Outcome::Failed {
                        reason: Reason::TransformFailed,
                        detail: format!("plugin error: {}", sanitize(&m, 512)),
                        diagnostics: vec![],
                    },
                    Err(e) => {
                        let (reason, detail) = classify(store.data(), &e, limits, &stderr.peek());
                        Outcome::Failed {
                            reason,
                            detail,
                            diagnostics: vec![],
                        }
                    }
                }
            }
            Pre::Command(pre) => {
                let r = race(&mut store, limits.timeout, job.watchdog.clone(), async |store| {
                    let started = Instant::now();
                    let c = pre.instantiate_async(&mut *store).await?;
                    instantiate.set(started.elapsed());
                    c.wasi_cli_run().call_run(&mut *store).await
                });
                let code = match &r {
                    Ok(Ok(())) => Ok(0),
                    Ok(Err(())) => Ok(1),
                    Err(e) => match e.downcast_ref::<I32Exit>() {
                        Some(x) => Ok(x.0),
                        None => Err(classify(store.data(), e, limits, &stderr.peek())),
                    },
                };
                match code {
                    // Parsed below, once stdout is taken.
                    Ok(code) => Outcome::Exited(code),
                    Err((reason, detail)) => Outcome::Failed {
                        reason,
                        detail,
                        diagnostics: vec![],
                    },
                }
            }
        };
        let fuel_left = store.get_fuel().unwrap_or(0);
        let peak_memory = store.data().limiter.peak();
        let (mut stdout, stdout_dropped) = stdout.take();
        let (stderr, stderr_dropped) = stderr.take();
        let outcome = match outcome {
            Outcome::Exited(code) => {
                let (outcome, log) = command_outcome(code, &stdout);
                stdout = log;
                outcome
            }
            o => o,
        };
        Ran {
            outcome,
            instantiate: instantiate.get(),
            fuel_used: limits.fuel.saturating_sub(fuel_left),
            peak_memory,
            stdout,
            stdout_dropped,
            stderr,
            stderr_dropped,
        }
    }
}

/// Why a call did not return: from our flags first (timeout, memory limiter, watchdog), then the trap
/// code. Never from error strings.
fn classify(s: &State, e: &wasmtime::Error, limits: &Limits, stderr: &[u8]) -> (Reason, String) {
    if s.timed_out {
        return (
            Reason::TransformTimeout,
            format!("timed out after {}", format_duration(limits.timeout)),
        );
    }
    if s.limiter.exceeded {
        return (
            Reason::TransformMemoryLimit,
            format!("exceeded the memory limit ({})", format_bytes(limits.memory)),
        );
    }
    if s.output_exceeded {
        return (
            Reason::TransformOutputInvalid,
            format!(
                "output exceeded the limits while running (limits.outputFiles {} files and directories, \
                 limits.outputBytes {})",
                limits.output_files,
                format_bytes(limits.output_bytes)
            ),
        );
    }
    let tail = stderr_tail(stderr);
    let with_tail = |m: String| {
        if tail.is_empty() {
            m
        } else {
            format!("{m}: {tail}")
        }
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (
            Reason::TransformOutOfFuel,
            format!("ran out of fuel ({})", format_count(limits.fuel)),
        ),
        Some(Trap::StackOverflow) => (
            Reason::TransformTrapped,
            with_tail("trapped: wasm stack overflow (1 MiB)".into()),
        ),
        Some(trap) => (Reason::TransformTrapped, with_tail(format!("trapped: {trap}"))),
        None => (
            Reason::TransformTrapped,
            with_tail(format!("failed: {}", sanitize(&err_chain(e), 512))),
        ),
    }
}

/// The useful end of a guest's stderr: from the last Rust panic message if there is one.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let from = text.rfind("panicked at").unwrap_or_else(|| {
        let trimmed = text.trim_end();
        trimmed.char_indices().rev().nth(299).map(|(i, _)| i).unwrap_or(0)
    });
    let tail: String = text[from..]
        .lines()
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    sanitize(tail.trim(), 400)
}

fn err_chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Races a call against the wall-clock deadline and the output watchdog: checked each time running wasm
/// yields (every [`YIELD_FUEL`]), and by timers for a guest blocked in a host call. On expiry the call is
/// dropped and the store must not be used for another call.
fn race<R, F>(
    store: &mut Store<State>,
    timeout: Duration,
    watchdog: Option<Arc<AtomicBool>>,
    call: F,
) -> wasmtime::Result<R>
where
    F: AsyncFnOnce(&mut Store<State>) -> wasmtime::Result<R>,
{
    let deadline = store.data().deadline.min(Instant::now() + timeout);
    let tripped = || watchdog.as_ref().is_some_and(|w| w.load(Ordering::Relaxed));
    let (timed_out, over) = block_on(async {
        let guard = async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tripped() {
                    return;
                }
            }
        };
        let mut call = std::pin::pin!(call(&mut *store));
        // `None` when a yield finds the deadline passed or the watchdog tripped.
        let yielding = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if Instant::now() >= deadline || tripped() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        tokio::select! {
            biased;
            r = yielding => match r {
                Some(r) => (false, Some(r)),
                None => (!tripped(), None),
            },
            _ = tokio::time::sleep_until(deadline.into()) => (true, None),
            _ = guard => (false, None),
        }
    });
    match over {
        Some(r) => r,
        None => {
            let s = store.data_mut();
            if timed_out {
                s.timed_out = true;
            } else {
                s.output_exceeded = true;
            }
            Err(wasmtime::Error::msg("interrupted by the host"))
        }
    }
}

fn wit_context(job: &Job<'_>) -> wit::Context {
    let granted = |alias: &str| job.mounts.iter().any(|(a, _)| a == alias);
    wit::Context {
        namespace: job.ctx.namespace.clone(),
        generator: job.ctx.generator.clone(),
        artifact: job.ctx.artifact.clone(),
        transform: job.transform.to_owned(),
        labels: job
            .ctx
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        sources: job
            .ctx
            .sources
            .iter()
            .map(|s: &SourceInfo| wit::SourceInfo {
                alias: s.alias.clone(),
                kind: s.kind.clone(),
                revision: s.revision.clone(),
                digest: s.digest.clone(),
                mount: granted(&s.alias).then(|| format!("/sources/{}", s.alias)),
            })
            .collect(),
    }
}

/// Command-mode stdin: `{"version":"0.1.0","config":{…},"context":{…}}`, canonical JSON.
fn command_stdin(config: &str, c: &wit::Context) -> Vec<u8> {
    let config: serde_json::Value =
        serde_json::from_str(config).unwrap_or(serde_json::Value::Object(Default::default()));
    let sources: Vec<serde_json::Value> = c
        .sources
        .iter()
        .map(|s| {
            serde_json::json!({
                "alias": s.alias, "kind": s.kind, "revision": s.revision, "digest": s.digest,
                "mount": s.mount,
            })
        })
        .collect();
    let labels: serde_json::Map<String, serde_json::Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let v = serde_json::json!({
        "version": "0.1.0",
        "config": config,
        "context": {
            "namespace": c.namespace, "generator": c.generator, "artifact": c.artifact,
            "transform": c.transform, "labels": labels, "sources": sources,
        },
    });
    super::canonical_json(&v).into_bytes()
}

/// Command mode: stdout JSON lines are diagnostics; exit 0 = success, 2 = invalid config, other =
/// rejected when error diagnostics were printed, else a plugin error. Also returns the other lines.
fn command_outcome(code: i32, stdout: &[u8]) -> (Outcome, Vec<u8>) {
    let text = String::from_utf8_lossy(stdout);
    let mut diags = Vec::new();
    let mut log = String::new();
    for line in text.lines() {
        match parse_diagnostic_line(line) {
            Some(d) => diags.push(d),
            None => {
                log.push_str(line);
                log.push('\n');
            }
        }
    }
    let diags = cap_diagnostics(diags);
    let outcome = match code {
        0 => Outcome::Succeeded(diags),
        2 => Outcome::Failed {
            reason: Reason::PluginConfigInvalid,
            detail: format!("invalid config (exit status 2): {}", first_errors(&diags)),
            diagnostics: diags,
        },
        c if diags.iter().any(|d| d.severity == Severity::Error) => Outcome::Failed {
            reason: Reason::TransformFailed,
            detail: format!("rejected (exit status {c}): {}", first_errors(&diags)),
            diagnostics: diags,
        },
        c => Outcome::Failed {
            reason: Reason::TransformFailed,
            detail: format!("plugin error: exited with status {c}"),
            diagnostics: diags,
        },
    };
    (outcome, log.into_bytes())
}

fn parse_diagnostic_line(line: &str) -> Option<Diagnostic> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let o = v.as_object()?;
    let severity = match o.get("severity")?.as_str()? {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "error" => Severity::Error,
        _ => return None,
    };
    let s = |k: &str| o.get(k).and_then(|v| v.as_str());
    let n = |k: &str| {
        o.get(k)
            .and_then(|v| v.as_u64())
            .and_then(|n| u32::try_from(n).ok())
    };
    Some(Diagnostic::from_plugin(
        severity,
        s("code")?,
        s("message").unwrap_or(""),
        s("path"),
        n("line"),
        n("column"),
        s("hint"),
    ))
}

fn diagnostics(d: Vec<wit::Diagnostic>) -> Vec<Diagnostic> {
    cap_diagnostics(
        d.into_iter()
            .map(|d| {
                let severity = match d.severity {
                    wit::Severity::Info => Severity::Info,
                    wit::Severity::Warning => Severity::Warning,
                    wit::Severity::Error => Severity::Error,
                };
                let loc = d.location.as_ref();
                Diagnostic::from_plugin(
                    severity,
                    &d.code,
                    &d.message,
                    loc.map(|l| l.path.as_str()),
                    loc.and_then(|l| l.line),
                    loc.and_then(|l| l.column),
                    d.hint.as_deref(),
                )
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------------
// WASI context (§6, §9): /work read-write, granted sources read-only, no env, fixed clocks, seeded
// randomness, no network.

struct FixedWall;

impl HostWallClock for FixedWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

struct FixedMonotonic;

/// A monotonic clock that never moves (elapsed time is always 0). It reads 1, not 0: Go's runtime refuses
/// to start on a zero `nanotime` ("nanotime returning zero"), and any constant is as deterministic.
impl HostMonotonicClock for FixedMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        1
    }
}

fn sub_seed(seed: &[u8; 32], what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(what.as_bytes());
    h.finalize().into()
}

fn wasi_ctx(
    work: Option<&Path>,
    mounts: &[(String, PathBuf)],
    stdout: &CappedPipe,
    stderr: &CappedPipe,
    stdin: Option<Vec<u8>>,
    seed: &[u8; 32],
) -> Result<WasiCtx, String> {
    let mut b = WasiCtxBuilder::new();
    // Before any preopen: each preopen captures this flag (§13).
    b.allow_blocking_current_thread(true);
    if let Some(work) = work {
        b.preopened_dir(work, "/work", FsPerms::ReadWrite)
            .map_err(|e| format!("opening the work directory: {e:#}"))?;
        b.initial_cwd("/work");
    }
    for (alias, dir) in mounts {
        b.preopened_dir(dir, format!("/sources/{alias}"), FsPerms::ReadOnly)
            .map_err(|e| format!("opening source '{alias}': {e:#}"))?;
    }
    b.args(&["plugin"]);
    b.stdout(stdout.clone()).stderr(stderr.clone());
    if let Some(input) = stdin {
        b.stdin(MemoryInputPipe::new(input));
    }
    b.wall_clock(FixedWall).monotonic_clock(FixedMonotonic);
    // Deterministic, so NOT secure: plugins must never mint secrets (§9).
    b.secure_random(rand_pcg::Pcg64::from_seed(sub_seed(seed, "random")));
    b.insecure_random(rand_pcg::Pcg64::from_seed(sub_seed(seed, "insecure")));
    let s = sub_seed(seed, "insecure-seed");
    b.insecure_random_seed(u128::from_le_bytes(s[..16].try_into().unwrap_or_default()));
    b.max_random_size(1 << 20);
    b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(import_allowed("wasi:cli/environment@0.2.6"));
        assert!(import_allowed("wasi:sockets/tcp@0.2.0"));
        assert!(import_allowed("artgen:transform/types@0.1.0"));
        assert!(!import_allowed("wasi:http/outgoing-handler@0.2.0"));
        assert!(!import_allowed("wasi:cli/environment@0.3.0"));
        assert!(!import_allowed("wasi:cli/environment"));
        assert!(!import_allowed("artgen:test/forbidden@0.1.0"));
        assert!(versioned("wasi:cli/run@0.2.3", COMMAND_EXPORT));
        assert!(!versioned("wasi:cli/run@0.20.0", COMMAND_EXPORT));
    }

    #[test]
    fn preamble() {
        assert!(check_preamble(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_preamble(b"\0asm\x01\0\0\0rest")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_preamble(b"hello").is_err());
    }

    #[test]
    fn stderr_tail_finds_the_panic() {
        let s = b"log line\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` env\n";
        assert_eq!(stderr_tail(s), "panicked at src/lib.rs:3:5: boom");
    }

    #[test]
    fn command_lines() {
        let d = parse_diagnostic_line(
            r#"{"severity":"error","code":"x.y","message":"m","path":"a.yaml","line":3}"#,
        )
        .unwrap();
        assert_eq!(d.render(), "error x.y a.yaml:3: m");
        assert!(parse_diagnostic_line("plain log").is_none());
    }
}
