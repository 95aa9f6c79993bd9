//! The hardware catalog: GPUs, accelerators and CPU servers with memory, bandwidth, tensor
//! throughput per precision, interconnect and a list price per hour.
//!
//! The systems measured in the calibration data are read from the AIConfigurator system YAML
//! files shipped in `data/systems/` (embedded at compile time); the other devices are listed
//! here with their public datasheet figures. Lookups accept our ids (`h100_sxm`), Kubernetes
//! node label values (`NVIDIA-H100-80GB-HBM3` from `nvidia.com/gpu.product`) and loose
//! spellings (`H100`, `h100-sxm`).

use crate::error::{Error, Result};
use crate::precision::Precision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// What kind of device an accelerator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceKind {
    /// A GPU or AI accelerator card.
    Gpu,
    /// A CPU socket (served with llama.cpp or vLLM-CPU).
    Cpu,
}

/// One accelerator type. All quantities are per device (one GPU, or one CPU socket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accelerator {
    /// Catalog id, e.g. `h100_sxm`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Vendor (`nvidia`, `amd`, `intel`).
    pub vendor: String,
    /// GPU or CPU.
    pub kind: DeviceKind,
    /// Device memory in bytes.
    pub memory_bytes: f64,
    /// Peak memory bandwidth in bytes/s.
    pub memory_bandwidth: f64,
    /// Dense BF16 tensor FLOPS.
    pub bf16_flops: f64,
    /// Dense FP8 tensor FLOPS (absent: falls back to BF16 compute).
    pub fp8_flops: Option<f64>,
    /// Dense INT8 tensor OPS.
    pub int8_flops: Option<f64>,
    /// Dense FP4 tensor FLOPS (absent: FP4 weights are dequantised to FP8/BF16).
    pub fp4_flops: Option<f64>,
    /// Devices per node.
    pub devices_per_node: u32,
    /// Per-device, one-direction bandwidth between devices in a node (NVLink, xGMI or PCIe), bytes/s.
    pub intra_node_bandwidth: f64,
    /// Per-device, one-direction bandwidth between nodes, bytes/s.
    pub inter_node_bandwidth: f64,
    /// Point-to-point latency in seconds.
    pub p2p_latency_s: f64,
    /// Memory reserved by the runtime (CUDA context, allocator slack), bytes.
    pub runtime_reserve_bytes: f64,
    /// Communication library buffers by group size, bytes.
    pub comm_reserve_bytes: BTreeMap<u32, f64>,
    /// List price per device-hour in USD (on-demand cloud ballpark; override per pool).
    pub price_per_hour: f64,
    /// Kubernetes node label values that name this device (`nvidia.com/gpu.product`, ...).
    pub node_labels: Vec<String>,
}

impl Accelerator {
    /// Tensor FLOPS for compute in a given precision (falls back to the next wider format).
    pub fn flops_for(&self, compute: Precision) -> f64 {
        match compute {
            Precision::Fp4 => self.fp4_flops.or(self.fp8_flops).unwrap_or(self.bf16_flops),
            Precision::Fp8 => self.fp8_flops.unwrap_or(self.bf16_flops),
            Precision::Int8 => self
                .int8_flops
                .or(self.fp8_flops)
                .unwrap_or(self.bf16_flops),
            Precision::Bf16 | Precision::Int4 => self.bf16_flops,
        }
    }

    /// Communication buffer reserve for a group of `n` devices.
    pub fn comm_reserve(&self, n: u32) -> f64 {
        if n <= 1 {
            return 0.0;
        }
        self.comm_reserve_bytes
            .range(..=n)
            .next_back()
            .map(|(_, v)| *v)
            .unwrap_or(4.0e8)
    }

    /// Whether the device supports a weight precision natively enough to serve it.
    pub fn supports(&self, p: Precision) -> bool {
        match p {
            Precision::Fp8 => self.fp8_flops.is_some() || self.kind == DeviceKind::Cpu,
            Precision::Fp4 => self.fp4_flops.is_some(),
            _ => true,
        }
    }
}

const SYSTEM_YAMLS: &[(&str, &str)] = &[
    ("a100_pcie", include_str!("../data/systems/a100_pcie.yaml")),
    ("a100_sxm", include_str!("../data/systems/a100_sxm.yaml")),
    ("a30", include_str!("../data/systems/a30.yaml")),
    ("b200_sxm", include_str!("../data/systems/b200_sxm.yaml")),
    ("b300_sxm", include_str!("../data/systems/b300_sxm.yaml")),
    ("b60", include_str!("../data/systems/b60.yaml")),
    ("gb200", include_str!("../data/systems/gb200.yaml")),
    ("gb300", include_str!("../data/systems/gb300.yaml")),
    ("h100_pcie", include_str!("../data/systems/h100_pcie.yaml")),
    ("h100_sxm", include_str!("../data/systems/h100_sxm.yaml")),
    ("h200_sxm", include_str!("../data/systems/h200_sxm.yaml")),
    ("l4", include_str!("../data/systems/l4.yaml")),
    ("l40s", include_str!("../data/systems/l40s.yaml")),
    (
        "rtx_pro_6000_server",
        include_str!("../data/systems/rtx_pro_6000_server.yaml"),
    ),
];

/// (id, name, vendor, price/hour, node label values) for the YAML systems.
const SYSTEM_META: &[(&str, &str, &str, f64, &[&str])] = &[
    (
        "a100_pcie",
        "NVIDIA A100 80GB PCIe",
        "nvidia",
        3.00,
        &["NVIDIA-A100-80GB-PCIe", "NVIDIA-A100-PCIE-80GB"],
    ),
    (
        "a100_sxm",
        "NVIDIA A100 SXM4 80GB",
        "nvidia",
        3.40,
        &["NVIDIA-A100-SXM4-80GB", "a100", "a100-80gb"],
    ),
    ("a30", "NVIDIA A30", "nvidia", 1.10, &["NVIDIA-A30"]),
    (
        "b200_sxm",
        "NVIDIA B200",
        "nvidia",
        7.50,
        &["NVIDIA-B200", "b200"],
    ),
    (
        "b300_sxm",
        "NVIDIA B300",
        "nvidia",
        9.00,
        &["NVIDIA-B300", "NVIDIA-B300-SXM6-AC", "b300"],
    ),
    (
        "b60",
        "Intel Arc Pro B60",
        "intel",
        0.60,
        &["Intel-Arc-Pro-B60"],
    ),
    (
        "gb200",
        "NVIDIA GB200 NVL72",
        "nvidia",
        9.50,
        &["NVIDIA-GB200"],
    ),
    (
        "gb300",
        "NVIDIA GB300 NVL72",
        "nvidia",
        11.00,
        &["NVIDIA-GB300"],
    ),
    (
        "h100_pcie",
        "NVIDIA H100 PCIe",
        "nvidia",
        3.50,
        &["NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"],
    ),
    (
        "h100_sxm",
        "NVIDIA H100 SXM5 80GB",
        "nvidia",
        4.50,
        &["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "h100"],
    ),
    (
        "h200_sxm",
        "NVIDIA H200 SXM 141GB",
        "nvidia",
        5.50,
        &["NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e", "h200"],
    ),
    ("l4", "NVIDIA L4", "nvidia", 0.80, &["NVIDIA-L4"]),
    ("l40s", "NVIDIA L40S", "nvidia", 1.90, &["NVIDIA-L40S"]),
    (
        "rtx_pro_6000_server",
        "NVIDIA RTX PRO 6000 Blackwell Server",
        "nvidia",
        2.60,
        &["NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition"],
    ),
];

fn yaml_f64(v: &serde_yaml::Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64().or_else(|| cur.as_u64().map(|x| x as f64))
}

/// Parse one AIConfigurator system YAML into an accelerator entry.
pub fn parse_system_yaml(id: &str, text: &str) -> Result<Accelerator> {
    let v: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| Error::invalid("system yaml", format!("{id}: {e}")))?;
    let need = |path: &[&str]| {
        yaml_f64(&v, path).ok_or_else(|| {
            Error::invalid("system yaml", format!("{id}: missing {}", path.join(".")))
        })
    };
    let mut comm = BTreeMap::new();
    if let Some(m) = v
        .get("misc")
        .and_then(|m| m.get("nccl_mem"))
        .and_then(|m| m.as_mapping())
    {
        for (k, val) in m {
            if let (Some(k), Some(val)) = (
                k.as_u64(),
                val.as_f64().or_else(|| val.as_u64().map(|x| x as f64)),
            ) {
                comm.insert(k as u32, val);
            }
        }
    }
    let meta = SYSTEM_META.iter().find(|m| m.0 == id);
    Ok(Accelerator {
        id: id.to_string(),
        name: meta
            .map(|m| m.1.to_string())
            .unwrap_or_else(|| id.to_string()),
        vendor: meta
            .map(|m| m.2.to_string())
            .unwrap_or_else(|| "nvidia".into()),
        kind: DeviceKind::Gpu,
        memory_bytes: need(&["gpu", "mem_capacity"])?,
        memory_bandwidth: need(&["gpu", "mem_bw"])?,
        bf16_flops: need(&["gpu", "bfloat16_tc_flops"])?,
        fp8_flops: yaml_f64(&v, &["gpu", "fp8_tc_flops"]),
        int8_flops: yaml_f64(&v, &["gpu", "int8_tc_flops"]),
        fp4_flops: yaml_f64(&v, &["gpu", "fp4_tc_flops"]),
        devices_per_node: need(&["node", "num_gpus_per_node"])? as u32,
        intra_node_bandwidth: need(&["node", "intra_node_bw"])?,
        inter_node_bandwidth: need(&["node", "inter_node_bw"])?,
        p2p_latency_s: yaml_f64(&v, &["node", "p2p_latency"]).unwrap_or(1e-5),
        runtime_reserve_bytes: yaml_f64(&v, &["misc", "other_mem"]).unwrap_or(3.5 * GIB),
        comm_reserve_bytes: comm,
        price_per_hour: meta.map(|m| m.3).unwrap_or(2.0),
        node_labels: meta
            .map(|m| m.4.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
    })
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const T: f64 = 1e12;
const GB: f64 = 1e9;

#[allow(clippy::too_many_arguments)]
fn extra(
    id: &str,
    name: &str,
    vendor: &str,
    kind: DeviceKind,
    mem_gib: f64,
    bw_gbs: f64,
    bf16_t: f64,
    fp8_t: Option<f64>,
    per_node: u32,
    intra_gbs: f64,
    inter_gbs: f64,
    price: f64,
    labels: &[&str],
) -> Accelerator {
    Accelerator {
        id: id.into(),
        name: name.into(),
        vendor: vendor.into(),
        kind,
        memory_bytes: mem_gib * GIB,
        memory_bandwidth: bw_gbs * GB,
        bf16_flops: bf16_t * T,
        fp8_flops: fp8_t.map(|x| x * T),
        int8_flops: Some(fp8_t.unwrap_or(bf16_t * 2.0) * T),
        fp4_flops: None,
        devices_per_node: per_node,
        intra_node_bandwidth: intra_gbs * GB,
        inter_node_bandwidth: inter_gbs * GB,
        p2p_latency_s: if kind == DeviceKind::Cpu { 2e-6 } else { 1e-5 },
        runtime_reserve_bytes: if kind == DeviceKind::Cpu {
            8.0 * GIB
        } else {
            3.5 * GIB
        },
        comm_reserve_bytes: BTreeMap::from([(1, 0.0), (2, 3.6e8), (4, 4.1e8), (8, 4.1e8)]),
        price_per_hour: price,
        node_labels: labels.iter().map(|s| s.to_string()).collect(),
    }
}

fn extras() -> Vec<Accelerator> {
    use DeviceKind::{Cpu, Gpu};
    vec![
        extra(
            "a10g",
            "NVIDIA A10G",
            "nvidia",
            Gpu,
            24.0,
            600.0,
            125.0,
            None,
            8,
            32.0,
            12.5,
            1.00,
            &["NVIDIA-A10G"],
        ),
        extra(
            "a100_40gb",
            "NVIDIA A100 SXM4 40GB",
            "nvidia",
            Gpu,
            40.0,
            1555.0,
            312.0,
            None,
            8,
            300.0,
            25.0,
            2.90,
            &["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"],
        ),
        extra(
            "mi300x",
            "AMD Instinct MI300X",
            "amd",
            Gpu,
            192.0,
            5300.0,
            1307.0,
            Some(2615.0),
            8,
            448.0,
            50.0,
            4.00,
            &[
                "AMD-Instinct-MI300X",
                "MI300X",
                "amd.com/gpu.product=MI300X",
            ],
        ),
        extra(
            "gaudi2",
            "Intel Gaudi 2",
            "intel",
            Gpu,
            96.0,
            2460.0,
            432.0,
            Some(865.0),
            8,
            300.0,
            37.5,
            1.50,
            &["Intel-Gaudi2", "HL-225", "habana-gaudi2"],
        ),
        extra(
            "gaudi3",
            "Intel Gaudi 3",
            "intel",
            Gpu,
            128.0,
            3700.0,
            1835.0,
            Some(1835.0),
            8,
            600.0,
            75.0,
            2.80,
            &["Intel-Gaudi3", "HL-325", "habana-gaudi3"],
        ),
        // CPU servers, per socket: AMX (Xeon) or AVX-512 (EPYC) matrix throughput is a small
        // fraction of a GPU's, so prefill is slow; decode is memory-bandwidth bound on DDR5.
        extra(
            "xeon_sapphire_rapids",
            "Intel Xeon Platinum 8480+ (Sapphire Rapids, per socket)",
            "intel",
            Cpu,
            512.0,
            307.0,
            115.0,
            None,
            2,
            60.0,
            25.0,
            1.20,
            &["Intel-Xeon-Sapphire-Rapids", "xeon-spr", "spr"],
        ),
        extra(
            "xeon_granite_rapids",
            "Intel Xeon 6767P (Granite Rapids, per socket)",
            "intel",
            Cpu,
            512.0,
            410.0,
            150.0,
            None,
            2,
            60.0,
            25.0,
            1.50,
            &[
                "Intel-Xeon-6767P",
                "Intel-Xeon-Granite-Rapids",
                "xeon-gnr",
                "gnr",
            ],
        ),
        extra(
            "epyc_genoa",
            "AMD EPYC 9654 (Genoa, per socket)",
            "amd",
            Cpu,
            768.0,
            460.0,
            30.0,
            None,
            2,
            64.0,
            25.0,
            1.40,
            &["AMD-EPYC-Genoa", "AMD-EPYC-9654", "genoa"],
        ),
    ]
}

/// The catalog of accelerators. Built once; lookups are by id or alias.
#[derive(Debug, Clone)]
pub struct HardwareCatalog {
    entries: Vec<Accelerator>,
}

fn normalize(s: &str) -> String {
    s.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

impl HardwareCatalog {
    /// The built-in catalog (embedded system YAMLs plus the extra devices).
    pub fn builtin() -> &'static HardwareCatalog {
        static CATALOG: OnceLock<HardwareCatalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let mut entries: Vec<Accelerator> = SYSTEM_YAMLS
                .iter()
                .map(|(id, text)| {
                    parse_system_yaml(id, text).expect("embedded system yaml is valid")
                })
                .collect();
            entries.extend(extras());
            HardwareCatalog { entries }
        })
    }

    /// All entries.
    pub fn all(&self) -> &[Accelerator] {
        &self.entries
    }

    /// Accepted ids, comma separated (for error messages).
    pub fn accepted_ids(&self) -> String {
        self.entries
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Look up an accelerator by catalog id, Kubernetes node label value
    /// (`NVIDIA-H100-80GB-HBM3`) or a loose spelling. Unknown names return an error that
    /// lists the accepted ids.
    pub fn get(&self, name: &str) -> Result<&Accelerator> {
        let n = normalize(name.rsplit('=').next().unwrap_or(name));
        let found = self
            .entries
            .iter()
            .find(|a| normalize(&a.id) == n)
            .or_else(|| {
                self.entries.iter().find(|a| {
                    a.node_labels
                        .iter()
                        .any(|l| normalize(l.rsplit('=').next().unwrap_or(l)) == n)
                })
            });
        found.ok_or_else(|| Error::UnknownAccelerator {
            given: name.to_string(),
            accepted: self.accepted_ids(),
        })
    }
}

/// Look up an accelerator in the built-in catalog (see [`HardwareCatalog::get`]).
pub fn accelerator(name: &str) -> Result<&'static Accelerator> {
    HardwareCatalog::builtin().get(name)
}
