//! Leave-one-model-out cross-validation on the training rows only (held-back rows are never
//! used): for each model seen by the fit, refit the analytic parameters and the learned
//! correction without that model's rows and score its training rows.
//! `cargo run --release -p bud-simulator --example cv -- [DATA] [ROUNDS]`

use bud_simulator::calibrate::{evaluate, fit, fit_correction, load_samples};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(30);
    let all = load_samples(Path::new(data)).expect("load samples");
    // Only the training split takes part; held-back rows are dropped entirely.
    let train: Vec<_> = all.into_iter().filter(|s| s.train && !s.disagg).collect();
    let mut models: Vec<String> = train.iter().map(|s| s.cfg.model.clone()).collect();
    models.sort();
    models.dedup();
    let (mut n, mut a_tt, mut a_tp, mut c_tt, mut c_tp) = (0usize, 0.0, 0.0, 0.0, 0.0);
    println!(
        "| left-out model | rows | analytic TTFT % | analytic TPOT % | corrected TTFT % | corrected TPOT % |\n|---|---:|---:|---:|---:|---:|"
    );
    for m in &models {
        let mut fold = train.clone();
        for s in &mut fold {
            // `train = false` marks the rows the fold scores (and the fit must not see).
            s.train = &s.cfg.model != m;
        }
        let analytic = fit(&fold, "cv", rounds);
        let mut corrected = analytic.clone();
        corrected.correction = Some(fit_correction(&fold, &analytic));
        let ra = evaluate(&fold, &analytic).overall;
        let rc = evaluate(&fold, &corrected).overall;
        println!(
            "| {m} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            ra.n, ra.ttft_mape, ra.tpot_mape, rc.ttft_mape, rc.tpot_mape
        );
        n += ra.n;
        a_tt += ra.ttft_mape * ra.n as f64;
        a_tp += ra.tpot_mape * ra.n as f64;
        c_tt += rc.ttft_mape * rc.n as f64;
        c_tp += rc.tpot_mape * rc.n as f64;
    }
    let k = n.max(1) as f64;
    println!(
        "| **all (row-weighted)** | {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
        a_tt / k,
        a_tp / k,
        c_tt / k,
        c_tp / k
    );
}
