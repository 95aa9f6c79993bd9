//! `bud-sim`: a thin command line over the `bud_simulator` library.

use bud_simulator::batch::predict_csv;
use bud_simulator::calibrate::{
    SPLIT_PARAMS_FILE, calibrate, evaluate, load_samples, refit_on_every_row,
};
use bud_simulator::hardware::HardwareCatalog;
use bud_simulator::model::{ModelCatalog, ModelSpec};
use bud_simulator::params::FittedParams;
use bud_simulator::published::{self, published_throughput};
use bud_simulator::search::{CandidatePool, Objective, PlanRequest, PlanResult, SearchMode, Slo};
use bud_simulator::serve::{Emulator, EmulatorConfig};
use bud_simulator::{Engine, Precision, ServingConfig, Workload, plan};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The published-throughput check of `params` ([`published_throughput`]), when the data
/// directory has the published figures.
fn published_check(
    data: &std::path::Path,
    params: &FittedParams,
) -> Result<Option<Vec<published::PublishedThroughput>>, String> {
    if !data.join(published::PUBLIC_ANCHORS_FILE).exists() {
        return Ok(None);
    }
    published_throughput(data, params)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The heading of ACCURACY.md's published-throughput table.
const PUBLISHED_HEADING: &str = "Published TensorRT-LLM 1.0 maximum-load throughput (`trtllm-bench`, perf-overview.md, in `public_anchors.csv`; never fitted, so both parameter sets are scored): Llama-3.1-8B, Llama-3.3-70B and Llama-3.1-405B in FP8 on H100 and H200, each predicted at a load beyond what the replica holds:";

/// `println!` that ends the command quietly when its reader has gone
/// (`bud-sim plan --json | head`), as other Unix tools do, instead of panicking.
macro_rules! println {
    () => {
        print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        print_line(format_args!($($arg)*))
    };
}

fn print_line(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        panic!("writing to stdout: {e}");
    }
}

#[derive(Parser)]
#[command(
    name = "bud-sim",
    version,
    about = "Bud Foundry simulator: plan deployments, predict latency, emulate an engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    /// The cheapest configurations per hour that meet the SLO.
    LowestCost,
    /// The most output tokens/s per dollar among configurations that meet the SLO.
    ThroughputPerDollar,
}

#[derive(Clone, Copy, ValueEnum)]
enum SearchArg {
    /// Exhaustive for normal spaces, NSGA-II for very large ones.
    Auto,
    /// Every candidate, with pruning.
    Exhaustive,
    /// Seeded NSGA-II.
    Genetic,
}

#[derive(Subcommand)]
enum Command {
    /// Find the cheapest (or most cost-efficient) configurations meeting an SLO.
    Plan {
        /// A YAML (or JSON) PlanRequest; flags below override its fields.
        #[arg(long)]
        request: Option<PathBuf>,
        /// Model id (e.g. meta-llama/Llama-3.1-70B-Instruct).
        #[arg(long)]
        model: Option<String>,
        /// A config.json for a model not in the catalog.
        #[arg(long)]
        model_config: Option<PathBuf>,
        /// Input (prompt) tokens per request (default 1024).
        #[arg(long)]
        input_tokens: Option<u32>,
        /// Output tokens per request (default 256).
        #[arg(long)]
        output_tokens: Option<u32>,
        /// Total concurrent users (default 16).
        #[arg(long)]
        concurrency: Option<u32>,
        /// SLO: largest mean time to first token, ms.
        #[arg(long)]
        ttft_ms: Option<f64>,
        /// SLO: largest mean time per output token, ms.
        #[arg(long)]
        tpot_ms: Option<f64>,
        /// SLO: largest mean end-to-end latency, ms.
        #[arg(long)]
        e2e_ms: Option<f64>,
        /// SLO: smallest output tokens/s per user.
        #[arg(long)]
        min_tokens_per_user: Option<f64>,
        /// Candidate pool `ACCELERATOR:COUNT[:PRICE_PER_HOUR[:CLUSTER]]`, repeatable.
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// What to rank by (default lowest-cost).
        #[arg(long, value_enum)]
        objective: Option<ObjectiveArg>,
        /// Allowed engine, repeatable (vllm, sglang, trtllm, llamacpp).
        #[arg(long = "engine")]
        engines: Vec<String>,
        /// Allowed precision, repeatable (bf16, fp8, int4, fp4).
        #[arg(long = "precision")]
        precisions: Vec<String>,
        /// Only precisions an engine serves from the model's own checkpoint: its own, and FP8
        /// on vLLM and SGLang, which quantize while loading (what a ModelDeployment plans
        /// with); otherwise narrower ones assume a checkpoint quantized offline.
        #[arg(long)]
        checkpoint_precisions_only: bool,
        /// Configurations to list (default 10).
        #[arg(long)]
        max_results: Option<usize>,
        /// Search strategy (default auto: exhaustive up to 200,000 candidate shapes, NSGA-II
        /// above).
        #[arg(long, value_enum)]
        search: Option<SearchArg>,
        /// Seed of the NSGA-II search (default 42); the same seed gives the same plan.
        #[arg(long)]
        seed: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Predict one serving configuration (flags, with its memory breakdown), or every row of a
    /// scenarios CSV (--input and --output).
    Predict {
        /// Scenarios CSV with the columns of calibration.csv (the measured ones may be absent).
        #[arg(long, requires = "output", conflicts_with = "model")]
        input: Option<PathBuf>,
        /// Directory with `<org>--<name>_config.json` files (falls back to the built-in catalog).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Where to write `id,ttft_ms,tpot_ms,...` (one row per input row).
        #[arg(long, requires = "input")]
        output: Option<PathBuf>,
        /// Fitted parameters (default: the committed ones).
        #[arg(long)]
        params: Option<PathBuf>,
        #[command(flatten)]
        one: OneConfigurationArgs,
    },
    /// Fit the model's parameters on the training split of the measured data (every modelling
    /// choice and every accuracy figure), then refit on every row with the same choices (the
    /// parameters the simulator ships).
    Calibrate {
        /// Directory with calibration.csv, models/ and the CPU measurement files.
        #[arg(long, default_value = "simulator/data")]
        data: PathBuf,
        /// Where the parameters fitted on every row go (the shipped ones).
        #[arg(long, default_value = "simulator/data/fitted_params.json")]
        out: PathBuf,
        /// Where the parameters fitted on the training split only go (the accuracy figures';
        /// default: beside OUT, named `<OUT stem>_split.json`).
        #[arg(long)]
        split_out: Option<PathBuf>,
        /// Also write the held-back accuracy report (Markdown) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Coordinate-descent rounds of the analytic parameters' fit (per engine).
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Never keep the learned correction, even when it beats the analytic model.
        #[arg(long)]
        no_correction: bool,
    },
    /// Print the held-back accuracy report of a parameter set.
    Accuracy {
        /// Directory with calibration.csv, models/ and the CPU measurement files.
        #[arg(long, default_value = "simulator/data")]
        data: PathBuf,
        /// Parameters to score (default: DATA/fitted_params_split.json, the training-split fit;
        /// the shipped parameters have seen the held-back rows).
        #[arg(long)]
        params: Option<PathBuf>,
    },
    /// Time the search: a 70B model over a six-accelerator inventory.
    BenchPlan {
        /// Timed runs (the report gives their median and spread).
        #[arg(long, default_value_t = 20)]
        iterations: u32,
        /// Force the NSGA-II search instead of the exhaustive one.
        #[arg(long)]
        genetic: bool,
    },
    /// List the hardware and model catalogs.
    Catalog,
    /// Run the OpenAI-compatible engine emulator (accepts vLLM container arguments).
    Serve(ServeArgs),
}

/// `bud-sim predict` for one serving configuration.
#[derive(clap::Args, Clone)]
struct OneConfigurationArgs {
    /// Model id (catalog, or `<org>--<name>_config.json` in --models-dir).
    #[arg(long)]
    model: Option<String>,
    /// A config.json for a model not in the catalog (needs --model as its name).
    #[arg(long, requires = "model")]
    model_config: Option<PathBuf>,
    /// Accelerator id or node label value (e.g. NVIDIA-H100-80GB-HBM3).
    #[arg(long, default_value = "h100_sxm")]
    accelerator: String,
    /// Serving engine: vllm, sglang, trtllm or llamacpp.
    #[arg(long, default_value = "vllm")]
    engine: String,
    /// Engine release, e.g. 0.18.0 (releases the data measured have their own multipliers).
    #[arg(long)]
    engine_version: Option<String>,
    /// Tensor parallel size (per attention data-parallel rank).
    #[arg(long, default_value_t = 1)]
    tp: u32,
    /// Pipeline parallel size.
    #[arg(long, default_value_t = 1)]
    pp: u32,
    /// Attention data-parallel ranks, each with TP devices.
    #[arg(long, default_value_t = 1)]
    attention_dp: u32,
    /// MoE tensor parallel size (default: every device of the replica when --moe-ep is 1).
    #[arg(long)]
    moe_tp: Option<u32>,
    /// MoE expert parallel size (default 1).
    #[arg(long)]
    moe_ep: Option<u32>,
    /// Weight precision of dense layers: bf16, fp8, int4, fp4 (default: the model's own).
    #[arg(long)]
    precision: Option<String>,
    /// Precision of routed experts (default: --precision).
    #[arg(long)]
    expert_precision: Option<String>,
    /// KV cache precision (default: fp8 with fp8/fp4 weights, else bf16).
    #[arg(long)]
    kv_precision: Option<String>,
    /// Largest batch (vLLM's --max-num-seqs; default per engine).
    #[arg(long)]
    max_batch: Option<u32>,
    /// Share of device memory the engine may use (default per engine).
    #[arg(long)]
    gpu_memory_utilization: Option<f64>,
    /// Input (prompt) tokens per request.
    #[arg(long, default_value_t = 1024)]
    input_tokens: u32,
    /// Output tokens per request.
    #[arg(long, default_value_t = 256)]
    output_tokens: u32,
    /// Concurrent users of the replica (a closed loop).
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Print the prediction as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Parser, Clone)]
#[command(args_override_self = true)]
struct ServeArgs {
    /// Model id, or a directory holding config.json (vLLM's --model).
    #[arg(long)]
    model: Option<String>,
    /// Positional model, as in `vllm serve MODEL`.
    #[arg(value_name = "MODEL")]
    positional_model: Option<String>,
    /// Names the server answers to (default: --model).
    #[arg(long = "served-model-name", num_args = 1..)]
    served_model_name: Vec<String>,
    /// GPUs each layer is split over (vLLM's --tensor-parallel-size).
    #[arg(long = "tensor-parallel-size", short = 't', default_value_t = 1)]
    tensor_parallel_size: u32,
    /// Pipeline stages (vLLM's --pipeline-parallel-size).
    #[arg(long = "pipeline-parallel-size", default_value_t = 1)]
    pipeline_parallel_size: u32,
    /// Data-parallel ranks, each running attention for its own requests on
    /// --tensor-parallel-size GPUs while a mixture-of-experts model's expert layers span
    /// every rank (vLLM's --data-parallel-size; SGLang's --dp-size with --enable-dp-attention).
    #[arg(long = "data-parallel-size", default_value_t = 1)]
    data_parallel_size: u32,
    /// Spread a mixture-of-experts model's experts whole over the tensor- and data-parallel
    /// ranks instead of slicing every expert (vLLM's --enable-expert-parallel); a dense model
    /// ignores it, as vLLM does.
    #[arg(long = "enable-expert-parallel")]
    enable_expert_parallel: bool,
    /// Spread a mixture-of-experts model's experts over this many of the tensor- and
    /// data-parallel ranks and slice each over the rest (SGLang's --ep-size, TensorRT-LLM's
    /// --ep_size; it must divide tensor- × data-parallel size). Without it,
    /// --enable-expert-parallel spreads them over every rank.
    #[arg(long = "expert-parallel-size")]
    expert_parallel_size: Option<u32>,
    /// Largest number of requests decoded together per data-parallel rank; the rest wait
    /// (vLLM's --max-num-seqs).
    #[arg(long = "max-num-seqs", default_value_t = 256)]
    max_num_seqs: u32,
    /// Longest prompt plus completion, tokens (default: the model's context, at most 32,768,
    /// lowered with a warning to what the KV cache holds).
    #[arg(long = "max-model-len")]
    max_model_len: Option<u32>,
    /// Share of GPU memory the engine may use (vLLM's --gpu-memory-utilization).
    #[arg(long = "gpu-memory-utilization")]
    gpu_memory_utilization: Option<f64>,
    /// Weight precision (vLLM's --quantization / --dtype): bf16, fp8, int4, fp4.
    #[arg(long = "quantization")]
    quantization: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Accelerator id or node label value (e.g. NVIDIA-H100-80GB-HBM3).
    #[arg(long, default_value = "h100_sxm")]
    accelerator: String,
    /// Engine whose behaviour to emulate.
    #[arg(long, default_value = "vllm")]
    engine: String,
    /// Multiplier on simulated delays (0.01 = 100× faster than real).
    #[arg(long = "time-scale", default_value_t = 1.0)]
    time_scale: f64,
    /// Share of requests answered with HTTP 500.
    #[arg(long = "error-rate", default_value_t = 0.0)]
    error_rate: f64,
    /// Seconds before /health turns 200 (wall clock, not scaled).
    #[arg(long = "slow-start-secs", default_value_t = 0.0)]
    slow_start_secs: f64,
    /// Seed of which requests fail under --error-rate; the same seed fails the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The flags `bud-sim serve` defines (long and short spellings), each with whether it takes
/// a value, read from its clap definition so the filter below cannot fall behind it.
fn serve_flags() -> Vec<(String, bool)> {
    use clap::CommandFactory;
    ServeArgs::command()
        .get_arguments()
        .flat_map(|arg| {
            let takes_value = arg.get_action().takes_values();
            let long = arg.get_long().map(|l| format!("--{l}"));
            let short = arg.get_short().map(|s| format!("-{s}"));
            long.into_iter()
                .chain(short)
                .map(move |flag| (flag, takes_value))
        })
        .collect()
}

/// Drop vLLM flags the emulator does not know, with a warning, so container args work as is.
fn filter_serve_args(args: Vec<String>) -> Vec<String> {
    let known = serve_flags();
    let takes_value = |name: &str| known.iter().find(|(f, _)| f == name).map(|(_, v)| *v);
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let name = a.split('=').next().unwrap_or(a);
        if a.starts_with('-') && name != "-h" && name != "--help" && takes_value(name).is_none() {
            let with_value =
                !a.contains('=') && args.get(i + 1).is_some_and(|n| !n.starts_with("--"));
            if with_value {
                eprintln!(
                    "bud-sim serve: warning: ignoring unsupported vLLM flag {a} {}",
                    args[i + 1]
                );
                i += 2;
            } else {
                eprintln!("bud-sim serve: warning: ignoring unsupported vLLM flag {a}");
                i += 1;
            }
            continue;
        }
        if name == "--served-model-name" && !a.contains('=') {
            // Takes one or more values until the next flag.
            out.push(a.clone());
            i += 1;
            while i < args.len() && !args[i].starts_with("--") {
                out.push(args[i].clone());
                i += 1;
            }
            continue;
        }
        out.push(a.clone());
        if takes_value(name) == Some(true) && !a.contains('=') {
            if let Some(v) = args.get(i + 1) {
                out.push(v.clone());
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("serve") {
        let rest = filter_serve_args(argv.split_off(2));
        argv.extend(rest);
    }
    let cli = Cli::parse_from(argv);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bud-sim: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_params(path: Option<&PathBuf>) -> Result<FittedParams, String> {
    match path {
        None => Ok(FittedParams::builtin().clone()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

fn parse_pool(s: &str) -> Result<CandidatePool, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() < 2 {
        return Err(format!(
            "--pool {s:?}: expected ACCELERATOR:COUNT[:PRICE_PER_HOUR[:CLUSTER]]"
        ));
    }
    let count = parts[1].parse::<u32>().map_err(|_| {
        format!(
            "--pool {s:?}: count {:?} is not a positive integer",
            parts[1]
        )
    })?;
    let price = match parts.get(2).filter(|p| !p.is_empty()) {
        Some(p) => Some(
            p.parse::<f64>()
                .map_err(|_| format!("--pool {s:?}: price {p:?} is not a number"))?,
        ),
        None => None,
    };
    HardwareCatalog::builtin()
        .get(parts[0])
        .map_err(|e| e.to_string())?;
    Ok(CandidatePool {
        accelerator: parts[0].to_string(),
        count,
        max_per_node: None,
        price_per_hour: price,
        cluster: parts.get(3).map(|c| c.to_string()),
    })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Plan {
            request,
            model,
            model_config,
            input_tokens,
            output_tokens,
            concurrency,
            ttft_ms,
            tpot_ms,
            e2e_ms,
            min_tokens_per_user,
            pools,
            objective,
            engines,
            precisions,
            checkpoint_precisions_only,
            max_results,
            search,
            seed,
            json,
        } => {
            let mut req = match &request {
                Some(p) => {
                    let text =
                        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                    serde_yaml::from_str::<PlanRequest>(&text)
                        .map_err(|e| format!("{}: {e}", p.display()))?
                }
                None => PlanRequest {
                    model: String::new(),
                    model_config: None,
                    workload: Workload {
                        input_tokens: 1024,
                        output_tokens: 256,
                        concurrency: 16,
                    },
                    slo: Slo::default(),
                    pools: Vec::new(),
                    objective: Objective::LowestCost,
                    engines: None,
                    precisions: None,
                    checkpoint_precisions_only: false,
                    max_results: None,
                    search: SearchMode::Auto,
                    seed: None,
                },
            };
            req.checkpoint_precisions_only |= checkpoint_precisions_only;
            if let Some(m) = model {
                req.model = m;
            }
            if req.model.is_empty() {
                return Err(format!(
                    "--model is required (or a --request file); known models: {}",
                    ModelCatalog::builtin().ids().join(", ")
                ));
            }
            if let Some(p) = model_config {
                req.model_config =
                    Some(std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?);
            }
            if let Some(v) = input_tokens {
                req.workload.input_tokens = v;
            }
            if let Some(v) = output_tokens {
                req.workload.output_tokens = v;
            }
            if let Some(v) = concurrency {
                req.workload.concurrency = v;
            }
            req.slo.ttft_ms = ttft_ms.or(req.slo.ttft_ms);
            req.slo.tpot_ms = tpot_ms.or(req.slo.tpot_ms);
            req.slo.e2e_ms = e2e_ms.or(req.slo.e2e_ms);
            req.slo.min_tokens_per_s_per_user =
                min_tokens_per_user.or(req.slo.min_tokens_per_s_per_user);
            if !pools.is_empty() {
                req.pools = pools
                    .iter()
                    .map(|p| parse_pool(p))
                    .collect::<Result<_, _>>()?;
            }
            if req.pools.is_empty() {
                return Err(format!(
                    "at least one --pool ACCELERATOR:COUNT is required; accelerators: {}",
                    HardwareCatalog::builtin().accepted_ids()
                ));
            }
            if let Some(o) = objective {
                req.objective = match o {
                    ObjectiveArg::LowestCost => Objective::LowestCost,
                    ObjectiveArg::ThroughputPerDollar => Objective::HighestThroughputPerDollar,
                };
            }
            if !engines.is_empty() {
                req.engines = Some(
                    engines
                        .iter()
                        .map(|e| e.parse::<Engine>())
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?,
                );
            }
            if !precisions.is_empty() {
                req.precisions = Some(
                    precisions
                        .iter()
                        .map(|e| e.parse::<Precision>())
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?,
                );
            }
            req.max_results = max_results.or(req.max_results);
            if let Some(s) = search {
                req.search = match s {
                    SearchArg::Auto => SearchMode::Auto,
                    SearchArg::Exhaustive => SearchMode::Exhaustive,
                    SearchArg::Genetic => SearchMode::Genetic,
                };
            }
            req.seed = seed.or(req.seed);
            let result = plan(&req).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?
                );
            } else {
                print_plan(&result);
            }
            Ok(())
        }
        Command::Predict {
            input,
            models_dir,
            output,
            params,
            one,
        } => {
            let params = load_params(params.as_ref())?;
            let (Some(input), Some(output)) = (input, output) else {
                return predict_one(&one, models_dir.as_deref(), &params);
            };
            let inp =
                std::fs::File::open(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let out =
                std::fs::File::create(&output).map_err(|e| format!("{}: {e}", output.display()))?;
            let (ok, bad) =
                predict_csv(inp, out, models_dir.as_deref(), &params).map_err(|e| e.to_string())?;
            eprintln!(
                "bud-sim predict: {ok} rows predicted, {bad} rows without a prediction (see the reason column) -> {}",
                output.display()
            );
            Ok(())
        }
        Command::Calibrate {
            data,
            out,
            split_out,
            report,
            rounds,
            no_correction,
        } => {
            let split_out = split_out.unwrap_or_else(|| {
                let stem = out.file_stem().unwrap_or_default().to_string_lossy();
                out.with_file_name(format!("{stem}_split.json"))
            });
            let samples = load_samples(&data).map_err(|e| e.to_string())?;
            let command = format!(
                "bud-sim calibrate --data {} --out {} --split-out {} --rounds {rounds}{}",
                data.display(),
                out.display(),
                split_out.display(),
                if no_correction {
                    " --no-correction"
                } else {
                    ""
                }
            );
            let started = Instant::now();
            let (split, report_now, summary) =
                calibrate(&samples, &command, rounds, !no_correction);
            let shipped = refit_on_every_row(&samples, &split, &command, rounds);
            for (params, path) in [(&split, &split_out), (&shipped, &out)] {
                let text = serde_json::to_string_pretty(params).map_err(|e| e.to_string())?;
                std::fs::write(path, text + "\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let mut md = report_now.to_markdown();
            if let (Some(split_points), Some(shipped_points)) = (
                published_check(&data, &split)?,
                published_check(&data, &shipped)?,
            ) {
                let table = published::to_markdown(&[
                    ("training-split parameters", &split_points),
                    ("shipped parameters", &shipped_points),
                ]);
                md = format!("{md}\n{PUBLISHED_HEADING}\n\n{table}");
            }
            eprintln!(
                "bud-sim calibrate: fitted in {:.1}s -> {} (training split), {} (every row)",
                started.elapsed().as_secs_f64(),
                split_out.display(),
                out.display()
            );
            println!("{summary}\n\n{md}");
            if let Some(r) = report {
                std::fs::write(&r, format!("# Held-back accuracy\n\nReproduce: `cargo run --release -p bud-simulator -- accuracy --data simulator/data`\n(refit: `{command}`)\n\nThese figures are the training-split fit's (`{}`), scored on rows it did not see. The shipped parameters (`{}`) are refitted on every row with the same choices, so they cannot be scored here.\n\n{summary}\n\n{md}", split_out.display(), out.display()))
                    .map_err(|e| format!("{}: {e}", r.display()))?;
            }
            Ok(())
        }
        Command::Accuracy { data, params } => {
            let split = data.join(SPLIT_PARAMS_FILE);
            let params = load_params(Some(params.as_ref().unwrap_or(&split)))?;
            let samples = load_samples(&data).map_err(|e| e.to_string())?;
            if params.fitted_on_every_row {
                println!(
                    "Note: these parameters were fitted on every row, the held-back ones included, so the figures below are training error, not a score (score {}).\n",
                    split.display()
                );
            }
            println!("{}", evaluate(&samples, &params).to_markdown());
            if let Some(points) = published_check(&data, &params)? {
                println!(
                    "Published TensorRT-LLM 1.0 maximum-load throughput (never fitted; by model in simulator/ACCURACY.md): {} points, MAPE {:.1} %.",
                    points.len(),
                    published::mean_error_percent(&points)
                );
            }
            if let Some(e) = params.held_back_error {
                if let Some(cv) = e.agg_model_cross_validation {
                    println!(
                        "Leave-one-model-out cross-validation recorded by calibrate: {} training agg rows, TTFT MAPE {:.1} %, TPOT MAPE {:.1} % (by model in simulator/ACCURACY.md).",
                        cv.rows, cv.ttft_percent, cv.tpot_percent
                    );
                }
                if let Some(model) = e.agg.model {
                    println!(
                        "Expected error reported with predictions of the model alone: TTFT {:.1} %, TPOT {:.1} % ({} rows).",
                        model.ttft_percent, model.tpot_percent, model.rows
                    );
                }
            }
            Ok(())
        }
        Command::BenchPlan {
            iterations,
            genetic,
        } => {
            let mut req = bench_request();
            if genetic {
                req.search = SearchMode::Genetic;
            }
            let mut times = Vec::new();
            let mut result = None;
            for _ in 0..iterations.max(1) {
                let t = Instant::now();
                result = Some(plan(&req).map_err(|e| e.to_string())?);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let r = result.expect("at least one iteration");
            println!(
                "plan Llama-3.1-70B over 6 accelerator pools ({}): evaluated {} candidates, {} recommendations; min {:.2} ms, median {:.2} ms, max {:.2} ms over {} runs",
                r.strategy,
                r.evaluated,
                r.recommendations.len(),
                times[0],
                times[times.len() / 2],
                times[times.len() - 1],
                times.len()
            );
            Ok(())
        }
        Command::Catalog => {
            println!("accelerators:");
            for a in HardwareCatalog::builtin().all() {
                println!(
                    "  {:<22} {:<52} {:>6.0} GiB {:>6.0} GB/s {:>7.0} TFLOPS bf16  ${:.2}/h  labels: {}",
                    a.id,
                    a.name,
                    a.memory_bytes / (1u64 << 30) as f64,
                    a.memory_bandwidth / 1e9,
                    a.bf16_flops / 1e12,
                    a.price_per_hour,
                    a.node_labels.join(", ")
                );
            }
            println!("models:");
            for id in ModelCatalog::builtin().ids() {
                let m = ModelCatalog::builtin().get(id).map_err(|e| e.to_string())?;
                println!(
                    "  {:<45} {:>7.1}B params, {:>6.1}B active",
                    id,
                    m.total_params() / 1e9,
                    m.active_params() / 1e9
                );
            }
            Ok(())
        }
        Command::Serve(args) => serve(args),
    }
}

fn bench_request() -> PlanRequest {
    let pools = [
        "h100_sxm", "h200_sxm", "a100_sxm", "l40s", "mi300x", "b200_sxm",
    ]
    .iter()
    .map(|a| CandidatePool {
        accelerator: a.to_string(),
        count: 32,
        max_per_node: None,
        price_per_hour: None,
        cluster: Some("bench".into()),
    })
    .collect();
    PlanRequest {
        model: "meta-llama/Llama-3.1-70B".into(),
        model_config: None,
        workload: Workload {
            input_tokens: 2048,
            output_tokens: 512,
            concurrency: 64,
        },
        slo: Slo {
            ttft_ms: Some(2000.0),
            tpot_ms: Some(40.0),
            e2e_ms: None,
            min_tokens_per_s_per_user: None,
        },
        pools,
        objective: Objective::LowestCost,
        engines: None,
        precisions: None,
        checkpoint_precisions_only: false,
        max_results: Some(10),
        search: SearchMode::Auto,
        seed: None,
    }
}

fn print_plan(r: &PlanResult) {
    println!(
        "{:<4} {:<12} {:<10} {:>4} {:>4} {:<16} {:<5} {:<9} {:>6} {:>9} {:>8} {:>10} {:>9} {:<2} {:<2}",
        "rank",
        "accelerator",
        "cluster",
        "gpus",
        "repl",
        "layout",
        "prec",
        "engine",
        "maxbat",
        "ttft_ms",
        "tpot_ms",
        "tok/s",
        "$/hour",
        "P",
        "M"
    );
    for x in &r.recommendations {
        println!(
            "{:<4} {:<12} {:<10} {:>4} {:>4} {:<16} {:<5} {:<9} {:>6} {:>9.0} {:>8.1} {:>10.0} {:>9.2} {:<2} {:<2}",
            x.rank,
            x.accelerator,
            x.cluster.clone().unwrap_or_default(),
            x.gpus_per_replica,
            x.replicas,
            x.layout(),
            x.precision.as_str(),
            x.engine.as_str(),
            x.max_batch,
            x.prediction.ttft_ms,
            x.prediction.tpot_ms,
            x.total_tokens_per_s,
            x.cost_per_hour,
            if x.pareto_optimal { "*" } else { "" },
            match (x.prediction.measured_deployment, &x.prediction.measured_as) {
                (true, _) => "m",
                (false, Some(_)) => "t",
                (false, None) => "",
            }
        );
    }
    if r.recommendations.is_empty() {
        println!("no configuration meets the request");
    } else {
        let error = |measured: bool, label: &str| {
            FittedParams::builtin()
                .held_back_error
                .and_then(|e| e.agg.for_basis(measured))
                .map(|e| {
                    format!(
                        " ({label}{:.1} % TTFT, {:.1} % TPOT)",
                        e.ttft_percent, e.tpot_percent
                    )
                })
                .unwrap_or_default()
        };
        println!(
            "P: * on the Pareto front. M: m where the calibration data measured this deployment and the prediction leans on it{}; blank where the model alone predicts it{}.",
            error(true, "expected error "),
            error(false, "")
        );
        let twins: std::collections::BTreeSet<&str> = r
            .recommendations
            .iter()
            .filter_map(|x| x.prediction.measured_as.as_deref())
            .collect();
        if !twins.is_empty() {
            println!(
                "t: the data measured this deployment of {}, a model of the same architecture, and the prediction leans on those measurements (expected error as for the model alone).",
                twins.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    println!(
        "\nsearch: {}, evaluated {} candidates",
        r.strategy, r.evaluated
    );
    if !r.rejections.is_empty() {
        println!("rejected:");
        for (k, v) in &r.rejections {
            match r.rejection_examples.get(k) {
                Some(example) => println!("  {k:<28} {v:>6}  e.g. {example}"),
                None => println!("  {k:<28} {v:>6}"),
            }
        }
    }
    if let Some(m) = &r.nearest_miss {
        println!("{}", m.advice);
    }
}

/// `bud-sim predict` without --input: one configuration, as a table (or JSON) with its
/// memory breakdown; a configuration that does not fit prints the breakdown and fails.
fn predict_one(
    a: &OneConfigurationArgs,
    models_dir: Option<&std::path::Path>,
    params: &FittedParams,
) -> Result<(), String> {
    let Some(model_id) = &a.model else {
        return Err(format!(
            "give one configuration (--model, --accelerator, --tp, ...) or --input SCENARIOS.csv --output PREDICTIONS.csv; known models: {}",
            ModelCatalog::builtin().ids().join(", ")
        ));
    };
    let model = match &a.model_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            ModelSpec::from_config_json(model_id, &text)
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => bud_simulator::batch::ModelResolver::new(models_dir)
            .get(model_id)
            .map_err(|e| e.to_string())?,
    };
    let accelerator = HardwareCatalog::builtin()
        .get(&a.accelerator)
        .map_err(|e| e.to_string())?;
    let engine: Engine = a
        .engine
        .parse()
        .map_err(|e: bud_simulator::Error| e.to_string())?;
    let precision = |flag: &str, value: &Option<String>| -> Result<Option<Precision>, String> {
        value
            .as_deref()
            .map(|v| v.parse::<Precision>().map_err(|e| format!("--{flag}: {e}")))
            .transpose()
    };
    let mut cfg = ServingConfig::new(&model.id, &accelerator.id, engine);
    cfg.tp = a.tp;
    cfg.pp = a.pp;
    cfg.attention_dp = a.attention_dp;
    cfg.moe_tp = a.moe_tp;
    cfg.moe_ep = a.moe_ep;
    cfg.precision = precision("precision", &a.precision)?;
    cfg.expert_precision = precision("expert-precision", &a.expert_precision)?;
    cfg.kv_precision = precision("kv-precision", &a.kv_precision)?;
    cfg.engine_version = a.engine_version.clone();
    cfg.max_batch = a.max_batch;
    cfg.gpu_memory_utilization = a.gpu_memory_utilization;
    let workload = Workload {
        input_tokens: a.input_tokens,
        output_tokens: a.output_tokens,
        concurrency: a.concurrency,
    };
    let p = bud_simulator::predict_with(&cfg, &model, accelerator, params, &workload)
        .map_err(|e| e.to_string())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&p).map_err(|e| e.to_string())?
        );
    } else {
        print_prediction(&cfg, &workload, &p);
    }
    if p.memory.fits {
        Ok(())
    } else {
        Err(p.memory.verdict.clone())
    }
}

fn print_prediction(cfg: &ServingConfig, w: &Workload, p: &bud_simulator::Prediction) {
    let gib = |bytes: f64| {
        let gib = bytes / (1u64 << 30) as f64;
        if bytes > 0.0 && gib < 1.0 {
            format!("{:.0} MiB", gib * 1024.0)
        } else {
            format!("{gib:.1} GiB")
        }
    };
    println!(
        "{} on {} x {} (TP {}, PP {}, attention DP {}), {}; {} input / {} output tokens, {} users",
        cfg.model,
        p.devices,
        cfg.accelerator,
        cfg.tp,
        cfg.pp,
        cfg.attention_dp,
        cfg.engine.as_str(),
        w.input_tokens,
        w.output_tokens,
        w.concurrency
    );
    let m = &p.memory;
    if m.fits {
        print_performance(w, p);
    }
    println!(
        "memory per device: {} usable of {}",
        gib(m.usable_bytes),
        gib(m.capacity_bytes)
    );
    for (name, bytes) in [
        ("weights", m.weights_bytes),
        ("KV cache", m.kv_cache_bytes),
        ("activations", m.activations_bytes),
        ("runtime reserve", m.runtime_reserve_bytes),
        ("communication reserve", m.communication_reserve_bytes),
    ] {
        println!("  {name:<22}{:>10}", gib(bytes));
    }
    println!(
        "  KV needed by these users {} ({} per request)",
        gib(m.kv_needed_bytes),
        gib(m.kv_per_request_bytes)
    );
    println!("{}", m.verdict);
}

/// The performance lines of [`print_prediction`] (only for a configuration that fits).
fn print_performance(w: &Workload, p: &bud_simulator::Prediction) {
    let trust = |percent: Option<f64>| {
        percent
            .map(|e| format!("   (expected error {e:.1} %)"))
            .unwrap_or_default()
    };
    match (&p.measured_as, p.measured_deployment) {
        (_, true) => {
            println!("basis: measured deployment (the calibration data measured this deployment)")
        }
        (Some(twin), false) => println!(
            "basis: model, leaning on the measurements of this deployment of {twin} (the same architecture)"
        ),
        (None, false) => println!(
            "basis: model (the calibration data did not measure this deployment near this workload)"
        ),
    }
    println!(
        "TTFT             {:>10.1} ms{}",
        p.ttft_ms,
        trust(p.expected_error.map(|e| e.ttft_percent))
    );
    println!(
        "TPOT             {:>10.2} ms{}",
        p.tpot_ms,
        trust(p.expected_error.map(|e| e.tpot_percent))
    );
    println!("end-to-end       {:>10.0} ms", p.e2e_ms);
    println!("tokens/s/user    {:>10.1}", p.tokens_per_s_per_user);
    println!("tokens/s         {:>10.0}", p.tokens_per_s);
    println!("requests/s       {:>10.2}", p.requests_per_s);
    println!(
        "running          {:>10} of {} users (the KV cache and max batch hold {}); queue wait {:.0} ms",
        p.running, w.concurrency, p.max_concurrency, p.queue_wait_ms
    );
    println!(
        "decode step      {:>10.2} ms, bound by {}",
        p.decode_step_ms, p.bottleneck
    );
    println!("prefill alone    {:>10.1} ms", p.prefill_ms);
}

fn serve(a: ServeArgs) -> Result<(), String> {
    let model_arg = a
        .model
        .clone()
        .or(a.positional_model.clone())
        .ok_or_else(|| {
            format!(
                "--model is required; known models: {}",
                ModelCatalog::builtin().ids().join(", ")
            )
        })?;
    let config_path = PathBuf::from(&model_arg).join("config.json");
    let model: ModelSpec = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        ModelSpec::from_config_json(&model_arg, &text).map_err(|e| e.to_string())?
    } else {
        ModelCatalog::builtin()
            .get(&model_arg)
            .map_err(|e| e.to_string())?
            .clone()
    };
    let accelerator = HardwareCatalog::builtin()
        .get(&a.accelerator)
        .map_err(|e| e.to_string())?
        .clone();
    let engine: Engine = a
        .engine
        .parse()
        .map_err(|e: bud_simulator::Error| e.to_string())?;
    if !(a.time_scale.is_finite() && a.time_scale >= 0.0) {
        return Err(format!(
            "--time-scale {} must be a non-negative number",
            a.time_scale
        ));
    }
    if !(0.0..=1.0).contains(&a.error_rate) {
        return Err(format!(
            "--error-rate {} must be between 0 and 1",
            a.error_rate
        ));
    }
    let precision = match &a.quantization {
        Some(q) => Some(q.parse::<Precision>().map_err(|e| e.to_string())?),
        None => None,
    };
    let mut serving = ServingConfig::new(&model.id, &accelerator.id, engine);
    serving.tp = a.tensor_parallel_size;
    serving.pp = a.pipeline_parallel_size;
    serving.attention_dp = a.data_parallel_size;
    let ranks = a.tensor_parallel_size * a.data_parallel_size;
    let expert_parallel = match a.expert_parallel_size {
        Some(ep) if ep == 0 || !ranks.is_multiple_of(ep) => {
            return Err(format!(
                "--expert-parallel-size {ep} must divide the {ranks} tensor- × data-parallel ranks"
            ));
        }
        Some(ep) => ep,
        None if a.enable_expert_parallel => ranks,
        None => 1,
    };
    if expert_parallel > 1 && model.is_moe() {
        serving.set_expert_parallel(expert_parallel);
    }
    serving.max_batch = Some(a.max_num_seqs.max(1));
    serving.precision = precision;
    serving.gpu_memory_utilization = a.gpu_memory_utilization;
    let served_names = if a.served_model_name.is_empty() {
        vec![model_arg.clone()]
    } else {
        a.served_model_name.clone()
    };
    let mut max_model_len = a.max_model_len.unwrap_or(model.max_context.min(32768));
    if a.max_model_len.is_none() {
        // Like vLLM's automatic sizing: shrink the default context to what the KV cache holds.
        let resolved = bud_simulator::perf::Resolved::new(
            &serving,
            &model,
            &accelerator,
            FittedParams::builtin(),
        )
        .map_err(|e| e.to_string())?;
        let (mem, _) = resolved.memory(1.0, 1);
        let per_token = resolved.kv_bytes_per_seq(1024.0) / 1024.0;
        let fits = (mem.kv_cache_bytes / per_token.max(1e-9)).floor();
        if fits >= 256.0 && fits < max_model_len as f64 {
            eprintln!(
                "bud-sim serve: warning: reducing max model length from {max_model_len} to {} tokens to fit the KV cache",
                fits as u32
            );
            max_model_len = fits as u32;
        }
    }
    eprintln!(
        "bud-sim serve: emulating {engine} serving {} on {}× {} ({}, {}), up to {} running requests, context {max_model_len} tokens",
        model.id,
        serving.devices(),
        accelerator.id,
        serving.layout(),
        serving.precision.unwrap_or(model.native_precision),
        a.max_num_seqs.max(1) * a.data_parallel_size.max(1),
    );
    let emu = Emulator::new(EmulatorConfig {
        model,
        served_names,
        accelerator,
        serving,
        params: FittedParams::builtin().clone(),
        time_scale: a.time_scale,
        error_rate: a.error_rate,
        slow_start_secs: a.slow_start_secs,
        seed: a.seed,
        max_model_len,
    })
    .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(bud_simulator::serve::run(emu, &a.host, a.port))
        .map_err(|e| e.to_string())
}
