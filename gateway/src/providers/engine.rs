//! Self-hosted OpenAI-compatible engines (vLLM, SGLang, TGI, llama.cpp, the simulator's
//! emulator): the OpenAI wire format against each ready pod, chosen by the balancer.

use async_trait::async_trait;
use serde_json::Value;

use super::openai::OpenAiProvider;
use super::{ChunkStream, Operation, Provider, ProviderError, Timeouts};
use crate::routing::spec::ProviderKind;

#[derive(Debug, Clone)]
pub struct EngineProvider {
    /// One per client of the pool (several h2c connections, or one HTTP/1.1 pool).
    inners: Vec<OpenAiProvider>,
}

impl EngineProvider {
    /// `api_key` is sent as a bearer token when the engine was started with one.
    pub fn new(clients: Vec<reqwest::Client>, api_key: Option<String>) -> Self {
        assert!(!clients.is_empty(), "an engine provider needs a client");
        Self {
            inners: clients
                .into_iter()
                .map(|c| OpenAiProvider::new(ProviderKind::Engine, c, api_key.clone()))
                .collect(),
        }
    }

    fn inner(&self) -> &OpenAiProvider {
        &self.inners[fastrand::usize(..self.inners.len())]
    }
}

#[async_trait]
impl Provider for EngineProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Engine
    }

    async fn infer(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        self.inner().infer(base_url, op, body, timeouts).await
    }

    async fn infer_stream(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        self.inner()
            .infer_stream(base_url, op, body, timeouts)
            .await
    }
}
