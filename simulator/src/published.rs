//! A check against published figures that no fit sees: TensorRT-LLM 1.0's maximum-load
//! throughput tables (`trtllm-bench`, `docs/source/performance/perf-overview.md`), copied into
//! `public_anchors.csv` as the rows whose metric is `total_out_tok_s`. They cover
//! Llama-3.1-8B, Llama-3.3-70B and Llama-3.1-405B in FP8 on H100 and H200. The 405B model and
//! these input/output lengths are measured nowhere in the calibration data.
//!
//! `trtllm-bench` submits every request at once, so the engine runs as many as its KV cache and
//! batch limit hold. Each point is therefore predicted at a load beyond what any replica holds;
//! there the predicted throughput no longer depends on the load.

use crate::batch::read_rows;
use crate::error::{Error, Result};
use crate::hardware::HardwareCatalog;
use crate::model::model;
use crate::params::FittedParams;
use crate::perf::{ServingConfig, Workload, predict_with};
use crate::precision::{Engine, Precision};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The published figures' file in the data directory.
pub const PUBLIC_ANCHORS_FILE: &str = "public_anchors.csv";

/// The rows checked: total output tokens/s of a replica at maximum load.
const METRIC: &str = "total_out_tok_s";

/// The published checkpoints and the catalog models of the same architecture. Llama-3.3-70B is
/// Llama-3.1-70B's architecture with other weights.
const MODELS: [(&str, &str); 3] = [
    (
        "Llama-3.1-8B-Instruct-FP8",
        "nvidia/Llama-3.1-8B-Instruct-FP8",
    ),
    ("Llama-3.3-70B-Instruct-FP8", "meta-llama/Llama-3.1-70B"),
    (
        "Llama-3.1-405B-Instruct-FP8",
        "meta-llama/Meta-Llama-3.1-405B",
    ),
];

/// More users than any replica in the tables can run at once.
const MAX_LOAD: u32 = 1 << 16;

/// One published maximum-load throughput and its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedThroughput {
    /// Catalog model predicted.
    pub model: String,
    /// Accelerator id.
    pub accelerator: String,
    /// Tensor parallel size.
    pub tp: u32,
    /// Input tokens per request.
    pub input_tokens: u32,
    /// Output tokens per request.
    pub output_tokens: u32,
    /// Published output tokens/s of the replica.
    pub published_tokens_per_s: f64,
    /// Predicted output tokens/s of the replica at maximum load.
    pub predicted_tokens_per_s: f64,
    /// Whether the prediction leans on a calibration measurement of this very deployment
    /// (none of the published points is one).
    pub measured_deployment: bool,
}

impl PublishedThroughput {
    /// Absolute percentage error of the prediction.
    pub fn error_percent(&self) -> f64 {
        (self.predicted_tokens_per_s - self.published_tokens_per_s).abs()
            / self.published_tokens_per_s
            * 100.0
    }
}

/// Predict every published maximum-load throughput in `data_dir`'s [`PUBLIC_ANCHORS_FILE`]
/// with `params`. Reads that file; a row that cannot be predicted is an error naming it.
pub fn published_throughput(
    data_dir: &Path,
    params: &FittedParams,
) -> Result<Vec<PublishedThroughput>> {
    let path = data_dir.join(PUBLIC_ANCHORS_FILE);
    let file =
        std::fs::File::open(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let hardware = HardwareCatalog::builtin();
    let mut points = Vec::new();
    for (i, row) in read_rows(file)?.iter().enumerate() {
        if row.get("metric") != METRIC {
            continue;
        }
        let line = i + 2;
        let invalid = |what: &str| {
            Error::invalid(
                PUBLIC_ANCHORS_FILE,
                format!("row {line}: {what} ({:?})", row.fields),
            )
        };
        let published = row.get("model");
        let (_, id) = MODELS
            .iter()
            .find(|(name, _)| *name == published)
            .ok_or_else(|| invalid("a model this check does not map to the catalog"))?;
        let number = |column: &str| {
            row.get(column)
                .parse::<f64>()
                .map_err(|_| invalid(&format!("{column} is not a number")))
        };
        let acc = hardware.get(row.get("gpu"))?;
        let mut cfg = ServingConfig::new(id, &acc.id, Engine::Trtllm);
        cfg.tp = number("tp")? as u32;
        cfg.pp = number("pp")? as u32;
        cfg.precision = Some(Precision::Fp8);
        let workload = Workload {
            input_tokens: number("isl")? as u32,
            output_tokens: number("osl")? as u32,
            concurrency: MAX_LOAD,
        };
        let prediction = predict_with(&cfg, model(id)?, acc, params, &workload)?;
        if !prediction.memory.fits {
            return Err(invalid(&prediction.memory.verdict));
        }
        points.push(PublishedThroughput {
            model: id.to_string(),
            accelerator: acc.id.clone(),
            tp: cfg.tp,
            input_tokens: workload.input_tokens,
            output_tokens: workload.output_tokens,
            published_tokens_per_s: number("value")?,
            predicted_tokens_per_s: prediction.tokens_per_s,
            measured_deployment: prediction.measured_deployment,
        });
    }
    Ok(points)
}

/// Mean absolute percentage error over `points`.
pub fn mean_error_percent<'a>(points: impl IntoIterator<Item = &'a PublishedThroughput>) -> f64 {
    let (sum, n) = points.into_iter().fold((0.0, 0usize), |(sum, n), p| {
        (sum + p.error_percent(), n + 1)
    });
    sum / n.max(1) as f64
}

/// A Markdown table of the check under each named parameter set (all over the same points),
/// overall, by model and by accelerator.
pub fn to_markdown(runs: &[(&str, &[PublishedThroughput])]) -> String {
    let mut s = String::new();
    let _ = write!(s, "| points | n |");
    for (name, _) in runs {
        let _ = write!(s, " {name} MAPE % |");
    }
    let _ = writeln!(s, "\n|---|---:|{}", "---:|".repeat(runs.len()));
    let Some((_, first)) = runs.first() else {
        return s;
    };
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    groups.insert("all".into(), (0..first.len()).collect());
    for (i, p) in first.iter().enumerate() {
        groups.entry(p.model.clone()).or_default().push(i);
        groups.entry(p.accelerator.clone()).or_default().push(i);
    }
    for (group, rows) in groups {
        let _ = write!(s, "| {group} | {} |", rows.len());
        for (_, points) in runs {
            let _ = write!(
                s,
                " {:.1} |",
                mean_error_percent(rows.iter().map(|&i| &points[i]))
            );
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "source,engine,model,gpu,precision,tp,pp,batch_or_conc,isl,osl,metric,value,notes";

    fn data_dir(name: &str, rows: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bud-published-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::iter::once(HEADER)
            .chain(rows.iter().copied())
            .collect::<Vec<_>>();
        std::fs::write(dir.join(PUBLIC_ANCHORS_FILE), text.join("\n") + "\n").unwrap();
        dir
    }

    #[test]
    fn checks_only_maximum_load_throughput_rows_and_names_rows_it_cannot_map() {
        let dir = data_dir(
            "ok",
            &[
                "docs,\"TensorRT-LLM v1.0, trtllm-bench\",Llama-3.3-70B-Instruct-FP8,H100-SXM,fp8,2,1,max,1000,1000,total_out_tok_s,4205,",
                "docs,TensorRT-LLM v0.5,LLaMA-70B,H100-SXM-80GB,fp8,4,1,1,2048,1,TTFT_ms,109,batch 1",
            ],
        );
        let points = published_throughput(&dir, FittedParams::builtin()).unwrap();
        assert_eq!(points.len(), 1, "{points:?}");
        let p = &points[0];
        assert_eq!(
            (p.model.as_str(), p.accelerator.as_str(), p.tp),
            ("meta-llama/Llama-3.1-70B", "h100_sxm", 2)
        );
        assert_eq!(p.published_tokens_per_s, 4205.0);
        assert!(p.predicted_tokens_per_s > 0.0 && !p.measured_deployment);
        let expected = (p.predicted_tokens_per_s - 4205.0).abs() / 4205.0 * 100.0;
        assert!((p.error_percent() - expected).abs() < 1e-9);
        let table = to_markdown(&[("a", &points), ("b", &points)]);
        assert!(
            table.contains(&format!("| all | 1 | {expected:.1} | {expected:.1} |")),
            "{table}"
        );
        assert!(table.contains("| h100_sxm | 1 |"), "{table}");

        let dir = data_dir(
            "unmapped",
            &[
                "docs,TensorRT-LLM v1.0,Mistral-Large,H100-SXM,fp8,8,1,max,128,128,total_out_tok_s,1000,",
            ],
        );
        let err = published_throughput(&dir, FittedParams::builtin())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 2") && err.contains("does not map"),
            "{err}"
        );
    }
}
