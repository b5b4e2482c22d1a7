//! Events: recorded into a stream, completed when the stream reaches them, with the time of
//! completion on the shared monotonic clock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hami_hooks::cuda::{
    CU_EVENT_DISABLE_TIMING, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_NOT_READY, CUresult,
};

use super::registry::Registry;
use crate::clock::monotonic_ns;

/// One event.
pub struct Event {
    pub flags: u32,
    state: Mutex<EventState>,
    done: Condvar,
}

#[derive(Default)]
struct EventState {
    /// Records issued so far.
    recorded: u64,
    /// Records the streams have reached.
    completed: u64,
    /// Completion time of the last completed record.
    time_ns: u64,
}

/// Every live event.
pub static EVENTS: Registry<Event> = Registry::new(0x4_0000_0000);

impl Event {
    /// A new, never-recorded event.
    pub fn new(flags: u32) -> Event {
        Event {
            flags,
            state: Mutex::new(EventState::default()),
            done: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, EventState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues a record and returns its sequence number.
    pub fn issue(&self) -> u64 {
        let mut state = self.state();
        state.recorded += 1;
        state.recorded
    }

    /// The sequence number of the latest record issued (0 when never recorded).
    pub fn issued(&self) -> u64 {
        self.state().recorded
    }

    /// Marks record `sequence` as reached now.
    pub fn complete(&self, sequence: u64) {
        let mut state = self.state();
        if sequence > state.completed {
            state.completed = sequence;
            state.time_ns = monotonic_ns();
        }
        self.done.notify_all();
    }

    /// Whether record `sequence` (or everything issued, when `None`) has been reached.
    pub fn is_complete(&self, sequence: Option<u64>) -> bool {
        let state = self.state();
        state.completed >= sequence.unwrap_or(state.recorded)
    }

    /// Blocks until record `sequence` (or everything issued so far) has been reached.
    pub fn wait(&self, sequence: Option<u64>) {
        let mut state = self.state();
        let target = sequence.unwrap_or(state.recorded);
        while state.completed < target {
            state = self
                .done
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Milliseconds from `self` to `end`, as `cuEventElapsedTime`.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32, CUresult> {
        if self.flags & CU_EVENT_DISABLE_TIMING != 0 || end.flags & CU_EVENT_DISABLE_TIMING != 0 {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let (start, finish) = (self.state(), end.state());
        if start.recorded == 0 || finish.recorded == 0 {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        if start.completed < start.recorded || finish.completed < finish.recorded {
            return Err(CUDA_ERROR_NOT_READY);
        }
        let nanos = finish.time_ns as f64 - start.time_ns as f64;
        Ok((nanos / 1e6) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_needs_both_records_reached() {
        let start = Event::new(0);
        let end = Event::new(0);
        assert_eq!(start.elapsed_ms(&end), Err(CUDA_ERROR_INVALID_HANDLE));
        let s = start.issue();
        let e = end.issue();
        start.complete(s);
        assert_eq!(start.elapsed_ms(&end), Err(CUDA_ERROR_NOT_READY));
        std::thread::sleep(Duration::from_millis(2));
        end.complete(e);
        let ms = start.elapsed_ms(&end).unwrap();
        assert!(ms >= 2.0, "{ms}");
    }

    #[test]
    fn disabled_timing_is_refused() {
        let start = Event::new(CU_EVENT_DISABLE_TIMING);
        let end = Event::new(0);
        start.complete(start.issue());
        end.complete(end.issue());
        assert_eq!(start.elapsed_ms(&end), Err(CUDA_ERROR_INVALID_HANDLE));
    }
}
