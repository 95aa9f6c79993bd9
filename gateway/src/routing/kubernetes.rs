//! The Kubernetes source: reflectors on `ModelDeployment` (route and endpoints in status),
//! `ApiKey` (spec limits/models/expiry, status hash/id) and the Secrets that hold provider
//! credentials. Any change rebuilds the snapshot from the caches and swaps it in.
//!
//! The conversion to the shared [`RoutingSpec`] is pure ([`spec_from_resources`]); only
//! [`KubernetesSource::run`] talks to the API server. Key Secrets are never read: keys are
//! matched by the hash the ApiKey controller publishes.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bud_crds::apikey::ApiKey;
use bud_crds::modeldeployment::{ModelDeployment, RouteProvider};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::snapshot::{Snapshot, SnapshotBuilder};
use super::spec::{
    ApiKeySpec, DeploymentSpec, EndpointSpec, LimitsSpec, PricingSpec, ProviderKind, RouteSpec,
    RoutingSpec, SecretKeyRef,
};

fn provider(p: RouteProvider) -> ProviderKind {
    match p {
        RouteProvider::Engine => ProviderKind::Engine,
        RouteProvider::OpenAI => ProviderKind::OpenAI,
        RouteProvider::Anthropic => ProviderKind::Anthropic,
        RouteProvider::AzureOpenAI => ProviderKind::AzureOpenAI,
        RouteProvider::Together => ProviderKind::Together,
        RouteProvider::OpenAICompatible => ProviderKind::OpenAICompatible,
    }
}

/// Converts the watched resources into the routing spec. Deployments without a published
/// route and keys without a published hash are skipped (not yet reconciled).
pub fn spec_from_resources(
    deployments: &[Arc<ModelDeployment>],
    keys: &[Arc<ApiKey>],
) -> RoutingSpec {
    let mut spec = RoutingSpec::default();
    for d in deployments {
        let Some(status) = &d.status else { continue };
        let Some(route) = &status.route else { continue };
        spec.deployments.push(DeploymentSpec {
            namespace: d.namespace().unwrap_or_else(|| "default".into()),
            name: d.name_any(),
            route: RouteSpec {
                served_name: route.served_name.clone(),
                provider: provider(route.provider),
                upstream_model: Some(route.upstream_model.clone()).filter(|m| !m.is_empty()),
                base_url: route.base_url.clone(),
                api_version: route.api_version.clone(),
                azure_deployment: route.azure_deployment.clone(),
                credentials_secret_ref: route.credentials_secret_ref.as_ref().map(|r| {
                    SecretKeyRef {
                        name: r.name.clone(),
                        key: r.key.clone(),
                    }
                }),
                weight: u32::try_from(route.weight).unwrap_or(0),
                priority: route.priority,
                pricing: route.pricing.as_ref().map(|p| PricingSpec {
                    input_per_million_tokens: Some(p.input_per_million_tokens.clone()),
                    output_per_million_tokens: Some(p.output_per_million_tokens.clone()),
                }),
            },
            endpoints: status
                .endpoints
                .iter()
                .filter_map(|e| {
                    Some(EndpointSpec {
                        address: e.address.clone(),
                        port: u16::try_from(e.port).ok()?,
                        ready: e.ready,
                        pod: e.pod.clone(),
                    })
                })
                .collect(),
        });
    }
    for k in keys {
        let Some(status) = &k.status else { continue };
        let Some(hash) = &status.key_hash else {
            continue;
        };
        let limits = k.spec.limits.as_ref().map(|l| LimitsSpec {
            requests_per_minute: l.requests_per_minute.and_then(|v| u32::try_from(v).ok()),
            tokens_per_minute: l.tokens_per_minute.and_then(|v| u64::try_from(v).ok()),
        });
        spec.api_keys.push(ApiKeySpec {
            namespace: k.namespace().unwrap_or_else(|| "default".into()),
            name: k.name_any(),
            key_hash: hash.clone(),
            key_id: status.key_id.clone(),
            models: k.spec.models.clone(),
            limits,
            expires_at: k.spec.expires_at.as_ref().and_then(|t| {
                chrono::DateTime::from_timestamp(
                    t.0.as_second(),
                    t.0.subsec_nanosecond().max(0) as u32,
                )
            }),
            disabled: k.spec.disabled,
        });
    }
    spec
}

/// Reads a credential from the Secret cache.
fn secret_value(secrets: &Store<Secret>, namespace: &str, name: &str, key: &str) -> Option<String> {
    let secret = secrets.get(&ObjectRef::new(name).within(namespace))?;
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone())
            .ok()
            .map(|s| s.trim().to_string());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.trim().to_string())
}

/// Every watch event (applied, deleted, relisted) asks for a rebuild; the channel holds one
/// pending request, so bursts coalesce.
fn notify<T>(tx: tokio::sync::mpsc::Sender<()>) -> impl FnMut(T) -> futures::future::Ready<()> {
    move |_| {
        let _ = tx.try_send(());
        futures::future::ready(())
    }
}

/// Watches the cluster and keeps the snapshot current.
pub struct KubernetesSource {
    pub client: Client,
    pub builder: Arc<SnapshotBuilder>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Restricts the Secret watch (e.g. `bud.studio/credentials=true`); none = all Secrets.
    pub secret_label_selector: Option<String>,
}

impl KubernetesSource {
    /// Runs until the watches fail permanently. `on_ready` is called after the first full
    /// snapshot; `on_reload` after each rebuild.
    pub async fn run(
        self,
        on_ready: impl FnOnce() + Send,
        on_reload: impl Fn(bool) + Send,
    ) -> anyhow::Result<()> {
        let (deployments, deployment_writer) = reflector::store::<ModelDeployment>();
        let (keys, key_writer) = reflector::store::<ApiKey>();
        let (secrets, secret_writer) = reflector::store::<Secret>();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);

        let config = watcher::Config::default().any_semantic();
        let deployment_stream = reflector::reflector(
            deployment_writer,
            watcher(
                Api::<ModelDeployment>::all(self.client.clone()),
                config.clone(),
            ),
        )
        .default_backoff()
        .for_each(notify(tx.clone()));
        let key_stream = reflector::reflector(
            key_writer,
            watcher(Api::<ApiKey>::all(self.client.clone()), config.clone()),
        )
        .default_backoff()
        .for_each(notify(tx.clone()));
        let mut secret_config = config;
        if let Some(selector) = &self.secret_label_selector {
            secret_config = secret_config.labels(selector);
        }
        let secret_stream = reflector::reflector(
            secret_writer,
            watcher(Api::<Secret>::all(self.client.clone()), secret_config),
        )
        .default_backoff()
        .for_each(notify(tx.clone()));
        drop(tx);
        tokio::spawn(deployment_stream);
        tokio::spawn(key_stream);
        tokio::spawn(secret_stream);

        deployments.wait_until_ready().await?;
        keys.wait_until_ready().await?;
        secrets.wait_until_ready().await?;
        self.rebuild(&deployments, &keys, &secrets);
        on_ready();
        while rx.recv().await.is_some() {
            // Coalesce bursts (an initial list, a rollout) into one rebuild.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            self.rebuild(&deployments, &keys, &secrets);
            on_reload(true);
        }
        anyhow::bail!("Kubernetes watches ended")
    }

    fn rebuild(
        &self,
        deployments: &Store<ModelDeployment>,
        keys: &Store<ApiKey>,
        secrets: &Store<Secret>,
    ) {
        let spec = spec_from_resources(&deployments.state(), &keys.state());
        let lookup = |ns: &str, name: &str, key: &str| secret_value(secrets, ns, name, key);
        let snapshot = self.builder.build(&spec, &lookup);
        for warning in &snapshot.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            models = snapshot.model_count(),
            keys = snapshot.key_count(),
            "routes rebuilt from Kubernetes"
        );
        self.snapshot.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_status_and_skips_unreconciled_objects() {
        let deployment: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "qwen", "namespace": "team-a"},
            "spec": {},
            "status": {
                "route": {"servedName": "qwen3-8b", "provider": "Engine", "upstreamModel": "Qwen/Qwen3-8B", "weight": 100, "priority": 0,
                          "pricing": {"inputPerMillionTokens": "0.1", "outputPerMillionTokens": "0.2"}},
                "endpoints": [{"address": "127.0.0.5", "port": 8000, "ready": true, "pod": "qwen-0"}],
            }
        }))
        .expect("a valid ModelDeployment");
        let pending: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "pending", "namespace": "team-a"}, "spec": {}
        }))
        .expect("a valid ModelDeployment");
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "app", "namespace": "team-a"},
            "spec": {"models": ["qwen3-8b"], "limits": {"requestsPerMinute": 10}, "expiresAt": "2030-01-01T00:00:00Z"},
            "status": {"keyHash": "sha256:abc", "keyId": "kid"}
        }))
        .expect("a valid ApiKey");
        let spec =
            spec_from_resources(&[Arc::new(deployment), Arc::new(pending)], &[Arc::new(key)]);
        assert_eq!(spec.deployments.len(), 1);
        let d = &spec.deployments[0];
        assert_eq!(
            (d.namespace.as_str(), d.route.served_name.as_str()),
            ("team-a", "qwen3-8b")
        );
        assert_eq!(d.route.upstream_model.as_deref(), Some("Qwen/Qwen3-8B"));
        assert_eq!(d.endpoints[0].port, 8000);
        let k = &spec.api_keys[0];
        assert_eq!(k.key_id.as_deref(), Some("kid"));
        assert_eq!(k.limits.as_ref().unwrap().requests_per_minute, Some(10));
        assert_eq!(
            k.expires_at.unwrap().to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
    }
}
