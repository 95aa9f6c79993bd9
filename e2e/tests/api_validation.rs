//! The API against a real API server: every CRD installs, every example passes a
//! server-side dry run, and invalid resources are rejected with a message naming the field.

use bud_e2e::harness::{self, TestNamespace};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use std::path::Path;

async fn api_for(
    client: &Client,
    obj: &DynamicObject,
    namespace: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let types = obj
        .types
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("object without apiVersion/kind"))?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, caps) = discovery::pinned_kind(client, &gvk).await?;
    Ok(match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

fn documents(text: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            out.push(serde_json::from_value(value)?);
        }
    }
    Ok(out)
}

async fn create_dry_run(
    client: &Client,
    obj: &DynamicObject,
    namespace: &str,
) -> anyhow::Result<()> {
    let api = api_for(client, obj, namespace).await?;
    api.create(
        &PostParams {
            dry_run: true,
            field_manager: Some(harness::FIELD_MANAGER.into()),
        },
        obj,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn crds_install_and_every_example_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "examples").await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    let mut kinds = std::collections::BTreeSet::new();
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for obj in documents(&std::fs::read_to_string(&path)?)? {
            kinds.insert(
                obj.types
                    .as_ref()
                    .map(|t| t.kind.clone())
                    .unwrap_or_default(),
            );
            create_dry_run(&client, &obj, &ns.name).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}: {} rejected: {e:#}",
                    path.display(),
                    obj.metadata.name.clone().unwrap_or_default()
                )
            })?;
            checked += 1;
        }
    }
    for kind in [
        "BudCluster",
        "ModelDeployment",
        "Simulation",
        "Pipeline",
        "PipelineRun",
        "Evaluation",
        "ApiKey",
    ] {
        assert!(kinds.contains(kind), "examples/ has no {kind}");
    }
    assert!(checked >= 7, "only {checked} example objects found");
    ns.delete().await
}

/// An invalid resource and fragments its rejection message must contain: the field and
/// the rule's explanation.
struct Invalid {
    what: &'static str,
    yaml: &'static str,
    expect: &'static [&'static str],
}

const MD: &str = "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: bad}\n";
const BC: &str =
    "apiVersion: bud.studio/v1alpha1\nkind: BudCluster\nmetadata: {name: bad-cluster}\n";
const AK: &str = "apiVersion: bud.studio/v1alpha1\nkind: ApiKey\nmetadata: {name: bad}\n";
const SIM: &str = "apiVersion: bud.studio/v1alpha1\nkind: Simulation\nmetadata: {name: bad}\n";
const PL: &str = "apiVersion: bud.studio/v1alpha1\nkind: Pipeline\nmetadata: {name: bad}\n";
const EV: &str = "apiVersion: bud.studio/v1alpha1\nkind: Evaluation\nmetadata: {name: bad}\n";

fn invalid_cases() -> Vec<Invalid> {
    vec![
        Invalid {
            what: "model and provider together",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, provider: {type: OpenAI, model: gpt-4o, credentialsSecretRef: {name: s, key: k}}}",
            expect: &["spec", "set exactly one of spec.model"],
        },
        Invalid {
            what: "neither model nor provider",
            yaml: "spec: {servedName: x}",
            expect: &["spec", "set exactly one of spec.model"],
        },
        Invalid {
            what: "replicas with autoscaling",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, replicas: 2, autoscaling: {maxReplicas: 4, target: '8'}}",
            expect: &["spec.replicas", "mutually exclusive"],
        },
        Invalid {
            what: "tensor parallel not a power of two",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, placement: {accelerator: NVIDIA-L4, tensorParallel: 3}}",
            expect: &["spec.placement.tensorParallel", "power of two"],
        },
        Invalid {
            what: "autoscaling min above max",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, autoscaling: {minReplicas: 5, maxReplicas: 2, target: '8'}}",
            expect: &["spec.autoscaling.minReplicas", "must not exceed"],
        },
        Invalid {
            what: "model uri scheme",
            yaml: "spec: {model: {uri: 'http://example.com/model'}}",
            expect: &["spec.model.uri", "should match"],
        },
        Invalid {
            what: "negative replicas",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, replicas: -1}",
            expect: &["spec.replicas", "greater than or equal to 0"],
        },
        Invalid {
            what: "Azure without deployment",
            yaml: "spec: {provider: {type: AzureOpenAI, model: gpt-4o, baseUrl: 'https://x.openai.azure.com', credentialsSecretRef: {name: s, key: k}}}",
            expect: &["spec.provider", "AzureOpenAI needs"],
        },
        Invalid {
            what: "OpenAI-compatible without base URL",
            yaml: "spec: {provider: {type: OpenAICompatible, model: m, credentialsSecretRef: {name: s, key: k}}}",
            expect: &["spec.provider.baseUrl", "needs baseUrl"],
        },
        Invalid {
            what: "s3Endpoint on an hf:// model",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B, s3Endpoint: 'http://minio:9000'}}",
            expect: &["spec.model.s3Endpoint", "only to s3://"],
        },
        Invalid {
            what: "accelerators per replica inconsistent",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, placement: {accelerator: NVIDIA-L4, tensorParallel: 2, acceleratorsPerReplica: 3}}",
            expect: &["spec.placement.acceleratorsPerReplica", "must equal"],
        },
        Invalid {
            what: "expert parallelism over part of the tensor-parallel group on vLLM",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, engine: {type: VLLM}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 4, expertParallel: 2}}",
            expect: &[
                "spec.placement.expertParallel",
                "needs engine SGLang or TensorRTLLM",
            ],
        },
        Invalid {
            what: "expert parallelism that does not divide the ranks",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, engine: {type: SGLang}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 4, expertParallel: 3}}",
            expect: &[
                "spec.placement.expertParallel",
                "must divide tensorParallel",
            ],
        },
        Invalid {
            what: "expert parallelism on an engine that slices experts",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, engine: {type: TGI}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 2, expertParallel: 2}}",
            expect: &[
                "spec.placement.expertParallel",
                "TGI and LlamaCpp slice them",
            ],
        },
        Invalid {
            what: "expert parallelism over part of the data-parallel ranks without choosing an engine",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 1, attentionDataParallel: 4, expertParallel: 2}}",
            expect: &[
                "spec.placement.expertParallel",
                "below tensorParallel x attentionDataParallel",
            ],
        },
        Invalid {
            what: "accelerators per replica without the data-parallel ranks",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 2, attentionDataParallel: 2, acceleratorsPerReplica: 2}}",
            expect: &[
                "spec.placement.acceleratorsPerReplica",
                "x attentionDataParallel",
            ],
        },
        Invalid {
            what: "attention data parallelism with pipeline stages",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, pipelineParallel: 2, attentionDataParallel: 2}}",
            expect: &["spec.placement.attentionDataParallel", "pipelineParallel 1"],
        },
        Invalid {
            what: "attention data parallelism with tensor parallelism on TensorRT-LLM",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, engine: {type: TensorRTLLM}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, tensorParallel: 2, attentionDataParallel: 2}}",
            expect: &[
                "spec.placement.tensorParallel",
                "must be 1 with attentionDataParallel",
            ],
        },
        Invalid {
            what: "attention data parallelism on TGI",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-30B-A3B}, engine: {type: TGI}, placement: {accelerator: NVIDIA-H100-80GB-HBM3, attentionDataParallel: 2}}",
            expect: &[
                "spec.placement.attentionDataParallel",
                "TGI and LlamaCpp have no",
            ],
        },
        Invalid {
            what: "unknown engine",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, engine: {type: Vllm}}",
            expect: &["spec.engine.type", "Unsupported value"],
        },
        Invalid {
            what: "provider with placement",
            yaml: "spec: {provider: {type: OpenAI, model: gpt-4o, credentialsSecretRef: {name: s, key: k}}, placement: {accelerator: NVIDIA-L4}}",
            expect: &["spec.provider", "deploys nothing"],
        },
        Invalid {
            what: "served name with spaces",
            yaml: "spec: {model: {uri: hf://Qwen/Qwen3-8B}, servedName: 'my model'}",
            expect: &["spec.servedName", "should match"],
        },
        Invalid {
            what: "price as a float-looking word",
            yaml: "spec: {provider: {type: OpenAI, model: gpt-4o, credentialsSecretRef: {name: s, key: k}, pricing: {inputPerMillionTokens: 'cheap', outputPerMillionTokens: '1'}}}",
            expect: &[
                "spec.provider.pricing.inputPerMillionTokens",
                "should match",
            ],
        },
        Invalid {
            what: "Kubeconfig cluster without kubeconfig",
            yaml: "spec: {type: Kubeconfig}",
            expect: &["spec.kubeconfig", "required when spec.type is Kubeconfig"],
        },
        Invalid {
            what: "Local cluster with eks",
            yaml: "spec: {type: Local, eks: {region: us-east-1, roleArn: 'arn:aws:iam::123456789012:role/x', subnetIds: [a, b], nodeGroups: [{name: g, instanceTypes: [p5.48xlarge], minSize: 0, maxSize: 1, desiredSize: 0}]}}",
            expect: &["spec.eks", "only allowed when spec.type is EKS"],
        },
        Invalid {
            what: "unknown cluster type",
            yaml: "spec: {type: GKE}",
            expect: &["spec.type", "Unsupported value"],
        },
        Invalid {
            what: "EKS node group min above max",
            yaml: "spec: {type: EKS, eks: {region: us-east-1, roleArn: 'arn:aws:iam::123456789012:role/x', subnetIds: [a, b], nodeGroups: [{name: g, instanceTypes: [p5.48xlarge], minSize: 3, maxSize: 1, desiredSize: 2}]}}",
            expect: &["spec.eks.nodeGroups[0]", "minSize must not exceed maxSize"],
        },
        Invalid {
            what: "EKS duplicate node groups",
            yaml: "spec: {type: EKS, eks: {region: us-east-1, roleArn: 'arn:aws:iam::123456789012:role/x', subnetIds: [a, b], nodeGroups: [{name: g, instanceTypes: [p5.48xlarge], minSize: 0, maxSize: 1, desiredSize: 0}, {name: g, instanceTypes: [p5.48xlarge], minSize: 0, maxSize: 1, desiredSize: 0}]}}",
            expect: &["spec.eks.nodeGroups[1]", "Duplicate value"],
        },
        Invalid {
            what: "AKS pool name too long",
            yaml: "spec: {type: AKS, aks: {subscriptionId: 00000000-0000-0000-0000-000000000000, resourceGroup: rg, location: eastus, nodePools: [{name: averyverylongpoolname, vmSize: Standard_D4s_v5, count: 1}], credentialsSecret: {namespace: n, name: s}}}",
            expect: &["spec.aks.nodePools[0].name", "should match"],
        },
        Invalid {
            what: "accelerator price not a decimal",
            yaml: "spec: {type: Local, acceleratorPrices: {NVIDIA-L4: 'free'}}",
            expect: &["spec.acceleratorPrices", "should match"],
        },
        Invalid {
            what: "empty limits",
            yaml: "spec: {limits: {}}",
            expect: &[
                "spec.limits",
                "set requestsPerMinute, tokensPerMinute or both",
            ],
        },
        Invalid {
            what: "duplicate allowed models",
            yaml: "spec: {models: [a, a]}",
            expect: &["spec.models[1]", "Duplicate value"],
        },
        Invalid {
            what: "zero requests per minute",
            yaml: "spec: {limits: {requestsPerMinute: 0}}",
            expect: &[
                "spec.limits.requestsPerMinute",
                "greater than or equal to 1",
            ],
        },
        Invalid {
            what: "model id and configRef",
            yaml: "spec: {model: {id: Qwen/Qwen3-8B, configRef: {name: c, key: config.json}}}",
            expect: &["spec.model", "set exactly one of model.id"],
        },
        Invalid {
            what: "too many results",
            yaml: "spec: {model: {id: Qwen/Qwen3-8B}, maxResults: 100}",
            expect: &["spec.maxResults", "less than or equal to 50"],
        },
        Invalid {
            what: "zero concurrency",
            yaml: "spec: {model: {id: Qwen/Qwen3-8B}, workload: {concurrency: 0}}",
            expect: &["spec.workload.concurrency", "greater than or equal to 1"],
        },
        Invalid {
            what: "malformed cron schedule",
            yaml: "spec: {schedule: 'every day at noon', steps: [{name: w, action: Wait, wait: {seconds: 1}}]}",
            expect: &["spec.schedule", "should match"],
        },
        Invalid {
            what: "dependsOn an unknown step",
            yaml: "spec: {steps: [{name: w, action: Wait, wait: {seconds: 1}, dependsOn: [nope]}]}",
            expect: &["spec.steps", "must name another step"],
        },
        Invalid {
            what: "action without its field",
            yaml: "spec: {steps: [{name: w, action: Wait}]}",
            expect: &["spec.steps[0]", "exactly the field of its action"],
        },
        Invalid {
            what: "duplicate step names",
            yaml: "spec: {steps: [{name: w, action: Wait, wait: {seconds: 1}}, {name: w, action: Wait, wait: {seconds: 2}}]}",
            expect: &["spec.steps[1]", "Duplicate value"],
        },
        Invalid {
            what: "load evaluation without load",
            yaml: "spec: {type: Load, target: {modelDeployment: m, apiKeySecretRef: {name: s, key: k}}}",
            expect: &["spec.load", "required for type Load"],
        },
    ]
}

fn prefix_for(case: &Invalid) -> &'static str {
    let first_kind = case.yaml;
    match () {
        _ if first_kind.contains("type: Local")
            || first_kind.contains("type: Kubeconfig")
            || first_kind.contains("type: EKS")
            || first_kind.contains("type: AKS")
            || first_kind.contains("type: GKE") =>
        {
            BC
        }
        _ if first_kind.contains("limits") || first_kind.contains("models: [") => AK,
        _ if first_kind.contains("model: {id") => SIM,
        _ if first_kind.contains("steps") => PL,
        _ if first_kind.contains("type: Load") => EV,
        _ => MD,
    }
}

#[tokio::test]
async fn invalid_resources_are_rejected_naming_the_field() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "invalid").await?;
    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let text = format!("{}{}", prefix_for(case), case.yaml);
        let obj = documents(&text)?.remove(0);
        match create_dry_run(&client, &obj, &ns.name).await {
            Ok(()) => failures.push(format!("{}: accepted, expected a rejection", case.what)),
            Err(err) => {
                let message = format!("{err:#}");
                for fragment in case.expect {
                    if !message.contains(fragment) {
                        failures.push(format!(
                            "{}: message lacks {fragment:?}: {message}",
                            case.what
                        ));
                    }
                }
            }
        }
    }
    ns.delete().await?;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn parallel_layouts_each_engine_runs_are_accepted() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "layouts").await?;
    let placement = |engine: &str, layout: &str| {
        format!(
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: layout}}\nspec: {{model: {{uri: hf://Qwen/Qwen3-30B-A3B}}, engine: {{type: {engine}}}, placement: {{accelerator: NVIDIA-H100-80GB-HBM3, {layout}}}}}"
        )
    };
    for (engine, layout) in [
        // Experts over four of eight, sliced over pairs (--ep-size / --ep_size 4).
        ("SGLang", "tensorParallel: 8, expertParallel: 4"),
        ("TensorRTLLM", "tensorParallel: 8, expertParallel: 4"),
        ("TensorRTLLM", "attentionDataParallel: 8, expertParallel: 2"),
        // Attention ranks two accelerators wide, experts over all four.
        (
            "VLLM",
            "tensorParallel: 2, attentionDataParallel: 2, expertParallel: 4",
        ),
        (
            "SGLang",
            "tensorParallel: 2, attentionDataParallel: 2, expertParallel: 4",
        ),
    ] {
        let obj = documents(&placement(engine, layout))?.remove(0);
        create_dry_run(&client, &obj, &ns.name)
            .await
            .map_err(|e| anyhow::anyhow!("{engine} with {layout} rejected: {e:#}"))?;
    }
    ns.delete().await
}

#[tokio::test]
async fn immutable_fields_cannot_change() -> anyhow::Result<()> {
    let client = harness::client().await?;
    harness::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "immutable").await?;
    let params = PatchParams::apply(harness::FIELD_MANAGER).force();

    // (kind document, field change as a JSON merge of the spec, expected message)
    let cases: [(&str, serde_json::Value, &str); 4] = [
        (
            "apiVersion: bud.studio/v1alpha1\nkind: ModelDeployment\nmetadata: {name: immutable-md}\nspec: {model: {uri: hf://Qwen/Qwen3-8B}, cluster: local}",
            serde_json::json!({"cluster": "elsewhere"}),
            "spec.cluster is immutable",
        ),
        (
            "apiVersion: bud.studio/v1alpha1\nkind: ApiKey\nmetadata: {name: immutable-key}\nspec: {secretName: first}",
            serde_json::json!({"secretName": "second"}),
            "spec.secretName is immutable",
        ),
        (
            "apiVersion: bud.studio/v1alpha1\nkind: PipelineRun\nmetadata: {name: immutable-run}\nspec: {pipeline: p}",
            serde_json::json!({"pipeline": "q"}),
            "spec is immutable",
        ),
        (
            "apiVersion: bud.studio/v1alpha1\nkind: Evaluation\nmetadata: {name: immutable-eval}\nspec: {type: Load, target: {modelDeployment: m, apiKeySecretRef: {name: s, key: k}}, load: {inputTokens: 1, outputTokens: 1, concurrency: 1, requests: 1}}",
            serde_json::json!({"load": {"inputTokens": 2, "outputTokens": 1, "concurrency": 1, "requests": 1}}),
            "spec is immutable",
        ),
    ];
    for (yaml, change, expected) in cases {
        let obj = documents(yaml)?.remove(0);
        let api = api_for(&client, &obj, &ns.name).await?;
        let name = obj.metadata.name.clone().unwrap();
        api.patch(&name, &params, &Patch::Apply(&obj)).await?;
        let mut changed = serde_json::to_value(&obj)?;
        json_merge(&mut changed["spec"], &change);
        let err = api
            .patch(&name, &params, &Patch::Apply(&changed))
            .await
            .expect_err("an immutable field changed");
        assert!(format!("{err:#}").contains(expected), "{name}: {err:#}");
    }

    // BudCluster is cluster-scoped: use a unique name and clean up.
    let name = format!("immutable-{}", ns.name);
    let bc: DynamicObject = documents(&format!("apiVersion: bud.studio/v1alpha1\nkind: BudCluster\nmetadata: {{name: {name}}}\nspec: {{type: Local}}"))?.remove(0);
    let api = api_for(&client, &bc, &ns.name).await?;
    api.patch(&name, &params, &Patch::Apply(&bc)).await?;
    let mut changed = serde_json::to_value(&bc)?;
    changed["spec"] = serde_json::json!({"type": "Kubeconfig", "kubeconfig": {"secretRef": {"namespace": "x", "name": "y", "key": "z"}}});
    let err = api
        .patch(&name, &params, &Patch::Apply(&changed))
        .await
        .expect_err("spec.type changed");
    assert!(
        format!("{err:#}").contains("spec.type is immutable"),
        "{err:#}"
    );
    api.delete(&name, &Default::default()).await?;
    ns.delete().await
}

fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            t.insert(k.clone(), v.clone());
        }
    }
}
