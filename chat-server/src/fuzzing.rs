//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz). Not part of the supported API.
//!
//! [`serve_one`] serves one client connection over any byte stream (the fuzz target uses an
//! in-memory `tokio::io::duplex`) through the same layers as a TCP connection accepted by
//! [`Server::run`](crate::Server::run): hyper's HTTP/1 server with the same timer, header
//! timeout and upgrade support, the real axum router, and after an upgrade the real
//! tungstenite connection loop, hub and rooms.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::http;
use crate::server::{serve_http, Shared, WithPeer};

/// Serves one client connection over `io`, as if the listener had accepted it from `peer`,
/// against fresh server state built from `config` exactly as `Server::bind` builds it.
///
/// Returns once the HTTP connection is done and every task it spawned (the WebSocket
/// connection after an upgrade) has finished, so the caller's runtime is left idle. Panics
/// are not caught: a fuzz target wants to see them.
pub async fn serve_one<IO>(io: IO, peer: SocketAddr, config: Config)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let shared = Arc::new(Shared::new(config, None));
    // The listener's own per-connection path: the router with the client's address, then
    // hyper with the same settings.
    let service = TowerToHyperService::new(WithPeer {
        router: http::router(shared.clone()),
        peer,
    });
    serve_http(io, peer, service, shared.clone()).await;
    shared.tracker.close();
    shared.tracker.wait().await;
}
