//! Cross-validation on the training rows only (held-back rows are never used), with the
//! analytic model's figures beside the corrected ones. The tool for deciding whether a modelling
//! change generalises. Three tables:
//! - leave-one-model-out, as `bud-sim calibrate` records it: for each model seen by the fit,
//!   refit without that model's rows and score them (what a model never measured can expect);
//! - by deployment: the deployments dealt into five folds, each refitted without its
//!   deployments' rows (what a new layout, device or precision of a measured model can expect);
//! - by series: a deployment's rows at one input and output length dealt into five folds the
//!   same way (what new lengths of a measured deployment can expect).
//!
//! Each table is followed by its rows by concurrency, with the median of measured ÷ predicted
//! TTFT and the share of rows measuring above the prediction (above 1 and 50 %, the
//! predictions come out low).
//!
//! `cargo run --release -p bud-simulator --example cv -- [DATA] [ROUNDS]`

use bud_simulator::calibrate::{
    ModelCrossValidation, SPLIT_PARAMS_FILE, cross_validate_deployments, cross_validate_models,
    cross_validate_series, load_samples,
};
use bud_simulator::params::FittedParams;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(30);
    let all = load_samples(Path::new(data)).expect("load samples");
    // The committed split fit's choice of correction halves and anchors, and neither.
    let corrected: FittedParams = serde_json::from_str(
        &std::fs::read_to_string(Path::new(data).join(SPLIT_PARAMS_FILE)).expect("read params"),
    )
    .expect("parse params");
    let analytic = FittedParams {
        correction: None,
        anchors: None,
        ..corrected.clone()
    };
    print_table(
        "left-out model",
        &cross_validate_models(&all, &analytic, rounds),
        &cross_validate_models(&all, &corrected, rounds),
    );
    println!();
    print_table(
        "model (its deployments left out in five folds)",
        &cross_validate_deployments(&all, &analytic, rounds, 5),
        &cross_validate_deployments(&all, &corrected, rounds, 5),
    );
    println!();
    print_table(
        "model (its series left out in five folds)",
        &cross_validate_series(&all, &analytic, rounds, 5),
        &cross_validate_series(&all, &corrected, rounds, 5),
    );
}

fn print_table(first: &str, analytic: &ModelCrossValidation, corrected: &ModelCrossValidation) {
    println!(
        "| {first} | rows | analytic TTFT % | analytic TPOT % | corrected TTFT % | corrected TPOT % |\n|---|---:|---:|---:|---:|---:|"
    );
    let rows = analytic
        .by_model
        .iter()
        .map(|(m, a)| (m.as_str(), a, &corrected.by_model[m]))
        .chain([(
            "**all (row-weighted)**",
            &analytic.overall,
            &corrected.overall,
        )]);
    for (m, a, c) in rows {
        println!(
            "| {m} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            a.n, a.ttft_mape, a.tpot_mape, c.ttft_mape, c.tpot_mape
        );
    }
    println!(
        "\n| users | rows | analytic median measured ÷ predicted TTFT | corrected median | corrected rows measuring above % | corrected TTFT % |\n|---|---:|---:|---:|---:|---:|"
    );
    for (a, c) in analytic.by_users.iter().zip(&corrected.by_users) {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.1} |",
            c.users,
            c.stats.n,
            a.ttft_median_ratio,
            c.ttft_median_ratio,
            c.ttft_share_above * 100.0,
            c.stats.ttft_mape
        );
    }
}
