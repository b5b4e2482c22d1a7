//! The kubelet device plugin against a fake kubelet: a `Registration` server on
//! `<tmp>/kubelet.sock` that does what kubelet does (checks the version and the resource name,
//! dials the plugin's endpoint before answering, asks for its options and holds `ListAndWatch`),
//! with device health from the simulated device's NVML (`tests/fakegpu`).
//!
//! One simulated machine per test binary; each test advertises devices of its own, so the
//! tests run in parallel without seeing each other's health changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hami_ledger::{DeviceInfo, Vendor};
use hami_node::device_plugin::api::device_plugin_client::DevicePluginClient;
use hami_node::device_plugin::api::registration_server::{Registration, RegistrationServer};
use hami_node::device_plugin::api::{self as v1beta1};
use hami_node::device_plugin::{self, DevicePluginConfig, HealthReport, NvmlProbe};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Devices of the simulated machine.
const DEVICES: usize = 6;
/// Bound on every wait for the plugin: a hang guard, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

fn uuid(index: usize) -> String {
    format!("GPU-d0d0d0d0-0000-0000-0000-0000000000{index:02x}")
}

fn device(index: usize) -> DeviceInfo {
    DeviceInfo {
        uuid: uuid(index),
        index: index as u32,
        vendor: Vendor::Nvidia,
        total_memory: 1 << 30,
        compute_units: 0,
    }
}

/// The simulated machine: its state directory and the driver library.
struct Machine {
    state_dir: PathBuf,
    library: PathBuf,
    _root: tempfile::TempDir,
}

/// The built simulated driver: `$HAMI_FAKEGPU_LIB`, else the newest build under this test's
/// profile (a dev-dependency, so `cargo test` builds it into `deps/`).
fn fakegpu_library() -> PathBuf {
    hami_fakegpu::built_library().expect("libhami_fakegpu.so not found under this test's profile")
}

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let state_dir = root.path().join("state");
        let uuids: Vec<String> = (0..DEVICES).map(uuid).collect();
        // SAFETY: runs once, under the OnceLock, before the simulated driver is loaded (it reads
        // these once); the tests reach the driver only through `machine()`.
        unsafe {
            std::env::set_var("HAMI_FAKEGPU_DIR", &state_dir);
            std::env::set_var("HAMI_FAKEGPU_DEVICES", DEVICES.to_string());
            std::env::set_var("HAMI_FAKEGPU_MEMORY", "1Gi");
            std::env::set_var("HAMI_FAKEGPU_UUIDS", uuids.join(","));
        }
        let library = fakegpu_library();
        // The first NVML user creates the state file.
        NvmlProbe::open(library.as_os_str()).unwrap();
        Machine {
            state_dir,
            library,
            _root: root,
        }
    })
}

/// Marks device `index` of the simulated machine lost (NVML_ERROR_GPU_IS_LOST) or healthy.
fn set_lost(index: usize, lost: bool) {
    let state = hami_fakegpu::state::SharedState::open_existing(&machine().state_dir).unwrap();
    assert!(state.set_lost(index, lost));
}

/// Device health of `devices` from the simulated NVML, polled every 50 ms.
fn nvml_health(devices: &[DeviceInfo]) -> watch::Receiver<HealthReport> {
    let probe = NvmlProbe::open(machine().library.as_os_str()).unwrap();
    let (sender, receiver) = device_plugin::health::channel();
    let uuids = devices.iter().map(|d| d.uuid.clone()).collect();
    device_plugin::health::spawn_poller(probe, uuids, Duration::from_millis(50), sender).unwrap();
    receiver
}

/// What the fake kubelet saw of one successful registration.
struct Registered {
    request: v1beta1::RegisterRequest,
    options: v1beta1::DevicePluginOptions,
    plugin: DevicePluginClient<Channel>,
    lists: mpsc::UnboundedReceiver<Vec<v1beta1::Device>>,
}

/// Kubelet's `Registration` service, as far as a plugin can tell.
struct KubeletRegistration {
    dir: PathBuf,
    registered: mpsc::UnboundedSender<Registered>,
    /// Registrations still to refuse (a kubelet that is not ready yet).
    refusals: AtomicUsize,
    refused: mpsc::UnboundedSender<String>,
}

#[tonic::async_trait]
impl Registration for KubeletRegistration {
    async fn register(
        &self,
        request: Request<v1beta1::RegisterRequest>,
    ) -> Result<Response<v1beta1::Empty>, Status> {
        let request = request.into_inner();
        let refuse = self
            .refusals
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            let _ = self.refused.send(request.endpoint.clone());
            return Err(Status::unavailable("kubelet is not ready"));
        }
        if request.version != "v1beta1" {
            return Err(Status::invalid_argument(format!(
                "unsupported version {:?}",
                request.version
            )));
        }
        let extended = request
            .resource_name
            .split_once('/')
            .is_some_and(|(domain, name)| {
                domain.contains('.') && !domain.ends_with("kubernetes.io") && !name.is_empty()
            });
        if !extended {
            return Err(Status::invalid_argument(format!(
                "invalid resource name {:?}",
                request.resource_name
            )));
        }
        // Kubelet dials the endpoint before it answers.
        let channel = device_plugin::socket::connect(&self.dir.join(&request.endpoint))
            .await
            .map_err(|e| Status::unavailable(format!("cannot dial the plugin: {e}")))?;
        let mut plugin = DevicePluginClient::new(channel);
        let options = plugin
            .get_device_plugin_options(v1beta1::Empty {})
            .await?
            .into_inner();
        let mut stream = plugin.list_and_watch(v1beta1::Empty {}).await?.into_inner();
        let (lists_sender, lists) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                if lists_sender.send(response.devices).is_err() {
                    return;
                }
            }
        });
        let _ = self.registered.send(Registered {
            request,
            options,
            plugin,
            lists,
        });
        Ok(Response::new(v1beta1::Empty {}))
    }
}

/// A fake kubelet serving `kubelet.sock` in a plugin directory.
struct FakeKubelet {
    registrations: mpsc::UnboundedReceiver<Registered>,
    refused: mpsc::UnboundedReceiver<String>,
    server: JoinHandle<()>,
}

impl FakeKubelet {
    fn start(dir: &Path) -> FakeKubelet {
        FakeKubelet::refusing(dir, 0)
    }

    /// A kubelet that refuses the first `refusals` registrations.
    fn refusing(dir: &Path, refusals: usize) -> FakeKubelet {
        let listener = tokio::net::UnixListener::bind(dir.join("kubelet.sock")).unwrap();
        let (registered, registrations) = mpsc::unbounded_channel();
        let (refused_sender, refused) = mpsc::unbounded_channel();
        let service = KubeletRegistration {
            dir: dir.to_path_buf(),
            registered,
            refusals: AtomicUsize::new(refusals),
            refused: refused_sender,
        };
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(service))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
        FakeKubelet {
            registrations,
            refused,
            server,
        }
    }

    async fn next_registration(&mut self) -> Registered {
        tokio::time::timeout(PATIENCE, self.registrations.recv())
            .await
            .expect("the plugin registers")
            .expect("the fake kubelet runs")
    }

    /// What kubelet does when it restarts: it goes away, its registration server deletes every
    /// file of the plugin directory, and listens on a new `kubelet.sock`.
    fn restart(self, dir: &Path) -> FakeKubelet {
        self.server.abort();
        for entry in std::fs::read_dir(dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        FakeKubelet::start(dir)
    }
}

/// The plugin running in the background until `stop` is sent.
struct RunningPlugin {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), device_plugin::DevicePluginError>>,
}

fn start_plugin(
    config: DevicePluginConfig,
    devices: Vec<DeviceInfo>,
    health: watch::Receiver<HealthReport>,
) -> RunningPlugin {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(device_plugin::run(config, devices, health, async {
        let _ = stopped.await;
    }));
    RunningPlugin { stop, task }
}

impl RunningPlugin {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the plugin stops")
            .unwrap()
            .unwrap();
    }
}

fn config(dir: &Path, shares: u32) -> DevicePluginConfig {
    DevicePluginConfig {
        plugin_dir: dir.to_path_buf(),
        shares_per_device: shares,
        ..DevicePluginConfig::default()
    }
}

async fn next_list(
    lists: &mut mpsc::UnboundedReceiver<Vec<v1beta1::Device>>,
) -> Vec<v1beta1::Device> {
    tokio::time::timeout(PATIENCE, lists.recv())
        .await
        .expect("a list from ListAndWatch")
        .expect("ListAndWatch open")
}

/// (ID, health) of every listed share.
fn summary(list: &[v1beta1::Device]) -> Vec<(String, String)> {
    list.iter()
        .map(|d| (d.id.clone(), d.health.clone()))
        .collect()
}

fn expected(devices: &[(usize, &str)], shares: u32) -> Vec<(String, String)> {
    devices
        .iter()
        .flat_map(|(index, health)| {
            (0..shares).map(move |n| (format!("{}::{n}", uuid(*index)), health.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_kubelet_and_lists_every_share_of_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = FakeKubelet::start(dir.path());
    let devices = vec![device(0), device(1)];
    let mut config = config(dir.path(), 3);
    config.numa_nodes = BTreeMap::from([(uuid(1), 1)]);
    let plugin = start_plugin(config, devices.clone(), nvml_health(&devices));

    let mut registered = kubelet.next_registration().await;
    assert_eq!(registered.request.version, "v1beta1");
    assert_eq!(registered.request.endpoint, "hami-nvidia.sock");
    assert_eq!(registered.request.resource_name, "nvidia.com/gpu");
    let wanted_options = v1beta1::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    };
    assert_eq!(registered.request.options, Some(wanted_options));
    assert_eq!(registered.options, wanted_options);

    let list = next_list(&mut registered.lists).await;
    assert_eq!(
        summary(&list),
        expected(&[(0, "Healthy"), (1, "Healthy")], 3)
    );
    let numa: Vec<Option<i64>> = list
        .iter()
        .map(|d| d.topology.as_ref().map(|t| t.nodes[0].id))
        .collect();
    assert_eq!(numa, [None, None, None, Some(1), Some(1), Some(1)]);
    assert!(
        list.iter()
            .all(|d| d.id.len() <= device_plugin::MAX_DEVICE_ID_LEN)
    );

    // The plugin asked for no pre-start call; it still answers one.
    registered
        .plugin
        .pre_start_container(v1beta1::PreStartContainerRequest {
            devices_ids: vec![format!("{}::0", uuid(0))],
        })
        .await
        .unwrap();

    let socket = dir.path().join("hami-nvidia.sock");
    assert!(socket.exists());
    plugin.stop().await;
    assert!(!socket.exists(), "the socket goes with the plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocations_spread_over_devices_and_allocate_checks_the_shares() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = FakeKubelet::start(dir.path());
    let devices = vec![device(2), device(3)];
    let plugin = start_plugin(
        config(dir.path(), 4),
        devices.clone(),
        nvml_health(&devices),
    );
    let mut registered = kubelet.next_registration().await;
    let list = next_list(&mut registered.lists).await;
    let share = |index: usize, n: u32| format!("{}::{n}", uuid(index));

    // Device 3 has more free shares: asked for one share, the container gets device 3; asked for
    // two, one share on each device; must-include is honoured.
    let available: Vec<String> = [share(2, 1), share(3, 0), share(3, 2), share(3, 3)].into();
    let preferred = registered
        .plugin
        .get_preferred_allocation(v1beta1::PreferredAllocationRequest {
            container_requests: vec![
                v1beta1::ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.clone(),
                    must_include_device_i_ds: vec![],
                    allocation_size: 1,
                },
                v1beta1::ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.clone(),
                    must_include_device_i_ds: vec![],
                    allocation_size: 2,
                },
                v1beta1::ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.clone(),
                    must_include_device_i_ds: vec![share(2, 1)],
                    allocation_size: 2,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let answers: Vec<Vec<String>> = preferred
        .container_responses
        .into_iter()
        .map(|r| r.device_i_ds)
        .collect();
    assert_eq!(
        answers,
        vec![
            vec![share(3, 0)],
            vec![share(3, 0), share(2, 1)],
            vec![share(2, 1), share(3, 0)],
        ]
    );

    // Every advertised share is allocatable, alone or with a share of the other device.
    assert_eq!(list.len(), 8);
    let allocated = registered
        .plugin
        .allocate(v1beta1::AllocateRequest {
            container_requests: vec![
                v1beta1::ContainerAllocateRequest {
                    devices_ids: vec![share(3, 2), share(2, 0)],
                },
                v1beta1::ContainerAllocateRequest {
                    devices_ids: vec![share(2, 3)],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let envs: Vec<Option<String>> = allocated
        .container_responses
        .iter()
        .map(|r| r.envs.get(device_plugin::SHARES_ENV).cloned())
        .collect();
    assert_eq!(
        envs,
        vec![
            Some(format!("{},{}", share(3, 2), share(2, 0))),
            Some(share(2, 3))
        ]
    );
    assert!(allocated.container_responses.iter().all(|r| {
        r.envs.len() == 1 && r.mounts.is_empty() && r.devices.is_empty() && r.cdi_devices.is_empty()
    }));

    // Refused, naming the IDs: a share never advertised, two shares of one device.
    for (ids, named) in [
        (vec![share(2, 0), share(2, 4)], vec![share(2, 4)]),
        (vec![share(0, 0)], vec![share(0, 0)]),
        (
            vec![share(3, 1), share(2, 0), share(3, 3)],
            vec![share(3, 1), share(3, 3)],
        ),
    ] {
        let status = registered
            .plugin
            .allocate(v1beta1::AllocateRequest {
                container_requests: vec![v1beta1::ContainerAllocateRequest {
                    devices_ids: ids.clone(),
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{ids:?}");
        for id in named {
            assert!(
                status.message().contains(&id),
                "{ids:?}: {}",
                status.message()
            );
        }
    }
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_is_listed_unhealthy_and_healthy_again_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = FakeKubelet::start(dir.path());
    let devices = vec![device(4), device(5)];
    let plugin = start_plugin(
        config(dir.path(), 2),
        devices.clone(),
        nvml_health(&devices),
    );
    let mut registered = kubelet.next_registration().await;
    assert_eq!(
        summary(&next_list(&mut registered.lists).await),
        expected(&[(4, "Healthy"), (5, "Healthy")], 2)
    );

    set_lost(5, true);
    assert_eq!(
        summary(&next_list(&mut registered.lists).await),
        expected(&[(4, "Healthy"), (5, "Unhealthy")], 2)
    );
    set_lost(5, false);
    assert_eq!(
        summary(&next_list(&mut registered.lists).await),
        expected(&[(4, "Healthy"), (5, "Healthy")], 2)
    );
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_registers_again_after_kubelet_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Kubelet is not up yet when the plugin starts: registration is retried.
    let devices = vec![device(0)];
    let (_health_sender, health) = device_plugin::health::channel();
    let plugin = start_plugin(config(dir.path(), 2), devices, health);
    let socket = dir.path().join("hami-nvidia.sock");
    tokio::time::timeout(PATIENCE, async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the plugin serves its socket");
    let mut kubelet = FakeKubelet::start(dir.path());
    let mut registered = kubelet.next_registration().await;
    assert_eq!(
        summary(&next_list(&mut registered.lists).await),
        expected(&[(0, "Healthy")], 2)
    );

    for _ in 0..2 {
        kubelet = kubelet.restart(dir.path());
        let mut again = kubelet.next_registration().await;
        assert_eq!(again.request.endpoint, "hami-nvidia.sock");
        assert_eq!(
            summary(&next_list(&mut again.lists).await),
            expected(&[(0, "Healthy")], 2)
        );
        // The stream of the kubelet that went away has ended.
        tokio::time::timeout(PATIENCE, async {
            while registered.lists.recv().await.is_some() {}
        })
        .await
        .expect("the old ListAndWatch stream ends");
        registered = again;
    }
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = FakeKubelet::refusing(dir.path(), 2);
    let (_health_sender, health) = device_plugin::health::channel();
    let plugin = start_plugin(config(dir.path(), 1), vec![device(1)], health);
    let mut registered = kubelet.next_registration().await;
    let mut refused = Vec::new();
    while let Ok(endpoint) = kubelet.refused.try_recv() {
        refused.push(endpoint);
    }
    assert_eq!(refused, ["hami-nvidia.sock", "hami-nvidia.sock"]);
    assert_eq!(
        summary(&next_list(&mut registered.lists).await),
        expected(&[(1, "Healthy")], 1)
    );
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_kubelet_cannot_take_stop_the_plugin_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut long = device(0);
    long.uuid = format!("GPU-{}", "e".repeat(60));
    let (_health_sender, health) = device_plugin::health::channel();
    let error = device_plugin::run(config(dir.path(), 10), vec![long.clone()], health, async {})
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(&format!("{}::9", long.uuid)),
        "{error}"
    );
    assert!(!dir.path().join("hami-nvidia.sock").exists());
}
