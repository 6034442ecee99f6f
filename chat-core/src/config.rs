//! Room configuration: which features are on and which limits apply.
//!
//! A config is plain data; it never changes after [`Room::new`](crate::Room::new). It is
//! serializable because it is part of a [`RoomSnapshot`](crate::RoomSnapshot).

use serde::{Deserialize, Serialize};

/// How a [`Room`](crate::Room) behaves. Start from [`RoomConfig::default`] (every feature on) or
/// [`RoomConfig::seed`] (the tutorial's exact behaviour) and change fields as needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// Send the joiner a welcome line (` .... you are NICK ...`).
    pub welcome: bool,
    /// Broadcast ` .... NICK has joined.` to the other members when someone joins.
    pub join_notices: bool,
    /// Interpret text starting with `/` as a command (`/nick`, `/me`, `/who`, `/help`).
    /// When off, such text is an ordinary message.
    pub commands: bool,
    /// How many broadcast events the room keeps for joiners and resumes; 0 disables history.
    pub history: usize,
    /// Largest accepted message text, in bytes (UTF-8).
    pub max_message_bytes: usize,
    /// Per-member token bucket for text input; `None` turns rate limiting off.
    pub rate_limit: Option<RateLimit>,
    /// Most members the room admits at once; a join beyond it is refused.
    pub max_members: usize,
}

/// A token bucket: a member may send `burst` messages at once, refilled at `per_second`.
///
/// Every line a member sends costs a token, whether it is accepted or refused (answering bad
/// input costs work too, so a flood of it is limited like any other). Arithmetic is exact
/// (integer milli-tokens), so a room stays deterministic. A member's bucket starts full when
/// it joins; limiting reconnect floods is the shell's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Bucket capacity: how many messages may be sent back to back.
    pub burst: u32,
    /// Refill rate in messages per second.
    pub per_second: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 20,
            per_second: 10,
        }
    }
}

impl Default for RoomConfig {
    /// Every feature on: welcome, join notices, commands, 100 events of history,
    /// 4096-byte messages, 20-message bursts refilled at 10 per second, no member cap.
    fn default() -> Self {
        RoomConfig {
            welcome: true,
            join_notices: true,
            commands: true,
            history: 100,
            max_message_bytes: 4096,
            rate_limit: Some(RateLimit::default()),
            max_members: usize::MAX,
        }
    }
}

impl RoomConfig {
    /// The tutorial's exact behaviour: no welcome, no join notices, no commands, no history.
    /// Members receive only `NICK: TEXT` and ` .... NICK has left.` lines; the limits on bad
    /// input (size, control characters, rate) still apply and answer with an error line.
    pub fn seed() -> Self {
        RoomConfig {
            welcome: false,
            join_notices: false,
            commands: false,
            history: 0,
            ..RoomConfig::default()
        }
    }
}
