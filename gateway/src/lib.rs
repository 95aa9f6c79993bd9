//! Bud Foundry gateway (work in progress).
