//! From `kubectl apply` to a chat completion through the gateway, on the local control
//! plane: the operator, the engine runtime (emulators at pod addresses) and the gateway run
//! once; each scenario works in its own namespace.

use bud_controllers::planning::{self, PlanInputs};
use bud_crds::conditions::{READY, find_condition};
use bud_crds::{ApiKey, BudCluster, ModelDeployment};
use bud_e2e::engine_runtime::EngineRuntime;
use bud_e2e::harness::{
    self, GatewayProcess, OperatorProcess, TestNamespace, run_tool, target_binary, wait_until,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::path::Path;
use std::time::Duration;

const ROLLOUT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Applies every document of a YAML file into `namespace` with kubectl (server-side).
fn kubectl_apply(namespace: &str, file: &Path) -> anyhow::Result<()> {
    run_tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--namespace",
            namespace,
            "-f",
            &file.display().to_string(),
        ],
    )?;
    Ok(())
}

fn kubectl_apply_text(namespace: &str, yaml: &str) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("{namespace}-{}.yaml", yaml.len()));
    std::fs::write(&path, yaml)?;
    let result = kubectl_apply(namespace, &path);
    std::fs::remove_file(&path)?;
    result
}

async fn wait_ready(api: &Api<ModelDeployment>, name: &str) -> anyhow::Result<ModelDeployment> {
    wait_until(
        &format!("ModelDeployment {name} to be Ready"),
        ROLLOUT,
        || async {
            let md = api.get(name).await?;
            let ready = md
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, READY))
                .is_some_and(|c| c.status == "True");
            Ok(ready.then_some(md))
        },
    )
    .await
}

async fn wait_reason(
    api: &Api<ModelDeployment>,
    name: &str,
    reason: &str,
) -> anyhow::Result<ModelDeployment> {
    wait_until(
        &format!("ModelDeployment {name} Ready=False with reason {reason}"),
        ROLLOUT,
        || async {
            let md = api.get(name).await?;
            let hit = md
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, READY))
                .is_some_and(|c| c.status == "False" && c.reason == reason);
            Ok(hit.then_some(md))
        },
    )
    .await
}

/// The key the ApiKey controller wrote into its Secret.
async fn api_key(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let secret_name = wait_until(
        "the ApiKey to be issued",
        Duration::from_secs(30),
        || async {
            Ok(keys
                .get(name)
                .await?
                .status
                .and_then(|s| s.secret_name.filter(|_| true)))
        },
    )
    .await?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&secret_name)
        .await?;
    let bytes = secret
        .data
        .and_then(|d| d.get("apiKey").cloned())
        .ok_or_else(|| anyhow::anyhow!("no apiKey in {secret_name}"))?;
    Ok(String::from_utf8(bytes.0)?)
}

/// Runs the official OpenAI SDK through the gateway (e2e/clients/chat.py) until it succeeds;
/// the gateway learns new routes and keys within a moment of their status being written.
async fn chat(
    gateway: &GatewayProcess,
    key: &str,
    model: &str,
) -> anyhow::Result<serde_json::Value> {
    let script = repo().join("e2e/clients/chat.py").display().to_string();
    let base = format!("{}/v1", gateway.url);
    wait_until(
        &format!("a chat completion for {model} through the gateway"),
        Duration::from_secs(60),
        || {
            let (script, base) = (script.clone(), base.clone());
            async move {
                let out = run_tool("python3", &[&script, &base, key, model])?;
                Ok(Some(serde_json::from_str::<serde_json::Value>(&out)?))
            }
        },
    )
    .await
}

/// Rows ClickHouse holds for a namespace's requests.
fn usage_rows(clickhouse: &str, namespace: &str) -> anyhow::Result<u64> {
    let query = format!(
        "SELECT count() FROM bud.usage WHERE namespace = '{namespace}' FORMAT TabSeparated"
    );
    let out = run_tool(
        "curl",
        &["-sS", "--fail", "--data-binary", &query, clickhouse],
    )?;
    Ok(out.trim().parse()?)
}

async fn ensure_local_cluster(client: &Client) -> anyhow::Result<()> {
    let api: Api<BudCluster> = Api::all(client.clone());
    let cluster: BudCluster = serde_yaml::from_str(&std::fs::read_to_string(
        repo().join("examples/local-cluster.yaml"),
    )?)?;
    api.patch(
        "local",
        &PatchParams::apply(harness::FIELD_MANAGER).force(),
        &Patch::Apply(&cluster),
    )
    .await?;
    wait_until(
        "BudCluster local to be Ready",
        Duration::from_secs(60),
        || async {
            let c = api.get("local").await?;
            Ok(planning::cluster_ready(&c).then_some(()))
        },
    )
    .await
}

/// Scenario 1: the quickstart becomes Ready with the configuration `bud-sim plan` picks for the
/// same request; the OpenAI SDK gets a completion and a streamed one; usage reaches ClickHouse.
async fn quickstart(
    client: &Client,
    ns: &TestNamespace,
    gateway: &GatewayProcess,
    clickhouse: Option<&str>,
) -> anyhow::Result<()> {
    kubectl_apply(&ns.name, &repo().join("examples/quickstart.yaml"))?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let md = wait_ready(&api, "qwen3-8b").await?;
    let status = md.status.clone().unwrap();
    let selected = status.selected.clone().unwrap();

    // The same request through the CLI.
    let clusters: Vec<BudCluster> = Api::<BudCluster>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let (pools, _) = planning::pools_from_clusters(&clusters);
    let spec = &md.spec;
    let request = planning::plan_request(
        &PlanInputs {
            model_id: "Qwen/Qwen3-8B".into(),
            model_config: None,
            workload: spec.workload.as_ref().unwrap(),
            slo: spec.slo.as_ref().unwrap(),
            objective: Default::default(),
            engines: &[],
            precisions: &[],
            max_results: 3,
        },
        pools,
    );
    let request_path = std::env::temp_dir().join(format!("{}-plan.json", ns.name));
    std::fs::write(&request_path, serde_json::to_string(&request)?)?;
    let sim = target_binary("BUD_SIM_BIN", "bud-sim")?;
    let out = run_tool(
        &sim.display().to_string(),
        &[
            "plan",
            "--request",
            &request_path.display().to_string(),
            "--json",
        ],
    )?;
    let plan: serde_json::Value = serde_json::from_str(&out)?;
    let best = &plan["recommendations"][0];
    let best_accelerator = bud_simulator::accelerator(best["accelerator"].as_str().unwrap())?
        .id
        .clone();
    assert_eq!(
        bud_simulator::accelerator(&selected.accelerator)?.id,
        best_accelerator,
        "accelerator: {selected:?} vs {best}"
    );
    assert_eq!(
        i64::from(selected.tensor_parallel),
        best["tp"].as_i64().unwrap(),
        "tensor parallel"
    );
    assert_eq!(
        i64::from(selected.replicas),
        best["replicas"].as_i64().unwrap(),
        "replicas"
    );
    assert_eq!(status.ready_replicas, selected.replicas);
    assert!(
        status
            .endpoints
            .iter()
            .all(|e| e.address.starts_with("127."))
    );
    assert_eq!(status.route.as_ref().unwrap().served_name, "qwen3-8b");

    let key = api_key(client, &ns.name, "quickstart").await?;
    let reply = chat(gateway, &key, "qwen3-8b").await?;
    assert!(
        !reply["reply"].as_str().unwrap_or_default().is_empty(),
        "{reply}"
    );
    assert!(
        !reply["streamed_reply"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{reply}"
    );
    assert!(
        reply["stream_usage"]["completion_tokens"]
            .as_i64()
            .unwrap_or(0)
            > 0,
        "{reply}"
    );
    if let Some(url) = clickhouse {
        wait_until(
            "usage rows in ClickHouse",
            Duration::from_secs(30),
            || async { Ok((usage_rows(url, &ns.name)? >= 2).then_some(())) },
        )
        .await?;
    } else {
        eprintln!("BUD_TEST_CLICKHOUSE_URL not set: usage rows not checked");
    }
    Ok(())
}

/// Scenario 2: an SLO nothing meets: NoFeasibleConfiguration, nothing deployed, a message
/// saying what to relax.
async fn infeasible(client: &Client, ns: &TestNamespace) -> anyhow::Result<()> {
    kubectl_apply_text(
        &ns.name,
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: too-fast}\nspec:\n  model: {uri: hf://meta-llama/Llama-3.1-70B}\n  workload: {inputTokens: 4096, outputTokens: 512, concurrency: 64}\n  slo: {ttftMs: 1, tpotMs: 1}\n",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let md = wait_reason(&api, "too-fast", "NoFeasibleConfiguration").await?;
    let ready = find_condition(&md.status.as_ref().unwrap().conditions, READY)
        .unwrap()
        .clone();
    assert!(
        ready.message.to_lowercase().contains("relax")
            || ready.message.contains("tpot")
            || ready.message.contains("ttft"),
        "{}",
        ready.message
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?;
    assert!(deployments.items.is_empty(), "nothing may be deployed");
    Ok(())
}

/// Scenario 3: more replicas than free GPUs: InsufficientCapacity; Ready once a node with
/// capacity joins.
async fn insufficient_capacity(client: &Client, ns: &TestNamespace) -> anyhow::Result<()> {
    kubectl_apply_text(
        &ns.name,
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: big}\nspec:\n  model: {uri: hf://Qwen/Qwen3-8B}\n  placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 8}\n  replicas: 3\n",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let md = wait_reason(&api, "big", "InsufficientCapacity").await?;
    assert_eq!(
        md.status.as_ref().unwrap().replica_summary.as_deref(),
        Some("2/3")
    );

    let fleet = harness::default_fleet()?;
    let pool = fleet.pools.iter().find(|p| p.name == "h100").unwrap();
    let extra = pool.node(70 + std::process::id() % 20, "127.1.240.0/24");
    let extra_name = extra.metadata.name.clone().unwrap();
    harness::apply_node(client, &extra).await?;
    let result = wait_ready(&api, "big").await;
    api.delete("big", &DeleteParams::default()).await?;
    wait_until("the engine pods to go away", ROLLOUT, || async {
        Ok(Api::<Pod>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    Api::<Node>::all(client.clone())
        .delete(&extra_name, &DeleteParams::default())
        .await?;
    result.map(|_| ())
}

#[tokio::test]
async fn model_deployments_from_apply_to_chat_completion() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    harness::apply_fleet(&client, &harness::default_fleet()?).await?;
    let control = TestNamespace::create(&client, "md-operator").await?;
    let _operator = OperatorProcess::start(&["--lease-namespace", &control.name])?;
    let _runtime = EngineRuntime::start(
        client.clone(),
        vec![],
        std::env::temp_dir().join(format!("{}-engines", control.name)),
    )?;
    let clickhouse = std::env::var("BUD_TEST_CLICKHOUSE_URL").ok();
    let mut gateway_args = vec![];
    if let Some(url) = &clickhouse {
        gateway_args.extend([
            "--clickhouse-url",
            url.as_str(),
            "--clickhouse-flush-ms",
            "200",
        ]);
    }
    let gateway = GatewayProcess::start(&gateway_args).await?;
    ensure_local_cluster(&client).await?;

    let mut failures = Vec::new();
    for scenario in ["quickstart", "infeasible", "capacity"] {
        let ns = TestNamespace::create(&client, scenario).await?;
        let result = match scenario {
            "quickstart" => quickstart(&client, &ns, &gateway, clickhouse.as_deref()).await,
            "infeasible" => infeasible(&client, &ns).await,
            _ => insufficient_capacity(&client, &ns).await,
        };
        // Delete the namespace and wait until its engine pods are gone, so that the next
        // scenario finds the fleet's accelerators free.
        let name = ns.name.clone();
        ns.delete().await?;
        wait_until(
            &format!("namespace {name} to be deleted"),
            ROLLOUT,
            || async {
                Ok(
                    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                        .get_opt(&name)
                        .await?
                        .is_none()
                        .then_some(()),
                )
            },
        )
        .await?;
        if let Err(err) = result {
            failures.push(format!("{scenario}: {err:#}"));
        }
    }
    control.delete().await?;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
