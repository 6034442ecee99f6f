//! Wire formats: how a `chat_core::Output` becomes a WebSocket frame.
//!
//! Plain text (no subprotocol) is the seed's exact line. `chat.v1.json` is one JSON object per
//! frame. Each output is encoded at most once per format and the frame's bytes are shared by
//! every recipient.

use chat_core::{Output, OutputKind};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

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

/// The seed-compatible text frame.
pub fn plain(out: &Output) -> Message {
    Message::text(out.to_string())
}

/// The `chat.v1.json` frame; `time_ms` is the server's clock in ms since the Unix epoch.
pub fn json(out: &Output, room: &str, time_ms: u64) -> Message {
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
    Message::text(serde_json::to_string(&event).unwrap_or_default())
}

/// Encodes an output lazily: at most once per format, however many recipients share it.
pub struct Encoded<'a> {
    out: &'a Output,
    room: &'a str,
    time_ms: u64,
    plain: Option<Message>,
    json: Option<Message>,
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
    pub fn frame(&mut self, format: Format) -> Message {
        match format {
            Format::Plain => self.plain.get_or_insert_with(|| plain(self.out)).clone(),
            Format::Json => self
                .json
                .get_or_insert_with(|| json(self.out, self.room, self.time_ms))
                .clone(),
        }
    }
}
