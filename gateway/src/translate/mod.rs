//! Pure translations between wire formats. No I/O: every function takes values (and the
//! time, where a response needs one) and returns values, so golden tests pin them exactly.

pub mod anthropic;

/// A request that cannot be expressed in the target format; rendered as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TranslateError(pub String);

impl TranslateError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
