//! The compute limiter's seam: every launch wrapper calls [`before_launch`] before handing the
//! launch to the driver. This first version admits every launch at no cost; the compute
//! limiter fills it in (its cells live in the ledger's `ComputeCell`/`DeviceContention`).

/// How a launch reaches the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// `cuLaunchKernel` (and `_ptsz`).
    Kernel,
    /// `cuLaunchKernelEx` (and `_ptsz`).
    KernelEx,
    /// `cuLaunchCooperativeKernel` (and `_ptsz`): all blocks co-resident, often one rank of a
    /// collective.
    Cooperative,
    /// `cuGraphLaunch` (and `_ptsz`): a whole graph at once.
    Graph,
}

/// One launch as the limiter sees it. The device is computed only if asked for, so a limiter
/// with nothing to do costs no driver call.
pub struct LaunchSite<'a> {
    pub kind: LaunchKind,
    /// The stream handle as an integer (0: legacy default stream).
    pub stream: usize,
    /// Whether the entry point was a per-thread-default-stream (`_ptsz`) variant.
    pub per_thread: bool,
    device: &'a dyn Fn() -> Option<usize>,
}

impl<'a> LaunchSite<'a> {
    /// A launch site; `device` yields the container device index of the current context.
    pub fn new(
        kind: LaunchKind,
        stream: usize,
        per_thread: bool,
        device: &'a dyn Fn() -> Option<usize>,
    ) -> LaunchSite<'a> {
        LaunchSite {
            kind,
            stream,
            per_thread,
            device,
        }
    }

    /// The container device index the launch runs on (`None`: not a device of the container,
    /// or nothing is capped).
    pub fn device_slot(&self) -> Option<usize> {
        (self.device)()
    }
}

/// Called before every launch; may wait (bounded) until the container's compute share allows
/// the launch. Never fails the launch.
#[inline(always)]
pub fn before_launch(_site: &LaunchSite<'_>) {}
