//! The immutable routing snapshot: keys by hash, served names by namespace, and for each
//! served name its deployments grouped by priority (the fallback chain).
//!
//! Built from a [`RoutingSpec`] plus resolved credentials; swapped atomically by the sources.
//! Nothing here does I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::balancer::{EndpointRegistry, EndpointState};
use super::spec::{ApiKeySpec, DeploymentSpec, LimitsSpec, ProviderKind, RoutingSpec};
use crate::error::GatewayError;
use crate::providers::{self, HttpClients, Provider};

/// One API key as the request path sees it (no plaintext, only the hash it was found by).
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub namespace: String,
    pub name: String,
    pub key_id: String,
    /// Empty = every served name in the namespace.
    pub models: Vec<String>,
    pub limits: LimitsSpec,
    pub expires_at: Option<DateTime<Utc>>,
    pub disabled: bool,
}

impl KeyEntry {
    pub fn allows(&self, served_name: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == served_name)
    }
}

/// One deployment behind a served name.
#[derive(Debug)]
pub struct Backend {
    pub namespace: String,
    pub deployment: String,
    pub served_name: String,
    pub provider_kind: ProviderKind,
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: i32,
    /// USD per token (input, output).
    pub price_per_token: (f64, f64),
    pub endpoints: Vec<Arc<EndpointState>>,
}

impl Backend {
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.price_per_token.0 * input_tokens as f64 + self.price_per_token.1 * output_tokens as f64
    }
}

/// A served name in one namespace: deployment groups in priority order (lowest first).
#[derive(Debug)]
pub struct ModelRoute {
    pub namespace: String,
    pub served_name: String,
    pub groups: Vec<Vec<Arc<Backend>>>,
}

/// Everything the request path reads, immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<String, Arc<KeyEntry>>,
    models: HashMap<String, BTreeMap<String, Arc<ModelRoute>>>,
    /// Problems found while building (bad prices, missing credentials), for logs.
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Finds a key by the hex SHA-256 of the presented secret.
    pub fn key_by_hash(&self, hash_hex: &str) -> Option<&Arc<KeyEntry>> {
        self.keys.get(hash_hex)
    }

    /// Resolves a served name in the key's namespace: 404 when unknown there, 403 when the key
    /// may not use it.
    pub fn resolve(
        &self,
        key: &KeyEntry,
        served_name: &str,
    ) -> Result<Arc<ModelRoute>, GatewayError> {
        let route = self
            .models
            .get(&key.namespace)
            .and_then(|m| m.get(served_name))
            .ok_or_else(|| {
                GatewayError::not_found(format!("The model `{served_name}` does not exist"))
            })?;
        if !key.allows(served_name) {
            return Err(GatewayError::forbidden(format!(
                "This API key may not use the model `{served_name}`"
            )));
        }
        Ok(route.clone())
    }

    /// Served names the key may use, sorted.
    pub fn models_for(&self, key: &KeyEntry) -> Vec<Arc<ModelRoute>> {
        self.models
            .get(&key.namespace)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|r| key.allows(&r.served_name))
            .cloned()
            .collect()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
    pub fn model_count(&self) -> usize {
        self.models.values().map(BTreeMap::len).sum()
    }
}

/// Builds snapshots, keeping endpoint state and HTTP pools across rebuilds.
#[derive(Debug)]
pub struct SnapshotBuilder {
    pub clients: HttpClients,
    pub registry: EndpointRegistry,
}

/// Looks up a credential: (namespace, secret name, key) -> value.
pub trait CredentialLookup {
    fn credential(&self, namespace: &str, name: &str, key: &str) -> Option<String>;
}

impl<F: Fn(&str, &str, &str) -> Option<String>> CredentialLookup for F {
    fn credential(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self(namespace, name, key)
    }
}

/// Parses a decimal price per million tokens into USD per token.
fn per_token(price: Option<&str>) -> Result<f64, String> {
    match price {
        None => Ok(0.0),
        Some(p) => p
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v / 1_000_000.0)
            .ok_or_else(|| format!("invalid price `{p}`")),
    }
}

/// Normalises `sha256:<hex>` / `<HEX>` to lowercase hex.
pub fn normalize_key_hash(hash: &str) -> String {
    hash.trim()
        .strip_prefix("sha256:")
        .unwrap_or(hash.trim())
        .to_ascii_lowercase()
}

impl SnapshotBuilder {
    pub fn new(clients: HttpClients) -> Self {
        Self {
            clients,
            registry: EndpointRegistry::default(),
        }
    }

    pub fn build(&self, spec: &RoutingSpec, credentials: &dyn CredentialLookup) -> Snapshot {
        let mut warnings = Vec::new();
        let mut keys = HashMap::new();
        for key in &spec.api_keys {
            let hash = normalize_key_hash(&key.key_hash);
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                warnings.push(format!(
                    "api key {}/{}: keyHash is not a SHA-256 hex digest",
                    key.namespace, key.name
                ));
                continue;
            }
            keys.insert(hash, Arc::new(key_entry(key)));
        }

        let mut by_name: HashMap<(String, String), Vec<Backend>> = HashMap::new();
        for deployment in &spec.deployments {
            match self.backend(deployment, credentials) {
                Ok(backend) => by_name
                    .entry((backend.namespace.clone(), backend.served_name.clone()))
                    .or_default()
                    .push(backend),
                Err(w) => warnings.push(format!(
                    "deployment {}/{}: {w}",
                    deployment.namespace, deployment.name
                )),
            }
        }
        let mut models: HashMap<String, BTreeMap<String, Arc<ModelRoute>>> = HashMap::new();
        for ((namespace, served_name), mut backends) in by_name {
            backends.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(a.deployment.cmp(&b.deployment))
            });
            let mut groups: Vec<Vec<Arc<Backend>>> = Vec::new();
            for backend in backends {
                match groups.last_mut() {
                    Some(group) if group[0].priority == backend.priority => {
                        group.push(Arc::new(backend))
                    }
                    _ => groups.push(vec![Arc::new(backend)]),
                }
            }
            models.entry(namespace.clone()).or_default().insert(
                served_name.clone(),
                Arc::new(ModelRoute {
                    namespace,
                    served_name,
                    groups,
                }),
            );
        }
        Snapshot {
            keys,
            models,
            warnings,
        }
    }

    fn backend(
        &self,
        deployment: &DeploymentSpec,
        credentials: &dyn CredentialLookup,
    ) -> Result<Backend, String> {
        let route = &deployment.route;
        if route.served_name.is_empty() {
            return Err("route.servedName is empty".into());
        }
        let credential = match &route.credentials_secret_ref {
            Some(r) => Some(
                credentials
                    .credential(&deployment.namespace, &r.name, &r.key)
                    .ok_or_else(|| format!("credential {}/{} not found", r.name, r.key))?,
            ),
            None => None,
        };
        let pricing = route.pricing.as_ref();
        let price_per_token = (
            per_token(pricing.and_then(|p| p.input_per_million_tokens.as_deref()))?,
            per_token(pricing.and_then(|p| p.output_per_million_tokens.as_deref()))?,
        );
        let id = format!("{}/{}", deployment.namespace, deployment.name);
        let endpoints = if route.provider == ProviderKind::Engine {
            deployment
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .map(|e| {
                    let host = if e.address.contains(':') {
                        format!("[{}]", e.address)
                    } else {
                        e.address.clone()
                    };
                    let base = format!("http://{host}:{}/v1", e.port);
                    let label = e
                        .pod
                        .clone()
                        .unwrap_or_else(|| format!("{host}:{}", e.port));
                    self.registry
                        .get_or_create(&format!("{id}|{base}"), &base, &label)
                })
                .collect()
        } else {
            let base = route
                .base_url
                .clone()
                .or_else(|| providers::default_base_url(route.provider).map(str::to_string))
                .ok_or_else(|| "route.baseUrl is required for this provider".to_string())?;
            let base = base.trim_end_matches('/').to_string();
            vec![
                self.registry
                    .get_or_create(&format!("{id}|{base}"), &base, &base),
            ]
        };
        let provider = providers::build_provider(
            route.provider,
            &self.clients,
            credential,
            route.api_version.clone(),
            route.azure_deployment.clone(),
        );
        Ok(Backend {
            namespace: deployment.namespace.clone(),
            deployment: deployment.name.clone(),
            served_name: route.served_name.clone(),
            provider_kind: route.provider,
            provider,
            upstream_model: route
                .upstream_model
                .clone()
                .unwrap_or_else(|| route.served_name.clone()),
            weight: route.weight,
            priority: route.priority,
            price_per_token,
            endpoints,
        })
    }
}

fn key_entry(key: &ApiKeySpec) -> KeyEntry {
    KeyEntry {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        key_id: key
            .key_id
            .clone()
            .unwrap_or_else(|| format!("{}/{}", key.namespace, key.name)),
        models: key.models.clone(),
        limits: key.limits.clone().unwrap_or_default(),
        expires_at: key.expires_at,
        disabled: key.disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::spec::{EndpointSpec, RouteSpec, SecretKeyRef};
    use std::time::Duration;

    fn builder() -> SnapshotBuilder {
        SnapshotBuilder::new(HttpClients::new(Duration::from_secs(1), 0).unwrap())
    }

    fn deployment(
        ns: &str,
        name: &str,
        served: &str,
        provider: ProviderKind,
        priority: i32,
    ) -> DeploymentSpec {
        DeploymentSpec {
            namespace: ns.into(),
            name: name.into(),
            route: RouteSpec {
                served_name: served.into(),
                provider,
                upstream_model: None,
                base_url: Some("http://127.0.0.1:1/v1".into()),
                api_version: None,
                azure_deployment: None,
                credentials_secret_ref: None,
                weight: 100,
                priority,
                pricing: None,
            },
            endpoints: vec![
                EndpointSpec {
                    address: "127.0.0.1".into(),
                    port: 8000,
                    ready: true,
                    pod: Some("p0".into()),
                },
                EndpointSpec {
                    address: "127.0.0.1".into(),
                    port: 8001,
                    ready: false,
                    pod: None,
                },
            ],
        }
    }

    fn key(ns: &str, models: &[&str]) -> ApiKeySpec {
        ApiKeySpec {
            namespace: ns.into(),
            name: "k".into(),
            key_hash: format!("sha256:{}", "AB".repeat(32)),
            key_id: None,
            models: models.iter().map(|m| m.to_string()).collect(),
            limits: None,
            expires_at: None,
            disabled: false,
        }
    }

    fn no_credentials(_: &str, _: &str, _: &str) -> Option<String> {
        None
    }

    #[test]
    fn groups_by_priority_and_resolves_in_the_key_namespace() {
        let spec = RoutingSpec {
            deployments: vec![
                deployment("a", "vllm", "m", ProviderKind::Engine, 0),
                deployment("a", "openai", "m", ProviderKind::OpenAI, 10),
                deployment("b", "other", "m2", ProviderKind::Engine, 0),
            ],
            api_keys: vec![key("a", &[])],
            credentials: vec![],
        };
        let snap = builder().build(&spec, &no_credentials);
        assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
        let k = snap.key_by_hash(&"ab".repeat(32)).unwrap();
        let route = snap.resolve(k, "m").unwrap();
        assert_eq!(route.groups.len(), 2);
        assert_eq!(route.groups[0][0].deployment, "vllm");
        assert_eq!(
            route.groups[0][0].endpoints.len(),
            1,
            "only ready endpoints"
        );
        assert_eq!(
            route.groups[0][0].endpoints[0].base_url,
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            snap.resolve(k, "m2").unwrap_err().status,
            404,
            "other namespace"
        );
    }

    #[test]
    fn allowed_models_give_403() {
        let spec = RoutingSpec {
            deployments: vec![
                deployment("a", "x", "m", ProviderKind::Engine, 0),
                deployment("a", "y", "n", ProviderKind::Engine, 0),
            ],
            api_keys: vec![key("a", &["n"])],
            credentials: vec![],
        };
        let snap = builder().build(&spec, &no_credentials);
        let k = snap.key_by_hash(&"ab".repeat(32)).unwrap();
        assert_eq!(snap.resolve(k, "m").unwrap_err().status, 403);
        assert_eq!(snap.models_for(k).len(), 1);
    }

    #[test]
    fn missing_credentials_and_bad_hashes_are_warnings() {
        let mut d = deployment("a", "x", "m", ProviderKind::OpenAI, 0);
        d.route.credentials_secret_ref = Some(SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        });
        let mut bad = key("a", &[]);
        bad.key_hash = "nothex".into();
        let spec = RoutingSpec {
            deployments: vec![d],
            api_keys: vec![bad],
            credentials: vec![],
        };
        let snap = builder().build(&spec, &no_credentials);
        assert_eq!(snap.warnings.len(), 2);
        assert_eq!(snap.model_count(), 0);
        assert_eq!(snap.key_count(), 0);
    }

    #[test]
    fn prices_are_per_million() {
        assert_eq!(per_token(Some("1.5")).unwrap(), 1.5e-6);
        assert!(per_token(Some("-1")).is_err());
        assert!(per_token(Some("abc")).is_err());
    }
}
