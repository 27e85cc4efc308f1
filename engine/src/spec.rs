//! The ArtifactGenerator API (`source.extensions.fluxcd.io/v1beta1`) as serde types.
//!
//! Defined once here so the CLI and the controller's CRD cannot drift apart (architecture §3). Every
//! struct rejects unknown fields: `artgen validate` must refuse what `kubectl apply` refuses (spec §2.6).
//!
//! With feature `schema` the types also derive `schemars::JsonSchema`, and the `schemars(...)` attributes carry
//! the admission rules of spec §2.1–2.4 and design/plugins.md §2 (the same constants [`crate::validate`] checks),
//! so the CRD the controller generates enforces what [`crate::validate::admission`] enforces
//! (`controller/tests/crd.rs` holds both to that against a real apiserver).

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

/// ArtifactGeneratorSpec defines the desired state of ArtifactGenerator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// The CEL rule of §2.1, verbatim from upstream (`\\.` is a backslash escaped for the CEL string literal).
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": r"has(self.pathPattern) && size(self.pathPattern) > 0 || self.artifacts.all(a, a.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))",
    "message": crate::validate::CEL_NAMES_MESSAGE,
}])))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactGeneratorSpec {
    /// References to the Flux sources the artifacts are built from.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1000)))]
    pub sources: Vec<SourceReference>,
    /// The artifacts to generate (templates when pathPattern is set).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1000)))]
    pub artifacts: Vec<OutputArtifact>,
    /// Directory discovery pattern `@<alias>/<pattern>`; its `{captures}` are placeholders in the artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 1024), pattern(crate::validate::SOURCE_REF_PATTERN))
    )]
    pub path_pattern: Option<String>,
    /// Labels and annotations set on every generated ExternalArtifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
}

/// Labels and annotations for the generated objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommonMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A reference to a Flux source object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceReference {
    /// Name of the source within this generator, used as `@alias`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 63), pattern(crate::validate::ALIAS_PATTERN))
    )]
    pub alias: String,
    pub kind: SourceKind,
    /// Name of the source object (any Kubernetes object name; upstream rejects dots).
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(min = 1, max = 253),
            pattern(crate::validate::DNS1123_SUBDOMAIN_PATTERN)
        )
    )]
    pub name: String,
    /// Namespace of the source object; defaults to the generator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 63), pattern(crate::validate::DNS1123_LABEL_PATTERN))
    )]
    pub namespace: Option<String>,
}

/// The Flux source kinds a generator may read (`source.toolkit.fluxcd.io/v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// One generated ExternalArtifact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputArtifact {
    /// Name of the ExternalArtifact; may use `{captures}` when pathPattern is set.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    /// `@alias`: use that source's revision as the artifact revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 64), pattern(crate::validate::ALIAS_REF_PATTERN))
    )]
    pub revision: Option<String>,
    /// `@alias`: set `org.opencontainers.image.revision` from that source's origin revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 64), pattern(crate::validate::ALIAS_REF_PATTERN))
    )]
    pub origin_revision: Option<String>,
    /// Copy operations, applied in order.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub copy: Vec<CopyOperation>,
    /// artgen only: WASI transforms run after the copy operations (design/plugins.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub transforms: Vec<Transform>,
}

/// Copies files from a source into the artifact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyOperation {
    /// `@alias/<path or glob>`; an empty path is the whole source.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 1024), pattern(crate::validate::SOURCE_REF_PATTERN))
    )]
    pub from: String,
    /// `@artifact/<path>`; an empty path is the artifact root.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 1024), pattern(crate::validate::ARTIFACT_REF_PATTERN))
    )]
    pub to: String,
    /// Glob patterns of files and directories not to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 100)))]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "Overwrite")))]
    pub strategy: Option<Strategy>,
    /// A missing, unmatched or all-excluded source is a no-op instead of an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    pub optional: bool,
}

impl CopyOperation {
    pub fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or_default()
    }
}

/// How copied files meet files already in the artifact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Strategy {
    #[default]
    Overwrite,
    Merge,
    Extract,
}

/// One transform step (design/plugins.md §2). Parsed and validated now; executed by the plugin host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transform {
    /// Step name, unique within the artifact.
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 63), pattern(crate::validate::DNS1123_LABEL_PATTERN))
    )]
    pub name: String,
    pub plugin: PluginRef,
    /// Free-form configuration passed to the plugin as canonical JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("type" = "object", "x-kubernetes-preserve-unknown-fields" = true))
    )]
    pub config: Option<serde_json::Value>,
    /// Aliases of sources mounted read-only at `/sources/<alias>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TransformLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "Fail")))]
    pub failure_policy: Option<FailurePolicy>,
}

/// The plugin a transform runs, pinned by digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub source: PluginSource,
    /// sha256 of the `.wasm` bytes.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::validate::DIGEST_PATTERN)))]
    pub digest: String,
}

/// Where the `.wasm` file is: a path inside a source's artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSource {
    pub alias: String,
    pub path: String,
}

/// Quantities and durations stay strings (`20G`, `30s`, `256Mi`) as in Kubernetes manifests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// Structural schemas spell "integer or string" as this extension (like k8s-openapi's `Quantity`); the
// untagged enum's own `anyOf` is not structural.
#[cfg_attr(feature = "schema", schemars(transform = |s: &mut schemars::Schema| {
    *s = schemars::json_schema!({"x-kubernetes-int-or-string": true});
}))]
#[serde(untagged)]
pub enum Quantity {
    Int(u64),
    Str(String),
}

/// `Ignore`: a failing step's changes are discarded and the build goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

/// Parses a manifest, naming the field at fault on error (`spec.artifacts[0].copy[1].optional: …`).
///
/// The YAML is read into a JSON value first, so types are as strict as the apiserver's: a YAML scalar
/// such as `1` or `true` never silently becomes a string field.
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let yaml: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(yaml).map_err(|e| format!("not representable as JSON: {e}"))?;
    serde_path_to_error::deserialize(json).map_err(|e| {
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
    fn scalars_are_not_coerced_to_strings() {
        let err = parse_manifest(
            "apiVersion: v\nkind: k\nspec:\n  sources: []\n  artifacts: []\n  commonMetadata: {labels: {a: 1}}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("spec.commonMetadata.labels.a"), "{err}");
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
