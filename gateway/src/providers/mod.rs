//! Upstream providers: one trait, one file per provider.
//!
//! The gateway's canonical request and response shape is OpenAI chat/completions/embeddings
//! JSON. A provider takes a canonical body (with `model` already set to the upstream model)
//! and returns canonical JSON, or a stream of canonical chunks; providers that speak another
//! wire format translate both ways (see [`crate::translate`]).

pub mod anthropic;
pub mod azure;
pub mod engine;
pub mod openai;
pub mod openai_wire;
pub mod sse;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde_json::Value;

use crate::routing::spec::ProviderKind;

/// Which OpenAI operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Completions,
    Embeddings,
}

impl Operation {
    pub fn path(self) -> &'static str {
        match self {
            Operation::Chat => "/chat/completions",
            Operation::Completions => "/completions",
            Operation::Embeddings => "/embeddings",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completions => "completions",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// A stream of canonical (OpenAI) chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, ProviderError>> + Send>>;

/// What went wrong talking to an upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("could not connect to upstream: {0}")]
    Connect(String),
    #[error("upstream timed out ({0})")]
    Timeout(&'static str),
    #[error("upstream returned {status}: {message}")]
    Status { status: u16, message: String },
    #[error("upstream response could not be decoded: {0}")]
    Decode(String),
    #[error("upstream stream failed: {0}")]
    Stream(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("request cannot be translated: {0}")]
    Translation(String),
}

impl ProviderError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "connect",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Status { status, .. } if *status >= 500 => "status_5xx",
            ProviderError::Status { status: 429, .. } => "status_429",
            ProviderError::Status { .. } => "status_4xx",
            ProviderError::Decode(_) => "decode",
            ProviderError::Stream(_) => "stream",
            ProviderError::Unsupported(_) => "unsupported",
            ProviderError::Translation(_) => "translation",
        }
    }

    /// Whether another endpoint or deployment may be tried (before any byte was streamed).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_) | ProviderError::Timeout(_) => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            ProviderError::Stream(_) => true,
            _ => false,
        }
    }

    /// Whether this failure counts against the endpoint's health.
    pub fn is_health_failure(&self) -> bool {
        match self {
            ProviderError::Connect(_) | ProviderError::Timeout(_) | ProviderError::Stream(_) => {
                true
            }
            ProviderError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Per-call timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until the response headers (and, for streams, the first event) arrive.
    pub first_byte: Duration,
    /// The whole request, streams included.
    pub total: Duration,
}

/// One upstream protocol. Implementations are cheap to clone into a snapshot.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ProviderKind;

    /// A non-streaming call; returns the canonical response body.
    async fn infer(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError>;

    /// A streaming call; resolves once the upstream accepted the request.
    async fn infer_stream(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError>;

    /// Whether the upstream speaks Anthropic Messages natively: `/v1/messages` requests are
    /// then sent as the caller wrote them, without a round trip through the OpenAI shape.
    fn speaks_anthropic(&self) -> bool {
        false
    }

    /// A native Anthropic Messages call; returns the upstream's message as is.
    async fn messages(
        &self,
        _base_url: &str,
        _body: &Value,
        _timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        Err(ProviderError::Unsupported(
            "this provider does not speak Anthropic Messages".into(),
        ))
    }

    /// A native streaming Anthropic Messages call: each item is one event's data (its `type`
    /// names the event). An `error` event becomes an error item.
    async fn messages_stream(
        &self,
        _base_url: &str,
        _body: &Value,
        _timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        Err(ProviderError::Unsupported(
            "this provider does not speak Anthropic Messages".into(),
        ))
    }

    /// A cheap GET used to re-admit an ejected endpoint.
    fn probe_url(&self, base_url: &str) -> String {
        format!("{base_url}/models")
    }
}

/// HTTP clients shared by all providers: connection pools live across snapshots.
#[derive(Debug, Clone)]
pub struct HttpClients {
    /// HTTP/1.1 (and HTTP/2 via ALPN for TLS upstreams).
    pub default: reqwest::Client,
    /// HTTP/2 with prior knowledge (h2c) for engines that speak it: several clients, so
    /// several connections per engine (one HTTP/2 connection serialises on one socket).
    /// Empty: engines get HTTP/1.1 from `default`.
    pub h2c: Vec<reqwest::Client>,
}

impl HttpClients {
    /// `h2c_connections` > 0 speaks h2c to engines over that many connections per engine.
    pub fn new(connect_timeout: Duration, h2c_connections: usize) -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .connect_timeout(connect_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Self {
            default: base().build()?,
            h2c: (0..h2c_connections)
                .map(|_| base().http2_prior_knowledge().build())
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Builds the provider for one deployment.
pub fn build_provider(
    kind: ProviderKind,
    clients: &HttpClients,
    credential: Option<String>,
    api_version: Option<String>,
    azure_deployment: Option<String>,
) -> Arc<dyn Provider> {
    match kind {
        ProviderKind::Engine => {
            let pool = if clients.h2c.is_empty() {
                vec![clients.default.clone()]
            } else {
                clients.h2c.clone()
            };
            Arc::new(engine::EngineProvider::new(pool, credential))
        }
        ProviderKind::OpenAI | ProviderKind::Together | ProviderKind::OpenAICompatible => Arc::new(
            openai::OpenAiProvider::new(kind, clients.default.clone(), credential),
        ),
        ProviderKind::AzureOpenAI => Arc::new(azure::AzureOpenAiProvider::new(
            clients.default.clone(),
            credential,
            api_version,
            azure_deployment,
        )),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(
            clients.default.clone(),
            credential,
        )),
    }
}

/// The base URL used when a route names none.
pub fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAI => Some("https://api.openai.com/v1"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
        ProviderKind::Together => Some("https://api.together.xyz/v1"),
        ProviderKind::Engine | ProviderKind::AzureOpenAI | ProviderKind::OpenAICompatible => None,
    }
}
