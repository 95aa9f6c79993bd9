//! The model catalog and the parser of Hugging Face `config.json` files.
//!
//! A [`ModelSpec`] is the architecture reduced to what the performance model needs: parameter
//! counts split by where they live (attention, dense MLP, routed experts, embeddings), the KV
//! cache bytes per token (grouped-query attention, multi-head latent attention, sliding window
//! and linear-attention layers), and the attention FLOPs per context token.

use crate::error::{Error, Result};
use crate::precision::{Engine, Precision};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// How attention stores its cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum AttentionKind {
    /// Multi-head or grouped-query attention: K and V per KV head.
    Gqa {
        /// Number of KV heads.
        kv_heads: u32,
        /// Dimension of one head.
        head_dim: u32,
    },
    /// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2, GLM-5): one compressed latent
    /// plus a decoupled RoPE key per token and layer, shared by all heads.
    Mla {
        /// Rank of the compressed KV latent.
        kv_lora_rank: u32,
        /// RoPE key dimension.
        qk_rope_head_dim: u32,
    },
}

/// Mixture-of-experts structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoeSpec {
    /// Routed experts per MoE layer.
    pub num_experts: u32,
    /// Routed experts per token.
    pub experts_per_token: u32,
    /// Parameters of one routed expert.
    pub expert_params: f64,
    /// Number of MoE layers (the rest are dense, e.g. DeepSeek's first three).
    pub moe_layers: u32,
    /// Parameters of the shared experts of one MoE layer (always active).
    pub shared_params_per_layer: f64,
}

/// A model architecture as the performance model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Hugging Face id (`Qwen/Qwen3-8B`) or a name given by the caller.
    pub id: String,
    /// `model_type` from config.json.
    pub model_type: String,
    /// Hidden size.
    pub hidden_size: u32,
    /// Decoder layers.
    pub num_layers: u32,
    /// Query heads.
    pub num_heads: u32,
    /// Attention layout.
    pub attention: AttentionKind,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Maximum context length.
    pub max_context: u32,
    /// Layers with full (global) attention, which cache every token.
    pub full_attention_layers: u32,
    /// Layers with sliding-window attention and the window size.
    pub sliding_layers: u32,
    /// Sliding window in tokens (0 if none).
    pub sliding_window: u32,
    /// Linear-attention / state-space layers (fixed-size state per sequence).
    pub linear_layers: u32,
    /// Attention reads at most this many cached tokens (sparse attention top-k), 0 = all.
    pub attention_topk: u32,
    /// Attention parameters over all layers.
    pub attention_params: f64,
    /// Dense MLP parameters over all layers (dense layers and shared experts).
    pub dense_mlp_params: f64,
    /// Embedding and output head parameters.
    pub embedding_params: f64,
    /// Output head parameters (read every decode step).
    pub lm_head_params: f64,
    /// Mixture of experts, if any.
    pub moe: Option<MoeSpec>,
    /// Precision of the published weights.
    pub native_precision: Precision,
    /// Precision of the routed experts in the published weights (gpt-oss ships MXFP4 experts).
    pub native_expert_precision: Precision,
    /// KV elements per token per full-attention layer (before sharding).
    pub kv_elems_per_token_layer: f64,
    /// Bytes a sparse-attention indexer (DeepSeek sparse attention: GLM-5, DeepSeek-V3.2)
    /// caches per token and attention layer beside the KV cache: its keys of `index_head_dim`
    /// values in FP8 with one 4-byte scale per 128, whatever the cache's precision, one head
    /// shared by all query heads, so every device of a pipeline stage holds them all. They
    /// count in the cache's size (the KV capacity), not in a decode step's reads: scanning them
    /// over the whole context to pick the tokens attention reads ([`ModelSpec::attention_topk`])
    /// costs 1 to 1.5 ms of a GLM-5 step measured at 41 to 63 ms with 64 users of up to 9k
    /// tokens on eight H200s, and charging it moved SGLang's fit (`CALIBRATION_LOG.md`).
    /// 0 without an indexer.
    pub index_key_bytes_per_token_layer: f64,
    /// Fixed recurrent state per sequence (linear layers), in elements.
    pub state_elems_per_seq: f64,
    /// Attention FLOPs per query token per cached token, summed over layers (QK and PV),
    /// as decode computes them (MLA absorbed into the latent).
    pub attn_flops_per_ctx_token: f64,
    /// The same for prefill (MLA decompressed to per-head keys and values).
    pub prefill_attn_flops_per_ctx_token: f64,
}

fn u(v: &Value, k: &str) -> Option<u32> {
    v.get(k)
        .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f as u64)))
        .map(|x| x as u32)
}

impl ModelSpec {
    /// Parse a Hugging Face config.json text. `id` names the model in results.
    pub fn from_config_json(id: &str, text: &str) -> Result<ModelSpec> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidModelConfig(format!("{id}: {e}")))?;
        Self::from_config_value(id, &root)
    }

    /// Parse an already decoded config.json.
    pub fn from_config_value(id: &str, root: &Value) -> Result<ModelSpec> {
        let c = root
            .get("text_config")
            .filter(|t| t.get("hidden_size").is_some())
            .unwrap_or(root);
        let need = |k: &str| {
            u(c, k).ok_or_else(|| Error::InvalidModelConfig(format!("{id}: missing {k}")))
        };
        let h = need("hidden_size")?;
        let layers = need("num_hidden_layers")?;
        let heads = need("num_attention_heads")?;
        if h == 0 || layers == 0 || heads == 0 {
            return Err(Error::InvalidModelConfig(format!(
                "{id}: hidden_size, num_hidden_layers and num_attention_heads must be positive"
            )));
        }
        let kv_heads = u(c, "num_key_value_heads").unwrap_or(heads).max(1);
        let head_dim = u(c, "head_dim").unwrap_or(h / heads);
        let vocab = u(c, "vocab_size").unwrap_or(32000);
        let inter = u(c, "intermediate_size").unwrap_or(4 * h);
        let model_type = c
            .get("model_type")
            .or(root.get("model_type"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let hf = h as f64;

        // Layer kinds.
        let layer_types: Vec<String> = c
            .get("layer_types")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut linear_layers = layer_types.iter().filter(|t| t.contains("linear")).count() as u32;
        let mut sliding_layers =
            layer_types.iter().filter(|t| t.contains("sliding")).count() as u32;
        let window = u(c, "sliding_window").unwrap_or(0);
        let use_sw = c.get("use_sliding_window").and_then(|v| v.as_bool());
        if layer_types.is_empty() {
            if let Some(interval) = u(c, "full_attention_interval").filter(|i| *i > 1) {
                linear_layers = layers - layers / interval;
            }
            if window > 0 && use_sw == Some(true) {
                sliding_layers = layers;
            }
        }
        let sliding_window = if sliding_layers > 0 { window } else { 0 };
        if sliding_window == 0 {
            sliding_layers = 0;
        }
        let full_layers = layers - linear_layers - sliding_layers;

        // Attention.
        let kv_lora = u(c, "kv_lora_rank");
        let (attention, attn_per_layer, kv_elems, attn_flops_layer, prefill_flops_layer) =
            if let Some(kv_lora) = kv_lora {
                let rope = u(c, "qk_rope_head_dim").unwrap_or(64) as f64;
                let nope = u(c, "qk_nope_head_dim").unwrap_or(128) as f64;
                let v_dim = u(c, "v_head_dim").unwrap_or(128) as f64;
                let nh = heads as f64;
                let q = match u(c, "q_lora_rank") {
                    Some(r) if r > 0 => hf * r as f64 + r as f64 * nh * (nope + rope),
                    _ => hf * nh * (nope + rope),
                };
                let kv = hf * (kv_lora as f64 + rope) + kv_lora as f64 * nh * (nope + v_dim);
                let o = nh * v_dim * hf;
                // Absorbed decode attention: scores over latent+rope, values over the latent.
                let flops = 2.0 * nh * (2.0 * kv_lora as f64 + rope);
                (
                    AttentionKind::Mla {
                        kv_lora_rank: kv_lora,
                        qk_rope_head_dim: rope as u32,
                    },
                    q + kv + o,
                    kv_lora as f64 + rope,
                    flops,
                    // Prefill decompresses the latent: per-head QK over nope+rope, PV over v.
                    2.0 * nh * (nope + rope + v_dim),
                )
            } else {
                let hd = head_dim as f64;
                let p = hf * heads as f64 * hd * 2.0 + 2.0 * hf * kv_heads as f64 * hd;
                (
                    AttentionKind::Gqa { kv_heads, head_dim },
                    p,
                    2.0 * kv_heads as f64 * hd,
                    4.0 * heads as f64 * hd,
                    4.0 * heads as f64 * hd,
                )
            };
        // Linear attention layers (Gated DeltaNet style).
        let lk = u(c, "linear_num_key_heads").unwrap_or(kv_heads) as f64
            * u(c, "linear_key_head_dim").unwrap_or(head_dim) as f64;
        let lv_heads = u(c, "linear_num_value_heads").unwrap_or(heads) as f64;
        let lv_dim = u(c, "linear_value_head_dim").unwrap_or(head_dim) as f64;
        let lv = lv_heads * lv_dim;
        let linear_per_layer = hf * (2.0 * lk + 2.0 * lv) + lv * hf;
        let state_elems = linear_layers as f64
            * lv_heads
            * u(c, "linear_key_head_dim").unwrap_or(head_dim) as f64
            * lv_dim;
        let attention_params = (layers - linear_layers) as f64 * attn_per_layer
            + linear_layers as f64 * linear_per_layer;

        // MLP / MoE.
        let num_experts = u(c, "n_routed_experts")
            .or(u(c, "num_experts"))
            .or(u(c, "num_local_experts"))
            .unwrap_or(0);
        let (moe, dense_mlp_params) = if num_experts > 1 {
            let k = u(c, "num_experts_per_tok")
                .or(u(c, "experts_per_token"))
                .unwrap_or(2);
            let moe_inter = u(c, "moe_intermediate_size").unwrap_or(inter) as f64;
            let first_dense = u(c, "first_k_dense_replace").unwrap_or(0).min(layers);
            let step = u(c, "interleave_moe_layer_step")
                .or(u(c, "decoder_sparse_step"))
                .or(u(c, "moe_layer_freq"))
                .unwrap_or(1)
                .max(1);
            let mlp_only = c
                .get("mlp_only_layers")
                .and_then(|v| v.as_array())
                .map(|a| a.len() as u32)
                .unwrap_or(0);
            let moe_layers = ((layers - first_dense) / step)
                .saturating_sub(mlp_only)
                .max(1);
            let dense_layers = layers - moe_layers;
            let dense_inter = u(c, "intermediate_size_mlp").unwrap_or(inter) as f64;
            let shared_inter = if let Some(s) = u(c, "shared_expert_intermediate_size") {
                s as f64
            } else if let Some(n) = u(c, "n_shared_experts") {
                n as f64 * moe_inter
            } else if model_type.starts_with("llama4") {
                inter as f64
            } else {
                0.0
            };
            let shared = 3.0 * hf * shared_inter;
            let router = hf * num_experts as f64;
            let dense = dense_layers as f64 * 3.0 * hf * dense_inter
                + moe_layers as f64 * (shared + router);
            (
                Some(MoeSpec {
                    num_experts,
                    experts_per_token: k,
                    expert_params: 3.0 * hf * moe_inter,
                    moe_layers,
                    shared_params_per_layer: shared,
                }),
                dense,
            )
        } else {
            (None, layers as f64 * 3.0 * hf * inter as f64)
        };
        let tied = c
            .get("tie_word_embeddings")
            .or(root.get("tie_word_embeddings"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let lm_head = vocab as f64 * hf;
        let embedding_params = if tied { lm_head } else { 2.0 * lm_head };

        // Published precision.
        let q = root
            .get("quantization_config")
            .or(c.get("quantization_config"));
        let (native, native_expert) = native_precision(q, c, root);
        let attention_topk = u(c, "index_topk").unwrap_or(0);
        let index_key_bytes = if attention_topk > 0 {
            let dim = u(c, "index_head_dim").unwrap_or(128) as f64;
            dim + (dim / 128.0).ceil() * 4.0
        } else {
            0.0
        };
        let max_context = u(c, "max_position_embeddings").unwrap_or(4096);
        let attn_layers = (layers - linear_layers) as f64;
        Ok(ModelSpec {
            id: id.to_string(),
            model_type,
            hidden_size: h,
            num_layers: layers,
            num_heads: heads,
            attention,
            vocab_size: vocab,
            max_context,
            full_attention_layers: full_layers,
            sliding_layers,
            sliding_window,
            linear_layers,
            attention_topk,
            attention_params,
            dense_mlp_params,
            embedding_params,
            lm_head_params: lm_head,
            moe,
            native_precision: native,
            native_expert_precision: native_expert,
            kv_elems_per_token_layer: kv_elems,
            index_key_bytes_per_token_layer: index_key_bytes,
            state_elems_per_seq: state_elems,
            attn_flops_per_ctx_token: attn_flops_layer * attn_layers,
            prefill_attn_flops_per_ctx_token: prefill_flops_layer * attn_layers,
        })
    }

    /// The network as the performance model sees it, as text: every field but the name, the
    /// maximum context and the checkpoint's precisions. Models that share it run at the same
    /// speed at the same serving precisions: a fine-tune of a base model
    /// (`Llama-3.1-70B-Instruct` of `Llama-3.1-70B`), a re-trained release (DeepSeek-R1 of
    /// DeepSeek-V3) and a checkpoint quantized offline (`nvidia/Llama-3.1-8B-Instruct-FP8`).
    /// Serving precisions belong to a deployment ([`crate::params::Anchors::key`]), not here.
    pub fn architecture(&self) -> String {
        // Destructured in full, so a field added to the spec must be placed on a side here.
        let ModelSpec {
            id: _,
            max_context: _,
            native_precision: _,
            native_expert_precision: _,
            model_type,
            hidden_size,
            num_layers,
            num_heads,
            attention,
            vocab_size,
            full_attention_layers,
            sliding_layers,
            sliding_window,
            linear_layers,
            attention_topk,
            attention_params,
            dense_mlp_params,
            embedding_params,
            lm_head_params,
            moe,
            kv_elems_per_token_layer,
            index_key_bytes_per_token_layer,
            state_elems_per_seq,
            attn_flops_per_ctx_token,
            prefill_attn_flops_per_ctx_token,
        } = self;
        let attention = match attention {
            AttentionKind::Gqa { kv_heads, head_dim } => format!("gqa {kv_heads}x{head_dim}"),
            AttentionKind::Mla {
                kv_lora_rank,
                qk_rope_head_dim,
            } => format!("mla {kv_lora_rank}+{qk_rope_head_dim}"),
        };
        let moe = moe.as_ref().map_or("dense".to_string(), |m| {
            format!(
                "moe {} of {} x{:.0} in {} layers shared {:.0}",
                m.experts_per_token,
                m.num_experts,
                m.expert_params,
                m.moe_layers,
                m.shared_params_per_layer
            )
        });
        format!(
            "{model_type} h{hidden_size} l{num_layers} q{num_heads} {attention} v{vocab_size} \
             full{full_attention_layers} sliding{sliding_layers}x{sliding_window} \
             linear{linear_layers} topk{attention_topk} {moe} params {attention_params:.0}+\
             {dense_mlp_params:.0}+{embedding_params:.0}+{lm_head_params:.0} kv \
             {kv_elems_per_token_layer:.0} index {index_key_bytes_per_token_layer:.0} state \
             {state_elems_per_seq:.0} attention flops \
             {attn_flops_per_ctx_token:.0}/{prefill_attn_flops_per_ctx_token:.0}"
        )
    }

    /// Parameters of all routed experts.
    pub fn routed_params(&self) -> f64 {
        self.moe
            .as_ref()
            .map(|m| m.expert_params * m.num_experts as f64 * m.moe_layers as f64)
            .unwrap_or(0.0)
    }

    /// Total parameters.
    pub fn total_params(&self) -> f64 {
        self.attention_params + self.dense_mlp_params + self.embedding_params + self.routed_params()
    }

    /// Parameters touched per token (for FLOPs): non-expert weights plus top-k experts,
    /// without the input embedding (a lookup).
    pub fn active_params(&self) -> f64 {
        let routed = self
            .moe
            .as_ref()
            .map(|m| m.expert_params * m.experts_per_token as f64 * m.moe_layers as f64)
            .unwrap_or(0.0);
        self.attention_params + self.dense_mlp_params + self.lm_head_params + routed
    }

    /// Whether this is a mixture-of-experts model.
    pub fn is_moe(&self) -> bool {
        self.moe.is_some()
    }

    /// The (dense, routed-expert) precisions `engine` serves this model's checkpoint at when
    /// asked for `precision`, or `None` when that takes a checkpoint quantized offline. Asked
    /// for the checkpoint's own precision, the engine serves it as it is (gpt-oss keeps its
    /// MXFP4 experts beside BF16 attention); an unquantized checkpoint it may quantize while
    /// loading ([`Engine::quantizes_at_load`]).
    pub fn served_precisions(
        &self,
        engine: Engine,
        precision: Precision,
    ) -> Option<(Precision, Precision)> {
        if precision == self.native_precision {
            Some((self.native_precision, self.native_expert_precision))
        } else if self.native_precision == Precision::Bf16
            && self.native_expert_precision == Precision::Bf16
            && engine.quantizes_at_load(precision)
        {
            Some((precision, precision))
        } else {
            None
        }
    }

    /// Number of KV heads (1 for MLA: the latent is shared by all heads).
    pub fn kv_heads(&self) -> u32 {
        match self.attention {
            AttentionKind::Gqa { kv_heads, .. } => kv_heads,
            AttentionKind::Mla { .. } => 1,
        }
    }

    /// KV cache elements (unsharded) one sequence holds at `context` tokens.
    pub fn kv_elems_for_context(&self, context: f64) -> f64 {
        let full = self.full_attention_layers as f64 * self.kv_elems_per_token_layer * context;
        let sliding = self.sliding_layers as f64
            * self.kv_elems_per_token_layer
            * context.min(self.sliding_window as f64);
        full + sliding + self.state_elems_per_seq
    }

    /// KV cache bytes per token (full-attention layers; the figure usually quoted) in `kv` format,
    /// with a sparse-attention indexer's keys.
    pub fn kv_bytes_per_token(&self, kv: Precision) -> f64 {
        (self.full_attention_layers + self.sliding_layers) as f64
            * self.kv_elems_per_token_layer
            * kv.kv_bytes()
            + self.index_key_bytes_for_context(1.0)
    }

    /// Bytes of a sparse-attention indexer's keys (unsharded) one sequence holds at `context`
    /// tokens ([`ModelSpec::index_key_bytes_per_token_layer`]).
    pub fn index_key_bytes_for_context(&self, context: f64) -> f64 {
        self.full_attention_layers as f64 * self.index_key_bytes_per_token_layer * context
    }

    /// Weight bytes of the whole model with `dense` precision for non-expert weights and
    /// `experts` for routed experts (embeddings stay 16-bit).
    pub fn weight_bytes(&self, dense: Precision, experts: Precision) -> f64 {
        (self.attention_params + self.dense_mlp_params) * dense.weight_bytes()
            + self.routed_params() * experts.weight_bytes()
            + self.embedding_params * 2.0
    }
}

fn native_precision(q: Option<&Value>, c: &Value, root: &Value) -> (Precision, Precision) {
    let dtype = c
        .get("torch_dtype")
        .or(c.get("dtype"))
        .or(root.get("torch_dtype"))
        .and_then(|v| v.as_str())
        .unwrap_or("bfloat16");
    let base = if dtype.contains("float8") {
        Precision::Fp8
    } else {
        Precision::Bf16
    };
    let Some(q) = q else { return (base, base) };
    let method = q
        .get("quant_method")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = q.to_string().to_ascii_lowercase();
    match method.as_str() {
        "fp8" => (Precision::Fp8, Precision::Fp8),
        "mxfp4" => (base, Precision::Fp4),
        "awq" | "gptq" => (Precision::Int4, Precision::Int4),
        _ if text.contains("nvfp4") || text.contains("\"fp4\"") => (Precision::Fp4, Precision::Fp4),
        _ if text.contains("\"num_bits\":4") => (base, Precision::Int4),
        _ if text.contains("\"num_bits\":8") => (Precision::Fp8, Precision::Fp8),
        _ => (base, base),
    }
}

const EMBEDDED_CONFIGS: &[(&str, &str)] = &[
    (
        "Qwen/Qwen3-0.6B",
        include_str!("../data/models/Qwen--Qwen3-0.6B_config.json"),
    ),
    (
        "Qwen/Qwen3-8B",
        include_str!("../data/models/Qwen--Qwen3-8B_config.json"),
    ),
    (
        "Qwen/Qwen3-30B-A3B",
        include_str!("../data/models/Qwen--Qwen3-30B-A3B_config.json"),
    ),
    (
        "Qwen/Qwen3-235B-A22B-FP8",
        include_str!("../data/models/Qwen--Qwen3-235B-A22B-FP8_config.json"),
    ),
    (
        "Qwen/Qwen3.5-397B-A17B",
        include_str!("../data/models/Qwen--Qwen3.5-397B-A17B_config.json"),
    ),
    (
        "deepseek-ai/DeepSeek-R1",
        include_str!("../data/models/deepseek-ai--DeepSeek-R1_config.json"),
    ),
    (
        "deepseek-ai/DeepSeek-V3",
        include_str!("../data/models/deepseek-ai--DeepSeek-V3_config.json"),
    ),
    (
        "meta-llama/Llama-3.1-70B",
        include_str!("../data/models/meta-llama--Llama-3.1-70B_config.json"),
    ),
    (
        "meta-llama/Llama-3.1-8B-Instruct",
        include_str!("../data/models/meta-llama--Llama-3.1-8B-Instruct_config.json"),
    ),
    (
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        include_str!("../data/models/meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json"),
    ),
    (
        "meta-llama/Meta-Llama-3.1-405B",
        include_str!("../data/models/meta-llama--Meta-Llama-3.1-405B_config.json"),
    ),
    (
        "mistralai/Mixtral-8x22B-v0.1",
        include_str!("../data/models/mistralai--Mixtral-8x22B-v0.1_config.json"),
    ),
    (
        "mistralai/Mixtral-8x7B-v0.1",
        include_str!("../data/models/mistralai--Mixtral-8x7B-v0.1_config.json"),
    ),
    (
        "moonshotai/Kimi-K2.5",
        include_str!("../data/models/moonshotai--Kimi-K2.5_config.json"),
    ),
    (
        "nvidia/DeepSeek-R1-NVFP4",
        include_str!("../data/models/nvidia--DeepSeek-R1-NVFP4_config.json"),
    ),
    (
        "nvidia/DeepSeek-V3.1-NVFP4",
        include_str!("../data/models/nvidia--DeepSeek-V3.1-NVFP4_config.json"),
    ),
    (
        "nvidia/Llama-3.1-8B-Instruct-FP8",
        include_str!("../data/models/nvidia--Llama-3.1-8B-Instruct-FP8_config.json"),
    ),
    (
        "openai/gpt-oss-120b",
        include_str!("../data/models/openai--gpt-oss-120b_config.json"),
    ),
    (
        "openai/gpt-oss-20b",
        include_str!("../data/models/openai--gpt-oss-20b_config.json"),
    ),
    (
        "zhipuai/GLM-5",
        include_str!("../data/models/zhipuai--GLM-5_config.json"),
    ),
    (
        "meta-llama/Llama-3.2-1B-Instruct",
        include_str!("../data/models/meta-llama--Llama-3.2-1B-Instruct_config.json"),
    ),
    (
        "meta-llama/Llama-3.2-3B-Instruct",
        include_str!("../data/models/meta-llama--Llama-3.2-3B-Instruct_config.json"),
    ),
    (
        "Qwen/Qwen2.5-7B-Instruct",
        include_str!("../data/models/Qwen--Qwen2.5-7B-Instruct_config.json"),
    ),
    (
        "Qwen/Qwen2.5-0.5B-Instruct",
        include_str!("../data/models/Qwen--Qwen2.5-0.5B-Instruct_config.json"),
    ),
    (
        "mistralai/Mistral-7B-Instruct-v0.3",
        include_str!("../data/models/mistralai--Mistral-7B-Instruct-v0.3_config.json"),
    ),
    (
        "Qwen/Qwen3-14B",
        include_str!("../data/models/Qwen--Qwen3-14B_config.json"),
    ),
    (
        "Qwen/Qwen3-1.7B",
        include_str!("../data/models/Qwen--Qwen3-1.7B_config.json"),
    ),
    (
        "Qwen/Qwen3-4B",
        include_str!("../data/models/Qwen--Qwen3-4B_config.json"),
    ),
    (
        "Qwen/Qwen3-32B",
        include_str!("../data/models/Qwen--Qwen3-32B_config.json"),
    ),
    (
        "meta-llama/Llama-3.1-70B-Instruct",
        include_str!("../data/models/meta-llama--Llama-3.1-70B_config.json"),
    ),
    (
        "meta-llama/Llama-3.1-8B",
        include_str!("../data/models/meta-llama--Llama-3.1-8B-Instruct_config.json"),
    ),
];

/// The catalog of common models, keyed by Hugging Face id.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    entries: BTreeMap<String, ModelSpec>,
}

impl ModelCatalog {
    /// The built-in catalog (configs embedded from `data/models/`).
    pub fn builtin() -> &'static ModelCatalog {
        static CATALOG: OnceLock<ModelCatalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let entries = EMBEDDED_CONFIGS
                .iter()
                .map(|(id, text)| {
                    (
                        id.to_string(),
                        ModelSpec::from_config_json(id, text).expect("embedded config is valid"),
                    )
                })
                .collect();
            ModelCatalog { entries }
        })
    }

    /// Known ids.
    pub fn ids(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Look up a model by Hugging Face id, with or without an `hf://` prefix, case-insensitive.
    pub fn get(&self, id: &str) -> Result<&ModelSpec> {
        let key = id
            .trim()
            .trim_start_matches("hf://")
            .trim_start_matches("huggingface://")
            .trim_end_matches('/');
        self.entries
            .get(key)
            .or_else(|| {
                // In any case; then the same architecture under another published name: with
                // or without an `-Instruct` suffix, and Meta's earlier `Meta-Llama-3.1-…`
                // repository names.
                let renamed =
                    |name: &str| name.to_ascii_lowercase().replace("/meta-llama-", "/llama-");
                let base = |name: &str| {
                    let name = renamed(name);
                    name.strip_suffix("-instruct")
                        .map_or(name.clone(), str::to_string)
                };
                let find = |same: &dyn Fn(&str) -> String| {
                    let wanted = same(key);
                    self.entries.iter().find(|(k, _)| same(k) == wanted)
                };
                find(&renamed).or_else(|| find(&base)).map(|(_, v)| v)
            })
            .or_else(|| {
                // A bare name such as `Qwen3-8B` or a `<org>--<name>` file stem.
                let alt = key.replace("--", "/");
                self.entries
                    .iter()
                    .find(|(k, _)| {
                        k.eq_ignore_ascii_case(&alt)
                            || k.rsplit('/')
                                .next()
                                .is_some_and(|n| n.eq_ignore_ascii_case(key))
                    })
                    .map(|(_, v)| v)
            })
            .ok_or_else(|| Error::UnknownModel {
                given: id.to_string(),
                accepted: self.ids().join(", "),
            })
    }
}

/// Look up a model in the built-in catalog (see [`ModelCatalog::get`]).
pub fn model(id: &str) -> Result<&'static ModelSpec> {
    ModelCatalog::builtin().get(id)
}

/// Parse any Hugging Face config.json text (see [`ModelSpec::from_config_json`]).
pub fn parse_config_json(id: &str, text: &str) -> Result<ModelSpec> {
    ModelSpec::from_config_json(id, text)
}
