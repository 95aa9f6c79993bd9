//! Self-hosted OpenAI-compatible engines (vLLM, SGLang, TGI, llama.cpp, the simulator's
//! emulator): the OpenAI wire format against each ready pod, chosen by the balancer.

use async_trait::async_trait;
use serde_json::Value;

use super::openai::OpenAiProvider;
use super::{ChunkStream, Operation, Provider, ProviderError, Timeouts};
use crate::routing::spec::ProviderKind;

#[derive(Debug, Clone)]
pub struct EngineProvider {
    inner: OpenAiProvider,
}

impl EngineProvider {
    /// `api_key` is sent as a bearer token when the engine was started with one.
    pub fn new(client: reqwest::Client, api_key: Option<String>) -> Self {
        Self {
            inner: OpenAiProvider::new(ProviderKind::Engine, client, api_key),
        }
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
        self.inner.infer(base_url, op, body, timeouts).await
    }

    async fn infer_stream(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        self.inner.infer_stream(base_url, op, body, timeouts).await
    }
}
