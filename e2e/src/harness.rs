//! Helpers for tests against a real API server: a client from `KUBECONFIG`, waiting on a
//! condition with a deadline, per-test namespaces, registering the simulated fleet, and
//! running the operator binary as a child process.

use crate::fleet::{FLEET_LABEL, Fleet};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Field manager of everything the test tooling applies.
pub const FIELD_MANAGER: &str = "bud-e2e";

/// A client for the cluster `KUBECONFIG` names (the local control plane, or any cluster).
pub async fn client() -> anyhow::Result<Client> {
    anyhow::ensure!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start the local control plane with `make cluster-up` (or point KUBECONFIG at a cluster)"
    );
    install_crypto_provider();
    Ok(Client::try_default().await?)
}

/// Chooses rustls' ring provider for the process (kube's choice); harmless when already set.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A namespace of its own for one test; [`TestNamespace::delete`] removes it.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let suffix: u32 =
            std::process::id() ^ (Instant::now().elapsed().subsec_nanos()) ^ rand_u32();
        let name = format!("{prefix}-{:06x}", suffix & 0xff_ffff);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // Pods need the namespace's default ServiceAccount, which a controller creates.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || async { Ok(sa.get_opt("default").await?) },
        )
        .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// Deletes the namespace (and so everything in it).
    pub async fn delete(self) -> anyhow::Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u32::from_le_bytes(bytes)
}

/// Installs every bud.studio CRD with server-side apply and waits until each is Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in bud_crds::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        wait_until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Registers (or updates) the fleet's nodes.
pub async fn apply_fleet(client: &Client, fleet: &Fleet) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for node in fleet.nodes() {
        names.push(apply_node(client, &node).await?);
    }
    Ok(names)
}

/// Registers one simulated node with its capacity. A new node is created with its status
/// in one request (the API server keeps a Node's status on create): kwok fills in default
/// capacity for a node it sees without one, and a later status patch can race with that.
/// An existing node gets its labels and capacity patched.
pub async fn apply_node(client: &Client, node: &Node) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            node,
        )
        .await
    {
        Ok(_) => return Ok(name),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut without_status = node.clone();
    without_status.status = None;
    api.patch(&name, &params, &Patch::Apply(&without_status))
        .await?;
    let status = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "status": {
            "capacity": node.status.as_ref().and_then(|s| s.capacity.clone()),
            "allocatable": node.status.as_ref().and_then(|s| s.allocatable.clone()),
        }
    });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(name)
}

/// Removes every node registered from a fleet file.
pub async fn delete_fleet(client: &Client) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(FLEET_LABEL),
    )
    .await?;
    Ok(())
}

/// The fleet file the local control plane uses.
pub fn default_fleet_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/fleet.yaml")
}

/// Reads the default fleet file.
pub fn default_fleet() -> anyhow::Result<Fleet> {
    Fleet::from_yaml(&std::fs::read_to_string(default_fleet_path())?)
}

/// The operator running as a child process; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    /// Address of its metrics and health server.
    pub metrics_addr: String,
}

impl OperatorProcess {
    /// Starts `bud-operator` (from `BUD_OPERATOR_BIN`, else the Cargo target directory)
    /// against `KUBECONFIG`, with `extra_args`.
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_kubeconfig(extra_args, None)
    }

    /// Like [`OperatorProcess::start`], against another kubeconfig file when given (for
    /// example one holding a ServiceAccount's token, to run with that account's RBAC).
    pub fn start_with_kubeconfig(
        extra_args: &[&str],
        kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let bin = operator_binary()?;
        let port = free_port()?;
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(&bin);
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .arg("--metrics-addr")
            .arg(&metrics_addr)
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        Ok(Self {
            child,
            metrics_addr,
        })
    }

    /// Stops the operator and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn operator_binary() -> anyhow::Result<PathBuf> {
    target_binary("BUD_OPERATOR_BIN", "bud-operator")
}

/// A binary of this workspace: `$env_var` when set, else Cargo's debug build of `name`.
pub fn target_binary(env_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug").join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --workspace` or set {env_var}",
        bin.display()
    );
    Ok(bin)
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs a command from PATH (kubectl, helm) and returns its standard output, or an error
/// carrying its standard error.
pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run {program} (is it on PATH? `make setup` builds it): {e}")
        })?;
    if !output.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The gateway running as a child process, routing from the cluster's ModelDeployments and
/// ApiKeys; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, the base URL clients use (append `/v1`).
    pub url: String,
}

impl GatewayProcess {
    /// Starts `bud-gateway --kubernetes` against `KUBECONFIG` with `extra_args` and waits until
    /// it answers `/healthz`.
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let bin = target_binary("BUD_GATEWAY_BIN", "bud-gateway")?;
        let port = free_port()?;
        let child = Command::new(&bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--kubernetes")
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let gateway = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = format!("127.0.0.1:{port}");
        wait_until(
            "the gateway to answer /healthz",
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    Ok(http_get(&addr, "/healthz")
                        .ok()
                        .filter(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200")))
                }
            },
        )
        .await?;
        Ok(gateway)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET returning the whole response (status line, headers, body).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The repository's root folder.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Applies every document of a YAML file into `namespace` with kubectl (server-side).
pub fn kubectl_apply(namespace: &str, file: &Path) -> anyhow::Result<()> {
    let file = file.display().to_string();
    run_tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--namespace",
            namespace,
            "-f",
            &file,
        ],
    )?;
    Ok(())
}

/// Applies YAML text into `namespace` with kubectl (server-side).
pub fn kubectl_apply_text(namespace: &str, yaml: &str) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!(
        "{namespace}-{}-{}.yaml",
        std::process::id(),
        yaml.len()
    ));
    std::fs::write(&path, yaml)?;
    let result = kubectl_apply(namespace, &path);
    std::fs::remove_file(&path)?;
    result
}

/// The Events recorded in `namespace` about the object called `name`, oldest first as the API
/// server lists them.
pub async fn events_regarding(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

/// The key the ApiKey controller wrote into the Secret of ApiKey `name`.
pub async fn issued_api_key(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let keys: Api<bud_crds::ApiKey> = Api::namespaced(client.clone(), namespace);
    let secret_name = wait_until(
        "the ApiKey to be issued",
        Duration::from_secs(30),
        || async { Ok(keys.get(name).await?.status.and_then(|s| s.secret_name)) },
    )
    .await?;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .get(&secret_name)
        .await?;
    let bytes = secret
        .data
        .and_then(|d| d.get("apiKey").cloned())
        .ok_or_else(|| anyhow::anyhow!("no apiKey in {secret_name}"))?;
    Ok(String::from_utf8(bytes.0)?)
}

/// A chat completion and a streamed one with the official OpenAI SDK through the gateway
/// (e2e/clients/chat.py), retried until it succeeds: the gateway learns new routes and keys a
/// moment after their status is written. Returns the script's JSON summary.
pub async fn chat(
    gateway: &GatewayProcess,
    key: &str,
    model: &str,
) -> anyhow::Result<serde_json::Value> {
    let script = repo_root()
        .join("e2e/clients/chat.py")
        .display()
        .to_string();
    let base = format!("{}/v1", gateway.url);
    wait_until(
        &format!("a chat completion for {model} through the gateway"),
        Duration::from_secs(60),
        || {
            let (script, base) = (script.clone(), base.clone());
            async move {
                let out = run_tool("python3", &[&script, &base, key, model])?;
                Ok(Some(serde_json::from_str::<serde_json::Value>(&out)?))
            }
        },
    )
    .await
}
