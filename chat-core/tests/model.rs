//! Property tests: a [`Room`] driven by arbitrary, hostile sequences of joins, messages,
//! commands, leaves and resumes, checked against a small reference model written separately
//! from the engine (plain `Vec`s and `BTreeMap`s, linear scans, no indexes).
//!
//! Every run drives the room the way a real shell does: feed one input, drain `poll_output`
//! until `None`, and deliver each output to the connections its `Audience` names according to
//! a shell-side membership set (a connection is added when its join returns `Ok` and removed
//! when it leaves). The reference model predicts, for every input, the result of `handle`, the
//! exact list of outputs (audience, kind, seq, replay flag, error kind, rendered text) and the
//! recipients of every broadcast. Random nicknames are the one thing it cannot predict: it
//! takes the nickname the room assigned and the tests check that it was a legal choice.

use std::collections::{BTreeMap, BTreeSet};

use chat_core::{
    Audience, ConnId, Error, Input, Output, OutputKind, RateLimit, Room, RoomConfig, RoomSnapshot,
    WELCOME_LIST_MAX,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Connection ids used by the model-checked properties: small, so joins, double joins, leaves
/// of non-members and messages from unknown ids collide often.
const POOL: u64 = 6;

/// Longest generated op sequence.
const MAX_OPS: usize = 80;

/// Cases per property.
const CASES: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// Generated operations
// ---------------------------------------------------------------------------------------------

/// How to change the case of a nickname taken from a current member.
#[derive(Clone, Copy, Debug)]
enum Case {
    Same,
    Upper,
    Lower,
    Swap,
}

/// A nickname to request. `Held` names whatever a current member is called when the op runs
/// (possibly in another case), so taken and case-variant nicknames, random ones included,
/// come up often.
#[derive(Clone, Debug)]
enum NickReq {
    Literal(String),
    Held { idx: usize, case: Case },
}

/// A resume point, resolved against the room's `last_seq` when the op runs.
#[derive(Clone, Copy, Debug)]
enum Resume {
    Abs(u64),
    BelowLast(u64),
    AboveLast(u64),
}

#[derive(Clone, Debug)]
enum Text {
    Literal(String),
    /// `{prefix}{nick}{suffix}`, e.g. `/nick ` + a held nickname in another case.
    Nick {
        prefix: &'static str,
        nick: NickReq,
        suffix: &'static str,
    },
}

/// Who sends a message: a connection id, or whichever member is `idx`-th (modulo the member
/// count, in nickname order) when the op runs, so that most messages come from members.
#[derive(Clone, Copy, Debug)]
enum Sender {
    Id(u64),
    Member(usize),
}

#[derive(Clone, Debug)]
enum Action {
    Join {
        conn: u64,
        nick: Option<NickReq>,
        resume: Option<Resume>,
    },
    Message {
        from: Sender,
        text: Text,
    },
    Leave {
        conn: u64,
    },
    /// Hostile runs only: `n` joins of fresh-ish connections in a row.
    JoinMany {
        first: u64,
        n: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Clock {
    Forward(u64),
    Back(u64),
}

#[derive(Clone, Debug)]
struct Op {
    clock: Clock,
    action: Action,
}

/// A concrete call, with every reference to the room's state resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Join {
        conn: u64,
        nick: Option<String>,
        resume: Option<u64>,
    },
    Message {
        conn: u64,
        text: String,
    },
    Leave {
        conn: u64,
    },
}

impl Call {
    fn input(&self) -> Input<'_> {
        match self {
            Call::Join { conn, nick, resume } => Input::Join {
                conn: ConnId(*conn),
                nick: nick.as_deref(),
                resume_after: *resume,
            },
            Call::Message { conn, text } => Input::Message {
                conn: ConnId(*conn),
                text,
            },
            Call::Leave { conn } => Input::Leave {
                conn: ConnId(*conn),
            },
        }
    }

    fn conn(&self) -> u64 {
        match self {
            Call::Join { conn, .. } | Call::Message { conn, .. } | Call::Leave { conn } => *conn,
        }
    }
}

fn apply_case(name: &str, case: Case) -> String {
    match case {
        Case::Same => name.to_owned(),
        Case::Upper => name.to_ascii_uppercase(),
        Case::Lower => name.to_ascii_lowercase(),
        Case::Swap => swap_case(name),
    }
}

fn swap_case(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

fn resolve_nick(req: &NickReq, room: &Room) -> String {
    match req {
        NickReq::Literal(s) => s.clone(),
        NickReq::Held { idx, case } => {
            let held: Vec<String> = room.members().map(|(_, n)| n.to_string()).collect();
            if held.is_empty() {
                apply_case("alice", *case)
            } else {
                apply_case(&held[idx % held.len()], *case)
            }
        }
    }
}

/// The calls an op stands for, resolved against the room as it is now (the same in every
/// run of the same inputs, so determinism runs resolve identically).
fn resolve(action: &Action, room: &Room) -> Vec<Call> {
    match action {
        Action::Join { conn, nick, resume } => {
            let last = room.last_seq();
            vec![Call::Join {
                conn: *conn,
                nick: nick.as_ref().map(|n| resolve_nick(n, room)),
                resume: resume.map(|r| match r {
                    Resume::Abs(s) => s,
                    Resume::BelowLast(k) => last.saturating_sub(k),
                    Resume::AboveLast(k) => last.saturating_add(k),
                }),
            }]
        }
        Action::Message { from, text } => {
            let conn = match *from {
                Sender::Id(conn) => conn,
                Sender::Member(idx) => {
                    let conns: Vec<u64> = room.members().map(|(c, _)| c.0).collect();
                    conns.get(idx % conns.len().max(1)).copied().unwrap_or(0)
                }
            };
            let text = match text {
                Text::Literal(s) => s.clone(),
                Text::Nick {
                    prefix,
                    nick,
                    suffix,
                } => format!("{prefix}{}{suffix}", resolve_nick(nick, room)),
            };
            vec![Call::Message { conn, text }]
        }
        Action::Leave { conn } => vec![Call::Leave { conn: *conn }],
        Action::JoinMany { first, n } => (0..*n)
            .map(|i| Call::Join {
                conn: first.wrapping_add(i),
                nick: None,
                resume: None,
            })
            .collect(),
    }
}

fn tick(now: u64, clock: Clock) -> u64 {
    match clock {
        Clock::Forward(d) => now.saturating_add(d),
        Clock::Back(d) => now.saturating_sub(d),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

const NICK_SAMPLES: &[&str] = &[
    "alice",
    "Alice",
    "ALICE",
    "bob",
    "Bob",
    "carol_1",
    "d-e",
    "-",
    "_",
    "0",
    "user-0",
    "user-1",
    "USER-1",
    "user-42",
    "user-007",
    "user-99999",
    "user-100000",
    "user-",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "",
    " ",
    "a b",
    " alice",
    "alice ",
    "a.b",
    "é",
    "alicé",
    "/nick",
    "a\n",
    "a\0",
    "<script>",
    "😀",
];

/// Whole hostile messages.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "   ",
    "\t",
    "\n",
    " \t\n ",
    "\r",
    "\r\n",
    "hi\r\n",
    "\0",
    "a\0b",
    "\u{7}",
    "\u{1b}[31mred",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{feff}",
    "\u{202e}evil",
    "😀",
    "é",
    "hello",
    "hello world",
    "a\tb",
    "a\nb",
    "/",
    "//",
    "///",
    "/ ",
    "/ x",
    "//x",
    "// x",
    "//me hi",
    "//nick bob",
    "/me",
    "/me ",
    "/me  ",
    "/me hi",
    "/ME  waves  ",
    "/me\thi",
    "/me\nhi",
    "/Me\u{3000}wide",
    "/me\u{3000}",
    "/who",
    "/WHO",
    "/who am i",
    "/help",
    "/HELP me",
    "/nick",
    "/nick ",
    "/nick a b",
    "/nick é",
    "/nick alice",
    "/nick Alice",
    "/nick user-1",
    "/nick xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "/nickalice",
    "/nicks bob",
    "/unknown",
    "/unknown with args",
    "/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "/ééééééééééééééééééééééééééééééééééééééé",
    "/😀",
    " /me leading space",
    "\t/who",
];

const PREFIXES: &[&str] = &[
    "",
    "",
    "",
    "/",
    "//",
    "///",
    "/me ",
    "/ME\t",
    "/me",
    "/who",
    "/Who ",
    "/help",
    "/HELP x",
    "/nick ",
    "/nick",
    "/x ",
    "/unknown ",
    "/nickname ",
    "/méé ",
    " /me ",
    "\t/who",
];

const NICK_COMMANDS: &[&str] = &[
    "/nick ",
    "/NICK ",
    "/Nick\t",
    "/nick  ",
    "/nick\n",
    "//nick ",
    "/nick\u{3000}",
];

const NICK_SUFFIXES: &[&str] = &["", "", " ", "\t", " extra", "\n"];

const SMALL_CHARS: &[char] = &[
    'a', 'b', 'Z', '0', ' ', ' ', '\t', '\n', '\r', '\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}',
    '\u{a0}', '\u{3000}', '/', '-', '_', 'é', '😀', '\u{202e}', '\u{feff}',
];

const LONG_UNITS: &[&str] = &["a", "é", "😀", " ", "ab ", "\0"];

fn chars(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), len).prop_map(String::from_iter)
}

fn small_text() -> impl Strategy<Value = String> {
    prop::collection::vec(select(SMALL_CHARS), 0..12).prop_map(String::from_iter)
}

fn case() -> impl Strategy<Value = Case> {
    select(&[Case::Same, Case::Upper, Case::Lower, Case::Swap][..])
}

fn nick_req() -> impl Strategy<Value = NickReq> {
    prop_oneof![
        3 => (0usize..8, case()).prop_map(|(idx, case)| NickReq::Held { idx, case }),
        2 => select(NICK_SAMPLES).prop_map(|s| NickReq::Literal(s.to_owned())),
        2 => "[A-Za-z0-9_-]{1,6}".prop_map(NickReq::Literal),
        1 => chars(0..8).prop_map(NickReq::Literal),
        1 => (1usize..40).prop_map(|n| NickReq::Literal("n".repeat(n))),
    ]
}

fn resume() -> impl Strategy<Value = Resume> {
    prop_oneof![
        2 => select(&[0, 1, 2, 3, u64::MAX - 1, u64::MAX][..]).prop_map(Resume::Abs),
        1 => (0u64..10).prop_map(Resume::Abs),
        3 => (0u64..8).prop_map(Resume::BelowLast),
        1 => (1u64..3).prop_map(Resume::AboveLast),
    ]
}

fn long_len() -> impl Strategy<Value = usize> {
    prop_oneof![4090usize..4100, 0usize..9000]
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        3 => select(HOSTILE).prop_map(|s| Text::Literal(s.to_owned())),
        3 => (select(PREFIXES), small_text()).prop_map(|(p, b)| Text::Literal(format!("{p}{b}"))),
        2 => (select(NICK_COMMANDS), nick_req(), select(NICK_SUFFIXES))
            .prop_map(|(prefix, nick, suffix)| Text::Nick { prefix, nick, suffix }),
        2 => (select(PREFIXES), chars(0..24))
            .prop_map(|(p, b)| Text::Literal(format!("{p}{b}"))),
        1 => (select(PREFIXES), select(LONG_UNITS), long_len())
            .prop_map(|(p, u, n)| Text::Literal(format!("{p}{}", u.repeat(n)))),
    ]
}

fn clock() -> impl Strategy<Value = Clock> {
    prop_oneof![
        8 => Just(Clock::Forward(0)),
        20 => (0u64..1500).prop_map(Clock::Forward),
        2 => (1500u64..100_000_000).prop_map(Clock::Forward),
        1 => any::<u64>().prop_map(Clock::Forward),
        4 => (0u64..3000).prop_map(Clock::Back),
    ]
}

/// A connection id from the pool, biased towards a few so that they are usually members.
fn conn() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..POOL / 2, 1 => 0..POOL]
}

fn sender(conn: impl Strategy<Value = u64>) -> impl Strategy<Value = Sender> {
    prop_oneof![
        conn.prop_map(Sender::Id),
        (0usize..8).prop_map(Sender::Member)
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (
            conn(),
            prop::option::weighted(0.6, nick_req()),
            prop::option::weighted(0.5, resume()),
        )
            .prop_map(|(conn, nick, resume)| Action::Join { conn, nick, resume }),
        14 => (sender(conn()), text()).prop_map(|(from, text)| Action::Message { from, text }),
        3 => conn().prop_map(|conn| Action::Leave { conn }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (clock(), action()).prop_map(|(clock, action)| Op { clock, action }),
        0..MAX_OPS,
    )
}

fn rate_limit() -> impl Strategy<Value = Option<RateLimit>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(RateLimit::default())),
        3 => (0u32..4, 0u32..3).prop_map(|(burst, per_second)| Some(RateLimit { burst, per_second })),
    ]
}

fn config() -> impl Strategy<Value = RoomConfig> {
    let custom = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![3 => 0usize..5, 1 => Just(100usize)],
        prop_oneof![1 => 0usize..16, 2 => 16usize..64, 1 => Just(4096usize)],
        rate_limit(),
        prop_oneof![1 => 0usize..4, 2 => Just(usize::MAX)],
    )
        .prop_map(
            |(
                welcome,
                join_notices,
                commands,
                history,
                max_message_bytes,
                rate_limit,
                max_members,
            )| {
                RoomConfig {
                    welcome,
                    join_notices,
                    commands,
                    history,
                    max_message_bytes,
                    rate_limit,
                    max_members,
                }
            },
        );
    prop_oneof![
        1 => Just(RoomConfig::default()),
        1 => Just(RoomConfig::seed()),
        4 => custom,
    ]
}

fn start_time() -> impl Strategy<Value = u64> {
    prop_oneof![4 => Just(0u64), 1 => any::<u64>()]
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

fn valid_nick(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `user-N` with `N` in `0..100000`, written without leading zeros.
fn random_nick_shape(s: &str) -> bool {
    let Some(digits) = s.strip_prefix("user-") else {
        return false;
    };
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && digits.len() <= 5
}

#[derive(Clone, Debug)]
struct ModelMember {
    conn: u64,
    nick: String,
    /// Rate-limit tokens in thousandths, and when they were last counted.
    milli_tokens: u128,
    last_ms: u64,
}

/// One broadcast event as the model logs it.
#[derive(Clone, Debug)]
struct Event {
    seq: u64,
    kind: OutputKind,
    subject: u64,
    text: String,
    /// Who must receive it live: the members at the moment it was broadcast, minus the
    /// excluded connection.
    recipients: BTreeSet<u64>,
}

/// What a rendered line must look like.
#[derive(Clone, Debug)]
enum TextCheck {
    Exact(String),
    /// ` .... error: REASON` with a non-empty reason mentioning each string.
    Error(Vec<String>),
    /// A ` .... ` notice mentioning each string.
    Notice(Vec<String>),
}

/// One predicted output.
#[derive(Clone, Debug)]
struct Expect {
    audience: Audience,
    kind: OutputKind,
    seq: Option<u64>,
    replay: bool,
    error: Option<Error>,
    lost: Option<u64>,
    subject: Option<u64>,
    text: TextCheck,
}

impl Expect {
    fn reply(conn: u64, kind: OutputKind, text: TextCheck) -> Expect {
        Expect {
            audience: Audience::Only(ConnId(conn)),
            kind,
            seq: None,
            replay: false,
            error: None,
            lost: None,
            subject: None,
            text,
        }
    }

    fn error(conn: u64, error: Error, mentions: Vec<String>) -> Expect {
        Expect {
            error: Some(error),
            ..Expect::reply(conn, OutputKind::Error, TextCheck::Error(mentions))
        }
    }
}

/// How the model expects a successful join's nickname to be chosen.
#[derive(Clone, Debug)]
enum NickChoice {
    Requested(String),
    /// A random `user-N`, free among these nicknames (held before the join).
    Random(Vec<String>),
}

/// What the model expects a resume (any successful join) to deliver.
#[derive(Clone, Debug)]
struct ResumeExpect {
    replays: Vec<(u64, String)>,
    lost: u64,
}

#[derive(Clone, Debug)]
struct Prediction {
    result: Result<(), Error>,
    outputs: Vec<Expect>,
    nick_choice: Option<NickChoice>,
    resume: Option<ResumeExpect>,
}

impl Prediction {
    fn refused(conn: u64, error: Error) -> Prediction {
        Prediction {
            result: Err(error),
            outputs: vec![Expect::error(conn, error, vec![])],
            nick_choice: None,
            resume: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Model {
    cfg: RoomConfig,
    /// In join order; sorted by nickname when asked.
    members: Vec<ModelMember>,
    /// Every broadcast ever made, `log[i].seq == i + 1`.
    log: Vec<Event>,
}

impl Model {
    fn new(cfg: RoomConfig) -> Model {
        Model {
            cfg,
            members: Vec::new(),
            log: Vec::new(),
        }
    }

    fn member(&self, conn: u64) -> Option<&ModelMember> {
        self.members.iter().find(|m| m.conn == conn)
    }

    fn holder_of(&self, nick: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|m| m.nick.eq_ignore_ascii_case(nick))
            .map(|m| m.conn)
    }

    /// `(conn, nick)` in nickname order, ignoring ASCII case.
    fn sorted(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .members
            .iter()
            .map(|m| (m.conn, m.nick.clone()))
            .collect();
        v.sort_by_key(|(_, n)| n.to_ascii_lowercase());
        v
    }

    fn broadcast(
        &mut self,
        except: Option<u64>,
        kind: OutputKind,
        subject: u64,
        text: String,
    ) -> Expect {
        let seq = self.log.len() as u64 + 1;
        let recipients = self
            .members
            .iter()
            .map(|m| m.conn)
            .filter(|c| Some(*c) != except)
            .collect();
        self.log.push(Event {
            seq,
            kind,
            subject,
            text: text.clone(),
            recipients,
        });
        Expect {
            audience: match except {
                Some(c) => Audience::EveryoneExcept(ConnId(c)),
                None => Audience::Everyone,
            },
            kind,
            seq: Some(seq),
            replay: false,
            error: None,
            lost: None,
            subject: Some(subject),
            text: TextCheck::Exact(text),
        }
    }

    /// Predicts one call. `room_nick` is the nickname the room gave `conn` after the call
    /// (used only when the model expects a random nickname).
    fn apply(&mut self, now: u64, call: &Call, room_nick: Option<&str>) -> Prediction {
        match call {
            Call::Join { conn, nick, resume } => {
                self.join(now, *conn, nick.as_deref(), *resume, room_nick)
            }
            Call::Message { conn, text } => self.message(now, *conn, text),
            Call::Leave { conn } => self.leave(*conn),
        }
    }

    fn join(
        &mut self,
        now: u64,
        conn: u64,
        requested: Option<&str>,
        resume: Option<u64>,
        room_nick: Option<&str>,
    ) -> Prediction {
        if self.member(conn).is_some() {
            return Prediction::refused(conn, Error::AlreadyJoined);
        }
        if self.members.len() >= self.cfg.max_members {
            return Prediction::refused(conn, Error::RoomFull);
        }
        let held_before: Vec<String> = self.members.iter().map(|m| m.nick.clone()).collect();
        let random = || room_nick.unwrap_or("<room assigned no nick>").to_owned();
        let (nick, choice, nick_error) = match requested {
            None => (random(), NickChoice::Random(held_before), None),
            Some(r) if !valid_nick(r) => {
                let nick = random();
                let err = (Error::InvalidNick, vec![nick.clone()]);
                (nick, NickChoice::Random(held_before), Some(err))
            }
            Some(r) if self.holder_of(r).is_some() => {
                let nick = random();
                let err = (Error::NickTaken, vec![r.to_owned(), nick.clone()]);
                (nick, NickChoice::Random(held_before), Some(err))
            }
            Some(r) => (r.to_owned(), NickChoice::Requested(r.to_owned()), None),
        };

        // What a resume is owed, computed from the log before this join's own notice.
        let last = self.log.len() as u64;
        let held: Vec<&Event> = self
            .log
            .iter()
            .skip(self.log.len().saturating_sub(self.cfg.history))
            .collect();
        let (replays, lost): (Vec<&Event>, u64) = match resume {
            Some(after) if after <= last => {
                let missed = self.log.iter().filter(|e| e.seq > after).count() as u64;
                let replays: Vec<&Event> = held.iter().copied().filter(|e| e.seq > after).collect();
                let lost = missed - replays.len() as u64;
                (replays, lost)
            }
            _ => (held, 0),
        };
        let resume_expect = ResumeExpect {
            replays: replays.iter().map(|e| (e.seq, e.text.clone())).collect(),
            lost,
        };
        let replay_outputs: Vec<Expect> = replays
            .iter()
            .map(|e| Expect {
                audience: Audience::Only(ConnId(conn)),
                kind: e.kind,
                seq: Some(e.seq),
                replay: true,
                error: None,
                lost: None,
                subject: Some(e.subject),
                text: TextCheck::Exact(e.text.clone()),
            })
            .collect();

        self.members.push(ModelMember {
            conn,
            nick: nick.clone(),
            milli_tokens: self
                .cfg
                .rate_limit
                .map_or(0, |l| u128::from(l.burst) * 1000),
            last_ms: now,
        });

        let mut outputs = Vec::new();
        if self.cfg.welcome {
            let others: Vec<String> = self
                .sorted()
                .into_iter()
                .filter(|(c, _)| *c != conn)
                .map(|(_, n)| n)
                .collect();
            let mut text = format!(" .... you are {nick}; ");
            if others.is_empty() {
                text.push_str("nobody else is here yet.");
            } else {
                text.push_str(&format!("also here: {}.", others.join(", ")));
            }
            if self.cfg.commands {
                text.push_str(" Type /help for commands.");
            }
            outputs.push(Expect {
                subject: Some(conn),
                ..Expect::reply(conn, OutputKind::Welcome, TextCheck::Exact(text))
            });
        }
        if let Some((error, mentions)) = nick_error {
            outputs.push(Expect::error(conn, error, mentions));
        }
        if lost > 0 {
            outputs.push(Expect {
                lost: Some(lost),
                ..Expect::reply(
                    conn,
                    OutputKind::Gap,
                    TextCheck::Notice(vec![lost.to_string()]),
                )
            });
        }
        outputs.extend(replay_outputs);
        if self.cfg.join_notices {
            let text = format!(" .... {nick} has joined.");
            outputs.push(self.broadcast(Some(conn), OutputKind::Join, conn, text));
        }
        Prediction {
            result: Ok(()),
            outputs,
            nick_choice: Some(choice),
            resume: Some(resume_expect),
        }
    }

    fn message(&mut self, now: u64, conn: u64, text: &str) -> Prediction {
        let limit = self.cfg.rate_limit;
        let max_bytes = self.cfg.max_message_bytes;
        let commands = self.cfg.commands;
        let Some(member) = self.members.iter_mut().find(|m| m.conn == conn) else {
            return Prediction::refused(conn, Error::NotJoined);
        };
        if let Some(limit) = limit {
            let elapsed = u128::from(now.saturating_sub(member.last_ms));
            let capacity = u128::from(limit.burst) * 1000;
            member.milli_tokens =
                (member.milli_tokens + elapsed * u128::from(limit.per_second)).min(capacity);
            member.last_ms = member.last_ms.max(now);
            if member.milli_tokens < 1000 {
                return Prediction::refused(conn, Error::RateLimited);
            }
            member.milli_tokens -= 1000;
        }
        if text.len() > max_bytes {
            return Prediction::refused(conn, Error::MessageTooLong);
        }
        if text
            .chars()
            .any(|c| (c as u32) < 0x20 && c != '\t' && c != '\n')
        {
            return Prediction::refused(conn, Error::ControlCharacter);
        }
        if text.trim().is_empty() {
            return Prediction::refused(conn, Error::EmptyMessage);
        }
        let nick = member.nick.clone();
        let ok = |outputs| Prediction {
            result: Ok(()),
            outputs,
            nick_choice: None,
            resume: None,
        };
        if commands && text.starts_with("//") {
            let text = format!("{nick}: {}", &text[1..]);
            return ok(vec![self.broadcast(None, OutputKind::Message, conn, text)]);
        }
        if commands && text.starts_with('/') {
            return self.command(conn, nick, &text[1..]);
        }
        let text = format!("{nick}: {text}");
        ok(vec![self.broadcast(None, OutputKind::Message, conn, text)])
    }

    fn command(&mut self, conn: u64, nick: String, line: &str) -> Prediction {
        let (name, args) = match line.char_indices().find(|(_, c)| c.is_whitespace()) {
            Some((i, _)) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        let ok = |outputs| Prediction {
            result: Ok(()),
            outputs,
            nick_choice: None,
            resume: None,
        };
        match name.to_ascii_lowercase().as_str() {
            "me" if args.is_empty() => Prediction::refused(conn, Error::MissingArgument),
            "me" => {
                let text = format!("* {nick} {args}");
                ok(vec![self.broadcast(None, OutputKind::Me, conn, text)])
            }
            "nick" if args.is_empty() => Prediction::refused(conn, Error::MissingArgument),
            "nick" if !valid_nick(args) => Prediction::refused(conn, Error::InvalidNick),
            "nick" if args == nick => Prediction::refused(conn, Error::NickUnchanged),
            "nick" if self.holder_of(args).is_some_and(|h| h != conn) => {
                Prediction::refused(conn, Error::NickTaken)
            }
            "nick" => {
                for m in &mut self.members {
                    if m.conn == conn {
                        m.nick = args.to_owned();
                    }
                }
                let text = format!(" .... {nick} is now known as {args}.");
                ok(vec![self.broadcast(None, OutputKind::Nick, conn, text)])
            }
            "who" => {
                let names: Vec<String> = self.sorted().into_iter().map(|(_, n)| n).collect();
                let text = format!(" .... {} here: {}", names.len(), names.join(", "));
                ok(vec![Expect::reply(
                    conn,
                    OutputKind::Who,
                    TextCheck::Exact(text),
                )])
            }
            "help" => {
                let mentions = ["/nick", "/me", "/who", "/help", "//"];
                let mentions = mentions.iter().map(|s| s.to_string()).collect();
                ok(vec![Expect::reply(
                    conn,
                    OutputKind::Help,
                    TextCheck::Notice(mentions),
                )])
            }
            _ => Prediction::refused(conn, Error::UnknownCommand),
        }
    }

    fn leave(&mut self, conn: u64) -> Prediction {
        let Some(i) = self.members.iter().position(|m| m.conn == conn) else {
            // Nobody to tell: no output at all.
            return Prediction {
                result: Err(Error::NotJoined),
                outputs: vec![],
                nick_choice: None,
                resume: None,
            };
        };
        let gone = self.members.remove(i);
        let text = format!(" .... {} has left.", gone.nick);
        Prediction {
            result: Ok(()),
            outputs: vec![self.broadcast(None, OutputKind::Leave, conn, text)],
            nick_choice: None,
            resume: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shell-like driver
// ---------------------------------------------------------------------------------------------

/// Who receives `out`, resolved against the shell's membership set.
fn recipients(out: &Output, shell_members: &BTreeSet<u64>) -> Vec<u64> {
    match out.audience() {
        Audience::Everyone => shell_members.iter().copied().collect(),
        Audience::EveryoneExcept(ConnId(c)) => {
            shell_members.iter().copied().filter(|m| *m != c).collect()
        }
        Audience::Only(ConnId(c)) => vec![c],
    }
}

/// Drains every queued output.
fn drain(room: &mut Room) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(out) = room.poll_output() {
        outputs.push(out);
    }
    outputs
}

/// The room's observable state after a step.
#[derive(Clone, Debug, PartialEq)]
struct RoomView {
    members: Vec<(u64, String)>,
    nick_of: Vec<(u64, Option<String>)>,
    is_member: Vec<(u64, bool)>,
    member_count: usize,
    last_seq: u64,
    /// `(nick, conn_of(nick), conn_of(nick with its ASCII case swapped))` for each member.
    conn_of: Vec<(String, Option<u64>, Option<u64>)>,
    pending_after_drain: usize,
}

impl RoomView {
    fn of(room: &Room) -> RoomView {
        let members: Vec<(u64, String)> =
            room.members().map(|(c, n)| (c.0, n.to_string())).collect();
        RoomView {
            conn_of: members
                .iter()
                .map(|(_, n)| {
                    (
                        n.clone(),
                        room.conn_of(n).map(|c| c.0),
                        room.conn_of(&swap_case(n)).map(|c| c.0),
                    )
                })
                .collect(),
            members,
            nick_of: (0..POOL)
                .map(|c| (c, room.nick(ConnId(c)).map(|n| n.to_string())))
                .collect(),
            is_member: (0..POOL).map(|c| (c, room.is_member(ConnId(c)))).collect(),
            member_count: room.member_count(),
            last_seq: room.last_seq(),
            pending_after_drain: room.pending_outputs(),
        }
    }
}

#[derive(Clone, Debug)]
struct Step {
    call: Call,
    result: Result<(), Error>,
    outputs: Vec<Output>,
    /// For each output, the connections the shell delivered it to.
    delivered: Vec<Vec<u64>>,
    prediction: Prediction,
    model_before: Vec<(u64, String)>,
    model_after: Vec<(u64, String)>,
    model_last_seq: u64,
    room_after: RoomView,
}

struct Run {
    steps: Vec<Step>,
    log: Vec<Event>,
}

/// Drives a room and the model side by side through `ops`.
fn simulate(cfg: &RoomConfig, seed: u64, start: u64, ops: &[Op]) -> Run {
    let mut room = Room::new(cfg.clone(), seed);
    let mut model = Model::new(cfg.clone());
    let mut shell_members = BTreeSet::new();
    let mut now = start;
    let mut steps = Vec::new();
    for op in ops {
        now = tick(now, op.clock);
        for call in resolve(&op.action, &room) {
            let model_before = model.sorted();
            let result = room.handle(now, call.input());
            let outputs = drain(&mut room);
            match (&call, result) {
                (Call::Join { conn, .. }, Ok(())) => {
                    shell_members.insert(*conn);
                }
                (Call::Leave { conn }, _) => {
                    shell_members.remove(conn);
                }
                _ => {}
            }
            let delivered = outputs
                .iter()
                .map(|o| recipients(o, &shell_members))
                .collect();
            let room_nick = room.nick(ConnId(call.conn())).map(|n| n.to_string());
            let prediction = model.apply(now, &call, room_nick.as_deref());
            steps.push(Step {
                call,
                result,
                outputs,
                delivered,
                prediction,
                model_before,
                model_after: model.sorted(),
                model_last_seq: model.log.len() as u64,
                room_after: RoomView::of(&room),
            });
        }
    }
    Run {
        steps,
        log: model.log,
    }
}

fn check_output(out: &Output, exp: &Expect) -> Result<(), String> {
    let rendered = out.to_string();
    let mut problems = Vec::new();
    if out.audience() != exp.audience {
        problems.push(format!(
            "audience {:?} != {:?}",
            out.audience(),
            exp.audience
        ));
    }
    if out.kind() != exp.kind {
        problems.push(format!("kind {:?} != {:?}", out.kind(), exp.kind));
    }
    if out.seq() != exp.seq {
        problems.push(format!("seq {:?} != {:?}", out.seq(), exp.seq));
    }
    if out.is_replay() != exp.replay {
        problems.push(format!("replay {} != {}", out.is_replay(), exp.replay));
    }
    if out.error() != exp.error {
        problems.push(format!("error {:?} != {:?}", out.error(), exp.error));
    }
    if out.lost() != exp.lost {
        problems.push(format!("lost {:?} != {:?}", out.lost(), exp.lost));
    }
    if exp.subject.is_some() && out.subject().map(|c| c.0) != exp.subject {
        problems.push(format!("subject {:?} != {:?}", out.subject(), exp.subject));
    }
    match &exp.text {
        TextCheck::Exact(text) => {
            if &rendered != text {
                problems.push(format!("text {rendered:?} != {text:?}"));
            }
        }
        TextCheck::Error(mentions) => {
            let reason = out.text().unwrap_or("");
            if reason.trim().is_empty() || rendered != format!(" .... error: {reason}") {
                problems.push(format!("not an error line with a reason: {rendered:?}"));
            }
            for m in mentions {
                if !reason.contains(m.as_str()) {
                    problems.push(format!("error {rendered:?} does not mention {m:?}"));
                }
            }
        }
        TextCheck::Notice(mentions) => {
            if !rendered.starts_with(" .... ") {
                problems.push(format!("not a notice line: {rendered:?}"));
            }
            for m in mentions {
                if !rendered.contains(m.as_str()) {
                    problems.push(format!("notice {rendered:?} does not mention {m:?}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn fail(step: usize, s: &Step, what: String) -> TestCaseError {
    TestCaseError::fail(format!(
        "step {step} {:?} -> {:?}: {what}\noutputs: {:#?}",
        s.call, s.result, s.outputs
    ))
}

// ---------------------------------------------------------------------------------------------
// Properties checked against the model
// ---------------------------------------------------------------------------------------------

fn check_nicknames_and_getters(run: &Run) -> Result<(), TestCaseError> {
    for (i, s) in run.steps.iter().enumerate() {
        let v = &s.room_after;
        let mut keys = BTreeSet::new();
        for (_, n) in &v.members {
            if !keys.insert(n.to_ascii_lowercase()) {
                return Err(fail(
                    i,
                    s,
                    format!("nickname {n:?} held twice: {:?}", v.members),
                ));
            }
            if !valid_nick(n) {
                return Err(fail(i, s, format!("invalid nickname {n:?} in the room")));
            }
        }
        if v.members != s.model_after {
            return Err(fail(
                i,
                s,
                format!("members() {:?} != model {:?}", v.members, s.model_after),
            ));
        }
        if v.member_count != s.model_after.len() {
            return Err(fail(i, s, format!("member_count() {}", v.member_count)));
        }
        for (c, nick) in &v.nick_of {
            let want = s.model_after.iter().find(|(m, _)| m == c).map(|(_, n)| n);
            if nick.as_ref() != want {
                return Err(fail(i, s, format!("nick({c}) {nick:?} != model {want:?}")));
            }
        }
        for (c, is) in &v.is_member {
            if *is != s.model_after.iter().any(|(m, _)| m == c) {
                return Err(fail(i, s, format!("is_member({c}) = {is}")));
            }
        }
        for (n, exact, swapped) in &v.conn_of {
            let want = s.model_after.iter().find(|(_, m)| m == n).map(|(c, _)| *c);
            if *exact != want || *swapped != want {
                return Err(fail(
                    i,
                    s,
                    format!("conn_of({n:?}) {exact:?} / case-swapped {swapped:?} != {want:?}"),
                ));
            }
        }
        // A successful join got the requested nickname when it was valid and free, else a
        // random `user-N` that nobody held.
        if let (Call::Join { conn, .. }, Ok(()), Some(choice)) =
            (&s.call, s.result, &s.prediction.nick_choice)
        {
            let got = v
                .nick_of
                .iter()
                .find(|(c, _)| c == conn)
                .and_then(|(_, n)| n.clone());
            let Some(got) = got else {
                return Err(fail(i, s, "joined but has no nickname".into()));
            };
            match choice {
                NickChoice::Requested(want) if &got != want => {
                    return Err(fail(i, s, format!("got {got:?}, requested free {want:?}")));
                }
                NickChoice::Random(held) => {
                    if !random_nick_shape(&got) {
                        return Err(fail(i, s, format!("{got:?} is not user-N")));
                    }
                    if held.iter().any(|h| h.eq_ignore_ascii_case(&got)) {
                        return Err(fail(i, s, format!("random {got:?} was already held")));
                    }
                }
                NickChoice::Requested(_) => {}
            }
        }
    }
    Ok(())
}

fn check_broadcast_delivery(run: &Run) -> Result<(), TestCaseError> {
    // What each connection must receive live: every event broadcast while it was a member.
    let mut want: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for e in &run.log {
        for r in &e.recipients {
            want.entry(*r).or_default().push((e.seq, e.text.clone()));
        }
    }
    let mut got: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    // The newest seq each connection has seen in its current membership.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, s) in run.steps.iter().enumerate() {
        if let (Call::Join { conn, .. }, Ok(())) = (&s.call, s.result) {
            seen.remove(conn);
        }
        for (out, to) in s.outputs.iter().zip(&s.delivered) {
            if out.kind().is_broadcast() != out.seq().is_some() {
                return Err(fail(
                    i,
                    s,
                    format!("kind {:?} with seq {:?}", out.kind(), out.seq()),
                ));
            }
            let Some(seq) = out.seq() else { continue };
            if !out.is_replay() && matches!(out.audience(), Audience::Only(_)) {
                return Err(fail(
                    i,
                    s,
                    "a live broadcast addressed to one connection".into(),
                ));
            }
            for c in to {
                if let Some(prev) = seen.insert(*c, seq) {
                    if seq <= prev {
                        return Err(fail(i, s, format!("conn {c} got seq {seq} after {prev}")));
                    }
                }
                if !out.is_replay() {
                    got.entry(*c).or_default().push((seq, out.to_string()));
                }
            }
        }
    }
    for c in want.keys().chain(got.keys()) {
        let (w, g) = (want.get(c), got.get(c));
        if w != g {
            return Err(TestCaseError::fail(format!(
                "conn {c} received {g:#?}\nbut should have received {w:#?}"
            )));
        }
    }
    Ok(())
}

fn check_leave_notices(run: &Run) -> Result<(), TestCaseError> {
    for (i, s) in run.steps.iter().enumerate() {
        let Call::Leave { conn } = s.call else {
            continue;
        };
        let was = s.model_before.iter().find(|(c, _)| *c == conn);
        let Some((_, nick)) = was else {
            if s.result != Err(Error::NotJoined) || !s.outputs.is_empty() {
                return Err(fail(
                    i,
                    s,
                    "leave of a non-member must be NotJoined, silent".into(),
                ));
            }
            continue;
        };
        if s.result.is_err() || s.outputs.len() != 1 {
            return Err(fail(
                i,
                s,
                "a member's leave must give exactly one notice".into(),
            ));
        }
        let out = &s.outputs[0];
        if out.kind() != OutputKind::Leave || out.to_string() != format!(" .... {nick} has left.") {
            return Err(fail(i, s, "not the leave notice".into()));
        }
        let remaining: Vec<u64> = s.model_after.iter().map(|(c, _)| *c).collect();
        let mut reached = s.delivered[0].clone();
        reached.sort_unstable();
        let mut remaining_sorted = remaining.clone();
        remaining_sorted.sort_unstable();
        if reached != remaining_sorted || reached.contains(&conn) {
            return Err(fail(
                i,
                s,
                format!("leave notice reached {reached:?}, remaining members {remaining_sorted:?}"),
            ));
        }
    }
    Ok(())
}

fn check_resume(run: &Run) -> Result<(), TestCaseError> {
    for (i, s) in run.steps.iter().enumerate() {
        let (Call::Join { conn, .. }, Ok(()), Some(want)) =
            (&s.call, s.result, &s.prediction.resume)
        else {
            continue;
        };
        let mine: Vec<&Output> = s
            .outputs
            .iter()
            .zip(&s.delivered)
            .filter(|(_, to)| to.contains(conn))
            .map(|(o, _)| o)
            .collect();
        let replays: Vec<(u64, String)> = mine
            .iter()
            .filter(|o| o.is_replay())
            .map(|o| (o.seq().unwrap_or(0), o.to_string()))
            .collect();
        if replays != want.replays {
            return Err(fail(
                i,
                s,
                format!("replayed {replays:#?}\nexpected {:#?}", want.replays),
            ));
        }
        let gaps: Vec<(usize, u64)> = mine
            .iter()
            .enumerate()
            .filter_map(|(k, o)| o.lost().map(|l| (k, l)))
            .collect();
        let first_replay = mine.iter().position(|o| o.is_replay());
        match (gaps.as_slice(), want.lost) {
            ([], 0) => {}
            ([(k, lost)], want_lost) if *lost == want_lost && want_lost > 0 => {
                if first_replay.is_some_and(|r| r < *k) {
                    return Err(fail(i, s, "the gap line must precede the replay".into()));
                }
            }
            _ => {
                return Err(fail(
                    i,
                    s,
                    format!("gap outputs {gaps:?}, expected {} lost", want.lost),
                ));
            }
        }
        if mine
            .iter()
            .any(|o| o.is_replay() && o.audience() != Audience::Only(ConnId(*conn)))
        {
            return Err(fail(i, s, "a replay addressed to others".into()));
        }
    }
    Ok(())
}

fn check_predictions(run: &Run) -> Result<(), TestCaseError> {
    for (i, s) in run.steps.iter().enumerate() {
        let p = &s.prediction;
        if s.result != p.result {
            return Err(fail(i, s, format!("expected {:?}", p.result)));
        }
        if s.outputs.len() != p.outputs.len() {
            return Err(fail(i, s, format!("expected outputs {:#?}", p.outputs)));
        }
        for (k, (out, exp)) in s.outputs.iter().zip(&p.outputs).enumerate() {
            if let Err(e) = check_output(out, exp) {
                return Err(fail(i, s, format!("output {k}: {e}")));
            }
        }
        if s.room_after.pending_after_drain != 0 {
            return Err(fail(i, s, "outputs still pending after draining".into()));
        }
        if s.room_after.last_seq != s.model_last_seq {
            let want = s.model_last_seq;
            return Err(fail(i, s, format!("last_seq() != model {want}")));
        }
    }
    // Live broadcast seqs are exactly 1, 2, 3, ... in the order they were produced.
    let live: Vec<u64> = run
        .steps
        .iter()
        .flat_map(|s| s.outputs.iter())
        .filter(|o| !o.is_replay())
        .filter_map(|o| o.seq())
        .collect();
    let contiguous: Vec<u64> = (1..=live.len() as u64).collect();
    if live != contiguous {
        return Err(TestCaseError::fail(format!("broadcast seqs {live:?}")));
    }
    let last = run.steps.last().map_or(0, |s| s.room_after.last_seq);
    if last != live.len() as u64 || last != run.log.len() as u64 {
        return Err(TestCaseError::fail(format!(
            "last_seq {last}, {} broadcasts, model {}",
            live.len(),
            run.log.len()
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn nicknames_stay_unique_ignoring_case_and_getters_agree_with_model(
        cfg in config(), seed in any::<u64>(), start in start_time(), ops in ops(),
    ) {
        check_nicknames_and_getters(&simulate(&cfg, seed, start, &ops))?;
    }

    #[test]
    fn every_member_receives_every_broadcast_once_in_order(
        cfg in config(), seed in any::<u64>(), start in start_time(), ops in ops(),
    ) {
        check_broadcast_delivery(&simulate(&cfg, seed, start, &ops))?;
    }

    #[test]
    fn a_leave_notice_reaches_exactly_the_remaining_members(
        cfg in config(), seed in any::<u64>(), start in start_time(), ops in ops(),
    ) {
        check_leave_notices(&simulate(&cfg, seed, start, &ops))?;
    }

    #[test]
    fn resume_replays_exactly_the_missed_events_still_in_history(
        cfg in config(), seed in any::<u64>(), start in start_time(), ops in ops(),
    ) {
        check_resume(&simulate(&cfg, seed, start, &ops))?;
    }

    #[test]
    fn model_predicts_every_result_reply_and_rendered_broadcast(
        cfg in config(), seed in any::<u64>(), start in start_time(), ops in ops(),
    ) {
        check_predictions(&simulate(&cfg, seed, start, &ops))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

/// One step as a shell would log it: time, input, result, outputs and their rendered text.
type Record = (u64, Call, Result<(), Error>, Vec<Output>, Vec<String>);

/// Drives `room` through `ops` from time `*now`, draining after every input.
fn drive(room: &mut Room, now: &mut u64, ops: &[Op]) -> Vec<Record> {
    let mut log = Vec::new();
    for op in ops {
        *now = tick(*now, op.clock);
        for call in resolve(&op.action, room) {
            let result = room.handle(*now, call.input());
            let outputs = drain(room);
            let rendered = outputs.iter().map(|o| o.to_string()).collect();
            log.push((*now, call, result, outputs, rendered));
        }
    }
    log
}

fn room_state(room: &Room) -> (Vec<(u64, String)>, u64) {
    let members = room.members().map(|(c, n)| (c.0, n.to_string())).collect();
    (members, room.last_seq())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Two rooms with the same config and seed fed the same inputs produce identical output
    /// logs, and so does a clone taken half way and fed the rest.
    #[test]
    fn equal_seeds_and_inputs_give_equal_outputs(
        cfg in config(),
        seed in any::<u64>(),
        start in start_time(),
        ops in ops(),
        split in any::<prop::sample::Index>(),
    ) {
        let mut a = Room::new(cfg.clone(), seed);
        let mut now_a = start;
        let log_a = drive(&mut a, &mut now_a, &ops);

        let k = split.index(ops.len() + 1);
        let mut b = Room::new(cfg, seed);
        let mut now_b = start;
        let mut log_b = drive(&mut b, &mut now_b, &ops[..k]);
        let mut c = b.clone();
        let mut now_c = now_b;
        log_b.extend(drive(&mut b, &mut now_b, &ops[k..]));
        let tail_c = drive(&mut c, &mut now_c, &ops[k..]);

        prop_assert_eq!(&log_a, &log_b);
        prop_assert_eq!(&log_a[log_a.len() - tail_c.len()..], &tail_c[..]);
        prop_assert_eq!(room_state(&a), room_state(&b));
        prop_assert_eq!(room_state(&a), room_state(&c));
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs
// ---------------------------------------------------------------------------------------------

fn hostile_conn() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..8, 1 => any::<u64>(), 1 => Just(u64::MAX)]
}

fn hostile_text() -> impl Strategy<Value = Text> {
    prop_oneof![
        8 => text(),
        1 => chars(0..64).prop_map(Text::Literal),
        1 => (select(PREFIXES), select(LONG_UNITS), 0usize..20_000)
            .prop_map(|(p, u, n)| Text::Literal(format!("{p}{}", u.repeat(n)))),
    ]
}

fn hostile_action() -> impl Strategy<Value = Action> {
    let resume = prop_oneof![3 => resume(), 1 => any::<u64>().prop_map(Resume::Abs)];
    prop_oneof![
        6 => (
            hostile_conn(),
            prop::option::weighted(0.6, nick_req()),
            prop::option::weighted(0.5, resume),
        )
            .prop_map(|(conn, nick, resume)| Action::Join { conn, nick, resume }),
        12 => (sender(hostile_conn()), hostile_text())
            .prop_map(|(from, text)| Action::Message { from, text }),
        4 => hostile_conn().prop_map(|conn| Action::Leave { conn }),
        1 => (prop_oneof![Just(1000u64), Just(u64::MAX - 30), any::<u64>()], 0u64..70)
            .prop_map(|(first, n)| Action::JoinMany { first, n }),
    ]
}

fn hostile_ops() -> impl Strategy<Value = Vec<Op>> {
    let clock = prop_oneof![8 => clock(), 1 => any::<u64>().prop_map(Clock::Back)];
    prop::collection::vec(
        (clock, hostile_action()).prop_map(|(clock, action)| Op { clock, action }),
        0..MAX_OPS,
    )
}

fn hostile_config() -> impl Strategy<Value = RoomConfig> {
    let extreme = |v: usize| prop_oneof![Just(0usize), Just(1usize), Just(usize::MAX), 0..v];
    let rate = prop_oneof![
        Just(None),
        Just(Some(RateLimit {
            burst: u32::MAX,
            per_second: u32::MAX
        })),
        Just(Some(RateLimit {
            burst: 0,
            per_second: 0
        })),
        Just(Some(RateLimit {
            burst: 1,
            per_second: u32::MAX
        })),
        Just(Some(RateLimit {
            burst: u32::MAX,
            per_second: 0
        })),
        rate_limit(),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        extreme(200),
        extreme(10_000),
        rate,
        extreme(100),
    )
        .prop_map(
            |(
                welcome,
                join_notices,
                commands,
                history,
                max_message_bytes,
                rate_limit,
                max_members,
            )| {
                RoomConfig {
                    welcome,
                    join_notices,
                    commands,
                    history,
                    max_message_bytes,
                    rate_limit,
                    max_members,
                }
            },
        )
}

/// Checks one hostile call's outcome against the rules that hold whatever the input.
fn check_hostile_step(
    room: &Room,
    call: &Call,
    result: Result<(), Error>,
    outputs: &[Output],
    before: &(Vec<(u64, String)>, u64),
    after: &(Vec<(u64, String)>, u64),
) -> Result<(), TestCaseError> {
    let conn = call.conn();
    prop_assert_eq!(room.pending_outputs(), 0);
    // Replays repeat bodies already rendered when they were broadcast live.
    for out in outputs.iter().filter(|o| !o.is_replay()) {
        let text = out.to_string();
        if !matches!(out.kind(), OutputKind::Message | OutputKind::Me) {
            prop_assert!(text.starts_with(" .... "), "not a notice line: {:?}", text);
        }
        if out.kind() == OutputKind::Welcome {
            let count = room.member_count();
            let listed = out.members().map_or(0, <[_]>::len);
            prop_assert_eq!(out.member_count(), Some(count));
            prop_assert_eq!(listed, count.min(WELCOME_LIST_MAX));
            prop_assert_eq!(out.nick(), room.nick(ConnId(conn)));
            let others = out
                .members()
                .unwrap_or(&[])
                .iter()
                .filter(|n| Some(*n) != room.nick(ConnId(conn)))
                .count();
            let hidden = count - 1 - others;
            if hidden > 0 {
                let more = format!(" and {hidden} more.");
                prop_assert!(text.contains(&more), "{:?} lacks {:?}", text, more);
            }
        }
    }
    match result {
        Err(error) => {
            // Refused input changes nothing and is explained to its sender only (a leave of a
            // non-member has nobody to tell).
            prop_assert_eq!(after, before);
            if let Call::Leave { .. } = call {
                prop_assert_eq!(error, Error::NotJoined);
                prop_assert!(outputs.is_empty());
            } else {
                prop_assert_eq!(outputs.len(), 1, "outputs: {:?}", outputs);
                let out = &outputs[0];
                prop_assert_eq!(out.audience(), Audience::Only(ConnId(conn)));
                prop_assert_eq!(out.error(), Some(error));
                prop_assert!(out.to_string().starts_with(" .... error: "));
            }
        }
        Ok(()) => {
            let live: Vec<u64> = outputs
                .iter()
                .filter(|o| !o.is_replay())
                .filter_map(Output::seq)
                .collect();
            let want: Vec<u64> = (before.1 + 1..=after.1).collect();
            prop_assert_eq!(live, want);
            match call {
                Call::Join { .. } => prop_assert!(room.is_member(ConnId(conn))),
                Call::Leave { .. } => prop_assert!(!room.is_member(ConnId(conn))),
                Call::Message { .. } => {
                    prop_assert!(!outputs.is_empty());
                    let conns =
                        |v: &[(u64, String)]| v.iter().map(|(c, _)| *c).collect::<BTreeSet<_>>();
                    prop_assert_eq!(conns(&after.0), conns(&before.0));
                    // Only the sender's own nickname may change (a rename).
                    for (c, n) in &after.0 {
                        if *c != conn {
                            prop_assert!(before.0.contains(&(*c, n.clone())));
                        }
                    }
                }
            }
        }
    }
    if after.0 == before.0 {
        return Ok(());
    }
    let mut keys = BTreeSet::new();
    for (_, nick) in &after.0 {
        prop_assert!(valid_nick(nick), "invalid nickname {:?}", nick);
        prop_assert!(
            keys.insert(nick.to_ascii_lowercase()),
            "{:?} held twice",
            nick
        );
    }
    prop_assert_eq!(after.0.len(), room.member_count());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Hostile inputs (arbitrary connection ids, extreme configs, huge and control-laden text,
    /// time jumping to `u64::MAX` and back, joins of 70 connections at once) never panic; a
    /// refused input changes nothing and is answered with one error line to its sender only;
    /// nicknames stay valid and unique; broadcast seqs never skip.
    #[test]
    fn hostile_sequences_never_panic_and_refusals_change_nothing(
        cfg in hostile_config(),
        seed in any::<u64>(),
        start in any::<u64>(),
        ops in hostile_ops(),
    ) {
        let mut room = Room::new(cfg, seed);
        let mut now = start;
        let mut before = room_state(&room);
        for op in &ops {
            now = tick(now, op.clock);
            for call in resolve(&op.action, &room) {
                let result = room.handle(now, call.input());
                let outputs = drain(&mut room);
                let after = room_state(&room);
                check_hostile_step(&room, &call, result, &outputs, &before, &after)?;
                before = after;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot and restore
// ---------------------------------------------------------------------------------------------

/// `room`'s snapshot, restored after a serde_json round trip (as the server replicates it).
fn restore_through_json(room: &Room) -> Result<Room, TestCaseError> {
    let snapshot = room.snapshot();
    let json = serde_json::to_string(&snapshot).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded: RoomSnapshot =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, &snapshot);
    let restored = Room::restore(decoded).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(restored.snapshot(), snapshot);
    Ok(restored)
}

fn rendered(outputs: &[Output]) -> Vec<String> {
    outputs.iter().map(ToString::to_string).collect()
}

/// Drains both rooms and checks they had queued the same outputs.
fn drain_both(a: &mut Room, b: &mut Room) -> Result<(), TestCaseError> {
    let (out_a, out_b) = (drain(a), drain(b));
    prop_assert_eq!(&out_a, &out_b);
    prop_assert_eq!(rendered(&out_a), rendered(&out_b));
    Ok(())
}

/// Feeds `ops` to both rooms from time `*now` and checks, after every input, that they return
/// the same result, queue the same outputs and agree on every getter.
fn drive_in_lockstep(
    a: &mut Room,
    b: &mut Room,
    now: &mut u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    for op in ops {
        *now = tick(*now, op.clock);
        let calls = resolve(&op.action, a);
        prop_assert_eq!(&calls, &resolve(&op.action, b));
        for call in calls {
            let result = a.handle(*now, call.input());
            prop_assert_eq!(result, b.handle(*now, call.input()), "{:?}", call);
            drain_both(a, b)?;
            prop_assert_eq!(RoomView::of(a), RoomView::of(b));
            for name in NICK_SAMPLES {
                prop_assert_eq!(a.conn_of(name), b.conn_of(name));
            }
        }
    }
    Ok(())
}

/// Feeds `ops` from time `*now` without draining, so every output stays queued.
fn feed(room: &mut Room, now: &mut u64, ops: &[Op]) {
    for op in ops {
        *now = tick(*now, op.clock);
        for call in resolve(&op.action, room) {
            let _ = room.handle(*now, call.input());
        }
    }
}

/// Cases per snapshot property: each runs two op sequences and compares two rooms at every
/// step, so fewer cases keep it near the cost of one model property.
const SNAPSHOT_CASES: u32 = CASES / 2;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SNAPSHOT_CASES))]

    /// A room restored from a snapshot (through JSON) taken after inputs `a`, drained, then fed
    /// inputs `b` side by side with the original, gives the same results, outputs (values and
    /// text) and getters after every step.
    #[test]
    fn a_restored_room_behaves_exactly_like_the_original(
        cfg in config(), seed in any::<u64>(), start in start_time(), a in ops(), b in ops(),
    ) {
        let mut original = Room::new(cfg, seed);
        let mut now = start;
        drive(&mut original, &mut now, &a);
        let mut restored = restore_through_json(&original)?;
        prop_assert_eq!(RoomView::of(&original), RoomView::of(&restored));
        drive_in_lockstep(&mut original, &mut restored, &mut now, &b)?;
    }

    /// The same with nothing drained before the snapshot: every output of `a` is still queued
    /// and comes out of the restored room identically.
    #[test]
    fn a_restored_room_delivers_the_outputs_that_were_pending(
        cfg in config(), seed in any::<u64>(), start in start_time(), a in ops(), b in ops(),
    ) {
        let mut original = Room::new(cfg, seed);
        let mut now = start;
        feed(&mut original, &mut now, &a);
        let mut restored = restore_through_json(&original)?;
        prop_assert_eq!(original.pending_outputs(), restored.pending_outputs());
        drain_both(&mut original, &mut restored)?;
        drive_in_lockstep(&mut original, &mut restored, &mut now, &b)?;
    }

}

proptest! {
    // Hostile runs hold hundreds of members and 80 KB texts, so they get fewer cases still.
    #![proptest_config(ProptestConfig::with_cases(SNAPSHOT_CASES / 2))]

    /// Hostile configs and inputs (extreme limits and ids, 70 joins at once, time jumping to
    /// `u64::MAX` and back) snapshot and restore exactly too, pending outputs included.
    #[test]
    fn hostile_rooms_restore_exactly(
        cfg in hostile_config(),
        seed in any::<u64>(),
        start in any::<u64>(),
        a in hostile_ops(),
        b in hostile_ops(),
        drain_first in any::<bool>(),
    ) {
        let mut original = Room::new(cfg, seed);
        let mut now = start;
        if drain_first {
            drive(&mut original, &mut now, &a);
        } else {
            feed(&mut original, &mut now, &a);
        }
        let mut restored = restore_through_json(&original)?;
        drain_both(&mut original, &mut restored)?;
        drive_in_lockstep(&mut original, &mut restored, &mut now, &b)?;
    }
}
