//! How much the held-back figures depend on which rows the random 20 % share picked: refit
//! the whole calibration (analytic parameters, correction and anchors, each kept by the same
//! rule) on other draws of that share and score each draw's held-back agg rows. The whole
//! held-back models stay held back in every draw; draw 0 is the committed split.
//! `cargo run --release -p bud-simulator --example splits -- [DATA] [DRAWS]`

use bud_simulator::calibrate::{calibrate, is_held_back_in_draw, load_samples};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let draws: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(8);
    let mut samples = load_samples(Path::new(data)).expect("load samples");
    println!("| draw | held-back agg rows | TTFT MAPE % | TPOT MAPE % |\n|---|---:|---:|---:|");
    let (mut ttft, mut tpot) = (Vec::new(), Vec::new());
    for draw in 0..draws {
        for s in &mut samples {
            s.train = !is_held_back_in_draw(&s.row, &s.cfg.model, draw);
        }
        let (_, report, _) = calibrate(&samples, "splits", 30, true);
        let o = report.overall;
        println!(
            "| {draw} | {} | {:.1} | {:.1} |",
            o.n, o.ttft_mape, o.tpot_mape
        );
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
