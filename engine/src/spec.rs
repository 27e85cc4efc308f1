//! The ArtifactGenerator API (`source.extensions.fluxcd.io/v1beta1`) as serde types.
//!
//! Defined once here so the CLI and the controller's CRD cannot drift apart (architecture §3). Every
//! struct rejects unknown fields: `artgen validate` must refuse what `kubectl apply` refuses (spec §2.6).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub const API_GROUP: &str = "source.extensions.fluxcd.io";
pub const API_VERSION: &str = "source.extensions.fluxcd.io/v1beta1";
pub const KIND: &str = "ArtifactGenerator";
/// `to` prefix of every copy operation.
pub const ARTIFACT_PREFIX: &str = "@artifact/";

/// A whole manifest as applied to a cluster. Only `metadata.name`, `metadata.namespace` and `spec` are used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ArtifactGeneratorSpec,
    /// Accepted (e.g. from `kubectl get -o yaml`) and ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// The subset of Kubernetes object metadata the engine reads; other metadata fields are accepted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactGeneratorSpec {
    pub sources: Vec<SourceReference>,
    pub artifacts: Vec<OutputArtifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommonMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceReference {
    pub alias: String,
    pub kind: SourceKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The Flux source kinds a generator may read (`source.toolkit.fluxcd.io/v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SourceKind {
    Bucket,
    GitRepository,
    OCIRepository,
    HelmChart,
    ExternalArtifact,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Bucket,
        SourceKind::GitRepository,
        SourceKind::OCIRepository,
        SourceKind::HelmChart,
        SourceKind::ExternalArtifact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Bucket => "Bucket",
            SourceKind::GitRepository => "GitRepository",
            SourceKind::OCIRepository => "OCIRepository",
            SourceKind::HelmChart => "HelmChart",
            SourceKind::ExternalArtifact => "ExternalArtifact",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputArtifact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_revision: Option<String>,
    pub copy: Vec<CopyOperation>,
    /// artgen only: WASI transforms run after the copy operations (design/plugins.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyOperation {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl CopyOperation {
    pub fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    #[default]
    Overwrite,
    Merge,
    Extract,
}

/// One transform step (design/plugins.md §2). Parsed and validated now; executed by the plugin host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transform {
    pub name: String,
    pub plugin: PluginRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TransformLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub source: PluginSource,
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSource {
    pub alias: String,
    pub path: String,
}

/// Quantities and durations stay strings (`20G`, `30s`, `256Mi`) as in Kubernetes manifests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_files: Option<u64>,
}

/// A Kubernetes quantity: accepted as a string or a bare number, like `resource.Quantity`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Int(u64),
    Str(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

/// Parses a manifest, naming the field at fault on error (`spec.artifacts[0].copy[1].optional: …`).
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let de = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_manifest(
            "apiVersion: source.extensions.fluxcd.io/v1beta1\nkind: ArtifactGenerator\nmetadata: {name: x}\n\
             spec:\n  sources: [{alias: a, kind: GitRepository, name: r}]\n  artifacts:\n  - name: o\n    copy:\n    \
             - {from: '@a/x', to: '@artifact/', optional: 'yes'}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("spec.artifacts[0].copy[0].optional"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = parse_manifest(
            "apiVersion: v\nkind: k\nspec:\n  sources: []\n  artifacts: [{name: o, copy: [], stratgy: x}]\n",
        )
        .unwrap_err();
        assert!(err.contains("stratgy"), "{err}");
    }
}
