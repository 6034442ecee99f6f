//! Connection churn for soak runs: short-lived extra clients that connect to a random room,
//! maybe send one message, and leave again after 0.1-2 s, at `--churn` per second. With
//! several `--url`s the churners take the nodes in turn (by churner id).
//!
//! Churners only exercise the server's join/leave paths next to the steady load; what they
//! receive is read and dropped. Their messages (`C id t_us`) reach the steady clients, which
//! count them without checking them.

use crate::client::{self, now_us, Reasons, Shared, CHURN_PREFIX};
use crate::Args;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Shortest and longest life of a churning client, in µs.
const LIFE_US: (u64, u64) = (100_000, 2_000_000);

/// What the churning clients of one process (or of all, merged) did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChurnStats {
    /// Connections attempted.
    pub attempted: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    /// Failed connections by reason.
    pub connect_errors: Reasons,
    /// Messages the churners sent.
    pub messages_sent: u64,
    /// Churners whose connection ended before they left, by reason.
    pub ended_early: Reasons,
    /// Churners left out because too many were still in flight (the server is slow).
    pub skipped: u64,
    /// Churners still in flight when the run ended (not waited for).
    pub abandoned: u64,
}

impl ChurnStats {
    /// Adds another process's figures.
    pub fn add(&mut self, other: &ChurnStats) {
        self.attempted += other.attempted;
        self.connects_ok += other.connects_ok;
        self.connects_failed += other.connects_failed;
        self.messages_sent += other.messages_sent;
        self.skipped += other.skipped;
        self.abandoned += other.abandoned;
        for (into, from) in [
            (&mut self.connect_errors, &other.connect_errors),
            (&mut self.ended_early, &other.ended_early),
        ] {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
    }
}

/// Churners one process may have in flight at once: four seconds' worth (a life is at
/// most two), and never fewer than 16.
pub fn max_in_flight(args: &Args) -> usize {
    if args.churn <= 0.0 {
        return 0;
    }
    ((args.churn / args.procs as f64 * 4.0).ceil() as usize).max(16)
}

/// The node (index into `--url`) churner `id` connects to. Worker k numbers its churners
/// k, k + procs, k + 2 procs, ..., so all processes together count 0, 1, 2, ... and the
/// nodes take turns.
fn churn_node(args: &Args, id: u64) -> usize {
    (id % args.urls.len().max(1) as u64) as usize
}

/// A small xorshift generator: churn needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // SplitMix64 of the seed, so that nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-enough in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Runs worker `k`'s share of the churn until `until_us` (monotonic µs), then waits up to
/// `--connect-timeout` + 3 s for the churners still in flight.
pub async fn run(sh: Rc<Shared>, k: usize, until_us: u64) -> ChurnStats {
    let args = &sh.args;
    let stats = Rc::new(RefCell::new(ChurnStats::default()));
    let max_in_flight = max_in_flight(args);
    if max_in_flight == 0 {
        return ChurnStats::default();
    }
    let in_flight = Rc::new(Cell::new(0usize));
    let gone = Rc::new(tokio::sync::Notify::new());
    let mut rng = Rng::new(now_us() ^ ((k as u64) << 48));
    let pace = Duration::from_secs_f64(args.procs as f64 / args.churn);
    let mut next = tokio::time::Instant::now();
    let mut n: u64 = 0;
    loop {
        tokio::time::sleep_until(next).await;
        if now_us() >= until_us {
            break;
        }
        // Behind schedule (a busy machine): catch up at most a second's worth.
        next += pace;
        if let Some(floor) = tokio::time::Instant::now().checked_sub(Duration::from_secs(1)) {
            next = next.max(floor);
        }
        if in_flight.get() >= max_in_flight {
            stats.borrow_mut().skipped += 1;
            continue;
        }
        // Churner ids are unique over the processes: k, k + procs, ...
        let id = k as u64 + n * args.procs as u64;
        n += 1;
        let room = rng.between(0, args.rooms as u64 - 1) as usize;
        let life = Duration::from_micros(rng.between(LIFE_US.0, LIFE_US.1));
        let send = rng.chance(args.churn_send);
        in_flight.set(in_flight.get() + 1);
        stats.borrow_mut().attempted += 1;
        let (sh, stats, in_flight, gone) =
            (sh.clone(), stats.clone(), in_flight.clone(), gone.clone());
        tokio::task::spawn_local(async move {
            churner(&sh, id, room, life, send, &stats).await;
            in_flight.set(in_flight.get() - 1);
            gone.notify_one();
        });
    }
    let limit = Duration::from_secs_f64(args.connect_timeout) + Duration::from_secs(3);
    let _ = tokio::time::timeout(limit, async {
        while in_flight.get() > 0 {
            gone.notified().await;
        }
    })
    .await;
    let mut out = stats.borrow().clone();
    out.abandoned = in_flight.get() as u64;
    out
}

/// One churning client: connect, maybe send, read and drop until its life is over, leave.
async fn churner(
    sh: &Shared,
    id: u64,
    room: usize,
    life: Duration,
    send: bool,
    stats: &RefCell<ChurnStats>,
) {
    let timeout = Duration::from_secs_f64(sh.args.connect_timeout);
    let url = sh.args.room_url(churn_node(&sh.args, id), room);
    let mut ws = match client::connect(&url, timeout).await {
        Ok(ws) => ws,
        Err(reason) => {
            let mut s = stats.borrow_mut();
            s.connects_failed += 1;
            *s.connect_errors.entry(reason).or_default() += 1;
            return;
        }
    };
    stats.borrow_mut().connects_ok += 1;
    let end = tokio::time::Instant::now() + life;
    if send {
        let text = format!("{CHURN_PREFIX}{id} {}", now_us());
        match ws.send(Message::text(text)).await {
            Ok(()) => stats.borrow_mut().messages_sent += 1,
            Err(e) => {
                *stats
                    .borrow_mut()
                    .ended_early
                    .entry(client::reason(&e))
                    .or_default() += 1;
                return;
            }
        }
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    *stats
                        .borrow_mut()
                        .ended_early
                        .entry(client::end_reason(frame))
                        .or_default() += 1;
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    client::close(ws).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = rng.between(0, 9);
            seen[v as usize] += 1;
            let life = rng.between(LIFE_US.0, LIFE_US.1);
            assert!((LIFE_US.0..=LIFE_US.1).contains(&life));
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        let sends = (0..10_000).filter(|_| rng.chance(0.5)).count();
        assert!((4_500..5_500).contains(&sends), "{sends}");
        assert!(!(0..1_000).any(|_| rng.chance(0.0)));
        assert!((0..1_000).all(|_| rng.chance(1.0)));
        assert_ne!(Rng::new(1).next(), Rng::new(2).next());
    }

    #[test]
    fn in_flight_bound_covers_a_life_and_splits_over_processes() {
        let args = |extra: &[&str]| Args::parse_from(["chat-loadgen"].iter().chain(extra));
        assert_eq!(max_in_flight(&args(&[])), 0, "no churn, no churners");
        assert_eq!(max_in_flight(&args(&["--churn", "50"])), 200);
        assert_eq!(
            max_in_flight(&args(&["--churn", "50", "--procs", "2"])),
            100
        );
        assert_eq!(max_in_flight(&args(&["--churn", "1"])), 16);
    }

    #[test]
    fn churners_take_the_nodes_in_turn() {
        let one = Args::parse_from(["chat-loadgen"]);
        assert!((0..10).all(|id| churn_node(&one, id) == 0));
        let three = Args::parse_from(["chat-loadgen", "--url", "ws://a,ws://b,ws://c"]);
        let nodes: Vec<usize> = (0..7).map(|id| churn_node(&three, id)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn stats_add_up() {
        let mut a = ChurnStats {
            attempted: 3,
            connects_ok: 2,
            connects_failed: 1,
            connect_errors: [("http 503".to_string(), 1)].into(),
            ..ChurnStats::default()
        };
        let b = ChurnStats {
            attempted: 2,
            connects_ok: 1,
            connects_failed: 1,
            connect_errors: [("http 503".to_string(), 1)].into(),
            messages_sent: 1,
            ended_early: [("close 1001".to_string(), 1)].into(),
            ..ChurnStats::default()
        };
        a.add(&b);
        assert_eq!((a.attempted, a.connects_ok, a.connects_failed), (5, 3, 2));
        assert_eq!(a.connect_errors["http 503"], 2);
        assert_eq!(a.ended_early["close 1001"], 1);
        assert_eq!(a.messages_sent, 1);
    }
}
