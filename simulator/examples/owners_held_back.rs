//! Which rows the data's owner held back from `calibration.csv` ("the rows missing from
//! calibration.csv are held back on purpose", the data's README), read off the ids alone: an
//! id ends in the row's number (`<collection>_agg_<scenario>_<n>`), counted per collection,
//! or per day for the collections whose ids start with a date (one counter runs through all
//! of a day's rows). Where a counter runs densely from 1, the missing numbers show what was
//! taken out: single numbers (runs of up to [`POINT_RUN`]) are points scattered over a
//! measured grid, and the concurrencies of the rows after them show over how much of it;
//! longer runs sit between two series and may be whole series, which the ids cannot name.
//! No measured value is read.
//! `cargo run --release -p bud-simulator --example owners_held_back -- [DATA]`

use bud_simulator::batch::read_rows;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A counter runs densely when its highest number is at most this many times its row count;
/// counters shared with rows outside `calibration.csv` run to hundreds of times.
const DENSE: f64 = 1.5;
/// Counters with fewer rows say little about a share.
const MIN_ROWS: usize = 10;
/// The longest run of missing numbers read as scattered points rather than a series.
const POINT_RUN: u64 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let csv = std::fs::read_to_string(Path::new(data).join("calibration.csv"))
        .expect("read calibration.csv");
    let rows = read_rows(csv.as_bytes()).expect("parse calibration.csv");
    // Each counter's rows by number, with their concurrency.
    let mut counters: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for row in &rows {
        if let Some((counter, number)) = counter_and_number(row.id()) {
            counters
                .entry(counter.to_string())
                .or_default()
                .insert(number, row.get("batch_size").parse().unwrap_or_default());
        }
    }
    println!(
        "| counter | rows | highest number | missing as points | points % | concurrencies (agg) after a point | missing in longer runs |\n|---|---:|---:|---:|---:|---|---|"
    );
    let (mut rows_counted, mut points_missing, mut runs_missing) = (0, 0, 0);
    for (counter, numbered) in counters {
        let highest = *numbered.keys().last().expect("a counter has a row");
        if numbered.len() < MIN_ROWS || highest as f64 > DENSE * numbered.len() as f64 {
            continue;
        }
        let (mut points, mut after_point, mut runs) = (0, BTreeSet::new(), Vec::new());
        let mut previous = 0;
        for (&number, &concurrency) in &numbered {
            let run = number - previous - 1;
            if (1..=POINT_RUN).contains(&run) {
                points += run;
                // Disaggregated rows leave `batch_size` empty.
                if concurrency > 0 {
                    after_point.insert(concurrency);
                }
            } else if run > POINT_RUN {
                runs.push(run);
            }
            previous = number;
        }
        rows_counted += numbered.len() as u64;
        points_missing += points;
        runs_missing += runs.iter().sum::<u64>();
        println!(
            "| {counter} | {} | {highest} | {points} | {:.1} | {} | {} |",
            numbered.len(),
            100.0 * points as f64 / highest as f64,
            joined(&after_point),
            joined(&runs),
        );
    }
    println!(
        "| all dense counters | {rows_counted} | | {points_missing} | {:.1} | | {runs_missing} |",
        100.0 * points_missing as f64 / (rows_counted + points_missing + runs_missing) as f64
    );
}

/// `meta_llama_..._h100_sxm_trtllm_agg_1024x128_c8_tp1_epnone_1` → (`meta_llama_..._h100_sxm_trtllm`, 1);
/// `2026_03_25_glm_5_b300_sxm_sglang_fp8_agg_1024x1024_c64_tp8_0_ep1_0_60` → (`2026_03_25`, 60).
fn counter_and_number(id: &str) -> Option<(&str, u64)> {
    let (rest, number) = id.rsplit_once('_')?;
    let number = number.parse().ok()?;
    let date = rest.get(..10).filter(|d| {
        d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'_'
            } else {
                b.is_ascii_digit()
            }
        })
    });
    if let Some(date) = date {
        return Some((date, number));
    }
    let end = rest.find("_agg_").or_else(|| rest.find("_disagg_"))?;
    Some((&rest[..end], number))
}

fn joined<'a>(numbers: impl IntoIterator<Item = &'a u64>) -> String {
    let numbers: Vec<String> = numbers.into_iter().map(u64::to_string).collect();
    numbers.join(", ")
}
