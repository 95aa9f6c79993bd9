//! `ModelDeployment`: a model to serve — from a model source on the fleet's accelerators or
//! from an external provider — and, in status, the configuration chosen, the endpoints that
//! serve it and the route the gateway reads.

use crate::common::{
    ConfigMapKeyRef, DECIMAL_PATTERN, DNS_SUBDOMAIN_PATTERN, EngineType, Precision,
    PredictedMetrics, SecretKeyRef, SloTargets, Workload,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A model to serve and how.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "md",
    shortname = "mds",
    category = "bud",
    doc = "A model to serve: a model source deployed on the fleet with an engine chosen for SLO targets by the simulator (or placed explicitly), or an external provider. Status shows the chosen configuration, the ready endpoints and the route the gateway serves.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Served",
        type_ = "string",
        json_path = ".status.route.servedName"
    ),
    printcolumn(
        name = "Engine",
        type_ = "string",
        json_path = ".status.selected.engine"
    ),
    printcolumn(
        name = "Accelerator",
        type_ = "string",
        json_path = ".status.selected.accelerator"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicaSummary"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.selected.cluster",
        priority = 1
    ),
    printcolumn(
        name = "TP",
        type_ = "integer",
        json_path = ".status.selected.tensorParallel",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.model) != has(self.provider)").message("set exactly one of spec.model (serve a model on the fleet) or spec.provider (route to an external provider)"))]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("spec.replicas and spec.autoscaling are mutually exclusive; remove spec.replicas to autoscale").field_path(".replicas"))]
#[x_kube(validation = Rule::new("!has(self.provider) || (!has(self.placement) && !has(self.autoscaling) && !has(self.engine) && !has(self.slo))").message("spec.provider deploys nothing: spec.placement, spec.engine, spec.slo and spec.autoscaling apply only to spec.model").field_path(".provider"))]
#[x_kube(validation = Rule::new("!has(self.provider) || !has(self.cluster)").message("spec.cluster applies only to spec.model").field_path(".cluster"))]
#[x_kube(validation = Rule::new("!has(self.placement) || !has(self.placement.expertParallel) || self.placement.expertParallel == 1 || !has(self.engine) || !(has(self.engine.type) && self.engine.type in ['TGI', 'LlamaCpp'])").message("placement.expertParallel needs an engine that spreads experts (VLLM, SGLang, TensorRTLLM or Auto); TGI and LlamaCpp slice them").field_path(".placement.expertParallel"))]
#[x_kube(validation = Rule::new("!has(self.placement) || !has(self.placement.expertParallel) || self.placement.expertParallel == 1 || self.placement.expertParallel == self.placement.tensorParallel * (has(self.placement.attentionDataParallel) ? self.placement.attentionDataParallel : 1) || (has(self.engine) && has(self.engine.type) && self.engine.type in ['SGLang', 'TensorRTLLM'])").message("placement.expertParallel below tensorParallel x attentionDataParallel needs engine SGLang or TensorRTLLM (--ep-size, --ep_size); vLLM spreads the experts over every rank or none, so set 1 or tensorParallel x attentionDataParallel").field_path(".placement.expertParallel"))]
#[x_kube(validation = Rule::new("!has(self.placement) || !has(self.placement.attentionDataParallel) || self.placement.attentionDataParallel == 1 || !has(self.engine) || !(has(self.engine.type) && self.engine.type in ['TGI', 'LlamaCpp'])").message("placement.attentionDataParallel needs engine VLLM, SGLang, TensorRTLLM or Auto; TGI and LlamaCpp have no attention data parallelism").field_path(".placement.attentionDataParallel"))]
#[x_kube(validation = Rule::new("!has(self.placement) || !has(self.placement.attentionDataParallel) || self.placement.attentionDataParallel == 1 || self.placement.tensorParallel == 1 || !has(self.engine) || !(has(self.engine.type) && self.engine.type == 'TensorRTLLM')").message("placement.tensorParallel must be 1 with attentionDataParallel on TensorRTLLM: its attention data-parallel ranks each run attention on one accelerator").field_path(".placement.tensorParallel"))]
pub struct ModelDeploymentSpec {
    /// The model to serve on the fleet. Exactly one of `model` and `provider` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSource>,
    /// An external provider to route to instead of deploying an engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExternalProvider>,
    /// The model name clients send (`"model": ...`); defaults to the object's name. Several
    /// deployments may share a served name: the gateway splits traffic by `routing.weight`
    /// and falls back by `routing.priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    )]
    pub served_name: Option<String>,
    /// The BudCluster to run on; when empty, the simulator chooses among every Ready cluster.
    /// Immutable: create a new ModelDeployment to move a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.cluster is immutable; create a new ModelDeployment on the other cluster"))]
    pub cluster: Option<String>,
    /// Engine and its settings; `type: Auto` (the default) lets the simulator choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
    /// The traffic to size for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// Latency and throughput targets the chosen configuration must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloTargets>,
    /// Explicit hardware and parallelism; when absent the simulator chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Fixed number of engine replicas (also set by `kubectl scale`). Mutually exclusive with
    /// `autoscaling`; when both are absent the simulator chooses the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Scale replicas on engine load (rendered as a KEDA ScaledObject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// How the gateway shares traffic among deployments of the same served name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSpec>,
}

/// Where the model's weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.s3Endpoint) || self.uri.startsWith('s3://')").message("s3Endpoint applies only to s3:// model URIs").field_path(".s3Endpoint"))]
#[x_kube(validation = Rule::new("!has(self.revision) || self.uri.startsWith('hf://')").message("revision applies only to hf:// model URIs").field_path(".revision"))]
pub struct ModelSource {
    /// `hf://<org>/<name>` (Hugging Face Hub), `s3://<bucket>/<path>` (S3 or MinIO) or
    /// `pvc://<claim>/<path>` (a PersistentVolumeClaim in the same namespace).
    #[schemars(
        length(min = 6, max = 1024),
        regex(
            pattern = r"^(hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?)$"
        )
    )]
    pub uri: String,
    /// Revision (branch, tag or commit) for `hf://`; changing it rolls the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub revision: Option<String>,
    /// The model's Hugging Face `config.json`, for models the simulator's catalog lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ConfigMapKeyRef>,
    /// Credentials: for `hf://` a Secret key holding the Hub token; for `s3://` a Secret
    /// with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (name only; key is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    /// S3 endpoint for S3-compatible stores such as MinIO, e.g. `http://minio.minio:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub s3_endpoint: Option<String>,
}

/// An external model provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'AzureOpenAI' || (has(self.baseUrl) && has(self.azureDeployment) && has(self.apiVersion))").message("provider type AzureOpenAI needs baseUrl (https://<resource>.openai.azure.com), azureDeployment and apiVersion"))]
#[x_kube(validation = Rule::new("self.type != 'OpenAICompatible' || has(self.baseUrl)").message("provider type OpenAICompatible needs baseUrl").field_path(".baseUrl"))]
#[x_kube(validation = Rule::new("self.type == 'AzureOpenAI' || (!has(self.azureDeployment) && !has(self.apiVersion))").message("azureDeployment and apiVersion apply only to provider type AzureOpenAI"))]
pub struct ExternalProvider {
    /// The provider's API.
    #[serde(rename = "type")]
    pub type_: ProviderType,
    /// The provider's model name, e.g. `gpt-4o-mini` or `claude-sonnet-4-5`.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// API base URL; each type has a default except `OpenAICompatible` and `AzureOpenAI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub base_url: Option<String>,
    /// Azure OpenAI deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub azure_deployment: Option<String>,
    /// Azure OpenAI `api-version`, e.g. `2024-10-21`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"))]
    pub api_version: Option<String>,
    /// Secret key holding the provider's API key; the gateway reads it, never logs it.
    pub credentials_secret_ref: SecretKeyRef,
    /// Price per million tokens, used for usage cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<TokenPricing>,
}

/// Kinds of external provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProviderType {
    OpenAI,
    Anthropic,
    AzureOpenAI,
    Together,
    OpenAICompatible,
}

/// Price per million tokens, in US dollars, as decimal strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPricing {
    /// Dollars per million input tokens, e.g. `"0.15"`.
    #[schemars(regex(pattern = DECIMAL_PATTERN))]
    pub input_per_million_tokens: String,
    /// Dollars per million output tokens, e.g. `"0.60"`.
    #[schemars(regex(pattern = DECIMAL_PATTERN))]
    pub output_per_million_tokens: String,
}

/// The engine and its settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// Engine; `Auto` lets the simulator choose.
    #[serde(default, rename = "type")]
    pub type_: EngineType,
    /// Container image; the operator's configured image for the engine when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// Largest context (prompt plus completion) the engine accepts, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 10_000_000))]
    pub max_context_length: Option<i32>,
    /// Extra engine arguments, appended after the ones the operator renders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,
}

/// Explicit hardware and parallelism for each replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.acceleratorsPerReplica) || self.acceleratorsPerReplica == self.tensorParallel * self.pipelineParallel * (has(self.attentionDataParallel) ? self.attentionDataParallel : 1)").message("acceleratorsPerReplica must equal tensorParallel x pipelineParallel x attentionDataParallel").field_path(".acceleratorsPerReplica"))]
#[x_kube(validation = Rule::new("!has(self.expertParallel) || (self.tensorParallel * (has(self.attentionDataParallel) ? self.attentionDataParallel : 1)) % self.expertParallel == 0").message("expertParallel must divide tensorParallel x attentionDataParallel: the experts are spread whole over that many of the ranks and each sliced over the rest").field_path(".expertParallel"))]
#[x_kube(validation = Rule::new("!has(self.attentionDataParallel) || self.attentionDataParallel == 1 || self.pipelineParallel == 1").message("attentionDataParallel needs pipelineParallel 1: the operator renders data-parallel attention within one pipeline stage").field_path(".attentionDataParallel"))]
pub struct Placement {
    /// Accelerator product as in the BudCluster inventory, e.g. `NVIDIA-H100-80GB-HBM3`, or
    /// `CPU` for CPU-only serving.
    #[schemars(length(min = 1, max = 253))]
    pub accelerator: String,
    /// Tensor-parallel degree: a power of two.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self in [1, 2, 4, 8, 16, 32, 64]").message("tensorParallel must be a power of two (1, 2, 4, 8, 16, 32 or 64)"))]
    pub tensor_parallel: i32,
    /// Pipeline-parallel degree.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub pipeline_parallel: i32,
    /// Accelerators per replica; defaults to tensorParallel x pipelineParallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub accelerators_per_replica: Option<i32>,
    /// Weight precision; the model's own dtype when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Most requests one replica runs at once (the engine's max batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: Option<i32>,
    /// Expert parallelism of a mixture-of-experts model: its routed experts spread whole over
    /// this many of the tensorParallel x attentionDataParallel accelerators, each expert
    /// sliced over the rest, instead of every expert sliced over all of them. It must divide
    /// tensorParallel x attentionDataParallel. Equal to it on any engine but TGI and LlamaCpp
    /// (vLLM `--enable-expert-parallel`); below it only on SGLang (`--ep-size`) and
    /// TensorRTLLM (`--ep_size`). Absent or 1 slices the experts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub expert_parallel: Option<i32>,
    /// Attention data parallelism of a mixture-of-experts model: this many ranks each run
    /// attention, with tensorParallel accelerators, for their own requests and keep only
    /// those requests' KV cache, while the expert layers span every rank (vLLM
    /// `--data-parallel-size`, SGLang `--dp-size` with `--enable-dp-attention`, TensorRT-LLM
    /// `enable_attention_dp` in an options file the pod carries, with tensorParallel 1). Each
    /// replica uses tensorParallel x attentionDataParallel accelerators. Not with TGI or
    /// LlamaCpp; absent or 1 splits attention by tensor parallelism alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub attention_data_parallel: Option<i32>,
}

fn one() -> i32 {
    1
}

/// Replica autoscaling on engine load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas").field_path(".minReplicas"))]
pub struct Autoscaling {
    /// Fewest replicas; 0 allows scale to zero.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// The engine metric to scale on.
    #[serde(default)]
    pub metric: AutoscalingMetric,
    /// Target value of the metric per replica, as a quantity (e.g. `"8"` waiting requests
    /// or `"800m"` KV-cache usage).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(m|k|M)?$"))]
    pub target: String,
}

/// Engine metrics replicas can scale on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AutoscalingMetric {
    /// Requests waiting in the engine's queue (`vllm:num_requests_waiting`).
    #[default]
    RequestsWaiting,
    /// Requests running per replica (`vllm:num_requests_running`).
    RequestsRunning,
    /// Fraction of KV cache in use (`vllm:kv_cache_usage_perc`).
    KvCacheUsage,
}

/// Traffic sharing among deployments of the same served name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Share of traffic among deployments of equal priority.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: i32,
    /// Lower is tried first; a higher priority takes traffic only when every lower one fails
    /// or has no ready endpoint (fallback).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub priority: i32,
}

fn default_weight() -> i32 {
    100
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            weight: default_weight(),
            priority: 0,
        }
    }
}

/// What the operator chose and observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// `Simulated`, `Progressing`, `Available` and the summary `Ready`, whose reason names
    /// the blocker (e.g. `NoFeasibleConfiguration`, `InsufficientCapacity`, `PodsNotReady`,
    /// `RollingOut`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Desired engine replicas.
    #[serde(default)]
    pub replicas: i32,
    /// Engine replicas ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,
    /// Label selector of the engine pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The configuration chosen, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<SelectedConfiguration>,
    /// Engine endpoints, from the Service's EndpointSlices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ServingEndpoint>,
    /// The route the gateway serves for this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
}

/// The serving configuration in effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedConfiguration {
    /// `Simulated` (chosen by the simulator) or `Explicit` (from spec.placement).
    pub source: SelectionSource,
    /// The Simulation that chose it, when simulated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<String>,
    /// BudCluster the replicas run on.
    pub cluster: String,
    /// Accelerator product, or `CPU`.
    pub accelerator: String,
    /// Accelerators per replica.
    pub accelerators_per_replica: i32,
    /// Replicas.
    pub replicas: i32,
    /// Tensor-parallel degree.
    pub tensor_parallel: i32,
    /// Pipeline-parallel degree.
    pub pipeline_parallel: i32,
    /// Expert-parallel degree of a mixture-of-experts model: its experts spread whole over
    /// this many of the tensor- and attention data-parallel ranks, each sliced over the rest;
    /// absent when every expert is sliced by tensor parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_parallel: Option<i32>,
    /// Attention data-parallel ranks of a mixture-of-experts model, each with
    /// tensorParallel accelerators; absent when attention is split by tensor parallelism alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_data_parallel: Option<i32>,
    /// Weight precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Engine.
    pub engine: EngineType,
    /// Most requests one replica runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<i32>,
    /// The simulator's prediction for this configuration under spec.workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<PredictedMetrics>,
}

impl SelectedConfiguration {
    /// The parallel layout, e.g. `TP1 DP8 EP8` ([`crate::common::parallel_layout`]).
    pub fn layout(&self) -> String {
        crate::common::parallel_layout(
            self.tensor_parallel,
            self.pipeline_parallel,
            self.attention_data_parallel,
            self.expert_parallel,
        )
    }
}

/// How the configuration was chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectionSource {
    #[default]
    Simulated,
    Explicit,
}

/// One engine endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingEndpoint {
    /// IP address of the pod.
    pub address: String,
    /// Port of the engine's HTTP API.
    pub port: i32,
    /// Whether the endpoint passes its readiness probe.
    pub ready: bool,
    /// Pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// What the gateway needs to serve a deployment; `endpoints` complete it for engines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Name clients send as `model`.
    pub served_name: String,
    /// `Engine` for the deployment's own endpoints, else the external provider's type.
    pub provider: RouteProvider,
    /// Model name sent upstream.
    pub upstream_model: String,
    /// Provider base URL (external providers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Azure OpenAI `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_deployment: Option<String>,
    /// Secret key (same namespace) holding the provider's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    /// Share of traffic among deployments of equal priority.
    pub weight: i32,
    /// Lower is tried first.
    pub priority: i32,
    /// Price per million tokens, for usage cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<TokenPricing>,
}

/// Where a route sends requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RouteProvider {
    /// The deployment's own engine endpoints (OpenAI-compatible).
    #[default]
    Engine,
    OpenAI,
    Anthropic,
    AzureOpenAI,
    Together,
    OpenAICompatible,
}

impl From<ProviderType> for RouteProvider {
    fn from(value: ProviderType) -> Self {
        match value {
            ProviderType::OpenAI => RouteProvider::OpenAI,
            ProviderType::Anthropic => RouteProvider::Anthropic,
            ProviderType::AzureOpenAI => RouteProvider::AzureOpenAI,
            ProviderType::Together => RouteProvider::Together,
            ProviderType::OpenAICompatible => RouteProvider::OpenAICompatible,
        }
    }
}

impl ModelDeployment {
    /// The name clients send: `spec.servedName`, else the object's name.
    pub fn served_name(&self) -> String {
        self.spec
            .served_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
