//! The rate limiter against a real `redis-server`: one limiter alone, two limiters standing for
//! two gateway replicas sharing limits, and a Redis outage (fail open to local limits) with
//! recovery.
//!
//! Uses the Redis at `BUD_TEST_REDIS_URL` when set (see `tests/services.sh`), otherwise starts
//! its own `redis-server` on a free loopback port. The outage test always starts its own. When
//! neither is possible the tests print why and pass without checking anything.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bud_gateway::limits::{KeyLimits, LimitDecision, Limiter};
use prometheus_client::registry::Registry;

/// A `redis-server` child on a loopback port with its own directory; killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        if !binary_exists("redis-server") {
            return None;
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bud-limits-redis-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for(
            "redis-server to answer PING",
            Duration::from_secs(20),
            || redis_ping(&self.url()),
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn binary_exists(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .any(|dir| dir.join(name).is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn redis_ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    client
        .get_connection_with_timeout(Duration::from_millis(200))
        .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
        .is_ok()
}

/// Polls `condition` until it holds; panics with `what` after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shared Redis's URL, and our own server when we had to start one.
fn shared_redis() -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var("BUD_TEST_REDIS_URL") {
        return Some((url, None));
    }
    let server = RedisServer::start()?;
    Some((server.url(), Some(server)))
}

fn skip(test: &str) {
    println!(
        "SKIPPED {test}: redis-server is not installed and BUD_TEST_REDIS_URL is not set (run gateway/tests/services.sh)"
    );
}

/// A key id no other test run uses (the shared Redis outlives test runs).
fn unique_key(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn rpm(limit: u32) -> KeyLimits {
    KeyLimits {
        requests_per_minute: Some(limit),
        tokens_per_minute: None,
    }
}

fn tpm(limit: u64) -> KeyLimits {
    KeyLimits {
        requests_per_minute: None,
        tokens_per_minute: Some(limit),
    }
}

fn metric(limiter: &Limiter, name: &str) -> f64 {
    let mut registry = Registry::default();
    limiter.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn two_gateways_share_the_request_limit() {
    let Some((url, _server)) = shared_redis() else {
        return skip("two_gateways_share_the_request_limit");
    };
    let gateway_a = Limiter::redis(&url).await.expect("connect gateway A");
    let gateway_b = Limiter::redis(&url).await.expect("connect gateway B");
    let key = unique_key("shared-rpm");
    let mut admitted = 0;
    let mut last_remaining = None;
    for attempt in 0..30 {
        let gateway = if attempt % 2 == 0 {
            &gateway_a
        } else {
            &gateway_b
        };
        match gateway.admit(&key, &rpm(10), 0).await {
            LimitDecision::Allowed { headers, .. } => {
                admitted += 1;
                assert_eq!(headers.limit_requests, Some(10));
                // The remaining count goes down across both gateways.
                if let Some(previous) = last_remaining {
                    assert!(headers.remaining_requests < Some(previous), "{headers:?}");
                }
                last_remaining = headers.remaining_requests;
            }
            LimitDecision::Limited {
                retry_after,
                headers,
            } => {
                assert_eq!(headers.remaining_requests, Some(0));
                assert!(
                    retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(6),
                    "{retry_after:?}"
                );
            }
        }
    }
    assert_eq!(
        admitted, 10,
        "two gateways together admit exactly the limit"
    );
    assert_eq!(
        metric(&gateway_a, "ratelimit_limited_total")
            + metric(&gateway_b, "ratelimit_limited_total"),
        20.0
    );
    assert_eq!(metric(&gateway_a, "ratelimit_redis_errors_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_from_two_gateways_never_exceed_the_limit() {
    let Some((url, _server)) = shared_redis() else {
        return skip("concurrent_admissions_from_two_gateways_never_exceed_the_limit");
    };
    let gateways = [
        Limiter::redis(&url).await.expect("connect gateway A"),
        Limiter::redis(&url).await.expect("connect gateway B"),
    ];
    let key = unique_key("concurrent");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..200 {
        let gateway = gateways[task % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            matches!(
                gateway.admit(&key, &rpm(50), 0).await,
                LimitDecision::Allowed { .. }
            )
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += u32::from(task.await.unwrap());
    }
    // 50 per minute refill one every 1.2 s: allow for the refills the run itself took.
    let refills = (started.elapsed().as_secs_f64() / 1.2).ceil() as u32;
    assert!(
        (50..=50 + refills).contains(&admitted),
        "admitted {admitted}"
    );
}

#[tokio::test]
async fn tokens_reserved_on_one_gateway_are_settled_for_both() {
    let Some((url, _server)) = shared_redis() else {
        return skip("tokens_reserved_on_one_gateway_are_settled_for_both");
    };
    let gateway_a = Limiter::redis(&url).await.expect("connect gateway A");
    let gateway_b = Limiter::redis(&url).await.expect("connect gateway B");
    let key = unique_key("shared-tpm");
    let LimitDecision::Allowed { admission, headers } =
        gateway_a.admit(&key, &tpm(1000), 800).await
    else {
        panic!("the first reservation was refused");
    };
    assert_eq!(headers.remaining_tokens, Some(200));
    let LimitDecision::Limited { headers, .. } = gateway_b.admit(&key, &tpm(1000), 300).await
    else {
        panic!("gateway B ignored gateway A's reservation");
    };
    assert_eq!(headers.limit_tokens, Some(1000));
    // The request on A used only 100 tokens: B may now reserve 300.
    gateway_a.settle(admission, 100).await;
    let LimitDecision::Allowed { admission, headers } =
        gateway_b.admit(&key, &tpm(1000), 300).await
    else {
        panic!("the refund did not reach gateway B");
    };
    let remaining = headers.remaining_tokens.unwrap();
    assert!((598..=600).contains(&remaining), "{remaining}");
    // Going over the reservation puts the key in debt for both gateways.
    gateway_b.settle(admission, 2000).await;
    assert!(matches!(
        gateway_a.admit(&key, &tpm(1000), 0).await,
        LimitDecision::Limited { .. }
    ));
}

#[tokio::test]
async fn bad_urls_and_unreachable_redis_are_errors_at_start() {
    assert!(Limiter::redis("not a url").await.is_err());
    let port = free_port();
    assert!(
        Limiter::redis(&format!("redis://127.0.0.1:{port}/"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_local_limits_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return skip("a_redis_outage_falls_back_to_local_limits_and_recovers");
    };
    let limiter = Limiter::redis(&server.url()).await.expect("connect");
    let shared_key = unique_key("before-outage");
    for _ in 0..3 {
        assert!(matches!(
            limiter.admit(&shared_key, &rpm(3), 0).await,
            LimitDecision::Allowed { .. }
        ));
    }
    assert!(matches!(
        limiter.admit(&shared_key, &rpm(3), 0).await,
        LimitDecision::Limited { .. }
    ));

    server.stop();
    // Redis is gone: admissions are decided locally, quickly, and still limited per replica.
    let outage_key = unique_key("during-outage");
    let mut admitted = 0;
    for _ in 0..5 {
        let started = Instant::now();
        if let LimitDecision::Allowed { .. } = limiter.admit(&outage_key, &rpm(3), 0).await {
            admitted += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "an admission waited on a dead Redis"
        );
    }
    assert_eq!(
        admitted, 3,
        "local fallback still enforces the limit in this replica"
    );
    assert!(metric(&limiter, "ratelimit_redis_errors_total") >= 1.0);
    assert!(metric(&limiter, "ratelimit_fallback_admissions_total") >= 5.0);

    server.spawn();
    // Back on Redis: a fresh key's bucket appears in Redis once admissions go there again.
    let client = redis::Client::open(server.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let key = unique_key("after-outage");
        let _ = limiter.admit(&key, &rpm(3), 0).await;
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("bud:ratelimit:{{{key}}}:requests"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if exists {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limiter never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
