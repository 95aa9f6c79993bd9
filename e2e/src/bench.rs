//! The reconcile benchmark: N ModelDeployments of mixed sizes (explicit placements of small
//! to 70B models and SLO-driven ones that own Simulations) applied at once to a large
//! simulated fleet; measures the time until all are Ready and the operator's memory.

use crate::harness::{self, TestNamespace};
use bud_crds::ModelDeployment;
use bud_crds::conditions::{READY, is_true};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

/// One benchmark's outcome.
#[derive(Debug)]
pub struct ReconcileReport {
    pub deployments: usize,
    pub simulated: usize,
    pub ready_after: Duration,
    pub first_ready_after: Duration,
    pub operator_peak_rss_kib: u64,
    pub operator_final_rss_kib: u64,
}

/// The i-th benchmark deployment's spec: four shapes out of five are explicit placements
/// (1-4 GPUs, 0.6B to 70B), the fifth is SLO-driven and owns a Simulation.
pub fn deployment_yaml(i: usize) -> String {
    let shapes = [
        ("hf://Qwen/Qwen3-0.6B", "NVIDIA-L4", 1),
        ("hf://Qwen/Qwen3-8B", "NVIDIA-H100-80GB-HBM3", 1),
        ("hf://Qwen/Qwen3-30B-A3B", "NVIDIA-H100-80GB-HBM3", 2),
        ("hf://meta-llama/Llama-3.1-70B", "NVIDIA-A100-SXM4-80GB", 4),
    ];
    if i % 5 == 4 {
        return format!(
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: bench-{i}}}\nspec:\n  model: {{uri: hf://Qwen/Qwen3-8B}}\n  workload: {{inputTokens: 1024, outputTokens: 256, concurrency: 8}}\n  slo: {{ttftMs: 400, tpotMs: 25}}\n  replicas: 1\n"
        );
    }
    let (uri, accelerator, tp) = shapes[i % shapes.len()];
    format!(
        "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: bench-{i}}}\nspec:\n  model: {{uri: {uri}}}\n  placement: {{accelerator: {accelerator}, tensorParallel: {tp}}}\n  replicas: 1\n"
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Applies `count` deployments into a new namespace and waits until all are Ready, sampling
/// the memory of the operator process `operator_pid`.
pub async fn reconcile(
    client: &Client,
    count: usize,
    operator_pid: u32,
    timeout: Duration,
) -> anyhow::Result<ReconcileReport> {
    let ns = TestNamespace::create(client, "bench").await?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns.name);
    let params = PatchParams::apply(harness::FIELD_MANAGER).force();
    let started = Instant::now();
    for i in 0..count {
        let md: ModelDeployment = serde_yaml::from_str(&deployment_yaml(i))?;
        api.patch(&format!("bench-{i}"), &params, &Patch::Apply(&md))
            .await?;
    }
    let mut peak = rss_kib(operator_pid);
    let mut first_ready = None;
    loop {
        peak = peak.max(rss_kib(operator_pid));
        let list = api.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|md| {
                md.status
                    .as_ref()
                    .is_some_and(|s| is_true(&s.conditions, READY))
            })
            .count();
        if ready > 0 && first_ready.is_none() {
            first_ready = Some(started.elapsed());
        }
        if ready == count {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "only {ready} of {count} ModelDeployments Ready after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready_after = started.elapsed();
    let report = ReconcileReport {
        deployments: count,
        simulated: (0..count).filter(|i| i % 5 == 4).count(),
        ready_after,
        first_ready_after: first_ready.unwrap_or(ready_after),
        operator_peak_rss_kib: peak.max(rss_kib(operator_pid)),
        operator_final_rss_kib: rss_kib(operator_pid),
    };
    ns.delete().await?;
    Ok(report)
}

impl ReconcileReport {
    /// The report as Markdown.
    pub fn markdown(&self, command: &str) -> String {
        format!(
            "# Reconcile benchmark\n\n`{command}`\n\n| measure | value |\n|---|---|\n| ModelDeployments | {} ({} SLO-driven with a Simulation each, the rest explicit placements of 0.6B to 70B models on 1-4 GPUs) |\n| first Ready after | {:.1} s |\n| all Ready after | {:.1} s |\n| operator peak RSS | {:.1} MiB |\n| operator RSS at the end | {:.1} MiB |\n\nFleet: e2e/bench/fleet-large.yaml (110 kwok nodes, 600 GPUs) on the local control plane; operator release build; one machine with 2 cores running the control plane, kwok and the operator together.\n",
            self.deployments,
            self.simulated,
            self.first_ready_after.as_secs_f64(),
            self.ready_after.as_secs_f64(),
            self.operator_peak_rss_kib as f64 / 1024.0,
            self.operator_final_rss_kib as f64 / 1024.0,
        )
    }
}
