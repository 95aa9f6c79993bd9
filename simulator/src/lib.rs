//! Bud Foundry performance simulator (work in progress).
