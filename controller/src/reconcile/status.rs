//! Conditions and the generator's status write (spec §9.3). Status is only ever written by [`apply`]:
//! server-side apply of `{apiVersion, kind, metadata, status}` with the one field manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Error, FIELD_MANAGER};
use crate::crd::{ArtifactGenerator, ArtifactGeneratorStatus};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

pub const SUCCEEDED: &str = "Succeeded";
pub const PROGRESSING: &str = "Progressing";
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
pub const RECONCILIATION_DISABLED: &str = "ReconciliationDisabled";
pub const SOURCE_FETCH_FAILED: &str = "SourceFetchFailed";
pub const BUILD_FAILED: &str = "BuildFailed";
pub const RECONCILIATION_FAILED: &str = "ReconciliationFailed";
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";

pub const PROGRESSING_MESSAGE: &str = "Reconciliation in progress";

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets a condition, stamping `observedGeneration`. `lastTransitionTime` moves only when status, reason or
/// message change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let next = Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: Some(generation),
        last_transition_time: Time(Timestamp::now()),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let same = c.status == next.status && c.reason == next.reason && c.message == next.message;
            let time = if same {
                c.last_transition_time.clone()
            } else {
                next.last_transition_time
            };
            *c = Condition {
                last_transition_time: time,
                ..next
            };
        }
        None => conditions.push(next),
    }
}

pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The summary every reconcile ends with: Reconciling is deleted once Ready=True or Stalled=True, and on a
/// failure its reason becomes `ProgressingWithRetry`.
pub fn summarize(conditions: &mut Vec<Condition>, generation: i64) {
    let is_true = |conditions: &[Condition], t| get(conditions, t).is_some_and(|c| c.status == "True");
    if is_true(conditions, READY) || is_true(conditions, STALLED) {
        remove(conditions, RECONCILING);
        return;
    }
    let failed = get(conditions, READY).is_some_and(|c| c.status == "False");
    if failed && let Some(c) = get(conditions, RECONCILING).cloned() {
        set(
            conditions,
            RECONCILING,
            Status::True,
            PROGRESSING_WITH_RETRY,
            &c.message,
            generation,
        );
    }
}

/// Writes the status by server-side apply and returns the object as written. Skipped (`None`) when
/// nothing would change, so a no-op reconcile costs no write (and no watch event).
pub async fn apply(
    api: &Api<ArtifactGenerator>,
    generator: &ArtifactGenerator,
    status: &ArtifactGeneratorStatus,
) -> Result<Option<ArtifactGenerator>, Error> {
    if generator.status.as_ref() == Some(status) {
        return Ok(None);
    }
    let body = json!({
        "apiVersion": ArtifactGenerator::api_version(&()),
        "kind": ArtifactGenerator::kind(&()),
        "metadata": {"name": generator.name_any(), "namespace": generator.namespace()},
        "status": status,
    });
    let written = api
        .patch_status(
            &generator.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::kube("patching status", source))?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut c = Vec::new();
        set(&mut c, READY, Status::False, "A", "m", 1);
        let t0 = c[0].last_transition_time.clone();
        set(&mut c, READY, Status::False, "A", "m", 2);
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].observed_generation, Some(2));
        set(&mut c, READY, Status::True, "A", "m", 2);
        assert!(c[0].last_transition_time.0 >= t0.0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn summary_rules() {
        let mut c = Vec::new();
        set(
            &mut c,
            RECONCILING,
            Status::True,
            PROGRESSING,
            PROGRESSING_MESSAGE,
            1,
        );
        set(&mut c, READY, Status::False, BUILD_FAILED, "x", 1);
        summarize(&mut c, 1);
        assert_eq!(get(&c, RECONCILING).unwrap().reason, PROGRESSING_WITH_RETRY);
        set(&mut c, READY, Status::True, SUCCEEDED, "ok", 1);
        summarize(&mut c, 1);
        assert!(get(&c, RECONCILING).is_none());
    }
}
