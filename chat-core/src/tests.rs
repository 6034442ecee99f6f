//! Unit tests for every row and rule of SPEC §2, driven through a tiny in-memory shell.

use std::collections::{BTreeMap, BTreeSet};

use crate::*;

/// Delivers outputs like a real shell: after every input, drain and resolve audiences against
/// the members of that moment.
struct Shell {
    room: Room,
    inbox: BTreeMap<ConnId, Vec<Output>>,
}

impl Shell {
    fn new(config: RoomConfig) -> Shell {
        Shell {
            room: Room::new(config, 7),
            inbox: BTreeMap::new(),
        }
    }

    fn input(&mut self, now_ms: u64, input: Input<'_>) -> Result<(), Error> {
        let result = self.room.handle(now_ms, input);
        let members: BTreeSet<ConnId> = self.room.members().map(|(c, _)| c).collect();
        while let Some(out) = self.room.poll_output() {
            let to: Vec<ConnId> = match out.audience() {
                Audience::Only(c) => vec![c],
                a => members.iter().copied().filter(|c| a.includes(*c)).collect(),
            };
            for c in to {
                self.inbox.entry(c).or_default().push(out.clone());
            }
        }
        result
    }

    fn join(&mut self, conn: u64) -> String {
        self.join_as(conn, None).unwrap();
        self.nick(conn)
    }

    fn join_as(&mut self, conn: u64, nick: Option<&str>) -> Result<(), Error> {
        let input = Input::Join {
            conn: ConnId(conn),
            nick,
            resume_after: None,
        };
        self.input(0, input)
    }

    fn resume(&mut self, conn: u64, after: u64) {
        let input = Input::Join {
            conn: ConnId(conn),
            nick: None,
            resume_after: Some(after),
        };
        self.input(0, input).unwrap();
    }

    fn say(&mut self, conn: u64, text: &str) -> Result<(), Error> {
        self.say_at(0, conn, text)
    }

    fn say_at(&mut self, now_ms: u64, conn: u64, text: &str) -> Result<(), Error> {
        let input = Input::Message {
            conn: ConnId(conn),
            text,
        };
        self.input(now_ms, input)
    }

    fn leave(&mut self, conn: u64) -> Result<(), Error> {
        self.input(0, Input::Leave { conn: ConnId(conn) })
    }

    fn nick(&self, conn: u64) -> String {
        self.room.nick(ConnId(conn)).unwrap().to_string()
    }

    /// Rendered lines `conn` received since the last call.
    fn lines(&mut self, conn: u64) -> Vec<String> {
        self.take(conn).iter().map(ToString::to_string).collect()
    }

    fn take(&mut self, conn: u64) -> Vec<Output> {
        self.inbox.remove(&ConnId(conn)).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.inbox.clear();
    }
}

fn quiet() -> RoomConfig {
    RoomConfig {
        welcome: false,
        join_notices: false,
        ..RoomConfig::default()
    }
}

fn is_random_nick(nick: &str) -> bool {
    nick.strip_prefix("user-")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < RANDOM_NICK_SPACE)
}

// ---- join and nicknames ----

#[test]
fn join_assigns_a_random_user_nick_in_range() {
    let mut s = Shell::new(RoomConfig::default());
    let nick = s.join(1);
    assert!(is_random_nick(&nick), "{nick}");
}

#[test]
fn random_nicks_are_unique_across_many_joins() {
    let mut s = Shell::new(quiet());
    for c in 0..3000 {
        s.join(c);
    }
    let nicks: BTreeSet<String> = (0..3000).map(|c| s.nick(c)).collect();
    assert_eq!(nicks.len(), 3000);
    assert!(nicks.iter().all(|n| is_random_nick(n)));
}

#[test]
fn random_nick_falls_back_deterministically_when_the_space_is_full() {
    let mut room = Room::new(
        RoomConfig {
            history: 0,
            ..quiet()
        },
        3,
    );
    let space = u64::from(RANDOM_NICK_SPACE);
    // Hold every `user-N` except `user-4242`, and also the first overflow name.
    for n in (0..space).filter(|&n| n != 4242) {
        let name = format!("user-{n}");
        let join = Input::Join {
            conn: ConnId(n),
            nick: Some(&name),
            resume_after: None,
        };
        room.handle(0, join).unwrap();
    }
    let join = Input::Join {
        conn: ConnId(space + 10),
        nick: Some("USER-100000"),
        resume_after: None,
    };
    room.handle(0, join).unwrap();
    // The last free random name is found by probing, then names past the space are used.
    let mut next = |conn| {
        let join = Input::Join {
            conn: ConnId(conn),
            nick: None,
            resume_after: None,
        };
        room.handle(0, join).unwrap();
        room.nick(ConnId(conn)).unwrap().to_string()
    };
    assert_eq!(next(space + 1), "user-4242");
    assert_eq!(next(space + 2), "user-100001");
    assert_eq!(next(space + 3), "user-100002");
    assert!(room.poll_output().is_none());
}

#[test]
fn requested_valid_free_nick_is_used() {
    let mut s = Shell::new(RoomConfig::default());
    s.join_as(1, Some("alice")).unwrap();
    assert_eq!(s.nick(1), "alice");
    let out = s.take(1);
    assert_eq!(out.len(), 1, "only the welcome");
    assert_eq!(out[0].kind(), OutputKind::Welcome);
    assert_eq!(out[0].nick().unwrap(), "alice");
}

#[test]
fn requested_taken_nick_gives_random_nick_and_error_line() {
    let mut s = Shell::new(RoomConfig::default());
    s.join_as(1, Some("Alice")).unwrap();
    s.clear();
    // Taken ignoring case.
    s.join_as(2, Some("alice")).unwrap();
    let nick = s.nick(2);
    assert!(is_random_nick(&nick));
    let out = s.take(2);
    assert_eq!(out[0].kind(), OutputKind::Welcome);
    assert_eq!(out[1].error(), Some(Error::NickTaken));
    assert_eq!(
        out[1].to_string(),
        format!(" .... error: nickname alice is taken; you are {nick}")
    );
    // The others only hear about the join.
    assert_eq!(s.lines(1), [format!(" .... {nick} has joined.")]);
}

#[test]
fn requested_invalid_nick_gives_random_nick_and_error_line() {
    for bad in ["", "has space", "<b>", &"x".repeat(33), "nul\0"] {
        let mut s = Shell::new(RoomConfig::default());
        s.join_as(1, Some(bad)).unwrap();
        assert!(is_random_nick(&s.nick(1)));
        let out = s.take(1);
        assert_eq!(out[1].error(), Some(Error::InvalidNick), "{bad:?}");
        assert!(out[1]
            .to_string()
            .starts_with(" .... error: invalid nickname"));
    }
}

#[test]
fn welcome_names_the_joiner_and_the_others() {
    let mut s = Shell::new(RoomConfig::default());
    s.join_as(1, Some("bob")).unwrap();
    assert_eq!(
        s.lines(1),
        [" .... you are bob; nobody else is here yet. Type /help for commands."]
    );
    s.join_as(2, Some("alice")).unwrap();
    let out = s.take(2);
    assert_eq!(
        out[0].to_string(),
        " .... you are alice; also here: bob. Type /help for commands."
    );
    let members: Vec<&str> = out[0]
        .members()
        .unwrap()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    assert_eq!(out[0].member_count(), Some(2));
    assert_eq!(out[0].seq(), None);
}

#[test]
fn welcome_lists_at_most_fifty_names() {
    let mut s = Shell::new(RoomConfig {
        join_notices: false,
        ..RoomConfig::default()
    });
    for c in 0..60 {
        s.join_as(c, Some(&format!("m{c:02}"))).unwrap();
    }
    let welcome = s.take(59).remove(0);
    assert_eq!(welcome.members().unwrap().len(), WELCOME_LIST_MAX);
    assert_eq!(welcome.member_count(), Some(60));
    assert!(welcome
        .to_string()
        .ends_with(", m49 and 9 more. Type /help for commands."));
}

#[test]
fn join_notice_reaches_the_others_but_not_the_joiner() {
    let mut s = Shell::new(RoomConfig::default());
    let a = s.join(1);
    s.clear();
    let b = s.join(2);
    assert_eq!(s.lines(1), [format!(" .... {b} has joined.")]);
    let joiner = s.take(2);
    assert_eq!(joiner.len(), 2, "welcome, then the replay of {a}'s join");
    assert_eq!(joiner[0].kind(), OutputKind::Welcome);
    assert!(joiner[1].is_replay());
}

#[test]
fn double_join_is_refused_with_an_error_line() {
    let mut s = Shell::new(RoomConfig::default());
    s.join_as(1, Some("a")).unwrap();
    s.clear();
    let seq = s.room.last_seq();
    assert_eq!(s.join_as(1, Some("b")), Err(Error::AlreadyJoined));
    assert_eq!(s.nick(1), "a");
    assert_eq!(s.lines(1), [" .... error: already joined to this room"]);
    assert_eq!(s.room.last_seq(), seq);
}

#[test]
fn a_full_room_refuses_joins() {
    let mut s = Shell::new(RoomConfig {
        max_members: 2,
        ..RoomConfig::default()
    });
    s.join(1);
    s.join(2);
    s.clear();
    assert_eq!(s.join_as(3, None), Err(Error::RoomFull));
    assert_eq!(s.lines(3), [" .... error: the room is full"]);
    assert!(s.take(1).is_empty());
    assert_eq!(s.room.member_count(), 2);
    s.leave(1).unwrap();
    s.join_as(3, None).unwrap();
}

// ---- messages ----

#[test]
fn message_is_broadcast_to_everyone_including_the_sender() {
    let mut s = Shell::new(quiet());
    let a = s.join(1);
    s.join(2);
    s.join(3);
    s.say(1, "hello, world").unwrap();
    for c in 1..=3 {
        assert_eq!(s.lines(c), [format!("{a}: hello, world")]);
    }
}

#[test]
fn a_broadcast_is_one_output_whatever_the_room_size() {
    let mut room = Room::new(quiet(), 1);
    for c in 0..1000 {
        let join = Input::Join {
            conn: ConnId(c),
            nick: None,
            resume_after: None,
        };
        room.handle(0, join).unwrap();
    }
    assert!(room.poll_output().is_none());
    let msg = Input::Message {
        conn: ConnId(5),
        text: "hi",
    };
    room.handle(0, msg).unwrap();
    let out = room.poll_output().unwrap();
    assert_eq!(out.audience(), Audience::Everyone);
    assert_eq!(out.kind(), OutputKind::Message);
    assert_eq!(out.text(), Some("hi"));
    assert_eq!(out.subject(), Some(ConnId(5)));
    assert!(room.poll_output().is_none());
}

#[test]
fn broadcasts_carry_strictly_increasing_sequence_numbers() {
    let mut s = Shell::new(RoomConfig::default());
    s.join(1);
    s.join(2);
    s.say(1, "a").unwrap();
    s.say(2, "/me b").unwrap();
    s.say(2, "/nick zed").unwrap();
    s.leave(2).unwrap();
    let seqs: Vec<u64> = s.take(1).iter().filter_map(|o| o.seq()).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6], "join 1 (self), join 2, ...");
    assert_eq!(s.room.last_seq(), 6);
}

#[test]
fn leave_notice_reaches_only_remaining_members() {
    let mut s = Shell::new(RoomConfig::seed());
    s.join(1);
    let b = s.join(2);
    s.join(3);
    s.leave(2).unwrap();
    assert_eq!(s.lines(1), [format!(" .... {b} has left.")]);
    assert_eq!(s.lines(3), [format!(" .... {b} has left.")]);
    assert!(s.lines(2).is_empty());
    assert!(!s.room.is_member(ConnId(2)));
    // The nickname is free again.
    s.join_as(4, Some(&b)).unwrap();
    assert_eq!(s.nick(4), b);
}

#[test]
fn unknown_connection_is_refused() {
    let mut s = Shell::new(RoomConfig::default());
    s.join(1);
    s.clear();
    assert_eq!(s.say(9, "hi"), Err(Error::NotJoined));
    assert_eq!(s.lines(9), [" .... error: not joined to this room"]);
    assert!(s.take(1).is_empty());
    // Nobody to tell about a leave of a stranger.
    assert_eq!(s.leave(9), Err(Error::NotJoined));
    assert!(s.room.poll_output().is_none());
    // A member who left is a stranger again.
    s.leave(1).unwrap();
    assert_eq!(s.leave(1), Err(Error::NotJoined));
}

// ---- bad input ----

fn refused(s: &mut Shell, text: &str, error: Error) -> String {
    s.clear();
    let seq = s.room.last_seq();
    assert_eq!(s.say(1, text), Err(error), "{text:?}");
    assert_eq!(s.room.last_seq(), seq, "nothing broadcast for {text:?}");
    assert!(s.take(2).is_empty(), "others see nothing for {text:?}");
    let lines = s.lines(1);
    assert_eq!(lines.len(), 1);
    lines[0].clone()
}

#[test]
fn empty_and_whitespace_only_text_is_refused() {
    let mut s = Shell::new(quiet());
    s.join(1);
    s.join(2);
    for text in ["", " ", "\t\n ", "\n"] {
        let line = refused(&mut s, text, Error::EmptyMessage);
        assert_eq!(line, " .... error: empty message ignored");
    }
}

#[test]
fn text_over_the_size_limit_is_refused() {
    let mut s = Shell::new(RoomConfig {
        max_message_bytes: 10,
        ..quiet()
    });
    s.join(1);
    s.join(2);
    s.say(1, &"x".repeat(10)).unwrap();
    let line = refused(&mut s, &"x".repeat(11), Error::MessageTooLong);
    assert_eq!(
        line,
        " .... error: message too long (11 bytes; the limit is 10)"
    );
    // Bytes, not characters: 4 x 3 bytes.
    refused(&mut s, "€€€€", Error::MessageTooLong);
}

#[test]
fn control_characters_other_than_tab_and_newline_are_refused() {
    let mut s = Shell::new(quiet());
    s.join(1);
    s.join(2);
    for text in ["a\0b", "bell\x07", "cr\r\n", "\x1b[31mred", "x\x7f\x1f"] {
        let line = refused(&mut s, text, Error::ControlCharacter);
        assert_eq!(
            line,
            " .... error: control characters are not allowed (only tab and newline)"
        );
    }
    s.say(1, "tab\there\nnewline \u{7f} and \u{85} are fine")
        .unwrap();
}

#[test]
fn rate_limit_refuses_after_the_burst_and_refills_over_time() {
    let mut s = Shell::new(RoomConfig {
        rate_limit: Some(RateLimit {
            burst: 2,
            per_second: 1,
        }),
        ..quiet()
    });
    s.join(1);
    s.join(2);
    s.say_at(0, 1, "one").unwrap();
    s.say_at(0, 1, "two").unwrap();
    assert_eq!(s.say_at(500, 1, "three"), Err(Error::RateLimited));
    assert_eq!(
        s.lines(1).last().unwrap(),
        " .... error: rate limit exceeded; slow down"
    );
    assert_eq!(
        s.lines(2).len(),
        2,
        "the other member saw only what was accepted"
    );
    // Another member has a bucket of its own.
    s.say_at(500, 2, "mine").unwrap();
    s.say_at(1000, 1, "three").unwrap();
    // Commands count too.
    assert_eq!(s.say_at(1000, 1, "/who"), Err(Error::RateLimited));
}

// ---- commands ----

#[test]
fn nick_command_renames_and_tells_everyone() {
    let mut s = Shell::new(quiet());
    let old = s.join(1);
    s.join(2);
    s.say(1, "/nick Neo").unwrap();
    let line = format!(" .... {old} is now known as Neo.");
    assert_eq!(s.lines(1), [line.as_str()]);
    assert_eq!(s.lines(2), [line]);
    assert_eq!(s.nick(1), "Neo");
    assert_eq!(s.room.conn_of("neo"), Some(ConnId(1)));
    assert_eq!(s.room.conn_of(&old), None);
    s.say(1, "hi").unwrap();
    assert_eq!(s.lines(2), ["Neo: hi"]);
    // A change of case is allowed.
    s.say(1, "/nick NEO").unwrap();
    assert_eq!(s.lines(2), [" .... Neo is now known as NEO."]);
}

#[test]
fn nick_command_errors_go_to_the_sender_only() {
    let mut s = Shell::new(quiet());
    s.join_as(1, Some("alice")).unwrap();
    s.join_as(2, Some("bob")).unwrap();
    let cases = [
        ("/nick", Error::MissingArgument, "usage: /nick NAME"),
        ("/nick   ", Error::MissingArgument, "usage: /nick NAME"),
        (
            "/nick two words",
            Error::InvalidNick,
            "invalid nickname: use 1-32 letters, digits, '_' or '-'",
        ),
        ("/nick BOB", Error::NickTaken, "nickname BOB is taken"),
        ("/nick alice", Error::NickUnchanged, "you are already alice"),
    ];
    for (text, error, reason) in cases {
        assert_eq!(
            refused(&mut s, text, error),
            format!(" .... error: {reason}")
        );
    }
    assert_eq!(s.nick(1), "alice");
}

#[test]
fn me_command_broadcasts_an_action() {
    let mut s = Shell::new(quiet());
    let a = s.join(1);
    s.join(2);
    s.say(1, "/me waves  ").unwrap();
    let line = format!("* {a} waves");
    assert_eq!(s.lines(1), [line.as_str()]);
    assert_eq!(s.lines(2), [line]);
}

#[test]
fn me_without_text_is_refused() {
    let mut s = Shell::new(quiet());
    s.join(1);
    s.join(2);
    assert_eq!(
        refused(&mut s, "/me", Error::MissingArgument),
        " .... error: usage: /me TEXT"
    );
}

#[test]
fn who_lists_members_in_nick_order_to_the_sender_only() {
    let mut s = Shell::new(quiet());
    s.join_as(1, Some("carol")).unwrap();
    s.join_as(2, Some("Alice")).unwrap();
    s.join_as(3, Some("bob")).unwrap();
    s.say(3, "/WHO").unwrap();
    let out = s.take(3);
    assert_eq!(out[0].kind(), OutputKind::Who);
    assert_eq!(out[0].to_string(), " .... 3 here: Alice, bob, carol");
    assert_eq!(out[0].member_count(), Some(3));
    assert!(s.take(1).is_empty() && s.take(2).is_empty());
}

#[test]
fn help_lists_the_commands_to_the_sender_only() {
    let mut s = Shell::new(quiet());
    s.join(1);
    s.join(2);
    s.say(1, "/help").unwrap();
    let lines = s.lines(1);
    assert_eq!(lines.len(), 1);
    for cmd in ["/nick", "/me", "/who", "/help", "//"] {
        assert!(lines[0].contains(cmd), "{cmd} in {}", lines[0]);
    }
    assert!(lines[0].starts_with(" .... "));
    assert!(s.take(2).is_empty());
}

#[test]
fn unknown_command_is_refused() {
    let mut s = Shell::new(quiet());
    s.join(1);
    s.join(2);
    assert_eq!(
        refused(&mut s, "/dance now", Error::UnknownCommand),
        " .... error: unknown command /dance; type /help for the list"
    );
    let long = format!("/{}", "é".repeat(100));
    let line = refused(&mut s, &long, Error::UnknownCommand);
    assert!(line.contains(&"é".repeat(32)) && !line.contains(&"é".repeat(33)));
    refused(&mut s, "/", Error::UnknownCommand);
}

#[test]
fn double_slash_sends_a_literal_slash() {
    let mut s = Shell::new(quiet());
    let a = s.join(1);
    s.say(1, "//who is there").unwrap();
    assert_eq!(s.lines(1), [format!("{a}: /who is there")]);
}

#[test]
fn commands_off_makes_slash_text_an_ordinary_message() {
    let mut s = Shell::new(RoomConfig {
        commands: false,
        ..quiet()
    });
    let a = s.join(1);
    s.say(1, "/who").unwrap();
    s.say(1, "//x").unwrap();
    assert_eq!(s.lines(1), [format!("{a}: /who"), format!("{a}: //x")]);
}

// ---- history and resume ----

fn chat_room(history: usize) -> (Shell, Vec<String>) {
    let mut s = Shell::new(RoomConfig { history, ..quiet() });
    s.join(1);
    let lines = (0..5)
        .map(|i| {
            s.say(1, &format!("m{i}")).unwrap();
            s.lines(1).remove(0)
        })
        .collect();
    (s, lines)
}

#[test]
fn joiner_gets_the_recent_history() {
    let (mut s, said) = chat_room(3);
    s.join(2);
    let out = s.take(2);
    assert!(out.iter().all(Output::is_replay));
    let seqs: Vec<u64> = out.iter().map(|o| o.seq().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    let lines: Vec<String> = out.iter().map(ToString::to_string).collect();
    assert_eq!(lines, said[2..]);
}

#[test]
fn history_zero_keeps_nothing() {
    let (mut s, _) = chat_room(0);
    s.join(2);
    assert!(s.take(2).is_empty());
}

#[test]
fn resume_returns_exactly_the_missed_events() {
    let (mut s, said) = chat_room(10);
    s.resume(2, 3);
    let out = s.take(2);
    let seqs: Vec<u64> = out.iter().map(|o| o.seq().unwrap()).collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(out[0].to_string(), said[3]);
    // Nothing missed: nothing replayed.
    s.leave(2).unwrap();
    s.resume(2, s.room.last_seq());
    assert!(s.take(2).is_empty());
}

#[test]
fn resume_past_history_says_how_many_were_lost() {
    let (mut s, said) = chat_room(2);
    s.resume(2, 1);
    let out = s.take(2);
    assert_eq!(out[0].kind(), OutputKind::Gap);
    assert_eq!(out[0].lost(), Some(2));
    assert_eq!(
        out[0].to_string(),
        " .... 2 missed events are no longer in history."
    );
    let rest: Vec<String> = out[1..].iter().map(ToString::to_string).collect();
    assert_eq!(rest, said[3..]);
    // With no history at all, everything missed is lost.
    let (mut s, _) = chat_room(0);
    s.resume(2, 4);
    assert_eq!(
        s.lines(2),
        [" .... 1 missed event is no longer in history."]
    );
}

#[test]
fn resume_from_a_future_seq_replays_the_history() {
    let (mut s, said) = chat_room(10);
    s.resume(2, u64::MAX);
    assert_eq!(s.lines(2), said);
    s.leave(2).unwrap();
    s.resume(2, 0);
    assert_eq!(s.lines(2)[..5], said[..]);
}

#[test]
fn refused_input_leaves_history_unchanged() {
    let (mut s, said) = chat_room(10);
    let _ = s.say(1, "");
    let _ = s.say(1, "/nope");
    s.join(2);
    assert_eq!(s.lines(2), said);
}

// ---- determinism and robustness ----

#[test]
fn equal_seeds_and_inputs_give_equal_outputs() {
    let run = |seed| {
        let mut room = Room::new(RoomConfig::default(), seed);
        let mut log = Vec::new();
        for c in 0..50 {
            let join = Input::Join {
                conn: ConnId(c),
                nick: None,
                resume_after: None,
            };
            let _ = room.handle(c, join);
            let _ = room.handle(
                c,
                Input::Message {
                    conn: ConnId(c / 2),
                    text: "hi",
                },
            );
            while let Some(o) = room.poll_output() {
                log.push((o.audience(), o.seq(), o.to_string()));
            }
        }
        log
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn extreme_times_and_ids_never_panic() {
    let mut room = Room::new(RoomConfig::default(), 0);
    for (now, conn) in [
        (u64::MAX, u64::MAX),
        (0, 0),
        (u64::MAX / 2, 1),
        (0, u64::MAX),
    ] {
        let join = Input::Join {
            conn: ConnId(conn),
            nick: Some("x"),
            resume_after: Some(u64::MAX),
        };
        let _ = room.handle(now, join);
        let _ = room.handle(
            now,
            Input::Message {
                conn: ConnId(conn),
                text: "/nick y",
            },
        );
        let _ = room.handle(now, Input::Leave { conn: ConnId(conn) });
        while room.poll_output().is_some() {}
    }
}
