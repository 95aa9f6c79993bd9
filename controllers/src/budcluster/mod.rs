//! The `BudCluster` controller: it publishes the accelerator inventory of every cluster
//! models may run on, and creates the clusters it owns.
//!
//! - `Local` (this module): the nodes of the cluster the operator runs in.
//! - `Kubeconfig` ([`kubeconfig`]): an existing cluster reached through a kubeconfig Secret;
//!   one background task per cluster follows its nodes, so clusters never wait on each other.
//! - `EKS` ([`eks`]) and `AKS` ([`aks`]): created through the cloud's API, then connected like
//!   `Kubeconfig` through the kubeconfig Secret the operator writes; deleted behind a finalizer.
//!
//! Every type ends in the same pure [`plan_status`] (inventory, `Ready` with a reason that
//! names the blocker). [`cluster_client`] gives other controllers a client for a Ready cluster.

pub mod aks;
mod client;
pub mod eks;
pub mod kubeconfig;

pub use client::{ClusterClientError, KUBECONFIG_KEY, cluster_client, cluster_client_for};

use crate::quantity::{format_cpu, format_memory, parse_count, parse_milli};
use crate::{Context, Error, FIELD_MANAGER, Result};
use bud_crds::budcluster::{
    AcceleratorInventory, ClusterType, CpuInventory, NamespacedSecretName, ProvisioningStatus,
};
use bud_crds::conditions::{
    Condition, READY, differ_ignoring_time, find_condition, new_condition, set_condition,
};
use bud_crds::{BudCluster, BudClusterStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTROLLER: &str = "budcluster";

/// Extended resources that are accelerators, with their vendor and the node labels that
/// name the product and its memory (in MiB, or with a unit suffix).
struct AcceleratorResource {
    resource: &'static str,
    vendor: &'static str,
    product_label: &'static str,
    memory_label: &'static str,
    fallback_product: &'static str,
}

const ACCELERATOR_RESOURCES: &[AcceleratorResource] = &[
    AcceleratorResource {
        resource: "nvidia.com/gpu",
        vendor: "NVIDIA",
        product_label: "nvidia.com/gpu.product",
        memory_label: "nvidia.com/gpu.memory",
        fallback_product: "NVIDIA-GPU",
    },
    AcceleratorResource {
        resource: "amd.com/gpu",
        vendor: "AMD",
        product_label: "amd.com/gpu.product-name",
        memory_label: "amd.com/gpu.vram",
        fallback_product: "AMD-GPU",
    },
    AcceleratorResource {
        resource: "habana.ai/gaudi",
        vendor: "Intel",
        product_label: "habana.ai/gaudi.product",
        memory_label: "habana.ai/gaudi.memory",
        fallback_product: "Intel-Gaudi",
    },
];

/// The inventory of a set of nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub node_count: i32,
    pub ready_node_count: i32,
    pub accelerators: Vec<AcceleratorInventory>,
    pub cpu: Option<CpuInventory>,
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_schedulable(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn quantity_of(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> Option<String> {
    map.and_then(|m| m.get(key)).map(|q| q.0.clone())
}

/// Memory label values: plain MiB (`81559`, NVIDIA GFD) or a quantity (`192G`, `64Gi`).
fn memory_mib(value: &str) -> Option<i64> {
    if let Ok(mib) = value.parse::<i64>() {
        return Some(mib);
    }
    let milli = parse_milli(value)?;
    i64::try_from(milli / 1000 / (1024 * 1024)).ok()
}

/// Adds up the accelerators and CPU-only capacity of `nodes`. Capacity (`count`) counts
/// every node; `allocatable` and `maxPerNode` count only Ready, schedulable nodes — what pods
/// can actually get.
pub fn inventory_from_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Inventory {
    let mut inventory = Inventory::default();
    let mut by_product: BTreeMap<String, AcceleratorInventory> = BTreeMap::new();
    let (mut cpu_nodes, mut cpu_milli, mut memory_milli) = (0, 0i128, 0i128);
    let mut cpu_models = BTreeSet::new();
    for node in nodes {
        inventory.node_count += 1;
        let usable = is_ready(node) && is_schedulable(node);
        if is_ready(node) {
            inventory.ready_node_count += 1;
        }
        let status = node.status.as_ref();
        let capacity = status.and_then(|s| s.capacity.as_ref());
        let allocatable = status.and_then(|s| s.allocatable.as_ref());
        let labels = node.labels();
        let mut has_accelerator = false;
        for kind in ACCELERATOR_RESOURCES {
            let count = quantity_of(capacity, kind.resource)
                .and_then(|q| parse_count(&q))
                .unwrap_or(0);
            if count <= 0 {
                continue;
            }
            has_accelerator = true;
            let product = labels
                .get(kind.product_label)
                .cloned()
                .unwrap_or_else(|| kind.fallback_product.to_owned());
            let node_allocatable = if usable {
                quantity_of(allocatable, kind.resource)
                    .and_then(|q| parse_count(&q))
                    .unwrap_or(0)
            } else {
                0
            };
            let entry = by_product
                .entry(product.clone())
                .or_insert_with(|| AcceleratorInventory {
                    vendor: kind.vendor.to_owned(),
                    product,
                    resource_name: kind.resource.to_owned(),
                    ..Default::default()
                });
            entry.count += count;
            entry.allocatable += node_allocatable;
            entry.nodes += 1;
            entry.max_per_node = entry.max_per_node.max(node_allocatable);
            if let Some(mib) = labels.get(kind.memory_label).and_then(|v| memory_mib(v)) {
                entry.memory_mib = Some(entry.memory_mib.map_or(mib, |m: i64| m.min(mib)));
            }
        }
        if !has_accelerator {
            cpu_nodes += 1;
            if usable {
                cpu_milli += quantity_of(allocatable, "cpu")
                    .and_then(|q| parse_milli(&q))
                    .unwrap_or(0);
                memory_milli += quantity_of(allocatable, "memory")
                    .and_then(|q| parse_milli(&q))
                    .unwrap_or(0);
            }
            if let Some(model) = labels.get("feature.node.kubernetes.io/cpu-model.name") {
                cpu_models.insert(model.clone());
            }
        }
    }
    inventory.accelerators = by_product.into_values().collect();
    if cpu_nodes > 0 {
        inventory.cpu = Some(CpuInventory {
            nodes: cpu_nodes,
            cpu: format_cpu(cpu_milli),
            memory: format_memory(memory_milli),
            models: cpu_models.into_iter().collect(),
        });
    }
    inventory
}

/// One line for `kubectl get`: `16x NVIDIA-H100-80GB-HBM3, 2x NVIDIA-L4`.
pub fn accelerator_summary(accelerators: &[AcceleratorInventory]) -> String {
    if accelerators.is_empty() {
        return "none".to_owned();
    }
    accelerators
        .iter()
        .map(|a| format!("{}x {}", a.count, a.product))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The non-empty UTF-8 entries of a cloud credentials Secret (EKS and AKS); a Secret that
/// cannot be read is a `CredentialsMissing` blocker naming it.
async fn read_credentials_secret(
    state: &State,
    secret: &bud_crds::budcluster::NamespacedSecretName,
) -> std::result::Result<BTreeMap<String, String>, Blocker> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(state.ctx.client.clone(), &secret.namespace);
    let found = api.get_opt(&secret.name).await.map_err(|e| {
        Blocker::new(
            "CredentialsMissing",
            format!(
                "cannot read Secret {}/{}: {}",
                secret.namespace,
                secret.name,
                kubeconfig::short_error(&e)
            ),
        )
    })?;
    Ok(found
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| {
            String::from_utf8(value.0)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (key, v))
        })
        .collect())
}

/// Why a cluster is not usable: the `Ready=False` reason and a message a platform engineer
/// can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub reason: &'static str,
    pub message: String,
}

impl Blocker {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What reconcile observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The inventory read from the nodes; `None` keeps the one in status (a cluster that is
    /// unreachable keeps showing what it had, with `Ready=False`).
    pub inventory: Option<Inventory>,
    pub kubernetes_version: Option<String>,
    /// Why the cluster cannot be used; `None` when it is Ready.
    pub blocker: Option<Blocker>,
    /// Progress of creating or deleting an EKS/AKS cluster.
    pub provisioning: Option<ProvisioningStatus>,
    /// The `Provisioned` condition of an EKS/AKS cluster.
    pub provisioned: Option<Condition>,
    /// The kubeconfig Secret the operator wrote for an EKS/AKS cluster.
    pub kubeconfig_secret: Option<NamespacedSecretName>,
    /// A step failed and is retried with growing backoff (which a success would reset).
    pub failed: bool,
}

/// The status a BudCluster should have, given what was observed. Keeps the previous
/// `lastSyncTime` and condition transition times when nothing changed, so that equal inputs
/// give an equal status and no patch.
pub fn plan_status(cluster: &BudCluster, observed: &Observed, now: Timestamp) -> BudClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let mut status = BudClusterStatus {
        conditions: previous.conditions.clone(),
        observed_generation: generation,
        kubernetes_version: previous.kubernetes_version.clone(),
        node_count: previous.node_count,
        ready_node_count: previous.ready_node_count,
        accelerators: previous.accelerators.clone(),
        accelerator_summary: previous.accelerator_summary.clone(),
        cpu: previous.cpu.clone(),
        provisioning: observed.provisioning.clone(),
        kubeconfig_secret: observed.kubeconfig_secret.clone(),
        last_sync_time: previous.last_sync_time.clone(),
    };
    if let Some(inv) = &observed.inventory {
        status.node_count = inv.node_count;
        status.ready_node_count = inv.ready_node_count;
        status.accelerators = inv.accelerators.clone();
        status.accelerator_summary = Some(accelerator_summary(&inv.accelerators));
        status.cpu = inv.cpu.clone();
    }
    if observed.kubernetes_version.is_some() {
        status.kubernetes_version = observed.kubernetes_version.clone();
    }
    if let Some(provisioned) = &observed.provisioned {
        set_condition(&mut status.conditions, provisioned.clone());
    }
    let ready = match &observed.blocker {
        Some(blocker) => new_condition(
            READY,
            false,
            blocker.reason,
            blocker.message.clone(),
            generation,
            now,
        ),
        None => {
            let total: i64 = status.accelerators.iter().map(|a| a.count).sum();
            new_condition(
                READY,
                true,
                "InventoryCurrent",
                format!(
                    "{} nodes ({} ready), {} accelerators",
                    status.node_count, status.ready_node_count, total
                ),
                generation,
                now,
            )
        }
    };
    set_condition(&mut status.conditions, ready);
    if observed.inventory.is_some() && inventory_changed(&previous, &status) {
        status.last_sync_time = Some(Time(now));
    }
    status
}

fn inventory_changed(old: &BudClusterStatus, new: &BudClusterStatus) -> bool {
    old.accelerators != new.accelerators
        || old.cpu != new.cpu
        || old.node_count != new.node_count
        || old.ready_node_count != new.ready_node_count
        || old.kubernetes_version != new.kubernetes_version
}

fn status_changed(old: &BudClusterStatus, new: &BudClusterStatus) -> bool {
    inventory_changed(old, new)
        || old.observed_generation != new.observed_generation
        || old.accelerator_summary != new.accelerator_summary
        || old.kubeconfig_secret != new.kubeconfig_secret
        || provisioning_changed(old.provisioning.as_ref(), new.provisioning.as_ref())
        || differ_ignoring_time(&old.conditions, &new.conditions)
}

fn provisioning_changed(
    old: Option<&ProvisioningStatus>,
    new: Option<&ProvisioningStatus>,
) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            a.phase != b.phase
                || a.cloud_id != b.cloud_id
                || a.message != b.message
                || a.operation != b.operation
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// Operator settings for the cluster types that talk to clouds.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Overrides the AWS endpoints (EKS and STS), e.g. a moto server in tests.
    pub aws_endpoint_url: Option<String>,
    /// Azure AD authority, `https://login.microsoftonline.com` in the public cloud.
    pub azure_authority_url: String,
    /// Azure Resource Manager, `https://management.azure.com` in the public cloud.
    pub azure_resource_manager_url: String,
    /// Namespace where the operator writes the kubeconfig Secrets of EKS/AKS clusters.
    pub kubeconfig_secret_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            aws_endpoint_url: None,
            azure_authority_url: aks::DEFAULT_AUTHORITY_URL.to_owned(),
            azure_resource_manager_url: aks::DEFAULT_RESOURCE_MANAGER_URL.to_owned(),
            kubeconfig_secret_namespace: "default".to_owned(),
        }
    }
}

/// Controller state beyond [`Context`]: the node cache, the remote connections, settings.
pub struct State {
    pub ctx: Arc<Context>,
    pub nodes: Store<Node>,
    pub connections: kubeconfig::Connections,
    pub settings: Settings,
}

/// How often clusters reached through a kubeconfig are reconciled even when nothing
/// changed: re-reads the Secret, so rotated credentials are picked up within this time.
pub(crate) const KUBECONFIG_RESYNC: Duration = Duration::from_secs(30);

/// Connects (or keeps connected) a cluster through the kubeconfig in `secret_ref` and
/// returns what its connection task last saw. Never waits on the remote cluster.
pub(crate) async fn observe_through_kubeconfig(
    state: &State,
    cluster: &BudCluster,
    secret_ref: &bud_crds::common::NamespacedSecretKeyRef,
    context: Option<&str>,
) -> Observed {
    let name = cluster.name_any();
    let source =
        match kubeconfig::read_kubeconfig_secret(&state.ctx.client, secret_ref, context).await {
            Ok(source) => source,
            Err(blocker) => {
                state.connections.disconnect(&name);
                return Observed {
                    blocker: Some(blocker),
                    ..Default::default()
                };
            }
        };
    let client = if state.connections.is_current(&name, &source.fingerprint) {
        None
    } else {
        match kubeconfig::client_from(&source).await {
            Ok(client) => Some(client),
            Err(blocker) => {
                state.connections.disconnect(&name);
                return Observed {
                    blocker: Some(blocker),
                    ..Default::default()
                };
            }
        }
    };
    let namespace = kubeconfig::workload_namespace(cluster);
    let snapshot = state.connections.snapshot(
        &name,
        &source,
        || client.unwrap_or_else(|| state.ctx.client.clone()),
        &namespace,
    );
    Observed {
        blocker: snapshot.blocker(&namespace),
        inventory: snapshot.inventory,
        kubernetes_version: snapshot.kubernetes_version,
        ..Default::default()
    }
}

/// Reconciles one BudCluster.
pub async fn reconcile(cluster: Arc<BudCluster>, state: Arc<State>) -> Result<Action> {
    let started = Instant::now();
    let ctx = &state.ctx;
    let labels = crate::metrics::ControllerLabels {
        controller: CONTROLLER,
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let name = cluster.name_any();
    let now = Timestamp::now();

    let (observed, requeue) = match cluster.spec.type_ {
        ClusterType::Local => {
            let nodes = state.nodes.state();
            let version = ctx.client.apiserver_version().await?;
            let observed = Observed {
                inventory: Some(inventory_from_nodes(nodes.iter().map(|n| n.as_ref()))),
                kubernetes_version: Some(version.git_version),
                ..Default::default()
            };
            // Node changes trigger reconciles; the periodic requeue refreshes the version.
            (observed, Duration::from_secs(300))
        }
        ClusterType::Kubeconfig => {
            let source = cluster.spec.kubeconfig.as_ref().ok_or_else(|| {
                Error::InvalidSpec("spec.kubeconfig is required for type Kubeconfig".into())
            })?;
            let observed = observe_through_kubeconfig(
                &state,
                &cluster,
                &source.secret_ref,
                source.context.as_deref(),
            )
            .await;
            (observed, KUBECONFIG_RESYNC)
        }
        ClusterType::Eks => match eks::reconcile(&cluster, &state, now).await? {
            Some(step) => step,
            None => return Ok(Action::await_change()),
        },
        ClusterType::Aks => match aks::reconcile(&cluster, &state, now).await? {
            Some(step) => step,
            None => return Ok(Action::await_change()),
        },
    };
    let previous = cluster.status.clone().unwrap_or_default();
    let status = plan_status(&cluster, &observed, now);

    if status_changed(&previous, &status) {
        let api: Api<BudCluster> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "bud.studio/v1alpha1",
            "kind": "BudCluster",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        record_transitions(ctx, &cluster, &previous, &status).await;
    }
    for acc in &status.accelerators {
        ctx.metrics
            .inventory_accelerators
            .get_or_create(&crate::metrics::InventoryLabels {
                cluster: name.clone(),
                product: acc.product.clone(),
            })
            .set(acc.count);
    }
    if !observed.failed {
        ctx.backoff.reset(&name);
    }
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(requeue))
}

/// Events for what a person watching the cluster wants to know: Ready flipping or changing
/// reason, the inventory changing, provisioning moving to another phase.
async fn record_transitions(
    ctx: &Context,
    cluster: &BudCluster,
    previous: &BudClusterStatus,
    status: &BudClusterStatus,
) {
    let old_ready = find_condition(&previous.conditions, READY);
    let new_ready = find_condition(&status.conditions, READY);
    if let Some(new) = new_ready
        && old_ready.is_none_or(|old| old.status != new.status || old.reason != new.reason)
    {
        // Expected steps on the way to Ready are Normal; anything that needs a person, Warning.
        let (type_, reason) = match (new.status.as_str(), new.reason.as_str()) {
            ("True", _) => (EventType::Normal, "Ready"),
            (_, r @ ("Connecting" | "Provisioning" | "Deleting")) => (EventType::Normal, r),
            (_, r) => (EventType::Warning, r),
        };
        publish(ctx, cluster, type_, reason, "Connect", new.message.clone()).await;
    }
    let old_phase = previous.provisioning.as_ref().map(|p| p.phase);
    if let Some(p) = &status.provisioning
        && old_phase != Some(p.phase)
    {
        let type_ = if p.phase == bud_crds::budcluster::ProvisioningPhase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            cluster,
            type_,
            &format!("{:?}", p.phase),
            "Provision",
            p.message.clone().unwrap_or_default(),
        )
        .await;
    }
    if inventory_changed(previous, status) && new_ready.is_some_and(|c| c.status == "True") {
        let note = format!(
            "{}; CPU-only nodes: {}",
            status.accelerator_summary.clone().unwrap_or_default(),
            status.cpu.as_ref().map_or(0, |c| c.nodes)
        );
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "InventoryChanged",
            "ReadNodes",
            note,
        )
        .await;
    }
}

pub(crate) async fn publish(
    ctx: &Context,
    cluster: &BudCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(error = %err, "could not record event");
    }
}

/// Requeues a failed reconcile with per-object exponential backoff.
pub fn error_policy(cluster: Arc<BudCluster>, error: &Error, state: Arc<State>) -> Action {
    state
        .ctx
        .requeue_after_error(CONTROLLER, &cluster.name_any(), error)
}

/// Runs the controller until `shutdown` resolves, with settings from the environment
/// ([`Settings::from_env`]).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    run_with(ctx, Settings::from_env(), shutdown).await
}

impl Settings {
    /// Settings from `AWS_ENDPOINT_URL`, `BUD_AZURE_AUTHORITY_URL`,
    /// `BUD_AZURE_RESOURCE_MANAGER_URL` and `BUD_KUBECONFIG_SECRET_NAMESPACE` (else
    /// `POD_NAMESPACE`, else `default`).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let defaults = Self::default();
        Self {
            aws_endpoint_url: var("AWS_ENDPOINT_URL"),
            azure_authority_url: var("BUD_AZURE_AUTHORITY_URL")
                .unwrap_or(defaults.azure_authority_url),
            azure_resource_manager_url: var("BUD_AZURE_RESOURCE_MANAGER_URL")
                .unwrap_or(defaults.azure_resource_manager_url),
            kubeconfig_secret_namespace: var("BUD_KUBECONFIG_SECRET_NAMESPACE")
                .or_else(|| var("POD_NAMESPACE"))
                .unwrap_or(defaults.kubeconfig_secret_namespace),
        }
    }
}

/// Runs the controller with explicit settings until `shutdown` resolves.
pub async fn run_with(
    ctx: Arc<Context>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (node_store, node_writer) = reflector::store::<Node>();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|node| node.managed_fields_mut().clear())
        .reflect(node_writer)
        .touched_objects();
    let clusters: Api<BudCluster> = Api::all(client);
    let controller = Controller::new(clusters, watcher::Config::default())
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)));
    let cluster_store = controller.store();
    // Any node change may change every Local cluster's inventory.
    let local_store = cluster_store.clone();
    let local_clusters = move |_node: Node| {
        local_store
            .state()
            .into_iter()
            .filter(|c| c.spec.type_ == ClusterType::Local)
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect::<Vec<_>>()
    };
    // Connection tasks of remote clusters poke their BudCluster through this channel.
    let (remote_tx, remote_rx) = futures::channel::mpsc::unbounded();
    let state = Arc::new(State {
        ctx,
        nodes: node_store,
        connections: kubeconfig::Connections::new(remote_tx),
        settings,
    });
    // Deleted BudClusters get no reconcile; close their connections here.
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                if cluster_store.state().is_empty() && !state.connections.is_empty() {
                    // The store may not be filled yet right after a restart; only sweep
                    // once it answers.
                    if cluster_store.wait_until_ready().await.is_err() {
                        continue;
                    }
                }
                let names: HashSet<String> = cluster_store
                    .state()
                    .iter()
                    .filter(|c| c.metadata.deletion_timestamp.is_none())
                    .map(|c| c.name_any())
                    .collect();
                state.connections.retain(&names);
            }
        })
    };
    controller
        .watches_stream(node_events, local_clusters)
        .reconcile_on(remote_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "budcluster controller event");
            }
        })
        .await;
    sweeper.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::BudClusterSpec;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], capacity: &[(&str, &str)], ready: bool) -> Node {
        let resources: BTreeMap<String, Quantity> = capacity
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                capacity: Some(resources.clone()),
                allocatable: Some(resources),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn h100(name: &str, ready: bool) -> Node {
        node(
            name,
            &[
                ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
                ("nvidia.com/gpu.memory", "81559"),
            ],
            &[("cpu", "192"), ("memory", "2Ti"), ("nvidia.com/gpu", "8")],
            ready,
        )
    }

    fn cluster(type_: ClusterType) -> BudCluster {
        let mut c = BudCluster::new(
            "local",
            BudClusterSpec {
                type_,
                kubeconfig: None,
                eks: None,
                aks: None,
                workload_namespace: None,
                accelerator_prices: BTreeMap::new(),
            },
        );
        c.metadata.generation = Some(3);
        c
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn sums_accelerators_by_product_and_cpu_only_nodes() {
        let nodes = vec![
            h100("h100-0", true),
            h100("h100-1", true),
            node(
                "l4-0",
                &[("nvidia.com/gpu.product", "NVIDIA-L4")],
                &[("nvidia.com/gpu", "1")],
                true,
            ),
            node(
                "cpu-0",
                &[("feature.node.kubernetes.io/cpu-model.name", "Xeon")],
                &[("cpu", "32"), ("memory", "128Gi")],
                true,
            ),
            node("cpu-1", &[], &[("cpu", "15500m"), ("memory", "64Gi")], true),
        ];
        let inv = inventory_from_nodes(&nodes);
        assert_eq!(inv.node_count, 5);
        assert_eq!(inv.accelerators.len(), 2);
        let h = &inv.accelerators[0];
        assert_eq!(
            (
                h.product.as_str(),
                h.count,
                h.allocatable,
                h.nodes,
                h.max_per_node
            ),
            ("NVIDIA-H100-80GB-HBM3", 16, 16, 2, 8)
        );
        assert_eq!(
            (h.vendor.as_str(), h.memory_mib, h.resource_name.as_str()),
            ("NVIDIA", Some(81559), "nvidia.com/gpu")
        );
        assert_eq!(inv.accelerators[1].product, "NVIDIA-L4");
        assert_eq!(inv.accelerators[1].memory_mib, None);
        let cpu = inv.cpu.unwrap();
        assert_eq!(
            (cpu.nodes, cpu.cpu.as_str(), cpu.memory.as_str()),
            (2, "47500m", "192Gi")
        );
        assert_eq!(cpu.models, ["Xeon"]);
    }

    #[test]
    fn unready_or_cordoned_nodes_count_in_capacity_not_allocatable() {
        let mut cordoned = h100("h100-1", true);
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let nodes = vec![h100("h100-0", false), cordoned];
        let inv = inventory_from_nodes(&nodes);
        let h = &inv.accelerators[0];
        assert_eq!((h.count, h.allocatable, h.max_per_node), (16, 0, 0));
        assert_eq!(inv.ready_node_count, 1);
    }

    #[test]
    fn gpu_without_product_label_is_still_counted() {
        let nodes = vec![
            node("g", &[], &[("nvidia.com/gpu", "4")], true),
            node("a", &[], &[("amd.com/gpu", "8")], true),
        ];
        let inv = inventory_from_nodes(&nodes);
        let products: Vec<_> = inv
            .accelerators
            .iter()
            .map(|a| (a.vendor.as_str(), a.product.as_str(), a.count))
            .collect();
        assert_eq!(
            products,
            [("AMD", "AMD-GPU", 8), ("NVIDIA", "NVIDIA-GPU", 4)]
        );
        assert!(inv.cpu.is_none());
    }

    #[test]
    fn local_status_reports_inventory_and_is_stable_when_nothing_changes() {
        let observed = Observed {
            inventory: Some(inventory_from_nodes(&[h100("h100-0", true)])),
            kubernetes_version: Some("v1.33.13".into()),
            ..Default::default()
        };
        let mut c = cluster(ClusterType::Local);
        let first = plan_status(&c, &observed, at(100));
        assert_eq!(
            first.accelerator_summary.as_deref(),
            Some("8x NVIDIA-H100-80GB-HBM3")
        );
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.last_sync_time, Some(Time(at(100))));
        let ready = &first.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "True", "InventoryCurrent")
        );

        c.status = Some(first.clone());
        let second = plan_status(&c, &observed, at(200));
        assert_eq!(
            second, first,
            "an unchanged inventory must give an identical status"
        );
        assert!(!status_changed(&first, &second));

        let grown = Observed {
            inventory: Some(inventory_from_nodes(&[
                h100("h100-0", true),
                h100("h100-1", true),
            ])),
            ..observed
        };
        let third = plan_status(&c, &grown, at(300));
        assert!(status_changed(&first, &third));
        assert_eq!(third.last_sync_time, Some(Time(at(300))));
        assert_eq!(
            third.conditions[0].last_transition_time.0,
            at(100),
            "Ready stayed True"
        );
    }

    #[test]
    fn a_blocked_cluster_keeps_its_last_inventory_with_the_reason() {
        let mut c = cluster(ClusterType::Kubeconfig);
        let observed = Observed {
            inventory: Some(inventory_from_nodes(&[h100("h100-0", true)])),
            kubernetes_version: Some("v1.33.13".into()),
            ..Default::default()
        };
        let ready = plan_status(&c, &observed, at(100));
        c.status = Some(ready.clone());
        let down = Observed {
            blocker: Some(Blocker::new(
                "Unreachable",
                "cannot reach https://x: refused",
            )),
            ..Default::default()
        };
        let status = plan_status(&c, &down, at(200));
        let cond = &status.conditions[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(cond.last_transition_time.0, at(200));
        assert_eq!(
            status.accelerators, ready.accelerators,
            "last inventory kept"
        );
        assert_eq!(status.kubernetes_version.as_deref(), Some("v1.33.13"));
        assert_eq!(status.last_sync_time, Some(Time(at(100))));
        assert!(status_changed(&ready, &status));

        c.status = Some(status.clone());
        let back = plan_status(&c, &observed, at(300));
        assert_eq!(back.conditions[0].status, "True");
        assert_eq!(back.conditions[0].last_transition_time.0, at(300));
        assert_eq!(
            back.last_sync_time,
            Some(Time(at(100))),
            "same inventory: no new sync time"
        );
    }

    #[test]
    fn never_connected_clusters_show_an_empty_inventory() {
        let status = plan_status(
            &cluster(ClusterType::Kubeconfig),
            &Observed {
                blocker: Some(Blocker::new("Connecting", "connecting")),
                ..Default::default()
            },
            at(1),
        );
        assert_eq!(status.node_count, 0);
        assert!(status.accelerators.is_empty());
        assert_eq!(status.accelerator_summary, None);
        assert_eq!(status.conditions[0].reason, "Connecting");
    }
}
