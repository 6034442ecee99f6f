//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz). Not part of the supported API.
//!
//! [`serve_one`] serves one client connection over any byte stream (the fuzz target uses an
//! in-memory `tokio::io::duplex`) through the same layers as a TCP connection accepted by
//! [`Server::run`](crate::Server::run): hyper's HTTP/1 server with the same timer, header
//! timeout and upgrade support, the real axum router, and after an upgrade the real
//! tungstenite connection loop, hub and rooms.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::server::Shared;

/// Serves one client connection over `io`, as if the listener had accepted it from `peer`,
/// against a fresh hub built from `config` the way `Server::bind` builds it.
///
/// Returns once the HTTP connection is done and every task it spawned (the WebSocket
/// connection after an upgrade) has finished, so the caller's runtime is left idle. Panics
/// are not caught: a fuzz target wants to see them.
pub async fn serve_one<IO>(io: IO, peer: SocketAddr, config: Config)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        hub: Hub::new(config.room_config(), config.max_rooms, metrics.clone()),
        slots: Arc::new(Semaphore::new(
            config.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        config,
        metrics,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        per_ip: Mutex::new(Default::default()),
    });
    // What the listener's service does for each request: the router, with the client's
    // address available as axum's `ConnectInfo`.
    let router = http::router(shared.clone()).layer(Extension(ConnectInfo(peer)));
    let service = TowerToHyperService::new(router);
    // The same HTTP/1 settings as `server::serve_http`.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(err) = conn.await {
        tracing::debug!(%peer, %err, "http connection ended with an error");
    }
    shared.tracker.close();
    shared.tracker.wait().await;
}
