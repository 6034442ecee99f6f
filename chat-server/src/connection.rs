//! One WebSocket connection after the handshake: one loop that feeds text frames to its room,
//! drains the connection's bounded queue to the socket, and closes with a reason.
//!
//! The loop stops when [`Control::close`] is called (by the room, the hub's idle sweep, a
//! read error) or the server shuts down; then it sends the close frame, waits briefly for
//! the client's reply and lingers so the close is not lost to a reset.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use chat_core::ConnId;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::hub::{JoinRequest, Peer, RoomCell};
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::wire::Format;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Most frames one `writev` carries.
const WRITEV_SLICES: usize = 64;

/// How long a closing connection waits for the client's close reply or for a stuck write.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long a closed connection keeps draining the client's input before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// The read buffer of each connection. Small, because most connections are idle most of the
/// time and clients send short lines; tungstenite grows it for a larger frame.
const READ_BUFFER: usize = 128;

/// Asks a connection to close, from anywhere, and records when it was last heard from.
/// The first reason given wins.
pub struct Control {
    reason: OnceLock<(CloseCode, &'static str)>,
    notify: Notify,
    /// The hub clock (ms) of the last frame read from the client.
    last_seen_ms: AtomicU64,
    /// With `--redis`: this connection's messages queued for Redis and not yet appended.
    appending: AtomicU32,
}

impl Control {
    fn new(now_ms: u64) -> Control {
        Control {
            reason: OnceLock::new(),
            notify: Notify::new(),
            last_seen_ms: AtomicU64::new(now_ms),
            appending: AtomicU32::new(0),
        }
    }

    /// Takes one of `max` slots for a message on its way to Redis, waiting while all are
    /// taken: a client sending faster than Redis appends is slowed down (its socket is not
    /// read meanwhile) instead of filling the node's queue for everyone. `false` if the
    /// connection is closing.
    pub async fn start_append(&self, max: u32) -> bool {
        self.wait_until(|| {
            self.reason.get().is_some() || self.appending.load(Ordering::Acquire) < max
        })
        .await;
        if self.reason.get().is_some() {
            return false;
        }
        // Only the connection's own task takes slots, so the slot seen free is still free.
        self.appending.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Gives a slot back once its message was appended (or refused).
    pub fn end_append(&self) {
        self.appending.fetch_sub(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Closes the connection with `code` and `reason` (unless it is already closing).
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        let _ = self.reason.set((code, reason));
        self.notify.notify_waiters();
    }

    /// When the client was last heard from (hub clock, ms).
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Resolves once [`close`](Self::close) was called.
    async fn closing(&self) {
        self.wait_until(|| self.reason.get().is_some()).await;
    }

    /// Resolves once `ready()` holds, re-checking whenever `notify` fires (a close or a
    /// slot given back).
    async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change in between still wakes us.
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
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
///
/// One loop owns the socket: it reads frames into the room, writes what the room queued
/// (ready-made frames, many per `writev`; the hub's sweep queues pings too) and watches for
/// close requests. Keeping it one future (no split halves, no second task, no timer of its
/// own) keeps an idle connection small.
pub async fn run(upgraded: Upgraded, shared: Arc<Shared>, conn: ConnId, hs: Handshake) {
    let io = TokioIo::new(upgraded);
    let ws_config = ws_config(shared.config.max_frame_bytes);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let outbox = Arc::new(Outbox::new(shared.config.queue_capacity));
    let control = Arc::new(Control::new(shared.hub.now_ms()));
    let peer = Peer {
        outbox: outbox.clone(),
        format: hs.format,
        control: control.clone(),
    };
    let request = JoinRequest {
        room: &hs.room,
        nick: hs.nick.as_deref(),
        since: hs.since,
    };
    let room = shared.hub.join(conn, peer, request).await;
    tracing::debug!(?conn, room = %hs.room, format = ?hs.format, joined = room.is_some(), "connected");
    // The room keeps its own copy of the name; free ours for the connection's lifetime.
    drop(hs);

    let mut unsent = Unsent::default();
    if let Some(room) = &room {
        if let Err(err) = serve(&mut ws, &shared, room, conn, &outbox, &control, &mut unsent).await
        {
            tracing::debug!(?conn, %err, "connection failed");
        }
        shared.hub.leave(room, conn).await;
    }
    outbox.close();
    // Boxed: the closing steps run once, so they should not widen every connection's future.
    Box::pin(async {
        // A frame cut off mid-write must be completed, or the close frame would land
        // inside it and the client would see garbage instead of the close code.
        if unsent.partial {
            if let Some(rest) = unsent.frames.front() {
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.get_mut().write_all(rest)).await;
            }
        }
        let peer_closed = unsent.peer_closed;
        drop(unsent);
        close(&mut ws, &control, peer_closed).await;
        linger(ws.get_mut()).await;
    })
    .await;
    tracing::debug!(?conn, "disconnected");
}

/// The connection's life as a member: returns when it should close (the reason, if the
/// server chose it, is in `control`).
async fn serve(
    ws: &mut Ws,
    shared: &Shared,
    room: &RoomCell,
    conn: ConnId,
    outbox: &Outbox,
    control: &Arc<Control>,
    unsent: &mut Unsent,
) -> Result<(), WsError> {
    loop {
        tokio::select! {
            biased;
            () = control.closing() => return Ok(()),
            n = outbox.take_all(&mut unsent.frames) => {
                if n == 0 {
                    return Ok(());
                }
                tokio::select! {
                    biased;
                    () = control.closing() => return Ok(()),
                    written = write_frames(ws, unsent) => written?,
                }
                // Free the batch's buffer: an idle connection should hold none.
                unsent.frames = VecDeque::new();
            }
            next = ws.next() => {
                control.last_seen_ms.store(shared.hub.now_ms(), Ordering::Relaxed);
                match next {
                    Some(Ok(Message::Text(text))) => {
                        shared.metrics.messages_in.inc();
                        shared.hub.message(room, conn, text.as_str(), control).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        control.close(CloseCode::Unsupported, "binary frames are not supported");
                        return Ok(());
                    }
                    // The client closes: tungstenite has queued the reply, which must be
                    // the last frame we send, so stop here and let `close` flush it.
                    Some(Ok(Message::Close(_))) => {
                        unsent.peer_closed = true;
                        return Ok(());
                    }
                    // Pings are answered by tungstenite; pongs count as activity.
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        if let Some((code, reason)) = close_code_for(&err) {
                            control.close(code, reason);
                            return Ok(());
                        }
                        return Err(err);
                    }
                    None => return Ok(()),
                }
            }
        }
    }
}

/// What the connection still owes the client when it stops: frames taken from the outbox
/// and not yet fully written, and whether the client already closed.
#[derive(Default)]
struct Unsent {
    frames: VecDeque<Bytes>,
    /// The first frame is partly written (its written bytes already removed).
    partial: bool,
    /// The client sent a close frame; only the reply may follow.
    peer_closed: bool,
}

/// Writes ready-made frames straight to the socket, as many per `writev` as fit.
///
/// tungstenite's own buffer is flushed first, so its control frames (pongs) and ours never
/// interleave mid-frame; nothing else writes to the socket meanwhile. `unsent` is accurate
/// at every await, so a write abandoned for a close can finish its cut-off frame.
async fn write_frames(ws: &mut Ws, unsent: &mut Unsent) -> Result<(), WsError> {
    ws.flush().await?;
    let io = ws.get_mut();
    let frames = &mut unsent.frames;
    while !frames.is_empty() {
        let written = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); WRITEV_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
                *slot = IoSlice::new(frame);
                count += 1;
            }
            Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
        })
        .await?;
        if written == 0 {
            return Err(WsError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        let mut left = written;
        while left > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                frames.pop_front();
                unsent.partial = false;
            } else {
                front.advance(left);
                unsent.partial = true;
                left = 0;
            }
        }
    }
    Ok(())
}

/// Ends the WebSocket, bounded by [`CLOSE_WAIT`]: if the client closed, sends tungstenite's
/// queued reply (and nothing after it); otherwise sends our close frame (the reason in
/// `control`, or 1001 at shutdown) and waits for the client's reply.
async fn close(ws: &mut Ws, control: &Control, peer_closed: bool) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if peer_closed {
            let _ = ws.flush().await;
        } else if ws.send(Message::Close(Some(control.frame()))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Ends the TCP connection politely: send FIN, then read and discard until the client closes
/// too (bounded). Dropping a socket with unread input makes the kernel send a reset, and the
/// client would lose the close frame (e.g. 1009 while an oversized frame is still arriving).
async fn linger(io: &mut TokioIo<Upgraded>) {
    let drain = async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 1024];
        while let Ok(1..) = io.read(&mut buf).await {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
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
