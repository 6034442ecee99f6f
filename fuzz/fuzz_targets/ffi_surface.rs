//! `ffi_surface`: arbitrary sequences of calls to every exported `extern "C"` function of
//! chat-ffi (linked as an rlib), the way a careless but not malicious C caller would make
//! them: NULL or real pointers, random bytes (invalid UTF-8 included), lengths up to the real
//! buffer's, tiny output buffers, unknown connection ids, several rooms at once.
//!
//! Buffers are exact-size heap allocations, so AddressSanitizer catches any read or write
//! past what a call was lent. The only lengths longer than the buffer are the impossible
//! ones (> isize::MAX) the library promises to reject without reading.
//!
//! Checked on every call:
//! - the status is a known number and never CHAT_STATUS_PANIC;
//! - NULL where a pointer is required gives CHAT_STATUS_NULL_PARAMETER, an impossible length
//!   CHAT_STATUS_TOO_LONG, non-UTF-8 text CHAT_STATUS_INVALID_UTF8;
//! - output parameters are written only on CHAT_STATUS_OK (sentinels elsewhere stay intact);
//! - join, leave, is_member and member_count agree with a shadow member set per room, and
//!   a join's status (ok, duplicate, room full) is the one the shadow predicts;
//! - every chat_output has in-range enum values and string views that are non-NULL, valid
//!   UTF-8 of the stated length (the line also NUL-terminated), and they stay readable
//!   until the room's next mutable call;
//! - chat_status_str never returns NULL, for any number.
#![no_main]

use std::collections::BTreeSet;
use std::ffi::{c_char, CStr};
use std::mem::MaybeUninit;
use std::ptr;

use arbitrary::{Arbitrary, Unstructured};
use chat_ffi::*;
use libfuzzer_sys::fuzz_target;

/// Rooms alive at once.
const SLOTS: usize = 3;
/// Connection ids are `0..CONNS` (a few more than fit small rooms; some never join).
const CONNS: u64 = 6;
/// The highest status number the header defines.
const MAX_STATUS: u32 = 20;

/// A caller's byte buffer and the length it claims.
#[derive(Arbitrary, Debug)]
enum Buf {
    /// NULL with length 0: "nothing" (no nickname, empty text).
    Null,
    /// NULL with a non-zero length.
    NullWithLen(u16),
    /// A real buffer, its whole length.
    Bytes(Vec<u8>),
    /// Valid UTF-8 (often a nickname or a command).
    Text(String),
    /// A real buffer, claiming only its first `n % (len + 1)` bytes.
    Prefix(Vec<u8>, u16),
    /// A real non-NULL pointer with an impossible length (> isize::MAX): rejected unread.
    Huge(u32),
}

/// A buffer made real: exact-size, so ASan sees any access past `len`.
struct RealBuf {
    _keep: Option<Box<[u8]>>,
    ptr: *const c_char,
    len: usize,
    /// What the library should answer for this buffer before looking at its content.
    fault: Option<chat_status>,
    /// The bytes, when the buffer is readable.
    bytes: Vec<u8>,
}

impl Buf {
    fn make(&self) -> RealBuf {
        let real = |bytes: &[u8], len: usize| {
            let keep: Box<[u8]> = bytes.into();
            RealBuf {
                ptr: keep.as_ptr().cast(),
                _keep: Some(keep),
                len,
                fault: None,
                bytes: bytes[..len].to_vec(),
            }
        };
        match self {
            Buf::Null => RealBuf {
                _keep: None,
                ptr: ptr::null(),
                len: 0,
                fault: None,
                bytes: Vec::new(),
            },
            Buf::NullWithLen(n) => RealBuf {
                _keep: None,
                ptr: ptr::null(),
                len: usize::from(*n).max(1),
                fault: Some(chat_status::NullParameter),
                bytes: Vec::new(),
            },
            Buf::Bytes(b) => real(b, b.len()),
            Buf::Text(s) => real(s.as_bytes(), s.len()),
            Buf::Prefix(b, n) => real(b, usize::from(*n) % (b.len() + 1)),
            Buf::Huge(extra) => {
                let mut r = real(b"x", 0);
                r.len = (isize::MAX as usize).saturating_add(1 + *extra as usize);
                r.fault = Some(chat_status::TooLong);
                r
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ConfigSrc {
    /// `config` = NULL: the defaults.
    Null,
    Default,
    Seed,
    /// Small values (mostly valid).
    Small {
        flags: u8,
        history: u8,
        max_message_bytes: u8,
        rate_burst: u8,
        rate_per_second: u8,
        max_members: u8,
    },
    /// Any values, extremes included.
    Wild {
        flags: u8,
        history: u64,
        max_message_bytes: u64,
        rate_burst: u32,
        rate_per_second: u32,
        max_members: u64,
    },
}

/// Which room a call gets: NULL, or the room in a slot (skipped if the slot is empty, since
/// passing a freed room would be the caller's undefined behaviour, not the library's).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum RoomRef {
    Null,
    Slot(u8),
}

#[derive(Arbitrary, Debug)]
enum Call {
    ConfigDefault {
        null: bool,
    },
    ConfigSeed {
        null: bool,
    },
    RoomNew {
        slot: u8,
        config: ConfigSrc,
        seed: u64,
        null_out: bool,
    },
    RoomFree {
        room: RoomRef,
    },
    Join {
        room: RoomRef,
        conn: u8,
        nick: Buf,
        resume: Option<u64>,
    },
    Message {
        room: RoomRef,
        conn: u8,
        text: Buf,
    },
    Leave {
        room: RoomRef,
        conn: u8,
    },
    Poll {
        room: RoomRef,
        null_out: bool,
    },
    /// Polls until CHAT_STATUS_NO_OUTPUT (bounded), checking every output.
    Drain {
        room: RoomRef,
    },
    OutputMember {
        room: RoomRef,
        index: u8,
        null_out: bool,
    },
    Nick {
        room: RoomRef,
        conn: u8,
        buf_len: u8,
        null_buf: bool,
        null_out: bool,
    },
    ConnOf {
        room: RoomRef,
        nick: Buf,
        null_out: bool,
    },
    IsMember {
        room: RoomRef,
        conn: u8,
        null_out: bool,
    },
    MemberCount {
        room: RoomRef,
        null_out: bool,
    },
    LastSeq {
        room: RoomRef,
        null_out: bool,
    },
    StatusStr {
        n: u32,
    },
    Version,
    /// Time moves on (it never goes back in this target).
    Tick {
        ms: u16,
    },
    /// An id far outside `0..CONNS`.
    StrangerLeave {
        room: RoomRef,
        conn: u64,
    },
}

/// A live room and what the target knows about it.
struct Slot {
    room: *mut chat_room,
    max_members: usize,
    members: BTreeSet<u64>,
    last_seq: u64,
    /// The seq of the last live (not replayed) broadcast polled.
    polled_seq: u64,
    /// The last polled output, while its views are still valid (no mutable call since).
    view: Option<chat_output>,
}

struct Harness {
    slots: [Option<Slot>; SLOTS],
    now: u64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for slot in self.slots.iter_mut() {
            if let Some(s) = slot.take() {
                chat_room_free(s.room);
            }
        }
    }
}

/// The status as C sees it: a number.
fn check_status(s: chat_status, what: &str) -> chat_status {
    // SAFETY: chat_status is repr(u32); reading the raw number is what a C caller does.
    let n: u32 = unsafe { std::mem::transmute(s) };
    assert!(n <= MAX_STATUS, "{what}: status {n} out of range");
    assert_ne!(
        s,
        chat_status::Panic,
        "{what}: CHAT_STATUS_PANIC (an internal panic)"
    );
    s
}

fn check_cstr(p: *const c_char, what: &str) -> String {
    assert!(!p.is_null(), "{what} returned NULL");
    // SAFETY: documented as a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"))
        .to_owned()
}

/// A chat_str: non-NULL and `len` bytes of UTF-8.
fn check_view(v: chat_str, what: &str) -> String {
    assert!(!v.ptr.is_null(), "{what}: NULL view");
    assert!(v.len <= isize::MAX as usize, "{what}: impossible length");
    // SAFETY: the library promises `len` readable bytes at a non-NULL `ptr`; ASan checks it.
    let bytes = unsafe { std::slice::from_raw_parts(v.ptr.cast::<u8>(), v.len) };
    std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"))
        .to_owned()
}

/// Reads the raw u32 of a field the way C would, before trusting it as a Rust enum.
fn raw_u32<T>(field: *const T) -> u32 {
    // SAFETY: every enum in chat_output is repr(u32) and the struct was fully written.
    unsafe { field.cast::<u32>().read() }
}

/// Checks one polled output (still fresh: views valid).
fn check_output(out: *const chat_output) -> chat_output {
    // The enums' numbers first, as C reads them.
    // SAFETY: `out` was written by chat_room_poll_output (status OK).
    let (audience, kind, error) = unsafe {
        (
            raw_u32(ptr::addr_of!((*out).audience)),
            raw_u32(ptr::addr_of!((*out).kind)),
            raw_u32(ptr::addr_of!((*out).error)),
        )
    };
    assert!(audience <= 2, "audience {audience}");
    assert!(kind <= 9, "kind {kind}");
    assert!(error <= MAX_STATUS && error != 9, "error {error}");
    // SAFETY: all fields hold valid values (checked above for the enums).
    let o = unsafe { out.read() };
    check_views(&o);
    let broadcast = matches!(
        o.kind,
        chat_output_kind::Message
            | chat_output_kind::Me
            | chat_output_kind::Join
            | chat_output_kind::Leave
            | chat_output_kind::Nick
    );
    assert_eq!(o.seq != 0, broadcast, "seq {} on {:?}", o.seq, o.kind);
    assert_eq!(
        o.error != chat_status::Ok,
        o.kind == chat_output_kind::Error
    );
    if o.audience == chat_audience::Everyone {
        assert_eq!(o.audience_conn, 0);
    }
    assert_eq!(
        o.lost != 0,
        o.kind == chat_output_kind::Gap,
        "lost {}",
        o.lost
    );
    o
}

/// The views of an output: readable, UTF-8, the line NUL-terminated with no NUL inside.
fn check_views(o: &chat_output) {
    let nick = check_view(o.nick, "nick");
    check_view(o.old_nick, "old_nick");
    let text = check_view(o.text, "text");
    let line = check_view(o.line, "line");
    assert!(nick.len() <= CHAT_MAX_NICK_LEN, "nick {nick:?}");
    // SAFETY: the line is documented as NUL-terminated: one more readable byte.
    let nul = unsafe { o.line.ptr.add(o.line.len).read() };
    assert_eq!(nul, 0, "line not NUL-terminated");
    assert!(!line.contains('\0'), "NUL inside the line {line:?}");
    if o.kind == chat_output_kind::Message {
        assert_eq!(line, format!("{nick}: {text}"));
    }
}

impl Harness {
    fn slot(&mut self, r: RoomRef) -> Option<Option<usize>> {
        match r {
            RoomRef::Null => Some(None),
            RoomRef::Slot(i) => {
                let i = usize::from(i) % SLOTS;
                self.slots[i].is_some().then_some(Some(i))
            }
        }
    }

    fn room_ptr(&self, i: Option<usize>) -> *mut chat_room {
        i.and_then(|i| self.slots[i].as_ref())
            .map_or(ptr::null_mut(), |s| s.room)
    }

    /// A mutable call on room `i` ends the life of its output views.
    fn invalidate(&mut self, i: Option<usize>) {
        if let Some(s) = i.and_then(|i| self.slots[i].as_mut()) {
            s.view = None;
        }
    }

    fn call(&mut self, call: &Call) {
        match call {
            Call::ConfigDefault { null } | Call::ConfigSeed { null } => {
                let f = match call {
                    Call::ConfigDefault { .. } => chat_config_default,
                    _ => chat_config_seed,
                };
                if *null {
                    assert_eq!(
                        check_status(f(ptr::null_mut()), "config"),
                        chat_status::NullParameter
                    );
                } else {
                    let mut c = MaybeUninit::<chat_config>::uninit();
                    assert_eq!(check_status(f(c.as_mut_ptr()), "config"), chat_status::Ok);
                    // SAFETY: written on OK.
                    let c = unsafe { c.assume_init() };
                    assert!(c.max_message_bytes > 0 && c.max_members > 0 && c.rate_burst > 0);
                }
            }
            Call::RoomNew {
                slot,
                config,
                seed,
                null_out,
            } => {
                let i = usize::from(*slot) % SLOTS;
                let cfg = match config {
                    ConfigSrc::Null => None,
                    ConfigSrc::Default | ConfigSrc::Seed => {
                        let mut c = MaybeUninit::<chat_config>::uninit();
                        let s = if matches!(config, ConfigSrc::Default) {
                            chat_config_default(c.as_mut_ptr())
                        } else {
                            chat_config_seed(c.as_mut_ptr())
                        };
                        assert_eq!(s, chat_status::Ok);
                        // SAFETY: written on OK.
                        Some(unsafe { c.assume_init() })
                    }
                    ConfigSrc::Small {
                        flags,
                        history,
                        max_message_bytes,
                        rate_burst,
                        rate_per_second,
                        max_members,
                    } => Some(chat_config {
                        welcome: flags & 1 != 0,
                        join_notices: flags & 2 != 0,
                        commands: flags & 4 != 0,
                        history: usize::from(*history),
                        max_message_bytes: usize::from(*max_message_bytes),
                        rate_burst: u32::from(*rate_burst % 8),
                        rate_per_second: u32::from(*rate_per_second % 8),
                        max_members: usize::from(*max_members % 8),
                    }),
                    ConfigSrc::Wild {
                        flags,
                        history,
                        max_message_bytes,
                        rate_burst,
                        rate_per_second,
                        max_members,
                    } => Some(chat_config {
                        welcome: flags & 1 != 0,
                        join_notices: flags & 2 != 0,
                        commands: flags & 4 != 0,
                        history: *history as usize,
                        max_message_bytes: *max_message_bytes as usize,
                        rate_burst: *rate_burst,
                        rate_per_second: *rate_per_second,
                        max_members: *max_members as usize,
                    }),
                };
                let cfg_ptr = cfg
                    .as_ref()
                    .map_or(ptr::null(), |c| c as *const chat_config);
                let invalid = cfg.is_some_and(|c| {
                    c.max_message_bytes == 0
                        || c.max_members == 0
                        || (c.rate_per_second != 0 && c.rate_burst == 0)
                });
                const SENTINEL: *mut chat_room = 0x5a5a_5a50 as *mut chat_room;
                let mut out = SENTINEL;
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out as *mut _
                };
                let s = check_status(chat_room_new(cfg_ptr, *seed, out_ptr), "chat_room_new");
                let want = if *null_out {
                    chat_status::NullParameter
                } else if invalid {
                    chat_status::InvalidConfig
                } else {
                    chat_status::Ok
                };
                assert_eq!(s, want, "chat_room_new({cfg:?})");
                if s != chat_status::Ok {
                    assert_eq!(out, SENTINEL, "chat_room_new wrote *out on error");
                    return;
                }
                assert!(!out.is_null());
                if let Some(old) = self.slots[i].take() {
                    chat_room_free(old.room);
                }
                self.slots[i] = Some(Slot {
                    room: out,
                    max_members: cfg.map_or(usize::MAX, |c| c.max_members),
                    members: BTreeSet::new(),
                    last_seq: 0,
                    polled_seq: 0,
                    view: None,
                });
            }
            Call::RoomFree { room } => match *room {
                RoomRef::Null => chat_room_free(ptr::null_mut()),
                RoomRef::Slot(i) => {
                    if let Some(s) = self.slots[usize::from(i) % SLOTS].take() {
                        chat_room_free(s.room);
                    }
                }
            },
            Call::Join {
                room,
                conn,
                nick,
                resume,
            } => {
                let Some(i) = self.slot(*room) else { return };
                let conn = u64::from(*conn) % CONNS;
                let nick = nick.make();
                let resume_ptr = resume.as_ref().map_or(ptr::null(), |r| r as *const u64);
                let p = self.room_ptr(i);
                self.invalidate(i);
                let s = chat_room_join(p, self.now, conn, nick.ptr, nick.len, resume_ptr);
                check_status(s, "chat_room_join");
                let Some(i) = i else {
                    assert_eq!(s, chat_status::NullParameter);
                    return;
                };
                let slot = self.slots[i].as_mut().expect("live");
                let want = if let Some(fault) = nick.fault {
                    fault
                } else if !nick.ptr.is_null() && std::str::from_utf8(&nick.bytes).is_err() {
                    chat_status::InvalidUtf8
                } else if slot.members.contains(&conn) {
                    chat_status::DuplicateConn
                } else if slot.members.len() >= slot.max_members {
                    chat_status::RoomFull
                } else {
                    chat_status::Ok
                };
                assert_eq!(s, want, "join {conn} nick {:?}", nick.bytes);
                if s == chat_status::Ok {
                    slot.members.insert(conn);
                }
            }
            Call::Message { room, conn, text } => {
                let Some(i) = self.slot(*room) else { return };
                let conn = u64::from(*conn) % CONNS;
                let text = text.make();
                let p = self.room_ptr(i);
                self.invalidate(i);
                let s = check_status(
                    chat_room_message(p, self.now, conn, text.ptr, text.len),
                    "chat_room_message",
                );
                let Some(i) = i else {
                    assert_eq!(s, chat_status::NullParameter);
                    return;
                };
                let slot = self.slots[i].as_ref().expect("live");
                if let Some(fault) = text.fault {
                    assert_eq!(s, fault);
                } else if std::str::from_utf8(&text.bytes).is_err() {
                    assert_eq!(s, chat_status::InvalidUtf8);
                } else if !slot.members.contains(&conn) {
                    assert_eq!(s, chat_status::UnknownConn);
                } else {
                    use chat_status::*;
                    assert!(
                        matches!(
                            s,
                            Ok | RateLimited
                                | TooLong
                                | EmptyMessage
                                | ControlCharacter
                                | InvalidNick
                                | NickTaken
                                | NickUnchanged
                                | UnknownCommand
                                | MissingArgument
                        ),
                        "message from a member: {s:?}"
                    );
                }
            }
            Call::Leave { room, conn } => self.leave(*room, u64::from(*conn) % CONNS),
            Call::StrangerLeave { room, conn } => self.leave(*room, conn.saturating_add(CONNS)),
            Call::Poll { room, null_out } => {
                let Some(i) = self.slot(*room) else { return };
                self.poll(i, *null_out);
            }
            Call::Drain { room } => {
                let Some(i @ Some(_)) = self.slot(*room) else {
                    return;
                };
                for _ in 0..1000 {
                    if self.poll(i, false) == chat_status::NoOutput {
                        break;
                    }
                }
            }
            Call::OutputMember {
                room,
                index,
                null_out,
            } => {
                let Some(i) = self.slot(*room) else { return };
                let p = self.room_ptr(i);
                const SENTINEL: usize = 0x5a5a_5a5a;
                let mut out = chat_str {
                    ptr: ptr::null(),
                    len: SENTINEL,
                };
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out as *mut _
                };
                let s = check_status(
                    chat_room_output_member(p, usize::from(*index), out_ptr),
                    "chat_room_output_member",
                );
                if i.is_none() || *null_out {
                    assert_eq!(s, chat_status::NullParameter);
                    return;
                }
                assert!(
                    matches!(
                        s,
                        chat_status::Ok | chat_status::NoOutput | chat_status::OutOfRange
                    ),
                    "{s:?}"
                );
                if s == chat_status::Ok {
                    let nick = check_view(out, "output member");
                    assert!(chat_core::is_valid_nick(&nick), "member {nick:?}");
                } else {
                    assert_eq!(out.len, SENTINEL, "written on error");
                }
            }
            Call::Nick {
                room,
                conn,
                buf_len,
                null_buf,
                null_out,
            } => {
                let Some(i) = self.slot(*room) else { return };
                let conn = u64::from(*conn) % CONNS;
                let p = self.room_ptr(i);
                let len = usize::from(*buf_len) % 40;
                // Exact size: ASan sees a write past `len`.
                let mut buf = vec![0xA5u8; len].into_boxed_slice();
                let buf_ptr = if *null_buf {
                    ptr::null_mut()
                } else {
                    buf.as_mut_ptr().cast::<c_char>()
                };
                let mut out_len: usize = 0x5a5a;
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out_len as *mut usize
                };
                let s = check_status(
                    chat_room_nick(p, conn, buf_ptr, len, out_ptr),
                    "chat_room_nick",
                );
                let Some(i) = i else {
                    assert_eq!(s, chat_status::NullParameter);
                    return;
                };
                let member = self.slots[i]
                    .as_ref()
                    .expect("live")
                    .members
                    .contains(&conn);
                if *null_buf || *null_out {
                    assert_eq!(s, chat_status::NullParameter);
                } else if !member {
                    assert_eq!(s, chat_status::UnknownConn);
                } else if len > CHAT_MAX_NICK_LEN {
                    assert_eq!(s, chat_status::Ok, "a {len}-byte buffer always fits");
                } else {
                    assert!(
                        matches!(s, chat_status::Ok | chat_status::InsufficientSize),
                        "{s:?}"
                    );
                }
                if s == chat_status::Ok {
                    assert!(
                        out_len < len && out_len <= CHAT_MAX_NICK_LEN,
                        "out_len {out_len}"
                    );
                    assert_eq!(buf[out_len], 0, "not NUL-terminated");
                    let nick = std::str::from_utf8(&buf[..out_len]).expect("UTF-8 nickname");
                    assert!(chat_core::is_valid_nick(nick), "nickname {nick:?}");
                    assert!(
                        buf[out_len + 1..].iter().all(|&b| b == 0xA5),
                        "wrote past the NUL"
                    );
                    // And back: the nickname names this member.
                    let mut who = 0u64;
                    let s = chat_room_conn_of(p, nick.as_ptr().cast(), nick.len(), &mut who);
                    assert_eq!(check_status(s, "chat_room_conn_of"), chat_status::Ok);
                    assert_eq!(who, conn, "conn_of(nick({conn}))");
                } else {
                    assert!(buf.iter().all(|&b| b == 0xA5), "buffer written on error");
                    assert_eq!(out_len, 0x5a5a, "out_len written on error");
                }
            }
            Call::ConnOf {
                room,
                nick,
                null_out,
            } => {
                let Some(i) = self.slot(*room) else { return };
                let p = self.room_ptr(i);
                let nick = nick.make();
                let mut out: u64 = u64::MAX;
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out as *mut u64
                };
                let s = check_status(
                    chat_room_conn_of(p, nick.ptr, nick.len, out_ptr),
                    "chat_room_conn_of",
                );
                if i.is_none() {
                    assert_eq!(s, chat_status::NullParameter);
                } else if let Some(fault) = nick.fault {
                    assert_eq!(s, fault);
                } else if std::str::from_utf8(&nick.bytes).is_err() {
                    assert_eq!(s, chat_status::InvalidUtf8);
                } else if *null_out {
                    assert_eq!(s, chat_status::NullParameter);
                } else {
                    assert!(
                        matches!(s, chat_status::Ok | chat_status::UnknownConn),
                        "{s:?}"
                    );
                }
                if s == chat_status::Ok {
                    let members = &self.slots[i.expect("room")].as_ref().expect("live").members;
                    assert!(members.contains(&out), "conn_of gave non-member {out}");
                } else {
                    assert_eq!(out, u64::MAX, "written on error");
                }
            }
            Call::IsMember {
                room,
                conn,
                null_out,
            } => {
                let Some(i) = self.slot(*room) else { return };
                let conn = u64::from(*conn) % CONNS;
                let p = self.room_ptr(i);
                let mut out = MaybeUninit::<bool>::uninit();
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    out.as_mut_ptr()
                };
                let s = check_status(chat_room_is_member(p, conn, out_ptr), "chat_room_is_member");
                match i {
                    Some(i) if !*null_out => {
                        assert_eq!(s, chat_status::Ok);
                        // SAFETY: written on OK.
                        let got = unsafe { out.as_ptr().cast::<u8>().read() };
                        let want = self.slots[i]
                            .as_ref()
                            .expect("live")
                            .members
                            .contains(&conn);
                        assert_eq!(got, u8::from(want), "is_member({conn})");
                    }
                    _ => assert_eq!(s, chat_status::NullParameter),
                }
            }
            Call::MemberCount { room, null_out } => {
                let Some(i) = self.slot(*room) else { return };
                let p = self.room_ptr(i);
                let mut out = usize::MAX;
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out as *mut usize
                };
                let s = check_status(chat_room_member_count(p, out_ptr), "chat_room_member_count");
                match i {
                    Some(i) if !*null_out => {
                        assert_eq!(s, chat_status::Ok);
                        let want = self.slots[i].as_ref().expect("live").members.len();
                        assert_eq!(out, want, "member_count");
                    }
                    _ => {
                        assert_eq!(s, chat_status::NullParameter);
                        assert_eq!(out, usize::MAX);
                    }
                }
            }
            Call::LastSeq { room, null_out } => {
                let Some(i) = self.slot(*room) else { return };
                let p = self.room_ptr(i);
                let mut out = u64::MAX;
                let out_ptr = if *null_out {
                    ptr::null_mut()
                } else {
                    &mut out as *mut u64
                };
                let s = check_status(chat_room_last_seq(p, out_ptr), "chat_room_last_seq");
                match i {
                    Some(i) if !*null_out => {
                        assert_eq!(s, chat_status::Ok);
                        let slot = self.slots[i].as_mut().expect("live");
                        assert!(out >= slot.last_seq, "last_seq went back");
                        slot.last_seq = out;
                    }
                    _ => {
                        assert_eq!(s, chat_status::NullParameter);
                        assert_eq!(out, u64::MAX);
                    }
                }
            }
            Call::StatusStr { n } => {
                for n in [*n, *n % (MAX_STATUS + 2)] {
                    let msg = check_cstr(chat_status_str(n), "chat_status_str");
                    assert!(!msg.is_empty());
                    assert_eq!(
                        n > MAX_STATUS,
                        msg == "unknown status",
                        "status {n}: {msg:?}"
                    );
                }
            }
            Call::Version => {
                let v = check_cstr(chat_version(), "chat_version");
                assert!(
                    !v.is_empty() && v.split('.').all(|p| p.parse::<u64>().is_ok()),
                    "{v:?}"
                );
            }
            Call::Tick { ms } => self.now += u64::from(*ms),
        }
        // Views of outputs polled before stay valid across calls that took no room mutably.
        for slot in self.slots.iter().flatten() {
            if let Some(view) = &slot.view {
                check_views(view);
            }
        }
    }

    fn leave(&mut self, room: RoomRef, conn: u64) {
        let Some(i) = self.slot(room) else { return };
        let p = self.room_ptr(i);
        self.invalidate(i);
        let s = check_status(chat_room_leave(p, self.now, conn), "chat_room_leave");
        let Some(i) = i else {
            assert_eq!(s, chat_status::NullParameter);
            return;
        };
        let slot = self.slots[i].as_mut().expect("live");
        let want = if slot.members.remove(&conn) {
            chat_status::Ok
        } else {
            chat_status::UnknownConn
        };
        assert_eq!(s, want, "leave {conn}");
    }

    fn poll(&mut self, i: Option<usize>, null_out: bool) -> chat_status {
        let p = self.room_ptr(i);
        self.invalidate(i);
        let mut out = MaybeUninit::<chat_output>::uninit();
        // Sentinel bytes: the struct must stay untouched unless the call succeeds.
        // SAFETY: writing bytes into our own uninitialized struct.
        unsafe {
            ptr::write_bytes(
                out.as_mut_ptr().cast::<u8>(),
                0xA5,
                size_of::<chat_output>(),
            )
        };
        let out_ptr = if null_out {
            ptr::null_mut()
        } else {
            out.as_mut_ptr()
        };
        let s = check_status(chat_room_poll_output(p, out_ptr), "chat_room_poll_output");
        if i.is_none() || null_out {
            assert_eq!(s, chat_status::NullParameter);
            return s;
        }
        match s {
            chat_status::Ok => {
                let o = check_output(out.as_ptr());
                let slot = self.slots[i.expect("room")].as_mut().expect("live");
                // (Audiences are judged when an output is produced, so a member named in
                // one may have left since; core_ops checks audiences, drained after each op.)
                if o.seq != 0 && !o.replay {
                    assert_eq!(o.seq, slot.polled_seq + 1, "live seqs grow by 1");
                    slot.polled_seq = o.seq;
                }
                slot.view = Some(o);
            }
            chat_status::NoOutput => {
                // SAFETY: we initialized every byte above; the call must not have touched them.
                let bytes = unsafe {
                    std::slice::from_raw_parts(out.as_ptr().cast::<u8>(), size_of::<chat_output>())
                };
                assert!(
                    bytes.iter().all(|&b| b == 0xA5),
                    "*out written on NO_OUTPUT"
                );
            }
            other => panic!("poll: {other:?}"),
        }
        s
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        slots: [None, None, None],
        now: 0,
    };
    // Most runs want a room from the start.
    if let Ok(seed) = u64::arbitrary(&mut u) {
        let mut room = ptr::null_mut();
        assert_eq!(chat_room_new(ptr::null(), seed, &mut room), chat_status::Ok);
        h.slots[0] = Some(Slot {
            room,
            max_members: usize::MAX,
            members: BTreeSet::new(),
            last_seq: 0,
            polled_seq: 0,
            view: None,
        });
    }
    let Ok(calls) = Vec::<Call>::arbitrary_take_rest(u) else {
        return;
    };
    for call in calls.iter().take(500) {
        h.call(call);
    }
});
