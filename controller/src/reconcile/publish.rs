//! Steps 9–17 (spec §9.2): fetch through the source cache, build every artifact, check ownership, then
//! store and publish in expansion order, collect orphans, apply retention and update the inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use artgen_engine::fetch::CachedSource;
use artgen_engine::pack::Packed;
use artgen_engine::spec::Manifest;
use artgen_engine::store::{Storage, Stored};
use artgen_engine::transform::TransformResult;
use artgen_engine::{BuildInput, BuildOptions, BuiltArtifact, ErrorKind, SourceInput};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::drift::belongs;
use super::observe::Observed;
use super::status::{BUILD_FAILED, OWNERSHIP_CONFLICT, RECONCILIATION_FAILED, SOURCE_FETCH_FAILED};
use super::{
    Error, FIELD_MANAGER, GENERATOR_LABEL, MANAGED_BY_LABEL, ORIGIN_REVISION_KEY, Reconciler,
    inventory_digests,
};
use crate::crd::artifact_generator::InventoryEntry;
use crate::crd::external_artifact::{self, SourceRef};
use crate::crd::{Artifact, ArtifactGenerator, ExternalArtifact};
use crate::events::Severity;

/// `spec.sourceRef` of every ExternalArtifact a generator publishes (spec §8.1).
pub fn source_ref(generator: &ArtifactGenerator) -> SourceRef {
    SourceRef {
        api_version: Some(ArtifactGenerator::api_version(&()).into_owned()),
        kind: ArtifactGenerator::kind(&()).into_owned(),
        name: generator.name_any(),
        namespace: generator.namespace(),
    }
}

/// Build warnings logged one by one per build. A source tarball may hold 100,000 entries by default (spec §4), each
/// an escaping symlink, and one tenant's tree must not flood the controller's log on every rebuild.
const LOGGED_WARNINGS: usize = 20;

/// The first [`LOGGED_WARNINGS`] warnings of a build, then one line with the count of the rest.
fn log_warnings(generator: &str, warnings: &[String]) {
    for w in warnings.iter().take(LOGGED_WARNINGS) {
        tracing::warn!(generator, warning = %w, "build warning");
    }
    let more = warnings.len().saturating_sub(LOGGED_WARNINGS);
    if more > 0 {
        tracing::warn!(generator, more, "{more} more build warnings not logged");
    }
}

fn transient(message: String) -> Error {
    Error::failed(ErrorKind::Transient, RECONCILIATION_FAILED, message)
}

impl Reconciler<'_> {
    /// The flags' admission widened by the TransformPluginPolicies that select this namespace.
    fn transforms(&self) -> Option<artgen_engine::Transforms> {
        let mut t = self.ctx.settings.transforms.clone()?;
        if let Some(p) = &self.ctx.policies {
            t.admission = p.admission(&t.admission, &self.namespace);
        }
        Some(t)
    }

    /// Plugin admission (design/plugins.md §5 step 1) before anything is fetched: terminal, and checked on
    /// every pass, so revoking a digest stalls the generator even when no source changed.
    pub(super) fn admit_transforms(&self) -> Result<(), Error> {
        let spec = &self.generator.spec;
        if spec.artifacts.iter().all(|a| a.transforms.is_empty()) {
            return Ok(());
        }
        let Some(t) = self.transforms() else {
            return Ok(()); // the build reports that transforms are unsupported
        };
        let aliases: Vec<&str> = spec.sources.iter().map(|s| s.alias.as_str()).collect();
        for a in &spec.artifacts {
            for step in &a.transforms {
                artgen_engine::transform::admission::check(step, &t.admission, &aliases).map_err(
                    |(reason, detail)| {
                        self.ctx.metrics.transform_failure(reason.as_str());
                        Error::failed(
                            ErrorKind::Terminal,
                            reason.as_str(),
                            format!(
                                "{}: transform {} ({}): {detail}",
                                a.name,
                                step.name,
                                artgen_engine::transform::report::short_digest(&step.plugin.digest)
                            ),
                        )
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Returns the number of published artifacts.
    pub(super) async fn build_and_publish(&mut self, observed: &[Observed]) -> Result<usize, Error> {
        let spec = &self.generator.spec;
        let static_names = spec.path_pattern.as_deref().is_none_or(str::is_empty);
        if static_names {
            self.check_ownership(spec.artifacts.iter().map(|a| a.name.as_str()))?;
        }
        let fetch_started = Instant::now();
        let cached = self.fetch_sources(observed).await?;
        self.ctx.metrics.observe_stage("fetch", fetch_started.elapsed());

        let input = BuildInput {
            manifest: Manifest {
                api_version: ArtifactGenerator::api_version(&()).into_owned(),
                kind: ArtifactGenerator::kind(&()).into_owned(),
                metadata: artgen_engine::spec::ObjectMeta {
                    name: self.generator.name_any(),
                    namespace: Some(self.namespace.clone()),
                    other: BTreeMap::new(),
                },
                spec: (*self.generator.spec).clone(),
                status: None,
            },
            sources: cached
                .iter()
                .map(|(alias, c)| (alias.clone(), SourceInput::Dir(c.path().to_owned())))
                .collect(),
            revisions: observed
                .iter()
                .map(|o| (o.alias.clone(), o.artifact.revision.clone()))
                .collect(),
            origin_revisions: observed
                .iter()
                .filter_map(|o| {
                    let meta = o.artifact.metadata.as_ref()?;
                    Some((o.alias.clone(), meta.get(ORIGIN_REVISION_KEY)?.clone()))
                })
                .collect(),
            options: BuildOptions {
                source_limits: self.ctx.settings.source_limits.clone(),
                extract_limits: self.ctx.settings.extract_limits.clone(),
                http: self.ctx.settings.http.clone(),
                work_dir: self.ctx.settings.work_dir.clone(),
                transforms: self.transforms().map(|mut t| {
                    t.source_kinds = observed
                        .iter()
                        .map(|o| {
                            let digest = o.artifact.digest.clone().unwrap_or_default();
                            (o.alias.clone(), (o.kind.as_str().to_owned(), digest))
                        })
                        .collect();
                    t
                }),
                ..BuildOptions::default()
            },
        };
        let result = artgen_engine::build(input).await;
        if let Some(t) = &self.ctx.settings.transforms {
            self.ctx.metrics.plugin_cache(&t.host.stats());
        }
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                if let artgen_engine::Error::Transform(t) = &e {
                    self.ctx.metrics.transform_reports(&t.reports);
                    self.status().transforms = t.reports.iter().map(transform_status).take(100).collect();
                }
                return Err(self.build_error(&e));
            }
        };
        drop(cached);
        if !output.timings.transform.is_zero() {
            self.ctx
                .metrics
                .observe_stage("transform", output.timings.transform);
        }
        self.ctx.metrics.observe_stage("stage", output.timings.stage);
        self.ctx.metrics.observe_stage("pack", output.timings.pack);
        log_warnings(&super::key(self.generator), &output.warnings);
        if !static_names {
            self.check_ownership(output.artifacts.iter().map(|a| a.name.as_str()))?;
        }
        let reports: Vec<_> = output.artifacts.iter().flat_map(|a| &a.transforms).collect();
        self.ctx.metrics.transform_reports(reports.iter().copied());
        for r in reports.iter().filter(|r| r.result == TransformResult::Ignored) {
            let message = format!(
                "{}: transform {} failed and was ignored: {}",
                r.artifact, r.name, r.message
            );
            self.event(
                Severity::Warning,
                r.reason.map_or("TransformFailed", |x| x.as_str()),
                &message,
            )
            .await;
        }
        self.status().transforms = reports.into_iter().map(transform_status).take(100).collect();

        // Step 13: publish in expansion order.
        let mut inventory = Vec::with_capacity(output.artifacts.len());
        let mut changed = Vec::new();
        let old = inventory_digests(self.status());
        for art in &output.artifacts {
            let stored = self.publish(art).await.map_err(|e| {
                Error::failed(
                    e.kind(),
                    RECONCILIATION_FAILED,
                    format!("{} reconcile failed: {}", art.name, e.message()),
                )
            })?;
            let filename = stored.path.rsplit('/').next().unwrap_or_default().to_owned();
            let entry = InventoryEntry {
                name: art.name.clone(),
                namespace: self.namespace.clone(),
                digest: stored.digest.clone(),
                filename,
            };
            if old.get(&(entry.namespace.clone(), entry.name.clone())) != Some(&entry.digest) {
                changed.push((entry.clone(), art.revision.clone()));
            }
            inventory.push(entry);
        }

        // Steps 14–15.
        self.collect_orphans(&inventory).await;
        self.retention(&inventory).await;

        // Steps 16–17.
        let n = inventory.len();
        self.status().inventory = inventory;
        if !changed.is_empty() {
            let lines: Vec<String> = changed
                .iter()
                .map(|(e, _)| format!("{}/{} ({})", e.namespace, e.name, e.digest))
                .collect();
            self.event(
                Severity::Normal,
                super::status::READY,
                &format!("external artifacts reconciled: {}", lines.join("\n")),
            )
            .await;
            for (e, revision) in &changed {
                let message = format!(
                    "ExternalArtifact/{}/{} reconciled with revision {revision}",
                    e.namespace, e.name
                );
                self.event(Severity::Trace, super::status::READY, &message).await;
            }
        }
        Ok(n)
    }

    async fn fetch_sources(&self, observed: &[Observed]) -> Result<BTreeMap<String, CachedSource>, Error> {
        let referenced = artgen_engine::referenced_aliases(&self.generator.spec);
        let fail = |message: String| {
            Error::failed(
                ErrorKind::Dependency,
                SOURCE_FETCH_FAILED,
                format!("fetch sources failed: {message}"),
            )
        };
        let jobs = observed
            .iter()
            .filter(|o| referenced.contains(&o.alias))
            .map(|o| async move {
                let digest = o.artifact.digest.as_deref().ok_or_else(|| {
                    fail(format!(
                        "artifact of source '{}/{}/{}' has no digest",
                        o.kind, o.namespace, o.name
                    ))
                })?;
                let url = self.source_url(&o.artifact.url);
                let settings = &self.ctx.settings;
                let (entry, lookup) = self
                    .ctx
                    .cache
                    .get(
                        &self.ctx.http,
                        &url,
                        digest,
                        &settings.source_limits,
                        &settings.http,
                    )
                    .await
                    .map_err(|e| fail(format!("source '{}': {}", o.alias, artgen_engine::chain(&e))))?;
                self.ctx.metrics.cache_lookup(lookup);
                Ok::<_, Error>((o.alias.clone(), entry))
            });
        Ok(futures_util::future::try_join_all(jobs)
            .await?
            .into_iter()
            .collect())
    }

    /// `$SOURCE_CONTROLLER_LOCALHOST` replaces host and port of the URL (as upstream).
    fn source_url(&self, url: &str) -> String {
        let Some(host) = &self.ctx.settings.source_host_override else {
            return url.to_owned();
        };
        match reqwest::Url::parse(url) {
            Ok(u) => {
                let rest = &url[u.scheme().len() + 3..];
                let path_start = rest.find('/').unwrap_or(rest.len());
                format!("{}://{host}{}", u.scheme(), &rest[path_start..])
            }
            Err(_) => url.to_owned(),
        }
    }

    fn build_error(&self, e: &artgen_engine::Error) -> Error {
        use artgen_engine::Error as E;
        let message = artgen_engine::chain(e);
        match e.kind() {
            ErrorKind::Terminal => Error::failed(ErrorKind::Terminal, e.reason(), message),
            // Transform failures carry their own reason (design/plugins.md §8) and name the artifact; the
            // event adds the first error diagnostics.
            kind if let E::Transform(t) = e => {
                let note: Vec<String> = t
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == artgen_engine::transform::Severity::Error)
                    .take(3)
                    .map(|d| match (&d.path, d.line) {
                        (Some(p), Some(l)) => format!("{p}:{l}: {} ({})", d.message, d.code),
                        (Some(p), None) => format!("{p}: {} ({})", d.message, d.code),
                        _ => format!("{} ({})", d.message, d.code),
                    })
                    .collect();
                Error::failed(kind, e.reason(), message).with_note(note.join("\n"))
            }
            _ => {
                let name = match e {
                    E::Copy { artifact, .. } | E::Pack { artifact, .. } => artifact.clone(),
                    _ => self.generator.name_any(),
                };
                Error::failed(
                    ErrorKind::Build,
                    BUILD_FAILED,
                    format!("{name} build failed: {message}"),
                )
            }
        }
    }

    /// Spec §8.3: refuses to publish over an ExternalArtifact this generator does not own.
    fn check_ownership<'n>(&self, names: impl Iterator<Item = &'n str>) -> Result<(), Error> {
        for name in names {
            let key = kube::runtime::reflector::ObjectRef::new(name).within(&self.namespace);
            if let Some(existing) = self.ctx.external_artifacts.get(&key)
                && !belongs(&existing, self.generator)
            {
                return Err(Error::failed(
                    ErrorKind::Terminal,
                    OWNERSHIP_CONFLICT,
                    format!(
                        "ExternalArtifact {}/{name} exists and is not managed by this generator",
                        self.namespace
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn publish(&self, art: &BuiltArtifact) -> Result<Stored, Error> {
        let storage = self.ctx.storage.clone();
        let (ns, name, file) = (self.namespace.clone(), art.name.clone(), art.file.clone());
        let packed = Packed {
            digest: art.digest.clone(),
            size: art.size,
        };
        let stored = tokio::task::spawn_blocking(move || storage.put(&ns, &name, &file, &packed))
            .await
            .map_err(|e| transient(e.to_string()))?
            .map_err(|e| transient(artgen_engine::chain(&e)))?;

        let api: Api<ExternalArtifact> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let mut labels = art.labels.clone();
        labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
        labels.insert(GENERATOR_LABEL.into(), self.generator.uid().unwrap_or_default());
        let annotations = self
            .generator
            .spec
            .common_metadata
            .as_ref()
            .map(|m| m.annotations.clone())
            .unwrap_or_default();
        let owner = OwnerReference {
            api_version: ArtifactGenerator::api_version(&()).into_owned(),
            kind: ArtifactGenerator::kind(&()).into_owned(),
            name: self.generator.name_any(),
            uid: self.generator.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let body = json!({
            "apiVersion": external_artifact::API_VERSION,
            "kind": external_artifact::KIND,
            "metadata": {
                "name": art.name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner],
            },
            "spec": {"sourceRef": source_ref(self.generator)},
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let cached = self
            .ctx
            .external_artifacts
            .get(&kube::runtime::reflector::ObjectRef::new(&art.name).within(&self.namespace));
        let applied = match cached.filter(|o| self.spec_unchanged() && metadata_matches(o, &body)) {
            // The object already carries everything this apply would set, and the spec (hence the set of keys we
            // own) did not change since the last success: only the status moves. Saves a write per artifact.
            Some(o) => (*o).clone(),
            None => api
                .patch(&art.name, &params, &Patch::Apply(&body))
                .await
                .map_err(|e| {
                    Error::kube(
                        format!("applying ExternalArtifact {}/{}", self.namespace, art.name),
                        e,
                    )
                })?,
        };

        let generation = applied.metadata.generation.unwrap_or_default();
        let previous = applied
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let ready = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Succeeded".into(),
            message: "Artifact is ready".into(),
            observed_generation: Some(generation),
            last_transition_time: previous
                .filter(|c| c.status == "True" && c.reason == "Succeeded")
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(Timestamp::now())),
        };
        let mut artifact = Artifact {
            path: stored.path.clone(),
            url: stored.url.clone(),
            revision: art.revision.clone(),
            digest: Some(stored.digest.clone()),
            last_update_time: Time(Timestamp::now()),
            size: i64::try_from(stored.size).ok(),
            metadata: art
                .origin_revision
                .as_ref()
                .map(|r| BTreeMap::from([(ORIGIN_REVISION_KEY.to_owned(), r.clone())])),
        };
        // A rebuild that gives the same artifact keeps its lastUpdateTime (the artifact did not change), and
        // when the Ready condition is the same too there is nothing to write.
        let current = applied.status.as_ref().and_then(|s| s.artifact.as_ref());
        if let Some(c) = current {
            artifact.last_update_time = c.last_update_time.clone();
            if *c == artifact && previous == Some(&ready) {
                return Ok(stored);
            }
            if *c != artifact {
                artifact.last_update_time = Time(Timestamp::now());
            }
        }
        let status = json!({
            "apiVersion": external_artifact::API_VERSION,
            "kind": external_artifact::KIND,
            "metadata": {"name": art.name, "namespace": self.namespace},
            "status": {"artifact": artifact, "conditions": [ready]},
        });
        api.patch_status(&art.name, &params, &Patch::Apply(&status))
            .await
            .map_err(|e| {
                Error::kube(
                    format!(
                        "applying status of ExternalArtifact {}/{}",
                        self.namespace, art.name
                    ),
                    e,
                )
            })?;
        Ok(stored)
    }

    /// Whether the last successful pass saw this generation (the pass is for sources or drift, not a spec edit).
    fn spec_unchanged(&self) -> bool {
        let status = self.generator.status.clone().unwrap_or_default();
        super::status::get(&status.conditions, super::status::READY).is_some_and(|c| {
            c.reason == super::status::SUCCEEDED && c.observed_generation == Some(self.generation)
        })
    }

    /// Step 14: ExternalArtifacts of this generator (inventory entries and labelled objects) that are not in
    /// the new set lose their object and storage directory.
    async fn collect_orphans(&self, current: &[InventoryEntry]) {
        let keep: BTreeSet<&str> = current.iter().map(|e| e.name.as_str()).collect();
        let mut orphans: BTreeSet<String> = self
            .generator
            .status
            .as_ref()
            .map(|s| s.inventory.iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default();
        orphans.extend(
            self.ctx
                .external_artifacts
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(&self.namespace) && belongs(o, self.generator))
                .map(|o| o.name_any()),
        );
        orphans.retain(|n| !keep.contains(n.as_str()));
        if !orphans.is_empty() {
            self.delete_artifacts(orphans).await;
        }
    }

    /// Step 15 (spec §10.3): retention in every current artifact directory; failures are reported, not fatal.
    async fn retention(&self, current: &[InventoryEntry]) {
        let storage = self.ctx.storage.clone();
        let (ttl, records) = (
            self.ctx.settings.retention_ttl,
            self.ctx.settings.retention_records,
        );
        let entries = current.to_vec();
        let failures = tokio::task::spawn_blocking(move || {
            entries
                .iter()
                .filter_map(|e| {
                    storage
                        .retention_gc(&e.namespace, &e.name, &e.filename, ttl, records)
                        .err()
                        .map(|err| {
                            format!(
                                "{}: {}",
                                Storage::relative_path(&e.namespace, &e.name, ""),
                                artgen_engine::chain(&err)
                            )
                        })
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for f in failures {
            self.event(Severity::Warning, "GarbageCollectionFailed", &f).await;
        }
    }
}

/// Does `object` already have every label, annotation and owner reference of the apply `body`, and its spec?
fn metadata_matches(object: &ExternalArtifact, body: &serde_json::Value) -> bool {
    let Ok(current) = serde_json::to_value(object) else {
        return false;
    };
    let meta = &body["metadata"];
    let contains = |key: &str| {
        meta[key].as_object().is_none_or(|want| {
            want.iter()
                .all(|(k, v)| current["metadata"][key].get(k) == Some(v))
        })
    };
    let owners_present = meta["ownerReferences"].as_array().is_none_or(|want| {
        want.iter().all(|w| {
            current["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|have| have.contains(w))
        })
    });
    contains("labels")
        && contains("annotations")
        && owners_present
        && current["spec"]["sourceRef"] == body["spec"]["sourceRef"]
        && object.metadata.deletion_timestamp.is_none()
}

/// A transform report as a status entry (design/plugins.md §2): error and warning diagnostics only, capped.
fn transform_status(
    r: &artgen_engine::transform::TransformReport,
) -> crate::crd::artifact_generator::TransformStatus {
    use crate::crd::artifact_generator::{Diagnostic, Severity, TransformResult, TransformStatus};
    use artgen_engine::transform::{Severity as S, TransformResult as R};
    TransformStatus {
        artifact: r.artifact.clone(),
        name: r.name.clone(),
        plugin_digest: r.plugin_digest.clone(),
        result: match r.result {
            R::Succeeded => TransformResult::Succeeded,
            R::Failed => TransformResult::Failed,
            R::Ignored => TransformResult::Ignored,
        },
        reason: r.reason.map(|x| x.as_str().to_owned()).unwrap_or_default(),
        fuel_used: Some(r.fuel_used),
        peak_memory_bytes: Some(r.peak_memory_bytes),
        duration_millis: u64::try_from(r.duration.as_millis()).ok(),
        diagnostics: r
            .diagnostics
            .iter()
            .filter(|d| d.severity != S::Info)
            .take(5)
            .map(|d| Diagnostic {
                severity: if d.severity == S::Error {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                code: d.code.clone(),
                message: d.message.chars().filter(|c| !c.is_control()).take(256).collect(),
                path: d.path.clone(),
                line: d.line,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::{LOGGED_WARNINGS, log_warnings};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn logged(warnings: &[String]) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || log_warnings("ns/gen", warnings));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn warnings_beyond_the_cap_are_counted_not_logged() {
        let warnings: Vec<String> = (0..100_000).map(|i| format!("skipping symlink 'l{i}'")).collect();
        let lines = logged(&warnings);
        assert_eq!(lines.len(), LOGGED_WARNINGS + 1, "{lines:#?}");
        assert!(lines[0].contains("skipping symlink 'l0'") && lines[0].contains("ns/gen"));
        let last_logged = format!("skipping symlink 'l{}'", LOGGED_WARNINGS - 1);
        assert!(lines[LOGGED_WARNINGS - 1].contains(&last_logged));
        let rest = 100_000 - LOGGED_WARNINGS;
        assert!(lines[LOGGED_WARNINGS].contains(&format!("{rest} more build warnings not logged")));
    }

    #[test]
    fn warnings_up_to_the_cap_are_all_logged_without_a_summary() {
        let warnings: Vec<String> = (0..LOGGED_WARNINGS).map(|i| format!("w{i}")).collect();
        let lines = logged(&warnings);
        assert_eq!(lines.len(), LOGGED_WARNINGS);
        assert!(lines.iter().all(|l| !l.contains("not logged")));
        assert!(logged(&[]).is_empty());
    }
}
