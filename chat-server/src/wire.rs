//! Wire formats: how a `chat_core::Output` becomes a WebSocket frame.
//!
//! Plain text (no subprotocol) is the seed's exact line. `chat.v1.json` is one JSON object per
//! frame. Each output is encoded at most once per format, as a complete WebSocket frame
//! (header and payload), and those bytes are shared by every recipient: a delivery is a
//! reference count and a slice in the recipient's next `writev`.

use bytes::Bytes;
use chat_core::{Output, OutputKind};
use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

/// The JSON subprotocol name clients ask for in `Sec-WebSocket-Protocol`.
pub const JSON_PROTOCOL: &str = "chat.v1.json";

/// The wire format of one connection, fixed at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Seed-compatible text lines.
    Plain,
    /// `chat.v1.json` objects.
    Json,
}

/// One `chat.v1.json` event. Fields are added, never renamed, within v1.
#[derive(Serialize)]
struct JsonEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nick: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replay: bool,
}

/// A complete unmasked, final server-to-client text frame carrying `text`.
pub fn text_frame(text: String) -> Bytes {
    let frame = Frame::message(text, OpCode::Data(Data::Text), true);
    let mut buf = Vec::with_capacity(frame.len());
    // Formatting into a Vec cannot fail.
    let _ = frame.format(&mut buf);
    Bytes::from(buf)
}

/// Milliseconds since the Unix epoch (the `time` of JSON events).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An error line from the server itself rather than the room (e.g. Redis is unavailable),
/// in the same shape as the room's error lines.
pub fn error_frame(format: Format, reason: &str, time_ms: u64) -> Bytes {
    match format {
        Format::Plain => text_frame(format!(" .... error: {reason}")),
        Format::Json => {
            let event = JsonEvent {
                kind: "error",
                seq: None,
                from: None,
                text: Some(reason),
                time: time_ms,
                nick: None,
                room: None,
                members: None,
                member_count: None,
                old: None,
                new: None,
                lost: None,
                replay: false,
            };
            // Serializing plain strings and integers cannot fail.
            text_frame(serde_json::to_string(&event).unwrap_or_default())
        }
    }
}

/// The seed-compatible text line.
pub fn plain(out: &Output) -> String {
    out.to_string()
}

/// The `chat.v1.json` text; `time_ms` is the server's clock in ms since the Unix epoch.
pub fn json(out: &Output, room: &str, time_ms: u64) -> String {
    let kind = out.kind();
    let nick = out.nick().map(|n| n.as_str());
    // Lines without structured text (help, gap) carry their rendered line minus the prefix.
    let rendered;
    let text = match kind {
        OutputKind::Help | OutputKind::Gap => {
            rendered = out.to_string();
            Some(rendered.trim_start_matches(" .... "))
        }
        _ => out.text(),
    };
    let event = JsonEvent {
        kind: kind.as_str(),
        seq: out.seq(),
        from: nick,
        text,
        time: time_ms,
        nick: (kind == OutputKind::Welcome).then_some(nick).flatten(),
        room: (kind == OutputKind::Welcome).then_some(room),
        members: out
            .members()
            .map(|m| m.iter().map(|n| n.as_str()).collect()),
        member_count: out.member_count(),
        old: out.old_nick().map(|n| n.as_str()),
        new: (kind == OutputKind::Nick).then_some(nick).flatten(),
        lost: out.lost(),
        replay: out.is_replay(),
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&event).unwrap_or_default()
}

/// Encodes an output lazily: at most once per format, however many recipients share it.
pub struct Encoded<'a> {
    out: &'a Output,
    room: &'a str,
    time_ms: u64,
    plain: Option<Bytes>,
    json: Option<Bytes>,
}

impl<'a> Encoded<'a> {
    /// Prepares `out` for delivery; nothing is encoded until a recipient needs it.
    pub fn new(out: &'a Output, room: &'a str, time_ms: u64) -> Self {
        Encoded {
            out,
            room,
            time_ms,
            plain: None,
            json: None,
        }
    }

    /// The frame for `format`, sharing its bytes with every earlier call.
    pub fn frame(&mut self, format: Format) -> Bytes {
        match format {
            Format::Plain => self
                .plain
                .get_or_insert_with(|| text_frame(plain(self.out)))
                .clone(),
            Format::Json => self
                .json
                .get_or_insert_with(|| text_frame(json(self.out, self.room, self.time_ms)))
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_unmasked_final_text_frames() {
        let short = text_frame("hi".into());
        assert_eq!(&short[..], b"\x81\x02hi");
        let medium = text_frame("x".repeat(300));
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 4 + 300);
        let long = text_frame("y".repeat(70_000));
        assert_eq!(long[1], 127);
        assert_eq!(&long[2..10], &70_000u64.to_be_bytes());
    }
}
