//! The Helm chart on a real API server: its values schema rejects bad values, it installs
//! cleanly, and the operator running with the chart's ServiceAccount (its least-privilege
//! RBAC, nothing more) publishes a BudCluster inventory and records Events.

use bud_crds::budcluster::ClusterType;
use bud_crds::{BudCluster, BudClusterSpec};
use bud_e2e::harness::{self, OperatorProcess, TestNamespace, run_tool, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn chart_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/bud")
        .display()
        .to_string()
}

#[test]
fn the_values_schema_rejects_bad_values_by_name() -> anyhow::Result<()> {
    let chart = chart_dir();
    // `helm template` renders offline; tell it which Kubernetes to assume.
    let template = [
        "template",
        "bud",
        chart.as_str(),
        "--kube-version",
        "1.33.0",
    ];
    run_tool("helm", &template)?;
    for (set, expected) in [
        ("operator.replicas=-1", "replicas"),
        ("operator.logFormat=xml", "logFormat"),
        ("operator.bogus=1", "bogus"),
        ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
    ] {
        let args: Vec<&str> = template.iter().copied().chain(["--set", set]).collect();
        let err = run_tool("helm", &args).expect_err(set);
        assert!(err.to_string().contains(expected), "--set {set}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn the_chart_installs_and_its_rbac_is_enough_for_the_operator() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    harness::apply_fleet(&client, &harness::default_fleet()?).await?;
    let ns = TestNamespace::create(&client, "chart").await?;
    let release = format!("bud-{}", ns.name);
    let chart = chart_dir();
    run_tool(
        "helm",
        &[
            "install",
            &release,
            &chart,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "90s",
        ],
    )?;

    let deployment = format!("{release}-operator");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get(&deployment).await?;
    assert_eq!(
        d.status.and_then(|s| s.available_replicas),
        Some(1),
        "the operator Deployment is available"
    );

    // Run the real operator with the chart's ServiceAccount token.
    let token = run_tool(
        "kubectl",
        &[
            "create",
            "token",
            &deployment,
            "--namespace",
            &ns.name,
            "--duration",
            "1h",
        ],
    )?;
    let kubeconfig = service_account_kubeconfig(token.trim())?;
    let path = std::env::temp_dir().join(format!("{}-kubeconfig", ns.name));
    std::fs::write(&path, kubeconfig)?;
    let operator =
        OperatorProcess::start_with_kubeconfig(&["--lease-namespace", &ns.name], Some(&path))?;

    let name = format!("rbac-{}", ns.name);
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
    wait_until(
        "the inventory written with the chart's RBAC",
        Duration::from_secs(60),
        || async {
            let status = api.get(&name).await?.status.unwrap_or_default();
            Ok((bud_crds::conditions::is_true(&status.conditions, "Ready")
                && !status.accelerators.is_empty())
            .then_some(()))
        },
    )
    .await?;
    wait_until(
        "an InventoryChanged Event recorded with the chart's RBAC",
        Duration::from_secs(30),
        || async {
            Ok(harness::events_regarding(&client, "default", &name)
                .await?
                .iter()
                .any(|e| e.reason.as_deref() == Some("InventoryChanged"))
                .then_some(()))
        },
    )
    .await?;
    operator.stop();
    std::fs::remove_file(&path)?;

    api.delete(&name, &DeleteParams::default()).await?;
    run_tool(
        "helm",
        &["uninstall", &release, "--namespace", &ns.name, "--wait"],
    )?;
    ns.delete().await
}

/// A kubeconfig for the current cluster that authenticates with `token` only.
fn service_account_kubeconfig(token: &str) -> anyhow::Result<String> {
    let current = kube::config::Kubeconfig::read()?;
    let context_name = current.current_context.clone().unwrap_or_default();
    let context = current
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| anyhow::anyhow!("the kubeconfig has no current context"))?;
    let cluster = current
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow::anyhow!("the kubeconfig has no cluster {}", context.cluster))?;
    let server = cluster.server.unwrap_or_default();
    let ca = match (
        &cluster.certificate_authority,
        &cluster.certificate_authority_data,
    ) {
        (Some(path), _) => format!("certificate-authority: {path}"),
        (None, Some(data)) => format!("certificate-authority-data: {data}"),
        (None, None) => "insecure-skip-tls-verify: true".to_owned(),
    };
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    {ca}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: c, user: sa}}\ncurrent-context: sa\n"
    ))
}
