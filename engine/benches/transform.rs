//! Plugin-host cost figures (design/plugins.md §10), measured in one run against a native Rust
//! implementation of the same transform. Not run by CI.
//!
//! Command (from the workspace root; builds `plugins/` first through `artgen_e2e::plugins::build()`, which
//! honours `ARTGEN_PLUGINS_TARGET_DIR`):
//!
//! ```text
//! cargo bench -p artgen-engine --bench transform
//! ```
//!
//! Options (environment; command-line arguments are ignored): `ARTGEN_BENCH_RUNS=N` (default 7). Cold
//! compiles run N times, the 1,000-file transform N rounds (after one untimed warm-up round), cached
//! loads 3N times and instantiations 5N times. `ARTGEN_BENCH_ONLY=transform` times the 1,000-file
//! transform alone (after one untimed compile). Every figure is a median. Scratch files (trees, cache
//! directories) go to the temp directory: `TMPDIR=/dev/shm` takes the disk out of the comparison.
//!
//! What is timed:
//! - cold compile: a new [`Host`] over a fresh, empty cache directory (so neither cache can hit), then
//!   `Host::precompile`. The figure is `Host::stats().compile_time`, i.e. `Component::new` alone; the wall
//!   time of `precompile` (plus the check, linking and the `.cwasm` write) is printed alongside. For
//!   values-templater (minijinja) and, for reference, the small yaml-to-json.
//! - pin check: sha256 of the component, timed on its own. It is design §5 step 2 ("resolve and
//!   verify"), paid by every transform whether or not its code is cached, so it has its own row.
//! - cached load: a new [`Host`] over the warm cache directory, then `Host::precompile`, minus the pin
//!   check of the same iteration: mapping and deserialising the `.cwasm`, the import/export check and
//!   `instantiate_pre` (§5 step 4). What reading the whole file would cost instead (`fs::read`) is
//!   printed for reference. `Host::new` is not timed.
//! - instantiate: `TransformReport::instantiate_time` of warm runs (memory cache) over a one-file tree,
//!   i.e. `InstancePre::instantiate` into the run's fresh store; building the store itself (WASI context,
//!   `Store::new`, fuel) is not part of it. The engine records this for its metrics; no hook is needed.
//! - 1,000-file transform: values-templater rendering 1,000 `*.yaml.j2` files (20 directories of 50) with
//!   `Host::run_all`, end to end (admission, the input-tree check and digest, sha256 pin check, fresh store,
//!   `validate-config` + `transform`, the post-run tree check and normalisation), warm memory cache. The
//!   baseline is [`native`]: the plugin's own code (`plugins/values-templater/src/lib.rs` and the SDK's
//!   `walk_sorted`) compiled natively against the same minijinja 3.1.0: parse and check the config twice
//!   (`validate-config`, then `transform`), walk sorted, read every template, add them all to one
//!   environment, render, write the outputs, remove the templates. Each run gets a fresh copy of the tree
//!   (the copy is not timed); the two contenders alternate which goes first. Both outputs are compared
//!   byte for byte in the warm-up round.
//!
//! The table's baseline column is the native pass of the same run (§10 asks for ratios against it); the
//! targets are §10's: cached load + instantiate < 1 ms, instantiate ≤ 50 µs, transform ≤ 3× native.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use artgen_e2e::plugins::{self, Built};
use artgen_engine::spec::{PluginRef, PluginSource, Transform};
use artgen_engine::transform::{
    Admission, Allowed, Host, HostOptions, TransformContext, TransformReport, digest_of,
};
use serde_json::{Value, json};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const TEMPLATER: &str = "values-templater";
const SMALL: &str = "yaml-to-json";
const DIRS: usize = 20;
const PER_DIR: usize = 50;

/// One small manifest template; `@APP@` and `@N@` are replaced per file.
const TEMPLATE: &str = r#"# @APP@ component @N@ (rendered by values-templater)
apiVersion: apps/v1
kind: Deployment
metadata:
  name: @APP@-c@N@
  namespace: {{ artgen.namespace }}
  labels:
    app.kubernetes.io/name: @APP@-c@N@
    app.kubernetes.io/part-of: {{ artgen.artifact }}
{% for k, v in labels|dictsort %}    {{ k }}: "{{ v }}"
{% endfor %}spec:
  replicas: {{ replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/name: @APP@-c@N@
  template:
    spec:
      containers:
        - name: main
          image: "{{ image.registry }}/{{ image.name }}:{{ image.tag }}"
          env:
            - name: ENVIRONMENT
              value: {{ artgen.labels.env | upper }}
            - name: COMPONENT
              value: "@N@"
{% if resources %}          resources:
            limits:
              cpu: {{ resources.cpu }}
              memory: {{ resources.memory }}
{% endif %}"#;

fn templater_config() -> Value {
    json!({
        "values": {
            "replicas": 3,
            "image": {"registry": "registry.example.com", "name": "team/app", "tag": "1.27.3"},
            "labels": {"team": "payments", "tier": "backend", "cost-center": "cc-42"},
            "resources": {"cpu": "250m", "memory": "256Mi"},
        }
    })
}

fn context() -> TransformContext {
    TransformContext {
        namespace: "team-a".into(),
        generator: "bench".into(),
        artifact: "my-app".into(),
        labels: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        sources: vec![],
    }
}

// ---------------------------------------------------------------------------------------------------------
// The native baseline: values-templater's code, compiled for the host.

mod native {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::fs::FileType;
    use std::io;
    use std::path::{Component, Path, PathBuf};

    use minijinja::syntax::SyntaxConfig;
    use minijinja::value::Serde;
    use minijinja::{AutoEscape, Environment, UndefinedBehavior};
    use serde::Deserialize;
    use serde_json::{Map, Value};

    /// What the plugin learns from `context` (the fields the `artgen` global uses).
    pub struct Ctx {
        pub namespace: String,
        pub generator: String,
        pub artifact: String,
        pub transform: String,
        pub labels: Vec<(String, String)>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Config {
        #[serde(default)]
        values: Map<String, Value>,
        #[serde(default)]
        values_from: Option<String>,
    }

    /// `artgen_plugin_sdk::parse_config` + `Config::check`.
    fn load_config(json: &str) -> Result<Config, String> {
        let text = json.trim();
        let text = if text.is_empty() || text == "null" {
            "{}"
        } else {
            text
        };
        let cfg: Config = serde_json::from_str(text).map_err(|e| format!("config: {e}"))?;
        match &cfg.values_from {
            Some(a) if a.is_empty() || a.contains('/') || a == "." || a == ".." => {
                Err(format!("valuesFrom: {a:?} is not a source alias"))
            }
            _ => Ok(cfg),
        }
    }

    /// The host calls `validate-config`, then `transform` (which parses the config again).
    pub fn run(work: &Path, config: &str, ctx: &Ctx) -> Result<usize, String> {
        load_config(config)?;
        let cfg = load_config(config)?;
        if cfg.values_from.is_some() {
            return Err("valuesFrom is not part of the benchmark".into());
        }
        let mut values = Value::Object(Map::new());
        merge(&mut values, Value::Object(cfg.values));
        render_tree(work, &values, &context_value(ctx))
    }

    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    match b.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn context_value(ctx: &Ctx) -> Value {
        let labels: Map<String, Value> = ctx
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "namespace": ctx.namespace,
            "generator": ctx.generator,
            "artifact": ctx.artifact,
            "transform": ctx.transform,
            "labels": labels,
        })
    }

    fn output_path(template: &Path) -> Option<PathBuf> {
        let name = template.file_name()?.to_str()?;
        if name.starts_with('_') {
            return None;
        }
        Some(template.with_file_name(name.strip_suffix(".j2")?))
    }

    /// Returns the number of rendered templates.
    fn render_tree(work: &Path, values: &Value, artgen: &Value) -> Result<usize, String> {
        let templates = walk_sorted_with_suffix(work, &[".j2"]).map_err(|e| format!("walking: {e}"))?;
        let mut sources = BTreeMap::new();
        for rel in &templates {
            let text = std::fs::read_to_string(work.join(rel))
                .map_err(|e| format!("{}: cannot read template: {e}", display_path(rel)))?;
            sources.insert(display_path(rel), text);
        }

        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters"),
        );
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_global("artgen", minijinja::Value::from(Serde(artgen)));

        let mut errors = Vec::new();
        for (name, text) in &sources {
            if let Err(e) = env.add_template_owned(name.clone(), text.clone()) {
                errors.push(format!("{name}: {e}"));
            }
        }
        let mut outputs = Vec::new();
        if errors.is_empty() {
            let ctx = minijinja::Value::from(Serde(values));
            for rel in &templates {
                let Some(out) = output_path(rel) else { continue };
                let name = display_path(rel);
                match env.get_template(&name).and_then(|t| t.render(&ctx)) {
                    Ok(text) => outputs.push((out, text)),
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }

        let mut overwritten = 0usize;
        for (out, text) in &outputs {
            let dest = work.join(out);
            if dest.exists() {
                overwritten += 1;
            }
            std::fs::write(&dest, text).map_err(|e| format!("writing {}: {e}", display_path(out)))?;
        }
        for rel in &templates {
            std::fs::remove_file(work.join(rel))
                .map_err(|e| format!("removing {}: {e}", display_path(rel)))?;
        }
        std::hint::black_box(overwritten);
        Ok(outputs.len())
    }

    // `artgen_plugin_sdk::fs`.

    fn walk_sorted_with_suffix(root: &Path, suffixes: &[&str]) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        walk(root, Path::new(""), &mut files)?;
        files.retain(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            suffixes.iter().any(|s| name.ends_with(s) && name.len() > s.len())
        });
        Ok(files)
    }

    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let mut entries: Vec<(OsString, FileType)> = Vec::new();
        for entry in std::fs::read_dir(root.join(rel))? {
            let entry = entry?;
            entries.push((entry.file_name(), entry.file_type()?));
        }
        entries.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        for (name, kind) in entries {
            let path = rel.join(name);
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }

    fn display_path(path: &Path) -> String {
        let mut s = String::new();
        for c in path.components() {
            let part = match c {
                Component::Normal(p) => p.to_string_lossy(),
                Component::ParentDir => "..".into(),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => continue,
            };
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(&part);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn median(mut t: Vec<Duration>) -> Duration {
    assert!(!t.is_empty());
    t.sort();
    let n = t.len();
    if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2
    }
}

fn min(t: &[Duration]) -> Duration {
    t.iter().copied().min().unwrap_or_default()
}

fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn kib(n: usize) -> String {
    format!("{:.0} KiB", n as f64 / 1024.0)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// `wasmtime`'s version as the workspace lock file resolves it (the crate exposes no constant).
fn wasmtime_version() -> String {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"wasmtime\""
            && let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = "))
        {
            return v.trim_matches('"').to_owned();
        }
    }
    "unknown".into()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn transform(name: &str, krate: &str, digest: String, config: Value) -> Transform {
    Transform {
        name: name.into(),
        plugin: PluginRef {
            source: PluginSource {
                alias: "plugins".into(),
                path: krate.into(),
            },
            digest,
        },
        config: Some(config),
        read_sources: vec![],
        limits: None,
        failure_policy: None,
    }
}

fn admission(t: &Transform) -> Admission {
    Admission {
        allowed: vec![Allowed::digest(t.plugin.digest.clone())],
        ..Default::default()
    }
}

/// `Host::run_all` of one transform over `work`, with the plugin bytes from memory.
fn run_one(host: &Host, work: &Path, t: &Transform, bytes: &[u8]) -> Result<TransformReport> {
    let reports = host
        .run_all(
            work,
            std::slice::from_ref(t),
            |_| Ok(bytes.to_vec()),
            &context(),
            &BTreeMap::new(),
            &admission(t),
        )
        .map_err(|e| format!("{}: {e}", t.name))?;
    reports.into_iter().next().ok_or_else(|| "no report".into())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Relative path → contents of every file under `dir`.
fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else {
                out.insert(p.strip_prefix(root)?.to_owned(), std::fs::read(&p)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The 1,000-template tree: `app-XX/component-NNN.yaml.j2`.
fn write_templates(root: &Path) -> Result<(usize, u64)> {
    let mut bytes = 0u64;
    for a in 0..DIRS {
        let app = format!("app-{a:02}");
        let dir = root.join(&app);
        std::fs::create_dir_all(&dir)?;
        for i in 0..PER_DIR {
            let n = format!("{i:03}");
            let text = TEMPLATE.replace("@APP@", &app).replace("@N@", &n);
            bytes += text.len() as u64;
            std::fs::write(dir.join(format!("component-{n}.yaml.j2")), text)?;
        }
    }
    Ok((DIRS * PER_DIR, bytes))
}

// ---------------------------------------------------------------------------------------------------------
// The table

struct Row {
    step: String,
    median: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

fn row(step: &str, median: Duration, baseline: Duration) -> Row {
    Row {
        step: step.into(),
        median: fmt_d(median),
        baseline: format!("{} (native)", fmt_d(baseline)),
        ratio: fmt_ratio(median.as_secs_f64() / baseline.as_secs_f64()),
        target: "-".into(),
        met: "-".into(),
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.1e}")
    }
}

fn yes(ok: bool) -> String {
    if ok { "yes" } else { "NO" }.into()
}

fn print_table(rows: &[Row]) {
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .map(|r| [&*r.step, &*r.median, &*r.baseline, &*r.ratio, &*r.target, &*r.met])
        .collect();
    artgen_e2e::table::print(["step", "median", "baseline", "ratio", "target", "met"], &cells);
}

// ---------------------------------------------------------------------------------------------------------
// The measurements

struct Cold {
    compile: Duration,
    cwasm_bytes: u64,
}

/// `runs` cold compiles of `bytes`, each with a new host over an empty cache directory. Returns the
/// median `Component::new` time and the last cache directory (now warm).
fn cold_compile(name: &str, bytes: &[u8], runs: usize, scratch: &Path) -> Result<(Cold, PathBuf)> {
    let mut compile = Vec::new();
    let mut wall = Vec::new();
    let mut dir = PathBuf::new();
    for i in 0..runs {
        dir = scratch.join(format!("cache-{name}-{i}"));
        let host = Host::new(HostOptions {
            cache_dir: Some(dir.clone()),
            concurrency: 1,
        })?;
        let started = Instant::now();
        host.precompile(bytes)?;
        wall.push(started.elapsed());
        let s = host.stats();
        if (s.compiles, s.disk_hits, s.memory_hits) != (1, 0, 0) {
            return Err(format!("{name}: expected one compile and no cache hit, got {s:?}").into());
        }
        compile.push(s.compile_time);
        if i + 1 < runs {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let cwasm_bytes = cwasm_size(&dir)?;
    let c = median(compile.clone());
    println!(
        "cold compile {name} ({}): Component::new median {} (min {}), precompile() wall median {}; \
         .cwasm {} = {:.2}x the component [load {}]",
        kib(bytes.len()),
        fmt_d(c),
        fmt_d(min(&compile)),
        fmt_d(median(wall)),
        kib(cwasm_bytes as usize),
        cwasm_bytes as f64 / bytes.len() as f64,
        load_avg()
    );
    Ok((
        Cold {
            compile: c,
            cwasm_bytes,
        },
        dir,
    ))
}

fn cwasm_size(dir: &Path) -> Result<u64> {
    Ok(std::fs::metadata(cwasm_path(dir)?)?.len())
}

/// The one `<dir>/<compatibility key>/<digest>.cwasm` of a cache directory.
fn cwasm_path(dir: &Path) -> Result<PathBuf> {
    for sub in std::fs::read_dir(dir)? {
        for f in std::fs::read_dir(sub?.path())? {
            let p = f?.path();
            if p.extension().is_some_and(|x| x == "cwasm") {
                return Ok(p);
            }
        }
    }
    Err(format!("no .cwasm under {}", dir.display()).into())
}

struct Load {
    /// Median of `precompile()` minus the sha256 measured in the same iteration.
    load: Duration,
    /// Median sha256 of the component: the pin check.
    pin: Duration,
}

/// `runs` loads from the warm disk cache `dir`, each by a new host.
fn cached_load(name: &str, bytes: &[u8], dir: &Path, runs: usize) -> Result<Load> {
    let cwasm = cwasm_path(dir)?;
    let mut load = Vec::new();
    let mut whole = Vec::new();
    let mut sha = Vec::new();
    let mut read = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(digest_of(std::hint::black_box(bytes)));
        let pin = started.elapsed();
        sha.push(pin);
        let started = Instant::now();
        std::hint::black_box(std::fs::read(&cwasm)?);
        read.push(started.elapsed());
        let host = Host::new(HostOptions {
            cache_dir: Some(dir.to_owned()),
            concurrency: 1,
        })?;
        let started = Instant::now();
        host.precompile(bytes)?;
        let d = started.elapsed();
        whole.push(d);
        load.push(d.saturating_sub(pin));
        let s = host.stats();
        if (s.compiles, s.disk_hits) != (0, 1) {
            return Err(format!("{name}: expected a disk hit, got {s:?}").into());
        }
    }
    let l = Load {
        load: median(load.clone()),
        pin: median(sha),
    };
    println!(
        "cached load {name}: precompile() on a new host median {} (min {}) = sha256 of the component (the pin \
         check) ~{} + loading {} (min {}; the .cwasm is mapped, reading it would take ~{}) [load {}]",
        fmt_d(median(whole)),
        fmt_d(min(&load)),
        fmt_d(l.pin),
        fmt_d(l.load),
        fmt_d(min(&load)),
        fmt_d(median(read)),
        load_avg()
    );
    Ok(l)
}

/// `runs` warm runs over a one-file tree; returns the median `instantiate_time`.
fn instantiate(
    name: &str,
    host: &Host,
    t: &Transform,
    bytes: &[u8],
    file: (&str, &str),
    runs: usize,
    scratch: &Path,
) -> Result<Duration> {
    let work = scratch.join(format!("inst-{name}"));
    let mut inst = Vec::new();
    let mut whole = Vec::new();
    for i in 0..=runs {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        std::fs::write(work.join(file.0), file.1)?;
        let r = run_one(host, &work, t, bytes)?;
        // The first run may compile and call describe(): not counted.
        if i > 0 {
            inst.push(r.instantiate_time);
            whole.push(r.duration);
        }
    }
    std::fs::remove_dir_all(&work)?;
    let m = median(inst.clone());
    println!(
        "instantiate {name}: median {} (min {}); the whole one-file transform step median {} [load {}]",
        fmt_d(m),
        fmt_d(min(&inst)),
        fmt_d(median(whole)),
        load_avg()
    );
    Ok(m)
}

struct Versus {
    wasm: Duration,
    step: Duration,
    native: Duration,
}

/// values-templater over 1,000 templates, end to end, against [`native::run`], alternating.
fn versus(host: &Host, built: &Built, runs: usize, scratch: &Path) -> Result<Versus> {
    let bytes = built.bytes(TEMPLATER);
    let t = transform("render", TEMPLATER, built.digest(TEMPLATER), templater_config());
    let config = artgen_engine::transform::canonical_json(t.config.as_ref().unwrap_or(&Value::Null));
    let c = context();
    let ctx = native::Ctx {
        namespace: c.namespace.clone(),
        generator: c.generator.clone(),
        artifact: c.artifact.clone(),
        transform: t.name.clone(),
        labels: c.labels.clone().into_iter().collect(),
    };
    let src = scratch.join("templates");
    let (files, total) = write_templates(&src)?;
    println!(
        "\n1,000-file transform: {files} templates, {} in total, under {}",
        kib(total as usize),
        src.display()
    );

    let mut wasm = Vec::new();
    let mut step = Vec::new();
    let mut fuel = Vec::new();
    let mut native_t = Vec::new();
    for round in 0..=runs {
        let warmup = round == 0;
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_wasm in order {
            let work = scratch.join(if is_wasm { "work-wasm" } else { "work-native" });
            let _ = std::fs::remove_dir_all(&work);
            copy_tree(&src, &work)?;
            if is_wasm {
                let started = Instant::now();
                let r = run_one(host, &work, &t, &bytes)?;
                let d = started.elapsed();
                if !warmup {
                    wasm.push(d);
                    step.push(r.duration);
                    fuel.push(r.fuel_used);
                }
            } else {
                let started = Instant::now();
                let n = native::run(&work, &config, &ctx)?;
                let d = started.elapsed();
                if n != files {
                    return Err(format!("native pass rendered {n} of {files} templates").into());
                }
                if !warmup {
                    native_t.push(d);
                }
            }
        }
        if warmup {
            let (a, b) = (
                snapshot(&scratch.join("work-wasm"))?,
                snapshot(&scratch.join("work-native"))?,
            );
            if a.len() != files || a != b {
                return Err(format!(
                    "the plugin's and the native pass's trees differ ({} vs {} files)",
                    a.len(),
                    b.len()
                )
                .into());
            }
            let sample = a.values().next().map(|v| v.len()).unwrap_or(0);
            println!(
                "warm-up: both trees identical ({} files, e.g. {} B each); timing {runs} rounds",
                a.len(),
                sample
            );
        }
    }
    for d in ["work-wasm", "work-native"] {
        let _ = std::fs::remove_dir_all(scratch.join(d));
    }
    let v = Versus {
        wasm: median(wasm.clone()),
        step: median(step),
        native: median(native_t.clone()),
    };
    println!(
        "run_all median {} (min {}), of which the transform step (report.duration) {}; native median {} \
         (min {}); fuel used {} [load {}]",
        fmt_d(v.wasm),
        fmt_d(min(&wasm)),
        fmt_d(v.step),
        fmt_d(v.native),
        fmt_d(min(&native_t)),
        fuel.first().copied().unwrap_or(0),
        load_avg()
    );
    Ok(v)
}

fn run() -> Result<()> {
    let runs: usize = match std::env::var("ARTGEN_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("ARTGEN_BENCH_RUNS={v}: expected a positive number"))?,
        Err(_) => 7,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wasmtime {} (Cranelift, fuel + epochs), {cores} cores available ({}), load {}, ARTGEN_BENCH_RUNS={runs}",
        wasmtime_version(),
        cpu_model(),
        load_avg()
    );
    let started = Instant::now();
    let built = plugins::build()?;
    println!(
        "plugins built in {} ({})",
        fmt_d(started.elapsed()),
        built.target_dir().display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("artgen-bench-transform-")
        .tempdir()?;
    let scratch = scratch.path();
    let tpl = built.bytes(TEMPLATER);
    let small = built.bytes(SMALL);

    if std::env::var("ARTGEN_BENCH_ONLY").is_ok_and(|v| v == "transform") {
        let host = Host::new(HostOptions {
            cache_dir: None,
            concurrency: 0,
        })?;
        let v = versus(&host, built, runs, scratch)?;
        let ratio = v.wasm.as_secs_f64() / v.native.as_secs_f64();
        println!("\ntransform 1,000 files: {ratio:.2}x native (target <= 3x)");
        return Ok(());
    }

    println!();
    let (cold_tpl, warm_tpl) = cold_compile(TEMPLATER, &tpl, runs, scratch)?;
    let (cold_small, warm_small) = cold_compile(SMALL, &small, runs, scratch)?;
    let load_tpl = cached_load(TEMPLATER, &tpl, &warm_tpl, 3 * runs)?;
    let load_small = cached_load(SMALL, &small, &warm_small, 3 * runs)?;

    // One host with a warm memory cache for the runs (as the controller has).
    let host = Host::new(HostOptions {
        cache_dir: Some(warm_tpl.clone()),
        concurrency: 0,
    })?;
    let t_tpl = transform("render", TEMPLATER, built.digest(TEMPLATER), templater_config());
    let t_small = transform("json", SMALL, built.digest(SMALL), json!({}));
    let inst_tpl = instantiate(
        TEMPLATER,
        &host,
        &t_tpl,
        &tpl,
        (
            "a.yaml.j2",
            "replicas: {{ replicas }}\nimage: {{ image.name }}:{{ image.tag }}\n",
        ),
        5 * runs,
        scratch,
    )?;
    let inst_small = instantiate(
        SMALL,
        &host,
        &t_small,
        &small,
        ("a.yaml", "a: 1\nb: [x, y]\n"),
        5 * runs,
        scratch,
    )?;
    let v = versus(&host, built, runs, scratch)?;

    let n = v.native;
    let instantiate_target = Duration::from_micros(50);
    let load_target = Duration::from_millis(1);
    let mut rows = vec![
        row(
            &format!("cold compile, {TEMPLATER} ({})", kib(tpl.len())),
            cold_tpl.compile,
            n,
        ),
        row(
            &format!("cold compile, {SMALL} ({})", kib(small.len())),
            cold_small.compile,
            n,
        ),
        row(
            &format!("pin check (sha256 of the component), {TEMPLATER}"),
            load_tpl.pin,
            n,
        ),
        row(
            &format!(
                "cached load (.cwasm {}), {TEMPLATER}",
                kib(cold_tpl.cwasm_bytes as usize)
            ),
            load_tpl.load,
            n,
        ),
        row(
            &format!(
                "cached load (.cwasm {}), {SMALL}",
                kib(cold_small.cwasm_bytes as usize)
            ),
            load_small.load,
            n,
        ),
        row(&format!("instantiate, {TEMPLATER}"), inst_tpl, n),
        row(&format!("instantiate, {SMALL}"), inst_small, n),
        row(
            &format!("cached load + instantiate, {TEMPLATER}"),
            load_tpl.load + inst_tpl,
            n,
        ),
        row(
            &format!("pin check + cached load + instantiate, {TEMPLATER}"),
            load_tpl.pin + load_tpl.load + inst_tpl,
            n,
        ),
        row(
            &format!(
                "transform {} files, {TEMPLATER} (run_all, end to end)",
                DIRS * PER_DIR
            ),
            v.wasm,
            n,
        ),
        row("  of which the transform step (report.duration)", v.step, n),
    ];
    rows[5].target = format!("<= {}", fmt_d(instantiate_target));
    rows[5].met = yes(inst_tpl <= instantiate_target);
    rows[6].target = rows[5].target.clone();
    rows[6].met = yes(inst_small <= instantiate_target);
    rows[7].target = format!("< {}", fmt_d(load_target));
    rows[7].met = yes(load_tpl.load + inst_tpl < load_target);
    let ratio = v.wasm.as_secs_f64() / n.as_secs_f64();
    rows[9].target = "<= 3x native".into();
    rows[9].met = yes(ratio <= 3.0);

    println!(
        "\nResults (medians; baseline = the native 1,000-file pass of this run; ratio = median / baseline; \
         {cores} cores, load {}):\n",
        load_avg()
    );
    print_table(&rows);
    println!(
        "\ninstantiate = InstancePre::instantiate into the run's fresh store (store setup excluded). The pin \
         check (design §5 step 2) runs on every transform, cached or not; cached load (§5 step 4) is mapping \
         and deserialising the .cwasm, the import/export check and instantiate_pre."
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
