//! `BudCluster`: a cluster to run models on — the one the operator runs in, an existing one
//! reached through a kubeconfig, or one the operator creates on AWS EKS or Azure AKS — and the
//! accelerator inventory read from its nodes.

use crate::common::{DECIMAL_PATTERN, NamespacedSecretKeyRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A cluster to run models on, and its accelerator inventory.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "BudCluster",
    status = "BudClusterStatus",
    shortname = "bc",
    category = "bud",
    doc = "A cluster to run models on: the local one, an existing one reached through a kubeconfig Secret, or one created on AWS EKS or Azure AKS. Its status holds the accelerator inventory read from the nodes.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.kubernetesVersion"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodeCount"),
    printcolumn(
        name = "GPUs",
        type_ = "string",
        json_path = ".status.acceleratorSummary"
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'Kubeconfig' || has(self.kubeconfig)").message("spec.kubeconfig is required when spec.type is Kubeconfig").field_path(".kubeconfig"))]
#[x_kube(validation = Rule::new("self.type == 'Kubeconfig' || !has(self.kubeconfig)").message("spec.kubeconfig is only allowed when spec.type is Kubeconfig").field_path(".kubeconfig"))]
#[x_kube(validation = Rule::new("self.type != 'EKS' || has(self.eks)").message("spec.eks is required when spec.type is EKS").field_path(".eks"))]
#[x_kube(validation = Rule::new("self.type == 'EKS' || !has(self.eks)").message("spec.eks is only allowed when spec.type is EKS").field_path(".eks"))]
#[x_kube(validation = Rule::new("self.type != 'AKS' || has(self.aks)").message("spec.aks is required when spec.type is AKS").field_path(".aks"))]
#[x_kube(validation = Rule::new("self.type == 'AKS' || !has(self.aks)").message("spec.aks is only allowed when spec.type is AKS").field_path(".aks"))]
pub struct BudClusterSpec {
    /// How the operator reaches the cluster: `Local` (the cluster the operator runs in),
    /// `Kubeconfig` (an existing cluster), `EKS` or `AKS` (created and owned by the operator).
    /// Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type is immutable; create a new BudCluster instead"))]
    pub type_: ClusterType,
    /// The existing cluster's kubeconfig; required for `type: Kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<KubeconfigSource>,
    /// The EKS cluster to create; required for `type: EKS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks: Option<EksClusterSpec>,
    /// The AKS cluster to create; required for `type: AKS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aks: Option<AksClusterSpec>,
    /// Namespace in this cluster where model workloads are created. Defaults to the
    /// ModelDeployment's own namespace when it is the local cluster, else `bud-workloads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub workload_namespace: Option<String>,
    /// Price per accelerator per hour in US dollars, by accelerator product as it appears in
    /// status (e.g. `NVIDIA-H100-80GB-HBM3: "2.49"`); overrides the simulator's list prices.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "pattern": DECIMAL_PATTERN}))]
    pub accelerator_prices: BTreeMap<String, String>,
}

/// How the operator reaches a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClusterType {
    /// The cluster the operator runs in.
    Local,
    /// An existing cluster reached through a kubeconfig held in a Secret.
    Kubeconfig,
    /// A cluster the operator creates and owns on AWS Elastic Kubernetes Service.
    #[serde(rename = "EKS")]
    Eks,
    /// A cluster the operator creates and owns on Azure Kubernetes Service.
    #[serde(rename = "AKS")]
    Aks,
}

impl ClusterType {
    /// The value as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::Local => "Local",
            ClusterType::Kubeconfig => "Kubeconfig",
            ClusterType::Eks => "EKS",
            ClusterType::Aks => "AKS",
        }
    }
}

/// Where an existing cluster's kubeconfig lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeconfigSource {
    /// The Secret key holding the kubeconfig file.
    pub secret_ref: NamespacedSecretKeyRef,
    /// Context to use; the kubeconfig's current context when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub context: Option<String>,
}

/// An AWS EKS cluster and its node groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EksClusterSpec {
    /// AWS region, e.g. `us-east-1`. Immutable.
    #[schemars(regex(pattern = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.eks.region is immutable"))]
    pub region: String,
    /// Kubernetes version, e.g. `"1.33"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^1\.[0-9]{2}$"))]
    pub kubernetes_version: Option<String>,
    /// ARN of the IAM role the EKS control plane assumes.
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: String,
    /// ARN of the IAM role the node groups' instances assume (with the
    /// `AmazonEKSWorkerNodePolicy`, `AmazonEC2ContainerRegistryReadOnly` and CNI policies).
    /// Defaults to `roleArn`, which then must also trust `ec2.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub node_role_arn: Option<String>,
    /// Subnets for the control plane and nodes (at least two, in different zones).
    #[schemars(length(min = 2, max = 16))]
    pub subnet_ids: Vec<String>,
    /// Additional security groups for the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub security_group_ids: Vec<String>,
    /// Managed node groups.
    #[schemars(length(min = 1, max = 30))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub node_groups: Vec<EksNodeGroup>,
    /// Tags on every AWS resource created for this cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,
    /// AWS credentials (keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
    /// `AWS_SESSION_TOKEN`); the operator's ambient AWS credential chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<NamespacedSecretName>,
}

/// An EKS managed node group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minSize <= self.maxSize").message("minSize must not exceed maxSize"))]
#[x_kube(validation = Rule::new("self.minSize <= self.desiredSize && self.desiredSize <= self.maxSize").message("desiredSize must lie between minSize and maxSize"))]
pub struct EksNodeGroup {
    /// Name of the node group.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
    )]
    pub name: String,
    /// EC2 instance types, e.g. `p5.48xlarge`.
    #[schemars(length(min = 1, max = 10))]
    pub instance_types: Vec<String>,
    /// AMI type, e.g. `AL2023_x86_64_NVIDIA` for GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_type: Option<String>,
    /// Smallest number of nodes.
    #[schemars(range(min = 0, max = 1000))]
    pub min_size: i32,
    /// Largest number of nodes.
    #[schemars(range(min = 1, max = 1000))]
    pub max_size: i32,
    /// Nodes wanted now; changes are applied to the node group.
    #[schemars(range(min = 0, max = 1000))]
    pub desired_size: i32,
    /// Root disk size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 20, max = 16384))]
    pub disk_size_gib: Option<i32>,
    /// Kubernetes labels on the nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes taints on the nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub taints: Vec<NodeTaint>,
}

/// A taint put on a provisioned node group's nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaint {
    /// Taint key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// Effect of a taint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A Secret by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretName {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An Azure AKS managed cluster and its node pools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AksClusterSpec {
    /// Azure subscription id (a GUID). Immutable.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.aks.subscriptionId is immutable"))]
    pub subscription_id: String,
    /// Resource group holding the cluster. Immutable.
    #[schemars(length(min = 1, max = 90))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.aks.resourceGroup is immutable"))]
    pub resource_group: String,
    /// Azure location, e.g. `eastus`. Immutable.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.aks.location is immutable"))]
    pub location: String,
    /// Kubernetes version, e.g. `"1.33"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^1\.[0-9]{2}(\.[0-9]+)?$"))]
    pub kubernetes_version: Option<String>,
    /// Node pools; the first is the system pool.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub node_pools: Vec<AksNodePool>,
    /// Service principal credentials (keys `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`).
    pub credentials_secret: NamespacedSecretName,
    /// Tags on the managed cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,
}

/// An AKS node pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || self.autoscaling.minCount <= self.autoscaling.maxCount").message("autoscaling.minCount must not exceed autoscaling.maxCount"))]
pub struct AksNodePool {
    /// Pool name: lowercase letters and digits, at most 12 characters (an AKS rule).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9]{0,11}$"))]
    pub name: String,
    /// VM size, e.g. `Standard_NC24ads_A100_v4`.
    #[schemars(length(min = 1, max = 64))]
    pub vm_size: String,
    /// Number of nodes (the initial count when autoscaling).
    #[schemars(range(min = 0, max = 1000))]
    pub count: i32,
    /// Cluster-autoscaler bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AksAutoscaling>,
    /// Kubernetes labels on the nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes taints on the nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub taints: Vec<NodeTaint>,
}

/// Cluster-autoscaler bounds of an AKS node pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AksAutoscaling {
    /// Fewest nodes.
    #[schemars(range(min = 0, max = 1000))]
    pub min_count: i32,
    /// Most nodes.
    #[schemars(range(min = 1, max = 1000))]
    pub max_count: i32,
}

/// What the operator observed of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudClusterStatus {
    /// `Ready` (the cluster is reachable and its inventory current) and, for provisioned
    /// clusters, `Provisioned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cluster's Kubernetes version, e.g. `v1.33.13`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Number of nodes.
    #[serde(default)]
    pub node_count: i32,
    /// Number of nodes whose `Ready` condition is `True`.
    #[serde(default)]
    pub ready_node_count: i32,
    /// Accelerators by product, sorted by product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accelerators: Vec<AcceleratorInventory>,
    /// One line for `kubectl get`, e.g. `16x NVIDIA-H100-80GB-HBM3, 2x NVIDIA-L4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_summary: Option<String>,
    /// Capacity of the nodes that have no accelerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuInventory>,
    /// Progress of creating or deleting an EKS or AKS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,
    /// Secret holding the kubeconfig of a cluster the operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<NamespacedSecretName>,
    /// When the inventory was last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// The accelerators of one product in a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorInventory {
    /// Vendor, e.g. `NVIDIA`, `AMD`, `Intel`.
    pub vendor: String,
    /// Product as the device plugin labels it, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub product: String,
    /// Extended resource that requests it, e.g. `nvidia.com/gpu`.
    pub resource_name: String,
    /// Memory of one accelerator in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Accelerators in the nodes' capacity.
    pub count: i64,
    /// Accelerators the nodes offer to pods (allocatable).
    pub allocatable: i64,
    /// Nodes carrying this product.
    pub nodes: i32,
    /// Most accelerators allocatable on one node; bounds tensor parallelism within a node.
    pub max_per_node: i64,
}

/// Capacity of nodes without accelerators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuInventory {
    /// Number of nodes without accelerators.
    pub nodes: i32,
    /// Allocatable CPU over those nodes, as a quantity (e.g. `96`).
    pub cpu: String,
    /// Allocatable memory over those nodes, as a quantity (e.g. `768Gi`).
    pub memory: String,
    /// CPU models seen on those nodes (from node-feature-discovery labels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// Progress of provisioning a managed cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    /// Current step.
    pub phase: ProvisioningPhase,
    /// Cloud identifier of the cluster (ARN or Azure resource id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    /// What is happening or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// The cloud's long-running operation being followed, e.g. the `Azure-AsyncOperation`
    /// URL of an AKS create, update or delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// Steps of provisioning a managed cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProvisioningPhase {
    #[default]
    Pending,
    CreatingCluster,
    CreatingNodeGroups,
    UpdatingNodeGroups,
    WritingKubeconfig,
    Active,
    DeletingNodeGroups,
    DeletingCluster,
    Failed,
}
