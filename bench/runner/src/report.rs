//! `results.json` (every raw run) and `results.md` (medians, ratios, problems).

use crate::run::RunRecord;
use crate::scenarios::{Kind, Scenario, Server};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything one invocation measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub scenarios: Vec<ScenarioInfo>,
    pub runs: Vec<RunRecord>,
}

/// When, where and how.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    pub date_utc: String,
    pub command: String,
    pub quick: bool,
    pub rounds: usize,
    pub servers: Vec<String>,
    pub machine: Machine,
    /// Versions of the peers' runtimes (node, ws).
    pub versions: BTreeMap<String, String>,
    /// Open-files limit (soft) the servers and load generator inherited.
    pub nofile_limit: u64,
    pub total_seconds: f64,
}

/// The machine the benchmark ran on.
#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub nproc: usize,
    pub kernel: String,
    pub mem_total_kib: u64,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Machine {
            cpu_model,
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            mem_total_kib,
        }
    }
}

/// A scenario as recorded in `results.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub kind: String,
    pub description: String,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub messages_per_sender: BTreeMap<String, u64>,
}

impl ScenarioInfo {
    pub fn new(s: &Scenario, servers: &[Server]) -> ScenarioInfo {
        ScenarioInfo {
            name: s.name.into(),
            kind: format!("{:?}", s.kind).to_lowercase(),
            description: s.describe(),
            clients: s.clients,
            rooms: s.rooms,
            senders: s.senders,
            messages_per_sender: servers
                .iter()
                .map(|&sv| (sv.name().to_string(), s.messages(sv)))
                .collect(),
        }
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The median of some values (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians over the rounds of one server in one scenario.
#[derive(Debug, Default)]
pub struct Stats {
    pub runs: usize,
    pub usable: usize,
    pub deliveries_per_s: Option<f64>,
    pub deliveries_per_s_min: Option<f64>,
    pub deliveries_per_s_max: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub cpu_s: Option<f64>,
    pub cpu_per_million: Option<f64>,
    pub hwm_mib: Option<f64>,
    pub connections: Option<f64>,
    pub rss_start_mib: Option<f64>,
    pub rss_loaded_mib: Option<f64>,
    pub kib_per_connection: Option<f64>,
}

impl Stats {
    pub fn of(runs: &[RunRecord], scenario: &str, server: &str) -> Stats {
        let mine: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| r.scenario == scenario && r.server == server)
            .collect();
        let mut st = Stats {
            runs: mine.len(),
            ..Stats::default()
        };
        for r in &mine {
            if let Some(lg) = r.loadgen() {
                st.lost += lg.lost;
                st.duplicated += lg.duplicated;
                st.out_of_order += lg.out_of_order;
            }
        }
        let good: Vec<&RunRecord> = mine.into_iter().filter(|r| r.usable()).collect();
        st.usable = good.len();
        let lgs: Vec<_> = good.iter().filter_map(|r| r.loadgen()).collect();
        let med = |f: &dyn Fn(&crate::run::Loadgen) -> f64| median(lgs.iter().map(f).collect());
        let med_rec = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            median(good.iter().filter_map(|r| f(r)).collect())
        };
        let rates: Vec<f64> = lgs.iter().map(|l| l.deliveries_per_s).collect();
        st.deliveries_per_s = median(rates.clone());
        st.deliveries_per_s_min = rates.iter().copied().reduce(f64::min);
        st.deliveries_per_s_max = rates.iter().copied().reduce(f64::max);
        st.p50_ms = med(&|l| l.latency_us.p50 as f64 / 1000.0);
        st.p99_ms = med(&|l| l.latency_us.p99 as f64 / 1000.0);
        st.p999_ms = med(&|l| l.latency_us.p999 as f64 / 1000.0);
        st.connections = med(&|l| {
            let dropped: u64 = l.disconnects.values().sum();
            l.connect.ok.saturating_sub(dropped) as f64
        });
        st.cpu_s = med_rec(&|r| r.server_cpu_s);
        st.cpu_per_million = med_rec(&|r| r.server_cpu_s_per_million_deliveries);
        st.hwm_mib = med_rec(&|r| r.server_hwm_kib.map(mib));
        st.rss_start_mib = med_rec(&|r| r.server_rss_start_kib.map(mib));
        st.rss_loaded_mib = med_rec(&|r| r.server_rss_loaded_kib.map(mib));
        st.kib_per_connection = med_rec(&|r| r.idle_kib_per_connection);
        st
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A figure with precision that suits its size.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("—".into(), num)
}

fn range(lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{}–{}", num(lo), num(hi)),
        _ => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// Renders `results.md`.
pub fn markdown(results: &Results, scenarios: &[Scenario], servers: &[Server]) -> String {
    let m = &results.meta;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "# chat-server benchmark: ours vs tokio-tungstenite vs Node ws\n"
    );
    if m.quick {
        let _ = writeln!(
            w,
            "**Quick mode**: tiny scenarios that only check the harness works; the figures \
             mean little.\n"
        );
    }
    let _ = writeln!(w, "- Date: {}", m.date_utc);
    let _ = writeln!(
        w,
        "- Machine: {}, {} logical CPUs (`nproc`), Linux {}, {:.1} GiB RAM",
        m.machine.cpu_model,
        m.machine.nproc,
        m.machine.kernel,
        m.machine.mem_total_kib as f64 / 1024.0 / 1024.0
    );
    let _ = writeln!(w, "- Command: `{}`", m.command);
    let _ = writeln!(
        w,
        "- {} round(s); within a round the servers run one after another ({}), each a fresh \
         process on a free port, so slow drifts of the machine hit all of them alike. \
         Total time {:.0} s.",
        m.rounds,
        m.servers.join(", "),
        m.total_seconds
    );
    let _ = writeln!(
        w,
        "- The load generator (`chat-loadgen`) runs on the same machine and the same cores as \
         the server, so every figure includes the competition for CPU between the two; \
         the machine may have been running other work too."
    );
    let versions: Vec<String> = m.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        w,
        "- Servers: `ours` = `chat-server --seed-compat --rate-per-second 0 \
         --max-connections 20000` (tutorial semantics, rate limit off); `tungstenite` = \
         `naive-chat-server` (a straightforward tokio-tungstenite broadcast server); `node` = \
         `node bench/node-ws/server.js` ({}).",
        if versions.is_empty() {
            "the ws package".to_string()
        } else {
            versions.join(", ")
        }
    );
    let _ = writeln!(
        w,
        "- Open-files limit for servers and load generator: {}.",
        m.nofile_limit
    );
    let _ = writeln!(
        w,
        "\nEvery figure is the **median over rounds** (runs that failed are left out; see \
         Problems). Latencies are measured by the receiving clients from the send time in the \
         message. Server CPU = user + system seconds of the server process while the load \
         generator ran (`/proc/PID/stat`); peak RSS = `VmHWM` at the end of the run. Idle \
         KiB per connection = (`VmRSS` about 1 s after every client joined − `VmRSS` right \
         after start) / connections held. `results.json` holds every raw run.\n"
    );

    ratios_table(w, results, scenarios, servers);

    for sc in scenarios {
        let _ = writeln!(w, "## {}\n\n{}.\n", sc.name, sc.describe());
        match sc.kind {
            Kind::Throughput | Kind::Latency => {
                let _ = writeln!(
                    w,
                    "| server | deliveries/s | (min–max) | p50 ms | p99 ms | p99.9 ms | \
                     lost/dup/ooo | server CPU s | CPU s per M deliveries | peak RSS MiB | \
                     runs ok |"
                );
                let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
                for sv in servers {
                    let st = Stats::of(&results.runs, sc.name, sv.name());
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {} | {} | {}/{}/{} | {} | {} | {} | {}/{} |",
                        sv.name(),
                        opt(st.deliveries_per_s),
                        range(st.deliveries_per_s_min, st.deliveries_per_s_max),
                        opt(st.p50_ms),
                        opt(st.p99_ms),
                        opt(st.p999_ms),
                        st.lost,
                        st.duplicated,
                        st.out_of_order,
                        opt(st.cpu_s),
                        opt(st.cpu_per_million),
                        opt(st.hwm_mib),
                        st.usable,
                        st.runs
                    );
                }
            }
            Kind::Idle => {
                let _ = writeln!(
                    w,
                    "| server | connections held | RSS at start MiB | RSS loaded MiB | KiB per \
                     connection | peak RSS MiB | server CPU s | runs ok |"
                );
                let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|");
                for sv in servers {
                    let st = Stats::of(&results.runs, sc.name, sv.name());
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {} | {} | {} | {}/{} |",
                        sv.name(),
                        opt(st.connections),
                        opt(st.rss_start_mib),
                        opt(st.rss_loaded_mib),
                        opt(st.kib_per_connection),
                        opt(st.hwm_mib),
                        opt(st.cpu_s),
                        st.usable,
                        st.runs
                    );
                }
            }
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Problems\n");
    let mut any = false;
    for r in &results.runs {
        let p = r.problems();
        if !p.is_empty() {
            any = true;
            let _ = writeln!(
                w,
                "- {} / {} / round {}: {}",
                r.server,
                r.scenario,
                r.round,
                p.join("; ")
            );
        }
    }
    if !any {
        let _ = writeln!(
            w,
            "None: every run delivered every message exactly once and in order, with no \
             failed connection and no disconnect."
        );
    }
    md
}

/// A figure of the ratio table: its name and how to get it.
type Metric = (&'static str, fn(&Stats) -> Option<f64>);

fn ratios_table(w: &mut String, results: &Results, scenarios: &[Scenario], servers: &[Server]) {
    let others: Vec<Server> = [Server::Tungstenite, Server::Node]
        .into_iter()
        .filter(|s| servers.contains(s))
        .collect();
    if !servers.contains(&Server::Ours) || others.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Ratios (ours / peer, medians)\n");
    let _ = writeln!(
        w,
        "deliveries/s: above 1 means ours delivers more. p99, CPU per million deliveries, KiB \
         per idle connection: below 1 means ours needs less.\n"
    );
    let mut head = String::from("| scenario | metric |");
    let mut rule = String::from("|---|---|");
    for o in &others {
        let _ = write!(head, " ours/{} |", o.name());
        rule.push_str("--:|");
    }
    let _ = writeln!(w, "{head}\n{rule}");
    for sc in scenarios {
        let ours = Stats::of(&results.runs, sc.name, Server::Ours.name());
        let peers: Vec<Stats> = others
            .iter()
            .map(|o| Stats::of(&results.runs, sc.name, o.name()))
            .collect();
        let metrics: Vec<Metric> = match sc.kind {
            Kind::Throughput => vec![
                ("deliveries/s", |s| s.deliveries_per_s),
                ("p99 latency", |s| s.p99_ms),
                ("CPU s per M deliveries", |s| s.cpu_per_million),
            ],
            Kind::Latency => vec![
                ("p99 latency", |s| s.p99_ms),
                ("CPU s per M deliveries", |s| s.cpu_per_million),
            ],
            Kind::Idle => vec![("KiB per idle connection", |s| s.kib_per_connection)],
        };
        for (name, f) in metrics {
            let mut row = format!("| {} | {name} |", sc.name);
            for p in &peers {
                let _ = write!(row, " {} |", ratio(f(&ours), f(p)));
            }
            let _ = writeln!(w, "{row}");
        }
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.1234), "0.12");
    }

    #[test]
    fn date_format() {
        let d = now_utc();
        assert_eq!(d.len(), "2025-01-01 00:00 UTC".len());
        assert!(d.starts_with("20"));
    }
}
