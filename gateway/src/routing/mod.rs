//! Routing state: the spec shared by the sources, the immutable snapshot the request path
//! reads, the balancer, and the sources that rebuild the snapshot (a file, Kubernetes).

pub mod balancer;
pub mod file;
pub mod kubernetes;
pub mod snapshot;
pub mod spec;

pub use snapshot::{Backend, KeyEntry, ModelRoute, Snapshot, SnapshotBuilder};
