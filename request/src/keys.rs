//! The names users and components write: the `hami.io/*` annotation keys and HAMi's
//! Kubernetes resource names. Every crate reads and writes them through these constants.

/// The prefix of every annotation of ours.
pub const PREFIX: &str = "hami.io/";

/// Knobs a pod sets, without the prefix: `hami.io/<knob>` for every container of the pod, or
/// `hami.io/<knob>.<container-name>` for one (which wins).
pub mod knob {
    pub const GPU_MEMORY: &str = "gpu-memory";
    pub const GPU_MEMORY_PERCENTAGE: &str = "gpu-memory-percentage";
    pub const GPU_CORES: &str = "gpu-cores";
    pub const COMPUTE_POLICY: &str = "gpu-compute-policy";
    pub const PRIORITY: &str = "gpu-priority";
    pub const GPU_COUNT: &str = "gpu-count";
    pub const USE_TYPE: &str = "use-gputype";
    pub const NOUSE_TYPE: &str = "nouse-gputype";
    pub const USE_UUID: &str = "use-gpuuuid";
    pub const NOUSE_UUID: &str = "nouse-gpuuuid";
    pub const PLACEMENT_POLICY: &str = "gpu-scheduler-policy";
    /// Written by the scheduler: the devices it chose (UUIDs), read by the shim.
    pub const ASSIGNED_DEVICES: &str = "assigned-devices";

    /// Every knob, in documentation order.
    pub const ALL: [&str; 12] = [
        GPU_MEMORY,
        GPU_MEMORY_PERCENTAGE,
        GPU_CORES,
        COMPUTE_POLICY,
        PRIORITY,
        GPU_COUNT,
        USE_TYPE,
        NOUSE_TYPE,
        USE_UUID,
        NOUSE_UUID,
        PLACEMENT_POLICY,
        ASSIGNED_DEVICES,
    ];
}

/// Keys the scheduler and node components write for their own bookkeeping, without the
/// prefix; the shim ignores every key that starts with one of [`BOOKKEEPING_PREFIXES`].
pub mod bookkeeping {
    /// The node a pod was bound to.
    pub const VGPU_NODE: &str = "vgpu-node";
    pub const BIND_PHASE: &str = "bind-phase";
    pub const BIND_TIME: &str = "bind-time";
    /// A pod's choice of node policy (binpack or spread across nodes).
    pub const NODE_SCHEDULER_POLICY: &str = "node-scheduler-policy";
    /// A node's device inventory, written by the node agent.
    pub const NODE_NVIDIA_REGISTER: &str = "node-nvidia-register";
}

/// What every bookkeeping key starts with.
pub const BOOKKEEPING_PREFIXES: [&str; 5] = ["bind-", "vgpu-", "node-", "mutex.", "webhook"];

/// `hami.io/<knob>`.
pub fn pod_key(knob: &str) -> String {
    format!("{PREFIX}{knob}")
}

/// `hami.io/<knob>.<container>`.
pub fn container_key(knob: &str, container: &str) -> String {
    format!("{PREFIX}{knob}.{container}")
}

/// HAMi's extended resource names, as a pod's `resources.limits` spell them.
pub mod resource {
    /// Devices (shares of a device, as the device plugin advertises them).
    pub const GPU: &str = "nvidia.com/gpu";
    /// Device memory per device; a bare number is MiB.
    pub const GPU_MEMORY: &str = "nvidia.com/gpumem";
    pub const GPU_MEMORY_PERCENTAGE: &str = "nvidia.com/gpumem-percentage";
    pub const GPU_CORES: &str = "nvidia.com/gpucores";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelt_as_users_write_them() {
        assert_eq!(pod_key(knob::GPU_MEMORY), "hami.io/gpu-memory");
        assert_eq!(
            container_key(knob::GPU_CORES, "trainer"),
            "hami.io/gpu-cores.trainer"
        );
        for key in [
            bookkeeping::VGPU_NODE,
            bookkeeping::BIND_PHASE,
            bookkeeping::BIND_TIME,
            bookkeeping::NODE_SCHEDULER_POLICY,
            bookkeeping::NODE_NVIDIA_REGISTER,
        ] {
            assert!(
                BOOKKEEPING_PREFIXES.iter().any(|p| key.starts_with(p)),
                "{key} would be read as a misspelt knob"
            );
        }
    }
}
