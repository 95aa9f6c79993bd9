//! A small gradient-boosted regression-tree ensemble (squared loss), used as a learned
//! correction of the analytic model's log error. Deterministic: no sampling.

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
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { value } => return *value,
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
