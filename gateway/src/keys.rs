//! API key authentication: the presented secret is hashed (SHA-256) and looked up in the
//! snapshot. Plaintext keys are never stored or logged.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::routing::{KeyEntry, Snapshot};

/// Lowercase hex SHA-256 of a secret.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The secret from `Authorization: Bearer …` or `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            let token = value[7..].trim();
            if !token.is_empty() {
                return Some(token);
            }
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Authenticates a request against the snapshot at `now`.
pub fn authenticate(
    headers: &HeaderMap,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<Arc<KeyEntry>, GatewayError> {
    let secret = presented_key(headers).ok_or_else(|| {
        GatewayError::unauthenticated(
            "Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )
    })?;
    let key = snapshot
        .key_by_hash(&hash_key(secret))
        .ok_or_else(|| GatewayError::unauthenticated("Invalid API key"))?;
    if key.disabled {
        return Err(GatewayError::unauthenticated("This API key is disabled"));
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(GatewayError::unauthenticated("This API key has expired"));
    }
    Ok(key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_bearer_and_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer  sk-1 ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sk-1"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sk-2"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&h), None);
    }
}
