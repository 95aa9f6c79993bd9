//! OpenAI and OpenAI-compatible services (OpenAI, Together, any base URL): bearer auth,
//! the OpenAI wire format as is.

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChunkStream, Operation, Provider, ProviderError, Timeouts, openai_wire};
use crate::routing::spec::ProviderKind;

#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    kind: ProviderKind,
    client: reqwest::Client,
    api_key: Option<String>,
}

impl OpenAiProvider {
    pub fn new(kind: ProviderKind, client: reqwest::Client, api_key: Option<String>) -> Self {
        Self {
            kind,
            client,
            api_key,
        }
    }

    fn request(&self, base_url: &str, op: Operation) -> reqwest::RequestBuilder {
        let request = self.client.post(format!("{base_url}{}", op.path()));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn infer(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let response = openai_wire::send(self.request(base_url, op), body, timeouts).await?;
        openai_wire::read_json(response, deadline).await
    }

    async fn infer_stream(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let response = openai_wire::send(self.request(base_url, op), body, timeouts).await?;
        Ok(openai_wire::openai_chunks(response, deadline))
    }
}
