//! Drift detection (spec §9.4): whether a pass must rebuild. First hit wins. Reads only the generator, the
//! ExternalArtifact watch cache and storage metadata: a stored file is re-hashed only when the storage has no
//! record of writing it or its size/mtime changed.

use std::collections::BTreeSet;
use std::fmt;

use artgen_engine::ErrorKind;
use artgen_engine::store::{Storage, Verified};
use kube::{Resource, ResourceExt};

use super::status::{self, RECONCILIATION_FAILED};
use super::{Error, GENERATOR_LABEL, MANAGED_BY_LABEL, Reconciler};
use crate::crd::{ArtifactGenerator, ExternalArtifact};
use crate::events::Severity;

pub const ARTIFACT_CORRUPTED: &str = "ArtifactCorrupted";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub reason: &'static str,
    pub detail: String,
}

impl Drift {
    fn new(reason: &'static str, detail: impl Into<String>) -> Option<Self> {
        Some(Drift {
            reason,
            detail: detail.into(),
        })
    }

    /// Drift of objects other actors can cause is a Normal event (forwarded); the rest are trace events.
    pub fn forwarded(&self) -> bool {
        matches!(
            self.reason,
            "ExternalArtifactsChanged" | "ExternalArtifactsNotFound"
        )
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Whether an ExternalArtifact belongs to the generator (spec §8.3): it carries the generator label with its
/// UID, or (label removed by hand) still names it as controlling owner.
pub fn belongs(object: &ExternalArtifact, generator: &ArtifactGenerator) -> bool {
    let Some(uid) = generator.uid() else { return false };
    object.labels().get(GENERATOR_LABEL) == Some(&uid)
        || object
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
}

impl Reconciler<'_> {
    pub(super) async fn drift(&mut self, sources_digest: &str) -> Result<Option<Drift>, Error> {
        let generator = self.generator;
        let s = generator.status.clone().unwrap_or_default();
        let ready = status::get(&s.conditions, status::READY);
        if ready.is_none_or(|c| c.status == "False") {
            return Ok(Drift::new("NotReady", "Ready condition is not True"));
        }
        if ready.and_then(|c| c.observed_generation) != Some(self.generation) {
            return Ok(Drift::new(
                "GenerationChanged",
                format!("generation {} not yet reconciled", self.generation),
            ));
        }
        if s.observed_sources_digest.as_deref() != Some(sources_digest) {
            return Ok(Drift::new("SourcesChanged", "the artifact of a source changed"));
        }
        let no_pattern = generator.spec.path_pattern.as_deref().is_none_or(str::is_empty);
        if no_pattern && s.inventory.len() != generator.spec.artifacts.len() {
            return Ok(Drift::new(
                "ArtifactsChanged",
                format!(
                    "{} artifact(s) in the inventory, {} in the spec",
                    s.inventory.len(),
                    generator.spec.artifacts.len()
                ),
            ));
        }
        if let Some(d) = self.verify_storage(&s.inventory).await? {
            return Ok(Some(d));
        }
        Ok(self.external_artifacts_drift(&s.inventory))
    }

    async fn verify_storage(
        &self,
        inventory: &[crate::crd::artifact_generator::InventoryEntry],
    ) -> Result<Option<Drift>, Error> {
        let storage: Storage = self.ctx.storage.clone();
        let entries = inventory.to_vec();
        let found = tokio::task::spawn_blocking(move || {
            for e in &entries {
                match storage.verify(&e.namespace, &e.name, &e.filename, &e.digest)? {
                    Verified::Ok => {}
                    bad => return Ok(Some((e.clone(), bad))),
                }
            }
            Ok::<_, artgen_engine::Error>(None)
        })
        .await
        .map_err(|e| Error::failed(ErrorKind::Transient, RECONCILIATION_FAILED, e.to_string()))?
        .map_err(|e| {
            Error::failed(
                ErrorKind::Transient,
                RECONCILIATION_FAILED,
                artgen_engine::chain(&e),
            )
        })?;
        let Some((e, verdict)) = found else {
            return Ok(None);
        };
        let path = Storage::relative_path(&e.namespace, &e.name, &e.filename);
        if verdict == Verified::Missing {
            return Ok(Drift::new("ArtifactMissing", format!("{path} is not in storage")));
        }
        let message = format!(
            "stored artifact {path} does not match digest {}; rebuilding",
            e.digest
        );
        self.event(Severity::Warning, ARTIFACT_CORRUPTED, &message).await;
        Ok(Drift::new(ARTIFACT_CORRUPTED, message))
    }

    fn external_artifacts_drift(
        &self,
        inventory: &[crate::crd::artifact_generator::InventoryEntry],
    ) -> Option<Drift> {
        let generator = self.generator;
        let objects: Vec<_> = self
            .ctx
            .external_artifacts
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(&self.namespace) && belongs(o, generator))
            .collect();
        let have: BTreeSet<String> = objects.iter().map(|o| o.name_any()).collect();
        let want: BTreeSet<String> = inventory.iter().map(|e| e.name.clone()).collect();
        if have != want {
            let missing: Vec<_> = want.difference(&have).cloned().collect();
            let extra: Vec<_> = have.difference(&want).cloned().collect();
            return Drift::new(
                "ExternalArtifactsChanged",
                format!(
                    "missing [{}], unexpected [{}]",
                    missing.join(", "),
                    extra.join(", ")
                ),
            );
        }
        let uid = generator.uid().unwrap_or_default();
        for e in inventory {
            let Some(o) = objects.iter().find(|o| o.name_any() == e.name) else {
                continue;
            };
            let changed = |what: &str| {
                Drift::new(
                    "ExternalArtifactsChanged",
                    format!("ExternalArtifact {}/{}: {what}", e.namespace, e.name),
                )
            };
            let Some(artifact) = o.status.as_ref().and_then(|s| s.artifact.as_ref()) else {
                return changed("no status.artifact");
            };
            if artifact.digest.as_deref() != Some(e.digest.as_str()) {
                return changed("digest differs from the inventory");
            }
            if artifact.url != self.ctx.storage.url(&e.namespace, &e.name, &e.filename) {
                return changed("URL differs from the stored file");
            }
            let labels = o.labels();
            if labels.get(GENERATOR_LABEL) != Some(&uid)
                || labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(super::FIELD_MANAGER)
            {
                return changed("reserved labels changed");
            }
            if o.spec.source_ref != Some(super::publish::source_ref(generator)) {
                return changed("spec.sourceRef changed");
            }
            if !o.owner_references().iter().any(|r| r.uid == uid) {
                return changed("owner reference removed");
            }
            if o.meta().deletion_timestamp.is_some() {
                return changed("being deleted");
            }
        }
        None
    }
}
