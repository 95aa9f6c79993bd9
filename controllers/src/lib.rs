//! Bud Foundry's controllers. Each module owns one kind and splits a pure *plan* (spec +
//! observed state + now → desired status and children) from thin I/O (status patches,
//! events). Modules must not reach into each other's objects except through the API.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod budcluster;
mod error;
pub mod metrics;
pub mod quantity;

pub use error::{Error, Result};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::sync::Arc;

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
