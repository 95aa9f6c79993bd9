//! `Pipeline` (a DAG of steps with parameters, retries and an optional cron schedule) and
//! `PipelineRun` (one execution, with per-step status). Step inputs are strings so that they
//! can hold templates such as `{{ steps.plan.outputs.accelerator }}` or
//! `{{ params.model }}`; the controller renders and validates them when a step starts.

use crate::common::DNS_LABEL_PATTERN;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Five cron fields (minute hour day-of-month month day-of-week) or a macro like `@daily`.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|([0-9*/,?-]+|[0-9*/,?-]*[A-Za-z]{3}[0-9*/,?-]*)( +([0-9*/,?-]+|[A-Za-z]{3}([-,][A-Za-z]{3})*|[0-9*/,?-]*[A-Za-z]{3}[0-9*/,?-]*)){4})$";

/// A DAG of steps.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "pl",
    category = "bud",
    doc = "A DAG of steps (simulate, deploy, scale, delete, evaluate, HTTP call, wait, notify) with parameters, templated outputs, retries and an optional cron schedule. Each execution is a PipelineRun.",
    printcolumn(name = "Steps", type_ = "integer", json_path = ".status.stepCount"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Last Run", type_ = "string", json_path = ".status.lastRun"),
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
pub struct PipelineSpec {
    /// Parameters a run may set; steps refer to them as `{{ params.<name> }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub parameters: Vec<PipelineParameter>,
    /// The steps; a step starts when every step in its `dependsOn` succeeded.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(s, !has(s.dependsOn) || s.dependsOn.all(d, d != s.name && self.exists(t, t.name == d)))").message("every spec.steps[].dependsOn entry must name another step of this pipeline"))]
    pub steps: Vec<PipelineStep>,
    /// Cron schedule (five fields, UTC, or a macro such as `@daily`); runs only on demand
    /// when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,
    /// What a scheduled run does while the previous one is still running.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Stop scheduling new runs.
    #[serde(default)]
    pub suspend: bool,
    /// Finished PipelineRuns to keep.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub history_limit: i32,
}

fn default_history() -> i32 {
    10
}

/// A pipeline parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineParameter {
    /// Name, used as `{{ params.<name> }}`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    )]
    pub name: String,
    /// Value when a run does not set it; the parameter is required when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What the parameter means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.action == 'Simulate') == has(self.simulate) && (self.action == 'Deploy') == has(self.deploy) && (self.action == 'Scale') == has(self.scale) && (self.action == 'Delete') == has(self.delete) && (self.action == 'Evaluate') == has(self.evaluate) && (self.action == 'HttpCall') == has(self.httpCall) && (self.action == 'Wait') == has(self.wait) && (self.action == 'Notify') == has(self.notify)").message("a step sets exactly the field of its action: simulate, deploy, scale, delete, evaluate, httpCall, wait or notify"))]
pub struct PipelineStep {
    /// Step name, used as `{{ steps.<name>.outputs.<key> }}`.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// What the step does.
    pub action: StepAction,
    /// Steps that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 63)))]
    pub depends_on: Vec<String>,
    /// Retries after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The step fails when it runs longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub timeout_seconds: Option<i32>,
    /// Runs a Simulation; outputs `accelerator`, `tensorParallel`, `replicas`, `costPerHour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<TemplatedObjectStep>,
    /// Creates or updates a ModelDeployment and waits until it is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<TemplatedObjectStep>,
    /// Sets a ModelDeployment's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleStep>,
    /// Deletes a ModelDeployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<TargetStep>,
    /// Runs an Evaluation and waits for its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<TemplatedObjectStep>,
    /// Calls an HTTP endpoint; outputs `status` and `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_call: Option<HttpCallStep>,
    /// Waits for a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitStep>,
    /// Posts a message to a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyStep>,
}

/// Step actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StepAction {
    Simulate,
    Deploy,
    Scale,
    Delete,
    Evaluate,
    HttpCall,
    Wait,
    Notify,
}

/// A step that creates an object from a templated spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplatedObjectStep {
    /// Name of the object to create or update (templated).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The object's spec as YAML (templated); validated against the kind when the step runs.
    #[schemars(length(min = 2, max = 65536))]
    pub spec: String,
}

/// A step acting on an existing ModelDeployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStep {
    /// ModelDeployment name (templated).
    #[schemars(length(min = 1, max = 253))]
    pub model_deployment: String,
}

/// Sets replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStep {
    /// ModelDeployment name (templated).
    #[schemars(length(min = 1, max = 253))]
    pub model_deployment: String,
    /// Replicas (templated; must render to an integer).
    #[schemars(length(min = 1, max = 253))]
    pub replicas: String,
}

/// An HTTP call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCallStep {
    /// URL (templated).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Headers (values templated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Body (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// Status codes counted as success; 2xx when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(range(min = 100, max = 599)))]
    pub success_statuses: Vec<i32>,
}

/// HTTP methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// Waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitStep {
    /// Seconds to wait.
    #[schemars(range(min = 1, max = 604_800))]
    pub seconds: i32,
}

/// Posts a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyStep {
    /// Webhook URL (templated), e.g. a Slack incoming webhook.
    #[schemars(length(min = 1, max = 2048))]
    pub webhook_url: String,
    /// Message (templated).
    #[schemars(length(min = 1, max = 65536))]
    pub message: String,
}

/// Retries of a failed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    #[schemars(range(min = 0, max = 20))]
    pub limit: i32,
    /// Wait before the first retry, doubling each time.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 3600))]
    pub backoff_seconds: i32,
}

fn default_backoff() -> i32 {
    10
}

/// Scheduled runs while a run is active.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run alongside.
    Allow,
    /// Skip the new run.
    #[default]
    Forbid,
    /// Cancel the running one and start the new run.
    Replace,
}

/// Pipeline status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// `Ready` (the DAG is valid and the schedule, if any, is active).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of steps.
    #[serde(default)]
    pub step_count: i32,
    /// Name of the most recent PipelineRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When the schedule last started a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
}

/// One execution of a Pipeline.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "PipelineRun",
    namespaced,
    status = "PipelineRunStatus",
    shortname = "plr",
    category = "bud",
    doc = "One execution of a Pipeline, with the parameters it ran with and the status of every step.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Steps", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a PipelineRun's spec is immutable; start a new run"))]
pub struct PipelineRunSpec {
    /// The Pipeline to run (same namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::common::DNS_SUBDOMAIN_PATTERN))]
    pub pipeline: String,
    /// Parameter values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub parameters: BTreeMap<String, String>,
}

/// Phases of a run or a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

/// Run status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    /// `Succeeded`, `Failed` and the summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The run's phase.
    #[serde(default)]
    pub phase: RunPhase,
    /// `succeeded/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Per-step status, in the pipeline's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// One step's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Step name.
    pub name: String,
    /// Phase.
    #[serde(default)]
    pub phase: RunPhase,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: i32,
    /// Outputs other steps may refer to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// What happened, especially on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
