//! Which rows the data's owner held back from `calibration.csv` ("the rows missing from
//! calibration.csv are held back on purpose", the data's README), read off the ids alone: an
//! id ends in the row's number within its collection (`<collection>_agg_<scenario>_<n>`).
//! Collections numbered densely from 1 show which numbers are missing; most others share one
//! counter across collections, so their gaps say nothing. The concurrencies of the rows that
//! follow a gap show whether whole series are missing or points scattered over the grid. No
//! measured value is read.
//! `cargo run --release -p bud-simulator --example owners_held_back -- [DATA]`

use bud_simulator::batch::read_rows;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A collection numbers its rows densely when its highest number is at most this many times
/// its row count; the shared counters run to hundreds of times.
const DENSE: f64 = 1.5;
/// Collections smaller than this say little about a share.
const MIN_ROWS: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args.get(1).map(String::as_str).unwrap_or("simulator/data");
    let csv = std::fs::read_to_string(Path::new(data).join("calibration.csv"))
        .expect("read calibration.csv");
    let rows = read_rows(csv.as_bytes()).expect("parse calibration.csv");
    // Each collection's rows by number, with their concurrency.
    let mut collections: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for row in &rows {
        if let Some((collection, number)) = collection_and_number(row.id()) {
            collections
                .entry(collection.to_string())
                .or_default()
                .insert(number, row.get("batch_size").to_string());
        }
    }
    println!(
        "| collection | rows | highest number | numbers missing | share missing % | concurrencies after a gap |\n|---|---:|---:|---:|---:|---|"
    );
    let (mut present, mut missing) = (0, 0);
    for (collection, numbered) in collections {
        let highest = *numbered.keys().last().expect("a collection has a row");
        if numbered.len() < MIN_ROWS || highest as f64 > DENSE * numbered.len() as f64 {
            continue;
        }
        let gaps = highest as usize - numbered.len();
        let mut after_gap = BTreeSet::new();
        let mut previous = 0;
        for (&number, concurrency) in &numbered {
            if number > previous + 1 {
                after_gap.insert(concurrency.parse::<u64>().unwrap_or_default());
            }
            previous = number;
        }
        present += numbered.len();
        missing += gaps;
        let after_gap: Vec<String> = after_gap.iter().map(u64::to_string).collect();
        println!(
            "| {collection} | {} | {highest} | {gaps} | {:.1} | {} |",
            numbered.len(),
            100.0 * gaps as f64 / highest as f64,
            after_gap.join(", ")
        );
    }
    println!(
        "| all densely numbered | {present} | | {missing} | {:.1} | |",
        100.0 * missing as f64 / (present + missing) as f64
    );
}

/// `meta_llama_..._h100_sxm_trtllm_agg_1024x128_c8_tp1_epnone_1` → (`meta_llama_..._h100_sxm_trtllm`, 1).
fn collection_and_number(id: &str) -> Option<(&str, u64)> {
    let (rest, number) = id.rsplit_once('_')?;
    let number = number.parse().ok()?;
    let end = rest.find("_agg_").or_else(|| rest.find("_disagg_"))?;
    Some((&rest[..end], number))
}
