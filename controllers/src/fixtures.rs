//! Test fixtures shared by the controllers' unit tests.

use bud_crds::BudCluster;
use bud_crds::budcluster::{AcceleratorInventory, BudClusterSpec, BudClusterStatus, ClusterType};
use bud_crds::conditions::{READY, new_condition};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A Ready `Local` BudCluster named `local` with 16 H100s on two nodes of eight.
pub fn local_cluster() -> Arc<BudCluster> {
    let mut c = BudCluster::new(
        "local",
        BudClusterSpec {
            type_: ClusterType::Local,
            kubeconfig: None,
            eks: None,
            aks: None,
            workload_namespace: None,
            accelerator_prices: BTreeMap::new(),
        },
    );
    c.status = Some(BudClusterStatus {
        conditions: vec![new_condition(
            READY,
            true,
            "InventoryCurrent",
            "",
            None,
            Timestamp::UNIX_EPOCH,
        )],
        accelerators: vec![AcceleratorInventory {
            vendor: "NVIDIA".into(),
            product: "NVIDIA-H100-80GB-HBM3".into(),
            resource_name: "nvidia.com/gpu".into(),
            memory_mib: Some(81559),
            count: 16,
            allocatable: 16,
            nodes: 2,
            max_per_node: 8,
        }],
        ..Default::default()
    });
    Arc::new(c)
}
