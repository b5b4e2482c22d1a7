//! The shim's process lifecycle for containerd: `start` (launch the backend runc shim, then the
//! proxy daemon), the daemon's Task service, and `delete` (cleanup after a dead shim).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, Error as ShimError, ExitSignal, Flags, StartOpts};
use thiserror::Error;

use crate::backend::BackendClient;
use crate::backend_process::{self, BackendArgs, BackendError};
use crate::config::{ConfigError, ShimConfig};
use crate::ledger_entry;
use crate::prepare::LedgerPreparer;
use crate::proxy::ProxyTask;
use crate::spec_rewrite;
use crate::task_api::{Endpoint, TaskApi};

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.hami.v2";
/// Environment variable through which `start` tells the daemon the backend's `start` reply
/// (where it listens, which Task API it speaks).
const BACKEND_ENV: &str = "HAMI_BACKEND";

/// The shim, as containerd runs it.
pub struct HamiShim {
    args: BackendArgs,
    /// `-bundle`: set for `delete` only.
    bundle: String,
    /// The daemon's own socket (`unix://...`), empty for `start` and `delete`.
    socket: String,
    exit: Arc<ExitSignal>,
}

/// Why `start` failed; containerd reports this text as the reason the container failed.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the bundle (working directory): {0}")]
    Bundle(std::io::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot start the shim daemon: {0}")]
    Spawn(#[from] ShimError),
}

impl HamiShim {
    /// `start`: launches the backend, then the proxy daemon; returns the reply for containerd,
    /// in the Task API version the backend speaks (its runc shim comes with containerd: v2 for
    /// 1.6 and 1.7, which cannot read a v3 reply; v3 for 2.x).
    fn start(&mut self, opts: StartOpts) -> Result<String, StartError> {
        let config = ShimConfig::load()?;
        let bundle = std::env::current_dir().map_err(StartError::Bundle)?;
        let grouping = spec_rewrite::read_spec(&bundle)
            .ok()
            .and_then(|spec| spec_rewrite::annotations(&spec).remove(spec_rewrite::CRI_SANDBOX_ID))
            .unwrap_or_else(|| opts.id.clone());
        let backend = backend_process::start(&config.backend_shim, &self.args)?;
        let (_, address) = containerd_shim::spawn(
            opts,
            &format!("{grouping}-hami"),
            vec![(BACKEND_ENV, backend.reply().as_str())],
        )?;
        // The backend wrote its own address into the bundle; containerd 1.x reconnects through
        // this file after a restart, and must reach the proxy, not the backend (containerd 2.x
        // keeps our reply in `bootstrap.json`).
        write_address(&address)?;
        backend_process::record(&bundle, &backend);
        let proxy = Endpoint {
            address,
            api: backend.api,
        };
        Ok(proxy.reply())
    }

    /// The backend named by the daemon's environment.
    fn backend() -> Endpoint {
        let reply = std::env::var(BACKEND_ENV).unwrap_or_default();
        Endpoint::parse(&reply).unwrap_or_else(|e| {
            log::error!("{BACKEND_ENV}={reply:?}: {e}");
            Endpoint {
                address: reply,
                api: TaskApi::V2,
            }
        })
    }
}

impl containerd_shim::Shim for HamiShim {
    type T = ProxyTask<BackendClient, LedgerPreparer>;

    fn new(_runtime_id: &str, args: &Flags, config: &mut Config) -> Self {
        if let Ok(shim_config) = ShimConfig::load() {
            config.default_log_level = shim_config.log_filter().to_string().to_lowercase();
        }
        Self {
            args: BackendArgs {
                namespace: args.namespace.clone(),
                id: args.id.clone(),
                address: args.address.clone(),
                publish_binary: args.publish_binary.clone(),
                debug: args.debug,
            },
            bundle: args.bundle.clone(),
            socket: args.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        match self.start(opts) {
            Ok(reply) => Ok(reply),
            Err(e) => {
                // containerd shows what `start` wrote, as the reason the container failed;
                // `containerd_shim::run` would write the error's debug form.
                eprint!("{RUNTIME_ID}: {e}");
                std::process::exit(1);
            }
        }
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().map_err(|e| ShimError::Other(format!("bundle: {e}")))?
        } else {
            PathBuf::from(&self.bundle)
        };
        let config = ShimConfig::load().unwrap_or_default();
        let id = &self.args.id;
        let response = backend_process::delete_through_backend(&bundle, id)
            .or_else(|e| {
                log::warn!("container {id}: backend cannot delete it ({e}), running its delete");
                backend_process::delete_with_binary(&config.backend_shim, &self.args, &bundle)
            })
            .or_else(|e| {
                // Nothing of the container is left to delete (its creation failed before runc
                // ran): report it killed, as the runc shim does for a container it cannot find.
                log::warn!("container {id}: {e}");
                Ok::<_, ShimError>(backend_process::killed_response())
            });
        if let Err(e) = ledger_entry::remove_entry(&config.ledger_dir, id) {
            log::warn!("container {id}: {e}");
        }
        // The dead proxy's socket: nobody listens on it any more.
        if let Ok(address) = std::fs::read_to_string(bundle.join("address"))
            && !backend_process::listening(address.trim())
        {
            backend_process::remove_socket(address.trim());
        }
        response
    }

    fn wait(&mut self) {
        self.exit.wait();
        // The library removes the socket named in the `address` file of the working directory,
        // which is the pod's first bundle and usually deleted by now: remove it ourselves. The
        // backend (already told to shut down) would remove the socket named in that same file,
        // ours, instead of its own: remove its socket too.
        backend_process::remove_socket(&self.socket);
        backend_process::remove_socket(&Self::backend().address);
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        let backend = Self::backend();
        let api = backend.api;
        let recorded = backend.clone();
        let on_bundle = Box::new(move |bundle: &Path| backend_process::record(bundle, &recorded));
        ProxyTask::new(
            BackendClient::new(backend),
            LedgerPreparer::default(),
            self.exit.clone(),
            on_bundle,
        )
        .facing(api)
    }
}
