//! Dump per-row predictions of a parameter file (analytic and corrected) as CSV, with the
//! analytic model's parts (prefill alone and as added batch work, decode step, running
//! requests, KV capacity, queue wait; ms) and the correction's features, for residual analysis:
//! `cargo run --release -p bud-simulator --example residuals -- DATA [PARAMS]` (default: the
//! training-split parameters in DATA, so held-back rows are rows the fit did not see).

use bud_simulator::calibrate::{SPLIT_PARAMS_FILE, load_samples, predict_sample};
use bud_simulator::hardware::HardwareCatalog;
use bud_simulator::params::FittedParams;
use bud_simulator::perf::Resolved;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let path = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(data).join(SPLIT_PARAMS_FILE));
    let params: FittedParams =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read params"))
            .expect("parse params");
    let mut analytic = params.clone();
    analytic.correction = None;
    let samples = load_samples(Path::new(data)).expect("load samples");
    println!(
        "id,train,disagg,engine,gpu,model,isl,osl,bs,tp,dp,ep,prec,ttft,tpot,ttft_a,tpot_a,ttft_c,tpot_c,pf_alone,pf_work,dec,running,cap,queue,{}",
        Resolved::FEATURES.join(",")
    );
    let hw = HardwareCatalog::builtin();
    // The correction's features of the analytic model (empty for rows it cannot resolve).
    let features = |s: &bud_simulator::calibrate::Sample| -> Vec<String> {
        let isl = s.workload.input_tokens as f64;
        let f = hw
            .get(&s.cfg.accelerator)
            .ok()
            .and_then(|acc| Resolved::new(&s.cfg, &s.model, acc, &analytic).ok())
            .and_then(|r| {
                let (p, f) = r.predict_analytic(&s.workload).ok()?;
                let parts = [
                    p.prefill_ms,
                    r.prefill(isl, false) * 1e3,
                    p.decode_step_ms,
                    p.running as f64,
                    p.max_concurrency as f64,
                    p.queue_wait_ms,
                ];
                Some(parts.into_iter().chain(f).collect::<Vec<f64>>())
            })
            .unwrap_or_else(|| vec![f64::NAN; Resolved::FEATURES.len() + 6]);
        f.iter().map(|v| format!("{v:.5}")).collect()
    };
    for s in &samples {
        let a = predict_sample(s, &analytic);
        let c = predict_sample(s, &params);
        let f = |x: Option<(f64, f64)>| {
            x.map(|(t, p)| format!("{t:.3},{p:.4}"))
                .unwrap_or_else(|| ",".into())
        };
        println!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.4},{},{},{}",
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
            f(c),
            features(s).join(",")
        );
    }
}
