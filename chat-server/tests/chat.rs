//! Chat behaviour over the wire: a real server on an ephemeral port, real WebSocket clients.

mod common;

use std::time::Duration;

use common::{nick_from_welcome, TestServer};

#[tokio::test]
async fn seed_transcript_over_the_wire_is_byte_for_byte() {
    let server = TestServer::start(&["--seed-compat"]).await;
    let mut a = server.connect("/").await;
    let mut b = server.connect("/chat").await;
    let mut c = server.connect("/").await;
    // Joins are silent in the seed, so learn each nick from its first message.
    a.send("hello").await;
    let line = a.recv().await;
    let nick_a = line.strip_suffix(": hello").unwrap().to_owned();
    assert!(nick_a.starts_with("user-"), "{line}");
    assert_eq!(b.recv().await, line);
    assert_eq!(c.recv().await, line);

    b.send("/who am i").await;
    let line_b = b.recv().await;
    let nick_b = line_b.strip_suffix(": /who am i").unwrap().to_owned();
    assert_eq!(a.recv().await, line_b);
    assert_eq!(c.recv().await, line_b);

    drop(a);
    let left = format!(" .... {nick_a} has left.");
    assert_eq!(b.recv().await, left);
    assert_eq!(c.recv().await, left);
    c.send("bye").await;
    assert!(b.recv().await.ends_with(": bye"));
    assert_ne!(nick_a, nick_b);
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = TestServer::start(&[]).await;
    let mut red = server.connect("/chat/red").await;
    red.recv().await; // welcome
    let mut blue = server.connect("/chat/blue").await;
    let welcome = blue.recv().await;
    assert!(welcome.contains("nobody else is here"), "{welcome}");
    red.send("only red").await;
    assert!(red.recv().await.ends_with(": only red"));
    blue.expect_silence(Duration::from_millis(300)).await;
    // `/`, `/chat` and `/chat/lobby` are one room.
    let mut l1 = server.connect("/").await;
    l1.recv().await;
    let mut l2 = server.connect("/chat/lobby").await;
    l2.recv().await;
    let joined = l1.recv().await;
    assert!(joined.ends_with(" has joined."), "{joined}");
}

#[tokio::test]
async fn json_subprotocol_sends_one_object_per_event() {
    let server = TestServer::start(&[]).await;
    let mut a = server.connect_json("/chat/j?nick=alice").await;
    assert_eq!(a.protocol.as_deref(), Some("chat.v1.json"));
    let w = a.recv_json().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["nick"], "alice");
    assert_eq!(w["room"], "j");
    assert_eq!(w["members"], serde_json::json!(["alice"]));
    assert!(w["time"].as_u64().unwrap() > 1_600_000_000_000);

    // A plain client in the same room gets the same events as text.
    let mut p = server.connect("/chat/j?nick=bob").await;
    assert!(p.recv().await.starts_with(" .... you are bob;"));
    assert_eq!(p.recv().await, " .... alice has joined.", "history replay");
    let j = a.recv_json().await;
    assert_eq!(
        (j["type"].as_str(), j["from"].as_str()),
        (Some("join"), Some("bob"))
    );
    let join_seq = j["seq"].as_u64().unwrap();

    p.send("hi \"there\"").await;
    let m = a.recv_json().await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["from"], "bob");
    assert_eq!(m["text"], "hi \"there\"");
    assert_eq!(m["seq"].as_u64(), Some(join_seq + 1));
    assert_eq!(p.recv().await, "bob: hi \"there\"");

    a.send("/me waves").await;
    let me = a.recv_json().await;
    assert_eq!(
        (me["type"].as_str(), me["text"].as_str()),
        (Some("me"), Some("waves"))
    );
    assert_eq!(p.recv().await, "* alice waves");

    a.send("/nick ann").await;
    let n = a.recv_json().await;
    assert_eq!(n["type"], "nick");
    assert_eq!(
        (n["old"].as_str(), n["new"].as_str()),
        (Some("alice"), Some("ann"))
    );
    assert_eq!(p.recv().await, " .... alice is now known as ann.");

    a.send("/who").await;
    let who = a.recv_json().await;
    assert_eq!(who["type"], "who");
    assert_eq!(who["members"], serde_json::json!(["ann", "bob"]));
    assert!(who.get("seq").is_none());

    a.send("/nope").await;
    let e = a.recv_json().await;
    assert_eq!(e["type"], "error");
    assert!(e["text"]
        .as_str()
        .unwrap()
        .contains("unknown command /nope"));

    drop(p);
    let l = a.recv_json().await;
    assert_eq!(
        (l["type"].as_str(), l["from"].as_str()),
        (Some("leave"), Some("bob"))
    );
}

#[tokio::test]
async fn every_command_works_in_plain_text() {
    let server = TestServer::start(&[]).await;
    let mut a = server.connect("/chat/cmd?nick=alice").await;
    assert_eq!(
        a.recv().await,
        " .... you are alice; nobody else is here yet. Type /help for commands."
    );
    let mut b = server.connect("/chat/cmd").await;
    let nick_b = nick_from_welcome(&b.recv().await);
    assert_eq!(b.recv().await, " .... alice has joined.", "history replay");
    assert_eq!(a.recv().await, format!(" .... {nick_b} has joined."));

    a.send("/help").await;
    let help = a.recv().await;
    assert!(
        help.starts_with(" .... commands:") && help.contains("/nick"),
        "{help}"
    );
    a.send("/who").await;
    let mut names = ["alice".to_owned(), nick_b.clone()];
    names.sort_by_key(|n| n.to_ascii_lowercase());
    assert_eq!(
        a.recv().await,
        format!(" .... 2 here: {}", names.join(", "))
    );
    b.send("/me dances").await;
    assert_eq!(a.recv().await, format!("* {nick_b} dances"));
    assert_eq!(b.recv().await, format!("* {nick_b} dances"));
    b.send("/nick alice").await;
    assert_eq!(b.recv().await, " .... error: nickname alice is taken");
    b.send("/nick bob").await;
    let renamed = format!(" .... {nick_b} is now known as bob.");
    assert_eq!(a.recv().await, renamed);
    assert_eq!(b.recv().await, renamed);
    b.send("//slash").await;
    assert_eq!(a.recv().await, "bob: /slash");
    b.recv().await;
    b.send("/bogus").await;
    assert_eq!(
        b.recv().await,
        " .... error: unknown command /bogus; type /help for the list"
    );
    b.send("   ").await;
    assert_eq!(b.recv().await, " .... error: empty message ignored");
    b.send("a\u{7}b").await;
    assert!(b
        .recv()
        .await
        .starts_with(" .... error: control characters"));
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn requested_nick_from_the_query_string() {
    let server = TestServer::start(&[]).await;
    let mut a = server.connect("/chat/q?nick=Zed").await;
    assert!(a.recv().await.starts_with(" .... you are Zed;"));
    let mut b = server.connect("/chat/q?nick=zed").await;
    let welcome = b.recv().await;
    let nick = nick_from_welcome(&welcome);
    assert!(nick.starts_with("user-"), "{welcome}");
    assert_eq!(
        b.recv().await,
        format!(" .... error: nickname zed is taken; you are {nick}")
    );
}

#[tokio::test]
async fn resume_after_reconnect_replays_exactly_what_was_missed() {
    let server = TestServer::start(&[]).await;
    let mut stay = server.connect_json("/chat/r?nick=stay").await;
    stay.recv_json().await;
    let mut roam = server.connect_json("/chat/r?nick=roam").await;
    assert_eq!(roam.recv_json().await["type"], "welcome");
    assert_eq!(roam.recv_json().await["replay"], true, "stay's join");
    stay.recv_json().await; // roam joined
    stay.send("one").await;
    let one = roam.recv_json().await;
    stay.recv_json().await;
    let last_seen = one["seq"].as_u64().unwrap();

    drop(roam);
    stay.recv_json().await; // roam left
    stay.send("two").await;
    stay.send("three").await;
    stay.recv_json().await;
    stay.recv_json().await;

    let mut back = server
        .connect_json(&format!("/chat/r?nick=roam&since={last_seen}"))
        .await;
    let welcome = back.recv_json().await;
    assert_eq!(welcome["nick"], "roam");
    let missed: Vec<_> = [
        back.recv_json().await,
        back.recv_json().await,
        back.recv_json().await,
    ]
    .into_iter()
    .map(|e| {
        assert_eq!(e["replay"], true);
        (
            e["seq"].as_u64().unwrap(),
            e["type"].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    assert_eq!(
        missed,
        [
            (last_seen + 1, "leave".to_owned()),
            (last_seen + 2, "message".to_owned()),
            (last_seen + 3, "message".to_owned())
        ]
    );
    back.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn history_is_replayed_to_a_new_joiner() {
    let server = TestServer::start(&["--history", "2"]).await;
    let mut a = server.connect("/chat/h?nick=a").await;
    a.recv().await;
    for text in ["m1", "m2", "m3"] {
        a.send(text).await;
        a.recv().await;
    }
    let mut b = server.connect("/chat/h?nick=b").await;
    let lines = b.recv_n(3).await;
    assert!(lines[0].starts_with(" .... you are b;"));
    assert_eq!(lines[1..], ["a: m2", "a: m3"]);
}
