//! Prometheus metrics of the controllers, registered on the operator's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

/// Reconcile counters and durations per controller, error counts per category.
pub struct Metrics {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Accelerators per product across Ready local inventories.
    pub inventory_accelerators: Family<InventoryLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InventoryLabels {
    pub cluster: String,
    pub product: String,
}

impl Metrics {
    /// Creates the metrics and registers them under the `bud_operator` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            inventory_accelerators: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("bud_operator");
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and error category",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "cluster_accelerators",
            "Accelerators in a BudCluster's inventory, by product",
            metrics.inventory_accelerators.clone(),
        );
        metrics
    }
}
