//! The Task service containerd talks to: forwards every call to the backend shim, and at `Create`
//! and `Exec` lets a [`ContainerPreparer`] cap the container first.
//!
//! The pod's shim is shared by all its containers, so `Shutdown` is honoured only once no
//! container is left; otherwise deleting one container would kill the pod's other ones.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::{ExitSignal, Task, TtrpcContext};

use crate::backend::TaskBackend;
use crate::spec_rewrite::{Injection, inject_into_process};

/// What the proxy needs done to a container beyond what runc does.
pub trait ContainerPreparer: Send + Sync {
    /// Why a container cannot be prepared; its text is what `ctr` and kubelet report.
    type Error: std::fmt::Display;

    /// Caps container `id` (ledger entry, spec rewrite) before the backend creates it.
    ///
    /// Returns the environment for its exec'd processes, or `None` when it runs as with runc.
    fn prepare(&self, id: &str, bundle: &Path) -> Result<Option<Injection>, Self::Error>;

    /// Forgets container `id` (its ledger entry); called once it is deleted or failed to create.
    fn release(&self, id: &str);

    /// The runtime options to give the backend at `Create`, replacing `incoming`.
    fn backend_options(&self, incoming: Option<&Any>) -> Option<Any>;
}

/// The proxy Task service.
pub struct ProxyTask<B, P> {
    backend: B,
    preparer: P,
    /// Live containers: id → what their exec'd processes get (`None`: not capped).
    containers: Mutex<HashMap<String, Option<Injection>>>,
    exit: Arc<ExitSignal>,
    /// Called with each created container's bundle (records where the backend is, for cleanup).
    on_bundle: Box<dyn Fn(&Path) + Send + Sync>,
}

/// Type URL of an exec'd process spec in `ExecProcessRequest.spec`.
const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

impl<B: TaskBackend, P: ContainerPreparer> ProxyTask<B, P> {
    /// A proxy in front of `backend`; `exit` is signalled when the shim may exit.
    pub fn new(
        backend: B,
        preparer: P,
        exit: Arc<ExitSignal>,
        on_bundle: Box<dyn Fn(&Path) + Send + Sync>,
    ) -> Self {
        Self {
            backend,
            preparer,
            containers: Mutex::new(HashMap::new()),
            exit,
            on_bundle,
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Option<Injection>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids of the containers this proxy created and that are not deleted yet.
    pub fn live_containers(&self) -> Vec<String> {
        self.containers().keys().cloned().collect()
    }
}

fn rpc_error(code: Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

/// Forwards Task methods to the backend unchanged.
macro_rules! forward {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            fn $method(&self, _ctx: &TtrpcContext, request: $request) -> ttrpc::Result<$response> {
                self.backend.$method(&request)
            }
        )*
    };
}

impl<B: TaskBackend, P: ContainerPreparer> Task for ProxyTask<B, P> {
    forward! {
        state(StateRequest) -> StateResponse;
        start(StartRequest) -> StartResponse;
        pids(PidsRequest) -> PidsResponse;
        pause(PauseRequest) -> Empty;
        resume(ResumeRequest) -> Empty;
        checkpoint(CheckpointTaskRequest) -> Empty;
        kill(KillRequest) -> Empty;
        resize_pty(ResizePtyRequest) -> Empty;
        close_io(CloseIORequest) -> Empty;
        update(UpdateTaskRequest) -> Empty;
        wait(WaitRequest) -> WaitResponse;
        stats(StatsRequest) -> StatsResponse;
        connect(ConnectRequest) -> ConnectResponse;
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        mut request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let bundle = Path::new(&request.bundle).to_owned();
        (self.on_bundle)(&bundle);
        let injection = self
            .preparer
            .prepare(&request.id, &bundle)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("hami: {e}")))?;
        request.options =
            MessageField::from_option(self.preparer.backend_options(request.options.as_ref()));
        match self.backend.create(&request) {
            Ok(response) => {
                self.containers().insert(request.id.clone(), injection);
                Ok(response)
            }
            Err(e) => {
                self.preparer.release(&request.id);
                Err(e)
            }
        }
    }

    fn exec(&self, _ctx: &TtrpcContext, mut request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let injection = self.containers().get(&request.id).cloned().flatten();
        if let (Some(injection), Some(spec)) = (injection, request.spec.as_mut())
            && (spec.type_url.ends_with(PROCESS_SPEC_TYPE) || spec.type_url.is_empty())
        {
            let mut process: serde_json::Value =
                serde_json::from_slice(&spec.value).map_err(|e| {
                    rpc_error(
                        Code::INVALID_ARGUMENT,
                        format!("hami: exec process spec: {e}"),
                    )
                })?;
            inject_into_process(&mut process, &injection)
                .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("hami: {e}")))?;
            spec.value = serde_json::to_vec(&process)
                .map_err(|e| rpc_error(Code::INTERNAL, format!("hami: {e}")))?;
        }
        self.backend.exec(&request)
    }

    fn delete(&self, _ctx: &TtrpcContext, request: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let response = self.backend.delete(&request)?;
        if request.exec_id.is_empty() {
            self.containers().remove(&request.id);
            self.preparer.release(&request.id);
        }
        Ok(response)
    }

    fn shutdown(&self, _ctx: &TtrpcContext, request: ShutdownRequest) -> ttrpc::Result<Empty> {
        if !self.containers().is_empty() {
            return Ok(Empty::new());
        }
        // The backend exits once it has no container either; an error means it is already gone.
        if let Err(e) = self.backend.shutdown(&request) {
            log::debug!("backend shutdown: {e}");
        }
        self.exit.signal();
        Ok(Empty::new())
    }
}
