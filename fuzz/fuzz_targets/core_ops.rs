//! `core_ops`: a `chat_core::Room` driven by arbitrary op sequences (joins with optional
//! nickname and resume point, messages and `/commands`, leaves, clock ticks) under an arbitrary
//! bounded `RoomConfig`, checked after every op against a small reference model kept here.
//!
//! Input: `arbitrary` bytes, or a readable op script starting with `#ops\n` (the seeds and
//! regressions use it; see `parse_script`).
//!
//! After every op the outputs are drained and checked:
//! - `handle`'s result is the one the model predicts;
//! - the outputs are exactly the predicted list (audience, kind, seq, replay flag, error kind,
//!   nickname, text, member lists), so seq grows by exactly 1 per broadcast;
//! - every audience names members only (`Only` may also name the conn whose input was
//!   refused, for its error line);
//! - membership, nicknames (unique ignoring ASCII case), `member_count` and `last_seq` match
//!   the model; a random nickname is a free `user-N`.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use chat_core::{Audience, ConnId, Error, Input, Output, OutputKind, RateLimit, Room, RoomConfig};
use libfuzzer_sys::fuzz_target;

/// Connection ids are `0..CONNS`, so joins, double joins and strangers collide often.
const CONNS: u64 = 6;

#[derive(Arbitrary, Debug, Clone)]
struct Cfg {
    history: u8,
    max_message_bytes: u16,
    rate: Option<(u8, u8)>,
    max_members: u8,
    commands: bool,
    welcome: bool,
    join_notices: bool,
}

impl Cfg {
    fn room_config(&self) -> RoomConfig {
        RoomConfig {
            welcome: self.welcome,
            join_notices: self.join_notices,
            commands: self.commands,
            history: usize::from(self.history) % 200,
            max_message_bytes: 1 + usize::from(self.max_message_bytes) % 8192,
            rate_limit: self.rate.map(|(burst, per_second)| RateLimit {
                burst: 1 + u32::from(burst) % 8,
                per_second: 1 + u32::from(per_second) % 10,
            }),
            max_members: 1 + usize::from(self.max_members) % 20,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Case {
    Same,
    Upper,
    Lower,
}

/// A nickname: literal bytes (made UTF-8 lossily), or whatever the `idx`-th member is
/// called when the op runs, so taken nicknames (random ones too) come up often.
#[derive(Arbitrary, Debug, Clone)]
enum NickReq {
    Bytes(Vec<u8>),
    Held { idx: u8, case: Case },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ResumeReq {
    Abs(u64),
    /// `last_seq - n`.
    Back(u8),
    /// `last_seq + n`.
    Ahead(u8),
}

#[derive(Arbitrary, Debug, Clone)]
enum CmdName {
    Me,
    Nick,
    Who,
    Help,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Join {
        conn: u8,
        nick: Option<NickReq>,
        resume: Option<ResumeReq>,
    },
    Message {
        conn: u8,
        text: String,
    },
    /// `/{name} {arg}` with the name in some case.
    Command {
        conn: u8,
        name: CmdName,
        case: Case,
        arg: Option<NickReq>,
    },
    Leave {
        conn: u8,
    },
    /// The clock only moves forward.
    Advance {
        ms: u16,
    },
    /// Replace the room by `Room::restore` of its JSON snapshot (what a node joining a
    /// replicated room does); the model must not notice.
    Replicate,
}

#[derive(Debug)]
struct Scenario {
    config: RoomConfig,
    seed: u64,
    ops: Vec<Op>,
}

fuzz_target!(|data: &[u8]| {
    let scenario = match data.strip_prefix(b"#ops\n") {
        Some(script) => parse_script(script),
        None => {
            let mut u = Unstructured::new(data);
            let Ok(cfg) = Cfg::arbitrary(&mut u) else {
                return;
            };
            let Ok(seed) = u64::arbitrary(&mut u) else {
                return;
            };
            let Ok(ops) = Vec::<Op>::arbitrary_take_rest(u) else {
                return;
            };
            Scenario {
                config: cfg.room_config(),
                seed,
                ops,
            }
        }
    };
    run(scenario);
});

// ---------------------------------------------------------------------------------------------
// The readable script format
// ---------------------------------------------------------------------------------------------

/// One directive per line; unknown or malformed lines are skipped:
///
/// ```text
/// config history=5 max=100 rate=3/2 members=4 commands welcome notices
/// seed 42
/// join 1 nick=alice resume=3
/// msg 1 hello there        (the rest of the line, verbatim; `\t` stands for a tab)
/// leave 1
/// tick 250
/// ```
///
/// Values are clamped into the same bounds as the `arbitrary` path.
fn parse_script(script: &[u8]) -> Scenario {
    let text = String::from_utf8_lossy(script);
    let mut config = RoomConfig {
        welcome: false,
        join_notices: false,
        commands: false,
        history: 0,
        max_message_bytes: 4096,
        rate_limit: None,
        max_members: 20,
    };
    let mut seed = 0;
    let mut ops = Vec::new();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let num = |s: &str| s.parse::<u64>().ok();
        let conn_and_rest = |rest: &str| -> Option<(u8, String)> {
            let (conn, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((conn.parse().ok()?, tail.to_owned()))
        };
        match word {
            "config" => {
                for kv in rest.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    match k {
                        "history" => config.history = num(v).unwrap_or(0).min(199) as usize,
                        "max" => {
                            config.max_message_bytes = num(v).unwrap_or(1).clamp(1, 8192) as usize
                        }
                        "members" => config.max_members = num(v).unwrap_or(1).clamp(1, 20) as usize,
                        "rate" => {
                            if let Some((b, p)) = v.split_once('/') {
                                config.rate_limit = Some(RateLimit {
                                    burst: num(b).unwrap_or(1).clamp(1, 8) as u32,
                                    per_second: num(p).unwrap_or(1).clamp(1, 10) as u32,
                                });
                            }
                        }
                        "commands" => config.commands = true,
                        "welcome" => config.welcome = true,
                        "notices" => config.join_notices = true,
                        _ => {}
                    }
                }
            }
            "seed" => seed = num(rest).unwrap_or(0),
            "join" => {
                let mut parts = rest.split(' ');
                let Some(conn) = parts.next().and_then(|c| c.parse().ok()) else {
                    continue;
                };
                let (mut nick, mut resume) = (None, None);
                for kv in parts {
                    if let Some(n) = kv.strip_prefix("nick=") {
                        nick = Some(NickReq::Bytes(n.as_bytes().to_vec()));
                    } else if let Some(r) = kv.strip_prefix("resume=") {
                        resume = num(r).map(ResumeReq::Abs);
                    }
                }
                ops.push(Op::Join { conn, nick, resume });
            }
            "msg" => {
                if let Some((conn, text)) = conn_and_rest(rest) {
                    let text = text.replace("\\t", "\t");
                    ops.push(Op::Message { conn, text });
                }
            }
            "leave" => {
                if let Ok(conn) = rest.trim().parse() {
                    ops.push(Op::Leave { conn });
                }
            }
            "replicate" => ops.push(Op::Replicate),
            "tick" => {
                if let Ok(ms) = rest.trim().parse() {
                    ops.push(Op::Advance { ms });
                }
            }
            _ => {}
        }
    }
    Scenario { config, seed, ops }
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

/// The bucket arithmetic of `RateLimit`, written out again: milli-tokens, refilled by
/// `per_second` per millisecond, capped at `burst` tokens, full at join.
#[derive(Debug)]
struct ModelMember {
    nick: String,
    milli_tokens: u64,
    last_ms: u64,
}

#[derive(Debug)]
struct Model {
    config: RoomConfig,
    members: BTreeMap<u64, ModelMember>,
    last_seq: u64,
    /// The kinds of the last `config.history` broadcasts, with their seqs.
    history: VecDeque<(u64, OutputKind)>,
}

/// One output the model expects. `None` fields are not checked.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    audience: Audience,
    kind: OutputKind,
    seq: Option<u64>,
    replay: bool,
    error: Option<Error>,
    nick: Option<String>,
    old_nick: Option<String>,
    text: Option<String>,
    /// For welcome and who: every member's nickname in nickname order (ignoring case).
    members: Option<Vec<String>>,
    lost: Option<u64>,
}

impl Expect {
    fn new(audience: Audience, kind: OutputKind) -> Expect {
        Expect {
            audience,
            kind,
            seq: None,
            replay: false,
            error: None,
            nick: None,
            old_nick: None,
            text: None,
            members: None,
            lost: None,
        }
    }

    fn error(conn: u64, error: Error) -> Expect {
        Expect {
            error: Some(error),
            ..Expect::new(Audience::Only(ConnId(conn)), OutputKind::Error)
        }
    }
}

fn is_valid_nick(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `user-N`, `N < 100000`, written without leading zeros.
fn is_random_nick(name: &str) -> bool {
    let Some(digits) = name.strip_prefix("user-") else {
        return false;
    };
    !digits.is_empty()
        && digits.len() <= 5
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

fn apply_case(name: &str, case: Case) -> String {
    match case {
        Case::Same => name.to_owned(),
        Case::Upper => name.to_ascii_uppercase(),
        Case::Lower => name.to_ascii_lowercase(),
    }
}

impl Model {
    fn new(config: RoomConfig) -> Model {
        Model {
            config,
            members: BTreeMap::new(),
            last_seq: 0,
            history: VecDeque::new(),
        }
    }

    /// Member nicknames in the room's order: by ASCII-lower-cased nickname.
    fn sorted_nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.members.values().map(|m| m.nick.clone()).collect();
        nicks.sort_by_key(|n| n.to_ascii_lowercase());
        nicks
    }

    /// The member holding `name`, ignoring ASCII case.
    fn holder(&self, name: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.nick.eq_ignore_ascii_case(name))
            .map(|(c, _)| *c)
    }

    fn resolve_nick(&self, req: &NickReq) -> String {
        match req {
            NickReq::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            NickReq::Held { idx, case } => {
                let held = self.sorted_nicks();
                if held.is_empty() {
                    apply_case("alice", *case)
                } else {
                    apply_case(&held[usize::from(*idx) % held.len()], *case)
                }
            }
        }
    }

    fn resolve_resume(&self, req: ResumeReq) -> u64 {
        match req {
            ResumeReq::Abs(n) => n,
            ResumeReq::Back(n) => self.last_seq.saturating_sub(u64::from(n)),
            ResumeReq::Ahead(n) => self.last_seq.saturating_add(u64::from(n)),
        }
    }

    fn broadcast(&mut self, mut expect: Expect, out: &mut Vec<Expect>) {
        self.last_seq += 1;
        expect.seq = Some(self.last_seq);
        if self.config.history > 0 {
            if self.history.len() >= self.config.history {
                self.history.pop_front();
            }
            self.history.push_back((self.last_seq, expect.kind));
        }
        out.push(expect);
    }

    fn take_token(&mut self, conn: u64, now: u64) -> bool {
        let Some(limit) = self.config.rate_limit else {
            return true;
        };
        let m = self
            .members
            .get_mut(&conn)
            .expect("caller checked membership");
        let cap = u64::from(limit.burst) * 1000;
        let refill = (now - m.last_ms) * u64::from(limit.per_second);
        m.milli_tokens = (m.milli_tokens + refill).min(cap);
        m.last_ms = now;
        if m.milli_tokens >= 1000 {
            m.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// A join that the model has decided to admit; `assigned` is the nickname the room gave.
    fn admit(
        &mut self,
        now: u64,
        conn: u64,
        requested: Option<&str>,
        resume: Option<u64>,
        assigned: &str,
        out: &mut Vec<Expect>,
    ) {
        let nick_error = match requested {
            None => None,
            Some(n) if !is_valid_nick(n) => Some(Error::InvalidNick),
            Some(n) if self.holder(n).is_some() => Some(Error::NickTaken),
            Some(_) => None,
        };
        match (requested, nick_error) {
            (Some(n), None) => assert_eq!(assigned, n, "a free valid nickname is granted"),
            _ => {
                assert!(is_random_nick(assigned), "random nickname {assigned:?}");
                assert_eq!(
                    self.holder(assigned),
                    None,
                    "random nickname {assigned:?} is taken"
                );
            }
        }
        let milli_tokens = self
            .config
            .rate_limit
            .map_or(0, |l| u64::from(l.burst) * 1000);
        self.members.insert(
            conn,
            ModelMember {
                nick: assigned.to_owned(),
                milli_tokens,
                last_ms: now,
            },
        );
        let me = Audience::Only(ConnId(conn));
        if self.config.welcome {
            out.push(Expect {
                nick: Some(assigned.to_owned()),
                members: Some(self.sorted_nicks()),
                ..Expect::new(me, OutputKind::Welcome)
            });
        }
        if let Some(error) = nick_error {
            out.push(Expect::error(conn, error));
        }
        let held = self.history.len() as u64;
        let missed = match resume {
            Some(after) if after <= self.last_seq => self.last_seq - after,
            _ => held,
        };
        let replayed = missed.min(held);
        if missed > replayed {
            out.push(Expect {
                lost: Some(missed - replayed),
                ..Expect::new(me, OutputKind::Gap)
            });
        }
        let skip = self.history.len() - replayed as usize;
        for &(seq, kind) in self.history.iter().skip(skip) {
            out.push(Expect {
                seq: Some(seq),
                replay: true,
                ..Expect::new(me, kind)
            });
        }
        if self.config.join_notices {
            let notice = Expect {
                nick: Some(assigned.to_owned()),
                ..Expect::new(Audience::EveryoneExcept(ConnId(conn)), OutputKind::Join)
            };
            self.broadcast(notice, out);
        }
    }

    /// `/name args` from member `conn` (`line` is the text after the `/`).
    fn command(&mut self, conn: u64, line: &str, out: &mut Vec<Expect>) -> Result<(), Error> {
        let (name, args) = match line.find(char::is_whitespace) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        let from = self.members[&conn].nick.clone();
        let fail = |out: &mut Vec<Expect>, error| {
            out.push(Expect::error(conn, error));
            Err(error)
        };
        if name.eq_ignore_ascii_case("me") {
            if args.is_empty() {
                return fail(out, Error::MissingArgument);
            }
            let me = Expect {
                nick: Some(from),
                text: Some(args.to_owned()),
                ..Expect::new(Audience::Everyone, OutputKind::Me)
            };
            self.broadcast(me, out);
            Ok(())
        } else if name.eq_ignore_ascii_case("nick") {
            if args.is_empty() {
                return fail(out, Error::MissingArgument);
            }
            if !is_valid_nick(args) {
                return fail(out, Error::InvalidNick);
            }
            if args == from {
                return fail(out, Error::NickUnchanged);
            }
            if self.holder(args).is_some_and(|h| h != conn) {
                return fail(out, Error::NickTaken);
            }
            self.members.get_mut(&conn).expect("member").nick = args.to_owned();
            let rename = Expect {
                nick: Some(args.to_owned()),
                old_nick: Some(from),
                ..Expect::new(Audience::Everyone, OutputKind::Nick)
            };
            self.broadcast(rename, out);
            Ok(())
        } else if name.eq_ignore_ascii_case("who") {
            out.push(Expect {
                members: Some(self.sorted_nicks()),
                ..Expect::new(Audience::Only(ConnId(conn)), OutputKind::Who)
            });
            Ok(())
        } else if name.eq_ignore_ascii_case("help") {
            out.push(Expect::new(Audience::Only(ConnId(conn)), OutputKind::Help));
            Ok(())
        } else {
            fail(out, Error::UnknownCommand)
        }
    }

    fn message(
        &mut self,
        now: u64,
        conn: u64,
        text: &str,
        out: &mut Vec<Expect>,
    ) -> Result<(), Error> {
        let refuse = |out: &mut Vec<Expect>, error| {
            out.push(Expect::error(conn, error));
            Err(error)
        };
        if !self.members.contains_key(&conn) {
            return refuse(out, Error::NotJoined);
        }
        if !self.take_token(conn, now) {
            return refuse(out, Error::RateLimited);
        }
        if text.len() > self.config.max_message_bytes {
            return refuse(out, Error::MessageTooLong);
        }
        if text.bytes().any(|b| b < 0x20 && b != b'\t' && b != b'\n') {
            return refuse(out, Error::ControlCharacter);
        }
        if text.trim().is_empty() {
            return refuse(out, Error::EmptyMessage);
        }
        let shown = match text.strip_prefix('/') {
            Some(rest) if self.config.commands && !rest.starts_with('/') => {
                return self.command(conn, rest, out);
            }
            Some(rest) if self.config.commands => rest,
            _ => text,
        };
        let message = Expect {
            nick: Some(self.members[&conn].nick.clone()),
            text: Some(shown.to_owned()),
            ..Expect::new(Audience::Everyone, OutputKind::Message)
        };
        self.broadcast(message, out);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

fn run(scenario: Scenario) {
    let mut room = Room::new(scenario.config.clone(), scenario.seed);
    let mut model = Model::new(scenario.config);
    let mut now: u64 = 0;
    for op in &scenario.ops {
        let mut expected = Vec::new();
        // The conn whose input this op is, for error lines addressed to a non-member.
        let actor;
        let result = match op {
            Op::Advance { ms } => {
                now += u64::from(*ms);
                continue;
            }
            Op::Replicate => {
                let json = serde_json::to_string(&room.snapshot()).expect("a snapshot serializes");
                let snapshot = serde_json::from_str(&json).expect("a snapshot deserializes");
                room = Room::restore(snapshot).expect("a room's own snapshot restores");
                continue;
            }
            Op::Join { conn, nick, resume } => {
                let conn = u64::from(*conn) % CONNS;
                actor = Some(conn);
                let nick = nick.as_ref().map(|n| model.resolve_nick(n));
                let resume = resume.map(|r| model.resolve_resume(r));
                let input = Input::Join {
                    conn: ConnId(conn),
                    nick: nick.as_deref(),
                    resume_after: resume,
                };
                let got = room.handle(now, input);
                let want = if model.members.contains_key(&conn) {
                    expected.push(Expect::error(conn, Error::AlreadyJoined));
                    Err(Error::AlreadyJoined)
                } else if model.members.len() >= model.config.max_members {
                    expected.push(Expect::error(conn, Error::RoomFull));
                    Err(Error::RoomFull)
                } else {
                    let assigned = room
                        .nick(ConnId(conn))
                        .unwrap_or_else(|| panic!("admitted conn {conn} has no nickname"))
                        .to_string();
                    model.admit(now, conn, nick.as_deref(), resume, &assigned, &mut expected);
                    Ok(())
                };
                assert_eq!(got, want, "join {conn} nick={nick:?} resume={resume:?}");
                got
            }
            Op::Message { conn, text } => {
                let conn = u64::from(*conn) % CONNS;
                actor = Some(conn);
                let got = room.handle(
                    now,
                    Input::Message {
                        conn: ConnId(conn),
                        text,
                    },
                );
                let want = model.message(now, conn, text, &mut expected);
                assert_eq!(got, want, "message from {conn}: {text:?}");
                got
            }
            Op::Command {
                conn,
                name,
                case,
                arg,
            } => {
                let conn = u64::from(*conn) % CONNS;
                actor = Some(conn);
                let name = match name {
                    CmdName::Me => "me",
                    CmdName::Nick => "nick",
                    CmdName::Who => "who",
                    CmdName::Help => "help",
                    CmdName::Other(s) => s.as_str(),
                };
                let mut text = format!("/{}", apply_case(name, *case));
                if let Some(arg) = arg {
                    text.push(' ');
                    text.push_str(&model.resolve_nick(arg));
                }
                let got = room.handle(
                    now,
                    Input::Message {
                        conn: ConnId(conn),
                        text: &text,
                    },
                );
                let want = model.message(now, conn, &text, &mut expected);
                assert_eq!(got, want, "message from {conn}: {text:?}");
                got
            }
            Op::Leave { conn } => {
                let conn = u64::from(*conn) % CONNS;
                actor = None;
                let got = room.handle(now, Input::Leave { conn: ConnId(conn) });
                let want = match model.members.remove(&conn) {
                    None => Err(Error::NotJoined),
                    Some(m) => {
                        let leave = Expect {
                            nick: Some(m.nick),
                            ..Expect::new(Audience::Everyone, OutputKind::Leave)
                        };
                        model.broadcast(leave, &mut expected);
                        Ok(())
                    }
                };
                assert_eq!(got, want, "leave {conn}");
                got
            }
        };
        let mut outputs = Vec::new();
        while let Some(out) = room.poll_output() {
            outputs.push(out);
            assert!(outputs.len() <= 10_000, "poll_output never drains");
        }
        check_outputs(&room, &model, &outputs, &expected, actor, result.is_err());
        check_state(&room, &model);
    }
}

/// The drained outputs against the model's prediction and the general invariants.
fn check_outputs(
    room: &Room,
    model: &Model,
    outputs: &[Output],
    expected: &[Expect],
    actor: Option<u64>,
    refused: bool,
) {
    let is_member = |c: ConnId| model.members.contains_key(&c.0);
    let mut live_seq = None::<u64>;
    for (i, out) in outputs.iter().enumerate() {
        let line = out.to_string();
        // Invariants that hold whatever the model says.
        match out.audience() {
            Audience::Everyone => {}
            Audience::EveryoneExcept(c) => assert!(is_member(c), "#{i} excludes non-member {c:?}"),
            Audience::Only(c) => assert!(
                is_member(c) || (out.kind() == OutputKind::Error && refused && actor == Some(c.0)),
                "#{i} {:?} addressed to non-member {c:?}",
                out.kind()
            ),
        }
        assert_eq!(
            out.seq().is_some(),
            out.kind().is_broadcast(),
            "#{i} {:?} seq {:?}",
            out.kind(),
            out.seq()
        );
        if let (Some(seq), false) = (out.seq(), out.is_replay()) {
            if let Some(prev) = live_seq {
                assert_eq!(seq, prev + 1, "#{i}: seq must grow by 1 per broadcast");
            }
            live_seq = Some(seq);
        }
        assert!(
            !line.contains('\0') && !line.contains('\r'),
            "#{i} line {line:?}"
        );
    }

    let kinds = |v: &[Output]| v.iter().map(|o| o.kind()).collect::<Vec<_>>();
    let want_kinds: Vec<OutputKind> = expected.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds(outputs),
        want_kinds,
        "output kinds\ngot: {outputs:#?}"
    );
    for (i, (out, want)) in outputs.iter().zip(expected).enumerate() {
        let ctx = || format!("output #{i}: {out:?}\nexpected: {want:?}");
        assert_eq!(out.audience(), want.audience, "{}", ctx());
        assert_eq!(out.seq(), want.seq, "{}", ctx());
        assert_eq!(out.is_replay(), want.replay, "{}", ctx());
        assert_eq!(out.error(), want.error, "{}", ctx());
        if let Some(nick) = &want.nick {
            assert_eq!(
                out.nick().map(|n| n.as_str()),
                Some(nick.as_str()),
                "{}",
                ctx()
            );
        }
        if let Some(old) = &want.old_nick {
            assert_eq!(
                out.old_nick().map(|n| n.as_str()),
                Some(old.as_str()),
                "{}",
                ctx()
            );
        }
        if let Some(text) = &want.text {
            assert_eq!(out.text(), Some(text.as_str()), "{}", ctx());
            let nick = want.nick.as_deref().unwrap_or_default();
            let line = match want.kind {
                OutputKind::Me => format!("* {nick} {text}"),
                _ => format!("{nick}: {text}"),
            };
            assert_eq!(out.to_string(), line, "{}", ctx());
        }
        if let Some(members) = &want.members {
            let got: Vec<&str> = out
                .members()
                .unwrap_or_default()
                .iter()
                .map(|n| n.as_str())
                .collect();
            assert_eq!(got, *members, "{}", ctx());
            assert_eq!(out.member_count(), Some(members.len()), "{}", ctx());
        }
        if want.lost.is_some() {
            assert_eq!(out.lost(), want.lost, "{}", ctx());
        }
        if out.kind() == OutputKind::Error {
            assert!(out.text().is_some_and(|t| !t.is_empty()), "{}", ctx());
        }
    }
    assert_eq!(room.last_seq(), model.last_seq, "last_seq");
}

/// Membership and nicknames against the model.
fn check_state(room: &Room, model: &Model) {
    assert_eq!(room.member_count(), model.members.len(), "member_count");
    let listed: Vec<(u64, String)> = room.members().map(|(c, n)| (c.0, n.to_string())).collect();
    assert_eq!(listed.len(), model.members.len(), "members() length");
    let mut keys: Vec<String> = listed.iter().map(|(_, n)| n.to_ascii_lowercase()).collect();
    let sorted = keys.clone();
    keys.dedup();
    assert_eq!(
        keys.len(),
        listed.len(),
        "nicknames unique ignoring ASCII case: {listed:?}"
    );
    let mut order = sorted.clone();
    order.sort();
    assert_eq!(order, sorted, "members() in nickname order");
    for (conn, nick) in &listed {
        let m = model
            .members
            .get(conn)
            .unwrap_or_else(|| panic!("{conn} listed, not joined"));
        assert_eq!(*nick, m.nick, "nickname of {conn}");
        assert_eq!(
            room.conn_of(&nick.to_ascii_uppercase()),
            Some(ConnId(*conn))
        );
    }
    for conn in 0..CONNS {
        assert_eq!(
            room.is_member(ConnId(conn)),
            model.members.contains_key(&conn),
            "is_member({conn})"
        );
    }
}
