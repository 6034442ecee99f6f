//! `chat-bench`: runs `chat-server` and two peers (a naive tokio-tungstenite server and a
//! Node `ws` server) alternately under `chat-loadgen`, scenario by scenario and round by
//! round, and writes `results.json`, `results.md` and `chart.svg`.
//!
//! Normally started through `bench/run`, which builds everything first.

mod chart;
mod procs;
mod report;
mod run;
mod scenarios;

use clap::Parser;
use report::{Machine, Meta, Results, ScenarioInfo};
use run::Env;
use scenarios::{Scenario, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Benchmarks chat-server against a naive tokio-tungstenite server and a Node ws \
             server under chat-loadgen"
)]
struct Cli {
    /// Small scenarios and one round: checks the harness in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Rounds (each runs every server once per scenario); default 3, or 1 with --quick.
    #[arg(long)]
    rounds: Option<usize>,
    /// Comma-separated scenarios to run (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Comma-separated servers to run: ours, tungstenite, node (default: all).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Seconds a load generator run may take before it is killed (default: per scenario,
    /// 60 to 120 s).
    #[arg(long)]
    timeout: Option<f64>,
    /// Run nothing: rewrite results.md and chart.svg from the results.json in --out.
    #[arg(long)]
    render: bool,
    /// Output directory; default bench/ (full runs) or target/bench-quick/ (--quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit non-zero when any run of `ours` had a problem (lost, duplicated or out-of-order
    /// deliveries, failed connections, disconnects, a crash) or any run could not be
    /// measured at all. Speed is never checked. CI uses it with --quick.
    #[arg(long)]
    strict: bool,
}

/// The workspace root (this crate lives in bench/runner).
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Versions of the Node peer's runtime and package.
fn node_versions(root: &Path) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    if let Ok(out) = std::process::Command::new("node").arg("--version").output() {
        if out.status.success() {
            v.insert(
                "node".into(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            );
        }
    }
    let pkg = root.join("bench/node-ws/node_modules/ws/package.json");
    if let Some(ver) = std::fs::read_to_string(pkg)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|j| j.get("version")?.as_str().map(str::to_owned))
    {
        v.insert("ws".into(), ver);
    }
    v
}

fn select<T: Clone>(
    all: &[T],
    wanted: &[String],
    name: impl Fn(&T) -> &str,
    what: &str,
) -> Result<Vec<T>, String> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut chosen = Vec::new();
    for w in wanted {
        match all.iter().find(|x| name(x) == w.as_str()) {
            Some(x) => chosen.push(x.clone()),
            None => {
                let names: Vec<&str> = all.iter().map(&name).collect();
                return Err(format!(
                    "unknown {what} {w:?}; choose from {}",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(chosen)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let cli = Cli::parse();
    let started = Instant::now();
    let root = workspace_root();
    let bin_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory for the executable")?
        .to_path_buf();
    for needed in ["chat-loadgen"] {
        if !bin_dir.join(needed).exists() {
            return Err(format!(
                "{} not found; build with bench/run",
                bin_dir.join(needed).display()
            ));
        }
    }

    let table = if cli.quick {
        scenarios::quick()
    } else {
        scenarios::full()
    };
    let mut scenarios: Vec<Scenario> = select(&table, &cli.scenarios, |s| s.name, "scenario")?;
    if let Some(t) = cli.timeout {
        let t = Duration::try_from_secs_f64(t).map_err(|e| format!("--timeout: {e}"))?;
        for s in &mut scenarios {
            s.timeout = t;
        }
    }
    let servers: Vec<Server> = select(&Server::ALL, &cli.servers, |s| s.name(), "server")?;
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.quick {
            // target/release/.. = the target directory, wherever it is.
            bin_dir.parent().unwrap_or(&bin_dir).join("bench-quick")
        } else {
            root.join("bench")
        }
    });
    if cli.render {
        return render_only(&out);
    }
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;

    let (nofile, hard) = procs::raise_nofile_limit();
    let max_clients = scenarios.iter().map(|s| s.clients).max().unwrap_or(0) as u64;
    if nofile != 0 && max_clients + 100 > nofile {
        eprintln!(
            "chat-bench: warning: open-files limit {nofile} (hard {hard}) is below what \
             {max_clients} server connections need"
        );
    }

    let mut command = String::from("bash bench/run");
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&shell_quote(&a));
    }
    let env = Env {
        bin_dir,
        root: root.clone(),
        log_dir,
    };
    let mut results = Results {
        meta: Meta {
            date_utc: report::now_utc(),
            command,
            quick: cli.quick,
            rounds,
            servers: servers.iter().map(|s| s.name().to_string()).collect(),
            machine: Machine::detect(),
            versions: if servers.contains(&Server::Node) {
                node_versions(&root)
            } else {
                BTreeMap::new()
            },
            nofile_limit: nofile,
            total_seconds: 0.0,
        },
        scenarios: scenarios
            .iter()
            .map(|s| ScenarioInfo::new(s, &servers))
            .collect(),
        runs: Vec::new(),
    };

    let total = scenarios.len() * rounds * servers.len();
    let mut done = 0;
    for sc in &scenarios {
        for round in 1..=rounds {
            for &server in &servers {
                done += 1;
                eprintln!(
                    "[{done}/{total}] {} round {round}/{rounds}: {} ...",
                    sc.name,
                    server.name()
                );
                let rec = run::run_once(&env, sc, server, round);
                eprintln!("    {}", run::summary(&rec, sc.kind));
                results.runs.push(rec);
            }
        }
    }
    results.meta.total_seconds = started.elapsed().as_secs_f64();

    let json_path = out.join("results.json");
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    write_reports(&out, &results, &scenarios, &servers)?;
    let problems = results
        .runs
        .iter()
        .filter(|r| !r.problems().is_empty())
        .count();
    eprintln!(
        "chat-bench: {total} runs in {:.0} s ({problems} with problems); results in {}",
        results.meta.total_seconds,
        out.display()
    );
    if cli.strict {
        let failing: Vec<String> = results
            .runs
            .iter()
            .filter(|r| r.loadgen.is_none() || (r.server == "ours" && !r.problems().is_empty()))
            .map(|r| {
                format!(
                    "{} {} round {}: {}",
                    r.scenario,
                    r.server,
                    r.round,
                    r.problems().join("; ")
                )
            })
            .collect();
        if !failing.is_empty() {
            return Err(format!("--strict: {}", failing.join(" | ")));
        }
    }
    Ok(())
}

/// Writes results.md and chart.svg into `out`.
fn write_reports(
    out: &Path,
    results: &Results,
    scenarios: &[Scenario],
    servers: &[Server],
) -> Result<(), String> {
    let md_path = out.join("results.md");
    std::fs::write(&md_path, report::markdown(results, scenarios, servers))
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    chart::write(&out.join("chart.svg"), results, scenarios, servers)
}

/// `--render`: the reports again from an earlier run's results.json.
fn render_only(out: &Path) -> Result<(), String> {
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let results: Results =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let table = if results.meta.quick {
        scenarios::quick()
    } else {
        scenarios::full()
    };
    let names: Vec<String> = results.scenarios.iter().map(|s| s.name.clone()).collect();
    let scenarios = select(&table, &names, |s| s.name, "scenario")?;
    let servers = select(&Server::ALL, &results.meta.servers, |s| s.name(), "server")?;
    write_reports(out, &results, &scenarios, &servers)?;
    eprintln!(
        "chat-bench: rewrote results.md and chart.svg in {}",
        out.display()
    );
    Ok(())
}
