//! Bud Foundry gateway (work in progress).
pub mod limits;
pub mod usage;
