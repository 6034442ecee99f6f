//! Status codes: what every fallible function returns.

use crate::ffi_panic_boundary;
use std::ffi::{c_char, CStr};

/// The result of a call. `CHAT_STATUS_OK` is 0; the numbers never change meaning.
///
/// Statuses that name a chat rule (rate limited, nickname taken, ...) come with an
/// explanatory `CHAT_OUTPUT_KIND_ERROR` output addressed to the sender, waiting in
/// chat_room_poll_output().
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum chat_status {
    /// Success.
    Ok = 0,
    /// chat_room_poll_output(): no output is waiting (the queue is drained).
    NoOutput = 1,
    /// A required pointer was NULL (or a NULL buffer came with a non-zero length).
    NullParameter = 2,
    /// Text was not valid UTF-8; nothing was changed.
    InvalidUtf8 = 3,
    /// A message is longer than the room's max_message_bytes (or a length is impossibly large).
    TooLong = 4,
    /// The connection id is not a member of the room.
    UnknownConn = 5,
    /// The connection id is already a member of the room.
    DuplicateConn = 6,
    /// The member's rate limit is exhausted; retry later.
    RateLimited = 7,
    /// The caller's buffer is too small for the result.
    InsufficientSize = 8,
    /// An internal bug was caught at the boundary; the room may be inconsistent, free it.
    Panic = 9,
    /// A chat_config field is out of range (zero max_message_bytes or max_members, or a rate
    /// limit with zero burst).
    InvalidConfig = 10,
    /// The room has max_members members.
    RoomFull = 11,
    /// The message is empty or only whitespace.
    EmptyMessage = 12,
    /// The message holds a control character other than tab and newline.
    ControlCharacter = 13,
    /// A nickname is not 1-32 of [A-Za-z0-9_-] (`/nick`).
    InvalidNick = 14,
    /// A nickname is held by another member, ignoring ASCII case (`/nick`).
    NickTaken = 15,
    /// `/nick` to the nickname the member already has.
    NickUnchanged = 16,
    /// A `/command` the room does not know.
    UnknownCommand = 17,
    /// A command without its argument (`/me`, `/nick`).
    MissingArgument = 18,
    /// An index is past the end (chat_room_output_member()).
    OutOfRange = 19,
    /// The room refused the input for a reason this version of the header does not name.
    Refused = 20,
}

impl chat_status {
    /// The static, NUL-terminated message for this status.
    pub fn message(self) -> &'static CStr {
        match self {
            chat_status::Ok => c"ok",
            chat_status::NoOutput => c"no output waiting",
            chat_status::NullParameter => c"a required pointer was NULL",
            chat_status::InvalidUtf8 => c"text is not valid UTF-8",
            chat_status::TooLong => c"message too long",
            chat_status::UnknownConn => c"unknown connection: not a member of this room",
            chat_status::DuplicateConn => c"connection is already a member of this room",
            chat_status::RateLimited => c"rate limit exceeded; slow down",
            chat_status::InsufficientSize => c"buffer too small",
            chat_status::Panic => c"internal panic caught at the C boundary",
            chat_status::InvalidConfig => c"invalid room configuration",
            chat_status::RoomFull => c"the room is full",
            chat_status::EmptyMessage => c"empty message ignored",
            chat_status::ControlCharacter => {
                c"control characters are not allowed (only tab and newline)"
            }
            chat_status::InvalidNick => c"invalid nickname: use 1-32 letters, digits, '_' or '-'",
            chat_status::NickTaken => c"nickname is taken",
            chat_status::NickUnchanged => c"that is already your nickname",
            chat_status::UnknownCommand => c"unknown command; type /help",
            chat_status::MissingArgument => c"missing argument",
            chat_status::OutOfRange => c"index out of range",
            chat_status::Refused => c"the room refused the input",
        }
    }

    /// The status with this number, if there is one.
    pub fn from_u32(n: u32) -> Option<chat_status> {
        use chat_status::*;
        const ALL: [chat_status; 21] = [
            Ok,
            NoOutput,
            NullParameter,
            InvalidUtf8,
            TooLong,
            UnknownConn,
            DuplicateConn,
            RateLimited,
            InsufficientSize,
            Panic,
            InvalidConfig,
            RoomFull,
            EmptyMessage,
            ControlCharacter,
            InvalidNick,
            NickTaken,
            NickUnchanged,
            UnknownCommand,
            MissingArgument,
            OutOfRange,
            Refused,
        ];
        ALL.get(usize::try_from(n).ok()?).copied()
    }
}

impl From<chat_core::Error> for chat_status {
    fn from(e: chat_core::Error) -> Self {
        use chat_core::Error as E;
        match e {
            E::NotJoined => chat_status::UnknownConn,
            E::AlreadyJoined => chat_status::DuplicateConn,
            E::RoomFull => chat_status::RoomFull,
            E::EmptyMessage => chat_status::EmptyMessage,
            E::MessageTooLong => chat_status::TooLong,
            E::ControlCharacter => chat_status::ControlCharacter,
            E::RateLimited => chat_status::RateLimited,
            E::InvalidNick => chat_status::InvalidNick,
            E::NickTaken => chat_status::NickTaken,
            E::NickUnchanged => chat_status::NickUnchanged,
            E::UnknownCommand => chat_status::UnknownCommand,
            E::MissingArgument => chat_status::MissingArgument,
            _ => chat_status::Refused,
        }
    }
}

/// A static, NUL-terminated English message for any status number, known or not.
///
/// The pointer is never NULL and must not be freed.
#[no_mangle]
pub extern "C" fn chat_status_str(status: u32) -> *const c_char {
    ffi_panic_boundary! {
        match chat_status::from_u32(status) {
            Some(s) => s.message().as_ptr(),
            None => c"unknown status".as_ptr(),
        }
    }
}
