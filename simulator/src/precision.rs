//! Numeric formats of weights, activations and the KV cache, and the serving engines.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A number format for weights, compute or the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    /// 16-bit brain float (also stands for fp16).
    Bf16,
    /// 8-bit float (e4m3), per-tensor or block scaled.
    Fp8,
    /// 8-bit integer weights and activations.
    Int8,
    /// 4-bit integer weights, 16-bit compute (AWQ/GPTQ style, "int4_wo").
    Int4,
    /// 4-bit float (NVFP4 / MXFP4) weights and compute.
    Fp4,
}

impl Precision {
    /// Every accepted name, for error messages.
    pub const ACCEPTED: &'static str =
        "bf16, fp16, fp8, fp8_block, int8, int4, int4_wo, fp4, nvfp4, mxfp4";
    /// All variants, in search order.
    pub const ALL: [Precision; 5] = [
        Precision::Bf16,
        Precision::Fp8,
        Precision::Int8,
        Precision::Int4,
        Precision::Fp4,
    ];

    /// Bytes per weight element, including block scales.
    pub fn weight_bytes(self) -> f64 {
        match self {
            Precision::Bf16 => 2.0,
            Precision::Fp8 | Precision::Int8 => 1.0,
            // 4 bits plus one 8-bit scale per 16 (fp4) or per 32 (int4 group) elements.
            Precision::Fp4 => 0.5625,
            Precision::Int4 => 0.53,
        }
    }

    /// Bytes per KV cache element when the cache is stored in this format.
    pub fn kv_bytes(self) -> f64 {
        match self {
            Precision::Bf16 | Precision::Int4 => 2.0,
            _ => 1.0,
        }
    }

    /// Canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::Fp4 => "fp4",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" | "fp16" | "float16" | "half" | "auto" => Ok(Precision::Bf16),
            "fp8" | "fp8_block" | "fp8_e4m3" | "e4m3" => Ok(Precision::Fp8),
            "int8" | "w8a8" | "int8_wo" => Ok(Precision::Int8),
            "int4" | "int4_wo" | "awq" | "gptq" | "w4a16" => Ok(Precision::Int4),
            "fp4" | "nvfp4" | "mxfp4" => Ok(Precision::Fp4),
            other => Err(Error::UnknownPrecision {
                given: other.to_string(),
                accepted: Self::ACCEPTED.to_string(),
            }),
        }
    }
}

/// A serving engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Engine {
    /// vLLM (CUDA/ROCm; also its CPU backend).
    Vllm,
    /// SGLang.
    Sglang,
    /// NVIDIA TensorRT-LLM (NVIDIA GPUs only).
    Trtllm,
    /// llama.cpp (CPU serving).
    LlamaCpp,
}

impl Engine {
    /// Every accepted name, for error messages.
    pub const ACCEPTED: &'static str = "vllm, sglang, trtllm (tensorrt-llm), llamacpp (llama.cpp)";
    /// All engines.
    pub const ALL: [Engine; 4] = [
        Engine::Vllm,
        Engine::Sglang,
        Engine::Trtllm,
        Engine::LlamaCpp,
    ];

    /// Canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Trtllm => "trtllm",
            Engine::LlamaCpp => "llamacpp",
        }
    }

    /// Whether the engine serves a checkpoint of another precision at `precision` by
    /// quantizing its weights while loading them: vLLM and SGLang do FP8 (`--quantization
    /// fp8`). Every other change of precision needs a checkpoint quantized offline (FP8, AWQ
    /// or GPTQ INT4, NVFP4/MXFP4; TensorRT-LLM's default PyTorch backend and llama.cpp's GGUF
    /// files alike).
    pub fn quantizes_at_load(self, precision: Precision) -> bool {
        matches!(self, Engine::Vllm | Engine::Sglang) && precision == Precision::Fp8
    }

    /// Whether the engine runs attention data-parallel ranks that share a MoE model's experts:
    /// vLLM (`--data-parallel-size`), SGLang (`--dp-size` with `--enable-dp-attention`) and
    /// TensorRT-LLM (`enable_attention_dp`); llama.cpp has none.
    pub fn has_attention_data_parallel(self) -> bool {
        self != Engine::LlamaCpp
    }

    /// Whether attention data-parallel ranks can each be more than one device wide (attention
    /// tensor parallelism inside each rank): vLLM (`--tensor-parallel-size` with
    /// `--data-parallel-size`) and SGLang (`--tp-size` over `--dp-size`). TensorRT-LLM's
    /// `enable_attention_dp` runs attention on every rank alone.
    pub fn has_wide_attention_data_parallel_ranks(self) -> bool {
        matches!(self, Engine::Vllm | Engine::Sglang)
    }

    /// Whether the engine spreads a MoE model's routed experts whole over devices (expert
    /// parallelism) rather than only slicing each: all but llama.cpp.
    pub fn has_expert_parallel(self) -> bool {
        self != Engine::LlamaCpp
    }

    /// Whether expert parallelism may cover part of a stage, the rest slicing each expert
    /// (SGLang `--ep-size`, TensorRT-LLM `--ep_size` below the TP size): vLLM's
    /// `--enable-expert-parallel` spreads them over every rank or none.
    pub fn mixes_expert_and_tensor_parallel(self) -> bool {
        matches!(self, Engine::Sglang | Engine::Trtllm)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', '.'], "")
            .as_str()
        {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            "trtllm" | "tensorrtllm" | "trt" => Ok(Engine::Trtllm),
            "llamacpp" | "llama" => Ok(Engine::LlamaCpp),
            _ => Err(Error::UnknownEngine {
                given: s.to_string(),
                accepted: Self::ACCEPTED.to_string(),
            }),
        }
    }
}
