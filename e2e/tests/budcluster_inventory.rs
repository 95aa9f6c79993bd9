//! The operator's BudCluster controller on the local control plane: the `Local` cluster's
//! inventory matches the fleet file and follows nodes being added and removed.

use bud_crds::budcluster::{AcceleratorInventory, ClusterType};
use bud_crds::{BudCluster, BudClusterSpec};
use bud_e2e::fleet::Fleet;
use bud_e2e::harness::{self, OperatorProcess, TestNamespace, wait_until};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// Expected (count, nodes, maxPerNode, memoryMiB) per product, computed from a fleet.
fn expected_inventory(fleet: &Fleet) -> BTreeMap<String, (i64, i32, i64, i64)> {
    let mut expected = BTreeMap::new();
    for pool in &fleet.pools {
        if let Some(acc) = &pool.accelerator {
            let entry = expected
                .entry(acc.product.clone())
                .or_insert((0, 0, 0, acc.memory_mib));
            entry.0 += acc.count * i64::from(pool.count);
            entry.1 += pool.count as i32;
            entry.2 = entry.2.max(acc.count);
        }
    }
    expected
}

fn observed_inventory(
    accelerators: &[AcceleratorInventory],
) -> BTreeMap<String, (i64, i32, i64, i64)> {
    accelerators
        .iter()
        .map(|a| {
            (
                a.product.clone(),
                (a.count, a.nodes, a.max_per_node, a.memory_mib.unwrap_or(0)),
            )
        })
        .collect()
}

async fn wait_for_inventory(
    api: &Api<BudCluster>,
    name: &str,
    expected: &BTreeMap<String, (i64, i32, i64, i64)>,
    what: &str,
) -> anyhow::Result<BudCluster> {
    wait_until(what, Duration::from_secs(60), || async {
        let cluster = api.get(name).await?;
        let status = cluster.status.clone().unwrap_or_default();
        let ready = bud_crds::conditions::is_true(&status.conditions, "Ready");
        // kwok gives a node default capacity until the fleet's own status lands: wait for
        // the CPU-only capacity of the fleet file too.
        let cpu_settled = status.cpu.as_ref().is_some_and(|c| c.cpu == "32");
        Ok(
            (ready && cpu_settled && &observed_inventory(&status.accelerators) == expected)
                .then_some(cluster),
        )
    })
    .await
}

#[tokio::test]
async fn local_inventory_matches_the_fleet_and_follows_node_changes() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let fleet = harness::default_fleet()?;
    harness::apply_fleet(&client, &fleet).await?;
    // The namespace holds the operator's leader-election lease for this test.
    let ns = TestNamespace::create(&client, "inventory").await?;
    let operator = OperatorProcess::start(&["--lease-namespace", &ns.name])?;

    let name = format!("local-{}", ns.name);
    let api: Api<BudCluster> = Api::all(client.clone());
    let spec = BudClusterSpec {
        type_: ClusterType::Local,
        kubeconfig: None,
        eks: None,
        aks: None,
        workload_namespace: None,
        accelerator_prices: BTreeMap::new(),
    };
    api.create(&PostParams::default(), &BudCluster::new(&name, spec))
        .await?;

    let mut expected = expected_inventory(&fleet);
    let cluster = wait_for_inventory(
        &api,
        &name,
        &expected,
        "the inventory to match the fleet file",
    )
    .await?;
    let status = cluster.status.unwrap();
    assert_eq!(
        status.node_count as u32,
        fleet.pools.iter().map(|p| p.count).sum::<u32>()
    );
    assert_eq!(
        status
            .kubernetes_version
            .as_deref()
            .map(|v| v.starts_with("v1.")),
        Some(true)
    );
    let cpu = status.cpu.expect("the fleet has a CPU-only node");
    assert_eq!(cpu.nodes, 1);
    assert_eq!(cpu.cpu, "32");
    assert_eq!(status.observed_generation, Some(1));

    // Add a node with one more H100 board, then remove it.
    let h100 = fleet.pools.iter().find(|p| p.name == "h100").unwrap();
    let extra = h100.node(90 + (std::process::id() % 9), "127.1.250.0/24");
    let extra_name = extra.metadata.name.clone().unwrap();
    harness::apply_node(&client, &extra).await?;
    let product = h100.accelerator.as_ref().unwrap().product.clone();
    let entry = expected.get_mut(&product).unwrap();
    entry.0 += 8;
    entry.1 += 1;
    wait_for_inventory(
        &api,
        &name,
        &expected,
        "the inventory to include the added node",
    )
    .await?;

    Api::<Node>::all(client.clone())
        .delete(&extra_name, &DeleteParams::default())
        .await?;
    let entry = expected.get_mut(&product).unwrap();
    entry.0 -= 8;
    entry.1 -= 1;
    wait_for_inventory(
        &api,
        &name,
        &expected,
        "the inventory to drop the removed node",
    )
    .await?;

    // The operator serves metrics about what it did.
    let metrics = reqwest_free_get(&operator.metrics_addr, "/metrics")?;
    assert!(
        metrics.contains("bud_operator_reconciles_total{controller=\"budcluster\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("bud_operator_leader 1"), "{metrics}");

    operator.stop();
    api.delete(&name, &DeleteParams::default()).await?;
    ns.delete().await
}

/// A plain HTTP/1.0 GET, enough for the operator's metrics endpoint.
fn reqwest_free_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}
