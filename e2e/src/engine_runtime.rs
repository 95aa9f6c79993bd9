//! Plays the kubelet's container runtime for engine pods on the local control plane: for
//! each engine pod kwok reports Running, it starts the simulator's engine emulator
//! (`bud-sim serve`) at the pod's 127.x address with the pod's own container arguments, and
//! stops it when the pod goes away. Engine flags of SGLang, TGI, llama.cpp and TensorRT-LLM
//! are translated to the vLLM spellings the emulator takes (SGLang's and TensorRT-LLM's
//! data-parallel attention to vLLM's per-rank counts).

use crate::harness::target_binary;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::process::{Child, Command};

/// Label selecting engine pods (set by the operator's renderer).
pub const ENGINE_SELECTOR: &str = "app.kubernetes.io/component=engine";
const MODEL_ID_ANNOTATION: &str = "bud.studio/model-id";
const ACCELERATOR_ANNOTATION: &str = "bud.studio/accelerator";
/// The options file the pod carries for its engine (TensorRT-LLM's `--extra_llm_api_options`).
const ENGINE_OPTIONS_ANNOTATION: &str = "bud.studio/engine-options";

/// The flags of `bud-sim serve` for an engine pod: the engine its container's command starts
/// (`trtllm-serve`, `sglang.launch_server`; vLLM otherwise), the layout, batch limit,
/// context and quantization its arguments give, in vLLM's spelling, and from the pod's
/// annotations the model's architecture and the accelerator. Deployments run their engine at
/// the checkpoint's precision or one it quantizes to while loading (with a flag), so no
/// flag means the checkpoint's own.
pub fn emulator_args(
    container_command: &[String],
    container_args: &[String],
    annotations: &BTreeMap<String, String>,
    host: &str,
    port: u16,
) -> Vec<String> {
    let model_id = annotations.get(MODEL_ID_ANNOTATION).map(String::as_str);
    let mut out = Vec::new();
    let engine = container_command.iter().find_map(|c| {
        if c.contains("trtllm") {
            Some("trtllm")
        } else if c.contains("sglang") {
            Some("sglang")
        } else {
            None
        }
    });
    if let Some(engine) = engine {
        out.extend(["--engine".to_owned(), engine.to_owned()]);
    }
    let mut model = None;
    let mut served = None;
    // SGLang's data-parallel attention: `--dp-size` ranks under `--enable-dp-attention`.
    let (mut sglang_dp, mut dp_attention) = (1u32, false);
    let mut i = 0;
    // `vllm serve MODEL` and `trtllm-serve MODEL` name the model positionally.
    if let Some(first) = container_args.first().filter(|a| !a.starts_with('-')) {
        model = Some(first.clone());
        i = 1;
    }
    while i < container_args.len() {
        let flag = container_args[i].as_str();
        let value = container_args.get(i + 1).cloned();
        let translated = match flag {
            "--model" | "--model-path" | "--model-id" | "--hf-repo" => {
                model = value;
                i += 2;
                continue;
            }
            "--served-model-name" | "--alias" => {
                served = value;
                i += 2;
                continue;
            }
            "--tensor-parallel-size" | "--tp-size" | "--num-shard" | "--tp_size" => {
                Some("--tensor-parallel-size")
            }
            "--pipeline-parallel-size" | "--pp-size" | "--pp_size" => {
                Some("--pipeline-parallel-size")
            }
            "--max-num-seqs"
            | "--max-running-requests"
            | "--max-concurrent-requests"
            | "--parallel"
            | "--max_batch_size" => Some("--max-num-seqs"),
            "--max-model-len" | "--context-length" | "--max-total-tokens" | "--ctx-size" => {
                Some("--max-model-len")
            }
            "--quantization" => Some("--quantization"),
            "--data-parallel-size" => Some("--data-parallel-size"),
            "--dp-size" => {
                sglang_dp = value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(1);
                i += 2;
                continue;
            }
            "--enable-dp-attention" => {
                dp_attention = true;
                i += 1;
                continue;
            }
            // vLLM spreads the experts over every rank with a switch, SGLang and
            // TensorRT-LLM over an expert-parallel size of their ranks (all or part).
            "--enable-expert-parallel" => {
                out.push("--enable-expert-parallel".into());
                i += 1;
                continue;
            }
            "--ep-size" | "--ep_size" => Some("--expert-parallel-size"),
            // Where the engine listens is the pod's business; the emulator gets the pod's address.
            "--host" | "--hostname" | "--port" => None,
            _ => {
                i += 1;
                continue;
            }
        };
        if let (Some(name), Some(v)) = (translated, value) {
            out.extend([name.to_owned(), v]);
        }
        i += 2;
    }
    // Data-parallel attention in vLLM's per-rank counts. SGLang counts every rank in --tp-size
    // and the whole server in --max-running-requests; TensorRT-LLM, with
    // `enable_attention_dp` in the options file the pod carries, runs attention on each of its
    // --tp_size ranks alone and limits the batch per rank already.
    let value_of = |out: &[String], flag: &str| {
        out.windows(2)
            .find(|w| w[0] == flag)
            .and_then(|w| w[1].parse::<u32>().ok())
    };
    let trtllm_dp = engine == Some("trtllm")
        && annotations
            .get(ENGINE_OPTIONS_ANNOTATION)
            .is_some_and(|o| o.contains("enable_attention_dp: true"));
    let (ranks, per_server): (u32, &[&str]) = if dp_attention && sglang_dp > 1 {
        (sglang_dp, &["--tensor-parallel-size", "--max-num-seqs"])
    } else if trtllm_dp {
        (
            value_of(&out, "--tensor-parallel-size").unwrap_or(1),
            &["--tensor-parallel-size"],
        )
    } else {
        (1, &[])
    };
    if ranks > 1 {
        for j in 1..out.len() {
            if per_server.contains(&out[j - 1].as_str())
                && let Ok(v) = out[j].parse::<u32>()
            {
                out[j] = (v / ranks).max(1).to_string();
            }
        }
        out.extend(["--data-parallel-size".into(), ranks.to_string()]);
    }
    // The annotation names the architecture; the engine answers to its served name, or
    // (without one) to its model argument.
    let served = served.or_else(|| model.clone().filter(|m| Some(m.as_str()) != model_id));
    if let Some(m) = model_id.map(str::to_owned).or(model) {
        out.extend(["--model".into(), m]);
    }
    if let Some(s) = served {
        out.extend(["--served-model-name".into(), s]);
    }
    if let Some(a) = annotations.get(ACCELERATOR_ANNOTATION) {
        out.extend(["--accelerator".into(), a.clone()]);
    }
    out.extend([
        "--host".into(),
        host.to_owned(),
        "--port".into(),
        port.to_string(),
    ]);
    out
}

/// A running engine emulator.
struct Engine {
    child: Child,
    address: String,
    /// `namespace/pod`.
    pod: String,
}

/// How long a terminating pod's emulator keeps serving, as a kubelet's grace period lets an
/// engine finish its requests while routers stop sending new ones.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Emulators running now, by pod uid, and those draining after their pod terminated, by
/// address (a new pod may get the same address; its emulator then replaces the draining one).
#[derive(Default)]
struct Engines {
    running: HashMap<String, Engine>,
    draining: HashMap<String, Child>,
}

/// The runtime; stops every emulator when dropped.
pub struct EngineRuntime {
    task: tokio::task::JoinHandle<()>,
    engines: Arc<Mutex<Engines>>,
}

impl EngineRuntime {
    /// Watches engine pods in every namespace of `client`'s cluster; `extra_args` are added
    /// to every emulator (e.g. `--time-scale 0.1`). Logs go to `log_dir`.
    pub fn start(
        client: Client,
        extra_args: Vec<String>,
        log_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let bin = target_binary("BUD_SIM_BIN", "bud-sim")?;
        std::fs::create_dir_all(&log_dir)?;
        let engines: Arc<Mutex<Engines>> = Arc::default();
        let shared = engines.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client);
            let stream = watcher(pods, watcher::Config::default().labels(ENGINE_SELECTOR))
                .default_backoff()
                .touched_objects();
            futures::pin_mut!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(pod)) => {
                        reconcile_pod(&pod, &bin, &extra_args, &log_dir, &shared).await
                    }
                    Ok(None) => break,
                    Err(err) => eprintln!("engine runtime: watch error: {err}"),
                }
            }
        });
        Ok(Self { task, engines })
    }

    /// Kills the emulators of pods in `namespace` whose name starts with `prefix`, as an
    /// engine crash would, leaving the pods Running; returns how many were killed.
    pub fn crash(&self, namespace: &str, prefix: &str) -> usize {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = format!("{namespace}/{prefix}");
        let mut killed = 0;
        for engine in engines
            .running
            .values_mut()
            .filter(|e| e.pod.starts_with(&wanted))
        {
            if engine.child.start_kill().is_ok() {
                killed += 1;
            }
        }
        killed
    }

    /// Addresses (`ip:port`) of the emulators running now.
    pub fn addresses(&self) -> Vec<String> {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        engines
            .running
            .retain(|_, e| e.child.try_wait().map(|s| s.is_none()).unwrap_or(false));
        engines
            .running
            .values()
            .map(|e| e.address.clone())
            .collect()
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        self.task.abort();
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut engine) in engines.running.drain() {
            let _ = engine.child.start_kill();
        }
        for (_, mut child) in engines.draining.drain() {
            let _ = child.start_kill();
        }
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn reconcile_pod(
    pod: &Pod,
    bin: &Path,
    extra_args: &[String],
    log_dir: &Path,
    shared: &Arc<Mutex<Engines>>,
) {
    let key = pod
        .uid()
        .unwrap_or_else(|| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()));
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    if !is_running(pod) || ip.is_none() {
        let running = lock().running.remove(&key);
        if let Some(engine) = running {
            let address = engine.address.clone();
            let pid = engine.child.id();
            lock().draining.insert(address.clone(), engine.child);
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN).await;
                let mut engines = shared.lock().unwrap_or_else(|e| e.into_inner());
                // Unless a new pod's engine took the address meanwhile (and stopped this one).
                if engines.draining.get(&address).map(Child::id) == Some(pid)
                    && let Some(mut child) = engines.draining.remove(&address)
                {
                    let _ = child.start_kill();
                }
            });
        }
        return;
    }
    if lock().running.contains_key(&key) {
        return;
    }
    let ip = ip.unwrap_or_default();
    let container = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .find(|c| c.name == "engine")
            .or(s.containers.first())
    });
    let container_args = container.and_then(|c| c.args.clone()).unwrap_or_default();
    let container_command = container
        .and_then(|c| c.command.clone())
        .unwrap_or_default();
    let port = container
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.first())
        .map(|p| p.container_port as u16)
        .unwrap_or(8000);
    let annotations = pod.annotations();
    let mut args = vec!["serve".to_owned()];
    args.extend(emulator_args(
        &container_command,
        &container_args,
        annotations,
        &ip,
        port,
    ));
    args.extend(extra_args.iter().cloned());
    // A pod given a terminated pod's address: that pod's draining engine must be gone before
    // this one binds the address.
    let address = format!("{ip}:{port}");
    let previous = lock().draining.remove(&address);
    if let Some(mut child) = previous {
        let _ = child.kill().await;
    }
    let log_path = log_dir.join(format!(
        "{}-{}.log",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ));
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(err) => {
            eprintln!(
                "engine runtime: cannot create {}: {err}",
                log_path.display()
            );
            return;
        }
    };
    let stderr = log
        .try_clone()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    match Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => {
            lock().running.insert(
                key,
                Engine {
                    child,
                    address,
                    pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                },
            );
        }
        Err(err) => eprintln!("engine runtime: cannot start {}: {err}", bin.display()),
    }
}

/// Runs the runtime until Ctrl-C (the `bud-e2e engine-runtime` command).
pub async fn run_until_interrupted(
    client: Client,
    extra_args: Vec<String>,
    log_dir: PathBuf,
) -> anyhow::Result<()> {
    let runtime = EngineRuntime::start(client, extra_args, log_dir)?;
    tokio::signal::ctrl_c().await?;
    drop(runtime);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotations_read_are_the_ones_the_operator_writes() {
        // The operator's renderer is only a dev-dependency here, so its names are repeated.
        use bud_controllers::modeldeployment::render;
        assert_eq!(MODEL_ID_ANNOTATION, render::MODEL_ID_ANNOTATION);
        assert_eq!(ACCELERATOR_ANNOTATION, render::ACCELERATOR_ANNOTATION);
        assert_eq!(ENGINE_OPTIONS_ANNOTATION, render::ENGINE_OPTIONS_ANNOTATION);
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn vllm_arguments_pass_through_with_the_pods_address() {
        let args = strings(&[
            "--model",
            "Qwen/Qwen3-8B",
            "--served-model-name",
            "qwen",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--tensor-parallel-size",
            "2",
            "--max-num-seqs",
            "64",
            "--enable-prefix-caching",
            "--enable-expert-parallel",
        ]);
        let command = strings(&["python3", "-m", "vllm.entrypoints.openai.api_server"]);
        let out = emulator_args(
            &command,
            &args,
            &annotations(&[(ACCELERATOR_ANNOTATION, "NVIDIA-H100-80GB-HBM3")]),
            "127.1.1.5",
            8000,
        );
        assert_eq!(
            out,
            strings(&[
                "--tensor-parallel-size",
                "2",
                "--max-num-seqs",
                "64",
                "--enable-expert-parallel",
                "--model",
                "Qwen/Qwen3-8B",
                "--served-model-name",
                "qwen",
                "--accelerator",
                "NVIDIA-H100-80GB-HBM3",
                "--host",
                "127.1.1.5",
                "--port",
                "8000"
            ])
        );
    }

    #[test]
    fn other_engines_are_translated_and_the_annotation_names_the_model() {
        let args = strings(&[
            "--model-path",
            "/models/model",
            "--served-model-name",
            "q",
            "--tp-size",
            "4",
            "--max-running-requests",
            "32",
            "--ep-size",
            "2",
        ]);
        let command = strings(&["python3", "-m", "sglang.launch_server"]);
        let out = emulator_args(
            &command,
            &args,
            &annotations(&[(MODEL_ID_ANNOTATION, "Qwen/Qwen3-8B")]),
            "127.1.1.6",
            8000,
        );
        assert!(out.windows(2).any(|w| w == ["--engine", "sglang"]));
        // The experts spread over two of the four ranks and sliced over the other two.
        assert!(out.windows(2).any(|w| w == ["--expert-parallel-size", "2"]));
        assert!(out.windows(2).any(|w| w == ["--tensor-parallel-size", "4"]));
        assert!(out.windows(2).any(|w| w == ["--max-num-seqs", "32"]));
        assert!(out.windows(2).any(|w| w == ["--model", "Qwen/Qwen3-8B"]));
        assert!(out.windows(2).any(|w| w == ["--served-model-name", "q"]));
    }

    #[test]
    fn sglang_data_parallel_attention_becomes_vllm_data_parallel_ranks() {
        // What the operator renders for eight ranks of TP 1 with 1,024 running requests.
        let args = strings(&[
            "--model-path",
            "deepseek-ai/DeepSeek-R1",
            "--tp-size",
            "8",
            "--dp-size",
            "8",
            "--enable-dp-attention",
            "--pp-size",
            "1",
            "--ep-size",
            "8",
            "--max-running-requests",
            "1024",
        ]);
        let command = strings(&["python3", "-m", "sglang.launch_server"]);
        let out = emulator_args(&command, &args, &BTreeMap::new(), "127.1.1.7", 8000);
        for pair in [
            ["--tensor-parallel-size", "1"],
            ["--data-parallel-size", "8"],
            ["--max-num-seqs", "128"],
        ] {
            assert!(out.windows(2).any(|w| w == pair), "{pair:?} in {out:?}");
        }
        assert!(out.windows(2).any(|w| w == ["--expert-parallel-size", "8"]));
    }

    #[test]
    fn tensorrt_llm_attention_data_parallelism_comes_from_the_pods_options_file() {
        let args = strings(&[
            "deepseek-ai/DeepSeek-R1",
            "--tp_size",
            "8",
            "--ep_size",
            "8",
            "--max_batch_size",
            "128",
            "--extra_llm_api_options",
            "/etc/bud/engine-options/options.yaml",
        ]);
        let command = strings(&["trtllm-serve"]);
        let dep = emulator_args(
            &command,
            &args,
            &annotations(&[(ENGINE_OPTIONS_ANNOTATION, "enable_attention_dp: true\n")]),
            "127.1.1.8",
            8000,
        );
        for pair in [
            ["--tensor-parallel-size", "1"],
            ["--data-parallel-size", "8"],
            ["--max-num-seqs", "128"],
        ] {
            assert!(dep.windows(2).any(|w| w == pair), "{pair:?} in {dep:?}");
        }
        // Without the option every rank shares attention by tensor parallelism.
        let tep = emulator_args(&command, &args, &BTreeMap::new(), "127.1.1.8", 8000);
        assert!(tep.windows(2).any(|w| w == ["--tensor-parallel-size", "8"]));
        assert!(!tep.contains(&"--data-parallel-size".to_owned()), "{tep:?}");
    }

    #[test]
    fn a_positional_model_is_served_under_its_own_name() {
        let args = strings(&[
            "/models/model",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--tp_size",
            "2",
            "--ep_size",
            "1",
        ]);
        let out = emulator_args(
            &strings(&["trtllm-serve"]),
            &args,
            &annotations(&[(MODEL_ID_ANNOTATION, "Qwen/Qwen3-8B")]),
            "127.1.1.7",
            8000,
        );
        assert!(out.windows(2).any(|w| w == ["--engine", "trtllm"]));
        assert!(
            out.windows(2).any(|w| w == ["--expert-parallel-size", "1"]),
            "EP 1 slices the experts: {out:?}"
        );
        assert!(out.windows(2).any(|w| w == ["--model", "Qwen/Qwen3-8B"]));
        assert!(
            out.windows(2)
                .any(|w| w == ["--served-model-name", "/models/model"])
        );
        assert!(out.windows(2).any(|w| w == ["--tensor-parallel-size", "2"]));
    }
}
