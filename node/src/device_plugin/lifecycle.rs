//! The plugin's life: serve our socket, register with kubelet (retrying with backoff), then
//! watch the plugin directory. When kubelet restarts it deletes every file there (our socket
//! included) and creates a new `kubelet.sock`; either sign makes the plugin serve a fresh
//! socket and register again. Polled every [`WATCH_INTERVAL`] rather than through inotify: a
//! restart takes kubelet seconds, half a second more is nothing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hami_ledger::DeviceInfo;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use super::api::device_plugin_server::DevicePluginServer;
use super::config::{ConfigError, DevicePluginConfig};
use super::health::HealthReport;
use super::registration;
use super::service::PluginService;
use super::shares::{Inventory, InventoryError};
use super::socket::{self, FileIdentity};

/// How often the plugin directory is checked for a kubelet restart.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// First wait after a failed registration; it doubles up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between registration attempts (a new `kubelet.sock` cuts it short).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How long open streams get to close when a serving stops before the server is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the device plugin cannot run.
#[derive(Debug, Error)]
pub enum DevicePluginError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot advertise the node's devices: {0}")]
    Inventory(#[from] InventoryError),
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the device plugin until `shutdown` completes, then removes its socket.
///
/// `devices` are advertised as `config.shares_per_device` shares each; `health` says which are
/// unhealthy (see [`super::health`]). Registration failures are logged and retried, never
/// returned; an error means the plugin cannot work with these settings or this directory.
pub async fn run(
    config: DevicePluginConfig,
    devices: Vec<DeviceInfo>,
    health: watch::Receiver<HealthReport>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevicePluginError> {
    config.validate()?;
    let inventory = Arc::new(Inventory::new(
        &devices,
        config.shares_per_device,
        &config.numa_nodes,
    )?);
    let mut shutdown = pin!(shutdown);
    loop {
        let mut serving = Serving::start(&config, &inventory, &health)?;
        let outcome = register_and_watch(&config, &serving, shutdown.as_mut()).await;
        serving.stop().await;
        match outcome {
            Outcome::Shutdown => {
                // Kubelet treats a vanished socket as the plugin gone.
                if socket::identity(&serving.path) == serving.identity {
                    let _ = std::fs::remove_file(&serving.path);
                }
                log::info!("device plugin stopped");
                return Ok(());
            }
            Outcome::Restart(why) => log::info!("serving the device plugin again: {why}"),
        }
    }
}

/// One serving of our socket.
struct Serving {
    path: PathBuf,
    identity: Option<FileIdentity>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    fn start(
        config: &DevicePluginConfig,
        inventory: &Arc<Inventory>,
        health: &watch::Receiver<HealthReport>,
    ) -> Result<Self, DevicePluginError> {
        let path = config.socket_path();
        let (listener, identity) =
            socket::bind(&path).map_err(|source| DevicePluginError::Bind {
                path: path.clone(),
                source,
            })?;
        let (stop, stopping) = watch::channel(false);
        let service = PluginService::new(Arc::clone(inventory), health.clone(), stopping.clone());
        let mut stop_signal = stopping;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stop_signal.wait_for(|stop| *stop).await;
                }),
        );
        log::info!("device plugin serving on {}", path.display());
        Ok(Self {
            path,
            identity,
            stop,
            server,
        })
    }

    /// Why this serving can no longer be reached by kubelet, if it cannot.
    fn broken(&self) -> Option<String> {
        if self.server.is_finished() {
            return Some("the gRPC server stopped".to_string());
        }
        if socket::identity(&self.path) != self.identity {
            return Some(format!(
                "{} was removed or replaced (kubelet restarted?)",
                self.path.display()
            ));
        }
        None
    }

    /// Ends open streams, then the server (dropped if it does not finish in time).
    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(STOP_GRACE, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => log::warn!("device plugin server failed: {error}"),
            Ok(Err(error)) => log::warn!("device plugin server task failed: {error}"),
            Err(_) => {
                log::warn!("device plugin server did not stop within {STOP_GRACE:?}, dropped");
                self.server.abort();
            }
        }
    }
}

enum Outcome {
    Shutdown,
    Restart(String),
}

/// Registers (retrying) and then watches until a restart is due or `shutdown` completes.
async fn register_and_watch(
    config: &DevicePluginConfig,
    serving: &Serving,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Outcome {
    let kubelet_socket = config.kubelet_socket_path();
    let mut delay = FIRST_RETRY_DELAY;
    let registered_with = loop {
        if let Some(why) = serving.broken() {
            return Outcome::Restart(why);
        }
        let kubelet = socket::identity(&kubelet_socket);
        let attempt = tokio::select! {
            () = shutdown.as_mut() => return Outcome::Shutdown,
            attempt = registration::register(config) => attempt,
        };
        match attempt {
            Ok(()) => {
                log::info!(
                    "registered {} with kubelet at {}",
                    config.resource_name,
                    kubelet_socket.display()
                );
                break kubelet;
            }
            Err(error) => {
                log::warn!("device plugin registration failed, retrying in {delay:?}: {error}");
            }
        }
        // Wait out the delay, but try at once when kubelet's socket (re)appears.
        let waited = wait_for_kubelet(&kubelet_socket, kubelet, delay, shutdown.as_mut()).await;
        if waited.is_none() {
            return Outcome::Shutdown;
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    };
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return Outcome::Shutdown,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        if let Some(why) = serving.broken() {
            return Outcome::Restart(why);
        }
        if socket::identity(&kubelet_socket) != registered_with {
            return Outcome::Restart(format!("{} was re-created", kubelet_socket.display()));
        }
    }
}

/// Sleeps up to `delay` in [`WATCH_INTERVAL`] steps, ending early when the file at
/// `kubelet_socket` is no longer `seen`; `None` when `shutdown` completed first.
async fn wait_for_kubelet(
    kubelet_socket: &Path,
    seen: Option<FileIdentity>,
    delay: Duration,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<()> {
    let deadline = tokio::time::Instant::now() + delay;
    while tokio::time::Instant::now() < deadline {
        let step = WATCH_INTERVAL.min(deadline - tokio::time::Instant::now());
        tokio::select! {
            () = shutdown.as_mut() => return None,
            () = tokio::time::sleep(step) => {}
        }
        if socket::identity(kubelet_socket) != seen {
            break;
        }
    }
    Some(())
}
