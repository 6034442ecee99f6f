//! Scale-out (SPEC §5, the scale-out contract): several real `chat-server` processes share
//! rooms through a real `redis-server`. Each test starts its own Redis on a free loopback port
//! and its own nodes; every process is killed on drop, so a failing test leaks nothing.
//!
//! redis-server must be installed (or named by `REDIS_SERVER`): without it these tests fail.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat_server::JSON_PROTOCOL;
use common::{http_get, nick_from_welcome, Client, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::Message;

/// `--node-timeout` of every node.
const NODE_TIMEOUT: &str = "1s";
/// The contract's "within about node-timeout + 1 s", generously: node-timeout + 5 s.
const DEATH_BOUND: Duration = Duration::from_secs(1 + 5);
/// Bound for a node to notice Redis going away or coming back.
const REDIS_BOUND: Duration = Duration::from_secs(15);
/// The error text (JSON) / line (plain) for a message refused while Redis is away.
const UNAVAILABLE: &str = "temporarily unavailable";

// ---------------------------------------------------------------------------------------------
// Harness: a per-test directory, a Redis guard and a node guard.

/// A fresh directory under the target dir for one test's Redis data and process logs. On a
/// failing test the logs are printed (and kept); otherwise the directory is removed.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(name: &str) -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cluster-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
            return;
        }
        // Declared first, dropped last: every process is gone and its log complete.
        eprintln!("--- logs kept in {}", self.path.display());
        let mut logs: Vec<_> = std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

fn redis_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A free loopback port (bound, then released), chosen below the kernel's ephemeral range so
/// that no `bind(0)` or outgoing connection elsewhere takes it while our Redis is down for a
/// restart on the same port.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    if low > 11_000 {
        for _ in 0..100 {
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = 10_000 + u16::try_from(random % u64::from(low - 10_000)).unwrap();
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

/// Polls (bounded) until `child` exits.
async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// The `process_id` of the Redis on `port` once it has loaded its data (`INFO` answers while
/// the AOF is still being replayed, with `loading:1`). Checking the pid makes sure we talk to
/// our own Redis, not one that took the port first.
async fn redis_ready_pid(port: u16) -> Option<u32> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"INFO\r\n").await.ok()?;
        // A bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            let (head, body) = text.strip_prefix('$')?.split_once("\r\n")?;
            if body.len() < head.parse::<usize>().ok()? {
                continue;
            }
            let field = |name: &str| {
                body.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            return match field("loading") {
                Some("0") => field("process_id")?.parse().ok(),
                _ => None,
            };
        }
    };
    tokio::time::timeout(Duration::from_millis(500), io)
        .await
        .ok()
        .flatten()
}

/// A `redis-server` of our own on a free loopback port, with an append-only file so a
/// restart on the same directory restores the data. Killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Redis {
    async fn start(dir: &TestDir) -> Redis {
        let data = dir.path.join("redis-data");
        std::fs::create_dir_all(&data).unwrap();
        let mut redis = Redis {
            child: None,
            port: 0,
            data,
            log: dir.path.join("redis.log"),
        };
        // Another process may take the port between our probe and Redis binding it: retry.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.launch().await.is_ok() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Spawns redis-server on `self.port` and waits until it answers; `Err` if it exited.
    async fn launch(&mut self) -> Result<(), String> {
        let child = Command::new(redis_binary())
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.data)
            .arg("--logfile")
            .arg(&self.log)
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {:?}: {e}. The cluster tests need redis-server \
                     (apt-get install redis-server, or set REDIS_SERVER=/path/to/redis-server)",
                    redis_binary()
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            if redis_ready_pid(self.port).await == Some(pid) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} not ready within {TIMEOUT:?}",
                self.port
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (Redis syncs its AOF and exits) and waits for the exit.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if wait_exit(&mut child, TIMEOUT).await.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server ignored SIGTERM for {TIMEOUT:?}");
        }
    }

    /// Deletes everything Redis stored (after [`Redis::stop`]): the next start is empty, as if
    /// Redis had run without persistence.
    fn wipe(&self) {
        assert!(self.child.is_none(), "wipe after stop");
        std::fs::remove_dir_all(&self.data).expect("remove the Redis data");
        std::fs::create_dir_all(&self.data).unwrap();
    }

    /// Copies everything Redis stored (after [`Redis::stop`]) to `to`, for [`Redis::restore`].
    fn copy_data(&self, to: &Path) {
        assert!(self.child.is_none(), "copy after stop");
        copy_dir(&self.data, to);
    }

    /// Replaces everything Redis stored (after [`Redis::stop`]) with the copy in `from`: the
    /// next start comes back with that older data, as after restoring a backup.
    fn restore(&self, from: &Path) {
        assert!(self.child.is_none(), "restore after stop");
        std::fs::remove_dir_all(&self.data).expect("remove the Redis data");
        copy_dir(from, &self.data);
    }

    /// The same binary on the same port and data directory again.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after stop");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("redis restart on port {} failed ({e}); retrying", self.port);
                    sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("redis-server did not restart on port {}: {e}", self.port),
            }
        }
    }
}

/// Copies the directory tree `from` to `to` (created).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `chat-server --redis` process; killed on drop. Its stderr goes to `ID.log`.
struct Node {
    child: Child,
    addr: SocketAddr,
    id: String,
    log: PathBuf,
}

impl Node {
    async fn start(dir: &TestDir, redis: &Redis, id: &str) -> Node {
        Node::start_with(dir, redis, id, &[]).await
    }

    /// [`Node::start`] with extra flags; `--node-timeout` among them replaces
    /// [`NODE_TIMEOUT`]. A second node with the same id logs to `ID-2.log` (and so on).
    async fn start_with(dir: &TestDir, redis: &Redis, id: &str, flags: &[&str]) -> Node {
        let log = (1..)
            .map(|n| match n {
                1 => dir.path.join(format!("{id}.log")),
                n => dir.path.join(format!("{id}-{n}.log")),
            })
            .find(|p| !p.exists())
            .unwrap();
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command.args(["--bind", "127.0.0.1", "--port", "0"]).args([
            "--redis",
            &redis.url(),
            "--node-id",
            id,
        ]);
        if !flags.contains(&"--node-timeout") {
            command.args(["--node-timeout", NODE_TIMEOUT]);
        }
        let mut child = command
            .args(flags)
            .env("NO_COLOR", "1") // plain logs in ID.log
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn chat-server");
        let stdout = child.stdout.take().unwrap();
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            id: id.to_owned(),
            log,
        };
        // A thread reads the address line, then drains stdout so the pipe never fills or
        // closes under the server.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = tokio::time::timeout(TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        match line.trim().strip_prefix("listening on http://") {
            Some(addr) => node.addr = addr.parse().expect("an address"),
            None => panic!(
                "{id}: no `listening on` line within {TIMEOUT:?} (got {line:?}); stderr:\n{}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            ),
        }
        node
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no goodbye to Redis, no close frames.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful shutdown.
    fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    async fn json(&self, path: &str) -> Client {
        Client::connect(&self.url(path), Some(JSON_PROTOCOL)).await
    }

    async fn plain(&self, path: &str) -> Client {
        Client::connect(&self.url(path), None).await
    }

    /// Polls `/healthz` until it answers `want` (bounded); returns the body.
    async fn await_health(&self, want: u16) -> String {
        let deadline = Instant::now() + REDIS_BOUND;
        loop {
            let (status, body) = http_get(self.addr, "/healthz", &[]).await;
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /healthz still {status} {body:?} after {REDIS_BOUND:?}; want {want}",
                self.id
            );
            sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Reading frames with deadlines.

/// What a client read.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through `Debug`, in panic messages
enum Got {
    Text(String),
    Close(u16, String),
    End(String),
}

/// The next text frame, close or end; `None` at the deadline. Pings and pongs are skipped.
async fn next_got(c: &mut Client, deadline: Instant) -> Option<Got> {
    loop {
        let next = tokio::time::timeout_at(deadline, c.ws.next()).await.ok()?;
        return Some(match next {
            Some(Ok(Message::Text(t))) => Got::Text(t.to_string()),
            Some(Ok(Message::Close(f))) => match f {
                Some(f) => Got::Close(u16::from(f.code), f.reason.to_string()),
                None => Got::Close(1005, String::new()),
            },
            Some(Ok(Message::Binary(b))) => panic!("unexpected binary frame {b:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Got::End(e.to_string()),
            None => Got::End("end of stream".to_owned()),
        });
    }
}

fn within(d: Duration) -> Instant {
    Instant::now() + d
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

/// An event without the fields that legitimately differ between recipients: the delivering
/// node's clock and the replay flag.
fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("time");
        map.remove("replay");
    }
    v
}

fn show(events: &[Value]) -> String {
    events
        .iter()
        .map(|v| format!("  {v}\n"))
        .collect::<String>()
}

/// Reads JSON events until one matches `pred`; returns all read, the match last. Panics on a
/// close, the end of the stream or the deadline, with what was read.
async fn events_until(
    c: &mut Client,
    deadline: Instant,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match next_got(c, deadline).await {
            Some(Got::Text(t)) => {
                let v = parse(&t);
                let done = pred(&v);
                seen.push(v);
                if done {
                    return seen;
                }
            }
            Some(other) => panic!("waiting for {what}: got {other:?} after\n{}", show(&seen)),
            None => panic!(
                "waiting for {what}: not within the bound; got\n{}",
                show(&seen)
            ),
        }
    }
}

/// Plain-text twin of [`events_until`].
async fn lines_until(
    c: &mut Client,
    deadline: Instant,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match next_got(c, deadline).await {
            Some(Got::Text(t)) => {
                let done = pred(&t);
                seen.push(t);
                if done {
                    return seen;
                }
            }
            Some(other) => panic!("waiting for {what}: got {other:?} after {seen:#?}"),
            None => panic!("waiting for {what}: not within the bound; got {seen:#?}"),
        }
    }
}

fn is(v: &Value, kind: &str, from: &str) -> bool {
    v["type"] == kind && v["from"] == from
}

fn is_message(v: &Value, text: &str) -> bool {
    v["type"] == "message" && v["text"] == text
}

/// A broadcast event delivered live (not replayed from history).
fn is_live(v: &Value) -> bool {
    v.get("seq").is_some() && v["replay"] != true
}

/// Reads until a close frame (bounded by `deadline`); returns the text frames before it, the
/// code and the reason. The stream is then driven a little longer so the client's close
/// reply goes out.
async fn until_close(c: &mut Client, deadline: Instant, who: &str) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        match next_got(c, deadline).await {
            Some(Got::Text(t)) => texts.push(t),
            Some(Got::Close(code, reason)) => {
                let drain = async { while let Some(Ok(_)) = c.ws.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                return (texts, code, reason);
            }
            Some(other) => panic!("{who}: waiting for a close: got {other:?} after {texts:#?}"),
            None => panic!("{who}: no close within the bound; got {texts:#?}"),
        }
    }
}

/// Connects a JSON client and reads its welcome, checking the nick it asked for.
async fn join_json(node: &Node, room: &str, nick: &str) -> (Client, Value) {
    let mut c = node.json(&format!("/chat/{room}?nick={nick}")).await;
    let first = events_until(&mut c, within(TIMEOUT), "welcome", |_| true).await;
    let welcome = first.into_iter().next().unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["nick"], nick, "{welcome}");
    (c, welcome)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn cross_node_chat_same_order() {
    const PER_CLIENT: usize = 6;
    let dir = TestDir::new("order");
    let redis = Redis::start(&dir).await;
    let nodes = [
        Node::start(&dir, &redis, "nodeA").await,
        Node::start(&dir, &redis, "nodeB").await,
        Node::start(&dir, &redis, "nodeC").await,
    ];
    let nicks = ["n0", "n1", "n2"];
    let mut clients = Vec::new();
    for (node, nick) in nodes.iter().zip(nicks) {
        clients.push(join_json(node, "order", nick).await.0);
    }
    // Once everyone has seen n2 join, the only broadcast events left are the messages.
    for c in &mut clients[..2] {
        events_until(c, within(TIMEOUT), "n2 joined", |v| is(v, "join", "n2")).await;
    }

    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..PER_CLIENT {
                c.send(&format!("m{i}-{k}")).await;
            }
            let deadline = within(TIMEOUT);
            let mut log = Vec::new();
            while log.len() < PER_CLIENT * nicks.len() {
                match next_got(&mut c, deadline).await {
                    Some(Got::Text(t)) => {
                        let v = parse(&t);
                        // The last joiner may still have its history replay to read.
                        if v["replay"] == true && log.is_empty() {
                            continue;
                        }
                        assert!(
                            is_live(&v),
                            "client {i}: unexpected {v} after\n{}",
                            show(&log)
                        );
                        log.push(strip(&v));
                    }
                    other => panic!("client {i}: got {other:?} after\n{}", show(&log)),
                }
            }
            // The client is returned so that no leave interleaves with the others' reading.
            (c, log)
        }));
    }
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.expect("client task").1);
    }

    let lines = |log: &[Value]| log.iter().map(Value::to_string).collect::<Vec<_>>();
    for (i, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            lines(log),
            lines(&logs[0]),
            "client {i} ({}) and client 0 ({}) saw different sequences",
            nodes[i].id,
            nodes[0].id
        );
    }
    let log = &logs[0];
    let seqs: Vec<u64> = log.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not strictly increasing: {seqs:?}"
    );
    // Every message exactly once, each sender's in the order it sent them.
    for (i, nick) in nicks.iter().enumerate() {
        let texts: Vec<&str> = log
            .iter()
            .filter(|v| v["type"] == "message" && v["from"] == *nick)
            .map(|v| v["text"].as_str().unwrap())
            .collect();
        let sent: Vec<String> = (0..PER_CLIENT).map(|k| format!("m{i}-{k}")).collect();
        assert_eq!(texts, sent, "messages from {nick} in\n{}", show(log));
    }
    assert!(log.iter().all(|v| v["type"] == "message"), "{}", show(log));
}

#[tokio::test]
async fn nick_unique_across_nodes() {
    let dir = TestDir::new("nicks");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let (mut alice, _) = join_json(&a, "nicks", "alice").await;

    // Plain text on B: a random nick, the seed-style error line, then the history (as in
    // one process).
    let mut other = b.plain("/chat/nicks?nick=ALICE").await;
    let lines = lines_until(&mut other, within(TIMEOUT), "alice's join replayed", |l| {
        l == " .... alice has joined."
    })
    .await;
    let nick = nick_from_welcome(&lines[0]);
    assert!(nick.starts_with("user-"), "{lines:?}");
    assert_eq!(
        lines,
        [
            format!(" .... you are {nick}; also here: alice. Type /help for commands."),
            format!(" .... error: nickname ALICE is taken; you are {nick}"),
            " .... alice has joined.".to_owned(),
        ]
    );
    events_until(&mut alice, within(TIMEOUT), "the join", |v| {
        is(v, "join", &nick)
    })
    .await;

    other.send("/nick alice").await;
    let lines = lines_until(&mut other, within(TIMEOUT), "the refusal", |l| {
        l.starts_with(" .... error:")
    })
    .await;
    assert_eq!(lines, [" .... error: nickname alice is taken"]);

    // A rename on B is seen on A, and the new name is then taken on A too.
    other.send("/nick bob").await;
    let renamed = format!(" .... {nick} is now known as bob.");
    let lines = lines_until(&mut other, within(TIMEOUT), "the rename", |l| l == renamed).await;
    assert_eq!(lines, [renamed]);
    let seen = events_until(&mut alice, within(TIMEOUT), "the rename", |v| {
        v["type"] == "nick"
    })
    .await;
    assert_eq!(seen.len(), 1, "only one rename:\n{}", show(&seen));
    assert_eq!(
        (&seen[0]["old"], &seen[0]["new"]),
        (&json!(nick), &json!("bob"))
    );
    alice.send("/nick BOB").await;
    let seen = events_until(&mut alice, within(TIMEOUT), "the refusal", |v| {
        v["type"] == "error"
    })
    .await;
    assert_eq!(seen.len(), 1, "{}", show(&seen));
    assert_eq!(seen[0]["text"], "nickname BOB is taken");
    alice.send("/who").await;
    let seen = events_until(&mut alice, within(TIMEOUT), "/who", |v| v["type"] == "who").await;
    assert_eq!(seen.len(), 1, "{}", show(&seen));
    assert_eq!(seen[0]["members"], json!(["alice", "bob"]));
}

#[tokio::test]
async fn resume_on_other_node() {
    let dir = TestDir::new("resume");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let (mut stay, _) = join_json(&a, "resume", "stay").await;
    let (mut roam, _) = join_json(&a, "resume", "roam").await;
    events_until(&mut stay, within(TIMEOUT), "roam joined", |v| {
        is(v, "join", "roam")
    })
    .await;
    stay.send("one").await;
    stay.send("two").await;
    let seen = events_until(&mut roam, within(TIMEOUT), "two", |v| is_message(v, "two")).await;
    let last_seen = seen.last().unwrap()["seq"].as_u64().expect("a seq");
    events_until(&mut stay, within(TIMEOUT), "two", |v| is_message(v, "two")).await;

    roam.ws.close(None).await.expect("close");
    roam.expect_end().await;
    // What roam misses, as stay sees it: its own leave and two messages.
    let mut missed = events_until(&mut stay, within(TIMEOUT), "roam left", |v| {
        is(v, "leave", "roam")
    })
    .await;
    stay.send("three").await;
    stay.send("four").await;
    missed.extend(
        events_until(&mut stay, within(TIMEOUT), "four", |v| {
            is_message(v, "four")
        })
        .await,
    );
    let missed: Vec<Value> = missed.iter().map(strip).collect();
    assert_eq!(missed.len(), 3, "{}", show(&missed));

    let mut back = b
        .json(&format!("/chat/resume?nick=roam&since={last_seen}"))
        .await;
    let seen = events_until(&mut back, within(TIMEOUT), "four", |v| {
        is_message(v, "four")
    })
    .await;
    assert_eq!(seen[0]["type"], "welcome", "{}", show(&seen));
    assert_eq!(seen[0]["nick"], "roam");
    let replayed = &seen[1..];
    assert!(
        replayed.iter().all(|v| v["replay"] == true),
        "{}",
        show(replayed)
    );
    let replayed: Vec<Value> = replayed.iter().map(strip).collect();
    assert_eq!(replayed, missed, "replayed vs missed");

    // Nothing after the replay but live events: the next one is the marker.
    stay.send("marker").await;
    let seen = events_until(&mut back, within(TIMEOUT), "marker", |v| {
        is_message(v, "marker")
    })
    .await;
    assert_eq!(
        seen.len(),
        1,
        "duplicates after the replay:\n{}",
        show(&seen)
    );
    assert!(is_live(&seen[0]), "{}", seen[0]);
}

#[tokio::test]
async fn sigkill_node_announces_leave() {
    let dir = TestDir::new("sigkill");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let mut c = Node::start(&dir, &redis, "nodeC").await;
    let (mut ann, _) = join_json(&a, "crash", "ann").await;
    let (mut bob, _) = join_json(&b, "crash", "bob").await;
    events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;
    let (carol, _) = join_json(&c, "crash", "carol").await;
    for client in [&mut ann, &mut bob] {
        events_until(client, within(TIMEOUT), "carol joined", |v| {
            is(v, "join", "carol")
        })
        .await;
    }

    let pid = c.pid();
    c.kill();
    drop(carol);
    let deadline = within(DEATH_BOUND);
    let mut leave_seqs = Vec::new();
    for (name, client) in [("ann", &mut ann), ("bob", &mut bob)] {
        let what = format!("carol's leave at {name} after SIGKILL of nodeC (pid {pid})");
        let seen = events_until(client, deadline, &what, |v| is(v, "leave", "carol")).await;
        assert_eq!(seen.len(), 1, "{name}:\n{}", show(&seen));
        leave_seqs.push(seen[0]["seq"].clone());
    }
    assert_eq!(leave_seqs[0], leave_seqs[1], "one leave event, one seq");

    // Give a second announcement (e.g. by the other survivor) time to show up, then read up
    // to a marker: it must be the only event.
    sleep(Duration::from_millis(1500)).await;
    ann.send("marker").await;
    for (name, client) in [("ann", &mut ann), ("bob", &mut bob)] {
        let seen = events_until(client, within(TIMEOUT), "marker", |v| {
            is_message(v, "marker")
        })
        .await;
        assert_eq!(
            seen.len(),
            1,
            "{name}: events before the marker:\n{}",
            show(&seen)
        );
    }
    ann.send("/who").await;
    let seen = events_until(&mut ann, within(TIMEOUT), "/who", |v| v["type"] == "who").await;
    assert_eq!(seen.last().unwrap()["members"], json!(["ann", "bob"]));

    // Exactly one survivor appended the leave (the other lost the claim), and both still
    // reach Redis.
    let mut leaves = 0;
    for node in [&a, &b] {
        let (status, body) = http_get(node.addr, "/metrics", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(metric(&body, "chat_redis_up"), 1, "{}: {body}", node.id);
        assert!(
            metric(&body, "chat_log_appends_total") >= 1,
            "{}: {body}",
            node.id
        );
        leaves += metric(&body, "chat_dead_node_leaves_total");
    }
    assert_eq!(leaves, 1, "leave appended once for carol");
}

/// The value of a metric line `NAME VALUE` in a Prometheus text body (0 if absent).
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn late_node_sees_members_and_history() {
    let dir = TestDir::new("late");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let (mut ann, _) = join_json(&a, "late", "ann").await;
    let (mut bob, _) = join_json(&a, "late", "bob").await;
    events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;
    ann.send("h1").await;
    ann.send("h2").await;
    for client in [&mut ann, &mut bob] {
        events_until(client, within(TIMEOUT), "h2", |v| is_message(v, "h2")).await;
    }

    let b = Node::start(&dir, &redis, "nodeB").await;
    let mut cid = b.json("/chat/late?nick=cid").await;
    let seen = events_until(&mut cid, within(TIMEOUT), "h2", |v| is_message(v, "h2")).await;
    assert_eq!(seen[0]["type"], "welcome", "{}", show(&seen));
    assert_eq!(seen[0]["nick"], "cid");
    assert_eq!(seen[0]["members"], json!(["ann", "bob", "cid"]));
    let history: Vec<(String, String, String)> = seen[1..]
        .iter()
        .map(|v| {
            assert_eq!(v["replay"], true, "{v}");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("from"), s("text"))
        })
        .collect();
    let want = [
        ("join", "ann", ""),
        ("join", "bob", ""),
        ("message", "ann", "h1"),
        ("message", "ann", "h2"),
    ]
    .map(|(t, f, x)| (t.to_owned(), f.to_owned(), x.to_owned()));
    assert_eq!(history, want);
    events_until(&mut ann, within(TIMEOUT), "cid joined", |v| {
        is(v, "join", "cid")
    })
    .await;

    // A plain client on B: the seed-style welcome names everyone.
    let mut dan = b.plain("/chat/late?nick=dan").await;
    let welcome = lines_until(&mut dan, within(TIMEOUT), "welcome", |_| true).await;
    assert_eq!(
        welcome[0],
        " .... you are dan; also here: ann, bob, cid. Type /help for commands."
    );
    cid.send("/who").await;
    let seen = events_until(&mut cid, within(TIMEOUT), "/who", |v| v["type"] == "who").await;
    assert_eq!(
        seen.last().unwrap()["members"],
        json!(["ann", "bob", "cid", "dan"])
    );
}

/// A JSON member that keeps a log of every broadcast event it got (live or replayed) and,
/// once `resumable`, reconnects with `?since=` when its node closes it with 1013 (the
/// contract's answer to members announced gone while their node was cut off).
struct Member {
    name: &'static str,
    url: String,
    /// Every nick it was welcomed with; the first is the one it asks for.
    nicks: Vec<String>,
    client: Client,
    log: Vec<Value>,
    last_seq: Option<u64>,
    resumable: bool,
}

impl Member {
    async fn join(node: &Node, room: &str, name: &'static str) -> Member {
        let url = node.url(&format!("/chat/{room}"));
        let client = Client::connect(&format!("{url}?nick={name}"), Some(JSON_PROTOCOL)).await;
        let mut m = Member {
            name,
            url,
            nicks: Vec::new(),
            client,
            log: Vec::new(),
            last_seq: None,
            resumable: false,
        };
        let welcome = m.next(within(TIMEOUT)).await.expect("not resumable yet");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(m.nicks, [name]);
        m
    }

    fn record(&mut self, v: &Value) {
        if let Some(seq) = v["seq"].as_u64() {
            assert!(
                self.last_seq.is_none_or(|last| seq > last),
                "{}: seq {seq} after {:?} (duplicate or out of order): {v}\nlog:\n{}",
                self.name,
                self.last_seq,
                show(&self.log)
            );
            self.last_seq = Some(seq);
            self.log.push(strip(v));
        }
        if v["type"] == "welcome" {
            self.nicks.push(v["nick"].as_str().unwrap().to_owned());
        }
    }

    /// The next event; `None` when it had to reconnect instead.
    async fn next(&mut self, deadline: Instant) -> Option<Value> {
        match next_got(&mut self.client, deadline).await {
            Some(Got::Text(t)) => {
                let v = parse(&t);
                self.record(&v);
                Some(v)
            }
            Some(Got::Close(1013, _)) if self.resumable => {
                self.resume(deadline).await;
                None
            }
            Some(Got::Close(1012, reason)) => panic!(
                "{}: closed with 1012 ({reason:?}) although Redis restarted from its AOF",
                self.name
            ),
            other => panic!(
                "{}: got {other:?}; log so far:\n{}",
                self.name,
                show(&self.log)
            ),
        }
    }

    async fn resume(&mut self, deadline: Instant) {
        loop {
            let since = self.last_seq.expect("a seq before any resume");
            let url = format!("{}?nick={}&since={since}", self.url, self.nicks[0]);
            self.client = Client::connect(&url, Some(JSON_PROTOCOL)).await;
            match next_got(&mut self.client, deadline).await {
                Some(Got::Text(t)) => {
                    let v = parse(&t);
                    assert_eq!(v["type"], "welcome", "{}: after resuming: {v}", self.name);
                    self.record(&v);
                    return;
                }
                Some(Got::Close(1013, _)) => sleep(Duration::from_millis(200)).await,
                other => panic!("{}: resuming: {other:?}", self.name),
            }
        }
    }

    async fn until(&mut self, deadline: Instant, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Some(v) = self.next(deadline).await {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// Sends `PREFIX-N` for N = 1, 2, ... until one comes back as a message (bounded); returns
    /// the delivered text. Refusals while the nodes reconnect are expected.
    async fn send_until_delivered(&mut self, prefix: &str) -> String {
        let deadline = within(REDIS_BOUND);
        for attempt in 1.. {
            let text = format!("{prefix}-{attempt}");
            // The socket may have been closed under us; the read below notices.
            let _ = self.client.ws.send(Message::text(text.clone())).await;
            loop {
                let Some(v) = self.next(deadline).await else {
                    break; // reconnected: send again
                };
                if v["type"] == "message" && v["text"] == text {
                    assert!(self.nicks.iter().any(|n| v["from"] == *n), "{v}");
                    return text;
                }
                if v["type"] == "error" {
                    let reason = v["text"].as_str().unwrap_or_default();
                    assert!(reason.contains(UNAVAILABLE), "{}: {v}", self.name);
                    sleep(Duration::from_millis(250)).await;
                    break;
                }
            }
        }
        unreachable!()
    }

    fn is_own_join(&self, v: &Value) -> bool {
        v["type"] == "join" && self.nicks.iter().any(|n| v["from"] == *n)
    }
}

/// The members' logs agree on every seq both hold, over the range both cover; a seq only one
/// holds must be the other's own join (a joiner is not sent its own join).
fn assert_same_events(x: &Member, y: &Member) {
    let seq = |v: &Value| v["seq"].as_u64().unwrap();
    let range = |m: &Member| (seq(&m.log[0]), seq(m.log.last().unwrap()));
    let (lo, hi) = {
        let (x0, x1) = range(x);
        let (y0, y1) = range(y);
        (x0.max(y0), x1.min(y1))
    };
    let map = |m: &Member| -> BTreeMap<u64, Value> {
        m.log
            .iter()
            .filter(|v| (lo..=hi).contains(&seq(v)))
            .map(|v| (seq(v), v.clone()))
            .collect()
    };
    let (mx, my) = (map(x), map(y));
    let context = || format!("{}:\n{}{}:\n{}", x.name, show(&x.log), y.name, show(&y.log));
    let all: std::collections::BTreeSet<u64> = mx.keys().chain(my.keys()).copied().collect();
    for s in all {
        match (mx.get(&s), my.get(&s)) {
            (Some(a), Some(b)) => assert_eq!(a, b, "seq {s} differs\n{}", context()),
            (Some(e), None) => assert!(y.is_own_join(e), "{} lacks {e}\n{}", y.name, context()),
            (None, Some(e)) => assert!(x.is_own_join(e), "{} lacks {e}\n{}", x.name, context()),
            (None, None) => unreachable!(),
        }
    }
}

#[tokio::test]
async fn redis_restart_mid_run() {
    let dir = TestDir::new("restart");
    let mut redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let mut x = Member::join(&a, "flow", "x").await;
    let mut y = Member::join(&b, "flow", "y").await;
    x.until(within(TIMEOUT), |v| is(v, "join", "y")).await;
    x.client.send("before").await;
    for m in [&mut x, &mut y] {
        m.until(within(TIMEOUT), |v| is_message(v, "before")).await;
    }

    redis.stop().await;
    for node in [&a, &b] {
        let body = node.await_health(503).await;
        assert!(
            body.starts_with("redis unavailable"),
            "{}: {body:?}",
            node.id
        );
    }
    // With Redis gone, a message is refused to its sender and never delivered.
    for m in [&mut x, &mut y] {
        m.client.send(&format!("lost-{}", m.name)).await;
        let e = m.until(within(REDIS_BOUND), |v| v["type"] == "error").await;
        assert!(e["text"].as_str().unwrap().contains(UNAVAILABLE), "{e}");
    }

    redis.restart().await;
    for node in [&a, &b] {
        assert_eq!(node.await_health(200).await, "ok\n", "{}", node.id);
    }
    x.resumable = true;
    y.resumable = true;
    let tx = x.send_until_delivered("after-x").await;
    y.until(within(REDIS_BOUND), |v| is_message(v, &tx)).await;
    let ty = y.send_until_delivered("after-y").await;
    x.until(within(REDIS_BOUND), |v| is_message(v, &ty)).await;

    assert_same_events(&x, &y);
    for m in [&x, &y] {
        let mut texts = HashSet::new();
        for v in m.log.iter().filter(|v| v["type"] == "message") {
            let text = v["text"].as_str().unwrap();
            assert!(
                !text.starts_with("lost-"),
                "{}: refused but delivered: {v}",
                m.name
            );
            assert!(texts.insert(text), "{}: delivered twice: {v}", m.name);
        }
    }
}

#[tokio::test]
async fn redis_down_at_connect() {
    let dir = TestDir::new("down");
    let mut redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    redis.stop().await;
    a.await_health(503).await;
    for protocol in [Some(JSON_PROTOCOL), None] {
        let mut c = Client::connect(&a.url("/chat/down?nick=zed"), protocol).await;
        let (texts, code, reason) = c.expect_close().await;
        assert_eq!(
            u16::from(code),
            1013,
            "{protocol:?}: {reason:?} after {texts:?}"
        );
        assert!(reason.contains(UNAVAILABLE), "{reason:?}");
        assert!(
            texts
                .iter()
                .all(|t| !t.contains("you are") && !t.contains("\"welcome\"")),
            "{texts:?}"
        );
    }
    // The node recovers by itself, and the refused attempts left no ghost holding the nick.
    redis.restart().await;
    a.await_health(200).await;
    join_json(&a, "down", "zed").await;
}

#[tokio::test]
async fn stalled_redis_means_not_sent_and_never_delivered() {
    let dir = TestDir::new("stall");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let (mut ann, _) = join_json(&a, "stall", "ann").await;
    let (mut bob, _) = join_json(&b, "stall", "bob").await;
    events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;
    // One message first, so the node's append script is loaded in Redis (a stalled
    // first call would fail on its own, as an unknown script, and prove nothing).
    ann.send("warm").await;
    events_until(&mut ann, within(TIMEOUT), "warm", |v| is_message(v, "warm")).await;
    // A stalled Redis (SIGSTOP): alive, connected, answering nothing.
    let pid = redis.child.as_ref().expect("running").id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    ann.send("stalled").await;
    let seen = events_until(&mut ann, within(TIMEOUT), "the error line", |v| {
        v["type"] == "error"
    })
    .await;
    let error = seen.last().unwrap();
    assert!(
        error["text"].as_str().unwrap().contains(UNAVAILABLE),
        "{error}"
    );
    a.await_health(503).await;
    // Stalled for a while longer, as a long fork or a swapped-out Redis would be.
    sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    a.await_health(200).await;
    // Redis now works through its backlog: the refused message must not come out of it.
    ann.send("after").await;
    for (name, client) in [("ann", &mut ann), ("bob", &mut bob)] {
        let seen = events_until(client, within(TIMEOUT), "after", |v| is_message(v, "after")).await;
        assert!(
            seen.iter().all(|v| !is_message(v, "stalled")),
            "{name} got a message its sender was told was not sent:\n{}",
            show(&seen)
        );
    }
}

#[tokio::test]
async fn a_flooding_client_is_slowed_down_not_everyone() {
    const FLOOD: usize = 20_000;
    let dir = TestDir::new("flood");
    let redis = Redis::start(&dir).await;
    // No rate limit and deep queues: every flood message is a real broadcast, so the only
    // thing between the flooder and the node's append queue (16 k) is its own in-flight cap.
    let flags = ["--rate-per-second", "0", "--queue-capacity", "100000"];
    let a = Node::start_with(&dir, &redis, "nodeA", &flags).await;
    let b = Node::start_with(&dir, &redis, "nodeB", &flags).await;
    let (flooder, _) = join_json(&a, "flood", "flo").await;
    let (mut calm, _) = join_json(&a, "flood", "cal").await;
    let (mut far, _) = join_json(&b, "flood", "far").await;
    events_until(&mut far, within(TIMEOUT), "cal joined", |v| {
        is(v, "join", "cal")
    })
    .await;

    // The whole flood leaves in one burst; a task reads everything the flooder gets back.
    let (mut sink, mut stream) = flooder.ws.split();
    let burst: Vec<_> = (0..FLOOD)
        .map(|i| Ok(Message::text(format!("f{i}"))))
        .collect();
    let send = tokio::spawn(async move {
        sink.send_all(&mut futures_util::stream::iter(burst))
            .await
            .unwrap();
        sink
    });
    let read = tokio::spawn(async move {
        let mut echoes = 0;
        let mut refusals = Vec::new();
        while echoes < FLOOD {
            let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(TIMEOUT, stream.next()).await
            else {
                break;
            };
            let v = parse(&t);
            if v["type"] == "error" {
                refusals.push(v);
            } else if v["type"] == "message" && v["from"] == "flo" {
                echoes += 1;
            }
        }
        (echoes, refusals)
    });
    // Meanwhile someone else talks; it must not be refused for the flooder's sake.
    for i in 0..5 {
        calm.send(&format!("calm-{i}")).await;
    }
    for (name, client) in [("cal", &mut calm), ("far", &mut far)] {
        let seen = events_until(client, within(Duration::from_secs(30)), "calm-4", |v| {
            is_message(v, "calm-4")
        })
        .await;
        assert!(
            seen.iter().all(|v| v["type"] != "error"),
            "{name}: {}",
            show(&seen)
        );
        let calm_seen = seen.iter().filter(|v| v["from"] == "cal").count();
        assert_eq!(calm_seen, 5, "{name} got every calm message");
    }
    let _sink = send.await.unwrap();
    let (echoes, refusals) = read.await.unwrap();
    assert!(
        refusals.is_empty(),
        "the flooder was refused: {:?}",
        &refusals[..refusals.len().min(3)]
    );
    assert_eq!(echoes, FLOOD, "every flood message came back in the end");
}

// ---------------------------------------------------------------------------------------------
// Harness self-check: `redis_restart_mid_run` relies on a restarted Redis keeping its data.

/// Sends one inline command to the Redis on `port`; returns the raw reply.
async fn redis_cmd(port: u16, cmd: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("{cmd}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("a reply in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn harness_redis_restart_keeps_data() {
    let dir = TestDir::new("harness");
    let mut redis = Redis::start(&dir).await;
    assert_eq!(redis_cmd(redis.port, "SET k v1").await, "+OK\r\n");
    redis.stop().await;
    assert!(redis_ready_pid(redis.port).await.is_none());
    redis.restart().await;
    assert_eq!(redis_cmd(redis.port, "GET k").await, "$2\r\nv1\r\n");
}

// ---------------------------------------------------------------------------------------------
// Data loss, snapshots, restarted nodes, graceful shutdown.

#[tokio::test]
async fn redis_data_loss_restarts_clients() {
    let dir = TestDir::new("loss");
    let mut redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let (mut held, _) = join_json(&a, "loss", "held").await;
    let (mut yon, _) = join_json(&b, "loss", "yon").await;
    events_until(&mut held, within(TIMEOUT), "yon joined", |v| {
        is(v, "join", "yon")
    })
    .await;
    let mut pat = a.plain("/chat/loss?nick=pat").await;
    let welcome = lines_until(&mut pat, within(TIMEOUT), "welcome", |_| true).await;
    assert_eq!(nick_from_welcome(&welcome[0]), "pat");
    yon.send("before").await;
    for c in [&mut held, &mut yon] {
        events_until(c, within(TIMEOUT), "before", |v| is_message(v, "before")).await;
    }
    lines_until(&mut pat, within(TIMEOUT), "before", |l| l == "yon: before").await;

    // Redis comes back empty on the same port: every client of every node is told to
    // start again (1012). Each close frame is sent after the member's leave was appended,
    // so once all are seen nothing from before can reach the new rooms.
    redis.stop().await;
    redis.wipe();
    redis.restart().await;
    let deadline = within(REDIS_BOUND);
    for (name, c) in [("held", &mut held), ("yon", &mut yon), ("pat", &mut pat)] {
        let (texts, code, reason) = until_close(c, deadline, name).await;
        assert_eq!(
            code, 1012,
            "{name}: closed with {code} {reason:?} after {texts:?}; want 1012 (service restart)"
        );
    }
    for node in [&a, &b] {
        assert_eq!(node.await_health(200).await, "ok\n", "{}", node.id);
    }

    // Afresh: the nick held on nodeA is free (here on nodeB), nobody from before is a member,
    // and the history starts empty.
    let (mut p, welcome) = join_json(&b, "loss", "held").await;
    assert_eq!(welcome["members"], json!(["held"]), "{welcome}");
    let (mut q, welcome) = join_json(&a, "loss", "quin").await;
    assert_eq!(welcome["members"], json!(["held", "quin"]), "{welcome}");
    events_until(&mut p, within(TIMEOUT), "quin joined", |v| {
        is(v, "join", "quin")
    })
    .await;
    for k in 0..3 {
        p.send(&format!("p{k}")).await;
        q.send(&format!("q{k}")).await;
    }
    let mut logs = Vec::new();
    for (name, c) in [("held", &mut p), ("quin", &mut q)] {
        let mut replayed = Vec::new();
        let mut live = Vec::new();
        let deadline = within(TIMEOUT);
        while live.len() < 6 {
            let Some(Got::Text(t)) = next_got(c, deadline).await else {
                panic!("{name}: fewer than 6 messages in time:\n{}", show(&live));
            };
            let v = parse(&t);
            if v["replay"] == true {
                replayed.push(strip(&v));
            } else if v["type"] == "message" {
                live.push(strip(&v));
            } else {
                panic!("{name}: unexpected {v} after\n{}", show(&live));
            }
        }
        if name == "quin" {
            // Its history: held's join, nothing from before the loss.
            let kinds: Vec<(&str, &str)> = replayed
                .iter()
                .map(|v| (v["type"].as_str().unwrap(), v["from"].as_str().unwrap()))
                .collect();
            assert_eq!(kinds, [("join", "held")], "{name}:\n{}", show(&replayed));
        } else {
            assert!(replayed.is_empty(), "{name}:\n{}", show(&replayed));
        }
        logs.push(live);
    }
    assert_eq!(
        logs[0], logs[1],
        "nodeB and nodeA clients saw different orders"
    );
    let seqs: Vec<u64> = logs[0].iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for (from, prefix) in [("held", 'p'), ("quin", 'q')] {
        let texts: Vec<&str> = logs[0]
            .iter()
            .filter(|v| v["from"] == from)
            .map(|v| v["text"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..3).map(|k| format!("{prefix}{k}")).collect();
        assert_eq!(texts, want, "{}", show(&logs[0]));
    }
}

/// An inline command's integer reply (`:N`).
async fn redis_int(port: u16, cmd: &str) -> u64 {
    let reply = redis_cmd(port, cmd).await;
    reply
        .strip_prefix(':')
        .and_then(|r| r.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{cmd}: not an integer reply: {reply:?}"))
}

/// An inline command's bulk string reply; `None` for nil.
async fn redis_bulk(port: u16, cmd: &str) -> Option<String> {
    let reply = redis_cmd(port, cmd).await;
    if reply == "$-1\r\n" {
        return None;
    }
    let (len, rest) = reply
        .strip_prefix('$')
        .and_then(|r| r.split_once("\r\n"))
        .unwrap_or_else(|| panic!("{cmd}: not a bulk reply: {reply:?}"));
    let len: usize = len.parse().unwrap();
    Some(rest[..len].to_owned())
}

#[tokio::test]
async fn late_node_restores_from_snapshot() {
    /// Messages sent: with the join, 2 601 log entries, so snapshots at entries 1 000 and
    /// 2 000, and the second trims the log up to the first.
    const SENT: usize = 2600;
    const HISTORY: usize = 100; // the default --history
    const ROOM: &str = "snap";
    let dir = TestDir::new("snapshot");
    let redis = Redis::start(&dir).await;
    let a = Node::start_with(&dir, &redis, "nodeA", &["--rate-per-second", "0"]).await;
    let (ann, _) = join_json(&a, ROOM, "ann").await;

    // Pipelined: everything is sent at once while the echoes are read concurrently.
    let Client { ws, protocol } = ann;
    let (mut sink, mut stream) = ws.split();
    let send = async {
        for i in 0..SENT {
            sink.feed(Message::text(format!("m{i}")))
                .await
                .expect("send");
        }
        sink.flush().await.expect("flush");
    };
    let read = async {
        let deadline = within(Duration::from_secs(30));
        let mut seqs = Vec::with_capacity(SENT);
        while seqs.len() < SENT {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let text = match next {
                Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("ann after {} echoes: got {other:?}", seqs.len()),
            };
            let v = parse(&text);
            let want = format!("m{}", seqs.len());
            assert!(is_message(&v, &want), "want {want}, got {v}");
            seqs.push(v["seq"].as_u64().expect("a seq"));
        }
        seqs
    };
    let ((), seqs) = tokio::join!(send, read);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "ann's echoes have gaps in their seqs"
    );
    let last = *seqs.last().unwrap();
    let mut ann = Client {
        ws: sink.reunite(stream).expect("the halves of one stream"),
        protocol,
    };

    // The snapshots are saved in the background: poll (bounded) until the log is trimmed.
    let log_key = format!("chat:room:{ROOM}:log");
    let snap_key = format!("chat:room:{ROOM}:snap");
    let deadline = within(TIMEOUT);
    let (xlen, snap_id) = loop {
        let xlen = redis_int(redis.port, &format!("XLEN {log_key}")).await;
        let snap_id = redis_bulk(redis.port, &format!("HGET {snap_key} id")).await;
        // Snapshots at entries 1 000 and 2 000; the second trims up to the first, leaving
        // about 1 600 of the 2 601 entries.
        if xlen <= 1700 && snap_id.as_deref().is_some_and(|id| id != "0-0") {
            break (xlen, snap_id.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "log not trimmed: XLEN {log_key} = {xlen}, HGET {snap_key} id = {snap_id:?}"
        );
        sleep(Duration::from_millis(50)).await;
    };
    assert!(xlen > 0, "XLEN {log_key} = 0");
    let (ms, n) = snap_id.split_once('-').expect("a stream id");
    assert!(
        ms.parse::<u64>().is_ok() && n.parse::<u64>().is_ok(),
        "snapshot id {snap_id:?}"
    );

    // A node started now can only get the room from the snapshot plus the trimmed log.
    let b = Node::start(&dir, &redis, "nodeB").await;
    let mut bob = b.json(&format!("/chat/{ROOM}?nick=bob")).await;
    let welcome = events_until(&mut bob, within(TIMEOUT), "welcome", |_| true).await;
    assert_eq!(welcome[0]["type"], "welcome", "{}", welcome[0]);
    assert_eq!(welcome[0]["nick"], "bob");
    assert_eq!(welcome[0]["members"], json!(["ann", "bob"]));
    bob.send("from-b").await;
    let seen = events_until(&mut bob, within(TIMEOUT), "from-b", |v| {
        is_message(v, "from-b")
    })
    .await;
    let (replayed, live) = seen.split_at(seen.len() - 1);
    assert_eq!(
        replayed.len(),
        HISTORY,
        "bob's replay (want the last {HISTORY} events):\n{}",
        show(replayed)
    );
    for (i, v) in replayed.iter().enumerate() {
        let k = SENT - HISTORY + i;
        assert_eq!(v["replay"], true, "{v}");
        assert!(
            is(v, "message", "ann") && v["text"] == format!("m{k}"),
            "{v}"
        );
        assert_eq!(
            v["seq"].as_u64(),
            Some(last + 1 - (HISTORY - i) as u64),
            "{v}"
        );
    }
    assert!(is_live(&live[0]), "{}", live[0]);
    assert_eq!(live[0]["seq"].as_u64(), Some(last + 2), "{}", live[0]);

    // nodeA agrees: bob's join right after the last message, then bob's message.
    let seen = events_until(&mut ann, within(TIMEOUT), "from-b", |v| {
        is_message(v, "from-b")
    })
    .await;
    assert_eq!(seen.len(), 2, "{}", show(&seen));
    assert!(is(&seen[0], "join", "bob"), "{}", seen[0]);
    assert_eq!(seen[0]["seq"].as_u64(), Some(last + 1), "{}", seen[0]);
    assert_eq!(strip(&seen[1]), strip(&live[0]));
}

#[tokio::test]
async fn restarted_node_reaps_its_old_members() {
    let dir = TestDir::new("reap");
    let redis = Redis::start(&dir).await;
    let mut a = Node::start(&dir, &redis, "nodeA").await;
    let (ghost, _) = join_json(&a, "haunt", "ghost").await;
    a.kill();
    let killed = Instant::now();
    drop(ghost);

    // The same node id again, with nobody else left to notice that the first one died.
    let a2 = Node::start(&dir, &redis, "nodeA").await;
    let (mut seer, welcome) = join_json(&a2, "haunt", "seer").await;
    let deadline = killed + DEATH_BOUND;
    let seen = events_until(&mut seer, deadline, "ghost's leave", |v| {
        is(v, "leave", "ghost")
    })
    .await;
    // Either ghost was still a member when seer joined (a live leave), or it was reaped
    // just before (the leave is in seer's history).
    let ghost_at_join = welcome["members"] == json!(["ghost", "seer"]);
    assert!(
        ghost_at_join || welcome["members"] == json!(["seer"]),
        "{welcome}"
    );
    let leave = seen.last().unwrap();
    assert_eq!(is_live(leave), ghost_at_join, "{welcome}\n{}", show(&seen));

    // One leave, and ghost is gone from the room and its nick free.
    seer.send("/who").await;
    let seen = events_until(&mut seer, within(TIMEOUT), "/who", |v| v["type"] == "who").await;
    assert_eq!(seen.len(), 1, "{}", show(&seen));
    assert_eq!(seen[0]["members"], json!(["seer"]));
    join_json(&a2, "haunt", "ghost").await;
    events_until(&mut seer, within(TIMEOUT), "the new ghost", |v| {
        is(v, "join", "ghost")
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_announces_leaves_at_once() {
    // A dead node's members are announced only after 10 s, so a leave within the 5 s bound
    // can only come from the shutting-down node itself.
    const BOUND: Duration = Duration::from_secs(5);
    let flags = ["--node-timeout", "10s"];
    let dir = TestDir::new("sigterm");
    let redis = Redis::start(&dir).await;
    let a = Node::start_with(&dir, &redis, "nodeA", &flags).await;
    let mut b = Node::start_with(&dir, &redis, "nodeB", &flags).await;
    let (mut ann, _) = join_json(&a, "bye", "ann").await;
    let (mut bob, _) = join_json(&b, "bye", "bob").await;
    events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;

    b.sigterm();
    let deadline = within(BOUND);
    let (texts, code, reason) = until_close(&mut bob, deadline, "bob").await;
    assert_eq!(code, 1001, "bob: {reason:?} after {texts:?}");
    let seen = events_until(
        &mut ann,
        deadline,
        "bob's leave after SIGTERM of nodeB",
        |v| is(v, "leave", "bob"),
    )
    .await;
    assert_eq!(seen.len(), 1, "{}", show(&seen));
    assert!(is_live(&seen[0]), "{}", seen[0]);
    let status = wait_exit(&mut b.child, TIMEOUT)
        .await
        .expect("nodeB exits after SIGTERM");
    assert!(status.success(), "nodeB: {status}");

    // The room goes on without bob.
    ann.send("/who").await;
    let seen = events_until(&mut ann, within(TIMEOUT), "/who", |v| v["type"] == "who").await;
    assert_eq!(seen.len(), 1, "{}", show(&seen));
    assert_eq!(seen[0]["members"], json!(["ann"]));
}

// ---------------------------------------------------------------------------------------------
// Missed log entries: a node whose copy of a room is out of step with the log resyncs.

/// The highest seq among `events` (0 if none has one): the client's resume point.
fn max_seq(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The room's count of log entries (`chat:room:{ROOM}:n`); `None` if it has none.
async fn log_count(redis: &Redis, room: &str) -> Option<u64> {
    let n = redis_bulk(redis.port, &format!("GET chat:room:{room}:n")).await?;
    Some(
        n.parse()
            .unwrap_or_else(|_| panic!("{room}'s entry count: {n:?}")),
    )
}

/// Reads until the close (bounded by `deadline`), which must be 1012; returns the events read
/// before it and the close reason.
async fn until_restart(c: &mut Client, deadline: Instant, who: &str) -> (Vec<Value>, String) {
    let (texts, code, reason) = until_close(c, deadline, who).await;
    let events: Vec<Value> = texts.iter().map(|t| parse(t)).collect();
    assert_eq!(
        code,
        1012,
        "{who}: closed with {code} {reason:?} after\n{}want 1012",
        show(&events)
    );
    (events, reason)
}

/// Reconnects `nick` to `room` on `node` with `?since=` and reads its welcome, checking that
/// it got its nick back.
async fn rejoin_json(node: &Node, room: &str, nick: &str, since: u64) -> (Client, Value) {
    let mut c = node
        .json(&format!("/chat/{room}?nick={nick}&since={since}"))
        .await;
    let first = events_until(&mut c, within(TIMEOUT), "welcome", |_| true).await;
    let welcome = first.into_iter().next().unwrap();
    assert_eq!(welcome["type"], "welcome", "{nick} rejoining: {welcome}");
    assert_eq!(welcome["nick"], nick, "{nick} rejoining: {welcome}");
    (c, welcome)
}

/// Every client sends `PER` messages `TAG-NICK-K`; then each must see all of them live, in
/// one order shared by all, with increasing seqs and each sender's in the order it sent
/// them. Events replayed from history (still unread after a welcome) are skipped.
async fn chat_same_order(clients: &mut [(&str, &mut Client)], tag: &str) {
    const PER: usize = 3;
    for k in 0..PER {
        for (nick, c) in clients.iter_mut() {
            c.send(&format!("{tag}-{nick}-{k}")).await;
        }
    }
    let want = PER * clients.len();
    let mut logs = Vec::new();
    for (nick, c) in clients.iter_mut() {
        let deadline = within(TIMEOUT);
        let mut live = Vec::new();
        while live.len() < want {
            let v = match next_got(c, deadline).await {
                Some(Got::Text(t)) => parse(&t),
                other => panic!(
                    "{nick}: got {other:?} after {} of {want} messages:\n{}",
                    live.len(),
                    show(&live)
                ),
            };
            if v["replay"] == true {
                continue;
            }
            assert!(
                v["type"] == "message" && is_live(&v),
                "{nick}: unexpected {v} after\n{}",
                show(&live)
            );
            live.push(strip(&v));
        }
        logs.push(live);
    }
    for (i, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            log,
            &logs[0],
            "{} and {} saw different orders:\n{}vs\n{}",
            clients[i].0,
            clients[0].0,
            show(log),
            show(&logs[0])
        );
    }
    let log = &logs[0];
    let seqs: Vec<u64> = log.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for (nick, _) in clients.iter() {
        let texts: Vec<&str> = log
            .iter()
            .filter(|v| v["from"] == *nick)
            .map(|v| v["text"].as_str().unwrap())
            .collect();
        let sent: Vec<String> = (0..PER).map(|k| format!("{tag}-{nick}-{k}")).collect();
        assert_eq!(texts, sent, "messages from {nick} in\n{}", show(log));
    }
}

#[tokio::test]
async fn missed_log_entries_make_nodes_resync() {
    const ROOM: &str = "gap";
    let dir = TestDir::new("gap");
    let redis = Redis::start(&dir).await;
    let a = Node::start(&dir, &redis, "nodeA").await;
    let b = Node::start(&dir, &redis, "nodeB").await;
    let (mut ann, _) = join_json(&a, ROOM, "ann").await;
    let (mut bob, _) = join_json(&b, ROOM, "bob").await;
    let mut ann_seen = events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;

    // Both joins are entries 1 and 2. Entry 3 is "trimmed away before either node read it":
    // the counter moves on behind the nodes' backs, so ann's message becomes entry 4.
    assert_eq!(log_count(&redis, ROOM).await, Some(2));
    let incr = format!("INCR chat:room:{ROOM}:n");
    assert_eq!(redis_int(redis.port, &incr).await, 3);
    ann.send("after the gap").await;

    // Both copies now know they missed an entry: every client of the room is told to
    // reconnect (the message is not applied by a copy that missed what came before it, but a
    // client may have been shown it first; either is fine).
    let deadline = within(TIMEOUT);
    let mut last = Vec::new();
    for (name, c) in [("ann", &mut ann), ("bob", &mut bob)] {
        let (events, reason) = until_restart(c, deadline, name).await;
        assert_eq!(reason, "room resynchronizing; reconnect", "{name}");
        for v in &events {
            assert!(
                v["replay"] == true || is_message(v, "after the gap"),
                "{name}: unexpected {v} before the close"
            );
        }
        if name == "ann" {
            ann_seen.extend(events);
            last.push(max_seq(&ann_seen));
        } else {
            last.push(max_seq(&events));
        }
    }

    // They come back (one after the other, so the second finds the room the first
    // reloaded), each on its own node, resuming where it was, and chat as before.
    let (mut ann, _) = rejoin_json(&a, ROOM, "ann", last[0]).await;
    let (mut bob, _) = rejoin_json(&b, ROOM, "bob", last[1]).await;
    events_until(&mut ann, within(TIMEOUT), "bob rejoined", |v| {
        is_live(v) && is(v, "join", "bob")
    })
    .await;
    chat_same_order(&mut [("ann", &mut ann), ("bob", &mut bob)], "resynced").await;
}

/// Redis comes back from a backup, older than what the nodes have applied.
///
/// Mechanism exercised: the entry numbers (`n`). Nothing else tells the nodes: the epoch is
/// the same (the backup has it), and so is `chat:nodes` (no node registered in between), so the
/// heartbeat sees nothing wrong, and the restored log holds nothing after the nodes' position.
/// The room's counter, though, went back from 6 to 4, so the next entry appended (ann's
/// message) is numbered 5 while both copies applied 6 and expect 7: both resync, closing
/// their clients with 1012 ("room resynchronizing; reconnect"). A close for the other reason
/// ("service restart", a node noticing the rollback by itself) is accepted too. The reloaded
/// room is the restored log plus what came after it (that message, the leaves), contiguous.
#[tokio::test]
async fn redis_rollback_to_older_data_is_detected() {
    const ROOM: &str = "rollback";
    // Longer than the default, so that a node slow to reconnect after a Redis restart is not
    // judged dead meanwhile (its members would be closed with 1013, not what this is about).
    let flags = ["--node-timeout", "3s"];
    let dir = TestDir::new("rollback");
    let mut redis = Redis::start(&dir).await;
    let a = Node::start_with(&dir, &redis, "nodeA", &flags).await;
    let b = Node::start_with(&dir, &redis, "nodeB", &flags).await;
    let (mut ann, _) = join_json(&a, ROOM, "ann").await;
    let (mut bob, _) = join_json(&b, ROOM, "bob").await;
    events_until(&mut ann, within(TIMEOUT), "bob joined", |v| {
        is(v, "join", "bob")
    })
    .await;
    // One message at a time, so every client has seen everything before the next step.
    let mut seen: [Vec<Value>; 2] = Default::default();
    for (from, text) in [(0, "old-1"), (1, "old-2")] {
        [&mut ann, &mut bob][from].send(text).await;
        for (i, c) in [&mut ann, &mut bob].into_iter().enumerate() {
            seen[i].extend(events_until(c, within(TIMEOUT), text, |v| is_message(v, text)).await);
        }
    }
    assert_eq!(
        log_count(&redis, ROOM).await,
        Some(4),
        "two joins, two messages"
    );

    // The backup.
    redis.stop().await;
    let older = dir.path.join("redis-data-older");
    redis.copy_data(&older);
    // The nodes notice the outage before Redis is back, so that once they answer 200 again
    // they have reconnected (and messages are not refused).
    for node in [&a, &b] {
        node.await_health(503).await;
    }
    redis.restart().await;
    for node in [&a, &b] {
        assert_eq!(node.await_health(200).await, "ok\n", "{}", node.id);
    }
    // Life goes on: the nodes apply entries 5 and 6.
    for (from, text) in [(0, "new-1"), (1, "new-2")] {
        [&mut ann, &mut bob][from].send(text).await;
        for (i, c) in [&mut ann, &mut bob].into_iter().enumerate() {
            seen[i].extend(events_until(c, within(TIMEOUT), text, |v| is_message(v, text)).await);
        }
    }
    assert_eq!(log_count(&redis, ROOM).await, Some(6));

    // Redis is restored from the backup.
    redis.stop().await;
    redis.restore(&older);
    for node in [&a, &b] {
        node.await_health(503).await;
    }
    redis.restart().await;
    for node in [&a, &b] {
        assert_eq!(node.await_health(200).await, "ok\n", "{}", node.id);
    }
    assert_eq!(
        log_count(&redis, ROOM).await,
        Some(4),
        "the backup's counter"
    );

    // Nothing has told the nodes yet; ann's next message does. It may be refused while a
    // node reconnects: then it is sent again.
    let deadline = within(REDIS_BOUND);
    let mut attempt = 0;
    let mut ann_before = Vec::new();
    let ann_reason = 'closed: loop {
        attempt += 1;
        // The socket may be closing already; the read below notices.
        let _ = ann
            .ws
            .send(Message::text(format!("after-rollback-{attempt}")))
            .await;
        loop {
            let v = match next_got(&mut ann, deadline).await {
                Some(Got::Text(t)) => parse(&t),
                Some(Got::Close(code, reason)) => {
                    assert_eq!(
                        code,
                        1012,
                        "ann: closed with {code} {reason:?} after\n{}want 1012",
                        show(&ann_before)
                    );
                    break 'closed reason;
                }
                other => panic!(
                    "ann: no 1012 within {REDIS_BOUND:?} after the rollback: got {other:?} \
                     after\n{}",
                    show(&ann_before)
                ),
            };
            let refused = v["type"] == "error";
            if refused {
                let reason = v["text"].as_str().unwrap_or_default();
                assert!(reason.contains(UNAVAILABLE), "ann: {v}");
            }
            ann_before.push(v);
            if refused {
                sleep(Duration::from_millis(250)).await;
                continue 'closed;
            }
        }
    };
    let (bob_before, bob_reason) = until_restart(&mut bob, deadline, "bob").await;
    for (name, reason) in [("ann", &ann_reason), ("bob", &bob_reason)] {
        assert!(
            reason == "room resynchronizing; reconnect" || reason == "service restart",
            "{name}: 1012 with reason {reason:?}"
        );
    }
    seen[0].extend(ann_before);
    seen[1].extend(bob_before);

    // The old connections' leaves go into the log after the closes; once both are in, the
    // nicks are free again for the reconnecting clients. (A refused attempt was not appended.)
    let want = 4 + 1 + 2;
    let wait = within(TIMEOUT);
    loop {
        let n = log_count(&redis, ROOM).await;
        if n == Some(want) {
            break;
        }
        assert!(
            Instant::now() < wait,
            "{ROOM}'s entry count {n:?}, want {want} (the backup's 4, ann's message, 2 leaves)"
        );
        sleep(Duration::from_millis(50)).await;
    }

    let (mut ann, _) = rejoin_json(&a, ROOM, "ann", max_seq(&seen[0])).await;
    let (mut bob, _) = rejoin_json(&b, ROOM, "bob", max_seq(&seen[1])).await;
    events_until(&mut ann, within(TIMEOUT), "bob rejoined", |v| {
        is_live(v) && is(v, "join", "bob")
    })
    .await;
    chat_same_order(&mut [("ann", &mut ann), ("bob", &mut bob)], "restored").await;
}
