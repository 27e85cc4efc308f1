//! Deletion (spec §9.7) and the object+storage removal it shares with orphan GC (§9.2 step 14).

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use super::{Error, GENERATOR_LABEL, Reconciler};
use crate::crd::ExternalArtifact;
use crate::events::Severity;

impl Reconciler<'_> {
    /// Deletes every ExternalArtifact of the inventory and every one carrying the generator label (listed
    /// from the API, not the cache: nothing may leak), with their storage; then removes the finalizer.
    pub(super) async fn finalize(&self) -> Result<(), Error> {
        if self.generator.finalizers().iter().all(|f| f != super::FINALIZER) {
            return Ok(());
        }
        let mut names: BTreeSet<String> = self
            .generator
            .status
            .as_ref()
            .map(|s| s.inventory.iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default();
        let api: Api<ExternalArtifact> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        if let Some(uid) = self.generator.uid() {
            let lp = ListParams::default().labels(&format!("{GENERATOR_LABEL}={uid}"));
            let listed = api
                .list(&lp)
                .await
                .map_err(|e| Error::kube("listing ExternalArtifacts of the generator", e))?;
            names.extend(listed.items.iter().map(|o| o.name_any()));
        }
        if !self.delete_artifacts(names).await {
            return Err(Error::failed(
                artgen_engine::ErrorKind::Transient,
                super::status::RECONCILIATION_FAILED,
                "garbage collection failed; will retry",
            ));
        }
        self.remove_finalizer().await
    }

    /// Deletes the named ExternalArtifacts (NotFound is fine) and their storage directories, with one
    /// event for the successes and one per failure. Returns whether everything went.
    pub(super) async fn delete_artifacts(&self, names: BTreeSet<String>) -> bool {
        let api: Api<ExternalArtifact> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let mut deleted = Vec::new();
        let mut ok = true;
        for name in names {
            let what = format!("ExternalArtifact {}/{name}", self.namespace);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    ok = false;
                    let message = format!("deleting {what}: {}", artgen_engine::chain(&e));
                    self.event(Severity::Warning, "GarbageCollectionFailed", &message)
                        .await;
                    continue;
                }
            }
            let storage = self.ctx.storage.clone();
            let (ns, n) = (self.namespace.clone(), name.clone());
            let removed = tokio::task::spawn_blocking(move || storage.remove_artifact_dir(&ns, &n)).await;
            match removed {
                Ok(Ok(())) => deleted.push(format!("{}/{name}", self.namespace)),
                Ok(Err(e)) => {
                    ok = false;
                    let message = format!("deleting storage of {what}: {}", artgen_engine::chain(&e));
                    self.event(Severity::Warning, "GarbageCollectionFailed", &message)
                        .await;
                }
                Err(e) => {
                    ok = false;
                    self.event(Severity::Warning, "GarbageCollectionFailed", &e.to_string())
                        .await;
                }
            }
        }
        if !deleted.is_empty() {
            let message = format!("deleted ExternalArtifact {}", deleted.join(", "));
            self.event(Severity::Normal, "GarbageCollectionSucceeded", &message)
                .await;
        }
        ok
    }
}
