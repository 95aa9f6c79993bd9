//! A small load generator for the gateway benchmark that measures both the full response time
//! and the time to the first body byte (for an SSE stream: the first event, i.e. TTFT).
//!
//! ```text
//! bench-load --url URL --body JSON [--header 'k: v']... --requests N          # concurrency 1
//! bench-load --url URL --body JSON [--header 'k: v']... --rate R --duration S # open loop
//! ```
//! Open loop: request `i` starts at `start + i / R` whether or not earlier ones finished (a
//! constant arrival rate). Latencies are measured from the moment each request is sent.
//! Prints one JSON object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Open-loop safety valve: never more requests in flight than this.
const MAX_IN_FLIGHT: usize = 20_000;

struct Args {
    url: String,
    body: String,
    headers: Vec<(String, String)>,
    requests: Option<u64>,
    rate: Option<f64>,
    duration: Duration,
    warmup: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        body: String::new(),
        headers: Vec::new(),
        requests: None,
        rate: None,
        duration: Duration::from_secs(10),
        warmup: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value(),
            "--body" => args.body = value(),
            "--header" => {
                let header = value();
                let (name, value) = header.split_once(':').expect("--header 'name: value'");
                args.headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "--requests" => args.requests = Some(value().parse().expect("--requests N")),
            "--rate" => args.rate = Some(value().parse().expect("--rate R")),
            "--duration" => args.duration = Duration::from_secs_f64(value().parse().expect("--duration SECONDS")),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url is required");
    args
}

#[derive(Default)]
struct Sample {
    status: u16,
    latency_us: u64,
    first_byte_us: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn one_request(client: &HttpClient, args: &Args) -> Sample {
    let mut request = Request::post(&args.url).header("content-type", "application/json");
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(args.body.clone())))
        .expect("a valid request");
    let started = Instant::now();
    let Ok(response) = client.request(request).await else {
        return Sample::default();
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut first_byte = None;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if first_byte.is_none() && frame.data_ref().is_some_and(|data| !data.is_empty()) {
                    first_byte = Some(started.elapsed());
                }
            }
            Some(Err(_)) => return Sample::default(),
            None => break,
        }
    }
    let latency = started.elapsed();
    Sample {
        status,
        latency_us: latency.as_micros() as u64,
        first_byte_us: first_byte.unwrap_or(latency).as_micros() as u64,
    }
}

fn percentiles(mut values: Vec<u64>) -> String {
    if values.is_empty() {
        return "null".to_owned();
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
    format!(
        "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{mean:.1}}}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        values[values.len() - 1]
    )
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);

    for _ in 0..args.warmup {
        one_request(&client, &args).await;
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut skipped = 0u64;
    if let Some(count) = args.requests {
        for _ in 0..count {
            samples.push(one_request(&client, &args).await);
        }
    } else {
        let rate = args.rate.expect("--requests or --rate");
        let total = (rate * args.duration.as_secs_f64()).round() as u64;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = Vec::with_capacity(total as usize);
        let origin = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(origin + Duration::from_secs_f64(i as f64 / rate)).await;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let client = client.clone();
            let args = args.clone();
            tasks.push(tokio::spawn(async move {
                let sample = one_request(&client, &args).await;
                drop(permit);
                sample
            }));
        }
        for task in tasks {
            samples.push(task.await.unwrap_or_default());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for sample in &samples {
        *statuses.entry(sample.status).or_default() += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| (200..300).contains(&s.status)).collect();
    let errors = samples.len() - ok.len() + skipped as usize;
    let statuses = statuses
        .iter()
        .map(|(status, count)| format!("\"{status}\":{count}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"requests\":{},\"ok\":{},\"errors\":{errors},\"skipped\":{skipped},\"statuses\":{{{statuses}}},\"elapsed_s\":{elapsed:.3},\"achieved_rps\":{:.1},\"latency_us\":{},\"first_byte_us\":{}}}",
        samples.len() as u64 + skipped,
        ok.len(),
        ok.len() as f64 / elapsed,
        percentiles(ok.iter().map(|s| s.latency_us).collect()),
        percentiles(ok.iter().map(|s| s.first_byte_us).collect()),
    );
}
