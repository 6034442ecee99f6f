//! The servers under test and the scenarios they run, in full and quick form.

use std::path::Path;
use std::time::Duration;

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// This project's `chat-server`, tutorial semantics, rate limit off.
    Ours,
    /// `naive-chat-server`: a straightforward tokio-tungstenite broadcast server.
    Tungstenite,
    /// `bench/node-ws/server.js`: Node with the `ws` package.
    Node,
}

impl Server {
    /// Every server, in the order they alternate.
    pub const ALL: [Server; 3] = [Server::Ours, Server::Tungstenite, Server::Node];

    pub fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Tungstenite => "tungstenite",
            Server::Node => "node",
        }
    }

    /// Program and arguments that start it on a free port.
    pub fn command(self, bin_dir: &Path, root: &Path) -> (String, Vec<String>) {
        let bin = |name: &str| bin_dir.join(name).to_string_lossy().into_owned();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        match self {
            Server::Ours => (
                bin("chat-server"),
                args(&[
                    "--port",
                    "0",
                    "--seed-compat",
                    "--rate-per-second",
                    "0",
                    "--max-connections",
                    "20000",
                    // Every load generator client comes from 127.0.0.1.
                    "--max-connections-per-ip",
                    "0",
                ]),
            ),
            Server::Tungstenite => (bin("naive-chat-server"), args(&["--port", "0"])),
            Server::Node => {
                let script = root.join("bench/node-ws/server.js");
                (
                    "node".into(),
                    vec![
                        script.to_string_lossy().into_owned(),
                        "--port".into(),
                        "0".into(),
                    ],
                )
            }
        }
    }
}

/// What a scenario measures, which decides how it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Closed loop: deliveries per second.
    Throughput,
    /// Fixed rate: latency.
    Latency,
    /// Idle connections: memory per connection.
    Idle,
}

/// How the load generator drives the clients.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Each sender keeps `window` messages in flight.
    Closed { window: u64 },
    /// `rate` messages per second in total.
    Rate { rate: f64 },
    /// Connect, join, hold `hold` seconds.
    Idle { hold: f64 },
}

/// One benchmark scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub kind: Kind,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub load: Load,
    /// Messages per sender for the Rust servers.
    pub messages_fast: u64,
    /// Messages per sender for the Node server (about 20 times slower).
    pub messages_node: u64,
    /// Longest a loadgen run may take before it is killed.
    pub timeout: Duration,
    /// Load generator processes at least (more when the clients need more open files).
    pub min_procs: usize,
}

impl Scenario {
    /// Messages each sender sends against `server`.
    pub fn messages(&self, server: Server) -> u64 {
        match server {
            Server::Node => self.messages_node,
            Server::Ours | Server::Tungstenite => self.messages_fast,
        }
    }

    /// Load generator processes: one per 9 000 clients (a process may open only so many
    /// files).
    pub fn procs(&self) -> usize {
        self.clients.div_ceil(9000).max(self.min_procs)
    }

    /// The load generator's arguments against `url` for `server`.
    pub fn loadgen_args(&self, url: &str, server: Server, label: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--url".into(),
            url.into(),
            "--clients".into(),
            self.clients.to_string(),
            "--rooms".into(),
            self.rooms.to_string(),
            "--senders".into(),
            self.senders.to_string(),
            "--messages".into(),
            self.messages(server).to_string(),
        ];
        match self.load {
            Load::Closed { window } => a.extend([
                "--mode".into(),
                "closed".into(),
                "--window".into(),
                window.to_string(),
            ]),
            Load::Rate { rate } => a.extend([
                "--mode".into(),
                "rate".into(),
                "--rate".into(),
                rate.to_string(),
            ]),
            Load::Idle { hold } => a.extend([
                "--mode".into(),
                "idle".into(),
                "--hold".into(),
                hold.to_string(),
            ]),
        }
        a.extend([
            "--procs".into(),
            self.procs().to_string(),
            "--label".into(),
            label.into(),
        ]);
        a
    }

    /// A one-line description for the report.
    pub fn describe(&self) -> String {
        let who = if self.rooms == 1 {
            format!("1 room, {} clients", self.clients)
        } else {
            format!(
                "{} rooms x {} clients",
                self.rooms,
                self.clients / self.rooms
            )
        };
        let procs = match self.procs() {
            1 => String::new(),
            n => format!(", {n} load generator processes"),
        };
        match self.load {
            Load::Closed { window } => format!(
                "{who}, {} senders, closed loop (window {window}), {} messages per sender \
                 ({} for node){procs}",
                self.senders, self.messages_fast, self.messages_node
            ),
            Load::Rate { rate } => format!(
                "{who}, {} senders, {rate} messages/s in total, {} messages per sender \
                 ({:.0} s)",
                self.senders,
                self.messages_fast,
                self.messages_fast as f64 * self.senders as f64 / rate
            ),
            Load::Idle { hold } => {
                format!("{who}, idle connections held {hold} s after all joined")
            }
        }
    }
}

fn throughput(
    name: &'static str,
    (clients, rooms, senders): (usize, usize, usize),
    window: u64,
    (messages_fast, messages_node): (u64, u64),
) -> Scenario {
    Scenario {
        name,
        kind: Kind::Throughput,
        clients,
        rooms,
        senders,
        load: Load::Closed { window },
        messages_fast,
        messages_node,
        timeout: Duration::from_secs(120),
        min_procs: 1,
    }
}

fn latency(name: &'static str, clients: usize, senders: usize, rate: f64, secs: f64) -> Scenario {
    let messages = (rate * secs / senders as f64).round() as u64;
    Scenario {
        name,
        kind: Kind::Latency,
        clients,
        rooms: 1,
        senders,
        load: Load::Rate { rate },
        messages_fast: messages,
        messages_node: messages,
        timeout: Duration::from_secs(90),
        min_procs: 1,
    }
}

/// Idle clients in rooms of 1 000 (chat-server refuses joins beyond 10 000 members per
/// room by default, and a big room is not what this scenario measures).
fn idle(name: &'static str, clients: usize, hold: f64) -> Scenario {
    Scenario {
        name,
        kind: Kind::Idle,
        clients,
        rooms: clients.div_ceil(1000),
        senders: 0,
        load: Load::Idle { hold },
        messages_fast: 0,
        messages_node: 0,
        timeout: Duration::from_secs(90),
        min_procs: 1,
    }
}

/// The full benchmark.
pub fn full() -> Vec<Scenario> {
    vec![
        // Window 64: enough in flight to keep every server busy (8 leaves them waiting on
        // round trips), and 5 x 64 stays well under chat-server's 1 024-frame queues. Two
        // load generator processes: one alone saturates its core before the fast servers do.
        Scenario {
            min_procs: 2,
            ..throughput("fanout", (1000, 1, 5), 64, (2000, 100))
        },
        throughput("many-rooms", (1000, 200, 1000), 4, (200, 20)),
        latency("latency-100", 100, 10, 200.0, 5.0),
        latency("latency-1000", 1000, 10, 200.0, 5.0),
        idle("idle-1000", 1000, 3.0),
        idle("idle-5000", 5000, 3.0),
        idle("idle-18000", 18000, 3.0),
    ]
}

/// A small version that keeps the harness working (CI); its numbers mean little.
pub fn quick() -> Vec<Scenario> {
    let mut s = vec![
        throughput("fanout", (200, 1, 5), 64, (200, 50)),
        throughput("many-rooms", (200, 40, 200), 4, (50, 10)),
        latency("latency-100", 100, 10, 200.0, 2.0),
        idle("idle-1000", 1000, 2.0),
    ];
    for sc in &mut s {
        sc.timeout = Duration::from_secs(60);
    }
    s
}
