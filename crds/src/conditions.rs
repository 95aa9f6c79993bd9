//! Status conditions shared by every kind: the standard `metav1.Condition` list keyed by
//! `type`, with `lastTransitionTime` that moves only when a condition's status flips.
//!
//! Time is a parameter (`now`): callers pass the reconcile's clock so plans stay pure.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The summary condition every kind carries; its reason names the blocker when it is `False`.
pub const READY: &str = "Ready";

/// `status` values of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Builds a condition observed at `generation`; `lastTransitionTime` is `now` until
/// [`set_condition`] keeps an older one.
pub fn new_condition(
    type_: &str,
    status: impl Into<ConditionStatus>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.into().as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Inserts or replaces the condition of the same `type`, keeping the previous
/// `lastTransitionTime` when the status did not flip. Keeps the list sorted by type so that
/// equal inputs give equal lists (and status patches can be skipped).
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        if existing.status == condition.status {
            condition.last_transition_time = existing.last_transition_time.clone();
        }
        *existing = condition;
    } else {
        conditions.push(condition);
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Whether two condition lists differ in anything but `lastTransitionTime`; lets a controller
/// skip a status patch that would only move timestamps.
pub fn differ_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() != b.len()
        || a.iter().zip(b).any(|(x, y)| {
            x.type_ != y.type_
                || x.status != y.status
                || x.reason != y.reason
                || x.message != y.message
                || x.observed_generation != y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            new_condition(READY, false, "PodsNotReady", "0/1", Some(1), at(10)),
        );
        set_condition(
            &mut conditions,
            new_condition(READY, false, "PodsNotReady", "0/2", Some(2), at(20)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time.0, at(10));
        assert_eq!(conditions[0].message, "0/2");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            new_condition(READY, true, "Available", "2/2", Some(2), at(30)),
        );
        assert_eq!(conditions[0].last_transition_time.0, at(30));
        assert!(is_true(&conditions, READY));
    }

    #[test]
    fn conditions_stay_sorted_by_type() {
        let mut conditions = Vec::new();
        for t in ["Ready", "Available", "Progressing"] {
            set_condition(
                &mut conditions,
                new_condition(t, true, "Ok", "", None, at(1)),
            );
        }
        let types: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Available", "Progressing", "Ready"]);
    }

    #[test]
    fn timestamps_alone_are_no_difference() {
        let a = vec![new_condition(READY, true, "Ok", "", Some(1), at(1))];
        let b = vec![new_condition(READY, true, "Ok", "", Some(1), at(99))];
        assert!(!differ_ignoring_time(&a, &b));
        let c = vec![new_condition(READY, false, "Ok", "", Some(1), at(1))];
        assert!(differ_ignoring_time(&a, &c));
    }
}
