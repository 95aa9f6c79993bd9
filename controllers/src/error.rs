//! The controllers' error type. Each variant maps to a fixed category string used in
//! metrics labels and Events, so their cardinality stays bounded.

/// An error of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed or refused a request; transient, retried with backoff.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object's spec cannot be acted on; waits for the user to change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::InvalidSpec(_) => "InvalidSpec",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
