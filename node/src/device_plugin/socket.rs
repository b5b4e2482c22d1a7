//! Unix sockets of the plugin directory: binding ours, recognising a socket file across a
//! kubelet restart (kubelet deletes ours and re-creates its own), and dialing one with tonic.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// Which file sits at a path: a re-created socket has a new inode even under the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
}

/// The identity of the file at `path`, `None` when there is none.
pub fn identity(path: &Path) -> Option<FileIdentity> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|metadata| FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
}

/// Listens on `path`, replacing a socket left there by an earlier run.
pub fn bind(path: &Path) -> std::io::Result<(UnixListener, Option<FileIdentity>)> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    Ok((listener, identity(path)))
}

/// A gRPC channel to the server listening on the unix socket `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    // The URI is required by the API and unused: every connection goes to `path`.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}
