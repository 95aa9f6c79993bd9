//! `type: AKS`.

use super::{Blocker, Observed, State};
use crate::Result;
use bud_crds::BudCluster;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_RESOURCE_MANAGER_URL: &str = "https://management.azure.com";

pub async fn reconcile(
    _cluster: &BudCluster,
    _state: &State,
    _now: Timestamp,
) -> Result<Option<(Observed, Duration)>> {
    Ok(Some((
        Observed {
            blocker: Some(Blocker::new(
                "TypeNotSupported",
                "AKS is not implemented yet",
            )),
            ..Default::default()
        },
        Duration::from_secs(300),
    )))
}
