//! A `moto` server (PyPI `moto[server]`, see `e2e/requirements.txt`) on loopback: the AWS
//! APIs (EKS, STS) for the EKS BudCluster tests. Killed when dropped. [`MotoServer::eks`]
//! calls the EKS API through boto3 (which moto depends on) so tests check what the operator
//! did from AWS's side.

use crate::harness::{free_port, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Access key every test uses against moto (moto accepts any).
pub const TEST_ACCESS_KEY: &str = "AKIDBUDTEST";
pub const TEST_SECRET_KEY: &str = "bud-test-secret";
pub const TEST_REGION: &str = "us-east-1";

/// A running `python3 -m moto.server`.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start moto (pip install -r e2e/requirements.txt): {e}")
            })?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = format!("127.0.0.1:{port}");
        wait_until("moto to listen", Duration::from_secs(60), || async {
            Ok(std::net::TcpStream::connect(&addr).ok().map(drop))
        })
        .await?;
        server.eks("list_clusters", "{}").map_err(|e| {
            anyhow::anyhow!("moto does not answer EKS calls (is `moto[server]` installed?): {e}")
        })?;
        Ok(server)
    }

    /// Calls `boto3.client("eks").<operation>(**args)` against this server and returns the
    /// response as JSON; an AWS error comes back as `{"Error": {"Code": ..., ...}}`.
    pub fn eks(&self, operation: &str, args_json: &str) -> anyhow::Result<serde_json::Value> {
        const SCRIPT: &str = r#"
import json, sys, boto3, botocore
url, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
eks = boto3.client("eks", endpoint_url=url, region_name=sys.argv[4],
                   aws_access_key_id=sys.argv[5], aws_secret_access_key=sys.argv[6])
try:
    out = getattr(eks, op)(**args)
except botocore.exceptions.ClientError as e:
    out = {"Error": e.response["Error"]}
out.pop("ResponseMetadata", None)
print(json.dumps(out, default=str))
"#;
        let out = crate::harness::run_tool(
            "python3",
            &[
                "-c",
                SCRIPT,
                &self.url,
                operation,
                args_json,
                TEST_REGION,
                TEST_ACCESS_KEY,
                TEST_SECRET_KEY,
            ],
        )?;
        Ok(serde_json::from_str(out.trim())?)
    }

    /// GETs `url` with `headers` (e.g. a presigned STS URL) and returns status and body.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
        const SCRIPT: &str = r#"
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let out = crate::harness::run_tool(
            "python3",
            &[
                "-c",
                SCRIPT,
                url,
                &serde_json::Value::Object(headers).to_string(),
            ],
        )?;
        let (code, body) = out.split_once('\n').unwrap_or((out.as_str(), ""));
        Ok((code.trim().parse()?, body.to_owned()))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
