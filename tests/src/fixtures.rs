//! Plays Flux's source-controller for controller tests: creates GitRepository, OCIRepository, Bucket, HelmChart
//! and ExternalArtifact objects (`source.toolkit.fluxcd.io/v1`), publishes tar.gz artifacts on the loopback
//! [`SourceServer`] and writes `status.artifact` (url, digest, revision, size, path, lastUpdateTime, metadata)
//! and a `Ready` condition through the status subresource, as source-controller does.
//!
//! ```no_run
//! # async fn t(client: kube::Client) -> Result<(), artgen_e2e::control_plane::Error> {
//! use artgen_e2e::fixtures::{SourceKind, Sources};
//! use artgen_e2e::source_server::SourceServer;
//! let server = SourceServer::start().unwrap();
//! let sources = Sources::new(client, &server, "t-my-test-0a1b2c");
//! sources.create(SourceKind::GitRepository, "app").await?;
//! let first = sources.publish_files(SourceKind::GitRepository, "app", "main@sha1:1111", &[("a.yaml", b"a: 1\n")]).await?;
//! let second = sources.publish_files(SourceKind::GitRepository, "app", "main@sha1:2222", &[("a.yaml", b"a: 2\n")]).await?;
//! # let _ = (first, second); Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::control_plane::Error;
use crate::source_server::SourceServer;

pub const GROUP: &str = "source.toolkit.fluxcd.io";
pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "source.toolkit.fluxcd.io/v1";
/// The field manager source-controller's status writes would have.
pub const FIELD_MANAGER: &str = "source-controller";

/// The Flux source kinds an ArtifactGenerator can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    GitRepository,
    OciRepository,
    Bucket,
    HelmChart,
    ExternalArtifact,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::GitRepository,
        SourceKind::OciRepository,
        SourceKind::Bucket,
        SourceKind::HelmChart,
        SourceKind::ExternalArtifact,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "GitRepository",
            SourceKind::OciRepository => "OCIRepository",
            SourceKind::Bucket => "Bucket",
            SourceKind::HelmChart => "HelmChart",
            SourceKind::ExternalArtifact => "ExternalArtifact",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            SourceKind::GitRepository => "gitrepositories",
            SourceKind::OciRepository => "ocirepositories",
            SourceKind::Bucket => "buckets",
            SourceKind::HelmChart => "helmcharts",
            SourceKind::ExternalArtifact => "externalartifacts",
        }
    }

    /// The kind named as in a `sourceRef.kind`.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.kind() == kind)
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, self.kind()), self.plural())
    }

    pub fn api(self, client: Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, namespace, &self.api_resource())
    }

    /// A spec that passes the CRD's validation; nothing reconciles it.
    pub fn minimal_spec(self, name: &str) -> Value {
        match self {
            SourceKind::GitRepository => json!({
                "interval": "1h",
                "url": format!("https://git.example.invalid/{name}.git"),
                "ref": {"branch": "main"},
            }),
            SourceKind::OciRepository => json!({
                "interval": "1h",
                "url": format!("oci://registry.example.invalid/{name}"),
                "ref": {"tag": "latest"},
            }),
            SourceKind::Bucket => json!({
                "interval": "1h",
                "bucketName": name,
                "endpoint": "s3.example.invalid",
            }),
            SourceKind::HelmChart => json!({
                "interval": "1h",
                "chart": name,
                "sourceRef": {"kind": "HelmRepository", "name": "charts"},
            }),
            SourceKind::ExternalArtifact => json!({
                "sourceRef": {"apiVersion": "example.invalid/v1", "kind": "Producer", "name": name},
            }),
        }
    }

    /// The directory source-controller stores this kind's artifacts under (`gitrepository/<ns>/<name>/…`).
    fn storage_dir(self) -> String {
        self.kind().to_ascii_lowercase()
    }

    /// ExternalArtifact's status has no `observedGeneration`.
    fn has_observed_generation(self) -> bool {
        self != SourceKind::ExternalArtifact
    }
}

/// What `status.artifact` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub url: String,
    /// `sha256:<hex>` of the tarball.
    pub digest: String,
    pub revision: String,
    pub size: u64,
    /// Relative path in source-controller's storage.
    pub path: String,
    /// RFC 3339, whole seconds, as `metav1.Time` serialises.
    pub last_update_time: String,
    pub metadata: BTreeMap<String, String>,
}

impl Artifact {
    pub fn to_json(&self) -> Value {
        let mut artifact = json!({
            "url": self.url,
            "digest": self.digest,
            "revision": self.revision,
            "size": self.size,
            "path": self.path,
            "lastUpdateTime": self.last_update_time,
        });
        if !self.metadata.is_empty() {
            artifact["metadata"] = json!(self.metadata);
        }
        artifact
    }

    /// `status.artifact` of an object, if it has one.
    pub fn of(object: &DynamicObject) -> Option<Artifact> {
        let a = object.data.get("status")?.get("artifact")?;
        let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Artifact {
            url: s("url")?,
            digest: s("digest").unwrap_or_default(),
            revision: s("revision").unwrap_or_default(),
            size: a.get("size").and_then(Value::as_u64).unwrap_or_default(),
            path: s("path").unwrap_or_default(),
            last_update_time: s("lastUpdateTime").unwrap_or_default(),
            metadata: a
                .get("metadata")
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default(),
        })
    }
}

/// Source objects in one namespace, with their artifacts on one [`SourceServer`].
pub struct Sources<'a> {
    client: Client,
    server: &'a SourceServer,
    namespace: String,
}

impl<'a> Sources<'a> {
    pub fn new(client: Client, server: &'a SourceServer, namespace: &str) -> Self {
        Self {
            client,
            server,
            namespace: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn api(&self, kind: SourceKind) -> Api<DynamicObject> {
        kind.api(self.client.clone(), &self.namespace)
    }

    /// Creates a source object with [`SourceKind::minimal_spec`].
    pub async fn create(&self, kind: SourceKind, name: &str) -> Result<DynamicObject, Error> {
        self.create_with_spec(kind, name, kind.minimal_spec(name)).await
    }

    pub async fn create_with_spec(
        &self,
        kind: SourceKind,
        name: &str,
        spec: Value,
    ) -> Result<DynamicObject, Error> {
        let mut object = DynamicObject::new(name, &kind.api_resource()).within(&self.namespace);
        object.data = json!({ "spec": spec });
        self.api(kind)
            .create(&PostParams::default(), &object)
            .await
            .map_err(|source| Error::Api {
                what: format!("create {} {}/{name}", kind.kind(), self.namespace),
                source,
            })
    }

    /// Packs `files` into a tar.gz and [`publish`](Self::publish)es it.
    pub async fn publish_files(
        &self,
        kind: SourceKind,
        name: &str,
        revision: &str,
        files: &[(&str, &[u8])],
    ) -> Result<Artifact, Error> {
        self.publish(kind, name, revision, tarball(files)?, BTreeMap::new())
            .await
    }

    /// Serves `tarball` at `/<kind>/<ns>/<name>/<sha256 hex>.tar.gz` and sets the object's `status.artifact`
    /// to it, with `Ready=True`. Returns what was written.
    pub async fn publish(
        &self,
        kind: SourceKind,
        name: &str,
        revision: &str,
        tarball: Vec<u8>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Artifact, Error> {
        let digest = sha256_digest(&tarball);
        let hex = digest.trim_start_matches("sha256:");
        let path = format!("{}/{}/{name}/{hex}.tar.gz", kind.storage_dir(), self.namespace);
        let size = tarball.len() as u64;
        let url = self.server.put(&format!("/{path}"), tarball);
        let artifact = Artifact {
            url,
            digest,
            revision: revision.to_owned(),
            size,
            path,
            last_update_time: now_rfc3339(),
            metadata,
        };
        self.set_artifact(kind, name, &artifact).await?;
        Ok(artifact)
    }

    /// Writes `status.artifact` and `Ready=True` through the status subresource (server-side apply as
    /// `source-controller`). The URL is used as it is: it may point anywhere, for example at a 404.
    pub async fn set_artifact(
        &self,
        kind: SourceKind,
        name: &str,
        artifact: &Artifact,
    ) -> Result<DynamicObject, Error> {
        let message = format!("stored artifact for revision '{}'", artifact.revision);
        let mut status = json!({ "artifact": artifact.to_json() });
        self.apply_status(kind, name, &mut status, "True", "Succeeded", &message)
            .await
    }

    /// Marks the source not ready (`Ready=False`) and removes its artifact, as after a failed first fetch.
    pub async fn set_not_ready(
        &self,
        kind: SourceKind,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<DynamicObject, Error> {
        let mut status = json!({});
        self.apply_status(kind, name, &mut status, "False", reason, message)
            .await
    }

    async fn apply_status(
        &self,
        kind: SourceKind,
        name: &str,
        status: &mut Value,
        ready: &str,
        reason: &str,
        message: &str,
    ) -> Result<DynamicObject, Error> {
        let api = self.api(kind);
        let what = |verb: &str| format!("{verb} {} {}/{name}", kind.kind(), self.namespace);
        let current = api.get(name).await.map_err(|source| Error::Api {
            what: what("get"),
            source,
        })?;
        let generation = current.metadata.generation.unwrap_or(1);
        let mut condition = json!({
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_rfc3339(),
            "observedGeneration": generation,
        });
        // Keep lastTransitionTime when the status does not change, like a real controller.
        if let Some(old) = current
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            })
            && old.get("status").and_then(Value::as_str) == Some(ready)
            && let Some(t) = old.get("lastTransitionTime")
        {
            condition["lastTransitionTime"] = t.clone();
        }
        status["conditions"] = json!([condition]);
        if kind.has_observed_generation() {
            status["observedGeneration"] = json!(generation);
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": kind.kind(),
            "metadata": { "name": name, "namespace": self.namespace },
            "status": status,
        });
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Api {
            what: what("apply status of"),
            source,
        })
    }

    /// The object's current `status.artifact`.
    pub async fn artifact(&self, kind: SourceKind, name: &str) -> Result<Option<Artifact>, Error> {
        let object = self.api(kind).get(name).await.map_err(|source| Error::Api {
            what: format!("get {} {}/{name}", kind.kind(), self.namespace),
            source,
        })?;
        Ok(Artifact::of(&object))
    }

    /// How often the artifact has been downloaded from the server.
    pub fn downloads(&self, artifact: &Artifact) -> u64 {
        self.server.hits(&format!("/{}", artifact.path))
    }
}

/// A deterministic tar.gz of `files` (regular files, mode 0644, mtime 0, sorted as given).
pub fn tarball(files: &[(&str, &[u8])]) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: "<tarball>".into(),
        source,
    };
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *contents).map_err(io)?;
    }
    let mut gz = builder.into_inner().map_err(io)?;
    gz.flush().map_err(io)?;
    gz.finish().map_err(io)
}

/// `sha256:<hex>`, the digest format of `status.artifact.digest`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
