//! The performance model: one serving configuration under one workload.
//!
//! Decode is a sequence of steps; each step streams the weights a GPU holds (only the experts
//! the batch routes to, for MoE) and the KV cache of the running sequences, does the matching
//! FLOPs, pays all-reduce / all-to-all latency per layer and a fixed per-step engine overhead.
//! Prefill is mostly compute bound. In a closed loop of `concurrency` users the time per output
//! token also carries the other users' prefills, the time to first token carries the prefills
//! queued ahead of a request, and when the KV cache cannot hold every user the rest wait for a
//! slot (Little's law). Efficiencies and overheads come from [`FittedParams`].

use crate::error::{Error, Result};
use crate::hardware::{Accelerator, DeviceKind, accelerator};
use crate::model::{AttentionKind, ModelSpec, model};
use crate::params::{
    Anchors, Correction, EngineParams, ErrorByBasis, ExpectedError, FittedParams,
    MAX_CORRECTION_LN, Measured, ReleaseScale,
};
use crate::precision::{Engine, Precision};
use serde::{Deserialize, Serialize};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The hidden width at which [`EngineParams::layer_overhead_us`] is fitted (DeepSeek-V3's);
/// a model's per-layer cost scales with its own width (`Resolved::layer_overhead`).
pub const REFERENCE_LAYER_WIDTH: f64 = 7168.0;

/// One serving configuration of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingConfig {
    /// Model id from the catalog (`Qwen/Qwen3-8B`, `hf://...`).
    pub model: String,
    /// Accelerator id or node label value.
    pub accelerator: String,
    /// Tensor parallel size (per attention data-parallel rank).
    #[serde(default = "one")]
    pub tp: u32,
    /// Pipeline parallel size.
    #[serde(default = "one")]
    pub pp: u32,
    /// Attention data-parallel ranks (each with `tp` devices).
    #[serde(default = "one")]
    pub attention_dp: u32,
    /// MoE tensor parallel size (default: all devices of the replica when `moe_ep` is 1).
    #[serde(default)]
    pub moe_tp: Option<u32>,
    /// MoE expert parallel size (default 1).
    #[serde(default)]
    pub moe_ep: Option<u32>,
    /// Weight/compute precision of dense layers (default: the model's own).
    #[serde(default)]
    pub precision: Option<Precision>,
    /// Precision of routed experts (default: same as `precision`, or the model's own).
    #[serde(default)]
    pub expert_precision: Option<Precision>,
    /// KV cache precision (default: fp8 when weights are fp8/fp4, otherwise bf16).
    #[serde(default)]
    pub kv_precision: Option<Precision>,
    /// Serving engine.
    pub engine: Engine,
    /// Engine version, e.g. `0.18.0` or `1.2.0rc6.post3`: releases the calibration data
    /// measured often enough have their own fitted multipliers ([`ReleaseScale`]); any other
    /// (or none) uses the engine family's parameters.
    #[serde(default)]
    pub engine_version: Option<String>,
    /// Largest number of sequences in a batch (vLLM `--max-num-seqs`); default per engine.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Fraction of device memory the engine may use (vLLM `--gpu-memory-utilization`).
    #[serde(default)]
    pub gpu_memory_utilization: Option<f64>,
}

pub(crate) fn one() -> u32 {
    1
}

impl ServingConfig {
    /// A minimal configuration: model, accelerator, engine, TP 1.
    pub fn new(model: &str, accelerator: &str, engine: Engine) -> Self {
        ServingConfig {
            model: model.into(),
            accelerator: accelerator.into(),
            tp: 1,
            pp: 1,
            attention_dp: 1,
            moe_tp: None,
            moe_ep: None,
            precision: None,
            expert_precision: None,
            kv_precision: None,
            engine,
            engine_version: None,
            max_batch: None,
            gpu_memory_utilization: None,
        }
    }

    /// Spread a mixture-of-experts model's routed experts whole over `expert_parallel` of a
    /// stage's devices and slice each expert over the rest (MoE TP = the stage's tp ×
    /// attention DP devices ÷ `expert_parallel`). Set `tp` and `attention_dp` first. Expert
    /// parallelism over the whole stage is vLLM's `--enable-expert-parallel`; SGLang's
    /// `--ep-size` and TensorRT-LLM's `--ep_size` may also cover part of it.
    pub fn set_expert_parallel(&mut self, expert_parallel: u32) {
        let stage = self.tp.max(1) * self.attention_dp.max(1);
        let expert_parallel = expert_parallel.max(1);
        self.moe_ep = Some(expert_parallel);
        self.moe_tp = Some((stage / expert_parallel).max(1));
    }

    /// Devices one replica uses.
    pub fn devices(&self) -> u32 {
        self.tp.max(1) * self.pp.max(1) * self.attention_dp.max(1)
    }

    /// The parallel layout as messages name it ([`parallel_layout`]).
    pub fn layout(&self) -> String {
        parallel_layout(
            self.tp,
            self.pp,
            self.attention_dp,
            self.moe_ep.unwrap_or(1),
        )
    }
}

/// A parallel layout as messages and tables name it: `TP4 PP1`, `TP8 PP1 EP8`, and with
/// attention data-parallel ranks `TP1 PP1 DP8 EP8`.
pub fn parallel_layout(tp: u32, pp: u32, attention_dp: u32, expert_parallel: u32) -> String {
    let mut layout = format!("TP{tp} PP{pp}");
    if attention_dp > 1 {
        layout += &format!(" DP{attention_dp}");
    }
    if expert_parallel > 1 {
        layout += &format!(" EP{expert_parallel}");
    }
    layout
}

/// The load: a closed loop of `concurrency` users each sending `input_tokens` and reading
/// `output_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Prompt length in tokens.
    pub input_tokens: u32,
    /// Generated tokens per request.
    pub output_tokens: u32,
    /// Concurrent users (requests in flight).
    pub concurrency: u32,
}

/// Memory per device and whether the configuration fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryBreakdown {
    /// Device capacity, bytes.
    pub capacity_bytes: f64,
    /// Share of the capacity the engine takes.
    pub usable_bytes: f64,
    /// Weights held per device.
    pub weights_bytes: f64,
    /// Peak activation workspace.
    pub activations_bytes: f64,
    /// Runtime reserve (context, allocator).
    pub runtime_reserve_bytes: f64,
    /// Communication buffers.
    pub communication_reserve_bytes: f64,
    /// What remains for the KV cache.
    pub kv_cache_bytes: f64,
    /// KV cache one request needs at full length, per device.
    pub kv_per_request_bytes: f64,
    /// KV the whole workload needs per device.
    pub kv_needed_bytes: f64,
    /// Whether at least one request fits.
    pub fits: bool,
    /// A sentence saying whether and why it fits.
    pub verdict: String,
}

/// Predicted performance of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// Mean time to first token, ms.
    pub ttft_ms: f64,
    /// Mean time per output token after the first, ms.
    pub tpot_ms: f64,
    /// Mean end-to-end request latency, ms.
    pub e2e_ms: f64,
    /// Output tokens/s one user sees.
    pub tokens_per_s_per_user: f64,
    /// Output tokens/s of the replica.
    pub tokens_per_s: f64,
    /// Completed requests/s of the replica.
    pub requests_per_s: f64,
    /// Most requests the KV cache (and max batch) can run at once.
    pub max_concurrency: u32,
    /// Requests actually running (the rest queue).
    pub running: u32,
    /// Mean wait for a KV slot, ms (part of TTFT).
    pub queue_wait_ms: f64,
    /// One decode step at the running batch, ms.
    pub decode_step_ms: f64,
    /// Prefill of one prompt alone, ms.
    pub prefill_ms: f64,
    /// What bounds a decode step: `memory`, `compute`, `communication` or `overhead`.
    pub bottleneck: String,
    /// Devices per replica.
    pub devices: u32,
    /// Memory per device.
    pub memory: MemoryBreakdown,
    /// The calibration data measured this very deployment (model, device, engine, precisions
    /// and parallel layout) at lengths and concurrencies near this workload's, and the
    /// prediction leans on those measurements ([`Anchors::leans_on`]). Such predictions are
    /// markedly closer than those of the model alone; `expected_error` says by how much.
    #[serde(default)]
    pub measured_deployment: bool,
    /// The measured model whose measurements of this deployment the prediction leans on,
    /// when the data did not measure the model asked about but one of the same architecture
    /// ([`crate::model::ModelSpec::architecture`]): the base model of a fine-tune, DeepSeek-R1
    /// for DeepSeek-V3. Such a prediction keeps the basis of the model alone
    /// (`measured_deployment` false, and its expected error): left out of the fit, DeepSeek-R1
    /// and DeepSeek-V3 gained on TTFT from each other's measurements but not on TPOT
    /// (`--example twins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_as: Option<String>,
    /// How far to trust this prediction: the calibration's error on rows it was not fitted on,
    /// for predictions of the same basis ([`FittedParams::held_back_error`]; absent with
    /// uncalibrated parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_error: Option<ExpectedError>,
}

/// Resolved inputs of the model: everything looked up and defaulted.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    /// Model architecture.
    pub model: &'a ModelSpec,
    /// Device.
    pub acc: &'a Accelerator,
    /// Parameters of this engine on this device kind.
    pub p: EngineParams,
    /// Accelerator scale.
    pub scale: f64,
    /// Multipliers of the engine release, when the fit had rows of it.
    pub release: ReleaseScale,
    correction: Option<&'a Correction>,
    /// Key of this deployment among the anchors ([`Anchors::key`]).
    pub deployment: String,
    /// The anchors and the measurements they hold of this deployment, of its other layouts
    /// or of those of a model of the same architecture ([`Anchors::measured`]).
    anchors: Option<(&'a Anchors, Measured<'a>)>,
    /// Held-back error of agg predictions by basis ([`FittedParams::held_back_error`]).
    expected_error: ErrorByBasis,
    engine: Engine,
    tp: f64,
    pp: f64,
    dp: f64,
    moe_par: f64,
    moe_ep: f64,
    dense_prec: Precision,
    expert_prec: Precision,
    kv_prec: Precision,
    max_batch: u32,
    mem_util: f64,
    kv_of_free: bool,
    link_bw: f64,
}

/// Whether dense and MoE models get separate parameter sets (they did not generalise
/// better to held-back models, so one set per engine is used).
const SPLIT_DENSE_MOE: bool = false;

/// Key of the parameter set used for an engine on a device kind.
pub fn params_key(engine: Engine, kind: DeviceKind, moe: bool) -> String {
    match (kind, moe) {
        (DeviceKind::Cpu, _) => format!("{engine}-cpu"),
        (DeviceKind::Gpu, _) if !SPLIT_DENSE_MOE => engine.to_string(),
        (DeviceKind::Gpu, true) => format!("{engine}-moe"),
        (DeviceKind::Gpu, false) => format!("{engine}-dense"),
    }
}

/// Check that an engine can run on a device.
pub fn check_engine(engine: Engine, acc: &Accelerator) -> Result<()> {
    let ok = match (engine, acc.kind) {
        (Engine::LlamaCpp, DeviceKind::Cpu) | (Engine::Vllm, DeviceKind::Cpu) => true,
        (_, DeviceKind::Cpu) => false,
        (Engine::Trtllm, DeviceKind::Gpu) => acc.vendor == "nvidia",
        (Engine::Sglang, DeviceKind::Gpu) => acc.vendor != "intel",
        (Engine::Vllm, DeviceKind::Gpu) => true,
        (Engine::LlamaCpp, DeviceKind::Gpu) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "engine {engine} does not run on {} ({}); on CPUs use vllm or llamacpp, trtllm needs NVIDIA GPUs, sglang needs NVIDIA or AMD GPUs",
            acc.id, acc.name
        )))
    }
}

impl<'a> Resolved<'a> {
    /// Resolve a configuration against a model, a device and parameters.
    pub fn new(
        cfg: &ServingConfig,
        model: &'a ModelSpec,
        acc: &'a Accelerator,
        params: &'a FittedParams,
    ) -> Result<Self> {
        check_engine(cfg.engine, acc)?;
        for (name, v) in [
            ("tp", cfg.tp),
            ("pp", cfg.pp),
            ("attentionDp", cfg.attention_dp),
        ] {
            if v == 0 || v > 1024 {
                return Err(Error::invalid(
                    name,
                    format!("{v} must be between 1 and 1024"),
                ));
            }
        }
        if cfg.pp > model.num_layers {
            return Err(Error::invalid(
                "pp",
                format!("{} exceeds the model's {} layers", cfg.pp, model.num_layers),
            ));
        }
        if !model.num_heads.is_multiple_of(cfg.tp) {
            let divisors: Vec<String> = (1..=model.num_heads.min(1024))
                .filter(|d| model.num_heads.is_multiple_of(*d))
                .map(|d| d.to_string())
                .collect();
            return Err(Error::invalid(
                "tp",
                format!(
                    "{} does not divide the {} attention heads of {} (engines split heads evenly); use one of: {}",
                    cfg.tp,
                    model.num_heads,
                    model.id,
                    divisors.join(", ")
                ),
            ));
        }
        if cfg.max_batch == Some(0) {
            return Err(Error::invalid("maxBatch", "0 must be at least 1"));
        }
        let world = cfg.tp * cfg.attention_dp;
        let moe_ep = cfg.moe_ep.unwrap_or(1).max(1);
        match &model.moe {
            Some(moe) if !moe.num_experts.is_multiple_of(moe_ep) => {
                return Err(Error::invalid(
                    "moeEp",
                    format!(
                        "{moe_ep} does not divide the {} routed experts of {}",
                        moe.num_experts, model.id
                    ),
                ));
            }
            None if moe_ep > 1 => {
                return Err(Error::invalid(
                    "moeEp",
                    format!(
                        "{} is a dense model; expert parallelism applies to mixture-of-experts models (leave it at 1)",
                        model.id
                    ),
                ));
            }
            _ => {}
        }
        let moe_tp = cfg.moe_tp.unwrap_or((world / moe_ep).max(1)).max(1);
        let dense_prec = cfg.precision.unwrap_or(model.native_precision);
        let expert_prec = cfg
            .expert_precision
            .or(cfg.precision)
            .unwrap_or(model.native_expert_precision);
        for p in [dense_prec, expert_prec] {
            // MXFP4/NVFP4 checkpoints run weight-only (dequantised in the GEMM) on GPUs with
            // FP8 tensor cores but no FP4 ones, e.g. gpt-oss on Hopper.
            let weight_only_fp4 = p == Precision::Fp4
                && acc.fp8_flops.is_some()
                && model.native_expert_precision == Precision::Fp4;
            if !acc.supports(p) && !weight_only_fp4 {
                return Err(Error::Unsupported(format!(
                    "{} has no {p} tensor cores; choose one of: {}",
                    acc.id,
                    Precision::ALL
                        .iter()
                        .filter(|x| acc.supports(**x))
                        .map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let kv_prec = cfg.kv_precision.unwrap_or(match dense_prec {
            Precision::Fp8 | Precision::Fp4 => Precision::Fp8,
            _ => Precision::Bf16,
        });
        let max_batch = cfg.max_batch.unwrap_or(match cfg.engine {
            Engine::Vllm => 256,
            Engine::Sglang => 1024,
            Engine::Trtllm => 2048,
            Engine::LlamaCpp => 64,
        });
        let mem_util = cfg
            .gpu_memory_utilization
            .unwrap_or(match (cfg.engine, acc.kind) {
                (_, DeviceKind::Cpu) => 0.9,
                (Engine::Sglang, _) => 0.88,
                _ => 0.9,
            });
        if !(0.05..=1.0).contains(&mem_util) {
            return Err(Error::invalid(
                "gpuMemoryUtilization",
                format!("{mem_util} must be in (0.05, 1.0]"),
            ));
        }
        let devices = cfg.devices();
        let link_bw = if devices <= acc.devices_per_node {
            acc.intra_node_bandwidth
        } else {
            acc.inter_node_bandwidth
        };
        let engine_group = params_key(cfg.engine, acc.kind, model.is_moe());
        let key = |model: &str| {
            Anchors::key(
                model,
                &acc.id,
                &engine_group,
                [dense_prec, expert_prec, kv_prec],
                [cfg.tp, cfg.pp, cfg.attention_dp, moe_tp, moe_ep],
            )
        };
        let deployment = key(&cfg.model);
        let anchors = params
            .anchors
            .as_ref()
            .and_then(|a| a.measured(&cfg.model, model, key).map(|m| (a, m)));
        Ok(Resolved {
            model,
            acc,
            deployment,
            anchors,
            p: params.engine(&engine_group),
            scale: params.scale(&acc.id),
            release: params.release(cfg.engine, cfg.engine_version.as_deref()),
            correction: params.correction.as_ref(),
            expected_error: params.held_back_error.map(|e| e.agg).unwrap_or_default(),
            engine: cfg.engine,
            tp: cfg.tp as f64,
            pp: cfg.pp as f64,
            dp: cfg.attention_dp as f64,
            moe_par: (moe_tp * moe_ep) as f64,
            moe_ep: moe_ep as f64,
            dense_prec,
            expert_prec,
            kv_prec,
            max_batch,
            mem_util,
            // Measured SGLang and vLLM runs fit where `util × capacity − weights` would not:
            // both size the cache from free memory in practice, like TensorRT-LLM.
            kv_of_free: true,
            link_bw,
        })
    }

    fn kv_shard(&self) -> f64 {
        match self.model.attention {
            AttentionKind::Gqa { kv_heads, .. } => 1.0 / self.tp.min(kv_heads as f64),
            AttentionKind::Mla { .. } => 1.0,
        }
    }

    /// KV bytes per device one sequence holds at `context` tokens: its attention cache and a
    /// sparse-attention indexer's keys.
    pub fn kv_bytes_per_seq(&self, context: f64) -> f64 {
        self.attention_cache_bytes_per_seq(context) + self.index_key_bytes_per_seq(context)
    }

    /// The attention cache part of [`Resolved::kv_bytes_per_seq`].
    fn attention_cache_bytes_per_seq(&self, context: f64) -> f64 {
        self.model.kv_elems_for_context(context) * self.kv_prec.kv_bytes() * self.kv_shard()
            / self.pp
    }

    /// The indexer keys' part of [`Resolved::kv_bytes_per_seq`]: one head, on every device of
    /// a pipeline stage.
    fn index_key_bytes_per_seq(&self, context: f64) -> f64 {
        self.model.index_key_bytes_for_context(context) / self.pp
    }

    /// The memory breakdown per device for sequences of `context` tokens and `wanted` users.
    pub fn memory(&self, context: f64, wanted: u32) -> (MemoryBreakdown, u32) {
        let m = self.model;
        let weights = ((m.attention_params + m.dense_mlp_params) * self.dense_prec.weight_bytes()
            / self.tp
            + m.routed_params() * self.expert_prec.weight_bytes() / self.moe_par)
            / self.pp
            + m.embedding_params * 2.0 / self.tp;
        let act_tokens = 8192.0_f64;
        let activations = act_tokens * m.hidden_size as f64 * 2.0 * 8.0 / self.tp
            + act_tokens * m.vocab_size as f64 * 4.0 / self.tp / 8.0;
        // The system YAML reserves are deliberately generous; engines keep about 1 GiB for
        // the CUDA context and allocator slack on top of the weights and workspaces.
        let runtime = self.acc.runtime_reserve_bytes.min(GIB);
        let comm = self.acc.comm_reserve((self.tp * self.dp * self.pp) as u32);
        let usable = self.acc.memory_bytes * self.mem_util;
        let kv_cache = if self.kv_of_free {
            // TensorRT-LLM: a fraction of what is free after the weights and workspaces.
            (self.acc.memory_bytes - weights - activations - comm - runtime).max(0.0)
                * self.mem_util
        } else {
            // vLLM / SGLang: a fraction of the whole device, minus what else lives there.
            (usable - weights - activations - comm - runtime).max(0.0)
        };
        let per_req = self.kv_bytes_per_seq(context).max(1.0);
        let per_rank = (kv_cache / per_req).floor();
        let cap = ((per_rank * self.dp).min(self.max_batch as f64 * self.dp))
            .clamp(0.0, u32::MAX as f64) as u32;
        let needed = per_req * (wanted as f64 / self.dp).ceil();
        let gib = |b: f64| b / (1024.0 * 1024.0 * 1024.0);
        let fits = cap >= 1;
        let verdict = if !fits {
            if usable < weights + activations + comm + runtime {
                format!(
                    "does not fit: weights {:.1} GiB + activations {:.1} GiB + reserves {:.1} GiB exceed the {:.1} GiB usable per device; use more devices (higher TP/PP) or a smaller precision",
                    gib(weights),
                    gib(activations),
                    gib(comm + runtime),
                    gib(usable)
                )
            } else {
                format!(
                    "does not fit: one request needs {:.2} GiB of KV cache per device but only {:.2} GiB remain after the weights",
                    gib(per_req),
                    gib(kv_cache)
                )
            }
        } else if cap < wanted {
            format!(
                "fits, but the KV cache holds {cap} of the {wanted} concurrent requests ({:.1} GiB free, {:.3} GiB per request); the rest queue",
                gib(kv_cache),
                gib(per_req)
            )
        } else {
            format!(
                "fits: {:.1} GiB of weights and {:.1} GiB of KV cache per device for up to {cap} requests",
                gib(weights),
                gib(kv_cache)
            )
        };
        (
            MemoryBreakdown {
                capacity_bytes: self.acc.memory_bytes,
                usable_bytes: usable,
                weights_bytes: weights,
                activations_bytes: activations,
                runtime_reserve_bytes: runtime,
                communication_reserve_bytes: comm,
                kv_cache_bytes: kv_cache,
                kv_per_request_bytes: per_req,
                kv_needed_bytes: needed,
                fits,
                verdict,
            },
            cap,
        )
    }

    /// The fixed cost of `layers` layers in one step, seconds: the fitted per-layer overhead
    /// at [`REFERENCE_LAYER_WIDTH`], scaled by the model's hidden width. At small batches the
    /// kernels of a layer (its projections, norms, routing) are latency-bound, not
    /// bandwidth-bound, and a latency-bound GEMM walks its reduction dimension, the width, tile
    /// after tile: gpt-oss-120b (2,880 wide) and Llama-3.1-8B (4,096) decode faster than a
    /// per-layer cost fitted on the 7,168- and 8,192-wide models allows
    /// (simulator/CALIBRATION_LOG.md).
    fn layer_overhead(&self, layers: f64) -> f64 {
        self.p.layer_overhead_us * 1e-6 * layers * self.model.hidden_size as f64
            / REFERENCE_LAYER_WIDTH
    }

    /// `count` all-reduces of `bytes` over `group` devices, seconds.
    fn comm_time(&self, group: f64, bytes: f64, count: f64) -> f64 {
        self.collective_time(self.p.allreduce_us, group, bytes, count)
    }

    /// `count` expert-parallel all-to-alls of `bytes` over `group` devices, seconds.
    fn alltoall_time(&self, group: f64, bytes: f64, count: f64) -> f64 {
        self.collective_time(self.p.alltoall_us, group, bytes, count)
    }

    fn collective_time(&self, latency_us: f64, group: f64, bytes: f64, count: f64) -> f64 {
        if group <= 1.0 {
            return 0.0;
        }
        let lat = latency_us * 1e-6 * group.log2().max(1.0);
        count * (lat + 2.0 * (group - 1.0) / group * bytes / self.link_bw)
    }

    /// Seconds at peak for dense-layer, routed-expert and attention FLOPs, each on the tensor
    /// cores of its own precision: weight-only INT4 computes in BF16, and attention over the
    /// KV cache runs in BF16 whatever the weights' precision.
    fn flops_time(&self, dense: f64, expert: f64, attention: f64) -> f64 {
        let peak = |p: Precision| {
            self.acc.flops_for(if p == Precision::Int4 {
                Precision::Bf16
            } else {
                p
            })
        };
        dense / peak(self.dense_prec)
            + expert / peak(self.expert_prec)
            + attention / peak(Precision::Bf16)
    }

    /// One decode step with `running` sequences (total over the replica) at mean context
    /// `ctx`. Returns (seconds, bottleneck).
    pub fn decode_step(&self, running: f64, ctx: f64) -> (f64, &'static str) {
        let m = self.model;
        let p = &self.p;
        let b_stage = (running / self.pp).max(1.0);
        let b = (b_stage / self.dp).max(1.0);
        let layers_frac = 1.0 / self.pp;
        let mut weight_bytes =
            ((m.attention_params + m.dense_mlp_params) * self.dense_prec.weight_bytes() / self.tp
                + m.lm_head_params * 2.0 / self.tp)
                * layers_frac;
        let dense_flops = 2.0 * b * (m.attention_params + m.dense_mlp_params + m.lm_head_params)
            / self.tp
            * layers_frac;
        let mut expert_flops = 0.0;
        let mut expert_bytes = 0.0;
        if let Some(moe) = &m.moe {
            let e = moe.num_experts as f64;
            let k = moe.experts_per_token as f64;
            let unique = e * (1.0 - (1.0 - k / e).powf(b_stage));
            expert_bytes = moe.moe_layers as f64
                * layers_frac
                * unique
                * moe.expert_params
                * self.expert_prec.weight_bytes()
                / self.moe_par;
            expert_flops =
                2.0 * b_stage * k * moe.expert_params * moe.moe_layers as f64 * layers_frac
                    / self.moe_par;
        }
        let ctx_read = if m.attention_topk > 0 {
            ctx.min(m.attention_topk as f64)
        } else {
            ctx
        };
        // A sparse-attention indexer's keys are not charged
        // (`ModelSpec::index_key_bytes_per_token_layer`).
        let kv_bytes = b * self.attention_cache_bytes_per_seq(ctx_read);
        let attn_ctx = m.full_attention_layers as f64 * ctx_read
            + m.sliding_layers as f64 * ctx_read.min(m.sliding_window as f64);
        let attn_layers = (m.full_attention_layers + m.sliding_layers).max(1) as f64;
        let attn_flops =
            b * m.attn_flops_per_ctx_token / attn_layers * attn_ctx / self.tp * layers_frac;
        let moe_tp = (self.moe_par / self.moe_ep).max(1.0);
        weight_bytes +=
            expert_bytes * (1.0 + p.moe_tp_penalty * moe_tp.log2()) / p.moe_eff - expert_bytes;
        let bw = self.acc.memory_bandwidth * p.mem_eff;
        let t_mem = (weight_bytes + expert_bytes + kv_bytes) / bw;
        let t_comp = self.flops_time(dense_flops, expert_flops, attn_flops) / p.decode_compute_eff;
        let t_math = (t_mem.powi(3) + t_comp.powi(3)).cbrt();
        let layers = m.num_layers as f64 * layers_frac;
        let ar_bytes = b * m.hidden_size as f64 * 2.0;
        let mut t_comm = self.comm_time(self.tp, ar_bytes, 2.0 * layers);
        if self.moe_ep > 1.0
            && let Some(moe) = &m.moe
        {
            {
                let bytes = b * moe.experts_per_token as f64 * m.hidden_size as f64;
                t_comm += self.alltoall_time(
                    self.moe_ep,
                    bytes,
                    2.0 * moe.moe_layers as f64 * layers_frac,
                );
            }
        }
        let sparse_layers = if m.attention_topk > 0 { layers } else { 0.0 };
        let t_over = p.step_overhead_ms * 1e-3
            + self.layer_overhead(layers)
            + p.sparse_attention_layer_us * 1e-6 * sparse_layers
            + p.seq_overhead_us * 1e-6 * b;
        let total = (t_math + t_comm + t_over) * self.scale * self.release.decode;
        let bottleneck = if t_over >= t_math.max(t_comm) {
            "overhead"
        } else if t_comm >= t_math {
            "communication"
        } else if t_mem >= t_comp {
            "memory"
        } else {
            "compute"
        };
        (total * self.pp, bottleneck)
    }

    /// Prefill of `tokens` prompt tokens of one request on one attention rank, seconds.
    /// With `with_overhead` false: only its FLOPs at peak, the marginal work it adds to a
    /// batch of prefills (scaled by the fitted burst and mix factors).
    pub fn prefill(&self, tokens: f64, with_overhead: bool) -> f64 {
        let m = self.model;
        let p = &self.p;
        let dense_flops = 2.0 * tokens * (m.attention_params + m.dense_mlp_params) / self.tp;
        let mut expert_flops = 0.0;
        let mut bytes =
            (m.attention_params + m.dense_mlp_params) * self.dense_prec.weight_bytes() / self.tp;
        if let Some(moe) = &m.moe {
            let e = moe.num_experts as f64;
            let k = moe.experts_per_token as f64;
            expert_flops = 2.0 * tokens * k * moe.expert_params * moe.moe_layers as f64
                / self.moe_par
                / p.moe_prefill_eff;
            let unique = e * (1.0 - (1.0 - k / e).powf(tokens));
            bytes += moe.moe_layers as f64
                * unique
                * moe.expert_params
                * self.expert_prec.weight_bytes()
                / self.moe_par;
        }
        let full_ctx = if m.attention_topk > 0 {
            (tokens / 2.0).min(m.attention_topk as f64)
        } else {
            tokens / 2.0
        };
        let attn_layers = (m.full_attention_layers + m.sliding_layers).max(1) as f64;
        let attn_ctx = m.full_attention_layers as f64 * full_ctx
            + m.sliding_layers as f64 * full_ctx.min(m.sliding_window as f64);
        let attn_flops =
            tokens * m.prefill_attn_flops_per_ctx_token / attn_layers * attn_ctx / self.tp;
        let t_flops = self.flops_time(dense_flops, expert_flops, attn_flops);
        let layers = m.num_layers as f64;
        let mut t_comm = self.comm_time(self.tp, tokens * m.hidden_size as f64 * 2.0, 2.0 * layers);
        if self.moe_ep > 1.0
            && let Some(moe) = &m.moe
        {
            // Expert parallel: each token's hidden state goes to its experts and back
            // (dispatch and combine all-to-all) in every MoE layer.
            let bytes = tokens * moe.experts_per_token as f64 * m.hidden_size as f64;
            t_comm += self.alltoall_time(self.moe_ep, bytes, 2.0 * moe.moe_layers as f64);
        }
        if !with_overhead {
            // The work another request's prefill adds to a batch: its FLOPs at peak (the
            // burst and mix factors carry the batched efficiency) and its all-reduces and
            // all-to-alls, which do not shrink with TP; weights are already streamed.
            return (t_flops + t_comm) * self.scale * self.release.prefill;
        }
        let t_comp = t_flops / p.prefill_compute_eff;
        let t_mem = bytes / (self.acc.memory_bandwidth * p.mem_eff);
        // Expert parallelism splits the routed experts between devices; MoE tensor
        // parallelism slices every expert, so each device still runs all of them.
        let local_experts = m.moe.as_ref().map_or(0.0, |moe| {
            moe.num_experts as f64 / self.moe_ep * moe.moe_layers as f64
        });
        let t = t_comp.max(t_mem)
            + t_comm
            + self.layer_overhead(layers)
            + p.expert_overhead_us * 1e-6 * local_experts
            + p.prefill_overhead_ms * 1e-3;
        t * self.scale * self.release.prefill
    }

    /// Decode steps a new request's first token waits for besides its own prefill: a share
    /// of a step to be scheduled, per prefill chunk when the prompt spans several.
    pub fn ttft_steps(&self, input_tokens: u32) -> f64 {
        self.p.ttft_step_factor * (input_tokens as f64 / self.p.prefill_chunk_tokens).max(1.0)
    }

    /// Names of the correction features, in the order of [`Resolved::features`]. No feature
    /// names a model's size (parameter counts): with them the trees memorise the models they
    /// were fitted on, which leave-one-model-out cross-validation showed to generalise worse
    /// to unseen models; the architecture class (MoE, MLA) and the analytic model's own
    /// timings carry what transfers.
    pub const FEATURES: [&'static str; 18] = [
        "engineVllm",
        "engineSglang",
        "engineTrtllm",
        "cpu",
        "moe",
        "mla",
        "log2BatchPerRank",
        "log2Isl",
        "log2Osl",
        "log2Tp",
        "log2AttentionDp",
        "log2MoeEp",
        "weightBytes",
        "memoryBandwidthTBs",
        "log10DecodeStepMs",
        "prefillShareOfTpot",
        "log10PrefillMs",
        "burstShareOfTtft",
    ];

    /// Bytes per weight of the routed experts (of all weights for a dense model).
    pub fn expert_weight_bytes(&self) -> f64 {
        self.expert_prec.weight_bytes()
    }

    /// Features of the learned correction for a workload (see [`Resolved::FEATURES`]).
    pub fn features(&self, w: &Workload, running: f64, t_dec: f64, tpot: f64) -> Vec<f64> {
        let m = self.model;
        let t_pf = self.prefill(w.input_tokens as f64, true);
        let burst = self.p.burst_factor * ((running / self.dp).max(1.0) - 1.0) / 2.0
            * self.prefill(w.input_tokens as f64, false);
        vec![
            (self.engine == Engine::Vllm) as u8 as f64,
            (self.engine == Engine::Sglang) as u8 as f64,
            (self.engine == Engine::Trtllm) as u8 as f64,
            (self.acc.kind == DeviceKind::Cpu) as u8 as f64,
            m.is_moe() as u8 as f64,
            matches!(m.attention, AttentionKind::Mla { .. }) as u8 as f64,
            (running / self.dp).max(1.0).log2(),
            (w.input_tokens as f64).log2(),
            (w.output_tokens as f64).log2(),
            self.tp.log2(),
            self.dp.log2(),
            self.moe_ep.log2(),
            self.expert_prec.weight_bytes(),
            self.acc.memory_bandwidth / 1e12,
            (t_dec * 1e3).max(1e-3).log10(),
            1.0 - t_dec / tpot.max(1e-12),
            (t_pf * 1e3).max(1e-3).log10(),
            burst / (t_pf + self.ttft_steps(w.input_tokens) * t_dec + burst).max(1e-12),
        ]
    }

    /// Predict the workload on this resolved configuration (with the learned correction
    /// when the parameters carry one).
    pub fn predict(&self, w: &Workload) -> Result<Prediction> {
        self.predict_inner(w, true).map(|(p, _)| p)
    }

    /// Predict without the learned correction, also returning the correction features.
    pub fn predict_analytic(&self, w: &Workload) -> Result<(Prediction, Vec<f64>)> {
        self.predict_inner(w, false)
    }

    fn predict_inner(&self, w: &Workload, correct: bool) -> Result<(Prediction, Vec<f64>)> {
        if w.input_tokens == 0 || w.output_tokens == 0 || w.concurrency == 0 {
            return Err(Error::invalid(
                "workload",
                "inputTokens, outputTokens and concurrency must all be at least 1",
            ));
        }
        let isl = w.input_tokens as f64;
        let osl = w.output_tokens as f64;
        // vLLM and SGLang admit requests on demand (and preempt when the cache runs out), so
        // what has to fit is the mean context of the running requests (prompt plus half the
        // output). TensorRT-LLM's default capacity scheduler (GUARANTEED_NO_EVICT) reserves
        // every admitted request's full length up front.
        let admitted_context = match self.engine {
            Engine::Trtllm => isl + osl,
            _ => isl + osl / 2.0,
        };
        let (memory, cap) = self.memory(admitted_context, w.concurrency);
        let running = w.concurrency.min(cap.max(1));
        let r = running as f64;
        let ctx = isl + osl / 2.0;
        let (t_dec, bottleneck) = self.decode_step(r, ctx);
        let t_pf_alone = self.prefill(isl, true);
        let t_pf_work = self.prefill(isl, false);
        let per_rank = (r / self.dp).max(1.0);
        let ttft_run = t_pf_alone
            + self.ttft_steps(w.input_tokens) * t_dec
            + self.p.burst_factor * (per_rank - 1.0) / 2.0 * t_pf_work;
        // Other users' prefills interleave with my decode steps: each of the other users on
        // the rank starts one request per cycle (time to first token plus decode), so the
        // share of the cycle I spend decoding sees that share of their prefills, spread over
        // my `osl` steps. The share depends on TPOT itself; a few fixed-point steps settle it.
        let others = (per_rank - 1.0).max(0.0) * t_pf_work / osl;
        let mut tpot = t_dec + self.p.mix_factor * others;
        for _ in 0..3 {
            let decoding = (osl - 1.0).max(0.0) * tpot;
            let share = decoding / (ttft_run + decoding).max(1e-12);
            tpot = t_dec + self.p.mix_factor * others * share;
        }
        let features = self.features(w, r, t_dec, tpot);
        if correct && let Some(g) = self.correction.and_then(|c| c.tpot.as_ref()) {
            tpot *= g
                .predict(&features)
                .clamp(-MAX_CORRECTION_LN, MAX_CORRECTION_LN)
                .exp();
        }
        let at = Anchors::at(w.input_tokens, w.output_tokens, w.concurrency);
        let (anchor_tpot, anchor_ttft) = match &self.anchors {
            Some((a, m)) if correct => a.adjust_except(
                m.exact.unwrap_or_default(),
                &m.other_layouts,
                at,
                false,
                m.prior_weight,
            ),
            _ => (0.0, 0.0),
        };
        // Only this model's own measurements of this very deployment make it a measured one:
        // another layout's or a twin's keep the model's basis and expected error.
        let leans_on_this_deployment = correct
            && self
                .anchors
                .as_ref()
                .is_some_and(|(a, m)| m.exact.is_some_and(|points| a.leans_on(points, at)));
        let twin = self.anchors.as_ref().and_then(|(_, m)| m.twin);
        let measured_deployment = leans_on_this_deployment && twin.is_none();
        let measured_as = twin
            .filter(|_| leans_on_this_deployment)
            .map(str::to_string);
        tpot *= anchor_tpot.exp();
        let decode_time = (osl - 1.0).max(0.0) * tpot;
        let cycle = ttft_run + decode_time;
        // Requests beyond what the KV cache holds wait for a slot (closed loop, Little's law).
        let queue_wait = if w.concurrency > running {
            cycle * (w.concurrency as f64 / r - 1.0)
        } else {
            0.0
        };
        let mut ttft = ttft_run + queue_wait;
        if correct && let Some(g) = self.correction.and_then(|c| c.ttft.as_ref()) {
            ttft *= g
                .predict(&features)
                .clamp(-MAX_CORRECTION_LN, MAX_CORRECTION_LN)
                .exp();
        }
        ttft *= anchor_ttft.exp();
        let e2e = ttft + decode_time;
        let tokens_per_s = r * osl / cycle;
        let prediction = Prediction {
            ttft_ms: ttft * 1e3,
            tpot_ms: tpot * 1e3,
            e2e_ms: e2e * 1e3,
            tokens_per_s_per_user: 1.0 / tpot,
            tokens_per_s,
            requests_per_s: r / cycle,
            max_concurrency: cap,
            running,
            queue_wait_ms: queue_wait * 1e3,
            decode_step_ms: t_dec * 1e3,
            prefill_ms: t_pf_alone * 1e3,
            bottleneck: bottleneck.to_string(),
            devices: (self.tp * self.pp * self.dp) as u32,
            memory,
            measured_as,
            measured_deployment,
            expected_error: correct
                .then(|| self.expected_error.for_basis(measured_deployment))
                .flatten(),
        };
        Ok((prediction, features))
    }
}

/// Predict one configuration under one workload with the built-in catalogs and the committed
/// fitted parameters. A configuration that does not fit still returns a prediction whose
/// `memory.fits` is false and whose `memory.verdict` says why.
pub fn predict(cfg: &ServingConfig, workload: &Workload) -> Result<Prediction> {
    let m = model(&cfg.model)?;
    let acc = accelerator(&cfg.accelerator)?;
    predict_with(cfg, m, acc, FittedParams::builtin(), workload)
}

/// Predict with an explicit model, device and parameter set (for custom config.json files,
/// overridden hardware, or calibration).
pub fn predict_with(
    cfg: &ServingConfig,
    m: &ModelSpec,
    acc: &Accelerator,
    params: &FittedParams,
    workload: &Workload,
) -> Result<Prediction> {
    Resolved::new(cfg, m, acc, params)?.predict(workload)
}
