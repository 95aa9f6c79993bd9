//! Calibration: fit [`FittedParams`] to measured data, hold part of it back, and report the
//! error on the held-back part only.
//!
//! The split is deterministic: whole models in [`HELD_BACK_MODELS`] plus every row whose
//! values (all but the id) hash (FNV-1a) into the last [`HELD_BACK_PERCENT`] percent, so a
//! measurement the data repeat under another id is never on both sides. The fit never sees
//! held-back rows. Fitting is coordinate descent on the absolute percentage (plus a little log)
//! error of TTFT and TPOT, per engine, alternating with a per-accelerator scale (on TPOT);
//! release multipliers come from configurations measured under two releases; the learned
//! correction and the anchors on measured deployments are fitted on the remaining errors.

use crate::batch::{ModelResolver, ScenarioRow, read_rows};
use crate::error::{Error, Result};
use crate::hardware::{DeviceKind, HardwareCatalog};
use crate::model::ModelSpec;
use crate::params::{
    EngineParams, ErrorByBasis, ExpectedError, FittedParams, HeldBackError, ReleaseScale,
};
use crate::perf::{Resolved, ServingConfig, Workload, params_key};
use crate::precision::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Models held back entirely (never fitted on).
pub const HELD_BACK_MODELS: &[&str] = &[
    "Qwen/Qwen3-235B-A22B-FP8",
    "meta-llama/Llama-3.1-8B-Instruct",
];
/// Share of the remaining rows held back, percent (with every copy of their measurements,
/// [`hold_back_copies`], a little more).
pub const HELD_BACK_PERCENT: u64 = 20;
/// The accuracy report's `split` group of the random share ([`HELD_BACK_PERCENT`]): other
/// points of measured deployments, like most rows the data's owner held back from
/// `calibration.csv` (`--example owners_held_back`).
pub const RANDOM_SHARE_SPLIT: &str = "random 20% of the other rows";
/// The accuracy report's `split` group of the rows of [`HELD_BACK_MODELS`].
pub const WHOLE_MODEL_SPLIT: &str = "whole held-back model";
/// The training-split parameters' file name in the data directory (what accuracy is scored on).
pub const SPLIT_PARAMS_FILE: &str = "fitted_params_split.json";

/// One measured point, resolved.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Row id.
    pub id: String,
    /// The row as read.
    pub row: ScenarioRow,
    /// Configuration (agg rows).
    pub cfg: ServingConfig,
    /// Model.
    pub model: ModelSpec,
    /// Workload.
    pub workload: Workload,
    /// Measured TTFT, ms.
    pub ttft_ms: f64,
    /// Measured TPOT, ms.
    pub tpot_ms: f64,
    /// Whether the fit may see it.
    pub train: bool,
    /// Disaggregated row.
    pub disagg: bool,
    /// Parameter key (engine, or engine-cpu).
    pub key: String,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Whether a row is held back from the fit. The share is drawn by the row's values rather
/// than its id: the calibration data repeat 696 rows under other ids (the same measurement in
/// two collections), and a split by id put 63 held-back agg rows' twins in the training set.
/// Copies filed with other values are held back with the row by [`hold_back_copies`], which
/// [`load_samples`] applies.
pub fn is_held_back(row: &ScenarioRow, model_path: &str) -> bool {
    is_held_back_in_draw(row, model_path, 0)
}

/// [`is_held_back`] for another draw of the random share (draw 0 is the committed split; the
/// whole held-back models stay held back in every draw), to measure how much the held-back
/// figures depend on which rows the share happened to pick.
pub fn is_held_back_in_draw(row: &ScenarioRow, model_path: &str, draw: u64) -> bool {
    let mut values = row.values_except(&[]);
    if draw > 0 {
        values = format!("{values}#{draw}");
    }
    HELD_BACK_MODELS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(model_path))
        || fnv(&values) % 100 >= 100 - HELD_BACK_PERCENT
}

/// Hold back every copy of a held-back measurement. The calibration data file some
/// measurements twice under different ids and metadata (DeepSeek-R1's runs again as
/// DeepSeek-V3, a parallel layout written another way, a float's last digit), and the split by
/// values ([`is_held_back`]) deals such copies separately: before this, 53 of the committed
/// split's 682 held-back agg rows had their very measurement among the training rows.
pub fn hold_back_copies(samples: &mut [Sample]) {
    let held_back: BTreeSet<String> = samples
        .iter()
        .filter(|s| !s.train)
        .map(measurement)
        .collect();
    for s in samples.iter_mut() {
        s.train &= !held_back.contains(&measurement(s));
    }
}

/// What identifies one run among the rows that record it ([`hold_back_copies`]): its measured
/// TTFT and TPOT to nine significant digits, which no two runs share by chance.
fn measurement(s: &Sample) -> String {
    format!("{:.8e} {:.8e}", s.ttft_ms, s.tpot_ms)
}

/// Convert the vLLM-CPU measurement files (`config,input_output,concurrency,...`) to rows.
pub fn cpu_rows(
    text: &str,
    model_path: &str,
    system: &str,
    file_tag: &str,
) -> Result<Vec<ScenarioRow>> {
    let mut out = Vec::new();
    for r in read_rows(text.as_bytes())? {
        let config = r.get("config").to_string();
        let (isl, osl) = r.get("input_output").split_once('_').unwrap_or(("", ""));
        let tp = if let Some(pos) = config.find("tp") {
            config[pos + 2..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        } else {
            "1".to_string()
        };
        let mut f = BTreeMap::new();
        let id = format!(
            "{file_tag}_{config}_{}_c{}",
            r.get("input_output"),
            r.get("concurrency")
        );
        for (k, v) in [
            ("id", id.as_str()),
            ("backend", "vllm"),
            ("model_path", model_path),
            ("system", system),
            ("precision", "bf16"),
            ("mode", "agg"),
            ("isl", isl),
            ("osl", osl),
            ("batch_size", r.get("concurrency")),
            ("tp_size", tp.as_str()),
            ("silicon_ttft_ms", r.get("mean_ttft_ms")),
            ("silicon_tpot_ms", r.get("mean_tpot_ms")),
        ] {
            f.insert(k.to_string(), v.to_string());
        }
        out.push(ScenarioRow { fields: f });
    }
    Ok(out)
}

/// Load samples from a data directory holding `calibration.csv`, `models/` and the CPU files.
pub fn load_samples(data_dir: &Path) -> Result<Vec<Sample>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))
    };
    let mut rows = read_rows(read(&data_dir.join("calibration.csv"))?.as_bytes())?;
    for (file, model, tag) in [
        (
            "budsim_cpu_xeon6767p_qwen3-4b_measured.csv",
            "Qwen/Qwen3-4B",
            "cpu4b",
        ),
        (
            "budsim_cpu_xeon6767p_qwen3-8b_measured.csv",
            "Qwen/Qwen3-8B",
            "cpu8b",
        ),
    ] {
        let p = data_dir.join(file);
        if p.exists() {
            rows.extend(cpu_rows(&read(&p)?, model, "xeon_granite_rapids", tag)?);
        }
    }
    let models_dir = data_dir.join("models");
    let mut models = ModelResolver::new(Some(&models_dir));
    let hw = HardwareCatalog::builtin();
    let mut out = Vec::new();
    for row in rows {
        let (Some(ttft), Some(tpot)) = (row.measured_ttft(), row.measured_tpot()) else {
            continue;
        };
        let disagg = row.is_disagg();
        let Ok(cfg) = row.config(if disagg { "decode_" } else { "" }) else {
            continue;
        };
        let Ok(model) = models.get(&cfg.model) else {
            continue;
        };
        let Ok(acc) = hw.get(&cfg.accelerator) else {
            continue;
        };
        let Ok(workload) = row.workload() else {
            continue;
        };
        let key = params_key(cfg.engine, acc.kind, model.is_moe());
        out.push(Sample {
            id: row.id().to_string(),
            train: !is_held_back(&row, &cfg.model),
            cfg,
            model,
            workload,
            ttft_ms: ttft,
            tpot_ms: tpot,
            disagg,
            key,
            row,
        });
    }
    hold_back_copies(&mut out);
    Ok(out)
}

/// Predict one sample with a parameter set: (ttft, tpot) in ms.
pub fn predict_sample(s: &Sample, params: &FittedParams) -> Option<(f64, f64)> {
    predict_sample_and_basis(s, params).map(|(ttft, tpot, _)| (ttft, tpot))
}

/// [`predict_sample`], and whether the prediction leans on a measured deployment
/// ([`crate::perf::Prediction::measured_deployment`]).
pub fn predict_sample_and_basis(s: &Sample, params: &FittedParams) -> Option<(f64, f64, bool)> {
    let hw = HardwareCatalog::builtin();
    if s.disagg {
        let mut models = ModelResolver::new(None);
        return crate::batch::predict_disagg(&s.row, &mut models, hw, params)
            .ok()
            .map(|p| (p.ttft_ms, p.tpot_ms, p.measured_deployment))
            .or_else(|| {
                let acc = hw.get(&s.cfg.accelerator).ok()?;
                let r = Resolved::new(&s.cfg, &s.model, acc, params).ok()?;
                let p = r.predict(&s.workload).ok()?;
                Some((p.ttft_ms, p.tpot_ms, false))
            });
    }
    predict_agg_sample(s, params).map(|p| (p.ttft_ms, p.tpot_ms, p.measured_deployment))
}

/// The whole prediction of an agg sample, or `None` where it cannot be made or, like
/// `bud-sim predict`, where the model says the configuration does not fit.
pub fn predict_agg_sample(s: &Sample, params: &FittedParams) -> Option<crate::perf::Prediction> {
    let acc = HardwareCatalog::builtin().get(&s.cfg.accelerator).ok()?;
    Resolved::new(&s.cfg, &s.model, acc, params)
        .ok()?
        .predict(&s.workload)
        .ok()
        .filter(|p| p.memory.fits)
}

fn loss(samples: &[&Sample], params: &FittedParams) -> f64 {
    weighted_loss(samples, params, 1.0)
}

/// The fit's loss with TTFT errors weighted by `ttft_weight` (TPOT errors count 1.5).
fn weighted_loss(samples: &[&Sample], params: &FittedParams, ttft_weight: f64) -> f64 {
    let mut sum = 0.0;
    for s in samples {
        match predict_sample(s, params) {
            Some((ttft, tpot))
                if ttft.is_finite() && tpot.is_finite() && ttft > 0.0 && tpot > 0.0 =>
            {
                // The reported metric is MAPE, which punishes over-prediction without bound;
                // a little log error keeps the descent stable on noisy rows.
                let ape = |p: f64, m: f64| (p - m).abs() / m + 0.25 * (p / m).ln().abs();
                sum += ape(tpot, s.tpot_ms) * 1.5 + ape(ttft, s.ttft_ms) * ttft_weight;
            }
            _ => sum += 5.0,
        }
    }
    sum / samples.len().max(1) as f64
}

/// Index of `moePrefillEff` in [`EngineParams::NAMES`].
const MOE_PREFILL_EFF: usize = 12;
/// Index of `prefillComputeEff` in [`EngineParams::NAMES`].
const PREFILL_COMPUTE_EFF: usize = 2;
/// Training rows of an engine on dense (or MoE) models it takes to identify its dense (or MoE)
/// prefill efficiency; with fewer it borrows the other engines' (see [`fit`]).
const MIN_IDENTIFYING_ROWS: usize = 20;

/// The median of `values` (the upper one of an even count), `None` when there are none: what an
/// engine borrows from the engines that identify a parameter, a model's TTFT beyond the
/// prediction in the accuracy report, and a cross-validation's TTFT ratio by concurrency.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn fit_engine(
    key: &str,
    samples: &[&Sample],
    params: &mut FittedParams,
    rounds: usize,
    pinned: &[usize],
) {
    let mut best = loss(samples, params);
    let steps = [2.0, 1.4, 1.15, 1.05];
    for round in 0..rounds {
        let step = steps[(round * steps.len() / rounds.max(1)).min(steps.len() - 1)];
        for i in (0..EngineParams::NAMES.len()).filter(|i| !pinned.contains(i)) {
            let (lo, hi) = EngineParams::bounds(i);
            for dir in [step, 1.0 / step] {
                loop {
                    let mut ep = params.engine(key);
                    let cur = ep.get(i);
                    let next = if cur <= lo + 1e-9 && dir > 1.0 {
                        lo + (hi - lo) * 0.01
                    } else {
                        cur * dir
                    };
                    let next = next.clamp(lo, hi);
                    if (next - cur).abs() < 1e-12 {
                        break;
                    }
                    ep.set(i, next);
                    let mut trial = params.clone();
                    trial.engines.insert(key.to_string(), ep);
                    let l = loss(samples, &trial);
                    if l + 1e-6 < best {
                        best = l;
                        *params = trial;
                    } else {
                        break;
                    }
                }
            }
        }
    }
}

/// Fit an accelerator's scale on its rows' TPOT alone: the decode step measures the device
/// directly, while TTFT under load carries bursts and queueing that would pull the scale (the
/// GB200 agg rows measure TTFT 4–12× the model's and made GB200 decode 1.76× slower than B200).
fn fit_scale(acc: &str, samples: &[&Sample], params: &mut FittedParams) {
    let mut best = weighted_loss(samples, params, 0.0);
    for step in [1.3, 1.1, 1.03] {
        for dir in [step, 1.0 / step] {
            loop {
                let mut trial = params.clone();
                let cur = trial.scale(acc);
                let next = (cur * dir).clamp(0.3, 3.0);
                if (next - cur).abs() < 1e-12 {
                    break;
                }
                trial.accelerator_scale.insert(acc.to_string(), next);
                let l = weighted_loss(samples, &trial, 0.0);
                if l + 1e-6 < best {
                    best = l;
                    *params = trial;
                } else {
                    break;
                }
            }
        }
    }
}

/// A row's engine release as [`ReleaseScale::key`] names it, if the row gives one.
fn release_of(s: &Sample) -> Option<String> {
    s.cfg
        .engine_version
        .as_deref()
        .map(|v| ReleaseScale::key(s.cfg.engine, v))
}

/// Multipliers of engine releases, measured from the data alone: wherever the training rows
/// hold the same configuration and workload under several releases of one engine, the
/// releases' log differences there are release effects (a two-way fixed-effects fit: each
/// configuration's level and each release's offset, solved by alternating means). Releases
/// are only compared on shared configurations, so a release never absorbs what sets the
/// models it happened to be run with apart; each effect is shrunk toward none by
/// `n / (n + 5)` over its `n` paired rows and centred so that every engine's rows keep their
/// mean level. Releases never paired, or with fewer than [`ReleaseScale::MIN_ROWS`] paired
/// rows, get no multiplier.
pub fn release_effects(train: &[&Sample]) -> BTreeMap<String, ReleaseScale> {
    const MEASURED: [&str; 3] = ["silicon_ttft_ms", "silicon_tpot_ms", "backend_version"];
    // Grouped by configuration: every column but the id, the release and the measurements.
    let mut groups: BTreeMap<String, Vec<(&Sample, String)>> = BTreeMap::new();
    for s in train {
        let Some(release) = release_of(s) else {
            continue;
        };
        groups
            .entry(s.row.values_except(&MEASURED))
            .or_default()
            .push((s, release));
    }
    groups.retain(|_, rows| {
        let first = &rows[0].1;
        rows.iter().any(|(_, r)| r != first)
    });
    let mut paired: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in groups.values().flatten() {
        *paired.entry(r.clone()).or_default() += 1;
    }
    let effects = |measure: fn(&Sample) -> f64| -> BTreeMap<String, f64> {
        let mut effect: BTreeMap<String, f64> = paired.keys().map(|k| (k.clone(), 0.0)).collect();
        for _ in 0..50 {
            let mut sum: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
            for rows in groups.values() {
                let level = rows
                    .iter()
                    .map(|(s, r)| measure(s).ln() - effect[r])
                    .sum::<f64>()
                    / rows.len() as f64;
                for (s, r) in rows {
                    let e = sum.entry(r.as_str()).or_default();
                    e.0 += measure(s).ln() - level;
                    e.1 += 1.0;
                }
            }
            for (r, (total, n)) in sum {
                effect.insert(r.to_string(), total / n);
            }
        }
        // Centre per engine over all its training rows with a release, so the engine's
        // parameters keep describing its typical release.
        let mut by_engine: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for s in train {
            if let Some(r) = release_of(s)
                && let Some(e) = effect.get(&r)
            {
                let t = by_engine.entry(s.cfg.engine.to_string()).or_default();
                t.0 += e;
                t.1 += 1.0;
            }
        }
        for (r, e) in effect.iter_mut() {
            let engine = r.split(' ').next().unwrap_or_default();
            let (total, n) = by_engine.get(engine).copied().unwrap_or((0.0, 1.0));
            let n_paired = paired[r] as f64;
            *e = (*e - total / n) * n_paired / (n_paired + 5.0);
        }
        effect
    };
    let decode = effects(|s| s.tpot_ms);
    let prefill = effects(|s| s.ttft_ms);
    let (lo, hi) = ReleaseScale::BOUNDS;
    paired
        .iter()
        .filter(|(_, n)| **n >= ReleaseScale::MIN_ROWS)
        .map(|(r, _)| {
            (
                r.clone(),
                ReleaseScale {
                    decode: decode[r].exp().clamp(lo, hi),
                    prefill: prefill[r].exp().clamp(lo, hi),
                },
            )
        })
        .collect()
}

/// Fit parameters on the training rows of `samples` (agg rows only; held-back rows unseen).
pub fn fit(samples: &[Sample], command: &str, rounds: usize) -> FittedParams {
    let mut params = FittedParams {
        command: command.to_string(),
        ..Default::default()
    };
    let train: Vec<&Sample> = samples.iter().filter(|s| s.train && !s.disagg).collect();
    let mut keys: Vec<String> = train.iter().map(|s| s.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let mut accs: Vec<String> = train.iter().map(|s| s.cfg.accelerator.clone()).collect();
    accs.sort();
    accs.dedup();
    params.release_scale = release_effects(&train);
    // The MoE prefill efficiency is only identifiable for engines measured on dense and MoE
    // models alike; the others borrow the median of those (else the fit trades it freely
    // against the mix factor and dense models come out wrong), or, when no engine is (a
    // cross-validation fold without Llama-3.1-70B), the starting value of a GPU engine. The
    // same holds for the dense prefill efficiency of a GPU engine with fewer than 20 dense
    // rows (SGLang in the split fit, whose one dense model is held back; every GPU engine in
    // that fold): it would trade freely against the fixed prefill overhead.
    let identifiable = |key: &str| {
        let rows = train.iter().filter(|s| s.key == key);
        let moe = rows.clone().filter(|s| s.model.is_moe()).count();
        let dense = rows.filter(|s| !s.model.is_moe()).count();
        moe >= MIN_IDENTIFYING_ROWS && dense >= MIN_IDENTIFYING_ROWS
    };
    for outer in 0..2 {
        for key in keys.iter().filter(|k| identifiable(k)) {
            let rows: Vec<&Sample> = train.iter().copied().filter(|s| &s.key == key).collect();
            fit_engine(
                key,
                &rows,
                &mut params,
                if outer == 0 { rounds } else { rounds / 2 + 1 },
                &[],
            );
        }
        let borrowed = |get: fn(&EngineParams) -> f64| {
            median(
                keys.iter()
                    .filter(|k| identifiable(k) && !k.ends_with("-cpu"))
                    .map(|k| get(&params.engine(k)))
                    .collect(),
            )
            .unwrap_or(get(&EngineParams::default_gpu()))
        };
        let borrowed_moe = borrowed(|p| p.moe_prefill_eff);
        let borrowed_dense = borrowed(|p| p.prefill_compute_eff);
        for key in keys.iter().filter(|k| !identifiable(k)) {
            let rows: Vec<&Sample> = train.iter().copied().filter(|s| &s.key == key).collect();
            let mut ep = params.engine(key);
            let mut pinned = vec![MOE_PREFILL_EFF];
            if !key.ends_with("-cpu") {
                ep.moe_prefill_eff = borrowed_moe;
                if rows.iter().filter(|s| !s.model.is_moe()).count() < MIN_IDENTIFYING_ROWS {
                    ep.prefill_compute_eff = borrowed_dense;
                    pinned.push(PREFILL_COMPUTE_EFF);
                }
            }
            params.engines.insert(key.clone(), ep);
            fit_engine(
                key,
                &rows,
                &mut params,
                if outer == 0 { rounds } else { rounds / 2 + 1 },
                &pinned,
            );
        }
        for acc in &accs {
            let rows: Vec<&Sample> = train
                .iter()
                .copied()
                .filter(|s| &s.cfg.accelerator == acc)
                .collect();
            // Only GPU generations measured by more than one engine/model get a scale.
            if rows.len() >= 30 {
                fit_scale(acc, &rows, &mut params);
            }
        }
    }
    // The sparse-attention cost is identified only by an engine measured on such models; the
    // other GPU engines borrow it (the median of those engines), or keep the starting value.
    let sparse_rows = |key: &str| {
        train
            .iter()
            .filter(|s| s.key == key && s.model.attention_topk > 0)
            .count()
    };
    let measured = keys
        .iter()
        .filter(|k| !k.ends_with("-cpu") && sparse_rows(k) >= MIN_IDENTIFYING_ROWS)
        .map(|k| params.engine(k).sparse_attention_layer_us)
        .collect();
    if let Some(borrowed) = median(measured) {
        for engine in [Engine::Vllm, Engine::Sglang, Engine::Trtllm] {
            let key = params_key(engine, DeviceKind::Gpu, true);
            if sparse_rows(&key) < MIN_IDENTIFYING_ROWS {
                let mut ep = params.engine(&key);
                ep.sparse_attention_layer_us = borrowed;
                params.engines.insert(key, ep);
            }
        }
    }
    // llama.cpp on CPU: no measurements here; start from vLLM-CPU with llama.cpp's lighter
    // scheduler (lower per-sequence overhead) and no continuous-batching prefill mixing gains.
    let mut llama = params.engine("vllm-cpu");
    llama.seq_overhead_us *= 0.5;
    llama.step_overhead_ms *= 0.5;
    llama.prefill_compute_eff *= 0.8;
    params.engines.insert("llamacpp-cpu".into(), llama);
    params.notes = format!(
        "fitted on {} agg rows; held back: whole models {:?} plus {}% of the other rows by FNV-1a hash of their values (all but the id), and every copy of their measurements; disagg rows train only the disagg correction",
        train.len(),
        HELD_BACK_MODELS,
        HELD_BACK_PERCENT
    );
    params
}

/// Error statistics of one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorStats {
    /// Rows.
    pub n: usize,
    /// TTFT mean absolute percentage error, %.
    pub ttft_mape: f64,
    /// TPOT mean absolute percentage error, %.
    pub tpot_mape: f64,
}

impl ErrorStats {
    /// The figures over both sets of rows (row-weighted, as if scored together).
    pub fn pooled(&self, other: &ErrorStats) -> ErrorStats {
        let n = self.n + other.n;
        let mean = |a: f64, b: f64| (a * self.n as f64 + b * other.n as f64) / n.max(1) as f64;
        ErrorStats {
            n,
            ttft_mape: mean(self.ttft_mape, other.ttft_mape),
            tpot_mape: mean(self.tpot_mape, other.tpot_mape),
        }
    }

    /// As an [`ExpectedError`], rounded to 0.1 %.
    fn expected_error(&self) -> ExpectedError {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        ExpectedError {
            rows: self.n,
            ttft_percent: round(self.ttft_mape),
            tpot_percent: round(self.tpot_mape),
        }
    }
}

/// Cross-validation of agg predictions on the training rows ([`cross_validate_models`],
/// [`cross_validate_deployments`], [`cross_validate_series`]).
#[derive(Debug, Clone, Default)]
pub struct ModelCrossValidation {
    /// Every training row, each scored by the fit of the fold that left it out.
    pub overall: ErrorStats,
    /// The same rows by model.
    pub by_model: BTreeMap<String, ErrorStats>,
    /// The same rows by concurrency, in the bands of [`USERS_BANDS`] that have rows.
    pub by_users: Vec<UsersBand>,
}

/// Upper ends (inclusive) and labels of the concurrency bands of
/// [`ModelCrossValidation::by_users`].
pub const USERS_BANDS: [(u32, &str); 4] = [
    (16, "1 to 16"),
    (64, "17 to 64"),
    (256, "65 to 256"),
    (u32::MAX, "more than 256"),
];

/// Cross-validated rows at one band of concurrency ([`USERS_BANDS`]): how large the error is
/// and which way TTFT leans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsersBand {
    /// The band's label.
    pub users: &'static str,
    /// Its rows' errors.
    pub stats: ErrorStats,
    /// The median of measured TTFT ÷ predicted (the upper one of an even count): above 1 when
    /// most predictions come out low.
    pub ttft_median_ratio: f64,
    /// Share of its rows whose measured TTFT is above the prediction.
    pub ttft_share_above: f64,
}

/// What a model no calibration row measured can expect, estimated on the training rows alone:
/// for each model the fit saw, refit without that model's agg rows (the analytic parameters,
/// and the halves of the learned correction `split` kept) and score its training rows. Held-back
/// rows take no part. Anchors are left out: they never reach a model the fit has not seen.
pub fn cross_validate_models(
    samples: &[Sample],
    split: &FittedParams,
    rounds: usize,
) -> ModelCrossValidation {
    cross_validate(samples, split, rounds, |s| s.cfg.model.clone())
}

/// What a deployment the data did not measure can expect when its model was measured in other
/// layouts, devices or precisions: the training rows' deployments ([`Anchors::key`](crate::params::Anchors::key)),
/// in sorted order, are dealt round-robin into `folds` folds, and each fold is refitted without
/// its deployments' rows and scores them, as [`cross_validate_models`] does with models.
pub fn cross_validate_deployments(
    samples: &[Sample],
    split: &FittedParams,
    rounds: usize,
    folds: usize,
) -> ModelCrossValidation {
    cross_validate_in_folds(samples, split, rounds, folds, deployment_of(split))
}

/// What a series the data did not measure can expect when its deployment was measured at
/// other lengths: the training rows' series (a deployment at one input and output length,
/// over every concurrency) are dealt into `folds` folds as [`cross_validate_deployments`]
/// deals deployments. The case of a run of rows the data's owner held back between two
/// series (`examples/owners_held_back.rs`), if such a run is a series of a measured
/// deployment.
pub fn cross_validate_series(
    samples: &[Sample],
    split: &FittedParams,
    rounds: usize,
    folds: usize,
) -> ModelCrossValidation {
    let deployment = deployment_of(split);
    cross_validate_in_folds(samples, split, rounds, folds, |s| {
        format!(
            "{} {}x{}",
            deployment(s),
            s.workload.input_tokens,
            s.workload.output_tokens
        )
    })
}

/// A sample's deployment ([`Anchors::key`](crate::params::Anchors::key)), or its id when it
/// does not resolve.
fn deployment_of(split: &FittedParams) -> impl Fn(&Sample) -> String + '_ {
    let hw = HardwareCatalog::builtin();
    move |s: &Sample| {
        hw.get(&s.cfg.accelerator)
            .ok()
            .and_then(|acc| Resolved::new(&s.cfg, &s.model, acc, split).ok())
            .map(|r| r.deployment)
            .unwrap_or_else(|| s.id.clone())
    }
}

/// The training agg rows' units (`unit`), in sorted order, dealt round-robin into `folds`
/// folds, each fold refitted without its units' rows and scoring them ([`cross_validate`]).
fn cross_validate_in_folds(
    samples: &[Sample],
    split: &FittedParams,
    rounds: usize,
    folds: usize,
    unit: impl Fn(&Sample) -> String,
) -> ModelCrossValidation {
    let mut units: Vec<String> = samples
        .iter()
        .filter(|s| s.train && !s.disagg)
        .map(&unit)
        .collect();
    units.sort_unstable();
    units.dedup();
    cross_validate(samples, split, rounds, |s| {
        let index = units.binary_search(&unit(s)).unwrap_or(0);
        format!("fold {}", index % folds.max(1))
    })
}

/// Refit on the training rows of `samples` with the choices `split` made: the analytic
/// parameters, the halves of the learned correction it kept, and anchors when it has them
/// (which a model or layout left out of `samples` may still draw on, through its other
/// layouts or a model of the same architecture).
pub fn refit_as(
    samples: &[Sample],
    split: &FittedParams,
    command: &str,
    rounds: usize,
) -> FittedParams {
    let mut params = fit(samples, command, rounds);
    if let Some(kept) = &split.correction {
        params.correction = Some(fit_correction(samples, &params).keeping_halves_of(kept));
    }
    if split.anchors.is_some() {
        params.anchors = Some(fit_anchors(samples, &params));
    }
    params
}

/// Group the training agg rows by `group`; for each group refit without its rows
/// ([`refit_as`]) and score them.
fn cross_validate(
    samples: &[Sample],
    split: &FittedParams,
    rounds: usize,
    group: impl Fn(&Sample) -> String,
) -> ModelCrossValidation {
    let train: Vec<(String, &Sample)> = samples
        .iter()
        .filter(|s| s.train && !s.disagg)
        .map(|s| (group(s), s))
        .collect();
    let mut groups: Vec<&str> = train.iter().map(|(g, _)| g.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut all = Vec::new();
    let mut by_model: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    let mut by_users: Vec<Vec<Pair>> = vec![Vec::new(); USERS_BANDS.len()];
    for left_out in groups {
        let mut fold: Vec<Sample> = train
            .iter()
            .map(|(g, s)| Sample {
                // Rows marked held back are the ones the fold's fit must not see: the left-out
                // group's, and copies of their measurements filed under another group.
                train: g != left_out,
                ..(*s).clone()
            })
            .collect();
        hold_back_copies(&mut fold);
        let params = refit_as(&fold, split, "cross-validation", rounds);
        let scored = train.iter().zip(&fold).filter(|((g, _), _)| g == left_out);
        for (_, s) in scored {
            if let Some((ttft, tpot)) = predict_sample(s, &params) {
                let pair = (ttft, s.ttft_ms, tpot, s.tpot_ms);
                by_model.entry(s.cfg.model.clone()).or_default().push(pair);
                let band = USERS_BANDS
                    .iter()
                    .position(|(most, _)| s.workload.concurrency <= *most)
                    .unwrap_or(USERS_BANDS.len() - 1);
                by_users[band].push(pair);
                all.push(pair);
            }
        }
    }
    ModelCrossValidation {
        overall: stats(&all),
        by_model: by_model
            .into_iter()
            .map(|(model, pairs)| (model, stats(&pairs)))
            .collect(),
        by_users: USERS_BANDS
            .iter()
            .zip(by_users)
            .filter(|(_, pairs)| !pairs.is_empty())
            .map(|((_, users), pairs)| {
                let ratios: Vec<f64> = pairs.iter().map(|(p, m, _, _)| m / p).collect();
                UsersBand {
                    users,
                    stats: stats(&pairs),
                    ttft_share_above: ratios.iter().filter(|r| **r > 1.0).count() as f64
                        / ratios.len() as f64,
                    ttft_median_ratio: median(ratios).unwrap_or(1.0),
                }
            })
            .collect(),
    }
}

/// How far the measurements themselves are from a smooth curve: every agg point that has a
/// lower and a higher concurrency of the same configuration (model, device, engine and version,
/// precisions, parallelism, ISL and OSL) is predicted by log-log interpolation between those
/// two measured neighbours. No model, no fit: the error is the run-to-run and
/// operating-point noise in the data. With independent noise of the same size at every point
/// the interpolation carries the neighbours' noise too (about √1.5 times a point's own), so a
/// perfect model that is smooth in concurrency would miss by about this figure / 1.22.
pub fn interpolation_noise(samples: &[Sample]) -> ErrorStats {
    let mut curves: BTreeMap<String, BTreeMap<u32, Vec<(f64, f64)>>> = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.disagg) {
        // The whole configuration but the batch limit, which benchmarks size to the concurrency.
        let cfg = ServingConfig {
            max_batch: None,
            ..s.cfg.clone()
        };
        let key = format!(
            "{cfg:?}|{}|{}",
            s.workload.input_tokens, s.workload.output_tokens
        );
        curves
            .entry(key)
            .or_default()
            .entry(s.workload.concurrency)
            .or_default()
            .push((s.ttft_ms, s.tpot_ms));
    }
    let mut pairs = Vec::new();
    for curve in curves.values() {
        // Repeated measurements of one point are averaged.
        let points: Vec<(f64, f64, f64)> = curve
            .iter()
            .map(|(c, v)| {
                let n = v.len() as f64;
                let ttft = v.iter().map(|p| p.0).sum::<f64>() / n;
                let tpot = v.iter().map(|p| p.1).sum::<f64>() / n;
                ((*c as f64).ln(), ttft, tpot)
            })
            .collect();
        for w in points.windows(3) {
            let (lo, mid, hi) = (w[0], w[1], w[2]);
            let f = (mid.0 - lo.0) / (hi.0 - lo.0);
            let interp = |a: f64, b: f64| (a.ln() * (1.0 - f) + b.ln() * f).exp();
            pairs.push((interp(lo.1, hi.1), mid.1, interp(lo.2, hi.2), mid.2));
        }
    }
    stats(&pairs)
}

/// The accuracy report.
#[derive(Debug, Clone, Default)]
pub struct AccuracyReport {
    /// Held-back agg rows overall.
    pub overall: ErrorStats,
    /// The same rows counting each measurement once ([`hold_back_copies`]): the data record
    /// some runs in two or more rows, which `overall` counts as often.
    pub overall_each_measurement_once: ErrorStats,
    /// Held-back disagg rows.
    pub disagg: ErrorStats,
    /// Training rows (for comparison only).
    pub train: ErrorStats,
    /// By dimension name → value → stats (held-back agg rows).
    pub by: BTreeMap<String, BTreeMap<String, ErrorStats>>,
    /// Held-back disagg rows by engine and by GPU.
    pub disagg_by: BTreeMap<String, BTreeMap<String, ErrorStats>>,
    /// Rows that could not be predicted.
    pub unpredicted: usize,
    /// The data's own noise (see [`interpolation_noise`]).
    pub noise: ErrorStats,
    /// The same noise over each model's agg rows (training and held back alike).
    pub noise_by_model: BTreeMap<String, ErrorStats>,
    /// Per model, the median over its held-back agg rows of the TTFT measured beyond the
    /// prediction, in completion gaps (`completion_gaps_beyond_prediction`).
    pub ttft_gaps_beyond_prediction_by_model: BTreeMap<String, f64>,
    /// Leave-one-model-out cross-validation, when `calibrate` ran it (an evaluation of given
    /// parameters cannot: it refits).
    pub model_cross_validation: Option<ModelCrossValidation>,
}

/// (predicted TTFT, measured TTFT, predicted TPOT, measured TPOT).
type Pair = (f64, f64, f64, f64);

fn stats(pairs: &[Pair]) -> ErrorStats {
    let n = pairs.len();
    if n == 0 {
        return ErrorStats::default();
    }
    let ttft = pairs
        .iter()
        .map(|(p, m, _, _)| (p - m).abs() / m)
        .sum::<f64>()
        / n as f64
        * 100.0;
    let tpot = pairs
        .iter()
        .map(|(_, _, p, m)| (p - m).abs() / m)
        .sum::<f64>()
        / n as f64
        * 100.0;
    ErrorStats {
        n,
        ttft_mape: ttft,
        tpot_mape: tpot,
    }
}

/// How much of a row's measured TTFT lies beyond the predicted one, in completion gaps: the
/// mean time between two requests finishing, OSL × measured TPOT ÷ users, when `users` clients
/// each send their next request as soon as the last one ends. About 1 means a request waited
/// for another to finish before the engine admitted it (a harness's or engine's admission limit
/// the row does not record); about 0 means the model accounts for the TTFT.
fn completion_gaps_beyond_prediction(s: &Sample, predicted_ttft_ms: f64) -> f64 {
    let gap_ms = s.workload.output_tokens as f64 * s.tpot_ms / s.workload.concurrency as f64;
    (s.ttft_ms - predicted_ttft_ms) / gap_ms
}

/// How a row's replica shares the model's layers, for the accuracy report: the layouts the
/// search chooses between.
fn layout_kind(s: &Sample) -> &'static str {
    if !s.model.is_moe() {
        "dense, tensor parallel"
    } else if s.cfg.attention_dp > 1 {
        "MoE, attention data parallel"
    } else if s.cfg.moe_ep.unwrap_or(1) > 1 {
        "MoE, experts spread (EP)"
    } else {
        "MoE, experts sliced (TP)"
    }
}

/// Evaluate `params` on the held-back rows.
pub fn evaluate(samples: &[Sample], params: &FittedParams) -> AccuracyReport {
    let mut report = AccuracyReport::default();
    let mut held = Vec::new();
    let (mut held_measurements, mut held_once) = (BTreeSet::new(), Vec::new());
    let mut disagg = Vec::new();
    let mut train = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<Pair>> = BTreeMap::new();
    let mut disagg_groups: BTreeMap<(String, String), Vec<Pair>> = BTreeMap::new();
    let mut ttft_gaps_by_model: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // A held-back row of a release no training row was measured under meets the release, and
    // the benchmark campaign it was measured in, for the first time.
    let training_releases: BTreeSet<String> = samples
        .iter()
        .filter(|s| s.train && !s.disagg)
        .filter_map(release_of)
        .collect();
    for s in samples {
        let Some((ttft, tpot, measured)) = predict_sample_and_basis(s, params) else {
            if !s.train {
                report.unpredicted += 1;
            }
            continue;
        };
        let basis = if measured {
            MEASURED_BASIS
        } else {
            MODEL_BASIS
        };
        let t = (ttft, s.ttft_ms, tpot, s.tpot_ms);
        if s.train {
            if !s.disagg {
                train.push(t);
            }
            continue;
        }
        if s.disagg {
            disagg.push(t);
            for (dim, val) in [
                ("engine", s.key.as_str()),
                ("gpu", &s.cfg.accelerator),
                ("basis", basis),
            ] {
                disagg_groups
                    .entry((dim.to_string(), val.to_string()))
                    .or_default()
                    .push(t);
            }
            continue;
        }
        held.push(t);
        if held_measurements.insert(measurement(s)) {
            held_once.push(t);
        }
        ttft_gaps_by_model
            .entry(s.cfg.model.clone())
            .or_default()
            .push(completion_gaps_beyond_prediction(s, ttft));
        let acc_kind = if s.key.ends_with("-cpu") {
            "cpu"
        } else {
            "gpu"
        };
        for (dim, val) in [
            ("engine", s.key.clone()),
            ("gpu", s.cfg.accelerator.clone()),
            ("model", s.cfg.model.clone()),
            ("tp", format!("{:>2}", s.cfg.tp)),
            ("layout", layout_kind(s).to_string()),
            ("device", acc_kind.to_string()),
            ("basis", basis.to_string()),
            (
                "release",
                match release_of(s) {
                    None => RELEASE_NOT_GIVEN,
                    Some(r) if training_releases.contains(&r) => RELEASE_IN_TRAINING,
                    Some(_) => RELEASE_NOT_IN_TRAINING,
                }
                .to_string(),
            ),
            (
                "split",
                if HELD_BACK_MODELS
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&s.cfg.model))
                {
                    WHOLE_MODEL_SPLIT.to_string()
                } else {
                    RANDOM_SHARE_SPLIT.to_string()
                },
            ),
        ] {
            groups.entry((dim.to_string(), val)).or_default().push(t);
        }
    }
    report.overall = stats(&held);
    report.overall_each_measurement_once = stats(&held_once);
    report.disagg = stats(&disagg);
    report.train = stats(&train);
    report.noise = interpolation_noise(samples);
    let mut by_model: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for s in samples {
        by_model.entry(&s.cfg.model).or_default().push(s.clone());
    }
    report.noise_by_model = by_model
        .into_iter()
        .map(|(m, rows)| (m.to_string(), interpolation_noise(&rows)))
        .collect();
    report.ttft_gaps_beyond_prediction_by_model = ttft_gaps_by_model
        .into_iter()
        .filter_map(|(m, gaps)| Some((m, median(gaps)?)))
        .collect();
    for ((dim, val), v) in groups {
        report.by.entry(dim).or_default().insert(val, stats(&v));
    }
    for ((dim, val), v) in disagg_groups {
        report
            .disagg_by
            .entry(dim)
            .or_default()
            .insert(val, stats(&v));
    }
    report
}

/// [`AccuracyReport`] `release` group of rows whose engine release training rows measured.
const RELEASE_IN_TRAINING: &str = "engine release measured in training rows";
/// [`AccuracyReport`] `release` group of rows of a release no training row measured.
const RELEASE_NOT_IN_TRAINING: &str = "engine release no training row measured";
/// [`AccuracyReport`] `release` group of rows that name no release.
const RELEASE_NOT_GIVEN: &str = "no release given";

/// [`AccuracyReport`] group of predictions that lean on a measured deployment.
const MEASURED_BASIS: &str = "measured deployment";
/// [`AccuracyReport`] group of predictions of the model alone.
const MODEL_BASIS: &str = "model";

impl AccuracyReport {
    /// The held-back error by basis that calibrated parameters carry
    /// ([`FittedParams::held_back_error`]), rounded to 0.1 %. With a cross-validation, the agg
    /// `model` figure pools the held-back rows of that basis with it.
    pub fn held_back_error(&self) -> HeldBackError {
        let basis = |groups: &BTreeMap<String, BTreeMap<String, ErrorStats>>, name: &str| {
            groups.get("basis")?.get(name).cloned()
        };
        let cross_validation = self.model_cross_validation.as_ref().map(|cv| &cv.overall);
        let agg_model = match (basis(&self.by, MODEL_BASIS), cross_validation) {
            (Some(held), Some(cv)) => Some(held.pooled(cv)),
            (held, cv) => held.or(cv.cloned()),
        };
        HeldBackError {
            agg: ErrorByBasis {
                measured_deployment: basis(&self.by, MEASURED_BASIS).map(|e| e.expected_error()),
                model: agg_model.map(|e| e.expected_error()),
            },
            disagg: ErrorByBasis {
                measured_deployment: basis(&self.disagg_by, MEASURED_BASIS)
                    .map(|e| e.expected_error()),
                model: basis(&self.disagg_by, MODEL_BASIS).map(|e| e.expected_error()),
            },
            agg_model_cross_validation: cross_validation.map(|e| e.expected_error()),
        }
    }

    /// Render as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| set | rows | TTFT MAPE % | TPOT MAPE % |\n|---|---:|---:|---:|"
        );
        for (name, st) in [
            ("held-back agg (overall)", &self.overall),
            (
                "held-back agg, each measurement once (the data record some runs twice)",
                &self.overall_each_measurement_once,
            ),
            ("held-back disagg", &self.disagg),
            ("training agg (not a score)", &self.train),
            (
                "measurement noise: interpolating neighbouring concurrencies of the same configuration",
                &self.noise,
            ),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.1} | {:.1} |",
                st.n, st.ttft_mape, st.tpot_mape
            );
        }
        for (dim, groups) in &self.by {
            if dim == "model" {
                // Next to each model's error, its measurement noise (all its agg rows) and the
                // TTFT its rows measure beyond the prediction, in completion gaps.
                let _ = writeln!(
                    s,
                    "\nHeld-back agg rows by model, with the model's measurement noise and the median TTFT measured beyond the prediction in completion gaps (OSL × TPOT ÷ users, the time between two requests finishing; about 1 means each request waited for another to finish before it was admitted):\n\n| model | rows | TTFT MAPE % | TPOT MAPE % | noise points | noise TTFT % | noise TPOT % | TTFT beyond prediction, gaps |\n|---|---:|---:|---:|---:|---:|---:|---:|"
                );
                for (val, st) in groups {
                    let noise = self.noise_by_model.get(val).cloned().unwrap_or_default();
                    let _ = write!(
                        s,
                        "| {val} | {} | {:.1} | {:.1} | {} |",
                        st.n, st.ttft_mape, st.tpot_mape, noise.n
                    );
                    let _ = if noise.n == 0 {
                        write!(s, " – | – |")
                    } else {
                        write!(s, " {:.1} | {:.1} |", noise.ttft_mape, noise.tpot_mape)
                    };
                    let _ = match self.ttft_gaps_beyond_prediction_by_model.get(val) {
                        Some(gaps) => writeln!(s, " {gaps:.2} |"),
                        None => writeln!(s, " – |"),
                    };
                }
                continue;
            }
            write_group_table(&mut s, "agg", dim, groups);
            if dim == "basis"
                && let Some(cv) = &self.model_cross_validation
            {
                self.write_model_cross_validation(&mut s, cv);
            }
        }
        for (dim, groups) in &self.disagg_by {
            write_group_table(&mut s, "disagg", dim, groups);
        }
        if self.unpredicted > 0 {
            let _ = writeln!(
                s,
                "\n{} held-back rows could not be predicted.",
                self.unpredicted
            );
        }
        s
    }

    /// The leave-one-model-out table, and the figure predictions of the model alone report.
    fn write_model_cross_validation(&self, s: &mut String, cv: &ModelCrossValidation) {
        let _ = writeln!(
            s,
            "\nLeave-one-model-out cross-validation on the training agg rows (each model scored by a fit without it; held-back rows take no part):\n\n| left-out model | rows | TTFT MAPE % | TPOT MAPE % |\n|---|---:|---:|---:|"
        );
        for (model, st) in &cv.by_model {
            let _ = writeln!(
                s,
                "| {model} | {} | {:.1} | {:.1} |",
                st.n, st.ttft_mape, st.tpot_mape
            );
        }
        let _ = writeln!(
            s,
            "| **all** | {} | {:.1} | {:.1} |",
            cv.overall.n, cv.overall.ttft_mape, cv.overall.tpot_mape
        );
        let _ = writeln!(
            s,
            "\nThe same rows by concurrency, with which way TTFT leans (above 1 and above 50 %, a left-out model's TTFT comes out low):\n\n| users | rows | TTFT MAPE % | TPOT MAPE % | median measured ÷ predicted TTFT | rows measuring above the prediction % |\n|---|---:|---:|---:|---:|---:|"
        );
        for band in &cv.by_users {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.0} |",
                band.users,
                band.stats.n,
                band.stats.ttft_mape,
                band.stats.tpot_mape,
                band.ttft_median_ratio,
                band.ttft_share_above * 100.0
            );
        }
        if let Some(model) = self.held_back_error().agg.model {
            let _ = writeln!(
                s,
                "\nPredictions of the model alone report {:.1} % TTFT / {:.1} % TPOT as their expected error: these {} rows pooled with the {} held-back rows the model alone predicts.",
                model.ttft_percent,
                model.tpot_percent,
                cv.overall.n,
                model.rows - cv.overall.n
            );
        }
    }
}

/// One "Held-back {mode} rows by {dim}" table of an [`AccuracyReport`].
fn write_group_table(s: &mut String, mode: &str, dim: &str, groups: &BTreeMap<String, ErrorStats>) {
    let _ = writeln!(
        s,
        "\nHeld-back {mode} rows by {dim}:\n\n| {dim} | rows | TTFT MAPE % | TPOT MAPE % |\n|---|---:|---:|---:|"
    );
    for (val, st) in groups {
        let _ = writeln!(
            s,
            "| {val} | {} | {:.1} | {:.1} |",
            st.n, st.ttft_mape, st.tpot_mape
        );
    }
}

/// Fit the learned correction on the training rows' residuals of the analytic `params`:
/// first TPOT, then TTFT on top of the TPOT-corrected model (TTFT's queueing depends on TPOT).
pub fn fit_correction(samples: &[Sample], params: &FittedParams) -> crate::params::Correction {
    let hw = HardwareCatalog::builtin();
    let cfg = crate::gbdt::GbdtConfig::default();
    let train: Vec<&Sample> = samples.iter().filter(|s| s.train && !s.disagg).collect();
    let residuals = |params: &FittedParams, ttft: bool| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for s in &train {
            let Ok(acc) = hw.get(&s.cfg.accelerator) else {
                continue;
            };
            let Ok(r) = Resolved::new(&s.cfg, &s.model, acc, params) else {
                continue;
            };
            let Ok((_, f)) = r.predict_analytic(&s.workload) else {
                continue;
            };
            let Ok(p) = r.predict(&s.workload) else {
                continue;
            };
            if !(p.tpot_ms > 0.0 && p.ttft_ms > 0.0) {
                continue;
            }
            x.push(f);
            let ratio = if ttft {
                s.ttft_ms / p.ttft_ms
            } else {
                s.tpot_ms / p.tpot_ms
            };
            y.push(ratio.ln().clamp(-2.0, 2.0));
        }
        (x, y)
    };
    let features: Vec<String> = Resolved::FEATURES.iter().map(|s| s.to_string()).collect();
    let (x, y) = residuals(params, false);
    let tpot = crate::gbdt::Gbdt::fit_mape(&x, &y, cfg);
    let mut staged = params.clone();
    staged.correction = Some(crate::params::Correction {
        features: features.clone(),
        tpot: Some(tpot.clone()),
        ttft: None,
    });
    let (x, y) = residuals(&staged, true);
    let ttft = crate::gbdt::Gbdt::fit_mape(&x, &y, cfg);
    crate::params::Correction {
        features,
        tpot: Some(tpot),
        ttft: Some(ttft),
    }
}

/// Fit the anchors ([`crate::params::Anchors`]) on the training rows' remaining log errors
/// under `params` (analytic model and correction). The kernel width, the prior weight, the
/// layout width and the spread discount are chosen on the training rows alone, each row scored
/// by the other points of its deployment (`leave_one_point_out_error`).
pub fn fit_anchors(samples: &[Sample], params: &FittedParams) -> crate::params::Anchors {
    let hw = HardwareCatalog::builtin();
    let mut deployments: BTreeMap<String, Vec<[f64; 5]>> = BTreeMap::new();
    let mut architectures = BTreeMap::new();
    for s in samples.iter().filter(|s| s.train && !s.disagg) {
        let Ok(acc) = hw.get(&s.cfg.accelerator) else {
            continue;
        };
        let Ok(r) = Resolved::new(&s.cfg, &s.model, acc, params) else {
            continue;
        };
        let Some((ttft, tpot)) = predict_sample(s, params) else {
            continue;
        };
        let w = &s.workload;
        deployments
            .entry(r.deployment)
            .or_default()
            .push(crate::params::Anchors::point(
                crate::params::Anchors::at(w.input_tokens, w.output_tokens, w.concurrency),
                (s.tpot_ms / tpot).ln().clamp(-2.0, 2.0),
                (s.ttft_ms / ttft).ln().clamp(-2.0, 2.0),
            ));
        architectures
            .entry(s.cfg.model.clone())
            .or_insert_with(|| s.model.architecture());
    }
    let mut anchors = crate::params::Anchors {
        architectures,
        ..anchors_with_chosen_width(deployments)
    };
    // 0: a deployment's own points only, when no width helps.
    anchors.layout_width = best_on_grid(&anchors, &[0.0, 0.5, 0.75, 1.0, 1.5, 2.0], |a, w| {
        a.layout_width = w
    });
    with_chosen_shrinkage(anchors)
}

/// `anchors` with the spread discount and each engine's weight of "no change" for its own
/// measurements chosen leave-one-point-out ([`crate::params::Anchors::spread_discount`],
/// [`crate::params::Anchors::own_prior_weights`]): the discount under the kernel's prior
/// weight, each engine's weight under that discount, then the discount again under them.
fn with_chosen_shrinkage(mut anchors: crate::params::Anchors) -> crate::params::Anchors {
    anchors.spread_discount = chosen_spread_discount(&anchors);
    let engines: BTreeSet<String> = anchors
        .deployments
        .keys()
        .map(|key| crate::params::Anchors::engine(key).to_string())
        .collect();
    // An engine's weight changes only its own points' scores, so each is chosen alone.
    for engine in engines {
        let weight = best_on_grid(&anchors, &OWN_PRIOR_WEIGHTS, |a, w| {
            a.own_prior_weights.insert(engine.clone(), w);
        });
        anchors.own_prior_weights.insert(engine, weight);
    }
    anchors.spread_discount = chosen_spread_discount(&anchors);
    anchors
}

/// The weights of "no change" an engine's own measurements may be given
/// ([`crate::params::Anchors::own_prior_weights`]): from nearly none to twice a measured
/// point's at its own place.
const OWN_PRIOR_WEIGHTS: [f64; 8] = [0.001, 0.01, 0.03, 0.1, 0.25, 0.5, 1.0, 2.0];

/// The share of the measurements' spread the anchors take off
/// ([`crate::params::Anchors::spread_discount`]) that scores best leave-one-point-out.
fn chosen_spread_discount(anchors: &crate::params::Anchors) -> f64 {
    best_on_grid(anchors, &[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0], |a, d| {
        a.spread_discount = d
    })
}

/// The value from `grid` (set on a copy of `anchors` by `set`) whose anchors score best
/// leave-one-point-out ([`leave_one_point_out_error`]); the first of equals.
fn best_on_grid<T: Copy>(
    anchors: &crate::params::Anchors,
    grid: &[T],
    set: impl Fn(&mut crate::params::Anchors, T),
) -> T {
    let mut trial = anchors.clone();
    let mut best = (f64::INFINITY, grid[0]);
    for &value in grid {
        set(&mut trial, value);
        let error = leave_one_point_out_error(&trial);
        if error < best.0 {
            best = (error, value);
        }
    }
    best.1
}

/// The anchors' TPOT plus TTFT mean absolute percentage error on their own points, each
/// predicted by the other points of its deployment (none at the same lengths and load: a
/// repeated measurement cannot vouch for itself) and the points of the model's other layouts.
fn leave_one_point_out_error(anchors: &crate::params::Anchors) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0_f64);
    for (key, points) in &anchors.deployments {
        let others = anchors.other_layouts(key);
        let prior = anchors.prior_weight_for(key, false);
        for p in points {
            let (tpot, ttft) =
                anchors.adjust_except(points, &others, [p[0], p[1], p[2]], true, prior);
            sum += ((tpot - p[3]).exp() - 1.0).abs() + ((ttft - p[4]).exp() - 1.0).abs();
            n += 1.0;
        }
    }
    sum / n.max(1.0)
}

/// Anchors on `deployments` with the kernel width and prior weight that score best
/// leave-one-point-out on those same points, no other layouts and no spread discount.
fn anchors_with_chosen_width(
    deployments: BTreeMap<String, Vec<[f64; 5]>>,
) -> crate::params::Anchors {
    let mut anchors = crate::params::Anchors {
        bandwidth: 1.0,
        prior_weight: 1.0,
        layout_width: 0.0,
        spread_discount: 0.0,
        own_prior_weights: BTreeMap::new(),
        deployments,
        architectures: BTreeMap::new(),
    };
    let grid: Vec<(f64, f64)> = [0.5, 1.0, 2.0]
        .into_iter()
        .flat_map(|width| [0.25, 0.5, 1.0, 2.0, 4.0].map(|weight| (width, weight)))
        .collect();
    (anchors.bandwidth, anchors.prior_weight) = best_on_grid(&anchors, &grid, |a, (w, p)| {
        a.bandwidth = w;
        a.prior_weight = p;
    });
    anchors
}

/// The training split's disagg rows under `params` (whose own disagg correction is ignored):
/// analytic prediction and measurement of each.
fn disagg_training_rows(
    samples: &[Sample],
    params: &FittedParams,
) -> Vec<(crate::batch::DisaggAnalytic, f64, f64)> {
    let hw = HardwareCatalog::builtin();
    let mut models = ModelResolver::new(None);
    samples
        .iter()
        .filter(|s| s.train && s.disagg)
        .filter_map(|s| {
            let a = crate::batch::disagg_analytic(&s.row, &mut models, hw, params).ok()?;
            (a.ttft_ms > 0.0 && a.tpot_ms > 0.0).then_some((a, s.ttft_ms, s.tpot_ms))
        })
        .collect()
}

/// Fit the trees of the disaggregated correction ([`crate::params::DisaggCorrection`]) on the
/// training split's disagg rows: the log errors of the analytic disagg model, TPOT and TTFT
/// independently.
pub fn fit_disagg_trees(samples: &[Sample], params: &FittedParams) -> crate::params::Correction {
    let rows = disagg_training_rows(samples, params);
    let x: Vec<Vec<f64>> = rows.iter().map(|(a, ..)| a.features.clone()).collect();
    let y_tpot: Vec<f64> = rows
        .iter()
        .map(|(a, _, m)| disagg_log_error(*m, a.tpot_ms))
        .collect();
    let y_ttft: Vec<f64> = rows
        .iter()
        .map(|(a, m, _)| disagg_log_error(*m, a.ttft_ms))
        .collect();
    let cfg = crate::gbdt::GbdtConfig::default();
    crate::params::Correction {
        features: crate::batch::DISAGG_FEATURES
            .iter()
            .map(|f| f.to_string())
            .collect(),
        tpot: Some(crate::gbdt::Gbdt::fit_mape(&x, &y_tpot, cfg)),
        ttft: Some(crate::gbdt::Gbdt::fit_mape(&x, &y_ttft, cfg)),
    }
}

/// Fit the anchors of the disaggregated correction on what `trees` leave of the training
/// split's disagg rows' log errors, per measured disagg configuration.
pub fn fit_disagg_anchors(
    samples: &[Sample],
    params: &FittedParams,
    trees: &crate::params::Correction,
) -> crate::params::Anchors {
    use crate::params::MAX_DISAGG_CORRECTION_LN as BOUND;
    let mut deployments: BTreeMap<String, Vec<[f64; 5]>> = BTreeMap::new();
    for (a, ttft, tpot) in disagg_training_rows(samples, params) {
        let left = |y: f64, g: Option<&crate::gbdt::Gbdt>| {
            y - g.map_or(0.0, |g| g.predict(&a.features).clamp(-BOUND, BOUND))
        };
        let point = crate::params::Anchors::point(
            a.at,
            left(disagg_log_error(tpot, a.tpot_ms), trees.tpot.as_ref()),
            left(disagg_log_error(ttft, a.ttft_ms), trees.ttft.as_ref()),
        );
        deployments.entry(a.deployment).or_default().push(point);
    }
    with_chosen_shrinkage(anchors_with_chosen_width(deployments))
}

/// ln(measured / predicted), clamped to the disaggregated correction's bound.
fn disagg_log_error(measured: f64, predicted: f64) -> f64 {
    use crate::params::MAX_DISAGG_CORRECTION_LN as BOUND;
    (measured / predicted).ln().clamp(-BOUND, BOUND)
}

/// Fit the disaggregated correction and keep each part only where it beats the model without
/// it on held-back disagg rows: the TPOT trees, the TTFT trees, then anchors on what the kept
/// trees leave (kept when neither TTFT nor TPOT gets worse). Returns the kept parts (none when
/// nothing helped) and a sentence on the choice.
fn fit_and_keep_disagg(
    samples: &[Sample],
    params: &FittedParams,
) -> (Option<crate::params::DisaggCorrection>, String) {
    use crate::params::{Correction, DisaggCorrection};
    let score = |d: &DisaggCorrection| {
        let mut p = params.clone();
        p.disagg = Some(d.clone());
        evaluate_disagg(samples, &p)
    };
    let fitted = fit_disagg_trees(samples, params);
    let mut kept = DisaggCorrection {
        correction: Correction {
            tpot: None,
            ttft: None,
            features: fitted.features.clone(),
        },
        anchors: None,
    };
    let analytic = score(&kept);
    kept.correction.tpot = fitted.tpot;
    let with_tpot = score(&kept);
    if with_tpot.tpot_mape >= analytic.tpot_mape {
        kept.correction.tpot = None;
    }
    let base = score(&kept);
    kept.correction.ttft = fitted.ttft;
    let with_ttft = score(&kept);
    if with_ttft.ttft_mape >= base.ttft_mape {
        kept.correction.ttft = None;
    }
    let trees = score(&kept);
    kept.anchors = Some(fit_disagg_anchors(samples, params, &kept.correction));
    let anchored = score(&kept);
    if anchored.ttft_mape > trees.ttft_mape || anchored.tpot_mape > trees.tpot_mape {
        kept.anchors = None;
    }
    let verdict = |b: bool| if b { "kept" } else { "left out" };
    let summary = format!(
        "Held-back disagg rows, analytic: TTFT {:.1}%, TPOT {:.1}%; learned disagg correction: TPOT {:.1}% ({}), TTFT {:.1}% ({}); anchored on measured disagg configurations: TTFT {:.1}%, TPOT {:.1}% ({}).",
        analytic.ttft_mape,
        analytic.tpot_mape,
        with_tpot.tpot_mape,
        verdict(kept.correction.tpot.is_some()),
        with_ttft.ttft_mape,
        verdict(kept.correction.ttft.is_some()),
        anchored.ttft_mape,
        anchored.tpot_mape,
        verdict(kept.anchors.is_some()),
    );
    let any =
        kept.correction.tpot.is_some() || kept.correction.ttft.is_some() || kept.anchors.is_some();
    (any.then_some(kept), summary)
}

/// Error on the held-back disagg rows alone.
fn evaluate_disagg(samples: &[Sample], params: &FittedParams) -> ErrorStats {
    let pairs: Vec<Pair> = samples
        .iter()
        .filter(|s| !s.train && s.disagg)
        .filter_map(|s| {
            let (ttft, tpot) = predict_sample(s, params)?;
            Some((ttft, s.ttft_ms, tpot, s.tpot_ms))
        })
        .collect();
    stats(&pairs)
}

/// The whole calibration: fit the analytic parameters on the training rows, fit the learned
/// correction, and keep each half of it (TPOT, then TTFT) only where it beats the analytic
/// model on held-back rows (the rule for a learned correction). Returns the parameters,
/// their held-back report and a one-sentence summary (also stored in `notes`).
pub fn calibrate(
    samples: &[Sample],
    command: &str,
    rounds: usize,
    allow_correction: bool,
) -> (FittedParams, AccuracyReport, String) {
    use crate::params::Correction;
    let mut params = fit(samples, command, rounds);
    let analytic = evaluate(samples, &params);
    if !allow_correction {
        let summary = format!(
            "Held-back agg rows, analytic model only: TTFT MAPE {:.1}%, TPOT MAPE {:.1}%.",
            analytic.overall.ttft_mape, analytic.overall.tpot_mape
        );
        let mut analytic = analytic;
        analytic.model_cross_validation = Some(cross_validate_models(samples, &params, rounds));
        params.held_back_error = Some(analytic.held_back_error());
        params.notes = format!("{} {summary}", params.notes);
        return (params, analytic, summary);
    }
    let correction = fit_correction(samples, &params);
    let mut with_tpot = params.clone();
    with_tpot.correction = Some(Correction {
        ttft: None,
        ..correction.clone()
    });
    let tpot_only = evaluate(samples, &with_tpot);
    let keep_tpot = tpot_only.overall.tpot_mape < analytic.overall.tpot_mape;
    let base = if keep_tpot { &tpot_only } else { &analytic };
    let mut with_both = params.clone();
    with_both.correction = Some(Correction {
        tpot: if keep_tpot {
            correction.tpot.clone()
        } else {
            None
        },
        ..correction.clone()
    });
    let both = evaluate(samples, &with_both);
    let keep_ttft = both.overall.ttft_mape < base.overall.ttft_mape;
    let summary = format!(
        "Held-back agg rows, analytic model alone: TTFT MAPE {:.1}%, TPOT MAPE {:.1}%. With the learned correction: TPOT {:.1}% ({}), TTFT {:.1}% ({}).",
        analytic.overall.ttft_mape,
        analytic.overall.tpot_mape,
        tpot_only.overall.tpot_mape,
        if keep_tpot { "kept" } else { "left out" },
        both.overall.ttft_mape,
        if keep_ttft { "kept" } else { "left out" },
    );
    if keep_tpot || keep_ttft {
        params.correction = Some(Correction {
            tpot: if keep_tpot { correction.tpot } else { None },
            ttft: if keep_ttft { correction.ttft } else { None },
            features: correction.features,
        });
    }
    let corrected = evaluate(samples, &params);
    let mut anchored = params.clone();
    anchored.anchors = Some(fit_anchors(samples, &params));
    let with_anchors = evaluate(samples, &anchored);
    let keep_anchors = with_anchors.overall.ttft_mape <= corrected.overall.ttft_mape
        && with_anchors.overall.tpot_mape <= corrected.overall.tpot_mape;
    let summary = format!(
        "{summary} Anchored on measured deployments: TTFT {:.1}%, TPOT {:.1}% ({}).",
        with_anchors.overall.ttft_mape,
        with_anchors.overall.tpot_mape,
        if keep_anchors { "kept" } else { "left out" },
    );
    if keep_anchors {
        params = anchored;
    }
    let (disagg, disagg_summary) = fit_and_keep_disagg(samples, &params);
    params.disagg = disagg;
    let summary = format!("{summary} {disagg_summary}");
    let mut report = evaluate(samples, &params);
    report.model_cross_validation = Some(cross_validate_models(samples, &params, rounds));
    params.held_back_error = Some(report.held_back_error());
    params.notes = format!("{} {summary}", params.notes);
    (params, report, summary)
}

/// The shipped parameters: refit on every agg row, the held-back ones included, making the
/// choices the split fit `split` made on held-back rows (which halves of the learned correction
/// to keep, whether to anchor). The split fit is what the accuracy figures describe; this one
/// only adds the held-back rows' evidence, so deployments measured there are anchored too.
pub fn refit_on_every_row(
    samples: &[Sample],
    split: &FittedParams,
    command: &str,
    rounds: usize,
) -> FittedParams {
    let every: Vec<Sample> = samples
        .iter()
        .map(|s| Sample {
            train: true,
            ..s.clone()
        })
        .collect();
    let mut params = fit(&every, command, rounds);
    if let Some(kept) = &split.correction {
        params.correction = Some(fit_correction(&every, &params).keeping_halves_of(kept));
    }
    if split.anchors.is_some() {
        params.anchors = Some(fit_anchors(&every, &params));
    }
    if let Some(kept) = &split.disagg {
        let trees = fit_disagg_trees(&every, &params).keeping_halves_of(&kept.correction);
        let anchors = kept
            .anchors
            .is_some()
            .then(|| fit_disagg_anchors(&every, &params, &trees));
        params.disagg = Some(crate::params::DisaggCorrection {
            correction: trees,
            anchors,
        });
    }
    let rows = every.iter().filter(|s| !s.disagg).count();
    params.fitted_on_every_row = true;
    params.held_back_error = split.held_back_error;
    let verdict = |kept: bool| if kept { "kept" } else { "left out" };
    params.notes = format!(
        "fitted on all {rows} agg rows, held-back ones included, with the choices of the split fit (learned correction: TPOT {}, TTFT {}; anchors {}); its held-back figures describe this model: {}",
        verdict(split.correction.as_ref().is_some_and(|c| c.tpot.is_some())),
        verdict(split.correction.as_ref().is_some_and(|c| c.ttft.is_some())),
        verdict(split.anchors.is_some()),
        split.notes
    );
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_chooses_how_far_to_trust_its_own_measurements() {
        // vLLM on a GPU measures a steady 0.3 log error at every length: trusting the
        // neighbours fully predicts each point exactly. vLLM on CPU measures pairs of points a
        // doubling apart (the pairs ten doublings apart) whose errors disagree, +0.5 and −0.5:
        // a point's one neighbour predicts the wrong sign, and no change does better.
        let consistent: Vec<[f64; 5]> = (0..8)
            .map(|i| crate::params::Anchors::point([9.0 + f64::from(i), 8.0, 4.0], 0.3, 0.3))
            .collect();
        let disagreeing: Vec<[f64; 5]> = (0..8)
            .map(|i| {
                let (pair, second) = (f64::from(i / 2), i % 2 == 1);
                let error = if second { -0.5 } else { 0.5 };
                let input = 9.0 + 10.0 * pair + if second { 1.0 } else { 0.0 };
                crate::params::Anchors::point([input, 8.0, 4.0], error, error)
            })
            .collect();
        let layout = "bf16/bf16/bf16 tp1 pp1 dp1 moetp1 ep1";
        let deployments = BTreeMap::from([
            (format!("m h100_sxm vllm {layout}"), consistent),
            (
                format!("m xeon_granite_rapids vllm-cpu {layout}"),
                disagreeing,
            ),
        ]);
        let anchors = with_chosen_shrinkage(anchors_with_chosen_width(deployments));
        let weights = &anchors.own_prior_weights;
        assert_eq!(weights["vllm"], OWN_PRIOR_WEIGHTS[0], "{weights:?}");
        assert_eq!(
            weights["vllm-cpu"],
            OWN_PRIOR_WEIGHTS[OWN_PRIOR_WEIGHTS.len() - 1],
            "{weights:?}"
        );
        // A twin of the GPU model would still be shrunk by the kernel's prior weight.
        let key = format!("m h100_sxm vllm {layout}");
        assert_eq!(anchors.prior_weight_for(&key, true), anchors.prior_weight);
        assert_eq!(anchors.prior_weight_for(&key, false), OWN_PRIOR_WEIGHTS[0]);
    }

    fn sample(concurrency: u32, ttft_ms: f64, tpot_ms: f64) -> Sample {
        Sample {
            id: format!("c{concurrency}"),
            row: ScenarioRow {
                fields: BTreeMap::new(),
            },
            cfg: ServingConfig::new("Qwen/Qwen3-8B", "h100_sxm", Engine::Vllm),
            model: crate::model::model("Qwen/Qwen3-8B").unwrap().clone(),
            workload: Workload {
                input_tokens: 1024,
                output_tokens: 1024,
                concurrency,
            },
            ttft_ms,
            tpot_ms,
            train: true,
            disagg: false,
            key: "vllm".into(),
        }
    }

    #[test]
    fn release_effects_compare_releases_only_on_shared_configurations() {
        // Ten configurations measured under releases 1.0 (TPOT 10 ms) and 2.0 (5 ms), and
        // release 3.0 on ten configurations of its own.
        let row = |version: &str, concurrency: u32, tpot: f64| {
            let mut s = sample(concurrency, 100.0, tpot);
            s.cfg.engine_version = Some(version.into());
            s.row
                .fields
                .insert("batch_size".into(), concurrency.to_string());
            s
        };
        let mut rows = Vec::new();
        for c in 1..=10 {
            rows.push(row("1.0", c, 10.0));
            rows.push(row("2.0", c, 5.0));
            rows.push(row("3.0", 100 + c, 50.0));
        }
        let train: Vec<&Sample> = rows.iter().collect();
        let effects = release_effects(&train);
        // Each release sits ln 2 / 2 from the shared level, shrunk by 10 / (10 + 5).
        let expected = (2f64.ln() / 2.0 * 10.0 / 15.0).exp();
        let one = effects["vllm 1.0"];
        let two = effects["vllm 2.0"];
        assert!((one.decode - expected).abs() < 1e-9, "{one:?}");
        assert!((two.decode - 1.0 / expected).abs() < 1e-9, "{two:?}");
        assert!((one.prefill - 1.0).abs() < 1e-9 && (two.prefill - 1.0).abs() < 1e-9);
        // Never paired: its slowness may be its configurations', so it gets no multiplier.
        assert!(!effects.contains_key("vllm 3.0"), "{effects:?}");
    }

    #[test]
    fn the_report_tells_held_back_rows_of_releases_the_fit_never_saw() {
        let with_release = |concurrency: u32, version: Option<&str>, train: bool| {
            let mut s = sample(concurrency, 100.0, 10.0);
            s.cfg.engine_version = version.map(str::to_string);
            s.train = train;
            s
        };
        let rows = [
            with_release(1, Some("1.0"), true),
            with_release(2, Some("1.0"), false),
            with_release(3, Some("2.0"), false),
            with_release(4, Some("2.0"), false),
            with_release(5, None, false),
        ];
        let report = evaluate(&rows, &FittedParams::default());
        let rows_of = |group: &str| report.by["release"].get(group).map(|st| st.n);
        assert_eq!(rows_of(RELEASE_IN_TRAINING), Some(1));
        assert_eq!(rows_of(RELEASE_NOT_IN_TRAINING), Some(2));
        assert_eq!(rows_of(RELEASE_NOT_GIVEN), Some(1));
    }

    #[test]
    fn the_report_counts_each_held_back_measurement_once_beside_every_row() {
        let held_back = |concurrency: u32, ttft_ms: f64| Sample {
            train: false,
            ..sample(concurrency, ttft_ms, 10.0)
        };
        // The first run recorded twice; the default parameters miss both runs differently.
        let rows = [held_back(8, 100.0), held_back(8, 100.0), held_back(9, 1e6)];
        let report = evaluate(&rows, &FittedParams::default());
        let (all, once) = (&report.overall, &report.overall_each_measurement_once);
        assert_eq!((all.n, once.n), (3, 2));
        assert!(
            (all.ttft_mape - once.ttft_mape).abs() > 1.0,
            "the repeated run weighs twice in one and once in the other: {all:?} {once:?}"
        );
    }

    #[test]
    fn an_engine_without_dense_rows_keeps_both_prefill_efficiencies_at_their_prior() {
        // Only MoE rows: neither the dense nor the MoE prefill efficiency can be told apart
        // from the fixed prefill overhead, and no other engine has them to borrow.
        let moe = crate::model::model("Qwen/Qwen3-30B-A3B").unwrap().clone();
        let rows: Vec<Sample> = (1..=24)
            .map(|c| {
                let mut s = sample(c, 40.0 + 10.0 * c as f64, 8.0 + c as f64 / 4.0);
                s.cfg.model = moe.id.clone();
                s.model = moe.clone();
                s
            })
            .collect();
        let fitted = fit(&rows, "test", 2).engine("vllm");
        let prior = EngineParams::default_gpu();
        assert_eq!(fitted.prefill_compute_eff, prior.prefill_compute_eff);
        assert_eq!(fitted.moe_prefill_eff, prior.moe_prefill_eff);
        assert_ne!(fitted, prior, "the other parameters are fitted");
    }

    #[test]
    fn engines_without_sparse_attention_rows_borrow_the_fitted_cost() {
        // DeepSeek-V3 and GLM-5 on SGLang measured as the starting parameters predict them,
        // but GLM-5's decode steps 5 ms slower: the fit gives SGLang a sparse-attention cost,
        // and vLLM and TensorRT-LLM, never measured on such a model, take the same.
        let start = FittedParams::default();
        let rows: Vec<Sample> = ["deepseek-ai/DeepSeek-V3", "zhipuai/GLM-5"]
            .into_iter()
            .flat_map(|name| (1..=24).map(move |c| (name, c)))
            .map(|(name, c)| {
                let mut s = sample(c, 0.0, 0.0);
                s.model = crate::model::model(name).unwrap().clone();
                s.cfg = ServingConfig::new(name, "b200_sxm", Engine::Sglang);
                s.cfg.tp = 8;
                s.key = "sglang".into();
                let (ttft, tpot) = predict_sample(&s, &start).unwrap();
                let slower = if s.model.attention_topk > 0 { 5.0 } else { 0.0 };
                (s.ttft_ms, s.tpot_ms) = (ttft, tpot + slower);
                s
            })
            .collect();
        let fitted = fit(&rows, "test", 4);
        let sglang = fitted.engine("sglang").sparse_attention_layer_us;
        assert!((sglang - 5000.0 / 78.0).abs() < 10.0, "{sglang}");
        assert_eq!(fitted.engine("vllm").sparse_attention_layer_us, sglang);
        assert_eq!(fitted.engine("trtllm").sparse_attention_layer_us, sglang);
    }

    #[test]
    fn cross_validation_scores_each_training_model_by_a_fit_without_it() {
        let mut rows = Vec::new();
        for (model, train, scale) in [
            ("a", true, 1.0),
            ("b", true, 1.1),
            ("held-back", false, 1.2),
        ] {
            for c in [1, 4, 16] {
                let mut s = sample(c, scale * 50.0 * c as f64, scale * (10.0 + c as f64));
                s.cfg.model = model.into();
                s.train = train;
                rows.push(s);
            }
        }
        let cv = cross_validate_models(&rows, &FittedParams::default(), 1);
        assert_eq!(cv.by_model.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(cv.by_model.values().all(|st| st.n == 3));
        assert_eq!(cv.overall.n, 6, "held-back rows take no part");
        assert!(cv.overall.ttft_mape > 0.0 && cv.overall.tpot_mape > 0.0);
    }

    #[test]
    fn cross_validation_tells_which_way_ttft_leans_at_each_concurrency() {
        // Two models measured alike (the second 1 % slower, so that its runs are not copies
        // of the first's), except that TTFT at 64 users is four times what the smooth rest
        // implies: a fit without one model learns the other's, so the left-out rows at 64
        // users come out low and the others do not.
        let mut rows = Vec::new();
        for (model, scale) in [("a", 1.0), ("b", 1.01)] {
            for c in [1, 4, 16, 64] {
                let steep = if c == 64 { 4.0 } else { 1.0 };
                let ttft = scale * steep * 50.0 * c as f64;
                let mut s = sample(c, ttft, scale * (10.0 + c as f64));
                s.cfg.model = model.into();
                rows.push(s);
            }
        }
        let cv = cross_validate_models(&rows, &FittedParams::default(), 2);
        let bands: Vec<(&str, usize)> = cv.by_users.iter().map(|b| (b.users, b.stats.n)).collect();
        assert_eq!(
            bands,
            [("1 to 16", 6), ("17 to 64", 2)],
            "empty bands are left out"
        );
        let [low, high] = [0, 1].map(|i| cv.by_users[i].ttft_median_ratio);
        assert!(
            high > 2.0 && low < 1.5,
            "1-16 users: {low}, 64 users: {high}"
        );
        assert_eq!(cv.by_users[1].ttft_share_above, 1.0);
    }

    #[test]
    fn a_held_back_measurement_is_held_back_under_every_name() {
        let held_back = Sample {
            train: false,
            ..sample(8, 100.0, 10.0)
        };
        // The same run filed under another model and a float's last digit apart.
        let mut copy = sample(8, 100.00000000000001, 10.0);
        copy.cfg.model = "deepseek-ai/DeepSeek-V3".into();
        let other_run = sample(8, 100.1, 10.0);
        let mut rows = vec![held_back, copy, other_run];
        hold_back_copies(&mut rows);
        let train: Vec<bool> = rows.iter().map(|s| s.train).collect();
        assert_eq!(train, [false, false, true]);
    }

    #[test]
    fn cross_validation_leaves_out_copies_filed_under_another_model() {
        // Model "a" at one speed and "c" ten times slower; "b" repeats a's runs, either as
        // copies of the same measurements or as runs 2 % apart.
        let rows_with = |b_factor: f64| {
            let mut rows = Vec::new();
            for (model, scale) in [("a", 1.0), ("b", b_factor), ("c", 10.0)] {
                for c in [1, 2, 4, 8, 16, 32] {
                    let mut s = sample(c, scale * 50.0 * c as f64, scale * (10.0 + c as f64));
                    s.cfg.model = model.into();
                    rows.push(s);
                }
            }
            rows
        };
        let copies = cross_validate_models(&rows_with(1.0), &FittedParams::default(), 2);
        let reruns = cross_validate_models(&rows_with(1.02), &FittedParams::default(), 2);
        assert_eq!(copies.overall.n, 18, "every training row is scored once");
        let (copied, rerun) = (&copies.by_model["a"], &reruns.by_model["a"]);
        assert!(
            copied.tpot_mape > 2.0 * rerun.tpot_mape,
            "a's fold may learn from b's reruns but not from copies of its own runs: {copied:?} against {rerun:?}"
        );
    }

    /// Two groups of six concurrencies each, the second set apart by `second` and measuring
    /// ten times the first's TTFT and TPOT, which no fit of one group can predict of the other.
    fn two_groups_tenfold_apart(second: impl Fn(&mut Sample)) -> Vec<Sample> {
        let mut rows = Vec::new();
        for scale in [1.0, 10.0] {
            for c in [1, 2, 4, 8, 16, 32] {
                let mut s = sample(c, scale * 50.0 * c as f64, scale * (10.0 + c as f64));
                if scale > 1.0 {
                    second(&mut s);
                }
                rows.push(s);
            }
        }
        rows
    }

    #[test]
    fn deployment_cross_validation_leaves_each_deployment_out_whole() {
        // One model in two deployments, TP 1 and TP 2. Were a deployment's rows split across
        // folds, each fold would see half of them.
        let rows = two_groups_tenfold_apart(|s| s.cfg.tp = 2);
        let cv = cross_validate_deployments(&rows, &FittedParams::default(), 2, 2);
        assert_eq!(cv.overall.n, 12, "every training row is scored once");
        assert_eq!(cv.by_model.keys().collect::<Vec<_>>(), ["Qwen/Qwen3-8B"]);
        assert!(
            cv.overall.tpot_mape > 80.0,
            "each deployment is scored by a fit of the other alone: {:?}",
            cv.overall
        );
    }

    #[test]
    fn series_cross_validation_leaves_each_length_of_a_deployment_out_whole() {
        // One deployment measured at two input lengths; the deployment folds would keep both
        // series together.
        let rows = two_groups_tenfold_apart(|s| s.workload.input_tokens = 4096);
        let cv = cross_validate_series(&rows, &FittedParams::default(), 2, 2);
        assert_eq!(cv.overall.n, 12, "every training row is scored once");
        assert!(
            cv.overall.tpot_mape > 80.0,
            "each series is scored by a fit of the other alone: {:?}",
            cv.overall
        );
    }

    #[test]
    fn the_model_basis_pools_held_back_rows_with_the_cross_validation() {
        let mut report = AccuracyReport::default();
        let st = |n, ttft_mape, tpot_mape| ErrorStats {
            n,
            ttft_mape,
            tpot_mape,
        };
        report.by.entry("basis".into()).or_default().extend([
            (MODEL_BASIS.to_string(), st(100, 30.0, 10.0)),
            (MEASURED_BASIS.to_string(), st(50, 10.0, 5.0)),
        ]);
        let alone = report.held_back_error();
        assert_eq!(alone.agg.model.unwrap().ttft_percent, 30.0);
        assert_eq!(alone.agg_model_cross_validation, None);
        report.model_cross_validation = Some(ModelCrossValidation {
            overall: st(300, 50.0, 20.0),
            ..ModelCrossValidation::default()
        });
        let pooled = report.held_back_error();
        let model = pooled.agg.model.unwrap();
        assert_eq!(
            (model.rows, model.ttft_percent, model.tpot_percent),
            (400, 45.0, 17.5)
        );
        assert_eq!(
            pooled.agg.measured_deployment,
            alone.agg.measured_deployment
        );
        assert_eq!(pooled.agg_model_cross_validation.unwrap().rows, 300);
    }

    #[test]
    fn ttft_beyond_prediction_is_counted_in_completion_gaps() {
        // 16 users decoding 1024 tokens at 10 ms: one finishes every 1024 × 10 / 16 = 640 ms.
        // A TTFT measured at 840 ms against 200 predicted waited one such gap.
        let row = sample(16, 840.0, 10.0);
        assert!((completion_gaps_beyond_prediction(&row, 200.0) - 1.0).abs() < 1e-12);
        assert_eq!(completion_gaps_beyond_prediction(&row, 840.0), 0.0);
        // Predicted above the measurement, the count is negative.
        assert!((completion_gaps_beyond_prediction(&row, 1160.0) + 0.5).abs() < 1e-12);
    }

    #[test]
    fn interpolation_noise_scores_the_middle_point_against_its_neighbours() {
        // ln 4 is halfway between ln 1 and ln 16, so the interpolation is the geometric mean
        // of the neighbours: TTFT √(10·40) = 20 (measured 25: 20 % off), TPOT √(5·20) = 10
        // (measured 10: exact). The end points have no two neighbours and are not scored.
        let rows = [
            sample(1, 10.0, 5.0),
            sample(4, 25.0, 10.0),
            sample(16, 40.0, 20.0),
        ];
        let noise = interpolation_noise(&rows);
        assert_eq!(noise.n, 1);
        assert!((noise.ttft_mape - 20.0).abs() < 1e-9, "{noise:?}");
        assert!(noise.tpot_mape.abs() < 1e-9, "{noise:?}");
        // Another configuration (a different output length) is a separate curve.
        let mut other = sample(4, 1000.0, 1000.0);
        other.workload.output_tokens = 128;
        let noise =
            interpolation_noise(&[rows[0].clone(), rows[1].clone(), rows[2].clone(), other]);
        assert_eq!(noise.n, 1);
    }
}
