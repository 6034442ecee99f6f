//! Snapshot round trips, every rejection rule, and mutated JSON that must never panic.
//! (The property that a restored room behaves exactly like the original lives with the model
//! properties in `tests/model.rs`.)

use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::*;
use crate::{Input, RateLimit};

fn handle(room: &mut Room, now_ms: u64, input: Input<'_>) {
    // Refusals are part of the scenario; their error lines are outputs like any other.
    let _ = room.handle(now_ms, input);
}

fn join(room: &mut Room, conn: u64, nick: Option<&str>, resume_after: Option<u64>) {
    let conn = ConnId(conn);
    handle(
        room,
        0,
        Input::Join {
            conn,
            nick,
            resume_after,
        },
    );
}

fn say(room: &mut Room, now_ms: u64, conn: u64, text: &str) {
    handle(
        room,
        now_ms,
        Input::Message {
            conn: ConnId(conn),
            text,
        },
    );
}

fn drain(room: &mut Room) -> Vec<Output> {
    std::iter::from_fn(|| room.poll_output()).collect()
}

/// Default config, 10 members (half named, half random), 100 events of history, drained.
fn busy_room() -> Room {
    let mut room = Room::new(RoomConfig::default(), 99);
    let names = ["alice", "Bob", "carol_1", "dave-2", "Eve"];
    for conn in 0..10 {
        join(&mut room, conn, names.get(conn as usize).copied(), None);
        drain(&mut room);
    }
    for i in 0..120u64 {
        let conn = i % 10;
        let text = match i % 7 {
            0 => format!("/me waves for the {i}th time"),
            _ => format!("message number {i}, with some ordinary chat text"),
        };
        say(&mut room, i * 60, conn, &text);
        drain(&mut room);
    }
    assert_eq!(room.history.len(), 100);
    assert_eq!(room.member_count(), 10);
    room
}

/// A small room left undrained, so its queue holds every kind of output: welcome, error,
/// replays, gap, who, help, message, me, nick, join, leave.
fn varied_room() -> Room {
    let config = RoomConfig {
        history: 4,
        rate_limit: Some(RateLimit {
            burst: 3,
            per_second: 1,
        }),
        ..RoomConfig::default()
    };
    let mut room = Room::new(config, 5);
    join(&mut room, 1, Some("Alice"), None);
    join(&mut room, 2, None, None);
    say(&mut room, 10, 1, "hi\tthere");
    say(&mut room, 20, 2, "/me waves");
    say(&mut room, 30, 2, "/nick bob");
    join(&mut room, 3, Some("alice"), Some(0));
    join(&mut room, 4, Some("not valid"), None);
    say(&mut room, 40, 3, "/who");
    say(&mut room, 50, 3, "/help");
    say(&mut room, 60, 1, "\u{7}");
    handle(&mut room, 70, Input::Leave { conn: ConnId(4) });
    room
}

fn problem(snapshot: RoomSnapshot) -> Problem {
    match Room::restore(snapshot) {
        Ok(_) => panic!("restore accepted a bad snapshot"),
        Err(e) => e.problem,
    }
}

// ---- round trips ----

#[test]
fn snapshot_of_a_restored_room_equals_the_original_snapshot() {
    for room in [busy_room(), varied_room(), Room::new(RoomConfig::seed(), 0)] {
        let snapshot = room.snapshot();
        let restored = Room::restore(snapshot.clone()).unwrap();
        assert_eq!(restored.snapshot(), snapshot);
        // The derived state the snapshot leaves out is rebuilt.
        assert_eq!(restored.nicks, room.nicks);
        assert_eq!(restored.random_taken, room.random_taken);
        let json = serde_json::to_string(&snapshot).unwrap();
        let decoded: RoomSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, snapshot);
    }
}

#[test]
fn pending_outputs_of_every_kind_survive_a_json_round_trip() {
    let mut room = varied_room();
    let json = serde_json::to_string(&room.snapshot()).unwrap();
    let mut restored = Room::restore(serde_json::from_str(&json).unwrap()).unwrap();
    let (a, b) = (drain(&mut room), drain(&mut restored));
    let kinds: std::collections::BTreeSet<&str> = a.iter().map(|o| o.kind().as_str()).collect();
    assert_eq!(kinds.len(), 10, "every kind is covered: {kinds:?}");
    assert!(a.iter().any(Output::is_replay));
    assert_eq!(a, b);
    let render = |v: &[Output]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(render(&a), render(&b));
}

#[test]
fn a_restored_room_draws_the_same_random_nicknames() {
    let mut room = busy_room();
    let mut restored = Room::restore(room.snapshot()).unwrap();
    for conn in 100..200 {
        join(&mut room, conn, None, None);
        join(&mut restored, conn, None, None);
        assert_eq!(room.nick(ConnId(conn)), restored.nick(ConnId(conn)));
    }
    assert_eq!(drain(&mut room), drain(&mut restored));
}

#[test]
fn the_snapshot_stores_no_derived_index_and_a_json_safe_rng() {
    let json = serde_json::to_string(&varied_room().snapshot()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut fields: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "config",
            "history",
            "last_seq",
            "members",
            "outputs",
            "overflow_next",
            "rng"
        ]
    );
    let rng = value["rng"].as_array().unwrap();
    assert_eq!(rng.len(), 2);
    assert!(rng.iter().all(|half| half.is_u64()));
    // Nicknames are plain strings.
    assert_eq!(value["members"][0]["nick"], "Alice");
}

#[test]
fn a_snapshot_of_ten_members_and_a_hundred_events_is_a_few_kilobytes() {
    let json = serde_json::to_string(&busy_room().snapshot()).unwrap();
    // About 90 bytes of message text per event and little framing around it.
    assert!(json.len() < 12_000, "{} bytes", json.len());
}

#[test]
fn history_seqs_saturate_at_the_top_like_the_room() {
    // A room whose last_seq is about to saturate (unreachable in practice, but a snapshot can
    // say so) keeps working, and its own snapshots stay restorable.
    let mut snapshot = busy_room().snapshot();
    let top = u64::MAX - 2;
    let len = snapshot.history.len() as u64;
    for (i, entry) in snapshot.history.iter_mut().enumerate() {
        entry.0 = top - len + 1 + i as u64;
    }
    snapshot.last_seq = top;
    let mut room = Room::restore(snapshot).unwrap();
    for i in 0..5 {
        say(&mut room, 1_000_000, i, "still here");
    }
    let seqs: Vec<u64> = drain(&mut room).iter().filter_map(Output::seq).collect();
    assert_eq!(seqs, [u64::MAX - 1, u64::MAX, u64::MAX, u64::MAX, u64::MAX]);
    let again = Room::restore(room.snapshot()).unwrap();
    assert_eq!(again.snapshot(), room.snapshot());
}

// ---- rejections ----

#[test]
fn restore_rejects_invalid_nickname_strings() {
    let long = "x".repeat(33);
    for bad in ["", "a b", "é", "a\0", &long, "<b>"] {
        let mut snapshot = busy_room().snapshot();
        snapshot.members[3].nick = bad.to_owned();
        assert_eq!(problem(snapshot), Problem::InvalidNick, "{bad:?}");
    }
    // In events too: history, and a pending welcome's list.
    let mut snapshot = busy_room().snapshot();
    snapshot.history[50].1 = Event::Join(1, "no spaces".into());
    assert_eq!(problem(snapshot), Problem::InvalidNick);
    let mut snapshot = varied_room().snapshot();
    for out in &mut snapshot.outputs {
        if let Event::Welcome(_, _, members, _, _) = &mut out.event {
            members[0] = String::new();
        }
    }
    assert_eq!(problem(snapshot), Problem::InvalidNick);
}

#[test]
fn restore_rejects_nicknames_held_twice_ignoring_case() {
    let mut snapshot = busy_room().snapshot();
    snapshot.members[1].nick = snapshot.members[0].nick.to_ascii_uppercase();
    assert_eq!(problem(snapshot), Problem::DuplicateNick);
}

#[test]
fn restore_rejects_a_connection_that_is_a_member_twice() {
    let mut snapshot = busy_room().snapshot();
    snapshot.members[1].conn = snapshot.members[0].conn;
    assert_eq!(problem(snapshot), Problem::DuplicateConn);
}

#[test]
fn restore_rejects_more_members_than_the_config_admits() {
    let mut snapshot = busy_room().snapshot();
    snapshot.config.max_members = 9;
    assert_eq!(problem(snapshot), Problem::TooManyMembers);
}

#[test]
fn restore_rejects_a_bucket_fuller_than_its_burst() {
    let mut snapshot = busy_room().snapshot();
    snapshot.members[0].tokens = 20_001;
    assert_eq!(problem(snapshot), Problem::BucketOverfull);
    let mut snapshot = busy_room().snapshot();
    snapshot.config.rate_limit = None;
    assert_eq!(problem(snapshot), Problem::BucketOverfull);
}

#[test]
fn restore_rejects_an_even_rng_state_and_a_runaway_overflow_counter() {
    let mut snapshot = busy_room().snapshot();
    snapshot.rng[1] &= !1;
    assert_eq!(problem(snapshot), Problem::RngState);
    let mut snapshot = busy_room().snapshot();
    snapshot.overflow_next = OVERFLOW_NEXT_MAX + 1;
    assert_eq!(problem(snapshot), Problem::OverflowCounter);
    let mut snapshot = busy_room().snapshot();
    snapshot.overflow_next = OVERFLOW_NEXT_MAX;
    assert!(Room::restore(snapshot).is_ok());
}

#[test]
fn restore_rejects_history_longer_than_the_config_keeps() {
    let mut snapshot = busy_room().snapshot();
    snapshot.config.history = 99;
    assert_eq!(problem(snapshot), Problem::HistoryTooLong);
}

#[test]
fn restore_rejects_history_missing_recent_events() {
    // Dropping the oldest entry leaves 99 of the 100 the room must still hold.
    let mut snapshot = busy_room().snapshot();
    snapshot.history.remove(0);
    assert_eq!(problem(snapshot), Problem::HistoryLength);
    // A room with broadcasts and history on cannot have an empty history.
    let mut snapshot = busy_room().snapshot();
    snapshot.history.clear();
    assert_eq!(problem(snapshot), Problem::HistoryLength);
    // Nor more events than it ever broadcast.
    let mut snapshot = busy_room().snapshot();
    snapshot.last_seq = 99;
    for (i, entry) in snapshot.history.iter_mut().enumerate() {
        entry.0 = i as u64;
    }
    assert_eq!(problem(snapshot), Problem::HistoryLength);
}

#[test]
fn restore_rejects_a_gap_in_history_seqs() {
    let mut snapshot = busy_room().snapshot();
    snapshot.history[40].0 += 1;
    assert_eq!(problem(snapshot), Problem::HistorySeq);
    let mut snapshot = busy_room().snapshot();
    snapshot.history.swap(10, 11);
    assert_eq!(problem(snapshot), Problem::HistorySeq);
}

#[test]
fn restore_rejects_history_that_does_not_end_at_last_seq() {
    // last_seq smaller than the latest entry's seq.
    let mut snapshot = busy_room().snapshot();
    snapshot.last_seq -= 1;
    assert_eq!(problem(snapshot), Problem::HistorySeq);
    // last_seq beyond it: the latest events are missing.
    let mut snapshot = busy_room().snapshot();
    snapshot.last_seq += 1;
    assert_eq!(problem(snapshot), Problem::HistorySeq);
}

#[test]
fn restore_rejects_replies_in_history() {
    let mut snapshot = busy_room().snapshot();
    snapshot.history[7].1 = Event::Help;
    assert_eq!(problem(snapshot), Problem::HistoryEvent);
}

#[test]
fn restore_rejects_text_the_room_would_have_refused() {
    let mut snapshot = busy_room().snapshot();
    snapshot.history[3].1 = Event::Message(1, "alice".into(), "bell\u{7}".into());
    assert_eq!(problem(snapshot), Problem::InvalidText);
    let mut snapshot = busy_room().snapshot();
    snapshot.history[3].1 = Event::Me(1, "alice".into(), "x".repeat(4097));
    assert_eq!(problem(snapshot), Problem::InvalidText);
    let mut snapshot = varied_room().snapshot();
    snapshot.outputs[0].event = Event::Error(Error::NickTaken, "\u{1b}[2J".into());
    assert_eq!(problem(snapshot), Problem::InvalidText);
}

#[test]
fn restore_rejects_pending_outputs_whose_seq_does_not_fit() {
    let snapshot = varied_room().snapshot();
    let broadcast = snapshot
        .outputs
        .iter()
        .position(|o| o.seq.is_some())
        .unwrap();
    let reply = snapshot
        .outputs
        .iter()
        .position(|o| o.seq.is_none())
        .unwrap();
    type Change = fn(&mut PendingOutput);
    let cases: [(usize, Change); 4] = [
        (broadcast, |o| o.seq = None),
        (reply, |o| o.seq = Some(1)),
        (reply, |o| o.replay = true),
        (broadcast, |o| o.seq = Some(1000)),
    ];
    for (index, change) in cases {
        let mut bad = snapshot.clone();
        change(&mut bad.outputs[index]);
        assert_eq!(problem(bad), Problem::OutputSeq);
    }
}

#[test]
fn restore_rejects_malformed_welcomes_and_gaps() {
    let mut snapshot = varied_room().snapshot();
    for out in &mut snapshot.outputs {
        if let Event::Welcome(_, _, _, count, _) = &mut out.event {
            *count += 1;
        }
    }
    assert_eq!(problem(snapshot), Problem::WelcomeList);
    let mut snapshot = varied_room().snapshot();
    for out in &mut snapshot.outputs {
        if let Event::Gap(lost) = &mut out.event {
            *lost = 0;
        }
    }
    assert_eq!(problem(snapshot), Problem::EmptyGap);
}

#[test]
fn snapshot_errors_say_what_and_where_and_quote_little() {
    let mut snapshot = busy_room().snapshot();
    snapshot.members[2].nick = "é".repeat(100);
    let error = Room::restore(snapshot).unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("invalid room snapshot: invalid nickname: member "));
    assert!(message.contains(&"é".repeat(QUOTE_MAX_CHARS)));
    assert!(!message.contains(&"é".repeat(QUOTE_MAX_CHARS + 1)));
    let _: &dyn std::error::Error = &error;
}

// ---- mutated JSON ----

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit { at: Index, bit: u8 },
    Truncate { at: Index },
    Delete { at: Index, len: u8 },
    Duplicate { at: Index, len: u8 },
    Number { which: Index, to: &'static str },
    Text { which: Index, to: &'static str },
}

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "9",
    "49",
    "50",
    "51",
    "1000",
    "2999",
    "3000",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551614",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "1.5",
    "1e3",
    "null",
    "true",
    "[]",
];

const TEXTS: &[&str] = &[
    "alice",
    "ALICE",
    "Alice",
    "bob",
    "user-1",
    "user-99999",
    "",
    "a b",
    "é",
    "\\u0007",
    "\\n",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "Everyone",
    "Only",
    "EveryoneExcept",
    "Help",
    "Message",
    "Welcome",
    "Gap",
    "NotJoined",
    "RoomFull",
    "nonsense",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), 1u8..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<Index>(), 1u8..40).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        4 => (any::<Index>(), select(NUMBERS)).prop_map(|(which, to)| Mutation::Number { which, to }),
        3 => (any::<Index>(), select(TEXTS)).prop_map(|(which, to)| Mutation::Text { which, to }),
    ]
}

/// Byte ranges of the runs of ASCII digits in `json`.
fn number_spans(json: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i].is_ascii_digit() {
            let start = i;
            while i < json.len() && json[i].is_ascii_digit() {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// Byte ranges of the contents of string literals in `json` (escapes skipped over).
fn string_spans(json: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'"' {
            let start = i + 1;
            i += 1;
            while i < json.len() && json[i] != b'"' {
                i += if json[i] == b'\\' { 2 } else { 1 };
            }
            spans.push((start, i.min(json.len())));
        }
        i += 1;
    }
    spans
}

fn apply(json: &mut Vec<u8>, mutation: &Mutation) {
    if json.is_empty() {
        return;
    }
    let replace = |json: &mut Vec<u8>, spans: Vec<(usize, usize)>, which: &Index, to: &str| {
        if !spans.is_empty() {
            let (start, end) = spans[which.index(spans.len())];
            json.splice(start..end, to.bytes());
        }
    };
    match mutation {
        Mutation::FlipBit { at, bit } => {
            let at = at.index(json.len());
            json[at] ^= 1 << bit;
        }
        Mutation::Truncate { at } => json.truncate(at.index(json.len())),
        Mutation::Delete { at, len } => {
            let start = at.index(json.len());
            let end = (start + usize::from(*len)).min(json.len());
            json.drain(start..end);
        }
        Mutation::Duplicate { at, len } => {
            let start = at.index(json.len());
            let end = (start + usize::from(*len)).min(json.len());
            let copy = json[start..end].to_vec();
            json.splice(end..end, copy);
        }
        Mutation::Number { which, to } => replace(json, number_spans(json), which, to),
        Mutation::Text { which, to } => replace(json, string_spans(json), which, to),
    }
}

/// Uses a restored room the way a shell would, touching every path that reads restored state.
fn exercise(mut room: Room) {
    let again = Room::restore(room.snapshot()).expect("a restored room's snapshot restores");
    assert_eq!(again.snapshot(), room.snapshot());
    for out in drain(&mut room) {
        let _ = out.to_string();
    }
    let conns: Vec<ConnId> = room.members().map(|(c, _)| c).collect();
    let now = 10_000_000;
    join(&mut room, 1 << 40, None, None);
    join(&mut room, (1 << 40) + 1, Some("alice"), Some(2));
    for conn in conns.iter().take(3) {
        for text in ["hello", "/me hops", "/who", "/nick Zed", "/help"] {
            handle(&mut room, now, Input::Message { conn: *conn, text });
        }
        handle(&mut room, now, Input::Leave { conn: *conn });
        handle(
            &mut room,
            now,
            Input::Join {
                conn: *conn,
                nick: None,
                resume_after: Some(0),
            },
        );
    }
    for out in drain(&mut room) {
        let _ = out.to_string();
    }
    assert!(Room::restore(room.snapshot()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Deserializing and restoring mutated JSON of real snapshots returns errors and never
    /// panics; whatever restores is a room that works and snapshots again.
    #[test]
    fn mutated_snapshot_json_never_panics(
        busy in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let room = if busy { busy_room() } else { varied_room() };
        let mut json = serde_json::to_vec(&room.snapshot()).unwrap();
        for m in &mutations {
            apply(&mut json, m);
        }
        if let Ok(snapshot) = serde_json::from_slice::<RoomSnapshot>(&json) {
            if let Ok(room) = Room::restore(snapshot) {
                exercise(room);
            }
        }
    }
}
