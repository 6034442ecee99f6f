//! Why the room refused an input.

use std::fmt;

/// The rule an input broke. [`Room::handle`](crate::Room::handle) returns it, and the sender
/// also gets an [`OutputKind::Error`](crate::OutputKind::Error) line with a specific reason
/// (except for a leave of an unknown connection: there is nobody to tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The connection is not a member of the room.
    NotJoined,
    /// The connection is already a member of the room.
    AlreadyJoined,
    /// The room has [`max_members`](crate::RoomConfig::max_members) members.
    RoomFull,
    /// The text is empty or only whitespace.
    EmptyMessage,
    /// The text is longer than [`max_message_bytes`](crate::RoomConfig::max_message_bytes).
    MessageTooLong,
    /// The text holds a C0 control character other than tab and newline.
    ControlCharacter,
    /// The member's token bucket is empty.
    RateLimited,
    /// A nickname is not 1-32 of `[A-Za-z0-9_-]`.
    InvalidNick,
    /// A nickname is held by another member (ignoring ASCII case).
    NickTaken,
    /// `/nick` to the nickname the member already has.
    NickUnchanged,
    /// A `/command` the room does not know.
    UnknownCommand,
    /// A command without its argument (`/me`, `/nick`).
    MissingArgument,
}

impl Error {
    /// A generic one-line reason; error outputs carry a more specific one.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::NotJoined => "not joined to this room",
            Error::AlreadyJoined => "already joined to this room",
            Error::RoomFull => "the room is full",
            Error::EmptyMessage => "empty message ignored",
            Error::MessageTooLong => "message too long",
            Error::ControlCharacter => "control characters are not allowed (only tab and newline)",
            Error::RateLimited => "rate limit exceeded; slow down",
            Error::InvalidNick => "invalid nickname: use 1-32 letters, digits, '_' or '-'",
            Error::NickTaken => "nickname is taken",
            Error::NickUnchanged => "that is already your nickname",
            Error::UnknownCommand => "unknown command; type /help",
            Error::MissingArgument => "missing argument",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}
