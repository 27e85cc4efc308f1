//! Plugin admission from TransformPluginPolicies (design/plugins.md §3): which digests run in which
//! namespaces, and up to which limits. The engine checks an [`Admission`]; this module builds one per
//! generator namespace from the watched policies, the namespace's labels and the `--plugin-allow-digest`
//! flags, and keeps each policy's Ready condition.

use std::collections::BTreeMap;
use std::sync::Arc;

use artgen_engine::spec::{Quantity, TransformLimits};
use artgen_engine::transform::admission::{HARD_CEILINGS, parse_duration, parse_quantity};
use artgen_engine::transform::{Admission, Allowed};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::TransformPluginPolicy;
use crate::reconcile::FIELD_MANAGER;
use crate::reconcile::status::{self, Status};

/// The watch caches admission reads.
#[derive(Clone)]
pub struct PolicyStores {
    pub policies: Store<TransformPluginPolicy>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl PolicyStores {
    /// The flags' admission plus every policy entry whose selector matches `namespace`'s labels. A namespace
    /// missing from the cache has no labels, so only `{}` selectors match it.
    pub fn admission(&self, flags: &Admission, namespace: &str) -> Admission {
        let labels = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        admission_for(flags, &self.policies.state(), &labels)
    }
}

/// Pure core of [`PolicyStores::admission`]: one [`Allowed`] per digest of each matching entry.
pub fn admission_for(
    flags: &Admission,
    policies: &[Arc<TransformPluginPolicy>],
    labels: &BTreeMap<String, String>,
) -> Admission {
    let mut admission = flags.clone();
    if admission.disabled || admission.allow_any {
        return admission;
    }
    for policy in policies {
        for entry in &policy.spec.plugins {
            // An invalid selector matches nothing; the policy's status says why.
            let matches =
                Selector::try_from(entry.namespace_selector.clone()).is_ok_and(|s| s.matches(labels));
            if !matches {
                continue;
            }
            admission.allowed.extend(entry.digests.iter().map(|d| Allowed {
                digest: d.clone(),
                ceilings: entry.max_limits.clone().unwrap_or_default(),
                allow_read_sources: entry.allow_read_sources,
            }));
        }
    }
    admission
}

/// What is wrong with a policy: unparsable selectors or limits, and ceilings above the hard ceilings (which
/// admission clamps, so the policy grants less than it says).
pub fn problems(policy: &TransformPluginPolicy) -> Vec<String> {
    let mut out = Vec::new();
    for (i, entry) in policy.spec.plugins.iter().enumerate() {
        let at = format!("spec.plugins[{i}] ({})", entry.name);
        if let Err(e) = Selector::try_from(entry.namespace_selector.clone()) {
            out.push(format!("{at}.namespaceSelector: {e}"));
        }
        if let Some(limits) = &entry.max_limits {
            out.extend(
                limit_problems(limits)
                    .into_iter()
                    .map(|m| format!("{at}.maxLimits.{m}")),
            );
        }
    }
    out
}

fn limit_problems(l: &TransformLimits) -> Vec<String> {
    let h = HARD_CEILINGS;
    let mut out = Vec::new();
    let mut check =
        |name: &str, value: Result<Option<u64>, String>, ceiling: u64, shown: &dyn Fn(u64) -> String| {
            match value {
                Err(e) => out.push(format!("{name}: {e}")),
                Ok(Some(v)) if v > ceiling => out.push(format!(
                    "{name} {} exceeds the controller's hard ceiling {}",
                    shown(v),
                    shown(ceiling)
                )),
                Ok(_) => {}
            }
        };
    let quantity = |q: &Option<Quantity>| -> Result<Option<u64>, String> {
        match q {
            None => Ok(None),
            Some(Quantity::Int(n)) => Ok(Some(*n)),
            Some(Quantity::Str(s)) => parse_quantity(s).map(Some),
        }
    };
    let plain = |v: u64| v.to_string();
    check("fuel", quantity(&l.fuel), h.fuel, &plain);
    check("memory", quantity(&l.memory), h.memory, &plain);
    check("outputBytes", quantity(&l.output_bytes), h.output_bytes, &plain);
    check("outputFiles", Ok(l.output_files), h.output_files, &plain);
    let timeout = l
        .timeout
        .as_deref()
        .map(|t| parse_duration(t).map(|d| d.as_millis() as u64))
        .transpose();
    check("timeout", timeout, h.timeout.as_millis() as u64, &|ms| {
        format!("{}s", ms as f64 / 1000.0)
    });
    out
}

/// Keeps the policy's Ready condition: False with every problem, else True. Skips the write when nothing
/// changed, so the status update does not come back as a new event.
pub async fn update_status(client: Client, policy: Arc<TransformPluginPolicy>) {
    let problems = problems(&policy);
    let generation = policy.meta().generation.unwrap_or_default();
    let mut conditions = policy.status.clone().unwrap_or_default().conditions;
    let (s, reason, message) = if problems.is_empty() {
        (Status::True, "Valid", "policy is valid".to_owned())
    } else {
        (Status::False, "InvalidPolicy", problems.join("; "))
    };
    status::set(&mut conditions, status::READY, s, reason, &message, generation);
    if policy.status.as_ref().map(|s| &s.conditions) == Some(&conditions) {
        return;
    }
    let api: Api<TransformPluginPolicy> = Api::all(client);
    let body = json!({
        "apiVersion": TransformPluginPolicy::api_version(&()),
        "kind": TransformPluginPolicy::kind(&()),
        "metadata": {"name": policy.name_any()},
        "status": {"conditions": conditions},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(e) = api
        .patch_status(&policy.name_any(), &params, &Patch::Apply(&body))
        .await
    {
        tracing::warn!(policy = %policy.name_any(), error = %e, "writing policy status failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TransformPluginPolicySpec, plugin_policy::PluginPolicy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn policy(entries: Vec<PluginPolicy>) -> Arc<TransformPluginPolicy> {
        Arc::new(TransformPluginPolicy::new(
            "p",
            TransformPluginPolicySpec { plugins: entries },
        ))
    }

    fn entry(digest: &str, selector: &[(&str, &str)], read: bool) -> PluginPolicy {
        PluginPolicy {
            name: "e".into(),
            digests: vec![digest.into()],
            namespace_selector: LabelSelector {
                match_labels: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                match_expressions: None,
            },
            max_limits: None,
            allow_read_sources: read,
        }
    }

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_entries_selecting_the_namespace_allow() {
        let policies = [policy(vec![
            entry(A, &[("tier", "standard")], false),
            entry(B, &[], true),
        ])];
        let flags = Admission::default();
        let digests = |l| -> Vec<String> {
            admission_for(&flags, &policies, &labels(l))
                .allowed
                .into_iter()
                .map(|a| a.digest)
                .collect()
        };
        assert_eq!(digests(&[("tier", "standard")]), [A, B]);
        assert_eq!(digests(&[("tier", "premium")]), [B]);
        assert_eq!(digests(&[]), [B]);
    }

    #[test]
    fn flags_are_kept_and_disabled_ignores_policies() {
        let policies = [policy(vec![entry(A, &[], false)])];
        let flags = Admission {
            allowed: vec![Allowed::digest(B)],
            ..Admission::default()
        };
        let got = admission_for(&flags, &policies, &labels(&[]));
        assert_eq!(got.allowed.len(), 2);
        let disabled = Admission {
            disabled: true,
            ..Admission::default()
        };
        assert!(
            admission_for(&disabled, &policies, &labels(&[]))
                .allowed
                .is_empty()
        );
    }

    #[test]
    fn problems_name_the_entry_and_field() {
        let mut e = entry(A, &[], false);
        e.max_limits = Some(TransformLimits {
            fuel: Some(Quantity::Str("500G".into())),
            timeout: Some("10m".into()),
            memory: Some(Quantity::Str("lots".into())),
            ..TransformLimits::default()
        });
        let p = problems(&policy(vec![e]));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("spec.plugins[0] (e).maxLimits.fuel 500000000000 exceeds"),
            "{p:?}"
        );
        assert!(
            p[1].contains("maxLimits.memory: invalid quantity 'lots'"),
            "{p:?}"
        );
        assert!(
            p[2].contains("maxLimits.timeout 600s exceeds the controller's hard ceiling 300s"),
            "{p:?}"
        );
        assert!(problems(&policy(vec![entry(A, &[], false)])).is_empty());
    }
}
