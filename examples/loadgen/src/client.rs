//! One simulated chat client: joins, takes part in the sync round, sends its share of the
//! load, and checks every line it receives.

use crate::{Args, Mode};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The body of the marker each room's first client sends once everyone is connected: when
/// a client has received it, it is certainly a member of the room.
const SYNC: &str = "SYNC";

/// How often a room's leader repeats the marker until the sync ends.
const SYNC_REPEAT_US: u64 = 500_000;

/// Microseconds on the machine-wide monotonic clock (comparable across processes).
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists
    // on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Where a worker's run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Clients are connecting.
    Connect,
    /// Each room's first client sends the sync marker; everyone waits to receive it.
    Sync,
    /// The load runs.
    Go,
    /// Everyone closes.
    Stop,
}

/// State every client task of this process shares (one thread, so `Cell`s).
pub struct Shared {
    pub args: Args,
    pub phase: watch::Sender<Phase>,
    /// When the load started (monotonic µs).
    pub t0_us: Cell<u64>,
    pub latency_us: RefCell<Histogram<u64>>,
    /// Load messages received, duplicates included.
    pub deliveries: Cell<u64>,
    pub last_delivery_us: Cell<u64>,
    pub sent: Cell<u64>,
    /// Clients that received the sync marker / everything they expect.
    pub synced: Cell<usize>,
    pub done: Cell<usize>,
    /// Local clients connected (what `synced` and `done` count up to).
    pub connected: Cell<usize>,
    pub progress: Notify,
    /// Closed loop: per sender (global sender number), its messages in flight.
    pub windows: RefCell<Vec<Window>>,
    /// Wakes sender `g` when one of its messages has reached every local receiver.
    pub window_freed: Vec<Notify>,
    /// Connected local clients per room (set before the load starts).
    pub room_clients: RefCell<Vec<u32>>,
}

/// A closed-loop sender's messages in flight: how many local receivers still miss each.
///
/// A message stays in flight until every receiver in this process has it (not just the
/// sender's own echo), so the slowest receiver paces the senders and no server queue is
/// overrun. With `--procs`, receivers in other processes are not waited for.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Indexed by `seq % window`. Each connection delivers in order, so a message completes
    /// no later than the next one and its slot is free again when reused.
    missing: Vec<u32>,
    /// Messages that reached every local receiver.
    completed: u64,
}

impl Shared {
    pub fn new(args: Args) -> Shared {
        Shared {
            phase: watch::Sender::new(Phase::Connect),
            t0_us: Cell::new(0),
            // 1 µs to 100 s at 3 significant digits.
            latency_us: RefCell::new(
                Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds"),
            ),
            deliveries: Cell::new(0),
            last_delivery_us: Cell::new(0),
            sent: Cell::new(0),
            synced: Cell::new(0),
            done: Cell::new(0),
            connected: Cell::new(0),
            progress: Notify::new(),
            windows: RefCell::new(Vec::new()),
            window_freed: (0..args.senders).map(|_| Notify::new()).collect(),
            room_clients: RefCell::new(vec![0; args.rooms]),
            args,
        }
    }

    /// Sender `g` sent `seq`: every local member of `room` must receive it.
    fn track(&self, g: usize, room: usize, seq: u64) {
        let receivers = self.room_clients.borrow()[room];
        let window = self.args.window.max(1);
        let mut windows = self.windows.borrow_mut();
        if windows.len() <= g {
            windows.resize(g + 1, Window::default());
        }
        let w = &mut windows[g];
        if w.missing.is_empty() {
            w.missing = vec![0; window as usize];
        }
        w.missing[(seq % window) as usize] = receivers;
    }

    /// A local receiver got `seq` from sender `g` (first time).
    fn ack(&self, g: usize, seq: u64) {
        let window = self.args.window.max(1);
        let mut windows = self.windows.borrow_mut();
        let Some(w) = windows.get_mut(g) else { return };
        let Some(left) = w.missing.get_mut((seq % window) as usize) else {
            return;
        };
        if *left > 0 {
            *left -= 1;
            if *left == 0 {
                w.completed += 1;
                drop(windows);
                self.window_freed[g].notify_one();
            }
        }
    }

    /// Messages of sender `g` that reached every local receiver.
    fn completed(&self, g: usize) -> u64 {
        self.windows.borrow().get(g).map_or(0, |w| w.completed)
    }

    fn bump(cell: &Cell<usize>) {
        cell.set(cell.get() + 1);
    }
}

/// Who a client is.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// Global client number.
    pub index: usize,
    pub room: usize,
    /// This client's sender number within its room, if it sends.
    pub slot: Option<usize>,
    /// How many senders its room has.
    pub room_senders: usize,
    /// Sender number over all rooms (staggers fixed-rate senders).
    pub global_sender: usize,
}

impl Identity {
    /// Client `index` of a run.
    pub fn new(args: &Args, index: usize) -> Identity {
        let rooms = args.rooms;
        let room = index % rooms;
        let senders = if args.mode == Mode::Idle {
            0
        } else {
            args.senders
        };
        // Senders are clients 0..senders, so room r has those j < senders with j % rooms == r.
        let room_senders = if room < senders {
            (senders - 1 - room) / rooms + 1
        } else {
            0
        };
        Identity {
            index,
            room,
            slot: (index < senders).then_some(index / rooms),
            room_senders,
            global_sender: index,
        }
    }
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub expected: u64,
    /// Distinct load messages received.
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Server notices (e.g. someone left) during the run.
    pub notices: u64,
    /// Messages from churning clients (soak), counted but not checked.
    pub churn_messages: u64,
    /// Lines that are neither load messages, sync markers nor notices.
    pub unexpected: u64,
    /// Why the connection ended before the run did, if it did.
    pub disconnect: Option<String>,
}

/// Per-receiver order tracking for each sender of its room.
struct Order {
    next: Vec<u64>,
    /// (sender slot, seq) skipped over by a later message; arriving later is out of order.
    missing: BTreeSet<(usize, u64)>,
}

/// The load message text: sender slot, sequence, send time.
fn load_text(slot: usize, seq: u64, t_us: u64, pad: &str) -> String {
    format!("L {slot} {seq} {t_us}{pad}")
}

/// How a churning client's message starts (not a load message: counted, not checked).
pub const CHURN_PREFIX: &str = "C ";

/// Parses `L slot seq t_us [padding]`.
fn parse_load(body: &str) -> Option<(usize, u64, u64)> {
    let mut it = body.strip_prefix("L ")?.split(' ');
    let slot = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((slot, seq, t))
}

/// Opens a WebSocket to `url`, giving up after `timeout`; a failure comes back as a short,
/// countable reason.
pub async fn connect(url: &str, timeout: Duration) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    match tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(reason(&e)),
        Err(_) => Err("connect timeout".to_string()),
    }
}

/// Closes cleanly; the server's answer is not worth waiting long for.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        ws.close(None).await.ok();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Why a connection ended, from the frame that ended it (`None`: the stream ended).
pub fn end_reason(frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match frame {
        Some(Ok(Message::Close(Some(f)))) => format!("close {}", u16::from(f.code)),
        Some(Ok(Message::Close(None))) => "close".into(),
        Some(Err(e)) => reason(&e),
        Some(Ok(_)) | None => "closed".into(),
    }
}

/// A short, countable reason for a failure.
pub fn reason(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(io) => format!("io: {:?}", io.kind()),
        E::Http(resp) => format!("http {}", resp.status().as_u16()),
        E::ConnectionClosed | E::AlreadyClosed => "closed".into(),
        E::Protocol(p) => format!("protocol: {p}"),
        other => {
            let s = other.to_string();
            s.chars().take(60).collect()
        }
    }
}

struct Run<'a> {
    sh: &'a Shared,
    me: Identity,
    stats: ClientStats,
    order: Order,
    done: bool,
    synced: bool,
    /// Own messages sent.
    sent: u64,
    pad: String,
}

impl<'a> Run<'a> {
    /// A client that expects `expected` load messages and pads its own with `pad`.
    fn new(sh: &'a Shared, me: Identity, expected: u64, pad: String) -> Run<'a> {
        Run {
            sh,
            me,
            stats: ClientStats {
                expected,
                ..ClientStats::default()
            },
            order: Order {
                next: vec![0; me.room_senders],
                missing: BTreeSet::new(),
            },
            done: false,
            synced: false,
            sent: 0,
            pad,
        }
    }

    fn on_text(&mut self, text: &str) {
        let Some((_, body)) = text.split_once(": ") else {
            if text.starts_with(" .... ") {
                self.stats.notices += 1;
            } else {
                self.stats.unexpected += 1;
            }
            return;
        };
        if body == SYNC {
            if !self.synced {
                self.synced = true;
                Shared::bump(&self.sh.synced);
                self.sh.progress.notify_one();
            }
            return;
        }
        let Some((slot, seq, t)) = parse_load(body) else {
            if body.starts_with(CHURN_PREFIX) {
                self.stats.churn_messages += 1;
            } else {
                self.stats.unexpected += 1;
            }
            return;
        };
        if slot >= self.me.room_senders || seq >= self.sh.args.messages {
            self.stats.unexpected += 1;
            return;
        }
        let now = now_us();
        let sh = self.sh;
        sh.deliveries.set(sh.deliveries.get() + 1);
        sh.last_delivery_us.set(now);
        // Clamp to the histogram's range rather than drop the sample.
        let _ = sh
            .latency_us
            .borrow_mut()
            .record(now.saturating_sub(t).clamp(1, 100_000_000));

        let next = &mut self.order.next[slot];
        let first_time = if seq == *next {
            *next += 1;
            true
        } else if seq > *next {
            for s in *next..seq {
                self.order.missing.insert((slot, s));
            }
            *next = seq + 1;
            true
        } else if self.order.missing.remove(&(slot, seq)) {
            self.stats.out_of_order += 1;
            true
        } else {
            self.stats.duplicated += 1;
            false
        };
        if first_time {
            self.stats.unique += 1;
            if sh.args.mode == Mode::Closed {
                sh.ack(slot * sh.args.rooms + self.me.room, seq);
            }
        }
        if !self.done && self.stats.unique >= self.stats.expected {
            self.mark_done();
        }
    }

    fn mark_done(&mut self) {
        self.done = true;
        Shared::bump(&self.sh.done);
        self.sh.progress.notify_one();
    }

    fn next_message(&mut self, t_us: u64) -> Message {
        let slot = self.me.slot.unwrap_or(0);
        let text = load_text(slot, self.sent, t_us, &self.pad);
        if self.sh.args.mode == Mode::Closed {
            self.sh
                .track(self.me.global_sender, self.me.room, self.sent);
        }
        self.sent += 1;
        self.sh.sent.set(self.sh.sent.get() + 1);
        Message::text(text)
    }
}

/// Runs one connected client until the worker says stop.
pub async fn run(mut ws: Ws, me: Identity, sh: Rc<Shared>) -> ClientStats {
    let args = &sh.args;
    let mut phase_rx = sh.phase.subscribe();
    let expected = me.room_senders as u64 * args.messages;
    let pad = if args.size > 0 {
        format!(" {}", "x".repeat(args.size))
    } else {
        String::new()
    };
    let mut run = Run::new(&sh, me, expected, pad);
    let is_leader = me.index == me.room;
    let mut next_sync_us = 0;
    let mut started = false;
    // Fixed rate: this sender sends every `period` µs, staggered by its number.
    let senders = args.senders.max(1) as f64;
    let period_us = (senders / args.rate * 1e6).max(1.0);
    let offset_us = me.global_sender as f64 / args.rate * 1e6;

    loop {
        let phase = *phase_rx.borrow_and_update();
        if phase == Phase::Stop {
            break;
        }
        // The leader repeats the marker while the sync lasts: a server may finish a join
        // after the handshake, so an early marker can miss the last joiners.
        if phase == Phase::Sync && is_leader && now_us() >= next_sync_us {
            next_sync_us = now_us() + SYNC_REPEAT_US;
            if let Err(e) = ws.send(Message::text(SYNC)).await {
                run.stats.disconnect = Some(reason(&e));
                break;
            }
        }
        if phase >= Phase::Go && !started {
            started = true;
            if run.stats.expected == 0 && !run.done {
                run.mark_done();
            }
        }
        // Closed loop: fill the window up to --window messages that not every local
        // receiver has yet.
        if started && args.mode == Mode::Closed && me.slot.is_some() {
            let g = me.global_sender;
            let mut fed = false;
            while run.sent < args.messages && run.sent - sh.completed(g) < args.window {
                let msg = run.next_message(now_us());
                if let Err(e) = ws.feed(msg).await {
                    run.stats.disconnect = Some(reason(&e));
                    break;
                }
                fed = true;
            }
            if fed {
                if let Err(e) = ws.flush().await {
                    run.stats.disconnect = Some(reason(&e));
                }
            }
            if run.stats.disconnect.is_some() {
                break;
            }
        }
        // The next fixed-rate send, if this client has one due.
        let due_us =
            (started && args.mode.fixed_rate() && me.slot.is_some() && run.sent < args.messages)
                .then(|| sh.t0_us.get() + (offset_us + run.sent as f64 * period_us) as u64);
        let due_us = match (phase == Phase::Sync && is_leader, due_us) {
            (true, _) => Some(next_sync_us),
            (false, due) => due,
        };
        let sleep = async {
            match due_us {
                Some(due) => {
                    let now = now_us();
                    if due > now {
                        tokio::time::sleep(Duration::from_micros(due - now)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };

        let closed_sender =
            started && args.mode == Mode::Closed && me.slot.is_some() && run.sent < args.messages;
        let window_freed = async {
            match sh.window_freed.get(me.global_sender) {
                Some(freed) if closed_sender => freed.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = sleep => {
                if phase == Phase::Sync {
                    continue; // time to repeat the marker, at the top of the loop
                }
                // Stamp the actual send time: the timer wakes up to a millisecond late,
                // which is the load generator's delay, not the server's.
                let msg = run.next_message(now_us());
                if let Err(e) = ws.send(msg).await {
                    run.stats.disconnect = Some(reason(&e));
                    break;
                }
            }
            () = window_freed => {}
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => run.on_text(text.as_str()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    run.stats.disconnect = Some(end_reason(frame));
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    if run.stats.disconnect.is_some() {
        // Let the worker's counters finish even though this client cannot.
        if !run.synced {
            run.synced = true;
            Shared::bump(&sh.synced);
        }
        if !run.done {
            run.mark_done();
        }
        sh.progress.notify_one();
    } else {
        close(ws).await;
    }
    run.stats
}

/// Counts reasons (connect failures, disconnects) for the report.
pub type Reasons = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["chat-loadgen"].iter().chain(extra))
    }

    #[test]
    fn load_lines_parse_and_garbage_does_not() {
        assert_eq!(parse_load("L 3 17 123456"), Some((3, 17, 123456)));
        assert_eq!(parse_load("L 3 17 123456 xxxx"), Some((3, 17, 123456)));
        assert_eq!(parse_load(&load_text(1, 2, 3, " pad")), Some((1, 2, 3)));
        for bad in ["", "L", "L 1 2", "X 1 2 3", "L a 2 3", "L 1 -2 3", "SYNC"] {
            assert_eq!(parse_load(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn senders_spread_over_rooms() {
        // 10 clients in 3 rooms, 4 senders: clients 0..4; room r has senders j % 3 == r.
        let a = args(&["--clients", "10", "--rooms", "3", "--senders", "4"]);
        let ids: Vec<Identity> = (0..10).map(|i| Identity::new(&a, i)).collect();
        assert_eq!(ids[0].room_senders, 2); // senders 0 and 3
        assert_eq!(ids[1].room_senders, 1);
        assert_eq!(ids[2].room_senders, 1);
        assert_eq!(ids[9].room_senders, 2, "client 9 is in room 0");
        assert_eq!(ids[0].slot, Some(0));
        assert_eq!(ids[3].slot, Some(1), "second sender of room 0");
        assert_eq!(ids[4].slot, None);
        let soak = args(&["--mode", "soak", "--clients", "10", "--senders", "4"]);
        assert_eq!(Identity::new(&soak, 0).room_senders, 4, "soak runs send");
        let idle = args(&["--mode", "idle", "--senders", "4"]);
        assert_eq!(
            Identity::new(&idle, 0).room_senders,
            0,
            "idle runs send nothing"
        );
    }

    #[test]
    fn receivers_count_duplicates_gaps_and_reordering() {
        let a = args(&["--clients", "2", "--senders", "2", "--messages", "5"]);
        let sh = Shared::new(a.clone());
        let me = Identity::new(&a, 1);
        let mut run = Run::new(&sh, me, 10, String::new());
        let t = now_us();
        for (slot, seq) in [(0, 0), (0, 1), (0, 3), (0, 2), (0, 2), (1, 0), (0, 4)] {
            run.on_text(&format!("user-1: {}", load_text(slot, seq, t, "")));
        }
        run.on_text("user-1: L 7 0 0"); // no such sender in this room
        run.on_text("user-1: L 0 99 0"); // beyond --messages
        run.on_text(" .... user-9 has left.");
        run.on_text("user-1: SYNC");
        run.on_text("nonsense");
        run.on_text("user-7: C 12 345"); // a churning client's message: counted only
        assert_eq!(run.stats.unique, 6);
        assert_eq!(run.stats.duplicated, 1);
        assert_eq!(run.stats.out_of_order, 1);
        assert_eq!(run.stats.unexpected, 3);
        assert_eq!(run.stats.notices, 1);
        assert_eq!(run.stats.churn_messages, 1);
        assert!(run.synced);
        assert_eq!(sh.deliveries.get(), 7, "duplicates are deliveries too");
        assert!(!run.done, "4 messages of sender 1 are still missing");
        for seq in 1..5 {
            run.on_text(&format!("user-1: {}", load_text(1, seq, t, "")));
        }
        assert!(run.done);
        assert_eq!(sh.done.get(), 1);
    }
}
