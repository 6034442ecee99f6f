//! Operations (SPEC §3): graceful shutdown, `/healthz`, `/metrics`, the HTML client, and the
//! built binary (`--help`, the address line, SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{metric, raw_upgrade, try_connect, Client, TestServer, TIMEOUT};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_the_server_task_ends_ok() {
    let server = TestServer::start(&[]).await;
    let mut a = server.connect("/chat/s1?nick=a").await;
    a.recv().await;
    let mut b = server.connect("/chat/s1?nick=b").await;
    b.recv().await;
    a.recv().await; // b joined
    let mut c = server.connect_json("/chat/s2?nick=c").await;
    c.recv_json().await;

    server.shutdown.shutdown();
    for client in [&mut a, &mut b, &mut c] {
        let (_, code, reason) = client.expect_close().await;
        assert_eq!(code, CloseCode::Away, "reason {reason:?}");
        client.expect_end().await;
    }
    drop((a, b, c));
    tokio::time::timeout(TIMEOUT, server.task)
        .await
        .expect("the server task ends in time")
        .expect("the server task does not panic")
        .expect("the server task ends Ok");
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    server.shutdown.shutdown();
    tokio::time::timeout(TIMEOUT, server.task)
        .await
        .expect("the server task ends in time")
        .unwrap()
        .unwrap();
    let connect = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect answered in time");
    assert!(connect.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn healthz_answers_200_ok() {
    let server = TestServer::start(&[]).await;
    let (status, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
}

/// Every metric the spec names, as the names appear in the Prometheus text.
const METRIC_NAMES: [&str; 6] = [
    "chat_connections",
    "chat_rooms",
    "chat_messages_in_total",
    "chat_messages_out_total",
    "chat_slow_consumer_disconnects_total",
    "chat_rejected_handshakes",
];

#[tokio::test]
async fn metrics_list_every_metric_from_the_start() {
    let server = TestServer::start(&[]).await;
    let body = server.metrics().await;
    for name in METRIC_NAMES {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

#[tokio::test]
async fn metrics_count_connections_rooms_messages_and_rejections() {
    let server = TestServer::start(&["--history", "0"]).await;
    let body = server.metrics().await;
    assert!(body.contains("# TYPE chat_connections gauge"), "{body}");
    assert!(body.contains("# TYPE chat_messages_in counter"), "{body}");
    assert_eq!(metric(&body, "chat_connections"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "chat_rooms"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "chat_messages_in_total"), Some(0.0), "{body}");

    let mut a = server.connect("/chat/m?nick=a").await;
    a.recv().await;
    let mut b = server.connect("/chat/m?nick=b").await;
    b.recv().await;
    a.recv().await;
    a.send("counted").await;
    assert_eq!(a.recv().await, "a: counted");
    assert_eq!(b.recv().await, "a: counted");
    let (status, _, _) =
        raw_upgrade(server.addr, "/chat/m", &[("Sec-WebSocket-Version", "8")]).await;
    assert_eq!(status, 426);

    let body = server.metrics().await;
    for name in METRIC_NAMES {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    assert_eq!(metric(&body, "chat_connections"), Some(2.0), "{body}");
    assert_eq!(metric(&body, "chat_rooms"), Some(1.0), "{body}");
    assert!(
        metric(&body, "chat_messages_in_total").is_some_and(|v| v >= 1.0),
        "{body}"
    );
    // The message alone went out twice (to a and b), on top of welcomes and the join notice.
    assert!(
        metric(&body, "chat_messages_out_total").is_some_and(|v| v >= 2.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "chat_rejected_handshakes_total{reason=\"version\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "chat_slow_consumer_disconnects_total"),
        Some(0.0),
        "{body}"
    );
}

#[tokio::test]
async fn plain_get_of_a_websocket_path_serves_the_html_client() {
    let server = TestServer::start(&[]).await;
    for path in ["/", "/chat", "/chat/x"] {
        let (status, body) = server.http_get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("<html"), "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_path_gets_404() {
    let server = TestServer::start(&[]).await;
    for path in ["/nope", "/chat/x/y", "/static/index.html"] {
        let (status, _) = server.http_get(path).await;
        assert_eq!(status, 404, "{path}");
    }
}

// -------------------------------------------------------------------------------------------
// The built binary.

/// The server process; killed (and reaped) when dropped, so a failing test leaks nothing.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat-server");
        Proc { child }
    }

    /// Waits (bounded) for the process to exit.
    async fn wait(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chat-server did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one line from the child's stdout without blocking the runtime (bounded). Returns
/// the reader too, so the pipe stays open.
async fn first_line(stdout: ChildStdout) -> (String, BufReader<ChildStdout>) {
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read stdout");
        (line, reader)
    });
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("the address line in time")
        .unwrap()
}

/// The help text split into one section per option: a line starting with `-` and the
/// indented lines after it.
fn option_sections(help: &str) -> Vec<String> {
    let mut sections: Vec<String> = Vec::new();
    let mut in_option = false;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            sections.push(trimmed.to_owned());
            in_option = true;
        } else if in_option && line.starts_with(' ') && !trimmed.is_empty() {
            let last = sections.last_mut().unwrap();
            last.push('\n');
            last.push_str(trimmed);
        } else {
            in_option = false;
        }
    }
    sections
}

#[tokio::test]
async fn binary_help_exits_0_and_documents_every_flag() {
    let mut proc = Proc::spawn(&["--help"]);
    let stdout = proc.child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text).unwrap();
        text
    });
    let help = tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("--help output in time")
        .unwrap();
    assert!(proc.wait().await.success());
    for flag in [
        "--bind",
        "--port",
        "--seed-compat",
        "--max-connections",
        "--max-frame-bytes",
        "--max-message-bytes",
        "--history",
        "--rate-burst",
        "--rate-per-second",
        "--queue-capacity",
        "--handshake-timeout",
        "--ping-interval",
        "--idle-timeout",
        "--allowed-origin",
        "--shutdown-grace",
    ] {
        let section = option_sections(&help)
            .into_iter()
            .find(|sec| {
                sec.lines().next().is_some_and(|first| {
                    first
                        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                        .any(|token| token == flag)
                })
            })
            .unwrap_or_else(|| panic!("{flag} is not documented:\n{help}"));
        let words = section
            .split_whitespace()
            .filter(|w| !w.starts_with('-') && !w.starts_with('<'))
            .filter(|w| w.chars().any(|c| c.is_ascii_alphabetic()))
            .count();
        assert!(words >= 3, "{flag} has no explanation: {section:?}");
    }
}

#[tokio::test]
async fn binary_prints_its_address_and_exits_0_on_sigterm_after_closing_clients_with_1001() {
    let mut proc = Proc::spawn(&["--bind", "127.0.0.1", "--port", "0", "--history", "0"]);
    let (line, _stdout) = first_line(proc.child.stdout.take().unwrap()).await;
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    let mut a = Client::connect(&format!("ws://{addr}/chat/bin?nick=a"), None).await;
    a.recv().await;
    let mut b = Client::connect(&format!("ws://{addr}/chat/bin?nick=b"), None).await;
    b.recv().await;
    assert_eq!(a.recv().await, " .... b has joined.");
    a.send("hello b").await;
    assert_eq!(b.recv().await, "a: hello b");
    assert_eq!(a.recv().await, "a: hello b");

    let kill = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    for client in [&mut a, &mut b] {
        let (_, code, reason) = client.expect_close().await;
        assert_eq!(code, CloseCode::Away, "reason {reason:?}");
        client.expect_end().await;
    }
    drop((a, b));
    let status = proc.wait().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn binary_exits_0_on_sigint_after_closing_clients_with_1001() {
    let mut proc = Proc::spawn(&["--bind", "127.0.0.1", "--port", "0"]);
    let (line, _stdout) = first_line(proc.child.stdout.take().unwrap()).await;
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let mut a = Client::connect(&format!("ws://{addr}/chat/int?nick=a"), None).await;
    a.recv().await;
    a.send("hi").await;
    assert_eq!(a.recv().await, "a: hi");
    let kill = Command::new("kill")
        .args(["-INT", &proc.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let (_, code, reason) = a.expect_close().await;
    assert_eq!(code, CloseCode::Away, "reason {reason:?}");
    a.expect_end().await;
    drop(a);
    let status = proc.wait().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn binary_exits_0_on_sigterm_sent_as_soon_as_the_address_line_is_printed() {
    // A supervisor that treats the address line as "ready" may stop the server right away.
    // The shell reads the line and signals with builtins, so no time passes in between.
    const SCRIPT: &str = r#"
        dir=$(mktemp -d) || exit 90
        mkfifo "$dir/out" || exit 91
        "$1" --bind 127.0.0.1 --port 0 >"$dir/out" 2>/dev/null &
        pid=$!
        # Watchdog: SIGKILL after ~10 s; it ends by itself once the server is gone.
        (
            i=0
            while [ "$i" -lt 100 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
            kill -KILL "$pid" 2>/dev/null
        ) >/dev/null 2>&1 &
        exec 3<"$dir/out"
        read -r line <&3
        kill -TERM "$pid"
        wait "$pid"
        status=$?
        rm -rf "$dir"
        echo "$line"
        echo "status=$status"
    "#;
    let mut proc = Proc {
        child: Command::new("sh")
            .args(["-c", SCRIPT, "sh", env!("CARGO_BIN_EXE_chat-server")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    };
    let stdout = proc.child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text).unwrap();
        text
    });
    let out = tokio::time::timeout(TIMEOUT + Duration::from_secs(5), read)
        .await
        .expect("the script finishes in time")
        .unwrap();
    proc.wait().await;
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("listening on http://"), "{out:?}");
    // `wait` reports 128 + N for a process killed by signal N (SIGTERM is 15: 143).
    assert_eq!(lines.next(), Some("status=0"), "{out:?}");
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // fields[0] is field 3 (state); Linux reports these in 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let log = std::env::temp_dir().join(format!("chat-server-emfile-{}.log", std::process::id()));
    // A soft and hard limit of 48 open files: a few dozen idle TCP connections exhaust it.
    const SCRIPT: &str =
        r#"ulimit -n 48 || exit 90; exec "$1" --bind 127.0.0.1 --port 0 --history 0 2>"$2""#;
    let mut proc = Proc {
        child: Command::new("sh")
            .args(["-c", SCRIPT, "sh", env!("CARGO_BIN_EXE_chat-server")])
            .arg(&log)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    };
    let pid = proc.child.id();
    let (line, _reader) = first_line(proc.child.stdout.take().unwrap()).await;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("address line")
        .parse()
        .unwrap();

    // Far more connections than descriptors: the kernel queues the rest in the backlog.
    let mut hogs = Vec::new();
    for _ in 0..80 {
        match tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => hogs.push(stream),
            _ => break,
        }
    }
    assert!(hogs.len() >= 48, "only {} connections opened", hogs.len());

    // The server is out of descriptors now: it must stay up and must not spin.
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_seconds(pid) - before;
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    assert!(spent < 1.0, "the accept loop spun: {spent} s of CPU in 2 s");

    // Descriptors come back when the hogs leave; the server serves again by itself.
    drop(hogs);
    let url = format!("ws://{addr}/chat/back?nick=ok");
    let mut client = None;
    for _ in 0..200 {
        if let Ok(c) = try_connect(&url, &[]).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = client.expect("the server accepted again after descriptors freed");
    assert!(client.recv().await.starts_with(" .... you are ok;"));
    client.send("recovered").await;
    assert_eq!(client.recv().await, "ok: recovered");

    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(stderr.contains("accept failed"), "{stderr}");
}
