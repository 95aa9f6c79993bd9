//! Batch prediction over a scenarios CSV with the columns of the calibration data
//! (`id, backend, backend_version, model_path, system, precision, mode, isl, osl,
//! gemm_quant_mode, moe_quant_mode, batch_size, tp_size, pp_size, attention_dp_size,
//! moe_tp_size, moe_ep_size`, the `prefill_*` / `decode_*` worker columns for
//! `mode=disagg`; measured columns may be absent). Rows that cannot be predicted get empty
//! values and a reason; the batch never fails because of one row.

use crate::error::{Error, Result};
use crate::hardware::{Accelerator, HardwareCatalog};
use crate::model::{ModelCatalog, ModelSpec};
use crate::params::FittedParams;
use crate::perf::{Resolved, ServingConfig, Workload};
use crate::precision::{Engine, Precision};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Above this `tp_size` a row is read as a wide expert-parallel deployment.
const WIDE_TP: u32 = 8;

/// (tp, pp, attention dp, moe tp, moe ep).
type Layout = (u32, u32, u32, Option<u32>, Option<u32>);

/// One scenario row, as read from the CSV (all columns kept as text).
#[derive(Debug, Clone, Default)]
pub struct ScenarioRow {
    /// Column name → value.
    pub fields: BTreeMap<String, String>,
}

impl ScenarioRow {
    /// A column's trimmed value, `""` when absent.
    pub fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(|s| s.trim()).unwrap_or("")
    }

    /// Every value but the id's and those of the `skip` columns, joined in column order: the
    /// same for rows that repeat one measurement (or, skipping the measured columns, one
    /// configuration) under different ids.
    pub fn values_except(&self, skip: &[&str]) -> String {
        self.fields
            .iter()
            .filter(|(k, _)| k.as_str() != "id" && !skip.contains(&k.as_str()))
            .map(|(_, v)| v.trim())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn num(&self, k: &str) -> Result<Option<f64>> {
        let v = self.get(k);
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<f64>()
            .map(Some)
            .map_err(|_| Error::invalid(k, format!("{v:?} is not a number")))
    }

    fn count(&self, k: &str, default: u32) -> Result<u32> {
        match self.num(k)? {
            None => Ok(default),
            Some(x) if x >= 1.0 && x.fract() == 0.0 && x < 1e7 => Ok(x as u32),
            Some(x) => Err(Error::invalid(k, format!("{x} must be a positive integer"))),
        }
    }

    /// A wide expert-parallel row (`prefix` ""), or disagg pool (`prefill_`, `decode_`), on an
    /// NVL72 rack: a `tp_size` above 8 on GB200/GB300 records the world size, with attention
    /// data parallel (nobody shards attention 72 ways, and no model here has heads to).
    fn is_wide(&self, prefix: &str) -> bool {
        self.get("system").starts_with("gb")
            && self
                .get(&format!("{prefix}tp_size"))
                .parse::<u32>()
                .is_ok_and(|t| t > WIDE_TP)
    }

    /// (tp, pp, attention dp, moe tp, moe ep) of the row or of one disagg pool, and how many
    /// ranks `batch_size` counts per (the measured batch is per attention data-parallel rank
    /// as the columns record it).
    fn layout_and_batch_ranks(&self, prefix: &str) -> Result<(Layout, u32)> {
        let col = |k: &str| format!("{prefix}{k}");
        let mut tp = self.count(&col("tp_size"), 1)?;
        let pp = self.count(&col("pp_size"), 1)?;
        let mut dp = self.count(&col("attention_dp_size"), 1)?;
        let moe_tp = self.num(&col("moe_tp_size"))?.map(|x| x.max(1.0) as u32);
        let moe_ep = self.num(&col("moe_ep_size"))?.map(|x| x.max(1.0) as u32);
        if self.is_wide(prefix) && dp == 1 {
            // Wide expert-parallel deployments (tp_size 12..72 on NVL72 racks) record the
            // world size as tp_size; attention runs data parallel there (nobody shards
            // attention 72 ways), so model it as TP1 × DP(world).
            dp = tp;
            tp = 1;
        }
        let moe_world = moe_tp.unwrap_or(1) * moe_ep.unwrap_or(1);
        if moe_world > tp * dp && moe_world % (tp * dp) == 0 {
            // The MoE group spans more devices than attention TP × DP: the remaining devices
            // run attention data parallel (rows with tp_size 1 and moe_tp_size 2 or 4).
            dp = moe_world / tp;
        }
        // With attention data parallelism `batch_size` counts one DP rank: the `c<N>` of the
        // id is batch × ranks. Where the id's `c<N>` is the batch itself, the batch is the
        // whole closed loop, as the data's README defines `batch_size`.
        let batch_ranks = if prefix.is_empty()
            && dp > 1
            && self.number_in_id("c") == Some(self.count("batch_size", 1)?)
        {
            1
        } else {
            dp
        };
        if let (Some(k), Some(ep)) = (moe_tp, moe_ep)
            && k == ep
            && k > 1
            && tp * dp == k * k
            && self.number_in_id("tp").is_none_or(|n| n == k)
        {
            // Rows named `..._tp<k>_ep<k>_...` (and their unnamed duplicates) record
            // moe_tp_size = moe_ep_size = k and a TP (or attention DP) of k²: the deployment is
            // k devices running attention TP (or DP) k with the experts split k ways, and
            // moe_tp_size repeats the TP size rather than multiplying it. The batch stays per
            // recorded rank: batch × k² is the `c<N>` of the id. A row whose id names another
            // TP (`_tp4_epnone_` with MoE TP 2 × EP 2) is taken as recorded.
            if dp > 1 {
                dp = k;
                tp = 1;
            } else {
                tp = k;
            }
            return Ok(((tp, pp, dp, Some(1), Some(k)), batch_ranks));
        }
        if moe_tp == Some(1)
            && tp > 1
            && dp == tp
            && moe_ep == Some(tp * dp)
            && self.number_in_id("tp").is_none_or(|n| n == tp)
            && self.number_in_id("ep").is_none_or(|n| n == tp)
        {
            // Rows named `..._tp<k>_ep<k>_...` (and their unnamed duplicates) that record
            // attention TP k × DP k with EP k² and the batch per DP rank (vLLM, Kimi-K2.5): each
            // is the measurement another collection records as TP k, DP 1, EP k with the whole
            // batch, to the digit. The deployment is k devices, attention TP k, experts over EP
            // k; the users stay batch × k, the `c<N>` of the id.
            return Ok(((tp, pp, 1, Some(1), Some(tp)), batch_ranks));
        }
        Ok(((tp, pp, dp, moe_tp, moe_ep), batch_ranks))
    }

    /// The number an `_`-separated part of the id gives after `prefix` (`tp` in
    /// `..._c128_tp8_ep8_...` gives 8, `c` gives 128), if any.
    fn number_in_id(&self, prefix: &str) -> Option<u32> {
        self.id().split('_').find_map(|part| {
            part.strip_prefix(prefix)
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
        })
    }

    /// Users in the closed loop: `batch_size`, or for disagg rows without it the `_c<N>_`
    /// part of the id.
    fn concurrency(&self) -> Result<u32> {
        if !self.get("batch_size").is_empty() {
            return self.count("batch_size", 1);
        }
        Ok(self.number_in_id("c").unwrap_or(1).max(1))
    }

    /// The row id.
    pub fn id(&self) -> &str {
        self.get("id")
    }

    /// `true` for `mode=disagg` rows.
    pub fn is_disagg(&self) -> bool {
        self.get("mode").eq_ignore_ascii_case("disagg")
    }

    /// Measured TTFT, if present.
    pub fn measured_ttft(&self) -> Option<f64> {
        self.num("silicon_ttft_ms")
            .ok()
            .flatten()
            .filter(|x| *x > 0.0)
    }

    /// Measured TPOT, if present.
    pub fn measured_tpot(&self) -> Option<f64> {
        self.num("silicon_tpot_ms")
            .ok()
            .flatten()
            .filter(|x| *x > 0.0)
    }

    fn precision(&self, k: &str) -> Result<Option<Precision>> {
        let v = self.get(k);
        if v.is_empty() {
            Ok(None)
        } else {
            v.parse().map(Some)
        }
    }

    /// The serving configuration of the row (for disagg rows, `prefix` is `prefill_` or
    /// `decode_` and picks that pool's parallelism).
    pub fn config(&self, prefix: &str) -> Result<ServingConfig> {
        let engine: Engine = self.get("backend").parse()?;
        let model = self.get("model_path");
        if model.is_empty() {
            return Err(Error::invalid("model_path", "empty"));
        }
        let system = self.get("system");
        if system.is_empty() {
            return Err(Error::invalid("system", "empty"));
        }
        let col = |k: &str| format!("{prefix}{k}");
        let ((tp, pp, dp, moe_tp, moe_ep), batch_ranks) = self.layout_and_batch_ranks(prefix)?;
        let base = self.precision("precision")?;
        let dense = self.precision("gemm_quant_mode")?.or(base);
        let experts = self.precision("moe_quant_mode")?.or(dense);
        Ok(ServingConfig {
            model: model.to_string(),
            accelerator: system.to_string(),
            tp,
            pp,
            attention_dp: dp,
            moe_tp,
            moe_ep,
            precision: dense,
            expert_precision: experts,
            kv_precision: None,
            engine,
            engine_version: Some(self.get("backend_version").to_string()).filter(|s| !s.is_empty()),
            // Benchmarks size the engine's batch limit to the concurrency they drive (per
            // rank as the row counts ranks, here per modelled rank).
            max_batch: Some(
                self.count(&col("batch_size"), 1)?
                    .max(self.count("batch_size", 1)?)
                    * (batch_ranks / dp).max(1),
            ),
            gpu_memory_utilization: None,
        })
    }

    /// The workload of the row.
    pub fn workload(&self) -> Result<Workload> {
        Ok(Workload {
            input_tokens: self.count("isl", 0).and_then(|v| {
                if v == 0 {
                    Err(Error::invalid("isl", "missing"))
                } else {
                    Ok(v)
                }
            })?,
            output_tokens: self.count("osl", 0).and_then(|v| {
                if v == 0 {
                    Err(Error::invalid("osl", "missing"))
                } else {
                    Ok(v)
                }
            })?,
            // With attention data parallelism the measured batch is per DP rank (except in
            // the wide-EP rows, whose batch is the total).
            concurrency: self.concurrency()?
                * if self.is_wide("") {
                    1
                } else {
                    self.layout_and_batch_ranks("")?.1
                },
        })
    }
}

/// Read scenario rows from CSV text.
pub fn read_rows<R: Read>(reader: R) -> Result<Vec<ScenarioRow>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::Io(format!("reading CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::Io(format!("reading CSV row {}: {e}", i + 2)))?;
        let fields = headers
            .iter()
            .cloned()
            .zip(rec.iter().map(str::to_string))
            .collect();
        rows.push(ScenarioRow { fields });
    }
    Ok(rows)
}

/// Finds models: `<dir>/<org>--<name>_config.json` first, then the built-in catalog.
#[derive(Debug, Default)]
pub struct ModelResolver {
    dir: Option<PathBuf>,
    cache: HashMap<String, std::result::Result<ModelSpec, Error>>,
}

impl ModelResolver {
    /// A resolver reading from `dir` (if given) and falling back to the catalog.
    pub fn new(dir: Option<&Path>) -> Self {
        ModelResolver {
            dir: dir.map(Path::to_path_buf),
            cache: HashMap::new(),
        }
    }

    /// Resolve a model path such as `Qwen/Qwen3-8B`.
    pub fn get(&mut self, model_path: &str) -> Result<ModelSpec> {
        if let Some(r) = self.cache.get(model_path) {
            return r.clone();
        }
        let r = self.load(model_path);
        self.cache.insert(model_path.to_string(), r.clone());
        r
    }

    fn load(&self, model_path: &str) -> Result<ModelSpec> {
        let key = model_path.trim().trim_start_matches("hf://");
        if let Some(dir) = &self.dir {
            let file = dir.join(format!("{}_config.json", key.replace('/', "--")));
            if file.exists() {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
                return ModelSpec::from_config_json(key, &text);
            }
        }
        ModelCatalog::builtin()
            .get(key)
            .cloned()
            .map_err(|e| match (&self.dir, e) {
                (Some(dir), Error::UnknownModel { given, accepted }) => Error::UnknownModel {
                    given: format!(
                        "{given} (no {}/{}_config.json)",
                        dir.display(),
                        key.replace('/', "--")
                    ),
                    accepted,
                },
                (_, e) => e,
            })
    }
}

/// Result of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPrediction {
    /// Row id.
    pub id: String,
    /// Predicted TTFT, ms.
    pub ttft_ms: Option<f64>,
    /// Predicted TPOT, ms.
    pub tpot_ms: Option<f64>,
    /// Extra: e2e, tokens/s, max concurrency.
    pub e2e_ms: Option<f64>,
    /// Output tokens/s of the replica.
    pub tokens_per_s: Option<f64>,
    /// Largest KV concurrency.
    pub max_concurrency: Option<u32>,
    /// The calibration data measured this deployment and the prediction leans on it
    /// ([`crate::perf::Prediction::measured_deployment`]); `None` without a prediction.
    pub measured_deployment: Option<bool>,
    /// Held-back error of predictions on the same basis
    /// ([`crate::perf::Prediction::expected_error`]).
    pub expected_error: Option<crate::params::ExpectedError>,
    /// Why the row has no prediction (empty when it has one).
    pub reason: String,
}

/// Predict one row (agg or disagg).
pub fn predict_row(
    row: &ScenarioRow,
    models: &mut ModelResolver,
    hw: &HardwareCatalog,
    params: &FittedParams,
) -> Result<RowPrediction> {
    let wl = row.workload()?;
    if row.is_disagg() {
        let p = predict_disagg(row, models, hw, params)?;
        return Ok(RowPrediction {
            id: row.id().to_string(),
            ttft_ms: Some(p.ttft_ms),
            tpot_ms: Some(p.tpot_ms),
            e2e_ms: Some(p.ttft_ms + p.tpot_ms * (wl.output_tokens as f64 - 1.0)),
            tokens_per_s: None,
            max_concurrency: None,
            measured_deployment: Some(p.measured_deployment),
            expected_error: p.expected_error,
            reason: String::new(),
        });
    }
    let cfg = row.config("")?;
    let m = models.get(&cfg.model)?;
    let acc = hw.get(&cfg.accelerator)?;
    let p = Resolved::new(&cfg, &m, acc, params)?.predict(&wl)?;
    if !p.memory.fits {
        return Err(Error::Unsupported(p.memory.verdict));
    }
    Ok(RowPrediction {
        id: row.id().to_string(),
        ttft_ms: Some(p.ttft_ms),
        tpot_ms: Some(p.tpot_ms),
        e2e_ms: Some(p.e2e_ms),
        tokens_per_s: Some(p.tokens_per_s),
        max_concurrency: Some(p.max_concurrency),
        measured_deployment: Some(p.measured_deployment),
        expected_error: p.expected_error,
        reason: String::new(),
    })
}

/// Disaggregated serving: prefill workers produce the first token, decode workers stream
/// the rest. The analytic part ([`disagg_analytic`]) has no queueing, and the measured disagg
/// rows queue heavily (their mean TTFT is typically several times a lone prefill), so when the
/// parameters carry a [`crate::params::DisaggCorrection`] it is applied on top: learned
/// multipliers, then the anchors of the measured configuration.
pub fn predict_disagg(
    row: &ScenarioRow,
    models: &mut ModelResolver,
    hw: &HardwareCatalog,
    params: &FittedParams,
) -> Result<DisaggPrediction> {
    let a = disagg_analytic(row, models, hw, params)?;
    let (mut ttft, mut tpot) = (a.ttft_ms, a.tpot_ms);
    let mut measured_deployment = false;
    if let Some(d) = &params.disagg {
        let bound = crate::params::MAX_DISAGG_CORRECTION_LN;
        if let Some(g) = &d.correction.tpot {
            tpot *= g.predict(&a.features).clamp(-bound, bound).exp();
        }
        if let Some(g) = &d.correction.ttft {
            ttft *= g.predict(&a.features).clamp(-bound, bound).exp();
        }
        if let Some(anchors) = &d.anchors
            && let Some(points) = anchors.deployments.get(&a.deployment)
        {
            let (t, f) = anchors.adjust(&a.deployment, points, a.at);
            tpot *= t.exp();
            ttft *= f.exp();
            measured_deployment = anchors.leans_on(points, a.at);
        }
    }
    Ok(DisaggPrediction {
        ttft_ms: ttft,
        tpot_ms: tpot,
        measured_deployment,
        expected_error: params
            .held_back_error
            .and_then(|e| e.disagg.for_basis(measured_deployment)),
    })
}

/// A disaggregated row's prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisaggPrediction {
    /// TTFT, ms.
    pub ttft_ms: f64,
    /// TPOT, ms.
    pub tpot_ms: f64,
    /// The calibration data measured this disagg configuration and the prediction leans on it.
    pub measured_deployment: bool,
    /// Held-back error of disagg predictions on the same basis
    /// ([`crate::params::HeldBackError::disagg`]).
    pub expected_error: Option<crate::params::ExpectedError>,
}

/// Features of the disaggregated correction, in order (see [`disagg_analytic`]).
pub const DISAGG_FEATURES: [&str; 19] = [
    "engineVllm",
    "engineSglang",
    "engineTrtllm",
    "moe",
    "mla",
    "log2Users",
    "log2Isl",
    "log2Osl",
    "log2PrefillTp",
    "log2PrefillAttentionDp",
    "log2PrefillWorkers",
    "log2DecodeTp",
    "log2DecodeAttentionDp",
    "log2DecodeMoeEp",
    "log2DecodeWorkers",
    "expertWeightBytes",
    "memoryBandwidthTBs",
    "log10TtftMs",
    "log10TpotMs",
];

/// The analytic prediction of a disaggregated row, with what its correction needs.
#[derive(Debug, Clone)]
pub struct DisaggAnalytic {
    /// TTFT, ms: batched prefill on a prefill worker, the KV transfer and the first decode steps.
    pub ttft_ms: f64,
    /// TPOT, ms: a decode step at the decode worker's batch.
    pub tpot_ms: f64,
    /// Values of [`DISAGG_FEATURES`].
    pub features: Vec<f64>,
    /// The measured configuration this row belongs to (anchors key): model, device, engine,
    /// precisions, and both pools' layouts and worker counts.
    pub deployment: String,
    /// Where in that configuration: log2 of input tokens, output tokens and users.
    pub at: [f64; 3],
}

/// [`predict_disagg`] without the correction.
pub fn disagg_analytic(
    row: &ScenarioRow,
    models: &mut ModelResolver,
    hw: &HardwareCatalog,
    params: &FittedParams,
) -> Result<DisaggAnalytic> {
    let wl = row.workload()?;
    let pcfg = row.config("prefill_")?;
    let dcfg = row.config("decode_")?;
    let m = models.get(&pcfg.model)?;
    let acc: &Accelerator = hw.get(&pcfg.accelerator)?;
    let pre = Resolved::new(&pcfg, &m, acc, params)?;
    let dec = Resolved::new(&dcfg, &m, acc, params)?;
    let isl = wl.input_tokens as f64;
    let osl = wl.output_tokens as f64;
    // The disagg rows give the per-worker batch sizes (the `_c<N>_` user count in the id is
    // spread over worker counts the data does not always give, so it is not used here).
    let prefill_batch = row.count("prefill_batch_size", 1)? as f64;
    let decode_batch = row.count("decode_batch_size", 1)? as f64;
    let (t_dec, _) = dec.decode_step(decode_batch * dcfg.attention_dp as f64, isl + osl / 2.0);
    let t_pf = pre.prefill(isl, true)
        + pre.p.burst_factor * (prefill_batch - 1.0).max(0.0) / 2.0 * pre.prefill(isl, false);
    let kv_transfer = pre.kv_bytes_per_seq(isl) / acc.inter_node_bandwidth;
    let ttft_ms = (t_pf + kv_transfer + dec.ttft_steps(wl.input_tokens) * t_dec) * 1e3;
    let tpot_ms = t_dec * 1e3;
    let log2 = |x: u32| (x.max(1) as f64).log2();
    let prefill_workers = row.count("prefill_num_workers", 1)?;
    let decode_workers = row.count("decode_num_workers", 1)?;
    let features = vec![
        (pcfg.engine == Engine::Vllm) as u8 as f64,
        (pcfg.engine == Engine::Sglang) as u8 as f64,
        (pcfg.engine == Engine::Trtllm) as u8 as f64,
        m.is_moe() as u8 as f64,
        matches!(m.attention, crate::model::AttentionKind::Mla { .. }) as u8 as f64,
        log2(wl.concurrency),
        log2(wl.input_tokens),
        log2(wl.output_tokens),
        log2(pcfg.tp),
        log2(pcfg.attention_dp),
        log2(prefill_workers),
        log2(dcfg.tp),
        log2(dcfg.attention_dp),
        log2(dcfg.moe_ep.unwrap_or(1)),
        log2(decode_workers),
        dec.expert_weight_bytes(),
        acc.memory_bandwidth / 1e12,
        ttft_ms.max(1e-3).log10(),
        tpot_ms.max(1e-3).log10(),
    ];
    let pool = |c: &ServingConfig, workers: u32| {
        format!(
            "tp{} pp{} dp{} moetp{} ep{} x{workers}",
            c.tp,
            c.pp,
            c.attention_dp,
            c.moe_tp.unwrap_or(0),
            c.moe_ep.unwrap_or(0)
        )
    };
    let deployment = format!(
        "{} | prefill {} | decode {}",
        dec.deployment,
        pool(&pcfg, prefill_workers),
        pool(&dcfg, decode_workers)
    );
    Ok(DisaggAnalytic {
        ttft_ms,
        tpot_ms,
        features,
        deployment,
        at: crate::params::Anchors::at(wl.input_tokens, wl.output_tokens, wl.concurrency),
    })
}

/// Predict every row of `input` and write `id,ttft_ms,tpot_ms,e2e_ms,tokens_per_s,
/// max_concurrency,basis,expected_ttft_error_pct,expected_tpot_error_pct,reason`; `basis` is
/// `measured deployment` where the calibration data measured the row's deployment and the
/// prediction leans on it, `model` where the model alone predicts it, and the expected errors
/// are the calibration's error on rows it was not fitted on, for that basis (agg or disagg
/// alike).
/// Returns (predicted, failed) counts.
pub fn predict_csv<R: Read, W: Write>(
    input: R,
    output: W,
    models_dir: Option<&Path>,
    params: &FittedParams,
) -> Result<(usize, usize)> {
    let rows = read_rows(input)?;
    let hw = HardwareCatalog::builtin();
    let mut models = ModelResolver::new(models_dir);
    let mut w = csv::Writer::from_writer(output);
    let io = |e: csv::Error| Error::Io(format!("writing predictions: {e}"));
    w.write_record([
        "id",
        "ttft_ms",
        "tpot_ms",
        "e2e_ms",
        "tokens_per_s",
        "max_concurrency",
        "basis",
        "expected_ttft_error_pct",
        "expected_tpot_error_pct",
        "reason",
    ])
    .map_err(io)?;
    let (mut ok, mut bad) = (0, 0);
    let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
    let pct = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_default();
    for row in &rows {
        let pred = predict_row(row, &mut models, hw, params).unwrap_or_else(|e| RowPrediction {
            id: row.id().to_string(),
            ttft_ms: None,
            tpot_ms: None,
            e2e_ms: None,
            tokens_per_s: None,
            max_concurrency: None,
            measured_deployment: None,
            expected_error: None,
            reason: e.to_string(),
        });
        if pred.reason.is_empty() {
            ok += 1
        } else {
            bad += 1
        }
        w.write_record([
            pred.id.clone(),
            f(pred.ttft_ms),
            f(pred.tpot_ms),
            f(pred.e2e_ms),
            f(pred.tokens_per_s),
            pred.max_concurrency
                .map(|c| c.to_string())
                .unwrap_or_default(),
            match pred.measured_deployment {
                Some(true) => "measured deployment".to_string(),
                Some(false) => "model".to_string(),
                None => String::new(),
            },
            pct(pred.expected_error.map(|e| e.ttft_percent)),
            pct(pred.expected_error.map(|e| e.tpot_percent)),
            pred.reason.replace(['\n', '\r'], " "),
        ])
        .map_err(io)?;
    }
    w.flush().map_err(|e| Error::Io(e.to_string()))?;
    Ok((ok, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, tp: &str, dp: &str, moe_tp: &str, moe_ep: &str, batch: &str) -> ScenarioRow {
        let fields = [
            ("id", id),
            ("backend", "trtllm"),
            ("model_path", "deepseek-ai/DeepSeek-R1"),
            ("system", "b200_sxm"),
            ("mode", "agg"),
            ("isl", "1024"),
            ("osl", "1024"),
            ("batch_size", batch),
            ("tp_size", tp),
            ("attention_dp_size", dp),
            ("moe_tp_size", moe_tp),
            ("moe_ep_size", moe_ep),
        ];
        ScenarioRow {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn squared_tp_ep_rows_are_read_as_the_deployment_their_id_names() {
        // `tp4_ep4` recorded as attention DP 16 with MoE TP 4 × EP 4 and 8 users per rank:
        // 4 devices, attention DP 4, experts over EP 4, 128 users (32 per rank).
        let r = row("x_c128_tp4_ep4_958", "1", "16", "4", "4", "8");
        let cfg = r.config("").unwrap();
        assert_eq!(
            (cfg.tp, cfg.attention_dp, cfg.moe_tp, cfg.moe_ep),
            (1, 4, Some(1), Some(4))
        );
        assert_eq!(cfg.devices(), 4);
        assert_eq!(cfg.max_batch, Some(32));
        assert_eq!(r.workload().unwrap().concurrency, 128);
        // `tp8_ep8` recorded as TP 64: TP 8 on 8 devices, EP 8; batch_size is the total.
        let r = row("x_c16_tp8_ep8_956", "64", "1", "8", "8", "16");
        let cfg = r.config("").unwrap();
        assert_eq!((cfg.tp, cfg.moe_tp, cfg.moe_ep), (8, Some(1), Some(8)));
        assert_eq!(r.workload().unwrap().concurrency, 16);
        // `tp4_ep4` recorded as attention TP 4 × DP 4, EP 16 and 1 user per rank (the twin
        // of a row recording TP 4, DP 1, EP 4 and 4 users): 4 devices, TP 4, EP 4, 4 users.
        let r = row("x_c4_tp4_ep4_1301", "4", "4", "1", "16", "1");
        let cfg = r.config("").unwrap();
        assert_eq!(
            (cfg.tp, cfg.attention_dp, cfg.moe_tp, cfg.moe_ep),
            (4, 1, Some(1), Some(4))
        );
        assert_eq!(cfg.devices(), 4);
        assert_eq!(cfg.max_batch, Some(4));
        assert_eq!(r.workload().unwrap().concurrency, 4);
        // `tp8_ep8` with attention DP 64, but the id's `c32` is the batch itself: 32 users.
        let r = row("x_c32_tp8_ep8_1537", "1", "64", "8", "8", "32");
        let cfg = r.config("").unwrap();
        assert_eq!((cfg.tp, cfg.attention_dp, cfg.moe_ep), (1, 8, Some(8)));
        assert_eq!(r.workload().unwrap().concurrency, 32);
        // An id that names another TP is taken as recorded: TP 4 with MoE TP 2 × EP 2.
        let r = row("x_c16_tp4_epnone_16", "4", "", "2", "2", "16");
        let cfg = r.config("").unwrap();
        assert_eq!((cfg.tp, cfg.moe_tp, cfg.moe_ep), (4, Some(2), Some(2)));
        assert_eq!(cfg.devices(), 4);
    }

    #[test]
    fn wide_rows_and_disagg_pools_on_nvl72_run_attention_data_parallel() {
        let mut r = row("x_c2048_wide", "48", "", "", "48", "2048");
        r.fields.insert("system".into(), "gb200".into());
        let cfg = r.config("").unwrap();
        assert_eq!((cfg.tp, cfg.attention_dp, cfg.moe_ep), (1, 48, Some(48)));
        for (k, v) in [("decode_tp_size", "48"), ("decode_moe_ep_size", "48")] {
            r.fields.insert(k.into(), v.into());
        }
        let decode = r.config("decode_").unwrap();
        assert_eq!((decode.tp, decode.attention_dp), (1, 48));
        // Not on an NVL72 rack: as recorded.
        r.fields.insert("system".into(), "b200_sxm".into());
        r.fields.insert("decode_tp_size".into(), "16".into());
        assert_eq!(r.config("decode_").unwrap().tp, 16);
    }
}
