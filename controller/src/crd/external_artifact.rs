//! A typed view of Flux's `source.toolkit.fluxcd.io/v1` ExternalArtifact (spec §8.1), the object artgen
//! publishes per artifact. The CRD belongs to source-controller, so this type implements [`kube::Resource`] by
//! hand instead of deriving `CustomResource`: nothing here can generate, print or apply that CRD. Unknown
//! fields are ignored on read, so newer Flux versions stay readable.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::core::TypeMeta;
use serde::{Deserialize, Serialize};

/// `source.toolkit.fluxcd.io`: the group of every Flux source kind.
pub const GROUP: &str = "source.toolkit.fluxcd.io";
/// The served version artgen reads and writes.
pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "source.toolkit.fluxcd.io/v1";
pub const KIND: &str = "ExternalArtifact";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalArtifact {
    /// `apiVersion` and `kind`: required in a server-side apply body.
    #[serde(flatten, default)]
    pub types: Option<TypeMeta>,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ExternalArtifactSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExternalArtifactStatus>,
}

impl ExternalArtifact {
    /// An object with `apiVersion`/`kind` set, ready for server-side apply.
    pub fn new(name: &str, namespace: &str, spec: ExternalArtifactSpec) -> Self {
        ExternalArtifact {
            types: Some(TypeMeta {
                api_version: API_VERSION.into(),
                kind: KIND.into(),
            }),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactSpec {
    /// The object that produces this artifact: for artgen, the ArtifactGenerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

/// Flux's `meta.NamespacedObjectKindReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalArtifactStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Flux's `meta.Artifact`: what every source kind (and ExternalArtifact) reports in `status.artifact`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Storage path relative to the storage root (`externalartifact/<ns>/<name>/<file>`).
    pub path: String,
    /// HTTP address the archive is served at.
    pub url: String,
    /// e.g. `main@sha1:<hex>`, or `latest@sha256:<hex>` for a generated artifact.
    pub revision: String,
    /// `sha256:<hex>` of the archive; absent in objects written by old controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub last_update_time: Time,
    /// Archive size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl kube::Resource for ExternalArtifact {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        API_VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "externalartifacts".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
