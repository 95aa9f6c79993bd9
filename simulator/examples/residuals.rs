//! Dump per-row predictions of a parameter file (analytic and corrected) as CSV, for
//! residual analysis: `cargo run --release -p bud-simulator --example residuals -- DATA PARAMS`.

use bud_simulator::calibrate::{load_samples, predict_sample};
use bud_simulator::params::FittedParams;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let params = args.get(2).map(String::as_str);
    let params: FittedParams = match params {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p).expect("read params"))
            .expect("parse params"),
        None => FittedParams::builtin().clone(),
    };
    let mut analytic = params.clone();
    analytic.correction = None;
    let samples = load_samples(Path::new(data)).expect("load samples");
    println!(
        "id,train,disagg,engine,gpu,model,isl,osl,bs,tp,dp,ep,prec,ttft,tpot,ttft_a,tpot_a,ttft_c,tpot_c"
    );
    for s in &samples {
        let a = predict_sample(s, &analytic);
        let c = predict_sample(s, &params);
        let f = |x: Option<(f64, f64)>| {
            x.map(|(t, p)| format!("{t:.3},{p:.4}"))
                .unwrap_or_else(|| ",".into())
        };
        println!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.4},{},{}",
            s.id,
            s.train as u8,
            s.disagg as u8,
            s.key,
            s.cfg.accelerator,
            s.cfg.model,
            s.workload.input_tokens,
            s.workload.output_tokens,
            s.workload.concurrency,
            s.cfg.tp,
            s.cfg.attention_dp,
            s.cfg.moe_ep.unwrap_or(1),
            s.cfg
                .precision
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            s.ttft_ms,
            s.tpot_ms,
            f(a),
            f(c)
        );
    }
}
