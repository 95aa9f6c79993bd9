//! Fitted efficiency and overhead parameters of the performance model.
//!
//! `bud-sim calibrate` (the command line is recorded in each file) writes two sets:
//! `data/fitted_params_split.json`, fitted on the training split only, which every held-back
//! accuracy figure is computed from, and `data/fitted_params.json`, refitted on every row with
//! the choices the split fit made, which the simulator ships and predicts with. Parameters are
//! kept per engine (and per engine on CPUs); a per-accelerator scale absorbs software maturity
//! differences between GPU generations, and per-release multipliers the differences between
//! releases of one engine.

use crate::gbdt::Gbdt;
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Parameters of one engine family on one device kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineParams {
    /// Achieved fraction of peak memory bandwidth when streaming weights and KV.
    pub mem_eff: f64,
    /// Achieved fraction of peak tensor FLOPS in decode steps.
    pub decode_compute_eff: f64,
    /// Achieved fraction of peak tensor FLOPS in prefill.
    pub prefill_compute_eff: f64,
    /// Efficiency multiplier of routed-expert (grouped GEMM) memory traffic.
    pub moe_eff: f64,
    /// Fixed per-step overhead (scheduler, sampling, launch), ms.
    pub step_overhead_ms: f64,
    /// Per-layer per-step overhead (kernel launches not hidden by graphs, latency-bound small
    /// GEMMs) of a model of [`REFERENCE_LAYER_WIDTH`](crate::perf::REFERENCE_LAYER_WIDTH)
    /// hidden width, µs; it scales with a model's width.
    pub layer_overhead_us: f64,
    /// Per-sequence per-step overhead (batch bookkeeping, sampling), µs.
    pub seq_overhead_us: f64,
    /// Latency of one all-reduce / all-to-all hop, µs (times log2 of the group size).
    pub allreduce_us: f64,
    /// Fixed prefill overhead (tokenisation, scheduling, first step), ms.
    pub prefill_overhead_ms: f64,
    /// How long a request waits behind a burst of simultaneous prefills, in units of their
    /// FLOPs at peak (folds in the batched prefill efficiency and the share of a burst).
    pub burst_factor: f64,
    /// Share of a decode step a new request waits before its prefill starts.
    pub ttft_step_factor: f64,
    /// How much other requests' prefills stretch the time per output token, in units of
    /// their FLOPs at peak.
    pub mix_factor: f64,
    /// Relative efficiency of routed-expert FLOPs in prefill (grouped GEMMs run below dense
    /// GEMM efficiency).
    #[serde(default = "one")]
    pub moe_prefill_eff: f64,
    /// Slow-down of routed-expert weight streaming per doubling of MoE tensor parallelism:
    /// sharding every expert's matrices `moe_tp` ways leaves grouped GEMMs too narrow to
    /// reach bandwidth, which expert parallelism (whole experts per device) avoids.
    #[serde(default)]
    pub moe_tp_penalty: f64,
    /// Latency of one expert-parallel all-to-all (dispatch or combine), µs (times log2 of
    /// the group size); its own kernels, distinct from the tensor-parallel all-reduce.
    #[serde(default = "eight")]
    pub alltoall_us: f64,
    /// Prompt tokens per scheduler step (chunked prefill): a prompt longer than this takes
    /// several steps, each shared with the running decodes, before its first token.
    #[serde(default = "unchunked")]
    pub prefill_chunk_tokens: f64,
    /// Fixed prefill cost per routed expert a device holds, per MoE layer, µs. The measured
    /// prefill floor of MoE models follows experts times MoE layers (DeepSeek's 256 × 58 far
    /// above gpt-oss's 128 × 36) rather than their FLOPs, bytes or layer count; decode, at up
    /// to as many experts per step, shows no such cost. Leave-one-model-out cross-validation
    /// decided (simulator/CALIBRATION_LOG.md).
    #[serde(default)]
    pub expert_overhead_us: f64,
    /// Per-layer cost of a decode step of a sparse-attention model (DeepSeek Sparse Attention,
    /// `index_topk` in its config: an indexer scores the cached tokens and picks the top k
    /// before attention, several kernels more per layer), µs. GLM-5 on SGLang identifies it;
    /// engines without such rows borrow it. Cross-validation decided
    /// (simulator/CALIBRATION_LOG.md).
    #[serde(default)]
    pub sparse_attention_layer_us: f64,
}

fn unchunked() -> f64 {
    1e9
}

fn eight() -> f64 {
    8.0
}

fn one() -> f64 {
    1.0
}

impl EngineParams {
    /// Parameter names in fitting order.
    pub const NAMES: [&'static str; 18] = [
        "memEff",
        "decodeComputeEff",
        "prefillComputeEff",
        "moeEff",
        "stepOverheadMs",
        "layerOverheadUs",
        "seqOverheadUs",
        "allreduceUs",
        "prefillOverheadMs",
        "burstFactor",
        "ttftStepFactor",
        "mixFactor",
        "moePrefillEff",
        "moeTpPenalty",
        "alltoallUs",
        "prefillChunkTokens",
        "expertOverheadUs",
        "sparseAttentionLayerUs",
    ];

    /// Get a parameter by index (for the fitter).
    pub fn get(&self, i: usize) -> f64 {
        [
            self.mem_eff,
            self.decode_compute_eff,
            self.prefill_compute_eff,
            self.moe_eff,
            self.step_overhead_ms,
            self.layer_overhead_us,
            self.seq_overhead_us,
            self.allreduce_us,
            self.prefill_overhead_ms,
            self.burst_factor,
            self.ttft_step_factor,
            self.mix_factor,
            self.moe_prefill_eff,
            self.moe_tp_penalty,
            self.alltoall_us,
            self.prefill_chunk_tokens,
            self.expert_overhead_us,
            self.sparse_attention_layer_us,
        ][i]
    }

    /// Set a parameter by index (for the fitter).
    pub fn set(&mut self, i: usize, v: f64) {
        let slot = match i {
            0 => &mut self.mem_eff,
            1 => &mut self.decode_compute_eff,
            2 => &mut self.prefill_compute_eff,
            3 => &mut self.moe_eff,
            4 => &mut self.step_overhead_ms,
            5 => &mut self.layer_overhead_us,
            6 => &mut self.seq_overhead_us,
            7 => &mut self.allreduce_us,
            8 => &mut self.prefill_overhead_ms,
            9 => &mut self.burst_factor,
            10 => &mut self.ttft_step_factor,
            11 => &mut self.mix_factor,
            12 => &mut self.moe_prefill_eff,
            13 => &mut self.moe_tp_penalty,
            14 => &mut self.alltoall_us,
            15 => &mut self.prefill_chunk_tokens,
            16 => &mut self.expert_overhead_us,
            _ => &mut self.sparse_attention_layer_us,
        };
        *slot = v;
    }

    /// Bounds of each parameter (the fitter clamps to these).
    pub fn bounds(i: usize) -> (f64, f64) {
        match i {
            0 => (0.2, 1.0),
            1 | 2 => (0.05, 1.0),
            3 => (0.2, 1.5),
            4 => (0.0, 50.0),
            5 => (0.0, 200.0),
            6 => (0.0, 500.0),
            7 => (0.5, 200.0),
            8 => (0.0, 2000.0),
            9 => (0.0, 20.0),
            10 => (0.0, 3.0),
            11 => (0.0, 20.0),
            12 => (0.05, 1.0),
            13 => (0.0, 2.0),
            14 => (0.5, 200.0),
            15 => (256.0, 65536.0),
            16 => (0.0, 100.0),
            _ => (0.0, 200.0),
        }
    }

    /// Starting values before calibration: typical figures of a mature GPU engine.
    pub fn default_gpu() -> Self {
        EngineParams {
            mem_eff: 0.75,
            decode_compute_eff: 0.5,
            prefill_compute_eff: 0.5,
            moe_eff: 0.8,
            step_overhead_ms: 2.0,
            layer_overhead_us: 10.0,
            seq_overhead_us: 20.0,
            allreduce_us: 8.0,
            prefill_overhead_ms: 20.0,
            burst_factor: 0.5,
            ttft_step_factor: 0.5,
            mix_factor: 1.0,
            moe_prefill_eff: 0.5,
            moe_tp_penalty: 0.0,
            alltoall_us: 8.0,
            prefill_chunk_tokens: 8192.0,
            expert_overhead_us: 0.0,
            sparse_attention_layer_us: 0.0,
        }
    }

    /// Starting values for CPU serving.
    pub fn default_cpu() -> Self {
        EngineParams {
            mem_eff: 0.5,
            decode_compute_eff: 0.3,
            prefill_compute_eff: 0.3,
            moe_eff: 0.8,
            step_overhead_ms: 5.0,
            layer_overhead_us: 50.0,
            seq_overhead_us: 200.0,
            allreduce_us: 20.0,
            prefill_overhead_ms: 50.0,
            burst_factor: 1.0,
            ttft_step_factor: 0.5,
            mix_factor: 1.0,
            moe_prefill_eff: 1.0,
            moe_tp_penalty: 0.0,
            alltoall_us: 8.0,
            prefill_chunk_tokens: 8192.0,
            expert_overhead_us: 0.0,
            sparse_attention_layer_us: 0.0,
        }
    }
}

/// The full fitted parameter set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FittedParams {
    /// The command that produced this file.
    pub command: String,
    /// What the fit saw and what it held back.
    pub notes: String,
    /// Fitted on every measured row, the held-back ones included: the shipped parameters.
    /// Held-back figures computed with such parameters are not a score; they come from the
    /// split fit (`data/fitted_params_split.json`), which made every modelling choice.
    #[serde(default)]
    pub fitted_on_every_row: bool,
    /// Parameters by key: `<engine>-dense` and `<engine>-moe` on GPUs (vllm, sglang, trtllm),
    /// `vllm-cpu` and `llamacpp-cpu` on CPUs.
    pub engines: BTreeMap<String, EngineParams>,
    /// Multiplier on step and prefill times per accelerator id (1.0 when absent).
    pub accelerator_scale: BTreeMap<String, f64>,
    /// Multipliers per engine release, keyed `"<engine> <version>"` (1.0 when absent).
    #[serde(default)]
    pub release_scale: BTreeMap<String, ReleaseScale>,
    /// Learned correction of the analytic model's log error (absent: analytic only).
    #[serde(default)]
    pub correction: Option<Correction>,
    /// Measured deployments the corrected prediction leans on (absent: none).
    #[serde(default)]
    pub anchors: Option<Anchors>,
    /// Correction of prefill/decode disaggregated predictions (absent: analytic only).
    #[serde(default)]
    pub disagg: Option<DisaggCorrection>,
    /// How far to trust a prediction: the split fit's error on held-back rows, by whether the
    /// prediction leans on a measured deployment (for the model alone, pooled with a
    /// leave-one-model-out cross-validation). The shipped parameters carry the split fit's
    /// figures, since their own cannot be scored (absent: never calibrated).
    #[serde(default)]
    pub held_back_error: Option<HeldBackError>,
}

/// Mean absolute percentage error of one kind of prediction on held-back rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedError {
    /// Held-back rows the figures come from.
    pub rows: usize,
    /// TTFT mean absolute percentage error, %.
    pub ttft_percent: f64,
    /// TPOT mean absolute percentage error, %.
    pub tpot_percent: f64,
}

/// [`ExpectedError`] by what a prediction leans on (see
/// [`crate::perf::Prediction::measured_deployment`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorByBasis {
    /// Predictions that lean on measurements of their deployment near the workload
    /// ([`Anchors::leans_on`]; absent: no such held-back row).
    #[serde(default)]
    pub measured_deployment: Option<ExpectedError>,
    /// Predictions of the model alone: deployments never measured, or measured only far from
    /// the workload (absent: no such row).
    /// For agg predictions these rows are pooled with the leave-one-model-out
    /// cross-validation ([`HeldBackError::agg_model_cross_validation`]).
    #[serde(default)]
    pub model: Option<ExpectedError>,
}

impl ErrorByBasis {
    /// The figures for a prediction that does (or does not) lean on a measured deployment.
    pub fn for_basis(&self, measured_deployment: bool) -> Option<ExpectedError> {
        if measured_deployment {
            self.measured_deployment
        } else {
            self.model
        }
    }
}

/// The split fit's held-back error of aggregated and disaggregated predictions.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldBackError {
    /// Aggregated serving (`mode=agg` rows). Its `model` figure pools the wholly held-back
    /// models' rows with `agg_model_cross_validation`: two held-back models alone are too few
    /// to say what an unmeasured model can expect.
    pub agg: ErrorByBasis,
    /// Prefill/decode disaggregated serving (`mode=disagg` rows).
    pub disagg: ErrorByBasis,
    /// Leave-one-model-out cross-validation of agg predictions on the training rows: each
    /// model the split fit saw, scored by a fit without it
    /// ([`crate::calibrate::cross_validate_models`]; absent: not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg_model_cross_validation: Option<ExpectedError>,
}

/// What the analytic disaggregated model ([`crate::batch::disagg_analytic`]) misses, learned
/// from the training split's disagg rows: it has no queueing, and measured disagg TTFT is
/// typically several times a lone prefill (its users wait for prefill and decode slots). Each
/// part is kept only where it beats the model without it on held-back disagg rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisaggCorrection {
    /// Trees on [`crate::batch::DISAGG_FEATURES`] predicting ln(measured / analytic).
    pub correction: Correction,
    /// Anchors on measured disagg configurations (keyed by
    /// [`crate::batch::DisaggAnalytic::deployment`], at log2 input, output tokens and users).
    #[serde(default)]
    pub anchors: Option<Anchors>,
}

/// Largest change the disaggregated correction may make, as a natural log (×20): measured disagg
/// TTFT ranges up to e^3 times the queue-free analytic value; the training targets are clamped
/// to the same range.
pub const MAX_DISAGG_CORRECTION_LN: f64 = 3.0;

/// Measurements of the same deployment (model, device, engine, precisions and parallel
/// layout) at other lengths and concurrencies: where the calibration data measured the
/// deployment asked about, the corrected prediction is multiplied by a kernel-weighted mean of
/// those measurements' remaining errors (the `ln(measured / corrected)` of the training rows),
/// shrunk toward none ([`Anchors::own_prior_weights`]) and lowered where they scatter
/// ([`Anchors::spread_discount`]). The model's other layouts on the same device, engine and
/// precisions count too, weighted down by how far their layout is ([`Anchors::layout_width`]),
/// so a layout the data did not measure leans on its measured neighbours. A model the data
/// never measured on that device, engine and precisions borrows the measurements of a measured
/// model with the same architecture ([`Anchors::measured`]). Anything else is predicted by the
/// model alone, so unseen architectures, devices and precisions are unaffected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Anchors {
    /// Kernel width, in doublings of input length, output length and concurrency.
    pub bandwidth: f64,
    /// Weight of "no change" against the measurements' kernel weights (which are at most 1
    /// each) where they are a twin's ([`Anchors::measured`]), and for an engine without a weight
    /// of its own ([`Anchors::own_prior_weights`]). Chosen with [`Anchors::bandwidth`] by
    /// `calibrate::fit_anchors` leave-one-point-out. Also how much a prediction's own
    /// measurements must weigh for it to lean on them ([`Anchors::leans_on`]).
    pub prior_weight: f64,
    /// Weight of "no change" where a model's own measurements are applied, by engine (the
    /// engine's part of the key, [`Anchors::engine`]). Each engine's is chosen
    /// leave-one-point-out on its own points: engines measured densely and consistently trust
    /// their measurements almost fully (0.001 to 0.03 in the committed fits), while the few,
    /// scattered CPU points far apart in load are shrunk more (1 or 2; the disaggregated
    /// anchors' engines pick 0.001 to 2). A twin's measurements
    /// keep [`Anchors::prior_weight`]: another model's errors are not this model's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub own_prior_weights: BTreeMap<String, f64>,
    /// Kernel width over layouts, in doublings of TP, PP, attention DP, MoE TP and expert
    /// parallelism (a dense model's MoE TP follows its TP): another layout's points weigh
    /// `exp(-d² / 2w²)` of this layout's at `d` doublings away. Chosen by
    /// `calibrate::fit_anchors` leave-one-point-out. 0 (disaggregated anchors, which are keyed
    /// by configuration): only the deployment's own points count.
    #[serde(default)]
    pub layout_width: f64,
    /// Share of the measurements' spread taken off their mean: a prediction's log-error
    /// adjustment is the kernel-weighted mean of the measurements' log errors less this share
    /// of their kernel-weighted variance around it. Where a deployment's measurements scatter,
    /// a prediction below their typical value has the smaller expected absolute percentage
    /// error, the measure the accuracy targets use (for a log-normal error of variance σ², the
    /// median times e^(−σ²) minimises it), while a deployment measured consistently keeps its
    /// mean. Chosen by `calibrate::fit_anchors` leave-one-point-out; 0: the mean.
    #[serde(default)]
    pub spread_discount: f64,
    /// Per deployment key ([`Anchors::key`]): `[log2 input tokens, log2 output tokens,
    /// log2 concurrency, TPOT log error, TTFT log error]` of each measured point.
    pub deployments: BTreeMap<String, Vec<[f64; 5]>>,
    /// The architecture ([`ModelSpec::architecture`]) of each measured model, by its id
    /// (empty for disaggregated anchors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub architectures: BTreeMap<String, String>,
}

/// The measurements a prediction's anchors draw on ([`Anchors::measured`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Measured<'a> {
    /// The points of this very deployment, when it was measured.
    pub exact: Option<&'a [[f64; 5]]>,
    /// The points of its other layouts, each set with its layout weight
    /// ([`Anchors::other_layouts`]).
    pub other_layouts: Vec<(f64, &'a [[f64; 5]])>,
    /// The measured model of the same architecture the points come from, when it is not the
    /// model asked about.
    pub twin: Option<&'a str>,
    /// The weight of "no change" against these points ([`Anchors::prior_weight_for`]).
    pub prior_weight: f64,
}

impl Anchors {
    /// The key of a deployment, from its resolved settings; `engine` is the engine's parameter
    /// group ([`crate::perf::params_key`]), so CPU deployments key as `vllm-cpu`.
    pub fn key(
        model: &str,
        accelerator: &str,
        engine: impl std::fmt::Display,
        precisions: [impl std::fmt::Display; 3],
        layout: [u32; 5],
    ) -> String {
        let [dense, expert, kv] = precisions;
        let [tp, pp, dp, moe_tp, moe_ep] = layout;
        format!(
            "{} {accelerator} {engine} {dense}/{expert}/{kv} tp{tp} pp{pp} dp{dp} moetp{moe_tp} ep{moe_ep}",
            model.to_ascii_lowercase()
        )
    }

    /// The engine part of a deployment's key ([`Anchors::key`]).
    pub fn engine(key: &str) -> &str {
        key.split(' ').nth(2).unwrap_or_default()
    }

    /// The weight of "no change" for a prediction of the deployment `key` that leans on its
    /// model's own measurements or, with `twin`, on a twin's ([`Anchors::own_prior_weights`]).
    pub fn prior_weight_for(&self, key: &str, twin: bool) -> f64 {
        match self.own_prior_weights.get(Self::engine(key)) {
            Some(&weight) if !twin => weight,
            _ => self.prior_weight,
        }
    }

    /// What a deployment of the model `id` (whose architecture is `model`; `key` builds the
    /// key of this deployment for a model id) leans on: the model's own measurements of this
    /// deployment and of its other layouts ([`Anchors::other_layouts`]) when the data has any;
    /// otherwise those of the measured model of the same architecture that has this
    /// deployment, or else the most points of its other layouts (DeepSeek-R1's for
    /// DeepSeek-V3, `Llama-3.1-70B`'s for `Llama-3.1-70B-Instruct`); `None` when neither has.
    pub fn measured<'a>(
        &'a self,
        id: &str,
        model: &ModelSpec,
        key: impl Fn(&str) -> String,
    ) -> Option<Measured<'a>> {
        let of = |model_id: &str, twin: Option<&'a str>| {
            let key = key(model_id);
            let exact = self.deployments.get(&key).map(Vec::as_slice);
            let other_layouts = self.other_layouts(&key);
            (exact.is_some() || !other_layouts.is_empty()).then_some(Measured {
                exact,
                other_layouts,
                twin,
                prior_weight: self.prior_weight_for(&key, twin.is_some()),
            })
        };
        if let Some(own) = of(id, None) {
            return Some(own);
        }
        if self.architectures.is_empty() {
            return None;
        }
        // A measured model's architecture is on record; only others need it worked out.
        let worked_out;
        let architecture = match self.architectures.get(id) {
            Some(a) => a,
            None => {
                worked_out = model.architecture();
                &worked_out
            }
        };
        self.architectures
            .iter()
            .filter(|(twin, a)| *a == architecture && !twin.eq_ignore_ascii_case(id))
            .filter_map(|(twin, _)| of(twin, Some(twin.as_str())))
            .max_by_key(|m| {
                let exact = m.exact.map_or(0, <[_]>::len);
                let others: usize = m.other_layouts.iter().map(|(_, p)| p.len()).sum();
                (exact, exact + others)
            })
    }

    /// The measured points of the other layouts of the deployment `key` (the same model,
    /// device, engine and precisions), each with its layout weight ([`Anchors::layout_width`];
    /// layouts weighing less than 1/1000 are left out).
    pub fn other_layouts(&self, key: &str) -> Vec<(f64, &[[f64; 5]])> {
        let Some((group, layout)) = key.split_once(" tp") else {
            return Vec::new();
        };
        if self.layout_width <= 0.0 {
            return Vec::new();
        }
        let doublings = |layout: &str| {
            // `4 pp1 dp1 moetp4 ep1`, after the `tp` of the key.
            layout
                .split(' ')
                .map(|part| {
                    let digits = part.trim_start_matches(|c: char| !c.is_ascii_digit());
                    digits.parse::<f64>().unwrap_or(1.0).max(1.0).log2()
                })
                .collect::<Vec<f64>>()
        };
        let own = doublings(layout);
        let start = format!("{group} tp");
        self.deployments
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .filter(|(k, _)| k.as_str() != key)
            .filter_map(|(k, points)| {
                let other = doublings(&k[start.len()..]);
                let d2: f64 = own.iter().zip(&other).map(|(a, b)| (a - b).powi(2)).sum();
                let weight = (-d2 / (2.0 * self.layout_width * self.layout_width)).exp();
                (weight >= 1e-3).then_some((weight, points.as_slice()))
            })
            .collect()
    }

    /// Where a workload sits among a deployment's points: log2 of input tokens, output
    /// tokens and concurrency (users).
    pub fn at(input_tokens: u32, output_tokens: u32, concurrency: u32) -> [f64; 3] {
        [input_tokens, output_tokens, concurrency].map(|x| f64::from(x.max(1)).log2())
    }

    /// A measured point as stored: where it was measured ([`Anchors::at`]) and its remaining
    /// log errors of TPOT and TTFT, rounded to 1e-4 to keep the parameter file small.
    pub fn point(at: [f64; 3], tpot_log_error: f64, ttft_log_error: f64) -> [f64; 5] {
        let [input, output, users] = at;
        [input, output, users, tpot_log_error, ttft_log_error].map(|x| (x * 1e4).round() / 1e4)
    }

    /// Log-error adjustments (TPOT, TTFT) at a point of the measurements of the deployment
    /// `key`.
    pub fn adjust(&self, key: &str, points: &[[f64; 5]], at: [f64; 3]) -> (f64, f64) {
        self.adjust_except(points, &[], at, false, self.prior_weight_for(key, false))
    }

    /// [`Anchors::adjust`] with the points of the deployment's other layouts too, each set's
    /// kernel weights scaled by its layout weight ([`Anchors::other_layouts`]), optionally
    /// ignoring the deployment's own points measured exactly at `at` (to score the anchors on
    /// their own measurements, leave-one-point-out; another layout's point there stays), with
    /// "no change" weighing `prior_weight` ([`Anchors::prior_weight_for`]).
    pub fn adjust_except(
        &self,
        points: &[[f64; 5]],
        other_layouts: &[(f64, &[[f64; 5]])],
        at: [f64; 3],
        skip_same: bool,
        prior_weight: f64,
    ) -> (f64, f64) {
        let own = points
            .iter()
            .map(|p| (1.0, squared_distance(p, at), p))
            .filter(|(_, d2, _)| !(skip_same && *d2 < 1e-12));
        let others = other_layouts.iter().flat_map(|(layout_weight, points)| {
            points
                .iter()
                .map(move |p| (*layout_weight, squared_distance(p, at), p))
        });
        // Kernel weights and weighted sums of the TPOT and TTFT log errors and their squares.
        let (mut w_sum, mut sums, mut squares) = (0.0, [0.0; 2], [0.0; 2]);
        for (layout_weight, d2, p) in own.chain(others) {
            let w = layout_weight * self.weight(d2);
            w_sum += w;
            for (i, error) in [p[3], p[4]].into_iter().enumerate() {
                sums[i] += w * error;
                squares[i] += w * error * error;
            }
        }
        // "No change" counts as `prior_weight` more weight, at no error and no spread.
        let denominator = w_sum + prior_weight;
        let [tpot, ttft] = [0, 1].map(|i| {
            let mean = sums[i] / denominator;
            // Σw(e − mean)² = Σwe² − 2·mean·Σwe + mean²·Σw
            let variance = (squares[i] - 2.0 * mean * sums[i] + mean * mean * w_sum) / denominator;
            mean - self.spread_discount * variance.max(0.0)
        });
        (tpot, ttft)
    }

    /// Whether a prediction at `at` leans on the deployment's measurements: together they
    /// weigh at least [`Anchors::prior_weight`] (with that weight of "no change", at least half
    /// of their error would be applied).
    /// A prediction far from every measured point (with the fitted width of one doubling, more
    /// than about 1.7 doublings of input length, output length and load from the nearest) has
    /// the model's basis, whatever else of the deployment was measured, though the nearest
    /// points may still move it ([`Anchors::own_prior_weights`]).
    pub fn leans_on(&self, points: &[[f64; 5]], at: [f64; 3]) -> bool {
        let weight: f64 = points
            .iter()
            .map(|p| self.weight(squared_distance(p, at)))
            .sum();
        weight >= self.prior_weight
    }

    /// Kernel weight of a measured point at squared distance `d2` (in doublings).
    fn weight(&self, d2: f64) -> f64 {
        (-d2 / (2.0 * self.bandwidth * self.bandwidth)).exp()
    }
}

/// Squared distance, in doublings, between a measured point and where a prediction is made.
fn squared_distance(point: &[f64; 5], at: [f64; 3]) -> f64 {
    (0..3).map(|i| (point[i] - at[i]).powi(2)).sum()
}

/// How one engine release differs from its engine family: releases of the same engine ship
/// different kernels and defaults (in the calibration data, TensorRT-LLM 1.2.0rc6.post3 decodes
/// the same DeepSeek-R1 configurations up to 1.9× faster than 1.2.0rc6.post2). Fitted by
/// [`crate::calibrate::release_effects`] only for releases with at least
/// [`ReleaseScale::MIN_ROWS`] training rows on configurations that another release of the same
/// engine was measured on too; any other release, and a configuration that names none, uses
/// the engine family's parameters unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseScale {
    /// Multiplier on the decode step.
    pub decode: f64,
    /// Multiplier on prefill time.
    pub prefill: f64,
}

impl ReleaseScale {
    /// No change.
    pub const NONE: ReleaseScale = ReleaseScale {
        decode: 1.0,
        prefill: 1.0,
    };
    /// Training rows a release needs before it gets its own multipliers.
    pub const MIN_ROWS: usize = 10;
    /// Bounds of both multipliers.
    pub const BOUNDS: (f64, f64) = (0.4, 2.5);

    /// The key of a release: `"<engine> <version>"`.
    pub fn key(engine: impl std::fmt::Display, version: &str) -> String {
        format!("{engine} {version}")
    }
}

/// Largest change the learned correction may make, as a natural log: it multiplies or divides
/// the analytic prediction by at most e^0.35 ≈ 1.42. Wider bounds let the trees multiply TTFT
/// by up to 4.5× (bound 1.5) or 2× (bound 0.7) for models unlike any they were fitted on;
/// leave-one-model-out TTFT was 51.8 % at 0.7, 49.9 % at 0.35; what a seen deployment needs
/// beyond that, its anchors carry.
pub const MAX_CORRECTION_LN: f64 = 0.35;

/// Gradient-boosted trees predicting ln(measured / analytic) for TPOT and TTFT from the
/// features of [`crate::perf::Resolved::features`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Correction {
    /// Feature names, in order.
    pub features: Vec<String>,
    /// Correction of TPOT (absent when it did not beat the analytic model on held-back rows).
    #[serde(default)]
    pub tpot: Option<Gbdt>,
    /// Correction of TTFT (absent when it did not beat the analytic model on held-back rows).
    #[serde(default)]
    pub ttft: Option<Gbdt>,
}

impl Correction {
    /// This correction with only the halves (TPOT, TTFT) that `kept` has.
    pub fn keeping_halves_of(self, kept: &Correction) -> Correction {
        Correction {
            tpot: self.tpot.filter(|_| kept.tpot.is_some()),
            ttft: self.ttft.filter(|_| kept.ttft.is_some()),
            features: self.features,
        }
    }
}

impl Default for FittedParams {
    fn default() -> Self {
        let mut engines = BTreeMap::new();
        for e in ["vllm", "sglang", "trtllm"] {
            engines.insert(e.to_string(), EngineParams::default_gpu());
        }
        engines.insert("vllm-cpu".into(), EngineParams::default_cpu());
        engines.insert("llamacpp-cpu".into(), EngineParams::default_cpu());
        FittedParams {
            command: "defaults".into(),
            notes: String::new(),
            fitted_on_every_row: false,
            engines,
            accelerator_scale: BTreeMap::new(),
            release_scale: BTreeMap::new(),
            correction: None,
            anchors: None,
            disagg: None,
            held_back_error: None,
        }
    }
}

impl FittedParams {
    /// The shipped fitted parameters (embedded from `data/fitted_params.json`, fitted on every
    /// measured row).
    pub fn builtin() -> &'static FittedParams {
        static P: OnceLock<FittedParams> = OnceLock::new();
        P.get_or_init(|| {
            serde_json::from_str(include_str!("../data/fitted_params.json")).unwrap_or_default()
        })
    }

    /// Parameters for an engine key, falling back to defaults.
    pub fn engine(&self, key: &str) -> EngineParams {
        let family = key.rsplit_once('-').map(|(e, _)| e).unwrap_or(key);
        self.engines
            .get(key)
            .or_else(|| self.engines.get(family))
            .copied()
            .unwrap_or_else(|| {
                if key.ends_with("-cpu") {
                    self.engines
                        .get("vllm-cpu")
                        .copied()
                        .unwrap_or_else(EngineParams::default_cpu)
                } else {
                    self.engines
                        .get("vllm")
                        .copied()
                        .unwrap_or_else(EngineParams::default_gpu)
                }
            })
    }

    /// Scale for an accelerator id.
    pub fn scale(&self, accelerator: &str) -> f64 {
        self.accelerator_scale
            .get(accelerator)
            .copied()
            .unwrap_or(1.0)
    }

    /// Multipliers of an engine release ([`ReleaseScale::NONE`] when it was not fitted).
    pub fn release(&self, engine: impl std::fmt::Display, version: Option<&str>) -> ReleaseScale {
        version
            .and_then(|v| self.release_scale.get(&ReleaseScale::key(engine, v)))
            .copied()
            .unwrap_or(ReleaseScale::NONE)
    }
}
