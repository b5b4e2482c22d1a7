//! The stock runc shim behind the proxy: its Task API as a trait, and the ttrpc client for it.
//!
//! The trait takes requests only (no server context), so the proxy can be driven in tests by an
//! in-memory backend, and in production by [`BackendClient`], a [`TaskClient`] connected to the
//! backend's socket on first use. The client speaks the Task API version the backend announced
//! in its `start` reply (v2 for the runc shim of containerd 1.6/1.7, v3 for 2.x).

use std::sync::Mutex;

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc;

use crate::task_api::{Endpoint, TaskApi};

/// Declares [`TaskBackend`] and its implementations for the ttrpc clients, method by method.
macro_rules! task_backend {
    ($($method:ident($name:literal, $request:ty) -> $response:ty;)*) => {
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
                    self.call($name, request)
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
    state("State", StateRequest) -> StateResponse;
    create("Create", CreateTaskRequest) -> CreateTaskResponse;
    start("Start", StartRequest) -> StartResponse;
    delete("Delete", DeleteRequest) -> DeleteResponse;
    pids("Pids", PidsRequest) -> PidsResponse;
    pause("Pause", PauseRequest) -> Empty;
    resume("Resume", ResumeRequest) -> Empty;
    checkpoint("Checkpoint", CheckpointTaskRequest) -> Empty;
    kill("Kill", KillRequest) -> Empty;
    exec("Exec", ExecProcessRequest) -> Empty;
    resize_pty("ResizePty", ResizePtyRequest) -> Empty;
    close_io("CloseIO", CloseIORequest) -> Empty;
    update("Update", UpdateTaskRequest) -> Empty;
    wait("Wait", WaitRequest) -> WaitResponse;
    stats("Stats", StatsRequest) -> StatsResponse;
    connect("Connect", ConnectRequest) -> ConnectResponse;
    shutdown("Shutdown", ShutdownRequest) -> Empty;
}

/// A Task API client for one shim, in the version that shim speaks.
#[derive(Clone)]
pub struct TaskClient {
    client: ttrpc::Client,
    api: TaskApi,
    /// Deadline of each call in ns; 0: none.
    timeout_ns: i64,
}

impl TaskClient {
    /// Connects to `endpoint`. Calls have no deadline: `wait` blocks until the process exits,
    /// and containerd applies its own deadline to the call it made to the proxy.
    pub fn connect(endpoint: &Endpoint) -> ttrpc::Result<TaskClient> {
        Ok(TaskClient {
            client: ttrpc::Client::connect(&endpoint.address)?,
            api: endpoint.api,
            timeout_ns: 0,
        })
    }

    /// The same client with a deadline of `ns` nanoseconds on each call.
    pub fn with_timeout(self, ns: i64) -> TaskClient {
        TaskClient {
            timeout_ns: ns,
            ..self
        }
    }

    /// The Task API version this client speaks.
    pub fn api(&self) -> TaskApi {
        self.api
    }

    fn call<Req: Message, Res: Message>(&self, method: &str, request: &Req) -> ttrpc::Result<Res> {
        let mut call = ttrpc::Request::new();
        call.service = self.api.service().to_owned();
        call.method = method.to_owned();
        call.timeout_nano = self.timeout_ns;
        call.payload = request
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {method} request: {e}")))?;
        let response = self.client.request(call)?;
        Res::parse_from_bytes(&response.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decode {method} response: {e}")))
    }
}

/// The backend's Task client, connected on first use.
pub struct BackendClient {
    endpoint: Endpoint,
    client: Mutex<Option<TaskClient>>,
}

impl BackendClient {
    /// A client for the backend at `endpoint`; nothing is connected yet.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
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
        let client = TaskClient::connect(&self.endpoint)?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::TtrpcContext;

    use super::*;
    use crate::task_api::services;

    /// A Task service that answers `State` with the id it was asked about.
    struct Echo;

    impl containerd_shim::Task for Echo {
        fn state(
            &self,
            _ctx: &TtrpcContext,
            request: StateRequest,
        ) -> ttrpc::Result<StateResponse> {
            Ok(StateResponse {
                id: request.id,
                pid: 7,
                ..Default::default()
            })
        }
    }

    #[test]
    fn one_served_handler_set_answers_clients_of_both_task_apis() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}", dir.path().join("s").display());
        let mut server = ttrpc::Server::new()
            .bind(&address)
            .unwrap()
            .register_service(services(Echo));
        server.start().unwrap();
        for api in TaskApi::ALL {
            let endpoint = Endpoint {
                address: address.clone(),
                api,
            };
            let client = BackendClient::new(endpoint);
            let request = StateRequest {
                id: format!("c-{api}"),
                ..Default::default()
            };
            let response = client.state(&request).unwrap();
            assert_eq!(
                (response.id.as_str(), response.pid),
                (request.id.as_str(), 7)
            );
            // Not implemented by Echo: the default NOT_FOUND status comes back, not a transport
            // error, so the service name was found.
            let err = client.pids(&PidsRequest::default()).unwrap_err();
            assert!(
                matches!(&err, ttrpc::Error::RpcStatus(s) if s.code() == ttrpc::Code::NOT_FOUND),
                "{err:?}"
            );
        }
        server.shutdown();
    }

    #[test]
    fn a_client_of_an_unknown_service_gets_a_status_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}", dir.path().join("s").display());
        let mut methods = services(Echo);
        methods.retain(|path, _| path.contains(TaskApi::V2.service()));
        let mut server = ttrpc::Server::new()
            .bind(&address)
            .unwrap()
            .register_service(methods);
        server.start().unwrap();
        let client = BackendClient::new(Endpoint {
            address,
            api: TaskApi::V3,
        });
        let err = client.state(&StateRequest::default()).unwrap_err();
        assert!(err.to_string().contains("containerd.task.v3.Task"), "{err}");
        server.shutdown();
    }
}
