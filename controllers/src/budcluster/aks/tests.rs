//! The ARM contract, against a loopback axum server that answers the token endpoint and the
//! managedClusters calls with the shapes documented for api-version 2024-09-01 and records
//! every request, so the tests assert what the operator sends.

use super::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bud_crds::budcluster::{AksAutoscaling, AksNodePool, NodeTaint};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const ADMIN_KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters: []\n";

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    body: String,
}

#[derive(Default)]
struct Fake {
    base: String,
    requests: Vec<Recorded>,
    cluster: Option<Value>,
    /// Operation id → remaining polls that answer InProgress, and what it does when done.
    operations: BTreeMap<String, (u32, &'static str)>,
    next_op: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(AxumState(fake): AxumState<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers: HeaderMap = request.headers().clone();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut fake = fake.lock().unwrap();
    fake.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    if path.ends_with("/oauth2/v2.0/token") {
        return json_response(
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "test-access-token"}),
        );
    }
    if let Some(id) = path.strip_prefix("/operations/") {
        let id = id.to_owned();
        let Some((remaining, on_done)) = fake.operations.get(&id).copied() else {
            return json_response(StatusCode::NOT_FOUND, json!({}));
        };
        if remaining > 0 {
            fake.operations.insert(id, (remaining - 1, on_done));
            return json_response(StatusCode::OK, json!({"status": "InProgress"}));
        }
        match on_done {
            "succeed" => {
                if let Some(c) = fake.cluster.as_mut() {
                    c["properties"]["provisioningState"] = json!("Succeeded");
                }
            }
            "delete" => fake.cluster = None,
            _ => {}
        }
        return json_response(StatusCode::OK, json!({"status": "Succeeded"}));
    }
    if path.ends_with("/listClusterAdminCredential") && method == Method::POST {
        let value = base64::engine::general_purpose::STANDARD.encode(ADMIN_KUBECONFIG);
        return json_response(
            StatusCode::OK,
            json!({"kubeconfigs": [{"name": "clusterAdmin", "value": value}]}),
        );
    }
    let new_operation = |fake: &mut Fake, on_done: &'static str| {
        fake.next_op += 1;
        let id = format!("op{}", fake.next_op);
        fake.operations.insert(id.clone(), (1, on_done));
        format!("{}/operations/{id}?api-version={API_VERSION}", fake.base)
    };
    match method {
        Method::GET => match &fake.cluster {
            Some(c) => json_response(StatusCode::OK, c.clone()),
            None => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "ResourceNotFound", "message": "not found"}}),
            ),
        },
        Method::PUT => {
            let mut cluster: Value = serde_json::from_str(&body).unwrap_or_default();
            let creating = fake.cluster.is_none();
            cluster["id"] = json!(path);
            cluster["name"] = json!(path.rsplit('/').next());
            cluster["type"] = json!("Microsoft.ContainerService/ManagedClusters");
            cluster["properties"]["provisioningState"] =
                json!(if creating { "Creating" } else { "Updating" });
            cluster["properties"]["fqdn"] = json!("bud-test.hcp.eastus.azmk8s.io");
            fake.cluster = Some(cluster.clone());
            let op = new_operation(&mut fake, "succeed");
            let status = if creating {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut response = json_response(status, cluster);
            response
                .headers_mut()
                .insert("azure-asyncoperation", op.parse().unwrap());
            response
        }
        Method::DELETE => {
            if let Some(c) = fake.cluster.as_mut() {
                c["properties"]["provisioningState"] = json!("Deleting");
            }
            let op = new_operation(&mut fake, "delete");
            let mut response = StatusCode::ACCEPTED.into_response();
            response
                .headers_mut()
                .insert("azure-asyncoperation", op.parse().unwrap());
            response
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn start_fake() -> (Shared, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake: Shared = Arc::new(Mutex::new(Fake {
        base: base.clone(),
        ..Default::default()
    }));
    let app = Router::new().fallback(handle).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, base)
}

fn spec() -> AksClusterSpec {
    AksClusterSpec {
        subscription_id: SUB.into(),
        resource_group: "ml-platform".into(),
        location: "eastus".into(),
        kubernetes_version: Some("1.33".into()),
        node_pools: vec![
            AksNodePool {
                name: "system".into(),
                vm_size: "Standard_D4s_v5".into(),
                count: 1,
                autoscaling: None,
                labels: BTreeMap::new(),
                taints: vec![],
            },
            AksNodePool {
                name: "a100".into(),
                vm_size: "Standard_NC24ads_A100_v4".into(),
                count: 1,
                autoscaling: Some(AksAutoscaling {
                    min_count: 0,
                    max_count: 4,
                }),
                labels: BTreeMap::from([("bud.studio/pool".into(), "a100".into())]),
                taints: vec![NodeTaint {
                    key: "nvidia.com/gpu".into(),
                    value: Some("true".into()),
                    effect: TaintEffect::NoSchedule,
                }],
            },
        ],
        credentials_secret: NamespacedSecretName {
            namespace: "bud-system".into(),
            name: "azure-sp".into(),
        },
        tags: BTreeMap::from([("team".into(), "ml-platform".into())]),
    }
}

/// One reconcile's worth of ARM calls, as `reconcile` makes them; returns the action taken
/// and the operation to follow next.
async fn step(
    arm: &mut ArmClient,
    spec: &AksClusterSpec,
    followed: Option<String>,
    deleting: bool,
) -> (AksAction, ProvisioningPhase, Option<String>) {
    let url = arm.cluster_url(spec, "bud-test");
    let operation = match &followed {
        Some(op) => Some(arm.operation(op).await.unwrap()),
        None => None,
    };
    let cluster = arm.get_cluster(&url).await.unwrap();
    let (action, phase, _) = plan_aks(spec, cluster.as_ref(), operation.as_ref(), deleting);
    let next = match action {
        AksAction::Put => arm
            .put_cluster(&url, &managed_cluster_body("bud-test", spec, "bud-test"))
            .await
            .unwrap(),
        AksAction::Delete => arm.delete_cluster(&url).await.unwrap(),
        AksAction::Wait => followed.filter(|_| operation == Some(OperationState::InProgress)),
        _ => None,
    };
    (action, phase, next)
}

#[tokio::test]
async fn the_lifecycle_sends_the_documented_arm_requests() {
    let (fake, base) = start_fake().await;
    let mut arm = ArmClient::new(
        &format!("{base}/"),
        &base,
        "tenant-1",
        "client-1",
        "sp-secret",
    );
    let spec = spec();

    // Create: PUT, then follow the operation until Succeeded, then connect.
    let (action, phase, op) = step(&mut arm, &spec, None, false).await;
    assert_eq!(
        (action, phase),
        (AksAction::Put, ProvisioningPhase::CreatingCluster)
    );
    let op = op.expect("the PUT returned an Azure-AsyncOperation URL");
    assert!(op.starts_with(&format!("{base}/operations/")), "{op}");
    let (action, _, op) = step(&mut arm, &spec, Some(op), false).await;
    assert_eq!(action, AksAction::Wait, "the operation is still InProgress");
    let (action, phase, _) = step(&mut arm, &spec, op, false).await;
    assert_eq!(
        (action, phase),
        (AksAction::Connect, ProvisioningPhase::Active)
    );
    let kubeconfig = arm
        .admin_kubeconfig(&arm.cluster_url(&spec, "bud-test"))
        .await
        .unwrap();
    assert_eq!(kubeconfig, ADMIN_KUBECONFIG);

    // A node pool change is a PUT of the whole cluster.
    let mut bigger = spec.clone();
    bigger.node_pools[0].count = 3;
    let (action, phase, op) = step(&mut arm, &bigger, None, false).await;
    assert_eq!(
        (action, phase),
        (AksAction::Put, ProvisioningPhase::UpdatingNodeGroups)
    );
    let (_, _, op) = step(&mut arm, &bigger, op, false).await;
    let (action, _, _) = step(&mut arm, &bigger, op, false).await;
    assert_eq!(action, AksAction::Connect);

    // Delete, follow the operation, and the cluster is gone.
    let (action, phase, op) = step(&mut arm, &bigger, None, true).await;
    assert_eq!(
        (action, phase),
        (AksAction::Delete, ProvisioningPhase::DeletingCluster)
    );
    let (action, _, op) = step(&mut arm, &bigger, op, true).await;
    assert_eq!(action, AksAction::Wait);
    let (action, _, _) = step(&mut arm, &bigger, op, true).await;
    assert_eq!(action, AksAction::Gone);

    let requests = fake.lock().unwrap().requests.clone();
    let cluster_path = format!(
        "/subscriptions/{SUB}/resourceGroups/ml-platform/providers/Microsoft.ContainerService/managedClusters/bud-test"
    );
    // The token: client credentials for the service principal, scoped to ARM, asked once.
    let tokens: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 1, "the token is reused");
    assert_eq!(tokens[0].path, "/tenant-1/oauth2/v2.0/token");
    assert_eq!(tokens[0].method, "POST");
    for field in [
        "grant_type=client_credentials",
        "client_id=client-1",
        "client_secret=sp-secret",
    ] {
        assert!(
            tokens[0].body.contains(field),
            "{field} not in {}",
            tokens[0].body
        );
    }
    let scope = format!("scope={}", uri_form(&format!("{base}/.default")));
    assert!(
        tokens[0].body.contains(&scope),
        "{scope} not in {}",
        tokens[0].body
    );
    // Every ARM call carries the bearer token and the api-version.
    for r in requests.iter().filter(|r| !r.path.ends_with("/token")) {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer test-access-token"),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(
            r.query,
            format!("api-version={API_VERSION}"),
            "{} {}",
            r.method,
            r.path
        );
        assert!(
            r.path == cluster_path
                || r.path == format!("{cluster_path}/listClusterAdminCredential")
                || r.path.starts_with("/operations/"),
            "unexpected path {}",
            r.path
        );
    }
    let methods: Vec<String> = requests
        .iter()
        .filter(|r| r.path == cluster_path && r.method != "GET")
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["PUT", "PUT", "DELETE"]);
    // The first PUT's body holds the spec.
    let put: Value =
        serde_json::from_str(&requests.iter().find(|r| r.method == "PUT").unwrap().body).unwrap();
    assert_eq!(put["location"], "eastus");
    assert_eq!(put["tags"]["team"], "ml-platform");
    assert_eq!(put["identity"]["type"], "SystemAssigned");
    let props = &put["properties"];
    assert_eq!(props["kubernetesVersion"], "1.33");
    assert_eq!(props["dnsPrefix"], "bud-test");
    let pools = props["agentPoolProfiles"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    assert_eq!(
        (
            &pools[0]["name"],
            &pools[0]["mode"],
            &pools[0]["vmSize"],
            &pools[0]["count"]
        ),
        (
            &json!("system"),
            &json!("System"),
            &json!("Standard_D4s_v5"),
            &json!(1)
        )
    );
    assert_eq!(pools[1]["mode"], "User");
    assert_eq!(pools[1]["vmSize"], "Standard_NC24ads_A100_v4");
    assert_eq!(pools[1]["enableAutoScaling"], true);
    assert_eq!(
        (&pools[1]["minCount"], &pools[1]["maxCount"]),
        (&json!(0), &json!(4))
    );
    assert_eq!(pools[1]["nodeLabels"]["bud.studio/pool"], "a100");
    assert_eq!(
        pools[1]["nodeTaints"],
        json!(["nvidia.com/gpu=true:NoSchedule"])
    );
    let second_put: Value = serde_json::from_str(
        &requests
            .iter()
            .filter(|r| r.method == "PUT")
            .nth(1)
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(second_put["properties"]["agentPoolProfiles"][0]["count"], 3);
}

#[tokio::test]
async fn a_refused_service_principal_is_reported_with_the_authority_message() {
    let app = Router::new().fallback(|| async {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut arm = ArmClient::new(&base, &base, "t", "c", "wrong");
    let err = arm.get_cluster(&format!("{base}/x")).await.unwrap_err();
    assert!(err.0.contains("AADSTS7000215"), "{}", err.0);
    assert!(
        !err.0.contains("wrong"),
        "the secret must not leak: {}",
        err.0
    );
}

#[test]
fn the_plan_waits_updates_and_fails_by_state() {
    let spec = spec();
    let body = managed_cluster_body("bud-test", &spec, "bud-test");
    let mut succeeded = ArmCluster::from_json(&body);
    succeeded.provisioning_state = "Succeeded".into();
    assert!(succeeded.matches(&spec));
    // Azure moves an autoscaled pool's count itself: not a difference.
    succeeded
        .pools
        .iter_mut()
        .find(|p| p.0 == "a100")
        .unwrap()
        .2 = 3;
    assert_eq!(
        plan_aks(&spec, Some(&succeeded), None, false).0,
        AksAction::Connect
    );
    let failed = OperationState::Failed("QuotaExceeded".into());
    let (action, phase, message) = plan_aks(&spec, Some(&succeeded), Some(&failed), false);
    assert_eq!((action, phase), (AksAction::Put, ProvisioningPhase::Failed));
    assert!(message.contains("QuotaExceeded"), "{message}");
    let mut deleting = succeeded.clone();
    deleting.provisioning_state = "Deleting".into();
    assert_eq!(
        plan_aks(&spec, Some(&deleting), None, true).0,
        AksAction::Wait
    );
    assert_eq!(plan_aks(&spec, None, None, true).0, AksAction::Gone);
}

fn uri_form(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
