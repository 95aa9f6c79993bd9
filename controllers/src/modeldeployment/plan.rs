//! The pure half of the ModelDeployment controller: decide the serving configuration from the
//! spec, the clusters and the child Simulation; then derive status from what the engine's
//! Deployment and pods report.

use crate::planning;
use bud_crds::common::EngineType;
use bud_crds::conditions::{Condition, READY, new_condition, set_condition};
use bud_crds::modeldeployment::{
    Route, RouteProvider, RoutingSpec, SelectedConfiguration, SelectionSource, ServingEndpoint,
};
use bud_crds::simulation::{Candidates, SimulationModel, SimulationSpec};
use bud_crds::{BudCluster, ModelDeployment, ModelDeploymentStatus, Simulation};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::sync::Arc;

pub const SIMULATED: &str = "Simulated";
pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
/// Whether the autoscaler (KEDA) drives the replicas; present only with spec.autoscaling.
pub const AUTOSCALING: &str = "Autoscaling";
/// The Ready/Available reason when the target cluster cannot be reached.
pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";

/// What the controller decided to do about a ModelDeployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Route to an external provider; nothing is deployed.
    External,
    /// Deploy this configuration.
    Deploy(Box<SelectedConfiguration>),
    /// Nothing to deploy yet or at all; the Ready condition gets this reason and message.
    Hold {
        reason: &'static str,
        message: String,
        simulated: Option<bool>,
    },
}

/// The Simulation a ModelDeployment owns when it has no explicit placement.
pub fn simulation_spec(md: &ModelDeployment) -> Option<SimulationSpec> {
    let source = md.spec.model.as_ref()?;
    if md.spec.placement.is_some() {
        return None;
    }
    let model = match (&source.config_ref, planning::model_id_of_uri(&source.uri)) {
        (Some(config), _) => SimulationModel {
            id: None,
            config_ref: Some(config.clone()),
        },
        (None, Some(id)) => SimulationModel {
            id: Some(id),
            config_ref: None,
        },
        (None, None) => SimulationModel {
            id: None,
            config_ref: None,
        },
    };
    let engine = md.spec.engine.as_ref().map(|e| e.type_).unwrap_or_default();
    Some(SimulationSpec {
        model,
        workload: md.spec.workload.clone().unwrap_or_default(),
        slo: md.spec.slo.clone().unwrap_or_default(),
        candidates: Candidates {
            clusters: md.spec.cluster.iter().cloned().collect(),
            accelerators: vec![],
        },
        objective: Default::default(),
        engines: if engine == EngineType::Auto {
            vec![]
        } else {
            vec![engine]
        },
        precisions: md
            .spec
            .placement
            .as_ref()
            .and_then(|p| p.precision)
            .into_iter()
            .collect(),
        // A deployment runs what it plans: no precision its engine would not serve.
        checkpoint_precisions_only: true,
        max_results: 3,
    })
}

/// Decides the configuration. A decision taken for the current generation is kept (the
/// selection is sticky) so that inventory churn does not roll a running deployment.
pub fn decide(
    md: &ModelDeployment,
    clusters: &[Arc<BudCluster>],
    simulation: Option<&Simulation>,
) -> Decision {
    if md.spec.provider.is_some() {
        return Decision::External;
    }
    let status = md.status.clone().unwrap_or_default();
    if let Some(selected) = &status.selected
        && status.observed_generation == md.metadata.generation
        && md.metadata.generation.is_some()
    {
        return Decision::Deploy(Box::new(with_replicas(md, selected.clone())));
    }
    match &md.spec.placement {
        Some(_) => decide_explicit(md, clusters),
        None => decide_simulated(md, simulation),
    }
}

fn with_replicas(
    md: &ModelDeployment,
    mut selected: SelectedConfiguration,
) -> SelectedConfiguration {
    if let Some(replicas) = md.spec.replicas {
        selected.replicas = replicas;
    } else if let Some(autoscaling) = &md.spec.autoscaling {
        selected.replicas = selected
            .replicas
            .clamp(autoscaling.min_replicas, autoscaling.max_replicas);
    }
    selected
}

fn decide_simulated(md: &ModelDeployment, simulation: Option<&Simulation>) -> Decision {
    let simulating = |message: &str| Decision::Hold {
        reason: "Simulating",
        message: message.to_owned(),
        simulated: None,
    };
    let Some(sim) = simulation else {
        return simulating("waiting for the Simulation to be created");
    };
    let Some(status) = &sim.status else {
        return simulating("the simulator is searching for a configuration");
    };
    if status.observed_generation != sim.metadata.generation {
        return simulating("the simulator is searching for a configuration");
    }
    let ready = status.conditions.iter().find(|c| c.type_ == READY);
    match (ready, status.recommendations.first()) {
        (Some(c), Some(best)) if c.status == "True" => Decision::Deploy(Box::new(with_replicas(
            md,
            SelectedConfiguration {
                source: SelectionSource::Simulated,
                simulation: sim.metadata.name.clone(),
                cluster: best.cluster.clone().unwrap_or_else(|| "local".into()),
                accelerator: best.accelerator.clone(),
                accelerators_per_replica: best.accelerators_per_replica,
                replicas: best.replicas,
                tensor_parallel: best.tensor_parallel,
                pipeline_parallel: best.pipeline_parallel,
                expert_parallel: best.expert_parallel,
                attention_data_parallel: best.attention_data_parallel,
                precision: best.precision,
                engine: best.engine,
                max_batch_size: best.max_batch_size,
                predicted: Some(best.predicted.clone()),
            },
        ))),
        (Some(c), _) if c.status == "False" => Decision::Hold {
            reason: if c.reason == "NoFeasibleConfiguration" {
                "NoFeasibleConfiguration"
            } else {
                "SimulationFailed"
            },
            message: format!("Simulation {}: {}", sim.name_any(), c.message),
            simulated: Some(false),
        },
        _ => simulating("the simulator is searching for a configuration"),
    }
}

fn decide_explicit(md: &ModelDeployment, clusters: &[Arc<BudCluster>]) -> Decision {
    let placement = md.spec.placement.as_ref().expect("explicit");
    let hold = |reason: &'static str, message: String| Decision::Hold {
        reason,
        message,
        simulated: Some(false),
    };
    let candidates: Vec<&BudCluster> = clusters
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| planning::cluster_ready(c))
        .filter(|c| {
            md.spec
                .cluster
                .as_ref()
                .is_none_or(|n| c.metadata.name.as_ref() == Some(n))
        })
        .collect();
    let offers = |c: &BudCluster| {
        c.status.as_ref().is_some_and(|s| {
            s.accelerators
                .iter()
                .any(|a| a.product == placement.accelerator && a.allocatable > 0)
        })
    };
    let Some(cluster) = candidates.iter().find(|c| offers(c)) else {
        let available: Vec<String> = candidates
            .iter()
            .flat_map(|c| {
                c.status
                    .iter()
                    .flat_map(|s| s.accelerators.iter().map(|a| a.product.clone()))
            })
            .collect();
        return hold(
            "AcceleratorNotAvailable",
            format!(
                "spec.placement.accelerator {} is not offered by {}; available: {}",
                placement.accelerator,
                md.spec
                    .cluster
                    .clone()
                    .map(|c| format!("BudCluster {c}"))
                    .unwrap_or_else(|| "any Ready BudCluster".into()),
                if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                }
            ),
        );
    };
    let attention_data_parallel = placement.attention_data_parallel.filter(|&dp| dp > 1);
    let per_replica = placement.accelerators_per_replica.unwrap_or(
        placement.tensor_parallel
            * placement.pipeline_parallel
            * attention_data_parallel.unwrap_or(1),
    );
    let engine = md.spec.engine.as_ref().map(|e| e.type_).unwrap_or_default();
    let engine = if engine == EngineType::Auto {
        EngineType::Vllm
    } else {
        engine
    };
    let mut selected = SelectedConfiguration {
        source: SelectionSource::Explicit,
        simulation: None,
        cluster: cluster.metadata.name.clone().unwrap_or_default(),
        accelerator: placement.accelerator.clone(),
        accelerators_per_replica: per_replica,
        replicas: md
            .spec
            .replicas
            .or(md.spec.autoscaling.as_ref().map(|a| a.min_replicas))
            .unwrap_or(1),
        tensor_parallel: placement.tensor_parallel,
        pipeline_parallel: placement.pipeline_parallel,
        expert_parallel: placement.expert_parallel.filter(|&ep| ep > 1),
        attention_data_parallel,
        precision: placement.precision,
        engine,
        max_batch_size: placement.max_batch_size,
        predicted: None,
    };
    // The memory check and the prediction need the model's architecture.
    if let Some(model_id) = md
        .spec
        .model
        .as_ref()
        .and_then(|m| planning::model_id_of_uri(&m.uri))
        && let Ok(spec) = bud_simulator::model(&model_id)
    {
        let simulated_engine = planning::engines_for(engine)
            .and_then(|e| e.first().copied())
            .unwrap_or(bud_simulator::Engine::Vllm);
        // The engine serves the checkpoint's precision, or one it quantizes to while loading.
        let served = placement
            .precision
            .map(|wanted| spec.served_precisions(simulated_engine, planning::precision(wanted)));
        if let (Some(wanted), Some(None)) = (placement.precision, served) {
            return hold(
                "InvalidPlacement",
                format!(
                    "spec.placement.precision: {} cannot serve {model_id}'s {} checkpoint at {}; that needs a checkpoint quantized to it (a model URI whose config.json says so){}",
                    engine.as_str(),
                    spec.native_precision,
                    wanted.as_str(),
                    if spec
                        .served_precisions(bud_simulator::Engine::Vllm, planning::precision(wanted))
                        .is_some()
                    {
                        ", or engine VLLM or SGLang, which quantize to FP8 while loading"
                    } else {
                        ""
                    }
                ),
            );
        }
        let mut config =
            bud_simulator::ServingConfig::new(&model_id, &placement.accelerator, simulated_engine);
        config.tp = placement.tensor_parallel as u32;
        config.pp = placement.pipeline_parallel as u32;
        if let Some(dp) = attention_data_parallel {
            if !spec.is_moe() {
                return hold(
                    "InvalidPlacement",
                    format!(
                        "spec.placement.attentionDataParallel: {model_id} is a dense model; attention data parallelism shares a mixture-of-experts model's experts across ranks (leave it at 1 and add replicas instead)"
                    ),
                );
            }
            config.attention_dp = dp as u32;
        }
        if let Some(ep) = selected.expert_parallel {
            config.set_expert_parallel(ep as u32);
        }
        if let Some(Some((dense, experts))) = served {
            (config.precision, config.expert_precision) = (Some(dense), Some(experts));
        }
        // The replica's limit, split over its ranks as the simulator (and vLLM) count it and
        // as the renderer passes it on: rounded down, so the ranks never exceed it together.
        config.max_batch = placement
            .max_batch_size
            .map(|b| (b as u32 / config.attention_dp.max(1)).max(1));
        let mut workload = planning::workload(&md.spec.workload.clone().unwrap_or_default());
        workload.concurrency = workload
            .concurrency
            .div_ceil(selected.replicas.max(1) as u32)
            .max(1);
        match bud_simulator::predict(&config, &workload) {
            Ok(prediction) if !prediction.memory.fits => {
                return hold(
                    "DoesNotFit",
                    format!("spec.placement: {}", prediction.memory.verdict),
                );
            }
            Ok(prediction) => {
                selected.predicted = Some(planning::prediction_metrics(
                    &prediction,
                    u32::try_from(selected.replicas).unwrap_or(0),
                ));
            }
            Err(err) => return hold("InvalidPlacement", format!("spec.placement: {err}")),
        }
    }
    Decision::Deploy(Box::new(selected))
}

/// A warning for a layout whose prediction the simulator knows to be optimistic: attention
/// data-parallel ranks sharing experts sliced across them (expertParallel below tensorParallel
/// x attentionDataParallel). Each MoE layer then exchanges every rank's tokens, a cost the
/// performance model leaves out (and the search never proposes such a layout); only an
/// explicit placement can ask for it.
pub fn unmodelled_layout_warning(selected: &SelectedConfiguration) -> Option<String> {
    let data_parallel = selected.attention_data_parallel.unwrap_or(1);
    let ranks = selected.tensor_parallel * data_parallel;
    let expert_parallel = selected.expert_parallel.unwrap_or(1);
    (data_parallel > 1 && expert_parallel < ranks).then(|| {
        format!(
            "spec.placement: {data_parallel} attention data-parallel ranks share experts sliced across them (expertParallel {expert_parallel} of {ranks}); the predicted TTFT and TPOT leave out the exchange of every rank's tokens in each MoE layer, and the calibration data's vLLM runs of this layout decoded 2.3-2.8x slower than predicted. Set expertParallel to {ranks} for a layout the simulator models"
        )
    })
}

/// The route for a ModelDeployment: its engine's endpoints (which answer to
/// `upstream_model`), or the external provider.
pub fn route(md: &ModelDeployment, upstream_model: Option<String>) -> Route {
    let routing = md.spec.routing.clone().unwrap_or_default();
    let RoutingSpec { weight, priority } = routing;
    match &md.spec.provider {
        Some(p) => Route {
            served_name: md.served_name(),
            provider: RouteProvider::from(p.type_),
            upstream_model: p.model.clone(),
            base_url: p.base_url.clone(),
            api_version: p.api_version.clone(),
            azure_deployment: p.azure_deployment.clone(),
            credentials_secret_ref: Some(p.credentials_secret_ref.clone()),
            weight,
            priority,
            pricing: p.pricing.clone(),
        },
        None => Route {
            served_name: md.served_name(),
            provider: RouteProvider::Engine,
            upstream_model: upstream_model.unwrap_or_else(|| md.served_name()),
            weight,
            priority,
            ..Default::default()
        },
    }
}

/// Why pods are not ready, from their status: the most telling reason among them.
pub fn pod_blocker(pods: &[Pod]) -> Option<(&'static str, String)> {
    for pod in pods {
        let status = pod.status.as_ref();
        let unschedulable = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
            .filter(|c| c.reason.as_deref() == Some("Unschedulable"));
        if let Some(c) = unschedulable {
            return Some((
                "InsufficientCapacity",
                format!(
                    "pod {} cannot be scheduled: {}",
                    pod.name_any(),
                    c.message.clone().unwrap_or_default()
                ),
            ));
        }
        let waiting = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(
                status
                    .and_then(|s| s.init_container_statuses.as_ref())
                    .into_iter()
                    .flatten(),
            )
            .filter_map(|cs| cs.state.as_ref().and_then(|st| st.waiting.clone()))
            .find(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")
                )
            });
        if let Some(w) = waiting {
            return Some((
                "ImagePullFailed",
                format!(
                    "pod {}: {}",
                    pod.name_any(),
                    w.message.unwrap_or_else(|| w.reason.unwrap_or_default())
                ),
            ));
        }
    }
    None
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Endpoints from the engine pods. The addresses come from pod status rather than
/// EndpointSlices: the two agree on real clusters, and slices refuse the loopback addresses
/// the local control plane gives pods.
pub fn endpoints(pods: &[Pod]) -> Vec<ServingEndpoint> {
    let mut endpoints: Vec<ServingEndpoint> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(ServingEndpoint {
                address: ip,
                port: super::render::ENGINE_PORT,
                ready: pod_ready(p),
                pod: p.metadata.name.clone(),
            })
        })
        .collect();
    endpoints.sort_by(|a, b| a.pod.cmp(&b.pod));
    endpoints
}

/// What reconcile observed of the engine workload.
pub struct ObservedWorkload<'a> {
    pub deployment: Option<&'a Deployment>,
    pub pods: &'a [Pod],
    /// Why the workload cannot run as rendered (e.g. LeaderWorkerSet missing).
    pub blocker: Option<(&'static str, String)>,
    /// The `Autoscaling` condition (status, reason, message) when spec.autoscaling is set.
    pub autoscaling: Option<(bool, &'static str, String)>,
    /// The model name the rendered engine answers to.
    pub upstream_model: Option<String>,
    /// Set when the target cluster cannot be reached (its BudCluster is not Ready): the
    /// message of its condition. The last endpoints stay in status, marked not ready, so the
    /// gateway stops sending to them and falls back as configured.
    pub unreachable: Option<String>,
}

/// The status for a decision and what the workload reports.
pub fn plan_status(
    md: &ModelDeployment,
    decision: &Decision,
    observed: &ObservedWorkload<'_>,
    selector: String,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let previous = md.status.clone().unwrap_or_default();
    let generation = md.metadata.generation;
    let mut status = ModelDeploymentStatus {
        conditions: previous.conditions.clone(),
        observed_generation: generation,
        ..Default::default()
    };
    let set = |conditions: &mut Vec<Condition>,
               type_: &str,
               value: bool,
               reason: &str,
               message: String| {
        set_condition(
            conditions,
            new_condition(type_, value, reason, message, generation, now),
        );
    };
    match decision {
        Decision::External => {
            status.route = Some(route(md, None));
            let provider = md
                .spec
                .provider
                .as_ref()
                .map(|p| format!("{:?}", p.type_))
                .unwrap_or_default();
            set(
                &mut status.conditions,
                READY,
                true,
                "ExternalProvider",
                format!("routing {} to {provider}", md.served_name()),
            );
            status.conditions.retain(|c| c.type_ == READY);
        }
        Decision::Hold {
            reason,
            message,
            simulated,
        } => {
            status.selected = None;
            match simulated {
                Some(value) => set(
                    &mut status.conditions,
                    SIMULATED,
                    *value,
                    reason,
                    message.clone(),
                ),
                None => set_condition(
                    &mut status.conditions,
                    new_condition(
                        SIMULATED,
                        bud_crds::conditions::ConditionStatus::Unknown,
                        reason,
                        message.clone(),
                        generation,
                        now,
                    ),
                ),
            }
            set(
                &mut status.conditions,
                AVAILABLE,
                false,
                reason,
                message.clone(),
            );
            set(
                &mut status.conditions,
                READY,
                false,
                reason,
                message.clone(),
            );
        }
        Decision::Deploy(selected) => {
            let desired = selected.replicas;
            status.selected = Some(selected.as_ref().clone());
            status.replicas = desired;
            status.selector = Some(selector);
            status.endpoints = match &observed.unreachable {
                // Nothing can be observed: keep what was last seen, out of the route.
                Some(_) => previous
                    .endpoints
                    .iter()
                    .cloned()
                    .map(|e| ServingEndpoint { ready: false, ..e })
                    .collect(),
                None => endpoints(observed.pods),
            };
            status.ready_replicas = status.endpoints.iter().filter(|e| e.ready).count() as i32;
            status.replica_summary = Some(format!("{}/{}", status.ready_replicas, desired));
            status.route = Some(route(md, observed.upstream_model.clone()));
            let how = match selected.source {
                SelectionSource::Simulated => format!(
                    "chosen by Simulation {}",
                    selected.simulation.clone().unwrap_or_default()
                ),
                SelectionSource::Explicit => "placed explicitly".to_owned(),
            };
            set(
                &mut status.conditions,
                SIMULATED,
                true,
                if selected.source == SelectionSource::Simulated {
                    "Simulated"
                } else {
                    "Explicit"
                },
                format!(
                    "{}x {} {} {} ({how})",
                    selected.accelerators_per_replica,
                    selected.accelerator,
                    selected.layout(),
                    selected.engine.as_str()
                ),
            );
            // Progressing and Autoscaling keep what was last observed.
            if let Some(message) = &observed.unreachable {
                set(
                    &mut status.conditions,
                    AVAILABLE,
                    false,
                    CLUSTER_UNREACHABLE,
                    message.clone(),
                );
                set(
                    &mut status.conditions,
                    READY,
                    false,
                    CLUSTER_UNREACHABLE,
                    message.clone(),
                );
                return status;
            }
            let rolled_out = observed
                .deployment
                .and_then(|d| d.status.as_ref())
                .is_some_and(|s| {
                    s.observed_generation == observed.deployment.and_then(|d| d.metadata.generation)
                        && s.updated_replicas.unwrap_or(0) >= desired
                        && s.replicas.unwrap_or(0) <= desired
                });
            match &observed.autoscaling {
                Some((value, reason, message)) => set(
                    &mut status.conditions,
                    AUTOSCALING,
                    *value,
                    reason,
                    message.clone(),
                ),
                None => status.conditions.retain(|c| c.type_ != AUTOSCALING),
            }
            let blocker = observed
                .blocker
                .clone()
                .or_else(|| pod_blocker(observed.pods));
            let progressing_message = format!(
                "{} of {desired} replicas updated",
                observed
                    .deployment
                    .and_then(|d| d.status.as_ref())
                    .and_then(|s| s.updated_replicas)
                    .unwrap_or(0)
            );
            if rolled_out {
                set(
                    &mut status.conditions,
                    PROGRESSING,
                    true,
                    "RolloutComplete",
                    progressing_message.clone(),
                );
            } else if let Some((reason, message)) = &blocker {
                set(
                    &mut status.conditions,
                    PROGRESSING,
                    false,
                    reason,
                    message.clone(),
                );
            } else {
                set(
                    &mut status.conditions,
                    PROGRESSING,
                    true,
                    "RollingOut",
                    progressing_message.clone(),
                );
            }
            let ready = status.ready_replicas;
            set(
                &mut status.conditions,
                AVAILABLE,
                ready > 0,
                if ready > 0 {
                    "EndpointsReady"
                } else {
                    "NoReadyEndpoints"
                },
                format!("{ready}/{desired} replicas ready"),
            );
            if desired == 0 {
                set(
                    &mut status.conditions,
                    READY,
                    true,
                    "ScaledToZero",
                    "no replicas requested".to_owned(),
                );
            } else if ready >= desired && rolled_out {
                set(
                    &mut status.conditions,
                    READY,
                    true,
                    "Ready",
                    format!(
                        "{ready}/{desired} replicas ready; serving {}",
                        md.served_name()
                    ),
                );
            } else {
                let (reason, message) = blocker.unwrap_or_else(|| {
                    // Enough pods are ready, but some still run an older configuration (or
                    // the Deployment controller has not caught up with the new one yet).
                    if ready >= desired {
                        (
                            "RollingOut",
                            format!(
                                "{ready}/{desired} replicas ready; the Deployment is still rolling out ({progressing_message})"
                            ),
                        )
                    } else {
                        ("PodsNotReady", format!("{ready}/{desired} replicas ready"))
                    }
                });
                set(&mut status.conditions, READY, false, reason, message);
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::ModelDeploymentSpec;
    use bud_crds::SimulationStatus;
    use bud_crds::common::Precision as ApiPrecision;
    use bud_crds::modeldeployment::{
        EngineSpec, ExternalProvider, ModelSource, Placement, ProviderType,
    };
    use bud_crds::simulation::Recommendation;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn md(spec: ModelDeploymentSpec) -> ModelDeployment {
        let mut md = ModelDeployment::new("qwen", spec);
        md.metadata.namespace = Some("team".into());
        md.metadata.generation = Some(1);
        md
    }

    fn model_spec() -> ModelDeploymentSpec {
        ModelDeploymentSpec {
            model: Some(ModelSource {
                uri: "hf://Qwen/Qwen3-8B".into(),
                revision: None,
                config_ref: None,
                credentials_secret_ref: None,
                s3_endpoint: None,
            }),
            provider: None,
            served_name: Some("qwen3-8b".into()),
            cluster: None,
            engine: None,
            workload: None,
            slo: None,
            placement: None,
            replicas: None,
            autoscaling: None,
            routing: None,
        }
    }

    fn finished_simulation(ready: bool, recommendations: Vec<Recommendation>) -> Simulation {
        let mut sim = Simulation::new("qwen", simulation_spec(&md(model_spec())).unwrap());
        sim.metadata.generation = Some(1);
        sim.status = Some(SimulationStatus {
            observed_generation: Some(1),
            conditions: vec![new_condition(
                READY,
                ready,
                if ready {
                    "SearchComplete"
                } else {
                    "NoFeasibleConfiguration"
                },
                "relax tpotMs to 12",
                None,
                Timestamp::UNIX_EPOCH,
            )],
            recommendations,
            ..Default::default()
        });
        sim
    }

    fn recommendation() -> Recommendation {
        Recommendation {
            rank: 1,
            cluster: Some("local".into()),
            accelerator: "NVIDIA-H100-80GB-HBM3".into(),
            accelerators_per_replica: 1,
            replicas: 2,
            tensor_parallel: 1,
            pipeline_parallel: 1,
            expert_parallel: None,
            attention_data_parallel: None,
            precision: None,
            engine: EngineType::Vllm,
            max_batch_size: Some(64),
            predicted: Default::default(),
        }
    }

    /// What is observed of a workload with nothing in its way.
    fn observed<'a>(deployment: Option<&'a Deployment>, pods: &'a [Pod]) -> ObservedWorkload<'a> {
        ObservedWorkload {
            deployment,
            pods,
            blocker: None,
            autoscaling: None,
            upstream_model: None,
            unreachable: None,
        }
    }

    fn ready_pod(name: &str, ip: &str, ready: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_simulation_child_mirrors_the_spec() {
        let mut spec = model_spec();
        spec.cluster = Some("local".into());
        let sim = simulation_spec(&md(spec)).unwrap();
        assert_eq!(sim.model.id.as_deref(), Some("Qwen/Qwen3-8B"));
        assert_eq!(sim.candidates.clusters, ["local"]);
        assert!(sim.engines.is_empty());
        assert!(
            sim.checkpoint_precisions_only,
            "a deployment plans only what its engine serves"
        );
    }

    #[test]
    fn the_best_recommendation_is_deployed_and_spec_replicas_win() {
        let sim = finished_simulation(true, vec![recommendation()]);
        let Decision::Deploy(selected) = decide(
            &md(model_spec()),
            &[crate::fixtures::local_cluster()],
            Some(&sim),
        ) else {
            panic!()
        };
        assert_eq!(
            (
                selected.accelerator.as_str(),
                selected.replicas,
                selected.source
            ),
            ("NVIDIA-H100-80GB-HBM3", 2, SelectionSource::Simulated)
        );
        assert_eq!(selected.expert_parallel, None);
        // Expert parallelism the simulator chose is deployed with the rest of the layout.
        let mut ep = recommendation();
        (ep.tensor_parallel, ep.expert_parallel) = (8, Some(8));
        let sim_ep = finished_simulation(true, vec![ep]);
        let Decision::Deploy(selected) = decide(
            &md(model_spec()),
            &[crate::fixtures::local_cluster()],
            Some(&sim_ep),
        ) else {
            panic!()
        };
        assert_eq!(
            (selected.tensor_parallel, selected.expert_parallel),
            (8, Some(8))
        );
        let mut spec = model_spec();
        spec.replicas = Some(5);
        let Decision::Deploy(selected) =
            decide(&md(spec), &[crate::fixtures::local_cluster()], Some(&sim))
        else {
            panic!()
        };
        assert_eq!(selected.replicas, 5);
    }

    #[test]
    fn an_infeasible_simulation_holds_with_its_message() {
        let sim = finished_simulation(false, vec![]);
        match decide(
            &md(model_spec()),
            &[crate::fixtures::local_cluster()],
            Some(&sim),
        ) {
            Decision::Hold {
                reason, message, ..
            } => {
                assert_eq!(reason, "NoFeasibleConfiguration");
                assert!(message.contains("relax tpotMs"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&md(model_spec()), &[crate::fixtures::local_cluster()], None),
            Decision::Hold {
                reason: "Simulating",
                ..
            }
        ));
    }

    #[test]
    fn explicit_placement_is_checked_against_inventory_and_memory() {
        let mut spec = model_spec();
        spec.placement = Some(h100_placement());
        let Decision::Deploy(selected) =
            decide(&md(spec.clone()), &[crate::fixtures::local_cluster()], None)
        else {
            panic!()
        };
        assert_eq!(selected.source, SelectionSource::Explicit);
        assert!(selected.predicted.is_some());

        spec.placement.as_mut().unwrap().accelerator = "NVIDIA-L4".into();
        match decide(&md(spec.clone()), &[crate::fixtures::local_cluster()], None) {
            Decision::Hold {
                reason, message, ..
            } => {
                assert_eq!(reason, "AcceleratorNotAvailable");
                assert!(
                    message.contains("NVIDIA-H100-80GB-HBM3"),
                    "lists what is available: {message}"
                );
            }
            other => panic!("{other:?}"),
        }

        spec.model.as_mut().unwrap().uri = "hf://meta-llama/Meta-Llama-3.1-405B".into();
        spec.placement.as_mut().unwrap().accelerator = "NVIDIA-H100-80GB-HBM3".into();
        assert!(matches!(
            decide(&md(spec), &[crate::fixtures::local_cluster()], None),
            Decision::Hold {
                reason: "DoesNotFit",
                ..
            }
        ));
    }

    #[test]
    fn an_explicit_precision_must_be_one_the_engine_serves_from_the_checkpoint() {
        // Qwen3-8B's checkpoint is BF16: vLLM (the default engine) quantizes it to FP8 while
        // loading; TensorRT-LLM serves it as it is, and nothing makes INT4 of it.
        let placed = |engine: Option<EngineType>, precision: ApiPrecision| {
            let mut spec = model_spec();
            spec.engine = engine.map(|type_| EngineSpec {
                type_,
                ..Default::default()
            });
            spec.placement = Some(Placement {
                precision: Some(precision),
                ..h100_placement()
            });
            decide(&md(spec), &[crate::fixtures::local_cluster()], None)
        };
        assert!(matches!(
            placed(None, ApiPrecision::Fp8),
            Decision::Deploy(_)
        ));
        assert!(matches!(
            placed(Some(EngineType::TensorRtLlm), ApiPrecision::Bf16),
            Decision::Deploy(_)
        ));
        for (engine, precision, advice) in [
            (
                Some(EngineType::TensorRtLlm),
                ApiPrecision::Fp8,
                "VLLM or SGLang",
            ),
            (None, ApiPrecision::Int4, "quantized to it"),
        ] {
            match placed(engine, precision) {
                Decision::Hold {
                    reason, message, ..
                } => {
                    assert_eq!(reason, "InvalidPlacement");
                    assert!(
                        message.contains("spec.placement.precision") && message.contains(advice),
                        "{message}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// One H100 with everything else at its default.
    fn h100_placement() -> Placement {
        Placement {
            accelerator: "NVIDIA-H100-80GB-HBM3".into(),
            tensor_parallel: 1,
            pipeline_parallel: 1,
            accelerators_per_replica: None,
            precision: None,
            max_batch_size: None,
            expert_parallel: None,
            attention_data_parallel: None,
        }
    }

    /// The decision for `model` placed explicitly on the local cluster under `concurrency` users.
    fn decide_placed(model: &str, concurrency: i32, placement: Placement) -> Decision {
        let mut spec = model_spec();
        spec.model.as_mut().unwrap().uri = format!("hf://{model}");
        spec.workload = Some(bud_crds::common::Workload {
            concurrency,
            ..Default::default()
        });
        spec.placement = Some(placement);
        decide(&md(spec), &[crate::fixtures::local_cluster()], None)
    }

    #[test]
    fn explicit_expert_parallelism_is_predicted_and_refused_for_dense_models() {
        let placed = |model: &str, expert_parallel: Option<i32>| {
            decide_placed(
                model,
                64,
                Placement {
                    tensor_parallel: 4,
                    expert_parallel,
                    ..h100_placement()
                },
            )
        };
        let tpot = |d: Decision| match d {
            Decision::Deploy(selected) => (
                selected.expert_parallel,
                selected.predicted.expect("predicted").tpot_ms,
            ),
            other => panic!("{other:?}"),
        };
        let (sliced_ep, sliced) = tpot(placed("Qwen/Qwen3-30B-A3B", None));
        let (spread_ep, spread) = tpot(placed("Qwen/Qwen3-30B-A3B", Some(4)));
        assert_eq!((sliced_ep, spread_ep), (None, Some(4)));
        assert_ne!(sliced, spread, "the prediction is of the layout deployed");
        // Spread over two of the four and sliced over pairs (SGLang's and TensorRT-LLM's
        // --ep-size below the TP size): a layout of its own.
        let (mixed_ep, mixed) = tpot(placed("Qwen/Qwen3-30B-A3B", Some(2)));
        assert_eq!(mixed_ep, Some(2));
        assert!(
            mixed != sliced && mixed != spread,
            "{sliced:?} {mixed:?} {spread:?}"
        );
        assert_eq!(tpot(placed("Qwen/Qwen3-30B-A3B", Some(1))).0, None);
        match placed("Qwen/Qwen3-8B", Some(4)) {
            Decision::Hold {
                reason, message, ..
            } => {
                assert_eq!(reason, "InvalidPlacement");
                assert!(message.contains("expert parallelism"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ranks_sharing_sliced_experts_are_warned_of() {
        let placed = |expert_parallel: Option<i32>| match decide_placed(
            "Qwen/Qwen3-30B-A3B",
            256,
            Placement {
                tensor_parallel: 2,
                expert_parallel,
                attention_data_parallel: Some(2),
                ..h100_placement()
            },
        ) {
            Decision::Deploy(selected) => unmodelled_layout_warning(&selected),
            other => panic!("{other:?}"),
        };
        let warning = placed(None).expect("a warning for experts sliced across ranks");
        assert!(
            warning.contains("expertParallel 1 of 4")
                && warning.contains("Set expertParallel to 4"),
            "{warning}"
        );
        assert!(placed(Some(2)).is_some());
        assert_eq!(placed(Some(4)), None, "experts spread over every rank");
        // Without attention data parallelism, sliced experts are ordinary tensor parallelism.
        let Decision::Deploy(tensor_parallel) = decide_placed(
            "Qwen/Qwen3-30B-A3B",
            256,
            Placement {
                tensor_parallel: 4,
                ..h100_placement()
            },
        ) else {
            panic!("deployable");
        };
        assert_eq!(unmodelled_layout_warning(&tensor_parallel), None);
    }

    #[test]
    fn explicit_attention_data_parallelism_counts_every_rank_and_is_refused_for_dense_models() {
        let placed = |model: &str| {
            decide_placed(
                model,
                256,
                Placement {
                    max_batch_size: Some(256),
                    expert_parallel: Some(4),
                    attention_data_parallel: Some(4),
                    ..h100_placement()
                },
            )
        };
        match placed("Qwen/Qwen3-30B-A3B") {
            Decision::Deploy(selected) => {
                assert_eq!(
                    (
                        selected.accelerators_per_replica,
                        selected.tensor_parallel,
                        selected.attention_data_parallel,
                        selected.expert_parallel,
                    ),
                    (4, 1, Some(4), Some(4))
                );
                // maxBatchSize is the replica's: four ranks of 64.
                let predicted = selected.predicted.expect("predicted");
                assert_eq!(
                    predicted.max_concurrency_per_replica,
                    Some(256),
                    "{predicted:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        match placed("Qwen/Qwen3-8B") {
            Decision::Hold {
                reason, message, ..
            } => {
                assert_eq!(reason, "InvalidPlacement");
                assert!(
                    message.contains("spec.placement.attentionDataParallel"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn providers_deploy_nothing_and_publish_their_route() {
        let mut spec = model_spec();
        spec.model = None;
        spec.provider = Some(ExternalProvider {
            type_: ProviderType::OpenAI,
            model: "gpt-4o-mini".into(),
            base_url: None,
            azure_deployment: None,
            api_version: None,
            credentials_secret_ref: bud_crds::common::SecretKeyRef {
                name: "openai".into(),
                key: "apiKey".into(),
            },
            pricing: None,
        });
        let md = md(spec);
        assert_eq!(decide(&md, &[], None), Decision::External);
        let status = plan_status(
            &md,
            &Decision::External,
            &observed(None, &[]),
            String::new(),
            Timestamp::UNIX_EPOCH,
        );
        let route = status.route.unwrap();
        assert_eq!(
            (
                route.provider,
                route.upstream_model.as_str(),
                route.served_name.as_str()
            ),
            (RouteProvider::OpenAI, "gpt-4o-mini", "qwen3-8b")
        );
        assert!(bud_crds::conditions::is_true(&status.conditions, READY));
    }

    #[test]
    fn status_counts_ready_endpoints_and_names_the_blocker() {
        let md = md(model_spec());
        let mut selected = SelectedConfiguration {
            replicas: 2,
            accelerator: "NVIDIA-H100-80GB-HBM3".into(),
            accelerators_per_replica: 1,
            tensor_parallel: 1,
            pipeline_parallel: 1,
            ..Default::default()
        };
        selected.engine = EngineType::Vllm;
        let decision = Decision::Deploy(Box::new(selected));
        let mut pending = ready_pod("qwen-b", "127.1.1.3", false);
        pending.status.as_mut().unwrap().pod_ip = None;
        pending.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/6 nodes are available: 6 Insufficient nvidia.com/gpu.".into()),
            ..Default::default()
        }]);
        let pods = [ready_pod("qwen-a", "127.1.1.2", true), pending];
        let status = plan_status(
            &md,
            &decision,
            &observed(None, &pods),
            "sel".into(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.replica_summary.as_deref(), Some("1/2"));
        assert_eq!(status.endpoints.len(), 1);
        assert_eq!(status.endpoints[0].address, "127.1.1.2");
        let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InsufficientCapacity")
        );
        assert!(ready.message.contains("Insufficient nvidia.com/gpu"));
        assert!(bud_crds::conditions::is_true(&status.conditions, AVAILABLE));
    }

    #[test]
    fn ready_pods_of_an_unfinished_rollout_say_so_rather_than_not_ready() {
        let md = md(model_spec());
        let selected = SelectedConfiguration {
            replicas: 1,
            accelerator: "NVIDIA-L4".into(),
            accelerators_per_replica: 1,
            tensor_parallel: 1,
            pipeline_parallel: 1,
            ..Default::default()
        };
        let decision = Decision::Deploy(Box::new(selected));
        // The Deployment's template changed (generation 2); its controller has not caught up.
        let deployment = Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(1),
                updated_replicas: Some(0),
                ready_replicas: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ready_condition = |pod_ready: bool| {
            let status = plan_status(
                &md,
                &decision,
                &observed(
                    Some(&deployment),
                    &[ready_pod("qwen-a", "127.1.1.2", pod_ready)],
                ),
                "sel".into(),
                Timestamp::UNIX_EPOCH,
            );
            let ready = status
                .conditions
                .into_iter()
                .find(|c| c.type_ == READY)
                .unwrap();
            (ready.status, ready.reason, ready.message)
        };
        assert_eq!(
            ready_condition(true),
            (
                "False".to_owned(),
                "RollingOut".to_owned(),
                "1/1 replicas ready; the Deployment is still rolling out (0 of 1 replicas updated)"
                    .to_owned()
            )
        );
        // Without enough ready pods the reason stays PodsNotReady.
        assert_eq!(
            ready_condition(false),
            (
                "False".to_owned(),
                "PodsNotReady".to_owned(),
                "0/1 replicas ready".to_owned()
            )
        );
    }

    #[test]
    fn an_unreachable_cluster_keeps_the_last_endpoints_out_of_the_route() {
        let mut md = md(model_spec());
        md.status = Some(ModelDeploymentStatus {
            endpoints: endpoints(&[
                ready_pod("qwen-a", "127.2.1.2", true),
                ready_pod("qwen-b", "127.2.2.2", true),
            ]),
            ..Default::default()
        });
        let selected = SelectedConfiguration {
            replicas: 2,
            cluster: "work".into(),
            accelerator: "NVIDIA-L40S".into(),
            accelerators_per_replica: 1,
            tensor_parallel: 1,
            pipeline_parallel: 1,
            ..Default::default()
        };
        let status = plan_status(
            &md,
            &Decision::Deploy(Box::new(selected)),
            &ObservedWorkload {
                unreachable: Some("BudCluster work is not Ready (Unreachable): refused".into()),
                ..observed(None, &[])
            },
            "sel".into(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.endpoints.len(), 2);
        assert!(status.endpoints.iter().all(|e| !e.ready));
        assert_eq!(status.ready_replicas, 0);
        assert!(status.route.is_some(), "the route stays for fallback");
        for type_ in [READY, AVAILABLE] {
            let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", CLUSTER_UNREACHABLE)
            );
            assert!(c.message.contains("BudCluster work"), "{}", c.message);
        }
    }
}
