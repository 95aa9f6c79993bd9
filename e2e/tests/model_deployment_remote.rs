//! A model on another cluster, end to end, with two local control planes: the management
//! cluster (`KUBECONFIG`) runs the operator and the gateway; a workload cluster with its own
//! GPU fleet (H200, L40S) and pod range (127.2.x), started by this test, is onboarded
//! through a kubeconfig Secret. A ModelDeployment with `spec.cluster` naming it is applied
//! there (no owner references; labels and a finalizer instead), its pods' addresses become
//! the endpoints, and the official OpenAI SDK gets a completion through the gateway. The
//! workload cluster is stopped (`ClusterUnreachable`, endpoints out of the route) and started
//! again (Ready, the same pods); deleting the ModelDeployment removes the remote workload.

use bud_crds::budcluster::{ClusterType, KubeconfigSource};
use bud_crds::common::NamespacedSecretKeyRef;
use bud_crds::conditions::{READY, find_condition};
use bud_crds::{BudCluster, BudClusterSpec, ModelDeployment};
use bud_e2e::control_plane::LocalControlPlane;
use bud_e2e::engine_runtime::EngineRuntime;
use bud_e2e::fleet::Fleet;
use bud_e2e::harness::{
    self, GatewayProcess, OperatorProcess, TestNamespace, run_tool, wait_until,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const TEST_LABEL: &str = "bud.studio/e2e-test";
const WORKLOAD_NAMESPACE: &str = "bud-workloads";
const ROLLOUT: Duration = Duration::from_secs(120);

fn ready_of(md: &ModelDeployment) -> (String, String, String) {
    md.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, READY))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

async fn wait_md(
    api: &Api<ModelDeployment>,
    name: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<ModelDeployment> {
    let what = format!(
        "ModelDeployment {name} Ready={status}{}",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    let last = std::sync::Mutex::new(None);
    let last = &last;
    let result = wait_until(&what, timeout, || async move {
        let md = api.get(name).await?;
        let (s, r, m) = ready_of(&md);
        *last.lock().unwrap() = Some(format!("{s} {r}: {m}"));
        Ok((s == status && reason.is_none_or(|want| want == r)).then_some(md))
    })
    .await;
    result.map_err(|e| anyhow::anyhow!("{e:#}; last Ready: {:?}", last.lock().unwrap()))
}

#[tokio::test]
async fn a_model_is_served_from_a_cluster_onboarded_by_kubeconfig() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "md-remote").await?;
    // The scenario runs as a task so that a failed assertion (a panic) still reaches the
    // clean-up below; the workload control plane's guard stops it either way.
    let result = {
        let (client, ns) = (client.clone(), ns.name.clone());
        tokio::spawn(async move { scenario(&client, &ns).await })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("scenario panicked: {panic}")))
    };
    let _ = Api::<BudCluster>::all(client.clone())
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{TEST_LABEL}={}", ns.name)),
        )
        .await;
    // A ModelDeployment still carrying the remote finalizer (the scenario failed before
    // deleting it) must not keep the namespace: its cluster is gone with the guard.
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    if let Ok(list) = mds.list(&ListParams::default()).await {
        for md in list.items {
            let name = md.metadata.name.clone().unwrap_or_default();
            let _ = mds
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
    ns.delete().await?;
    result
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    // The workload cluster: its own pod range (127.2.x) and service range.
    let plane = LocalControlPlane::start(
        &format!("mdr-{ns}"),
        &[
            ("BUD_DEFAULT_POD_CIDR", "127.2.0.1/16"),
            ("BUD_SERVICE_CIDR", "10.97.0.0/16"),
        ],
    )?;
    let workload = plane.client().await?;
    let fleet_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/fleet-workload.yaml");
    let fleet = Fleet::from_yaml(&std::fs::read_to_string(&fleet_path)?)?;
    harness::apply_fleet(&workload, &fleet).await?;

    // Onboard it through a kubeconfig Secret.
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "work-kubeconfig"},
        "stringData": {"kubeconfig": plane.self_contained_kubeconfig(None)?},
    });
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "work-kubeconfig",
            &PatchParams::apply(harness::FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    let cluster_name = format!("work-{ns}");
    let mut cluster = BudCluster::new(
        &cluster_name,
        BudClusterSpec {
            type_: ClusterType::Kubeconfig,
            kubeconfig: Some(KubeconfigSource {
                secret_ref: NamespacedSecretKeyRef {
                    namespace: ns.to_owned(),
                    name: "work-kubeconfig".to_owned(),
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
    let clusters: Api<BudCluster> = Api::all(client.clone());
    clusters.create(&PostParams::default(), &cluster).await?;

    let operator = OperatorProcess::start(&["--lease-namespace", ns])?;
    // Emulators start at the workload cluster's pod addresses; the gateway runs on the
    // management side and reaches them through the endpoints in status.
    let _runtime = EngineRuntime::start(
        workload.clone(),
        vec![],
        std::env::temp_dir().join(format!("{ns}-engines")),
    )?;
    let gateway = GatewayProcess::start(&[]).await?;

    let cluster_ready = |want: bool| {
        let clusters = clusters.clone();
        let name = cluster_name.clone();
        async move {
            wait_until(
                &format!("BudCluster {name} Ready={want}"),
                Duration::from_secs(90),
                || async {
                    let c = clusters.get(&name).await?;
                    let ready = c
                        .status
                        .as_ref()
                        .and_then(|s| find_condition(&s.conditions, READY))
                        .is_some_and(|c| c.status == "True");
                    Ok((ready == want).then_some(()))
                },
            )
            .await
        }
    };
    cluster_ready(true).await?;

    // A model on the workload cluster's L40S (a GPU the management fleet does not have).
    harness::kubectl_apply_text(
        ns,
        &format!(
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: remote-qwen}}\nspec:\n  model: {{uri: hf://Qwen/Qwen3-8B}}\n  servedName: remote-qwen\n  cluster: {cluster_name}\n  placement: {{accelerator: NVIDIA-L40S, tensorParallel: 1}}\n  replicas: 2\n---\napiVersion: bud.studio/v1alpha1\nkind: ApiKey\nmetadata: {{name: remote}}\nspec: {{models: [remote-qwen]}}\n"
        ),
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let applied_at = Instant::now();
    let md = wait_md(&api, "remote-qwen", "True", Some("Ready"), ROLLOUT).await?;
    let ready_time = applied_at.elapsed();
    let status = md.status.clone().unwrap_or_default();
    let selected = status.selected.clone().unwrap();
    assert_eq!(selected.cluster, cluster_name);
    assert_eq!(status.ready_replicas, 2);
    assert!(
        status
            .endpoints
            .iter()
            .all(|e| e.ready && e.address.starts_with("127.2.")),
        "endpoints are the workload cluster's pods: {:?}",
        status.endpoints
    );
    assert!(
        md.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "bud.studio/remote-workload"),
        "{:?}",
        md.metadata.finalizers
    );

    // The workload is in the workload cluster, labelled with its owner; nothing runs here.
    let remote_name = format!("{ns}-remote-qwen");
    let remote_deployments: Api<Deployment> = Api::namespaced(workload.clone(), WORKLOAD_NAMESPACE);
    let remote = remote_deployments.get(&remote_name).await?;
    let labels = remote.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("bud.studio/owner-namespace").map(String::as_str),
        Some(ns)
    );
    assert_eq!(
        labels.get("bud.studio/owner-name").map(String::as_str),
        Some("remote-qwen")
    );
    assert!(remote.metadata.owner_references.is_none());
    assert!(
        Api::<Service>::namespaced(workload.clone(), WORKLOAD_NAMESPACE)
            .get_opt(&remote_name)
            .await?
            .is_some()
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("remote-qwen")
            .await?
            .is_none(),
        "nothing is deployed on the management cluster"
    );
    let pod_addresses: Vec<String> = Api::<Pod>::namespaced(workload.clone(), WORKLOAD_NAMESPACE)
        .list(&ListParams::default().labels(&format!("bud.studio/model-deployment={remote_name}")))
        .await?
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    let mut endpoint_addresses: Vec<String> =
        status.endpoints.iter().map(|e| e.address.clone()).collect();
    let mut sorted = pod_addresses.clone();
    sorted.sort();
    endpoint_addresses.sort();
    assert_eq!(endpoint_addresses, sorted);

    // A chat completion through the gateway, answered by the workload cluster's engines.
    let key = harness::issued_api_key(client, ns, "remote").await?;
    let reply = harness::chat(&gateway, &key, "remote-qwen").await?;
    assert!(
        !reply["reply"].as_str().unwrap_or_default().is_empty(),
        "{reply}"
    );

    // The workload cluster goes away: ClusterUnreachable, the endpoints out of the route.
    let stopping_at = Instant::now();
    plane.stop()?;
    let down_sh = stopping_at.elapsed();
    let down = wait_md(
        &api,
        "remote-qwen",
        "False",
        Some("ClusterUnreachable"),
        Duration::from_secs(90),
    )
    .await?;
    let unreachable_time = stopping_at.elapsed();
    let (_, _, message) = ready_of(&down);
    assert!(message.contains(&cluster_name), "{message}");
    assert!(message.contains("Unreachable"), "{message}");
    let down_status = down.status.clone().unwrap_or_default();
    assert_eq!(down_status.ready_replicas, 0);
    assert!(
        !down_status.endpoints.is_empty() && down_status.endpoints.iter().all(|e| !e.ready),
        "the last endpoints are kept, not ready: {:?}",
        down_status.endpoints
    );

    // The emulators still listen at those addresses (the runtime keeps them), so a request
    // that fails shows the gateway no longer routes there; with no fallback configured for
    // this model it answers with an error.
    let script = harness::repo_root()
        .join("e2e/clients/chat.py")
        .display()
        .to_string();
    let base = format!("{}/v1", gateway.url);
    let refusal = wait_until(
        "the gateway to stop routing to the unreachable cluster",
        Duration::from_secs(30),
        || async {
            Ok(run_tool("python3", &[&script, &base, &key, "remote-qwen"])
                .err()
                .map(|e| format!("{e:#}")))
        },
    )
    .await?;
    assert!(
        refusal.contains("503") || refusal.to_lowercase().contains("endpoint"),
        "{refusal}"
    );

    // Back again: Ready with the same pods; then deletion removes the remote workload.
    let restarted_at = Instant::now();
    plane.restart()?;
    let up_sh = restarted_at.elapsed();
    let back = wait_md(&api, "remote-qwen", "True", Some("Ready"), ROLLOUT).await?;
    let recover_time = restarted_at.elapsed();
    let mut back_addresses: Vec<String> = back
        .status
        .clone()
        .unwrap_or_default()
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect();
    back_addresses.sort();
    assert_eq!(
        back_addresses, sorted,
        "the same pods serve after the restart"
    );

    // A remote pod going away shows in status at once (a watch in the workload cluster),
    // well within the 30 s poll of a Ready deployment.
    let victim = back
        .status
        .clone()
        .unwrap_or_default()
        .endpoints
        .first()
        .and_then(|e| e.pod.clone())
        .ok_or_else(|| anyhow::anyhow!("no endpoint pod"))?;
    Api::<Pod>::namespaced(workload.clone(), WORKLOAD_NAMESPACE)
        .delete(&victim, &DeleteParams::default())
        .await?;
    let pod_deleted_at = Instant::now();
    wait_until(
        "the deleted remote pod to leave the endpoints",
        Duration::from_secs(15),
        || async {
            let md = api.get("remote-qwen").await?;
            let endpoints = md.status.unwrap_or_default().endpoints;
            Ok((!endpoints
                .iter()
                .any(|e| e.pod.as_deref() == Some(victim.as_str())))
            .then_some(()))
        },
    )
    .await?;
    let pod_follow_time = pod_deleted_at.elapsed();

    api.delete("remote-qwen", &DeleteParams::default()).await?;
    let deleted_at = Instant::now();
    wait_until(
        "the remote Deployment and Service to be deleted",
        Duration::from_secs(60),
        || async {
            let deployment = remote_deployments.get_opt(&remote_name).await?;
            let service = Api::<Service>::namespaced(workload.clone(), WORKLOAD_NAMESPACE)
                .get_opt(&remote_name)
                .await?;
            Ok((deployment.is_none() && service.is_none()).then_some(()))
        },
    )
    .await?;
    wait_until(
        "the ModelDeployment to be gone",
        Duration::from_secs(30),
        || async { Ok(api.get_opt("remote-qwen").await?.is_none().then_some(())) },
    )
    .await?;
    let delete_time = deleted_at.elapsed();

    eprintln!(
        "measured: Ready on the workload cluster {ready_time:.1?} after apply; ClusterUnreachable \
         {unreachable_time:.1?} after down.sh began (down.sh took {down_sh:.1?}); Ready again \
         {recover_time:.1?} after up.sh --keep began (up.sh took {up_sh:.1?}); remote workload \
         and ModelDeployment deleted in {delete_time:.1?}; a deleted remote pod left the \
         endpoints in {pod_follow_time:.1?}; the gateway meanwhile: {}",
        // The SDK's error only: the command line holds the API key.
        refusal.rsplit("failed: ").next().unwrap_or_default()
    );
    drop(gateway);
    operator.stop();
    drop(plane);
    Ok(())
}
