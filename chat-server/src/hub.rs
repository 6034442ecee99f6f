//! The rooms of this process and the fan-out of their outputs to connections.
//!
//! Each room is a `chat_core::Room` plus the outbound queues of its members, behind one lock.
//! An input is handled and its outputs are pushed into the members' bounded queues under that
//! lock, so every member sees one order. Nothing here awaits: queues are filled with
//! `try_send`, and a member whose queue is full is disconnected (1008) and leaves the room,
//! rather than being buffered without bound or silently skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_core::{Audience, ConnId, Error, Input, Room, RoomConfig};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::connection::Control;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, PushError};
use crate::wire::{Encoded, Format};

/// The sending half of a connection, as the room sees it.
pub struct Peer {
    /// Bounded outbound queue drained by the connection's writer.
    pub outbox: Arc<Outbox>,
    /// The connection's wire format.
    pub format: Format,
    /// Closes the connection with a code and reason.
    pub control: Arc<Control>,
}

/// What a join asks for.
pub struct JoinRequest<'a> {
    /// Room name (already validated).
    pub room: &'a str,
    /// Requested nickname (`?nick=`).
    pub nick: Option<&'a str>,
    /// Resume point (`?since=`).
    pub since: Option<u64>,
}

/// A ping frame with no payload (FIN, opcode 0x9, length 0).
const PING_FRAME: &[u8] = &[0x89, 0x00];

/// All rooms of this process.
pub struct Hub {
    rooms: Mutex<HashMap<Arc<str>, Arc<RoomCell>>>,
    config: RoomConfig,
    max_rooms: usize,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Set at shutdown: every member is being closed, and late joiners are closed at once.
    closing: AtomicBool,
}

/// One room and its members' queues.
pub struct RoomCell {
    name: Arc<str>,
    state: Mutex<RoomState>,
}

struct RoomState {
    room: Room,
    peers: FxHashMap<ConnId, Peer>,
    /// Set when the room was dropped from the hub; a joiner that raced with it retries.
    closed: bool,
}

impl Hub {
    /// An empty hub whose rooms use `config`.
    pub fn new(config: RoomConfig, max_rooms: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            rooms: Mutex::new(HashMap::new()),
            config,
            max_rooms,
            metrics,
            started: Instant::now(),
            closing: AtomicBool::new(false),
        }
    }

    /// The core's clock: milliseconds since the hub started (monotonic).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds `conn` to a room (created on first use) and delivers the join's outputs.
    /// On refusal (room full) the connection has been sent the error line and closed.
    pub fn join(&self, conn: ConnId, peer: Peer, req: JoinRequest<'_>) -> Option<Arc<RoomCell>> {
        let mut peer = Some(peer);
        loop {
            let cell = {
                let mut rooms = self.rooms.lock();
                match rooms.get(req.room) {
                    Some(cell) => cell.clone(),
                    None if rooms.len() >= self.max_rooms => {
                        drop(rooms);
                        self.metrics.reject("max_rooms");
                        if let Some(peer) = peer.take() {
                            peer.control.close(CloseCode::Again, "too many rooms");
                        }
                        return None;
                    }
                    None => {
                        let name: Arc<str> = req.room.into();
                        let cell = Arc::new(RoomCell {
                            name: name.clone(),
                            state: Mutex::new(RoomState {
                                room: Room::new(self.config.clone(), rand::random()),
                                peers: FxHashMap::default(),
                                closed: false,
                            }),
                        });
                        rooms.insert(name, cell.clone());
                        self.metrics.rooms.set(rooms.len() as i64);
                        cell
                    }
                }
            };
            let mut state = cell.state.lock();
            if state.closed {
                continue;
            }
            let peer = peer.take()?;
            let control = peer.control.clone();
            state.peers.insert(conn, peer);
            let input = Input::Join {
                conn,
                nick: req.nick,
                resume_after: req.since,
            };
            let result = state.room.handle(self.now_ms(), input);
            self.deliver(&cell.name, &mut state);
            if result.is_err() {
                state.peers.remove(&conn);
                let reason = match result {
                    Err(Error::RoomFull) => "room is full",
                    _ => "join refused",
                };
                control.close(CloseCode::Again, reason);
                drop(state);
                self.drop_if_empty(&cell);
                return None;
            }
            drop(state);
            // Checked after joining, so either this or `close_all` sees the other.
            if self.closing.load(Ordering::SeqCst) {
                control.close(CloseCode::Away, "server shutting down");
            }
            return Some(cell);
        }
    }

    /// A member's text frame.
    pub fn message(&self, cell: &RoomCell, conn: ConnId, text: &str) {
        let mut state = cell.state.lock();
        // Refusals were answered with an error line; nothing else to do here.
        let _ = state
            .room
            .handle(self.now_ms(), Input::Message { conn, text });
        self.deliver(&cell.name, &mut state);
    }

    /// A member's connection ended. Idempotent.
    pub fn leave(&self, cell: &RoomCell, conn: ConnId) {
        let mut state = cell.state.lock();
        if state.peers.remove(&conn).is_some() {
            let _ = state.room.handle(self.now_ms(), Input::Leave { conn });
            self.deliver(&cell.name, &mut state);
        }
        drop(state);
        self.drop_if_empty(cell);
    }

    /// Shutdown: closes every member's connection with 1001, and any that joins later.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let cells: Vec<Arc<RoomCell>> = self.rooms.lock().values().cloned().collect();
        for cell in cells {
            for peer in cell.state.lock().peers.values() {
                peer.control.close(CloseCode::Away, "server shutting down");
            }
        }
    }

    /// Pings every member and closes those not heard from for more than `idle_ms`.
    ///
    /// One sweep over all rooms replaces a timer per connection (an idle connection then
    /// costs no timer at all); the ping goes through the member's queue like any frame.
    pub fn sweep(&self, idle_ms: u64) {
        let now = self.now_ms();
        let cells: Vec<Arc<RoomCell>> = self.rooms.lock().values().cloned().collect();
        for cell in cells {
            let state = cell.state.lock();
            for peer in state.peers.values() {
                if now.saturating_sub(peer.control.last_seen_ms()) > idle_ms {
                    peer.control.close(CloseCode::Away, "idle timeout");
                } else if peer.outbox.push(Bytes::from_static(PING_FRAME)) == Err(PushError::Full) {
                    self.metrics.slow_consumer_disconnects.inc();
                    peer.control.close(CloseCode::Policy, "too slow");
                }
            }
        }
    }

    /// Forgets a room once its last member is gone, so rooms never outnumber connections.
    fn drop_if_empty(&self, cell: &RoomCell) {
        let mut rooms = self.rooms.lock();
        let mut state = cell.state.lock();
        if state.peers.is_empty() && !state.closed {
            state.closed = true;
            rooms.remove(&cell.name);
            self.metrics.rooms.set(rooms.len() as i64);
        }
    }

    /// Drains the room's outputs into its members' queues, disconnecting (and removing from
    /// the room) every member whose queue is full, until nothing is left to deliver.
    fn deliver(&self, room_name: &str, state: &mut RoomState) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        loop {
            while let Some(out) = state.room.poll_output() {
                let mut frames = Encoded::new(&out, room_name, time_ms);
                let mut send = |conn: ConnId, peer: &Peer| {
                    match peer.outbox.push(frames.frame(peer.format)) {
                        Ok(()) => delivered += 1,
                        Err(PushError::Full) => slow.push(conn),
                        // The connection is already closing; its leave is on the way.
                        Err(PushError::Closed) => {}
                    }
                };
                match out.audience() {
                    Audience::Only(conn) => {
                        if let Some(peer) = state.peers.get(&conn) {
                            send(conn, peer);
                        }
                    }
                    audience => {
                        for (&conn, peer) in &state.peers {
                            if audience.includes(conn) {
                                send(conn, peer);
                            }
                        }
                    }
                }
            }
            if slow.is_empty() {
                break;
            }
            for conn in slow.drain(..) {
                if let Some(peer) = state.peers.remove(&conn) {
                    self.metrics.slow_consumer_disconnects.inc();
                    peer.control.close(CloseCode::Policy, "too slow");
                    let _ = state.room.handle(self.now_ms(), Input::Leave { conn });
                }
            }
        }
        self.metrics.messages_out.inc_by(delivered);
    }
}
