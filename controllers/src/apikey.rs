//! The `ApiKey` controller: generates a key once into a Secret (owned by the ApiKey) and
//! publishes only its SHA-256 hash, a hint and a stable id in status, which the gateway
//! matches presented keys against. Deleting the Secret rotates the key. The key itself never
//! reaches status, Events or logs.

use crate::{Context, Error, FIELD_MANAGER, Result};
use bud_crds::conditions::{READY, differ_ignoring_time, new_condition, set_condition};
use bud_crds::{ApiKey, ApiKeyStatus};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "apikey";
/// Key of the Secret's data entry holding the key.
pub const SECRET_KEY: &str = "apiKey";
/// Prefix of generated keys, so that leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "bud-";

/// `sha256:<hex>` of a key, the form status and the gateway use.
pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new key: the prefix and 32 random bytes in URL-safe alphabet.
pub fn generate_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{KEY_PREFIX}{body}"))
}

/// The Secret name of an ApiKey.
pub fn secret_name(key: &ApiKey) -> String {
    key.spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-key", key.name_any()))
}

/// Status for a key whose plaintext is `key` (read from its Secret), at `now`.
pub fn plan_status(api_key: &ApiKey, key: &str, now: Timestamp) -> ApiKeyStatus {
    let generation = api_key.metadata.generation;
    let previous = api_key.status.clone().unwrap_or_default();
    let mut status = ApiKeyStatus {
        conditions: previous.conditions,
        observed_generation: generation,
        key_hash: Some(key_hash(key)),
        key_id: api_key.metadata.uid.clone(),
        key_hint: Some(
            key.chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
        ),
        secret_name: Some(secret_name(api_key)),
        spent: previous.spent,
    };
    let expired = api_key.spec.expires_at.as_ref().is_some_and(|t| t.0 <= now);
    let (ready, reason, message) = if api_key.spec.disabled {
        (
            false,
            "Disabled",
            "spec.disabled is true; requests with this key are rejected".to_owned(),
        )
    } else if expired {
        (
            false,
            "Expired",
            "spec.expiresAt has passed; set a later time to use the key again".to_owned(),
        )
    } else {
        (
            true,
            "KeyIssued",
            format!(
                "key …{} is in Secret {}",
                status.key_hint.clone().unwrap_or_default(),
                secret_name(api_key)
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        new_condition(READY, ready, reason, message, generation, now),
    );
    status
}

async fn reconcile(api_key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ControllerLabels {
            controller: CONTROLLER,
        })
        .inc();
    let namespace = api_key.namespace().unwrap_or_default();
    let name = api_key.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = secret_name(&api_key);
    let existing = secrets
        .get_opt(&secret_name)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get(SECRET_KEY)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        });
    let (key, issued) = match existing {
        Some(key) if !key.is_empty() => (key, false),
        _ => {
            let key = generate_key()
                .map_err(|e| Error::InvalidSpec(format!("cannot read randomness: {e}")))?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.clone()),
                    namespace: Some(namespace.clone()),
                    owner_references: api_key.controller_owner_ref(&()).map(|o| vec![o]),
                    labels: Some(BTreeMap::from([(
                        "bud.studio/api-key".to_owned(),
                        name.clone(),
                    )])),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    SECRET_KEY.to_owned(),
                    ByteString(key.clone().into_bytes()),
                )])),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Err(Error::InvalidSpec(format!(
                        "Secret {secret_name} exists without a `{SECRET_KEY}` entry; delete it or choose another spec.secretName"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            (key, true)
        }
    };
    let now = Timestamp::now();
    let previous = api_key.status.clone().unwrap_or_default();
    let status = plan_status(&api_key, &key, now);
    let changed = previous.key_hash != status.key_hash
        || previous.secret_name != status.secret_name
        || previous.key_id != status.key_id
        || previous.observed_generation != status.observed_generation
        || differ_ignoring_time(&previous.conditions, &status.conditions);
    if changed {
        let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"apiVersion": "bud.studio/v1alpha1", "kind": "ApiKey", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    if issued {
        let note = format!(
            "generated a key into Secret {secret_name} (hint …{})",
            status.key_hint.clone().unwrap_or_default()
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "KeyIssued".into(),
            note: Some(note),
            action: "IssueKey".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &api_key.object_ref(&())).await {
            tracing::warn!(error = %err, "could not record event");
        }
    }
    ctx.backoff.reset(&format!("{namespace}/{name}"));
    // Wake up when the key expires, so Ready turns False on time.
    let until_expiry = api_key
        .spec
        .expires_at
        .as_ref()
        .map(|t| t.0.duration_since(now).as_secs())
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64 + 1));
    Ok(Action::requeue(
        until_expiry
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600)),
    ))
}

fn error_policy(api_key: Arc<ApiKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        api_key.namespace().unwrap_or_default(),
        api_key.name_any()
    );
    ctx.requeue_after_error(CONTROLLER, &key, error)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<ApiKey>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Secret>::all(client),
        watcher::Config::default().labels("bud.studio/api-key"),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::ApiKeySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn api_key(disabled: bool, expires: Option<i64>) -> ApiKey {
        let mut k = ApiKey::new(
            "app",
            ApiKeySpec {
                description: None,
                models: vec![],
                limits: None,
                budget: None,
                expires_at: expires.map(|s| Time(Timestamp::from_second(s).unwrap())),
                secret_name: None,
                disabled,
            },
        );
        k.metadata.uid = Some("uid-1".into());
        k.metadata.generation = Some(1);
        k
    }

    #[test]
    fn status_holds_the_hash_never_the_key() {
        let key = "bud-abcdefghijklmnopqrstuvwxyz012345";
        let status = plan_status(&api_key(false, None), key, Timestamp::UNIX_EPOCH);
        assert_eq!(
            status.key_hash.as_deref(),
            Some("sha256:".to_owned() + &hex::encode(Sha256::digest(key))).as_deref()
        );
        assert_eq!(status.key_hint.as_deref(), Some("2345"));
        assert_eq!(status.key_id.as_deref(), Some("uid-1"));
        assert_eq!(status.secret_name.as_deref(), Some("app-key"));
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains(key), "status leaks the key: {json}");
        assert!(bud_crds::conditions::is_true(&status.conditions, READY));
    }

    #[test]
    fn disabled_and_expired_keys_are_not_ready() {
        let disabled = plan_status(&api_key(true, None), "bud-x", Timestamp::UNIX_EPOCH);
        assert_eq!(disabled.conditions[0].reason, "Disabled");
        let expired = plan_status(
            &api_key(false, Some(10)),
            "bud-x",
            Timestamp::from_second(20).unwrap(),
        );
        assert_eq!(
            (
                expired.conditions[0].status.as_str(),
                expired.conditions[0].reason.as_str()
            ),
            ("False", "Expired")
        );
        let valid = plan_status(
            &api_key(false, Some(30)),
            "bud-x",
            Timestamp::from_second(20).unwrap(),
        );
        assert_eq!(valid.conditions[0].status, "True");
    }

    #[test]
    fn generated_keys_are_distinct_and_prefixed() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 32);
    }
}
