//! The generic cell rate algorithm (GCRA) both backends share, as pure functions of time.
//!
//! A limit of `N` units per window is a bucket whose state is one number, the *theoretical
//! arrival time* (TAT): the instant at which the bucket would be empty again. Each unit costs
//! `window / N`; a request of cost `c` is admitted when `max(tat, now) + c - now <= window`,
//! which allows a burst of a whole window's worth and then a steady `N` per window. The local
//! backend keeps the TAT in an atomic (nanoseconds since the limiter's epoch); the Redis
//! backend runs the same arithmetic in a Lua script (microseconds of Redis `TIME`).

/// Cost, in the window's time unit, of `units` against a limit of `limit` per `window`.
/// A limit of zero admits nothing: its cost is larger than any window.
pub(crate) fn unit_cost(units: u64, limit: u64, window: u64) -> u64 {
    if limit == 0 {
        return u64::MAX / 4;
    }
    let cost = u128::from(units) * u128::from(window) / u128::from(limit);
    u64::try_from(cost).unwrap_or(u64::MAX / 4)
}

/// Admits `cost` against a bucket whose TAT is `tat`: the new TAT, or how long to wait.
pub(crate) fn admit(tat: u64, now: u64, cost: u64, window: u64) -> Result<u64, u64> {
    let new_tat = tat.max(now).saturating_add(cost);
    let backlog = new_tat - now;
    if backlog > window {
        Err(backlog - window)
    } else {
        Ok(new_tat)
    }
}

/// Units still available in a bucket whose TAT is `tat`, when each unit costs `per_unit`.
pub(crate) fn remaining(tat: u64, now: u64, per_unit: u64, window: u64) -> u64 {
    let backlog = tat.saturating_sub(now);
    window.saturating_sub(backlog) / per_unit.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 60_000;

    #[test]
    fn a_full_window_of_burst_then_the_steady_rate() {
        let per_request = unit_cost(1, 10, WINDOW);
        assert_eq!(per_request, 6_000);
        let mut tat = 0;
        for _ in 0..10 {
            tat = admit(tat, 1_000, per_request, WINDOW).expect("within the burst");
        }
        assert_eq!(remaining(tat, 1_000, per_request, WINDOW), 0);
        // The eleventh waits exactly one emission interval.
        assert_eq!(admit(tat, 1_000, per_request, WINDOW), Err(6_000));
        assert!(admit(tat, 7_000, per_request, WINDOW).is_ok());
    }

    #[test]
    fn an_idle_bucket_does_not_bank_more_than_a_window() {
        let per_request = unit_cost(1, 10, WINDOW);
        let tat = admit(0, 1_000_000, per_request, WINDOW).unwrap();
        assert_eq!(remaining(tat, 1_000_000, per_request, WINDOW), 9);
    }

    #[test]
    fn a_bucket_in_debt_refuses_even_zero_cost() {
        // Settling more tokens than were reserved pushes the TAT past the window.
        let tat = 100 + WINDOW + 500;
        assert_eq!(admit(tat, 100, 0, WINDOW), Err(500));
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        assert!(admit(0, 0, unit_cost(1, 0, WINDOW), WINDOW).is_err());
    }
}
