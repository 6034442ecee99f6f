//! The room state machine: members, nicknames, sequence numbers, history and the output queue.
//! It owns every chat rule and never does I/O, reads a clock or spawns anything.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashMap;

use crate::nick::{NickKey, RANDOM_NICK_SPACE};
use crate::output::{Body, WELCOME_LIST_MAX};
use crate::rate::TokenBucket;
use crate::{Audience, Error, Nick, Output, RoomConfig};

// A child module so that snapshot and restore see the room's private fields.
mod snapshot;
pub use snapshot::{RoomSnapshot, SnapshotError};

/// Identifies a connection. The caller chooses the numbers; the room only compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Something that happened to the room, fed to [`Room::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A connection enters the room.
    Join {
        /// The new member.
        conn: ConnId,
        /// A nickname to use instead of a random one. If it is invalid or taken the member
        /// gets a random nickname and an error line.
        nick: Option<&'a str>,
        /// The last sequence number the client saw before it reconnected: it is sent exactly
        /// the events after it that history still holds, and a `Gap` line for the rest.
        /// `None` sends the whole history.
        resume_after: Option<u64>,
    },
    /// A member sent a line of text: a chat message, or a `/command` when commands are on.
    Message {
        /// The sender.
        conn: ConnId,
        /// The text as received (already UTF-8; the room checks everything else).
        text: &'a str,
    },
    /// A connection left (closed, timed out, was kicked by the shell).
    Leave {
        /// The member leaving.
        conn: ConnId,
    },
}

/// A room member.
#[derive(Clone, Debug)]
struct Member {
    nick: Nick,
    bucket: TokenBucket,
}

/// Whether `text` holds a C0 control character other than tab and newline. Shared by input
/// checks and snapshot validation so that a restored room holds only text it would accept.
#[inline]
fn has_control_characters(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 && b != b'\t' && b != b'\n')
}

/// Random draws before the room probes the `user-N` space in order.
const RANDOM_NICK_DRAWS: u32 = 16;

/// Longest command name echoed back in an "unknown command" error.
const ECHO_COMMAND_MAX: usize = 32;

/// One chat room as a pure state machine.
///
/// The API comes in four kinds:
/// - construction: [`Room::new`] with a [`RoomConfig`] and an RNG seed;
/// - input: [`Room::handle`]`(now_ms, `[`Input`]`)`, which applies one join, message or leave;
/// - output: [`Room::poll_output`], which hands out queued [`Output`]s one at a time;
/// - getters (`&self`): [`Room::nick`], [`Room::members`], [`Room::member_count`],
///   [`Room::last_seq`], [`Room::config`], ...;
/// - replication: [`Room::snapshot`] captures the whole state as plain, serializable data and
///   [`Room::restore`] validates it and rebuilds a room that behaves exactly the same.
///
/// **Drive contract.** Feed one input, then call `poll_output` until it returns `None`,
/// delivering each output to its [`Audience`] as the room's membership stands *now*. Time is
/// only ever an argument (`now_ms`, milliseconds from any fixed origin; it should not go
/// backwards, and if it does, no tokens are refilled). The room has no timers, so there is no
/// `poll_timeout`. Given the same config, seed and inputs, a room produces the same outputs.
///
/// The room never panics, whatever the inputs; bad input is answered with an error line to its
/// sender and an [`Error`] from `handle`.
#[derive(Clone, Debug)]
pub struct Room {
    config: RoomConfig,
    rng: Pcg64Mcg,
    members: FxHashMap<ConnId, Member>,
    /// Uniqueness index, in nickname order (so `/who` needs no sort).
    nicks: BTreeMap<NickKey, ConnId>,
    /// How many members hold a nickname from the random `user-N` space.
    random_taken: u32,
    /// Next number tried once the random space is full (`user-100000` and up).
    overflow_next: u64,
    last_seq: u64,
    /// The last `config.history` broadcast events, oldest first, contiguous in seq.
    history: VecDeque<(u64, Body)>,
    outputs: VecDeque<Output>,
}

impl Room {
    /// An empty room. Everything random (nicknames) comes from an RNG seeded with `seed`.
    pub fn new(config: RoomConfig, seed: u64) -> Room {
        let history = VecDeque::with_capacity(config.history.min(1024));
        Room {
            config,
            rng: Pcg64Mcg::seed_from_u64(seed),
            members: FxHashMap::default(),
            nicks: BTreeMap::new(),
            random_taken: 0,
            overflow_next: 0,
            last_seq: 0,
            history,
            outputs: VecDeque::new(),
        }
    }

    /// Applies one input at time `now_ms`, queueing its outputs.
    ///
    /// Returns the rule a refused input broke; the sender has been sent an error line
    /// explaining it. A join with an unusable requested nickname is not refused: the member
    /// gets a random nickname and an error line, and this returns `Ok`.
    pub fn handle(&mut self, now_ms: u64, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Join {
                conn,
                nick,
                resume_after,
            } => self.join(now_ms, conn, nick, resume_after),
            Input::Message { conn, text } => self.message(now_ms, conn, text),
            Input::Leave { conn } => self.leave(conn),
        }
    }

    /// The next output to deliver, or `None` when the queue is drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The room's configuration.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// The nickname of a member, `None` for a connection that is not one.
    pub fn nick(&self, conn: ConnId) -> Option<&Nick> {
        self.members.get(&conn).map(|m| &m.nick)
    }

    /// The member holding `nick` (ignoring ASCII case).
    pub fn conn_of(&self, nick: &str) -> Option<ConnId> {
        self.nicks.get(nick.to_ascii_lowercase().as_str()).copied()
    }

    /// Whether `conn` is a member.
    pub fn is_member(&self, conn: ConnId) -> bool {
        self.members.contains_key(&conn)
    }

    /// How many members the room has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every member with its nickname, in nickname order (ignoring ASCII case).
    pub fn members(&self) -> impl Iterator<Item = (ConnId, &Nick)> + '_ {
        self.nicks
            .values()
            .filter_map(|conn| self.members.get(conn).map(|m| (*conn, &m.nick)))
    }

    /// The sequence number of the latest broadcast event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many outputs wait to be polled.
    pub fn pending_outputs(&self) -> usize {
        self.outputs.len()
    }

    fn join(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        requested: Option<&str>,
        resume_after: Option<u64>,
    ) -> Result<(), Error> {
        if self.members.contains_key(&conn) {
            return self.refuse(conn, Error::AlreadyJoined, None);
        }
        if self.members.len() >= self.config.max_members {
            return self.refuse(conn, Error::RoomFull, None);
        }

        let mut nick_error = None;
        let nick = match requested {
            None => self.random_nick(),
            Some(name) => match Nick::parse(name) {
                None => {
                    nick_error = Some((Error::InvalidNick, None));
                    self.random_nick()
                }
                Some(nick) if self.nicks.contains_key(&nick.key()) => {
                    nick_error = Some((Error::NickTaken, Some(nick)));
                    self.random_nick()
                }
                Some(nick) => nick,
            },
        };
        self.insert_nick(&nick, conn);
        self.members.insert(
            conn,
            Member {
                nick,
                bucket: TokenBucket::full(self.config.rate_limit, now_ms),
            },
        );

        if self.config.welcome {
            let members: Arc<[Nick]> = self
                .members()
                .take(WELCOME_LIST_MAX)
                .map(|(_, n)| *n)
                .collect();
            self.reply(
                conn,
                Body::Welcome {
                    conn,
                    nick,
                    members,
                    member_count: self.members.len(),
                    commands: self.config.commands,
                },
            );
        }
        if let Some((error, name)) = nick_error {
            let reason = match name {
                Some(name) => format!("nickname {name} is taken; you are {nick}"),
                None => format!("{}; you are {nick}", error.as_str()),
            };
            self.reply(
                conn,
                Body::Error {
                    error,
                    reason: reason.into(),
                },
            );
        }
        self.replay_history(conn, resume_after);
        if self.config.join_notices {
            self.broadcast(Audience::EveryoneExcept(conn), Body::Join { conn, nick });
        }
        Ok(())
    }

    /// Sends a joiner what it missed: everything after `resume_after` (or all of history),
    /// preceded by a `Gap` line when history no longer holds some of it.
    fn replay_history(&mut self, conn: ConnId, resume_after: Option<u64>) {
        // A resume point from the future (e.g. the room restarted) is treated as a fresh join.
        let missed = match resume_after {
            Some(after) if after <= self.last_seq => self.last_seq - after,
            _ => self.history.len() as u64,
        };
        let held = missed.min(self.history.len() as u64);
        let lost = missed - held;
        if lost > 0 {
            self.reply(conn, Body::Gap { lost });
        }
        // `held <= history.len()`, so the cast and the subtraction are exact.
        let first = self.history.len() - held as usize;
        for (seq, body) in self.history.range(first..) {
            self.outputs.push_back(Output {
                audience: Audience::Only(conn),
                seq: Some(*seq),
                replay: true,
                body: body.clone(),
            });
        }
    }

    fn message(&mut self, now_ms: u64, conn: ConnId, text: &str) -> Result<(), Error> {
        let limit = self.config.rate_limit;
        let Some(member) = self.members.get_mut(&conn) else {
            return self.refuse(conn, Error::NotJoined, None);
        };
        if !member.bucket.try_take(limit, now_ms) {
            return self.refuse(conn, Error::RateLimited, None);
        }
        if text.len() > self.config.max_message_bytes {
            let reason = format!(
                "message too long ({} bytes; the limit is {})",
                text.len(),
                self.config.max_message_bytes
            );
            return self.refuse(conn, Error::MessageTooLong, Some(reason));
        }
        if has_control_characters(text) {
            return self.refuse(conn, Error::ControlCharacter, None);
        }
        if text.trim().is_empty() {
            return self.refuse(conn, Error::EmptyMessage, None);
        }
        let from = member.nick;

        let text = match text.strip_prefix('/') {
            Some(rest) if self.config.commands && !rest.starts_with('/') => {
                return self.command(conn, from, rest);
            }
            // `//text` sends `/text`.
            Some(rest) if self.config.commands => rest,
            _ => text,
        };
        self.broadcast(
            Audience::Everyone,
            Body::Message {
                conn,
                from,
                text: text.into(),
            },
        );
        Ok(())
    }

    /// Runs `/name args` (`line` is the text after the `/`).
    fn command(&mut self, conn: ConnId, from: Nick, line: &str) -> Result<(), Error> {
        let (name, args) = match line.find(char::is_whitespace) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        if name.eq_ignore_ascii_case("me") {
            if args.is_empty() {
                let reason = "usage: /me TEXT".to_owned();
                return self.refuse(conn, Error::MissingArgument, Some(reason));
            }
            let text = args.into();
            self.broadcast(Audience::Everyone, Body::Me { conn, from, text });
            Ok(())
        } else if name.eq_ignore_ascii_case("nick") {
            self.rename(conn, from, args)
        } else if name.eq_ignore_ascii_case("who") {
            let members = self.members().map(|(_, n)| *n).collect();
            self.reply(conn, Body::Who { members });
            Ok(())
        } else if name.eq_ignore_ascii_case("help") {
            self.reply(conn, Body::Help);
            Ok(())
        } else {
            let shown = match name.char_indices().nth(ECHO_COMMAND_MAX) {
                Some((i, _)) => &name[..i],
                None => name,
            };
            let reason = format!("unknown command /{shown}; type /help for the list");
            self.refuse(conn, Error::UnknownCommand, Some(reason))
        }
    }

    fn rename(&mut self, conn: ConnId, old: Nick, name: &str) -> Result<(), Error> {
        if name.is_empty() {
            let reason = "usage: /nick NAME".to_owned();
            return self.refuse(conn, Error::MissingArgument, Some(reason));
        }
        let Some(new) = Nick::parse(name) else {
            return self.refuse(conn, Error::InvalidNick, None);
        };
        if new == old {
            let reason = format!("you are already {old}");
            return self.refuse(conn, Error::NickUnchanged, Some(reason));
        }
        match self.nicks.get(&new.key()) {
            // Only the member itself may hold the key: a change of case.
            Some(&holder) if holder != conn => {
                let reason = format!("nickname {new} is taken");
                return self.refuse(conn, Error::NickTaken, Some(reason));
            }
            _ => {}
        }
        self.remove_nick(&old);
        self.insert_nick(&new, conn);
        if let Some(member) = self.members.get_mut(&conn) {
            member.nick = new;
        }
        self.broadcast(Audience::Everyone, Body::Nick { conn, old, new });
        Ok(())
    }

    fn leave(&mut self, conn: ConnId) -> Result<(), Error> {
        let Some(member) = self.members.remove(&conn) else {
            return Err(Error::NotJoined);
        };
        self.remove_nick(&member.nick);
        self.broadcast(
            Audience::Everyone,
            Body::Leave {
                conn,
                nick: member.nick,
            },
        );
        Ok(())
    }

    /// Queues a broadcast event under the next sequence number and keeps it in history.
    fn broadcast(&mut self, audience: Audience, body: Body) {
        self.last_seq = self.last_seq.saturating_add(1);
        let seq = self.last_seq;
        if self.config.history > 0 {
            if self.history.len() >= self.config.history {
                self.history.pop_front();
            }
            self.history.push_back((seq, body.clone()));
        }
        self.outputs.push_back(Output {
            audience,
            seq: Some(seq),
            replay: false,
            body,
        });
    }

    /// Queues a reply to one connection.
    fn reply(&mut self, conn: ConnId, body: Body) {
        self.outputs.push_back(Output {
            audience: Audience::Only(conn),
            seq: None,
            replay: false,
            body,
        });
    }

    /// Tells `conn` why its input was refused and returns the error.
    fn refuse(&mut self, conn: ConnId, error: Error, reason: Option<String>) -> Result<(), Error> {
        let reason = match reason {
            Some(reason) => reason.into(),
            None => error.as_str().into(),
        };
        self.reply(conn, Body::Error { error, reason });
        Err(error)
    }

    fn insert_nick(&mut self, nick: &Nick, conn: ConnId) {
        let key = nick.key();
        if key.random_slot().is_some() {
            self.random_taken += 1;
        }
        self.nicks.insert(key, conn);
    }

    fn remove_nick(&mut self, nick: &Nick) {
        let key = nick.key();
        if self.nicks.remove(&key).is_some() && key.random_slot().is_some() {
            self.random_taken -= 1;
        }
    }

    /// A free `user-N`: uniform draws first; when they keep colliding (the space is nearly
    /// full) the first free slot after a random start; when the space is full, `user-100000`
    /// and up in order.
    fn random_nick(&mut self) -> Nick {
        if self.random_taken < RANDOM_NICK_SPACE {
            for _ in 0..RANDOM_NICK_DRAWS {
                let n = self.rng.random_range(0..RANDOM_NICK_SPACE);
                if let Some(nick) = self.free_user_nick(u64::from(n)) {
                    return nick;
                }
            }
            let start = self.rng.random_range(0..RANDOM_NICK_SPACE);
            for i in 0..RANDOM_NICK_SPACE {
                let n = (start + i) % RANDOM_NICK_SPACE;
                if let Some(nick) = self.free_user_nick(u64::from(n)) {
                    return nick;
                }
            }
        }
        loop {
            let n = u64::from(RANDOM_NICK_SPACE).saturating_add(self.overflow_next);
            self.overflow_next = self.overflow_next.saturating_add(1);
            if let Some(nick) = self.free_user_nick(n) {
                return nick;
            }
        }
    }

    fn free_user_nick(&self, n: u64) -> Option<Nick> {
        let name = format!("user-{n}");
        if self.nicks.contains_key(name.as_str()) {
            None
        } else {
            Nick::parse(&name)
        }
    }
}
