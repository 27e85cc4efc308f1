//! Leader election on a `coordination.k8s.io/v1` Lease (spec §11), with client-go's rules: a lease is free
//! when unheld or not renewed within its duration; the holder renews every retry period and gives up when
//! it could not renew within the renew deadline. Writes are compare-and-swap on the resourceVersion.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::cli::controller::Args;

/// Upstream's lease name.
pub const LEASE_NAME: &str = "source-watcher-leader-election";

pub struct Lease {
    api: Api<KubeLease>,
    name: String,
    identity: String,
    duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// The lease name for a shard: `-<first 8 hex of sha256(selector)>` appended when a selector is set.
pub fn lease_name(selector: &str) -> String {
    if selector.is_empty() {
        return LEASE_NAME.to_owned();
    }
    let hex = hex::encode(Sha256::digest(selector.as_bytes()));
    format!("{LEASE_NAME}-{}", &hex[..8])
}

impl Lease {
    pub fn new(client: Client, namespace: &str, args: &Args, instance: String) -> Self {
        use std::hash::{BuildHasher, RandomState};
        let suffix = RandomState::new().hash_one(std::process::id());
        Lease {
            api: Api::namespaced(client, namespace),
            name: lease_name(&args.watch_label_selector),
            identity: format!("{instance}_{suffix:016x}"),
            duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        tracing::info!(lease = %self.name, identity = %self.identity, "waiting for the leader lease");
        loop {
            if self.try_acquire_or_renew().await? {
                tracing::info!(lease = %self.name, "acquired the leader lease");
                return Ok(());
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the lease every retry period; returns when it could not be renewed within the deadline.
    pub async fn hold(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return format!("lease {} is held by another instance", self.name),
                Err(e) => {
                    tracing::warn!(error = %artgen_engine::chain(&e), "renewing the leader lease failed")
                }
            }
            if renewed.elapsed() > self.renew_deadline {
                return format!("lease {} not renewed within {:?}", self.name, self.renew_deadline);
            }
        }
    }

    /// Hands the lease back so another replica takes over at once (`--leader-election-release-on-cancel`).
    pub async fn release(&self) {
        let Ok(mut lease) = self.api.get(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %artgen_engine::chain(&e), "releasing the leader lease failed");
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => {
                let lease = KubeLease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let mut lease = existing;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(&self.identity);
        let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(t), Some(d)) => t.0 + SignedDuration::from_secs(i64::from(d)) < now,
            _ => true,
        };
        if !ours && held && !expired {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_lease_names() {
        assert_eq!(lease_name(""), LEASE_NAME);
        let sharded = lease_name("sharding.fluxcd.io/key=shard1");
        assert!(sharded.starts_with("source-watcher-leader-election-"));
        assert_eq!(sharded.len(), LEASE_NAME.len() + 9);
        assert_ne!(sharded, lease_name("sharding.fluxcd.io/key=shard2"));
    }
}
