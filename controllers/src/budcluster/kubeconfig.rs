//! Clusters reached through a kubeconfig held in a Secret: `type: Kubeconfig`, and EKS/AKS
//! clusters once the operator has written their kubeconfig Secret.
//!
//! Each connected cluster gets one background task ([`follow_cluster`]) that owns the
//! connection: it probes the server version, checks the permissions the operator needs
//! (SelfSubjectAccessReview), and keeps a node watch open, with reconnects and backoff. The
//! task publishes a [`Snapshot`] and pokes the controller when the snapshot changes, so
//! reconcile never waits on a remote cluster and a slow or dead cluster delays only its own
//! task. A changed Secret (rotated credentials) gives a new fingerprint, which replaces the
//! task and its client.
//!
//! This module must not write anything to the remote cluster: it only reads nodes and asks
//! what it may do.

use super::{Blocker, Inventory, inventory_from_nodes};
use bud_crds::BudCluster;
use bud_crds::common::NamespacedSecretKeyRef;
use futures::channel::mpsc::UnboundedSender;
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Namespace for model workloads when `spec.workloadNamespace` is not set.
pub const DEFAULT_WORKLOAD_NAMESPACE: &str = "bud-workloads";
/// How often the task asks a connected cluster for its version (the liveness probe).
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe that takes longer than this counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often granted permissions are checked again while nothing is missing.
const PERMISSIONS_EVERY: Duration = Duration::from_secs(60);
/// TCP connect timeout of clients built from kubeconfig Secrets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A kubeconfig read from a Secret, checked and ready to build a client from.
#[derive(Clone, Debug)]
pub struct KubeconfigSource {
    pub kubeconfig: Kubeconfig,
    pub context: Option<String>,
    /// The API server URL of the selected context (for messages).
    pub server: String,
    /// Hash of the Secret's kubeconfig text and the context: changes when credentials rotate.
    pub fingerprint: String,
}

/// Parses and checks a kubeconfig taken from a Secret. Rejects what would make the operator
/// run a program or read its own files on behalf of whoever wrote the Secret: `exec` and
/// `auth-provider` plugins, and file paths (`certificate-authority`, `client-certificate`,
/// `client-key`, `tokenFile`). Pure.
pub fn parse_kubeconfig(text: &str, context: Option<&str>) -> Result<KubeconfigSource, String> {
    let kubeconfig =
        Kubeconfig::from_yaml(text).map_err(|e| format!("the kubeconfig does not parse: {e}"))?;
    let context_name = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or("the kubeconfig has no current-context; set spec.kubeconfig.context")?;
    let ctx = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("the kubeconfig has no context {context_name:?}"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("the kubeconfig has no cluster {:?}", ctx.cluster))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| format!("cluster {:?} has no server address", ctx.cluster))?;
    if cluster.certificate_authority.is_some() {
        return Err(format!(
            "cluster {:?} names a certificate-authority file; embed it as certificate-authority-data",
            ctx.cluster
        ));
    }
    if let Some(user_name) = &ctx.user {
        let user = kubeconfig
            .auth_infos
            .iter()
            .find(|u| &u.name == user_name)
            .and_then(|u| u.auth_info.clone())
            .ok_or_else(|| format!("the kubeconfig has no user {user_name:?}"))?;
        let mut refused = Vec::new();
        if user.exec.is_some() {
            refused.push("exec");
        }
        if user.auth_provider.is_some() {
            refused.push("auth-provider");
        }
        if user.token_file.is_some() {
            refused.push("tokenFile");
        }
        if user.client_certificate.is_some() {
            refused.push("client-certificate");
        }
        if user.client_key.is_some() {
            refused.push("client-key");
        }
        if !refused.is_empty() {
            return Err(format!(
                "user {user_name:?} uses {}, which the operator does not run or read; use a token or embedded client-certificate-data/client-key-data",
                refused.join(", ")
            ));
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    hasher.update([0]);
    hasher.update(context_name.as_bytes());
    Ok(KubeconfigSource {
        kubeconfig,
        context: Some(context_name),
        server,
        fingerprint: hex::encode(&hasher.finalize()[..12]),
    })
}

/// Reads the kubeconfig named by `secret_ref`. The error is the `Ready=False` blocker.
pub async fn read_kubeconfig_secret(
    client: &Client,
    secret_ref: &NamespacedSecretKeyRef,
    context: Option<&str>,
) -> Result<KubeconfigSource, Blocker> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret_ref.namespace);
    let where_ = format!(
        "Secret {}/{} key {:?}",
        secret_ref.namespace, secret_ref.name, secret_ref.key
    );
    let secret = match api.get_opt(&secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(Blocker::new(
                "KubeconfigSecretNotFound",
                format!(
                    "Secret {}/{} does not exist; create it with the cluster's kubeconfig under key {:?}",
                    secret_ref.namespace, secret_ref.name, secret_ref.key
                ),
            ));
        }
        Err(err) => {
            return Err(Blocker::new(
                "KubeconfigSecretUnreadable",
                format!(
                    "cannot read Secret {}/{}: {}",
                    secret_ref.namespace,
                    secret_ref.name,
                    short_error(&err)
                ),
            ));
        }
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            Blocker::new(
                "InvalidKubeconfig",
                format!("{where_} is missing; put the kubeconfig there"),
            )
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Blocker::new("InvalidKubeconfig", format!("{where_} is not UTF-8 text")))?;
    parse_kubeconfig(&text, context)
        .map_err(|msg| Blocker::new("InvalidKubeconfig", format!("{where_}: {msg}")))
}

/// Builds a client from a checked kubeconfig.
pub async fn client_from(source: &KubeconfigSource) -> Result<Client, Blocker> {
    let options = KubeConfigOptions {
        context: source.context.clone(),
        cluster: None,
        user: None,
    };
    let mut config = Config::from_custom_kubeconfig(source.kubeconfig.clone(), &options)
        .await
        .map_err(|e| {
            Blocker::new(
                "InvalidKubeconfig",
                format!("the kubeconfig is unusable: {e}"),
            )
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::try_from(config)
        .map_err(|e| Blocker::new("InvalidKubeconfig", format!("cannot build a client: {e}")))
}

/// Why a connected cluster cannot be used right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No answer, a refused connection, a TLS failure or a server error.
    Unreachable(String),
    /// The credentials were rejected (401) or an operation was forbidden (403).
    Unauthorized(String),
}

/// What the task knows about its cluster, published for reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Server address, for messages.
    pub server: String,
    /// The inventory of the last complete node list (kept while the cluster is unreachable).
    pub inventory: Option<Inventory>,
    pub kubernetes_version: Option<String>,
    /// The current failure, if any.
    pub error: Option<LinkError>,
    /// Permissions the operator needs and lacks, by name (`list nodes`, ...).
    pub missing_permissions: Vec<String>,
    /// Whether permissions were checked at least once.
    pub permissions_checked: bool,
}

impl Snapshot {
    /// The `Ready=False` blocker this snapshot implies, or `None` when the cluster is usable.
    /// Pure.
    pub fn blocker(&self, workload_namespace: &str) -> Option<Blocker> {
        match &self.error {
            Some(LinkError::Unreachable(why)) => {
                return Some(Blocker::new(
                    "Unreachable",
                    format!(
                        "cannot reach the API server at {}: {why}; check that it is running and reachable from the operator{}",
                        self.server,
                        if self.inventory.is_some() {
                            " (the inventory shown is the last one read)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            Some(LinkError::Unauthorized(why)) => {
                return Some(Blocker::new(
                    "Unauthorized",
                    format!(
                        "the API server at {} refused the kubeconfig's credentials: {why}; update the Secret with valid credentials",
                        self.server
                    ),
                ));
            }
            None => {}
        }
        if !self.missing_permissions.is_empty() {
            return Some(Blocker::new(
                "Unauthorized",
                format!(
                    "the kubeconfig's user lacks permission to: {}; grant them (a ClusterRole for nodes, a Role in namespace {workload_namespace} for workloads)",
                    self.missing_permissions.join(", ")
                ),
            ));
        }
        if self.inventory.is_none() || !self.permissions_checked {
            return Some(Blocker::new(
                "Connecting",
                format!("connecting to the API server at {}", self.server),
            ));
        }
        None
    }
}

/// A permission the operator needs on a connected cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    /// `None` for cluster-wide.
    pub namespace: Option<String>,
}

impl Permission {
    /// `list nodes`, `create deployments.apps in namespace models`.
    pub fn describe(&self) -> String {
        let resource = if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match &self.namespace {
            Some(ns) => format!("{} {resource} in namespace {ns}", self.verb),
            None => format!("{} {resource}", self.verb),
        }
    }
}

/// What the operator needs on a cluster it serves models on: read nodes for the inventory,
/// and create and follow engine workloads in the workload namespace.
pub fn required_permissions(workload_namespace: &str) -> Vec<Permission> {
    let ns = || Some(workload_namespace.to_owned());
    vec![
        Permission {
            verb: "list",
            group: "",
            resource: "nodes",
            namespace: None,
        },
        Permission {
            verb: "watch",
            group: "",
            resource: "nodes",
            namespace: None,
        },
        Permission {
            verb: "create",
            group: "apps",
            resource: "deployments",
            namespace: ns(),
        },
        Permission {
            verb: "patch",
            group: "apps",
            resource: "deployments",
            namespace: ns(),
        },
        Permission {
            verb: "create",
            group: "",
            resource: "services",
            namespace: ns(),
        },
        Permission {
            verb: "list",
            group: "",
            resource: "pods",
            namespace: ns(),
        },
    ]
}

/// Asks the cluster, one SelfSubjectAccessReview per permission, which ones are missing.
async fn missing_permissions(
    client: &Client,
    workload_namespace: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for permission in required_permissions(workload_namespace) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(permission.verb.to_owned()),
                    group: Some(permission.group.to_owned()),
                    resource: Some(permission.resource.to_owned()),
                    namespace: permission.namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(permission.describe());
        }
    }
    Ok(missing)
}

/// The innermost cause of an error, which is the part a person can act on
/// (`Connection refused (os error 111)` rather than `client error (Connect)`).
pub fn short_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let inner = cause.to_string();
    let outer = err.to_string();
    if inner == outer {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

/// Sorts a client error into the two failure kinds.
pub fn classify(err: &kube::Error) -> LinkError {
    match err {
        kube::Error::Api(status) if status.code == 401 => {
            LinkError::Unauthorized("401 Unauthorized".to_owned())
        }
        kube::Error::Api(status) if status.code == 403 => {
            LinkError::Unauthorized(format!("403 Forbidden: {}", status.message))
        }
        kube::Error::Api(status) => {
            LinkError::Unreachable(format!("HTTP {}: {}", status.code, status.message))
        }
        other => LinkError::Unreachable(short_error(other)),
    }
}

fn classify_watch(err: &watcher::Error) -> LinkError {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => classify(e),
        watcher::Error::WatchError(status) if status.code == 401 || status.code == 403 => {
            LinkError::Unauthorized(format!("{} {}", status.code, status.message))
        }
        other => LinkError::Unreachable(other.to_string()),
    }
}

/// One connection: the background task and what it last published.
struct Link {
    fingerprint: String,
    snapshot: watch::Receiver<Snapshot>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The connections to remote clusters, by BudCluster name. Reconcile asks it for a
/// snapshot; the tasks poke the controller through `notify` when theirs changes.
pub struct Connections {
    links: Mutex<HashMap<String, Link>>,
    notify: UnboundedSender<ObjectRef<BudCluster>>,
}

impl Connections {
    pub fn new(notify: UnboundedSender<ObjectRef<BudCluster>>) -> Self {
        Self {
            links: Mutex::new(HashMap::new()),
            notify,
        }
    }

    /// The snapshot of `name`'s connection made from `source`, starting (or, when the
    /// kubeconfig changed, restarting) its task first. Never waits on the remote cluster.
    pub fn snapshot(
        &self,
        name: &str,
        source: &KubeconfigSource,
        client: impl FnOnce() -> Client,
        workload_namespace: &str,
    ) -> Snapshot {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(name)
            && link.fingerprint == source.fingerprint
            && !link.task.is_finished()
        {
            return link.snapshot.borrow().clone();
        }
        let initial = Snapshot {
            server: source.server.clone(),
            ..Default::default()
        };
        let (tx, rx) = watch::channel(initial.clone());
        let task = tokio::spawn(follow_cluster(
            name.to_owned(),
            client(),
            workload_namespace.to_owned(),
            tx,
            self.notify.clone(),
        ));
        if links.contains_key(name) {
            tracing::info!(budcluster = %name, "kubeconfig changed; reconnecting");
        }
        links.insert(
            name.to_owned(),
            Link {
                fingerprint: source.fingerprint.clone(),
                snapshot: rx,
                task,
            },
        );
        initial
    }

    /// Whether a connection with this fingerprint is open.
    pub fn is_current(&self, name: &str, fingerprint: &str) -> bool {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .get(name)
            .is_some_and(|l| l.fingerprint == fingerprint)
    }

    /// Closes the connection of `name`.
    pub fn disconnect(&self, name: &str) {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Closes the connections of clusters not in `keep` (deleted BudClusters).
    pub fn retain(&self, keep: &HashSet<String>) {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| keep.contains(name));
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type NodeEvents = BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>>;

fn node_watch(client: &Client) -> (Store<Node>, NodeEvents) {
    let (store, writer) = reflector::store::<Node>();
    let events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|node| node.managed_fields_mut().clear())
        .reflect(writer)
        .boxed();
    (store, events)
}

/// The task that owns one cluster's connection. Runs until aborted (the BudCluster was
/// deleted or its kubeconfig changed).
async fn follow_cluster(
    name: String,
    client: Client,
    workload_namespace: String,
    snapshot_tx: watch::Sender<Snapshot>,
    notify: UnboundedSender<ObjectRef<BudCluster>>,
) {
    let object = ObjectRef::<BudCluster>::new(&name);
    let mut snapshot = snapshot_tx.borrow().clone();
    let (mut store, mut events) = node_watch(&client);
    let mut synced = false;
    let mut watch_error: Option<LinkError> = None;
    let mut probe_error: Option<LinkError> = None;
    let mut permissions_checked_at: Option<Instant> = None;
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    synced = true;
                    watch_error = None;
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => watch_error = None,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    let kind = classify_watch(&err);
                    tracing::debug!(budcluster = %name, error = ?kind, "node watch failed");
                    watch_error = Some(kind);
                }
                None => return,
            },
            _ = probe.tick() => {
                let was_failing = probe_error.is_some();
                match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
                    Ok(Ok(info)) => {
                        snapshot.kubernetes_version = Some(info.git_version);
                        probe_error = None;
                        if was_failing {
                            // The server is back: start a fresh watch now instead of
                            // waiting out the old one's backoff (or a hung request).
                            (store, events) = node_watch(&client);
                        }
                        let due = !snapshot.missing_permissions.is_empty()
                            || permissions_checked_at.is_none_or(|at| at.elapsed() >= PERMISSIONS_EVERY);
                        if due {
                            match tokio::time::timeout(PROBE_TIMEOUT, missing_permissions(&client, &workload_namespace)).await {
                                Ok(Ok(missing)) => {
                                    snapshot.missing_permissions = missing;
                                    snapshot.permissions_checked = true;
                                    permissions_checked_at = Some(Instant::now());
                                }
                                Ok(Err(err)) => probe_error = Some(classify(&err)),
                                Err(_) => probe_error = Some(LinkError::Unreachable(format!("no answer within {PROBE_TIMEOUT:?}"))),
                            }
                        }
                    }
                    Ok(Err(err)) => probe_error = Some(classify(&err)),
                    Err(_) => probe_error = Some(LinkError::Unreachable(format!("no answer within {PROBE_TIMEOUT:?}"))),
                }
            }
        }
        if synced {
            let nodes = store.state();
            snapshot.inventory = Some(inventory_from_nodes(nodes.iter().map(|n| n.as_ref())));
        }
        // A watch that cannot list nodes because of RBAC is reported through the
        // permission check, by name; other watch failures count as they are.
        let watch_failure = match &watch_error {
            Some(LinkError::Unauthorized(_)) if !snapshot.missing_permissions.is_empty() => None,
            other => other.clone(),
        };
        snapshot.error = probe_error.clone().or(watch_failure);
        let changed = snapshot_tx.send_if_modified(|current| {
            if *current == snapshot {
                false
            } else {
                *current = snapshot.clone();
                true
            }
        });
        if changed && notify.unbounded_send(object.clone()).is_err() {
            return;
        }
    }
}

/// The namespace model workloads go to on this cluster.
pub fn workload_namespace(cluster: &BudCluster) -> String {
    cluster
        .spec
        .workload_namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_WORKLOAD_NAMESPACE.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: work
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Zm9v
users:
- name: admin
  user:
    token: secret-token
- name: plugin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token"]
contexts:
- name: work
  context: {cluster: work, user: admin}
- name: sneaky
  context: {cluster: work, user: plugin}
current-context: work
"#;

    #[test]
    fn a_token_kubeconfig_is_accepted_and_fingerprinted() {
        let source = parse_kubeconfig(KUBECONFIG, None).unwrap();
        assert_eq!(source.server, "https://127.0.0.1:6443");
        assert_eq!(source.context.as_deref(), Some("work"));
        let again = parse_kubeconfig(KUBECONFIG, None).unwrap();
        assert_eq!(source.fingerprint, again.fingerprint);
        let rotated = parse_kubeconfig(&KUBECONFIG.replace("secret-token", "new"), None).unwrap();
        assert_ne!(
            source.fingerprint, rotated.fingerprint,
            "rotation reconnects"
        );
    }

    #[test]
    fn plugins_files_and_missing_contexts_are_refused_by_name() {
        let err = parse_kubeconfig(KUBECONFIG, Some("sneaky")).unwrap_err();
        assert!(err.contains("exec"), "{err}");
        let err = parse_kubeconfig(KUBECONFIG, Some("nope")).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
        let with_file = KUBECONFIG.replace(
            "certificate-authority-data: Zm9v",
            "certificate-authority: /etc/ca.crt",
        );
        let err = parse_kubeconfig(&with_file, None).unwrap_err();
        assert!(err.contains("certificate-authority-data"), "{err}");
        assert!(parse_kubeconfig("not: [yaml", None).is_err());
    }

    #[test]
    fn permissions_are_named_for_people() {
        let names: Vec<_> = required_permissions("models")
            .iter()
            .map(Permission::describe)
            .collect();
        assert_eq!(
            names,
            [
                "list nodes",
                "watch nodes",
                "create deployments.apps in namespace models",
                "patch deployments.apps in namespace models",
                "create services in namespace models",
                "list pods in namespace models",
            ]
        );
    }

    fn connected() -> Snapshot {
        Snapshot {
            server: "https://10.0.0.1".into(),
            inventory: Some(Inventory::default()),
            kubernetes_version: Some("v1.33.1".into()),
            permissions_checked: true,
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_map_to_ready_reasons() {
        assert_eq!(connected().blocker("models"), None);
        let connecting = Snapshot {
            inventory: None,
            ..connected()
        };
        assert_eq!(connecting.blocker("models").unwrap().reason, "Connecting");

        let down = Snapshot {
            error: Some(LinkError::Unreachable("Connection refused".into())),
            ..connected()
        };
        let b = down.blocker("models").unwrap();
        assert_eq!(b.reason, "Unreachable");
        assert!(b.message.contains("https://10.0.0.1"), "{}", b.message);
        assert!(b.message.contains("Connection refused"), "{}", b.message);
        assert!(b.message.contains("last one read"), "{}", b.message);

        let rejected = Snapshot {
            error: Some(LinkError::Unauthorized("401 Unauthorized".into())),
            ..connected()
        };
        assert_eq!(rejected.blocker("models").unwrap().reason, "Unauthorized");

        let limited = Snapshot {
            missing_permissions: vec![
                "list nodes".into(),
                "create services in namespace models".into(),
            ],
            ..connected()
        };
        let b = limited.blocker("models").unwrap();
        assert_eq!(b.reason, "Unauthorized");
        assert!(
            b.message
                .contains("list nodes, create services in namespace models"),
            "{}",
            b.message
        );
    }

    #[test]
    fn api_errors_are_classified_by_code() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..Default::default()
            }))
        };
        assert!(matches!(classify(&status(401)), LinkError::Unauthorized(_)));
        assert!(matches!(classify(&status(403)), LinkError::Unauthorized(_)));
        assert!(matches!(classify(&status(503)), LinkError::Unreachable(_)));
    }
}
