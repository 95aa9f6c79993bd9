//! The configuration search: which accelerator, parallelism, precision, engine, batch limit and
//! replica count meet the SLO at the lowest cost (or the highest throughput per dollar).
//!
//! Small and normal spaces are searched exhaustively with pruning (a configuration that does not
//! fit skips every replica count; for each shape the replica counts are scanned upwards and the
//! scan stops once more replicas cannot improve the objective). Very large spaces use a seeded
//! NSGA-II over the same genome. Both are deterministic: same request, same answer.

use crate::error::{Error, Result};
use crate::hardware::{Accelerator, DeviceKind, HardwareCatalog};
use crate::model::{ModelCatalog, ModelSpec};
use crate::params::FittedParams;
use crate::perf::{
    Prediction, Resolved, ServingConfig, Workload, check_engine, one, parallel_layout,
};
use crate::precision::{Engine, Precision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Service-level objectives; absent fields are not constrained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slo {
    /// Largest mean time to first token, ms.
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Largest mean time per output token, ms.
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    /// Largest mean end-to-end latency, ms.
    #[serde(default)]
    pub e2e_ms: Option<f64>,
    /// Smallest output tokens/s per user.
    #[serde(default)]
    pub min_tokens_per_s_per_user: Option<f64>,
}

/// Devices a cluster offers for this model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidatePool {
    /// Accelerator id or node label value (`NVIDIA-H100-80GB-HBM3`).
    pub accelerator: String,
    /// Devices available in total.
    pub count: u32,
    /// Devices per node (default: the catalog's figure); bounds TP without PP.
    #[serde(default)]
    pub max_per_node: Option<u32>,
    /// Price per device-hour overriding the catalog's list price.
    #[serde(default)]
    pub price_per_hour: Option<f64>,
    /// Opaque cluster name, echoed back in recommendations.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// What to optimise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// Cheapest configuration meeting the SLO.
    #[default]
    LowestCost,
    /// Most output tokens/s per dollar-hour meeting the SLO.
    HighestThroughputPerDollar,
}

/// Search strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchMode {
    /// Exhaustive below [`GENETIC_THRESHOLD`] candidate shapes, NSGA-II above.
    #[default]
    Auto,
    /// Always exhaustive.
    Exhaustive,
    /// Always NSGA-II.
    Genetic,
}

/// Shapes above which [`SearchMode::Auto`] switches to NSGA-II.
pub const GENETIC_THRESHOLD: usize = 200_000;

/// A planning request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRequest {
    /// Model id from the catalog (`Qwen/Qwen3-8B`, `hf://...`).
    pub model: String,
    /// A config.json text for models not in the catalog.
    #[serde(default)]
    pub model_config: Option<String>,
    /// The load: tokens per request and total concurrent users.
    pub workload: Workload,
    /// Targets.
    #[serde(default)]
    pub slo: Slo,
    /// Candidate device pools.
    pub pools: Vec<CandidatePool>,
    /// What to optimise.
    #[serde(default)]
    pub objective: Objective,
    /// Allowed engines (default: all that run on each device).
    #[serde(default)]
    pub engines: Option<Vec<Engine>>,
    /// Allowed precisions (default: the model's own and every narrower one the device supports).
    #[serde(default)]
    pub precisions: Option<Vec<Precision>>,
    /// Only precisions an engine serves from the model's own checkpoint: the checkpoint's, and
    /// FP8 where the engine quantizes while loading (vLLM, SGLang;
    /// [`Engine::quantizes_at_load`]). Without it a narrower precision is assumed to come from
    /// a checkpoint quantized offline, as a what-if may. ModelDeployments plan with it set.
    #[serde(default)]
    pub checkpoint_precisions_only: bool,
    /// How many recommendations to return (default 10).
    #[serde(default)]
    pub max_results: Option<usize>,
    /// Search strategy.
    #[serde(default)]
    pub search: SearchMode,
    /// Seed of the genetic search.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// One recommended deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// Rank, 1 = best.
    pub rank: usize,
    /// Accelerator id.
    pub accelerator: String,
    /// Cluster name from the pool.
    pub cluster: Option<String>,
    /// Devices per replica.
    pub gpus_per_replica: u32,
    /// Replicas.
    pub replicas: u32,
    /// Tensor parallel size.
    pub tp: u32,
    /// Pipeline parallel size.
    pub pp: u32,
    /// Weight precision.
    pub precision: Precision,
    /// Engine.
    pub engine: Engine,
    /// Max sequences per replica.
    pub max_batch: u32,
    /// Devices of a MoE model's stage its routed experts are spread whole over, each sliced
    /// over the rest (MoE TP = tp × attention DP ÷ this); 1: every expert sliced.
    pub expert_parallel: u32,
    /// Attention data-parallel ranks of a MoE model, each with `tp` devices and its own
    /// requests' KV cache (1: attention split by tensor parallelism alone).
    #[serde(default = "one")]
    pub attention_data_parallel: u32,
    /// Predicted metrics of one replica at its share of the load.
    pub prediction: Prediction,
    /// Output tokens/s over all replicas.
    pub total_tokens_per_s: f64,
    /// Cost per hour of all replicas.
    pub cost_per_hour: f64,
    /// Output tokens per dollar.
    pub tokens_per_dollar: f64,
    /// On the cost / latency Pareto front of the feasible results.
    pub pareto_optimal: bool,
}

impl Recommendation {
    /// The parallel layout, e.g. `TP4 PP1` or `TP1 PP1 DP8 EP8` ([`parallel_layout`]).
    pub fn layout(&self) -> String {
        parallel_layout(
            self.tp,
            self.pp,
            self.attention_data_parallel,
            self.expert_parallel,
        )
    }
}

/// The closest infeasible candidate and what to relax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NearestMiss {
    /// The candidate (prediction included).
    pub candidate: Recommendation,
    /// Reason it failed.
    pub reason: String,
    /// What to relax, as a sentence.
    pub advice: String,
}

/// The result of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanResult {
    /// Ranked feasible recommendations.
    pub recommendations: Vec<Recommendation>,
    /// Candidates evaluated by the performance model.
    pub evaluated: usize,
    /// Rejected candidates by reason.
    pub rejections: BTreeMap<String, usize>,
    /// For each reason in `rejections`, the first candidate rejected for it and why.
    #[serde(default)]
    pub rejection_examples: BTreeMap<String, String>,
    /// The infeasible candidate closest to meeting the SLO (when there is no recommendation, or always if one exists).
    pub nearest_miss: Option<NearestMiss>,
    /// `exhaustive` or `nsga2`.
    pub strategy: String,
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    pool: usize,
    engine: Engine,
    /// Weight precision (of the dense layers).
    precision: Precision,
    /// Precision of the routed experts: `precision`, or the checkpoint's own where the engine
    /// serves it as it is ([`ModelSpec::served_precisions`]).
    expert_precision: Precision,
    /// Devices of one pipeline stage: attention's tensor-parallel group times its
    /// data-parallel ranks.
    stage: u32,
    pp: u32,
    /// Attention data-parallel ranks of a stage, each running attention for its own requests
    /// on `stage / attention_dp` devices (1: attention sliced over the whole stage).
    attention_dp: u32,
    /// Devices of a stage the routed experts are spread over whole; the rest of the stage
    /// slices each expert (1: every expert sliced over the stage, dense models).
    expert_parallel: u32,
    max_batch: Option<u32>,
}

/// The ways a stage of `stage` devices (a power of two) can lay out a mixture-of-experts
/// model on `engine`: (attention data-parallel ranks, expert-parallel size) pairs, each a
/// power-of-two divisor of the stage.
///
/// - Experts sliced over the stage (EP 1), spread whole over it (EP = stage), or, on SGLang
///   and TensorRT-LLM, spread over part of it and sliced over the rest.
/// - Attention data-parallel ranks (one copy of each request's KV cache instead of one per
///   tensor-parallel device: the "DEP" layout of DeepSeek-class deployments) on one pipeline
///   stage, with the experts spread over every rank; ranks wider than one device on vLLM and
///   SGLang. Ranks sharing sliced experts would exchange every token in every MoE layer, a
///   cost the performance model does not carry (and the calibration data barely measures),
///   so the search leaves them out; an explicit placement may still ask for them.
fn moe_layouts(engine: Engine, stage: u32, pp: u32) -> Vec<(u32, u32)> {
    let divisors = (0..=stage.ilog2()).map(|k| 1 << k);
    let mut out = Vec::new();
    if engine.has_expert_parallel() {
        out.extend(
            divisors
                .clone()
                .filter(|&ep| ep == 1 || ep == stage || engine.mixes_expert_and_tensor_parallel())
                .map(|ep| (1, ep)),
        );
        if pp == 1 && engine.has_attention_data_parallel() {
            out.extend(
                divisors
                    .filter(|&dp| {
                        dp > 1 && (dp == stage || engine.has_wide_attention_data_parallel_ranks())
                    })
                    .map(|dp| (dp, stage)),
            );
        }
    } else {
        out.push((1, 1));
    }
    out
}

struct Ctx<'a> {
    req: &'a PlanRequest,
    model: &'a ModelSpec,
    accs: Vec<(&'a Accelerator, f64, u32)>,
    params: &'a FittedParams,
}

enum Outcome {
    Feasible(Box<Recommendation>),
    Rejected {
        reason: &'static str,
        violation: f64,
        rec: Option<Box<Recommendation>>,
        /// Which candidate ([`describe_candidate`]).
        candidate: String,
        detail: String,
    },
}

impl Ctx<'_> {
    fn evaluate(&self, s: &Shape, replicas: u32) -> Outcome {
        let (acc, price, _) = self.accs[s.pool];
        let pool = &self.req.pools[s.pool];
        let (tp, attention_dp) = (s.stage / s.attention_dp, s.attention_dp);
        let mut cfg = ServingConfig {
            model: self.model.id.clone(),
            accelerator: acc.id.clone(),
            tp,
            pp: s.pp,
            attention_dp,
            moe_tp: None,
            moe_ep: None,
            precision: Some(s.precision),
            expert_precision: Some(s.expert_precision),
            kv_precision: None,
            engine: s.engine,
            engine_version: None,
            max_batch: s.max_batch,
            gpu_memory_utilization: None,
        };
        if s.expert_parallel > 1 {
            cfg.set_expert_parallel(s.expert_parallel);
        }
        let devices = cfg.devices();
        let candidate = || {
            describe_candidate(
                replicas,
                devices,
                &acc.id,
                &cfg.layout(),
                s.precision,
                s.engine,
            )
        };
        let w = self.req.workload;
        let per_replica = Workload {
            concurrency: w.concurrency.div_ceil(replicas).max(1),
            ..w
        };
        let pred = match Resolved::new(&cfg, self.model, acc, self.params)
            .and_then(|r| r.predict(&per_replica))
        {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Rejected {
                    reason: "UnsupportedCombination",
                    violation: f64::INFINITY,
                    rec: None,
                    candidate: candidate(),
                    detail: e.to_string(),
                };
            }
        };
        let cost = price * (devices * replicas) as f64;
        let total_tps = pred.tokens_per_s * replicas as f64;
        let rec = Recommendation {
            rank: 0,
            accelerator: acc.id.clone(),
            cluster: pool.cluster.clone(),
            gpus_per_replica: devices,
            replicas,
            tp,
            pp: s.pp,
            precision: s.precision,
            engine: s.engine,
            // The shape's limit is per attention rank, as vLLM's --max-num-seqs.
            max_batch: s
                .max_batch
                .map(|b| b * attention_dp)
                .unwrap_or(pred.max_concurrency.max(1)),
            expert_parallel: s.expert_parallel,
            attention_data_parallel: attention_dp,
            total_tokens_per_s: total_tps,
            cost_per_hour: cost,
            tokens_per_dollar: if cost > 0.0 {
                total_tps * 3600.0 / cost
            } else {
                0.0
            },
            pareto_optimal: false,
            prediction: pred,
        };
        if !rec.prediction.memory.fits {
            return Outcome::Rejected {
                reason: "DoesNotFitInMemory",
                violation: f64::INFINITY,
                rec: None,
                candidate: candidate(),
                detail: rec.prediction.memory.verdict.clone(),
            };
        }
        let slo = &self.req.slo;
        let p = &rec.prediction;
        let mut worst: Option<(&'static str, f64, String)> = None;
        if p.running < per_replica.concurrency {
            // Users beyond what the KV cache and batch limit hold would queue: more replicas
            // (or devices per replica) are needed to serve the total concurrency.
            worst = Some((
                "ConcurrencyAboveCapacity",
                per_replica.concurrency as f64 / p.running.max(1) as f64,
                format!(
                    "each replica holds {} of its {} concurrent users in the KV cache",
                    p.running, per_replica.concurrency
                ),
            ));
        }
        let mut check = |name: &'static str, ratio: f64, detail: String| {
            if ratio > 1.0 && worst.as_ref().is_none_or(|w| ratio > w.1) {
                worst = Some((name, ratio, detail));
            }
        };
        if let Some(t) = slo.ttft_ms {
            check(
                "TtftAboveSlo",
                p.ttft_ms / t,
                format!("TTFT {:.0} ms exceeds the {:.0} ms target", p.ttft_ms, t),
            );
        }
        if let Some(t) = slo.tpot_ms {
            check(
                "TpotAboveSlo",
                p.tpot_ms / t,
                format!("TPOT {:.1} ms exceeds the {:.1} ms target", p.tpot_ms, t),
            );
        }
        if let Some(t) = slo.e2e_ms {
            check(
                "E2eAboveSlo",
                p.e2e_ms / t,
                format!(
                    "end-to-end latency {:.0} ms exceeds the {:.0} ms target",
                    p.e2e_ms, t
                ),
            );
        }
        if let Some(t) = slo.min_tokens_per_s_per_user {
            check(
                "TokensPerUserBelowSlo",
                t / p.tokens_per_s_per_user,
                format!(
                    "{:.1} tokens/s per user is below the {:.1} target",
                    p.tokens_per_s_per_user, t
                ),
            );
        }
        match worst {
            None => Outcome::Feasible(Box::new(rec)),
            Some((reason, violation, detail)) => Outcome::Rejected {
                reason,
                violation,
                rec: Some(Box::new(rec)),
                candidate: candidate(),
                detail,
            },
        }
    }

    fn max_replicas(&self, s: &Shape) -> u32 {
        let (_, _, count) = self.accs[s.pool];
        count / (s.stage * s.pp).max(1)
    }
}

fn score(obj: Objective, r: &Recommendation) -> f64 {
    match obj {
        // Ties in cost are broken by latency in the sort, so rank 1 is on the Pareto front.
        Objective::LowestCost => r.cost_per_hour,
        Objective::HighestThroughputPerDollar => -r.tokens_per_dollar,
    }
}

struct Collector {
    feasible: Vec<Recommendation>,
    rejections: BTreeMap<String, usize>,
    /// The first rejected candidate of each reason, with why.
    examples: BTreeMap<String, String>,
    evaluated: usize,
    nearest: Option<(f64, Recommendation, String, &'static str)>,
}

impl Collector {
    fn add(&mut self, o: Outcome) -> bool {
        self.evaluated += 1;
        match o {
            Outcome::Feasible(r) => {
                self.feasible.push(*r);
                true
            }
            Outcome::Rejected {
                reason,
                violation,
                rec,
                candidate,
                detail,
            } => {
                *self.rejections.entry(reason.to_string()).or_default() += 1;
                self.examples
                    .entry(reason.to_string())
                    .or_insert_with(|| format!("{candidate}: {detail}"));
                if let Some(rec) = rec {
                    let better = match &self.nearest {
                        None => true,
                        Some((v, r, _, _)) => {
                            violation < *v
                                || (violation == *v && rec.cost_per_hour < r.cost_per_hour)
                        }
                    };
                    if better {
                        self.nearest = Some((violation, *rec, detail, reason));
                    }
                }
                false
            }
        }
    }
}

fn shapes(ctx: &Ctx) -> Vec<Shape> {
    let req = ctx.req;
    let mut out = Vec::new();
    for (i, (acc, _, count)) in ctx.accs.iter().enumerate() {
        let per_node = req.pools[i]
            .max_per_node
            .unwrap_or(acc.devices_per_node)
            .max(1);
        let engines: Vec<Engine> = req.engines.clone().unwrap_or_else(|| Engine::ALL.to_vec());
        let native = ctx.model.native_precision;
        let precisions: Vec<Precision> = req.precisions.clone().unwrap_or_else(|| {
            let order = [
                Precision::Bf16,
                Precision::Fp8,
                Precision::Int4,
                Precision::Fp4,
            ];
            let start = order.iter().position(|p| *p == native).unwrap_or(0);
            order[start..].to_vec()
        });
        for &engine in &engines {
            if check_engine(engine, acc).is_err() {
                continue;
            }
            for &precision in &precisions {
                if !acc.supports(precision)
                    || (acc.kind == DeviceKind::Cpu && precision == Precision::Fp4)
                {
                    continue;
                }
                let expert_precision = if req.checkpoint_precisions_only {
                    match ctx.model.served_precisions(engine, precision) {
                        Some((_, experts)) => experts,
                        None => continue,
                    }
                } else {
                    precision
                };
                let mut stage = 1;
                while stage <= per_node.min(*count) {
                    for pp in [1u32, 2, 4] {
                        if pp > 1 && stage != per_node {
                            continue;
                        }
                        if stage * pp > *count || pp > ctx.model.num_layers {
                            continue;
                        }
                        let layouts = if ctx.model.is_moe() {
                            moe_layouts(engine, stage, pp)
                        } else {
                            vec![(1, 1)]
                        };
                        for ((attention_dp, expert_parallel), max_batch) in layouts
                            .into_iter()
                            .flat_map(|l| [None, Some(64), Some(256)].map(|mb| (l, mb)))
                        {
                            out.push(Shape {
                                pool: i,
                                engine,
                                precision,
                                expert_precision,
                                stage,
                                pp,
                                attention_dp,
                                expert_parallel,
                                max_batch,
                            });
                        }
                    }
                    stage *= 2;
                }
            }
        }
    }
    out
}

fn exhaustive(ctx: &Ctx, shapes: &[Shape], col: &mut Collector) {
    let obj = ctx.req.objective;
    for s in shapes {
        let max_r = ctx.max_replicas(s);
        let mut best_here: Option<f64> = None;
        for r in 1..=max_r {
            let o = ctx.evaluate(s, r);
            if let Outcome::Rejected {
                reason: "DoesNotFitInMemory" | "UnsupportedCombination",
                ..
            } = o
            {
                // More replicas of the same shape do not change the per-device memory.
                col.add(o);
                break;
            }
            let sc = if let Outcome::Feasible(rec) = &o {
                Some(score(obj, rec))
            } else {
                None
            };
            col.add(o);
            if let Some(sc) = sc {
                // Pruning: once feasible, more replicas only add cost; for throughput per
                // dollar keep going while it improves.
                match obj {
                    Objective::LowestCost => break,
                    Objective::HighestThroughputPerDollar => {
                        if best_here.is_some_and(|b| sc >= b) {
                            break;
                        }
                        best_here = Some(sc);
                    }
                }
            }
        }
    }
}

/// Deterministic xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 { 0x9E3779B97F4A7C15 } else { seed })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone)]
struct Individual {
    shape: usize,
    replicas: u32,
    objectives: [f64; 2],
    violation: f64,
}

fn nsga2(ctx: &Ctx, shapes: &[Shape], col: &mut Collector, seed: u64) {
    let mut rng = Rng::new(seed);
    let pop_size = 64;
    let generations = 60;
    let mut cache: BTreeMap<(usize, u32), ([f64; 2], f64)> = BTreeMap::new();
    let mut eval = |shape: usize, replicas: u32, col: &mut Collector| -> ([f64; 2], f64) {
        if let Some(v) = cache.get(&(shape, replicas)) {
            return *v;
        }
        let o = ctx.evaluate(&shapes[shape], replicas);
        let v = match &o {
            Outcome::Feasible(r) => ([r.cost_per_hour, -r.total_tokens_per_s], 0.0),
            Outcome::Rejected { violation, .. } => (
                [f64::MAX, 0.0],
                if violation.is_finite() {
                    *violation
                } else {
                    1e9
                },
            ),
        };
        col.add(o);
        cache.insert((shape, replicas), v);
        v
    };
    let random_ind = |rng: &mut Rng| -> (usize, u32) {
        let s = rng.below(shapes.len());
        let max_r = ctx.max_replicas(&shapes[s]).max(1);
        (s, 1 + rng.below(max_r as usize) as u32)
    };
    let mut pop: Vec<Individual> = (0..pop_size)
        .map(|_| {
            let (s, r) = random_ind(&mut rng);
            let (objectives, violation) = eval(s, r, col);
            Individual {
                shape: s,
                replicas: r,
                objectives,
                violation,
            }
        })
        .collect();
    for _ in 0..generations {
        let ranks = fronts(&pop);
        let mut children = Vec::with_capacity(pop_size);
        while children.len() < pop_size {
            let pick = |rng: &mut Rng| {
                let a = rng.below(pop.len());
                let b = rng.below(pop.len());
                if ranks[a] <= ranks[b] { a } else { b }
            };
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            let mut shape = if rng.unit() < 0.5 {
                pop[a].shape
            } else {
                pop[b].shape
            };
            let mut replicas = if rng.unit() < 0.5 {
                pop[a].replicas
            } else {
                pop[b].replicas
            };
            if rng.unit() < 0.2 {
                shape = rng.below(shapes.len());
            } else if rng.unit() < 0.3 {
                // Neighbouring shape (same pool/engine/precision, other TP or batch).
                shape = (shape + shapes.len() + rng.below(5) - 2) % shapes.len();
            }
            let max_r = ctx.max_replicas(&shapes[shape]).max(1);
            if rng.unit() < 0.3 {
                replicas = if rng.unit() < 0.5 {
                    replicas.saturating_sub(1)
                } else {
                    replicas + 1
                };
            }
            replicas = replicas.clamp(1, max_r);
            let (objectives, violation) = eval(shape, replicas, col);
            children.push(Individual {
                shape,
                replicas,
                objectives,
                violation,
            });
        }
        pop.extend(children);
        let ranks = fronts(&pop);
        let mut idx: Vec<usize> = (0..pop.len()).collect();
        idx.sort_by(|&a, &b| {
            ranks[a]
                .cmp(&ranks[b])
                .then(pop[a].objectives[0].total_cmp(&pop[b].objectives[0]))
                .then(pop[a].shape.cmp(&pop[b].shape))
                .then(pop[a].replicas.cmp(&pop[b].replicas))
        });
        idx.dedup_by(|a, b| pop[*a].shape == pop[*b].shape && pop[*a].replicas == pop[*b].replicas);
        pop = idx
            .into_iter()
            .take(pop_size)
            .map(|i| pop[i].clone())
            .collect();
    }
}

/// Constrained non-dominated ranks (feasible before infeasible; infeasible by violation).
fn fronts(pop: &[Individual]) -> Vec<usize> {
    let dominates = |a: &Individual, b: &Individual| {
        if a.violation == 0.0 && b.violation > 0.0 {
            return true;
        }
        if a.violation > 0.0 {
            return b.violation > a.violation;
        }
        if b.violation > 0.0 {
            return false;
        }
        a.objectives.iter().zip(&b.objectives).all(|(x, y)| x <= y)
            && a.objectives.iter().zip(&b.objectives).any(|(x, y)| x < y)
    };
    let n = pop.len();
    let mut rank = vec![usize::MAX; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut level = 0;
    while !remaining.is_empty() {
        let front: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                !remaining
                    .iter()
                    .any(|&j| j != i && dominates(&pop[j], &pop[i]))
            })
            .collect();
        let front = if front.is_empty() {
            remaining.clone()
        } else {
            front
        };
        for &i in &front {
            rank[i] = level;
        }
        remaining.retain(|i| !front.contains(i));
        level += 1;
    }
    rank
}

/// Plan with the built-in catalogs and committed parameters.
pub fn plan(req: &PlanRequest) -> Result<PlanResult> {
    plan_with(req, FittedParams::builtin())
}

/// Plan with an explicit parameter set.
pub fn plan_with(req: &PlanRequest, params: &FittedParams) -> Result<PlanResult> {
    let owned;
    let model: &ModelSpec = match &req.model_config {
        Some(text) => {
            owned = ModelSpec::from_config_json(&req.model, text)?;
            &owned
        }
        None => ModelCatalog::builtin().get(&req.model)?,
    };
    let w = req.workload;
    if w.input_tokens == 0 || w.output_tokens == 0 || w.concurrency == 0 {
        return Err(Error::invalid(
            "workload",
            "inputTokens, outputTokens and concurrency must all be at least 1",
        ));
    }
    if req.pools.is_empty() {
        return Err(Error::invalid(
            "pools",
            "at least one candidate pool is required",
        ));
    }
    let hw = HardwareCatalog::builtin();
    let mut accs = Vec::new();
    for (i, p) in req.pools.iter().enumerate() {
        let acc = hw.get(&p.accelerator)?;
        if p.count == 0 {
            return Err(Error::invalid(
                &format!("pools[{i}].count"),
                "must be at least 1",
            ));
        }
        if let Some(price) = p.price_per_hour
            && !(price.is_finite() && price >= 0.0)
        {
            return Err(Error::invalid(
                &format!("pools[{i}].pricePerHour"),
                format!("{price} must be a non-negative number"),
            ));
        }
        accs.push((acc, p.price_per_hour.unwrap_or(acc.price_per_hour), p.count));
    }
    for (name, v) in [
        ("slo.ttftMs", req.slo.ttft_ms),
        ("slo.tpotMs", req.slo.tpot_ms),
        ("slo.e2eMs", req.slo.e2e_ms),
        (
            "slo.minTokensPerSPerUser",
            req.slo.min_tokens_per_s_per_user,
        ),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(Error::invalid(
                name,
                format!("{v} must be a positive number"),
            ));
        }
    }
    let ctx = Ctx {
        req,
        model,
        accs,
        params,
    };
    let shapes = shapes(&ctx);
    let mut col = Collector {
        feasible: Vec::new(),
        rejections: BTreeMap::new(),
        examples: BTreeMap::new(),
        evaluated: 0,
        nearest: None,
    };
    let space: usize = shapes.iter().map(|s| ctx.max_replicas(s) as usize).sum();
    let genetic = match req.search {
        SearchMode::Exhaustive => false,
        SearchMode::Genetic => true,
        SearchMode::Auto => space > GENETIC_THRESHOLD,
    };
    let none_fit = shapes.is_empty();
    if genetic && !none_fit {
        nsga2(&ctx, &shapes, &mut col, req.seed.unwrap_or(42));
    } else {
        exhaustive(&ctx, &shapes, &mut col);
    }
    if none_fit {
        *col.rejections
            .entry("NoCompatibleEngineOrPrecision".into())
            .or_default() += 1;
    }
    let obj = req.objective;
    let mut feasible = col.feasible;
    feasible.sort_by(|a, b| {
        score(obj, a)
            .total_cmp(&score(obj, b))
            .then(a.prediction.e2e_ms.total_cmp(&b.prediction.e2e_ms))
            .then(a.accelerator.cmp(&b.accelerator))
            .then(a.engine.cmp(&b.engine))
            .then(a.tp.cmp(&b.tp))
            .then(a.max_batch.cmp(&b.max_batch))
    });
    // Batch limits that do not bind give the same deployment: keep the best of each shape.
    let mut seen = std::collections::BTreeSet::new();
    feasible.retain(|r| {
        seen.insert((
            r.accelerator.clone(),
            r.cluster.clone(),
            r.engine,
            r.tp,
            r.pp,
            r.precision,
            r.replicas,
            r.expert_parallel,
            r.attention_data_parallel,
        ))
    });
    // Pareto front over (cost, e2e latency).
    let snapshot: Vec<(f64, f64)> = feasible
        .iter()
        .map(|r| (r.cost_per_hour, r.prediction.e2e_ms))
        .collect();
    for (i, r) in feasible.iter_mut().enumerate() {
        let (c, l) = snapshot[i];
        r.pareto_optimal = !snapshot
            .iter()
            .any(|&(c2, l2)| (c2 <= c && l2 <= l) && (c2 < c || l2 < l));
    }
    let max = req.max_results.unwrap_or(10).max(1);
    feasible.truncate(max);
    for (i, r) in feasible.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    let nearest_miss = col.nearest.map(|(violation, rec, detail, reason)| {
        let advice = advice(&rec, reason, violation, &detail);
        NearestMiss {
            candidate: rec,
            reason: reason.to_string(),
            advice,
        }
    });
    Ok(PlanResult {
        recommendations: feasible,
        evaluated: col.evaluated,
        rejections: col.rejections,
        rejection_examples: col.examples,
        nearest_miss,
        strategy: if genetic {
            "nsga2".into()
        } else {
            "exhaustive".into()
        },
    })
}

/// A candidate as the plan's messages name it: `2 replica(s) of 4× h100_sxm (TP4 PP1, fp8,
/// vllm)`, `1 replica(s) of 8× b200_sxm (TP1 PP1 DP8 EP8, fp4, sglang)`.
fn describe_candidate(
    replicas: u32,
    devices: u32,
    accelerator: &str,
    layout: &str,
    precision: Precision,
    engine: Engine,
) -> String {
    format!("{replicas} replica(s) of {devices}× {accelerator} ({layout}, {precision}, {engine})")
}

fn advice(rec: &Recommendation, reason: &str, violation: f64, detail: &str) -> String {
    let p = &rec.prediction;
    let what = describe_candidate(
        rec.replicas,
        rec.gpus_per_replica,
        &rec.accelerator,
        &rec.layout(),
        rec.precision,
        rec.engine,
    );
    let relax = match reason {
        "TtftAboveSlo" => format!(
            "relax the TTFT target to at least {:.0} ms, shorten prompts, or lower concurrency",
            p.ttft_ms
        ),
        "TpotAboveSlo" => format!(
            "relax the TPOT target to at least {:.1} ms, or lower concurrency per replica (more devices)",
            p.tpot_ms
        ),
        "E2eAboveSlo" => format!(
            "relax the end-to-end target to at least {:.0} ms, or generate fewer output tokens",
            p.e2e_ms
        ),
        "TokensPerUserBelowSlo" => format!(
            "lower the per-user target to {:.1} tokens/s or below, or add faster devices",
            p.tokens_per_s_per_user
        ),
        "ConcurrencyAboveCapacity" => {
            "add replicas or devices per replica, shorten requests, or lower the concurrency"
                .to_string()
        }
        _ => "add devices or choose a smaller precision".to_string(),
    };
    // Whole percent, but a near miss keeps one decimal rather than reading "off by 0%".
    let off = (violation - 1.0) * 100.0;
    let decimals = if off < 10.0 { 1 } else { 0 };
    format!("Nearest miss: {what}: {detail} (off by {off:.decimals$}%); {relax}.")
}
