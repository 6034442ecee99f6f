//! The tutorial's own scenario (shared/seed/websockets-tutorial.md): three users join, talk and
//! one leaves. With `RoomConfig::seed()` every member must receive exactly the bytes the Lisp
//! server sends: `format nil "~a: ~a"` to every connection (the sender included) per message,
//! nothing on join, and `" .... ~a has left."` to the remaining connections on close.

use std::collections::BTreeMap;

use chat_core::{Audience, ConnId, Input, Room, RoomConfig};

/// Feeds `input`, then delivers every output to the members of that moment.
fn step(room: &mut Room, seen: &mut BTreeMap<u64, Vec<String>>, now_ms: u64, input: Input<'_>) {
    room.handle(now_ms, input)
        .expect("the tutorial's inputs are all valid");
    let members: Vec<ConnId> = room.members().map(|(c, _)| c).collect();
    while let Some(out) = room.poll_output() {
        let line = out.to_string();
        match out.audience() {
            Audience::Only(c) => seen.entry(c.0).or_default().push(line),
            audience => {
                for c in members.iter().filter(|c| audience.includes(**c)) {
                    seen.entry(c.0).or_default().push(line.clone());
                }
            }
        }
    }
}

#[test]
fn seed_scenario_is_reproduced_byte_for_byte() {
    let mut room = Room::new(RoomConfig::seed(), 2024);
    let mut seen = BTreeMap::new();
    let join = |conn| Input::Join {
        conn: ConnId(conn),
        nick: None,
        resume_after: None,
    };
    let say = |conn, text| Input::Message {
        conn: ConnId(conn),
        text,
    };

    step(&mut room, &mut seen, 0, join(1));
    step(&mut room, &mut seen, 1, join(2));
    step(&mut room, &mut seen, 2, join(3));
    let nick = |c| room.nick(ConnId(c)).unwrap().to_string();
    let (a, b, c) = (nick(1), nick(2), nick(3));
    for n in [&a, &b, &c] {
        let number: u32 = n.strip_prefix("user-").unwrap().parse().unwrap();
        assert!(number < 100_000, "(random 100000) gives 0..99999: {n}");
    }

    step(&mut room, &mut seen, 10, say(1, "hello everyone"));
    step(&mut room, &mut seen, 20, say(2, "hi! /who is here?"));
    step(&mut room, &mut seen, 30, say(3, "/nick not-a-command here"));
    step(&mut room, &mut seen, 40, say(1, "bye"));
    step(&mut room, &mut seen, 50, Input::Leave { conn: ConnId(1) });
    step(&mut room, &mut seen, 60, say(2, "see you, \u{1F44B}"));

    let chat = [
        format!("{a}: hello everyone"),
        format!("{b}: hi! /who is here?"),
        format!("{c}: /nick not-a-command here"),
        format!("{a}: bye"),
    ];
    let after = [
        format!(" .... {a} has left."),
        format!("{b}: see you, \u{1F44B}"),
    ];
    let rest: Vec<String> = chat.iter().chain(after.iter()).cloned().collect();
    assert_eq!(
        seen[&1], chat,
        "the leaver got the chat and nothing after it"
    );
    assert_eq!(seen[&2], rest);
    assert_eq!(seen[&3], rest);
    assert_eq!(seen.len(), 3);
}

#[test]
fn seed_preset_still_refuses_bad_input_with_an_error_line_to_the_sender_only() {
    let mut room = Room::new(RoomConfig::seed(), 1);
    let mut seen = BTreeMap::new();
    for conn in [1, 2] {
        let join = Input::Join {
            conn: ConnId(conn),
            nick: None,
            resume_after: None,
        };
        step(&mut room, &mut seen, 0, join);
    }
    let long = "x".repeat(4097);
    for text in ["", "   ", "bad\x07bell", long.as_str()] {
        assert!(room
            .handle(
                0,
                Input::Message {
                    conn: ConnId(1),
                    text
                }
            )
            .is_err());
        let out = room.poll_output().expect("an error line");
        assert_eq!(out.audience(), Audience::Only(ConnId(1)));
        assert!(out.to_string().starts_with(" .... error: "), "{out}");
        assert!(room.poll_output().is_none());
    }
    assert!(seen.is_empty(), "joins are silent in the seed");
}
