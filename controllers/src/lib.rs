//! Bud Foundry's controllers. Each module owns one kind and splits a pure *plan* (spec +
//! observed state + now → desired status and children) from thin I/O (status patches,
//! events). Modules must not reach into each other's objects except through the API.

#![forbid(unsafe_code)]

pub mod apikey;
pub mod backoff;
pub mod budcluster;
mod error;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod modeldeployment;
pub mod planning;
pub mod quantity;
pub mod simulation;

pub use error::{Error, Result};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::sync::Arc;

/// A cache of every BudCluster and the stream of their changes, for controllers whose
/// decisions depend on cluster inventories. The stream must be polled (it feeds the cache).
pub fn cluster_cache(
    client: &Client,
) -> (
    kube::runtime::reflector::Store<bud_crds::BudCluster>,
    impl futures::Stream<Item = Result<bud_crds::BudCluster, kube::runtime::watcher::Error>>
    + Send
    + 'static,
) {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let stream = watcher(
        kube::Api::<bud_crds::BudCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    (store, stream)
}

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "bud-operator";

/// What every controller needs: the client, an event recorder, metrics and backoff state.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<metrics::Metrics>,
    pub backoff: backoff::Backoff,
}

impl Context {
    /// What every controller's error policy does: counts the error by category, and
    /// requeues `key` (`namespace/name`) after its per-object backoff.
    pub fn requeue_after_error(
        &self,
        controller: &'static str,
        key: &str,
        error: &Error,
    ) -> kube::runtime::controller::Action {
        self.metrics
            .reconcile_errors
            .get_or_create(&metrics::ErrorLabels {
                controller,
                category: error.category(),
            })
            .inc();
        let delay = self.backoff.next_delay(key);
        tracing::warn!(%controller, object = %key, error = %error, retry_in = ?delay, "reconcile failed");
        kube::runtime::controller::Action::requeue(delay)
    }

    /// A context whose Events are reported as `bud-operator` from `instance`.
    pub fn new(client: Client, metrics: Arc<metrics::Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            backoff: backoff::Backoff::default(),
        }
    }
}
