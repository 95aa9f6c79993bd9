//! Types shared by several kinds: references, workloads, SLO targets, engines, precisions and
//! predicted metrics. Numbers a user writes are integers or decimal strings, never floats.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A decimal number written as a string, e.g. a price per hour `"2.49"`.
pub const DECIMAL_PATTERN: &str = r"^[0-9]+(\.[0-9]{1,6})?$";

/// A key in a Secret in the same namespace as the object that refers to it (for
/// cluster-scoped objects, the namespace is given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key in a Secret in a given namespace; used by cluster-scoped objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key in a ConfigMap in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The traffic a model is sized for: the simulator predicts latency and throughput for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Typical prompt length in tokens.
    #[serde(default = "default_input_tokens")]
    #[schemars(range(min = 1, max = 2_000_000))]
    pub input_tokens: i32,
    /// Typical completion length in tokens.
    #[serde(default = "default_output_tokens")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub output_tokens: i32,
    /// Requests in flight at once across all replicas, the load to size for.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub concurrency: i32,
}

fn default_input_tokens() -> i32 {
    1024
}
fn default_output_tokens() -> i32 {
    256
}
fn default_concurrency() -> i32 {
    8
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            input_tokens: default_input_tokens(),
            output_tokens: default_output_tokens(),
            concurrency: default_concurrency(),
        }
    }
}

/// Service-level objectives; every target is optional and all set targets must be met.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloTargets {
    /// Largest acceptable mean time to first token, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub ttft_ms: Option<i32>,
    /// Largest acceptable mean time per output token after the first, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60_000))]
    pub tpot_ms: Option<i32>,
    /// Largest acceptable mean end-to-end request latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400_000))]
    pub e2e_latency_ms: Option<i32>,
    /// Smallest acceptable output tokens per second seen by one user (one request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub min_tokens_per_second_per_user: Option<i32>,
}

/// An inference engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EngineType {
    /// Let the simulator choose the engine that best meets the SLO.
    #[default]
    Auto,
    /// vLLM.
    #[serde(rename = "VLLM")]
    Vllm,
    /// SGLang.
    #[serde(rename = "SGLang")]
    SgLang,
    /// NVIDIA TensorRT-LLM.
    #[serde(rename = "TensorRTLLM")]
    TensorRtLlm,
    /// llama.cpp (CPU and small GPUs).
    LlamaCpp,
    /// Hugging Face Text Generation Inference.
    #[serde(rename = "TGI")]
    Tgi,
}

impl EngineType {
    /// The value as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineType::Auto => "Auto",
            EngineType::Vllm => "VLLM",
            EngineType::SgLang => "SGLang",
            EngineType::TensorRtLlm => "TensorRTLLM",
            EngineType::LlamaCpp => "LlamaCpp",
            EngineType::Tgi => "TGI",
        }
    }
}

/// Numeric format of weights (and, for FP8/FP4, of matrix-multiply activations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Precision {
    /// 16-bit brain floating point (the usual model dtype).
    #[serde(rename = "BF16")]
    Bf16,
    /// 16-bit IEEE floating point.
    #[serde(rename = "FP16")]
    Fp16,
    /// 8-bit floating point (Hopper and newer).
    #[serde(rename = "FP8")]
    Fp8,
    /// 8-bit integer weights.
    #[serde(rename = "INT8")]
    Int8,
    /// 4-bit integer weights (AWQ/GPTQ).
    #[serde(rename = "INT4")]
    Int4,
    /// 4-bit floating point (NVFP4/MXFP4, Blackwell).
    #[serde(rename = "FP4")]
    Fp4,
}

impl Precision {
    /// The value as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Bf16 => "BF16",
            Precision::Fp16 => "FP16",
            Precision::Fp8 => "FP8",
            Precision::Int8 => "INT8",
            Precision::Int4 => "INT4",
            Precision::Fp4 => "FP4",
        }
    }
}

/// What the simulator predicts for a configuration under the declared workload. Values are
/// decimal strings so that no float reaches the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictedMetrics {
    /// Mean time to first token, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<String>,
    /// Mean time per output token, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<String>,
    /// Mean end-to-end latency of one request, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_latency_ms: Option<String>,
    /// Output tokens per second seen by one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second_per_user: Option<String>,
    /// Output tokens per second over all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens_per_second: Option<String>,
    /// Completed requests per second over all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<String>,
    /// Largest number of requests one replica's KV cache holds at the workload's lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency_per_replica: Option<i64>,
    /// Price of the hardware per hour over all replicas, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<String>,
    /// What the prediction rests on: `MeasuredDeployment` when the simulator's calibration
    /// data measured this very deployment (model, accelerator, engine, precisions and parallel
    /// layout) and the prediction leans on those measurements; `Model` when the performance
    /// model alone predicts it, with larger errors (see the simulator's accuracy report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// With basis `Model`: the model whose measurements of this deployment the prediction
    /// leans on, when the calibration data measured it there but not the model asked about,
    /// and the two share an architecture (the base model of a fine-tune, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_as: Option<String>,
    /// How far to trust `ttftMs`: the simulator's mean absolute TTFT error, in percent, on
    /// calibration measurements it was not fitted on, for predictions of the same basis. Those
    /// measurements cover H100, H200, B200, B300 and GB200/GB300; expect larger errors on
    /// other accelerators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ttft_error_percent: Option<String>,
    /// How far to trust `tpotMs`: the same held-back error for time per output token, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_tpot_error_percent: Option<String>,
}

/// A validated local object name (a DNS-1123 subdomain).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 label, for names that become parts of other names.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A name reference to another object of this API (same namespace for namespaced kinds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A parallel layout as messages show it: `TP2`, `TP8 PP2`, `TP8 EP8` where a mixture-of-experts
/// model's experts are spread over the tensor-parallel group, `TP1 DP8 EP8` where eight
/// attention data-parallel ranks share them.
pub fn parallel_layout(
    tensor_parallel: i32,
    pipeline_parallel: i32,
    attention_data_parallel: Option<i32>,
    expert_parallel: Option<i32>,
) -> String {
    let mut layout = format!("TP{tensor_parallel}");
    if pipeline_parallel > 1 {
        layout += &format!(" PP{pipeline_parallel}");
    }
    if let Some(dp) = attention_data_parallel.filter(|&dp| dp > 1) {
        layout += &format!(" DP{dp}");
    }
    if let Some(ep) = expert_parallel.filter(|&ep| ep > 1) {
        layout += &format!(" EP{ep}");
    }
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parallel_layout_names_only_the_degrees_in_use() {
        assert_eq!(parallel_layout(2, 1, None, None), "TP2");
        assert_eq!(parallel_layout(8, 2, Some(1), Some(1)), "TP8 PP2");
        assert_eq!(parallel_layout(8, 1, None, Some(8)), "TP8 EP8");
        assert_eq!(parallel_layout(1, 1, Some(8), Some(8)), "TP1 DP8 EP8");
    }

    #[test]
    fn workload_defaults_apply_to_missing_fields() {
        let w: Workload = serde_json::from_str(r#"{"inputTokens": 2000}"#).unwrap();
        assert_eq!(
            w,
            Workload {
                input_tokens: 2000,
                ..Workload::default()
            }
        );
    }

    #[test]
    fn enums_use_their_documented_spelling() {
        assert_eq!(
            serde_json::to_string(&EngineType::Vllm).unwrap(),
            "\"VLLM\""
        );
        assert_eq!(
            serde_json::to_string(&EngineType::SgLang).unwrap(),
            "\"SGLang\""
        );
        assert_eq!(serde_json::to_string(&Precision::Fp8).unwrap(), "\"FP8\"");
        for e in [
            EngineType::Auto,
            EngineType::Vllm,
            EngineType::SgLang,
            EngineType::TensorRtLlm,
            EngineType::LlamaCpp,
            EngineType::Tgi,
        ] {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
    }
}
