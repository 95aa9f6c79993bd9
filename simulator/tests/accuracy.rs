//! The accuracy report as a test: the committed training-split parameters
//! (`data/fitted_params_split.json`), evaluated only on rows that fit did not see (whole
//! held-back models plus a hashed share of the rest).
//!
//! The targets are TPOT MAPE ≤ 12% and TTFT MAPE ≤ 20% on held-back agg rows. They are
//! asserted on the random share: other points of measured deployments, like most of the rows
//! the data's owner held back from `calibration.csv` (`--example owners_held_back`).
//! The whole held-back models do not reach them (see ACCURACY.md), so the thresholds on all
//! held-back rows guard against regressions from the committed figures instead.

use bud_simulator::batch::ScenarioRow;
use bud_simulator::calibrate::{
    HELD_BACK_PERCENT, RANDOM_SHARE_SPLIT, SPLIT_PARAMS_FILE, Sample, evaluate, is_held_back,
    load_samples,
};
use bud_simulator::params::FittedParams;
use bud_simulator::published::{mean_error_percent, published_throughput};
use std::collections::BTreeMap;
use std::path::Path;

/// The targets, on the random share of held-back agg rows.
const TARGET_TPOT_MAPE_MAX: f64 = 12.0;
const TARGET_TTFT_MAPE_MAX: f64 = 20.0;
/// All held-back agg rows, the whole held-back models included.
const TPOT_MAPE_MAX: f64 = 13.5;
const TTFT_MAPE_MAX: f64 = 28.0;
const CPU_TPOT_MAPE_MAX: f64 = 12.0;
/// Held-back disaggregated rows (analytic alone: TTFT 74.4 %, TPOT 46.7 %; committed 36.9 %,
/// 25.9 %).
const DISAGG_TTFT_MAPE_MAX: f64 = 45.0;
const DISAGG_TPOT_MAPE_MAX: f64 = 31.0;

fn split_params(data: &Path) -> FittedParams {
    let text = std::fs::read_to_string(data.join(SPLIT_PARAMS_FILE)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn held_back_accuracy() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let samples = load_samples(&data).unwrap();
    assert!(samples.len() > 3000);
    let report = evaluate(&samples, &split_params(&data));
    eprintln!("{}", report.to_markdown());
    assert!(report.overall.n > 500);
    assert!(
        report.overall.tpot_mape <= TPOT_MAPE_MAX,
        "TPOT MAPE {:.1}%",
        report.overall.tpot_mape
    );
    assert!(
        report.overall.ttft_mape <= TTFT_MAPE_MAX,
        "TTFT MAPE {:.1}%",
        report.overall.ttft_mape
    );
    let random_share = &report.by["split"][RANDOM_SHARE_SPLIT];
    assert!(random_share.n > 300);
    assert!(
        random_share.ttft_mape <= TARGET_TTFT_MAPE_MAX
            && random_share.tpot_mape <= TARGET_TPOT_MAPE_MAX,
        "random share: TTFT {:.1}%, TPOT {:.1}%",
        random_share.ttft_mape,
        random_share.tpot_mape
    );
    assert!(report.disagg.n > 200);
    assert!(
        report.disagg.ttft_mape <= DISAGG_TTFT_MAPE_MAX
            && report.disagg.tpot_mape <= DISAGG_TPOT_MAPE_MAX,
        "disagg TTFT {:.1}%, TPOT {:.1}%",
        report.disagg.ttft_mape,
        report.disagg.tpot_mape
    );
    let cpu = &report.by["device"]["cpu"];
    assert!(
        cpu.tpot_mape <= CPU_TPOT_MAPE_MAX,
        "CPU TPOT MAPE {:.1}%",
        cpu.tpot_mape
    );
}

#[test]
fn split_is_deterministic_and_holds_back_whole_models() {
    let row = |id: &str, batch_size: u32| ScenarioRow {
        fields: BTreeMap::from([
            ("id".to_string(), id.to_string()),
            ("batch_size".to_string(), batch_size.to_string()),
        ]),
    };
    assert!(is_held_back(
        &row("anything", 1),
        "Qwen/Qwen3-235B-A22B-FP8"
    ));
    // The same measurement under two ids falls on one side; the share is near 20 %.
    let mut held = 0;
    for c in 0..1000 {
        let first = is_held_back(&row("a", c), "deepseek-ai/DeepSeek-R1");
        assert_eq!(first, is_held_back(&row("b", c), "deepseek-ai/DeepSeek-R1"));
        held += first as u32;
    }
    assert!((150..250).contains(&held), "{held} of 1000 held back");
    assert!(RANDOM_SHARE_SPLIT.contains(&format!("{HELD_BACK_PERCENT}%")));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let samples = load_samples(&data).unwrap();
    let held = samples.iter().filter(|s| !s.train).count() as f64 / samples.len() as f64;
    assert!((0.2..0.45).contains(&held), "held-back share {held}");
    // The data file some runs twice with other metadata (DeepSeek-R1's again as DeepSeek-V3):
    // no held-back measurement may reach the fit under another name.
    let same = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-9;
    let trained: Vec<&Sample> = samples.iter().filter(|s| s.train).collect();
    let copies = samples
        .iter()
        .filter(|h| !h.train)
        .filter(|h| {
            trained
                .iter()
                .any(|t| same(t.ttft_ms, h.ttft_ms) && same(t.tpot_ms, h.tpot_ms))
        })
        .count();
    assert_eq!(copies, 0, "held-back measurements among the training rows");
    let named_twice = samples
        .iter()
        .filter(|s| {
            !s.train && s.cfg.model == "deepseek-ai/DeepSeek-V3" && s.id.starts_with("dsr1_")
        })
        .count();
    assert!(named_twice > 0, "the case the check is for");
}

/// The shipped parameters are the split fit's choices refitted on every row: they know the
/// held-back rows (so scoring them there would be training error), and the split fit does not.
#[test]
fn shipped_parameters_saw_every_row_and_the_scored_ones_did_not() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let split = split_params(&data);
    let shipped = FittedParams::builtin();
    assert!(!split.fitted_on_every_row);
    assert!(shipped.fitted_on_every_row);
    assert_eq!(split.anchors.is_some(), shipped.anchors.is_some());
    let kept = |p: &FittedParams| {
        p.correction
            .as_ref()
            .map(|c| (c.tpot.is_some(), c.ttft.is_some()))
    };
    assert_eq!(kept(&split), kept(shipped));
    let kept_disagg = |p: &FittedParams| {
        p.disagg.as_ref().map(|d| {
            (
                d.correction.tpot.is_some(),
                d.correction.ttft.is_some(),
                d.anchors.is_some(),
            )
        })
    };
    assert_eq!(kept_disagg(&split), kept_disagg(shipped));
    let samples = load_samples(&data).unwrap();
    let held_back_tpot = |p: &FittedParams| evaluate(&samples, p).overall.tpot_mape;
    assert!(held_back_tpot(shipped) < held_back_tpot(&split));
    // Both carry the split fit's held-back error, since the shipped set's cannot be scored.
    assert!(split.held_back_error.is_some());
    assert_eq!(split.held_back_error, shipped.held_back_error);
}

/// The expected error that predictions carry is the committed split fit's held-back error,
/// by basis: the two bases partition the held-back rows, predictions of the model alone pool
/// theirs with the recorded leave-one-model-out cross-validation, and measured deployments are
/// predicted markedly better than deployments the model alone predicts.
#[test]
fn expected_error_is_the_held_back_error_by_basis() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let split = split_params(&data);
    let samples = load_samples(&data).unwrap();
    let report = evaluate(&samples, &split);
    let committed = split
        .held_back_error
        .expect("calibrated parameters carry it");
    let fresh = report.held_back_error();
    assert_eq!(
        fresh.agg.measured_deployment,
        committed.agg.measured_deployment
    );
    assert_eq!(fresh.disagg, committed.disagg);
    let (measured, model) = (
        committed.agg.measured_deployment.unwrap(),
        committed.agg.model.unwrap(),
    );
    let held_back_model = fresh.agg.model.unwrap();
    assert_eq!(measured.rows + held_back_model.rows, report.overall.n);
    // Re-running the cross-validation means refitting once per model (about 40 s in release),
    // so the recorded figure stands in for it; the pooling must reproduce the committed one.
    let cv = committed
        .agg_model_cross_validation
        .expect("calibrate records its cross-validation");
    assert_eq!(model.rows, held_back_model.rows + cv.rows);
    let pooled = |held: f64, cv_figure: f64| {
        (held * held_back_model.rows as f64 + cv_figure * cv.rows as f64) / model.rows as f64
    };
    for (figure, held, cv_figure) in [
        (
            model.ttft_percent,
            held_back_model.ttft_percent,
            cv.ttft_percent,
        ),
        (
            model.tpot_percent,
            held_back_model.tpot_percent,
            cv.tpot_percent,
        ),
    ] {
        // Both inputs are rounded to 0.1 %.
        assert!(
            (figure - pooled(held, cv_figure)).abs() <= 0.1,
            "{committed:?}"
        );
    }
    let (disagg_measured, disagg_model) = (
        committed.disagg.measured_deployment.unwrap(),
        committed.disagg.model.unwrap(),
    );
    assert_eq!(disagg_measured.rows + disagg_model.rows, report.disagg.n);
    assert!(measured.ttft_percent < model.ttft_percent);
    assert!(measured.tpot_percent < model.tpot_percent);
}

/// Published maximum-load throughput that no fit sees (TensorRT-LLM 1.0's `trtllm-bench`
/// tables for dense Llama models on H100 and H200, `public_anchors.csv`): every point is
/// predicted, by the model alone, and the shipped parameters stay within 20 % on average
/// (15.2 % when committed).
#[test]
fn published_maximum_load_throughput_is_within_twenty_percent() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let points = published_throughput(&data, FittedParams::builtin()).unwrap();
    assert_eq!(points.len(), 60);
    assert!(points.iter().all(|p| !p.measured_deployment));
    let error = mean_error_percent(&points);
    assert!(error <= 20.0, "published throughput MAPE {error:.1} %");
}
