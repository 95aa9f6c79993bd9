//! BudCluster `type: Kubeconfig` end to end, with two local control planes: the management
//! cluster (`KUBECONFIG`) and a workload cluster with another GPU fleet and pod range, started
//! by this test. The workload cluster is onboarded through a kubeconfig Secret; its inventory
//! lands in status; it is stopped (Ready=False, Unreachable) and started again (Ready, same
//! inventory). Next to it: a cluster whose credentials lack permissions (each named), one
//! whose token is wrong until the Secret is rotated, and one that never answers — which must
//! not slow the others down.

use bud_crds::budcluster::{AcceleratorInventory, ClusterType, KubeconfigSource};
use bud_crds::common::NamespacedSecretKeyRef;
use bud_crds::conditions::find_condition;
use bud_crds::{BudCluster, BudClusterSpec};
use bud_e2e::control_plane::LocalControlPlane;
use bud_e2e::fleet::Fleet;
use bud_e2e::harness::{self, OperatorProcess, TestNamespace, run_tool, wait_until};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const TEST_LABEL: &str = "bud.studio/e2e-test";

type InventoryKey = BTreeMap<String, (i64, i32, i64, i64)>;

/// Expected (count, nodes, maxPerNode, memoryMiB) per product, computed from a fleet.
fn expected_inventory(fleet: &Fleet) -> InventoryKey {
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

fn observed_inventory(accelerators: &[AcceleratorInventory]) -> InventoryKey {
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

fn ready_of(cluster: &BudCluster) -> (String, String, String) {
    let status = cluster.status.clone().unwrap_or_default();
    find_condition(&status.conditions, "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Waits until the BudCluster's Ready condition has `status` and `reason`.
async fn wait_for_ready(
    api: &Api<BudCluster>,
    name: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> anyhow::Result<BudCluster> {
    let what = format!("BudCluster {name} to be Ready={status} ({reason})");
    wait_until(&what, timeout, || async {
        let cluster = api.get(name).await?;
        let (s, r, _) = ready_of(&cluster);
        Ok((s == status && r == reason).then_some(cluster))
    })
    .await
}

fn kubeconfig_cluster(name: &str, ns: &str, secret: &str) -> BudCluster {
    let mut cluster = BudCluster::new(
        name,
        BudClusterSpec {
            type_: ClusterType::Kubeconfig,
            kubeconfig: Some(KubeconfigSource {
                secret_ref: NamespacedSecretKeyRef {
                    namespace: ns.to_owned(),
                    name: secret.to_owned(),
                    key: "kubeconfig".to_owned(),
                },
                context: None,
            }),
            eks: None,
            aks: None,
            workload_namespace: None,
            accelerator_prices: BTreeMap::new(),
        },
    );
    cluster.metadata.labels = Some(BTreeMap::from([(TEST_LABEL.to_owned(), ns.to_owned())]));
    cluster
}

async fn put_kubeconfig_secret(
    client: &Client,
    ns: &str,
    name: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "kubeconfig".to_owned(),
            kubeconfig.to_owned(),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(harness::FIELD_MANAGER).force(),
            &Patch::Apply(&serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": secret.metadata,
                "stringData": secret.string_data,
            })),
        )
        .await?;
    Ok(())
}

/// A token of a ServiceAccount on the workload cluster that may only read nodes.
async fn nodes_only_token(workload: &Client) -> anyhow::Result<String> {
    let name = "bud-nodes-only";
    let params = PatchParams::apply(harness::FIELD_MANAGER).force();
    Api::<ServiceAccount>::namespaced(workload.clone(), "default")
        .patch(
            name,
            &params,
            &Patch::Apply(&serde_json::json!({
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}
            })),
        )
        .await?;
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut role_json = serde_json::to_value(&role)?;
    role_json["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    role_json["kind"] = "ClusterRole".into();
    Api::<ClusterRole>::all(workload.clone())
        .patch(name, &params, &Patch::Apply(&role_json))
        .await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some("default".into()),
            ..Default::default()
        }]),
    };
    let mut binding_json = serde_json::to_value(&binding)?;
    binding_json["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    binding_json["kind"] = "ClusterRoleBinding".into();
    Api::<ClusterRoleBinding>::all(workload.clone())
        .patch(name, &params, &Patch::Apply(&binding_json))
        .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(workload.clone(), "default")
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// A TCP server on loopback that accepts connections and never answers: a cluster that
/// hangs rather than refuses.
fn silent_server() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(port)
}

#[tokio::test]
async fn a_second_control_plane_is_onboarded_through_a_kubeconfig_secret() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bc-kubeconfig").await?;
    // The scenario runs as a task so that a failed assertion (a panic) still reaches the
    // cleanup below; the workload control plane's guard stops it either way.
    let result = {
        let (client, ns) = (client.clone(), ns.name.clone());
        tokio::spawn(async move { scenario(&client, &ns).await })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("scenario panicked: {panic}")))
    };
    let api: Api<BudCluster> = Api::all(client.clone());
    let _ = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{TEST_LABEL}={}", ns.name)),
        )
        .await;
    ns.delete().await?;
    result
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    // The workload cluster: its own pod range (127.2.x) and service range.
    let plane = LocalControlPlane::start(
        &format!("work-{ns}"),
        &[
            ("BUD_DEFAULT_POD_CIDR", "127.2.0.1/16"),
            ("BUD_SERVICE_CIDR", "10.97.0.0/16"),
        ],
    )?;
    let workload = plane.client().await?;
    let fleet_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/fleet-workload.yaml");
    let fleet = Fleet::from_yaml(&std::fs::read_to_string(&fleet_path)?)?;
    harness::apply_fleet(&workload, &fleet).await?;
    let expected = expected_inventory(&fleet);

    let admin_kubeconfig = plane.self_contained_kubeconfig(None)?;
    put_kubeconfig_secret(client, ns, "work", &admin_kubeconfig).await?;
    let limited = plane.self_contained_kubeconfig(Some(&nodes_only_token(&workload).await?))?;
    put_kubeconfig_secret(client, ns, "limited", &limited).await?;
    let wrong = plane.self_contained_kubeconfig(Some("not-a-valid-token"))?;
    put_kubeconfig_secret(client, ns, "rotating", &wrong).await?;
    let silent_port = silent_server()?;
    let server_line = admin_kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap_or_default()
        .to_owned();
    let silent = admin_kubeconfig.replace(
        &server_line,
        &format!("    server: https://127.0.0.1:{silent_port}"),
    );
    put_kubeconfig_secret(client, ns, "silent", &silent).await?;

    let operator = OperatorProcess::start(&["--lease-namespace", ns])?;
    let api: Api<BudCluster> = Api::all(client.clone());
    let names: BTreeMap<&str, String> = ["work", "limited", "rotating", "silent"]
        .into_iter()
        .map(|s| (s, format!("{s}-{ns}")))
        .collect();
    // Clusters that never answer go first, several of them: they must not hold up the others.
    const SILENT_CLUSTERS: usize = 8;
    for i in 1..SILENT_CLUSTERS {
        api.create(
            &PostParams::default(),
            &kubeconfig_cluster(&format!("silent-{i}-{ns}"), ns, "silent"),
        )
        .await?;
    }
    for key in ["silent", "work", "limited", "rotating"] {
        api.create(
            &PostParams::default(),
            &kubeconfig_cluster(&names[key], ns, key),
        )
        .await?;
    }
    let created = Instant::now();

    let work = wait_until(
        "the workload cluster's inventory in status",
        Duration::from_secs(90),
        || async {
            let cluster = api.get(&names["work"]).await?;
            let status = cluster.status.clone().unwrap_or_default();
            let ready = ready_of(&cluster).0 == "True";
            // kwok gives a node default capacity until the fleet's own status lands, so wait
            // for the CPU-only capacity too.
            let cpu = status.cpu.as_ref().map(|c| (c.nodes, c.cpu.clone()));
            Ok((ready
                && observed_inventory(&status.accelerators) == expected
                && cpu == Some((2, "64".to_owned())))
            .then_some(cluster))
        },
    )
    .await?;
    let onboard_time = created.elapsed();
    let status = work.status.clone().unwrap();
    assert_eq!(status.node_count, 6);
    assert_eq!(status.ready_node_count, 6);
    assert_eq!(
        status.accelerator_summary.as_deref(),
        Some("8x NVIDIA-H200, 12x NVIDIA-L40S")
    );
    assert!(
        status
            .kubernetes_version
            .as_deref()
            .is_some_and(|v| v.starts_with("v1.33")),
        "{:?}",
        status.kubernetes_version
    );
    assert_eq!(
        status.cpu.as_ref().map(|c| (c.nodes, c.cpu.as_str())),
        Some((2, "64"))
    );

    let table = run_tool(
        "kubectl",
        &["get", "budclusters", &names["work"], "--no-headers"],
    )?;
    for column in [
        "Kubeconfig",
        "v1.33",
        " 6 ",
        "8x NVIDIA-H200, 12x NVIDIA-L40S",
        "True",
    ] {
        assert!(
            table.contains(column),
            "`kubectl get` lacks {column:?}: {table}"
        );
    }

    let silent_cluster = wait_for_ready(
        &api,
        &names["silent"],
        "False",
        "Unreachable",
        Duration::from_secs(60),
    )
    .await?;
    let message = ready_of(&silent_cluster).2;
    assert!(message.contains(&silent_port.to_string()), "{message}");
    for i in 1..SILENT_CLUSTERS {
        let name = format!("silent-{i}-{ns}");
        wait_for_ready(&api, &name, "False", "Unreachable", Duration::from_secs(30)).await?;
    }

    let limited_cluster = wait_for_ready(
        &api,
        &names["limited"],
        "False",
        "Unauthorized",
        Duration::from_secs(60),
    )
    .await?;
    let message = ready_of(&limited_cluster).2;
    for missing in [
        "create deployments.apps in namespace bud-workloads",
        "create services in namespace bud-workloads",
        "list pods in namespace bud-workloads",
    ] {
        assert!(
            message.contains(missing),
            "{missing:?} not named: {message}"
        );
    }
    assert!(!message.contains("list nodes"), "{message}");
    // Reading nodes is allowed, so its inventory is there despite the missing permissions.
    let limited_status = limited_cluster.status.clone().unwrap_or_default();
    assert_eq!(observed_inventory(&limited_status.accelerators), expected);

    let rotating = wait_for_ready(
        &api,
        &names["rotating"],
        "False",
        "Unauthorized",
        Duration::from_secs(60),
    )
    .await?;
    let message = ready_of(&rotating).2;
    assert!(message.contains("401"), "{message}");
    assert!(
        !message.contains("not-a-valid-token"),
        "token leaked: {message}"
    );
    // Rotate the credentials: the controller reconnects with the new ones.
    let rotated_at = Instant::now();
    put_kubeconfig_secret(client, ns, "rotating", &admin_kubeconfig).await?;
    wait_for_ready(
        &api,
        &names["rotating"],
        "True",
        "InventoryCurrent",
        Duration::from_secs(90),
    )
    .await?;
    let rotation_time = rotated_at.elapsed();

    // Stop the workload cluster: Ready=False, Unreachable, the last inventory kept.
    let stopping_at = Instant::now();
    plane.stop()?;
    let stop_time = stopping_at.elapsed();
    let stopped_at = Instant::now();
    let down = wait_for_ready(
        &api,
        &names["work"],
        "False",
        "Unreachable",
        Duration::from_secs(60),
    )
    .await?;
    let detect_time = stopped_at.elapsed();
    let message = ready_of(&down).2;
    assert!(message.contains("cannot reach the API server"), "{message}");
    let down_status = down.status.clone().unwrap_or_default();
    assert_eq!(observed_inventory(&down_status.accelerators), expected);

    // Start it again with its state: Ready, the same inventory.
    let restarted_at = Instant::now();
    plane.restart()?;
    let start_time = restarted_at.elapsed();
    let back = wait_until(
        "the workload cluster to be Ready again with the same inventory",
        Duration::from_secs(90),
        || async {
            let cluster = api.get(&names["work"]).await?;
            let status = cluster.status.clone().unwrap_or_default();
            let ready = ready_of(&cluster).0 == "True";
            Ok((ready && observed_inventory(&status.accelerators) == expected).then_some(cluster))
        },
    )
    .await?;
    let recover_time = restarted_at.elapsed();
    assert_eq!(back.status.clone().unwrap_or_default().node_count, 6);

    // The transitions were recorded as Events on the BudCluster.
    let reasons: Vec<String> = harness::events_regarding(client, "default", &names["work"])
        .await?
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Ready", "Unreachable"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }

    eprintln!(
        "measured: onboarded (Ready with inventory) {onboard_time:.1?} after creation with \
         {SILENT_CLUSTERS} silent clusters created before it; rotated credentials picked up in {rotation_time:.1?}; \
         down.sh took {stop_time:.1?}, Unreachable {detect_time:.1?} after it returned; control plane restart took {start_time:.1?}, \
         Ready again {recover_time:.1?} after it began"
    );
    operator.stop();
    drop(plane);
    Ok(())
}
