//! Rendering of a ModelDeployment's engine workload: the Deployment (or LeaderWorkerSet when
//! a replica spans nodes), its Service and, with autoscaling, a KEDA ScaledObject. Pure
//! functions of the spec, the chosen configuration and the operator's settings.

use bud_crds::ModelDeployment;
use bud_crds::common::EngineType;
use bud_crds::modeldeployment::{AutoscalingMetric, SelectedConfiguration};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretKeySelector, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DynamicObject, ObjectMeta};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Label carrying the owning ModelDeployment's name on every child and engine pod.
pub const DEPLOYMENT_LABEL: &str = "bud.studio/model-deployment";
/// Label marking engine pods (the e2e runtime and dashboards select on it).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Annotation with the simulator's model id, so tools can tell what a pod serves.
pub const MODEL_ID_ANNOTATION: &str = "bud.studio/model-id";
/// Annotation with the accelerator product the pod was placed on.
pub const ACCELERATOR_ANNOTATION: &str = "bud.studio/accelerator";
/// Annotation holding the engine's options file, which a downward-API volume mounts at
/// [`ENGINE_OPTIONS_FILE`]: TensorRT-LLM takes some settings (attention data parallelism)
/// only from a file (`--extra_llm_api_options`), and the pod itself carries it.
pub const ENGINE_OPTIONS_ANNOTATION: &str = "bud.studio/engine-options";
const ENGINE_OPTIONS_DIR: &str = "/etc/bud/engine-options";
/// Where the engine finds its options file.
pub const ENGINE_OPTIONS_FILE: &str = "/etc/bud/engine-options/options.yaml";
/// The port every engine's OpenAI-compatible API listens on.
pub const ENGINE_PORT: i32 = 8000;
const MODELS_DIR: &str = "/models";

/// Container images and settings the operator is configured with.
#[derive(Clone, Debug)]
pub struct EngineImages {
    pub vllm: String,
    pub sglang: String,
    pub tgi: String,
    pub llama_cpp: String,
    pub tensorrt_llm: String,
    /// Image with Python for `hf://` downloads (installs `huggingface_hub` and runs its CLI).
    pub hf_downloader: String,
    /// Image with the `aws` CLI for `s3://` downloads.
    pub s3_downloader: String,
}

impl Default for EngineImages {
    fn default() -> Self {
        Self {
            vllm: "vllm/vllm-openai:v0.11.0".into(),
            sglang: "lmsysorg/sglang:v0.5.3-cu129".into(),
            tgi: "ghcr.io/huggingface/text-generation-inference:3.3.6".into(),
            llama_cpp: "ghcr.io/ggml-org/llama.cpp:server".into(),
            tensorrt_llm: "nvcr.io/nvidia/tensorrt-llm/release:1.0.0".into(),
            hf_downloader: "python:3.12-slim".into(),
            s3_downloader: "amazon/aws-cli:2.27.0".into(),
        }
    }
}

impl EngineImages {
    fn for_engine(&self, engine: EngineType) -> &str {
        match engine {
            EngineType::Auto | EngineType::Vllm => &self.vllm,
            EngineType::SgLang => &self.sglang,
            EngineType::Tgi => &self.tgi,
            EngineType::LlamaCpp => &self.llama_cpp,
            EngineType::TensorRtLlm => &self.tensorrt_llm,
        }
    }
}

/// Everything rendering needs besides the ModelDeployment.
pub struct RenderInputs<'a> {
    pub selected: &'a SelectedConfiguration,
    /// Replicas for the Deployment; `None` leaves them to an autoscaler.
    pub replicas: Option<i32>,
    /// Extended resource requesting the accelerator (e.g. `nvidia.com/gpu`); `None` on CPU.
    pub accelerator_resource: Option<String>,
    /// Node label naming the product (e.g. `nvidia.com/gpu.product`).
    pub product_label: String,
    /// The simulator's model id, when known.
    pub model_id: Option<String>,
    pub images: &'a EngineImages,
}

/// Labels on objects in another cluster naming the ModelDeployment they belong to: owner
/// references cannot cross clusters, so these (and the operator's finalizer) stand in.
pub const OWNER_NAMESPACE_LABEL: &str = "bud.studio/owner-namespace";
pub const OWNER_NAME_LABEL: &str = "bud.studio/owner-name";

/// The name of a ModelDeployment's workload in another cluster's workload namespace, which
/// ModelDeployments of every namespace share: `NAMESPACE-NAME`, or when that exceeds 63
/// characters (a Service name's limit) its first 52 and a hash of the whole.
pub fn remote_name(md: &ModelDeployment) -> String {
    use sha2::Digest;
    let full = format!("{}-{}", md.namespace().unwrap_or_default(), md.name_any());
    if full.len() <= 63 {
        return full;
    }
    let digest = sha2::Sha256::digest(full.as_bytes());
    let hash = hex::encode(&digest[..5]);
    let head: String = full.chars().take(52).collect();
    format!("{}-{hash}", head.trim_end_matches(['-', '.']))
}

/// The ModelDeployment as the renderer sees it for another cluster: named
/// [`remote_name`] in `namespace`, without a uid (so its children get no owner reference),
/// serving the same name. Render functions given it produce the remote objects.
pub fn as_remote(md: &ModelDeployment, namespace: &str) -> ModelDeployment {
    let mut remote = ModelDeployment::new(&remote_name(md), md.spec.clone());
    remote.metadata.namespace = Some(namespace.to_owned());
    remote.spec.served_name = Some(md.served_name());
    remote
}

/// Adds the owner labels of `md` to `labels`.
pub fn add_owner_labels(labels: &mut BTreeMap<String, String>, md: &ModelDeployment) {
    labels.insert(
        OWNER_NAMESPACE_LABEL.to_owned(),
        md.namespace().unwrap_or_default(),
    );
    // Label values are limited to 63 characters; longer names are identified by the
    // namespace label and the hashed object name.
    let name = md.name_any();
    if name.len() <= 63 {
        labels.insert(OWNER_NAME_LABEL.to_owned(), name);
    }
}

/// Labels of the engine pods and their selector.
pub fn selector_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([(DEPLOYMENT_LABEL.to_owned(), md.name_any())])
}

/// The selector as a string, for the `/scale` subresource.
pub fn selector_string(md: &ModelDeployment) -> String {
    format!("{DEPLOYMENT_LABEL}={}", md.name_any())
}

fn labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    let mut labels = selector_labels(md);
    labels.insert("app.kubernetes.io/name".into(), md.name_any());
    labels.insert(COMPONENT_LABEL.into(), "engine".into());
    labels.insert("app.kubernetes.io/managed-by".into(), "bud-operator".into());
    labels
}

fn child_meta(md: &ModelDeployment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(labels(md)),
        owner_references: md.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Where the engine finds the weights, and the download step that puts them there.
struct ModelLocation {
    /// The engine's `--model` argument.
    model_arg: String,
    volume: Volume,
    init: Option<Container>,
}

fn model_location(md: &ModelDeployment, images: &EngineImages) -> ModelLocation {
    let source = md
        .spec
        .model
        .as_ref()
        .expect("rendered only for spec.model");
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "models".into(),
        mount_path: MODELS_DIR.into(),
        ..Default::default()
    };
    let secret_env = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(repo) = source.uri.strip_prefix("hf://") {
        // `sh -c SCRIPT NAME ARGS...`: NAME becomes $0, ARGS "$@".
        let mut args = vec![
            "pip install --quiet 'huggingface_hub[cli]' && exec huggingface-cli download \"$@\""
                .to_owned(),
            "download".into(),
            repo.to_owned(),
            "--cache-dir".into(),
            MODELS_DIR.into(),
        ];
        if let Some(rev) = &source.revision {
            args.extend(["--revision".into(), rev.clone()]);
        }
        let env = source
            .credentials_secret_ref
            .iter()
            .map(|r| secret_env("HF_TOKEN", &r.name, &r.key))
            .collect();
        return ModelLocation {
            model_arg: repo.to_owned(),
            volume: empty("models"),
            init: Some(Container {
                name: "model-download".into(),
                image: Some(images.hf_downloader.clone()),
                command: Some(vec!["sh".into(), "-c".into()]),
                args: Some(args),
                env: Some(env),
                volume_mounts: Some(vec![mount]),
                ..Default::default()
            }),
        };
    }
    if let Some(rest) = source.uri.strip_prefix("s3://") {
        let target = format!("{MODELS_DIR}/model");
        let mut args = vec![
            "s3".into(),
            "sync".into(),
            format!("s3://{rest}"),
            target.clone(),
        ];
        if let Some(endpoint) = &source.s3_endpoint {
            args.extend(["--endpoint-url".into(), endpoint.clone()]);
        }
        let env = source
            .credentials_secret_ref
            .iter()
            .flat_map(|r| {
                [
                    secret_env("AWS_ACCESS_KEY_ID", &r.name, "AWS_ACCESS_KEY_ID"),
                    secret_env("AWS_SECRET_ACCESS_KEY", &r.name, "AWS_SECRET_ACCESS_KEY"),
                ]
            })
            .collect();
        return ModelLocation {
            model_arg: target,
            volume: empty("models"),
            init: Some(Container {
                name: "model-download".into(),
                image: Some(images.s3_downloader.clone()),
                command: Some(vec!["aws".into()]),
                args: Some(args),
                env: Some(env),
                volume_mounts: Some(vec![mount]),
                ..Default::default()
            }),
        };
    }
    let rest = source.uri.strip_prefix("pvc://").unwrap_or(&source.uri);
    let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
    ModelLocation {
        model_arg: format!("{MODELS_DIR}/{path}")
            .trim_end_matches('/')
            .to_owned(),
        volume: Volume {
            name: "models".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(true),
            }),
            ..Default::default()
        },
        init: None,
    }
}

/// The model name the engine answers to: the served name, except for TensorRT-LLM's
/// `trtllm-serve`, which has no alias flag and answers to its model argument.
pub fn upstream_model_name(
    md: &ModelDeployment,
    engine: EngineType,
    images: &EngineImages,
) -> String {
    match engine {
        EngineType::TensorRtLlm => model_location(md, images).model_arg,
        _ => md.served_name(),
    }
}

/// The options file `engine` needs for the chosen configuration, if any: TensorRT-LLM turns
/// attention data parallelism on only there (`enable_attention_dp`; every one of its
/// `--tp_size` ranks then runs attention for its own requests).
pub fn engine_options(engine: EngineType, selected: &SelectedConfiguration) -> Option<String> {
    let data_parallel = selected.attention_data_parallel.is_some_and(|dp| dp > 1);
    (engine == EngineType::TensorRtLlm && data_parallel)
        .then(|| "enable_attention_dp: true\n".to_owned())
}

/// The engine's command line for the chosen configuration. Every engine listens on
/// [`ENGINE_PORT`] on all addresses and serves `served_name`.
pub fn engine_args(
    engine: EngineType,
    model: &str,
    served_name: &str,
    selected: &SelectedConfiguration,
    md: &ModelDeployment,
) -> (Vec<String>, Vec<String>) {
    let tp = selected.tensor_parallel.to_string();
    let pp = selected.pipeline_parallel.to_string();
    // Attention data-parallel ranks (vLLM, SGLang and TensorRT-LLM; the API refuses the rest).
    let data_parallel = selected.attention_data_parallel.filter(|&dp| dp > 1);
    // vLLM's and TensorRT-LLM's batch limits are per data-parallel rank, SGLang's per server.
    let batch_per_rank = selected
        .max_batch_size
        .map(|b| (b / data_parallel.unwrap_or(1)).max(1).to_string());
    let batch = selected.max_batch_size.map(|b| b.to_string());
    // Experts spread whole over this many of the tensor- and data-parallel ranks and sliced
    // over the rest (vLLM: over all of them; the API refuses fewer).
    let expert_parallel = selected
        .expert_parallel
        .filter(|&ep| ep > 1)
        .map(|ep| ep.to_string());
    let context = md
        .spec
        .engine
        .as_ref()
        .and_then(|e| e.max_context_length)
        .map(|c| c.to_string());
    let fp8 = matches!(selected.precision, Some(bud_crds::common::Precision::Fp8));
    let port = ENGINE_PORT.to_string();
    let mut args: Vec<String>;
    let command: Vec<String>;
    match engine {
        EngineType::Auto | EngineType::Vllm => {
            command = vec![
                "python3".into(),
                "-m".into(),
                "vllm.entrypoints.openai.api_server".into(),
            ];
            args = vec![
                "--model".into(),
                model.into(),
                "--served-model-name".into(),
                served_name.into(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
            ];
            args.extend([
                "--tensor-parallel-size".into(),
                tp,
                "--pipeline-parallel-size".into(),
                pp,
            ]);
            if let Some(dp) = data_parallel {
                args.extend(["--data-parallel-size".into(), dp.to_string()]);
            }
            if expert_parallel.is_some() {
                // vLLM spreads the experts over tensor × data parallel ranks.
                args.push("--enable-expert-parallel".into());
            }
            if let Some(b) = batch_per_rank {
                args.extend(["--max-num-seqs".into(), b]);
            }
            if let Some(c) = context {
                args.extend(["--max-model-len".into(), c]);
            }
            if fp8 {
                args.extend(["--quantization".into(), "fp8".into()]);
            }
        }
        EngineType::SgLang => {
            command = vec!["python3".into(), "-m".into(), "sglang.launch_server".into()];
            args = vec![
                "--model-path".into(),
                model.into(),
                "--served-model-name".into(),
                served_name.into(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
            ];
            match data_parallel {
                // SGLang's --tp-size counts every rank; attention runs tp-size / dp-size wide.
                Some(dp) => args.extend([
                    "--tp-size".into(),
                    (selected.tensor_parallel * dp).to_string(),
                    "--dp-size".into(),
                    dp.to_string(),
                    "--enable-dp-attention".into(),
                ]),
                None => args.extend(["--tp-size".into(), tp]),
            }
            args.extend(["--pp-size".into(), pp]);
            if let Some(ep) = expert_parallel {
                args.extend(["--ep-size".into(), ep]);
            }
            if let Some(b) = batch {
                args.extend(["--max-running-requests".into(), b]);
            }
            if let Some(c) = context {
                args.extend(["--context-length".into(), c]);
            }
            if fp8 {
                args.extend(["--quantization".into(), "fp8".into()]);
            }
        }
        EngineType::Tgi => {
            command = vec!["text-generation-launcher".into()];
            args = vec![
                "--model-id".into(),
                model.into(),
                "--hostname".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
                "--num-shard".into(),
                tp,
            ];
            if let Some(b) = batch {
                args.extend(["--max-concurrent-requests".into(), b]);
            }
            if let Some(c) = context {
                args.extend(["--max-total-tokens".into(), c]);
            }
        }
        EngineType::LlamaCpp => {
            command = vec!["/app/llama-server".into()];
            args = vec![
                "--hf-repo".into(),
                model.into(),
                "--alias".into(),
                served_name.into(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
            ];
            if let Some(b) = batch {
                args.extend(["--parallel".into(), b]);
            }
            if let Some(c) = context {
                args.extend(["--ctx-size".into(), c]);
            }
        }
        EngineType::TensorRtLlm => {
            command = vec!["trtllm-serve".into()];
            args = vec![
                model.into(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
                // Under attention data parallelism every rank counts in --tp_size (and runs
                // attention alone, tensorParallel being 1).
                "--tp_size".into(),
                (selected.tensor_parallel * data_parallel.unwrap_or(1)).to_string(),
                "--pp_size".into(),
                pp,
            ];
            if let Some(ep) = expert_parallel {
                args.extend(["--ep_size".into(), ep]);
            }
            if let Some(b) = batch_per_rank {
                args.extend(["--max_batch_size".into(), b]);
            }
            if engine_options(engine, selected).is_some() {
                args.extend(["--extra_llm_api_options".into(), ENGINE_OPTIONS_FILE.into()]);
            }
        }
    }
    if let Some(extra) = md.spec.engine.as_ref().map(|e| e.args.clone()) {
        args.extend(extra);
    }
    (command, args)
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

/// The engine's pod template.
pub fn pod_template(md: &ModelDeployment, inputs: &RenderInputs<'_>) -> PodTemplateSpec {
    let selected = inputs.selected;
    let location = model_location(md, inputs.images);
    let served = md.served_name();
    let (command, args) = engine_args(selected.engine, &location.model_arg, &served, selected, md);
    let image = md
        .spec
        .engine
        .as_ref()
        .and_then(|e| e.image.clone())
        .unwrap_or_else(|| inputs.images.for_engine(selected.engine).to_owned());
    let mut limits = BTreeMap::new();
    let mut tolerations = Vec::new();
    let mut affinity = None;
    if let Some(resource) = &inputs.accelerator_resource {
        limits.insert(
            resource.clone(),
            Quantity(selected.accelerators_per_replica.to_string()),
        );
        tolerations.push(Toleration {
            key: Some(resource.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
        affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: inputs.product_label.clone(),
                            operator: "In".into(),
                            values: Some(vec![selected.accelerator.clone()]),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut annotations = BTreeMap::from([(
        ACCELERATOR_ANNOTATION.to_owned(),
        selected.accelerator.clone(),
    )]);
    if let Some(id) = &inputs.model_id {
        annotations.insert(MODEL_ID_ANNOTATION.to_owned(), id.clone());
    }
    let mut volumes = vec![
        location.volume,
        Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("16Gi".into())),
            }),
            ..Default::default()
        },
    ];
    let mut volume_mounts = vec![
        VolumeMount {
            name: "models".into(),
            mount_path: MODELS_DIR.into(),
            read_only: Some(location.init.is_none()),
            ..Default::default()
        },
        VolumeMount {
            name: "dshm".into(),
            mount_path: "/dev/shm".into(),
            ..Default::default()
        },
    ];
    if let Some(options) = engine_options(selected.engine, selected) {
        // The file is the pod's own annotation, projected by the downward API: no ConfigMap
        // to create, grant or clean up, and the pod shows what its engine read.
        annotations.insert(ENGINE_OPTIONS_ANNOTATION.to_owned(), options);
        volumes.push(Volume {
            name: "engine-options".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "options.yaml".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{ENGINE_OPTIONS_ANNOTATION}']"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        volume_mounts.push(VolumeMount {
            name: "engine-options".into(),
            mount_path: ENGINE_OPTIONS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let container = Container {
        name: "engine".into(),
        image: Some(image),
        command: Some(command),
        args: Some(args),
        env: Some(vec![
            EnvVar {
                name: "HF_HOME".into(),
                value: Some(MODELS_DIR.into()),
                ..Default::default()
            },
            EnvVar {
                name: "HF_HUB_CACHE".into(),
                value: Some(MODELS_DIR.into()),
                ..Default::default()
            },
            EnvVar {
                name: "HF_HUB_OFFLINE".into(),
                value: Some("1".into()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: ENGINE_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            limits: Some(limits.clone()),
            requests: Some(limits),
            ..Default::default()
        }),
        volume_mounts: Some(volume_mounts),
        // Loading weights takes minutes: the startup probe allows 30, then readiness and
        // liveness watch the engine's health endpoint.
        startup_probe: Some(probe("/health", 10, 180)),
        readiness_probe: Some(probe("/health", 5, 3)),
        liveness_probe: Some(probe("/health", 15, 4)),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(md)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            init_containers: location.init.map(|c| vec![c]),
            containers: vec![container],
            affinity,
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            termination_grace_period_seconds: Some(60),
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

/// The engine Deployment. Rollouts replace pods one at a time without a surge, so a spec
/// change needs no spare accelerators.
pub fn deployment(md: &ModelDeployment, inputs: &RenderInputs<'_>) -> Deployment {
    Deployment {
        metadata: child_meta(md, md.name_any()),
        spec: Some(DeploymentSpec {
            replicas: inputs.replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(md)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: pod_template(md, inputs),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Service in front of the engine pods.
pub fn service(md: &ModelDeployment) -> Service {
    Service {
        metadata: child_meta(md, md.name_any()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(md)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: ENGINE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A KEDA ScaledObject scaling the Deployment on an engine metric scraped by Prometheus.
pub fn scaled_object(md: &ModelDeployment, prometheus_url: &str) -> Option<DynamicObject> {
    let autoscaling = md.spec.autoscaling.as_ref()?;
    let metric = match autoscaling.metric {
        AutoscalingMetric::RequestsWaiting => "vllm:num_requests_waiting",
        AutoscalingMetric::RequestsRunning => "vllm:num_requests_running",
        AutoscalingMetric::KvCacheUsage => "vllm:kv_cache_usage_perc",
    };
    let namespace = md.namespace().unwrap_or_default();
    let query = format!(
        "avg(avg_over_time({metric}{{namespace=\"{namespace}\",pod=~\"{}-.*\"}}[1m]))",
        md.name_any()
    );
    let value = serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": child_meta(md, md.name_any()),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": md.name_any()},
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "cooldownPeriod": 300,
            "triggers": [{
                "type": "prometheus",
                "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": autoscaling.target}
            }]
        }
    });
    serde_json::from_value(value).ok()
}

/// A LeaderWorkerSet for replicas that span `nodes_per_replica` nodes: the leader runs the
/// engine's API and the workers join it (vLLM over Ray).
pub fn leader_worker_set(
    md: &ModelDeployment,
    inputs: &RenderInputs<'_>,
    nodes_per_replica: i32,
) -> Option<DynamicObject> {
    let template = pod_template(md, inputs);
    let value = serde_json::json!({
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": child_meta(md, md.name_any()),
        "spec": {
            "replicas": inputs.replicas.unwrap_or(1),
            "leaderWorkerTemplate": {
                "size": nodes_per_replica,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": template,
                "workerTemplate": template,
            }
        }
    });
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_objects_are_named_by_namespace_and_carry_no_owner_reference() {
        let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "qwen", "namespace": "team", "uid": "uid-1"},
            "spec": {"model": {"uri": "hf://Qwen/Qwen3-8B"}}
        }))
        .unwrap();
        let remote = as_remote(&md, "bud-workloads");
        assert_eq!(remote.name_any(), "team-qwen");
        assert_eq!(remote.namespace().as_deref(), Some("bud-workloads"));
        assert_eq!(remote.served_name(), "qwen");
        assert!(service(&remote).metadata.owner_references.is_none());
        assert!(service(&md).metadata.owner_references.is_some());
        let short = remote_name(&md);
        md.metadata.name = Some("m".repeat(80));
        let name = remote_name(&md);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(name, short);
    }

    #[test]
    fn expert_parallelism_reaches_each_engines_command_line() {
        let md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "qwen", "namespace": "team"},
            "spec": {"model": {"uri": "hf://Qwen/Qwen3-30B-A3B"}}
        }))
        .unwrap();
        let mut selected = SelectedConfiguration {
            source: bud_crds::modeldeployment::SelectionSource::Simulated,
            simulation: None,
            cluster: "local".into(),
            accelerator: "NVIDIA-H100-80GB-HBM3".into(),
            accelerators_per_replica: 8,
            replicas: 1,
            tensor_parallel: 8,
            pipeline_parallel: 1,
            expert_parallel: Some(8),
            attention_data_parallel: None,
            precision: None,
            engine: EngineType::Vllm,
            max_batch_size: None,
            predicted: None,
        };
        let args = |engine, selected: &SelectedConfiguration| {
            engine_args(engine, "m", "m", selected, &md).1
        };
        let has = |args: &[String], pair: [&str; 2]| args.windows(2).any(|w| w == pair);
        assert!(args(EngineType::Vllm, &selected).contains(&"--enable-expert-parallel".into()));
        assert!(has(
            &args(EngineType::SgLang, &selected),
            ["--ep-size", "8"]
        ));
        assert!(has(
            &args(EngineType::TensorRtLlm, &selected),
            ["--ep_size", "8"]
        ));
        // Spread over four of the eight and sliced over pairs: SGLang and TensorRT-LLM derive
        // the MoE tensor-parallel size (2) from the two they are given.
        selected.expert_parallel = Some(4);
        for (engine, tp_flag, ep_flag) in [
            (EngineType::SgLang, "--tp-size", "--ep-size"),
            (EngineType::TensorRtLlm, "--tp_size", "--ep_size"),
        ] {
            let args = args(engine, &selected);
            assert!(
                has(&args, [tp_flag, "8"]) && has(&args, [ep_flag, "4"]),
                "{args:?}"
            );
        }
        selected.expert_parallel = None;
        for engine in [
            EngineType::Vllm,
            EngineType::SgLang,
            EngineType::TensorRtLlm,
        ] {
            let args = args(engine, &selected);
            assert!(
                !args
                    .iter()
                    .any(|a| ["--enable-expert-parallel", "--ep-size", "--ep_size"]
                        .contains(&a.as_str())),
                "{engine:?} slices the experts: {args:?}"
            );
        }
    }

    #[test]
    fn attention_data_parallel_ranks_reach_each_engine() {
        let md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "r1", "namespace": "team"},
            "spec": {"model": {"uri": "hf://deepseek-ai/DeepSeek-R1"}}
        }))
        .unwrap();
        // Eight ranks of TP 1 sharing the experts, 1,024 running requests per replica.
        let selected = SelectedConfiguration {
            source: bud_crds::modeldeployment::SelectionSource::Simulated,
            simulation: None,
            cluster: "local".into(),
            accelerator: "NVIDIA-B200".into(),
            accelerators_per_replica: 8,
            replicas: 1,
            tensor_parallel: 1,
            pipeline_parallel: 1,
            expert_parallel: Some(8),
            attention_data_parallel: Some(8),
            precision: None,
            engine: EngineType::Vllm,
            max_batch_size: Some(1024),
            predicted: None,
        };
        let has = |args: &[String], pair: [&str; 2]| args.windows(2).any(|w| w == pair);
        let vllm = engine_args(EngineType::Vllm, "m", "m", &selected, &md).1;
        for pair in [
            ["--tensor-parallel-size", "1"],
            ["--data-parallel-size", "8"],
            // vLLM's limit is per rank.
            ["--max-num-seqs", "128"],
        ] {
            assert!(has(&vllm, pair), "{pair:?} in {vllm:?}");
        }
        assert!(
            vllm.contains(&"--enable-expert-parallel".into()),
            "{vllm:?}"
        );
        let sglang = engine_args(EngineType::SgLang, "m", "m", &selected, &md).1;
        for pair in [
            // SGLang's --tp-size counts every rank and its limit is the whole server's.
            ["--tp-size", "8"],
            ["--dp-size", "8"],
            ["--ep-size", "8"],
            ["--max-running-requests", "1024"],
        ] {
            assert!(has(&sglang, pair), "{pair:?} in {sglang:?}");
        }
        assert!(
            sglang.contains(&"--enable-dp-attention".into()),
            "{sglang:?}"
        );
        assert_eq!(engine_options(EngineType::SgLang, &selected), None);
        // TensorRT-LLM reads enable_attention_dp from a file: the pod's own annotation,
        // projected where --extra_llm_api_options points.
        let mut trtllm = selected.clone();
        trtllm.engine = EngineType::TensorRtLlm;
        let args = engine_args(EngineType::TensorRtLlm, "m", "m", &trtllm, &md).1;
        for pair in [
            ["--tp_size", "8"],
            ["--ep_size", "8"],
            ["--max_batch_size", "128"],
            ["--extra_llm_api_options", ENGINE_OPTIONS_FILE],
        ] {
            assert!(has(&args, pair), "{pair:?} in {args:?}");
        }
        let images = EngineImages::default();
        let template = pod_template(
            &md,
            &RenderInputs {
                selected: &trtllm,
                replicas: Some(1),
                accelerator_resource: Some("nvidia.com/gpu".into()),
                product_label: "nvidia.com/gpu.product".into(),
                model_id: None,
                images: &images,
            },
        );
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(
            annotations
                .get(ENGINE_OPTIONS_ANNOTATION)
                .map(String::as_str),
            Some("enable_attention_dp: true\n")
        );
        let spec = template.spec.unwrap();
        let file = spec
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.downward_api)
            .and_then(|d| d.items)
            .and_then(|items| items.into_iter().next())
            .expect("a downward-API options file");
        assert_eq!(
            file.field_ref.unwrap().field_path,
            format!("metadata.annotations['{ENGINE_OPTIONS_ANNOTATION}']")
        );
        let mount = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "engine-options")
            .expect("the options file is mounted");
        assert_eq!(
            format!("{}/{}", mount.mount_path, file.path),
            ENGINE_OPTIONS_FILE
        );
        // Without attention data parallelism there is no file.
        trtllm.attention_data_parallel = None;
        let args = engine_args(EngineType::TensorRtLlm, "m", "m", &trtllm, &md).1;
        assert!(
            !args.contains(&"--extra_llm_api_options".into()),
            "{args:?}"
        );
    }
}
