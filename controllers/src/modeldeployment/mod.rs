//! The `ModelDeployment` controller: decides the serving configuration (explicit placement
//! checked against the inventory and the simulator's memory model, or the best result of an
//! owned `Simulation`), renders the engine workload with server-side apply, and reports the
//! truth in status: the selection and its prediction, replicas, endpoints, the route the
//! gateway serves, and conditions whose reasons name the blocker.

pub mod plan;
pub mod render;

use crate::budcluster::{self, ClusterClientError, cluster_client, cluster_client_for};
use crate::{Context, Error, FIELD_MANAGER, Result};
use bud_crds::budcluster::ClusterType;
use bud_crds::conditions::{READY, differ_ignoring_time};
use bud_crds::{BudCluster, ModelDeployment, ModelDeploymentStatus, Simulation};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use plan::{Decision, ObservedWorkload};
use render::{EngineImages, RenderInputs};
use std::collections::BTreeMap;
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
    /// Engine pod watches in other clusters' workload namespaces.
    pub remote_pods: RemotePodWatches,
}

/// One engine-pod watch per (cluster, workload namespace) in use, each poking the
/// ModelDeployment its pods' owner labels name, so a remote pod's change is reconciled at
/// once as a local one is. A watch keeps the client it started with; the periodic poll
/// covers what it misses (e.g. after rotated credentials, or while the cluster is down).
pub struct RemotePodWatches {
    tasks: std::sync::Mutex<BTreeMap<(String, String), tokio::task::JoinHandle<()>>>,
    notify: futures::channel::mpsc::UnboundedSender<ObjectRef<ModelDeployment>>,
}

impl RemotePodWatches {
    pub fn new(
        notify: futures::channel::mpsc::UnboundedSender<ObjectRef<ModelDeployment>>,
    ) -> Self {
        Self {
            tasks: Default::default(),
            notify,
        }
    }

    /// Starts the watch of `location` with `client` unless one runs.
    fn ensure(&self, location: &RemoteLocation, client: &kube::Client) {
        let key = (location.cluster.clone(), location.namespace.clone());
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.get(&key).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let pods = Api::<Pod>::namespaced(client.clone(), &location.namespace);
        let notify = self.notify.clone();
        let config = watcher::Config::default().labels(&format!(
            "{}=engine,app.kubernetes.io/managed-by=bud-operator",
            render::COMPONENT_LABEL
        ));
        let task = tokio::spawn(async move {
            use kube::runtime::WatchStreamExt;
            let stream = watcher(pods, config).default_backoff().touched_objects();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(pod) = event else { continue };
                let labels = pod.labels();
                if let (Some(namespace), Some(name)) = (
                    labels.get(render::OWNER_NAMESPACE_LABEL),
                    labels.get(render::OWNER_NAME_LABEL),
                ) && notify
                    .unbounded_send(ObjectRef::new(name).within(namespace))
                    .is_err()
                {
                    return;
                }
            }
        });
        tasks.insert(key, task);
    }
}

impl Drop for RemotePodWatches {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            task.abort();
        }
    }
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

/// Finalizer on a ModelDeployment whose workload runs in another cluster: owner references
/// cannot cross clusters, so the operator deletes the remote objects before the
/// ModelDeployment goes away. Only remote deployments carry it.
pub const REMOTE_FINALIZER: &str = "bud.studio/remote-workload";
/// Annotation recording where the remote workload was applied: `CLUSTER/NAMESPACE`.
pub const REMOTE_LOCATION_ANNOTATION: &str = "bud.studio/remote-workload";

/// Requeue intervals. Engine pods are watched, in other clusters too ([`RemotePodWatches`]);
/// remote deployments are also polled, since a watch in another cluster can lag or break:
/// every 5 s while the deployment is not Ready (rollouts, an unreachable cluster coming
/// back), every 30 s once it is. A BudCluster's change requeues its deployments at once.
const LOCAL_RESYNC: Duration = Duration::from_secs(300);
const REMOTE_POLL_NOT_READY: Duration = Duration::from_secs(5);
const REMOTE_POLL_READY: Duration = Duration::from_secs(30);

/// Where a remote workload lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLocation {
    pub cluster: String,
    pub namespace: String,
}

impl RemoteLocation {
    fn annotation(&self) -> String {
        format!("{}/{}", self.cluster, self.namespace)
    }

    /// The recorded location, when the ModelDeployment carries the finalizer.
    pub fn recorded(md: &ModelDeployment) -> Option<Self> {
        if !md.finalizers().iter().any(|f| f == REMOTE_FINALIZER) {
            return None;
        }
        let (cluster, namespace) = md
            .annotations()
            .get(REMOTE_LOCATION_ANNOTATION)?
            .split_once('/')?;
        Some(Self {
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// Where the engine workload goes: the ModelDeployment's own namespace in the operator's
/// cluster (owner references, watched), or the workload namespace of another cluster.
struct Workload {
    client: kube::Client,
    namespace: String,
    /// What the renderer is given: the ModelDeployment itself, or [`render::as_remote`].
    md: ModelDeployment,
    remote: Option<RemoteLocation>,
}

fn ignore_not_found(result: kube::Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the engine objects named `name` in `namespace` (Deployment, Service, and the
/// ScaledObject and LeaderWorkerSet when their kinds exist).
async fn delete_workload(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    extensions: bool,
) -> Result<()> {
    let dp = DeleteParams::background();
    ignore_not_found(
        Api::<Deployment>::namespaced(client.clone(), namespace)
            .delete(name, &dp)
            .await
            .map(drop),
    )?;
    ignore_not_found(
        Api::<Service>::namespaced(client.clone(), namespace)
            .delete(name, &dp)
            .await
            .map(drop),
    )?;
    if extensions {
        for (group, version, kind, plural) in [
            ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
            (
                "leaderworkerset.x-k8s.io",
                "v1",
                "LeaderWorkerSet",
                "leaderworkersets",
            ),
        ] {
            // Credentials that may not touch these kinds never created them either.
            match dynamic_api(client, namespace, group, version, kind, plural)
                .delete(name, &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Deletes the remote workload at `location`. `Ok(None)` when it is gone (or its cluster no
/// longer exists, so nothing can be reached to delete), `Ok(Some(why))` when the cluster
/// cannot be reached now.
async fn delete_remote(
    state: &State,
    md: &ModelDeployment,
    location: &RemoteLocation,
) -> Result<Option<String>> {
    let client = match cluster_client(&state.ctx.client, &location.cluster).await {
        Ok(client) => client,
        Err(ClusterClientError::NotFound(_)) => return Ok(None),
        Err(ClusterClientError::Kube(e)) => return Err(e.into()),
        Err(other) => return Ok(Some(other.to_string())),
    };
    delete_workload(&client, &location.namespace, &render::remote_name(md), true).await?;
    publish(
        &state.ctx,
        md,
        EventType::Normal,
        "RemoteWorkloadDeleted",
        format!(
            "deleted {} in namespace {} of BudCluster {}",
            render::remote_name(md),
            location.namespace,
            location.cluster
        ),
    )
    .await;
    Ok(None)
}

/// Records `location` (annotation) and the finalizer, or removes both (`None`). The
/// resourceVersion makes it a compare-and-swap; a conflict is retried.
async fn record_location(
    client: &kube::Client,
    md: &ModelDeployment,
    location: Option<&RemoteLocation>,
) -> Result<()> {
    let mut finalizers: Vec<String> = md
        .finalizers()
        .iter()
        .filter(|f| *f != REMOTE_FINALIZER)
        .cloned()
        .collect();
    if location.is_some() {
        finalizers.push(REMOTE_FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": md.resource_version(),
            "finalizers": finalizers,
            "annotations": {REMOTE_LOCATION_ANNOTATION: location.map(RemoteLocation::annotation)},
        }
    });
    Api::<ModelDeployment>::namespaced(client.clone(), &md.namespace().unwrap_or_default())
        .patch(
            &md.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Creates the workload namespace in the target cluster when it is missing. Credentials
/// that may not create namespaces (a Role in an existing one) are fine.
async fn ensure_namespace(client: &kube::Client, namespace: &str) -> Result<()> {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(namespace.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 403 => Ok(()),
        Err(e) => Err(e.into()),
    }
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
    let recorded = RemoteLocation::recorded(&md);

    // Deleted: remove the remote workload, then let the ModelDeployment go.
    if md.metadata.deletion_timestamp.is_some() {
        if md.finalizers().iter().any(|f| f == REMOTE_FINALIZER) {
            if let Some(location) = &recorded
                && let Some(why) = delete_remote(&state, &md, location).await?
            {
                tracing::info!(modeldeployment = %format!("{namespace}/{name}"), %why, "remote workload cannot be deleted yet");
                return Ok(Action::requeue(REMOTE_POLL_NOT_READY));
            }
            record_location(client, &md, None).await?;
        }
        return Ok(Action::await_change());
    }

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

    // Where the workload goes: another cluster when the selection names one that is not the
    // operator's own.
    let mut unreachable = None;
    let mut workload = Workload {
        client: client.clone(),
        namespace: namespace.clone(),
        md: md.as_ref().clone(),
        remote: None,
    };
    if let Decision::Deploy(selected) = &decision {
        let cluster = clusters
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(selected.cluster.as_str()));
        match cluster {
            Some(c) if c.spec.type_ != ClusterType::Local => {
                let location = RemoteLocation {
                    cluster: selected.cluster.clone(),
                    namespace: budcluster::kubeconfig::workload_namespace(c),
                };
                match cluster_client_for(client, c).await {
                    Ok(remote) => {
                        workload = Workload {
                            client: remote,
                            md: render::as_remote(&md, &location.namespace),
                            namespace: location.namespace.clone(),
                            remote: Some(location),
                        };
                    }
                    Err(ClusterClientError::Kube(e)) => return Err(e.into()),
                    Err(err) => {
                        unreachable = Some(err.to_string());
                        workload.remote = Some(location);
                    }
                }
            }
            // A remote cluster whose BudCluster is gone: nothing can be reached.
            None if recorded
                .as_ref()
                .is_some_and(|r| r.cluster == selected.cluster) =>
            {
                unreachable = Some(format!("BudCluster {} does not exist", selected.cluster));
                workload.remote = recorded.clone();
            }
            _ => {}
        }
    }

    // A workload left elsewhere (the selection moved, or nothing may run now) goes first.
    // While the simulator is still choosing, what runs keeps running, as it does locally.
    let moved = match &decision {
        Decision::Deploy(_) => workload.remote != recorded,
        Decision::External
        | Decision::Hold {
            simulated: Some(false),
            ..
        } => true,
        Decision::Hold { .. } => false,
    };
    let mut cleanup_pending = false;
    if let Some(old) = &recorded
        && moved
        && unreachable.is_none()
    {
        match delete_remote(&state, &md, old).await? {
            None if workload.remote.is_none() => {
                record_location(client, &md, None).await?;
                // The patch changes the object: the next reconcile sees it.
                return Ok(Action::await_change());
            }
            None => {}
            // Moving off an unreachable cluster is not held up: the finalizer stays, and the
            // old workload is deleted once its cluster answers.
            Some(why) if workload.remote.is_none() => {
                tracing::info!(modeldeployment = %format!("{namespace}/{name}"), %why, "previous remote workload cannot be deleted yet");
                cleanup_pending = true;
            }
            // One location is recorded at a time: the new cluster waits for the old one.
            Some(why) => {
                tracing::info!(modeldeployment = %format!("{namespace}/{name}"), %why, "previous remote workload cannot be deleted yet");
                return Ok(Action::requeue(REMOTE_POLL_NOT_READY));
            }
        }
    }
    if let (Some(location), None) = (&workload.remote, &unreachable) {
        if recorded.as_ref() != Some(location) {
            // Before anything exists over there, so a deletion can always find it.
            record_location(client, &md, Some(location)).await?;
            // The workload ran here before: its local objects (owned by this
            // ModelDeployment, nothing else of the same name) go.
            let owned = Api::<Deployment>::namespaced(client.clone(), &namespace)
                .get_opt(&name)
                .await?
                .is_some_and(|d| {
                    d.owner_references()
                        .iter()
                        .any(|o| Some(&o.uid) == md.metadata.uid.as_ref())
                });
            if owned {
                delete_workload(client, &namespace, &name, false).await?;
            }
        }
        ensure_namespace(&workload.client, &location.namespace).await?;
        state.remote_pods.ensure(location, &workload.client);
    }

    // Act.
    let mut blocker = None;
    let mut autoscaling = None;
    if unreachable.is_none() {
        act(
            &state,
            &md,
            &workload,
            &decision,
            &mut blocker,
            &mut autoscaling,
        )
        .await?;
    }

    // Observe and report.
    let (deployment, pods) = if unreachable.is_some() {
        (None, vec![])
    } else {
        let wname = workload.md.name_any();
        let deployment =
            Api::<Deployment>::namespaced(workload.client.clone(), &workload.namespace)
                .get_opt(&wname)
                .await?;
        let pods = Api::<Pod>::namespaced(workload.client.clone(), &workload.namespace)
            .list(&ListParams::default().labels(&render::selector_string(&workload.md)))
            .await?
            .items;
        (deployment, pods)
    };
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
        unreachable,
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
    Ok(Action::requeue(match &workload.remote {
        None if cleanup_pending => REMOTE_POLL_NOT_READY,
        None => LOCAL_RESYNC,
        Some(_) if bud_crds::conditions::is_true(&status.conditions, READY) => REMOTE_POLL_READY,
        Some(_) => REMOTE_POLL_NOT_READY,
    }))
}

/// Whether a CRD exists in the workload's cluster. Credentials of another cluster that may
/// not read CRDs count as "not installed".
async fn workload_has_crd(workload: &Workload, name: &str) -> Result<bool> {
    match crd_installed(&workload.client, name).await {
        Err(Error::Kube(kube::Error::Api(status)))
            if status.code == 403 && workload.remote.is_some() =>
        {
            Ok(false)
        }
        other => other,
    }
}

/// Adds the owner labels to a remote object's metadata (and its pod template's).
fn label_remote(labels: &mut Option<BTreeMap<String, String>>, md: &ModelDeployment) {
    render::add_owner_labels(labels.get_or_insert_with(BTreeMap::new), md);
}

/// Applies (or removes) the engine workload for `decision` where `workload` says.
async fn act(
    state: &State,
    md: &ModelDeployment,
    workload: &Workload,
    decision: &Decision,
    blocker: &mut Option<(&'static str, String)>,
    autoscaling: &mut Option<(bool, &'static str, String)>,
) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let client = &workload.client;
    let namespace = workload.namespace.as_str();
    let target = &workload.md;
    let name = target.name_any();
    let remote = workload.remote.is_some();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    match decision {
        Decision::Deploy(selected) => {
            let clusters = state.clusters.state();
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
            let keda =
                md.spec.autoscaling.is_some() && workload_has_crd(workload, KEDA_CRD).await?;
            if md.spec.autoscaling.is_some() {
                *autoscaling = Some(if keda {
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
                if workload_has_crd(workload, LWS_CRD).await? {
                    if let Some(mut lws) = render::leader_worker_set(target, &inputs, nodes) {
                        if remote {
                            label_remote(&mut lws.metadata.labels, md);
                        }
                        dynamic_api(
                            client,
                            namespace,
                            "leaderworkerset.x-k8s.io",
                            "v1",
                            "LeaderWorkerSet",
                            "leaderworkersets",
                        )
                        .patch(&name, &params, &Patch::Apply(&lws))
                        .await?;
                    }
                } else {
                    *blocker = Some((
                        "LeaderWorkerSetNotInstalled",
                        format!(
                            "a replica needs {per_replica} accelerators across {nodes} nodes (at most {max_per_node} per node); install LeaderWorkerSet ({LWS_CRD}) or lower tensorParallel x pipelineParallel"
                        ),
                    ));
                }
            } else {
                let mut deployment = render::deployment(target, &inputs);
                if remote {
                    label_remote(&mut deployment.metadata.labels, md);
                    if let Some(template) = deployment
                        .spec
                        .as_mut()
                        .and_then(|s| s.template.metadata.as_mut())
                    {
                        label_remote(&mut template.labels, md);
                    }
                }
                deployments
                    .patch(&name, &params, &Patch::Apply(&deployment))
                    .await?;
            }
            let mut service = render::service(target);
            if remote {
                label_remote(&mut service.metadata.labels, md);
            }
            services
                .patch(&name, &params, &Patch::Apply(&service))
                .await?;
            if keda
                && let Some(mut scaled) =
                    render::scaled_object(target, &state.settings.prometheus_url)
            {
                if remote {
                    label_remote(&mut scaled.metadata.labels, md);
                }
                dynamic_api(
                    client,
                    namespace,
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
            delete_workload(client, namespace, &name, false).await?;
        }
        Decision::Hold { .. } => {}
    }
    Ok(())
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
            .map(|s| (&s.accelerator, s.layout(), s.engine, &s.cluster))
            != Some((
                &selected.accelerator,
                selected.layout(),
                selected.engine,
                &selected.cluster,
            ))
    {
        events.push((
            EventType::Normal,
            "ConfigurationSelected".to_owned(),
            format!(
                "{} replica(s) of {}x {} {} {} on cluster {}",
                selected.replicas,
                selected.accelerators_per_replica,
                selected.accelerator,
                selected.layout(),
                selected.engine.as_str(),
                selected.cluster
            ),
        ));
        if let Some(warning) = plan::unmodelled_layout_warning(selected) {
            events.push((
                EventType::Warning,
                "PredictionOptimistic".to_owned(),
                warning,
            ));
        }
    }
    if let Some(now) = ready(new)
        && ready(old).map(|c| (c.status, c.reason))
            != Some((now.status.clone(), now.reason.clone()))
    {
        let type_ = if now.status == "True"
            || ["Simulating", "PodsNotReady", "RollingOut"].contains(&now.reason.as_str())
        {
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

async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::simulation::truncate(note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(error = %err, "could not record event");
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
    // Deployments on another cluster follow its Ready condition (ClusterUnreachable).
    let on_cluster_change = move |cluster: BudCluster| {
        let remote = (cluster.spec.type_ != ClusterType::Local).then(|| cluster.name_any());
        deployments
            .state()
            .into_iter()
            .filter(|md| {
                md.spec.placement.is_some()
                    || remote.as_ref().is_some_and(|name| {
                        md.status
                            .as_ref()
                            .and_then(|s| s.selected.as_ref())
                            .is_some_and(|s| &s.cluster == name)
                    })
            })
            .map(|md| ObjectRef::from_obj(md.as_ref()))
            .collect::<Vec<_>>()
    };
    let (remote_tx, remote_rx) = futures::channel::mpsc::unbounded();
    let state = Arc::new(State {
        ctx,
        clusters,
        settings,
        remote_pods: RemotePodWatches::new(remote_tx),
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
        .reconcile_on(remote_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}
