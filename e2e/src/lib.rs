//! End-to-end test tooling for Bud Foundry: the simulated fleet (`fleet`) and helpers for
//! tests against a real Kubernetes API server (`harness`). The tests themselves live in
//! `tests/`; they run against the cluster `KUBECONFIG` names — the local control plane that
//! `e2e/cluster/up.sh` starts, or any existing cluster.

pub mod arm;
pub mod bench;
pub mod control_plane;
pub mod engine_runtime;
pub mod fleet;
pub mod harness;
pub mod moto;
