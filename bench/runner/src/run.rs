//! One run: start a server, drive it with the load generator, measure it, stop it.

use crate::procs::{self, ServerProcess};
use crate::scenarios::{Kind, Scenario, Server};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the programs are.
pub struct Env {
    /// `target/release`: chat-server, naive-chat-server, chat-loadgen.
    pub bin_dir: PathBuf,
    /// The workspace root (for bench/node-ws/server.js).
    pub root: PathBuf,
    /// Server stderr logs go here.
    pub log_dir: PathBuf,
}

/// Everything one run recorded (one element of `results.json`'s `runs`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub server: String,
    pub scenario: String,
    pub round: usize,
    pub messages_per_sender: u64,
    /// The load generator's arguments.
    pub loadgen_args: Vec<String>,
    /// Why the run produced no (or no trustworthy) result.
    pub error: Option<String>,
    /// The load generator's JSON object, as printed.
    pub loadgen: Option<serde_json::Value>,
    pub loadgen_wall_s: f64,
    pub loadgen_stderr_tail: Vec<String>,
    /// Server CPU seconds (user + system) while the load generator ran.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_s_per_million_deliveries: Option<f64>,
    /// Server peak RSS (VmHWM) at the end of the run.
    pub server_hwm_kib: Option<u64>,
    /// Server RSS right after it started listening.
    pub server_rss_start_kib: Option<u64>,
    /// Idle runs: server RSS about 1 s after all clients had joined.
    pub server_rss_loaded_kib: Option<u64>,
    /// Idle runs: (loaded - start) / connections.
    pub idle_kib_per_connection: Option<f64>,
    /// Set when the server was no longer running at the end of the run.
    pub server_died: Option<String>,
    /// How the server ended when it was stopped.
    pub server_stop: Option<String>,
}

/// The parts of the load generator's JSON the report uses.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Loadgen {
    pub connect: Connect,
    pub sent: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    pub latency_us: Latency,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub disconnects: BTreeMap<String, u64>,
    pub loadgen_cpu_s: f64,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Connect {
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl RunRecord {
    /// The load generator's figures, when the run produced them.
    pub fn loadgen(&self) -> Option<Loadgen> {
        serde_json::from_value(self.loadgen.clone()?).ok()
    }

    /// Whether its figures may be used (medians, chart).
    pub fn usable(&self) -> bool {
        self.error.is_none() && self.loadgen.is_some()
    }

    /// What is wrong with this run, if anything (for the Problems section).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.error {
            p.push(e.clone());
        }
        if let Some(d) = &self.server_died {
            p.push(format!("server died during the run: {d}"));
        }
        if let Some(lg) = self.loadgen() {
            let mut count = |what: &str, n: u64| {
                if n > 0 {
                    p.push(format!("{n} {what}"));
                }
            };
            count("lost", lg.lost);
            count("duplicated", lg.duplicated);
            count("out of order", lg.out_of_order);
            count("unexpected lines", lg.unexpected);
            if lg.connect.failed > 0 {
                p.push(format!(
                    "{} connections failed ({})",
                    lg.connect.failed,
                    reasons(&lg.connect.errors)
                ));
            }
            if !lg.disconnects.is_empty() {
                p.push(format!("disconnects: {}", reasons(&lg.disconnects)));
            }
        }
        p
    }
}

fn reasons(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `scenario` once against `server`.
pub fn run_once(env: &Env, scenario: &Scenario, server: Server, round: usize) -> RunRecord {
    let label = format!("{}/{}/{round}", server.name(), scenario.name);
    let mut rec = RunRecord {
        server: server.name().into(),
        scenario: scenario.name.into(),
        round,
        messages_per_sender: scenario.messages(server),
        loadgen_args: Vec::new(),
        error: None,
        loadgen: None,
        loadgen_wall_s: 0.0,
        loadgen_stderr_tail: Vec::new(),
        server_cpu_s: None,
        server_cpu_s_per_million_deliveries: None,
        server_hwm_kib: None,
        server_rss_start_kib: None,
        server_rss_loaded_kib: None,
        idle_kib_per_connection: None,
        server_died: None,
        server_stop: None,
    };

    let (program, args) = server.command(&env.bin_dir, &env.root);
    let log = log_path(env, server, scenario, round);
    let mut proc = match ServerProcess::start(&program, &args, &log, Duration::from_secs(15)) {
        Ok(p) => p,
        Err(e) => {
            rec.error = Some(format!("server did not start: {e}"));
            return rec;
        }
    };
    let pid = proc.pid;
    rec.server_rss_start_kib = procs::status_kib(pid, "VmRSS");

    let url = format!("ws://127.0.0.1:{}", proc.port);
    rec.loadgen_args = scenario.loadgen_args(&url, server, &label);
    let cpu_before = procs::cpu_seconds(pid);
    let mut rss_loaded = None;
    let outcome = procs::run_loadgen(
        &env.bin_dir.join("chat-loadgen"),
        &rec.loadgen_args,
        scenario.timeout,
        Duration::from_secs(1),
        || rss_loaded = procs::status_kib(pid, "VmRSS"),
    );
    let cpu_after = procs::cpu_seconds(pid);
    rec.server_hwm_kib = procs::status_kib(pid, "VmHWM");
    if let Some(status) = proc.exited() {
        rec.server_died = Some(format!("{status}; see {}", log.display()));
    }
    rec.server_stop = Some(proc.stop());

    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            rec.error = Some(e);
            return rec;
        }
    };
    rec.loadgen_wall_s = outcome.wall_s;
    rec.loadgen_stderr_tail = outcome.stderr_tail;
    let last_words = rec.loadgen_stderr_tail.last().cloned().unwrap_or_default();
    if outcome.timed_out {
        rec.error = Some(format!(
            "loadgen killed after {:?} (last stderr: {last_words:?})",
            scenario.timeout
        ));
    } else if !outcome.status.is_some_and(|s| s.success()) {
        rec.error = Some(format!(
            "loadgen failed: {} (last stderr: {last_words:?})",
            outcome.status.map(|s| s.to_string()).unwrap_or_default()
        ));
    }
    let json = outcome
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match json.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v)) => rec.loadgen = Some(v),
        Some(Err(e)) => {
            rec.error
                .get_or_insert(format!("loadgen output is not JSON: {e}"));
        }
        None => {
            rec.error.get_or_insert("loadgen printed no result".into());
        }
    }

    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        rec.server_cpu_s = Some(b - a);
    }
    if let Some(lg) = rec.loadgen() {
        if let Some(cpu) = rec.server_cpu_s {
            if lg.deliveries > 0 {
                rec.server_cpu_s_per_million_deliveries = Some(cpu / lg.deliveries as f64 * 1e6);
            }
        }
        if scenario.kind == Kind::Idle {
            rec.server_rss_loaded_kib = rss_loaded;
            if rss_loaded.is_none() {
                rec.error
                    .get_or_insert("idle run: no RSS sample after `ready`".into());
            }
            if let (Some(base), Some(loaded)) = (rec.server_rss_start_kib, rss_loaded) {
                // Connections the server still held (refused joins close at once).
                let dropped: u64 = lg.disconnects.values().sum();
                let held = lg.connect.ok.saturating_sub(dropped);
                if held > 0 {
                    rec.idle_kib_per_connection = Some((loaded as f64 - base as f64) / held as f64);
                }
            }
        }
    }
    rec
}

/// A one-line summary of a run for the progress output.
pub fn summary(rec: &RunRecord, kind: Kind) -> String {
    if let Some(e) = &rec.error {
        return format!("FAILED: {e}");
    }
    let Some(lg) = rec.loadgen() else {
        return "no result".into();
    };
    let cpu = rec
        .server_cpu_s
        .map(|c| format!("{c:.2}"))
        .unwrap_or("?".into());
    let mut s = match kind {
        Kind::Throughput | Kind::Latency => format!(
            "{:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms, server cpu {cpu} s, {} s wall",
            lg.deliveries_per_s,
            lg.latency_us.p50 as f64 / 1000.0,
            lg.latency_us.p99 as f64 / 1000.0,
            fmt_s(rec.loadgen_wall_s)
        ),
        Kind::Idle => format!(
            "{} connections, {} KiB/connection, server cpu {cpu} s",
            lg.connect.ok,
            rec.idle_kib_per_connection
                .map(|k| format!("{k:.1}"))
                .unwrap_or("?".into())
        ),
    };
    let problems = rec.problems();
    if !problems.is_empty() {
        s.push_str(&format!(" [PROBLEM: {}]", problems.join("; ")));
    }
    s
}

fn fmt_s(s: f64) -> String {
    format!("{s:.1}")
}

/// The server's stderr log of a run.
fn log_path(env: &Env, server: Server, scenario: &Scenario, round: usize) -> PathBuf {
    env.log_dir
        .join(format!("{}-{}-{round}.log", server.name(), scenario.name))
}
