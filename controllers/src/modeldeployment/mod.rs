//! The `ModelDeployment` controller: decides the serving configuration (explicit placement
//! checked against the inventory and the simulator's memory model, or the best result of an
//! owned `Simulation`), renders the engine workload with server-side apply, and reports the
//! truth in status: the selection and its prediction, replicas, endpoints, the route the
//! gateway serves, and conditions whose reasons name the blocker.

pub mod plan;
pub mod render;

use crate::{Context, Error, FIELD_MANAGER, Result};
use bud_crds::conditions::{READY, differ_ignoring_time};
use bud_crds::{BudCluster, ModelDeployment, ModelDeploymentStatus, Simulation};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use plan::{Decision, ObservedWorkload};
use render::{EngineImages, RenderInputs};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTROLLER: &str = "modeldeployment";
const KEDA_CRD: &str = "scaledobjects.keda.sh";
const LWS_CRD: &str = "leaderworkersets.leaderworkerset.x-k8s.io";

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    pub images: EngineImages,
    /// Prometheus that KEDA queries for engine metrics.
    pub prometheus_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            images: EngineImages::default(),
            prometheus_url: "http://prometheus-server.monitoring:80".into(),
        }
    }
}

/// Controller state beyond [`Context`].
pub struct State {
    pub ctx: Arc<Context>,
    pub clusters: Store<BudCluster>,
    pub settings: Settings,
}

/// The node label that names an accelerator's product, by its extended resource.
fn product_label(resource: &str) -> &'static str {
    match resource {
        "amd.com/gpu" => "amd.com/gpu.product-name",
        "habana.ai/gaudi" => "habana.ai/gaudi.product",
        _ => "nvidia.com/gpu.product",
    }
}

async fn crd_installed(client: &kube::Client, name: &str) -> Result<bool> {
    Ok(Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await?
        .is_some())
}

fn dynamic_api(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn reconcile(md: Arc<ModelDeployment>, state: Arc<State>) -> Result<Action> {
    let started = Instant::now();
    let ctx = &state.ctx;
    let client = &ctx.client;
    let labels = crate::metrics::ControllerLabels {
        controller: CONTROLLER,
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();

    // Decide, owning a Simulation when the simulator chooses.
    let simulations: Api<Simulation> = Api::namespaced(client.clone(), &namespace);
    let simulation = match plan::simulation_spec(&md) {
        Some(spec) => {
            let mut child = Simulation::new(&name, spec);
            child.metadata.owner_references = md.controller_owner_ref(&()).map(|o| vec![o]);
            Some(
                simulations
                    .patch(&name, &params, &Patch::Apply(&child))
                    .await?,
            )
        }
        None => None,
    };
    let clusters = state.clusters.state();
    let decision = plan::decide(&md, &clusters, simulation.as_ref());

    // Act.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let mut blocker = None;
    let mut autoscaling = None;
    match &decision {
        Decision::Deploy(selected) => {
            let cluster = clusters
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(selected.cluster.as_str()));
            let inventory = cluster.and_then(|c| c.status.as_ref()).and_then(|s| {
                s.accelerators
                    .iter()
                    .find(|a| a.product == selected.accelerator)
                    .cloned()
            });
            let resource = inventory
                .as_ref()
                .map(|a| a.resource_name.clone())
                .or_else(|| (selected.accelerator != "CPU").then(|| "nvidia.com/gpu".to_owned()));
            let max_per_node = inventory
                .as_ref()
                .map(|a| a.max_per_node)
                .unwrap_or(i64::MAX);
            let keda = md.spec.autoscaling.is_some() && crd_installed(client, KEDA_CRD).await?;
            if md.spec.autoscaling.is_some() {
                autoscaling = Some(if keda {
                    (
                        true,
                        "ScaledObjectApplied",
                        format!("KEDA ScaledObject {name} scales the engine"),
                    )
                } else {
                    (
                        false,
                        "KedaNotInstalled",
                        format!(
                            "spec.autoscaling needs KEDA ({KEDA_CRD}); running spec.autoscaling.minReplicas replicas until it is installed"
                        ),
                    )
                });
            }
            let inputs = RenderInputs {
                selected,
                replicas: if keda { None } else { Some(selected.replicas) },
                accelerator_resource: resource.clone(),
                product_label: product_label(resource.as_deref().unwrap_or_default()).to_owned(),
                model_id: md
                    .spec
                    .model
                    .as_ref()
                    .and_then(|m| crate::planning::model_id_of_uri(&m.uri)),
                images: &state.settings.images,
            };
            let per_replica = i64::from(selected.accelerators_per_replica);
            if per_replica > max_per_node {
                let per_node = max_per_node.max(1);
                let nodes = ((per_replica + per_node - 1) / per_node) as i32;
                if crd_installed(client, LWS_CRD).await? {
                    if let Some(lws) = render::leader_worker_set(&md, &inputs, nodes) {
                        dynamic_api(
                            client,
                            &namespace,
                            "leaderworkerset.x-k8s.io",
                            "v1",
                            "LeaderWorkerSet",
                            "leaderworkersets",
                        )
                        .patch(&name, &params, &Patch::Apply(&lws))
                        .await?;
                    }
                } else {
                    blocker = Some((
                        "LeaderWorkerSetNotInstalled",
                        format!(
                            "a replica needs {per_replica} accelerators across {nodes} nodes (at most {max_per_node} per node); install LeaderWorkerSet ({LWS_CRD}) or lower tensorParallel x pipelineParallel"
                        ),
                    ));
                }
            } else {
                deployments
                    .patch(
                        &name,
                        &params,
                        &Patch::Apply(&render::deployment(&md, &inputs)),
                    )
                    .await?;
            }
            services
                .patch(&name, &params, &Patch::Apply(&render::service(&md)))
                .await?;
            if keda && let Some(scaled) = render::scaled_object(&md, &state.settings.prometheus_url)
            {
                dynamic_api(
                    client,
                    &namespace,
                    "keda.sh",
                    "v1alpha1",
                    "ScaledObject",
                    "scaledobjects",
                )
                .patch(&name, &params, &Patch::Apply(&scaled))
                .await?;
            }
        }
        // Nothing may run when no configuration is acceptable.
        Decision::Hold {
            simulated: Some(false),
            ..
        }
        | Decision::External => {
            for result in [
                deployments
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
                services
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ()),
            ] {
                match result {
                    Ok(()) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Decision::Hold { .. } => {}
    }

    // Observe and report.
    let deployment = deployments.get_opt(&name).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&render::selector_string(&md)))
        .await?
        .items;
    let upstream_model = match &decision {
        Decision::Deploy(selected) => Some(render::upstream_model_name(
            &md,
            selected.engine,
            &state.settings.images,
        )),
        _ => None,
    };
    let observed = ObservedWorkload {
        deployment: deployment.as_ref(),
        pods: &pods,
        blocker,
        autoscaling,
        upstream_model,
    };
    let previous = md.status.clone().unwrap_or_default();
    let status = plan::plan_status(
        &md,
        &decision,
        &observed,
        render::selector_string(&md),
        Timestamp::now(),
    );
    if status_changed(&previous, &status) {
        let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
        let patch = serde_json::json!({"apiVersion": "bud.studio/v1alpha1", "kind": "ModelDeployment", "status": status});
        api.patch_status(&name, &params, &Patch::Apply(&patch))
            .await?;
        record_transitions(ctx, &md, &previous, &status).await;
    }
    ctx.backoff.reset(&format!("{namespace}/{name}"));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn status_changed(old: &ModelDeploymentStatus, new: &ModelDeploymentStatus) -> bool {
    let strip = |s: &ModelDeploymentStatus| ModelDeploymentStatus {
        conditions: vec![],
        ..s.clone()
    };
    strip(old) != strip(new) || differ_ignoring_time(&old.conditions, &new.conditions)
}

/// One Event per decision: a new configuration, or a change of the Ready reason.
async fn record_transitions(
    ctx: &Context,
    md: &ModelDeployment,
    old: &ModelDeploymentStatus,
    new: &ModelDeploymentStatus,
) {
    let ready = |s: &ModelDeploymentStatus| s.conditions.iter().find(|c| c.type_ == READY).cloned();
    let mut events = Vec::new();
    if let Some(selected) = &new.selected
        && old
            .selected
            .as_ref()
            .map(|s| (&s.accelerator, s.tensor_parallel, s.engine, &s.cluster))
            != Some((
                &selected.accelerator,
                selected.tensor_parallel,
                selected.engine,
                &selected.cluster,
            ))
    {
        events.push((
            EventType::Normal,
            "ConfigurationSelected".to_owned(),
            format!(
                "{} replica(s) of {}x {} TP{} {} on cluster {}",
                selected.replicas,
                selected.accelerators_per_replica,
                selected.accelerator,
                selected.tensor_parallel,
                selected.engine.as_str(),
                selected.cluster
            ),
        ));
    }
    if let Some(now) = ready(new)
        && ready(old).map(|c| (c.status, c.reason))
            != Some((now.status.clone(), now.reason.clone()))
    {
        let type_ =
            if now.status == "True" || now.reason == "Simulating" || now.reason == "PodsNotReady" {
                EventType::Normal
            } else {
                EventType::Warning
            };
        events.push((type_, now.reason.clone(), now.message.clone()));
    }
    for (type_, reason, note) in events {
        let event = Event {
            type_,
            reason,
            note: Some(crate::simulation::truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
            tracing::warn!(error = %err, "could not record event");
        }
    }
}

fn error_policy(md: Arc<ModelDeployment>, error: &Error, state: Arc<State>) -> Action {
    let key = format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any());
    state
        .ctx
        .metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: CONTROLLER,
            category: error.category(),
        })
        .inc();
    let delay = state.ctx.backoff.next_delay(&key);
    tracing::warn!(modeldeployment = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (clusters, cluster_events) = crate::cluster_cache(&client);
    let controller = Controller::new(
        Api::<ModelDeployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    let engine_pods = watcher::Config::default().labels(&format!(
        "{}=engine,app.kubernetes.io/managed-by=bud-operator",
        render::COMPONENT_LABEL
    ));
    // Explicit placements depend on the inventory; simulated ones follow their Simulation.
    let on_cluster_change = move |_cluster: BudCluster| {
        deployments
            .state()
            .into_iter()
            .filter(|md| md.spec.placement.is_some())
            .map(|md| ObjectRef::from_obj(md.as_ref()))
            .collect::<Vec<_>>()
    };
    let state = Arc::new(State {
        ctx,
        clusters,
        settings,
    });
    controller
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Simulation>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(Api::<Pod>::all(client.clone()), engine_pods, |pod| {
            let namespace = pod.namespace()?;
            let owner = pod.labels().get(render::DEPLOYMENT_LABEL)?.clone();
            Some(ObjectRef::<ModelDeployment>::new(&owner).within(&namespace))
        })
        .watches_stream(cluster_events, on_cluster_change)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}
