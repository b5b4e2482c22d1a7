//! The node policies by name, as users select them per pod or per simulation.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// How nodes are scored (and, for the paper's policies, how the device is chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodePolicy {
    /// A uniformly random feasible node (paper baseline).
    Random,
    /// Least CPU and device compute left over (paper baseline).
    BestFit,
    /// Smallest dot product of free resources and demand (paper baseline, "Tetris").
    DotProduct,
    /// Shared devices first, then used nodes, then idle nodes (paper baseline).
    Packing,
    /// Nodes already holding tasks of the same shape first (paper baseline).
    Clustering,
    /// Fragmentation Gradient Descent, as the artifact scores it (quantised 0..100).
    Fgd,
    /// Our policy: FGD's gradient over a capacity-, memory- and scarcity-aware measure
    /// (see `fgd.rs`).
    Ours,
    /// HAMi's `binpack`: the node with the least device compute left.
    Binpack,
    /// HAMi's `spread`: the node with the most device compute left.
    Spread,
}

/// Errors raised when a policy name is parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyNameError {
    #[error("unknown policy `{0}` (expected one of: {list})", list = NodePolicy::NAMES.join(", "))]
    Unknown(String),
}

impl NodePolicy {
    /// The paper's six policies, in the paper's order (worst first).
    pub const PAPER: [NodePolicy; 6] = [
        NodePolicy::Random,
        NodePolicy::DotProduct,
        NodePolicy::Clustering,
        NodePolicy::Packing,
        NodePolicy::BestFit,
        NodePolicy::Fgd,
    ];

    /// Every policy name accepted by [`NodePolicy::from_str`].
    pub const NAMES: [&'static str; 9] = [
        "random",
        "bestfit",
        "dotprod",
        "packing",
        "clustering",
        "fgd",
        "ours",
        "binpack",
        "spread",
    ];

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            NodePolicy::Random => "random",
            NodePolicy::BestFit => "bestfit",
            NodePolicy::DotProduct => "dotprod",
            NodePolicy::Packing => "packing",
            NodePolicy::Clustering => "clustering",
            NodePolicy::Fgd => "fgd",
            NodePolicy::Ours => "ours",
            NodePolicy::Binpack => "binpack",
            NodePolicy::Spread => "spread",
        }
    }

    /// Whether the policy needs the target workload (the fragmentation measure).
    pub fn needs_workload(self) -> bool {
        matches!(self, NodePolicy::Fgd | NodePolicy::Ours)
    }
}

impl fmt::Display for NodePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NodePolicy {
    type Err = PolicyNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            NodePolicy::Random,
            NodePolicy::BestFit,
            NodePolicy::DotProduct,
            NodePolicy::Packing,
            NodePolicy::Clustering,
            NodePolicy::Fgd,
            NodePolicy::Ours,
            NodePolicy::Binpack,
            NodePolicy::Spread,
        ];
        let wanted = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        let alias = match wanted.as_str() {
            "randomfit" => "random",
            "dotproduct" | "tetris" => "dotprod",
            "gpupacking" => "packing",
            "gpuclustering" => "clustering",
            other => other,
        };
        all.into_iter()
            .find(|p| p.name() == alias)
            .ok_or_else(|| PolicyNameError::Unknown(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_aliases_parse() {
        for name in NodePolicy::NAMES {
            assert_eq!(name.parse::<NodePolicy>().unwrap().name(), name);
        }
        assert_eq!("Best-Fit".parse::<NodePolicy>(), Ok(NodePolicy::BestFit));
        assert_eq!("GPU_Packing".parse::<NodePolicy>(), Ok(NodePolicy::Packing));
        let err = "first-fit".parse::<NodePolicy>().unwrap_err();
        assert!(err.to_string().contains("unknown policy `first-fit`"));
    }
}
