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
use crate::spec_rewrite::{CRI_CONTAINER_TYPE, annotations, read_spec};
use crate::spec_rewrite::{Injection, inject_into_process};
use crate::task_api::{self, Caller, TaskApi};

/// What the proxy needs done to a container beyond what runc does.
pub trait ContainerPreparer: Send + Sync {
    /// Why a container cannot be prepared; its text is what `ctr` and kubelet report.
    type Error: std::fmt::Display;

    /// Caps container `id` (ledger entry, spec rewrite) before the backend creates it.
    ///
    /// Returns the environment for its exec'd processes, or `None` when it runs as with runc.
    fn prepare(&self, id: &str, bundle: &Path) -> Result<Option<Injection>, Self::Error>;

    /// Container `id` was created; `pid` is its first process on the host. Its processes are
    /// found from there (their host PIDs are what NVML reports).
    fn created(&self, id: &str, pid: u32);

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
    /// The Task API containerd was told this shim speaks: how our error texts must be written.
    api: TaskApi,
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
            api: TaskApi::V2,
        }
    }

    /// The same proxy, announced to containerd as speaking `api`.
    pub fn facing(self, api: TaskApi) -> Self {
        Self { api, ..self }
    }

    /// An error of ours about a container of `caller`, as containerd must receive it for users
    /// to read `message`.
    fn error(&self, caller: Caller, code: Code, message: String) -> ttrpc::Error {
        rpc_error(code, task_api::for_containerd(&message, self.api, caller))
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Option<Injection>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Create`: prepares the container, then has the backend create it.
    pub fn create_task(&self, mut request: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        let bundle = Path::new(&request.bundle).to_owned();
        (self.on_bundle)(&bundle);
        let injection = self.preparer.prepare(&request.id, &bundle).map_err(|e| {
            let message = format!("hami: {e}");
            self.error(caller_of(&bundle), Code::INVALID_ARGUMENT, message)
        })?;
        request.options =
            MessageField::from_option(self.preparer.backend_options(request.options.as_ref()));
        match self.backend.create(&request) {
            Ok(response) => {
                if injection.is_some() {
                    self.preparer.created(&request.id, response.pid);
                }
                self.containers().insert(request.id.clone(), injection);
                Ok(response)
            }
            Err(e) => {
                self.preparer.release(&request.id);
                Err(e)
            }
        }
    }

    /// `Exec`: gives the exec'd process the container's environment.
    pub fn exec_process(&self, mut request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let injection = self.containers().get(&request.id).cloned().flatten();
        if let (Some(injection), Some(spec)) = (injection, request.spec.as_mut())
            && (spec.type_url.ends_with(PROCESS_SPEC_TYPE) || spec.type_url.is_empty())
        {
            let mut process: serde_json::Value =
                serde_json::from_slice(&spec.value).map_err(|e| {
                    let message = format!("hami: exec process spec: {e}");
                    self.error(Caller::Tasks, Code::INVALID_ARGUMENT, message)
                })?;
            inject_into_process(&mut process, &injection).map_err(|e| {
                self.error(Caller::Tasks, Code::INVALID_ARGUMENT, format!("hami: {e}"))
            })?;
            spec.value = serde_json::to_vec(&process)
                .map_err(|e| self.error(Caller::Tasks, Code::INTERNAL, format!("hami: {e}")))?;
        }
        self.backend.exec(&request)
    }

    /// `Delete`: once the backend deleted a container, releases its ledger entry.
    pub fn delete_task(&self, request: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let response = self.backend.delete(&request)?;
        if request.exec_id.is_empty() {
            self.containers().remove(&request.id);
            self.preparer.release(&request.id);
        }
        Ok(response)
    }

    /// `Shutdown`: honoured only once no container is left.
    pub fn shutdown_shim(&self, request: ShutdownRequest) -> ttrpc::Result<Empty> {
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

    /// Ids of the containers this proxy created and that are not deleted yet.
    pub fn live_containers(&self) -> Vec<String> {
        self.containers().keys().cloned().collect()
    }
}

/// Whether the container of `bundle` was created through CRI (its spec says so).
fn caller_of(bundle: &Path) -> Caller {
    match read_spec(bundle) {
        Ok(spec) if annotations(&spec).contains_key(CRI_CONTAINER_TYPE) => Caller::Cri,
        _ => Caller::Tasks,
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
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.create_task(request)
    }

    fn exec(&self, _ctx: &TtrpcContext, request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.exec_process(request)
    }

    fn delete(&self, _ctx: &TtrpcContext, request: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.delete_task(request)
    }

    fn shutdown(&self, _ctx: &TtrpcContext, request: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.shutdown_shim(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use containerd_shim::api::Options as RuncOptions;
    use containerd_shim::protos::protobuf::Message;
    use serde_json::json;

    use super::*;

    /// A backend that records calls and fails `create` for ids starting with `fail`.
    #[derive(Default)]
    struct RecordingBackend {
        calls: Mutex<Vec<String>>,
        created: Mutex<Vec<CreateTaskRequest>>,
        execs: Mutex<Vec<ExecProcessRequest>>,
    }

    impl RecordingBackend {
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    macro_rules! recording {
        ($($method:ident($request:ty) -> $response:ty;)*) => {
            $(
                fn $method(&self, _request: &$request) -> ttrpc::Result<$response> {
                    self.record(stringify!($method).to_owned());
                    Ok(<$response>::default())
                }
            )*
        };
    }

    impl TaskBackend for &RecordingBackend {
        recording! {
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
            shutdown(ShutdownRequest) -> Empty;
        }

        fn create(&self, request: &CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
            self.record(format!("create {}", request.id));
            if request.id.starts_with("fail") {
                return Err(rpc_error(Code::UNKNOWN, "runc create failed".into()));
            }
            self.created.lock().unwrap().push(request.clone());
            Ok(CreateTaskResponse {
                pid: 42,
                ..Default::default()
            })
        }

        fn exec(&self, request: &ExecProcessRequest) -> ttrpc::Result<Empty> {
            self.record(format!("exec {}", request.id));
            self.execs.lock().unwrap().push(request.clone());
            Ok(Empty::new())
        }

        fn delete(&self, request: &DeleteRequest) -> ttrpc::Result<DeleteResponse> {
            self.record(format!("delete {} {}", request.id, request.exec_id));
            Ok(DeleteResponse::default())
        }
    }

    /// Caps ids starting with `gpu`, refuses ids starting with `bad`, records releases.
    #[derive(Default)]
    struct FakePreparer {
        created: Mutex<Vec<(String, u32)>>,
        released: Mutex<Vec<String>>,
    }

    impl ContainerPreparer for &FakePreparer {
        type Error = String;

        fn prepare(&self, id: &str, _bundle: &Path) -> Result<Option<Injection>, String> {
            if id.starts_with("bad") {
                return Err("annotation hami.io/gpu-memory=\"x\" is invalid".into());
            }
            Ok(id.starts_with("gpu").then(|| Injection {
                mounts: Vec::new(),
                env: vec![("HAMI_LEDGER_USAGE".into(), "/run/hami/usage.ledger".into())],
            }))
        }

        fn created(&self, id: &str, pid: u32) {
            self.created.lock().unwrap().push((id.to_owned(), pid));
        }

        fn release(&self, id: &str) {
            self.released.lock().unwrap().push(id.to_owned());
        }

        fn backend_options(&self, _incoming: Option<&Any>) -> Option<Any> {
            let options = RuncOptions {
                binary_name: "runc".into(),
                ..Default::default()
            };
            Some(Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: options.write_to_bytes().unwrap(),
                ..Default::default()
            })
        }
    }

    fn proxy<'a>(
        backend: &'a RecordingBackend,
        preparer: &'a FakePreparer,
    ) -> (
        ProxyTask<&'a RecordingBackend, &'a FakePreparer>,
        Arc<ExitSignal>,
    ) {
        let exit = Arc::new(ExitSignal::default());
        (
            ProxyTask::new(backend, preparer, exit.clone(), Box::new(|_| {})),
            exit,
        )
    }

    fn create(id: &str) -> CreateTaskRequest {
        let runtime_options = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            ..Default::default()
        };
        CreateTaskRequest {
            id: id.into(),
            bundle: "/bundle".into(),
            options: Some(runtime_options).into(),
            ..Default::default()
        }
    }

    fn exec(id: &str) -> ExecProcessRequest {
        let spec = Any {
            type_url: PROCESS_SPEC_TYPE.into(),
            value: serde_json::to_vec(&json!({"args": ["sh"], "env": ["PATH=/bin"]})).unwrap(),
            ..Default::default()
        };
        ExecProcessRequest {
            id: id.into(),
            exec_id: "e1".into(),
            spec: Some(spec).into(),
            ..Default::default()
        }
    }

    fn exited(exit: &Arc<ExitSignal>, within: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let exit = exit.clone();
        std::thread::spawn(move || {
            exit.wait();
            let _ = tx.send(());
        });
        rx.recv_timeout(within).is_ok()
    }

    #[test]
    fn create_hands_runc_options_to_the_backend_instead_of_runtimeoptions() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        assert_eq!(proxy.create_task(create("gpu1")).unwrap().pid, 42);
        let sent = backend.created.lock().unwrap()[0].clone();
        assert_eq!(sent.options.type_url, "containerd.runc.v1.Options");
        assert_eq!(
            RuncOptions::parse_from_bytes(&sent.options.value)
                .unwrap()
                .binary_name,
            "runc"
        );
        assert_eq!(proxy.live_containers(), vec!["gpu1".to_owned()]);
    }

    #[test]
    fn a_capped_container_is_followed_from_the_pid_the_backend_created() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        proxy.create_task(create("gpu1")).unwrap();
        proxy.create_task(create("plain")).unwrap();
        let _ = proxy.create_task(create("fail-gpu"));
        assert_eq!(
            *preparer.created.lock().unwrap(),
            vec![("gpu1".to_owned(), 42)],
            "only a capped container that was created has processes to follow"
        );
    }

    #[test]
    fn exec_of_a_capped_container_gets_its_environment_and_others_are_untouched() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        proxy.create_task(create("gpu1")).unwrap();
        proxy.create_task(create("plain")).unwrap();
        proxy.exec_process(exec("gpu1")).unwrap();
        proxy.exec_process(exec("plain")).unwrap();
        let execs = backend.execs.lock().unwrap();
        let process: serde_json::Value = serde_json::from_slice(&execs[0].spec.value).unwrap();
        assert_eq!(
            process["env"],
            json!(["PATH=/bin", "HAMI_LEDGER_USAGE=/run/hami/usage.ledger"])
        );
        assert_eq!(process["args"], json!(["sh"]));
        assert_eq!(execs[1].spec.value, exec("plain").spec.value);
    }

    #[test]
    fn refused_container_never_reaches_the_backend_and_the_error_says_why() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        let err = proxy.create_task(create("bad1")).unwrap_err();
        let ttrpc::Error::RpcStatus(status) = err else {
            panic!("{err:?}")
        };
        assert_eq!(status.code(), Code::INVALID_ARGUMENT);
        assert_eq!(
            status.message(),
            "hami: annotation hami.io/gpu-memory=\"x\" is invalid"
        );
        assert!(backend.calls().is_empty());
    }

    #[test]
    fn failed_backend_create_releases_the_ledger_entry() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        assert!(proxy.create_task(create("fail-gpu")).is_err());
        assert_eq!(
            *preparer.released.lock().unwrap(),
            vec!["fail-gpu".to_owned()]
        );
        assert!(proxy.live_containers().is_empty());
    }

    #[test]
    fn deleting_an_exec_keeps_the_container_and_deleting_the_container_releases_it() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, _) = proxy(&backend, &preparer);
        proxy.create_task(create("gpu1")).unwrap();
        let delete_exec = DeleteRequest {
            id: "gpu1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        };
        proxy.delete_task(delete_exec).unwrap();
        assert!(preparer.released.lock().unwrap().is_empty());
        proxy
            .delete_task(DeleteRequest {
                id: "gpu1".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(*preparer.released.lock().unwrap(), vec!["gpu1".to_owned()]);
        assert!(proxy.live_containers().is_empty());
    }

    #[test]
    fn shutdown_waits_for_the_last_container_of_the_pod() {
        let (backend, preparer) = (RecordingBackend::default(), FakePreparer::default());
        let (proxy, exit) = proxy(&backend, &preparer);
        proxy.create_task(create("sandbox")).unwrap();
        proxy.create_task(create("gpu1")).unwrap();
        proxy
            .delete_task(DeleteRequest {
                id: "gpu1".into(),
                ..Default::default()
            })
            .unwrap();
        proxy.shutdown_shim(ShutdownRequest::default()).unwrap();
        assert!(
            !backend.calls().contains(&"shutdown".to_owned()),
            "sandbox still alive"
        );
        assert!(!exited(&exit, Duration::from_millis(100)));
        proxy
            .delete_task(DeleteRequest {
                id: "sandbox".into(),
                ..Default::default()
            })
            .unwrap();
        proxy.shutdown_shim(ShutdownRequest::default()).unwrap();
        assert_eq!(backend.calls().last().unwrap(), "shutdown");
        assert!(exited(&exit, Duration::from_secs(5)));
    }
}
