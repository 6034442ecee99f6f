//! Runs the real `chat-loadgen` binary against the real chat server on an ephemeral port and
//! checks its JSON: every mode, several rooms, several processes, a soak run with churn,
//! clients spread over several URLs, and a refused connection.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Starts chat-server (tutorial semantics, no rate limit) on a free port in the background.
fn start_server() -> (std::net::SocketAddr, chat_server::ShutdownHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let mut config = chat_server::Config::defaults();
            config.seed_compat = true;
            config.rate_per_second = 0;
            let server = chat_server::Server::bind(config).await.expect("bind");
            tx.send((server.local_addr().unwrap(), server.shutdown_handle()))
                .unwrap();
            server.run().await.expect("server runs");
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server starts")
}

/// Runs the load generator with `args`; returns its JSON report (and asserts it exited 0).
fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-loadgen"))
        .args(args)
        .output()
        .expect("run chat-loadgen");
    assert!(
        out.status.success(),
        "chat-loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn assert_clean(r: &Value, expected: u64) {
    assert_eq!(r["expected_deliveries"], expected, "{r}");
    assert_eq!(r["deliveries"], expected, "{r}");
    for field in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(r[field], 0, "{field}: {r}");
    }
    assert_eq!(r["connect"]["failed"], 0, "{r}");
    assert_eq!(r["disconnects"], serde_json::json!({}), "{r}");
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0, "{r}");
    assert!(r["deliveries_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn every_mode_delivers_everything_in_order() {
    let (addr, shutdown) = start_server();
    let url = format!("ws://{addr}");

    // Closed loop, one room: 20 clients x 3 senders x 50 messages.
    let r = loadgen(&[
        "--url",
        &url,
        "--clients",
        "20",
        "--senders",
        "3",
        "--messages",
        "50",
    ]);
    assert_clean(&r, 20 * 3 * 50);
    assert_eq!(r["sent"], 150);

    // Several rooms, every client sending, split over two processes.
    let r = loadgen(&[
        "--url",
        &url,
        "--clients",
        "30",
        "--rooms",
        "6",
        "--senders",
        "30",
        "--messages",
        "10",
        "--window",
        "2",
        "--procs",
        "2",
    ]);
    assert_clean(&r, 30 * 5 * 10);
    assert_eq!(r["procs"], 2);

    // Fixed rate with padding.
    let r = loadgen(&[
        "--url",
        &url,
        "--clients",
        "10",
        "--senders",
        "2",
        "--messages",
        "10",
        "--mode",
        "rate",
        "--rate",
        "200",
        "--size",
        "100",
    ]);
    assert_clean(&r, 10 * 2 * 10);

    // Idle: connects, joins, holds, sends nothing.
    let r = loadgen(&[
        "--url",
        &url,
        "--clients",
        "15",
        "--mode",
        "idle",
        "--hold",
        "0.2",
    ]);
    assert_eq!(r["connect"]["ok"], 15, "{r}");
    assert_eq!(r["sent"], 0);
    shutdown.shutdown();
}

#[test]
fn soak_keeps_steady_clients_whole_while_others_come_and_go() {
    let (addr, shutdown) = start_server();
    let url = format!("ws://{addr}");
    // 3 s: 30 clients in 3 rooms, 6 senders at 60 messages/s in total (30 each), and 20
    // churning clients per second over two processes.
    let r = loadgen(&[
        "--url",
        &url,
        "--mode",
        "soak",
        "--duration",
        "3",
        "--clients",
        "30",
        "--rooms",
        "3",
        "--senders",
        "6",
        "--rate",
        "60",
        "--churn",
        "20",
        "--procs",
        "2",
    ]);
    // Each room has 10 clients and 2 senders of 30 messages.
    assert_clean(&r, 3 * 10 * 2 * 30);
    assert_eq!(r["sent"], 180, "{r}");
    assert_eq!(r["messages_per_sender"], 30, "{r}");
    let soak = &r["soak"];
    assert_eq!(soak["duration_s"], 3.0, "{r}");
    assert!(soak["elapsed_s"].as_f64().unwrap() >= 3.0, "{r}");
    let churn = &soak["churn"];
    let ok = churn["connects_ok"].as_u64().unwrap();
    assert!(ok > 0, "{r}");
    assert_eq!(churn["connects_failed"], 0, "{r}");
    assert_eq!(churn["attempted"], ok, "{r}");
    assert_eq!(churn["abandoned"], 0, "{r}");
    assert_eq!(churn["ended_early"], serde_json::json!({}), "{r}");
    // Churners leaving are notices; their messages are counted, not unexpected.
    assert!(r["notices"].as_u64().unwrap() > 0, "{r}");
    if churn["messages_sent"].as_u64().unwrap() > 0 {
        assert!(soak["churn_messages_received"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(r["loadgen_cpu_s"].as_f64().unwrap() > 0.0, "{r}");
    shutdown.shutdown();
}

#[test]
fn refused_connections_are_reported_not_hidden() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = loadgen(&[
        "--url",
        &format!("ws://127.0.0.1:{port}"),
        "--clients",
        "3",
        "--messages",
        "1",
        "--connect-timeout",
        "2",
        "--drain-timeout",
        "0.5",
    ]);
    assert_eq!(r["connect"]["ok"], 0, "{r}");
    assert_eq!(r["connect"]["failed"], 3, "{r}");
    let errors = r["connect"]["errors"]
        .as_object()
        .expect("errors by reason");
    assert!(
        errors.keys().any(|k| k.contains("ConnectionRefused")),
        "{r}"
    );
}

#[test]
fn bad_arguments_are_refused_with_exit_code_2() {
    for args in [
        &["--clients", "0"][..],
        &["--clients", "2", "--rooms", "3"],
        &["--clients", "2", "--senders", "3"],
        &["--mode", "rate", "--rate", "0"],
        &["--mode", "soak", "--duration", "0"],
        &["--mode", "soak", "--churn", "-1"],
        &["--mode", "rate", "--churn", "5"],
        &["--mode", "soak", "--churn-send", "2"],
        &["--rooms", "2", "--clients", "4", "--path", "/fixed"],
        &["--url", "ws://127.0.0.1:1,"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_chat-loadgen"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

/// A TCP relay in front of the server that records the request path of every connection
/// through it: stands in for one node of a scale-out deployment (all relays reach the same
/// server, so rooms are shared as they would be through Redis).
struct Relay {
    addr: std::net::SocketAddr,
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Relay {
    fn start(upstream: std::net::SocketAddr) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = paths.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((mut down, _)) = listener.accept().await else {
                        continue;
                    };
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        // Read up to the end of the request line, note its path, pass it on.
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(2).any(|w| w == b"\r\n") {
                            match down.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let line = String::from_utf8_lossy(&head);
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        seen.lock().unwrap().push(path);
                        let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        if up.write_all(&head).await.is_ok() {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                }
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay starts");
        Relay { addr, paths }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections so far per request path.
    fn per_path(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for p in self.paths.lock().unwrap().iter() {
            *m.entry(p.clone()).or_default() += 1;
        }
        m
    }

    fn connections(&self) -> usize {
        self.paths.lock().unwrap().len()
    }
}

#[test]
fn several_urls_spread_every_room_over_the_nodes() {
    let (addr, shutdown) = start_server();
    let a = Relay::start(addr);
    let b = Relay::start(addr);
    let urls = format!("{},{}", a.url(), b.url());

    // 14 clients in 3 rooms over 2 "nodes", two processes: client i joins room i % 3 on node
    // (i / 3) % 2, so node a has clients 0-2, 6-8, 12-13 and node b 3-5, 9-11.
    let r = loadgen(&[
        "--url",
        &urls,
        "--clients",
        "14",
        "--rooms",
        "3",
        "--senders",
        "6",
        "--messages",
        "20",
        "--window",
        "4",
        "--procs",
        "2",
    ]);
    // Rooms 0 and 1 have 5 members, room 2 has 4; every room has 2 senders.
    assert_clean(&r, (5 + 5 + 4) * 2 * 20);
    assert_eq!(r["url"], a.url(), "the first URL, as before");
    assert_eq!(r["urls"], serde_json::json!([a.url(), b.url()]), "{r}");
    let on = |relay: &Relay| {
        relay
            .per_path()
            .into_iter()
            .collect::<Vec<(String, usize)>>()
    };
    let rooms = |n: [usize; 3]| {
        (0..3)
            .map(|r| (format!("/chat/r{r}"), n[r]))
            .collect::<Vec<_>>()
    };
    assert_eq!(on(&a), rooms([3, 3, 2]));
    assert_eq!(on(&b), rooms([2, 2, 2]));

    // Churning clients take the nodes in turn; the same URL twice works too.
    let before = (a.connections(), b.connections());
    let r = loadgen(&[
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--url",
        &b.url(),
        "--mode",
        "soak",
        "--duration",
        "1.5",
        "--clients",
        "6",
        "--rooms",
        "2",
        "--senders",
        "2",
        "--rate",
        "40",
        "--churn",
        "20",
    ]);
    // Two rooms of 3 clients with one sender each, 1.5 s x 40/s / 2 = 30 messages.
    assert_clean(&r, 6 * 30);
    let churned = r["soak"]["churn"]["attempted"].as_u64().unwrap() as usize;
    assert!(churned >= 6, "{r}");
    // Steady: clients 0, 1 on a; 2-5 on b (node 1 and node 2 are both b).
    let grew = (a.connections() - before.0, b.connections() - before.1);
    assert_eq!(grew.0 + grew.1, 6 + churned, "{r}");
    // Churner n goes to node n % 3: a third of them to a.
    let churn_on_a = grew.0 - 2;
    assert_eq!(
        churn_on_a,
        churned.div_ceil(3),
        "{grew:?}, {churned} churners"
    );
    shutdown.shutdown();
}
