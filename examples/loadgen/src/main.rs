//! `chat-loadgen`: opens many WebSocket clients against a chat server that speaks the
//! tutorial's text protocol (every message comes back to everyone in the room as
//! `NICK: TEXT`), makes some of them send, and checks everything everyone receives.
//!
//! Each load message carries its sender, sequence number and send time, so every receiver
//! measures latency and counts lost, duplicated and out-of-order deliveries. Results go to
//! stdout as one JSON object; progress goes to stderr.
//!
//! Modes: `closed` (each sender keeps `--window` of its own messages in flight: sustained
//! throughput), `rate` (a fixed total of `--rate` messages per second: latency), `idle` (open,
//! join, hold `--hold` seconds: memory per connection), `soak` (fixed rate for `--duration`
//! seconds while `--churn` extra clients per second come and go: leaks and stability).
//! `--procs P` splits the clients over P worker processes (each process may open only so
//! many files).
//!
//! Several servers sharing rooms (a scale-out deployment): give every node's base URL
//! (`--url ws://a:8081,ws://b:8082`, or `--url` repeated). Client `i` joins room
//! `i % rooms` on node `(i / rooms) % nodes`, so every room has members on every node (once
//! there are at least `rooms * nodes` clients) and each message must cross nodes to reach
//! everyone; churning clients take the nodes in turn. With one URL the server sees exactly
//! what it always did.

mod churn;
mod client;
mod report;
mod worker;

use clap::{Parser, ValueEnum};
use report::{Report, WorkerReport};
use std::process::ExitCode;

/// Load modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each sender keeps `--window` of its own messages in flight.
    Closed,
    /// `--rate` messages per second in total, spread over the senders.
    Rate,
    /// No messages: connect, join, hold for `--hold` seconds.
    Idle,
    /// `--rate` messages per second in total for `--duration` seconds, while `--churn`
    /// short-lived extra clients per second connect and disconnect.
    Soak,
}

impl Mode {
    /// Whether senders send on a fixed schedule (`--rate`).
    pub fn fixed_rate(self) -> bool {
        matches!(self, Mode::Rate | Mode::Soak)
    }
}

/// Command line.
#[derive(Parser, Clone, Debug)]
#[command(
    version,
    about = "Load generator for the chat server (and any server with its wire semantics)"
)]
pub struct Args {
    /// Server base URL; several (comma-separated or the flag repeated) spread the clients
    /// over the nodes of one scale-out deployment.
    ///
    /// Client i joins room i % rooms on node (i / rooms) % nodes, so every room has members
    /// on every node once there are rooms x nodes clients; churning clients take the nodes
    /// in turn. The report's `url` is the first URL, `urls` all of them.
    #[arg(
        long = "url",
        value_name = "URL",
        value_delimiter = ',',
        num_args = 1..,
        default_value = "ws://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
    /// Request path per room; `{room}` is replaced by the room number.
    #[arg(long, default_value = "/chat/r{room}")]
    pub path: String,
    /// Clients in total; client i joins room i % rooms.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Senders in total (clients 0..senders, so spread over the rooms).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per sender (soak: derived from --duration and --rate instead).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Load mode.
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// Closed loop: own messages each sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub window: u64,
    /// Fixed rate: messages per second, all senders together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Idle: seconds to hold the connections open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Soak: seconds the senders send for.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Soak: extra clients per second (all processes together) that connect to a random
    /// room, live 0.1-2 s and disconnect.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Soak: fraction of the churning clients that send one message while connected.
    #[arg(long, default_value_t = 0.5)]
    pub churn_send: f64,
    /// Extra payload bytes per message (the header is about 25 bytes).
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    /// New connections per second while ramping up (all processes together).
    #[arg(long, default_value_t = 4000.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds a connection attempt may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds without any delivery after which the run ends (and what is missing is lost).
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Worker processes to spread the clients over.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Internal: run as worker K of --procs, driven over stdin/stdout.
    #[arg(long, hide = true)]
    pub worker: Option<usize>,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        if self.urls.is_empty() || self.urls.iter().any(|u| u.trim().is_empty()) {
            return Err("--url must not be empty (nor have empty entries)".into());
        }
        if self.clients == 0 || self.rooms == 0 || self.procs == 0 {
            return Err("--clients, --rooms and --procs must be at least 1".into());
        }
        if self.rooms > self.clients {
            return Err("--rooms cannot exceed --clients".into());
        }
        if self.senders > self.clients {
            return Err("--senders cannot exceed --clients".into());
        }
        if self.mode == Mode::Closed && self.window == 0 {
            return Err("--window must be at least 1".into());
        }
        if self.mode.fixed_rate() && !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err("--rate must be a positive number".into());
        }
        if self.mode == Mode::Soak && !(self.duration > 0.0 && self.duration.is_finite()) {
            return Err("--duration must be a positive number".into());
        }
        if !(self.churn >= 0.0 && self.churn.is_finite()) {
            return Err("--churn must be a number of clients per second, 0 or more".into());
        }
        if self.churn > 0.0 && self.mode != Mode::Soak {
            return Err("--churn needs --mode soak".into());
        }
        if !(0.0..=1.0).contains(&self.churn_send) {
            return Err("--churn-send must be between 0 and 1".into());
        }
        if !self.path.contains("{room}") && self.rooms > 1 {
            return Err("--path needs {room} when there are several rooms".into());
        }
        Ok(())
    }

    /// Fills in what other flags imply: a soak run's senders each send as many messages as
    /// fit in `--duration` at `--rate`, so every process (and every receiver) knows how
    /// many to expect without asking the senders.
    fn resolve(&mut self) {
        if self.mode == Mode::Soak {
            self.messages = soak_messages(self.duration, self.rate, self.senders);
        }
    }

    /// The node (index into `--url`) client `client` connects to: the clients of a room
    /// (`client % rooms`) take the nodes in turn, so each room has members on every node.
    pub fn node_of(&self, client: usize) -> usize {
        (client / self.rooms.max(1)) % self.urls.len().max(1)
    }

    /// The URL of room `room` on node `node` (an index into `--url`).
    pub fn room_url(&self, node: usize, room: usize) -> String {
        format!(
            "{}{}",
            self.urls[node % self.urls.len()],
            self.path.replace("{room}", &room.to_string())
        )
    }

    /// The URL client `client` connects to: its room on its node.
    pub fn client_url(&self, client: usize) -> String {
        self.room_url(self.node_of(client), client % self.rooms)
    }
}

/// Messages per sender in a soak run. Sender `g` of `senders` sends message `n` at
/// `g / rate + n * senders / rate` seconds, so with `n < duration * rate / senders` every
/// message is due before `duration`.
fn soak_messages(duration: f64, rate: f64, senders: usize) -> u64 {
    if senders == 0 {
        return 0;
    }
    (duration * rate / senders as f64).floor() as u64
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("chat-loadgen: {e}");
        return ExitCode::from(2);
    }
    args.resolve();
    let nofile = raise_nofile_limit();
    let per_proc = (args.clients.div_ceil(args.procs) + churn::max_in_flight(&args)) as u64;
    if nofile != 0 && per_proc + 32 > nofile {
        eprintln!(
            "chat-loadgen: {per_proc} clients per process need more than the {nofile} open \
             files allowed; use --procs {}",
            (args.clients as u64).div_ceil(nofile.saturating_sub(32).max(1))
        );
        return ExitCode::from(2);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let result: Result<Report, String> = match args.worker {
        Some(k) => {
            // A worker prints its own report for the parent and exits.
            let report = runtime.block_on(worker::run(args.clone(), k, worker::Control::Pipe));
            return match report {
                Ok(r) => {
                    println!(
                        "R {}",
                        serde_json::to_string(&r).expect("report serializes")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chat-loadgen worker {k}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None if args.procs == 1 => runtime
            .block_on(worker::run(args.clone(), 0, worker::Control::Alone))
            .map(|w: WorkerReport| Report::merge(&args, vec![w])),
        None => runtime.block_on(worker::parent(args.clone())),
    };
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("report serializes")
            );
            if report.connect.failed > 0 {
                eprintln!(
                    "chat-loadgen: {} of {} connections failed",
                    report.connect.failed, args.clients
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_senders_send_what_fits_in_the_duration() {
        assert_eq!(soak_messages(60.0, 500.0, 50), 600);
        assert_eq!(soak_messages(3.0, 100.0, 7), 42, "rounded down");
        assert_eq!(soak_messages(3.0, 100.0, 0), 0, "no senders");
        // The last message of the last sender is due before the end.
        let (d, rate, senders) = (3.0, 100.0, 7usize);
        let n = soak_messages(d, rate, senders);
        let last = (senders - 1) as f64 / rate + (n - 1) as f64 * senders as f64 / rate;
        assert!(last < d, "{last}");

        let mut args = Args::parse_from([
            "chat-loadgen",
            "--mode",
            "soak",
            "--duration",
            "10",
            "--rate",
            "20",
            "--senders",
            "4",
        ]);
        args.check().unwrap();
        args.resolve();
        assert_eq!(args.messages, 50);
        let mut rate = Args::parse_from(["chat-loadgen", "--mode", "rate", "--messages", "7"]);
        rate.resolve();
        assert_eq!(rate.messages, 7, "only soak derives --messages");
    }

    #[test]
    fn room_urls_fill_in_the_room() {
        let args = Args::parse_from(["chat-loadgen", "--url", "ws://h:1"]);
        assert_eq!(args.urls, ["ws://h:1"]);
        assert_eq!(args.room_url(0, 3), "ws://h:1/chat/r3");
        let default = Args::parse_from(["chat-loadgen", "--rooms", "4"]);
        assert_eq!(default.urls, ["ws://127.0.0.1:8080"]);
        // One URL: every client on it, in its room, exactly as before.
        for i in 0..20 {
            assert_eq!(default.node_of(i), 0);
            assert_eq!(
                default.client_url(i),
                format!("ws://127.0.0.1:8080/chat/r{}", i % 4)
            );
        }
        let fixed = Args::parse_from(["chat-loadgen", "--url", "ws://h:1", "--path", "/x"]);
        assert_eq!(fixed.client_url(5), "ws://h:1/x");
    }

    #[test]
    fn several_urls_by_comma_or_repetition() {
        let comma = Args::parse_from(["chat-loadgen", "--url", "ws://a:1,ws://b:2"]);
        let repeated = Args::parse_from(["chat-loadgen", "--url", "ws://a:1", "--url", "ws://b:2"]);
        let both = Args::parse_from([
            "chat-loadgen",
            "--url",
            "ws://a:1,ws://b:2",
            "--url",
            "ws://c:3",
        ]);
        assert_eq!(comma.urls, ["ws://a:1", "ws://b:2"]);
        assert_eq!(repeated.urls, comma.urls);
        assert_eq!(both.urls, ["ws://a:1", "ws://b:2", "ws://c:3"]);
        assert_eq!(comma.room_url(1, 0), "ws://b:2/chat/r0");
        let empty = Args::parse_from(["chat-loadgen", "--url", "ws://a:1,"]);
        assert!(empty.check().is_err(), "an empty entry is a mistake");
    }

    #[test]
    fn every_room_has_members_on_every_node() {
        // 3 rooms, 2 nodes: clients 0-2 (the rooms' first members) on node 0, 3-5 on
        // node 1, 6-8 on node 0 again, ...
        let args = Args::parse_from([
            "chat-loadgen",
            "--url",
            "ws://a:1,ws://b:2",
            "--clients",
            "14",
            "--rooms",
            "3",
        ]);
        let nodes: Vec<usize> = (0..14).map(|i| args.node_of(i)).collect();
        assert_eq!(nodes, [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0]);
        assert_eq!(args.client_url(0), "ws://a:1/chat/r0");
        assert_eq!(args.client_url(4), "ws://b:2/chat/r1");
        assert_eq!(args.client_url(13), "ws://a:1/chat/r1");
        // Per (node, room): members are within one of each other, and none is empty.
        let mut members = [[0u32; 3]; 2];
        for i in 0..args.clients {
            members[args.node_of(i)][i % args.rooms] += 1;
        }
        assert_eq!(members, [[3, 3, 2], [2, 2, 2]]);

        // Three nodes, one room (fan-out): round robin.
        let one_room = Args::parse_from(["chat-loadgen", "--url", "ws://a,ws://b,ws://c"]);
        let nodes: Vec<usize> = (0..7).map(|i| one_room.node_of(i)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
    }
}
