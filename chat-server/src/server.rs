//! The listener: accepts TCP connections, serves HTTP on each (hyper), and shuts down
//! gracefully. It owns no chat semantics.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use chat_core::ConnId;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, CONN_BITS};
use crate::config::Config;
use crate::http;
use crate::hub::{self, Hub};
use crate::metrics::Metrics;

/// State shared by every connection task.
pub struct Shared {
    /// The flags the server was started with.
    pub config: Config,
    /// The rooms.
    pub hub: Hub,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down; every connection watches it.
    pub shutdown: CancellationToken,
    /// Every spawned task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// One permit per WebSocket connection (`--max-connections`).
    pub slots: Arc<Semaphore>,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// Open WebSocket connections per source address (`--max-connections-per-ip`).
    pub per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One WebSocket connection's share of the per-address limit, given back on drop.
pub struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    /// Fresh state for a server started with `config`: no rooms, no connections. With a
    /// cluster, rooms are replicated through Redis.
    pub(crate) fn new(config: Config, cluster: Option<Arc<Cluster>>) -> Shared {
        let metrics = Arc::new(Metrics::default());
        Shared {
            hub: Hub::new(
                config.room_config(),
                config.max_rooms,
                metrics.clone(),
                cluster,
            ),
            slots: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            config,
            metrics,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A new connection id: a counter, under this node's number when replicated, so ids
    /// are unique across the cluster.
    pub fn conn_id(&self) -> ConnId {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        match self.hub.cluster() {
            Some(cluster) => ConnId(cluster.node() << CONN_BITS | (n & ((1 << CONN_BITS) - 1))),
            None => ConnId(n),
        }
    }

    /// Takes a slot for `ip` unless it has `--max-connections-per-ip` already (0: no limit).
    pub fn try_acquire_ip(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let limit = self.config.max_connections_per_ip;
        let mut per_ip = self.per_ip.lock();
        let open = per_ip.entry(ip).or_insert(0);
        if limit != 0 && *open >= limit {
            return None;
        }
        *open += 1;
        Some(IpSlot {
            shared: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock();
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// How long shutdown waits for the last client inputs to reach Redis.
const APPENDER_GRACE: Duration = Duration::from_secs(2);

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
}

/// Loads `--tls-cert` / `--tls-key` into a TLS acceptor (HTTP/1.1 only).
fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |what: &Path, err: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {err}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| bad(cert, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Stops a running server from another task (what Ctrl-C / SIGTERM do in the binary).
#[derive(Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, close every client with 1001.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

impl Server {
    /// Binds the listening socket (`--bind`, `--port`; port 0 picks a free one).
    pub async fn bind(config: Config) -> io::Result<Server> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind((config.bind, config.port)).await?;
        let cluster = match &config.redis {
            Some(url) => Some(Arc::new(
                Cluster::connect(url, config.node_id.clone(), config.node_timeout)
                    .await
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.0))?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared::new(config, cluster));
        Ok(Server {
            listener,
            shared,
            tls,
        })
    }

    /// Whether the server speaks TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that shuts the server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.shutdown.clone())
    }

    /// Serves until shut down, then closes every client with 1001 and waits (at most
    /// `--shutdown-grace`) for the connections to finish.
    pub async fn run(self) -> io::Result<()> {
        let Server {
            listener,
            shared,
            tls,
        } = self;
        let router = http::router(shared.clone());
        shared.tracker.spawn(sweep_until_shutdown(shared.clone()));
        // The appender outlives the connections: their last messages and leaves are
        // appended after they finish, at shutdown too.
        let drained = CancellationToken::new();
        let appender = shared.hub.cluster().cloned().map(|cluster| {
            let (shared, drained) = (shared.clone(), drained.clone());
            tokio::spawn(async move { hub::append_logs(&shared.hub, &cluster, &drained).await })
        });
        if let Some(cluster) = shared.hub.cluster().cloned() {
            let (s1, c1) = (shared.clone(), cluster.clone());
            shared
                .tracker
                .spawn(async move { hub::read_logs(&s1.hub, &c1, &s1.shutdown).await });
            let (s2, c2) = (shared.clone(), cluster);
            shared
                .tracker
                .spawn(async move { hub::look_after(&s2.hub, &c2, &s2.shutdown).await });
        }
        // The heartbeat outlives the connections too, so this node is not declared dead
        // while its last inputs are being appended.
        let heartbeat = shared.hub.cluster().cloned().map(|cluster| {
            let (shared, drained) = (shared.clone(), drained.clone());
            tokio::spawn(async move { hub::keep_alive(&shared.hub, &cluster, &drained).await })
        });
        loop {
            let accepted = tokio::select! {
                () = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Handlers see the client's address as axum's `ConnectInfo`.
                    let service = TowerToHyperService::new(WithPeer {
                        router: router.clone(),
                        peer,
                    });
                    let shared = shared.clone();
                    shared.tracker.clone().spawn(serve_tcp(
                        stream,
                        peer,
                        service,
                        shared,
                        tls.clone(),
                    ));
                }
                Err(err) => {
                    // Out of file descriptors or a transient error: back off instead of
                    // spinning; the listener keeps working once resources return.
                    tracing::warn!(%err, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down: closing every connection with 1001");
        shared.hub.close_all();
        shared.tracker.close();
        let grace = shared.config.shutdown_grace;
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace; exiting anyway");
        }
        drained.cancel();
        if let Some(appender) = appender {
            let _ = tokio::time::timeout(APPENDER_GRACE, appender).await;
        }
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        if let Some(cluster) = shared.hub.cluster() {
            cluster.deregister().await;
        }
        Ok(())
    }
}

/// Every `--ping-interval`: ping all members, close those idle past `--idle-timeout`.
async fn sweep_until_shutdown(shared: Arc<Shared>) {
    let every = shared.config.ping_interval.max(Duration::from_millis(10));
    let idle_ms = u64::try_from(shared.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => shared.hub.sweep(idle_ms),
        }
    }
}

/// The router, handing every request the client's address as axum's `ConnectInfo`.
#[derive(Clone)]
pub(crate) struct WithPeer {
    pub(crate) router: axum::Router,
    pub(crate) peer: SocketAddr,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<hyper::Request<hyper::body::Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(req)
    }
}

/// One TCP connection: the TLS handshake first when TLS is on (bounded by the handshake
/// timeout), then HTTP.
async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    service: TowerToHyperService<WithPeer>,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    // Small frames (chat lines) must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return serve_http(stream, peer, service, shared).await;
    };
    let handshake = tokio::time::timeout(shared.config.handshake_timeout, tls.accept(stream));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        () = shared.shutdown.cancelled() => return,
    };
    match accepted {
        Ok(Ok(stream)) => serve_http(stream, peer, service, shared).await,
        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// HTTP/1 on one connection until (maybe) a WebSocket upgrade takes it over.
pub(crate) async fn serve_http<I>(
    stream: I,
    peer: SocketAddr,
    service: TowerToHyperService<WithPeer>,
    shared: Arc<Shared>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, %err, "http connection ended with an error");
    }
}
