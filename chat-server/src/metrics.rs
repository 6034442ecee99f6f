//! Server counters, exposed on `GET /metrics` in the Prometheus text format.

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a WebSocket handshake was turned away.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `max_connections`, `origin`, `bad_request` or `version`.
    pub reason: &'static str,
}

/// Every counter the server keeps. Cheap to update from any task (atomics).
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Rooms with at least one member.
    pub rooms: Gauge,
    /// Text frames received from clients.
    pub messages_in: Counter,
    /// Frames queued to clients (one per recipient).
    pub messages_out: Counter,
    /// Clients closed with 1008 because their outbound queue was full.
    pub slow_consumer_disconnects: Counter,
    /// Upgrade requests refused before the handshake, by reason.
    pub rejected_handshakes: Family<RejectLabels, Counter>,
    /// With `--redis`: 1 while Redis answers heartbeats, else 0.
    pub redis_up: Gauge,
    /// With `--redis`: inputs of this node's clients appended to room logs.
    pub log_appends: Counter,
    /// With `--redis`: inputs that could not be appended (the client got an error or a close).
    pub log_append_failures: Counter,
    /// With `--redis`: log entries applied to this node's room copies.
    pub log_entries_applied: Counter,
    /// With `--redis`: leaves this node appended for members of dead nodes.
    pub dead_node_leaves: Counter,
    /// The same metrics, registered once for encoding (they share their atomics).
    registry: Registry,
}

/// Every reason a handshake can be refused for, exported as 0 from the start.
const REJECT_REASONS: [&str; 4] = ["max_connections", "origin", "bad_request", "version"];

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            rejected_handshakes: Family::default(),
            redis_up: Gauge::default(),
            log_appends: Counter::default(),
            log_append_failures: Counter::default(),
            log_entries_applied: Counter::default(),
            dead_node_leaves: Counter::default(),
            registry: Registry::with_prefix("chat"),
        };
        for reason in REJECT_REASONS {
            let _ = metrics
                .rejected_handshakes
                .get_or_create(&RejectLabels { reason });
        }
        metrics.register();
        metrics
    }
}

impl Metrics {
    /// Counts a refused handshake.
    pub fn reject(&self, reason: &'static str) {
        self.rejected_handshakes
            .get_or_create(&RejectLabels { reason })
            .inc();
    }

    /// Registers every metric (clones share their values) with the registry, once.
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        registry.register("rooms", "Rooms with members", self.rooms.clone());
        registry.register(
            "messages_in",
            "Text frames received from clients",
            self.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Frames queued to clients, one per recipient",
            self.messages_out.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Clients closed with 1008 because they fell behind",
            self.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "rejected_handshakes",
            "WebSocket upgrades refused before the handshake",
            self.rejected_handshakes.clone(),
        );
        registry.register(
            "redis_up",
            "1 while this --redis node reaches Redis",
            self.redis_up.clone(),
        );
        registry.register(
            "log_appends",
            "Client inputs appended to room logs in Redis",
            self.log_appends.clone(),
        );
        registry.register(
            "log_append_failures",
            "Client inputs that could not be appended (Redis unavailable)",
            self.log_append_failures.clone(),
        );
        registry.register(
            "log_entries_applied",
            "Room log entries applied to this node's room copies",
            self.log_entries_applied.clone(),
        );
        registry.register(
            "dead_node_leaves",
            "Leaves appended for members of nodes that stopped heart-beating",
            self.dead_node_leaves.clone(),
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}
