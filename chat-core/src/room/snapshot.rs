//! A room's complete state as plain, serializable data ([`RoomSnapshot`]), and the checks that
//! turn such data back into a [`Room`]. A snapshot may come from the network, so restoring it
//! validates everything and never panics; it never does I/O and never picks a wire format.
//!
//! What is stored is exactly what cannot be derived: config, RNG state, members (connection,
//! nickname, token bucket), the overflow counter, `last_seq`, history and pending outputs. The
//! nickname index and the count of random nicknames are rebuilt on restore.
//!
//! The serde shape avoids anything tied to self-describing formats (no untagged or internally
//! tagged enums, no flatten, no skipped fields, no `u128`), so any serde format can carry it.
//! Events are tuple variants to keep history, the bulk of a snapshot, compact.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{has_control_characters, Member, Room};
use crate::output::{Body, WELCOME_LIST_MAX};
use crate::rate::TokenBucket;
use crate::{Audience, ConnId, Error, Nick, Output, RoomConfig};

/// Everything a [`Room`] is, as plain data.
///
/// Take one with [`Room::snapshot`], serialize it with any serde format, and rebuild the room
/// with [`Room::restore`]. A room restored from a snapshot produces exactly the outputs the
/// original would for the same inputs, so a late-joining replica can start from a snapshot and
/// apply the input log recorded after it. The fields are private: the shape may change between
/// versions, and only [`Room::restore`] decides what is valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    config: RoomConfig,
    /// The RNG's 128-bit state as `[high, low]` halves (many consumers of JSON cannot hold a
    /// 128-bit integer).
    rng: [u64; 2],
    /// In nickname order (ignoring ASCII case), so equal rooms give equal snapshots.
    members: Vec<MemberState>,
    overflow_next: u64,
    last_seq: u64,
    /// `(seq, event)`, oldest first.
    history: Vec<(u64, Event)>,
    /// Outputs not yet polled, in queue order.
    outputs: Vec<PendingOutput>,
}

/// One member: its connection, nickname and token bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct MemberState {
    conn: u64,
    nick: String,
    /// Milli-tokens left in the bucket.
    tokens: u64,
    /// When the bucket was last counted.
    last_ms: u64,
}

/// An output waiting in the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PendingOutput {
    audience: AudienceState,
    seq: Option<u64>,
    replay: bool,
    event: Event,
}

/// [`Audience`] with plain connection numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum AudienceState {
    Everyone,
    EveryoneExcept(u64),
    Only(u64),
}

/// An output's payload with nicknames and text as plain strings (checked on restore).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Event {
    /// `(conn, from, text)`
    Message(u64, String, String),
    /// `(conn, from, text)`
    Me(u64, String, String),
    /// `(conn, nick)`
    Join(u64, String),
    /// `(conn, nick)`
    Leave(u64, String),
    /// `(conn, old, new)`
    Nick(u64, String, String),
    /// `(conn, nick, listed members, member_count, commands)`
    Welcome(u64, String, Vec<String>, u64, bool),
    /// `(members)`
    Who(Vec<String>),
    Help,
    /// `(error, reason)`
    Error(#[serde(with = "ErrorName")] Error, String),
    /// `(lost)`
    Gap(u64),
}

/// Serializes [`Error`] by variant name without making serde part of its public API.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Error")]
enum ErrorName {
    NotJoined,
    AlreadyJoined,
    RoomFull,
    EmptyMessage,
    MessageTooLong,
    ControlCharacter,
    RateLimited,
    InvalidNick,
    NickTaken,
    NickUnchanged,
    UnknownCommand,
    MissingArgument,
}

/// `overflow_next` may not exceed this. A real room would need 2^63 joins to get here; above
/// it, a room whose overflow names are all taken could make `random_nick` probe forever once
/// the counter saturates.
const OVERFLOW_NEXT_MAX: u64 = u64::MAX / 2;

/// How much of an offending string an error message quotes.
const QUOTE_MAX_CHARS: usize = 40;

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError {
    problem: Problem,
    /// Where and what, e.g. `history entry 3 has seq 9, expected 8`.
    detail: String,
}

/// The rule a snapshot broke; tests match on it, the message explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    RngState,
    OverflowCounter,
    TooManyMembers,
    DuplicateConn,
    InvalidNick,
    DuplicateNick,
    BucketOverfull,
    HistoryTooLong,
    HistoryLength,
    HistorySeq,
    HistoryEvent,
    InvalidText,
    OutputSeq,
    WelcomeList,
    EmptyGap,
    Unrepresentable,
}

impl Problem {
    fn as_str(self) -> &'static str {
        match self {
            Problem::RngState => "the RNG state must be odd",
            Problem::OverflowCounter => "the overflow nickname counter is out of range",
            Problem::TooManyMembers => "more members than the config admits",
            Problem::DuplicateConn => "a connection is a member twice",
            Problem::InvalidNick => "invalid nickname",
            Problem::DuplicateNick => "a nickname is held twice (ignoring ASCII case)",
            Problem::BucketOverfull => "a token bucket holds more than its burst",
            Problem::HistoryTooLong => "history holds more events than the config keeps",
            Problem::HistoryLength => "history does not hold the latest events",
            Problem::HistorySeq => "history seqs are not contiguous up to last_seq",
            Problem::HistoryEvent => "history holds an event that is not a broadcast",
            Problem::InvalidText => "text the room would have refused",
            Problem::OutputSeq => "a pending output's seq does not fit its kind",
            Problem::WelcomeList => "a welcome lists the wrong number of members",
            Problem::EmptyGap => "a gap of zero events",
            Problem::Unrepresentable => "a number does not fit this platform",
        }
    }
}

impl SnapshotError {
    fn new(problem: Problem, detail: impl Into<String>) -> SnapshotError {
        SnapshotError {
            problem,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid room snapshot: {}: {}",
            self.problem.as_str(),
            self.detail
        )
    }
}

impl std::error::Error for SnapshotError {}

/// `s` for an error message: Debug-quoted, at most [`QUOTE_MAX_CHARS`] characters of it.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

impl Room {
    /// The room's complete state: config, RNG state, members with nickname and rate bucket,
    /// the overflow counter, `last_seq`, history and pending outputs.
    ///
    /// Cheap enough to take between inputs, but not free (it copies history); a shell usually
    /// takes it right after draining, when no outputs are pending.
    pub fn snapshot(&self) -> RoomSnapshot {
        let state = self.rng.state();
        let members = self
            .nicks
            .values()
            .filter_map(|conn| {
                let member = self.members.get(conn)?;
                let (tokens, last_ms) = member.bucket.to_parts();
                Some(MemberState {
                    conn: conn.0,
                    nick: member.nick.to_string(),
                    tokens,
                    last_ms,
                })
            })
            .collect();
        RoomSnapshot {
            config: self.config.clone(),
            rng: [(state >> 64) as u64, state as u64],
            members,
            overflow_next: self.overflow_next,
            last_seq: self.last_seq,
            history: self
                .history
                .iter()
                .map(|(seq, body)| (*seq, Event::of(body)))
                .collect(),
            outputs: self
                .outputs
                .iter()
                .map(|out| PendingOutput {
                    audience: match out.audience {
                        Audience::Everyone => AudienceState::Everyone,
                        Audience::EveryoneExcept(c) => AudienceState::EveryoneExcept(c.0),
                        Audience::Only(c) => AudienceState::Only(c.0),
                    },
                    seq: out.seq,
                    replay: out.replay,
                    event: Event::of(&out.body),
                })
                .collect(),
        }
    }

    /// A room that behaves exactly like the one snapshotted: the same outputs, getters and
    /// random nicknames for the same inputs from here on.
    ///
    /// Everything is validated, since a snapshot may come from the network: nicknames are
    /// valid and unique ignoring ASCII case, connections are members once, buckets hold no
    /// more than the burst, history holds exactly the latest `min(last_seq, config.history)`
    /// events with contiguous seqs ending at `last_seq`, texts are ones the room would have
    /// accepted, and pending outputs are consistent. Returns `Err`, never panics.
    pub fn restore(snapshot: RoomSnapshot) -> Result<Room, SnapshotError> {
        let RoomSnapshot {
            config,
            rng,
            members,
            overflow_next,
            last_seq,
            history,
            outputs,
        } = snapshot;

        let state = (u128::from(rng[0]) << 64) | u128::from(rng[1]);
        // `Pcg64Mcg::new` would silently set the low bit; a real state is always odd.
        if state & 1 == 0 {
            return Err(SnapshotError::new(Problem::RngState, format!("{rng:?}")));
        }
        if overflow_next > OVERFLOW_NEXT_MAX {
            let detail = format!("{overflow_next} > {OVERFLOW_NEXT_MAX}");
            return Err(SnapshotError::new(Problem::OverflowCounter, detail));
        }
        if members.len() > config.max_members {
            let detail = format!("{} > max_members {}", members.len(), config.max_members);
            return Err(SnapshotError::new(Problem::TooManyMembers, detail));
        }

        let mut room = Room {
            rng: Pcg64Mcg::new(state),
            members: FxHashMap::default(),
            nicks: BTreeMap::new(),
            random_taken: 0,
            overflow_next,
            last_seq,
            // The same capacity as `Room::new`, so a restored room grows the same way.
            history: VecDeque::with_capacity(config.history.min(1024)),
            outputs: VecDeque::with_capacity(outputs.len()),
            config,
        };

        for member in members {
            let conn = ConnId(member.conn);
            let place = || format!("member {}", member.conn);
            let nick = parse_nick(&member.nick, place)?;
            if room.members.contains_key(&conn) {
                return Err(SnapshotError::new(Problem::DuplicateConn, place()));
            }
            if room.nicks.contains_key(&nick.key()) {
                let detail = format!("{}: {nick}", place());
                return Err(SnapshotError::new(Problem::DuplicateNick, detail));
            }
            let limit = room.config.rate_limit;
            let Some(bucket) = TokenBucket::from_parts(limit, member.tokens, member.last_ms) else {
                let detail = format!("{}: {} milli-tokens", place(), member.tokens);
                return Err(SnapshotError::new(Problem::BucketOverfull, detail));
            };
            // Rebuilds the nickname index and the count of random nicknames.
            room.insert_nick(&nick, conn);
            room.members.insert(conn, Member { nick, bucket });
        }

        room.restore_history(history)?;

        for (index, out) in outputs.into_iter().enumerate() {
            let output = room.restore_output(index, out)?;
            room.outputs.push_back(output);
        }
        Ok(room)
    }

    /// Checks history against the one way a room fills it (every broadcast is kept, the
    /// oldest dropped beyond `config.history`) and installs it.
    fn restore_history(&mut self, history: Vec<(u64, Event)>) -> Result<(), SnapshotError> {
        let keep = self.config.history;
        if history.len() > keep {
            let detail = format!("{} > history {keep}", history.len());
            return Err(SnapshotError::new(Problem::HistoryTooLong, detail));
        }
        // Every broadcast so far, up to `keep` of them, is still there.
        let expected_len = usize::try_from(self.last_seq).map_or(keep, |seq| seq.min(keep));
        if history.len() != expected_len {
            let detail = format!(
                "{} events with last_seq {} and history {keep}",
                history.len(),
                self.last_seq
            );
            return Err(SnapshotError::new(Problem::HistoryLength, detail));
        }
        let mut previous: Option<u64> = None;
        for (index, (seq, event)) in history.into_iter().enumerate() {
            // The room's own increment: it saturates at `u64::MAX`, so this does too.
            let contiguous = previous.is_none_or(|p| seq == p.saturating_add(1));
            if !contiguous || seq == 0 || seq > self.last_seq {
                let detail = format!("history entry {index} has seq {seq}");
                return Err(SnapshotError::new(Problem::HistorySeq, detail));
            }
            previous = Some(seq);
            let body = self.restore_body(event, || format!("history entry {index}"))?;
            if !is_broadcast(&body) {
                let detail = format!("history entry {index}");
                return Err(SnapshotError::new(Problem::HistoryEvent, detail));
            }
            self.history.push_back((seq, body));
        }
        if previous.is_some_and(|last| last != self.last_seq) {
            let detail = format!("the latest entry is not last_seq {}", self.last_seq);
            return Err(SnapshotError::new(Problem::HistorySeq, detail));
        }
        Ok(())
    }

    /// Checks one pending output: a seq exactly on broadcast events (at most `last_seq`),
    /// replay only of those, and a valid body.
    fn restore_output(&self, index: usize, out: PendingOutput) -> Result<Output, SnapshotError> {
        let place = || format!("pending output {index}");
        let body = self.restore_body(out.event, place)?;
        let seq_fits = match out.seq {
            Some(seq) => is_broadcast(&body) && (1..=self.last_seq).contains(&seq),
            None => !is_broadcast(&body) && !out.replay,
        };
        if !seq_fits {
            return Err(SnapshotError::new(Problem::OutputSeq, place()));
        }
        let audience = match out.audience {
            AudienceState::Everyone => Audience::Everyone,
            AudienceState::EveryoneExcept(c) => Audience::EveryoneExcept(ConnId(c)),
            AudienceState::Only(c) => Audience::Only(ConnId(c)),
        };
        Ok(Output {
            audience,
            seq: out.seq,
            replay: out.replay,
            body,
        })
    }

    /// Turns an event back into a body, checking nicknames and texts.
    fn restore_body(
        &self,
        event: Event,
        place: impl Fn() -> String,
    ) -> Result<Body, SnapshotError> {
        let nick = |s: &str| parse_nick(s, &place);
        let text = |s: String| -> Result<Arc<str>, SnapshotError> {
            // Chat text passed the size and control-character checks when it was accepted.
            if s.len() > self.config.max_message_bytes || has_control_characters(&s) {
                let detail = format!("{}: {}", place(), quote(&s));
                return Err(SnapshotError::new(Problem::InvalidText, detail));
            }
            Ok(s.into())
        };
        let nicks = |names: Vec<String>| -> Result<Arc<[Nick]>, SnapshotError> {
            names.iter().map(|s| nick(s)).collect()
        };
        Ok(match event {
            Event::Message(conn, from, t) => Body::Message {
                conn: ConnId(conn),
                from: nick(&from)?,
                text: text(t)?,
            },
            Event::Me(conn, from, t) => Body::Me {
                conn: ConnId(conn),
                from: nick(&from)?,
                text: text(t)?,
            },
            Event::Join(conn, n) => Body::Join {
                conn: ConnId(conn),
                nick: nick(&n)?,
            },
            Event::Leave(conn, n) => Body::Leave {
                conn: ConnId(conn),
                nick: nick(&n)?,
            },
            Event::Nick(conn, old, new) => Body::Nick {
                conn: ConnId(conn),
                old: nick(&old)?,
                new: nick(&new)?,
            },
            Event::Welcome(conn, n, members, member_count, commands) => {
                let Ok(member_count) = usize::try_from(member_count) else {
                    return Err(SnapshotError::new(Problem::Unrepresentable, place()));
                };
                // A welcome lists the first members, up to the limit, of the room it greets
                // (which holds at least the joiner).
                if member_count == 0 || members.len() != member_count.min(WELCOME_LIST_MAX) {
                    return Err(SnapshotError::new(Problem::WelcomeList, place()));
                }
                Body::Welcome {
                    conn: ConnId(conn),
                    nick: nick(&n)?,
                    members: nicks(members)?,
                    member_count,
                    commands,
                }
            }
            Event::Who(members) => Body::Who {
                members: nicks(members)?,
            },
            Event::Help => Body::Help,
            Event::Error(error, reason) => {
                // Reasons are built by the room; they are bounded by the checks on their parts,
                // not by the message size, so only control characters are checked here.
                if has_control_characters(&reason) {
                    let detail = format!("{}: {}", place(), quote(&reason));
                    return Err(SnapshotError::new(Problem::InvalidText, detail));
                }
                Body::Error {
                    error,
                    reason: reason.into(),
                }
            }
            Event::Gap(0) => return Err(SnapshotError::new(Problem::EmptyGap, place())),
            Event::Gap(lost) => Body::Gap { lost },
        })
    }
}

/// A nickname from a snapshot, or the error naming where it was.
fn parse_nick(name: &str, place: impl Fn() -> String) -> Result<Nick, SnapshotError> {
    Nick::parse(name).ok_or_else(|| {
        let detail = format!("{}: {}", place(), quote(name));
        SnapshotError::new(Problem::InvalidNick, detail)
    })
}

/// Whether history may hold this body (the kinds that get a seq).
fn is_broadcast(body: &Body) -> bool {
    matches!(
        body,
        Body::Message { .. }
            | Body::Me { .. }
            | Body::Join { .. }
            | Body::Leave { .. }
            | Body::Nick { .. }
    )
}

impl Event {
    fn of(body: &Body) -> Event {
        let names = |members: &[Nick]| members.iter().map(|n| n.to_string()).collect();
        match body {
            Body::Message { conn, from, text } => {
                Event::Message(conn.0, from.to_string(), text.to_string())
            }
            Body::Me { conn, from, text } => Event::Me(conn.0, from.to_string(), text.to_string()),
            Body::Join { conn, nick } => Event::Join(conn.0, nick.to_string()),
            Body::Leave { conn, nick } => Event::Leave(conn.0, nick.to_string()),
            Body::Nick { conn, old, new } => Event::Nick(conn.0, old.to_string(), new.to_string()),
            Body::Welcome {
                conn,
                nick,
                members,
                member_count,
                commands,
            } => Event::Welcome(
                conn.0,
                nick.to_string(),
                names(members),
                // `usize` is at most 64 bits on every supported platform.
                u64::try_from(*member_count).unwrap_or(u64::MAX),
                *commands,
            ),
            Body::Who { members } => Event::Who(names(members)),
            Body::Help => Event::Help,
            Body::Error { error, reason } => Event::Error(*error, reason.to_string()),
            Body::Gap { lost } => Event::Gap(*lost),
        }
    }
}

#[cfg(test)]
mod tests;
