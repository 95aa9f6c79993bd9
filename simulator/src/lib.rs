//! Bud Foundry performance simulator.
//!
//! - [`hardware`]: the accelerator catalog (lookups by id or Kubernetes node label value).
//! - [`model`](mod@model): the model catalog and the Hugging Face `config.json` parser.
//! - [`perf`]: the performance model of one serving configuration ([`predict`]).
//! - [`params`]: fitted efficiency and overhead parameters; [`calibrate`] fits them.
//! - [`search`]: the configuration search ([`plan`]).
//! - [`batch`]: batch prediction over a scenarios CSV.
//! - [`published`]: the check against published throughput no fit sees.
//! - [`serve`]: the OpenAI-compatible engine emulator.
//!
//! The library does no I/O except where a function says so (batch files, the emulator).

pub mod batch;
pub mod calibrate;
pub mod error;
pub mod gbdt;
pub mod hardware;
pub mod model;
pub mod params;
pub mod perf;
pub mod precision;
pub mod published;
pub mod search;
pub mod serve;

pub use error::{Error, Result};
pub use hardware::{Accelerator, DeviceKind, HardwareCatalog, accelerator};
pub use model::{ModelCatalog, ModelSpec, model, parse_config_json};
pub use params::{EngineParams, FittedParams};
pub use perf::{MemoryBreakdown, Prediction, ServingConfig, Workload, predict, predict_with};
pub use precision::{Engine, Precision};
pub use search::{PlanRequest, PlanResult, plan};
