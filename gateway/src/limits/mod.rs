//! Per-key request and token rate limits.
//!
//! This module owns the admission decision for one API key: requests per minute and tokens per
//! minute, each a GCRA bucket (see [`gcra`]) that allows a whole minute's worth as a burst and
//! then a steady rate. Tokens are *reserved* at admission (from `max_tokens` or a default the
//! caller picks) and *corrected* by [`Limiter::settle`] when the response ends, so a long
//! generation is charged what it really used.
//!
//! Two backends:
//! - **Local** ([`Limiter::local`]): one process, lock-free. Each key's buckets are two atomics
//!   in a `papaya` concurrent map; admission is a compare-and-swap per bucket, no mutex.
//! - **Redis** ([`Limiter::redis`]): the buckets live in Redis and every gateway replica shares
//!   them. Admission is one atomic Lua script (both buckets checked and charged together, time
//!   taken from Redis `TIME` so replica clocks do not matter); settlement is another.
//!
//! **Redis down: fail open to local limits.** When a Redis call fails or takes longer than
//! [`REDIS_TIMEOUT`], the admission is decided by this replica's local buckets instead, and
//! Redis is not asked again for [`REDIS_RETRY_AFTER`]. During an outage each replica enforces
//! the limits on its own, so a fleet of `N` replicas admits up to `N` times the limit; requests
//! are never refused because Redis is unavailable. Every failed call increments
//! `ratelimit_redis_errors_total` and every locally decided admission
//! `ratelimit_fallback_admissions_total`.
//!
//! Local buckets are created on a key's first request and kept for the life of the process
//! (two atomics per key id; key ids come from the routing snapshot, so they are bounded). In
//! Redis, a key's buckets expire as soon as they are full again.
//!
//! The module must not touch the request body, the routing snapshot or any I/O other than
//! Redis; it never blocks on a lock.

mod gcra;
mod local;
mod redis_backend;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use local::{KeyBuckets, LocalLimiter};
use redis_backend::RedisBackend;

/// The window every limit is expressed in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long one Redis call may take before the admission falls back to the local buckets.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// After a Redis failure, how long admissions stay local before Redis is tried again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The limits of one API key; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// What the rate-limit response headers (`x-ratelimit-*`, `anthropic-ratelimit-*`) say.
/// `reset_*` is the time until that bucket is full again (zero when it is unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit_requests: Option<u32>,
    pub remaining_requests: Option<u32>,
    pub reset_requests: Duration,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Duration,
}

impl RateLimitHeaders {
    fn unlimited() -> Self {
        RateLimitHeaders {
            limit_requests: None,
            remaining_requests: None,
            reset_requests: Duration::ZERO,
            limit_tokens: None,
            remaining_tokens: None,
            reset_tokens: Duration::ZERO,
        }
    }
}

/// Proof of an admitted request, handed back to [`Limiter::settle`] when it ends.
#[derive(Debug)]
pub struct Admission {
    key_id: Arc<str>,
    reserved_tokens: u64,
    tokens_per_minute: Option<u64>,
    charged: Charged,
}

/// Which buckets the reservation was charged to, so settlement corrects the same ones.
#[derive(Debug)]
enum Charged {
    /// No token limit: nothing to correct.
    Nothing,
    Local(Arc<KeyBuckets>),
    Redis,
}

impl Admission {
    /// The key this admission belongs to.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Tokens reserved at admission (after capping at the per-minute limit).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved_tokens
    }
}

/// The outcome of [`Limiter::admit`].
#[derive(Debug)]
pub enum LimitDecision {
    Allowed {
        admission: Admission,
        headers: RateLimitHeaders,
    },
    Limited {
        retry_after: Duration,
        headers: RateLimitHeaders,
    },
}

/// Why a limiter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
}

/// Which limit refused a request (a metric label).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    limit: LimitKind,
}

#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[expect(
    non_camel_case_types,
    reason = "the variant names are the metric label values"
)]
enum LimitKind {
    requests,
    tokens,
}

#[derive(Debug, Default)]
struct LimiterMetrics {
    limited: Family<LimitedLabels, Counter>,
    redis_errors: Counter,
    fallback_admissions: Counter,
}

/// Per-key rate limiter; cheap to clone (all clones share the same buckets).
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    local: LocalLimiter,
    redis: Option<RedisBackend>,
    /// Milliseconds since `epoch` before which Redis is not asked (after a failure).
    redis_paused_until_ms: AtomicU64,
    epoch: Instant,
    metrics: LimiterMetrics,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("redis", &self.inner.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for one process: lock-free, no I/O.
    pub fn local() -> Self {
        Self::with_backend(None)
    }

    /// A limiter whose buckets live in Redis and are shared by every replica using the same
    /// Redis. Fails when the URL is invalid or Redis does not answer at start; afterwards an
    /// unavailable Redis makes admissions fall back to local buckets (see the module docs).
    pub async fn redis(url: &str) -> Result<Self, LimiterError> {
        let backend = RedisBackend::connect(url).await?;
        Ok(Self::with_backend(Some(backend)))
    }

    fn with_backend(redis: Option<RedisBackend>) -> Self {
        Limiter {
            inner: Arc::new(Inner {
                local: LocalLimiter::new(),
                redis,
                redis_paused_until_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                metrics: LimiterMetrics::default(),
            }),
        }
    }

    /// Decides whether `key_id` may send one more request that may use up to
    /// `reserve_tokens` tokens. A reservation larger than the whole per-minute token limit is
    /// capped at that limit (otherwise the request could never be admitted).
    pub async fn admit(
        &self,
        key_id: &str,
        limits: &KeyLimits,
        reserve_tokens: u64,
    ) -> LimitDecision {
        if limits.requests_per_minute.is_none() && limits.tokens_per_minute.is_none() {
            return LimitDecision::Allowed {
                admission: Admission {
                    key_id: Arc::from(key_id),
                    reserved_tokens: 0,
                    tokens_per_minute: None,
                    charged: Charged::Nothing,
                },
                headers: RateLimitHeaders::unlimited(),
            };
        }
        let reserve = match limits.tokens_per_minute {
            Some(tpm) => reserve_tokens.min(tpm),
            None => 0,
        };
        if let Some(redis) = self.redis_if_healthy() {
            match redis.admit(key_id, limits, reserve).await {
                Ok(decision) => return self.count(decision),
                Err(error) => self.redis_failed("admit", &error),
            }
            self.inner.metrics.fallback_admissions.inc();
        } else if self.inner.redis.is_some() {
            self.inner.metrics.fallback_admissions.inc();
        }
        self.count(self.inner.local.admit(key_id, limits, reserve))
    }

    /// Corrects the token reservation of `admission` with the tokens the request really used.
    pub async fn settle(&self, admission: Admission, actual_tokens: u64) {
        let Some(tpm) = admission.tokens_per_minute else {
            return;
        };
        if actual_tokens == admission.reserved_tokens {
            return;
        }
        match &admission.charged {
            Charged::Nothing => {}
            Charged::Local(buckets) => {
                LocalLimiter::settle(buckets, tpm, admission.reserved_tokens, actual_tokens);
            }
            Charged::Redis => {
                // While Redis is known to be down the correction is lost: the reservation then
                // simply expires with its window.
                let Some(redis) = self.redis_if_healthy() else {
                    return;
                };
                if let Err(error) = redis
                    .settle(
                        &admission.key_id,
                        tpm,
                        admission.reserved_tokens,
                        actual_tokens,
                    )
                    .await
                {
                    self.redis_failed("settle", &error);
                }
            }
        }
    }

    /// Registers `ratelimit_limited_total{limit}`, `ratelimit_redis_errors_total` and
    /// `ratelimit_fallback_admissions_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let metrics = &self.inner.metrics;
        registry.register(
            "ratelimit_limited",
            "Requests refused by a per-key rate limit, by the limit that refused them",
            metrics.limited.clone(),
        );
        registry.register(
            "ratelimit_redis_errors",
            "Redis calls of the rate limiter that failed or timed out",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "ratelimit_fallback_admissions",
            "Admissions decided by this replica's local buckets because Redis was unavailable",
            metrics.fallback_admissions.clone(),
        );
    }

    fn count(&self, decision: Decided) -> LimitDecision {
        match decision {
            Decided::Allowed { admission, headers } => {
                LimitDecision::Allowed { admission, headers }
            }
            Decided::Limited {
                retry_after,
                headers,
                by,
            } => {
                self.inner
                    .metrics
                    .limited
                    .get_or_create(&LimitedLabels { limit: by })
                    .inc();
                LimitDecision::Limited {
                    retry_after,
                    headers,
                }
            }
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn redis_if_healthy(&self) -> Option<&RedisBackend> {
        let redis = self.inner.redis.as_ref()?;
        let paused_until = self.inner.redis_paused_until_ms.load(Ordering::Relaxed);
        (paused_until == 0 || self.elapsed_ms() >= paused_until).then_some(redis)
    }

    fn redis_failed(&self, operation: &'static str, error: &redis_backend::RedisCallError) {
        self.inner.metrics.redis_errors.inc();
        let retry_at =
            self.elapsed_ms() + u64::try_from(REDIS_RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.inner
            .redis_paused_until_ms
            .store(retry_at.max(1), Ordering::Relaxed);
        tracing::warn!(operation, %error, "rate limiter: Redis unavailable, using local limits");
    }
}

/// A backend's decision, with the limit that refused it (for the metric).
enum Decided {
    Allowed {
        admission: Admission,
        headers: RateLimitHeaders,
    },
    Limited {
        retry_after: Duration,
        headers: RateLimitHeaders,
        by: LimitKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u64>) -> KeyLimits {
        KeyLimits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    #[tokio::test]
    async fn unlimited_keys_are_always_admitted_without_headers() {
        let limiter = Limiter::local();
        for _ in 0..1000 {
            match limiter.admit("k", &limits(None, None), 100).await {
                LimitDecision::Allowed { headers, .. } => {
                    assert_eq!(headers, RateLimitHeaders::unlimited())
                }
                LimitDecision::Limited { .. } => panic!("unlimited key was limited"),
            }
        }
    }

    #[tokio::test]
    async fn requests_per_minute_admits_the_limit_then_refuses() {
        let limiter = Limiter::local();
        let key_limits = limits(Some(5), None);
        for expected_remaining in (0..5).rev() {
            match limiter.admit("k", &key_limits, 0).await {
                LimitDecision::Allowed { headers, .. } => {
                    assert_eq!(headers.limit_requests, Some(5));
                    assert_eq!(headers.remaining_requests, Some(expected_remaining));
                }
                LimitDecision::Limited { .. } => panic!("refused within the limit"),
            }
        }
        match limiter.admit("k", &key_limits, 0).await {
            LimitDecision::Limited {
                retry_after,
                headers,
            } => {
                assert!(
                    retry_after > Duration::from_secs(11) && retry_after <= Duration::from_secs(12)
                );
                assert_eq!(headers.remaining_requests, Some(0));
            }
            LimitDecision::Allowed { .. } => panic!("admitted past the limit"),
        }
        // Another key has its own buckets.
        assert!(matches!(
            limiter.admit("other", &key_limits, 0).await,
            LimitDecision::Allowed { .. }
        ));
        let mut registry = Registry::default();
        limiter.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ratelimit_limited_total{limit=\"requests\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn tokens_are_reserved_then_corrected_at_settle() {
        let limiter = Limiter::local();
        let key_limits = limits(None, Some(1000));
        let LimitDecision::Allowed { admission, headers } =
            limiter.admit("k", &key_limits, 800).await
        else {
            panic!("first request refused");
        };
        assert_eq!(headers.remaining_tokens, Some(200));
        // 800 reserved: a second reservation of 300 does not fit.
        assert!(matches!(
            limiter.admit("k", &key_limits, 300).await,
            LimitDecision::Limited { .. }
        ));
        // The first request used only 100: 900 are free again.
        limiter.settle(admission, 100).await;
        let LimitDecision::Allowed { headers, admission } =
            limiter.admit("k", &key_limits, 300).await
        else {
            panic!("refused after the refund");
        };
        let remaining = headers.remaining_tokens.unwrap();
        assert!((599..=600).contains(&remaining), "{remaining}");
        // Using more than reserved puts the key in debt: even a zero reservation waits.
        limiter.settle(admission, 1500).await;
        assert!(matches!(
            limiter.admit("k", &key_limits, 0).await,
            LimitDecision::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn a_refused_token_reservation_does_not_consume_a_request() {
        let limiter = Limiter::local();
        let key_limits = limits(Some(2), Some(100));
        assert!(matches!(
            limiter.admit("k", &key_limits, 100).await,
            LimitDecision::Allowed { .. }
        ));
        for _ in 0..5 {
            assert!(matches!(
                limiter.admit("k", &key_limits, 50).await,
                LimitDecision::Limited { .. }
            ));
        }
        // One request of the two is still available (the refusals rolled their charge back).
        let LimitDecision::Limited { headers, .. } = limiter.admit("k", &key_limits, 50).await
        else {
            panic!("tokens should still be exhausted");
        };
        assert_eq!(headers.remaining_requests, Some(1));
    }

    #[tokio::test]
    async fn a_reservation_above_the_limit_is_capped() {
        let limiter = Limiter::local();
        let LimitDecision::Allowed { admission, .. } =
            limiter.admit("k", &limits(None, Some(100)), 5000).await
        else {
            panic!("an oversized reservation on a fresh key must be admitted");
        };
        assert_eq!(admission.reserved_tokens(), 100);
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let limiter = Limiter::local();
        let key_limits = limits(Some(1000), None);
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        if let Decided::Allowed { .. } =
                            limiter.inner.local.admit("k", &key_limits, 0)
                        {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // 4000 attempts in well under a second: the burst of 1000 plus at most a few refills.
        let admitted = admitted.load(Ordering::Relaxed);
        assert!((1000..=1020).contains(&admitted), "{admitted}");
    }
}
