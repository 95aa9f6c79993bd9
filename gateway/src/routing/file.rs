//! The file source: routes, keys and credentials from one YAML file, reloaded on change.
//!
//! A file that fails to parse on reload keeps the previous snapshot in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::snapshot::{Snapshot, SnapshotBuilder};
use super::spec::{CredentialSpec, RoutingSpec};

/// Parses a routes file's contents.
pub fn parse(contents: &str) -> Result<RoutingSpec, serde_yaml::Error> {
    if contents.trim().is_empty() {
        return Ok(RoutingSpec::default());
    }
    serde_yaml::from_str(contents)
}

/// Resolves file-mode credentials: inline `value` or the environment variable it names.
pub fn credential_lookup(
    credentials: &[CredentialSpec],
) -> impl Fn(&str, &str, &str) -> Option<String> + '_ {
    move |namespace, name, key| {
        credentials
            .iter()
            .find(|c| {
                c.name == name
                    && c.key == key
                    && c.namespace.as_deref().is_none_or(|n| n == namespace)
            })
            .and_then(|c| {
                c.value.clone().or_else(|| {
                    c.value_from_env
                        .as_ref()
                        .and_then(|v| std::env::var(v).ok())
                })
            })
    }
}

/// Builds a snapshot from a routes file's contents.
pub fn build_from_str(builder: &SnapshotBuilder, contents: &str) -> anyhow::Result<Snapshot> {
    let spec = parse(contents)?;
    Ok(builder.build(&spec, &credential_lookup(&spec.credentials)))
}

/// Watches a routes file and swaps in a new snapshot whenever its contents change.
pub struct FileSource {
    pub path: PathBuf,
    pub builder: Arc<SnapshotBuilder>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub poll_interval: Duration,
}

impl FileSource {
    /// Loads the file once; the first load must succeed.
    pub fn load(&self) -> anyhow::Result<String> {
        let contents = std::fs::read_to_string(&self.path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.path.display()))?;
        let snapshot = build_from_str(&self.builder, &contents)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", self.path.display()))?;
        log_snapshot(&self.path, &snapshot);
        self.snapshot.store(Arc::new(snapshot));
        Ok(contents)
    }

    /// Polls the file; runs until the task is dropped. `on_reload` reports each attempt.
    pub async fn watch(self, mut last: String, on_reload: impl Fn(bool) + Send + 'static) {
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Ok(contents) = tokio::fs::read_to_string(&self.path).await else {
                continue;
            };
            if contents == last {
                continue;
            }
            match build_from_str(&self.builder, &contents) {
                Ok(snapshot) => {
                    log_snapshot(&self.path, &snapshot);
                    self.snapshot.store(Arc::new(snapshot));
                    on_reload(true);
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "routes file is invalid; keeping the previous routes");
                    on_reload(false);
                }
            }
            last = contents;
        }
    }
}

fn log_snapshot(path: &Path, snapshot: &Snapshot) {
    for warning in &snapshot.warnings {
        tracing::warn!(path = %path.display(), "{warning}");
    }
    tracing::info!(
        path = %path.display(),
        models = snapshot.model_count(),
        keys = snapshot.key_count(),
        "routes loaded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_resolve_inline_and_by_namespace() {
        let creds = vec![
            CredentialSpec {
                namespace: Some("a".into()),
                name: "s".into(),
                key: "k".into(),
                value: Some("A".into()),
                value_from_env: None,
            },
            CredentialSpec {
                namespace: None,
                name: "s".into(),
                key: "k".into(),
                value: Some("ANY".into()),
                value_from_env: None,
            },
        ];
        let lookup = credential_lookup(&creds);
        assert_eq!(lookup("a", "s", "k").as_deref(), Some("A"));
        assert_eq!(lookup("b", "s", "k").as_deref(), Some("ANY"));
        assert_eq!(lookup("b", "s", "other"), None);
    }

    #[test]
    fn empty_file_is_empty_routes() {
        assert_eq!(parse("  \n").unwrap(), RoutingSpec::default());
        assert!(parse("deployments: 3").is_err());
        assert!(parse("unknownField: 1").is_err());
    }
}
