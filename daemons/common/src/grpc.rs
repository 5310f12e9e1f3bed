//! gRPC between daemons, over Unix sockets: `/run/rookery/<daemon>.sock`, group `rookery`,
//! mode 0660 (DESIGN.md). Every daemon serves the standard `grpc.health.v1` service and the
//! [`Admin`](crate::proto::admin_server::Admin) service next to its own; apid and rookeryctl
//! reach them with [`connect`].
//!
//! Entry points: [`bind`] (server side, before `READY=1`), [`serve`], [`connect`].

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

/// Group that may use the daemons' sockets.
pub const SOCKET_GROUP: &str = "rookery";
/// How long a client waits to connect to a daemon's socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Binding a daemon's socket failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory could not be created.
    #[error("cannot create socket directory {}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process is serving on the socket.
    #[error("socket {} is in use by another process; is the daemon already running?", .path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket; remove it", .path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// bind(2) or the permission change failed.
    #[error("cannot bind socket {}", .path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Binds `path` for serving: creates the directory, replaces a stale socket left by a crash
/// (never one that still answers), and sets mode 0660 and group `rookery` when the group exists.
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BindError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(BindError::InUse {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let bind_err = |source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(SOCKET_GROUP) {
        // Only possible when the daemon runs as root or is a member of the group; the unit
        // arranges that. Without it the socket stays owner-only plus root.
        if let Err(err) = nix::unistd::chown(path, None, Some(group.gid)) {
            tracing::warn!(socket = %path.display(), error = %err, "Cannot give the socket to group rookery.");
        }
    }
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes in-flight calls.
pub async fn serve(
    listener: UnixListener,
    router: tonic::transport::server::Router,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
}

/// Connecting to a daemon's socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No socket at the path: the daemon is not running (or not installed).
    #[error("no socket at {}: the daemon is not running", .path.display())]
    Missing {
        /// The socket.
        path: PathBuf,
    },
    /// The socket exists but we may not use it.
    #[error("permission denied on {}: run as root or as a member of group rookery", .path.display())]
    Permission {
        /// The socket.
        path: PathBuf,
    },
    /// The socket exists but nothing answers, or the handshake failed.
    #[error("cannot connect to {}", .path.display())]
    Transport {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a gRPC channel to the daemon listening on `path`.
pub async fn connect(path: &Path) -> Result<Channel, ConnectError> {
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(ConnectError::Missing {
                path: path.to_path_buf(),
            });
        }
        _ => {}
    }
    if let Err(err) = UnixStream::connect(path).await
        && err.kind() == io::ErrorKind::PermissionDenied
    {
        return Err(ConnectError::Permission {
            path: path.to_path_buf(),
        });
    }
    let target = path.to_path_buf();
    // The URI is required by the HTTP/2 layer but never resolved: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(CONNECT_TIMEOUT);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { UnixStream::connect(target).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            path: path.to_path_buf(),
            source,
        })
}

/// The socket path of daemon `daemon` under [`RUN_DIR`](crate::RUN_DIR).
pub fn socket_path(daemon: &str) -> PathBuf {
    Path::new(crate::RUN_DIR).join(format!("{daemon}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::admin_client::AdminClient;
    use crate::proto::admin_server::{Admin, AdminServer};
    use crate::proto::*;
    use tonic::{Request, Response, Status};

    struct Fixed;

    #[tonic::async_trait]
    impl Admin for Fixed {
        async fn status(
            &self,
            _: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            Ok(Response::new(StatusResponse {
                daemon: "testd".into(),
                ..Default::default()
            }))
        }
        async fn validate_config(
            &self,
            _: Request<ValidateConfigRequest>,
        ) -> Result<Response<ValidateConfigResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn reload(
            &self,
            _: Request<ReloadRequest>,
        ) -> Result<Response<ReloadResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    #[tokio::test]
    async fn serves_and_connects_over_a_unix_socket_with_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/testd.sock");
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let stop = CancellationToken::new();
        let router = tonic::transport::Server::builder().add_service(AdminServer::new(Fixed));
        let server = tokio::spawn(serve(listener, router, stop.clone()));

        let mut client = AdminClient::new(connect(&path).await.unwrap());
        let status = client.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.daemon, "testd");

        // A second daemon must not steal a live socket.
        assert!(matches!(bind(&path).await, Err(BindError::InUse { .. })));
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testd.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves a dead socket file
        bind(&path).await.unwrap();

        let missing = dir.path().join("gone.sock");
        let err = connect(&missing).await.unwrap_err();
        assert!(matches!(err, ConnectError::Missing { .. }));
        assert!(err.to_string().contains("gone.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_file_in_the_way_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testd.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind(&path).await,
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
