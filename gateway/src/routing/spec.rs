//! The routing model shared by the file source and the Kubernetes source.
//!
//! The field names follow `ModelDeployment.status.{route,endpoints}` and
//! `ApiKey.spec`/`ApiKey.status`, so a routes file reads like the cluster's status.

use serde::{Deserialize, Serialize};

/// Everything the gateway routes by: deployments, keys and (file mode) inline credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingSpec {
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    #[serde(default)]
    pub credentials: Vec<CredentialSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    pub route: RouteSpec,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// Which wire protocol and defaults a deployment's upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProviderKind {
    Engine,
    OpenAI,
    Anthropic,
    AzureOpenAI,
    Together,
    OpenAICompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Engine => "engine",
            ProviderKind::OpenAI => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::AzureOpenAI => "azure_openai",
            ProviderKind::Together => "together",
            ProviderKind::OpenAICompatible => "openai_compatible",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    pub served_name: String,
    pub provider: ProviderKind,
    #[serde(default)]
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub azure_deployment: Option<String>,
    #[serde(default)]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub pricing: Option<PricingSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Prices as decimal strings (never floats in the API), per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingSpec {
    #[serde(default)]
    pub input_per_million_tokens: Option<String>,
    #[serde(default)]
    pub output_per_million_tokens: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    pub address: String,
    pub port: u16,
    #[serde(default = "default_true")]
    pub ready: bool,
    #[serde(default)]
    pub pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    /// `sha256:<hex>` (the prefix is optional).
    pub key_hash: String,
    #[serde(default)]
    pub key_id: Option<String>,
    /// Served names this key may use; empty means every served name in its namespace.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// File mode only: the value behind a `credentialsSecretRef`, inline or from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialSpec {
    /// When set, only deployments in this namespace see the credential.
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_from_env: Option<String>,
}

fn default_namespace() -> String {
    "default".to_string()
}
fn default_weight() -> u32 {
    100
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let yaml = r#"
deployments:
  - namespace: team-a
    name: qwen-vllm
    route:
      servedName: qwen3-8b
      provider: Engine
      upstreamModel: qwen3-8b
      baseUrl: null
      apiVersion: null
      azureDeployment: null
      credentialsSecretRef: {name: openai-creds, key: apiKey}
      weight: 100
      priority: 0
      pricing: {inputPerMillionTokens: "0.15", outputPerMillionTokens: "0.60"}
    endpoints:
      - {address: 127.0.0.1, port: 8000, ready: true, pod: qwen-0}
apiKeys:
  - namespace: team-a
    name: app-key
    keyHash: "sha256:00"
    keyId: "k1"
    models: [qwen3-8b]
    limits: {requestsPerMinute: 600, tokensPerMinute: 100000}
    expiresAt: "2027-01-01T00:00:00Z"
    disabled: false
credentials:
  - {name: openai-creds, key: apiKey, valueFromEnv: OPENAI_API_KEY}
"#;
        let spec: RoutingSpec = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(spec.deployments[0].route.provider, ProviderKind::Engine);
        assert_eq!(spec.deployments[0].endpoints[0].port, 8000);
        assert_eq!(
            spec.api_keys[0].limits.as_ref().unwrap().tokens_per_minute,
            Some(100000)
        );
        assert_eq!(
            spec.credentials[0].value_from_env.as_deref(),
            Some("OPENAI_API_KEY")
        );
    }
}
