//! Process control (servers, load generator) and sampling of `/proc`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What the load generator prints on stderr once every idle client has joined.
const READY: &str = "chat-loadgen: ready";

/// Raises this process's soft open-files limit to the hard limit (children inherit it);
/// returns the resulting (soft, hard) limits.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0);
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Makes a child die with us (SIGKILL when the runner goes away, e.g. on Ctrl-C).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety requirements.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits up to `limit` for `child` to exit.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Fields of `/proc/PID/stat` after the command name (the first is field 3, the state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system, all threads) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // Fields 14 (utime) and 15 (stime), counted from 1 with field 3 at index 0.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety requirements.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// A `kB` line of `/proc/PID/status` such as `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `pid` and all its descendants (children first found through `/proc/*/stat`).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    tree
}

/// A running server under test.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl ServerProcess {
    /// Starts `program args`, stderr to `log`, and waits up to `limit` for its
    /// `listening on http://127.0.0.1:PORT` line.
    pub fn start(
        program: &str,
        args: &[String],
        log: &Path,
        limit: Duration,
    ) -> Result<ServerProcess, String> {
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then keeps the pipe drained so the server never blocks on it.
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let port = match rx.recv_timeout(limit) {
            Ok(line) => line
                .trim()
                .strip_prefix("listening on http://127.0.0.1:")
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("unexpected first line {:?}", line.trim())),
            Err(_) => Err(format!("no `listening on` line within {limit:?}")),
        };
        let mut server = ServerProcess {
            child,
            pid,
            port: 0,
        };
        match port {
            Ok(port) => {
                server.port = port;
                Ok(server)
            }
            Err(e) => {
                let how = server.stop();
                Err(format!("{program}: {e} ({how}; see {})", log.display()))
            }
        }
    }

    /// Whether it has exited already (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after 5 s; says how it ended.
    pub fn stop(&mut self) -> String {
        if let Some(status) = self.exited() {
            return format!("had already exited ({status})");
        }
        signal(self.pid, libc::SIGTERM);
        if let Some(status) = wait_for_exit(&mut self.child, Duration::from_secs(5)) {
            return format!("stopped by SIGTERM ({status})");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed: still running 5 s after SIGTERM".into()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a load generator run ended.
pub struct LoadgenOutcome {
    /// Everything it printed on stdout (its JSON object).
    pub stdout: String,
    /// Its last stderr lines.
    pub stderr_tail: Vec<String>,
    /// Exit status; `None` when it was killed for taking too long.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub wall_s: f64,
}

/// Runs the load generator with a time limit. `on_ready` is called once, `ready_delay`
/// after it printed `chat-loadgen: ready` (idle mode), while it still holds its clients.
pub fn run_loadgen(
    program: &Path,
    args: &[String],
    limit: Duration,
    ready_delay: Duration,
    mut on_ready: impl FnMut(),
) -> Result<LoadgenOutcome, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = started + limit;
    let mut tail: Vec<String> = Vec::new();
    let mut ready_at: Option<Instant> = None;
    let mut sampled = false;
    let mut timed_out = false;
    let keep = |line: String, tail: &mut Vec<String>, ready_at: &mut Option<Instant>| {
        if line.trim() == READY && ready_at.is_none() {
            *ready_at = Some(Instant::now());
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => keep(line, &mut tail, &mut ready_at),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(20)),
        }
        if let Some(t) = ready_at {
            if !sampled && t.elapsed() >= ready_delay {
                sampled = true;
                on_ready();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // The loadgen's worker processes (--procs) go too.
            for pid in process_tree(child.id()) {
                signal(pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
    };
    let wall_s = started.elapsed().as_secs_f64();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
        keep(line, &mut tail, &mut ready_at);
    }
    let stdout = out_thread.join().unwrap_or_default();
    Ok(LoadgenOutcome {
        stdout,
        stderr_tail: tail,
        status,
        timed_out,
        wall_s,
    })
}
