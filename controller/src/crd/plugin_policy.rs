//! The TransformPluginPolicy CRD (`source.extensions.fluxcd.io/v1alpha1`, cluster-scoped; design/plugins.md
//! §3): which plugin digests may run in which namespaces, and up to which limits. Deny by default: a digest
//! runs only where a policy entry (or `--plugin-allow-digest`) allows it.

use artgen_engine::spec::TransformLimits;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// clippy takes the repeated `type_ = "string"` of the printer columns for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "source.extensions.fluxcd.io",
    version = "v1alpha1",
    kind = "TransformPluginPolicy",
    plural = "transformpluginpolicies",
    singular = "transformpluginpolicy",
    status = "TransformPluginPolicyStatus",
    shortname = "tpp",
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
    doc = "TransformPluginPolicy allows transform plugins, by digest, in the namespaces it selects."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformPluginPolicySpec {
    /// Entries combine as a union, as in RBAC: the highest ceiling per limit, readSources if any allows.
    #[schemars(length(min = 1))]
    pub plugins: Vec<PluginPolicy>,
}

/// One allowed plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginPolicy {
    /// Label used in messages.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Exact sha256 digests of the `.wasm` bytes, never tags.
    #[schemars(length(min = 1), inner(pattern(artgen_engine::validate::DIGEST_PATTERN)))]
    pub digests: Vec<String>,
    /// The generator namespaces this entry applies to; `{}` selects every namespace. Required, so that no
    /// policy allows everything by omission.
    pub namespace_selector: LabelSelector,
    /// Ceilings for the transforms' `limits`; a request above one is refused, never clamped. Unset = the hard
    /// ceilings of the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limits: Option<TransformLimits>,
    /// Whether transforms may mount sources read-only (`readSources`).
    #[serde(default)]
    #[schemars(extend("default" = false))]
    pub allow_read_sources: bool,
}

/// Ready=False when `maxLimits` exceed the controller's hard ceilings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformPluginPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
