//! A Kubernetes client for a named, Ready BudCluster, for controllers that put workloads on
//! it (the ModelDeployment controller). This module only reads: the BudCluster and the
//! kubeconfig Secret it points at.

use super::kubeconfig::{self, KubeconfigSource};
use bud_crds::BudCluster;
use bud_crds::budcluster::ClusterType;
use bud_crds::common::NamespacedSecretKeyRef;
use bud_crds::conditions::{READY, find_condition};
use kube::api::Api;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Key of the kubeconfig in the Secrets the operator writes for EKS and AKS clusters.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// Why no client can be had for a BudCluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterClientError {
    /// No BudCluster has that name.
    #[error("BudCluster {0} does not exist")]
    NotFound(String),
    /// The cluster exists but is not Ready; `reason` is its Ready condition's reason
    /// (`Unreachable`, `Unauthorized`, `Connecting`, ...).
    #[error("BudCluster {name} is not Ready ({reason}): {message}")]
    NotReady {
        name: String,
        reason: String,
        message: String,
    },
    /// Its kubeconfig Secret is missing or unusable.
    #[error("BudCluster {name}: {message}")]
    Kubeconfig { name: String, message: String },
    /// Reading the BudCluster or the Secret failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl ClusterClientError {
    /// A bounded label for metrics and Event reasons. `NotReady` and `NotFound` map to
    /// `ClusterUnreachable`-style handling in callers.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterClientError::NotFound(_) => "ClusterNotFound",
            ClusterClientError::NotReady { .. } => "ClusterNotReady",
            ClusterClientError::Kubeconfig { .. } => "ClusterKubeconfig",
            ClusterClientError::Kube(_) => "KubernetesApi",
        }
    }
}

/// Clients built from kubeconfig Secrets, by BudCluster name, with the fingerprint of the
/// kubeconfig they were built from.
fn cache() -> &'static Mutex<HashMap<String, (String, Client)>> {
    static CACHE: OnceLock<Mutex<HashMap<String, (String, Client)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A client for the BudCluster `name`, which must be Ready.
///
/// - `Local`: `management` itself (the operator's own client).
/// - `Kubeconfig`: a client built from `spec.kubeconfig.secretRef` (and `context`).
/// - `EKS` / `AKS`: a client built from the Secret in `status.kubeconfigSecret`, key
///   `kubeconfig`, which the operator wrote.
///
/// `management` is the client of the cluster holding the BudCluster and the Secrets.
/// Clients are cached per cluster and kubeconfig content, so calling this on every reconcile
/// costs two GETs; rotated credentials give a new client. Workloads go to the namespace
/// [`workload_namespace`](super::kubeconfig::workload_namespace) returns.
pub async fn cluster_client(management: &Client, name: &str) -> Result<Client, ClusterClientError> {
    let cluster = Api::<BudCluster>::all(management.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| ClusterClientError::NotFound(name.to_owned()))?;
    cluster_client_for(management, &cluster).await
}

/// Like [`cluster_client`], for a BudCluster already read.
pub async fn cluster_client_for(
    management: &Client,
    cluster: &BudCluster,
) -> Result<Client, ClusterClientError> {
    let name = cluster.name_any();
    let conditions = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match find_condition(conditions, READY) {
        Some(ready) if ready.status == "True" => {}
        Some(ready) => {
            return Err(ClusterClientError::NotReady {
                name,
                reason: ready.reason.clone(),
                message: ready.message.clone(),
            });
        }
        None => {
            return Err(ClusterClientError::NotReady {
                name,
                reason: "Pending".into(),
                message: "the operator has not reported on this cluster yet".into(),
            });
        }
    }
    let (secret_ref, context) =
        match cluster.spec.type_ {
            ClusterType::Local => return Ok(management.clone()),
            ClusterType::Kubeconfig => {
                let source = cluster.spec.kubeconfig.as_ref().ok_or_else(|| {
                    ClusterClientError::Kubeconfig {
                        name: name.clone(),
                        message: "spec.kubeconfig is missing".into(),
                    }
                })?;
                (source.secret_ref.clone(), source.context.clone())
            }
            ClusterType::Eks | ClusterType::Aks => {
                let secret = cluster
                    .status
                    .as_ref()
                    .and_then(|s| s.kubeconfig_secret.clone())
                    .ok_or_else(|| ClusterClientError::Kubeconfig {
                        name: name.clone(),
                        message: "status.kubeconfigSecret is not set yet".into(),
                    })?;
                (
                    NamespacedSecretKeyRef {
                        namespace: secret.namespace,
                        name: secret.name,
                        key: KUBECONFIG_KEY.to_owned(),
                    },
                    None,
                )
            }
        };
    let source: KubeconfigSource =
        kubeconfig::read_kubeconfig_secret(management, &secret_ref, context.as_deref())
            .await
            .map_err(|b| ClusterClientError::Kubeconfig {
                name: name.clone(),
                message: b.message,
            })?;
    if let Some((fingerprint, client)) =
        cache().lock().unwrap_or_else(|e| e.into_inner()).get(&name)
        && *fingerprint == source.fingerprint
    {
        return Ok(client.clone());
    }
    let client =
        kubeconfig::client_from(&source)
            .await
            .map_err(|b| ClusterClientError::Kubeconfig {
                name: name.clone(),
                message: b.message,
            })?;
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, (source.fingerprint, client.clone()));
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::BudClusterSpec;
    use bud_crds::conditions::new_condition;
    use k8s_openapi::jiff::Timestamp;

    fn offline_client() -> Client {
        // Port 9 (discard) on loopback: any request would fail, and none must be made.
        Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
    }

    fn cluster(type_: ClusterType, ready: Option<(bool, &str)>) -> BudCluster {
        let mut c = BudCluster::new(
            "c",
            BudClusterSpec {
                type_,
                kubeconfig: None,
                eks: None,
                aks: None,
                workload_namespace: None,
                accelerator_prices: Default::default(),
            },
        );
        if let Some((status, reason)) = ready {
            c.status = Some(bud_crds::BudClusterStatus {
                conditions: vec![new_condition(
                    READY,
                    status,
                    reason,
                    "why",
                    None,
                    Timestamp::UNIX_EPOCH,
                )],
                ..Default::default()
            });
        }
        c
    }

    #[tokio::test]
    async fn only_ready_clusters_give_a_client_and_local_is_the_operators_own() {
        let management = offline_client();
        let err = cluster_client_for(&management, &cluster(ClusterType::Kubeconfig, None))
            .await
            .err()
            .expect("an error");
        assert!(
            matches!(err, ClusterClientError::NotReady { ref reason, .. } if reason == "Pending")
        );
        let err = cluster_client_for(
            &management,
            &cluster(ClusterType::Eks, Some((false, "Unreachable"))),
        )
        .await
        .err()
        .expect("an error");
        assert_eq!(err.category(), "ClusterNotReady");
        assert!(err.to_string().contains("Unreachable"), "{err}");
        let local = cluster_client_for(
            &management,
            &cluster(ClusterType::Local, Some((true, "InventoryCurrent"))),
        )
        .await;
        assert!(
            local.is_ok(),
            "Local uses the management client without any request"
        );
        let err = cluster_client_for(
            &management,
            &cluster(ClusterType::Aks, Some((true, "InventoryCurrent"))),
        )
        .await
        .err()
        .expect("an error");
        assert!(err.to_string().contains("status.kubeconfigSecret"), "{err}");
    }
}
