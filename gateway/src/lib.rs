//! Bud Foundry gateway: the OpenAI- and Anthropic-compatible data plane.
//!
//! The binary (`main.rs`) only parses flags and wires these pieces together:
//! - [`server`]: HTTP endpoints, the request path, streaming, retries and fallback;
//! - [`routing`]: the immutable routing snapshot, its sources (a file, Kubernetes), balancing;
//! - [`providers`]: one trait, one file per upstream protocol;
//! - [`translate`]: pure wire-format translations (OpenAI <-> Anthropic);
//! - [`keys`], [`error`], [`metrics`];
//! - [`limits`] and [`usage`]: per-key rate limits and usage export.
#![forbid(unsafe_code)]

pub mod error;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod providers;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod translate;
pub mod usage;
