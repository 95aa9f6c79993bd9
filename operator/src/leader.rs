//! Lease-based leader election (`coordination.k8s.io/v1` Lease), so that only one operator
//! replica reconciles at a time. The leader renews its lease every `renew_every`; a
//! candidate takes the lease over when it has not been renewed for `lease_duration`. A
//! leader that cannot renew within `lease_duration` gives up leadership, and the caller
//! exits, as client-go's leader election does.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

/// Settings of one election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// One candidate in an election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the lease (newly or still).
    Leading,
    /// Another candidate holds a live lease.
    Following { holder: String },
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Tries once to acquire or renew the lease.
    pub async fn try_acquire_or_renew(&self) -> kube::Result<Attempt> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                // Another candidate created it first; the next attempt will see it.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following {
                    holder: String::new(),
                }),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let expired = renewed + duration < now;
        if holder != self.settings.identity && !holder.is_empty() && !expired {
            return Ok(Attempt::Following { holder });
        }
        let (acquired, transitions) = if holder == self.settings.identity {
            (
                spec.acquire_time.map(|t| t.0).unwrap_or(now),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // `replace` carries the resourceVersion we read: if another candidate wrote the
        // lease in between, this fails with a conflict and we lost the race.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following { holder }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so that a successor need not wait for it to expire.
    pub async fn release(&self) -> kube::Result<()> {
        if let Some(mut lease) = self.api.get_opt(&self.settings.name).await? {
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(self.settings.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await?;
            }
        }
        Ok(())
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self) -> kube::Result<()> {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return Ok(()),
                Ok(Attempt::Following { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(%holder, lease = %self.settings.name, "waiting for leadership");
                        last_holder = Some(holder);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "leader election attempt failed"),
            }
            tokio::time::sleep(self.settings.renew_every).await;
        }
    }

    /// Renews the lease until renewal fails for longer than the lease duration or another
    /// candidate took it; returns when leadership is lost.
    pub async fn hold(&self) {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_success = tokio::time::Instant::now(),
                Ok(Attempt::Following { holder }) => {
                    tracing::error!(%holder, "lease was taken over");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not renew the lease");
                    if last_success.elapsed() > self.settings.lease_duration {
                        tracing::error!("lease not renewed within its duration");
                        return;
                    }
                }
            }
        }
    }
}
