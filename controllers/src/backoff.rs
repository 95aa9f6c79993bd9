//! Per-object retry backoff for failed reconciles: doubles with every consecutive failure
//! of the same object and resets when it succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures per object key.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Self::BASE
            .saturating_mul(2u32.saturating_pow(*n - 1))
            .min(Self::MAX)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets() {
        let b = Backoff::default();
        let delays: Vec<_> = (0..4).map(|_| b.next_delay("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(b.next_delay("other").as_secs(), 1);
        for _ in 0..20 {
            b.next_delay("a");
        }
        assert_eq!(b.next_delay("a"), Backoff::MAX);
        b.reset("a");
        assert_eq!(b.next_delay("a").as_secs(), 1);
    }
}
