//! `ApiKey`: a client credential for the gateway. The operator generates the key once into a
//! Secret and publishes only its SHA-256 hash; the gateway never reads key Secrets.

use crate::common::DECIMAL_PATTERN;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A client credential for the gateway.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "ApiKey",
    namespaced,
    status = "ApiKeyStatus",
    shortname = "ak",
    category = "bud",
    doc = "A client credential for the gateway: allowed models, request and token rate limits, a budget and an expiry. The key is generated once into a Secret; status publishes only its hash.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Models", type_ = "string", json_path = ".spec.models"),
    printcolumn(
        name = "RPM",
        type_ = "integer",
        json_path = ".spec.limits.requestsPerMinute"
    ),
    printcolumn(
        name = "TPM",
        type_ = "integer",
        json_path = ".spec.limits.tokensPerMinute"
    ),
    printcolumn(name = "Expires", type_ = "date", json_path = ".spec.expiresAt"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// What the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Served model names this key may use; every model in the namespace when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub models: Vec<String>,
    /// Rate limits; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
    /// Spending limit in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// When the key stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Name of the Secret the key is written to; `<name>-key` when empty. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::common::DNS_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.secretName is immutable"))]
    pub secret_name: Option<String>,
    /// Reject every request made with this key, without deleting it.
    #[serde(default)]
    pub disabled: bool,
}

/// Per-key rate limits, shared by all gateway replicas when they share a Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.requestsPerMinute) || has(self.tokensPerMinute)").message("set requestsPerMinute, tokensPerMinute or both, or remove spec.limits"))]
pub struct KeyLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub requests_per_minute: Option<i32>,
    /// Input plus output tokens per minute; a request reserves its `max_tokens` on admission
    /// and is corrected when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000_000i64))]
    pub tokens_per_minute: Option<i64>,
}

/// A spending limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// US dollars, e.g. `"100.00"`.
    #[schemars(regex(pattern = DECIMAL_PATTERN))]
    pub amount: String,
    /// The period the amount applies to.
    #[serde(default)]
    pub period: BudgetPeriod,
}

/// Budget periods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BudgetPeriod {
    Daily,
    #[default]
    Monthly,
    Total,
}

/// The published (non-secret) identity of the key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// `Ready` once the key exists; `False` with reason `Expired` or `Disabled` otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:<hex>` of the key; the gateway matches presented keys against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub key_hash: Option<String>,
    /// Stable identifier recorded with every request made with the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's last four characters, to tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hint: Option<String>,
    /// Secret holding the key (key `apiKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Spend so far in the budget period, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<String>,
}
