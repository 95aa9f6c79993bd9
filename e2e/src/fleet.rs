//! The declarative fleet file: pools of simulated nodes, turned into kwok-managed `Node`
//! objects with the labels and capacity that GPU feature discovery, node-feature-discovery
//! and cloud providers put on real nodes.

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Annotation kwok selects the nodes it manages by (see `e2e/cluster/up.sh`).
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Label on every node this tooling registers, so they can be listed and removed.
pub const FLEET_LABEL: &str = "bud.studio/simulated-fleet";

/// A fleet file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    /// First two octets of pod addresses; node n gets `<prefix>.<n+1>.0/24`.
    pub pod_cidr_prefix: String,
    /// Node pools, in order.
    pub pools: Vec<NodePool>,
}

/// Identical nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePool {
    /// Node names are `<name>-<index>`.
    pub name: String,
    /// Number of nodes.
    pub count: u32,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// Allocatable CPU (a quantity).
    pub cpu: String,
    /// Allocatable memory (a quantity).
    pub memory: String,
    /// CPU model (node-feature-discovery `cpu-model` label), for CPU-only pools.
    #[serde(default)]
    pub cpu_model: Option<String>,
    /// Accelerators on each node.
    #[serde(default)]
    pub accelerator: Option<PoolAccelerator>,
}

/// The accelerators of each node in a pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolAccelerator {
    /// `NVIDIA` (the only vendor this file models labels for today).
    pub vendor: String,
    /// `nvidia.com/gpu.product`.
    pub product: String,
    /// `nvidia.com/gpu.family`.
    pub family: String,
    /// `nvidia.com/gpu.memory`, MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// GPUs per node: `nvidia.com/gpu.count` and the `nvidia.com/gpu` capacity.
    pub count: i64,
}

impl Fleet {
    /// Reads a fleet file.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let fleet: Fleet = serde_yaml::from_str(text)?;
        for pool in &fleet.pools {
            if let Some(acc) = &pool.accelerator {
                anyhow::ensure!(
                    acc.vendor == "NVIDIA",
                    "pool {}: accelerator.vendor {:?} is not supported; use NVIDIA",
                    pool.name,
                    acc.vendor
                );
            }
        }
        Ok(fleet)
    }

    /// The nodes of the fleet, in file order.
    pub fn nodes(&self) -> Vec<Node> {
        let mut nodes = Vec::new();
        for pool in &self.pools {
            for index in 0..pool.count {
                let cidr = format!("{}.{}.0/24", self.pod_cidr_prefix, nodes.len() + 1);
                nodes.push(pool.node(index, &cidr));
            }
        }
        nodes
    }
}

impl NodePool {
    /// The `index`-th node of this pool with pods in `pod_cidr`.
    pub fn node(&self, index: u32, pod_cidr: &str) -> Node {
        let name = format!("{}-{}", self.name, index);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            ("type".to_owned(), "kwok".to_owned()),
            ("topology.kubernetes.io/zone".to_owned(), self.zone.clone()),
            (
                "node.kubernetes.io/instance-type".to_owned(),
                self.instance_type.clone(),
            ),
            (FLEET_LABEL.to_owned(), self.name.clone()),
        ]);
        let mut capacity = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.cpu.clone())),
            ("memory".to_owned(), Quantity(self.memory.clone())),
            ("pods".to_owned(), Quantity("110".to_owned())),
        ]);
        if let Some(model) = &self.cpu_model {
            labels.insert(
                "feature.node.kubernetes.io/cpu-model.vendor_id".to_owned(),
                vendor_of(model).to_owned(),
            );
            labels.insert(
                "feature.node.kubernetes.io/cpu-model.name".to_owned(),
                model.clone(),
            );
        }
        if let Some(acc) = &self.accelerator {
            labels.extend([
                ("nvidia.com/gpu.present".to_owned(), "true".to_owned()),
                ("nvidia.com/gpu.product".to_owned(), acc.product.clone()),
                ("nvidia.com/gpu.family".to_owned(), acc.family.clone()),
                (
                    "nvidia.com/gpu.memory".to_owned(),
                    acc.memory_mib.to_string(),
                ),
                ("nvidia.com/gpu.count".to_owned(), acc.count.to_string()),
                (
                    "nvidia.com/gpu.deploy.device-plugin".to_owned(),
                    "true".to_owned(),
                ),
                (
                    "feature.node.kubernetes.io/pci-10de.present".to_owned(),
                    "true".to_owned(),
                ),
            ]);
            capacity.insert("nvidia.com/gpu".to_owned(), Quantity(acc.count.to_string()));
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    KWOK_ANNOTATION.to_owned(),
                    "fake".to_owned(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(pod_cidr.to_owned()),
                pod_cidrs: Some(vec![pod_cidr.to_owned()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(capacity.clone()),
                capacity: Some(capacity),
                ..Default::default()
            }),
        }
    }
}

fn vendor_of(cpu_model: &str) -> &'static str {
    if cpu_model.starts_with("AMD") {
        "AMD"
    } else {
        "Intel"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = include_str!("../cluster/fleet.yaml");

    #[test]
    fn the_default_fleet_has_the_documented_nodes() {
        let fleet = Fleet::from_yaml(FLEET).unwrap();
        let nodes = fleet.nodes();
        let names: Vec<_> = nodes
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["h100-0", "h100-1", "a100-0", "l4-0", "l4-1", "cpu-0"]
        );
        let h100 = &nodes[0];
        let labels = h100.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(labels["nvidia.com/gpu.count"], "8");
        let capacity = h100.status.as_ref().unwrap().capacity.as_ref().unwrap();
        assert_eq!(capacity["nvidia.com/gpu"].0, "8");
        assert_eq!(
            h100.spec.as_ref().unwrap().pod_cidr.as_deref(),
            Some("127.1.1.0/24")
        );
        let cpu = &nodes[5];
        assert!(
            !cpu.status
                .as_ref()
                .unwrap()
                .capacity
                .as_ref()
                .unwrap()
                .contains_key("nvidia.com/gpu")
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = Fleet::from_yaml("podCidrPrefix: '127.1'\npools: []\ngpus: 3\n").unwrap_err();
        assert!(err.to_string().contains("gpus"), "{err}");
    }
}
