//! The local control plane behaves like a GPU cluster: a Deployment asking for eight GPUs
//! is scheduled onto an H100 node, becomes Ready, and its pod has a 127.x address from that
//! node's podCIDR.

use bud_e2e::harness::{self, TestNamespace, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use std::time::Duration;

#[tokio::test]
async fn an_eight_gpu_deployment_runs_on_an_h100_node_with_a_loopback_pod_address()
-> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::apply_fleet(&client, &harness::default_fleet()?).await?;
    let ns = TestNamespace::create(&client, "sched").await?;
    let deployment: Deployment = serde_yaml::from_str(
        r#"
metadata: {name: eight-gpus}
spec:
  replicas: 1
  selector: {matchLabels: {app: eight-gpus}}
  template:
    metadata: {labels: {app: eight-gpus}}
    spec:
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      containers:
      - name: engine
        image: vllm/vllm-openai:latest
        resources: {limits: {nvidia.com/gpu: "8"}}
"#,
    )?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    wait_until(
        "the deployment to have one available replica",
        Duration::from_secs(60),
        || async {
            let d = deployments.get("eight-gpus").await?;
            Ok((d.status.and_then(|s| s.available_replicas) == Some(1)).then_some(()))
        },
    )
    .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = pods
        .list(&ListParams::default().labels("app=eight-gpus"))
        .await?
        .items
        .remove(0);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");
    let node = Api::<Node>::all(client.clone()).get(&node_name).await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3",
        "scheduled onto {node_name}"
    );
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod has an address");
    assert!(
        ip.starts_with("127."),
        "pod address {ip} is not in 127.0.0.0/8"
    );
    let cidr = node.spec.and_then(|s| s.pod_cidr).unwrap();
    let prefix = cidr.rsplit_once('.').unwrap().0;
    assert!(
        ip.starts_with(&format!("{prefix}.")),
        "pod address {ip} is outside node podCIDR {cidr}"
    );

    // A process bound at the pod's address on this machine is reachable as the pod.
    let listener = std::net::TcpListener::bind((ip.as_str(), 0))?;
    let addr = listener.local_addr()?;
    std::net::TcpStream::connect(addr)?;
    ns.delete().await
}
