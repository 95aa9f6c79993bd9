//! Per-endpoint load and health state, and the choice of an endpoint for one attempt.
//!
//! State lives in [`EndpointState`], shared across snapshots through [`EndpointRegistry`] so a
//! reload does not forget outstanding requests, latency or ejections. The request path only
//! touches atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Settings for passive health checking.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Consecutive failures that eject an endpoint.
    pub eject_after_failures: u32,
    /// First wait before probing an ejected endpoint; doubles per repeated ejection.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            eject_after_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

/// One upstream address (an engine pod, or an external provider's base URL).
#[derive(Debug)]
pub struct EndpointState {
    /// Base URL including the API prefix, e.g. `http://10.0.0.1:8000/v1`.
    pub base_url: String,
    /// Label for usage rows and logs (pod name or base URL).
    pub label: String,
    outstanding: AtomicU32,
    /// Exponentially weighted latency in microseconds; 0 = no sample yet.
    ewma_latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    ejected: AtomicBool,
    ejections: AtomicU32,
}

impl EndpointState {
    pub fn new(base_url: String, label: String) -> Self {
        Self {
            base_url,
            label,
            outstanding: AtomicU32::new(0),
            ewma_latency_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejections: AtomicU32::new(0),
        }
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Marks one request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
        }
    }

    /// Records a success and its latency.
    pub fn record_success(&self, latency: Duration) {
        self.record_completion();
        self.record_latency(latency);
    }

    /// Clears the failure count: a request (or a whole stream) completed.
    pub fn record_completion(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
    }

    /// Feeds the latency average (for streams: the time to the first event, recorded before
    /// the stream is known to complete).
    pub fn record_latency(&self, latency: Duration) {
        let sample = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample.max(1)
        } else {
            (old * 7 + sample) / 8
        }
        .max(1);
        self.ewma_latency_us.store(new, Ordering::Relaxed);
    }

    /// Records a failure that says the endpoint may be unhealthy. Returns true when this
    /// failure ejected it (the caller starts the probe).
    pub fn record_failure(&self, health: &HealthConfig) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= health.eject_after_failures {
            return self
                .ejected
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        }
        false
    }

    /// How long to wait before the next probe of this (ejected) endpoint.
    pub fn ejection_delay(&self, health: &HealthConfig) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(6);
        (health.base_ejection * 2u32.pow(n)).min(health.max_ejection)
    }

    /// Puts an ejected endpoint back into rotation after a successful probe.
    pub fn readmit(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
    }

    /// The balancing cost: outstanding requests weighted by recent latency.
    fn cost(&self) -> u128 {
        let latency = u128::from(self.ewma_latency_us.load(Ordering::Relaxed).max(100));
        (u128::from(self.outstanding()) + 1) * latency
    }
}

/// Decrements the endpoint's outstanding count when dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Power of two choices among eligible endpoints: pick two at random, keep the cheaper.
/// `excluded` lists endpoints already tried by this request.
pub fn pick_endpoint(
    endpoints: &[Arc<EndpointState>],
    excluded: &[Arc<EndpointState>],
) -> Option<Arc<EndpointState>> {
    pick_endpoint_with(endpoints, excluded, false)
}

/// [`pick_endpoint`], optionally considering ejected endpoints too (panic routing: when every
/// endpoint of a model is ejected, trying one beats refusing the request).
pub fn pick_endpoint_with(
    endpoints: &[Arc<EndpointState>],
    excluded: &[Arc<EndpointState>],
    include_ejected: bool,
) -> Option<Arc<EndpointState>> {
    let eligible = |e: &Arc<EndpointState>| {
        (include_ejected || !e.is_ejected()) && !excluded.iter().any(|x| Arc::ptr_eq(x, e))
    };
    let count = endpoints.iter().filter(|e| eligible(e)).count();
    let nth = |n: usize| endpoints.iter().filter(|e| eligible(e)).nth(n).cloned();
    match count {
        0 => None,
        1 => nth(0),
        _ => {
            let a = fastrand::usize(..count);
            let mut b = fastrand::usize(..count - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            let (cost_a, cost_b) = (a.cost(), b.cost());
            // Costs within 25% of each other are a tie: keep the random first pick, so equally
            // good endpoints share traffic instead of the marginally faster one taking all.
            Some(if cost_b * 5 < cost_a * 4 { b } else { a })
        }
    }
}

/// Keeps endpoint state alive across snapshot rebuilds, keyed by deployment and base URL.
#[derive(Debug, Default)]
pub struct EndpointRegistry {
    entries: Mutex<HashMap<String, Weak<EndpointState>>>,
}

impl EndpointRegistry {
    /// Returns the existing state for this key, or a new one. Called only while building a
    /// snapshot, never on the request path.
    pub fn get_or_create(&self, key: &str, base_url: &str, label: &str) -> Arc<EndpointState> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = entries.get(key).and_then(Weak::upgrade)
            && existing.base_url == base_url
        {
            return existing;
        }
        let fresh = Arc::new(EndpointState::new(base_url.to_string(), label.to_string()));
        entries.insert(key.to_string(), Arc::downgrade(&fresh));
        entries.retain(|_, w| w.strong_count() > 0);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(n: &str) -> Arc<EndpointState> {
        Arc::new(EndpointState::new(format!("http://{n}/v1"), n.to_string()))
    }

    #[test]
    fn prefers_the_less_loaded_endpoint() {
        let (a, b) = (ep("a"), ep("b"));
        let _busy: Vec<_> = (0..5).map(|_| a.start()).collect();
        let both = vec![a.clone(), b.clone()];
        for _ in 0..50 {
            assert!(Arc::ptr_eq(&pick_endpoint(&both, &[]).unwrap(), &b));
        }
    }

    #[test]
    fn prefers_the_faster_endpoint_at_equal_load() {
        let (a, b) = (ep("a"), ep("b"));
        a.record_success(Duration::from_millis(50));
        b.record_success(Duration::from_millis(1));
        let both = vec![a, b.clone()];
        assert!(Arc::ptr_eq(&pick_endpoint(&both, &[]).unwrap(), &b));
    }

    #[test]
    fn similar_endpoints_share_sequential_traffic() {
        let (a, b) = (ep("a"), ep("b"));
        a.record_success(Duration::from_micros(1000));
        b.record_success(Duration::from_micros(1100));
        let both = vec![a.clone(), b.clone()];
        let picked_b = (0..400)
            .filter(|_| Arc::ptr_eq(&pick_endpoint(&both, &[]).unwrap(), &b))
            .count();
        assert!((100..300).contains(&picked_b), "{picked_b}");
    }

    #[test]
    fn ejects_after_consecutive_failures_and_readmits() {
        let health = HealthConfig::default();
        let a = ep("a");
        assert!(!a.record_failure(&health));
        assert!(!a.record_failure(&health));
        assert!(a.record_failure(&health));
        assert!(a.is_ejected());
        assert!(pick_endpoint(std::slice::from_ref(&a), &[]).is_none());
        a.readmit();
        assert!(pick_endpoint(std::slice::from_ref(&a), &[]).is_some());
    }

    #[test]
    fn success_resets_the_failure_count() {
        let health = HealthConfig::default();
        let a = ep("a");
        a.record_failure(&health);
        a.record_failure(&health);
        a.record_success(Duration::from_millis(1));
        assert!(!a.record_failure(&health));
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let (a, b) = (ep("a"), ep("b"));
        let both = vec![a.clone(), b.clone()];
        for _ in 0..20 {
            assert!(Arc::ptr_eq(
                &pick_endpoint(&both, std::slice::from_ref(&a)).unwrap(),
                &b
            ));
        }
        assert!(pick_endpoint(&both, &[a, b]).is_none());
    }

    #[test]
    fn in_flight_guard_counts() {
        let a = ep("a");
        {
            let _g = a.start();
            assert_eq!(a.outstanding(), 1);
        }
        assert_eq!(a.outstanding(), 0);
    }

    #[test]
    fn registry_keeps_state_across_rebuilds() {
        let registry = EndpointRegistry::default();
        let first = registry.get_or_create("ns/d/a", "http://a/v1", "a");
        let _g = first.start();
        let second = registry.get_or_create("ns/d/a", "http://a/v1", "a");
        assert_eq!(second.outstanding(), 1);
    }
}
