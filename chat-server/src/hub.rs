//! The rooms of this process and the fan-out of their outputs to connections.
//!
//! Each room is a `chat_core::Room` plus the outbound queues of its members, behind one lock.
//! An input is handled and its outputs are pushed into the members' bounded queues under that
//! lock, so every member sees one order. Nothing here awaits: queues are filled with
//! `try_send`, and a member whose queue is full is disconnected (1008) and leaves the room,
//! rather than being buffered without bound or silently skipped.
//!
//! With `--redis` (see [`crate::cluster`]) rooms are replicated: local inputs are appended to
//! the room's log in Redis instead of being handled here, and the log, read back in order by
//! [`read_logs`], drives every node's copy of the room. Delivery is the same in both modes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::{Audience, ConnId, Error, Input, Room, RoomConfig};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Cluster, EntryId, LogEntry, LogInput, Snapshot, Unavailable};
use crate::connection::Control;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, PushError};
use crate::wire::{self, Encoded, Format};

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
    rooms: Arc<Mutex<HashMap<Arc<str>, Arc<RoomCell>>>>,
    config: RoomConfig,
    max_rooms: usize,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Set at shutdown: every member is being closed, and late joiners are closed at once.
    closing: AtomicBool,
    /// Set with `--redis`: rooms are replicated through Redis.
    cluster: Option<Arc<Cluster>>,
}

/// One room and its members' queues.
pub struct RoomCell {
    name: Arc<str>,
    state: Mutex<RoomState>,
    /// Replicated rooms: held while the room is loaded from Redis.
    boot: tokio::sync::Mutex<()>,
}

struct RoomState {
    room: Room,
    peers: FxHashMap<ConnId, Peer>,
    /// Set when the room was dropped from the hub; a joiner that raced with it retries.
    closed: bool,
    /// Replicated rooms: local connections whose join is in the log but not yet applied.
    joining: FxHashMap<ConnId, Peer>,
    /// Replicated rooms: how far this copy has applied the log; `None` until loaded.
    log: Option<LogPosition>,
}

impl RoomCell {
    /// The cell with the last log entry it applied, if it is loaded.
    fn position(self: Arc<Self>) -> Option<(Arc<RoomCell>, EntryId)> {
        let last = self.state.lock().log.map(|p| p.last)?;
        Some((self, last))
    }

    /// Gives up this copy of the room (it is no longer in the hub): closes its clients and
    /// joiners with 1012 and `reason`, so they reconnect to a fresh copy.
    fn abandon(&self, reason: &'static str) {
        let mut state = self.state.lock();
        state.closed = true;
        let state = &mut *state;
        for (_, peer) in state.peers.drain().chain(state.joining.drain()) {
            peer.control.close(CloseCode::Restart, reason);
        }
    }
}

/// The last log entry applied to a room copy, and how many have been.
#[derive(Clone, Copy)]
struct LogPosition {
    last: EntryId,
    applied: u64,
}

/// Log entries were missed: a room copy is out of step with the log.
struct Missed;

/// Some members of one room.
type RoomMembers = (Arc<str>, Vec<ConnId>);

/// Most messages of one connection on their way to Redis at once (see
/// [`Control::start_append`]).
const MAX_APPENDING: u32 = 64;

/// The close reason for a connection refused because Redis cannot be reached.
const UNAVAILABLE: &str = "temporarily unavailable";

impl Hub {
    /// An empty hub whose rooms use `config`.
    pub fn new(
        config: RoomConfig,
        max_rooms: usize,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> Hub {
        Hub {
            rooms: Arc::new(Mutex::new(HashMap::new())),
            config,
            max_rooms,
            metrics,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            cluster,
        }
    }

    /// The Redis side, when rooms are replicated.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The core's clock: milliseconds since the hub started (monotonic).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds `conn` to a room (created on first use) and delivers the join's outputs.
    /// On refusal (room full, too many rooms, Redis unavailable) the connection has been
    /// closed with a reason.
    pub async fn join(
        &self,
        conn: ConnId,
        peer: Peer,
        req: JoinRequest<'_>,
    ) -> Option<Arc<RoomCell>> {
        match &self.cluster {
            None => self.join_local(conn, peer, req),
            // Boxed: only replicated joins need the Redis round trips' state.
            Some(cluster) => Box::pin(self.join_replicated(cluster, conn, peer, req)).await,
        }
    }

    /// The room cell for `name`, created (empty, not loaded) on first use; `None` when that
    /// would exceed `--max-rooms`.
    fn cell(&self, name: &str) -> Option<Arc<RoomCell>> {
        let mut rooms = self.rooms.lock();
        if let Some(cell) = rooms.get(name) {
            return Some(cell.clone());
        }
        if rooms.len() >= self.max_rooms {
            drop(rooms);
            self.metrics.reject("max_rooms");
            return None;
        }
        let name: Arc<str> = name.into();
        let cell = Arc::new(RoomCell {
            name: name.clone(),
            state: Mutex::new(RoomState {
                room: Room::new(self.config.clone(), rand::random()),
                peers: FxHashMap::default(),
                closed: false,
                joining: FxHashMap::default(),
                log: None,
            }),
            boot: tokio::sync::Mutex::new(()),
        });
        rooms.insert(name, cell.clone());
        self.metrics.rooms.set(rooms.len() as i64);
        Some(cell)
    }

    fn join_local(&self, conn: ConnId, peer: Peer, req: JoinRequest<'_>) -> Option<Arc<RoomCell>> {
        let mut peer = Some(peer);
        loop {
            let Some(cell) = self.cell(req.room) else {
                if let Some(peer) = peer.take() {
                    peer.control.close(CloseCode::Again, "too many rooms");
                }
                return None;
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

    /// Joins through the room's log: load the room if this node does not follow it yet,
    /// then append the join. The connection is welcomed when the reader applies it.
    async fn join_replicated(
        &self,
        cluster: &Arc<Cluster>,
        conn: ConnId,
        peer: Peer,
        req: JoinRequest<'_>,
    ) -> Option<Arc<RoomCell>> {
        let control = peer.control.clone();
        let mut peer = Some(peer);
        let cell = loop {
            let Some(cell) = self.cell(req.room) else {
                control.close(CloseCode::Again, "too many rooms");
                return None;
            };
            let mut state = cell.state.lock();
            if state.closed {
                continue;
            }
            state.joining.insert(conn, peer.take()?);
            drop(state);
            break cell;
        };
        let loaded = async {
            self.load(cluster, &cell).await?;
            // Members of nodes that died while nobody followed the room leave before this
            // join, so the joiner is not welcomed by ghosts (nor refused their nicknames).
            if cluster.may_judge() {
                self.reap(cluster, std::slice::from_ref(&cell)).await?;
            }
            Ok::<(), Unavailable>(())
        };
        let joined = match loaded.await {
            Ok(()) => {
                let input = LogInput::Join {
                    conn: conn.0,
                    nick: req.nick.map(str::to_owned),
                    since: req.since,
                };
                // Only a failed append may still have reached Redis (its answer was late).
                cluster
                    .append_own(&cell.name, conn, input)
                    .await
                    .inspect_err(|_| cluster.defer_leave(&cell.name, conn))
            }
            Err(err) => Err(err),
        };
        if let Err(err) = joined {
            self.metrics.log_append_failures.inc();
            tracing::debug!(?conn, room = %cell.name, %err, "join failed");
            {
                let mut state = cell.state.lock();
                state.joining.remove(&conn);
                state.peers.remove(&conn);
            }
            control.close(CloseCode::Again, UNAVAILABLE);
            self.drop_if_empty(&cell);
            return None;
        }
        self.metrics.log_appends.inc();
        if self.closing.load(Ordering::SeqCst) {
            control.close(CloseCode::Away, "server shutting down");
        }
        Some(cell)
    }

    /// Makes `cell` follow its room's log: restore the latest snapshot, apply the log after
    /// it, and tell the reader. Joiners of the same room wait for the first to finish.
    async fn load(&self, cluster: &Arc<Cluster>, cell: &RoomCell) -> Result<(), Unavailable> {
        let _boot = cell.boot.lock().await;
        {
            let state = cell.state.lock();
            if state.closed {
                return Err(Unavailable("room closed while loading".into()));
            }
            if state.log.is_some() {
                return Ok(());
            }
        }
        let config = self.config.clone();
        let fresh = move || Room::new(config.clone(), rand::random()).snapshot();
        let (snapshot, entries) = cluster.load(&cell.name, fresh).await?;
        let last = snapshot.last();
        let room = Room::restore(snapshot.room)
            .map_err(|e| Unavailable(format!("room {}: bad snapshot: {e}", cell.name)))?;
        {
            let mut state = cell.state.lock();
            if state.closed {
                return Err(Unavailable("room closed while loading".into()));
            }
            state.room = room;
            state.log = Some(LogPosition {
                last,
                applied: snapshot.applied,
            });
            for entry in entries {
                if self.apply(cluster, &cell.name, &mut state, entry).is_err() {
                    // Not loaded: the next joiner tries again.
                    state.log = None;
                    return Err(Unavailable("room log has a gap".into()));
                }
            }
        }
        cluster.wake_reader(&cell.name).await;
        Ok(())
    }

    /// Applies one log entry to this node's copy of the room and delivers its outputs to the
    /// local members. Entries at or before the copy's position are skipped, so a read that
    /// raced with loading cannot apply anything twice. `Err(Missed)` when entries before this
    /// one are gone: this copy can no longer be right and must be reloaded.
    fn apply(
        &self,
        cluster: &Arc<Cluster>,
        room_name: &Arc<str>,
        state: &mut RoomState,
        entry: LogEntry,
    ) -> Result<(), Missed> {
        let Some(pos) = state.log.as_mut() else {
            return Ok(());
        };
        if entry.id <= pos.last {
            return Ok(());
        }
        if entry.n != pos.applied.saturating_add(1) {
            tracing::warn!(
                room = %room_name,
                expected = pos.applied.saturating_add(1),
                got = entry.n,
                "room log entries missed (trimmed while this node lagged, or lost by Redis)"
            );
            return Err(Missed);
        }
        pos.last = entry.id;
        pos.applied += 1;
        self.metrics.log_entries_applied.inc();
        let applied = pos.applied;
        let now = entry.id.ms;
        match &entry.input {
            Some(LogInput::Join { conn, nick, since }) => {
                let conn = ConnId(*conn);
                if let Some(peer) = state.joining.remove(&conn) {
                    state.peers.insert(conn, peer);
                }
                let input = Input::Join {
                    conn,
                    nick: nick.as_deref(),
                    resume_after: *since,
                };
                let result = state.room.handle(now, input);
                self.deliver_replicated(room_name, state);
                if let Err(err) = result {
                    if let Some(peer) = state.peers.remove(&conn) {
                        let reason = match err {
                            Error::RoomFull => "room is full",
                            _ => "join refused",
                        };
                        peer.control.close(CloseCode::Again, reason);
                    }
                }
            }
            Some(LogInput::Message { conn, text }) => {
                let input = Input::Message {
                    conn: ConnId(*conn),
                    text,
                };
                let _ = state.room.handle(now, input);
                self.deliver_replicated(room_name, state);
            }
            Some(LogInput::Leave { conn }) => {
                let conn = ConnId(*conn);
                // Still connected here: another node judged this one dead and announced it.
                if let Some(peer) = state.peers.remove(&conn) {
                    peer.control
                        .close(CloseCode::Again, "lost contact with the cluster; reconnect");
                }
                let _ = state.room.handle(now, Input::Leave { conn });
                self.deliver_replicated(room_name, state);
            }
            // Unreadable: every node skips it alike.
            None => {}
        }
        if applied % cluster::SNAPSHOT_EVERY == 0 && entry.by == cluster.node() {
            let snapshot = Snapshot {
                id: entry.id.to_string(),
                applied,
                room: state.room.snapshot(),
            };
            let cluster = cluster.clone();
            let name = room_name.clone();
            tokio::spawn(async move {
                if let Err(err) = cluster.save(&name, &snapshot).await {
                    tracing::warn!(room = %name, %err, "could not save a snapshot");
                }
            });
        }
        Ok(())
    }

    /// A room copy that missed log entries: its clients are closed with 1012 (they reconnect
    /// and resume with `?since=`, history filling the gap) and the copy is dropped, so the
    /// next join loads the room afresh.
    fn resync(&self, cell: &RoomCell) {
        {
            let mut rooms = self.rooms.lock();
            if rooms
                .get(&cell.name)
                .is_some_and(|c| std::ptr::eq(&**c, cell))
            {
                rooms.remove(&cell.name);
                self.metrics.rooms.set(rooms.len() as i64);
                self.unfollow(&cell.name);
            }
        }
        cell.abandon("room resynchronizing; reconnect");
    }

    /// A member's text frame.
    pub async fn message(&self, cell: &RoomCell, conn: ConnId, text: &str, control: &Arc<Control>) {
        let Some(cluster) = &self.cluster else {
            let mut state = cell.state.lock();
            // Refusals were answered with an error line; nothing else to do here.
            let _ = state
                .room
                .handle(self.now_ms(), Input::Message { conn, text });
            self.deliver(&cell.name, &mut state);
            return;
        };
        // Boxed: the wait for a slot should not widen every connection's future.
        Box::pin(self.message_replicated(cluster, cell, conn, text, control)).await;
    }

    async fn message_replicated(
        &self,
        cluster: &Cluster,
        cell: &RoomCell,
        conn: ConnId,
        text: &str,
        control: &Arc<Control>,
    ) {
        if !control.start_append(MAX_APPENDING).await {
            return;
        }
        let input = LogInput::Message {
            conn: conn.0,
            text: text.to_owned(),
        };
        if cluster
            .submit(cell.name.clone(), conn, input, Some(control.clone()))
            .is_err()
        {
            control.end_append();
            self.not_sent(cell, conn);
        }
    }

    /// A message could not be appended, so nobody gets it; the sender is told.
    fn not_sent(&self, cell: &RoomCell, conn: ConnId) {
        self.metrics.log_append_failures.inc();
        let state = cell.state.lock();
        if let Some(peer) = state.peers.get(&conn).or_else(|| state.joining.get(&conn)) {
            let frame = wire::error_frame(
                peer.format,
                "temporarily unavailable (message not sent)",
                wire::unix_ms(),
            );
            if peer.outbox.push(frame) == Err(PushError::Full) {
                self.metrics.slow_consumer_disconnects.inc();
                peer.control.close(CloseCode::Policy, "too slow");
            }
        }
    }

    /// The room this node follows under `name`, if any.
    fn followed_cell(&self, name: &str) -> Option<Arc<RoomCell>> {
        self.rooms.lock().get(name).cloned()
    }

    /// A member's connection ended. Idempotent.
    pub async fn leave(&self, cell: &RoomCell, conn: ConnId) {
        let Some(cluster) = &self.cluster else {
            let mut state = cell.state.lock();
            if state.peers.remove(&conn).is_some() {
                let _ = state.room.handle(self.now_ms(), Input::Leave { conn });
                self.deliver(&cell.name, &mut state);
            }
            drop(state);
            self.drop_if_empty(cell);
            return;
        };
        {
            let mut state = cell.state.lock();
            state.peers.remove(&conn);
            state.joining.remove(&conn);
        }
        // Through the appender, behind this connection's last messages.
        let input = LogInput::Leave { conn: conn.0 };
        if cluster
            .submit(cell.name.clone(), conn, input, None)
            .is_err()
        {
            cluster.defer_leave(&cell.name, conn);
        }
        self.drop_if_empty(cell);
    }

    /// Stops Redis poking this node about a room it dropped (in the background; a join that
    /// follows it again meanwhile is repaired by [`look_after`]'s refollow).
    fn unfollow(&self, room: &Arc<str>) {
        if let Some(cluster) = &self.cluster {
            let (cluster, room, rooms) = (cluster.clone(), room.clone(), self.rooms.clone());
            tokio::spawn(async move {
                cluster.unfollow(&room).await;
                // Followed again meanwhile (a join right after the drop): undo the removal.
                if rooms.lock().contains_key(&room) {
                    let _ = cluster.refollow(std::slice::from_ref(&room)).await;
                }
            });
        }
    }

    /// Every room this node follows, with its log key and position.
    fn followed(&self) -> Vec<(Arc<RoomCell>, EntryId)> {
        let cells: Vec<Arc<RoomCell>> = self.rooms.lock().values().cloned().collect();
        cells.into_iter().filter_map(RoomCell::position).collect()
    }

    /// Redis lost its data: every room starts afresh, and every client is told to reconnect.
    fn reset(&self) {
        let cells: Vec<Arc<RoomCell>> = {
            let mut rooms = self.rooms.lock();
            let cells = rooms.drain().map(|(_, c)| c).collect();
            self.metrics.rooms.set(0);
            cells
        };
        for cell in cells {
            cell.abandon("service restart");
        }
    }

    /// Announces that members of dead nodes left, in `cells` (rooms this node follows).
    async fn reap(&self, cluster: &Cluster, cells: &[Arc<RoomCell>]) -> Result<(), Unavailable> {
        let me = cluster.node();
        let mut by_node: HashMap<u64, Vec<RoomMembers>> = HashMap::new();
        for cell in cells {
            let state = cell.state.lock();
            let mut here: HashMap<u64, Vec<ConnId>> = HashMap::new();
            for (conn, _) in state.room.members() {
                let node = cluster::node_of(conn);
                if node != me {
                    here.entry(node).or_default().push(conn);
                }
            }
            for (node, conns) in here {
                by_node
                    .entry(node)
                    .or_default()
                    .push((cell.name.clone(), conns));
            }
        }
        let nodes: Vec<u64> = by_node.keys().copied().collect();
        for node in cluster.dead_nodes(&nodes).await? {
            for (room, conns) in by_node.remove(&node).unwrap_or_default() {
                if !cluster.claim_reap(node, &room).await? {
                    continue;
                }
                tracing::info!(node, %room, members = conns.len(), "node is gone; its members leave");
                let leaves: Vec<LogInput> = conns
                    .iter()
                    .map(|conn| LogInput::Leave { conn: conn.0 })
                    .collect();
                for chunk in leaves.chunks(cluster::BATCH_MAX) {
                    cluster.append(&room, chunk).await?;
                    self.metrics.dead_node_leaves.inc_by(chunk.len() as u64);
                }
                cluster.drop_follower(&room, node).await?;
            }
        }
        Ok(())
    }

    /// Shutdown: closes every member's connection with 1001, and any that joins later.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let cells: Vec<Arc<RoomCell>> = self.rooms.lock().values().cloned().collect();
        for cell in cells {
            let state = cell.state.lock();
            for peer in state.peers.values().chain(state.joining.values()) {
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
        if state.peers.is_empty() && state.joining.is_empty() && !state.closed {
            state.closed = true;
            rooms.remove(&cell.name);
            self.metrics.rooms.set(rooms.len() as i64);
            self.unfollow(&cell.name);
        }
    }

    /// Drains the room's outputs into its members' queues, disconnecting (and removing from
    /// the room) every member whose queue is full, until nothing is left to deliver.
    fn deliver(&self, room_name: &str, state: &mut RoomState) {
        self.fan_out(room_name, state, false);
    }

    /// [`deliver`](Self::deliver) for a replicated room: a member too slow for its queue is
    /// disconnected here, and leaves through the log when its connection ends.
    fn deliver_replicated(&self, room_name: &str, state: &mut RoomState) {
        self.fan_out(room_name, state, true);
    }

    fn fan_out(&self, room_name: &str, state: &mut RoomState, replicated: bool) {
        let time_ms = wire::unix_ms();
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
                    if !replicated {
                        let _ = state.room.handle(self.now_ms(), Input::Leave { conn });
                    }
                }
            }
        }
        self.metrics.messages_out.inc_by(delivered);
    }
}

/// How often the reader reads every followed room, poked or not: a safety net for pokes
/// lost to the wake stream's length cap.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Rooms that had news lately, read in the same blocking call as the wake stream so that a
/// busy room's entries arrive in one round trip.
const HOT_ROOMS: usize = 16;

/// The reader of a replicated node, until shutdown.
///
/// Every append to a room this node follows leaves the room's log key on the node's wake
/// stream. The reader blocks on that stream plus the few rooms that had news lately (their
/// entries come back in the same call), then reads the other poked rooms without blocking,
/// and applies new entries in order. Redis's work per read is thus proportional to the rooms
/// with news, not to every room the node follows; once a second every room is read anyway.
pub async fn read_logs(hub: &Hub, cluster: &Arc<Cluster>, shutdown: &CancellationToken) {
    let mut conn = loop {
        match cluster.reader_connection().await {
            Ok(conn) => break conn,
            Err(err) => {
                tracing::warn!(%err, "log reader cannot connect to Redis; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    // From the start of the wake stream: a few stale pokes cost a read, a missed one a wait.
    let mut wake = (cluster.wake_key(), "0-0".to_owned());
    // Log keys to read without waiting: poked, or cut off at READ_COUNT last time.
    let mut dirty: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut hot: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut last_sweep = Instant::now();
    loop {
        if wake.0 != cluster.wake_key() {
            wake = (cluster.wake_key(), "0-0".to_owned());
            dirty.clear();
            hot.clear();
        }
        let since_sweep = last_sweep.elapsed();
        let sweep = since_sweep >= SWEEP_EVERY;
        if sweep {
            last_sweep = Instant::now();
        }
        // This round reads: everything on a sweep; else what is dirty (without waiting) or
        // the hot rooms (waiting for news on them or a poke, at most until the next sweep).
        let until_sweep = SWEEP_EVERY.saturating_sub(since_sweep).as_millis().max(1);
        let block = (!sweep && dirty.is_empty()).then(|| {
            cluster::READ_BLOCK_MS.min(usize::try_from(until_sweep).unwrap_or(usize::MAX))
        });
        // Only a sweep walks every followed room; other rounds look up just their keys.
        let wanted = if sweep {
            hub.followed()
        } else {
            let keys: Vec<&String> = if block.is_some() {
                hot.iter().collect()
            } else {
                dirty.iter().collect()
            };
            keys.into_iter()
                .filter_map(|key| hub.followed_cell(cluster::room_of_key(key)?)?.position())
                .collect()
        };
        let mut logs = Vec::with_capacity(wanted.len());
        let mut cells = HashMap::with_capacity(wanted.len());
        for (cell, last) in wanted {
            let key = cluster::log_key(&cell.name);
            logs.push((key.clone(), last.to_string()));
            cells.insert(key, cell);
        }
        dirty.clear();
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            read = cluster.read(&mut conn, (&wake.0, &wake.1), &logs, block) => read,
        };
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(%err, "log read failed; retrying");
                // Read them again next time.
                dirty.extend(logs.into_iter().map(|(key, _)| key));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        if let Some(last) = read.wake_last {
            wake.1 = last;
        }
        // A poke for a log read in the same call is covered by what that call returned.
        dirty.extend(
            read.poked
                .into_iter()
                .filter(|key| !cells.contains_key(key)),
        );
        for (key, entries) in read.logs {
            let Some(cell) = cells.get(&key) else {
                continue;
            };
            if entries.len() >= cluster::READ_COUNT {
                dirty.insert(key.clone());
            }
            if !entries.is_empty() {
                hot.retain(|k| k != &key);
                hot.push_front(key.clone());
                hot.truncate(HOT_ROOMS);
            }
            let mut state = cell.state.lock();
            if state.closed {
                continue;
            }
            let mut missed = false;
            for entry in entries {
                if hub.apply(cluster, &cell.name, &mut state, entry).is_err() {
                    missed = true;
                    break;
                }
            }
            drop(state);
            if missed {
                hub.resync(cell);
            }
        }
    }
}

/// A replicated node's heartbeat, every quarter of `--node-timeout`, on a task of its own so
/// that nothing slow delays it (a late heartbeat gets a live node declared dead). Starts
/// afresh if Redis lost its data. Runs until `stop`: at shutdown, until the last client
/// inputs are appended.
pub async fn keep_alive(hub: &Hub, cluster: &Arc<Cluster>, stop: &CancellationToken) {
    let mut ticks = tokio::time::interval(cluster.heartbeat_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let beat = cluster.heartbeat_once().await;
        hub.metrics.redis_up.set(i64::from(beat.is_ok()));
        match beat {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("Redis lost its data: closing every client (1012), starting afresh");
                // A new number first, so clients reconnecting after the 1012 get ids of the
                // new incarnation.
                if let Err(err) = cluster.reregister().await {
                    tracing::warn!(%err, "could not register again");
                }
                hub.reset();
            }
            Err(err) => tracing::debug!(%err, "heartbeat failed"),
        }
    }
}

/// Every how many upkeep ticks the node re-marks itself as following its rooms.
const REFOLLOW_TICKS: u64 = 8;

/// A replicated node's upkeep, as often as its heartbeat: appends the leaves kept during an
/// outage and announces that members of dead nodes left.
pub async fn look_after(hub: &Hub, cluster: &Arc<Cluster>, shutdown: &CancellationToken) {
    let mut ticks = tokio::time::interval(cluster.heartbeat_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u64.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !cluster.is_healthy() {
            continue;
        }
        cluster.flush_pending_leaves().await;
        let cells: Vec<Arc<RoomCell>> = hub.followed().into_iter().map(|(c, _)| c).collect();
        // Rarely needed (a drop and a new follow that raced), so not every tick.
        if tick % REFOLLOW_TICKS == 0 {
            let names: Vec<Arc<str>> = cells.iter().map(|c| c.name.clone()).collect();
            if let Err(err) = cluster.refollow(&names).await {
                tracing::debug!(%err, "refreshing followed rooms failed");
            }
            // Dropped while that was on its way: do not stay listed.
            for name in names {
                if !hub.rooms.lock().contains_key(&name) {
                    cluster.unfollow(&name).await;
                }
            }
        }
        if cluster.may_judge() {
            if let Err(err) = hub.reap(cluster, &cells).await {
                tracing::debug!(%err, "checking for dead nodes failed");
            }
        }
    }
}

/// The appender of a replicated node: sends queued client inputs (messages, leaves) to Redis
/// in pipelines, so a busy connection's messages cost one round trip per batch rather than
/// one each, in the order they arrived. A batch Redis refuses is answered like a failed
/// append: senders get the error line, leaves are kept for later. Runs until `drained`
/// (every connection has finished), then appends what is left and returns.
pub async fn append_logs(hub: &Hub, cluster: &Arc<Cluster>, drained: &CancellationToken) {
    let Some(mut queue) = cluster.take_queue() else {
        return;
    };
    let mut batch = Vec::with_capacity(cluster::BATCH_MAX);
    loop {
        let done = tokio::select! {
            biased;
            n = queue.recv_many(&mut batch, cluster::BATCH_MAX) => n == 0,
            () = drained.cancelled() => {
                while batch.len() < cluster::BATCH_MAX {
                    match queue.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                batch.is_empty()
            }
        };
        if done {
            return;
        }
        match cluster.append_batch(&batch).await {
            Ok(()) => {
                hub.metrics.log_appends.inc_by(batch.len() as u64);
            }
            Err(err) => {
                tracing::debug!(%err, inputs = batch.len(), "append failed");
                for item in &batch {
                    match item.input {
                        LogInput::Leave { .. } => cluster.defer_leave(&item.room, item.conn),
                        _ => match hub.followed_cell(&item.room) {
                            Some(cell) => hub.not_sent(&cell, item.conn),
                            None => {
                                hub.metrics.log_append_failures.inc();
                            }
                        },
                    }
                }
            }
        }
        for item in &batch {
            if let Some(control) = &item.control {
                control.end_append();
            }
        }
        batch.clear();
    }
}
