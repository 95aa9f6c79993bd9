//! BudCluster `type: AKS` through the operator binary against a loopback stand-in for Azure
//! AD and ARM (`bud_e2e::arm`): the managed cluster is created (PUT, long-running operation
//! followed), its admin kubeconfig fetched into a Secret — the stand-in hands out the
//! management cluster's own kubeconfig, so the connect step really connects and the cluster
//! turns Ready with an inventory — a node pool resized (a second PUT), and the BudCluster
//! deleted (DELETE, operation followed, finalizer released, Secret removed).

use bud_crds::budcluster::{
    AksAutoscaling, AksClusterSpec, AksNodePool, ClusterType, NamespacedSecretName,
    ProvisioningPhase,
};
use bud_crds::conditions::find_condition;
use bud_crds::{BudCluster, BudClusterSpec};
use bud_e2e::arm::{ACCESS_TOKEN, FakeArm};
use bud_e2e::control_plane::self_contained_kubeconfig;
use bud_e2e::harness::{self, OperatorProcess, TestNamespace, run_tool, wait_until};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000b0d0";

fn ready_of(cluster: &BudCluster) -> (String, String, String) {
    let status = cluster.status.clone().unwrap_or_default();
    find_condition(&status.conditions, "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn an_aks_cluster_is_created_connected_resized_and_deleted() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    harness::apply_fleet(&client, &harness::default_fleet()?).await?;
    let ns = TestNamespace::create(&client, "bc-aks").await?;
    let name = format!("aks-{}", ns.name);
    // The scenario runs as a task so that a failed assertion still reaches the cleanup.
    let result = {
        let (client, ns, name) = (client.clone(), ns.name.clone(), name.clone());
        tokio::spawn(async move { scenario(&client, &ns, &name).await })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("scenario panicked: {panic}")))
    };
    if result.is_err() {
        let api: Api<BudCluster> = Api::all(client.clone());
        let _ = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    ns.delete().await?;
    result
}

async fn scenario(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let kubeconfig_path = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap_or_default());
    let admin_kubeconfig = self_contained_kubeconfig(&kubeconfig_path, None)?;
    let arm = FakeArm::start(&admin_kubeconfig)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("azure-sp".into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([
                    ("AZURE_TENANT_ID".into(), "tenant-bud".into()),
                    ("AZURE_CLIENT_ID".into(), "client-bud".into()),
                    ("AZURE_CLIENT_SECRET".into(), "sp-secret-value".into()),
                ])),
                ..Default::default()
            },
        )
        .await?;
    let _operator = OperatorProcess::start(&[
        "--lease-namespace",
        ns,
        "--azure-authority-url",
        &arm.url,
        "--azure-resource-manager-url",
        &arm.url,
        "--kubeconfig-secret-namespace",
        ns,
    ])?;
    let api: Api<BudCluster> = Api::all(client.clone());
    let spec = AksClusterSpec {
        subscription_id: SUBSCRIPTION.into(),
        resource_group: "ml-platform".into(),
        location: "eastus".into(),
        kubernetes_version: Some("1.33".into()),
        node_pools: vec![
            AksNodePool {
                name: "system".into(),
                vm_size: "Standard_D4s_v5".into(),
                count: 1,
                autoscaling: None,
                labels: BTreeMap::new(),
                taints: vec![],
            },
            AksNodePool {
                name: "a100".into(),
                vm_size: "Standard_NC24ads_A100_v4".into(),
                count: 1,
                autoscaling: Some(AksAutoscaling {
                    min_count: 0,
                    max_count: 4,
                }),
                labels: BTreeMap::from([("bud.studio/pool".into(), "a100".into())]),
                taints: vec![],
            },
        ],
        credentials_secret: NamespacedSecretName {
            namespace: ns.into(),
            name: "azure-sp".into(),
        },
        tags: BTreeMap::from([("team".into(), "ml-platform".into())]),
    };
    let created = Instant::now();
    api.create(
        &PostParams::default(),
        &BudCluster::new(
            name,
            BudClusterSpec {
                type_: ClusterType::Aks,
                kubeconfig: None,
                eks: None,
                aks: Some(spec),
                workload_namespace: None,
                accelerator_prices: BTreeMap::new(),
            },
        ),
    )
    .await?;
    let ready = wait_until(
        "the AKS cluster to be Active and Ready",
        Duration::from_secs(120),
        || async {
            let c = api.get(name).await?;
            let active = c
                .status
                .as_ref()
                .and_then(|s| s.provisioning.as_ref())
                .is_some_and(|p| p.phase == ProvisioningPhase::Active);
            Ok((active && ready_of(&c).0 == "True").then_some(c))
        },
    )
    .await?;
    let create_time = created.elapsed();
    let status = ready.status.clone().unwrap_or_default();
    let resource_id = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/ml-platform/providers/Microsoft.ContainerService/managedClusters/{name}"
    );
    assert_eq!(
        status
            .provisioning
            .as_ref()
            .and_then(|p| p.cloud_id.as_deref()),
        Some(resource_id.as_str())
    );
    assert!(
        !status.accelerators.is_empty(),
        "the inventory was read through the admin kubeconfig"
    );
    let provisioned = find_condition(&status.conditions, "Provisioned").unwrap();
    assert_eq!(provisioned.status, "True");
    let secret_ref = status
        .kubeconfig_secret
        .clone()
        .expect("status.kubeconfigSecret");
    let secret = secrets.get(&secret_ref.name).await?;
    assert_eq!(
        String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone())?,
        admin_kubeconfig
    );
    let table = run_tool("kubectl", &["get", "budclusters", name, "--no-headers"])?;
    for column in ["AKS", "v1.33", "NVIDIA-H100-80GB-HBM3", "True"] {
        assert!(
            table.contains(column),
            "`kubectl get` lacks {column:?}: {table}"
        );
    }

    // What the operator sent: one token request with the service principal, then ARM calls
    // with the bearer token and the api-version; the PUT body carries the spec.
    let requests = arm.requests();
    let token_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/token"))
        .collect();
    assert!(!token_requests.is_empty());
    for t in &token_requests {
        assert_eq!(t.path, "/tenant-bud/oauth2/v2.0/token");
        for field in [
            "grant_type=client_credentials",
            "client_id=client-bud",
            "client_secret=sp-secret-value",
        ] {
            assert!(t.body.contains(field), "{field}: {}", t.body);
        }
    }
    for r in requests.iter().filter(|r| !r.path.ends_with("/token")) {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.query, "api-version=2024-09-01", "{} {}", r.method, r.path);
    }
    let put = requests.iter().find(|r| r.method == "PUT").expect("a PUT");
    assert_eq!(put.path, resource_id);
    let body: serde_json::Value = serde_json::from_str(&put.body)?;
    assert_eq!(body["location"], "eastus");
    assert_eq!(body["properties"]["kubernetesVersion"], "1.33");
    assert_eq!(
        body["properties"]["agentPoolProfiles"][1]["vmSize"],
        "Standard_NC24ads_A100_v4"
    );
    assert_eq!(body["properties"]["agentPoolProfiles"][1]["maxCount"], 4);
    assert!(
        requests.iter().any(|r| r.path.starts_with("/operations/")),
        "the operation was followed"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/listClusterAdminCredential"))
    );
    for r in &requests {
        if !r.path.ends_with("/token") {
            assert!(
                !r.body.contains("sp-secret-value"),
                "the client secret went to ARM"
            );
        }
    }

    // Resize the system pool: a second PUT with the new count.
    let resize = serde_json::json!({"spec": {"aks": {"nodePools": [
        {"name": "system", "vmSize": "Standard_D4s_v5", "count": 3},
        {"name": "a100", "vmSize": "Standard_NC24ads_A100_v4", "count": 1,
         "autoscaling": {"minCount": 0, "maxCount": 4}, "labels": {"bud.studio/pool": "a100"}}
    ]}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&resize))
        .await?;
    let resized_at = Instant::now();
    wait_until(
        "the resized pool in ARM",
        Duration::from_secs(60),
        || async {
            let count = arm
                .cluster()
                .map(|c| c["properties"]["agentPoolProfiles"][0]["count"].clone());
            let state = arm
                .cluster()
                .map(|c| c["properties"]["provisioningState"].clone());
            Ok((count == Some(serde_json::json!(3))
                && state == Some(serde_json::json!("Succeeded")))
            .then_some(()))
        },
    )
    .await?;
    let resize_time = resized_at.elapsed();

    // Delete: DELETE, the operation followed, then the BudCluster and its Secret go.
    api.delete(name, &DeleteParams::default()).await?;
    let deleted_at = Instant::now();
    wait_until(
        "the BudCluster to be gone",
        Duration::from_secs(90),
        || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await?;
    let delete_time = deleted_at.elapsed();
    assert!(arm.cluster().is_none(), "the managed cluster was deleted");
    assert!(
        arm.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == resource_id)
    );
    assert!(secrets.get_opt(&secret_ref.name).await?.is_none());
    eprintln!(
        "measured: AKS cluster Active and Ready {create_time:.1?} after creation; resize applied \
         in {resize_time:.1?}; deletion finished in {delete_time:.1?}"
    );
    Ok(())
}
