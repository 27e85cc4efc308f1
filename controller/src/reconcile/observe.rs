//! Step 6–7 inputs: the state of every referenced source (spec §9.2) and `observedSourcesDigest` (§7).

use artgen_engine::ErrorKind;
use artgen_engine::spec::SourceKind;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use sha2::{Digest, Sha256};

use super::status::SOURCE_FETCH_FAILED;
use super::{Error, Reconciler};
use crate::crd::sources::plural;
use crate::crd::{Artifact, FluxSource};

/// A source's artifact as observed at the start of a pass.
#[derive(Clone, Debug)]
pub struct Observed {
    pub alias: String,
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
    pub artifact: Artifact,
}

/// `sha256:` + hex(sha256(sorted parts joined by `|`)), one part `<alias>=[digest=…,revision=…,url=…]` per
/// source (spec §7; upstream's `HashObservedSources`).
pub fn sources_digest(observed: &[Observed]) -> String {
    let mut parts: Vec<String> = observed
        .iter()
        .map(|o| {
            format!(
                "{}=[digest={},revision={},url={}]",
                o.alias,
                o.artifact.digest.as_deref().unwrap_or_default(),
                o.artifact.revision,
                o.artifact.url
            )
        })
        .collect();
    parts.sort();
    format!("sha256:{}", hex::encode(Sha256::digest(parts.join("|"))))
}

impl Reconciler<'_> {
    /// Every source of the spec, in spec order; the first failure is a dependency error.
    pub(super) async fn observe_sources(&self) -> Result<Vec<Observed>, Error> {
        let mut out = Vec::with_capacity(self.generator.spec.sources.len());
        for src in &self.generator.spec.sources {
            let namespace = src.namespace.clone().unwrap_or_else(|| self.namespace.clone());
            let object = self
                .source(src.kind, &namespace, &src.name)
                .await
                .map_err(|message| {
                    Error::failed(
                        ErrorKind::Dependency,
                        SOURCE_FETCH_FAILED,
                        format!("get sources failed: {message}"),
                    )
                })?;
            let Some(artifact) = object.artifact().cloned() else {
                return Err(Error::failed(
                    ErrorKind::Dependency,
                    SOURCE_FETCH_FAILED,
                    format!(
                        "get sources failed: source '{}/{namespace}/{}' is not ready",
                        src.kind, src.name
                    ),
                ));
            };
            out.push(Observed {
                alias: src.alias.clone(),
                kind: src.kind,
                namespace,
                name: src.name.clone(),
                artifact,
            });
        }
        Ok(out)
    }

    /// One source object, from the watch cache or (`DirectSourceFetch`) the API. The error is the condition
    /// text: the API's NotFound message, or `unable to get source '<ns>/<name>': …`.
    async fn source(&self, kind: SourceKind, namespace: &str, name: &str) -> Result<FluxSource, String> {
        let not_found = || format!("{}.source.toolkit.fluxcd.io \"{name}\" not found", plural(kind));
        if let Some(stores) = &self.ctx.sources {
            if kind == SourceKind::ExternalArtifact {
                let key = ObjectRef::new(name).within(namespace);
                let ea = self.ctx.external_artifacts.get(&key).ok_or_else(not_found)?;
                return Ok(FluxSource {
                    metadata: ea.metadata.clone(),
                    status: ea.status.as_ref().map(|s| crate::crd::sources::SourceStatus {
                        artifact: s.artifact.clone(),
                        conditions: s.conditions.clone(),
                        observed_generation: None,
                    }),
                });
            }
            let store = stores.stores.get(&kind).ok_or_else(not_found)?;
            let key = ObjectRef::new_with(name, kind).within(namespace);
            return store.get(&key).map(|o| (*o).clone()).ok_or_else(not_found);
        }
        let api: Api<FluxSource> = Api::namespaced_with(self.ctx.client.clone(), namespace, &kind);
        match api.get(name).await {
            Ok(o) => Ok(o),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(s.message),
            Err(e) => Err(format!(
                "unable to get source '{namespace}/{name}': {}",
                artgen_engine::chain(&e)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn observed(alias: &str, digest: &str, revision: &str, url: &str) -> Observed {
        Observed {
            alias: alias.into(),
            kind: SourceKind::GitRepository,
            namespace: "ns".into(),
            name: alias.into(),
            artifact: Artifact {
                path: String::new(),
                url: url.into(),
                revision: revision.into(),
                digest: Some(digest.into()),
                last_update_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                size: None,
                metadata: None,
            },
        }
    }

    /// The vector of cases/controller.yaml `observed-sources-digest-vector` (upstream's TestHashObservedSources).
    #[test]
    fn observed_sources_digest_vector() {
        let sources = [
            observed(
                "source2",
                "sha256:966a0b26898be9448d927312d81f9221edac224e383f131a6451f22b918bd66d",
                "main@sha1:4b94f17f5ceb13341bdfe15d4d9249bb0a3a011e",
                "https://example.com/repo2.git",
            ),
            observed(
                "source1",
                "sha256:1b1452058f747245f79b4d45d589ad5693c516987e678d13231ddfdf26979208",
                "main@sha1:28deef923f4da39062d2902cb640011a36d52e19",
                "https://example.com/repo1.git",
            ),
        ];
        assert_eq!(
            sources_digest(&sources),
            "sha256:0dd16ff06ef2efe7bbc5b6a356eb9f3b59467d76617969eb7bb34e094abbd58e"
        );
    }
}
