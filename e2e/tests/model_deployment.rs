//! From `kubectl apply` to a chat completion through the gateway, on the local control
//! plane: the operator, the engine runtime (emulators at pod addresses) and the gateway run
//! once; each scenario works in its own namespace.

use bud_controllers::planning::{self, PlanInputs};
use bud_crds::conditions::{READY, find_condition};
use bud_crds::{BudCluster, ModelDeployment};
use bud_e2e::engine_runtime::EngineRuntime;
use bud_e2e::harness::{
    self, GatewayProcess, OperatorProcess, TestNamespace, run_tool, target_binary, wait_until,
};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::time::Duration;

const ROLLOUT: Duration = Duration::from_secs(120);

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
        harness::repo_root().join("examples/local-cluster.yaml"),
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
    harness::kubectl_apply(
        &ns.name,
        &harness::repo_root().join("examples/quickstart.yaml"),
    )?;
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
            checkpoint_precisions_only: true,
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
    // The prediction's basis and expected error survive the API server's structural schema
    // (which prunes unknown status fields) and match the CLI's.
    let basis = if best["prediction"]["measuredDeployment"].as_bool().unwrap() {
        "MeasuredDeployment"
    } else {
        "Model"
    };
    let predicted = selected.predicted.as_ref().expect("predicted metrics");
    assert_eq!(
        predicted.basis.as_deref(),
        Some(basis),
        "basis: {selected:?}"
    );
    let cli_ttft_error = best["prediction"]["expectedError"]["ttftPercent"]
        .as_f64()
        .expect("the CLI's expected error");
    assert_eq!(
        predicted
            .expected_ttft_error_percent
            .as_deref()
            .and_then(|e| e.parse::<f64>().ok()),
        Some(cli_ttft_error),
        "expected TTFT error: {selected:?}"
    );
    assert_eq!(status.ready_replicas, selected.replicas);
    assert!(
        status
            .endpoints
            .iter()
            .all(|e| e.address.starts_with("127."))
    );
    assert_eq!(status.route.as_ref().unwrap().served_name, "qwen3-8b");

    let key = harness::issued_api_key(client, &ns.name, "quickstart").await?;
    let reply = harness::chat(gateway, &key, "qwen3-8b").await?;
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
    harness::kubectl_apply_text(
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
    harness::kubectl_apply_text(
        &ns.name,
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: big}\nspec:\n  model: {uri: hf://Qwen/Qwen3-8B}\n  placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 8}\n  replicas: 3\n",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_reason(&api, "big", "InsufficientCapacity").await?;
    // Two of the three fit on the fleet's two H100 nodes. The second may still be starting
    // (or waiting for the accelerators of an earlier scenario's terminating pods to be
    // released) when the third is first found unschedulable.
    wait_until(
        "ModelDeployment big to run 2 of 3 replicas, held for InsufficientCapacity",
        ROLLOUT,
        || async {
            let md = api.get("big").await?;
            let status = md.status.as_ref();
            let held = status
                .and_then(|s| find_condition(&s.conditions, READY))
                .is_some_and(|c| c.status == "False" && c.reason == "InsufficientCapacity");
            let summary = status.and_then(|s| s.replica_summary.as_deref());
            Ok((held && summary == Some("2/3")).then_some(()))
        },
    )
    .await?;

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

/// The load client (e2e/clients/load.py) running until [`Load::finish`].
struct Load {
    child: tokio::process::Child,
    stop_file: std::path::PathBuf,
}

impl Load {
    fn start(gateway: &GatewayProcess, key: &str, model: &str) -> anyhow::Result<Self> {
        let stop_file = std::env::temp_dir().join(format!(
            "load-stop-{}-{}",
            std::process::id(),
            harness::free_port()?
        ));
        let _ = std::fs::remove_file(&stop_file);
        let child = tokio::process::Command::new("python3")
            .arg(harness::repo_root().join("e2e/clients/load.py"))
            .args([
                format!("{}/v1", gateway.url),
                key.to_owned(),
                model.to_owned(),
                stop_file.display().to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child, stop_file })
    }

    /// Stops the load and returns its tally: `{"ok", "failed", "errors", "models"}`.
    async fn finish(self) -> anyhow::Result<serde_json::Value> {
        std::fs::write(&self.stop_file, "")?;
        let output =
            tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output()).await??;
        let _ = std::fs::remove_file(&self.stop_file);
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

fn explicit_deployment(name: &str, served: &str, replicas: i32, revision: Option<&str>) -> String {
    format!(
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\nspec:\n  model: {{uri: hf://Qwen/Qwen3-8B{}}}\n  servedName: {served}\n  placement: {{accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 1}}\n  replicas: {replicas}\n",
        revision
            .map(|r| format!(", revision: {r}"))
            .unwrap_or_default()
    )
}

fn api_key_yaml(name: &str, model: &str) -> String {
    format!(
        "apiVersion: bud.studio/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\nspec: {{models: [{model}]}}\n"
    )
}

async fn pods_of(client: &Client, namespace: &str, deployment: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("bud.studio/model-deployment={deployment}")))
        .await?
        .items)
}

/// Waits until the emulator of `deployment`'s engine pod has logged `fragment`: its startup
/// line names the layout it runs.
async fn wait_engine_log(
    client: &Client,
    ns: &TestNamespace,
    engine_logs: &std::path::Path,
    deployment: &str,
    fragment: &str,
) -> anyhow::Result<()> {
    let pod = pods_of(client, &ns.name, deployment)
        .await?
        .into_iter()
        .next()
        .expect("an engine pod");
    let log = engine_logs.join(format!("{}-{}.log", ns.name, pod.name_any()));
    wait_until(
        &format!("{deployment}'s engine log to read {fragment:?}"),
        Duration::from_secs(30),
        || async {
            Ok(std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains(fragment))
                .map(|_| ()))
        },
    )
    .await
}

/// Scenario: attention data parallelism placed explicitly
/// (`examples/attention-data-parallel.yaml`): the status counts every rank, the engine pod's
/// emulator runs the layout the status names, and the gateway serves it. Then SGLang with the
/// experts spread over two of four accelerators and sliced over pairs (`--ep-size 2`).
async fn attention_data_parallel(
    client: &Client,
    ns: &TestNamespace,
    gateway: &GatewayProcess,
    engine_logs: &std::path::Path,
) -> anyhow::Result<()> {
    let name = "qwen3-30b-a3b-dep";
    harness::kubectl_apply(
        &ns.name,
        &harness::repo_root().join("examples/attention-data-parallel.yaml"),
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let md = wait_ready(&api, name).await?;
    let selected = md.status.and_then(|s| s.selected).expect("selected");
    assert_eq!(
        (
            selected.accelerators_per_replica,
            selected.tensor_parallel,
            selected.attention_data_parallel,
            selected.expert_parallel,
        ),
        (4, 1, Some(4), Some(4)),
        "{selected:?}"
    );
    // Four ranks of 64 (maxBatchSize 256 split per rank for vLLM), the experts over all four.
    wait_engine_log(
        client,
        ns,
        engine_logs,
        name,
        "on 4× h100_sxm (TP1 PP1 DP4 EP4, bf16), up to 256 running requests",
    )
    .await?;
    harness::kubectl_apply_text(&ns.name, &api_key_yaml("dep-key", name))?;
    let key = harness::issued_api_key(client, &ns.name, "dep-key").await?;
    let reply = harness::chat(gateway, &key, name).await?;
    assert!(
        !reply["reply"].as_str().unwrap_or_default().is_empty(),
        "{reply}"
    );

    let mixed = "qwen3-30b-a3b-ep2";
    harness::kubectl_apply_text(
        &ns.name,
        &format!(
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {mixed}}}\nspec: {{model: {{uri: hf://Qwen/Qwen3-30B-A3B}}, engine: {{type: SGLang}}, placement: {{accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 4, expertParallel: 2}}}}\n"
        ),
    )?;
    let selected = wait_ready(&api, mixed)
        .await?
        .status
        .and_then(|s| s.selected)
        .expect("selected");
    assert_eq!(
        (selected.tensor_parallel, selected.expert_parallel),
        (4, Some(2))
    );
    wait_engine_log(
        client,
        ns,
        engine_logs,
        mixed,
        "on 4× h100_sxm (TP4 PP1 EP2, ",
    )
    .await?;

    // Ranks sharing experts sliced across them: deployed as asked, with a Warning that the
    // prediction leaves out their token exchange.
    let sliced = "qwen3-30b-a3b-dp2";
    harness::kubectl_apply_text(
        &ns.name,
        &format!(
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {sliced}}}\nspec: {{model: {{uri: hf://Qwen/Qwen3-30B-A3B}}, engine: {{type: VLLM}}, placement: {{accelerator: NVIDIA-H100-80GB-HBM3, attentionDataParallel: 2}}}}\n"
        ),
    )?;
    let warning = wait_until(
        "a PredictionOptimistic Warning on the data-parallel deployment",
        ROLLOUT,
        || async {
            Ok(harness::events_regarding(client, &ns.name, sliced)
                .await?
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("PredictionOptimistic"))
                .and_then(|e| e.note))
        },
    )
    .await?;
    assert!(warning.contains("Set expertParallel to 2"), "{warning}");
    Ok(())
}

/// Scenario 4: `kubectl scale`, a new model revision, and deletion: children follow, and the
/// gateway stops routing to removed endpoints without a failed request.
async fn scale_revise_delete(
    client: &Client,
    ns: &TestNamespace,
    gateway: &GatewayProcess,
) -> anyhow::Result<()> {
    harness::kubectl_apply_text(
        &ns.name,
        &explicit_deployment("lifecycle", "lifecycle", 2, None),
    )?;
    harness::kubectl_apply_text(&ns.name, &api_key_yaml("lifecycle", "lifecycle"))?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_ready(&api, "lifecycle").await?;
    let key = harness::issued_api_key(client, &ns.name, "lifecycle").await?;
    harness::chat(gateway, &key, "lifecycle").await?;

    let load = Load::start(gateway, &key, "lifecycle")?;
    // A new revision rolls the pods one at a time (maxSurge 0): one replica keeps serving.
    harness::kubectl_apply_text(
        &ns.name,
        &explicit_deployment("lifecycle", "lifecycle", 2, Some("main")),
    )?;
    wait_until("the rollout of the new revision", ROLLOUT, || async {
        let pods = pods_of(client, &ns.name, "lifecycle").await?;
        let rolled = pods.len() == 2
            && pods.iter().all(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .and_then(|c| c[0].args.as_ref())
                    .is_some_and(|a| a.iter().any(|x| x == "main"))
            });
        let md = api.get("lifecycle").await?;
        let ready = md.status.as_ref().is_some_and(|s| {
            s.ready_replicas == 2
                && find_condition(&s.conditions, READY).is_some_and(|c| c.status == "True")
        });
        Ok((rolled && ready).then_some(()))
    })
    .await?;
    // Scale down through the /scale subresource.
    run_tool(
        "kubectl",
        &[
            "scale",
            "--namespace",
            &ns.name,
            "modeldeployment/lifecycle",
            "--replicas",
            "1",
        ],
    )?;
    wait_until("one replica left", ROLLOUT, || async {
        let md = api.get("lifecycle").await?;
        let status = md.status.unwrap_or_default();
        let pods = pods_of(client, &ns.name, "lifecycle").await?;
        Ok((md.spec.replicas == Some(1)
            && status.endpoints.len() == 1
            && status.ready_replicas == 1
            && pods.len() == 1)
            .then_some(()))
    })
    .await?;
    // Requests keep flowing a moment after the last change.
    harness::chat(gateway, &key, "lifecycle").await?;
    let tally = load.finish().await?;
    assert_eq!(
        tally["failed"], 0,
        "requests failed while the deployment changed: {tally}"
    );
    assert!(tally["ok"].as_u64().unwrap_or(0) > 0, "{tally}");

    api.delete("lifecycle", &DeleteParams::default()).await?;
    wait_until(
        "the engine Deployment and pods to be garbage-collected",
        ROLLOUT,
        || async {
            let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name)
                .list(&ListParams::default())
                .await?;
            let pods = pods_of(client, &ns.name, "lifecycle").await?;
            Ok((deployments.items.is_empty() && pods.is_empty()).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Scenario 5: a self-hosted deployment with an external-provider fallback (a mock provider
/// speaking the OpenAI wire format): killing the engine pods fails no request.
async fn fallback(
    client: &Client,
    ns: &TestNamespace,
    gateway: &GatewayProcess,
    runtime: &EngineRuntime,
) -> anyhow::Result<()> {
    let sim = target_binary("BUD_SIM_BIN", "bud-sim")?;
    let port = harness::free_port()?;
    let mut provider = tokio::process::Command::new(&sim)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--model",
            "Qwen/Qwen3-0.6B",
            "--served-model-name",
            "gpt-4o-mini",
            "--time-scale",
            "0.05",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let provider_addr = format!("127.0.0.1:{port}");
    wait_until("the mock provider", Duration::from_secs(30), || async {
        Ok(harness::http_get(&provider_addr, "/v1/models").ok())
    })
    .await?;

    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: provider-credentials}}\nstringData: {{apiKey: sk-test-not-a-secret}}\n---\napiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: chat-provider}}\nspec:\n  provider: {{type: OpenAICompatible, model: gpt-4o-mini, baseUrl: 'http://{provider_addr}/v1', credentialsSecretRef: {{name: provider-credentials, key: apiKey}}}}\n  servedName: chat\n  routing: {{priority: 10}}\n---\n{}",
        explicit_deployment("chat-engine", "chat", 2, None),
        api_key_yaml("chat", "chat"),
    );
    harness::kubectl_apply_text(&ns.name, &yaml)?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    wait_ready(&api, "chat-engine").await?;
    wait_ready(&api, "chat-provider").await?;
    let key = harness::issued_api_key(client, &ns.name, "chat").await?;
    harness::chat(gateway, &key, "chat").await?;

    let load = Load::start(gateway, &key, "chat")?;
    // The engines crash (their pods stay Running): the gateway ejects them and falls back.
    let provider_served = || -> anyhow::Result<f64> {
        let metrics = harness::http_get(&provider_addr, "/metrics")?;
        Ok(metrics
            .lines()
            .filter(|l| l.starts_with("vllm:request_success_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    };
    let before = provider_served()?;
    assert!(
        runtime.crash(&ns.name, "chat-engine") == 2,
        "expected two engine emulators to crash"
    );
    wait_until(
        "the fallback provider to serve 20 requests",
        Duration::from_secs(60),
        || async { Ok((provider_served()? >= before + 20.0).then_some(())) },
    )
    .await?;
    // Replacing the pods brings the engine back.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for pod in pods_of(client, &ns.name, "chat-engine").await? {
        pods.delete(
            &pod.metadata.name.unwrap(),
            &DeleteParams::default().grace_period(0),
        )
        .await?;
    }
    wait_until("the engine to be Ready again", ROLLOUT, || async {
        let md = api.get("chat-engine").await?;
        let pods = pods_of(client, &ns.name, "chat-engine").await?;
        let fresh = pods.iter().all(|p| p.metadata.deletion_timestamp.is_none()) && pods.len() == 2;
        Ok((fresh && md.status.is_some_and(|s| s.ready_replicas == 2)).then_some(()))
    })
    .await?;
    harness::chat(gateway, &key, "chat").await?;
    let tally = load.finish().await?;
    assert!(
        tally["failed"] == 0,
        "requests failed while the engine was down: {tally}"
    );
    let _ = provider.kill().await;
    Ok(())
}

/// Scenario 6: the operator restarted in the middle of a rollout converges without
/// duplicates.
async fn operator_restart(
    client: &Client,
    ns: &TestNamespace,
    operator: &mut Option<OperatorProcess>,
    lease_namespace: &str,
) -> anyhow::Result<()> {
    harness::kubectl_apply_text(
        &ns.name,
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: restart}\nspec:\n  model: {uri: hf://Qwen/Qwen3-8B}\n  workload: {inputTokens: 512, outputTokens: 128, concurrency: 8}\n  slo: {ttftMs: 2000, tpotMs: 100}\n  replicas: 2\n",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    // Stop the operator as soon as it has started the rollout.
    wait_until("the rollout to start", ROLLOUT, || async {
        Ok(Api::<Deployment>::namespaced(client.clone(), &ns.name)
            .get_opt("restart")
            .await?
            .map(|_| ()))
    })
    .await?;
    if let Some(old) = operator.take() {
        old.stop();
    }
    *operator = Some(OperatorProcess::start(&[
        "--lease-namespace",
        lease_namespace,
        "--lease-duration-seconds",
        "3",
    ])?);
    let md = wait_ready(&api, "restart").await?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items;
    assert_eq!(deployments.len(), 1, "duplicate Deployments");
    let sims = Api::<bud_crds::Simulation>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items;
    assert_eq!(sims.len(), 1, "duplicate Simulations");
    assert_eq!(pods_of(client, &ns.name, "restart").await?.len(), 2);
    assert_eq!(md.status.unwrap().ready_replicas, 2);
    Ok(())
}

fn stub_crd(group: &str, version: &str, kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}}}\n  versions:\n  - name: {version}\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
        kind.to_lowercase()
    )
}

/// Scenario 7: autoscaling and multi-node replicas say what is missing until KEDA and
/// LeaderWorkerSet are installed, then render a ScaledObject and a LeaderWorkerSet.
async fn extensions(client: &Client, ns: &TestNamespace) -> anyhow::Result<()> {
    harness::kubectl_apply_text(
        &ns.name,
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: scaled}\nspec:\n  model: {uri: hf://Qwen/Qwen3-8B}\n  placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 1}\n  autoscaling: {minReplicas: 1, maxReplicas: 3, target: '8'}\n---\napiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: wide}\nspec:\n  model: {uri: hf://Qwen/Qwen3-8B}\n  placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 16}\n  replicas: 1\n",
    )?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let condition = |md: &ModelDeployment, type_: &str| {
        md.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, type_))
            .cloned()
    };
    wait_until("Autoscaling=False KedaNotInstalled", ROLLOUT, || async {
        let md = api.get("scaled").await?;
        Ok(condition(&md, "Autoscaling")
            .filter(|c| c.status == "False" && c.reason == "KedaNotInstalled")
            .map(|_| ()))
    })
    .await?;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("scaled")
        .await?;
    assert_eq!(
        deployment.spec.and_then(|s| s.replicas),
        Some(1),
        "runs minReplicas without KEDA"
    );
    let wide = wait_reason(&api, "wide", "LeaderWorkerSetNotInstalled").await?;
    let message = condition(&wide, READY).unwrap().message;
    assert!(
        message.contains("16 accelerators") && message.contains("8 per node"),
        "{message}"
    );

    let crds = format!(
        "{}---\n{}",
        stub_crd("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
        stub_crd(
            "leaderworkerset.x-k8s.io",
            "v1",
            "LeaderWorkerSet",
            "leaderworkersets"
        )
    );
    harness::kubectl_apply_text(&ns.name, &crds)?;
    let result = async {
        run_tool(
            "kubectl",
            &[
                "wait",
                "--for",
                "condition=Established",
                "--timeout",
                "30s",
                "crd/scaledobjects.keda.sh",
                "crd/leaderworkersets.leaderworkerset.x-k8s.io",
            ],
        )?;
        // Nudge both (a CRD appearing is no event the operator watches).
        for name in ["scaled", "wide"] {
            run_tool(
                "kubectl",
                &[
                    "annotate",
                    "--overwrite",
                    "--namespace",
                    &ns.name,
                    &format!("modeldeployment/{name}"),
                    "bud.studio/nudge=1",
                ],
            )?;
        }
        wait_until(
            "the ScaledObject and the LeaderWorkerSet",
            ROLLOUT,
            || async {
                let scaled = run_tool(
                    "kubectl",
                    &[
                        "get",
                        "--namespace",
                        &ns.name,
                        "scaledobjects.keda.sh",
                        "scaled",
                        "-o",
                        "jsonpath={.spec.maxReplicaCount}",
                    ],
                )
                .ok();
                let lws = run_tool(
                    "kubectl",
                    &[
                        "get",
                        "--namespace",
                        &ns.name,
                        "leaderworkersets.leaderworkerset.x-k8s.io",
                        "wide",
                        "-o",
                        "jsonpath={.spec.leaderWorkerTemplate.size}",
                    ],
                )
                .ok();
                let md = api.get("scaled").await?;
                let autoscaling = condition(&md, "Autoscaling").is_some_and(|c| c.status == "True");
                Ok(
                    (scaled.as_deref() == Some("3") && lws.as_deref() == Some("2") && autoscaling)
                        .then_some(()),
                )
            },
        )
        .await
    }
    .await;
    run_tool(
        "kubectl",
        &[
            "delete",
            "crd",
            "scaledobjects.keda.sh",
            "leaderworkersets.leaderworkerset.x-k8s.io",
            "--wait=true",
        ],
    )?;
    result
}

#[tokio::test]
async fn model_deployments_from_apply_to_chat_completion() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    harness::apply_fleet(&client, &harness::default_fleet()?).await?;
    let control = TestNamespace::create(&client, "md-operator").await?;
    let mut operator = Some(OperatorProcess::start(&[
        "--lease-namespace",
        &control.name,
        "--lease-duration-seconds",
        "3",
    ])?);
    let engine_logs = std::env::temp_dir().join(format!("{}-engines", control.name));
    let runtime = EngineRuntime::start(client.clone(), vec![], engine_logs.clone())?;
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
    for scenario in [
        "quickstart",
        "attention-dp",
        "infeasible",
        "capacity",
        "lifecycle",
        "fallback",
        "restart",
    ] {
        let ns = TestNamespace::create(&client, scenario).await?;
        // A failed assertion in one scenario must not skip the clean-up and the others.
        let run = async {
            match scenario {
                "quickstart" => quickstart(&client, &ns, &gateway, clickhouse.as_deref()).await,
                "attention-dp" => {
                    attention_data_parallel(&client, &ns, &gateway, &engine_logs).await
                }
                "infeasible" => infeasible(&client, &ns).await,
                "capacity" => insufficient_capacity(&client, &ns).await,
                "lifecycle" => scale_revise_delete(&client, &ns, &gateway).await,
                "fallback" => fallback(&client, &ns, &gateway, &runtime).await,
                "restart" => operator_restart(&client, &ns, &mut operator, &control.name).await,
                _ => extensions(&client, &ns).await,
            }
        };
        let result = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(anyhow::anyhow!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
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
