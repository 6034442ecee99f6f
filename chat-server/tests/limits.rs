//! Limits and close codes over the wire (SPEC §3 "Limits"): oversized, binary, non-UTF-8 and
//! malformed frames, message size, handshake timeout, max connections, slow consumers,
//! allowed origins, handshake refusals and idle timeouts.

mod common;

use std::time::Duration;

use common::{
    handshake_status, metric, raw_frame, raw_text, raw_upgrade, read_until_disconnected,
    try_connect, Event, RawWs, TestServer, TIMEOUT,
};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A raw client `bad` joins `room` next to a well-behaved client `good`, proves it can chat,
/// then sends `bytes`. It must be closed with `code`; `good` sees it leave and keeps
/// receiving messages. Returns the close reason.
async fn bad_frame_closes_with(flags: &[&str], room: &str, bytes: &[u8], code: u16) -> String {
    let server = TestServer::start(flags).await;
    let mut good = server.connect(&format!("/chat/{room}?nick=good")).await;
    assert!(good.recv().await.starts_with(" .... you are good;"));
    let mut bad = RawWs::connect(server.addr, &format!("/chat/{room}?nick=bad")).await;
    assert_eq!(good.recv().await, " .... bad has joined.");
    bad.write(&raw_text("hello")).await;
    assert_eq!(good.recv().await, "bad: hello");

    bad.write(bytes).await;
    let (got, reason, _) = bad.expect_close().await;
    assert_eq!(got, code, "close code (reason {reason:?})");

    assert_eq!(good.recv().await, " .... bad has left.");
    good.send("still here").await;
    assert_eq!(good.recv().await, "good: still here");
    reason
}

#[tokio::test]
async fn text_frame_over_max_frame_bytes_closes_with_1009() {
    let text = "x".repeat(2000);
    let reason = bad_frame_closes_with(
        &["--max-frame-bytes", "1024"],
        "big",
        &raw_frame(0x81, text.as_bytes(), true),
        1009,
    )
    .await;
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn message_far_over_the_default_frame_limit_still_gets_its_1009_close_frame() {
    // A real client sending 1 MiB against the default 64 KiB limit: most of the payload is
    // still arriving when the server refuses the frame, and the close frame must not be lost.
    let server = TestServer::start(&[]).await;
    let mut a = server.connect("/chat/huge?nick=a").await;
    a.recv().await;
    // The write may or may not complete before the server closes; the close frame is what
    // matters.
    let send = a.ws.send(Message::text("h".repeat(1 << 20)));
    let _ = tokio::time::timeout(TIMEOUT, send)
        .await
        .expect("the server keeps reading (or closes) while it refuses the frame");
    let (_, code, reason) = a.expect_close().await;
    assert_eq!(code, CloseCode::Size, "reason {reason:?}");
}

#[tokio::test]
async fn fragmented_message_over_max_frame_bytes_closes_with_1009() {
    // Each fragment is under the limit; the message they make is not.
    let part = "y".repeat(600);
    let mut bytes = raw_frame(0x01, part.as_bytes(), true); // text, not final
    bytes.extend(raw_frame(0x80, part.as_bytes(), true)); // continuation, final
    bad_frame_closes_with(&["--max-frame-bytes", "1024"], "frag", &bytes, 1009).await;
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let bytes = raw_frame(0x82, &[1, 2, 3], true);
    bad_frame_closes_with(&[], "bin", &bytes, 1003).await;
}

#[tokio::test]
async fn text_frame_with_invalid_utf8_closes_with_1007() {
    let bytes = raw_frame(0x81, &[b'o', b'k', 0xff, 0xfe, 0xc3], true);
    bad_frame_closes_with(&[], "utf8", &bytes, 1007).await;
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let bytes = raw_frame(0x81, b"not masked", false);
    bad_frame_closes_with(&[], "unmasked", &bytes, 1002).await;
}

#[tokio::test]
async fn reserved_opcode_closes_with_1002() {
    let bytes = raw_frame(0x83, b"opcode 3 is reserved", true);
    bad_frame_closes_with(&[], "reserved", &bytes, 1002).await;
}

#[tokio::test]
async fn message_over_max_message_bytes_gets_an_error_line_and_the_connection_stays() {
    let server =
        TestServer::start(&["--max-message-bytes", "100", "--max-frame-bytes", "1000"]).await;
    let mut a = server.connect("/chat/long?nick=a").await;
    a.recv().await;
    a.send(&"z".repeat(200)).await;
    let line = a.recv().await;
    assert!(
        line.starts_with(" .... error: message too long"),
        "{line:?}"
    );
    a.send("short").await;
    assert_eq!(a.recv().await, "a: short");
}

#[tokio::test]
async fn silent_client_is_disconnected_after_the_handshake_timeout() {
    let server = TestServer::start(&["--handshake-timeout", "300ms"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Meanwhile a real client connects and chats.
    let mut a = server.connect("/chat/ht?nick=a").await;
    a.recv().await;
    a.send("hi").await;
    assert_eq!(a.recv().await, "a: hi");
    let got = read_until_disconnected(&mut silent).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn client_sending_half_a_request_line_is_disconnected_after_the_handshake_timeout() {
    let server = TestServer::start(&["--handshake-timeout", "300ms"]).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /cha").await.unwrap();
    let mut a = server.connect("/chat/ht2?nick=a").await;
    a.recv().await;
    a.send("hi").await;
    assert_eq!(a.recv().await, "a: hi");
    let got = read_until_disconnected(&mut slow).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn upgrade_beyond_max_connections_gets_503_until_a_slot_frees() {
    let server = TestServer::start(&["--max-connections", "2", "--history", "0"]).await;
    let mut a = server.connect("/chat/full?nick=a").await;
    a.recv().await;
    let mut b = server.connect("/chat/full?nick=b").await;
    b.recv().await;

    let third = try_connect(&server.url("/chat/full?nick=c"), &[]).await;
    assert_eq!(handshake_status(&third), 503);
    // The same refusal over raw HTTP: a 503 response, not an upgrade.
    let (status, head, _) = raw_upgrade(server.addr, "/chat/full?nick=c", &[]).await;
    assert_eq!(status, 503, "{head}");
    let body = server.metrics().await;
    assert!(
        metric(
            &body,
            "chat_rejected_handshakes_total{reason=\"max_connections\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{body}"
    );

    a.ws.close(None).await.unwrap();
    a.expect_end().await;
    drop(a);
    // The slot frees once the server has finished with `a`: retry a bounded number of times.
    let mut c = None;
    for _ in 0..100 {
        let attempt = try_connect(&server.url("/chat/full?nick=c"), &[]).await;
        match handshake_status(&attempt) {
            101 => {
                c = attempt.ok();
                break;
            }
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    let mut c = c.expect("a slot freed after a client closed");
    assert!(c.recv().await.starts_with(" .... you are c;"));
    c.send("in").await;
    assert_eq!(c.recv().await, "c: in");
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_get_429_until_one_closes() {
    let server = TestServer::start(&["--max-connections-per-ip", "2", "--history", "0"]).await;
    let mut a = server.connect("/chat/ip?nick=a").await;
    a.recv().await;
    let mut b = server.connect("/chat/other?nick=b").await;
    b.recv().await;

    // Every test client comes from 127.0.0.1: the third is one too many, in any room.
    let third = try_connect(&server.url("/chat/third?nick=c"), &[]).await;
    assert_eq!(handshake_status(&third), 429);
    let (status, head, _) = raw_upgrade(server.addr, "/chat/ip?nick=c", &[]).await;
    assert_eq!(status, 429, "{head}");
    // The limit counts WebSocket connections only: plain HTTP still works.
    assert_eq!(server.http_get("/healthz").await.0, 200);
    let body = server.metrics().await;
    assert!(
        metric(
            &body,
            "chat_rejected_handshakes_total{reason=\"max_connections_per_ip\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{body}"
    );

    // The other members are untouched by the refusals.
    a.send("still here").await;
    assert_eq!(a.recv().await, "a: still here");

    b.ws.close(None).await.unwrap();
    b.expect_end().await;
    drop(b);
    let mut c = None;
    for _ in 0..100 {
        let attempt = try_connect(&server.url("/chat/ip?nick=c"), &[]).await;
        match handshake_status(&attempt) {
            101 => {
                c = attempt.ok();
                break;
            }
            429 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    let mut c = c.expect("a slot freed after a client closed");
    assert!(c.recv().await.starts_with(" .... you are c;"));
    assert_eq!(a.recv().await, " .... c has joined.");
}

#[tokio::test]
async fn a_join_that_would_create_a_room_beyond_max_rooms_is_closed_with_1013() {
    let server = TestServer::start(&["--max-rooms", "2", "--history", "0"]).await;
    let mut a = server.connect("/chat/one?nick=a").await;
    a.recv().await;
    let mut b = server.connect("/chat/two?nick=b").await;
    b.recv().await;

    let mut c = server.connect("/chat/three?nick=c").await;
    let (_, code, reason) = c.expect_close().await;
    assert_eq!(code, CloseCode::Again);
    assert_eq!(reason, "too many rooms");

    // Existing rooms still take members.
    let mut d = server.connect("/chat/one?nick=d").await;
    assert!(d.recv().await.starts_with(" .... you are d;"));
    assert_eq!(a.recv().await, " .... d has joined.");

    // Once a room empties it is dropped, and a new one fits.
    b.ws.close(None).await.unwrap();
    b.expect_end().await;
    drop(b);
    let mut e = None;
    for _ in 0..100 {
        let mut attempt = server.connect("/chat/three?nick=e").await;
        match attempt.next_event().await {
            Event::Text(line) if line.starts_with(" .... you are e;") => {
                e = Some(attempt);
                break;
            }
            Event::Close(..) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut e = e.expect("a room slot freed after room two emptied");
    e.send("hi").await;
    assert_eq!(e.recv().await, "e: hi");
}

/// The start of a (long) line, for assertion messages.
fn head(line: &str) -> &str {
    &line[..line.len().min(24)]
}

/// Receives `expected` on each of the fast clients; each may see the leave line `left` (once)
/// before it.
async fn expect_on_both(
    clients: [&mut common::Client; 2],
    expected: &str,
    left: &str,
    seen_left: &mut [bool; 2],
) {
    for (k, c) in clients.into_iter().enumerate() {
        let mut line = c.recv().await;
        if line == left {
            assert!(!seen_left[k], "the leave line arrived twice");
            seen_left[k] = true;
            line = c.recv().await;
        }
        assert!(
            line == expected,
            "client {k}: expected {:?}.., got {:?}..",
            head(expected),
            head(&line)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_closed_with_1008_while_others_get_every_message_in_order() {
    let server = TestServer::start(&[
        "--queue-capacity",
        "8",
        "--rate-per-second",
        "0",
        "--history",
        "0",
    ])
    .await;
    let room = "/chat/slowroom";
    let mut reader = server.connect(&format!("{room}?nick=reader")).await;
    assert!(reader.recv().await.starts_with(" .... you are reader;"));
    let mut slow = server.connect(&format!("{room}?nick=slow")).await;
    assert_eq!(reader.recv().await, " .... slow has joined.");
    let mut sender = server.connect(&format!("{room}?nick=sender")).await;
    assert!(sender.recv().await.starts_with(" .... you are sender;"));
    assert_eq!(reader.recv().await, " .... sender has joined.");

    // Large messages so that the slow client's socket buffers fill up; sent in lock step
    // with the fast readers, which therefore never fall behind.
    let pad = "p".repeat(2000);
    let text = |i: usize| format!("{i:06} {pad}");
    let left = " .... slow has left.";
    let mut seen_left = [false, false];

    const TOTAL: usize = 3000;
    const LIMIT: usize = 20_000;
    let mut i = 0;
    // Phase 1: until the slow client has been dropped (bounded by LIMIT messages).
    while !seen_left[1] {
        assert!(i < LIMIT, "the slow client was never disconnected");
        sender.send(&text(i)).await;
        let expected = format!("sender: {}", text(i));
        expect_on_both([&mut sender, &mut reader], &expected, left, &mut seen_left).await;
        i += 1;
    }

    // Phase 2: the slow client reads everything queued for it, in order, then the close.
    let mut texts = Vec::new();
    let (code, reason) = loop {
        match slow.next_event().await {
            Event::Text(t) => texts.push(t),
            Event::Close(Some((code, reason))) => break (code, reason),
            other => panic!(
                "expected a close frame, got {other:?} after {} lines",
                texts.len()
            ),
        }
    };
    assert_eq!(code, CloseCode::Policy, "reason {reason:?}");
    assert_eq!(reason, "too slow");
    assert!(texts.len() >= 2, "{}", texts.len());
    assert!(texts[0].starts_with(" .... you are slow;"), "{}", texts[0]);
    assert_eq!(texts[1], " .... sender has joined.");
    for (n, line) in texts[2..].iter().enumerate() {
        let want = format!("sender: {}", text(n));
        assert!(
            line == &want,
            "slow client line {n}: got {:?}..",
            head(line)
        );
    }
    assert!(
        texts.len() - 2 < i,
        "the slow client cannot have received everything"
    );
    slow.expect_end().await;

    // Phase 3: the room carries on; the fast clients still get every message in order.
    let end = TOTAL.max(i + 100);
    while i < end {
        sender.send(&text(i)).await;
        let expected = format!("sender: {}", text(i));
        expect_on_both([&mut sender, &mut reader], &expected, left, &mut seen_left).await;
        i += 1;
    }
    assert!(seen_left[0] && seen_left[1]);
    reader.expect_silence(Duration::from_millis(100)).await;

    let body = server.metrics().await;
    assert!(
        metric(&body, "chat_slow_consumer_disconnects_total").is_some_and(|v| v >= 1.0),
        "{body}"
    );
}

#[tokio::test]
async fn other_origins_get_403_while_the_allowed_origin_and_no_origin_connect() {
    let server = TestServer::start(&["--allowed-origin", "http://good.example"]).await;
    let url = server.url("/chat/o");
    let evil = try_connect(&url, &[("Origin", "http://evil.example")]).await;
    assert_eq!(handshake_status(&evil), 403);
    let (status, head, _) =
        raw_upgrade(server.addr, "/chat/o", &[("Origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{head}");

    let good = try_connect(&url, &[("Origin", "http://good.example")]).await;
    assert_eq!(handshake_status(&good), 101);
    let mut good = good.unwrap();
    assert!(good.recv().await.starts_with(" .... you are "));
    let mut plain = try_connect(&url, &[]).await.expect("no Origin header");
    assert!(plain.recv().await.starts_with(" .... you are "));

    let body = server.metrics().await;
    assert_eq!(
        metric(&body, "chat_rejected_handshakes_total{reason=\"origin\"}"),
        Some(2.0),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_room_names_get_404() {
    let server = TestServer::start(&[]).await;
    let long = format!("/chat/{}", "r".repeat(65));
    for path in ["/chat/bad.name", long.as_str()] {
        let (status, head, _) = raw_upgrade(server.addr, path, &[]).await;
        assert_eq!(status, 404, "{path}: {head}");
        let attempt = try_connect(&server.url(path), &[]).await;
        assert_eq!(handshake_status(&attempt), 404, "{path}");
    }
    // 64 characters is still a valid name.
    let max = format!("/chat/{}", "r".repeat(64));
    let mut ok = server.connect(&max).await;
    assert!(ok.recv().await.starts_with(" .... you are "));
}

#[tokio::test]
async fn non_numeric_since_gets_400() {
    let server = TestServer::start(&[]).await;
    let (status, head, _) = raw_upgrade(server.addr, "/chat/q?since=abc", &[]).await;
    assert_eq!(status, 400, "{head}");
    let attempt = try_connect(&server.url("/chat/q?since=abc"), &[]).await;
    assert_eq!(handshake_status(&attempt), 400);
}

#[tokio::test]
async fn websocket_version_8_gets_426_with_the_supported_version() {
    let server = TestServer::start(&[]).await;
    let (status, head, _) =
        raw_upgrade(server.addr, "/chat/v", &[("Sec-WebSocket-Version", "8")]).await;
    assert_eq!(status, 426, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
}

#[tokio::test]
async fn client_that_never_answers_pings_is_closed_with_1001_idle_timeout() {
    let server = TestServer::start(&["--ping-interval", "100ms", "--idle-timeout", "400ms"]).await;
    let mut raw = RawWs::connect(server.addr, "/chat/idle?nick=mute").await;
    let mut pings = 0;
    let (code, reason) = loop {
        match raw.read_frame().await {
            Some(f) if f.opcode == 0x9 => pings += 1,
            Some(f) if f.opcode == 0x8 => {
                assert!(f.payload.len() >= 2, "{f:?}");
                let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                raw.write(&raw_frame(0x88, &f.payload[..2], true)).await;
                break (code, String::from_utf8_lossy(&f.payload[2..]).into_owned());
            }
            Some(_) => {}
            None => panic!("connection ended without a close frame"),
        }
    };
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    assert!(pings >= 1, "the server pinged before giving up");
    read_until_disconnected(&mut raw.stream).await;
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected_past_the_idle_timeout() {
    let server = TestServer::start(&["--ping-interval", "100ms", "--idle-timeout", "400ms"]).await;
    let mut a = server.connect("/chat/alive?nick=a").await;
    // Keep reading (tungstenite answers each ping) for several idle timeouts.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut a.ws));
        match next.await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("connection should stay open, got {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings");
    a.send("still here").await;
    assert_eq!(a.recv().await, "a: still here");
}
