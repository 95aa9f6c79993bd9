//! The one error type of the simulator library. Every variant names what was wrong and, where
//! there is a closed set, the accepted values, so a CLI or a controller status can show it as is.

use thiserror::Error;

/// Errors returned by catalogs, the performance model and the search.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// An accelerator id or Kubernetes node label value that the catalog does not know.
    #[error("unknown accelerator {given:?}; accepted: {accepted}")]
    UnknownAccelerator { given: String, accepted: String },
    /// A model id that is not in the catalog (and no config.json was given).
    #[error("unknown model {given:?}; accepted: {accepted} (or pass a Hugging Face config.json)")]
    UnknownModel { given: String, accepted: String },
    /// An engine name not supported.
    #[error("unknown engine {given:?}; accepted: {accepted}")]
    UnknownEngine { given: String, accepted: String },
    /// A precision name not supported.
    #[error("unknown precision {given:?}; accepted: {accepted}")]
    UnknownPrecision { given: String, accepted: String },
    /// A config.json that could not be read as a decoder-only transformer.
    #[error("invalid model config: {0}")]
    InvalidModelConfig(String),
    /// A numeric or structural value out of range (field named in the message).
    #[error("invalid value for {field}: {reason}")]
    InvalidValue { field: String, reason: String },
    /// The configuration cannot run this model at all (e.g. engine and hardware mismatch).
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// A short, fixed category usable as a metrics label or condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::UnknownAccelerator { .. } => "UnknownAccelerator",
            Error::UnknownModel { .. } => "UnknownModel",
            Error::UnknownEngine { .. } => "UnknownEngine",
            Error::UnknownPrecision { .. } => "UnknownPrecision",
            Error::InvalidModelConfig(_) => "InvalidModelConfig",
            Error::InvalidValue { .. } => "InvalidValue",
            Error::Unsupported(_) => "Unsupported",
            Error::Io(_) => "Io",
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidValue {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the simulator library.
pub type Result<T> = std::result::Result<T, Error>;
