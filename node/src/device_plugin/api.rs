//! The kubelet device plugin API v1beta1, generated at build time from
//! `node/proto/deviceplugin/v1beta1/api.proto` (messages, the `DevicePlugin` server and client,
//! the `Registration` server and client).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("v1beta1");

/// The API version the plugin registers with; kubelet supports exactly this one.
pub const VERSION: &str = "v1beta1";

/// `Device.health` of a device kubelet may allocate.
pub const HEALTHY: &str = "Healthy";

/// `Device.health` of a device kubelet must not allocate.
pub const UNHEALTHY: &str = "Unhealthy";

/// Kubelet's registration socket, a file in the plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
