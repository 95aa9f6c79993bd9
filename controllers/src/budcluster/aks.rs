//! `type: AKS`: creates or updates an Azure managed cluster through the Azure Resource
//! Manager REST API (`Microsoft.ContainerService/managedClusters`, api-version 2024-09-01),
//! follows the long-running operation through its `Azure-AsyncOperation` URL (kept in
//! `status.provisioning.operation`, so polling spans reconciles and operator restarts),
//! fetches the admin kubeconfig with `listClusterAdminCredential` into a Secret, then connects
//! like a `Kubeconfig` cluster. Deletion is a DELETE behind the finalizer.
//!
//! Why REST through reqwest and not the `azure_mgmt_containerservice` crate: that crate
//! belongs to the unmaintained `azure-sdk-for-rust` services generation (its last releases
//! target 2022–2023 API versions and an old `azure_core`), it cannot point its token
//! credential at a configurable authority (which the loopback tests need), and the operator
//! needs only five calls whose JSON shapes are small and documented. The token comes from the
//! same OAuth2 client-credentials flow the Azure SDKs use for a service principal.
//!
//! [`plan_aks`] is pure: what ARM reports + the spec → the call to make and the phase.

use super::eks::{FINALIZER, delete_kubeconfig_secret, provisioning, set_finalizer};
use super::kubeconfig::short_error;
use super::{Blocker, KUBECONFIG_KEY, Observed, State, observe_through_kubeconfig};
use crate::{Error, Result};
use base64::Engine;
use bud_crds::BudCluster;
use bud_crds::budcluster::{AksClusterSpec, NamespacedSecretName, ProvisioningPhase, TaintEffect};
use bud_crds::common::NamespacedSecretKeyRef;
use bud_crds::conditions::new_condition;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::time::Duration;

/// Azure AD in the public cloud.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// Azure Resource Manager in the public cloud.
pub const DEFAULT_RESOURCE_MANAGER_URL: &str = "https://management.azure.com";
/// The managedClusters API version used for every call.
pub const API_VERSION: &str = "2024-09-01";
const POLL_EVERY: Duration = Duration::from_secs(10);

/// The managed cluster body to PUT for `spec`. Pure.
pub fn managed_cluster_body(cluster_name: &str, spec: &AksClusterSpec, owner: &str) -> Value {
    let pools: Vec<Value> = spec
        .node_pools
        .iter()
        .enumerate()
        .map(|(index, pool)| {
            let mut profile = json!({
                "name": pool.name,
                "count": pool.count,
                "vmSize": pool.vm_size,
                "mode": if index == 0 { "System" } else { "User" },
                "osType": "Linux",
                "type": "VirtualMachineScaleSets",
                "enableAutoScaling": pool.autoscaling.is_some(),
            });
            if let Some(auto) = &pool.autoscaling {
                profile["minCount"] = json!(auto.min_count);
                profile["maxCount"] = json!(auto.max_count);
            }
            if !pool.labels.is_empty() {
                profile["nodeLabels"] = json!(pool.labels);
            }
            if !pool.taints.is_empty() {
                let taints: Vec<String> = pool
                    .taints
                    .iter()
                    .map(|t| {
                        let effect = match t.effect {
                            TaintEffect::NoSchedule => "NoSchedule",
                            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                            TaintEffect::NoExecute => "NoExecute",
                        };
                        match &t.value {
                            Some(v) => format!("{}={v}:{effect}", t.key),
                            None => format!("{}:{effect}", t.key),
                        }
                    })
                    .collect();
                profile["nodeTaints"] = json!(taints);
            }
            profile
        })
        .collect();
    let mut tags = spec.tags.clone();
    tags.insert("bud.studio-budcluster".into(), owner.to_owned());
    let mut properties = json!({
        "dnsPrefix": cluster_name,
        "agentPoolProfiles": pools,
    });
    if let Some(version) = &spec.kubernetes_version {
        properties["kubernetesVersion"] = json!(version);
    }
    json!({
        "location": spec.location,
        "tags": tags,
        "identity": {"type": "SystemAssigned"},
        "properties": properties,
    })
}

/// A node pool as compared with the spec: name, vmSize, count, minCount, maxCount.
pub type PoolShape = (String, String, i64, Option<i64>, Option<i64>);

/// What ARM reports about the managed cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArmCluster {
    pub id: Option<String>,
    /// `Creating`, `Updating`, `Deleting`, `Succeeded`, `Failed`, `Canceled`.
    pub provisioning_state: String,
    pub kubernetes_version: Option<String>,
    /// Pool name → (vmSize, count, minCount, maxCount).
    pub pools: Vec<PoolShape>,
}

impl ArmCluster {
    fn from_json(body: &Value) -> Self {
        let props = &body["properties"];
        Self {
            id: body["id"].as_str().map(str::to_owned),
            provisioning_state: props["provisioningState"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kubernetes_version: props["currentKubernetesVersion"]
                .as_str()
                .or_else(|| props["kubernetesVersion"].as_str())
                .map(str::to_owned),
            pools: props["agentPoolProfiles"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["vmSize"].as_str().unwrap_or_default().to_owned(),
                        p["count"].as_i64().unwrap_or_default(),
                        p["minCount"].as_i64(),
                        p["maxCount"].as_i64(),
                    )
                })
                .collect(),
        }
    }

    /// Whether the pools match the spec (names, sizes, counts, autoscaling bounds).
    fn matches(&self, spec: &AksClusterSpec) -> bool {
        let wanted: Vec<PoolShape> = spec
            .node_pools
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.vm_size.clone(),
                    i64::from(p.count),
                    p.autoscaling.as_ref().map(|a| i64::from(a.min_count)),
                    p.autoscaling.as_ref().map(|a| i64::from(a.max_count)),
                )
            })
            .collect();
        let mut have = self.pools.clone();
        have.sort();
        let mut want = wanted;
        want.sort();
        // With autoscaling on, Azure moves `count` itself; compare bounds only.
        have.len() == want.len()
            && have.iter().zip(&want).all(|(h, w)| {
                h.0 == w.0
                    && h.1 == w.1
                    && h.3 == w.3
                    && h.4 == w.4
                    && (w.3.is_some() || h.2 == w.2)
            })
    }
}

/// The state of a followed long-running operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationState {
    InProgress,
    Succeeded,
    /// Failed or Canceled, with ARM's error message.
    Failed(String),
}

/// The next ARM call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AksAction {
    /// Wait for the followed operation or the provisioning state.
    Wait,
    /// PUT the managed cluster (create or update).
    Put,
    /// Fetch admin credentials and connect.
    Connect,
    Delete,
    /// Deletion finished.
    Gone,
}

/// Decides the next ARM call. Pure.
pub fn plan_aks(
    spec: &AksClusterSpec,
    cluster: Option<&ArmCluster>,
    operation: Option<&OperationState>,
    deleting: bool,
) -> (AksAction, ProvisioningPhase, String) {
    use AksAction::*;
    use ProvisioningPhase as P;
    if deleting {
        return match (cluster, operation) {
            (None, _) => (Gone, P::DeletingCluster, "managed cluster deleted".into()),
            (Some(_), Some(OperationState::InProgress)) => (
                Wait,
                P::DeletingCluster,
                "deleting the managed cluster".into(),
            ),
            (Some(c), _) if c.provisioning_state == "Deleting" => (
                Wait,
                P::DeletingCluster,
                "the managed cluster is Deleting".into(),
            ),
            (Some(_), _) => (
                Delete,
                P::DeletingCluster,
                "deleting the managed cluster".into(),
            ),
        };
    }
    if let Some(OperationState::InProgress) = operation {
        let phase = if cluster.is_some_and(|c| c.provisioning_state != "Creating") {
            P::UpdatingNodeGroups
        } else {
            P::CreatingCluster
        };
        return (
            Wait,
            phase,
            format!(
                "waiting for ARM to finish ({})",
                cluster.map_or("Creating", |c| c.provisioning_state.as_str())
            ),
        );
    }
    if let Some(OperationState::Failed(message)) = operation {
        return (
            Put,
            P::Failed,
            format!("the last operation failed: {message}; retrying"),
        );
    }
    match cluster {
        None => (
            Put,
            P::CreatingCluster,
            "creating the managed cluster".into(),
        ),
        Some(c) if matches!(c.provisioning_state.as_str(), "Creating" | "Updating") => (
            Wait,
            P::CreatingCluster,
            format!("the managed cluster is {}", c.provisioning_state),
        ),
        Some(c) if !c.matches(spec) || c.provisioning_state != "Succeeded" => (
            Put,
            P::UpdatingNodeGroups,
            format!(
                "updating the managed cluster (state {}, node pools differ: {})",
                c.provisioning_state,
                !c.matches(spec)
            ),
        ),
        Some(_) => (
            Connect,
            P::Active,
            format!(
                "the managed cluster is Succeeded with {} node pools",
                spec.node_pools.len()
            ),
        ),
    }
}

/// A failed Azure call.
#[derive(Debug)]
pub struct AzureError(pub String);

/// The ARM REST client of one service principal.
pub struct ArmClient {
    http: reqwest::Client,
    authority: String,
    resource_manager: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    token: Option<String>,
}

impl ArmClient {
    pub fn new(
        authority: &str,
        resource_manager: &str,
        tenant: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            authority: authority.trim_end_matches('/').to_owned(),
            resource_manager: resource_manager.trim_end_matches('/').to_owned(),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            token: None,
        }
    }

    /// The managed cluster's resource URL (without api-version).
    pub fn cluster_url(&self, spec: &AksClusterSpec, name: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{name}",
            self.resource_manager, spec.subscription_id, spec.resource_group
        )
    }

    /// An access token for ARM (OAuth2 client credentials against the authority).
    async fn token(&mut self) -> Result<String, AzureError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant);
        let scope = format!("{}/.default", self.resource_manager);
        let response = self
            .http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| AzureError(format!("token request to {url}: {}", short_error(&e))))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(AzureError(format!(
                "the authority refused the service principal ({status}): {}",
                body["error_description"]
                    .as_str()
                    .or(body["error"].as_str())
                    .unwrap_or_default()
            )));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| AzureError("the token response has no access_token".into()))?
            .to_owned();
        self.token = Some(token.clone());
        Ok(token)
    }

    /// Sends an ARM request; returns status, the `Azure-AsyncOperation` (or `Location`)
    /// header and the JSON body.
    async fn call(
        &mut self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Option<String>, Value), AzureError> {
        let token = self.token().await?;
        let mut request = self.http.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AzureError(format!("{method} {url}: {}", short_error(&e))))?;
        let status = response.status().as_u16();
        let operation = response
            .headers()
            .get("azure-asyncoperation")
            .or_else(|| response.headers().get("location"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 && status != 404 {
            return Err(AzureError(format!(
                "{method} {}: {status} {}: {}",
                url.split('?').next().unwrap_or(url),
                json["error"]["code"].as_str().unwrap_or_default(),
                json["error"]["message"].as_str().unwrap_or(&text)
            )));
        }
        Ok((status, operation, json))
    }

    fn versioned(url: &str) -> String {
        format!("{url}?api-version={API_VERSION}")
    }

    /// GET the managed cluster; `None` when it does not exist.
    pub async fn get_cluster(&mut self, url: &str) -> Result<Option<ArmCluster>, AzureError> {
        let (status, _, body) = self
            .call(reqwest::Method::GET, &Self::versioned(url), None)
            .await?;
        Ok((status != 404).then(|| ArmCluster::from_json(&body)))
    }

    /// PUT the managed cluster; returns the operation URL to follow.
    pub async fn put_cluster(
        &mut self,
        url: &str,
        body: &Value,
    ) -> Result<Option<String>, AzureError> {
        let (_, operation, _) = self
            .call(reqwest::Method::PUT, &Self::versioned(url), Some(body))
            .await?;
        Ok(operation)
    }

    /// DELETE the managed cluster; returns the operation URL to follow.
    pub async fn delete_cluster(&mut self, url: &str) -> Result<Option<String>, AzureError> {
        let (_, operation, _) = self
            .call(reqwest::Method::DELETE, &Self::versioned(url), None)
            .await?;
        Ok(operation)
    }

    /// Reads a long-running operation's status.
    pub async fn operation(&mut self, operation_url: &str) -> Result<OperationState, AzureError> {
        let (status, _, body) = self.call(reqwest::Method::GET, operation_url, None).await?;
        if status == 404 {
            return Ok(OperationState::Succeeded);
        }
        Ok(match body["status"].as_str().unwrap_or("InProgress") {
            "Succeeded" => OperationState::Succeeded,
            "Failed" | "Canceled" => OperationState::Failed(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no error message")
                    .to_owned(),
            ),
            _ => OperationState::InProgress,
        })
    }

    /// POST listClusterAdminCredential; returns the admin kubeconfig text.
    pub async fn admin_kubeconfig(&mut self, url: &str) -> Result<String, AzureError> {
        let (_, _, body) = self
            .call(
                reqwest::Method::POST,
                &Self::versioned(&format!("{url}/listClusterAdminCredential")),
                None,
            )
            .await?;
        let value = body["kubeconfigs"][0]["value"].as_str().ok_or_else(|| {
            AzureError("listClusterAdminCredential returned no kubeconfig".into())
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| AzureError(format!("the admin kubeconfig is not base64: {e}")))?;
        String::from_utf8(bytes).map_err(|_| AzureError("the admin kubeconfig is not UTF-8".into()))
    }
}

async fn arm_client(state: &State, secret: &NamespacedSecretName) -> Result<ArmClient, Blocker> {
    let data = super::read_credentials_secret(state, secret).await?;
    let get = |key: &str| -> Option<String> { data.get(key).cloned() };
    match (
        get("AZURE_TENANT_ID"),
        get("AZURE_CLIENT_ID"),
        get("AZURE_CLIENT_SECRET"),
    ) {
        (Some(tenant), Some(id), Some(client_secret)) => Ok(ArmClient::new(
            &state.settings.azure_authority_url,
            &state.settings.azure_resource_manager_url,
            &tenant,
            &id,
            &client_secret,
        )),
        _ => Err(Blocker::new(
            "CredentialsMissing",
            format!(
                "Secret {}/{} must hold AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                secret.namespace, secret.name
            ),
        )),
    }
}

/// Reconciles an AKS BudCluster. `None`: nothing more to do (finalizer removed).
pub async fn reconcile(
    cluster: &BudCluster,
    state: &State,
    now: Timestamp,
) -> Result<Option<(Observed, Duration)>> {
    let spec = cluster
        .spec
        .aks
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec.aks is required for type AKS".into()))?;
    let deleting = cluster.meta().deletion_timestamp.is_some();
    let has_finalizer = cluster.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(None);
    }
    if !deleting && !has_finalizer {
        set_finalizer(&state.ctx.client, cluster, true).await?;
    }
    let name = super::eks::cloud_cluster_name(cluster);
    let previous = cluster.status.as_ref().and_then(|s| s.provisioning.clone());
    let previous_phase = previous
        .as_ref()
        .map_or(ProvisioningPhase::Pending, |p| p.phase);
    let followed = previous.as_ref().and_then(|p| p.operation.clone());
    let failed = |reason: &'static str, message: String| {
        let delay = state.ctx.backoff.next_delay(&cluster.name_any());
        let mut status = provisioning(cluster, previous_phase, None, message.clone(), now);
        status.operation = followed.clone();
        Ok(Some((
            Observed {
                blocker: Some(Blocker::new(reason, message.clone())),
                provisioning: Some(status),
                provisioned: Some(new_condition(
                    "Provisioned",
                    false,
                    reason,
                    message,
                    cluster.metadata.generation,
                    now,
                )),
                failed: true,
                ..Default::default()
            },
            delay,
        )))
    };
    let mut arm = match arm_client(state, &spec.credentials_secret).await {
        Ok(arm) => arm,
        Err(b) => return failed(b.reason, b.message),
    };
    let url = arm.cluster_url(spec, &name);
    let operation = match &followed {
        Some(op) => match arm.operation(op).await {
            Ok(state) => Some(state),
            Err(e) => return failed("CloudApiError", e.0),
        },
        None => None,
    };
    let observed_cluster = match arm.get_cluster(&url).await {
        Ok(c) => c,
        Err(e) => return failed("CloudApiError", e.0),
    };
    let (action, phase, message) = plan_aks(
        spec,
        observed_cluster.as_ref(),
        operation.as_ref(),
        deleting,
    );
    let cloud_id = observed_cluster.as_ref().and_then(|c| c.id.clone());
    let mut status = provisioning(cluster, phase, cloud_id, message.clone(), now);
    // Keep following an operation until it ends.
    status.operation = followed
        .clone()
        .filter(|_| operation == Some(OperationState::InProgress));
    let waiting = |status, reason: &'static str| {
        Ok(Some((
            Observed {
                blocker: Some(Blocker::new(reason, message.clone())),
                provisioned: (!deleting).then(|| {
                    new_condition(
                        "Provisioned",
                        false,
                        reason,
                        message.clone(),
                        cluster.metadata.generation,
                        now,
                    )
                }),
                provisioning: Some(status),
                ..Default::default()
            },
            POLL_EVERY,
        )))
    };
    match action {
        AksAction::Wait => waiting(status, if deleting { "Deleting" } else { "Provisioning" }),
        AksAction::Put => {
            let body = managed_cluster_body(&name, spec, &cluster.name_any());
            match arm.put_cluster(&url, &body).await {
                Ok(op) => {
                    status.operation = op;
                    let reason = if phase == ProvisioningPhase::Failed {
                        "ProvisioningFailed"
                    } else {
                        "Provisioning"
                    };
                    waiting(status, reason)
                }
                Err(e) => failed("ProvisioningFailed", e.0),
            }
        }
        AksAction::Delete => match arm.delete_cluster(&url).await {
            Ok(op) => {
                status.operation = op;
                waiting(status, "Deleting")
            }
            Err(e) => failed("CloudApiError", e.0),
        },
        AksAction::Gone => {
            delete_kubeconfig_secret(state, cluster).await?;
            set_finalizer(&state.ctx.client, cluster, false).await?;
            Ok(None)
        }
        AksAction::Connect => {
            let secret = NamespacedSecretName {
                namespace: state.settings.kubeconfig_secret_namespace.clone(),
                name: super::eks::kubeconfig_secret_name(cluster),
            };
            let exists = Api::<Secret>::namespaced(state.ctx.client.clone(), &secret.namespace)
                .get_opt(&secret.name)
                .await?
                .is_some();
            if !exists {
                let kubeconfig = match arm.admin_kubeconfig(&url).await {
                    Ok(k) => k,
                    Err(e) => return failed("CloudApiError", e.0),
                };
                if let Err(b) = super::eks::write_kubeconfig_secret(
                    state,
                    cluster,
                    &secret.namespace,
                    &secret.name,
                    &kubeconfig,
                    None,
                )
                .await
                {
                    return failed(b.reason, b.message);
                }
            }
            let secret_ref = NamespacedSecretKeyRef {
                namespace: secret.namespace.clone(),
                name: secret.name.clone(),
                key: KUBECONFIG_KEY.to_owned(),
            };
            let mut observed = observe_through_kubeconfig(state, cluster, &secret_ref, None).await;
            if observed.kubernetes_version.is_none() {
                observed.kubernetes_version = observed_cluster
                    .as_ref()
                    .and_then(|c| c.kubernetes_version.clone())
                    .map(|v| format!("v{v}"));
            }
            observed.provisioning = Some(status);
            observed.provisioned = Some(new_condition(
                "Provisioned",
                true,
                "Active",
                message.clone(),
                cluster.metadata.generation,
                now,
            ));
            observed.kubeconfig_secret = Some(secret);
            Ok(Some((observed, super::KUBECONFIG_RESYNC)))
        }
    }
}

#[cfg(test)]
mod tests;
