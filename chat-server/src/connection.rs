//! One WebSocket connection after the handshake: a reader that feeds text frames to its room
//! and a writer that drains the connection's bounded queue, pings, and closes with a reason.
//!
//! The reader and writer run as two futures in one task. Either side ending ends the other:
//! the writer stops when [`Control::close`] is called (by the room, the reader, idle
//! detection or shutdown) and sends the close frame; the reader then waits briefly for the
//! client's close reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chat_core::ConnId;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::hub::{JoinRequest, Peer};
use crate::server::Shared;
use crate::wire::Format;

/// Most queued frames a writer feeds before flushing once.
const WRITE_BATCH: usize = 256;

/// How long a closing connection waits for the client's close reply or for a stuck write.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long a closed connection keeps draining the client's input before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// The read buffer of each connection. Small, because most connections are idle most of the
/// time and tungstenite zero-fills it before each read.
const READ_BUFFER: usize = 4 * 1024;

/// Asks a connection to close, from anywhere. The first reason given wins.
pub struct Control {
    reason: OnceLock<(CloseCode, &'static str)>,
    token: CancellationToken,
}

impl Control {
    fn new(shutdown: &CancellationToken) -> Control {
        Control {
            reason: OnceLock::new(),
            token: shutdown.child_token(),
        }
    }

    /// Closes the connection with `code` and `reason` (unless it is already closing).
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        let _ = self.reason.set((code, reason));
        self.token.cancel();
    }

    /// The close frame to send: the reason given, or 1001 when the server is shutting down.
    fn frame(&self) -> CloseFrame {
        let (code, reason) = self
            .reason
            .get()
            .copied()
            .unwrap_or((CloseCode::Away, "server shutting down"));
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// What the handshake settled for this connection.
pub struct Handshake {
    /// Room name.
    pub room: String,
    /// `?nick=`.
    pub nick: Option<String>,
    /// `?since=`.
    pub since: Option<u64>,
    /// Negotiated wire format.
    pub format: Format,
}

/// tungstenite settings sized for many mostly-idle connections.
pub fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Runs an upgraded connection until it closes.
pub async fn run(upgraded: Upgraded, shared: Arc<Shared>, conn: ConnId, hs: Handshake) {
    let io = TokioIo::new(upgraded);
    let ws_config = ws_config(shared.config.max_frame_bytes);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let (tx, rx) = mpsc::channel(shared.config.queue_capacity.max(1));
    let control = Arc::new(Control::new(&shared.shutdown));
    let peer = Peer {
        tx,
        format: hs.format,
        control: control.clone(),
    };
    let request = JoinRequest {
        room: &hs.room,
        nick: hs.nick.as_deref(),
        since: hs.since,
    };
    let room = shared.hub.join(conn, peer, request);
    tracing::debug!(?conn, room = %hs.room, format = ?hs.format, joined = room.is_some(), "connected");

    let last_seen = AtomicU64::new(0);
    let started = Instant::now();
    let elapsed_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (mut sink, mut stream) = ws.split();

    let reader = async {
        let Some(room) = room.as_ref() else { return };
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = closing_grace(&control) => break,
            };
            last_seen.store(elapsed_ms(), Ordering::Relaxed);
            match next {
                Some(Ok(Message::Text(text))) => {
                    shared.metrics.messages_in.inc();
                    shared.hub.message(room, conn, text.as_str());
                }
                Some(Ok(Message::Binary(_))) => {
                    control.close(CloseCode::Unsupported, "binary frames are not supported");
                }
                // Pings are answered by tungstenite; pongs and closes only count as activity
                // (the close reply goes out on the next read).
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    if let Some((code, reason)) = close_code_for(&err) {
                        control.close(code, reason);
                    }
                    break;
                }
                None => break,
            }
        }
        shared.hub.leave(room, conn);
        control.token.cancel();
    };

    let writer = write_loop(&mut sink, rx, &control, &shared, &last_seen, &elapsed_ms);
    tokio::join!(reader, writer);
    if let Ok(mut ws) = stream.reunite(sink) {
        linger(ws.get_mut()).await;
    }
    tracing::debug!(?conn, "disconnected");
}

/// Ends the TCP connection politely: send FIN, then read and discard until the client closes
/// too (bounded). Dropping a socket with unread input makes the kernel send a reset, and the
/// client would lose the close frame (e.g. 1009 while an oversized frame is still arriving).
async fn linger(io: &mut TokioIo<Upgraded>) {
    let drain = async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 1024];
        while let Ok(1..) = io.read(&mut buf).await {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Resolves [`CLOSE_WAIT`] after the connection started closing.
async fn closing_grace(control: &Control) {
    control.token.cancelled().await;
    tokio::time::sleep(CLOSE_WAIT).await;
}

/// The close code for a read error, or `None` when the transport is simply gone.
fn close_code_for(err: &WsError) -> Option<(CloseCode, &'static str)> {
    match err {
        WsError::Capacity(_) => Some((CloseCode::Size, "message too big")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8 in a text frame")),
        WsError::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;

/// Drains the queue (every waiting frame fed, then one flush), pings, detects idle clients,
/// and finally sends the close frame.
async fn write_loop(
    sink: &mut Sink,
    mut rx: mpsc::Receiver<Message>,
    control: &Control,
    shared: &Shared,
    last_seen: &AtomicU64,
    elapsed_ms: &impl Fn() -> u64,
) {
    let ping_every = shared.config.ping_interval.max(Duration::from_millis(10));
    let idle_ms = u64::try_from(shared.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(WRITE_BATCH.min(shared.config.queue_capacity.max(1)));
    let result: Result<(), WsError> = async {
        loop {
            tokio::select! {
                biased;
                () = control.token.cancelled() => return Ok(()),
                n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                    if n == 0 {
                        return Ok(());
                    }
                    let write = async {
                        for frame in batch.drain(..) {
                            sink.feed(frame).await?;
                        }
                        sink.flush().await
                    };
                    tokio::select! {
                        biased;
                        () = control.token.cancelled() => return Ok(()),
                        written = write => written?,
                    }
                    batch.clear();
                }
                _ = ping.tick() => {
                    if elapsed_ms().saturating_sub(last_seen.load(Ordering::Relaxed)) > idle_ms {
                        control.close(CloseCode::Away, "idle timeout");
                        return Ok(());
                    }
                    tokio::select! {
                        biased;
                        () = control.token.cancelled() => return Ok(()),
                        sent = sink.send(Message::Ping(Default::default())) => sent?,
                    }
                }
            }
        }
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%err, "write failed");
    }
    let close = sink.send(Message::Close(Some(control.frame())));
    let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
}
