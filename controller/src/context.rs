//! Shared handles of the reconciler (architecture §9 habit 8): one [`Context`] per controller, cheap to share.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artgen_engine::fetch::{HttpOptions, Limits, SourceCache};
use artgen_engine::spec::SourceKind;
use artgen_engine::store::Storage;
use kube::Client;
use kube::runtime::reflector::Store;

use crate::crd::{ArtifactGenerator, ExternalArtifact, FluxSource};
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::policy::PolicyStores;
use crate::ratelimit::ApiBudget;

/// The reconciler's settings, resolved from the flags (spec §11).
#[derive(Clone, Debug)]
pub struct Settings {
    pub no_cross_namespace_refs: bool,
    pub requeue_dependency: Duration,
    pub min_retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub interval: Duration,
    pub jitter_percentage: u8,
    pub retention_ttl: Duration,
    pub retention_records: usize,
    pub reconciliation_timeout: Duration,
    pub source_limits: Limits,
    pub extract_limits: Limits,
    pub http: HttpOptions,
    /// `$SOURCE_CONTROLLER_LOCALHOST`: replaces host and port of every source URL.
    pub source_host_override: Option<String>,
    /// `$TMPDIR` is honoured by the temp dirs; this is an explicit override (tests).
    pub work_dir: Option<PathBuf>,
    /// The plugin host and the flags' admission; `None` refuses specs with transforms.
    pub transforms: Option<artgen_engine::Transforms>,
}

impl Default for Settings {
    fn default() -> Self {
        use artgen_engine::fetch::ExtractMode;
        Settings {
            no_cross_namespace_refs: false,
            requeue_dependency: Duration::from_secs(5),
            min_retry_delay: Duration::from_millis(750),
            max_retry_delay: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(3600),
            jitter_percentage: 5,
            retention_ttl: Duration::from_secs(60),
            retention_records: 2,
            reconciliation_timeout: Duration::from_secs(600),
            source_limits: Limits::for_mode(ExtractMode::Source),
            extract_limits: Limits::for_mode(ExtractMode::Extract),
            http: HttpOptions::default(),
            source_host_override: None,
            work_dir: None,
            transforms: None,
        }
    }
}

/// Watch caches of the source kinds; `None` with the `DirectSourceFetch` gate (reads go to the API).
#[derive(Clone)]
pub struct SourceStores {
    pub stores: HashMap<SourceKind, Store<FluxSource>>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub storage: Storage,
    pub cache: SourceCache,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub sources: Option<SourceStores>,
    /// The ExternalArtifacts watch cache (drift detection reads it instead of listing).
    pub external_artifacts: Store<ExternalArtifact>,
    /// TransformPluginPolicies and namespace labels; `None` when plugins are off or admission needs no
    /// policies (`--allow-any-plugin`).
    pub policies: Option<PolicyStores>,
    /// The main client's rate limiter: whether a write would go out now.
    pub api_budget: ApiBudget,
    /// Becomes true once every watch cache has its initial listing.
    synced: tokio::sync::watch::Receiver<bool>,
    retries: Mutex<HashMap<String, Retries>>,
    written: OwnWrites,
}

/// Per generator, our writes the watch cache may not have delivered yet: the resourceVersions they
/// replaced (a few) and the object the latest one returned. A cached object still at a replaced version
/// predates that write, and the returned object is what a GET would give, without spending a request of
/// the API budget on it.
#[derive(Default)]
struct OwnWrites(Mutex<HashMap<String, Written>>);

struct Written {
    replaced: Vec<String>,
    latest: Arc<ArtifactGenerator>,
}

impl OwnWrites {
    fn record(&self, key: &str, replaced: Option<String>, latest: ArtifactGenerator) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let latest = Arc::new(latest);
        let entry = m.entry(key.to_owned()).or_insert_with(|| Written {
            replaced: Vec::new(),
            latest: latest.clone(),
        });
        if let Some(rv) = replaced {
            if entry.replaced.len() >= 8 {
                entry.replaced.remove(0);
            }
            entry.replaced.push(rv);
        }
        entry.latest = latest;
    }

    fn current(&self, key: &str, cached: Arc<ArtifactGenerator>) -> Arc<ArtifactGenerator> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = m.get(key) else { return cached };
        let rv = cached.metadata.resource_version.as_deref();
        if rv.is_some_and(|rv| w.replaced.iter().any(|r| r == rv)) {
            return w.latest.clone();
        }
        m.remove(key);
        cached
    }

    fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Consecutive failures of one generator, for the two backoffs of spec §9.6.
#[derive(Clone, Copy, Debug, Default)]
struct Retries {
    dependency: u32,
    errors: u32,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        settings: Settings,
        storage: Storage,
        cache: SourceCache,
        recorder: Recorder,
        metrics: Metrics,
        sources: Option<SourceStores>,
        external_artifacts: Store<ExternalArtifact>,
        synced: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Context {
            client,
            settings,
            storage,
            cache,
            http: artgen_engine::fetch::client(),
            recorder,
            metrics,
            sources,
            external_artifacts,
            policies: None,
            api_budget: ApiBudget::default(),
            synced,
            retries: Mutex::new(HashMap::new()),
            written: OwnWrites::default(),
        }
    }

    /// Waits until every watch cache has its initial listing, so a reconcile never mistakes an unsynced
    /// cache for a missing source or a deleted ExternalArtifact. Immediate once synced.
    pub async fn wait_synced(&self) -> bool {
        let mut synced = self.synced.clone();
        let wait = synced.wait_for(|s| *s);
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(30), wait).await,
            Ok(Ok(_))
        )
    }

    /// Records a write of ours to the generator `key`: it replaced `replaced` and returned `latest`.
    pub fn record_write(&self, key: &str, replaced: Option<String>, latest: ArtifactGenerator) {
        self.written.record(key, replaced, latest);
    }

    /// The object a pass should work on: `cached`, unless it predates a write of ours, then what that
    /// write returned. Once the cache has caught up the record is dropped.
    pub fn current(&self, key: &str, cached: Arc<ArtifactGenerator>) -> Arc<ArtifactGenerator> {
        self.written.current(key, cached)
    }

    /// Forgets the generator (deleted).
    pub fn forget(&self, key: &str) {
        self.written.forget(key);
        self.reset_retries(key);
    }

    /// The next dependency requeue: `--requeue-dependency` doubled per consecutive failure, capped.
    pub fn dependency_delay(&self, key: &str) -> Duration {
        let n = self.bump(key, |r| &mut r.dependency);
        backoff(self.settings.requeue_dependency, n, self.settings.max_retry_delay)
    }

    /// The next error backoff: `--min-retry-delay` doubled per consecutive error, capped.
    pub fn error_delay(&self, key: &str) -> Duration {
        let n = self.bump(key, |r| &mut r.errors);
        backoff(self.settings.min_retry_delay, n, self.settings.max_retry_delay)
    }

    /// A success resets both backoffs.
    pub fn reset_retries(&self, key: &str) {
        self.retries().remove(key);
    }

    /// Every failure outcome other than a dependency one resets the dependency count (and vice versa
    /// `reset_errors`), so each backoff counts *consecutive* failures of its own kind.
    pub fn reset_dependency(&self, key: &str) {
        if let Some(r) = self.retries().get_mut(key) {
            r.dependency = 0;
        }
    }

    fn bump(&self, key: &str, field: impl Fn(&mut Retries) -> &mut u32) -> u32 {
        let mut retries = self.retries();
        let r = retries.entry(key.to_owned()).or_default();
        let n = *field(r);
        *field(r) = n.saturating_add(1);
        n
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retries>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// 1h ± `--interval-jitter-percentage`.
    pub fn jittered_interval(&self) -> Duration {
        use std::hash::{BuildHasher, RandomState};
        let base = self.settings.interval.as_secs_f64();
        let pct = f64::from(self.settings.jitter_percentage) / 100.0;
        // A random value in [-1, 1) without a dependency: RandomState is seeded per instance.
        let r = RandomState::new().hash_one(0u8) as f64 / u64::MAX as f64 * 2.0 - 1.0;
        Duration::from_secs_f64(base * (1.0 + pct * r))
    }
}

fn backoff(first: Duration, failures: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs(5);
        let cap = Duration::from_secs(900);
        let delays: Vec<u64> = (0..10).map(|n| backoff(s, n, cap).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(backoff(s, 40, cap), cap);
    }

    fn at(rv: &str, note: &str) -> ArtifactGenerator {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "source.extensions.fluxcd.io/v1beta1", "kind": "ArtifactGenerator",
            "metadata": {"name": "g", "namespace": "n", "resourceVersion": rv,
                         "annotations": {"note": note}},
            "spec": {"sources": [], "artifacts": []}
        }))
        .unwrap()
    }

    #[test]
    fn own_writes_stand_in_for_a_stale_cache_until_it_catches_up() {
        let w = OwnWrites::default();
        let stale = Arc::new(at("1", "cached"));
        assert!(
            Arc::ptr_eq(&w.current("n/g", stale.clone()), &stale),
            "no write yet"
        );
        w.record("n/g", Some("1".into()), at("2", "written"));
        w.record("n/g", Some("2".into()), at("3", "written again"));
        for rv in ["1", "2"] {
            let got = w.current("n/g", Arc::new(at(rv, "cached")));
            assert_eq!(
                got.metadata.resource_version.as_deref(),
                Some("3"),
                "cache at {rv}"
            );
        }
        assert!(
            Arc::ptr_eq(&w.current("other/g", stale.clone()), &stale),
            "per generator"
        );
        // The cache delivered our write (or someone's newer one): it wins and the record goes.
        let caught_up = Arc::new(at("3", "cached"));
        assert!(Arc::ptr_eq(&w.current("n/g", caught_up.clone()), &caught_up));
        assert!(
            Arc::ptr_eq(&w.current("n/g", stale.clone()), &stale),
            "record dropped"
        );
    }
}
