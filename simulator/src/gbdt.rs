//! A small gradient-boosted regression-tree ensemble (squared loss, or the absolute percentage
//! error of a multiplicative correction), used as a learned correction of the analytic model's
//! log error. Deterministic: no sampling.

use serde::{Deserialize, Serialize};

/// One node of a regression tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "t")]
pub enum Node {
    /// Go left when `x[feature] <= threshold`.
    Split {
        /// Feature index.
        feature: usize,
        /// Threshold.
        threshold: f64,
        /// Left child index.
        left: usize,
        /// Right child index.
        right: usize,
    },
    /// A leaf value.
    Leaf {
        /// Value added to the prediction.
        value: f64,
    },
}

/// A regression tree stored as a node array (root at 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl Tree {
    fn predict(&self, x: &[f64]) -> f64 {
        match &self.nodes[self.leaf(x)] {
            Node::Leaf { value } => *value,
            Node::Split { .. } => 0.0,
        }
    }

    /// Index of the leaf a row falls into.
    fn leaf(&self, x: &[f64]) -> usize {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { .. } => return i,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    i = if x.get(*feature).copied().unwrap_or(0.0) <= *threshold {
                        *left
                    } else {
                        *right
                    };
                }
            }
        }
    }
}

/// A boosted ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gbdt {
    /// Initial value (mean target).
    pub base: f64,
    /// Learning rate applied to each tree.
    pub learning_rate: f64,
    /// Trees.
    pub trees: Vec<Tree>,
}

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct GbdtConfig {
    /// Boosting rounds.
    pub rounds: usize,
    /// Tree depth.
    pub depth: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Smallest number of rows in a leaf.
    pub min_leaf: usize,
}

impl Default for GbdtConfig {
    fn default() -> Self {
        GbdtConfig {
            rounds: 120,
            depth: 3,
            learning_rate: 0.08,
            min_leaf: 25,
        }
    }
}

impl Gbdt {
    /// Predict one row.
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.base + self.learning_rate * self.trees.iter().map(|t| t.predict(x)).sum::<f64>()
    }

    /// Fit on rows `x` and targets `y`.
    pub fn fit(x: &[Vec<f64>], y: &[f64], cfg: GbdtConfig) -> Gbdt {
        let n = y.len().max(1);
        let base = y.iter().sum::<f64>() / n as f64;
        let mut pred = vec![base; y.len()];
        let mut trees = Vec::new();
        for _ in 0..cfg.rounds {
            let residual: Vec<f64> = y.iter().zip(&pred).map(|(t, p)| t - p).collect();
            let idx: Vec<usize> = (0..y.len()).collect();
            let mut nodes = Vec::new();
            build(x, &residual, idx, cfg.depth, cfg.min_leaf, &mut nodes);
            let tree = Tree { nodes };
            for (i, p) in pred.iter_mut().enumerate() {
                *p += cfg.learning_rate * tree.predict(&x[i]);
            }
            trees.push(tree);
        }
        Gbdt {
            base,
            learning_rate: cfg.learning_rate,
            trees,
        }
    }
}

/// Weighted median of `(value, weight)` pairs (0 when empty).
fn weighted_median(mut v: Vec<(f64, f64)>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = v.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for (val, w) in &v {
        acc += w;
        if acc >= total / 2.0 {
            return *val;
        }
    }
    v[v.len() - 1].0
}

/// The value `c` minimising `Σ |exp(c − r_i) − 1|` (the absolute percentage error of
/// multiplying a prediction by `exp(c)` when the truth is `exp(r_i)` times it): the median of
/// `r_i` weighted by `exp(−r_i)`.
fn mape_step(r: &[f64]) -> f64 {
    weighted_median(r.iter().map(|&v| (v, (-v).exp())).collect())
}

impl Gbdt {
    /// Fit on rows `x` and log ratios `y = ln(truth / prediction)` minimising the mean absolute
    /// percentage error of the corrected prediction `prediction × exp(F(x))` (the reported
    /// metric) instead of the squared log error: gradient boosting with the gradient of
    /// `|exp(F − y) − 1|`, tree leaves re-fitted to the exact weighted-median step.
    pub fn fit_mape(x: &[Vec<f64>], y: &[f64], cfg: GbdtConfig) -> Gbdt {
        let base = mape_step(y);
        let mut pred = vec![base; y.len()];
        let mut trees = Vec::new();
        for _ in 0..cfg.rounds {
            let grad: Vec<f64> = y
                .iter()
                .zip(&pred)
                .map(|(t, p)| {
                    let e = (p - t).exp();
                    if e > 1.0 { -e } else { e }
                })
                .collect();
            let idx: Vec<usize> = (0..y.len()).collect();
            let mut nodes = Vec::new();
            build(x, &grad, idx, cfg.depth, cfg.min_leaf, &mut nodes);
            let mut tree = Tree { nodes };
            let mut members: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
            for (i, row) in x.iter().enumerate() {
                members
                    .entry(tree.leaf(row))
                    .or_default()
                    .push(y[i] - pred[i]);
            }
            for (leaf, r) in members {
                tree.nodes[leaf] = Node::Leaf {
                    value: mape_step(&r),
                };
            }
            for (i, p) in pred.iter_mut().enumerate() {
                *p += cfg.learning_rate * tree.predict(&x[i]);
            }
            trees.push(tree);
        }
        Gbdt {
            base,
            learning_rate: cfg.learning_rate,
            trees,
        }
    }
}

fn build(
    x: &[Vec<f64>],
    r: &[f64],
    idx: Vec<usize>,
    depth: usize,
    min_leaf: usize,
    nodes: &mut Vec<Node>,
) -> usize {
    let me = nodes.len();
    let mean = idx.iter().map(|&i| r[i]).sum::<f64>() / idx.len().max(1) as f64;
    nodes.push(Node::Leaf { value: mean });
    if depth == 0 || idx.len() < 2 * min_leaf {
        return me;
    }
    let features = x.first().map(Vec::len).unwrap_or(0);
    let total: f64 = idx.iter().map(|&i| r[i]).sum();
    let n = idx.len() as f64;
    let mut best: Option<(f64, usize, f64)> = None;
    #[expect(
        clippy::needless_range_loop,
        reason = "f indexes the feature column of every row"
    )]
    for f in 0..features {
        let mut sorted = idx.clone();
        sorted.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]).then(a.cmp(&b)));
        let mut left_sum = 0.0;
        for k in 0..sorted.len() - 1 {
            left_sum += r[sorted[k]];
            let nl = (k + 1) as f64;
            if k + 1 < min_leaf || sorted.len() - k - 1 < min_leaf {
                continue;
            }
            let (a, b) = (x[sorted[k]][f], x[sorted[k + 1]][f]);
            if a == b {
                continue;
            }
            let right_sum = total - left_sum;
            let gain =
                left_sum * left_sum / nl + right_sum * right_sum / (n - nl) - total * total / n;
            if best.is_none_or(|(g, _, _)| gain > g + 1e-12) {
                best = Some((gain, f, (a + b) / 2.0));
            }
        }
    }
    let Some((gain, feature, threshold)) = best else {
        return me;
    };
    if gain <= 1e-9 {
        return me;
    }
    let (l, rr): (Vec<usize>, Vec<usize>) =
        idx.into_iter().partition(|&i| x[i][feature] <= threshold);
    let left = build(x, r, l, depth - 1, min_leaf, nodes);
    let right = build(x, r, rr, depth - 1, min_leaf, nodes);
    nodes[me] = Node::Split {
        feature,
        threshold,
        left,
        right,
    };
    me
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_step_function() {
        let x: Vec<Vec<f64>> = (0..200).map(|i| vec![i as f64]).collect();
        let y: Vec<f64> = (0..200).map(|i| if i < 100 { -1.0 } else { 1.0 }).collect();
        let m = Gbdt::fit(
            &x,
            &y,
            GbdtConfig {
                rounds: 60,
                depth: 2,
                learning_rate: 0.2,
                min_leaf: 5,
            },
        );
        assert!((m.predict(&[10.0]) + 1.0).abs() < 0.05);
        assert!((m.predict(&[150.0]) - 1.0).abs() < 0.05);
    }
}
