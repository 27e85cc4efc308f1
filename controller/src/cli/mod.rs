//! Command-line interface (spec §12). `build` and `validate` use the engine only; `controller` and `crds`
//! use kube.

mod build;
pub mod controller;
mod crds;
mod plugin;
mod validate;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Exit codes of `build` and `validate` (spec §12.3).
pub mod exit {
    /// Invalid manifest, unusable source content or build error.
    pub const FAILURE: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(name = "artgen", version, about = "Flux ArtifactGenerator, rebuilt in Rust")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the artifacts of a generator from local directories, tarballs or URLs.
    Build(Box<build::Args>),
    /// Check a generator manifest against admission and controller-side validation.
    Validate(validate::Args),
    /// Print the CustomResourceDefinitions artgen owns, for `kubectl apply -f -`.
    Crds(crds::Args),
    /// Run the ArtifactGenerator controller.
    Controller(Box<controller::Args>),
    /// Plugin authoring tools: describe, run, digest and precompile a transform plugin.
    Plugin(plugin::Args),
}

/// A failure of a subcommand: its exit code and the one-line message printed last on stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: exit::FAILURE,
            message: message.into(),
        }
    }
}

pub fn main() -> ExitCode {
    // reqwest is built without a default crypto provider so that only ring is linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::run(*args),
        Command::Validate(args) => validate::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Controller(args) => controller::run(*args),
        Command::Plugin(args) => plugin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Plugin flags shared by `build` and `controller` (design/plugins.md §3).
#[derive(Debug, Clone, clap::Args)]
pub struct PluginArgs {
    /// `allowlist`: a plugin runs only if its digest is allowed; `disabled`: transforms fail with
    /// PluginsDisabled.
    #[arg(long = "plugins", default_value = "allowlist", value_parser = ["allowlist", "disabled"])]
    pub plugins: String,
    /// Allows this plugin digest (`sha256:<hex>`) everywhere, up to the hard limit ceilings. Repeatable.
    #[arg(long = "plugin-allow-digest", value_name = "SHA256")]
    pub plugin_allow_digest: Vec<String>,
    /// Compiled-plugin cache, private to this process (never under the storage path).
    #[arg(long = "plugin-cache-dir", value_name = "DIR")]
    pub plugin_cache_dir: Option<std::path::PathBuf>,
    /// Transforms that may run at once; 0 = min(cores, 4).
    #[arg(long = "plugin-concurrency", default_value_t = 0)]
    pub plugin_concurrency: usize,
}

impl PluginArgs {
    /// The admission these flags give (the controller adds TransformPluginPolicy entries).
    pub fn admission(&self, allow_any: bool) -> Result<artgen_engine::transform::Admission, Failure> {
        let digests = self
            .plugin_allow_digest
            .iter()
            .map(|d| {
                artgen_engine::fetch::parse_sha256(d)
                    .map(|hex| artgen_engine::transform::Allowed::digest(format!("sha256:{hex}")))
                    .map_err(|e| Failure::usage(format!("--plugin-allow-digest: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(artgen_engine::transform::Admission {
            disabled: self.plugins == "disabled",
            allow_any,
            allowed: digests,
        })
    }

    /// The plugin host (one per process).
    pub fn host(&self) -> Result<artgen_engine::transform::Host, Failure> {
        artgen_engine::transform::Host::new(artgen_engine::transform::HostOptions {
            cache_dir: self.plugin_cache_dir.clone(),
            concurrency: self.plugin_concurrency,
        })
        .map_err(|e| Failure::failed(format!("starting the plugin host: {}", artgen_engine::chain(&e))))
    }
}

/// Kubernetes-style quantities (`100Mi`, `1Gi`, `5G`, `1024`): the engine's parser, shared with transform
/// limits.
pub use artgen_engine::transform::admission::parse_quantity;

/// Parses a Go-style duration (`750ms`, `5s`, `1m30s`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration '{s}'");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| err())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += Duration::from_secs_f64(n * secs);
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn quantities_and_durations() {
        assert_eq!(parse_quantity("100Mi"), Ok(100 << 20));
        assert_eq!(parse_quantity("1G"), Ok(1_000_000_000));
        assert_eq!(parse_quantity("17"), Ok(17));
        assert!(parse_quantity("1Zi").is_err() && parse_quantity("").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("750ms"), Ok(Duration::from_millis(750)));
        assert!(parse_duration("5x").is_err() && parse_duration("s").is_err());
    }
}
