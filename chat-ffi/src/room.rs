//! The room handle: configuration, construction, inputs and getters.

use crate::boundary::{text, tri, write_out};
use crate::{chat_status, ffi_panic_boundary};
use chat_core::{ConnId, Input, Output, RateLimit, Room, RoomConfig};
use std::ffi::c_char;

/// Longest nickname in bytes; a buffer of CHAT_MAX_NICK_LEN + 1 always fits chat_room_nick().
pub const CHAT_MAX_NICK_LEN: usize = 32;
const _: () = assert!(CHAT_MAX_NICK_LEN == chat_core::MAX_NICK_LEN);

/// How a room behaves. Fill it with chat_config_default() or chat_config_seed(), then change
/// fields. The room copies it; the struct can be reused or freed after chat_room_new().
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct chat_config {
    /// Send a joiner a welcome line (" .... you are NICK ...").
    pub welcome: bool,
    /// Tell the other members when someone joins.
    pub join_notices: bool,
    /// Treat text starting with '/' as a command (/nick, /me, /who, /help).
    pub commands: bool,
    /// Broadcast events kept for joiners and resumes; 0 keeps none.
    pub history: usize,
    /// Largest accepted message, in bytes; at least 1.
    pub max_message_bytes: usize,
    /// Token bucket size: messages a member may send back to back. At least 1 when
    /// rate_per_second is not 0.
    pub rate_burst: u32,
    /// Token refill per second; 0 turns rate limiting off.
    pub rate_per_second: u32,
    /// Most members at once; at least 1 (SIZE_MAX for no limit).
    pub max_members: usize,
}

impl From<&RoomConfig> for chat_config {
    fn from(c: &RoomConfig) -> Self {
        chat_config {
            welcome: c.welcome,
            join_notices: c.join_notices,
            commands: c.commands,
            history: c.history,
            max_message_bytes: c.max_message_bytes,
            rate_burst: c.rate_limit.map_or(0, |r| r.burst),
            rate_per_second: c.rate_limit.map_or(0, |r| r.per_second),
            max_members: c.max_members,
        }
    }
}

impl TryFrom<&chat_config> for RoomConfig {
    type Error = chat_status;

    fn try_from(c: &chat_config) -> Result<Self, chat_status> {
        let rate_limit = match (c.rate_burst, c.rate_per_second) {
            (_, 0) => None,
            (0, _) => return Err(chat_status::InvalidConfig),
            (burst, per_second) => Some(RateLimit { burst, per_second }),
        };
        if c.max_message_bytes == 0 || c.max_members == 0 {
            return Err(chat_status::InvalidConfig);
        }
        Ok(RoomConfig {
            welcome: c.welcome,
            join_notices: c.join_notices,
            commands: c.commands,
            history: c.history,
            max_message_bytes: c.max_message_bytes,
            rate_limit,
            max_members: c.max_members,
        })
    }
}

/// Writes the full-featured defaults to `*out`: welcome, join notices, commands, 100 events
/// of history, 4096-byte messages, bursts of 20 refilled at 10 per second, no member limit.
///
/// `out` is caller-owned and written only on success.
#[no_mangle]
pub extern "C" fn chat_config_default(out: *mut chat_config) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: `out` is NULL (checked) or a caller-owned chat_config, as documented.
        tri!(unsafe { write_out(out, chat_config::from(&RoomConfig::default())) });
        chat_status::Ok
    }
}

/// Writes the tutorial's exact behaviour to `*out`: no welcome, no join notices, no
/// commands, no history; members see only "NICK: TEXT" and " .... NICK has left." lines.
/// The size and rate limits stay on.
///
/// `out` is caller-owned and written only on success.
#[no_mangle]
pub extern "C" fn chat_config_seed(out: *mut chat_config) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: `out` is NULL (checked) or a caller-owned chat_config, as documented.
        tri!(unsafe { write_out(out, chat_config::from(&RoomConfig::seed())) });
        chat_status::Ok
    }
}

/// A chat room: members, nicknames, history and the queue of outputs to deliver.
///
/// Opaque: create with chat_room_new(), destroy with chat_room_free(). Not locked: use it
/// from one thread at a time.
#[allow(non_camel_case_types)]
pub struct chat_room {
    pub(crate) room: Room,
    /// The output handed out by the last poll; the views in chat_output point into it.
    pub(crate) current: Option<Output>,
    /// The rendered seed line of `current`, NUL-terminated.
    pub(crate) line: String,
}

/// Turns a C room pointer into a shared reference.
///
/// # Safety
/// Unless NULL, `room` must come from chat_room_new() and not be freed.
unsafe fn room_ref<'a>(room: *const chat_room) -> Result<&'a chat_room, chat_status> {
    // SAFETY: NULL becomes None; otherwise the caller promises a live room.
    unsafe { room.as_ref() }.ok_or(chat_status::NullParameter)
}

/// Turns a C room pointer into an exclusive reference.
///
/// # Safety
/// Unless NULL, `room` must come from chat_room_new(), not be freed and not be in use by
/// another call (the header's one-thread-at-a-time rule).
pub(crate) unsafe fn room_mut<'a>(room: *mut chat_room) -> Result<&'a mut chat_room, chat_status> {
    // SAFETY: NULL becomes None; otherwise the caller promises a live room used by nobody else.
    unsafe { room.as_mut() }.ok_or(chat_status::NullParameter)
}

impl chat_room {
    /// Applies an input. Any previous output views are invalidated first, as documented.
    fn handle(&mut self, now_ms: u64, input: Input<'_>) -> chat_status {
        self.current = None;
        match self.room.handle(now_ms, input) {
            Ok(()) => chat_status::Ok,
            Err(e) => e.into(),
        }
    }
}

/// Creates an empty room and writes its handle to `*out`.
///
/// `config` is only read (copied); NULL means chat_config_default(). `seed` seeds the random
/// nicknames: the same config, seed and calls give the same outputs. The room belongs to the
/// caller, who must pass it to chat_room_free() exactly once. On error `*out` is untouched.
#[no_mangle]
pub extern "C" fn chat_room_new(
    config: *const chat_config,
    seed: u64,
    out: *mut *mut chat_room,
) -> chat_status {
    ffi_panic_boundary! {
        if out.is_null() {
            return chat_status::NullParameter;
        }
        // SAFETY: NULL is handled; otherwise the caller passes a readable chat_config.
        let config = match unsafe { config.as_ref() } {
            None => RoomConfig::default(),
            Some(c) => tri!(RoomConfig::try_from(c)),
        };
        let room = Box::new(chat_room {
            room: Room::new(config, seed),
            current: None,
            line: String::new(),
        });
        // SAFETY: `out` is non-NULL and the caller promises it is writable.
        tri!(unsafe { write_out(out, Box::into_raw(room)) });
        chat_status::Ok
    }
}

/// Destroys a room made by chat_room_new(). NULL is a no-op. The pointer, and every view
/// taken from the room, is invalid afterwards; freeing the same room twice is undefined.
#[no_mangle]
pub extern "C" fn chat_room_free(room: *mut chat_room) {
    ffi_panic_boundary! {
        if !room.is_null() {
            // SAFETY: a non-NULL `room` came from Box::into_raw in chat_room_new() and the
            // caller gives it back exactly once.
            drop(unsafe { Box::from_raw(room) });
        }
    }
}

/// Connection `conn` joins the room at time `now_ms`.
///
/// `conn` is any number the caller picks to name the connection (unique among members).
/// `nick`/`nick_len`: an optional requested nickname (NULL with 0 for a random one); if it
/// is invalid or taken the member still joins, with a random nickname and an error line.
/// `resume_after`: NULL for a first join (the whole history is replayed), or the last seq
/// the client saw before it reconnected (only later events are replayed, with a gap line
/// for what history no longer holds). Both pointers are only read during the call.
///
/// Returns CHAT_STATUS_DUPLICATE_CONN, CHAT_STATUS_ROOM_FULL or CHAT_STATUS_INVALID_UTF8
/// (the nickname bytes) without joining.
#[no_mangle]
pub extern "C" fn chat_room_join(
    room: *mut chat_room,
    now_ms: u64,
    conn: u64,
    nick: *const c_char,
    nick_len: usize,
    resume_after: *const u64,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room it is not using elsewhere.
        let room = tri!(unsafe { room_mut(room) });
        let nick = if nick.is_null() && nick_len == 0 {
            None
        } else {
            // SAFETY: the caller promises `nick_len` readable bytes at `nick`.
            Some(tri!(unsafe { text(nick, nick_len) }))
        };
        // SAFETY: NULL means "no resume point"; otherwise the caller passes a readable u64.
        let resume_after = unsafe { resume_after.as_ref() }.copied();
        room.handle(now_ms, Input::Join { conn: ConnId(conn), nick, resume_after })
    }
}

/// Member `conn` sends `len` bytes of UTF-8 text at `ptr` at time `now_ms` (not
/// NUL-terminated; NULL only with 0). The text is only read during the call.
///
/// A chat message is broadcast; with commands on, `/nick`, `/me`, `/who` and `/help` are
/// applied and `//x` sends "/x". A refused input returns the rule it broke (too long, rate
/// limited, ...) and queues an error line for the sender, except CHAT_STATUS_INVALID_UTF8,
/// which changes nothing: the caller decides what invalid bytes deserve.
#[no_mangle]
pub extern "C" fn chat_room_message(
    room: *mut chat_room,
    now_ms: u64,
    conn: u64,
    ptr: *const c_char,
    len: usize,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room it is not using elsewhere.
        let room = tri!(unsafe { room_mut(room) });
        // SAFETY: the caller promises `len` readable bytes at `ptr`.
        let text = tri!(unsafe { text(ptr, len) });
        room.handle(now_ms, Input::Message { conn: ConnId(conn), text })
    }
}

/// Member `conn` leaves at time `now_ms` (closed, timed out, kicked); the others are told.
/// Returns CHAT_STATUS_UNKNOWN_CONN if `conn` is not a member.
#[no_mangle]
pub extern "C" fn chat_room_leave(room: *mut chat_room, now_ms: u64, conn: u64) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room it is not using elsewhere.
        let room = tri!(unsafe { room_mut(room) });
        room.handle(now_ms, Input::Leave { conn: ConnId(conn) })
    }
}

/// Copies member `conn`'s nickname into the caller's `buf` of `buf_len` bytes, followed by
/// a NUL, and writes its length (without the NUL) to `*out_len`.
///
/// A buffer of CHAT_MAX_NICK_LEN + 1 bytes always fits; a smaller one that does not fit
/// returns CHAT_STATUS_INSUFFICIENT_SIZE and writes nothing.
#[no_mangle]
pub extern "C" fn chat_room_nick(
    room: *const chat_room,
    conn: u64,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room.
        let room = tri!(unsafe { room_ref(room) });
        if buf.is_null() || out_len.is_null() {
            return chat_status::NullParameter;
        }
        let Some(nick) = room.room.nick(ConnId(conn)) else {
            return chat_status::UnknownConn;
        };
        let nick = nick.as_bytes();
        if buf_len < nick.len() + 1 {
            return chat_status::InsufficientSize;
        }
        // SAFETY: `buf` is non-NULL and the caller promises `buf_len` writable bytes, of
        // which we write nick.len() + 1 <= buf_len; a nickname cannot overlap C's buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(nick.as_ptr(), buf.cast::<u8>(), nick.len());
            buf.add(nick.len()).write(0);
        }
        // SAFETY: non-NULL (checked above) and writable, as documented.
        tri!(unsafe { write_out(out_len, nick.len()) });
        chat_status::Ok
    }
}

/// Writes to `*out_conn` the member whose nickname is `nick` (`nick_len` bytes, compared
/// ignoring ASCII case). Returns CHAT_STATUS_UNKNOWN_CONN if nobody has it.
#[no_mangle]
pub extern "C" fn chat_room_conn_of(
    room: *const chat_room,
    nick: *const c_char,
    nick_len: usize,
    out_conn: *mut u64,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room.
        let room = tri!(unsafe { room_ref(room) });
        // SAFETY: the caller promises `nick_len` readable bytes at `nick`.
        let nick = tri!(unsafe { text(nick, nick_len) });
        if out_conn.is_null() {
            return chat_status::NullParameter;
        }
        let Some(conn) = room.room.conn_of(nick) else {
            return chat_status::UnknownConn;
        };
        // SAFETY: NULL is checked; otherwise caller-owned and writable.
        tri!(unsafe { write_out(out_conn, conn.0) });
        chat_status::Ok
    }
}

/// Writes whether `conn` is a member to `*out`.
#[no_mangle]
pub extern "C" fn chat_room_is_member(
    room: *const chat_room,
    conn: u64,
    out: *mut bool,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room.
        let room = tri!(unsafe { room_ref(room) });
        // SAFETY: NULL is checked; otherwise caller-owned and writable.
        tri!(unsafe { write_out(out, room.room.is_member(ConnId(conn))) });
        chat_status::Ok
    }
}

/// Writes the number of members to `*out`.
#[no_mangle]
pub extern "C" fn chat_room_member_count(room: *const chat_room, out: *mut usize) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room.
        let room = tri!(unsafe { room_ref(room) });
        // SAFETY: NULL is checked; otherwise caller-owned and writable.
        tri!(unsafe { write_out(out, room.room.member_count()) });
        chat_status::Ok
    }
}

/// Writes the sequence number of the room's latest broadcast event (0 before the first) to
/// `*out`; a client that saw it resumes with it as `resume_after`.
#[no_mangle]
pub extern "C" fn chat_room_last_seq(room: *const chat_room, out: *mut u64) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room.
        let room = tri!(unsafe { room_ref(room) });
        // SAFETY: NULL is checked; otherwise caller-owned and writable.
        tri!(unsafe { write_out(out, room.room.last_seq()) });
        chat_status::Ok
    }
}

/// The library version ("MAJOR.MINOR.PATCH"), static and NUL-terminated; never NULL.
#[no_mangle]
pub extern "C" fn chat_version() -> *const c_char {
    ffi_panic_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    }
}
