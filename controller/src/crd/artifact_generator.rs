//! The ArtifactGenerator CRD (`source.extensions.fluxcd.io/v1beta1`, spec §1–2). The spec is the engine's
//! [`ArtifactGeneratorSpec`], so the CRD, the controller and `artgen build`/`validate` read the same fields;
//! its admission rules (patterns, lengths, the CEL rule) are `schemars` attributes in `artgen_engine::spec`.

use std::ops::{Deref, DerefMut};

use artgen_engine::spec::ArtifactGeneratorSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The generator's spec, exactly the engine's type: a transparent wrapper only because `CustomResource` must be
// derived on a type of this crate. (A plain comment: a doc comment would replace the spec's description.)
// clippy takes the repeated `type_ = "string"` of the printer columns for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.extensions.fluxcd.io",
    version = "v1beta1",
    kind = "ArtifactGenerator",
    plural = "artifactgenerators",
    singular = "artifactgenerator",
    namespaced,
    status = "ArtifactGeneratorStatus",
    shortname = "ag",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-sources",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    ),
    annotation("kustomize.toolkit.fluxcd.io/substitute", "disabled"),
    doc = "ArtifactGenerator builds ExternalArtifacts from the artifacts of Flux sources."
)]
#[serde(transparent)]
pub struct GeneratorSpec(pub ArtifactGeneratorSpec);

impl Deref for GeneratorSpec {
    type Target = ArtifactGeneratorSpec;

    fn deref(&self) -> &ArtifactGeneratorSpec {
        &self.0
    }
}

impl DerefMut for GeneratorSpec {
    fn deref_mut(&mut self) -> &mut ArtifactGeneratorSpec {
        &mut self.0
    }
}

impl From<ArtifactGeneratorSpec> for GeneratorSpec {
    fn from(spec: ArtifactGeneratorSpec) -> Self {
        GeneratorSpec(spec)
    }
}

/// Observed state (spec §1, §8.2, §9.3; design/plugins.md §2). Every field is optional on the wire, as
/// upstream's, so a status written by source-watcher reads back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactGeneratorStatus {
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The published ExternalArtifacts, in expansion order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Hash of the state of every referenced source at the last successful build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_sources_digest: Option<String>,
    /// The last handled `reconcile.fluxcd.io/requestedAt` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// artgen only: one entry per transform step of the last build attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub transforms: Vec<TransformStatus>,
}

/// A published ExternalArtifact (spec §8.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub name: String,
    pub namespace: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    /// Base name of the storage file.
    pub filename: String,
}

/// The outcome of one transform step (design/plugins.md §2). Counters are absent when the step never ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformStatus {
    /// The artifact (after pathPattern expansion) the step belongs to.
    pub artifact: String,
    /// The step's `name`.
    pub name: String,
    pub plugin_digest: String,
    pub result: TransformResult,
    /// The failure reason (design/plugins.md §8); empty on success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_millis: Option<u64>,
    /// Error and warning diagnostics only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TransformResult {
    #[default]
    Succeeded,
    Failed,
    Ignored,
}

/// A plugin diagnostic, sanitised (control characters removed, message at most 256 characters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[schemars(length(max = 256))]
    pub message: String,
    /// Path in the staged tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warning,
}
