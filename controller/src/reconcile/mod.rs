//! One reconcile of an ArtifactGenerator (spec §9.2), in upstream's step order:
//! finalize/initialize → suspend → validate → observe sources → drift → build all → publish → GC → status.
//!
//! Every outcome is decided here and turned into conditions, events and a requeue in one place
//! ([`Reconciler::finish`]); the step modules only compute.

mod drift;
mod finalize;
mod observe;
mod publish;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use artgen_engine::ErrorKind;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::status::Status;
use crate::context::Context;
use crate::crd::{ArtifactGenerator, ArtifactGeneratorStatus};
use crate::events::Severity;

pub use self::observe::sources_digest;

/// Upstream's field manager: artgen takes over field ownership from a source-watcher install.
pub const FIELD_MANAGER: &str = "source-watcher";
pub const FINALIZER: &str = "source.extensions.fluxcd.io/finalizer";
pub const SUSPEND_ANNOTATION: &str = "source.extensions.fluxcd.io/reconcile";
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
pub const GENERATOR_LABEL: &str = "source.extensions.fluxcd.io/generator";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const ORIGIN_REVISION_KEY: &str = "org.opencontainers.image.revision";

/// The controller's error type: a failed API call, or a classified reconcile failure whose message is the
/// condition message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{message}")]
    Failed {
        kind: ErrorKind,
        reason: &'static str,
        message: String,
        /// More for the Warning event than the condition message holds (e.g. plugin diagnostics).
        note: Option<String>,
    },
    #[error("reconciliation timed out after {0:?}")]
    Timeout(Duration),
}

impl Error {
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }

    pub fn failed(kind: ErrorKind, reason: &'static str, message: impl Into<String>) -> Self {
        Error::Failed {
            kind,
            reason,
            message: message.into(),
            note: None,
        }
    }

    /// Adds lines that only the Warning event carries; empty is no note.
    pub fn with_note(mut self, text: String) -> Self {
        if let Error::Failed { note, .. } = &mut self
            && !text.is_empty()
        {
            *note = Some(text);
        }
        self
    }

    /// The Warning event's text: the message, then the note, at most 1 KiB.
    fn event_text(&self) -> String {
        let mut text = self.message();
        if let Error::Failed { note: Some(n), .. } = self {
            text.push('\n');
            text.push_str(n);
        }
        if text.len() > 1024 {
            let mut end = 1021;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        text
    }

    /// Architecture §6: an API error is transient when it is 5xx, 409 or 429, or never reached the server.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Failed { kind, .. } => *kind,
            Error::Timeout(_) => ErrorKind::Transient,
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code >= 500 || s.code == 409 || s.code == 429 => {
                    ErrorKind::Transient
                }
                kube::Error::Api(_) => ErrorKind::Terminal,
                _ => ErrorKind::Transient,
            },
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Error::Failed { reason, .. } => reason,
            _ => status::RECONCILIATION_FAILED,
        }
    }

    /// The message with its whole source chain, for conditions and events.
    pub fn message(&self) -> String {
        artgen_engine::chain(self)
    }
}

/// `<namespace>/<name>`: the key of per-generator state.
fn key(generator: &ArtifactGenerator) -> String {
    format!(
        "{}/{}",
        generator.namespace().unwrap_or_default(),
        generator.name_any()
    )
}

pub fn is_suspended(generator: &ArtifactGenerator) -> bool {
    generator
        .annotations()
        .get(SUSPEND_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
}

/// Entry point for `Controller::run`.
pub async fn reconcile(generator: Arc<ArtifactGenerator>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // A pass queued by our own write may see the cached object from before it: work on what the write
    // returned instead of rebuilding (status) or conflicting (finalizer) on stale data.
    let generator = ctx.current(&key(&generator), generator);
    let timeout = ctx.settings.reconciliation_timeout;
    let mut r = Reconciler::new(&generator, &ctx);
    let result = match tokio::time::timeout(timeout, r.run()).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(timeout)),
    };
    let result = r.finish(result).await;
    ctx.metrics
        .observe_reconcile(&generator, r.status.as_ref(), started.elapsed());
    result
}

/// `Controller::run`'s error policy: exponential backoff per generator (spec §9.6).
pub fn error_policy(generator: Arc<ArtifactGenerator>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.error_delay(&key(&generator));
    tracing::warn!(generator = %key(&generator), error = %error.message(), ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What a pass ended with, before conditions are summarised.
enum Done {
    Requeue(Duration),
    AwaitChange,
}

struct Reconciler<'a> {
    generator: &'a ArtifactGenerator,
    ctx: &'a Context,
    api: Api<ArtifactGenerator>,
    namespace: String,
    generation: i64,
    /// The status written at the end; `None` when the object is gone (finalized).
    status: Option<ArtifactGeneratorStatus>,
    /// The object's resourceVersion after our latest write in this pass.
    resource_version: Option<String>,
}

impl<'a> Reconciler<'a> {
    fn new(generator: &'a ArtifactGenerator, ctx: &'a Context) -> Self {
        let namespace = generator.namespace().unwrap_or_default();
        Reconciler {
            generator,
            ctx,
            api: Api::namespaced(ctx.client.clone(), &namespace),
            namespace,
            generation: generator.meta().generation.unwrap_or_default(),
            status: Some(generator.status.clone().unwrap_or_default()),
            resource_version: generator.resource_version(),
        }
    }

    fn status(&mut self) -> &mut ArtifactGeneratorStatus {
        self.status.get_or_insert_with(Default::default)
    }

    fn set(&mut self, type_: &str, s: Status, reason: &str, message: &str) {
        let generation = self.generation;
        status::set(
            &mut self.status().conditions,
            type_,
            s,
            reason,
            message,
            generation,
        );
    }

    fn remove(&mut self, type_: &str) {
        status::remove(&mut self.status().conditions, type_);
    }

    async fn event(&self, severity: Severity, reason: &str, message: &str) {
        self.ctx
            .recorder
            .publish(self.generator, severity, reason, message)
            .await;
    }

    async fn run(&mut self) -> Result<Done, Error> {
        if !self.ctx.wait_synced().await {
            return Err(Error::failed(
                ErrorKind::Transient,
                status::RECONCILIATION_FAILED,
                "watch caches not synced after 30s",
            ));
        }
        // Step 2: deletion runs before the suspend check.
        if self.generator.meta().deletion_timestamp.is_some() {
            self.finalize().await?;
            self.ctx.forget(&key(self.generator));
            self.status = None;
            return Ok(Done::AwaitChange);
        }
        // Step 3.
        if !self.generator.finalizers().iter().any(|f| f == FINALIZER) {
            self.add_finalizer().await?;
            if is_suspended(self.generator) {
                self.set(
                    status::READY,
                    Status::True,
                    status::RECONCILIATION_DISABLED,
                    "Initialized with reconciliation suspended",
                );
            } else {
                self.set(
                    status::READY,
                    Status::Unknown,
                    status::PROGRESSING,
                    status::PROGRESSING_MESSAGE,
                );
                self.set(
                    status::RECONCILING,
                    Status::True,
                    status::PROGRESSING,
                    status::PROGRESSING_MESSAGE,
                );
            }
            return Ok(Done::Requeue(Duration::from_millis(1)));
        }
        // Step 4.
        if is_suspended(self.generator) {
            self.event(
                Severity::Trace,
                status::RECONCILIATION_DISABLED,
                "Reconciliation is disabled",
            )
            .await;
            return Ok(Done::AwaitChange);
        }
        // Step 5.
        let opts = artgen_engine::validate::Options {
            no_cross_namespace_refs: self.ctx.settings.no_cross_namespace_refs,
        };
        artgen_engine::validate::validate(&self.generator.spec, &self.namespace, &opts)
            .map_err(|e| Error::failed(ErrorKind::Terminal, e.reason(), artgen_engine::chain(&e)))?;
        // Plugin admission (design/plugins.md §5 step 1): cheap, terminal, before any fetch.
        self.admit_transforms()?;
        // Step 6.
        let observed = self.observe_sources().await?;
        self.ctx.reset_dependency(&key(self.generator));
        // Step 7.
        let digest = sources_digest(&observed);
        if let Some(drift) = self.drift(&digest).await? {
            let severity = if drift.forwarded() {
                Severity::Normal
            } else {
                Severity::Trace
            };
            if drift.reason != drift::ARTIFACT_CORRUPTED {
                self.event(severity, "DriftDetected", &drift.to_string()).await;
            }
            tracing::info!(generator = %key(self.generator), drift = %drift, "drift detected, building");
        } else {
            let n = self.status().inventory.len();
            self.event(
                Severity::Trace,
                status::READY,
                &format!("No drift detected, {n} artifact(s) up to date"),
            )
            .await;
            self.ctx.reset_retries(&key(self.generator));
            return Ok(Done::Requeue(self.ctx.settings.interval));
        }
        // Step 8.
        self.set(
            status::READY,
            Status::Unknown,
            status::PROGRESSING,
            status::PROGRESSING_MESSAGE,
        );
        self.set(
            status::RECONCILING,
            Status::True,
            status::PROGRESSING,
            status::PROGRESSING_MESSAGE,
        );
        self.remove(status::STALLED);
        // Patched at once while the API budget is ample. Under sustained load (a source fanning out to many
        // generators) the write would only take a request slot from the results it announces, and the
        // final status follows within the pass anyway.
        if self.ctx.api_budget.is_ample() {
            if let Some(s) = &self.status {
                let written = status::apply(&self.api, self.generator, s).await?;
                self.wrote(written);
            }
        } else {
            tracing::debug!(generator = %key(self.generator), "API budget low, progress status not written");
        }
        // Steps 9–17.
        let published = self.build_and_publish(&observed).await?;
        let s = self.status();
        s.observed_sources_digest = Some(digest);
        let message = format!("reconciliation succeeded, generated {published} artifact(s)");
        self.set(status::READY, Status::True, status::SUCCEEDED, &message);
        self.event(Severity::Trace, status::READY, &message).await;
        self.ctx.reset_retries(&key(self.generator));
        Ok(Done::Requeue(self.ctx.jittered_interval()))
    }

    /// Turns the pass's outcome into conditions, events and the returned action, and writes the status.
    async fn finish(&mut self, result: Result<Done, Error>) -> Result<Action, Error> {
        let outcome = match result {
            Ok(Done::Requeue(d)) => Ok(Action::requeue(d)),
            Ok(Done::AwaitChange) => Ok(Action::await_change()),
            Err(e) => {
                let (reason, message) = (e.reason(), e.message());
                self.event(Severity::Warning, reason, &e.event_text()).await;
                self.set(status::READY, Status::False, reason, &message);
                match e.kind() {
                    ErrorKind::Terminal => {
                        self.set(status::STALLED, Status::True, reason, &message);
                        Ok(Action::await_change())
                    }
                    ErrorKind::Dependency => {
                        self.remove(status::STALLED);
                        Ok(Action::requeue(self.ctx.dependency_delay(&key(self.generator))))
                    }
                    ErrorKind::Build | ErrorKind::Transient => {
                        self.remove(status::STALLED);
                        Err(e)
                    }
                }
            }
        };
        let Some(mut s) = self.status.take() else {
            return outcome;
        };
        if let Some(at) = self.generator.annotations().get(REQUESTED_AT_ANNOTATION) {
            s.last_handled_reconcile_at = Some(at.clone());
        }
        status::summarize(&mut s.conditions, self.generation);
        match status::apply(&self.api, self.generator, &s).await {
            Ok(written) => self.wrote(written),
            Err(e) => {
                tracing::warn!(generator = %key(self.generator), error = %e.message(), "writing status failed");
                self.status = Some(s);
                return Err(e);
            }
        }
        self.status = Some(s);
        outcome
    }

    /// After a write of ours (`None`: skipped): the version it replaced is stale from now on.
    fn wrote(&mut self, written: Option<ArtifactGenerator>) {
        if let Some(object) = written {
            let replaced = std::mem::replace(&mut self.resource_version, object.resource_version());
            self.ctx.record_write(&key(self.generator), replaced, object);
        }
    }

    async fn add_finalizer(&mut self) -> Result<(), Error> {
        let mut finalizers = self.generator.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        // The resourceVersion makes this a compare-and-swap against concurrent finalizer edits.
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": self.generator.resource_version(),
        }});
        let written = self
            .api
            .patch(
                &self.generator.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::kube("adding finalizer", e))?;
        self.wrote(Some(written));
        Ok(())
    }

    async fn remove_finalizer(&self) -> Result<(), Error> {
        let finalizers: Vec<&String> = self
            .generator
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": self.generator.resource_version(),
        }});
        match self
            .api
            .patch(
                &self.generator.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube("removing finalizer", e)),
        }
    }
}

/// The `(name, namespace, digest)` set of an inventory, to tell whether a pass changed anything (step 17).
fn inventory_digests(status: &ArtifactGeneratorStatus) -> BTreeMap<(String, String), String> {
    status
        .inventory
        .iter()
        .map(|e| ((e.namespace.clone(), e.name.clone()), e.digest.clone()))
        .collect()
}
