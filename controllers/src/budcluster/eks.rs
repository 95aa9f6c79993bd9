//! `type: EKS`: creates an AWS EKS cluster and its managed node groups with `aws-sdk-eks`,
//! follows them to `ACTIVE` without blocking (each reconcile describes, acts, and requeues),
//! writes a kubeconfig Secret whose token is a SigV4-presigned STS `GetCallerIdentity`
//! request (the `k8s-aws-v1.` format aws-iam-authenticator accepts), then connects like a
//! `Kubeconfig` cluster. Deletion removes the node groups, then the cluster, behind a
//! finalizer.
//!
//! AWS is the record of what exists: every reconcile starts from `DescribeCluster` and
//! `ListNodegroups`, so an operator restarted at any step picks up where the last one
//! stopped. [`plan_eks`] is pure: what exists + the spec → the calls to make and the phase.

use super::kubeconfig::short_error;
use super::{Blocker, KUBECONFIG_KEY, Observed, State, observe_through_kubeconfig};
use crate::{Error, FIELD_MANAGER, Result};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_eks::error::ProvideErrorMetadata;
use aws_sdk_eks::types::{
    AmiTypes, NodegroupScalingConfig, Taint, TaintEffect as AwsTaintEffect, VpcConfigRequest,
};
use base64::Engine;
use bud_crds::BudCluster;
use bud_crds::budcluster::{
    EksClusterSpec, NamespacedSecretName, ProvisioningPhase, ProvisioningStatus, TaintEffect,
};
use bud_crds::common::NamespacedSecretKeyRef;
use bud_crds::conditions::new_condition;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// Finalizer that holds a BudCluster until its cloud resources are deleted.
pub const FINALIZER: &str = "bud.studio/cloud-resources";
/// Annotation on kubeconfig Secrets: when the embedded token stops being accepted.
pub const TOKEN_EXPIRES_ANNOTATION: &str = "bud.studio/token-expires-at";
/// EKS accepts a presigned token for 15 minutes; it is renewed when 5 are left.
const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// How often a cluster that is being created or deleted is described again.
const POLL_EVERY: Duration = Duration::from_secs(10);
/// How often an active cluster is checked (sizes, token renewal).
const ACTIVE_RESYNC: Duration = Duration::from_secs(60);

/// What AWS reports about the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudCluster {
    /// `CREATING`, `ACTIVE`, `UPDATING`, `DELETING`, `FAILED`, `PENDING`.
    pub status: String,
    pub arn: Option<String>,
    pub endpoint: Option<String>,
    /// Base64 PEM of the cluster's certificate authority.
    pub certificate_authority: Option<String>,
    pub version: Option<String>,
}

/// What AWS reports about a node group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudNodeGroup {
    /// `CREATING`, `ACTIVE`, `UPDATING`, `DELETING`, `CREATE_FAILED`, `DELETE_FAILED`,
    /// `DEGRADED`.
    pub status: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_size: i32,
}

/// The cluster and its node groups as described by AWS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EksObserved {
    pub cluster: Option<CloudCluster>,
    pub node_groups: BTreeMap<String, CloudNodeGroup>,
}

/// One EKS API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EksAction {
    CreateCluster,
    CreateNodeGroup(String),
    ResizeNodeGroup {
        name: String,
        min: i32,
        max: i32,
        desired: i32,
    },
    DeleteNodeGroup(String),
    DeleteCluster,
}

impl EksAction {
    fn describe(&self, cluster: &str) -> String {
        match self {
            EksAction::CreateCluster => format!("creating EKS cluster {cluster}"),
            EksAction::CreateNodeGroup(n) => format!("creating node group {n}"),
            EksAction::ResizeNodeGroup {
                name,
                min,
                max,
                desired,
            } => format!("resizing node group {name} to min {min}, max {max}, desired {desired}"),
            EksAction::DeleteNodeGroup(n) => format!("deleting node group {n}"),
            EksAction::DeleteCluster => format!("deleting EKS cluster {cluster}"),
        }
    }
}

/// The calls to make now and where provisioning stands.
#[derive(Clone, Debug, PartialEq)]
pub struct EksPlan {
    pub actions: Vec<EksAction>,
    pub phase: ProvisioningPhase,
    pub message: String,
    /// Cluster and node groups are as specified: write the kubeconfig and connect.
    pub complete: bool,
    /// Deletion is finished: remove the finalizer.
    pub gone: bool,
}

/// Decides the next EKS calls from what exists. Pure.
pub fn plan_eks(
    spec: &EksClusterSpec,
    cloud_name: &str,
    observed: &EksObserved,
    deleting: bool,
) -> EksPlan {
    let plan = |actions, phase, message: String| EksPlan {
        actions,
        phase,
        message,
        complete: false,
        gone: false,
    };
    if deleting {
        let live: Vec<&String> = observed
            .node_groups
            .iter()
            .filter(|(_, ng)| ng.status != "DELETING")
            .map(|(name, _)| name)
            .collect();
        if !observed.node_groups.is_empty() {
            let names: Vec<String> = observed.node_groups.keys().cloned().collect();
            return plan(
                live.into_iter()
                    .map(|n| EksAction::DeleteNodeGroup(n.clone()))
                    .collect(),
                ProvisioningPhase::DeletingNodeGroups,
                format!("deleting node groups {}", names.join(", ")),
            );
        }
        return match &observed.cluster {
            None => EksPlan {
                gone: true,
                ..plan(
                    vec![],
                    ProvisioningPhase::DeletingCluster,
                    format!("EKS cluster {cloud_name} deleted"),
                )
            },
            Some(c) if c.status == "DELETING" => plan(
                vec![],
                ProvisioningPhase::DeletingCluster,
                format!("EKS cluster {cloud_name} is DELETING"),
            ),
            Some(_) => plan(
                vec![EksAction::DeleteCluster],
                ProvisioningPhase::DeletingCluster,
                format!("deleting EKS cluster {cloud_name}"),
            ),
        };
    }
    let cluster = match &observed.cluster {
        None => {
            return plan(
                vec![EksAction::CreateCluster],
                ProvisioningPhase::CreatingCluster,
                format!("creating EKS cluster {cloud_name} in {}", spec.region),
            );
        }
        Some(c) => c,
    };
    match cluster.status.as_str() {
        "ACTIVE" | "UPDATING" => {}
        "FAILED" => {
            return plan(
                vec![],
                ProvisioningPhase::Failed,
                format!(
                    "EKS cluster {cloud_name} is FAILED; see its health in the AWS console, then delete and recreate this BudCluster"
                ),
            );
        }
        "DELETING" => {
            return plan(
                vec![],
                ProvisioningPhase::CreatingCluster,
                format!("EKS cluster {cloud_name} is still DELETING; it will be created again"),
            );
        }
        other => {
            return plan(
                vec![],
                ProvisioningPhase::CreatingCluster,
                format!("EKS cluster {cloud_name} is {other}"),
            );
        }
    }
    let mut actions = Vec::new();
    let mut creating = Vec::new();
    let mut updating = Vec::new();
    let mut failed = Vec::new();
    for wanted in &spec.node_groups {
        match observed.node_groups.get(&wanted.name) {
            None => {
                actions.push(EksAction::CreateNodeGroup(wanted.name.clone()));
                creating.push(wanted.name.clone());
            }
            Some(ng) => match ng.status.as_str() {
                "CREATING" => creating.push(wanted.name.clone()),
                "UPDATING" | "DELETING" => updating.push(wanted.name.clone()),
                "CREATE_FAILED" | "DELETE_FAILED" | "DEGRADED" => {
                    failed.push(format!("{} is {}", wanted.name, ng.status))
                }
                _ => {
                    if (ng.min_size, ng.max_size, ng.desired_size)
                        != (wanted.min_size, wanted.max_size, wanted.desired_size)
                    {
                        actions.push(EksAction::ResizeNodeGroup {
                            name: wanted.name.clone(),
                            min: wanted.min_size,
                            max: wanted.max_size,
                            desired: wanted.desired_size,
                        });
                        updating.push(wanted.name.clone());
                    }
                }
            },
        }
    }
    // Node groups removed from the spec are deleted; the cluster belongs to this BudCluster.
    for (name, ng) in &observed.node_groups {
        if !spec.node_groups.iter().any(|w| &w.name == name) {
            if ng.status != "DELETING" {
                actions.push(EksAction::DeleteNodeGroup(name.clone()));
            }
            updating.push(name.clone());
        }
    }
    if !failed.is_empty() {
        return plan(
            actions,
            ProvisioningPhase::Failed,
            format!("node groups failed: {}", failed.join(", ")),
        );
    }
    if !creating.is_empty() {
        return plan(
            actions,
            ProvisioningPhase::CreatingNodeGroups,
            format!("creating node groups {}", creating.join(", ")),
        );
    }
    if !updating.is_empty() {
        return plan(
            actions,
            ProvisioningPhase::UpdatingNodeGroups,
            format!("updating node groups {}", updating.join(", ")),
        );
    }
    EksPlan {
        complete: true,
        ..plan(
            actions,
            ProvisioningPhase::Active,
            format!(
                "EKS cluster {cloud_name} is ACTIVE with {} node groups",
                spec.node_groups.len()
            ),
        )
    }
}

/// The EKS cluster's name: the BudCluster's, with dots (not allowed by EKS) as dashes.
pub fn cloud_cluster_name(cluster: &BudCluster) -> String {
    cluster.name_any().replace('.', "-")
}

/// Name of the kubeconfig Secret the operator writes for a provisioned cluster.
pub fn kubeconfig_secret_name(cluster: &BudCluster) -> String {
    format!("budcluster-{}-kubeconfig", cluster.name_any())
}

/// RFC 3986 unreserved characters pass; everything else is %-encoded (SigV4's rule).
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// An EKS bearer token: `k8s-aws-v1.` and the unpadded URL-safe base64 of a presigned STS
/// `GetCallerIdentity` URL whose signature covers the `x-k8s-aws-id: <cluster>` header.
/// The API server's authenticator replays the request to STS to learn who signed it.
pub fn eks_token(
    credentials: &Credentials,
    region: &str,
    sts_endpoint: &str,
    cluster_name: &str,
    now: SystemTime,
) -> Result<String, String> {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    use aws_sigv4::sign::v4;
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let base = format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_endpoint.trim_end_matches('/')
    );
    let request = SignableRequest::new(
        "GET",
        base.clone(),
        [("x-k8s-aws-id", cluster_name)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (_, query) = instructions.into_parts();
    let mut url = base;
    for (name, value) in query {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&uri_encode(&value));
    }
    Ok(format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    ))
}

/// The kubeconfig of an EKS cluster for the operator, with a bearer token. Pure.
pub fn eks_kubeconfig(name: &str, endpoint: &str, ca_data: &str, token: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "users": [{"name": "bud-operator", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "bud-operator"}}],
        "current-context": name,
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// A failed AWS call: permanent (the request is wrong; waits for a spec change) or not.
#[derive(Debug)]
struct CloudError {
    permanent: bool,
    message: String,
}

fn cloud_error<E, R>(err: &aws_sdk_eks::error::SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_eks::error::SdkError;
    match err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("ServiceError").to_owned();
            let permanent = matches!(
                code.as_str(),
                "InvalidParameterException"
                    | "InvalidRequestException"
                    | "AccessDeniedException"
                    | "ResourceLimitExceededException"
                    | "UnsupportedAvailabilityZoneException"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
            );
            CloudError {
                permanent,
                message: format!("{code}: {}", inner.message().unwrap_or_default()),
            }
        }
        other => CloudError {
            permanent: false,
            message: short_error(other),
        },
    }
}

fn is_not_found<E: ProvideErrorMetadata, R>(err: &aws_sdk_eks::error::SdkError<E, R>) -> bool {
    err.code() == Some("ResourceNotFoundException")
}

fn is_in_use<E: ProvideErrorMetadata, R>(err: &aws_sdk_eks::error::SdkError<E, R>) -> bool {
    err.code() == Some("ResourceInUseException")
}

/// An EKS client for the spec's region and credentials, and the credentials themselves
/// (for the token).
async fn eks_client(
    spec: &EksClusterSpec,
    state: &State,
) -> Result<(aws_sdk_eks::Client, Credentials), Blocker> {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .region(aws_config::Region::new(spec.region.clone()));
    if let Some(url) = &state.settings.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(secret) = &spec.credentials_secret {
        loader = loader.credentials_provider(read_credentials(state, secret).await?);
    }
    let config = loader.load().await;
    let provider = config.credentials_provider().ok_or_else(|| {
        Blocker::new(
            "CredentialsMissing",
            "no AWS credentials: set spec.eks.credentialsSecret or give the operator an ambient AWS identity",
        )
    })?;
    let credentials = provider.provide_credentials().await.map_err(|e| {
        Blocker::new(
            "CredentialsMissing",
            format!("cannot load AWS credentials: {}", short_error(&e)),
        )
    })?;
    Ok((aws_sdk_eks::Client::new(&config), credentials))
}

async fn read_credentials(
    state: &State,
    secret: &NamespacedSecretName,
) -> Result<Credentials, Blocker> {
    let data = super::read_credentials_secret(state, secret).await?;
    let get = |key: &str| -> Option<String> { data.get(key).cloned() };
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(key)) => Ok(Credentials::new(
            id,
            key,
            get("AWS_SESSION_TOKEN"),
            None,
            "budcluster-secret",
        )),
        _ => Err(Blocker::new(
            "CredentialsMissing",
            format!(
                "Secret {}/{} must hold AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                secret.namespace, secret.name
            ),
        )),
    }
}

async fn describe(client: &aws_sdk_eks::Client, name: &str) -> Result<EksObserved, CloudError> {
    let cluster = match client.describe_cluster().name(name).send().await {
        Ok(out) => out.cluster().map(|c| CloudCluster {
            status: c
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            arn: c.arn().map(str::to_owned),
            endpoint: c.endpoint().map(str::to_owned),
            certificate_authority: c
                .certificate_authority()
                .and_then(|ca| ca.data())
                .map(str::to_owned),
            version: c.version().map(str::to_owned),
        }),
        Err(err) if is_not_found(&err) => None,
        Err(err) => return Err(cloud_error(&err)),
    };
    let mut node_groups = BTreeMap::new();
    if cluster.is_some() {
        let listed = client
            .list_nodegroups()
            .cluster_name(name)
            .send()
            .await
            .map_err(|e| cloud_error(&e))?;
        for ng_name in listed.nodegroups() {
            let out = match client
                .describe_nodegroup()
                .cluster_name(name)
                .nodegroup_name(ng_name)
                .send()
                .await
            {
                Ok(out) => out,
                Err(err) if is_not_found(&err) => continue,
                Err(err) => return Err(cloud_error(&err)),
            };
            if let Some(ng) = out.nodegroup() {
                let scaling = ng.scaling_config();
                node_groups.insert(
                    ng_name.clone(),
                    CloudNodeGroup {
                        status: ng
                            .status()
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default(),
                        min_size: scaling.and_then(|s| s.min_size()).unwrap_or_default(),
                        max_size: scaling.and_then(|s| s.max_size()).unwrap_or_default(),
                        desired_size: scaling.and_then(|s| s.desired_size()).unwrap_or_default(),
                    },
                );
            }
        }
    }
    Ok(EksObserved {
        cluster,
        node_groups,
    })
}

fn tags(cluster: &BudCluster, spec: &EksClusterSpec) -> HashMap<String, String> {
    let mut tags: HashMap<String, String> = spec.tags.clone().into_iter().collect();
    tags.insert("bud.studio/budcluster".into(), cluster.name_any());
    tags
}

async fn act(
    client: &aws_sdk_eks::Client,
    cluster: &BudCluster,
    spec: &EksClusterSpec,
    name: &str,
    action: &EksAction,
) -> Result<(), CloudError> {
    match action {
        EksAction::CreateCluster => {
            let vpc = VpcConfigRequest::builder()
                .set_subnet_ids(Some(spec.subnet_ids.clone()))
                .set_security_group_ids(
                    (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
                )
                .build();
            match client
                .create_cluster()
                .name(name)
                .role_arn(&spec.role_arn)
                .set_version(spec.kubernetes_version.clone())
                .resources_vpc_config(vpc)
                .set_tags(Some(tags(cluster, spec)))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(err) if is_in_use(&err) => Ok(()),
                Err(err) => Err(cloud_error(&err)),
            }
        }
        EksAction::CreateNodeGroup(ng_name) => {
            let Some(wanted) = spec.node_groups.iter().find(|n| &n.name == ng_name) else {
                return Ok(());
            };
            let taints = wanted
                .taints
                .iter()
                .map(|t| {
                    Taint::builder()
                        .key(&t.key)
                        .set_value(t.value.clone())
                        .effect(match t.effect {
                            TaintEffect::NoSchedule => AwsTaintEffect::NoSchedule,
                            TaintEffect::PreferNoSchedule => AwsTaintEffect::PreferNoSchedule,
                            TaintEffect::NoExecute => AwsTaintEffect::NoExecute,
                        })
                        .build()
                })
                .collect::<Vec<_>>();
            match client
                .create_nodegroup()
                .cluster_name(name)
                .nodegroup_name(ng_name)
                .node_role(spec.node_role_arn.as_ref().unwrap_or(&spec.role_arn))
                .set_subnets(Some(spec.subnet_ids.clone()))
                .set_instance_types(Some(wanted.instance_types.clone()))
                .set_ami_type(wanted.ami_type.as_deref().map(AmiTypes::from))
                .scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(wanted.min_size)
                        .max_size(wanted.max_size)
                        .desired_size(wanted.desired_size)
                        .build(),
                )
                .set_disk_size(wanted.disk_size_gib)
                .set_labels(
                    (!wanted.labels.is_empty())
                        .then(|| wanted.labels.clone().into_iter().collect()),
                )
                .set_taints((!taints.is_empty()).then_some(taints))
                .set_tags(Some(tags(cluster, spec)))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(err) if is_in_use(&err) => Ok(()),
                Err(err) => Err(cloud_error(&err)),
            }
        }
        EksAction::ResizeNodeGroup {
            name: ng_name,
            min,
            max,
            desired,
        } => client
            .update_nodegroup_config()
            .cluster_name(name)
            .nodegroup_name(ng_name)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(*min)
                    .max_size(*max)
                    .desired_size(*desired)
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| cloud_error(&e)),
        EksAction::DeleteNodeGroup(ng_name) => match client
            .delete_nodegroup()
            .cluster_name(name)
            .nodegroup_name(ng_name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) || is_in_use(&err) => Ok(()),
            Err(err) => Err(cloud_error(&err)),
        },
        EksAction::DeleteCluster => match client.delete_cluster().name(name).send().await {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(cloud_error(&err)),
        },
    }
}

/// Adds or removes the finalizer with a merge patch guarded by the resourceVersion.
pub(crate) async fn set_finalizer(
    client: &kube::Client,
    cluster: &BudCluster,
    present: bool,
) -> Result<()> {
    let mut finalizers = cluster.finalizers().to_vec();
    finalizers.retain(|f| f != FINALIZER);
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": cluster.resource_version(),
        }
    });
    Api::<BudCluster>::all(client.clone())
        .patch(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The provisioning status for `phase`, keeping `phaseSince` while the phase holds.
pub(crate) fn provisioning(
    cluster: &BudCluster,
    phase: ProvisioningPhase,
    cloud_id: Option<String>,
    message: String,
    now: Timestamp,
) -> ProvisioningStatus {
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref());
    let phase_since = match previous {
        Some(p) if p.phase == phase => p.phase_since.clone(),
        _ => Some(Time(now)),
    };
    ProvisioningStatus {
        phase,
        cloud_id: cloud_id.or_else(|| previous.and_then(|p| p.cloud_id.clone())),
        message: Some(message),
        phase_since,
        operation: None,
    }
}

/// Writes (or renews) the kubeconfig Secret; returns its name.
async fn ensure_kubeconfig_secret(
    state: &State,
    cluster: &BudCluster,
    kubeconfig_text: impl FnOnce() -> Result<String, String>,
    now: Timestamp,
) -> Result<NamespacedSecretName, Blocker> {
    let namespace = state.settings.kubeconfig_secret_namespace.clone();
    let name = kubeconfig_secret_name(cluster);
    let api: Api<Secret> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let existing = api.get_opt(&name).await.map_err(|e| {
        Blocker::new(
            "KubeconfigSecretUnwritable",
            format!("cannot read Secret {namespace}/{name}: {}", short_error(&e)),
        )
    })?;
    let fresh = existing
        .as_ref()
        .and_then(|s| s.annotations().get(TOKEN_EXPIRES_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|expires| {
            expires.as_second() - now.as_second() > TOKEN_RENEW_BEFORE.as_secs() as i64
        });
    if !fresh {
        let text =
            kubeconfig_text().map_err(|e| Blocker::new("KubeconfigUnavailable", e.to_string()))?;
        write_kubeconfig_secret(state, cluster, &namespace, &name, &text, Some(now)).await?;
    }
    Ok(NamespacedSecretName { namespace, name })
}

/// Applies the kubeconfig Secret, owned by the BudCluster (garbage-collected with it).
pub(crate) async fn write_kubeconfig_secret(
    state: &State,
    cluster: &BudCluster,
    namespace: &str,
    name: &str,
    kubeconfig: &str,
    token_issued: Option<Timestamp>,
) -> Result<(), Blocker> {
    let api: Api<Secret> = Api::namespaced(state.ctx.client.clone(), namespace);
    let mut annotations = BTreeMap::new();
    if let Some(issued) = token_issued {
        let expires = issued
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                TOKEN_LIFETIME.as_secs() as i64,
            ))
            .unwrap_or(issued);
        annotations.insert(TOKEN_EXPIRES_ANNOTATION.to_owned(), expires.to_string());
    }
    let owner = cluster.controller_owner_ref(&());
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"bud.studio/budcluster": cluster.name_any()},
            "annotations": annotations,
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "stringData": {KUBECONFIG_KEY: kubeconfig},
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        Blocker::new(
            "KubeconfigSecretUnwritable",
            format!(
                "cannot write Secret {namespace}/{name}: {}",
                short_error(&e)
            ),
        )
    })?;
    Ok(())
}

pub(crate) async fn delete_kubeconfig_secret(state: &State, cluster: &BudCluster) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(
        state.ctx.client.clone(),
        &state.settings.kubeconfig_secret_namespace,
    );
    match api
        .delete(&kubeconfig_secret_name(cluster), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Whether `endpoint` was invented by a local AWS stand-in: the AWS endpoint override
/// (`--aws-endpoint-url`) is a loopback address (moto, LocalStack) and the cluster endpoint
/// is not. Such endpoints are names under `eks.amazonaws.com` that no Kubernetes API server
/// answers; dialling them would only send DNS queries off the machine. An override that is
/// not loopback (a VPC endpoint, a proxy) never stops the operator from connecting.
pub fn stand_in_endpoint(aws_endpoint_url: Option<&str>, endpoint: &str) -> bool {
    let host = |url: &str| {
        let rest = url.split("://").nth(1).unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        host.to_ascii_lowercase()
    };
    let loopback = |h: &str| h == "localhost" || h == "::1" || h.starts_with("127.");
    aws_endpoint_url.is_some_and(|url| loopback(&host(url)) && !loopback(&host(endpoint)))
}

/// Reconciles an EKS BudCluster. `None`: nothing more to do (finalizer removed).
pub async fn reconcile(
    cluster: &BudCluster,
    state: &State,
    now: Timestamp,
) -> Result<Option<(Observed, Duration)>> {
    let spec = cluster
        .spec
        .eks
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec.eks is required for type EKS".into()))?;
    let deleting = cluster.meta().deletion_timestamp.is_some();
    let has_finalizer = cluster.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(None);
    }
    if !deleting && !has_finalizer {
        set_finalizer(&state.ctx.client, cluster, true).await?;
    }
    let name = cloud_cluster_name(cluster);
    let previous_phase = cluster
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .map_or(ProvisioningPhase::Pending, |p| p.phase);
    let failed = |reason: &'static str, message: String, phase: ProvisioningPhase| {
        let delay = state.ctx.backoff.next_delay(&cluster.name_any());
        Ok(Some((
            Observed {
                blocker: Some(Blocker::new(reason, message.clone())),
                provisioning: Some(provisioning(cluster, phase, None, message.clone(), now)),
                provisioned: Some(new_condition(
                    "Provisioned",
                    false,
                    reason,
                    message,
                    cluster.metadata.generation,
                    now,
                )),
                failed: true,
                ..Default::default()
            },
            delay,
        )))
    };
    let (client, credentials) = match eks_client(spec, state).await {
        Ok(c) => c,
        Err(b) => return failed(b.reason, b.message, previous_phase),
    };
    let observed_cloud = match describe(&client, &name).await {
        Ok(o) => o,
        Err(e) => {
            return failed(
                "CloudApiError",
                format!("describing EKS cluster {name}: {}", e.message),
                previous_phase,
            );
        }
    };
    let plan = plan_eks(spec, &name, &observed_cloud, deleting);
    for action in &plan.actions {
        if let Err(e) = act(&client, cluster, spec, &name, action).await {
            let (reason, phase) = if e.permanent {
                ("ProvisioningFailed", ProvisioningPhase::Failed)
            } else {
                ("CloudApiError", plan.phase)
            };
            return failed(
                reason,
                format!("{}: {}", action.describe(&name), e.message),
                phase,
            );
        }
    }
    let arn = observed_cloud.cluster.as_ref().and_then(|c| c.arn.clone());
    let status = provisioning(cluster, plan.phase, arn, plan.message.clone(), now);
    if deleting {
        if plan.gone {
            delete_kubeconfig_secret(state, cluster).await?;
            set_finalizer(&state.ctx.client, cluster, false).await?;
            return Ok(None);
        }
        return Ok(Some((
            Observed {
                blocker: Some(Blocker::new("Deleting", plan.message.clone())),
                provisioning: Some(status),
                ..Default::default()
            },
            POLL_EVERY,
        )));
    }
    if !plan.complete {
        let reason = if plan.phase == ProvisioningPhase::Failed {
            "ProvisioningFailed"
        } else {
            "Provisioning"
        };
        return Ok(Some((
            Observed {
                blocker: Some(Blocker::new(reason, plan.message.clone())),
                provisioned: Some(new_condition(
                    "Provisioned",
                    false,
                    reason,
                    plan.message.clone(),
                    cluster.metadata.generation,
                    now,
                )),
                provisioning: Some(status),
                ..Default::default()
            },
            POLL_EVERY,
        )));
    }
    let cloud = observed_cloud.cluster.clone().unwrap_or_default();
    let endpoint = cloud.endpoint.clone().unwrap_or_default();
    let sts_endpoint = state
        .settings
        .aws_endpoint_url
        .clone()
        .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", spec.region));
    let secret = ensure_kubeconfig_secret(
        state,
        cluster,
        || {
            let token = eks_token(&credentials, &spec.region, &sts_endpoint, &name, now.into())?;
            Ok(eks_kubeconfig(
                &name,
                &endpoint,
                cloud.certificate_authority.as_deref().unwrap_or_default(),
                &token,
            ))
        },
        now,
    )
    .await;
    let provisioned = new_condition(
        "Provisioned",
        true,
        "Active",
        plan.message.clone(),
        cluster.metadata.generation,
        now,
    );
    let secret = match secret {
        Ok(secret) => secret,
        Err(blocker) => {
            return failed(
                blocker.reason,
                blocker.message,
                ProvisioningPhase::WritingKubeconfig,
            );
        }
    };
    let mut observed = if stand_in_endpoint(state.settings.aws_endpoint_url.as_deref(), &endpoint) {
        Observed {
            blocker: Some(Blocker::new(
                "Unreachable",
                format!(
                    "the EKS cluster is ACTIVE but its API endpoint {endpoint} comes from the AWS stand-in at {} (--aws-endpoint-url) and is not a Kubernetes API server; not connecting. The kubeconfig is in Secret {}/{}",
                    state
                        .settings
                        .aws_endpoint_url
                        .as_deref()
                        .unwrap_or_default(),
                    secret.namespace,
                    secret.name
                ),
            )),
            kubernetes_version: cloud.version.clone().map(|v| format!("v{v}")),
            ..Default::default()
        }
    } else {
        let secret_ref = NamespacedSecretKeyRef {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            key: KUBECONFIG_KEY.to_owned(),
        };
        observe_through_kubeconfig(state, cluster, &secret_ref, None).await
    };
    observed.provisioning = Some(status);
    observed.provisioned = Some(provisioned);
    observed.kubeconfig_secret = Some(secret);
    Ok(Some((
        observed,
        ACTIVE_RESYNC.min(super::KUBECONFIG_RESYNC),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::budcluster::EksNodeGroup;

    fn spec() -> EksClusterSpec {
        EksClusterSpec {
            region: "us-east-1".into(),
            kubernetes_version: Some("1.33".into()),
            role_arn: "arn:aws:iam::123456789012:role/eks".into(),
            node_role_arn: None,
            subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            security_group_ids: vec![],
            node_groups: vec![
                EksNodeGroup {
                    name: "h100".into(),
                    instance_types: vec!["p5.48xlarge".into()],
                    ami_type: Some("AL2023_x86_64_NVIDIA".into()),
                    min_size: 0,
                    max_size: 4,
                    desired_size: 1,
                    disk_size_gib: None,
                    labels: BTreeMap::new(),
                    taints: vec![],
                },
                EksNodeGroup {
                    name: "cpu".into(),
                    instance_types: vec!["m7i.2xlarge".into()],
                    ami_type: None,
                    min_size: 1,
                    max_size: 2,
                    desired_size: 1,
                    disk_size_gib: None,
                    labels: BTreeMap::new(),
                    taints: vec![],
                },
            ],
            tags: BTreeMap::new(),
            credentials_secret: None,
        }
    }

    fn active() -> CloudCluster {
        CloudCluster {
            status: "ACTIVE".into(),
            ..Default::default()
        }
    }

    fn group(status: &str, min: i32, max: i32, desired: i32) -> CloudNodeGroup {
        CloudNodeGroup {
            status: status.into(),
            min_size: min,
            max_size: max,
            desired_size: desired,
        }
    }

    #[test]
    fn creation_goes_cluster_then_node_groups_then_active() {
        let s = spec();
        let nothing = EksObserved::default();
        let p = plan_eks(&s, "c", &nothing, false);
        assert_eq!(p.actions, [EksAction::CreateCluster]);
        assert_eq!(p.phase, ProvisioningPhase::CreatingCluster);

        let creating = EksObserved {
            cluster: Some(CloudCluster {
                status: "CREATING".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = plan_eks(&s, "c", &creating, false);
        assert!(p.actions.is_empty(), "waits, never creates twice");
        assert_eq!(p.phase, ProvisioningPhase::CreatingCluster);
        assert!(p.message.contains("CREATING"), "{}", p.message);

        let up = EksObserved {
            cluster: Some(active()),
            ..Default::default()
        };
        let p = plan_eks(&s, "c", &up, false);
        assert_eq!(
            p.actions,
            [
                EksAction::CreateNodeGroup("h100".into()),
                EksAction::CreateNodeGroup("cpu".into())
            ]
        );
        assert_eq!(p.phase, ProvisioningPhase::CreatingNodeGroups);

        let done = EksObserved {
            cluster: Some(active()),
            node_groups: BTreeMap::from([
                ("h100".into(), group("ACTIVE", 0, 4, 1)),
                ("cpu".into(), group("ACTIVE", 1, 2, 1)),
            ]),
        };
        let p = plan_eks(&s, "c", &done, false);
        assert!(p.complete && p.actions.is_empty());
        assert_eq!(p.phase, ProvisioningPhase::Active);
    }

    #[test]
    fn size_changes_are_applied_and_removed_groups_deleted() {
        let mut s = spec();
        s.node_groups[0].desired_size = 3;
        s.node_groups.pop();
        let observed = EksObserved {
            cluster: Some(active()),
            node_groups: BTreeMap::from([
                ("h100".into(), group("ACTIVE", 0, 4, 1)),
                ("cpu".into(), group("ACTIVE", 1, 2, 1)),
            ]),
        };
        let p = plan_eks(&s, "c", &observed, false);
        assert_eq!(
            p.actions,
            [
                EksAction::ResizeNodeGroup {
                    name: "h100".into(),
                    min: 0,
                    max: 4,
                    desired: 3
                },
                EksAction::DeleteNodeGroup("cpu".into())
            ]
        );
        assert_eq!(p.phase, ProvisioningPhase::UpdatingNodeGroups);
        assert!(!p.complete);
    }

    #[test]
    fn deletion_removes_node_groups_before_the_cluster() {
        let s = spec();
        let with_groups = EksObserved {
            cluster: Some(active()),
            node_groups: BTreeMap::from([
                ("h100".into(), group("DELETING", 0, 4, 1)),
                ("cpu".into(), group("ACTIVE", 1, 2, 1)),
            ]),
        };
        let p = plan_eks(&s, "c", &with_groups, true);
        assert_eq!(p.actions, [EksAction::DeleteNodeGroup("cpu".into())]);
        assert_eq!(p.phase, ProvisioningPhase::DeletingNodeGroups);

        let bare = EksObserved {
            cluster: Some(active()),
            ..Default::default()
        };
        let p = plan_eks(&s, "c", &bare, true);
        assert_eq!(p.actions, [EksAction::DeleteCluster]);
        let gone = plan_eks(&s, "c", &EksObserved::default(), true);
        assert!(gone.gone && gone.actions.is_empty());
    }

    #[test]
    fn a_failed_node_group_is_reported_by_name() {
        let observed = EksObserved {
            cluster: Some(active()),
            node_groups: BTreeMap::from([
                ("h100".into(), group("CREATE_FAILED", 0, 4, 1)),
                ("cpu".into(), group("ACTIVE", 1, 2, 1)),
            ]),
        };
        let p = plan_eks(&spec(), "c", &observed, false);
        assert_eq!(p.phase, ProvisioningPhase::Failed);
        assert!(p.message.contains("h100 is CREATE_FAILED"), "{}", p.message);
    }

    #[test]
    fn the_token_is_a_presigned_sts_url_bound_to_the_cluster() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = eks_token(
            &creds,
            "us-east-1",
            "https://sts.us-east-1.amazonaws.com",
            "c1",
            now,
        )
        .unwrap();
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("prefix");
        assert!(!encoded.contains('='), "unpadded");
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Fsts%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        let other = eks_token(
            &creds,
            "us-east-1",
            "https://sts.us-east-1.amazonaws.com",
            "c2",
            now,
        )
        .unwrap();
        assert_ne!(token, other, "the signature covers the cluster name");
    }

    #[test]
    fn stand_in_endpoints_are_not_dialled() {
        let eks = "https://abc.gr7.us-east-1.eks.amazonaws.com/";
        assert!(stand_in_endpoint(Some("http://127.0.0.1:5000"), eks));
        assert!(stand_in_endpoint(Some("http://localhost:5000"), eks));
        assert!(!stand_in_endpoint(
            Some("http://127.0.0.1:5000"),
            "https://127.0.0.1:6443"
        ));
        assert!(!stand_in_endpoint(None, eks));
        assert!(
            !stand_in_endpoint(Some("https://vpce-1.eks.us-east-1.vpce.amazonaws.com"), eks),
            "a real endpoint override still connects"
        );
    }

    #[test]
    fn the_kubeconfig_parses_and_passes_the_secret_checks() {
        let text = eks_kubeconfig("c1", "https://127.0.0.1:6443", "Zm9v", "k8s-aws-v1.abc");
        let source = super::super::kubeconfig::parse_kubeconfig(&text, None).unwrap();
        assert_eq!(source.server, "https://127.0.0.1:6443");
    }
}
