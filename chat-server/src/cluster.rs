//! Scale-out: several server processes share rooms through Redis (`--redis URL`).
//!
//! A room is deterministic, so it is replicated as a log. Every node appends its local inputs
//! (join, message, leave) to the room's Redis Stream and applies the stream, in stream order,
//! to its own copy of the room, delivering outputs only to its own connections. The entry id
//! is the order, and its millisecond part is the room's clock, so every copy sees the same
//! inputs at the same times and produces the same events. Nothing is applied locally before
//! Redis has ordered it.
//!
//! Keys (all under `chat:`):
//! - `chat:room:{ROOM}:log`: the room's stream of inputs, each numbered (`n`) from
//!   `chat:room:{ROOM}:n`, so a node can tell when it missed some and must reload the room;
//! - `chat:room:{ROOM}:snap`: a hash with the latest snapshot (`id`, `body`); a node that
//!   starts following a room restores it and applies the log after it. Each snapshot trims the
//!   log up to the previous one;
//! - `chat:node:{N}`: node N's heartbeat (expires after `--node-timeout`);
//! - `chat:nodes`: counter handing out node numbers (the top bits of connection ids);
//! - `chat:epoch`: a random value set once; if it changes, Redis lost its data;
//! - `chat:reap:{N}:{ROOM}`: claim by the node that announces dead node N's members left;
//! - `chat:wake:{N}`: pokes node N's reader when it starts following a room.
//!
//! Room keys expire after [`ROOM_TTL_MS`] without input. Every write checks `chat:epoch`, so
//! a node that has not yet noticed that Redis lost its data cannot write into the new epoch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{ConnId, RoomSnapshot};

use crate::connection::Control;
use crate::wire::unix_ms;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisResult, Script, Value};
use serde::{Deserialize, Serialize};

/// Connection ids are `node << CONN_BITS | counter`, so they are unique across nodes.
pub const CONN_BITS: u32 = 40;

/// A snapshot is written after every this many log entries (by the node that appended the
/// entry that reached the count).
pub const SNAPSHOT_EVERY: u64 = 1000;

/// Longest time the reader blocks on its wake stream.
pub const READ_BLOCK_MS: usize = 1000;

/// Most entries one XREAD returns per stream.
pub const READ_COUNT: usize = 512;

/// How long a reap claim holds before another node may retry it.
const REAP_CLAIM_MS: u64 = 10_000;

/// Saves a snapshot only if it is newer than the stored one and the epoch is still
/// `ARGV[3]`, then trims the log up to the previous snapshot (entries after it stay, so a
/// joiner racing with the save still finds everything after the snapshot it read).
const SAVE_SNAPSHOT: &str = r"
if redis.call('GET', 'chat:epoch') ~= ARGV[3] then return -1 end
local cur = redis.call('HGET', KEYS[1], 'id')
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local cm, cs = parse(cur)
local nm, ns = parse(ARGV[1])
if not nm then return 0 end
if cm and not (nm > cm or (nm == cm and ns > cs)) then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'body', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if cm and cur ~= '0-0' then redis.call('XTRIM', KEYS[2], 'MINID', cur) end
return 1
";

/// Appends inputs to room logs: `KEYS` are quadruples (log, counter, snapshot, followers)
/// and `ARGV[3..]` one entry body per quadruple. Then pokes every node following each room
/// (`chat:wake:{N}` gets the log's key), so a node's reader blocks on its own wake stream
/// alone, however many rooms it follows. Followers without a heartbeat are dropped from the
/// set instead (a live one re-adds itself). Each entry gets `n`, the room's count of entries so far, so a node can tell
/// that it missed some (trimmed away while it lagged, or lost with Redis's data). Refuses
/// everything (-1) unless the epoch is `ARGV[2]` (a node that has not noticed that Redis lost
/// its data must not write into the new epoch), and (0) if Redis's clock is past `ARGV[1]` ms
/// (0 = no deadline). Every key written lives `ARGV[...]` ms more (the last argument).
const APPEND: &str = r"
if redis.call('GET', 'chat:epoch') ~= ARGV[2] then return -1 end
local deadline = tonumber(ARGV[1])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return 0 end
end
local ttl = ARGV[#ARGV]
local poked = {}
for i = 1, #KEYS, 4 do
  local n = redis.call('INCR', KEYS[i + 1])
  redis.call('XADD', KEYS[i], '*', 'n', n, 'e', ARGV[(i + 3) / 4 + 2])
  for k = i, i + 3 do redis.call('PEXPIRE', KEYS[k], ttl) end
  poked[KEYS[i]] = KEYS[i + 3]
end
for log, followers in pairs(poked) do
  for _, node in ipairs(redis.call('SMEMBERS', followers)) do
    if redis.call('EXISTS', 'chat:node:' .. node) == 1 then
      redis.call('XADD', 'chat:wake:' .. node, 'MAXLEN', '~', 4096, '*', 'k', log)
    else
      redis.call('SREM', followers, node)
    end
  end
end
return 1
";

/// Rooms nobody writes to for this long are forgotten by Redis (their log, counter and
/// snapshot expire), so client-chosen room names cannot fill it up.
pub const ROOM_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// How long after sending a batch Redis may still append it (ms, on its clock); kept well
/// under the 1 s this node waits for an answer, so a late answer means "not appended".
const APPEND_DEADLINE_MS: i64 = 600;

/// The next node number, above `ARGV[1]` (this node's previous number, 0 at start).
const NEXT_NODE: &str = r"
local n = redis.call('INCR', 'chat:nodes')
local floor = tonumber(ARGV[1])
if n <= floor then
  n = floor + 1
  redis.call('SET', 'chat:nodes', n)
end
return n
";

/// A stream entry id, `ms-seq`: the total order of a room's inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    /// Redis's clock when the entry was appended; the room's `now_ms`.
    pub ms: u64,
    /// Tie-breaker within one millisecond.
    pub seq: u64,
}

impl EntryId {
    /// `ms-seq`, or `None` if it is not one.
    pub fn parse(id: &str) -> Option<EntryId> {
        let (ms, seq) = id.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One input in a room's log (JSON in the entry's `e` field).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op")]
pub enum LogInput {
    /// A connection joins.
    #[serde(rename = "join")]
    Join {
        /// Global connection id.
        conn: u64,
        /// `?nick=`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nick: Option<String>,
        /// `?since=`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// A member sends text.
    #[serde(rename = "msg")]
    Message {
        /// Global connection id.
        conn: u64,
        /// The text frame.
        text: String,
    },
    /// A connection leaves.
    #[serde(rename = "leave")]
    Leave {
        /// Global connection id.
        conn: u64,
    },
}

/// A log entry as appended: the input and the node that appended it.
#[derive(Serialize, Deserialize, Debug)]
struct Envelope {
    by: u64,
    #[serde(flatten)]
    input: LogInput,
}

/// An entry read back from a room's log.
#[derive(Debug)]
pub struct LogEntry {
    /// Its position (and time).
    pub id: EntryId,
    /// Its number in the room's log (1, 2, ...; 0 if missing): gaps show entries missed.
    pub n: u64,
    /// The node that appended it.
    pub by: u64,
    /// The input, `None` if the entry could not be read (it is skipped by every node alike).
    pub input: Option<LogInput>,
}

/// The stored snapshot: the room after applying the log up to `id`.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    /// The last entry the snapshot includes (`0-0` for a new room).
    pub id: String,
    /// How many entries have been applied since the room was created.
    pub applied: u64,
    /// The room.
    pub room: RoomSnapshot,
}

/// A heartbeat's answers: SET, the epoch, Redis's TIME, the node counter.
type Heartbeat = (Value, Option<String>, (u64, u64), Option<u64>);

/// What one [`Cluster::read`] found.
#[derive(Default)]
pub struct Read {
    /// The id of the last poke read, if any.
    pub wake_last: Option<String>,
    /// Log keys poked.
    pub poked: Vec<String>,
    /// New entries per log key read.
    pub logs: Vec<(String, Vec<LogEntry>)>,
}

impl Snapshot {
    /// The last entry the snapshot includes (`0-0`, before every entry, if unreadable).
    pub fn last(&self) -> EntryId {
        EntryId::parse(&self.id).unwrap_or_default()
    }
}

/// Why a Redis operation could not be done now.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<redis::RedisError> for Unavailable {
    fn from(err: redis::RedisError) -> Unavailable {
        Unavailable(err.to_string())
    }
}

/// This node's connection to Redis and its standing in the cluster.
pub struct Cluster {
    /// `--node-id`.
    pub name: String,
    timeout: Duration,
    client: redis::Client,
    /// Appends, heartbeats, snapshots (pipelined; never blocks server-side).
    cmd: ConnectionManager,
    /// This incarnation's number: the top bits of its connection ids.
    node: AtomicU64,
    epoch: Mutex<String>,
    healthy: AtomicBool,
    /// Since when Redis has answered every heartbeat.
    healthy_since: Mutex<Option<Instant>>,
    /// Leaves that could not be appended yet (each connection leaves once, so this is
    /// bounded by the connections of the node).
    pending_leaves: Mutex<Vec<(String, u64)>>,
    save_snapshot: Script,
    next_node: Script,
    append_script: Script,
    /// Redis's clock minus this machine's (ms), from the last heartbeat.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Client inputs waiting for the appender, in arrival order (bounded).
    queue: tokio::sync::mpsc::Sender<Submission>,
    /// The appender's end of `queue`, taken once when it starts.
    queued: Mutex<Option<tokio::sync::mpsc::Receiver<Submission>>>,
}

/// A client input waiting to be appended to its room's log.
pub struct Submission {
    /// The room.
    pub room: Arc<str>,
    /// The client's connection.
    pub conn: ConnId,
    /// A message or leave.
    pub input: LogInput,
    /// The sending connection, for a message: its slot is given back once appended.
    pub control: Option<Arc<Control>>,
}

/// Most client inputs queued for the appender; beyond it a message is refused at once with
/// the "temporarily unavailable" error line (Redis is not keeping up).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// Most leaves kept while Redis is unavailable.
const PENDING_LEAVES_MAX: usize = 64 * 1024;

/// Most inputs sent to Redis in one pipeline.
pub const BATCH_MAX: usize = 512;

/// The set of node numbers following a room (poked on every append).
fn followers_key(room: &str) -> String {
    format!("chat:room:{room}:nodes")
}

/// The key counting a room's log entries.
fn count_key(room: &str) -> String {
    format!("chat:room:{room}:n")
}

/// The room whose log `key` is (`None` for any other key).
pub fn room_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("chat:room:")?.strip_suffix(":log")
}

/// The stream key of a room's log.
pub fn log_key(room: &str) -> String {
    format!("chat:room:{room}:log")
}

fn snap_key(room: &str) -> String {
    format!("chat:room:{room}:snap")
}

/// The node whose connection `conn` is.
pub fn node_of(conn: ConnId) -> u64 {
    conn.0 >> CONN_BITS
}

impl Cluster {
    /// Connects to Redis and registers this node; fails if Redis does not answer in time.
    pub async fn connect(
        url: &str,
        name: Option<String>,
        timeout: Duration,
    ) -> Result<Cluster, Unavailable> {
        let client = redis::Client::open(url)
            .map_err(|e| Unavailable(format!("bad --redis URL {url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let cmd = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| Unavailable(format!("no answer from Redis at {url}")))??;
        let name = name.unwrap_or_else(|| format!("node-{:06x}", rand::random::<u32>() >> 8));
        let (queue, queued) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
        let cluster = Cluster {
            name,
            timeout,
            client,
            cmd,
            node: AtomicU64::new(0),
            epoch: Mutex::new(String::new()),
            healthy: AtomicBool::new(false),
            healthy_since: Mutex::new(None),
            pending_leaves: Mutex::new(Vec::new()),
            save_snapshot: Script::new(SAVE_SNAPSHOT),
            next_node: Script::new(NEXT_NODE),
            append_script: Script::new(APPEND),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
            queue,
            queued: Mutex::new(Some(queued)),
        };
        cluster.register().await?;
        cluster.check_eviction().await;
        Ok(cluster)
    }

    /// Warns when Redis may evict keys: an evicted log or snapshot restarts its room.
    async fn check_eviction(&self) {
        let mut cmd = self.cmd.clone();
        let policy: Result<Vec<String>, Unavailable> = bounded(
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut cmd),
        )
        .await;
        // CONFIG may be renamed or forbidden; then there is nothing to check.
        if let Ok(policy) = policy {
            if let Some(policy) = policy.get(1).filter(|p| p.as_str() != "noeviction") {
                tracing::warn!(
                    %policy,
                    "Redis may evict keys (maxmemory-policy is not noeviction): an evicted \
                     room log or snapshot makes that room start afresh"
                );
            }
        }
    }

    /// Takes a new node number and joins (or starts) the current epoch.
    async fn register(&self) -> Result<(), Unavailable> {
        let mut cmd = self.cmd.clone();
        let fresh = format!("{:016x}", rand::random::<u64>());
        // After Redis lost its data the counter restarts, so it is raised past this node's
        // old number: a node's numbers only grow, and a connection of an earlier incarnation
        // can never pass for one of the current (see `append_own`).
        let (_, epoch): (Value, String) = redis::pipe()
            .cmd("SET")
            .arg("chat:epoch")
            .arg(&fresh)
            .arg("NX")
            .cmd("GET")
            .arg("chat:epoch")
            .query_async(&mut cmd)
            .await?;
        let node: u64 = self
            .next_node
            .arg(self.node())
            .invoke_async(&mut cmd)
            .await?;
        if node >= 1 << (64 - CONN_BITS) {
            return Err(Unavailable(
                "node numbers exhausted (reset chat:nodes)".into(),
            ));
        }
        *self.epoch.lock() = epoch;
        self.node.store(node, Ordering::SeqCst);
        self.heartbeat_once().await?;
        tracing::info!(node = %self.name, number = node, "joined the cluster");
        Ok(())
    }

    /// This incarnation's number.
    pub fn node(&self) -> u64 {
        self.node.load(Ordering::SeqCst)
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// How often to heartbeat (and check for dead nodes).
    pub fn heartbeat_every(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(50))
    }

    fn mark(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::SeqCst);
        let mut since = self.healthy_since.lock();
        if healthy && since.is_none() {
            *since = Some(Instant::now());
        } else if !healthy {
            *since = None;
        }
        if was != healthy {
            if healthy {
                tracing::info!(node = %self.name, "Redis reachable");
            } else {
                tracing::warn!(node = %self.name, "Redis unreachable");
            }
        }
    }

    /// Whether this node has been in touch with Redis for a whole node timeout, and so may
    /// judge others: after an outage everyone needs that long to heartbeat again.
    pub fn may_judge(&self) -> bool {
        self.healthy_since
            .lock()
            .is_some_and(|t| t.elapsed() >= self.timeout)
    }

    /// Refreshes this node's heartbeat. Returns `Ok(false)` when the epoch changed or the
    /// node counter went back: Redis lost (some of) its data and every room must start
    /// afresh.
    pub async fn heartbeat_once(&self) -> Result<bool, Unavailable> {
        let mut cmd = self.cmd.clone();
        let ttl = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let sent = unix_ms();
        let result: RedisResult<Heartbeat> = redis::pipe()
            .cmd("SET")
            .arg(format!("chat:node:{}", self.node()))
            .arg(&self.name)
            .arg("PX")
            .arg(ttl.max(1))
            .cmd("GET")
            .arg("chat:epoch")
            .cmd("TIME")
            .cmd("GET")
            .arg("chat:nodes")
            .query_async(&mut cmd)
            .await;
        match result {
            Ok((_, epoch, (secs, micros), nodes)) => {
                // Redis's clock minus ours, taken at the middle of the round trip.
                let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
                let middle = sent.saturating_add(unix_ms()) / 2;
                let offset = i64::try_from(redis_ms).unwrap_or(i64::MAX)
                    - i64::try_from(middle).unwrap_or(i64::MAX);
                self.clock_offset_ms.store(offset, Ordering::Relaxed);
                self.mark(true);
                // Redis came back with older data if the node counter is below our number:
                // numbers could then be handed out twice, so start afresh as for a new epoch.
                let same_epoch = epoch.as_deref() == Some(self.epoch.lock().as_str());
                Ok(same_epoch && nodes.unwrap_or(0) >= self.node())
            }
            Err(err) => {
                self.mark(false);
                Err(err.into())
            }
        }
    }

    /// After Redis lost its data: a new node number in a new epoch.
    pub async fn reregister(&self) -> Result<(), Unavailable> {
        self.pending_leaves.lock().clear();
        self.register().await
    }

    /// Removes this node's heartbeat at shutdown, so nobody waits for it to expire.
    pub async fn deregister(&self) {
        let mut cmd = self.cmd.clone();
        let _: RedisResult<()> = cmd.del(format!("chat:node:{}", self.node())).await;
    }

    /// `Err` for a connection of an earlier incarnation (before Redis lost its data): its id
    /// may belong to someone else now, so it must not write.
    fn own(&self, conn: ConnId) -> Result<(), Unavailable> {
        if node_of(conn) == self.node() {
            Ok(())
        } else {
            Err(Unavailable(
                "connection from before Redis lost its data".into(),
            ))
        }
    }

    /// Appends an input of this node's connection `conn` (refused for an earlier
    /// incarnation's, see [`own`](Self::own)).
    pub async fn append_own(
        &self,
        room: &str,
        conn: ConnId,
        input: LogInput,
    ) -> Result<(), Unavailable> {
        self.own(conn)?;
        self.append_entries(&[(room, &input)], self.deadline())
            .await
    }

    /// The deadline (Redis clock, ms) for an append sent now.
    fn deadline(&self) -> i64 {
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        i64::try_from(unix_ms())
            .unwrap_or(i64::MAX)
            .saturating_add(offset)
            .saturating_add(APPEND_DEADLINE_MS)
            .max(1)
    }

    /// Appends inputs to a room's log (joins, leaves of dead nodes' members), in order.
    pub async fn append(&self, room: &str, inputs: &[LogInput]) -> Result<(), Unavailable> {
        let entries: Vec<(&str, &LogInput)> = inputs.iter().map(|i| (room, i)).collect();
        self.append_entries(&entries, 0).await
    }

    /// Queues a message or leave of this node's connection for the appender, which keeps
    /// one connection's inputs in order. `Err` when the queue is full or the connection is
    /// from before Redis lost its data.
    pub fn submit(
        &self,
        room: Arc<str>,
        conn: ConnId,
        input: LogInput,
        control: Option<Arc<Control>>,
    ) -> Result<(), Unavailable> {
        self.own(conn)?;
        self.queue
            .try_send(Submission {
                room,
                conn,
                input,
                control,
            })
            .map_err(|_| Unavailable("append queue full".into()))
    }

    /// The appender's end of the queue (once).
    pub fn take_queue(&self) -> Option<tokio::sync::mpsc::Receiver<Submission>> {
        self.queued.lock().take()
    }

    /// Appends queued client inputs, in order, with one script call (one round trip).
    ///
    /// The batch carries a deadline on Redis's clock, shorter than the time this node waits
    /// for the answer: a batch Redis gets to too late (it was stalled) is not appended at
    /// all, so a sender told "not sent" was not sent. All or nothing.
    pub async fn append_batch(&self, batch: &[Submission]) -> Result<(), Unavailable> {
        let entries: Vec<(&str, &LogInput)> = batch.iter().map(|s| (&*s.room, &s.input)).collect();
        self.append_entries(&entries, self.deadline()).await
    }

    /// One `APPEND` script call for `entries` (room, input), with a deadline (0: none).
    async fn append_entries(
        &self,
        entries: &[(&str, &LogInput)],
        deadline: i64,
    ) -> Result<(), Unavailable> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.append_script.prepare_invoke();
        invocation.arg(deadline).arg(self.epoch.lock().as_str());
        for (room, input) in entries {
            let body = serde_json::to_string(&Envelope {
                by: self.node(),
                input: (*input).clone(),
            })
            .map_err(|e| Unavailable(e.to_string()))?;
            invocation
                .key(log_key(room))
                .key(count_key(room))
                .key(snap_key(room))
                .key(followers_key(room))
                .arg(body);
        }
        invocation.arg(ROOM_TTL_MS);
        let mut cmd = self.cmd.clone();
        match bounded(invocation.invoke_async::<i64>(&mut cmd)).await {
            Ok(1) => Ok(()),
            Ok(-1) => Err(Unavailable(
                "Redis is in another epoch (it lost its data)".into(),
            )),
            Ok(_) => Err(Unavailable("Redis answered after the deadline".into())),
            Err(err) => {
                self.mark(false);
                Err(err)
            }
        }
    }

    /// Keeps a leave to append once Redis is back. Bounded: past [`PENDING_LEAVES_MAX`] the
    /// leave is dropped with a warning (that member stays listed until the room restarts).
    pub fn defer_leave(&self, room: &str, conn: ConnId) {
        if node_of(conn) != self.node() {
            return;
        }
        let mut pending = self.pending_leaves.lock();
        if pending.len() < PENDING_LEAVES_MAX {
            pending.push((room.to_owned(), conn.0));
        } else {
            tracing::warn!(%room, ?conn, "too many leaves waiting for Redis; dropping one");
        }
    }

    /// Appends the leaves kept while Redis was unavailable, a batch per round trip.
    pub async fn flush_pending_leaves(&self) {
        loop {
            let batch: Vec<(String, u64)> = {
                let mut pending = self.pending_leaves.lock();
                let take = pending.len().min(BATCH_MAX);
                pending.drain(..take).collect()
            };
            if batch.is_empty() {
                return;
            }
            let inputs: Vec<LogInput> = batch
                .iter()
                .map(|(_, conn)| LogInput::Leave { conn: *conn })
                .collect();
            let entries: Vec<(&str, &LogInput)> = batch
                .iter()
                .zip(&inputs)
                .map(|((room, _), input)| (room.as_str(), input))
                .collect();
            if self.append_entries(&entries, 0).await.is_err() {
                let mut pending = self.pending_leaves.lock();
                let later = std::mem::take(&mut *pending);
                *pending = batch;
                pending.extend(later);
                return;
            }
        }
    }

    /// Pokes this node's reader so it reads `room` at once.
    pub async fn wake_reader(&self, room: &str) {
        let mut cmd = self.cmd.clone();
        let _: Result<(), Unavailable> = bounded(
            redis::cmd("XADD")
                .arg(self.wake_key())
                .arg("MAXLEN")
                .arg("~")
                .arg(4096)
                .arg("*")
                .arg("k")
                .arg(log_key(room))
                .query_async(&mut cmd),
        )
        .await;
    }

    /// Marks this node as following `rooms` again (repairs a race between dropping a room
    /// and following it anew), and keeps its wake stream from expiring.
    pub async fn refollow(&self, rooms: &[Arc<str>]) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.cmd("SADD")
                .arg(followers_key(room))
                .arg(self.node())
                .ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(self.wake_key())
            .arg(ROOM_TTL_MS)
            .ignore();
        let mut cmd = self.cmd.clone();
        bounded(pipe.query_async::<()>(&mut cmd)).await
    }

    /// Stops the pokes for a room this node no longer follows.
    pub async fn unfollow(&self, room: &str) {
        let mut cmd = self.cmd.clone();
        let _: Result<(), Unavailable> = bounded(
            redis::cmd("SREM")
                .arg(followers_key(room))
                .arg(self.node())
                .query_async(&mut cmd),
        )
        .await;
    }

    /// Removes a dead node from a room's followers.
    pub async fn drop_follower(&self, room: &str, node: u64) -> Result<(), Unavailable> {
        let mut cmd = self.cmd.clone();
        bounded(
            redis::cmd("SREM")
                .arg(followers_key(room))
                .arg(node)
                .query_async::<()>(&mut cmd),
        )
        .await
    }

    /// One XREAD of this node's wake stream (after `wake.1`) and of `logs` (key, last id
    /// seen), waiting at most `block_ms` for anything new (or not at all). Returns the last
    /// wake id read, the log keys poked, and the new entries per log. One call is atomic, so
    /// the pokes it returns for a log it also read are covered by that log's entries.
    pub async fn read(
        &self,
        conn: &mut ConnectionManager,
        wake: (&str, &str),
        logs: &[(String, String)],
        block_ms: Option<usize>,
    ) -> Result<Read, Unavailable> {
        let mut keys: Vec<&str> = vec![wake.0];
        let mut ids: Vec<&str> = vec![wake.1];
        for (key, id) in logs {
            keys.push(key);
            ids.push(id);
        }
        let mut options = StreamReadOptions::default().count(READ_COUNT);
        if let Some(ms) = block_ms {
            options = options.block(ms);
        }
        let reply: Option<StreamReadReply> = conn.xread_options(&keys, &ids, &options).await?;
        let mut read = Read::default();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if stream.key == wake.0 {
                read.wake_last = stream.ids.last().map(|e| e.id.clone());
                read.poked = stream
                    .ids
                    .into_iter()
                    .filter_map(|e| match e.map.get("k") {
                        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                        _ => None,
                    })
                    .collect();
            } else {
                let entries = stream.ids.into_iter().map(decode).collect();
                read.logs.push((stream.key, entries));
            }
        }
        Ok(read)
    }

    /// This node's wake stream.
    pub fn wake_key(&self) -> String {
        format!("chat:wake:{}", self.node())
    }

    /// The room's latest snapshot and every log entry after it, read atomically. Creates the
    /// room (a random seed, this node's room config) if it has never existed.
    pub async fn load(
        &self,
        room: &str,
        fresh: impl Fn() -> RoomSnapshot,
    ) -> Result<(Snapshot, Vec<LogEntry>), Unavailable> {
        let mut cmd = self.cmd.clone();
        for _ in 0..3 {
            // Following (poked) from the same instant the log is read: no entry falls between.
            let (body, range): (Option<String>, StreamRangeReply) = redis::pipe()
                .atomic()
                .cmd("SADD")
                .arg(followers_key(room))
                .arg(self.node())
                .ignore()
                .cmd("PEXPIRE")
                .arg(followers_key(room))
                .arg(ROOM_TTL_MS)
                .ignore()
                .cmd("HGET")
                .arg(snap_key(room))
                .arg("body")
                .cmd("XRANGE")
                .arg(log_key(room))
                .arg("-")
                .arg("+")
                .query_async(&mut cmd)
                .await?;
            let Some(body) = body else {
                let initial = Snapshot {
                    id: "0-0".to_owned(),
                    applied: 0,
                    room: fresh(),
                };
                self.save(room, &initial).await?;
                continue;
            };
            let snapshot: Snapshot = match serde_json::from_str(&body) {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    tracing::error!(%room, %err, "unreadable snapshot; the room starts afresh");
                    self.forget_room(room).await?;
                    continue;
                }
            };
            let after = snapshot.last();
            let entries: Vec<LogEntry> = range
                .ids
                .into_iter()
                .map(decode)
                .filter(|e| e.id > after)
                .collect();
            let contiguous = entries
                .iter()
                .zip(snapshot.applied.saturating_add(1)..)
                .all(|(entry, n)| entry.n == n);
            if !contiguous {
                tracing::error!(%room, "log entries missing after the snapshot; the room starts afresh");
                self.forget_room(room).await?;
                continue;
            }
            return Ok((snapshot, entries));
        }
        Err(Unavailable(format!("room {room}: could not be loaded")))
    }

    /// Forgets a room whose stored state is unusable (a snapshot that does not parse, or a
    /// log with entries missing after it): the room starts afresh, and nodes that follow it
    /// notice the restarted count and reload.
    pub async fn forget_room(&self, room: &str) -> Result<(), Unavailable> {
        let mut cmd = self.cmd.clone();
        let _: () = bounded(
            redis::pipe()
                .atomic()
                .del(snap_key(room))
                .del(log_key(room))
                .del(count_key(room))
                .query_async(&mut cmd),
        )
        .await?;
        Ok(())
    }

    /// Stores `snapshot` unless a newer one is there.
    pub async fn save(&self, room: &str, snapshot: &Snapshot) -> Result<(), Unavailable> {
        let body = serde_json::to_string(snapshot).map_err(|e| Unavailable(e.to_string()))?;
        let mut cmd = self.cmd.clone();
        let mut invocation = self.save_snapshot.key(snap_key(room));
        invocation
            .key(log_key(room))
            .arg(&snapshot.id)
            .arg(body)
            .arg(self.epoch.lock().as_str())
            .arg(ROOM_TTL_MS);
        let _: i64 = bounded(invocation.invoke_async(&mut cmd)).await?;
        Ok(())
    }

    /// Which of `nodes` have no heartbeat.
    pub async fn dead_nodes(&self, nodes: &[u64]) -> Result<Vec<u64>, Unavailable> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in nodes {
            pipe.cmd("EXISTS").arg(format!("chat:node:{node}"));
        }
        let mut cmd = self.cmd.clone();
        let alive: Vec<bool> = pipe.query_async(&mut cmd).await?;
        Ok(nodes
            .iter()
            .zip(alive)
            .filter(|(_, alive)| !alive)
            .map(|(n, _)| *n)
            .collect())
    }

    /// Claims the job of announcing that dead `node`'s members of `room` left; only one
    /// node wins, so the leaves are appended once (a second copy would be harmless anyway:
    /// leaving twice is a no-op in the room).
    pub async fn claim_reap(&self, node: u64, room: &str) -> Result<bool, Unavailable> {
        let mut cmd = self.cmd.clone();
        let won: Option<String> = redis::cmd("SET")
            .arg(format!("chat:reap:{node}:{room}"))
            .arg(&self.name)
            .arg("NX")
            .arg("PX")
            .arg(REAP_CLAIM_MS)
            .query_async(&mut cmd)
            .await?;
        Ok(won.is_some())
    }

    /// A connection for the reader alone: it blocks in XREAD, which would stall the
    /// pipelined commands of a shared connection.
    pub async fn reader_connection(&self) -> Result<ConnectionManager, Unavailable> {
        let block = Duration::from_millis(READ_BLOCK_MS as u64);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(block + Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(ConnectionManager::new_with_config(self.client.clone(), config).await?)
    }
}

/// How long any command may take before Redis counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// `fut` bounded by [`COMMAND_TIMEOUT`] (scripts are not covered by the connection's own
/// response timeout when they need loading first).
async fn bounded<T>(
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Unavailable("no answer from Redis in time".into())),
    }
}

/// Reads one stream entry; an unreadable one becomes an entry without input.
fn decode(entry: StreamId) -> LogEntry {
    let id = EntryId::parse(&entry.id).unwrap_or_default();
    let n = match entry.map.get("n") {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let envelope = match entry.map.get("e") {
        Some(Value::BulkString(bytes)) => serde_json::from_slice::<Envelope>(bytes).ok(),
        _ => None,
    };
    match envelope {
        Some(Envelope { by, input }) => LogEntry {
            id,
            n,
            by,
            input: Some(input),
        },
        None => LogEntry {
            id,
            n,
            by: 0,
            input: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_come_back_from_log_keys() {
        assert_eq!(room_of_key(&log_key("lobby")), Some("lobby"));
        assert_eq!(room_of_key("chat:wake:3"), None);
    }

    #[test]
    fn entry_ids_order_numerically() {
        let a = EntryId::parse("999-5").unwrap();
        let b = EntryId::parse("1000-0").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1000-0");
        assert_eq!(EntryId::parse("x-1"), None);
        assert_eq!(EntryId::parse("12"), None);
    }

    #[test]
    fn log_inputs_round_trip_through_json() {
        for input in [
            LogInput::Join {
                conn: 1 << CONN_BITS | 7,
                nick: Some("alice".into()),
                since: Some(3),
            },
            LogInput::Join {
                conn: 2,
                nick: None,
                since: None,
            },
            LogInput::Message {
                conn: 9,
                text: "hi \"there\"\n".into(),
            },
            LogInput::Leave { conn: 9 },
        ] {
            let json = serde_json::to_string(&Envelope {
                by: 4,
                input: input.clone(),
            })
            .unwrap();
            let back: Envelope = serde_json::from_str(&json).unwrap();
            assert_eq!(back.by, 4);
            assert_eq!(back.input, input);
        }
    }
}
