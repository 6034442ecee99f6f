//! A sans-IO chat-room engine: every chat rule as pure state transitions.
//!
//! `chat-core` never touches a socket, never reads a clock, never spawns a thread and never
//! panics. A [`Room`] takes [`Input`]s (join, message, leave) with the current time as an
//! argument and queues [`Output`]s, each addressed to an [`Audience`] (everyone, everyone but
//! one connection, or one connection), so a broadcast costs one output whatever the room size.
//! Randomness (nicknames) comes from an RNG seeded at construction: the same config, seed and
//! inputs always give the same outputs, which makes rooms easy to test and to replicate.
//!
//! # Drive contract
//!
//! 1. Feed one input: [`Room::handle`]`(now_ms, input)`.
//! 2. Drain: call [`Room::poll_output`] until it returns `None`, delivering each output to the
//!    members its [`Audience`] names *at that moment*.
//! 3. Repeat. There are no timers to wait for: rate limits refill lazily from `now_ms`.
//!
//! ```
//! use chat_core::{Audience, ConnId, Input, Room, RoomConfig};
//!
//! let mut room = Room::new(RoomConfig::seed(), 42);
//! let (alice, bob) = (ConnId(1), ConnId(2));
//! for conn in [alice, bob] {
//!     room.handle(0, Input::Join { conn, nick: None, resume_after: None }).unwrap();
//! }
//! room.handle(10, Input::Message { conn: alice, text: "hello" }).unwrap();
//!
//! let alice_nick = room.nick(alice).unwrap().to_string();
//! let out = room.poll_output().expect("the message is broadcast");
//! assert_eq!(out.audience(), Audience::Everyone);
//! assert_eq!(out.to_string(), format!("{alice_nick}: hello"));
//! assert!(room.poll_output().is_none());
//! ```
//!
//! # Replication
//!
//! [`Room::snapshot`] returns the whole room as plain serde data, a [`RoomSnapshot`];
//! [`Room::restore`] validates one (it may come from the network) and rebuilds a room that
//! behaves exactly like the original. A replica that starts late restores the latest snapshot,
//! then applies the inputs logged after it, each with its original `now_ms`.
//!
//! [`RoomConfig::seed`] reproduces the tutorial this project grew from byte for byte;
//! [`RoomConfig::default`] adds a welcome line, join notices, `/commands` and history.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod nick;
mod output;
mod rate;
mod room;

pub use config::{RateLimit, RoomConfig};
pub use error::Error;
pub use nick::{is_valid as is_valid_nick, Nick, MAX_NICK_LEN, RANDOM_NICK_SPACE};
pub use output::{Audience, Output, OutputKind, WELCOME_LIST_MAX};
pub use room::{ConnId, Input, Room, RoomSnapshot, SnapshotError};

#[cfg(test)]
mod tests;
