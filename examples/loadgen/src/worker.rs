//! Runs the clients of one process through the phases of a run; with `--procs`, a parent
//! process starts the workers and holds them at barriers so every phase starts everywhere
//! before the next one begins.

use crate::client::{self, now_us, ClientStats, Identity, Phase, Reasons, Shared};
use crate::report::{cpu_seconds, Report, WorkerReport};
use crate::{churn, Args, Mode};
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, LocalSet};

/// The barriers every worker passes, in order.
const BARRIERS: [&str; 3] = ["connected", "synced", "done"];

/// Printed on stderr once every client has joined (idle and soak modes: the moment to
/// start measuring).
const READY: &str = "chat-loadgen: ready";

/// Whether the run announces [`READY`].
fn says_ready(mode: Mode) -> bool {
    matches!(mode, Mode::Idle | Mode::Soak)
}

/// How a worker waits at barriers.
pub enum Control {
    /// The only process: nothing to wait for.
    Alone,
    /// A worker of a parent: print `B name`, wait for a line on stdin.
    Pipe,
}

impl Control {
    async fn barrier(
        &self,
        name: &str,
        stdin: &mut Option<BufReader<tokio::io::Stdin>>,
    ) -> Result<(), String> {
        let Control::Pipe = self else { return Ok(()) };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "B {name}")
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())?;
        }
        let stdin = stdin.get_or_insert_with(|| BufReader::new(tokio::io::stdin()));
        let mut line = String::new();
        match stdin.read_line(&mut line).await {
            Ok(0) | Err(_) => Err(format!("parent went away at barrier {name}")),
            Ok(_) => Ok(()),
        }
    }
}

/// Waits until `done()` holds, waking on client progress; gives up after `limit`.
async fn wait_for(sh: &Shared, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::select! {
            () = sh.progress.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    true
}

/// Worker `k`: connects its clients (every `procs`-th), runs the phases, reports.
pub async fn run(args: Args, k: usize, control: Control) -> Result<WorkerReport, String> {
    LocalSet::new().run_until(run_local(args, k, control)).await
}

async fn run_local(args: Args, k: usize, control: Control) -> Result<WorkerReport, String> {
    let sh = Rc::new(Shared::new(args.clone()));
    let mut stdin = None;
    let indices: Vec<usize> = (k..args.clients).step_by(args.procs).collect();
    let wanted = indices.len();

    // Connect, paced and with a bounded number of handshakes in flight.
    let connect_started = now_us();
    let sem = std::sync::Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let pace = Duration::from_secs_f64(args.procs as f64 / args.connect_rate.max(1.0));
    let timeout = Duration::from_secs_f64(args.connect_timeout);
    let errors: Rc<RefCell<Reasons>> = Rc::default();
    let resolved = Rc::new(Cell::new(0usize));
    let expected = Rc::new(Cell::new(0u64));
    let mut handles: Vec<JoinHandle<Option<ClientStats>>> = Vec::with_capacity(wanted);
    let mut next = tokio::time::Instant::now();
    for i in indices {
        tokio::time::sleep_until(next).await;
        next += pace;
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let url = args.client_url(i);
        let (sh, errors, resolved, expected) = (
            sh.clone(),
            errors.clone(),
            resolved.clone(),
            expected.clone(),
        );
        let me = Identity::new(&args, i);
        handles.push(tokio::task::spawn_local(async move {
            let attempt = client::connect(&url, timeout).await;
            drop(permit);
            resolved.set(resolved.get() + 1);
            sh.progress.notify_one();
            match attempt {
                Ok(ws) => {
                    sh.connected.set(sh.connected.get() + 1);
                    sh.room_clients.borrow_mut()[me.room] += 1;
                    expected.set(expected.get() + me.room_senders as u64 * sh.args.messages);
                    Some(client::run(ws, me, sh).await)
                }
                Err(reason) => {
                    *errors.borrow_mut().entry(reason).or_default() += 1;
                    None
                }
            }
        }));
    }
    wait_for(&sh, timeout + Duration::from_secs(1), || {
        resolved.get() == wanted
    })
    .await;
    let connect_seconds = (now_us() - connect_started) as f64 / 1e6;
    control.barrier("connected", &mut stdin).await?;

    // Sync: once a client has the room's marker it is certainly joined.
    sh.phase.send_replace(Phase::Sync);
    let synced = wait_for(&sh, Duration::from_secs(30), || {
        sh.synced.get() >= sh.connected.get()
    })
    .await;
    if !synced {
        return Err(format!(
            "sync timed out: {} of {} clients received their room's marker",
            sh.synced.get(),
            sh.connected.get()
        ));
    }
    control.barrier("synced", &mut stdin).await?;
    if says_ready(args.mode) {
        if let Control::Alone = control {
            eprintln!("{READY}");
        }
    }

    let mut churn_stats = None;
    let mut end_us = 0;
    if args.mode == Mode::Idle {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    } else {
        let t0 = now_us();
        sh.t0_us.set(t0);
        sh.phase.send_replace(Phase::Go);
        // Soak: the senders' last messages are due before `--duration` is up, and the
        // run lasts at least that long even when nobody sends; churn goes on until then.
        let (min_end_us, churn) = if args.mode == Mode::Soak {
            let until = t0 + (args.duration * 1e6) as u64;
            let churn = tokio::task::spawn_local(churn::run(sh.clone(), k, until));
            (until, Some(churn))
        } else {
            (t0, None)
        };
        let drain_us = (args.drain_timeout * 1e6) as u64;
        let mut bar: Option<ProgressBar> = None;
        loop {
            let now = now_us();
            if now >= min_end_us {
                if sh.done.get() >= sh.connected.get() {
                    break;
                }
                // Stop waiting `--drain-timeout` after the last delivery (or the end of
                // sending, whichever is later).
                let quiet = now.saturating_sub(sh.last_delivery_us.get().max(min_end_us));
                if quiet > drain_us {
                    break;
                }
            }
            tokio::select! {
                () = sh.progress.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            // A progress bar for runs that last a while (worker 0 speaks for all).
            if k == 0 && bar.is_none() && now_us() - t0 > 3_000_000 {
                let b = ProgressBar::new(expected.get());
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} deliveries ({per_sec})",
                    )
                    .expect("progress template")
                    .progress_chars("=> "),
                );
                bar = Some(b);
            }
            if let Some(b) = &bar {
                b.set_position(sh.deliveries.get());
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        end_us = now_us();
        if let Some(churn) = churn {
            churn_stats = Some(churn.await.map_err(|e| format!("churn task failed: {e}"))?);
        }
    }
    control.barrier("done", &mut stdin).await?;

    sh.phase.send_replace(Phase::Stop);
    let mut report = WorkerReport {
        connected: sh.connected.get() as u64,
        connect_failed: (wanted - sh.connected.get()) as u64,
        connect_errors: errors.borrow().clone(),
        connect_seconds,
        sent: sh.sent.get(),
        deliveries: sh.deliveries.get(),
        t0_us: sh.t0_us.get(),
        last_delivery_us: sh.last_delivery_us.get(),
        end_us,
        churn: churn_stats,
        ..WorkerReport::default()
    };
    for handle in handles {
        let stats = match tokio::time::timeout(Duration::from_secs(10), handle).await {
            Ok(Ok(Some(stats))) => stats,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Err(format!("client task failed: {e}")),
            Err(_) => return Err("a client did not close within 10 s".into()),
        };
        report.expected += stats.expected;
        report.unique += stats.unique;
        report.duplicated += stats.duplicated;
        report.out_of_order += stats.out_of_order;
        report.notices += stats.notices;
        report.churn_messages += stats.churn_messages;
        report.unexpected += stats.unexpected;
        if let Some(reason) = stats.disconnect {
            *report.disconnects.entry(reason).or_default() += 1;
        }
    }
    report.latency_us = sh
        .latency_us
        .borrow()
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    report.cpu_seconds = cpu_seconds();
    Ok(report)
}

/// Starts `--procs` workers, walks them through the barriers together and merges their
/// reports.
pub async fn parent(args: Args) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for k in 0..args.procs {
        let mut child = tokio::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .arg("--worker")
            .arg(k.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker {k}: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        children.push((child, stdin, stdout));
    }
    for name in BARRIERS {
        for (k, (_, _, lines)) in children.iter_mut().enumerate() {
            let line = lines.next_line().await.map_err(|e| e.to_string())?;
            match line.as_deref().and_then(|l| l.strip_prefix("B ")) {
                Some(got) if got == name => {}
                _ => return Err(format!("worker {k} failed before barrier {name}")),
            }
        }
        for (_, stdin, _) in &mut children {
            stdin
                .write_all(b"go\n")
                .await
                .map_err(|e| format!("a worker went away: {e}"))?;
        }
        if name == "synced" && says_ready(args.mode) {
            eprintln!("{READY}");
        }
    }
    let mut reports = Vec::new();
    for (k, (child, _, lines)) in children.iter_mut().enumerate() {
        let line = lines.next_line().await.map_err(|e| e.to_string())?;
        let json = line
            .as_deref()
            .and_then(|l| l.strip_prefix("R "))
            .ok_or_else(|| format!("worker {k} ended without a report"))?;
        reports.push(serde_json::from_str(json).map_err(|e| format!("worker {k}: {e}"))?);
        let _ = child.wait().await;
    }
    Ok(Report::merge(&args, reports))
}
