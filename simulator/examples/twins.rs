//! What a model the data never measured gains from the measurements of a model with the same
//! architecture ([`bud_simulator::params::Anchors::measured`]), scored on the training rows
//! only: each training model that shares its architecture with another training model is left
//! out, the fit is redone without its rows as the cross-validations do
//! ([`bud_simulator::calibrate::refit_as`]), and its rows at deployments a twin measured are predicted with the
//! twin's anchors and without them (the model alone). The data records some runs under both
//! names; those copies leave the fold with the model
//! ([`bud_simulator::calibrate::hold_back_copies`]), so the twin's anchors carry only its
//! own runs.
//! `cargo run --release -p bud-simulator --example twins -- [DATA] [ROUNDS]`

use bud_simulator::calibrate::{
    SPLIT_PARAMS_FILE, Sample, hold_back_copies, load_samples, predict_agg_sample, refit_as,
};
use bud_simulator::params::FittedParams;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(30);
    let samples = load_samples(Path::new(data)).expect("load samples");
    let split: FittedParams = serde_json::from_str(
        &std::fs::read_to_string(Path::new(data).join(SPLIT_PARAMS_FILE)).expect("read params"),
    )
    .expect("parse params");
    let training = || samples.iter().filter(|s| s.train && !s.disagg);
    let mut by_architecture: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for s in training() {
        by_architecture
            .entry(s.model.architecture())
            .or_default()
            .insert(&s.cfg.model);
    }
    println!(
        "| left-out model | rows at a twin's deployments | model alone TTFT / TPOT % | with the twin's anchors TTFT / TPOT % |\n|---|---:|---:|---:|"
    );
    let mut all = Vec::new();
    for models in by_architecture.values().filter(|m| m.len() > 1) {
        for &left_out in models {
            let mut fold: Vec<Sample> = samples
                .iter()
                .map(|s| Sample {
                    train: s.train && s.cfg.model != left_out,
                    ..s.clone()
                })
                .collect();
            hold_back_copies(&mut fold);
            let with_twins = refit_as(&fold, &split, "twins", rounds);
            let mut alone = with_twins.clone();
            alone.anchors = None;
            let mut pairs = Vec::new();
            for s in training().filter(|s| s.cfg.model == left_out) {
                let (Some(twin), Some(model_alone)) = (
                    predict_agg_sample(s, &with_twins),
                    predict_agg_sample(s, &alone),
                ) else {
                    continue;
                };
                if twin.measured_as.is_none() {
                    continue;
                }
                pairs.push([
                    ape(model_alone.ttft_ms, s.ttft_ms),
                    ape(model_alone.tpot_ms, s.tpot_ms),
                    ape(twin.ttft_ms, s.ttft_ms),
                    ape(twin.tpot_ms, s.tpot_ms),
                ]);
            }
            let [a, b, c, d] = means(&pairs);
            let rows = pairs.len();
            println!("| {left_out} | {rows} | {a:.1} / {b:.1} | {c:.1} / {d:.1} |");
            all.extend(pairs);
        }
    }
    let [a, b, c, d] = means(&all);
    println!(
        "| **all (row-weighted)** | {} | {a:.1} / {b:.1} | {c:.1} / {d:.1} |",
        all.len()
    );
}

/// Absolute percentage error.
fn ape(predicted: f64, measured: f64) -> f64 {
    100.0 * (predicted - measured).abs() / measured
}

fn means(rows: &[[f64; 4]]) -> [f64; 4] {
    let n = rows.len().max(1) as f64;
    [0, 1, 2, 3].map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / n)
}
