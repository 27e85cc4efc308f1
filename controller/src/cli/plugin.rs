//! `artgen plugin describe|run|digest|precompile` (design/plugins.md §12): tools for plugin authors, on the
//! same engine configuration, sandbox and limits as the controller.
//!
//! Exit codes (all four subcommands): 0 success; 1 the plugin failed (it is not a usable component, e.g.
//! `PluginIncompatible` for a core module, its config is invalid, the transform failed or trapped, or
//! `run --twice` saw different output trees); 2 usage or host error (unknown flag, missing or unreadable file
//! or directory, unparsable `--config`, a limit above the hard ceiling, a temporary directory that cannot be
//! created). With `--json` a `run` that ran the plugin prints its report on stdout even when it exits 1;
//! the error is always the last line on stderr.
//!
//! `run` never touches `--tree`: the tree is staged like a `copy: [{from: "@tree/", to: "@artifact/"}]`
//! operation (symlinks per spec §3.11) into a private temporary directory, and the plugin edits that copy.
//! Running a local file needs no allow-list: the file's own digest is allowed, up to the hard ceilings.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use artgen_engine::pack::{ArchiveWriter, PackOptions};
use artgen_engine::spec::{
    CopyOperation, OutputArtifact, PluginRef, PluginSource, Quantity, Transform, TransformLimits,
};
use artgen_engine::stage::{self, Node, Scratch, Tree, Warnings};
use artgen_engine::transform::admission::{format_count, parse_duration, parse_quantity};
use artgen_engine::transform::{
    Admission, Allowed, DEFAULT_LIMITS, Host, HostOptions, MAX_COMPONENT_BYTES, Mode, PluginDescription,
    SourceInfo, TransformContext, TransformError, TransformReport, TransformResult, digest_of,
};
use clap::Subcommand;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::Failure;

/// Lines of stdout and stderr shown by `run`.
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show a component's mode (typed or command), world, describe() info, imports, exports and config schema.
    Describe(DescribeArgs),
    /// Run a plugin over a copy of a directory with the controller's sandbox and limits.
    Run(Box<RunArgs>),
    /// Print the `sha256:…` digest to pin in a generator and allow in a policy.
    Digest(DigestArgs),
    /// Compile plugins into a compiled-code cache (`--plugin-cache-dir`), printing digest and time per file.
    Precompile(PrecompileArgs),
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The plugin component (`.wasm`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compiled-plugin cache to use (private, 0700); without it the plugin is compiled in memory.
    #[arg(long = "plugin-cache-dir", value_name = "DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DigestArgs {
    /// The plugin component (`.wasm`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PrecompileArgs {
    /// Plugin components (`.wasm`).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The compiled-plugin cache to warm (created 0700; the controller's or `artgen build`'s
    /// `--plugin-cache-dir`).
    #[arg(long = "plugin-cache-dir", value_name = "DIR", required = true)]
    pub plugin_cache_dir: PathBuf,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plugin component (`.wasm`).
    #[arg(long, value_name = "FILE")]
    pub plugin: PathBuf,
    /// The input tree (`/work`); it is copied, never modified.
    #[arg(long, value_name = "DIR")]
    pub tree: PathBuf,
    /// The transform's `config`, a YAML or JSON mapping (`.json` files are read as JSON). Default `{}`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `<alias>=<dir>`: mounted read-only at `/sources/<alias>` (as `readSources`) and listed in
    /// `context.sources` (kind `Local`, revision `local@<digest>`). Repeatable.
    #[arg(long = "source", value_name = "ALIAS=DIR")]
    pub sources: Vec<String>,
    /// Rerun on a second copy staged in reverse creation order; fail if the output trees differ.
    #[arg(long)]
    pub twice: bool,
    /// Print a JSON object (the report is printed even when the plugin fails).
    #[arg(long)]
    pub json: bool,
    /// Write the resulting tree into this directory (created if missing; must be empty).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// `limits.fuel` (default 20G, at most 200G).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity_arg)]
    pub fuel: Option<String>,
    /// `limits.timeout` (default 30s, at most 5m).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub timeout: Option<String>,
    /// `limits.memory`, all linear memories together (default 256Mi, at most 1Gi).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity_arg)]
    pub memory: Option<String>,
    /// `limits.outputBytes` (default 256Mi, at most 1Gi).
    #[arg(long = "output-bytes", value_name = "QUANTITY", value_parser = quantity_arg)]
    pub output_bytes: Option<String>,
    /// `limits.outputFiles` (default 20000, at most 100000).
    #[arg(long = "output-files", value_name = "N")]
    pub output_files: Option<u64>,
    /// `context.transform`, the step name (also part of the randomness seed).
    #[arg(long = "transform", value_name = "NAME", default_value = "local")]
    pub transform: String,
    /// `context.artifact`.
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub artifact: String,
    /// `context.generator`.
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub generator: String,
    /// `context.namespace`.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub namespace: String,
    /// `<key>=<value>`: a `context.labels` entry (as pathPattern captures). Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Compiled-plugin cache to use (private, 0700); without it the plugin is compiled in memory.
    #[arg(long = "plugin-cache-dir", value_name = "DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
}

fn quantity_arg(s: &str) -> Result<String, String> {
    parse_quantity(s).map(|_| s.to_owned())
}

fn duration_arg(s: &str) -> Result<String, String> {
    parse_duration(s).map(|_| s.to_owned())
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        PluginCommand::Describe(a) => describe(a),
        PluginCommand::Run(a) => run_plugin(*a),
        PluginCommand::Digest(a) => digest(a),
        PluginCommand::Precompile(a) => precompile(a),
    }
}

// ---------------------------------------------------------------------------------------------------
// Shared helpers

/// Reads a plugin file (at most 50 MiB + 1 byte, so the engine can refuse a larger one).
fn read_wasm(path: &Path) -> Result<Vec<u8>, Failure> {
    let shown = path.display();
    let md = std::fs::metadata(path).map_err(|e| Failure::usage(format!("cannot read '{shown}': {e}")))?;
    if !md.is_file() {
        return Err(Failure::usage(format!("'{shown}' is not a regular file")));
    }
    let mut buf = Vec::with_capacity(md.len().min(MAX_COMPONENT_BYTES + 1) as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_COMPONENT_BYTES + 1).read_to_end(&mut buf))
        .map_err(|e| Failure::usage(format!("cannot read '{shown}': {e}")))?;
    Ok(buf)
}

/// The engine refuses a cache directory others can access (it would silently not cache): say so up front.
fn check_cache_dir(dir: &Path) -> Result<(), Failure> {
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Ok(md) if !md.is_dir() => Err(Failure::usage(format!(
            "--plugin-cache-dir: '{shown}' is not a directory"
        ))),
        Ok(md) if md.permissions().mode() & 0o077 != 0 => Err(Failure::usage(format!(
            "--plugin-cache-dir: '{shown}' is accessible to other users (mode {:o}); it must be private \
             (chmod 700)",
            md.permissions().mode() & 0o777
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::usage(format!("--plugin-cache-dir: '{shown}': {e}"))),
    }
}

/// One host for this command, with the controller's engine configuration.
fn host(cache_dir: Option<&Path>) -> Result<Host, Failure> {
    if let Some(dir) = cache_dir {
        check_cache_dir(dir)?;
    }
    Host::new(HostOptions {
        cache_dir: cache_dir.map(Path::to_owned),
        concurrency: 1,
    })
    .map_err(|e| Failure::usage(format!("starting the plugin host: {}", artgen_engine::chain(&e))))
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn json_line<T: Serialize>(v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string(v).map_err(|e| Failure::usage(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// `wasi:cli/run@0.2.3` → `0.2.3`.
fn export_version<'a>(exports: &'a [String], prefix: &str) -> Option<&'a str> {
    exports
        .iter()
        .find_map(|e| e.strip_prefix(prefix)?.strip_prefix('@'))
}

fn world_of(d: &PluginDescription) -> String {
    match d.mode {
        Mode::Typed => match export_version(&d.exports, "artgen:transform/transformer") {
            Some(v) => format!("artgen:transform/plugin@{v}"),
            None => "artgen:transform/plugin".into(),
        },
        Mode::Command => match export_version(&d.exports, "wasi:cli/run") {
            Some(v) => format!("wasi:cli/command@{v}"),
            None => "wasi:cli/command".into(),
        },
    }
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Typed => "typed",
        Mode::Command => "command",
    }
}

// ---------------------------------------------------------------------------------------------------
// digest

fn digest(args: DigestArgs) -> Result<(), Failure> {
    let shown = args.file.display();
    let md =
        std::fs::metadata(&args.file).map_err(|e| Failure::usage(format!("cannot read '{shown}': {e}")))?;
    if !md.is_file() {
        return Err(Failure::usage(format!("'{shown}' is not a regular file")));
    }
    let bytes =
        std::fs::read(&args.file).map_err(|e| Failure::usage(format!("cannot read '{shown}': {e}")))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        eprintln!("warning: '{shown}' is larger than 50 MiB; the engine refuses such plugins");
    }
    println!("{}", digest_of(&bytes));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// describe

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeJson<'a> {
    file: String,
    digest: &'a str,
    size: u64,
    mode: &'static str,
    world: String,
    name: Option<&'a str>,
    version: Option<&'a str>,
    description: Option<&'a str>,
    /// The schema as JSON when it parses, else the string.
    config_schema: Option<serde_json::Value>,
    imports: &'a [String],
    exports: &'a [String],
    /// Time to compile (or load from the cache) and check the component, and run `describe()`.
    load_millis: u64,
    /// Whether the component was compiled (false: loaded from `--plugin-cache-dir`).
    compiled: bool,
}

fn describe(args: DescribeArgs) -> Result<(), Failure> {
    let bytes = read_wasm(&args.file)?;
    let host = host(args.plugin_cache_dir.as_deref())?;
    let started = Instant::now();
    let d = host
        .inspect(&bytes)
        .map_err(|e| Failure::failed(format!("{}: {}: {}", args.file.display(), e.reason, e.message)))?;
    let elapsed = started.elapsed();
    let compiled = host.stats().compiles > 0;
    let info = d.info.as_ref();
    let schema = info.and_then(|i| i.config_schema.as_deref());
    if args.json {
        return json_line(&DescribeJson {
            file: args.file.display().to_string(),
            digest: &d.digest,
            size: bytes.len() as u64,
            mode: mode_str(d.mode),
            world: world_of(&d),
            name: info.map(|i| i.name.as_str()),
            version: info.map(|i| i.version.as_str()),
            description: info.map(|i| i.description.as_str()),
            config_schema: schema
                .map(|s| serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned()))),
            imports: &d.imports,
            exports: &d.exports,
            load_millis: millis(elapsed),
            compiled,
        });
    }
    println!("file         {}", args.file.display());
    println!("digest       {}", d.digest);
    println!("size         {} bytes", bytes.len());
    println!("mode         {} (world {})", mode_str(d.mode), world_of(&d));
    match info {
        Some(i) => {
            println!("name         {}", i.name);
            println!("version      {}", i.version);
            println!("description  {}", i.description);
        }
        None => println!("describe()   none (command mode: no describe, no config schema check)"),
    }
    let list = |label: &str, items: &[String]| {
        if items.is_empty() {
            println!("{label:<12} none");
        }
        for (n, item) in items.iter().enumerate() {
            println!("{:<12} {item}", if n == 0 { label } else { "" });
        }
    };
    list("imports", &d.imports);
    list("exports", &d.exports);
    match schema {
        Some(s) => {
            let pretty = serde_json::from_str::<serde_json::Value>(s)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| s.to_owned());
            println!("config schema:");
            for line in pretty.lines() {
                println!("  {line}");
            }
        }
        None if d.mode == Mode::Typed => println!("config schema: none"),
        None => {}
    }
    println!(
        "loaded in    {} ms ({})",
        millis(elapsed),
        if compiled { "compiled" } else { "from the cache" }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// precompile

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PrecompileJson {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    millis: u64,
    /// `compiled`, `cached` (already in the cache) or `failed`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Whether `<dir>/<compatibility key>/<hex>.cwasm` exists for some key.
fn cwasm_exists(dir: &Path, digest: &str) -> bool {
    let name = format!("{}.cwasm", digest.trim_start_matches("sha256:"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join(&name).is_file())
}

fn precompile(args: PrecompileArgs) -> Result<(), Failure> {
    // Every file must be readable before anything is compiled.
    let files = args
        .files
        .iter()
        .map(|f| Ok((f, read_wasm(f)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    let host = host(Some(&args.plugin_cache_dir))?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (file, bytes) in &files {
        let before = host.stats();
        let started = Instant::now();
        let r = host.precompile(bytes);
        let elapsed = started.elapsed();
        let after = host.stats();
        let row = match r {
            Ok(d) if !cwasm_exists(&args.plugin_cache_dir, &d) => {
                let message = format!(
                    "compiled, but no .cwasm was written under '{}' (is it writable and private?)",
                    args.plugin_cache_dir.display()
                );
                failed.push(format!("{}: {message}", file.display()));
                PrecompileJson {
                    file: file.display().to_string(),
                    digest: Some(d),
                    millis: millis(elapsed),
                    result: "failed",
                    reason: None,
                    message: Some(message),
                }
            }
            Ok(d) => PrecompileJson {
                file: file.display().to_string(),
                digest: Some(d),
                millis: millis(elapsed),
                result: if after.compiles > before.compiles {
                    "compiled"
                } else {
                    "cached"
                },
                reason: None,
                message: None,
            },
            Err(e) => {
                failed.push(format!("{}: {}: {}", file.display(), e.reason, e.message));
                PrecompileJson {
                    file: file.display().to_string(),
                    digest: Some(digest_of(bytes)),
                    millis: millis(elapsed),
                    result: "failed",
                    reason: Some(e.reason.to_string()),
                    message: Some(e.message),
                }
            }
        };
        if !args.json {
            println!(
                "{}\t{} ms\t{}\t{}",
                row.digest.as_deref().unwrap_or("-"),
                row.millis,
                row.result,
                row.file
            );
        }
        rows.push(row);
    }
    if args.json {
        json_line(&rows)?;
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(Failure::failed(failed.remove(0))),
        n => {
            for f in &failed[..n - 1] {
                eprintln!("error: {f}");
            }
            Err(Failure::failed(failed.remove(n - 1)))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// run: staging, digests and diffs

/// Stages a local directory exactly like `copy: [{from: "@<alias>/", to: "@artifact/"}]` (symlinks per spec
/// §3.11, warnings collected).
fn stage_dir(
    alias: &str,
    dir: &Path,
    scratch: &Scratch,
    warnings: &mut Warnings,
) -> artgen_engine::Result<Tree> {
    let source = stage::open_source(alias, dir)
        .map_err(|e| artgen_engine::Error::io(format!("opening '{}'", dir.display()), e))?;
    let sources = BTreeMap::from([(alias.to_owned(), source)]);
    let limits = artgen_engine::fetch::Limits::for_mode(artgen_engine::fetch::ExtractMode::Extract);
    let env = stage::Env {
        sources: &sources,
        scratch,
        extract_limits: &limits,
    };
    let whole = OutputArtifact {
        name: alias.to_owned(),
        copy: vec![CopyOperation {
            from: format!("@{alias}/"),
            to: "@artifact/".into(),
            optional: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    stage::stage(&whole, &env, warnings)
}

/// The archive-format-v1 digest of a tree: the artifact digest it would pack to (spec §5).
fn tree_digest(tree: &Tree) -> io::Result<String> {
    let mut w = ArchiveWriter::new(io::sink(), &PackOptions::default());
    tree.pack_into(&mut w)?;
    Ok(w.finish()?.1.digest)
}

#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { executable: bool, sha: [u8; 32] },
}

/// Path → entry; directories end with `/`.
fn entries(tree: &Tree) -> io::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    tree.visit(|path, node| -> io::Result<()> {
        match node {
            Node::Dir(_) => {
                out.insert(format!("{path}/"), Entry::Dir);
            }
            Node::File(f) => {
                let mut h = Sha256::new();
                let mut r = f.content.open()?;
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = r
                        .read(&mut buf)
                        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                out.insert(
                    path.to_owned(),
                    Entry::File {
                        executable: f.executable,
                        sha: h.finalize().into(),
                    },
                );
            }
        }
        Ok(())
    })?;
    Ok(out)
}

#[derive(Default, Serialize)]
struct Diff {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Diff {
    fn of(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>) -> Diff {
        let mut d = Diff::default();
        for (p, e) in after {
            match before.get(p) {
                None => d.added.push(p.clone()),
                Some(b) if b != e => d.changed.push(p.clone()),
                Some(_) => {}
            }
        }
        d.removed = before
            .keys()
            .filter(|p| !after.contains_key(*p))
            .cloned()
            .collect();
        d
    }

    fn paths(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.removed).chain(&self.changed)
    }
}

/// Writes `tree` into the empty `dir` in reverse walk order (last file first, parents created on demand):
/// the reverse-staged copy of `--twice`.
fn write_reversed(tree: &Tree, dir: &cap_std::fs::Dir) -> io::Result<()> {
    use cap_std::fs::{OpenOptions, OpenOptionsExt as _};
    let mut nodes = Vec::new();
    tree.visit(|path, node| {
        nodes.push((path.to_owned(), node));
        Ok::<_, ()>(())
    })
    .ok();
    for (path, node) in nodes.iter().rev() {
        let annotate = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
        match node {
            Node::Dir(_) => dir.create_dir_all(path).map_err(annotate)?,
            Node::File(f) => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    dir.create_dir_all(parent).map_err(annotate)?;
                }
                let mut opts = OpenOptions::new();
                opts.write(true)
                    .create_new(true)
                    .mode(if f.executable { 0o755 } else { 0o644 });
                let mut out = dir.open_with(path, &opts).map_err(annotate)?;
                io::copy(&mut f.content.open().map_err(annotate)?, &mut out).map_err(annotate)?;
            }
        }
    }
    Ok(())
}

/// The last [`LOG_TAIL_LINES`] lines of a captured log, control characters removed.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| artgen_engine::transform::report::sanitize(l, 1024))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits repeated `<key>=<value>` flags; a duplicate key is a usage error.
fn pairs(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for v in values {
        let (k, value) = v
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::usage(format!("--{flag} '{v}': expected <key>=<value>")))?;
        if out.insert(k.to_owned(), value.to_owned()).is_some() {
            return Err(Failure::usage(format!("--{flag}: '{k}' given twice")));
        }
    }
    Ok(out)
}

fn load_config(path: &Path) -> Result<serde_json::Value, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--config: cannot read '{shown}': {e}")))?;
    let value: serde_json::Value = if path.extension().is_some_and(|x| x == "json") {
        serde_json::from_str(&text).map_err(|e| Failure::usage(format!("--config '{shown}': {e}")))?
    } else {
        let yaml: yaml_serde::Value =
            yaml_serde::from_str(&text).map_err(|e| Failure::usage(format!("--config '{shown}': {e}")))?;
        serde_json::to_value(yaml)
            .map_err(|e| Failure::usage(format!("--config '{shown}': not representable as JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(Failure::usage(format!(
            "--config '{shown}': the config must be a mapping (an object)"
        )));
    }
    Ok(value)
}

fn existing_dir(flag: &str, path: &Path) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Failure::usage(format!(
            "--{flag}: '{}' is not a directory",
            path.display()
        ))),
        Err(e) => Err(Failure::usage(format!(
            "--{flag}: cannot use '{}': {e}",
            path.display()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------------
// run

/// Everything one run needs besides the work directory.
struct Job<'a> {
    host: &'a Host,
    transform: &'a Transform,
    bytes: &'a [u8],
    ctx: &'a TransformContext,
    sources: &'a BTreeMap<String, PathBuf>,
    admission: &'a Admission,
    scratch: &'a Scratch,
}

/// What one run left.
struct Ran {
    report: TransformReport,
    /// `Some` when the plugin failed.
    error: Option<Box<TransformError>>,
    /// Output tree (success only).
    output: Option<(Tree, String, BTreeMap<String, Entry>)>,
}

fn run_once(job: &Job<'_>, work: &Path, warnings: &mut Warnings) -> Result<Ran, Failure> {
    let result = job.host.run_all(
        work,
        std::slice::from_ref(job.transform),
        |_| Ok(job.bytes.to_vec()),
        job.ctx,
        job.sources,
        job.admission,
    );
    match result {
        Ok(mut reports) => {
            let report = reports
                .pop()
                .ok_or_else(|| Failure::usage("the engine returned no report"))?;
            let host_err =
                |e: &dyn std::fmt::Display| Failure::usage(format!("reading the output tree: {e}"));
            let tree = stage_dir("output", work, job.scratch, warnings)
                .map_err(|e| host_err(&artgen_engine::chain(&e)))?;
            let digest = tree_digest(&tree).map_err(|e| host_err(&e))?;
            let entries = entries(&tree).map_err(|e| host_err(&e))?;
            Ok(Ran {
                report,
                error: None,
                output: Some((tree, digest, entries)),
            })
        }
        Err(artgen_engine::Error::Transform(e)) => {
            let report = e
                .reports
                .last()
                .cloned()
                .ok_or_else(|| Failure::usage(format!("{e}")))?;
            Ok(Ran {
                report,
                error: Some(e),
                output: None,
            })
        }
        Err(e) => Err(Failure::usage(artgen_engine::chain(&e))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunJson<'a> {
    file: String,
    #[serde(flatten)]
    report: &'a TransformReport,
    /// Of `durationMillis`: compiling the component (0 when it came from the cache).
    compile_millis: u64,
    input_digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<&'a Diff>,
    stdout_tail: String,
    stderr_tail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    twice: Option<TwiceJson<'a>>,
    warnings: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwiceJson<'a> {
    identical: bool,
    result: TransformResult,
    reason: &'a str,
    message: &'a str,
    fuel_used: u64,
    peak_memory_bytes: u64,
    duration_millis: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_digest: Option<&'a str>,
    /// Differences between the first and the second output tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    differences: Option<&'a Diff>,
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

fn run_plugin(args: RunArgs) -> Result<(), Failure> {
    // 1. Inputs, all checked before anything runs.
    let bytes = read_wasm(&args.plugin)?;
    existing_dir("tree", &args.tree)?;
    let config = args.config.as_deref().map(load_config).transpose()?;
    let source_dirs = pairs("source", &args.sources)?;
    for (alias, dir) in &source_dirs {
        if !artgen_engine::validate::is_alias(alias) || alias.len() > 63 {
            return Err(Failure::usage(format!(
                "--source: alias '{alias}' must match {} and be at most 63 characters",
                artgen_engine::validate::ALIAS_PATTERN
            )));
        }
        existing_dir(&format!("source {alias}"), Path::new(dir))?;
    }
    let labels = pairs("label", &args.labels)?;
    if let Some(out) = &args.output
        && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some())
    {
        return Err(Failure::usage(format!(
            "--output: '{}' is not empty",
            out.display()
        )));
    }
    let host = host(args.plugin_cache_dir.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("artgen-plugin-run-")
        .tempdir()
        .map_err(|e| Failure::usage(format!("creating a temporary directory: {e}")))?;
    let scratch = Scratch::new(&tmp.path().join("scratch"))
        .map_err(|e| Failure::usage(format!("creating a temporary directory: {e}")))?;
    let mut warnings = Warnings::default();
    let host_err = |what: &str, e: &dyn std::fmt::Display| Failure::usage(format!("{what}: {e}"));

    // 2. The input tree, staged once; the sources' digests for `context.sources`.
    let input = stage_dir("tree", &args.tree, &scratch, &mut warnings)
        .map_err(|e| host_err("--tree", &artgen_engine::chain(&e)))?;
    let input_digest = tree_digest(&input).map_err(|e| host_err("--tree", &e))?;
    let input_entries = entries(&input).map_err(|e| host_err("--tree", &e))?;
    let mut infos = Vec::new();
    for (alias, dir) in &source_dirs {
        let t = stage_dir(alias, Path::new(dir), &scratch, &mut warnings)
            .map_err(|e| host_err(&format!("--source {alias}"), &artgen_engine::chain(&e)))?;
        let digest = tree_digest(&t).map_err(|e| host_err(&format!("--source {alias}"), &e))?;
        infos.push(SourceInfo {
            alias: alias.clone(),
            kind: "Local".into(),
            revision: format!("local@{digest}"),
            digest,
        });
    }

    // 3. The transform: the file's own digest is allowed, up to the hard ceilings (no allow-list locally).
    let digest = digest_of(&bytes);
    let q = |v: &Option<String>| v.clone().map(Quantity::Str);
    let limits = TransformLimits {
        fuel: q(&args.fuel),
        timeout: args.timeout.clone(),
        memory: q(&args.memory),
        output_bytes: q(&args.output_bytes),
        output_files: args.output_files,
    };
    let transform = Transform {
        name: args.transform.clone(),
        plugin: PluginRef {
            source: PluginSource {
                alias: "local".into(),
                path: args.plugin.display().to_string(),
            },
            digest: digest.clone(),
        },
        config,
        read_sources: source_dirs.keys().cloned().collect(),
        limits: Some(limits),
        failure_policy: None,
    };
    let admission = Admission {
        disabled: false,
        allow_any: false,
        allowed: vec![Allowed::digest(digest.clone())],
    };
    let ctx = TransformContext {
        namespace: args.namespace.clone(),
        generator: args.generator.clone(),
        artifact: args.artifact.clone(),
        labels,
        sources: infos,
    };
    let sources: BTreeMap<String, PathBuf> = source_dirs
        .iter()
        .map(|(a, d)| (a.clone(), PathBuf::from(d)))
        .collect();
    let job = Job {
        host: &host,
        transform: &transform,
        bytes: &bytes,
        ctx: &ctx,
        sources: &sources,
        admission: &admission,
        scratch: &scratch,
    };

    // 4. First run, on a copy in walk order.
    let work = tmp.path().join("work");
    std::fs::create_dir(&work)
        .and_then(|_| cap_std::fs::Dir::open_ambient_dir(&work, cap_std::ambient_authority()))
        .and_then(|d| input.write_into(&d))
        .map_err(|e| host_err("copying --tree", &e))?;
    let compile_before = host.stats().compile_time;
    let first = run_once(&job, &work, &mut warnings)?;
    let compile = host.stats().compile_time.saturating_sub(compile_before);
    let diff = first
        .output
        .as_ref()
        .map(|(_, _, after)| Diff::of(&input_entries, after));

    // 5. `--twice`: a differently named directory, staged in reverse creation order.
    let second = match (&first.output, args.twice) {
        (Some(_), true) => {
            let tmp2 = tempfile::Builder::new()
                .prefix("artgen-plugin-rerun-reversed-")
                .tempdir()
                .map_err(|e| Failure::usage(format!("creating a temporary directory: {e}")))?;
            let work2 = tmp2.path().join("tree");
            std::fs::create_dir(&work2)
                .and_then(|_| cap_std::fs::Dir::open_ambient_dir(&work2, cap_std::ambient_authority()))
                .and_then(|d| write_reversed(&input, &d))
                .map_err(|e| host_err("copying --tree", &e))?;
            let ran = run_once(&job, &work2, &mut warnings)?;
            let differences = match (&first.output, &ran.output) {
                (Some((_, _, a)), Some((_, _, b))) => Some(Diff::of(a, b)),
                _ => None,
            };
            Some((ran, differences, tmp2))
        }
        _ => None,
    };

    // 6. `--output`.
    if let (Some(out), Some((tree, _, _))) = (&args.output, &first.output) {
        std::fs::create_dir_all(out)
            .and_then(|_| cap_std::fs::Dir::open_ambient_dir(out, cap_std::ambient_authority()))
            .and_then(|d| tree.write_into(&d))
            .map_err(|e| host_err(&format!("writing --output '{}'", out.display()), &e))?;
    }

    // 7. Report.
    let warnings = warnings.into_vec();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let r = &first.report;
    let output_digest = first.output.as_ref().map(|(_, d, _)| d.as_str());
    // The verdict is the digests'; the path diff only explains a difference.
    let identical = second.as_ref().map(|(ran, _, _)| {
        ran.output.as_ref().map(|(_, d, _)| d.as_str()).is_some()
            && ran.output.as_ref().map(|(_, d, _)| d.as_str()) == output_digest
    });
    if args.json {
        let twice = second.as_ref().map(|(ran, differences, _)| TwiceJson {
            identical: identical == Some(true),
            result: ran.report.result,
            reason: ran.report.reason.map(|r| r.as_str()).unwrap_or(""),
            message: &ran.report.message,
            fuel_used: ran.report.fuel_used,
            peak_memory_bytes: ran.report.peak_memory_bytes,
            duration_millis: millis(ran.report.duration),
            output_digest: ran.output.as_ref().map(|(_, d, _)| d.as_str()),
            differences: differences.as_ref(),
        });
        json_line(&RunJson {
            file: args.plugin.display().to_string(),
            report: r,
            compile_millis: millis(compile),
            input_digest: &input_digest,
            output_digest,
            diff: diff.as_ref(),
            stdout_tail: tail(&r.stdout),
            stderr_tail: tail(&r.stderr),
            twice,
            warnings: &warnings,
        })?;
    } else {
        let who = match &r.plugin {
            Some(p) => format!("{} {}", p.name, p.version),
            None => args.plugin.display().to_string(),
        };
        let mode = r.mode.map(mode_str).unwrap_or("?");
        println!("plugin       {who} ({mode}) {}", r.plugin_digest);
        let fuel_limit = args
            .fuel
            .as_deref()
            .and_then(|f| parse_quantity(f).ok())
            .unwrap_or(DEFAULT_LIMITS.fuel);
        println!(
            "result       {:?}{} in {} ms (compile {} ms)",
            r.result,
            r.reason.map(|x| format!(" ({x})")).unwrap_or_default(),
            millis(r.duration),
            millis(compile)
        );
        println!("fuel         {} of {}", r.fuel_used, format_count(fuel_limit));
        println!("peak memory  {}", mib(r.peak_memory_bytes));
        if r.diagnostics.is_empty() {
            println!("diagnostics  none");
        } else {
            println!("diagnostics:");
            for d in &r.diagnostics {
                println!("  {}", d.render());
            }
        }
        if let Some(d) = &diff {
            println!(
                "changes      {} added, {} removed, {} changed",
                d.added.len(),
                d.removed.len(),
                d.changed.len()
            );
            for p in &d.added {
                println!("  + {p}");
            }
            for p in &d.removed {
                println!("  - {p}");
            }
            for p in &d.changed {
                println!("  ~ {p}");
            }
        }
        println!("input        {input_digest}");
        if let Some(o) = output_digest {
            println!("output       {o}");
        }
        if let Some((ran, _, _)) = &second {
            let d = ran.output.as_ref().map(|(_, d, _)| d.as_str()).unwrap_or("-");
            println!(
                "--twice      {} (reverse-staged rerun: {d}, fuel {}, {} ms)",
                if identical == Some(true) {
                    "identical"
                } else {
                    "DIFFERENT"
                },
                ran.report.fuel_used,
                millis(ran.report.duration)
            );
        }
        for (name, log) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            let t = tail(log);
            if !t.is_empty() {
                println!("{name} (last {LOG_TAIL_LINES} lines):");
                for line in t.lines() {
                    println!("  {line}");
                }
            }
        }
    }

    // 8. Exit status.
    if let Some(e) = &first.error {
        use artgen_engine::transform::Reason;
        let message = e.to_string();
        // Only our own flags can be refused by admission here (limits above the ceiling).
        return Err(match e.reason {
            Reason::PluginNotAllowed | Reason::PluginsDisabled | Reason::PluginNotFound => {
                Failure::usage(message)
            }
            _ => Failure::failed(format!("{}: {message}", e.reason)),
        });
    }
    if let Some((ran, differences, _)) = &second {
        if let Some(e) = &ran.error {
            return Err(Failure::failed(format!(
                "--twice: the first run succeeded but the reverse-staged rerun failed: {}: {e}",
                e.reason
            )));
        }
        if identical != Some(true) {
            let paths: Vec<&str> = differences
                .iter()
                .flat_map(Diff::paths)
                .map(String::as_str)
                .take(10)
                .collect();
            return Err(Failure::failed(format!(
                "--twice: the output trees differ ({} vs {}): {}",
                output_digest.unwrap_or("-"),
                ran.output.as_ref().map(|(_, d, _)| d.as_str()).unwrap_or("-"),
                paths.join(", ")
            )));
        }
    }
    Ok(())
}
