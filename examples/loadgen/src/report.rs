//! What a run measured: per worker process, and merged into the one JSON object printed.

use crate::churn::ChurnStats;
use crate::client::Reasons;
use crate::{Args, Mode};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One worker process's measurements (sent to the parent as JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub connected: u64,
    pub connect_failed: u64,
    pub connect_errors: Reasons,
    pub connect_seconds: f64,
    pub sent: u64,
    pub expected: u64,
    pub deliveries: u64,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub notices: u64,
    pub churn_messages: u64,
    pub unexpected: u64,
    pub disconnects: Reasons,
    pub t0_us: u64,
    pub last_delivery_us: u64,
    /// When the load phase ended (senders done and drained), monotonic µs.
    pub end_us: u64,
    /// Soak: what this process's churning clients did.
    pub churn: Option<ChurnStats>,
    /// Recorded latency buckets: (µs, count).
    pub latency_us: Vec<(u64, u64)>,
    pub cpu_seconds: f64,
}

/// Connection set-up figures.
#[derive(Debug, Serialize)]
pub struct Connect {
    pub ok: u64,
    pub failed: u64,
    pub errors: Reasons,
    pub seconds: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// A soak run's own figures.
#[derive(Debug, Serialize)]
pub struct Soak {
    /// `--duration`: how long the senders send.
    pub duration_s: f64,
    /// From the start of the load to the end of the drain.
    pub elapsed_s: f64,
    /// `--churn`: churning clients per second asked for.
    pub churn_rate: f64,
    /// What the churning clients did.
    pub churn: ChurnStats,
    /// Churners' messages the steady clients received (counted, not checked).
    pub churn_messages_received: u64,
}

/// The run's result, printed as one JSON object.
#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub mode: Mode,
    /// The first `--url` (what older readers of this report expect).
    pub url: String,
    /// Every `--url`: the nodes the clients were spread over.
    pub urls: Vec<String>,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub messages_per_sender: u64,
    pub window: Option<u64>,
    pub rate: Option<f64>,
    pub procs: usize,
    pub connect: Connect,
    pub sent: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    pub latency_us: Latency,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub notices: u64,
    pub unexpected: u64,
    /// Clients whose connection ended before the run did, by reason.
    pub disconnects: Reasons,
    pub loadgen_cpu_s: f64,
    /// Soak runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

fn add(into: &mut Reasons, from: &Reasons) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Report {
    /// Merges the workers' reports of one run.
    pub fn merge(args: &Args, workers: Vec<WorkerReport>) -> Report {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("bounds");
        let mut connect_errors = Reasons::new();
        let mut disconnects = Reasons::new();
        let mut sum = WorkerReport::default();
        let mut t0 = u64::MAX;
        let mut last = 0;
        let mut end = 0;
        let mut churn = ChurnStats::default();
        let mut connect_seconds: f64 = 0.0;
        for w in &workers {
            for &(v, n) in &w.latency_us {
                let _ = hist.record_n(v.clamp(1, 100_000_000), n);
            }
            add(&mut connect_errors, &w.connect_errors);
            add(&mut disconnects, &w.disconnects);
            sum.connected += w.connected;
            sum.connect_failed += w.connect_failed;
            sum.sent += w.sent;
            sum.expected += w.expected;
            sum.deliveries += w.deliveries;
            sum.unique += w.unique;
            sum.duplicated += w.duplicated;
            sum.out_of_order += w.out_of_order;
            sum.notices += w.notices;
            sum.churn_messages += w.churn_messages;
            if let Some(c) = &w.churn {
                churn.add(c);
            }
            end = end.max(w.end_us);
            sum.unexpected += w.unexpected;
            sum.cpu_seconds += w.cpu_seconds;
            connect_seconds = connect_seconds.max(w.connect_seconds);
            if w.t0_us > 0 {
                t0 = t0.min(w.t0_us);
            }
            last = last.max(w.last_delivery_us);
        }
        let duration_s = if t0 != u64::MAX && last > t0 {
            (last - t0) as f64 / 1e6
        } else {
            0.0
        };
        let per_s = if duration_s > 0.0 {
            sum.deliveries as f64 / duration_s
        } else {
            0.0
        };
        let q = |p: f64| {
            if hist.is_empty() {
                0
            } else {
                hist.value_at_quantile(p)
            }
        };
        Report {
            label: args.label.clone(),
            mode: args.mode,
            url: args.urls[0].clone(),
            urls: args.urls.clone(),
            clients: args.clients,
            rooms: args.rooms,
            senders: if args.mode == Mode::Idle {
                0
            } else {
                args.senders
            },
            messages_per_sender: args.messages,
            window: (args.mode == Mode::Closed).then_some(args.window),
            rate: args.mode.fixed_rate().then_some(args.rate),
            procs: args.procs,
            connect: Connect {
                ok: sum.connected,
                failed: sum.connect_failed,
                errors: connect_errors,
                seconds: connect_seconds,
            },
            sent: sum.sent,
            expected_deliveries: sum.expected,
            deliveries: sum.deliveries,
            duration_s,
            deliveries_per_s: per_s,
            latency_us: Latency {
                samples: hist.len(),
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: if hist.is_empty() { 0 } else { hist.max() },
                mean: if hist.is_empty() { 0.0 } else { hist.mean() },
            },
            lost: sum.expected.saturating_sub(sum.unique),
            duplicated: sum.duplicated,
            out_of_order: sum.out_of_order,
            notices: sum.notices,
            unexpected: sum.unexpected,
            disconnects,
            loadgen_cpu_s: sum.cpu_seconds,
            soak: (args.mode == Mode::Soak).then(|| Soak {
                duration_s: args.duration,
                elapsed_s: if t0 != u64::MAX && end > t0 {
                    (end - t0) as f64 / 1e6
                } else {
                    0.0
                },
                churn_rate: args.churn,
                churn,
                churn_messages_received: sum.churn_messages,
            }),
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
