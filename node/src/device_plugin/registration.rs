//! Registering with kubelet: one `Register` call on `kubelet.sock` naming our socket, the
//! resource and the options. Kubelet dials our socket before it answers, so the plugin must be
//! serving first. Retries (with backoff) are the caller's, in [`super::lifecycle`].

use std::time::Duration;

use thiserror::Error;

use super::api::{self, registration_client::RegistrationClient};
use super::config::DevicePluginConfig;
use super::socket;

/// How long kubelet gets to answer `Register` (it dials us back and asks for our options).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one registration attempt failed.
#[derive(Debug, Error)]
pub enum RegistrationError {
    #[error("cannot connect to kubelet at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("kubelet refused the registration: {0}")]
    Refused(#[source] tonic::Status),
    #[error("kubelet did not answer the registration within {REGISTER_TIMEOUT:?}")]
    Timeout,
}

/// What the plugin asks of kubelet: preferred allocations yes, a pre-start call no.
pub fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// Registers the plugin with the kubelet listening in `config.plugin_dir`.
pub async fn register(config: &DevicePluginConfig) -> Result<(), RegistrationError> {
    let path = config.kubelet_socket_path();
    let channel = socket::connect(&path)
        .await
        .map_err(|source| RegistrationError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let request = api::RegisterRequest {
        version: api::VERSION.to_string(),
        endpoint: config.endpoint.clone(),
        resource_name: config.resource_name.clone(),
        options: Some(options()),
    };
    tokio::time::timeout(
        REGISTER_TIMEOUT,
        RegistrationClient::new(channel).register(request),
    )
    .await
    .map_err(|_| RegistrationError::Timeout)?
    .map_err(RegistrationError::Refused)?;
    Ok(())
}
