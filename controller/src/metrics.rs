//! Prometheus metrics (spec §11): Flux's `gotk_*` reconcile metrics plus artgen's build-stage and
//! source-cache metrics, served as text on `--metrics-addr`.

use std::sync::Arc;
use std::time::Duration;

use artgen_engine::fetch::Lookup;
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
        Metrics {
            registry: Arc::new(registry),
            reconcile_duration,
            condition,
            suspend,
            stage_duration,
            cache_lookups,
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
