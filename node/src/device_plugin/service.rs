//! The `DevicePlugin` gRPC service kubelet calls on our socket.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::allocate::allocate_container;
use super::api::{self, device_plugin_server::DevicePlugin};
use super::health::HealthReport;
use super::preferred::preferred_shares;
use super::registration;
use super::shares::Inventory;

/// Lists kept queued for a `ListAndWatch` reader that is slow to take them.
const LIST_QUEUE: usize = 4;

/// The plugin's answers, for one serving of the socket.
pub struct PluginService {
    inventory: Arc<Inventory>,
    health: watch::Receiver<HealthReport>,
    /// Becomes `true` when this serving ends, so open `ListAndWatch` streams end with it.
    stopping: watch::Receiver<bool>,
}

impl PluginService {
    pub fn new(
        inventory: Arc<Inventory>,
        health: watch::Receiver<HealthReport>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inventory,
            health,
            stopping,
        }
    }
}

/// Sends the list now and again whenever device health changes, until the reader goes, the
/// serving stops, or the health source is gone and the serving stops.
async fn list_and_watch(
    inventory: Arc<Inventory>,
    mut health: watch::Receiver<HealthReport>,
    mut stopping: watch::Receiver<bool>,
    sender: mpsc::Sender<Result<api::ListAndWatchResponse, Status>>,
) {
    let mut report = health.borrow_and_update().clone();
    let mut health_source_alive = true;
    loop {
        let devices = inventory.list(&report);
        if sender
            .send(Ok(api::ListAndWatchResponse { devices }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                changed = health.changed(), if health_source_alive => match changed {
                    Ok(()) => {
                        report = health.borrow_and_update().clone();
                        break;
                    }
                    // The last list stands; kubelet keeps it until we stop.
                    Err(_) => health_source_alive = false,
                },
                _ = stopping.wait_for(|stop| *stop) => return,
                () = sender.closed() => return,
            }
        }
    }
}

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(registration::options()))
    }

    type ListAndWatchStream = ReceiverStream<Result<api::ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (sender, receiver) = mpsc::channel(LIST_QUEUE);
        tokio::spawn(list_and_watch(
            Arc::clone(&self.inventory),
            self.health.clone(),
            self.stopping.clone(),
            sender,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|container| api::ContainerPreferredAllocationResponse {
                device_i_ds: preferred_shares(&self.inventory, container),
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for container in &request.into_inner().container_requests {
            match allocate_container(&self.inventory, container) {
                Ok(response) => {
                    log::info!("allocated shares {}", container.devices_ids.join(","));
                    container_responses.push(response);
                }
                Err(error) => {
                    log::warn!("refused an allocation: {error}");
                    return Err(Status::invalid_argument(error.to_string()));
                }
            }
        }
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}
