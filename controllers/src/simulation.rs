//! The `Simulation` controller: runs the simulator's configuration search for a model,
//! workload and SLO over the candidates (BudCluster inventories and listed accelerators) and
//! writes the ranked recommendations, the rejection counts and the nearest miss to status.
//!
//! The search runs on the blocking pool, so one large search never holds up other objects.
//! It runs again whenever the spec or a BudCluster changes; status is only written when the
//! outcome changed.

use crate::planning::{self, PlanInputs};
use crate::{Context, Error, FIELD_MANAGER, Result};
use bud_crds::conditions::{
    READY, differ_ignoring_time, find_condition, new_condition, set_condition,
};
use bud_crds::simulation::SimulationSpec;
use bud_crds::{BudCluster, Simulation, SimulationStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTROLLER: &str = "simulation";
/// Condition set when the search finished, True with recommendations, False without.
pub const SUCCEEDED: &str = "Succeeded";

/// What a search concluded, ready to be written to status.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: SimulationStatus,
    /// Reason of the Ready condition.
    pub reason: String,
}

/// Runs the search for `spec` over `clusters` (the model's config.json text given when it
/// comes from a ConfigMap) and builds the status. Pure apart from the search itself.
pub fn plan_status(
    sim: &Simulation,
    clusters: &[Arc<BudCluster>],
    model_config: Option<String>,
    now: Timestamp,
) -> Outcome {
    let spec = &sim.spec;
    let generation = sim.metadata.generation;
    let mut status = SimulationStatus {
        conditions: sim
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        observed_generation: generation,
        ..Default::default()
    };
    let fail = |mut status: SimulationStatus, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            new_condition(SUCCEEDED, false, reason, message.clone(), generation, now),
        );
        set_condition(
            &mut status.conditions,
            new_condition(READY, false, reason, message, generation, now),
        );
        status.completion_time = Some(Time(now));
        Outcome {
            status,
            reason: reason.to_owned(),
        }
    };

    let selected: Vec<&BudCluster> = clusters
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| {
            spec.candidates.clusters.is_empty()
                || spec
                    .candidates
                    .clusters
                    .iter()
                    .any(|n| Some(n) == c.metadata.name.as_ref())
        })
        .collect();
    let use_clusters =
        !spec.candidates.clusters.is_empty() || spec.candidates.accelerators.is_empty();
    let (mut pools, unknown) = if use_clusters {
        planning::pools_from_clusters(selected.iter().copied())
    } else {
        (Vec::new(), Vec::new())
    };
    let missing: Vec<&String> = spec
        .candidates
        .clusters
        .iter()
        .filter(|n| {
            !selected
                .iter()
                .any(|c| c.metadata.name.as_ref() == Some(*n))
        })
        .collect();
    pools.extend(
        spec.candidates
            .accelerators
            .iter()
            .map(planning::pool_from_candidate),
    );
    if pools.is_empty() {
        let mut message = "no candidate accelerators: ".to_owned();
        if !missing.is_empty() {
            message += &format!("BudCluster(s) {} not found; ", join(&missing));
        }
        if !unknown.is_empty() {
            message += &format!(
                "accelerators unknown to the simulator: {}; ",
                unknown.join(", ")
            );
        }
        message += "list Ready BudClusters in spec.candidates.clusters or accelerators in spec.candidates.accelerators";
        return fail(status, "NoCandidates", message);
    }

    let (model_id, config) = match (&spec.model.id, model_config) {
        (_, Some(text)) => (sim.name_any(), Some(text)),
        (Some(id), None) => (id.clone(), None),
        (None, None) => {
            return fail(
                status,
                "ModelNotFound",
                "spec.model names no model".to_owned(),
            );
        }
    };
    let inputs = PlanInputs {
        model_id,
        model_config: config,
        workload: &spec.workload,
        slo: &spec.slo,
        objective: spec.objective,
        engines: &spec.engines,
        precisions: &spec.precisions,
        checkpoint_precisions_only: spec.checkpoint_precisions_only,
        max_results: spec.max_results.max(1) as usize,
    };
    let request = planning::plan_request(&inputs, pools.clone());
    let started = Instant::now();
    let result = match bud_simulator::plan(&request) {
        Ok(result) => result,
        Err(err) => return fail(status, "InvalidRequest", err.to_string()),
    };
    status.search_duration_ms = Some(started.elapsed().as_millis() as i64);
    status.evaluated = result.evaluated as i64;
    status.rejections = planning::rejection_counts(&result);
    status.nearest_miss = planning::nearest_miss(&result, &pools);
    status.recommendations = result
        .recommendations
        .iter()
        .map(|r| planning::api_recommendation(r, &pools))
        .collect();
    status.best = status.recommendations.first().map(planning::describe);
    status.completion_time = Some(Time(now));
    if status.recommendations.is_empty() {
        let message = format!(
            "none of {} configurations meets the targets; {}",
            result.evaluated,
            status.nearest_miss.clone().unwrap_or_else(|| {
                // Nothing even ran: say why most candidates could not.
                match status.rejections.first() {
                    Some(r) => format!(
                        "no candidate runs the model; {} were rejected for {}, the commonest reason, e.g. {}",
                        r.count,
                        r.reason,
                        r.example.as_deref().unwrap_or("no example")
                    ),
                    None => "no candidate runs the model".to_owned(),
                }
            })
        );
        return fail(status, "NoFeasibleConfiguration", message);
    }
    let message = format!(
        "best of {}: {}",
        result.evaluated,
        status.best.clone().unwrap_or_default()
    );
    set_condition(
        &mut status.conditions,
        new_condition(
            SUCCEEDED,
            true,
            "SearchComplete",
            message.clone(),
            generation,
            now,
        ),
    );
    set_condition(
        &mut status.conditions,
        new_condition(READY, true, "SearchComplete", message, generation, now),
    );
    Outcome {
        status,
        reason: "SearchComplete".to_owned(),
    }
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether two outcomes differ in anything but timing.
pub fn outcome_changed(old: &SimulationStatus, new: &SimulationStatus) -> bool {
    old.recommendations != new.recommendations
        || old.rejections != new.rejections
        || old.nearest_miss != new.nearest_miss
        || old.evaluated != new.evaluated
        || old.best != new.best
        || old.observed_generation != new.observed_generation
        || differ_ignoring_time(&old.conditions, &new.conditions)
}

/// Reads the `config.json` a Simulation's `spec.model.configRef` names.
pub async fn model_config(
    client: &kube::Client,
    namespace: &str,
    spec: &SimulationSpec,
) -> Result<Option<String>> {
    let Some(reference) = &spec.model.config_ref else {
        return Ok(None);
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api.get_opt(&reference.name).await?.ok_or_else(|| {
        Error::InvalidSpec(format!(
            "spec.model.configRef: ConfigMap {namespace}/{} not found",
            reference.name
        ))
    })?;
    cm.data
        .and_then(|d| d.get(&reference.key).cloned())
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "spec.model.configRef: ConfigMap {} has no key {}",
                reference.name, reference.key
            ))
        })
}

/// Controller state: the context and the BudCluster cache.
pub struct State {
    pub ctx: Arc<Context>,
    pub clusters: Store<BudCluster>,
}

async fn reconcile(sim: Arc<Simulation>, state: Arc<State>) -> Result<Action> {
    let started = Instant::now();
    let ctx = &state.ctx;
    let labels = crate::metrics::ControllerLabels {
        controller: CONTROLLER,
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let namespace = sim.namespace().unwrap_or_default();
    let name = sim.name_any();

    let config = match model_config(&ctx.client, &namespace, &sim.spec).await {
        Ok(config) => config,
        Err(Error::InvalidSpec(message)) => {
            let mut status = sim.status.clone().unwrap_or_default();
            let now = Timestamp::now();
            status.observed_generation = sim.metadata.generation;
            set_condition(
                &mut status.conditions,
                new_condition(
                    SUCCEEDED,
                    false,
                    "ModelNotFound",
                    message.clone(),
                    sim.metadata.generation,
                    now,
                ),
            );
            set_condition(
                &mut status.conditions,
                new_condition(
                    READY,
                    false,
                    "ModelNotFound",
                    message,
                    sim.metadata.generation,
                    now,
                ),
            );
            write_status(ctx, &sim, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Err(err) => return Err(err),
    };
    let clusters = state.clusters.state();
    let previous = sim.status.clone().unwrap_or_default();
    let sim_for_search = sim.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        plan_status(&sim_for_search, &clusters, config, Timestamp::now())
    })
    .await
    .map_err(|e| Error::InvalidSpec(format!("the search panicked: {e}")))?;

    if outcome_changed(&previous, &outcome.status) {
        write_status(ctx, &sim, &outcome.status).await?;
        let (type_, note) = match outcome.status.best.clone() {
            Some(best) => (EventType::Normal, format!("best configuration: {best}")),
            None => (
                EventType::Warning,
                find_condition(&outcome.status.conditions, READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            ),
        };
        let event = Event {
            type_,
            reason: outcome.reason.clone(),
            note: Some(truncate(note, 1000)),
            action: "Simulate".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &sim.object_ref(&())).await {
            tracing::warn!(error = %err, "could not record event");
        }
    }
    ctx.backoff.reset(&format!("{namespace}/{name}"));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Cuts a note to `max` bytes on a character boundary (Events reject long notes).
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn write_status(ctx: &Context, sim: &Simulation, status: &SimulationStatus) -> Result<()> {
    let api: Api<Simulation> =
        Api::namespaced(ctx.client.clone(), &sim.namespace().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": "bud.studio/v1alpha1", "kind": "Simulation", "status": status});
    api.patch_status(
        &sim.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn error_policy(sim: Arc<Simulation>, error: &Error, state: Arc<State>) -> Action {
    let key = format!("{}/{}", sim.namespace().unwrap_or_default(), sim.name_any());
    state.ctx.requeue_after_error(CONTROLLER, &key, error)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (clusters, cluster_events) = crate::cluster_cache(&ctx.client);
    let api: Api<Simulation> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let sims = controller.store();
    // A cluster's inventory feeds every Simulation that names it or names none.
    let affected = move |cluster: BudCluster| {
        let name = cluster.name_any();
        sims.state()
            .into_iter()
            .filter(|s| {
                s.spec.candidates.clusters.is_empty() || s.spec.candidates.clusters.contains(&name)
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    };
    let state = Arc::new(State { ctx, clusters });
    controller
        .watches_stream(cluster_events, affected)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::common::SloTargets;
    use bud_crds::simulation::{CandidateAccelerator, Candidates, SimulationModel};

    fn simulation(model: &str, slo: SloTargets, candidates: Candidates) -> Simulation {
        let mut s = Simulation::new(
            "what-if",
            SimulationSpec {
                model: SimulationModel {
                    id: Some(model.into()),
                    config_ref: None,
                },
                workload: Default::default(),
                slo,
                candidates,
                objective: Default::default(),
                engines: vec![],
                precisions: vec![],
                checkpoint_precisions_only: false,
                max_results: 3,
            },
        );
        s.metadata.generation = Some(2);
        s
    }

    #[test]
    fn a_feasible_search_ranks_recommendations() {
        let sim = simulation(
            "Qwen/Qwen3-8B",
            SloTargets {
                ttft_ms: Some(2000),
                tpot_ms: Some(100),
                ..Default::default()
            },
            Candidates::default(),
        );
        let outcome = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::UNIX_EPOCH,
        );
        let s = &outcome.status;
        assert_eq!(outcome.reason, "SearchComplete");
        assert!(!s.recommendations.is_empty() && s.recommendations.len() <= 3);
        assert_eq!(s.recommendations[0].accelerator, "NVIDIA-H100-80GB-HBM3");
        assert_eq!(s.recommendations[0].cluster.as_deref(), Some("local"));
        assert!(s.best.as_deref().unwrap().contains("NVIDIA-H100-80GB-HBM3"));
        assert_eq!(s.observed_generation, Some(2));
        assert!(bud_crds::conditions::is_true(&s.conditions, READY));
        assert!(bud_crds::conditions::is_true(&s.conditions, SUCCEEDED));
    }

    #[test]
    fn a_model_no_candidate_holds_fails_saying_why() {
        let sim = simulation(
            "meta-llama/Llama-3.1-70B",
            SloTargets::default(),
            Candidates {
                accelerators: vec![CandidateAccelerator {
                    product: "NVIDIA-L4".into(),
                    count: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let outcome = plan_status(&sim, &[], None, Timestamp::UNIX_EPOCH);
        assert_eq!(outcome.reason, "NoFeasibleConfiguration");
        let ready = find_condition(&outcome.status.conditions, READY).unwrap();
        assert!(
            ready.message.contains("DoesNotFitInMemory")
                && ready.message.contains("1× l4")
                && ready.message.contains("does not fit"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn an_impossible_slo_fails_with_the_nearest_miss() {
        let sim = simulation(
            "meta-llama/Llama-3.1-70B",
            SloTargets {
                tpot_ms: Some(1),
                ..Default::default()
            },
            Candidates::default(),
        );
        let outcome = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(outcome.reason, "NoFeasibleConfiguration");
        let ready = find_condition(&outcome.status.conditions, READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("none of"), "{}", ready.message);
        assert!(outcome.status.nearest_miss.is_some());
        assert!(!outcome.status.rejections.is_empty());
    }

    #[test]
    fn missing_clusters_and_no_accelerators_say_what_to_list() {
        let candidates = Candidates {
            clusters: vec!["nowhere".into()],
            accelerators: vec![],
        };
        let sim = simulation("Qwen/Qwen3-8B", SloTargets::default(), candidates);
        let outcome = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(outcome.reason, "NoCandidates");
        let ready = find_condition(&outcome.status.conditions, READY).unwrap();
        assert!(ready.message.contains("nowhere"), "{}", ready.message);
    }

    #[test]
    fn explicit_accelerators_work_without_clusters() {
        let candidates = Candidates {
            clusters: vec![],
            accelerators: vec![CandidateAccelerator {
                product: "NVIDIA-L4".into(),
                count: 4,
                max_per_node: Some(1),
                price_per_hour: Some("0.80".into()),
            }],
        };
        let sim = simulation("Qwen/Qwen3-0.6B", SloTargets::default(), candidates);
        let outcome = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            outcome.reason, "SearchComplete",
            "{:?}",
            outcome.status.conditions
        );
        assert_eq!(outcome.status.recommendations[0].accelerator, "NVIDIA-L4");
        assert_eq!(outcome.status.recommendations[0].cluster, None);
    }

    #[test]
    fn the_same_inputs_give_an_unchanged_outcome() {
        let sim = simulation(
            "Qwen/Qwen3-8B",
            SloTargets {
                ttft_ms: Some(2000),
                ..Default::default()
            },
            Candidates::default(),
        );
        let a = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::UNIX_EPOCH,
        )
        .status;
        let b = plan_status(
            &sim,
            &[crate::fixtures::local_cluster()],
            None,
            Timestamp::from_second(100).unwrap(),
        )
        .status;
        assert!(!outcome_changed(&a, &b));
    }
}
