//! What a container asks of its accelerators, spelt once for every crate: the annotation keys
//! and resource names ([`keys`]), and the two grammars of a size, named by meaning —
//! [`quantity`] for Kubernetes quantities (annotations, resource limits, command-line flags;
//! a bare GPU memory number is MiB) and [`byte_size`] for environment variables (a bare number
//! is bytes, suffixes are powers of 1024 as HAMi-core's variables), and the words of the
//! compute knobs ([`knobs`], into the ledger's enums), and the request of one container read
//! from annotations and resource limits ([`container`]). No I/O.

pub mod byte_size;
pub mod container;
pub mod keys;
pub mod knobs;
pub mod quantity;

pub use byte_size::{SizeError, parse_size};
pub use container::{ContainerRequest, DeviceSelection, MemoryRequest, RequestError};
pub use quantity::{QuantityError, gpu_memory_bytes};
