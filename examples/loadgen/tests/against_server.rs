//! Runs the real `chat-loadgen` binary against the real chat server on an ephemeral port and
//! checks its JSON: every mode, several rooms, several processes, a soak run with churn, and
//! a refused connection.

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
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_chat-loadgen"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
