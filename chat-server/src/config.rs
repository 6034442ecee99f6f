//! Command-line flags (each with an environment fallback) and the room config they produce.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_core::{RateLimit, RoomConfig};
use clap::Parser;

/// WebSocket chat server: serves a browser client on `/` and chat rooms on `/chat/{room}`.
///
/// Every flag can also be set through the environment variable shown with it.
/// Log verbosity comes from `RUST_LOG` (e.g. `RUST_LOG=chat_server=debug`).
#[derive(Parser, Debug, Clone)]
#[command(name = "chat-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on. Use 0.0.0.0 or :: to accept connections from other machines.
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// TCP port to listen on; 0 picks a free one (printed at start-up).
    #[arg(long, env = "CHAT_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Behave exactly like the tutorial's server: no welcome, join notices, commands or
    /// history; members receive only "NICK: TEXT" and " .... NICK has left." lines.
    #[arg(long, env = "CHAT_SEED_COMPAT")]
    pub seed_compat: bool,

    /// Most WebSocket connections at once; upgrades beyond it get HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most WebSocket connections at once from one source IP address; upgrades beyond it get
    /// HTTP 429. 0 means no per-address limit (e.g. behind a proxy that connects for everyone).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,

    /// Most rooms at once; a join that would create one more is refused (close 1013).
    #[arg(long, env = "CHAT_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Largest WebSocket message or frame accepted, in bytes; larger ones close the
    /// connection with 1009.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest chat message, in bytes; longer text gets an error line (the connection stays).
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Most members in one room; joins beyond it are refused (close 1013).
    #[arg(long, env = "CHAT_MAX_ROOM_MEMBERS", default_value_t = 10_000)]
    pub max_room_members: usize,

    /// Broadcast events each room keeps for joiners and resumes (0 disables history).
    #[arg(long, env = "CHAT_HISTORY", default_value_t = 100)]
    pub history: usize,

    /// Messages a member may send back to back before the rate limit applies.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,

    /// Sustained messages per second per member; 0 turns rate limiting off.
    #[arg(long, env = "CHAT_RATE_PER_SECOND", default_value_t = 10)]
    pub rate_per_second: u32,

    /// Outbound frames queued per connection; a client that falls this far behind is
    /// disconnected with 1008 ("too slow") instead of being buffered without bound.
    #[arg(long, env = "CHAT_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Time a client has to send its complete HTTP request (upgrade included).
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// How often the server pings each client.
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// A client silent (no frame, not even a pong) for this long is closed with 1001.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Accept WebSocket upgrades only from pages of these origins (repeat the flag or
    /// separate with commas, e.g. https://chat.example.com). Unset: any origin. Requests
    /// without an Origin header (non-browser clients) are always accepted.
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve HTTPS and `wss://` on the port with this certificate chain (PEM); needs
    /// `--tls-key`.
    #[arg(long, env = "CHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) for `--tls-cert`.
    #[arg(long, env = "CHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Share rooms with other chat-server processes through this Redis server
    /// (e.g. redis://127.0.0.1:6379/). Unset: this process is on its own.
    #[arg(long, env = "CHAT_REDIS")]
    pub redis: Option<String>,

    /// This node's name in logs, `/healthz` and Redis (with `--redis`); default random.
    #[arg(long, env = "CHAT_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// With `--redis`: a node silent in Redis this long is dead, and the others announce that
    /// its members left.
    #[arg(long, env = "CHAT_NODE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub node_timeout: Duration,

    /// How long shutdown waits for clients to acknowledge the 1001 close.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// Node names are 1-64 of `[A-Za-z0-9_.-]`, so they are safe in logs and Redis values.
fn parse_node_id(name: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("use 1-64 of A-Z a-z 0-9 _ - .".to_owned())
    }
}

impl Config {
    /// The defaults on an ephemeral port, as if only `--port 0` were given (environment
    /// fallbacks still apply). Handy for tests and embedding.
    pub fn defaults() -> Config {
        Config::parse_from(["chat-server", "--port", "0"])
    }

    /// The configuration every room is created with.
    pub fn room_config(&self) -> RoomConfig {
        let base = if self.seed_compat {
            RoomConfig::seed()
        } else {
            RoomConfig {
                history: self.history,
                ..RoomConfig::default()
            }
        };
        RoomConfig {
            max_message_bytes: self.max_message_bytes,
            max_members: self.max_room_members,
            rate_limit: (self.rate_per_second > 0).then_some(RateLimit {
                burst: self.rate_burst,
                per_second: self.rate_per_second,
            }),
            ..base
        }
    }
}
