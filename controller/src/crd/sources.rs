//! A typed view of the five Flux source kinds a generator reads (`source.toolkit.fluxcd.io/v1` Bucket,
//! GitRepository, OCIRepository, HelmChart, ExternalArtifact): only `status`, which is the same
//! `meta.Artifact` plus conditions for all of them.
//!
//! One struct serves all five, with the kind as its [`kube::Resource::DynamicType`]
//! (`Api::<FluxSource>::namespaced_with(client, ns, &SourceKind::GitRepository)`, `Controller::watches_with`).
//! Typed rather than `DynamicObject` so that `status.artifact` is parsed in one place with checked field
//! names; one type rather than five because nothing in the controller depends on the kind beyond its URL. Not
//! derived with `CustomResource`: source-controller owns these CRDs.

use std::borrow::Cow;

use artgen_engine::spec::SourceKind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::external_artifact::{API_VERSION, Artifact, GROUP, VERSION};

/// Any Flux source object; its `spec` is not read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FluxSource {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SourceStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl FluxSource {
    /// The artifact the source currently serves, if any.
    pub fn artifact(&self) -> Option<&Artifact> {
        self.status.as_ref()?.artifact.as_ref()
    }
}

/// The resource (plural) name of a source kind.
pub fn plural(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Bucket => "buckets",
        SourceKind::GitRepository => "gitrepositories",
        SourceKind::OCIRepository => "ocirepositories",
        SourceKind::HelmChart => "helmcharts",
        SourceKind::ExternalArtifact => "externalartifacts",
    }
}

impl kube::Resource for FluxSource {
    type DynamicType = SourceKind;
    // Dynamic, because kube's `Api::namespaced_with` (one type, several kinds) requires it; every source kind
    // is namespaced.
    type Scope = kube::core::DynamicResourceScope;

    fn kind(kind: &SourceKind) -> Cow<'_, str> {
        kind.as_str().into()
    }

    fn group(_: &SourceKind) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &SourceKind) -> Cow<'_, str> {
        VERSION.into()
    }

    fn api_version(_: &SourceKind) -> Cow<'_, str> {
        API_VERSION.into()
    }

    fn plural(kind: &SourceKind) -> Cow<'_, str> {
        plural(*kind).into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
