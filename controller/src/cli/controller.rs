//! `artgen controller` (spec §11, §12.4): upstream's flag names and defaults.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::{Failure, parse_duration, parse_quantity};

#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Maximum number of concurrent reconciles.
    #[arg(long, default_value_t = 10)]
    pub concurrent: u16,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, default_value = ":8080")]
    pub metrics_addr: String,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = ":9440")]
    pub health_addr: String,
    /// notification-controller endpoint that Normal and Warning events are forwarded to.
    #[arg(long, default_value = "")]
    pub events_addr: String,
    /// Retries of a source download (backoff 5s..30s).
    #[arg(long, default_value_t = 9)]
    pub http_retry: u32,
    /// Upper bound of one reconcile.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub reconciliation_timeout: Duration,
    /// First requeue after a missing or not-ready source; doubles per consecutive failure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub requeue_dependency: Duration,
    /// Directory the artifacts are stored in; must exist.
    #[arg(long, env = "STORAGE_PATH", default_value = "/data")]
    pub storage_path: std::path::PathBuf,
    /// Address the artifact server listens on.
    #[arg(long, env = "STORAGE_ADDRESS", default_value = ":9090")]
    pub storage_addr: String,
    /// Advertised host (or URL prefix) of the artifact server.
    #[arg(long, env = "STORAGE_ADV_ADDR", default_value = "")]
    pub storage_adv_addr: String,
    /// Superseded artifact files older than this are deleted.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub artifact_retention_ttl: Duration,
    /// Artifact files kept per ExternalArtifact.
    #[arg(long, default_value_t = 2)]
    pub artifact_retention_records: usize,
    /// Digest algorithm of artifacts; only sha256.
    #[arg(long, default_value = "sha256")]
    pub artifact_digest_algo: String,
    /// Refuse sources in other namespaces than the generator's.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub no_cross_namespace_refs: bool,
    /// Watch every namespace; false = only $RUNTIME_NAMESPACE.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub watch_all_namespaces: bool,
    /// Label selector of the ArtifactGenerators this instance reconciles (sharding).
    #[arg(long, default_value = "")]
    pub watch_label_selector: String,
    /// Accepted for compatibility; unused (as upstream).
    #[arg(long, default_value = "reconcile.fluxcd.io/watch=Enabled")]
    pub watch_configs_label_selector: String,
    /// Run only while holding the leader-election Lease.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_leader_election: bool,
    #[arg(long, default_value = "35s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_election_release_on_cancel: bool,
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,
    #[arg(long, default_value_t = 300)]
    pub kube_api_burst: u32,
    /// trace, debug, info, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// json or console.
    #[arg(long, default_value = "json")]
    pub log_encoding: String,
    /// First delay of the error backoff.
    #[arg(long, default_value = "750ms", value_parser = parse_duration)]
    pub min_retry_delay: Duration,
    /// Cap of the error and dependency backoff.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub max_retry_delay: Duration,
    /// ± jitter of the success requeue, in percent.
    #[arg(long, default_value_t = 5)]
    pub interval_jitter_percentage: u8,
    /// Comma-separated `Gate=true|false`; known gate: DirectSourceFetch.
    #[arg(long, default_value = "")]
    pub feature_gates: String,
    /// Max decompressed bytes of one source artifact.
    #[arg(long, default_value = "1Gi", value_parser = parse_quantity)]
    pub source_max_size: u64,
    /// Max decompressed bytes of one Extract tarball.
    #[arg(long, default_value = "100Mi", value_parser = parse_quantity)]
    pub extract_max_size: u64,
    /// Max entries of one tarball.
    #[arg(long, default_value_t = 100_000)]
    pub tarball_max_entries: u64,
    /// Bound of the source cache.
    #[arg(long, default_value = "2Gi", value_parser = parse_quantity)]
    pub source_cache_max_size: u64,
    #[command(flatten)]
    pub plugins: super::PluginArgs,
}

/// Feature gates (spec §11).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureGates {
    /// Read source objects through the API instead of the watch cache.
    pub direct_source_fetch: bool,
}

impl Args {
    /// Start-up checks that clap cannot express.
    pub fn check(&self) -> Result<FeatureGates, Failure> {
        if self.artifact_digest_algo != "sha256" {
            return Err(Failure::usage(format!(
                "--artifact-digest-algo: unsupported algorithm '{}' (only sha256)",
                self.artifact_digest_algo
            )));
        }
        if self.interval_jitter_percentage >= 100 {
            return Err(Failure::usage("--interval-jitter-percentage must be below 100"));
        }
        if self.concurrent == 0 {
            return Err(Failure::usage("--concurrent must be at least 1"));
        }
        parse_gates(&self.feature_gates).map_err(Failure::usage)
    }
}

fn parse_gates(s: &str) -> Result<FeatureGates, String> {
    let mut gates = FeatureGates::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, "true"));
        let value: bool = value
            .parse()
            .map_err(|_| format!("--feature-gates: invalid value '{value}' for {name}"))?;
        match name {
            "DirectSourceFetch" => gates.direct_source_fetch = value,
            _ => return Err(format!("--feature-gates: unknown feature gate '{name}'")),
        }
    }
    Ok(gates)
}

pub fn run(args: Args) -> Result<(), Failure> {
    let gates = args.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("starting the runtime: {e}")))?;
    runtime
        .block_on(crate::controller::run(args, gates))
        .map_err(|e| Failure::failed(artgen_engine::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates() {
        assert_eq!(parse_gates(""), Ok(FeatureGates::default()));
        assert!(parse_gates("DirectSourceFetch=true").unwrap().direct_source_fetch);
        assert!(
            !parse_gates("DirectSourceFetch=false")
                .unwrap()
                .direct_source_fetch
        );
        assert!(
            parse_gates("Nope=true")
                .unwrap_err()
                .contains("unknown feature gate 'Nope'")
        );
    }
}
