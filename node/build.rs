//! Compiles the kubelet device plugin API (`proto/deviceplugin/v1beta1/api.proto`) into Rust:
//! `protox` parses the proto in-process (no `protoc` on build machines), `tonic-prost-build`
//! writes the messages and both sides of both services (the plugin serves `DevicePlugin` and
//! calls `Registration`; the tests play kubelet with the other halves).

use std::error::Error;

const PROTO_ROOT: &str = "proto";
const DEVICE_PLUGIN_PROTO: &str = "deviceplugin/v1beta1/api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile([DEVICE_PLUGIN_PROTO], [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
