//! Node scores of the paper's baselines (as its artifact codes them) and of HAMi's
//! `binpack` and `spread`. Higher is better; every function sees a node the task fits.

use crate::cluster::{FULL_DEVICE_MILLI, NodeState};
use crate::fit::device_fits;
use crate::request::Request;

/// CPU normaliser of the artifact (milli-cores of its largest node).
const MAX_CPU: f64 = 128_000.0;
/// Device normaliser of the artifact (eight whole devices, milli).
const MAX_GPU: f64 = 8_000.0;

/// Best-fit: the least CPU and device compute left over after placement.
pub fn best_fit(node: &NodeState, request: &Request) -> f64 {
    let cpu_left = node.cpu_free as f64 - request.cpu_milli as f64;
    let gpu_left = node.free_milli_total() as f64 - request.device_milli_total() as f64;
    let s = 0.5 * cpu_left / MAX_CPU + 0.5 * gpu_left / MAX_GPU;
    (100.0 * (1.0 - s)).trunc()
}

/// Dot-product ("Tetris" with the artifact's sign): the smallest product of free
/// resources and demand.
pub fn dot_product(node: &NodeState, request: &Request) -> f64 {
    let cpu = (node.cpu_free as f64 / MAX_CPU) * (request.cpu_milli as f64 / MAX_CPU);
    let gpu = (node.free_milli_total() as f64 / MAX_GPU)
        * (request.device_milli_total() as f64 / MAX_GPU);
    (100.0 * (1.0 - (cpu + gpu) / 2.0)).trunc()
}

/// GPU Packing: an already shared device, then a used node's idle devices, then an idle node.
pub fn packing(node: &NodeState, request: &Request) -> f64 {
    if request.is_cpu_only() {
        return 0.0;
    }
    let g = node.device_count();
    if (0..g).all(|i| node.device_is_idle(i)) {
        let g = g as f64;
        return (33.0 - g).max(g);
    }
    let mut fitting: Vec<usize> = (0..g).filter(|&i| device_fits(node, i, request)).collect();
    fitting.sort_by_key(|&i| (node.device_free_milli[i], i));
    let used = &fitting[..(request.device_count as usize).min(fitting.len())];
    let idle_taken = used.iter().filter(|&&i| node.device_is_idle(i)).count() as f64;
    if idle_taken > 0.0 {
        return (50.0 - idle_taken).max(33.0);
    }
    let tenths: u32 = used
        .iter()
        .map(|&i| node.device_free_milli[i] * 100 / FULL_DEVICE_MILLI)
        .sum();
    (100.0 - f64::from(tenths / 10)).max(50.0)
}

/// GPU Clustering: nodes whose GPU tasks all share this task's shape first.
pub fn clustering(node: &NodeState, request: &Request) -> f64 {
    let Some(tag) = request.tag() else { return 0.0 };
    let free = node.free_milli_total() as f64;
    let base = (25.0 * (MAX_GPU - free) / MAX_GPU).floor();
    let same = node.tags.count(tag);
    let all = node.tags.total();
    let bonus = if all == 0 {
        25.0
    } else if same == all {
        75.0
    } else if same > 0 {
        50.0
    } else {
        0.0
    };
    base + bonus
}

/// HAMi `binpack`: the share of the node's device compute (CPU for CPU-only tasks) in use
/// after placement.
pub fn binpack(node: &NodeState, request: &Request) -> f64 {
    let devices = node.device_count() as f64 * f64::from(FULL_DEVICE_MILLI);
    if request.is_cpu_only() || devices == 0.0 {
        let cpu = node.spec.cpu_milli.max(1) as f64;
        return 1.0 - (node.cpu_free as f64 - request.cpu_milli as f64) / cpu;
    }
    1.0 - (node.free_milli_total() as f64 - request.device_milli_total() as f64) / devices
}

/// HAMi `spread`: the opposite of [`binpack`].
pub fn spread(node: &NodeState, request: &Request) -> f64 {
    -binpack(node, request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DeviceSpec, NodeSpec};

    fn node(gpus: usize, cpu: u64) -> NodeState {
        NodeState::new(NodeSpec {
            name: "n".into(),
            cpu_milli: cpu,
            memory_mib: 1 << 20,
            model: Some(0),
            devices: (0..gpus)
                .map(|i| DeviceSpec {
                    uuid: format!("g{i}"),
                    memory_mib: 0,
                    numa: None,
                    link_group: None,
                })
                .collect(),
        })
    }

    #[test]
    fn best_fit_prefers_the_fuller_node() {
        let idle = node(8, 96_000);
        let mut used = node(8, 96_000);
        used.device_free_milli = vec![0, 0, 0, 0, 1000, 1000, 1000, 1000];
        used.cpu_free = 40_000;
        let r = Request::whole(8_000, 0, 1);
        assert!(best_fit(&used, &r) > best_fit(&idle, &r));
        // s = 0.5*(96000-8000)/128000 + 0.5*(8000-1000)/8000 = 0.78125 → int(21.875) = 21
        assert_eq!(best_fit(&idle, &r), 21.0);
    }

    #[test]
    fn dot_product_prefers_the_smaller_product() {
        let idle = node(8, 96_000);
        let small = node(2, 16_000);
        let r = Request::whole(8_000, 0, 1);
        assert!(dot_product(&small, &r) >= dot_product(&idle, &r));
    }

    #[test]
    fn packing_orders_shared_then_used_then_idle() {
        let r = Request::share(1000, 0, 200, 0);
        let idle = node(2, 16_000);
        let mut used = node(2, 16_000);
        used.device_free_milli = vec![0, 1000];
        let mut shared = node(2, 16_000);
        shared.device_free_milli = vec![500, 1000];
        assert_eq!(packing(&idle, &r), 31.0);
        assert_eq!(packing(&used, &r), 49.0);
        assert_eq!(packing(&shared, &r), 95.0);
        assert_eq!(packing(&idle, &Request::cpu_only(1, 1)), 0.0);
    }

    #[test]
    fn clustering_rewards_the_same_shape() {
        let r = Request::share(1000, 0, 200, 0);
        let empty = node(2, 16_000);
        // b = floor(25 * (8000 - 2000) / 8000) = 18, plus 25 for a node without GPU tasks.
        assert_eq!(clustering(&empty, &r), 43.0);
        let mut same = node(2, 16_000);
        same.device_free_milli = vec![500, 1000];
        same.tags = {
            let mut c = crate::cluster::Cluster::new(vec![same.spec.clone()], Default::default());
            c.apply(0, &r, &[0]).unwrap();
            c.nodes[0].tags.clone()
        };
        assert!(clustering(&same, &r) > clustering(&empty, &r));
        // Only other tags on the node: b = floor(25 * 6500 / 8000) = 20, no bonus.
        assert_eq!(clustering(&same, &Request::whole(1, 0, 1)), 20.0);
    }

    #[test]
    fn binpack_and_spread_disagree() {
        let r = Request::share(1000, 0, 200, 0);
        let idle = node(2, 16_000);
        let mut used = node(2, 16_000);
        used.device_free_milli = vec![500, 1000];
        assert!(binpack(&used, &r) > binpack(&idle, &r));
        assert!(spread(&used, &r) < spread(&idle, &r));
    }
}
