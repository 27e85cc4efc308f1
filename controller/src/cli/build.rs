//! `artgen build` (spec §12.1): runs a generator against local directories, tarballs or URLs with the
//! same engine as the controller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use artgen_engine::fetch::HttpOptions;
use artgen_engine::fetch::{is_tarball_name, split_pin};
use artgen_engine::{BuildInput, BuildOptions, SourceInput};
use serde::Serialize;

use super::{Failure, parse_duration, parse_quantity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ArtifactGenerator manifest.
    #[arg(short = 'f', long = "file", value_name = "GENERATOR.YAML")]
    pub file: PathBuf,
    /// `<alias>=<dir | file.tar.gz | file.tgz | http(s)://url[#sha256:<hex>]>`, one per source alias.
    #[arg(long = "source", value_name = "ALIAS=PATH")]
    pub sources: Vec<String>,
    /// `<alias>=<revision>`: the source's `status.artifact.revision` (default `local@sha256:…`).
    #[arg(long = "revision", value_name = "ALIAS=REV")]
    pub revisions: Vec<String>,
    /// `<alias>=<revision>`: the source's origin revision metadata (default: its revision).
    #[arg(long = "origin-revision", value_name = "ALIAS=REV")]
    pub origin_revisions: Vec<String>,
    /// Directory that receives `<artifact>.tar.gz` files; created if missing.
    #[arg(short = 'o', long = "output", visible_alias = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Print a JSON array describing the artifacts.
    #[arg(long)]
    pub json: bool,
    /// Max decompressed bytes of one source tarball.
    #[arg(long, default_value = "1Gi", value_parser = parse_quantity)]
    pub source_max_size: u64,
    /// Max decompressed bytes of one Extract tarball.
    #[arg(long, default_value = "100Mi", value_parser = parse_quantity)]
    pub extract_max_size: u64,
    /// Max entries of any tarball.
    #[arg(long, default_value_t = 100_000)]
    pub tarball_max_entries: u64,
    /// Download retries for URL sources (5xx and connection errors).
    #[arg(long, default_value_t = 9)]
    pub http_retry: u32,
    /// First retry delay; doubles up to 6× this value.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_retry_delay: Duration,
    /// Timeout of one download attempt.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub http_timeout: Duration,
    #[command(flatten)]
    pub plugins: super::PluginArgs,
    /// Dev mode: no allow-list; a digest mismatch is a warning that prints the actual digest.
    #[arg(long)]
    pub allow_any_plugin: bool,
    /// `<transform>=<path>`: run this local .wasm for the transform of that name instead of resolving
    /// its plugin source.
    #[arg(long = "plugin-file", value_name = "TRANSFORM=PATH")]
    pub plugin_files: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonArtifact<'a> {
    name: &'a str,
    revision: &'a str,
    digest: &'a str,
    size: u64,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin_revision: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
}

/// Splits repeated `<alias>=<value>` flags; a duplicate alias is a usage error.
fn pairs(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for v in values {
        let (alias, value) = v
            .split_once('=')
            .filter(|(a, _)| !a.is_empty())
            .ok_or_else(|| Failure::usage(format!("--{flag} '{v}': expected <alias>=<value>")))?;
        if out.insert(alias.to_owned(), value.to_owned()).is_some() {
            return Err(Failure::usage(format!("--{flag}: alias '{alias}' given twice")));
        }
    }
    Ok(out)
}

fn source_input(alias: &str, value: &str) -> Result<SourceInput, Failure> {
    if value.starts_with("http://") || value.starts_with("https://") {
        split_pin(value).map_err(|e| Failure::usage(format!("--source {alias}: {e}")))?;
        return Ok(SourceInput::Url(value.to_owned()));
    }
    let path = Path::new(value);
    let md = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("--source {alias}: cannot use '{value}': {e}")))?;
    if md.is_dir() {
        Ok(SourceInput::Dir(path.to_owned()))
    } else if md.is_file() && is_tarball_name(value) {
        Ok(SourceInput::Tarball(path.to_owned()))
    } else {
        Err(Failure::usage(format!(
            "--source {alias}: '{value}' is neither a directory nor a .tar.gz/.tgz file"
        )))
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let sources = pairs("source", &args.sources)?;
    let revisions = pairs("revision", &args.revisions)?;
    let origin_revisions = pairs("origin-revision", &args.origin_revisions)?;
    let manifest = super::validate::load(&args.file)?;
    let ns = manifest.metadata.namespace.as_deref().unwrap_or("default");
    artgen_engine::validate::validate(&manifest.spec, ns, &Default::default())
        .map_err(|e| Failure::failed(artgen_engine::chain(&e)))?;

    let declared: Vec<&str> = manifest.spec.sources.iter().map(|s| s.alias.as_str()).collect();
    for (flag, map) in [
        ("source", &sources),
        ("revision", &revisions),
        ("origin-revision", &origin_revisions),
    ] {
        if let Some(alias) = map.keys().find(|a| !declared.contains(&a.as_str())) {
            return Err(Failure::usage(format!(
                "--{flag}: alias '{alias}' is not declared in spec.sources"
            )));
        }
    }
    if let Some(alias) = artgen_engine::referenced_aliases(&manifest.spec)
        .iter()
        .find(|a| !sources.contains_key(*a))
    {
        return Err(Failure::usage(format!(
            "source alias '{alias}' is used by the spec but no --source {alias}=… was given"
        )));
    }
    let inputs = sources
        .iter()
        .map(|(alias, value)| Ok((alias.clone(), source_input(alias, value)?)))
        .collect::<Result<BTreeMap<_, _>, Failure>>()?;

    let mut options = BuildOptions::default();
    options.source_limits.max_bytes = args.source_max_size;
    options.source_limits.max_entries = args.tarball_max_entries;
    options.extract_limits.max_bytes = args.extract_max_size;
    options.extract_limits.max_entries = args.tarball_max_entries;
    options.http = HttpOptions {
        retries: args.http_retry,
        min_backoff: args.http_retry_delay,
        max_backoff: args.http_retry_delay * 6,
        timeout: args.http_timeout,
    };
    if manifest.spec.artifacts.iter().any(|a| !a.transforms.is_empty()) {
        options.transforms = Some(artgen_engine::Transforms {
            host: std::sync::Arc::new(args.plugins.host()?),
            admission: args.plugins.admission(args.allow_any_plugin)?,
            plugin_files: pairs("plugin-file", &args.plugin_files)?
                .into_iter()
                .map(|(k, v)| (k, PathBuf::from(v)))
                .collect(),
            source_kinds: BTreeMap::new(),
        });
    }
    let input = BuildInput {
        manifest,
        sources: inputs,
        revisions,
        origin_revisions,
        options,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start runtime: {e}")))?;
    let output = runtime.block_on(artgen_engine::build(input));
    let output = output.map_err(|e| Failure::failed(artgen_engine::chain(&e)))?;
    for w in &output.warnings {
        eprintln!("warning: {w}");
    }
    output
        .write_to(&args.out)
        .map_err(|e| Failure::failed(format!("writing to {}: {e}", args.out.display())))?;

    let items: Vec<JsonArtifact<'_>> = output
        .artifacts
        .iter()
        .map(|a| JsonArtifact {
            name: &a.name,
            revision: &a.revision,
            digest: &a.digest,
            size: a.size,
            path: args.out.join(format!("{}.tar.gz", a.name)).display().to_string(),
            origin_revision: a.origin_revision.as_deref(),
            labels: &a.labels,
        })
        .collect();
    if args.json {
        let json = serde_json::to_string(&items).map_err(|e| Failure::failed(e.to_string()))?;
        println!("{json}");
    } else {
        for a in &items {
            println!("{}\t{}\t{} bytes\t{}", a.name, a.revision, a.size, a.path);
        }
    }
    Ok(())
}
