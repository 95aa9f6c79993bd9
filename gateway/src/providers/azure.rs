//! Azure OpenAI: `{base}/openai/deployments/{deployment}/{op}?api-version=…` with the
//! `api-key` header; otherwise the OpenAI wire format.

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChunkStream, Operation, Provider, ProviderError, Timeouts, openai_wire};
use crate::routing::spec::ProviderKind;

pub const DEFAULT_API_VERSION: &str = "2024-10-21";

#[derive(Debug, Clone)]
pub struct AzureOpenAiProvider {
    client: reqwest::Client,
    api_key: Option<String>,
    api_version: String,
    deployment: Option<String>,
}

impl AzureOpenAiProvider {
    pub fn new(
        client: reqwest::Client,
        api_key: Option<String>,
        api_version: Option<String>,
        deployment: Option<String>,
    ) -> Self {
        Self {
            client,
            api_key,
            api_version: api_version.unwrap_or_else(|| DEFAULT_API_VERSION.to_string()),
            deployment,
        }
    }

    /// The request URL; the deployment defaults to the upstream model name.
    pub fn url(&self, base_url: &str, op: Operation, model: &str) -> String {
        let deployment = self.deployment.as_deref().unwrap_or(model);
        format!(
            "{}/openai/deployments/{}{}?api-version={}",
            base_url.trim_end_matches('/'),
            deployment,
            op.path(),
            self.api_version
        )
    }

    fn request(&self, base_url: &str, op: Operation, body: &mut Value) -> reqwest::RequestBuilder {
        let model = body
            .as_object_mut()
            .and_then(|o| o.remove("model"))
            .and_then(|m| m.as_str().map(str::to_string))
            .unwrap_or_default();
        let request = self.client.post(self.url(base_url, op, &model));
        match &self.api_key {
            Some(key) => request.header("api-key", key),
            None => request,
        }
    }
}

#[async_trait]
impl Provider for AzureOpenAiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureOpenAI
    }

    async fn infer(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let mut body = body.clone();
        let request = self.request(base_url, op, &mut body);
        let response = openai_wire::send(request, &body, timeouts).await?;
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
        let mut body = body.clone();
        let request = self.request(base_url, op, &mut body);
        let response = openai_wire::send(request, &body, timeouts).await?;
        Ok(openai_wire::openai_chunks(response, deadline))
    }

    fn probe_url(&self, base_url: &str) -> String {
        format!(
            "{}/openai/models?api-version={}",
            base_url.trim_end_matches('/'),
            self.api_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_deployment_url() {
        let p = AzureOpenAiProvider::new(
            reqwest::Client::new(),
            None,
            Some("2024-06-01".into()),
            Some("gpt4o-prod".into()),
        );
        assert_eq!(
            p.url("https://r.openai.azure.com/", Operation::Chat, "gpt-4o"),
            "https://r.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-06-01"
        );
    }
}
