//! The in-process backend: per key, two atomic TATs in a lock-free concurrent map.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Admission, Charged, Decided, KeyLimits, LimitKind, RateLimitHeaders, WINDOW, gcra};

/// Nanoseconds in a window.
const WINDOW_NS: u64 = WINDOW.as_nanos() as u64;

/// The two buckets of one key: theoretical arrival times in nanoseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct KeyBuckets {
    requests_tat: AtomicU64,
    tokens_tat: AtomicU64,
    /// The limiter's epoch, copied here so settlement needs no map lookup.
    epoch: Instant,
}

impl KeyBuckets {
    fn new(epoch: Instant) -> Self {
        KeyBuckets {
            requests_tat: AtomicU64::new(0),
            tokens_tat: AtomicU64::new(0),
            epoch,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX / 2)
    }
}

pub(crate) struct LocalLimiter {
    keys: papaya::HashMap<Arc<str>, Arc<KeyBuckets>>,
    epoch: Instant,
}

impl LocalLimiter {
    pub(crate) fn new() -> Self {
        LocalLimiter {
            keys: papaya::HashMap::new(),
            epoch: Instant::now(),
        }
    }

    fn buckets(&self, key_id: &str) -> (Arc<str>, Arc<KeyBuckets>) {
        let keys = self.keys.pin();
        if let Some((key, buckets)) = keys.get_key_value(key_id) {
            return (key.clone(), buckets.clone());
        }
        let key: Arc<str> = Arc::from(key_id);
        let buckets =
            keys.get_or_insert_with(key.clone(), || Arc::new(KeyBuckets::new(self.epoch)));
        (key, buckets.clone())
    }

    pub(crate) fn admit(&self, key_id: &str, limits: &KeyLimits, reserve: u64) -> Decided {
        let (key, buckets) = self.buckets(key_id);
        let now = buckets.now_ns();
        admit_at(key, buckets, limits, reserve, now)
    }

    /// Charges (or refunds) the difference between what was used and what was reserved.
    pub(crate) fn settle(buckets: &KeyBuckets, tokens_per_minute: u64, reserved: u64, actual: u64) {
        let now = buckets.now_ns();
        if actual > reserved {
            let extra = gcra::unit_cost(actual - reserved, tokens_per_minute, WINDOW_NS);
            update(&buckets.tokens_tat, |tat| {
                Some(tat.max(now).saturating_add(extra))
            });
        } else {
            let refund = gcra::unit_cost(reserved - actual, tokens_per_minute, WINDOW_NS);
            // A TAT in the past means a full bucket; refunding below `now` would bank capacity
            // beyond one window.
            update(&buckets.tokens_tat, |tat| {
                (tat > now).then(|| tat.saturating_sub(refund).max(now))
            });
        }
    }
}

/// Admission at an explicit time (the unit tests drive `now`).
fn admit_at(
    key: Arc<str>,
    buckets: Arc<KeyBuckets>,
    limits: &KeyLimits,
    reserve: u64,
    now: u64,
) -> Decided {
    let request_cost = limits
        .requests_per_minute
        .map(|rpm| gcra::unit_cost(1, u64::from(rpm), WINDOW_NS));
    let token_cost = limits
        .tokens_per_minute
        .map(|tpm| gcra::unit_cost(reserve, tpm, WINDOW_NS));

    let mut requests_tat = buckets.requests_tat.load(Ordering::Acquire);
    if let Some(cost) = request_cost {
        match charge(&buckets.requests_tat, now, cost) {
            Ok(tat) => requests_tat = tat,
            Err(retry_after) => {
                let tokens_tat = buckets.tokens_tat.load(Ordering::Acquire);
                return Decided::Limited {
                    retry_after: Duration::from_nanos(retry_after),
                    headers: headers(limits, now, requests_tat, tokens_tat),
                    by: LimitKind::requests,
                };
            }
        }
    }
    let mut tokens_tat = buckets.tokens_tat.load(Ordering::Acquire);
    if let Some(cost) = token_cost {
        match charge(&buckets.tokens_tat, now, cost) {
            Ok(tat) => tokens_tat = tat,
            Err(retry_after) => {
                // Give the request back: this request never happened.
                if let Some(cost) = request_cost {
                    update(&buckets.requests_tat, |tat| Some(tat.saturating_sub(cost)));
                    requests_tat = requests_tat.saturating_sub(cost);
                }
                return Decided::Limited {
                    retry_after: Duration::from_nanos(retry_after),
                    headers: headers(limits, now, requests_tat, tokens_tat),
                    by: LimitKind::tokens,
                };
            }
        }
    }
    let charged = if limits.tokens_per_minute.is_some() {
        Charged::Local(buckets)
    } else {
        Charged::Nothing
    };
    Decided::Allowed {
        admission: Admission {
            key_id: key,
            reserved_tokens: reserve,
            tokens_per_minute: limits.tokens_per_minute,
            charged,
        },
        headers: headers(limits, now, requests_tat, tokens_tat),
    }
}

/// One compare-and-swap loop of GCRA admission on `bucket`.
fn charge(bucket: &AtomicU64, now: u64, cost: u64) -> Result<u64, u64> {
    let mut current = bucket.load(Ordering::Acquire);
    loop {
        let new_tat = gcra::admit(current, now, cost, WINDOW_NS)?;
        match bucket.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(new_tat),
            Err(actual) => current = actual,
        }
    }
}

/// Applies `change` atomically; `None` leaves the bucket alone.
fn update(bucket: &AtomicU64, change: impl Fn(u64) -> Option<u64>) {
    let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, change);
}

fn headers(limits: &KeyLimits, now: u64, requests_tat: u64, tokens_tat: u64) -> RateLimitHeaders {
    let requests = limits.requests_per_minute.map(|rpm| {
        let per_request = gcra::unit_cost(1, u64::from(rpm), WINDOW_NS);
        let remaining = gcra::remaining(requests_tat, now, per_request, WINDOW_NS);
        (rpm, u32::try_from(remaining).unwrap_or(rpm).min(rpm))
    });
    let tokens = limits.tokens_per_minute.map(|tpm| {
        let remaining = remaining_tokens(tokens_tat, now, tpm);
        (tpm, remaining)
    });
    RateLimitHeaders {
        limit_requests: requests.map(|(limit, _)| limit),
        remaining_requests: requests.map(|(_, remaining)| remaining),
        reset_requests: requests
            .map(|_| Duration::from_nanos(requests_tat.saturating_sub(now)))
            .unwrap_or_default(),
        limit_tokens: tokens.map(|(limit, _)| limit),
        remaining_tokens: tokens.map(|(_, remaining)| remaining),
        reset_tokens: tokens
            .map(|_| Duration::from_nanos(tokens_tat.saturating_sub(now)))
            .unwrap_or_default(),
    }
}

/// Tokens left, computed without the per-token cost rounding (a token may cost under 1 ns).
pub(crate) fn remaining_tokens(tat: u64, now: u64, tokens_per_minute: u64) -> u64 {
    let free = WINDOW_NS.saturating_sub(tat.saturating_sub(now));
    let tokens = u128::from(free) * u128::from(tokens_per_minute) / u128::from(WINDOW_NS);
    u64::try_from(tokens)
        .unwrap_or(tokens_per_minute)
        .min(tokens_per_minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn fresh() -> (Arc<str>, Arc<KeyBuckets>) {
        (Arc::from("k"), Arc::new(KeyBuckets::new(Instant::now())))
    }

    #[test]
    fn requests_refill_at_the_steady_rate() {
        let (key, buckets) = fresh();
        let limits = KeyLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
        };
        let start = 1000 * SECOND;
        for _ in 0..60 {
            assert!(matches!(
                admit_at(key.clone(), buckets.clone(), &limits, 0, start),
                Decided::Allowed { .. }
            ));
        }
        let Decided::Limited { retry_after, .. } =
            admit_at(key.clone(), buckets.clone(), &limits, 0, start)
        else {
            panic!("admitted past the burst");
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        // One second later exactly one more fits.
        assert!(matches!(
            admit_at(key.clone(), buckets.clone(), &limits, 0, start + SECOND),
            Decided::Allowed { .. }
        ));
        assert!(matches!(
            admit_at(key, buckets, &limits, 0, start + SECOND),
            Decided::Limited { .. }
        ));
    }

    #[test]
    fn headers_report_the_time_to_a_full_bucket() {
        let (key, buckets) = fresh();
        let limits = KeyLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: Some(6000),
        };
        let Decided::Allowed { headers, .. } = admit_at(key, buckets, &limits, 600, 10 * SECOND)
        else {
            panic!("refused");
        };
        assert_eq!(headers.remaining_requests, Some(59));
        assert_eq!(headers.reset_requests, Duration::from_secs(1));
        assert_eq!(headers.remaining_tokens, Some(5400));
        assert_eq!(headers.reset_tokens, Duration::from_secs(6));
    }
}
