//! Events on generators (spec §9.5): core/v1 Events, as Flux's controllers record them, aggregated like
//! client-go's recorder (a repeat of the same type, reason and message bumps `count` instead of creating an
//! object). Normal and Warning events are also forwarded to notification-controller when `--events-addr` is
//! set; trace events are Kubernetes Normal events that are never forwarded.
//!
//! kube-runtime's `Recorder` is not used: it keys its series on the reason only, so a second `Ready` event
//! with a new message would keep the first message.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::ArtifactGenerator;

/// The component name on events (upstream's).
pub const COMPONENT: &str = "source-watcher";

/// Notes are capped like kube's events (1 KiB).
const MAX_NOTE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Normal, not forwarded.
    Trace,
    Normal,
    Warning,
}

/// (object uid, severity, reason, message) → (event name, count).
type Seen = HashMap<(String, Severity, String, String), (String, i32)>;

/// Records events from a background task, so a reconcile never waits for them (as client-go's
/// broadcaster); a full queue drops the event with a log line.
pub struct Recorder {
    queue: tokio::sync::mpsc::Sender<Job>,
}

struct Job {
    generator: ArtifactGenerator,
    severity: Severity,
    reason: String,
    message: String,
}

struct Worker {
    client: Client,
    forward: Option<(reqwest::Client, String)>,
    instance: String,
    seen: Mutex<Seen>,
}

/// Events waiting to be written; beyond this they are dropped.
const QUEUE: usize = 4096;

impl Recorder {
    /// Starts the writer task (needs a runtime). `client` should have its own request budget, as client-go's
    /// event client does.
    pub fn new(client: Client, events_addr: &str, instance: String) -> Self {
        let forward =
            (!events_addr.is_empty()).then(|| (artgen_engine::fetch::client(), events_addr.to_owned()));
        let worker = Worker {
            client,
            forward,
            instance,
            seen: Mutex::new(HashMap::new()),
        };
        let (queue, mut jobs) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                worker
                    .publish(&job.generator, job.severity, &job.reason, &job.message)
                    .await;
            }
        });
        Recorder { queue }
    }

    /// Queues an event; never fails a reconcile.
    pub async fn publish(
        &self,
        generator: &ArtifactGenerator,
        severity: Severity,
        reason: &str,
        message: &str,
    ) {
        // Only what an event needs: status and spec can be large.
        let mut generator = generator.clone();
        generator.status = None;
        let job = Job {
            generator,
            severity,
            reason: reason.to_owned(),
            message: truncate(message),
        };
        if self.queue.try_send(job).is_err() {
            tracing::warn!(reason, "event queue full, dropping event");
        }
    }
}

impl Worker {
    async fn publish(&self, generator: &ArtifactGenerator, severity: Severity, reason: &str, message: &str) {
        if let Err(e) = self.record(generator, severity, reason, message).await {
            tracing::warn!(reason, error = %artgen_engine::chain(&e), "recording event failed");
        }
        if severity != Severity::Trace
            && let Some((http, addr)) = &self.forward
        {
            self.forward(http, addr, generator, severity, reason, message)
                .await;
        }
    }

    async fn record(
        &self,
        generator: &ArtifactGenerator,
        severity: Severity,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let ns = generator.namespace().unwrap_or_default();
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &ns);
        let key = (
            generator.uid().unwrap_or_default(),
            severity,
            reason.to_owned(),
            message.to_owned(),
        );
        let now = Time(Timestamp::now());
        let previous = self.seen().get(&key).cloned();
        if let Some((name, count)) = previous {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.seen().insert(key, (name, count + 1));
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!("{}.{:x}", generator.name_any(), now.0.as_nanosecond());
        let event = CoreEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: reference(generator),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(
                if severity == Severity::Warning {
                    "Warning"
                } else {
                    "Normal"
                }
                .to_owned(),
            ),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(EventSource {
                component: Some(COMPONENT.to_owned()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            ..CoreEvent::default()
        };
        api.create(&PostParams::default(), &event).await?;
        let mut seen = self.seen();
        // Bounded: an event older than the cache is simply created again.
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(key, (name, 1));
        Ok(())
    }

    /// notification-controller's event format (`event.toolkit.fluxcd.io/v1beta1` Event).
    async fn forward(
        &self,
        http: &reqwest::Client,
        addr: &str,
        generator: &ArtifactGenerator,
        severity: Severity,
        reason: &str,
        message: &str,
    ) {
        let body = json!({
            "involvedObject": reference(generator),
            "severity": if severity == Severity::Warning { "error" } else { "info" },
            "timestamp": Timestamp::now().to_string(),
            "message": message,
            "reason": reason,
            "reportingController": COMPONENT,
            "reportingInstance": self.instance,
        });
        let sent = http
            .post(addr)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(std::time::Duration::from_secs(15))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(e) = sent {
            tracing::warn!(reason, error = %artgen_engine::chain(&e), "forwarding event failed");
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn reference(generator: &ArtifactGenerator) -> ObjectReference {
    ObjectReference {
        api_version: Some(ArtifactGenerator::api_version(&()).into_owned()),
        kind: Some(ArtifactGenerator::kind(&()).into_owned()),
        name: Some(generator.name_any()),
        namespace: generator.namespace(),
        uid: generator.uid(),
        resource_version: generator.resource_version(),
        ..ObjectReference::default()
    }
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_NOTE {
        return message.to_owned();
    }
    let mut end = MAX_NOTE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}
