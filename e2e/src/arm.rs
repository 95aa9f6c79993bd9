//! A stand-in for Azure AD and Azure Resource Manager on loopback, for the AKS BudCluster
//! tests through the operator binary. No Azure emulator exists, so this answers the calls the
//! operator makes with the shapes documented for `managedClusters` api-version 2024-09-01 —
//! the token endpoint, PUT/GET/DELETE of the managed cluster, the `Azure-AsyncOperation`
//! status, `listClusterAdminCredential` — and records every request for assertions. Each
//! long-running operation answers `InProgress` once, then `Succeeded`.
//!
//! A plain HTTP/1.1 server on std threads (one request per connection) keeps the test crate's
//! dependencies as they are.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct ArmState {
    base: String,
    admin_kubeconfig: String,
    requests: Vec<RecordedRequest>,
    cluster: Option<serde_json::Value>,
    operations: BTreeMap<String, (u32, &'static str)>,
    next_operation: u32,
}

/// The running stand-in; the listener thread ends with the test process.
pub struct FakeArm {
    /// `http://127.0.0.1:PORT`, both the authority and the resource manager URL.
    pub url: String,
    state: Arc<Mutex<ArmState>>,
}

/// The access token the fake authority issues.
pub const ACCESS_TOKEN: &str = "fake-arm-access-token";

impl FakeArm {
    /// Starts the server; `listClusterAdminCredential` answers with `admin_kubeconfig`.
    pub fn start(admin_kubeconfig: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(ArmState {
            base: url.clone(),
            admin_kubeconfig: admin_kubeconfig.to_owned(),
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        Ok(Self { url, state })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The managed cluster as last PUT (with ARM's fields), if it exists.
    pub fn cluster(&self) -> Option<serde_json::Value> {
        self.state.lock().unwrap().cluster.clone()
    }
}

fn serve(stream: TcpStream, state: &Mutex<ArmState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (path, query) = target
        .split_once('?')
        .map(|(p, q)| (p.to_owned(), q.to_owned()))
        .unwrap_or((target.clone(), String::new()));
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, extra, response) = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query,
            authorization: headers.get("authorization").cloned(),
            body: body.clone(),
        });
        answer(&mut state, &method, &path, &body)
    };
    let mut stream = stream;
    let text = response.to_string();
    let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

type Answer = (u16, Vec<(String, String)>, serde_json::Value);

fn answer(state: &mut ArmState, method: &str, path: &str, body: &str) -> Answer {
    use serde_json::json;
    if path.ends_with("/oauth2/v2.0/token") {
        return (
            200,
            vec![],
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": ACCESS_TOKEN}),
        );
    }
    if let Some(id) = path.strip_prefix("/operations/") {
        let Some((remaining, on_done)) = state.operations.get(id).copied() else {
            return (404, vec![], json!({}));
        };
        if remaining > 0 {
            state
                .operations
                .insert(id.to_owned(), (remaining - 1, on_done));
            return (200, vec![], json!({"status": "InProgress"}));
        }
        match on_done {
            "succeed" => {
                if let Some(c) = state.cluster.as_mut() {
                    c["properties"]["provisioningState"] = json!("Succeeded");
                    c["properties"]["currentKubernetesVersion"] =
                        c["properties"]["kubernetesVersion"].clone();
                }
            }
            "delete" => state.cluster = None,
            _ => {}
        }
        return (200, vec![], json!({"status": "Succeeded"}));
    }
    if path.ends_with("/listClusterAdminCredential") && method == "POST" {
        let value = serde_json::to_value(k8s_openapi::ByteString(
            state.admin_kubeconfig.as_bytes().to_vec(),
        ))
        .unwrap_or_default();
        return (
            200,
            vec![],
            json!({"kubeconfigs": [{"name": "clusterAdmin", "value": value}]}),
        );
    }
    let operation = |state: &mut ArmState, on_done: &'static str| {
        state.next_operation += 1;
        let id = format!("op{}", state.next_operation);
        state.operations.insert(id.clone(), (1, on_done));
        vec![(
            "Azure-AsyncOperation".to_owned(),
            format!("{}/operations/{id}?api-version=2024-09-01", state.base),
        )]
    };
    match method {
        "GET" => match &state.cluster {
            Some(c) => (200, vec![], c.clone()),
            None => (
                404,
                vec![],
                json!({"error": {"code": "ResourceNotFound", "message": "The Resource was not found."}}),
            ),
        },
        "PUT" => {
            let mut cluster: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let creating = state.cluster.is_none();
            cluster["id"] = json!(path);
            cluster["name"] = json!(path.rsplit('/').next());
            cluster["type"] = json!("Microsoft.ContainerService/ManagedClusters");
            cluster["properties"]["provisioningState"] =
                json!(if creating { "Creating" } else { "Updating" });
            state.cluster = Some(cluster.clone());
            let headers = operation(state, "succeed");
            (if creating { 201 } else { 200 }, headers, cluster)
        }
        "DELETE" => {
            if let Some(c) = state.cluster.as_mut() {
                c["properties"]["provisioningState"] = json!("Deleting");
            }
            let headers = operation(state, "delete");
            (202, headers, json!(null))
        }
        _ => (405, vec![], json!({})),
    }
}
