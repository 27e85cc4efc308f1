//! Kubernetes types: the CRDs artgen owns (ArtifactGenerator, TransformPluginPolicy), generated from Rust
//! (architecture §7), and typed views of the Flux kinds it reads and writes (ExternalArtifact, the five source
//! kinds), which are owned by source-controller and never generated here.

pub mod artifact_generator;
pub mod external_artifact;
pub mod plugin_policy;
pub mod sources;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use self::artifact_generator::{ArtifactGenerator, ArtifactGeneratorStatus, GeneratorSpec};
pub use self::external_artifact::{Artifact, ExternalArtifact};
pub use self::plugin_policy::{TransformPluginPolicy, TransformPluginPolicySpec};
pub use self::sources::FluxSource;

/// The CRDs `artgen crds` prints, in apply order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [ArtifactGenerator::crd(), TransformPluginPolicy::crd()]
        .into_iter()
        .map(finish)
        .collect()
}

/// `artgen crds`: every CRD of [`crds`] as one multi-document YAML stream for `kubectl apply -f -`. Keys are
/// sorted at every level so the text depends on nothing but the types (not on serde_json's `preserve_order`
/// feature, which any crate in a build may switch on).
pub fn crds_yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in crds() {
        let value = serde_json::to_value(&crd)?;
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&sorted(value))?);
    }
    Ok(out)
}

/// Rendering a CRD failed (a bug: the types always serialize).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CRD to JSON")]
    Json(#[from] serde_json::Error),
    #[error("CRD to YAML")]
    Yaml(#[from] yaml_serde::Error),
}

/// Completes kube-derive's output to the shape of a controller-gen CRD like upstream's:
/// - `listKind`, and the root `apiVersion`/`kind`/`metadata` properties, so every property path of upstream's
///   schema exists in ours;
/// - no `nullable`: kube-derive marks every `Option` field `nullable: true` (and adds `null` to its enum).
///   Upstream has none, and without it the apiserver drops an explicit `null` before validation, so
///   `pathPattern: null` means "absent" exactly as it does for `artgen validate` (serde reads it as `None`).
fn finish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let names = &mut crd.spec.names;
    names
        .list_kind
        .get_or_insert_with(|| format!("{}List", names.kind));
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            strip_nullable(schema);
            let properties = schema.properties.get_or_insert_with(Default::default);
            for (name, type_) in [
                ("apiVersion", "string"),
                ("kind", "string"),
                ("metadata", "object"),
            ] {
                properties
                    .entry(name.to_owned())
                    .or_insert_with(|| JSONSchemaProps {
                        type_: Some(type_.to_owned()),
                        ..JSONSchemaProps::default()
                    });
            }
        }
    }
    crd
}

fn strip_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    if let Some(values) = &mut schema.enum_ {
        values.retain(|v| !v.0.is_null());
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.pattern_properties.iter_mut().flat_map(|p| p.values_mut()))
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in children {
        strip_nullable(child);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(s)) => strip_nullable(s),
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().for_each(strip_nullable),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = &mut schema.additional_properties {
        strip_nullable(s);
    }
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
