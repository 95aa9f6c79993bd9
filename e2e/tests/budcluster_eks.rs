//! BudCluster `type: EKS` against a real moto server (AWS EKS and STS on loopback), through
//! the operator binary: a node group creation that fails mid-provisioning (an IAM role in a
//! partition AWS does not have), the operator restarted while provisioning is stuck, the spec
//! fixed, the cluster and node groups created, the kubeconfig Secret written (with an EKS
//! token that moto's STS accepts), a node group resized, and deletion — node groups, then the
//! cluster, behind a finalizer — with the operator stopped when the BudCluster is deleted.

use bud_crds::budcluster::{
    ClusterType, EksClusterSpec, EksNodeGroup, NamespacedSecretName, NodeTaint, ProvisioningPhase,
    TaintEffect,
};
use bud_crds::conditions::find_condition;
use bud_crds::{BudCluster, BudClusterSpec};
use bud_e2e::harness::{self, OperatorProcess, TestNamespace, run_tool, wait_until};
use bud_e2e::moto::{MotoServer, TEST_ACCESS_KEY, TEST_SECRET_KEY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn ready_of(cluster: &BudCluster) -> (String, String, String) {
    let status = cluster.status.clone().unwrap_or_default();
    find_condition(&status.conditions, "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn phase_of(cluster: &BudCluster) -> Option<ProvisioningPhase> {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .map(|p| p.phase)
}

async fn wait_for_phase(
    api: &Api<BudCluster>,
    name: &str,
    phase: ProvisioningPhase,
    timeout: Duration,
) -> anyhow::Result<BudCluster> {
    wait_until(
        &format!("BudCluster {name} to reach phase {phase:?}"),
        timeout,
        || async {
            let cluster = api.get(name).await?;
            Ok((phase_of(&cluster) == Some(phase)).then_some(cluster))
        },
    )
    .await
}

fn eks_spec(ns: &str, node_role: &str) -> EksClusterSpec {
    EksClusterSpec {
        region: "us-east-1".into(),
        kubernetes_version: Some("1.33".into()),
        role_arn: "arn:aws:iam::123456789012:role/bud-eks".into(),
        node_role_arn: Some(node_role.into()),
        subnet_ids: vec!["subnet-0a1b2c3d".into(), "subnet-4e5f6a7b".into()],
        security_group_ids: vec!["sg-0123456789".into()],
        node_groups: vec![
            EksNodeGroup {
                name: "h100".into(),
                instance_types: vec!["p5.48xlarge".into()],
                ami_type: Some("AL2023_x86_64_NVIDIA".into()),
                min_size: 0,
                max_size: 4,
                desired_size: 1,
                disk_size_gib: Some(200),
                labels: BTreeMap::from([("bud.studio/pool".into(), "h100".into())]),
                taints: vec![NodeTaint {
                    key: "nvidia.com/gpu".into(),
                    value: Some("true".into()),
                    effect: TaintEffect::NoSchedule,
                }],
            },
            EksNodeGroup {
                name: "system".into(),
                instance_types: vec!["m7i.2xlarge".into()],
                ami_type: None,
                min_size: 1,
                max_size: 3,
                desired_size: 2,
                disk_size_gib: None,
                labels: BTreeMap::new(),
                taints: vec![],
            },
        ],
        tags: BTreeMap::from([("team".into(), "ml-platform".into())]),
        credentials_secret: Some(NamespacedSecretName {
            namespace: ns.into(),
            name: "aws-credentials".into(),
        }),
    }
}

fn start_operator(ns: &str, moto: &MotoServer) -> anyhow::Result<OperatorProcess> {
    // A short lease: the test kills operators without a release, and the next one waits
    // out the lease before it leads.
    OperatorProcess::start(&[
        "--lease-namespace",
        ns,
        "--lease-duration-seconds",
        "5",
        "--aws-endpoint-url",
        &moto.url,
        "--kubeconfig-secret-namespace",
        ns,
    ])
}

#[tokio::test]
async fn an_eks_cluster_is_provisioned_resized_and_deleted_through_moto() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bc-eks").await?;
    let name = format!("eks-{}", ns.name);
    // The scenario runs as a task so that a failed assertion (a panic) still reaches the
    // cleanup below.
    let result = {
        let (client, ns, name) = (client.clone(), ns.name.clone(), name.clone());
        tokio::spawn(async move { scenario(&client, &ns, &name).await })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("scenario panicked: {panic}")))
    };
    let api: Api<BudCluster> = Api::all(client.clone());
    if result.is_err() {
        // Let the object go even though no operator is left to remove the finalizer.
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
    let moto = MotoServer::start().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("aws-credentials".into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([
                    ("AWS_ACCESS_KEY_ID".into(), TEST_ACCESS_KEY.into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), TEST_SECRET_KEY.into()),
                ])),
                ..Default::default()
            },
        )
        .await?;
    let mut operator = start_operator(ns, &moto)?;
    let api: Api<BudCluster> = Api::all(client.clone());

    // Injected failure: the node role is in a partition AWS does not have, so the cluster is
    // created but CreateNodegroup is refused.
    let spec = BudClusterSpec {
        type_: ClusterType::Eks,
        kubeconfig: None,
        eks: Some(eks_spec(
            ns,
            "arn:aws-nowhere:iam::123456789012:role/bud-nodes",
        )),
        aks: None,
        workload_namespace: None,
        accelerator_prices: BTreeMap::new(),
    };
    let started = Instant::now();
    api.create(&PostParams::default(), &BudCluster::new(name, spec))
        .await?;
    let failed = wait_for_phase(
        &api,
        name,
        ProvisioningPhase::Failed,
        Duration::from_secs(60),
    )
    .await?;
    let failure_time = started.elapsed();
    let (ready, reason, message) = ready_of(&failed);
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ProvisioningFailed")
    );
    assert!(message.contains("creating node group"), "{message}");
    assert!(message.contains("InvalidParameterException"), "{message}");
    assert!(
        failed
            .finalizers()
            .contains(&"bud.studio/cloud-resources".to_owned())
    );
    let described = moto.eks("describe_cluster", &format!(r#"{{"name": "{name}"}}"#))?;
    assert_eq!(described["cluster"]["status"], "ACTIVE", "{described}");
    assert_eq!(described["cluster"]["tags"]["bud.studio/budcluster"], name);
    assert_eq!(described["cluster"]["tags"]["team"], "ml-platform");
    let groups = moto.eks(
        "list_nodegroups",
        &format!(r#"{{"clusterName": "{name}"}}"#),
    )?;
    assert_eq!(groups["nodegroups"], serde_json::json!([]), "{groups}");

    // Restart the operator while provisioning is stuck, and fix the spec meanwhile.
    operator.stop();
    let fix = serde_json::json!({"spec": {"eks": {"nodeRoleArn": "arn:aws:iam::123456789012:role/bud-nodes"}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&fix))
        .await?;
    operator = start_operator(ns, &moto)?;
    let fixed_at = Instant::now();
    let active = wait_for_phase(
        &api,
        name,
        ProvisioningPhase::Active,
        Duration::from_secs(60),
    )
    .await?;
    let provision_time = fixed_at.elapsed();
    let status = active.status.clone().unwrap_or_default();
    let provisioned = find_condition(&status.conditions, "Provisioned").unwrap();
    assert_eq!(provisioned.status, "True");
    let arn = status
        .provisioning
        .as_ref()
        .and_then(|p| p.cloud_id.clone());
    assert_eq!(arn.as_deref(), described["cluster"]["arn"].as_str());
    // moto's cluster endpoint is not a Kubernetes API server: reported, not dialled.
    let active = wait_until(
        "Ready=False Unreachable",
        Duration::from_secs(30),
        || async {
            let c = api.get(name).await?;
            Ok((ready_of(&c).1 == "Unreachable").then_some(c))
        },
    )
    .await?;
    let message = ready_of(&active).2;
    assert!(message.contains("not a Kubernetes API server"), "{message}");
    assert_eq!(
        active
            .status
            .as_ref()
            .and_then(|s| s.kubernetes_version.as_deref()),
        Some("v1.33")
    );

    let groups = moto.eks(
        "list_nodegroups",
        &format!(r#"{{"clusterName": "{name}"}}"#),
    )?;
    let mut group_names: Vec<String> = serde_json::from_value(groups["nodegroups"].clone())?;
    group_names.sort();
    assert_eq!(group_names, ["h100", "system"]);
    let h100 = moto.eks(
        "describe_nodegroup",
        &format!(r#"{{"clusterName": "{name}", "nodegroupName": "h100"}}"#),
    )?;
    let ng = &h100["nodegroup"];
    assert_eq!(
        ng["scalingConfig"],
        serde_json::json!({"minSize": 0, "maxSize": 4, "desiredSize": 1})
    );
    assert_eq!(ng["instanceTypes"], serde_json::json!(["p5.48xlarge"]));
    assert_eq!(ng["amiType"], "AL2023_x86_64_NVIDIA");
    assert_eq!(ng["nodeRole"], "arn:aws:iam::123456789012:role/bud-nodes");
    assert_eq!(ng["labels"]["bud.studio/pool"], "h100");
    assert_eq!(ng["taints"][0]["effect"], "NO_SCHEDULE");
    assert_eq!(ng["diskSize"], 200);

    // The kubeconfig Secret: the cluster's endpoint and CA, and an EKS token that moto's STS
    // accepts as a GetCallerIdentity request signed for this cluster.
    let secret_ref = status
        .kubeconfig_secret
        .clone()
        .expect("status.kubeconfigSecret");
    assert_eq!(secret_ref.namespace, ns);
    let secret = secrets.get(&secret_ref.name).await?;
    assert!(
        secret
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("bud.studio/token-expires-at"))
    );
    let kubeconfig = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone())?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&kubeconfig)?;
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"].as_str(),
        described["cluster"]["endpoint"].as_str()
    );
    assert_eq!(
        doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
        described["cluster"]["certificateAuthority"]["data"].as_str()
    );
    let token = doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap_or_default();
    let encoded = token
        .strip_prefix("k8s-aws-v1.")
        .expect("k8s-aws-v1. token");
    let url = decode_base64url(encoded)?;
    assert!(
        url.starts_with(&format!(
            "{}/?Action=GetCallerIdentity&Version=2011-06-15&",
            moto.url
        )),
        "{url}"
    );
    assert!(
        url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"),
        "{url}"
    );
    assert!(
        url.contains(&format!("X-Amz-Credential={TEST_ACCESS_KEY}%2F")),
        "{url}"
    );
    assert!(
        !kubeconfig.contains(TEST_SECRET_KEY),
        "the secret key must not be in the kubeconfig"
    );
    // moto serves every AWS service on one port and picks the service from the
    // Authorization header's credential scope, ignoring presigned query parameters (it checks
    // no signature either); so the request restates the URL's own scope and signature there.
    let query = |key: &str| {
        url.split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .replace("%2F", "/")
            .replace("%3B", ";")
    };
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}, SignedHeaders={}, Signature={}",
        query("X-Amz-Credential"),
        query("X-Amz-SignedHeaders"),
        query("X-Amz-Signature")
    );
    assert!(
        authorization.contains("/us-east-1/sts/aws4_request"),
        "{authorization}"
    );
    let (code, body) = moto.get(
        &url,
        &[
            ("x-k8s-aws-id", name),
            ("Authorization", authorization.as_str()),
        ],
    )?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("GetCallerIdentityResult"), "{body}");

    let table = run_tool("kubectl", &["get", "budclusters", name, "--no-headers"])?;
    for column in ["EKS", "v1.33", "False"] {
        assert!(
            table.contains(column),
            "`kubectl get` lacks {column:?}: {table}"
        );
    }

    // A node group size change is applied.
    let resize = serde_json::json!({"spec": {"eks": {"nodeGroups": [
        {"name": "h100", "instanceTypes": ["p5.48xlarge"], "amiType": "AL2023_x86_64_NVIDIA",
         "minSize": 0, "maxSize": 4, "desiredSize": 3, "diskSizeGib": 200,
         "labels": {"bud.studio/pool": "h100"},
         "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]},
        {"name": "system", "instanceTypes": ["m7i.2xlarge"], "minSize": 1, "maxSize": 3, "desiredSize": 2}
    ]}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&resize))
        .await?;
    let resized_at = Instant::now();
    wait_until(
        "the h100 node group to be resized to 3",
        Duration::from_secs(60),
        || async {
            let ng = moto.eks(
                "describe_nodegroup",
                &format!(r#"{{"clusterName": "{name}", "nodegroupName": "h100"}}"#),
            )?;
            Ok((ng["nodegroup"]["scalingConfig"]["desiredSize"] == 3).then_some(()))
        },
    )
    .await?;
    let resize_time = resized_at.elapsed();
    wait_for_phase(
        &api,
        name,
        ProvisioningPhase::Active,
        Duration::from_secs(60),
    )
    .await?;

    // Delete while no operator runs: the finalizer holds the BudCluster; a new operator
    // deletes the node groups, then the cluster, then lets it go.
    operator.stop();
    api.delete(name, &DeleteParams::default()).await?;
    let held = api.get(name).await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    let _operator = start_operator(ns, &moto)?;
    let deleted_at = Instant::now();
    wait_until(
        "the BudCluster to be gone",
        Duration::from_secs(90),
        || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await?;
    let delete_time = deleted_at.elapsed();
    let gone = moto.eks("describe_cluster", &format!(r#"{{"name": "{name}"}}"#))?;
    assert_eq!(gone["Error"]["Code"], "ResourceNotFoundException", "{gone}");
    assert!(
        secrets.get_opt(&secret_ref.name).await?.is_none(),
        "kubeconfig Secret deleted"
    );

    eprintln!(
        "measured: node group failure reported {failure_time:.1?} after creation; Active {provision_time:.1?} after \
         the restarted operator got the fixed spec; resize applied in {resize_time:.1?}; \
         deletion finished {delete_time:.1?} after the operator came back"
    );
    Ok(())
}

fn decode_base64url(text: &str) -> anyhow::Result<String> {
    // ByteString deserializes standard base64; translate the URL-safe alphabet and pad.
    let mut standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(serde_json::Value::String(standard))?;
    Ok(String::from_utf8(bytes.0)?)
}
