//! The stock runc shim behind the proxy: its Task API as a trait, and the ttrpc client for it.
//!
//! The trait takes requests only (no server context), so the proxy can be driven in tests by an
//! in-memory backend, and in production by [`BackendClient`], a [`TaskClient`] connected to the
//! backend's socket on first use.

use std::sync::Mutex;

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::TaskClient;
use containerd_shim::protos::ttrpc;

/// Declares [`TaskBackend`] and its implementation for the ttrpc client, method by method.
macro_rules! task_backend {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        /// The Task API of the shim the proxy forwards to.
        pub trait TaskBackend: Send + Sync {
            $(
                #[allow(missing_docs)]
                fn $method(&self, request: &$request) -> ttrpc::Result<$response>;
            )*
        }

        impl TaskBackend for TaskClient {
            $(
                fn $method(&self, request: &$request) -> ttrpc::Result<$response> {
                    // No deadline: `wait` blocks until the process exits, and containerd applies
                    // its own deadline to the call it made to the proxy.
                    TaskClient::$method(self, ttrpc::context::with_timeout(0), request)
                }
            )*
        }

        impl TaskBackend for BackendClient {
            $(
                fn $method(&self, request: &$request) -> ttrpc::Result<$response> {
                    TaskBackend::$method(&self.client()?, request)
                }
            )*
        }
    };
}

task_backend! {
    state(StateRequest) -> StateResponse;
    create(CreateTaskRequest) -> CreateTaskResponse;
    start(StartRequest) -> StartResponse;
    delete(DeleteRequest) -> DeleteResponse;
    pids(PidsRequest) -> PidsResponse;
    pause(PauseRequest) -> Empty;
    resume(ResumeRequest) -> Empty;
    checkpoint(CheckpointTaskRequest) -> Empty;
    kill(KillRequest) -> Empty;
    exec(ExecProcessRequest) -> Empty;
    resize_pty(ResizePtyRequest) -> Empty;
    close_io(CloseIORequest) -> Empty;
    update(UpdateTaskRequest) -> Empty;
    wait(WaitRequest) -> WaitResponse;
    stats(StatsRequest) -> StatsResponse;
    connect(ConnectRequest) -> ConnectResponse;
    shutdown(ShutdownRequest) -> Empty;
}

/// Connects to a backend shim's ttrpc address (`unix:///run/containerd/s/...`).
pub fn connect(address: &str) -> ttrpc::Result<TaskClient> {
    let client = ttrpc::Client::connect(address)?;
    Ok(TaskClient::new(client))
}

/// The backend's Task client, connected on first use.
pub struct BackendClient {
    address: String,
    client: Mutex<Option<TaskClient>>,
}

impl BackendClient {
    /// A client for the backend listening on `address`; nothing is connected yet.
    pub fn new(address: String) -> Self {
        Self {
            address,
            client: Mutex::new(None),
        }
    }

    fn client(&self) -> ttrpc::Result<TaskClient> {
        // Poisoning cannot leave the slot half-written (one assignment), so it stays usable.
        let mut slot = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = connect(&self.address)?;
        *slot = Some(client.clone());
        Ok(client)
    }
}
