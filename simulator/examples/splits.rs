//! How much the held-back figures depend on which rows the random 20 % share picked: refit
//! the whole calibration (analytic parameters, correction and anchors, each kept by the same
//! rule) on other draws of that share and score each draw's held-back agg rows. The whole
//! held-back models stay held back in every draw; draw 0 is the committed split.
//! `cargo run --release -p bud-simulator --example splits -- [DATA] [DRAWS] [random-only]`
//!
//! With `random-only` the whole held-back models are fitted on like any other (only the random
//! share is held back), and each draw's figures are also given separately for the rows of
//! those models and of the others: what seeing a model does for its own unseen rows, and
//! whether fitting on it costs the other models anything (the case for shipping parameters
//! refitted on every row).

use bud_simulator::calibrate::{
    HELD_BACK_MODELS, RANDOM_SHARE_SPLIT, WHOLE_MODEL_SPLIT, calibrate, hold_back_copies,
    is_held_back_in_draw, load_samples,
};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let draws: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(8);
    let random_only = args.get(3).is_some_and(|a| a == "random-only");
    let mut samples = load_samples(Path::new(data)).expect("load samples");
    if random_only {
        println!(
            "Only the random share held back; {HELD_BACK_MODELS:?} are fitted on.\n\n| draw | held-back agg rows | TTFT MAPE % | TPOT MAPE % | their rows: n, TTFT, TPOT % | other models' rows: n, TTFT, TPOT % |\n|---|---:|---:|---:|---|---|"
        );
    } else {
        println!("| draw | held-back agg rows | TTFT MAPE % | TPOT MAPE % |\n|---|---:|---:|---:|");
    }
    let (mut ttft, mut tpot) = (Vec::new(), Vec::new());
    for draw in 0..draws {
        for s in &mut samples {
            // A model name no whole-model rule matches leaves only the random share.
            let model = if random_only { "" } else { &s.cfg.model };
            s.train = !is_held_back_in_draw(&s.row, model, draw);
        }
        hold_back_copies(&mut samples);
        let (_, report, _) = calibrate(&samples, "splits", 30, true);
        let o = report.overall;
        print!(
            "| {draw} | {} | {:.1} | {:.1} |",
            o.n, o.ttft_mape, o.tpot_mape
        );
        if random_only {
            for label in [WHOLE_MODEL_SPLIT, RANDOM_SHARE_SPLIT] {
                let group = &report.by["split"][label];
                print!(
                    " {}, {:.1}, {:.1} |",
                    group.n, group.ttft_mape, group.tpot_mape
                );
            }
        }
        println!();
        ttft.push(o.ttft_mape);
        tpot.push(o.tpot_mape);
    }
    let mean_sd = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0);
        (m, var.sqrt())
    };
    let (mt, st) = mean_sd(&ttft);
    let (mp, sp) = mean_sd(&tpot);
    println!("| **mean ± sd** | | {mt:.1} ± {st:.1} | {mp:.1} ± {sp:.1} |");
}
