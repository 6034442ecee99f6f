//! Draining outputs: chat_room_poll_output() and the views it hands out.

use crate::boundary::{tri, write_out};
use crate::room::{chat_room, room_mut};
use crate::{chat_status, ffi_panic_boundary};
use chat_core::{Audience, Output, OutputKind};
use std::ffi::c_char;
use std::fmt::Write as _;

/// A borrowed view of UTF-8 text: `len` bytes at `ptr`, not NUL-terminated unless a field
/// says so (print it with printf("%.*s", (int)s.len, s.ptr)). `ptr` is never NULL, even
/// when `len` is 0. The bytes belong to the room; see chat_output for how long they live.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct chat_str {
    /// First byte.
    pub ptr: *const c_char,
    /// Length in bytes.
    pub len: usize,
}

impl chat_str {
    fn empty() -> Self {
        chat_str {
            ptr: c"".as_ptr(),
            len: 0,
        }
    }

    fn of(s: &str) -> Self {
        if s.is_empty() {
            return chat_str::empty();
        }
        chat_str {
            ptr: s.as_ptr().cast(),
            len: s.len(),
        }
    }
}

/// Who receives an output, judged against the members at the time it is polled.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum chat_audience {
    /// Every member.
    Everyone = 0,
    /// Every member except audience_conn (its sender, who already knows).
    EveryoneExcept = 1,
    /// Only audience_conn (a reply, an error, a welcome, a replayed event).
    Only = 2,
}

/// What an output is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum chat_output_kind {
    /// Greeting to a joiner: nick is theirs, member_count and chat_room_output_member().
    Welcome = 0,
    /// A chat message: nick said text.
    Message = 1,
    /// An action (`/me`): nick did text.
    Me = 2,
    /// nick joined.
    Join = 3,
    /// nick left.
    Leave = 4,
    /// A rename: old_nick is now nick.
    Nick = 5,
    /// The member list (`/who`): member_count and chat_room_output_member().
    Who = 6,
    /// The command summary (`/help`): read line.
    Help = 7,
    /// An input was refused: error says which rule, text says why.
    Error = 8,
    /// A resume missed `lost` events that history no longer holds.
    Gap = 9,
}

/// One output, written by chat_room_poll_output() into a caller-owned struct.
///
/// Every chat_str in it borrows from the room and stays valid until the next call that
/// takes the room as `chat_room *` (poll, join, message, leave, free); calls taking
/// `const chat_room *` leave them valid. Copy what you need to keep.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct chat_output {
    /// Who receives it.
    pub audience: chat_audience,
    /// The connection that CHAT_AUDIENCE_EVERYONE_EXCEPT excludes or CHAT_AUDIENCE_ONLY
    /// names; 0 for CHAT_AUDIENCE_EVERYONE.
    pub audience_conn: u64,
    /// What it is.
    pub kind: chat_output_kind,
    /// The room's sequence number of a broadcast event (message, me, join, leave, nick),
    /// also on replays; 0 for replies. Clients resume after the last one they saw.
    pub seq: u64,
    /// True for a past event replayed from history to a joiner.
    pub replay: bool,
    /// True when subject_conn names the connection the event is about.
    pub has_subject: bool,
    /// The sender, joiner, leaver or renamer.
    pub subject_conn: u64,
    /// The nickname the output is about (sender, joiner, leaver, new nick, welcomed
    /// member); empty if none.
    pub nick: chat_str,
    /// For CHAT_OUTPUT_KIND_NICK: the previous nickname; empty otherwise.
    pub old_nick: chat_str,
    /// A message's or action's text, or an error's reason; empty otherwise.
    pub text: chat_str,
    /// The whole line as the tutorial prints it ("alice: hi", " .... bob has left."),
    /// without a newline. Also NUL-terminated, so printf("%s\n", out.line.ptr) works.
    pub line: chat_str,
    /// For CHAT_OUTPUT_KIND_ERROR: the rule the input broke; CHAT_STATUS_OK otherwise.
    pub error: chat_status,
    /// For CHAT_OUTPUT_KIND_GAP: how many events were missed; 0 otherwise.
    pub lost: u64,
    /// For WELCOME and WHO: how many members the room has; 0 otherwise.
    pub member_count: usize,
}

fn audience(a: Audience) -> (chat_audience, u64) {
    match a {
        Audience::Everyone => (chat_audience::Everyone, 0),
        Audience::EveryoneExcept(c) => (chat_audience::EveryoneExcept, c.0),
        Audience::Only(c) => (chat_audience::Only, c.0),
    }
}

fn kind(k: OutputKind) -> chat_output_kind {
    match k {
        OutputKind::Welcome => chat_output_kind::Welcome,
        OutputKind::Message => chat_output_kind::Message,
        OutputKind::Me => chat_output_kind::Me,
        OutputKind::Join => chat_output_kind::Join,
        OutputKind::Leave => chat_output_kind::Leave,
        OutputKind::Nick => chat_output_kind::Nick,
        OutputKind::Who => chat_output_kind::Who,
        OutputKind::Help => chat_output_kind::Help,
        OutputKind::Error => chat_output_kind::Error,
        OutputKind::Gap => chat_output_kind::Gap,
    }
}

/// Views of `output`, whose rendered line is in `line` (NUL-terminated).
fn view(output: &Output, line: &str) -> chat_output {
    let (audience, audience_conn) = audience(output.audience());
    let subject = output.subject();
    chat_output {
        audience,
        audience_conn,
        kind: kind(output.kind()),
        seq: output.seq().unwrap_or(0),
        replay: output.is_replay(),
        has_subject: subject.is_some(),
        subject_conn: subject.map_or(0, |c| c.0),
        nick: output.nick().map_or(chat_str::empty(), |n| chat_str::of(n)),
        old_nick: output
            .old_nick()
            .map_or(chat_str::empty(), |n| chat_str::of(n)),
        text: output.text().map_or(chat_str::empty(), chat_str::of),
        line: chat_str {
            ptr: line.as_ptr().cast(),
            len: line.len() - 1,
        },
        error: output.error().map_or(chat_status::Ok, chat_status::from),
        lost: output.lost().unwrap_or(0),
        member_count: output.member_count().unwrap_or(0),
    }
}

/// Takes the next output from the room's queue and describes it in the caller-owned `*out`.
///
/// Returns CHAT_STATUS_OK with `*out` filled, or CHAT_STATUS_NO_OUTPUT when the queue is
/// drained (`*out` untouched). Drive a room like this: one input call, then poll until
/// CHAT_STATUS_NO_OUTPUT, delivering each output to the members its audience names now.
#[no_mangle]
pub extern "C" fn chat_room_poll_output(
    room: *mut chat_room,
    out: *mut chat_output,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: the caller passes a live room it is not using elsewhere.
        let room = tri!(unsafe { room_mut(room) });
        if out.is_null() {
            return chat_status::NullParameter;
        }
        room.current = None;
        let Some(output) = room.room.poll_output() else {
            return chat_status::NoOutput;
        };
        room.line.clear();
        // Writing to a String cannot fail.
        let _ = write!(room.line, "{output}");
        room.line.push('\0');
        let output = room.current.insert(output);
        // SAFETY: non-NULL (checked) and caller-owned; the views point into `room.current`
        // and `room.line`, which the room keeps unchanged until its next mutable call.
        tri!(unsafe { write_out(out, view(output, &room.line)) });
        chat_status::Ok
    }
}

/// Writes to `*out` a view of member `index` (0-based, in nickname order) of the last
/// polled WELCOME or WHO output. WHO lists every member; WELCOME lists the first 50
/// (member_count has the total). The view lives as long as the output's own views.
///
/// Returns CHAT_STATUS_NO_OUTPUT if the last poll gave no such output and
/// CHAT_STATUS_OUT_OF_RANGE past the end of the list.
#[no_mangle]
pub extern "C" fn chat_room_output_member(
    room: *const chat_room,
    index: usize,
    out: *mut chat_str,
) -> chat_status {
    ffi_panic_boundary! {
        // SAFETY: NULL becomes None; otherwise the caller passes a live room.
        let Some(room) = (unsafe { room.as_ref() }) else {
            return chat_status::NullParameter;
        };
        if out.is_null() {
            return chat_status::NullParameter;
        }
        let Some(members) = room.current.as_ref().and_then(Output::members) else {
            return chat_status::NoOutput;
        };
        let Some(nick) = members.get(index) else {
            return chat_status::OutOfRange;
        };
        // SAFETY: NULL is checked; otherwise caller-owned and writable.
        tri!(unsafe { write_out(out, chat_str::of(nick)) });
        chat_status::Ok
    }
}
