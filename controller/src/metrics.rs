//! Prometheus metrics (spec §11): Flux's `gotk_*` reconcile metrics plus artgen's build-stage and
//! source-cache metrics, served as text on `--metrics-addr`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use artgen_engine::fetch::Lookup;
use artgen_engine::transform::{CacheStats, TransformReport, TransformResult};
use kube::ResourceExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{ArtifactGenerator, ArtifactGeneratorStatus};
use crate::reconcile::is_suspended;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconcile_duration: Histograms,
    condition: Family<Labels, Gauge>,
    suspend: Family<Labels, Gauge>,
    stage_duration: Histograms,
    cache_lookups: Family<Labels, Counter>,
    transform_runs: Family<Labels, Counter>,
    transform_failures: Family<Labels, Counter>,
    transform_fuel: Histogram,
    plugin_compile: Histogram,
    plugin_lookups: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    api_rate_limiter: Histograms,
    /// The plugin host's cumulative stats at the last [`Metrics::plugin_cache`] call.
    plugin_seen: Arc<Mutex<CacheStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_duration: Histograms = Family::new_with_constructor(duration_histogram);
        let stage_duration: Histograms = Family::new_with_constructor(duration_histogram);
        let condition = Family::<Labels, Gauge>::default();
        let suspend = Family::<Labels, Gauge>::default();
        let cache_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "gotk_reconcile_duration_seconds",
            "The duration in seconds of a reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "gotk_reconcile_condition",
            "The current condition status of a resource",
            condition.clone(),
        );
        registry.register(
            "gotk_suspend_status",
            "The suspend status of a resource",
            suspend.clone(),
        );
        registry.register(
            "artgen_build_stage_duration_seconds",
            "The duration in seconds of a build stage",
            stage_duration.clone(),
        );
        registry.register(
            "artgen_source_cache_requests",
            "Source cache lookups by result",
            cache_lookups.clone(),
        );
        // No per-digest labels (design/plugins.md §8): tenants choose digests, so they would be unbounded.
        let transform_runs = Family::<Labels, Counter>::default();
        let transform_failures = Family::<Labels, Counter>::default();
        let transform_fuel = Histogram::new(exponential_buckets(1e6, 4.0, 12));
        let plugin_compile = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let plugin_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "artgen_transform_runs",
            "Transform runs by result",
            transform_runs.clone(),
        );
        registry.register(
            "artgen_transform_failures",
            "Transform failures by reason, refusals by admission included",
            transform_failures.clone(),
        );
        registry.register(
            "artgen_transform_fuel_used",
            "Fuel used by a transform run",
            transform_fuel.clone(),
        );
        registry.register(
            "artgen_plugin_compile_duration_seconds",
            "The duration in seconds of compiling a plugin",
            plugin_compile.clone(),
        );
        registry.register(
            "artgen_plugin_cache_lookups",
            "Compiled-plugin lookups by the tier that answered (memory, disk, compile)",
            plugin_lookups.clone(),
        );
        // client-go's names (controller-runtime exposes them for every Flux controller).
        let api_requests = Family::<Labels, Counter>::default();
        let api_rate_limiter: Histograms = Family::new_with_constructor(duration_histogram);
        registry.register(
            "rest_client_requests",
            "Kubernetes API requests by method and status code",
            api_requests.clone(),
        );
        registry.register(
            "rest_client_rate_limiter_duration_seconds",
            "Time a Kubernetes API request waited for the client-side rate limiter",
            api_rate_limiter.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconcile_duration,
            condition,
            suspend,
            stage_duration,
            cache_lookups,
            transform_runs,
            transform_failures,
            transform_fuel,
            plugin_compile,
            plugin_lookups,
            api_requests,
            api_rate_limiter,
            plugin_seen: Arc::default(),
        }
    }

    /// After each reconcile: its duration, the condition gauges and the suspend gauge. `status` is `None`
    /// when the generator was finalized, which removes its series.
    pub fn observe_reconcile(
        &self,
        generator: &ArtifactGenerator,
        status: Option<&ArtifactGeneratorStatus>,
        took: Duration,
    ) {
        let object: Labels = vec![
            ("kind", "ArtifactGenerator".to_owned()),
            ("name", generator.name_any()),
            ("namespace", generator.namespace().unwrap_or_default()),
        ];
        self.reconcile_duration
            .get_or_create(&object)
            .observe(took.as_secs_f64());
        for type_ in ["Ready", "Reconciling", "Stalled"] {
            let current = status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                .map(|c| c.status.as_str());
            for value in ["True", "False", "Unknown", "Deleted"] {
                let mut labels = object.clone();
                labels.push(("type", type_.to_owned()));
                labels.push(("status", value.to_owned()));
                let on = match current {
                    Some(c) => c == value,
                    None => value == "Deleted",
                };
                self.condition.get_or_create(&labels).set(i64::from(on));
            }
        }
        self.suspend
            .get_or_create(&object)
            .set(i64::from(is_suspended(generator) && status.is_some()));
    }

    pub fn api_request(&self, client: &str, method: &str, code: String) {
        self.api_requests
            .get_or_create(&vec![
                ("client", client.to_owned()),
                ("method", method.to_owned()),
                ("code", code),
            ])
            .inc();
    }

    pub fn api_rate_limited(&self, client: &str, method: &str, waited: Duration) {
        self.api_rate_limiter
            .get_or_create(&vec![("client", client.to_owned()), ("verb", method.to_owned())])
            .observe(waited.as_secs_f64());
    }

    pub fn observe_stage(&self, stage: &'static str, took: Duration) {
        self.stage_duration
            .get_or_create(&vec![("stage", stage.to_owned())])
            .observe(took.as_secs_f64());
    }

    pub fn cache_lookup(&self, lookup: Lookup) {
        self.cache_lookups
            .get_or_create(&vec![("result", lookup.as_str().to_owned())])
            .inc();
    }

    /// Counts the runs (and failures) of these transform reports.
    pub fn transform_reports<'r>(&self, reports: impl IntoIterator<Item = &'r TransformReport>) {
        for r in reports {
            let result = match r.result {
                TransformResult::Succeeded => "Succeeded",
                TransformResult::Failed => "Failed",
                TransformResult::Ignored => "Ignored",
            };
            self.transform_runs
                .get_or_create(&vec![("result", result.to_owned())])
                .inc();
            if let Some(reason) = r.reason {
                self.transform_failure(reason.as_str());
            }
            if r.fuel_used > 0 {
                self.transform_fuel.observe(r.fuel_used as f64);
            }
        }
    }

    pub fn transform_failure(&self, reason: &str) {
        self.transform_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Brings the plugin cache counters up to the host's cumulative `stats`. Compiles since the last call
    /// are observed at their mean duration (the host sums compile time).
    pub fn plugin_cache(&self, stats: &CacheStats) {
        let mut seen = self.plugin_seen.lock().unwrap_or_else(|p| p.into_inner());
        let tier = |name: &str, now: u64, before: u64| {
            if now > before {
                self.plugin_lookups
                    .get_or_create(&vec![("tier", name.to_owned())])
                    .inc_by(now - before);
            }
        };
        tier("memory", stats.memory_hits, seen.memory_hits);
        tier("disk", stats.disk_hits, seen.disk_hits);
        tier("compile", stats.compiles, seen.compiles);
        let compiles = stats.compiles.saturating_sub(seen.compiles);
        if compiles > 0 {
            let mean = stats.compile_time.saturating_sub(seen.compile_time) / compiles as u32;
            for _ in 0..compiles {
                self.plugin_compile.observe(mean.as_secs_f64());
            }
        }
        *seen = *stats;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
