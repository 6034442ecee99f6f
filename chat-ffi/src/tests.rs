//! Calls every exported function the way C would, including with NULLs, bad lengths,
//! invalid UTF-8 and unknown ids.

use crate::*;
use std::ffi::{c_char, CStr};
use std::ptr;

fn new_room(config: Option<&chat_config>) -> *mut chat_room {
    let mut room = ptr::null_mut();
    let config = config.map_or(ptr::null(), |c| c as *const chat_config);
    assert_eq!(chat_room_new(config, 7, &mut room), chat_status::Ok);
    assert!(!room.is_null());
    room
}

fn seed_config() -> chat_config {
    let mut c = std::mem::MaybeUninit::<chat_config>::uninit();
    assert_eq!(chat_config_seed(c.as_mut_ptr()), chat_status::Ok);
    // SAFETY: chat_config_seed returned OK, so it initialized the struct.
    unsafe { c.assume_init() }
}

fn default_config() -> chat_config {
    let mut c = std::mem::MaybeUninit::<chat_config>::uninit();
    assert_eq!(chat_config_default(c.as_mut_ptr()), chat_status::Ok);
    // SAFETY: chat_config_default returned OK, so it initialized the struct.
    unsafe { c.assume_init() }
}

fn join(room: *mut chat_room, conn: u64) -> chat_status {
    chat_room_join(room, 0, conn, ptr::null(), 0, ptr::null())
}

fn join_as(room: *mut chat_room, conn: u64, nick: &str) -> chat_status {
    chat_room_join(room, 0, conn, nick.as_ptr().cast(), nick.len(), ptr::null())
}

fn say(room: *mut chat_room, now: u64, conn: u64, text: &[u8]) -> chat_status {
    chat_room_message(room, now, conn, text.as_ptr().cast(), text.len())
}

/// Reads a view as a Rust string (the views are UTF-8 by contract).
fn s(v: chat_str) -> String {
    assert!(!v.ptr.is_null(), "views are never NULL");
    // SAFETY: the view came from the room, which is alive and untouched since the poll.
    let bytes = unsafe { std::slice::from_raw_parts(v.ptr.cast::<u8>(), v.len) };
    String::from_utf8(bytes.to_vec()).expect("views are UTF-8")
}

/// One polled output with its views copied out.
#[derive(Debug)]
struct Polled {
    raw: chat_output,
    nick: String,
    old_nick: String,
    text: String,
    line: String,
}

fn poll(room: *mut chat_room) -> Option<Polled> {
    let mut out = std::mem::MaybeUninit::<chat_output>::uninit();
    match chat_room_poll_output(room, out.as_mut_ptr()) {
        chat_status::Ok => {}
        chat_status::NoOutput => return None,
        other => panic!("poll failed: {other:?}"),
    }
    // SAFETY: OK means the struct was written.
    let raw = unsafe { out.assume_init() };
    // SAFETY: the line view is documented as NUL-terminated right after `len` bytes.
    let terminator = unsafe { *raw.line.ptr.add(raw.line.len) };
    assert_eq!(terminator, 0, "line is NUL-terminated");
    Some(Polled {
        raw,
        nick: s(raw.nick),
        old_nick: s(raw.old_nick),
        text: s(raw.text),
        line: s(raw.line),
    })
}

fn drain(room: *mut chat_room) -> Vec<Polled> {
    std::iter::from_fn(|| poll(room)).collect()
}

fn nick_of(room: *const chat_room, conn: u64) -> String {
    let mut buf = [0 as c_char; CHAT_MAX_NICK_LEN + 1];
    let mut len = 0usize;
    assert_eq!(
        chat_room_nick(room, conn, buf.as_mut_ptr(), buf.len(), &mut len),
        chat_status::Ok
    );
    // SAFETY: chat_room_nick wrote a NUL-terminated string into `buf`.
    let c = unsafe { CStr::from_ptr(buf.as_ptr()) };
    assert_eq!(c.to_bytes().len(), len);
    c.to_str().unwrap().to_owned()
}

#[test]
fn every_status_number_has_a_static_message() {
    for n in (0..64).chain([u32::MAX, u32::MAX - 1, 1000]) {
        let p = chat_status_str(n);
        assert!(!p.is_null());
        // SAFETY: chat_status_str returns a static NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert!(!msg.is_empty());
        match chat_status::from_u32(n) {
            Some(st) => {
                assert_eq!(st as u32, n, "numbering is dense and stable");
                assert_ne!(msg, "unknown status");
            }
            None => assert_eq!(msg, "unknown status"),
        }
    }
    assert_eq!(chat_status::from_u32(0), Some(chat_status::Ok));
    assert_eq!(chat_status::from_u32(20), Some(chat_status::Refused));
    assert_eq!(chat_status::from_u32(21), None);
}

#[test]
fn version_is_the_crate_version() {
    // SAFETY: chat_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(chat_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn configs_fill_caller_structs_and_refuse_null() {
    assert_eq!(
        chat_config_default(ptr::null_mut()),
        chat_status::NullParameter
    );
    assert_eq!(
        chat_config_seed(ptr::null_mut()),
        chat_status::NullParameter
    );
    let d = default_config();
    assert!(d.welcome && d.join_notices && d.commands);
    assert_eq!((d.history, d.max_message_bytes), (100, 4096));
    assert_eq!((d.rate_burst, d.rate_per_second), (20, 10));
    assert_eq!(d.max_members, usize::MAX);
    let s = seed_config();
    assert!(!s.welcome && !s.join_notices && !s.commands);
    assert_eq!(s.history, 0);
}

#[test]
fn room_new_validates_config_and_out() {
    let config = default_config();
    assert_eq!(
        chat_room_new(&config, 1, ptr::null_mut()),
        chat_status::NullParameter
    );
    let sentinel = ptr::dangling_mut::<chat_room>();
    for bad in [
        chat_config {
            max_message_bytes: 0,
            ..config
        },
        chat_config {
            max_members: 0,
            ..config
        },
        chat_config {
            rate_burst: 0,
            ..config
        },
    ] {
        let mut out = sentinel;
        assert_eq!(chat_room_new(&bad, 1, &mut out), chat_status::InvalidConfig);
        assert_eq!(out, sentinel, "out is untouched on error");
    }
    // Zero refill turns the limit off, whatever the burst.
    let unlimited = chat_config {
        rate_burst: 0,
        rate_per_second: 0,
        ..config
    };
    let room = new_room(Some(&unlimited));
    assert_eq!(join(room, 1), chat_status::Ok);
    for i in 0..200 {
        assert_eq!(say(room, 0, 1, b"spam"), chat_status::Ok, "message {i}");
    }
    chat_room_free(room);
    // NULL config means the defaults.
    let room = new_room(None);
    assert_eq!(join(room, 1), chat_status::Ok);
    assert_eq!(poll(room).unwrap().raw.kind, chat_output_kind::Welcome);
    chat_room_free(room);
}

#[test]
fn free_accepts_null() {
    chat_room_free(ptr::null_mut());
    chat_room_free(ptr::null_mut());
}

#[test]
fn null_room_is_a_status_everywhere() {
    let null = ptr::null_mut::<chat_room>();
    let mut out = std::mem::MaybeUninit::<chat_output>::uninit();
    let mut view = chat_str {
        ptr: ptr::null(),
        len: 0,
    };
    let (mut n, mut seq, mut conn, mut member) = (0usize, 0u64, 0u64, false);
    let mut buf = [0 as c_char; 64];
    let np = chat_status::NullParameter;
    assert_eq!(join(null, 1), np);
    assert_eq!(say(null, 0, 1, b"hi"), np);
    assert_eq!(chat_room_leave(null, 0, 1), np);
    assert_eq!(chat_room_poll_output(null, out.as_mut_ptr()), np);
    assert_eq!(chat_room_output_member(null, 0, &mut view), np);
    assert_eq!(chat_room_nick(null, 1, buf.as_mut_ptr(), 64, &mut n), np);
    assert_eq!(chat_room_conn_of(null, c"a".as_ptr(), 1, &mut conn), np);
    assert_eq!(chat_room_is_member(null, 1, &mut member), np);
    assert_eq!(chat_room_member_count(null, &mut n), np);
    assert_eq!(chat_room_last_seq(null, &mut seq), np);
}

#[test]
fn null_out_parameters_are_a_status() {
    let room = new_room(Some(&seed_config()));
    assert_eq!(join(room, 1), chat_status::Ok);
    let np = chat_status::NullParameter;
    let mut buf = [0 as c_char; 64];
    let mut n = 0usize;
    assert_eq!(chat_room_poll_output(room, ptr::null_mut()), np);
    assert_eq!(chat_room_output_member(room, 0, ptr::null_mut()), np);
    assert_eq!(chat_room_nick(room, 1, ptr::null_mut(), 64, &mut n), np);
    assert_eq!(
        chat_room_nick(room, 1, buf.as_mut_ptr(), 64, ptr::null_mut()),
        np
    );
    assert_eq!(
        chat_room_conn_of(room, c"x".as_ptr(), 1, ptr::null_mut()),
        chat_status::NullParameter
    );
    assert_eq!(chat_room_is_member(room, 1, ptr::null_mut()), np);
    assert_eq!(chat_room_member_count(room, ptr::null_mut()), np);
    assert_eq!(chat_room_last_seq(room, ptr::null_mut()), np);
    chat_room_free(room);
}

#[test]
fn join_statuses() {
    let one = chat_config {
        max_members: 2,
        ..default_config()
    };
    let room = new_room(Some(&one));
    // NULL nick with a length is a NULL parameter, not a random nick.
    assert_eq!(
        chat_room_join(room, 0, 1, ptr::null(), 3, ptr::null()),
        chat_status::NullParameter
    );
    // Invalid UTF-8 in the nick: refused, not joined.
    let bad = b"al\xffce";
    assert_eq!(
        chat_room_join(room, 0, 1, bad.as_ptr().cast(), bad.len(), ptr::null()),
        chat_status::InvalidUtf8
    );
    // An impossible length is refused before memory is touched.
    assert_eq!(
        chat_room_join(room, 0, 1, c"x".as_ptr(), usize::MAX, ptr::null()),
        chat_status::TooLong
    );
    let mut member = true;
    assert_eq!(chat_room_is_member(room, 1, &mut member), chat_status::Ok);
    assert!(!member);
    assert!(drain(room).is_empty(), "refused joins queue nothing");

    assert_eq!(join_as(room, 1, "alice"), chat_status::Ok);
    assert_eq!(nick_of(room, 1), "alice");
    assert_eq!(join_as(room, 1, "again"), chat_status::DuplicateConn);
    // A taken nick still joins, with a random nick and an error line.
    assert_eq!(join_as(room, 2, "ALICE"), chat_status::Ok);
    assert!(nick_of(room, 2).starts_with("user-"));
    assert_eq!(join_as(room, 3, "carol"), chat_status::RoomFull);
    let outs = drain(room);
    let errors: Vec<_> = outs
        .iter()
        .filter(|o| o.raw.kind == chat_output_kind::Error)
        .collect();
    assert_eq!(errors.len(), 3, "{outs:#?}");
    assert_eq!(errors[0].raw.error, chat_status::DuplicateConn);
    assert_eq!(errors[1].raw.error, chat_status::NickTaken);
    assert_eq!(errors[1].raw.audience, chat_audience::Only);
    assert_eq!(errors[1].raw.audience_conn, 2);
    assert_eq!(errors[2].raw.error, chat_status::RoomFull);
    let mut count = 0;
    assert_eq!(chat_room_member_count(room, &mut count), chat_status::Ok);
    assert_eq!(count, 2);
    chat_room_free(room);
}

#[test]
fn message_statuses() {
    let config = chat_config {
        max_message_bytes: 10,
        rate_burst: 3,
        rate_per_second: 1,
        ..default_config()
    };
    let room = new_room(Some(&config));
    assert_eq!(join(room, 1), chat_status::Ok);
    let _ = drain(room);

    assert_eq!(say(room, 0, 9, b"who am i"), chat_status::UnknownConn);
    let not_joined = drain(room);
    assert_eq!(not_joined.len(), 1, "the stranger is told why");
    assert_eq!(not_joined[0].raw.audience, chat_audience::Only);
    assert_eq!(not_joined[0].raw.audience_conn, 9);
    assert_eq!(not_joined[0].raw.error, chat_status::UnknownConn);
    assert_eq!(
        chat_room_message(room, 0, 1, ptr::null(), 5),
        chat_status::NullParameter
    );
    assert_eq!(
        chat_room_message(room, 0, 1, c"x".as_ptr(), usize::MAX),
        chat_status::TooLong
    );
    assert_eq!(
        chat_room_message(room, 0, 1, c"x".as_ptr(), isize::MAX as usize + 1),
        chat_status::TooLong
    );
    assert_eq!(say(room, 0, 1, b"caf\xe9"), chat_status::InvalidUtf8);
    // Split UTF-8: the first byte of a two-byte character alone.
    assert_eq!(
        say(room, 0, 1, &"é".as_bytes()[..1]),
        chat_status::InvalidUtf8
    );
    assert!(drain(room).is_empty(), "invalid UTF-8 changes nothing");

    // NULL with zero length is the empty message, which the room refuses with a line.
    assert_eq!(
        chat_room_message(room, 1000, 1, ptr::null(), 0),
        chat_status::EmptyMessage
    );
    assert_eq!(say(room, 2000, 1, b"0123456789A"), chat_status::TooLong);
    assert_eq!(say(room, 3000, 1, b"a\x07b"), chat_status::ControlCharacter);
    let errs = drain(room);
    assert_eq!(errs.len(), 3);
    assert!(errs.iter().all(|o| o.raw.kind == chat_output_kind::Error
        && o.raw.audience == chat_audience::Only
        && o.raw.audience_conn == 1
        && !o.text.is_empty()));
    assert_eq!(errs[1].raw.error, chat_status::TooLong);

    // Burst of 3 at t=10 s, the fourth is limited.
    for _ in 0..3 {
        assert_eq!(say(room, 10_000, 1, b"hi"), chat_status::Ok);
    }
    assert_eq!(say(room, 10_000, 1, b"hi"), chat_status::RateLimited);
    assert_eq!(
        say(room, 11_000, 1, b"hi"),
        chat_status::Ok,
        "one refill per second"
    );
    let _ = drain(room);

    // Commands map to their statuses.
    assert_eq!(say(room, 20_000, 1, b"/bogus"), chat_status::UnknownCommand);
    assert_eq!(say(room, 21_000, 1, b"/me"), chat_status::MissingArgument);
    assert_eq!(say(room, 22_000, 1, b"/nick a!"), chat_status::InvalidNick);
    chat_room_free(room);
}

#[test]
fn leave_statuses_and_notice() {
    let room = new_room(Some(&seed_config()));
    assert_eq!(chat_room_leave(room, 0, 5), chat_status::UnknownConn);
    assert_eq!(join_as(room, 1, "alice"), chat_status::Ok);
    assert_eq!(join_as(room, 2, "bob"), chat_status::Ok);
    assert_eq!(chat_room_leave(room, 10, 2), chat_status::Ok);
    assert_eq!(chat_room_leave(room, 10, 2), chat_status::UnknownConn);
    let outs = drain(room);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].raw.kind, chat_output_kind::Leave);
    assert_eq!(outs[0].line, " .... bob has left.");
    assert_eq!(outs[0].nick, "bob");
    assert!(outs[0].raw.has_subject);
    assert_eq!(outs[0].raw.subject_conn, 2);
    chat_room_free(room);
}

#[test]
fn nick_buffer_sizes() {
    let room = new_room(Some(&seed_config()));
    assert_eq!(join_as(room, 1, "alice"), chat_status::Ok);
    let mut buf = [b'#' as c_char; 8];
    let mut len = 99usize;
    // "alice" needs 6 bytes with its NUL.
    assert_eq!(
        chat_room_nick(room, 1, buf.as_mut_ptr(), 5, &mut len),
        chat_status::InsufficientSize
    );
    assert_eq!(len, 99, "out_len untouched on error");
    assert!(buf.iter().all(|&b| b == b'#' as c_char), "buffer untouched");
    assert_eq!(
        chat_room_nick(room, 1, buf.as_mut_ptr(), 0, &mut len),
        chat_status::InsufficientSize
    );
    assert_eq!(
        chat_room_nick(room, 1, buf.as_mut_ptr(), 6, &mut len),
        chat_status::Ok
    );
    assert_eq!(len, 5);
    assert_eq!(buf[5], 0);
    assert_eq!(buf[6], b'#' as c_char, "nothing written past the NUL");
    assert_eq!(
        chat_room_nick(room, 2, buf.as_mut_ptr(), 8, &mut len),
        chat_status::UnknownConn
    );
    chat_room_free(room);
}

#[test]
fn conn_of_ignores_ascii_case() {
    let room = new_room(Some(&seed_config()));
    assert_eq!(join_as(room, 42, "Alice"), chat_status::Ok);
    let mut conn = 0u64;
    assert_eq!(
        chat_room_conn_of(room, c"aLiCe".as_ptr(), 5, &mut conn),
        chat_status::Ok
    );
    assert_eq!(conn, 42);
    assert_eq!(
        chat_room_conn_of(room, c"bob".as_ptr(), 3, &mut conn),
        chat_status::UnknownConn
    );
    assert_eq!(
        chat_room_conn_of(room, b"\xff".as_ptr().cast(), 1, &mut conn),
        chat_status::InvalidUtf8
    );
    assert_eq!(
        chat_room_conn_of(room, ptr::null(), 0, &mut conn),
        chat_status::UnknownConn,
        "the empty name is nobody's"
    );
    assert_eq!(
        chat_room_conn_of(room, ptr::null(), 4, &mut conn),
        chat_status::NullParameter
    );
    chat_room_free(room);
}

#[test]
fn outputs_carry_structured_fields_and_views() {
    let room = new_room(Some(&default_config()));
    assert_eq!(join_as(room, 1, "alice"), chat_status::Ok);
    let welcome: Vec<_> = drain(room)
        .into_iter()
        .filter(|o| o.raw.kind != chat_output_kind::Join)
        .collect();
    assert_eq!(welcome.len(), 1, "{welcome:#?}");
    assert_eq!(welcome[0].raw.kind, chat_output_kind::Welcome);
    assert_eq!(welcome[0].raw.audience, chat_audience::Only);
    assert_eq!(welcome[0].nick, "alice");
    assert_eq!(welcome[0].raw.member_count, 1);

    assert_eq!(join_as(room, 2, "bob"), chat_status::Ok);
    let outs = drain(room);
    let join = outs
        .iter()
        .find(|o| o.raw.kind == chat_output_kind::Join && !o.raw.replay)
        .expect("join notice");
    assert_eq!(join.raw.audience, chat_audience::EveryoneExcept);
    assert_eq!(join.raw.audience_conn, 2);
    assert_eq!(join.raw.seq, 2);

    assert_eq!(say(room, 5, 1, b"hello"), chat_status::Ok);
    let msg = poll(room).unwrap();
    assert_eq!(msg.raw.kind, chat_output_kind::Message);
    assert_eq!(msg.raw.audience, chat_audience::Everyone);
    assert_eq!((msg.nick.as_str(), msg.text.as_str()), ("alice", "hello"));
    assert_eq!(msg.line, "alice: hello");
    assert_eq!(msg.raw.seq, 3);
    assert_eq!(msg.raw.error, chat_status::Ok);
    assert!(msg.old_nick.is_empty() && msg.raw.old_nick.len == 0);
    assert!(poll(room).is_none());

    assert_eq!(say(room, 6, 2, b"/nick robert"), chat_status::Ok);
    let rename = poll(room).unwrap();
    assert_eq!(rename.raw.kind, chat_output_kind::Nick);
    assert_eq!(
        (rename.old_nick.as_str(), rename.nick.as_str()),
        ("bob", "robert")
    );
    let _ = drain(room);

    assert_eq!(say(room, 7, 2, b"/me waves"), chat_status::Ok);
    let me = poll(room).unwrap();
    assert_eq!(me.raw.kind, chat_output_kind::Me);
    assert_eq!(me.line, "* robert waves");

    let mut last = 0;
    assert_eq!(chat_room_last_seq(room, &mut last), chat_status::Ok);
    assert_eq!(last, me.raw.seq);

    // A reconnect that resumes after the message gets exactly the later events, replayed.
    assert_eq!(chat_room_leave(room, 8, 1), chat_status::Ok);
    let _ = drain(room);
    let resume = msg.raw.seq;
    assert_eq!(
        chat_room_join(room, 9, 1, c"alice".as_ptr(), 5, &resume),
        chat_status::Ok
    );
    let replayed: Vec<_> = drain(room)
        .into_iter()
        .filter(|o| o.raw.replay)
        .map(|o| o.line)
        .collect();
    assert_eq!(
        replayed,
        [
            " .... bob is now known as robert.",
            "* robert waves",
            " .... alice has left."
        ]
    );
    chat_room_free(room);
}

#[test]
fn polling_after_drain_keeps_saying_no_output() {
    let room = new_room(Some(&seed_config()));
    let mut out = std::mem::MaybeUninit::<chat_output>::uninit();
    for _ in 0..3 {
        assert_eq!(
            chat_room_poll_output(room, out.as_mut_ptr()),
            chat_status::NoOutput
        );
    }
    let mut view = chat_str {
        ptr: ptr::null(),
        len: 0,
    };
    assert_eq!(
        chat_room_output_member(room, 0, &mut view),
        chat_status::NoOutput
    );
    chat_room_free(room);
}

#[test]
fn member_lists_of_welcome_and_who() {
    let room = new_room(Some(&default_config()));
    for (conn, nick) in [(1, "carol"), (2, "alice"), (3, "bob")] {
        assert_eq!(join_as(room, conn, nick), chat_status::Ok);
    }
    let _ = drain(room);
    assert_eq!(say(room, 1, 3, b"/who"), chat_status::Ok);
    let who = poll(room).unwrap();
    assert_eq!(who.raw.kind, chat_output_kind::Who);
    assert_eq!(who.raw.member_count, 3);
    let mut names = Vec::new();
    for i in 0..who.raw.member_count {
        let mut view = chat_str {
            ptr: ptr::null(),
            len: 0,
        };
        assert_eq!(chat_room_output_member(room, i, &mut view), chat_status::Ok);
        names.push(s(view));
    }
    assert_eq!(names, ["alice", "bob", "carol"]);
    let mut view = chat_str {
        ptr: ptr::null(),
        len: 0,
    };
    assert_eq!(
        chat_room_output_member(room, 3, &mut view),
        chat_status::OutOfRange
    );
    assert_eq!(
        chat_room_output_member(room, usize::MAX, &mut view),
        chat_status::OutOfRange
    );
    // A non-list output has no members.
    assert_eq!(say(room, 2, 3, b"plain"), chat_status::Ok);
    let _ = poll(room).unwrap();
    assert_eq!(
        chat_room_output_member(room, 0, &mut view),
        chat_status::NoOutput
    );
    chat_room_free(room);
}

#[test]
fn an_input_invalidates_the_previous_output() {
    let room = new_room(Some(&default_config()));
    assert_eq!(join(room, 1), chat_status::Ok);
    let welcome = poll(room).unwrap();
    assert_eq!(welcome.raw.kind, chat_output_kind::Welcome);
    let mut view = chat_str {
        ptr: ptr::null(),
        len: 0,
    };
    assert_eq!(chat_room_output_member(room, 0, &mut view), chat_status::Ok);
    assert_eq!(join(room, 2), chat_status::Ok);
    assert_eq!(
        chat_room_output_member(room, 0, &mut view),
        chat_status::NoOutput,
        "the room dropped the old output"
    );
    chat_room_free(room);
}

#[test]
fn same_seed_same_nicknames() {
    let a = new_room(Some(&seed_config()));
    let b = new_room(Some(&seed_config()));
    for conn in 1..=20 {
        assert_eq!(join(a, conn), chat_status::Ok);
        assert_eq!(join(b, conn), chat_status::Ok);
        assert_eq!(nick_of(a, conn), nick_of(b, conn));
    }
    chat_room_free(a);
    chat_room_free(b);
}

#[test]
fn panics_become_statuses() {
    fn panicking_status() -> chat_status {
        ffi_panic_boundary! {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let _ = v[usize::from(v.is_empty())];
            chat_status::Ok
        }
    }
    fn panicking_str() -> *const c_char {
        ffi_panic_boundary! {
            panic!("boom")
        }
    }
    fn panicking_unit() {
        ffi_panic_boundary! {
            panic!("boom")
        }
    }
    assert_eq!(panicking_status(), chat_status::Panic);
    // SAFETY: the boundary returns a static NUL-terminated string on panic.
    let msg = unsafe { CStr::from_ptr(panicking_str()) };
    assert!(msg.to_str().unwrap().contains("panic"));
    panicking_unit();
}
