//! A second local control plane for tests that need a cluster other than the one
//! `KUBECONFIG` names (the "workload cluster" a BudCluster onboards). It is started with
//! `e2e/cluster/up.sh`, can be stopped and started again with its state kept, and is always
//! stopped and purged when the guard is dropped, even when the test fails.

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A control plane started by `e2e/cluster/up.sh NAME`; `down.sh --purge NAME` on drop.
pub struct LocalControlPlane {
    pub name: String,
    /// Its kubeconfig file (certificate authority by path, admin token).
    pub kubeconfig: PathBuf,
    env: Vec<(String, String)>,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cluster")
        .join(name)
}

fn run_script(
    script_name: &str,
    args: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<String> {
    let output = Command::new(script(script_name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {script_name}: {e}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{script_name} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?)
}

impl LocalControlPlane {
    /// Starts a fresh control plane named `name` with `env` (e.g. `BUD_DEFAULT_POD_CIDR`,
    /// `BUD_SERVICE_CIDR`).
    pub fn start(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The guard exists before up.sh runs so that a half-started plane is cleaned up too.
        let mut plane = Self {
            name: name.to_owned(),
            kubeconfig: PathBuf::new(),
            env,
        };
        let out = run_script("up.sh", &[name], &plane.env)?;
        plane.kubeconfig = PathBuf::from(out.trim().lines().last().unwrap_or_default());
        Ok(plane)
    }

    /// Stops it, keeping its state (`down.sh NAME`).
    pub fn stop(&self) -> anyhow::Result<()> {
        run_script("down.sh", &[&self.name], &self.env).map(drop)
    }

    /// Starts it again with the state it had (`up.sh --keep NAME`): same address,
    /// certificates, credentials and objects.
    pub fn restart(&self) -> anyhow::Result<()> {
        run_script("up.sh", &["--keep", &self.name], &self.env).map(drop)
    }

    /// An admin client for it.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Its kubeconfig made self-contained (the certificate authority embedded), as a
    /// kubeconfig Secret must be. With `token`, that bearer token replaces the admin's.
    pub fn self_contained_kubeconfig(&self, token: Option<&str>) -> anyhow::Result<String> {
        self_contained_kubeconfig(&self.kubeconfig, token)
    }
}

/// The kubeconfig file at `path` made self-contained: `certificate-authority` files are
/// embedded as `certificate-authority-data`. With `token`, that bearer token replaces every
/// user's credentials.
pub fn self_contained_kubeconfig(path: &Path, token: Option<&str>) -> anyhow::Result<String> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    for cluster in doc["clusters"].as_sequence_mut().into_iter().flatten() {
        let inner = &mut cluster["cluster"];
        if let Some(ca_path) = inner["certificate-authority"].as_str() {
            let pem = std::fs::read(ca_path)?;
            // ByteString serializes as base64, the encoding kubeconfig `*-data` fields use.
            let data = serde_json::to_value(k8s_openapi::ByteString(pem))?;
            let map = inner.as_mapping_mut().expect("cluster is a mapping");
            map.remove("certificate-authority");
            map.insert(
                "certificate-authority-data".into(),
                serde_yaml::Value::String(data.as_str().unwrap_or_default().to_owned()),
            );
        }
    }
    if let Some(token) = token {
        for user in doc["users"].as_sequence_mut().into_iter().flatten() {
            user["user"]["token"] = serde_yaml::Value::String(token.to_owned());
        }
    }
    Ok(serde_yaml::to_string(&doc)?)
}

impl Drop for LocalControlPlane {
    fn drop(&mut self) {
        if let Err(err) = run_script("down.sh", &["--purge", &self.name], &self.env) {
            eprintln!("could not stop control plane {}: {err:#}", self.name);
        }
    }
}
