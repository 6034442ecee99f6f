//! `server_handshake_frames`: one client connection's bytes through the server's real HTTP
//! handshake and WebSocket frame path, in memory.
//!
//! Each execution serves ONE connection with `chat_server::fuzzing::serve_one` (hyper's
//! HTTP/1 server with the server's settings, the axum router, tungstenite, the hub and a
//! room, on a fresh hub) over a `tokio::io::duplex` pipe, on a current-thread runtime built
//! once whose clock is paused: the server's timeouts cost no wall time, and an execution
//! is deterministic. The target writes the client's bytes, lets the server answer what it
//! can, closes its sending side (EOF),
//! reads everything the server answers until it closes, and waits for every server task.
//!
//! Input:
//! - anything not starting with `~`: raw bytes from the client (the seeds are a real
//!   handshake followed by masked frames);
//! - `~` then `arbitrary` bytes: a structured request (path, nick, since, key, subprotocol)
//!   and a list of client messages (text, commands, fragments, ping, pong, close, binary, any
//!   opcode), serialized here. The request is a valid upgrade and the frames are well-formed
//!   unless the input draws breakages (missing or bad headers, other paths, HTTP/1.0, extra
//!   headers) or frame flaws (unmasked, no FIN, RSV bits, odd or lying lengths), so most
//!   executions get past the handshake.
//!
//! Checked:
//! - no panic, in the target or in any server task (libFuzzer's panic hook aborts);
//! - the server finishes within 120 s of paused-clock time after the client's EOF (no hang);
//! - the answer is a sequence of complete HTTP/1.x responses; after a `101`, only well-formed
//!   server frames (FIN, no RSV bits, unmasked, minimal length encoding, known opcodes,
//!   control payloads <= 125 bytes, UTF-8 text, a valid close code, nothing after a close);
//! - a structured request that is a valid upgrade gets `101` with the correct
//!   `Sec-WebSocket-Accept`, the subprotocol when asked for, and a welcome as its first frame
//!   (JSON objects with a string `type` on `chat.v1.json`).
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
});

static CONFIG: LazyLock<chat_server::Config> = LazyLock::new(chat_server::Config::defaults);

/// How long (paused clock) the server may take to finish after the client's EOF: above its
/// own timeouts (handshake 10 s, close wait 5 s, linger 2 s), so hitting it means a hang.
const DEADLINE: Duration = Duration::from_secs(120);

/// How long the client stays quiet (paused clock) before its EOF: shorter than any server
/// timeout, so the server is simply waiting for input by then.
const QUIET: Duration = Duration::from_millis(100);

fuzz_target!(|data: &[u8]| {
    // The accept-key helpers against RFC 6455's own example, once.
    static SELF_TEST: LazyLock<()> = LazyLock::new(|| {
        let key = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        assert_eq!(
            base64(&sha1(key.as_bytes())),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    });
    LazyLock::force(&SELF_TEST);
    match data.split_first() {
        Some((b'~', rest)) => {
            let Ok(req) = Request::arbitrary_take_rest(Unstructured::new(rest)) else {
                return;
            };
            let (bytes, expect) = req.serialize();
            let answer = exchange(bytes);
            check_answer(&answer, expect.as_ref());
        }
        _ => {
            let answer = exchange(data.to_vec());
            check_answer(&answer, None);
        }
    }
});

/// Sends `input` to a fresh server connection, closes the sending side, returns the answer.
fn exchange(input: Vec<u8>) -> Vec<u8> {
    RUNTIME.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let serve = chat_server::fuzzing::serve_one(server, peer, CONFIG.clone());
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            // The server may close before reading everything: a broken pipe is fine.
            let _ = wr.write_all(&input).await;
            // On the paused clock this sleep ends only once the server is idle (it waits for
            // more input): it has answered everything it can, pipelined requests included.
            // An EOF sooner would make hyper drop answers it has not written yet.
            tokio::time::sleep(QUIET).await;
            let _ = wr.shutdown().await;
            wr
        };
        let read = async move {
            let mut answer = Vec::new();
            let _ = rd.read_to_end(&mut answer).await;
            answer
        };
        match tokio::time::timeout(DEADLINE, async { tokio::join!(serve, write, read) }).await {
            Ok(((), _wr, answer)) => answer,
            Err(_) => {
                panic!("the server did not finish within {DEADLINE:?} after the client's EOF")
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Structured requests: a valid upgrade and well-formed frames unless a flaw is drawn
// ---------------------------------------------------------------------------------------------

/// Where the upgrade goes: `/`, `/chat` or `/chat/NAME`, NAME from the room alphabet
/// (1-64 characters is valid; 0 or 65-70 is not).
#[derive(Arbitrary, Debug)]
enum WsPath {
    Root,
    Chat,
    Room(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Protocol {
    Json,
    /// `chat.v0, chat.v1.json`.
    JsonInList,
    Other,
}

/// Something that makes the request no longer a plain valid upgrade.
#[derive(Arbitrary, Debug)]
enum Breakage {
    NoUpgradeHeader,
    NoConnectionHeader,
    NoKey,
    KeyRaw(String),
    NoVersion,
    VersionRaw(String),
    PathRaw(String),
    PathHealthz,
    PathMetrics,
    SinceRaw(String),
    ProtocolRaw(String),
    Origin(String),
    Header(String, String),
    Http10,
}

/// A message from the client. `Fragmented` is a text message in two frames.
#[derive(Arbitrary, Debug)]
enum FrameKind {
    Text(String),
    /// `/nick NAME`, `/me ...`, `/who`, `/help`: reaches the room's commands.
    Command(u8, String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Binary(Vec<u8>),
    Fragmented(String, String),
    Raw {
        opcode: u8,
        payload: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum LenForm {
    /// 126 + 16-bit length even when shorter would do.
    Ext16,
    /// 127 + 64-bit length.
    Ext64,
    /// A length that is not the payload's.
    Claim(u64),
}

/// Something wrong with a frame.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Flaw {
    /// A server must refuse unmasked client frames.
    Unmasked,
    NotFin,
    Rsv(u8),
    Len(LenForm),
}

#[derive(Arbitrary, Debug)]
struct Frame {
    kind: FrameKind,
    mask: [u8; 4],
    flaw: Option<Flaw>,
}

#[derive(Arbitrary, Debug)]
struct Request {
    path: WsPath,
    nick: Option<String>,
    since: Option<u64>,
    key: [u8; 16],
    protocol: Option<Protocol>,
    breakages: Vec<Breakage>,
    frames: Vec<Frame>,
    tail: Vec<u8>,
}

/// What a valid upgrade request must get.
struct Expect {
    accept: String,
    json: bool,
}

const ROOM_ALPHABET: &[u8; 64] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Request {
    fn serialize(&self) -> (Vec<u8>, Option<Expect>) {
        // Any breakage, or a room name of the wrong length, and no outcome is predicted.
        let mut valid = self.breakages.is_empty();
        let has = |f: &dyn Fn(&Breakage) -> bool| self.breakages.iter().any(f);
        let mut path = match &self.path {
            WsPath::Root => "/".to_owned(),
            WsPath::Chat => "/chat".to_owned(),
            WsPath::Room(name) => {
                let name: String = name
                    .iter()
                    .take(70)
                    .map(|b| ROOM_ALPHABET[usize::from(b % 64)] as char)
                    .collect();
                valid &= (1..=64).contains(&name.len());
                format!("/chat/{name}")
            }
        };
        let mut query = Vec::new();
        if let Some(nick) = &self.nick {
            query.push(format!("nick={}", percent_encode(nick)));
        }
        if let Some(since) = self.since {
            query.push(format!("since={since}"));
        }
        let mut version = "HTTP/1.1";
        let key = base64(&self.key);
        let accept = base64(&sha1(
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        ));
        let mut headers = vec![("Host".to_owned(), "chat.test".to_owned())];
        if !has(&|b| matches!(b, Breakage::NoUpgradeHeader)) {
            headers.push(("Upgrade".into(), "websocket".into()));
        }
        if !has(&|b| matches!(b, Breakage::NoConnectionHeader)) {
            headers.push(("Connection".into(), "keep-alive, Upgrade".into()));
        }
        if !has(&|b| matches!(b, Breakage::NoKey | Breakage::KeyRaw(_))) {
            headers.push(("Sec-WebSocket-Key".into(), key));
        }
        if !has(&|b| matches!(b, Breakage::NoVersion | Breakage::VersionRaw(_))) {
            headers.push(("Sec-WebSocket-Version".into(), "13".into()));
        }
        let json = matches!(self.protocol, Some(Protocol::Json | Protocol::JsonInList));
        match self.protocol {
            None => {}
            Some(Protocol::Json) => {
                headers.push(("Sec-WebSocket-Protocol".into(), "chat.v1.json".into()))
            }
            Some(Protocol::JsonInList) => headers.push((
                "Sec-WebSocket-Protocol".into(),
                "chat.v0, chat.v1.json".into(),
            )),
            Some(Protocol::Other) => {
                headers.push(("Sec-WebSocket-Protocol".into(), "chat.v0".into()))
            }
        }
        for b in &self.breakages {
            match b {
                Breakage::NoUpgradeHeader
                | Breakage::NoConnectionHeader
                | Breakage::NoKey
                | Breakage::NoVersion => {}
                Breakage::KeyRaw(k) => headers.push(("Sec-WebSocket-Key".into(), k.clone())),
                Breakage::VersionRaw(v) => {
                    headers.push(("Sec-WebSocket-Version".into(), v.clone()))
                }
                Breakage::PathRaw(p) => path = p.clone(),
                Breakage::PathHealthz => path = "/healthz".into(),
                Breakage::PathMetrics => path = "/metrics".into(),
                Breakage::SinceRaw(v) => query.push(format!("since={v}")),
                Breakage::ProtocolRaw(p) => {
                    headers.push(("Sec-WebSocket-Protocol".into(), p.clone()))
                }
                Breakage::Origin(o) => headers.push(("Origin".into(), o.clone())),
                Breakage::Header(n, v) => headers.push((n.clone(), v.clone())),
                Breakage::Http10 => version = "HTTP/1.0",
            }
        }
        let target = if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        };
        let mut req = format!("GET {target} {version}\r\n");
        for (name, value) in &headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        for frame in &self.frames {
            frame.serialize(&mut bytes);
        }
        bytes.extend_from_slice(&self.tail);
        (bytes, valid.then_some(Expect { accept, json }))
    }
}

impl Frame {
    fn serialize(&self, out: &mut Vec<u8>) {
        // (FIN, opcode, payload) of each frame this message takes.
        let pieces: Vec<(bool, u8, Vec<u8>)> = match &self.kind {
            FrameKind::Text(s) => vec![(true, 0x1, s.as_bytes().to_vec())],
            FrameKind::Command(which, arg) => {
                let name = ["nick", "me", "who", "help", "NICK"][usize::from(which % 5)];
                vec![(true, 0x1, format!("/{name} {arg}").into_bytes())]
            }
            FrameKind::Ping(p) => vec![(true, 0x9, p.iter().copied().take(125).collect())],
            FrameKind::Pong(p) => vec![(true, 0xA, p.iter().copied().take(125).collect())],
            FrameKind::Close(None) => vec![(true, 0x8, Vec::new())],
            FrameKind::Close(Some((code, reason))) => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend(reason.bytes().take(123));
                vec![(true, 0x8, p)]
            }
            FrameKind::Binary(b) => vec![(true, 0x2, b.clone())],
            FrameKind::Fragmented(a, b) => vec![
                (false, 0x1, a.as_bytes().to_vec()),
                (true, 0x0, b.as_bytes().to_vec()),
            ],
            FrameKind::Raw { opcode, payload } => vec![(true, opcode & 0x0F, payload.clone())],
        };
        for (i, (fin, opcode, payload)) in pieces.into_iter().enumerate() {
            let flaw = if i == 0 { self.flaw } else { None };
            let fin = fin && !matches!(flaw, Some(Flaw::NotFin));
            let rsv = match flaw {
                Some(Flaw::Rsv(r)) => (r & 0x07) << 4,
                _ => 0,
            };
            out.push(if fin { 0x80 } else { 0 } | rsv | opcode);
            let masked = !matches!(flaw, Some(Flaw::Unmasked));
            let mask_bit = if masked { 0x80 } else { 0 };
            let len = payload.len() as u64;
            match flaw {
                Some(Flaw::Len(LenForm::Claim(n))) => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Some(Flaw::Len(LenForm::Ext16)) if len <= 0xFFFF => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                Some(Flaw::Len(_)) => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                _ if len < 126 => out.push(mask_bit | len as u8),
                _ if len <= 0xFFFF => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            if masked {
                out.extend_from_slice(&self.mask);
                out.extend(
                    payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ self.mask[i % 4]),
                );
            } else {
                out.extend_from_slice(&payload);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the answer
// ---------------------------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `FUZZ_DEBUG=1` prints every answer (to look at what a seed or a crash gets).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_DEBUG").is_some());

/// The server's answer: HTTP responses, then frames if one of them was `101`.
fn check_answer(answer: &[u8], expect: Option<&Expect>) {
    if *DEBUG {
        eprintln!(
            "answer ({} bytes): {:?}",
            answer.len(),
            String::from_utf8_lossy(answer)
        );
    }
    let mut rest = answer;
    let mut first = true;
    loop {
        if rest.is_empty() {
            assert!(expect.is_none() || !first, "a valid upgrade got no answer");
            return;
        }
        assert!(
            rest.starts_with(b"HTTP/1.1 ") || rest.starts_with(b"HTTP/1.0 "),
            "answer is not an HTTP response: {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(200)])
        );
        let end = find(rest, b"\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "incomplete response head: {:?}",
                String::from_utf8_lossy(rest)
            )
        });
        let head = std::str::from_utf8(&rest[..end]).expect("response head is not UTF-8");
        rest = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if first {
            if let Some(e) = expect {
                assert_eq!(status, 101, "a valid upgrade was refused: {head}");
                assert_eq!(
                    header("sec-websocket-accept"),
                    Some(e.accept.as_str()),
                    "{head}"
                );
                let proto = header("sec-websocket-protocol");
                assert_eq!(proto == Some("chat.v1.json"), e.json, "{head}");
            }
        }
        first = false;
        if status == 101 {
            let json = header("sec-websocket-protocol") == Some("chat.v1.json");
            check_frames(rest, json, expect.is_some());
            return;
        }
        match header("content-length").map(|v| v.parse::<usize>()) {
            // (A shorter body is a HEAD response, which the raw input may have asked for.)
            Some(Ok(n)) if rest.len() >= n => rest = &rest[n..],
            // Chunked or unframed body: nothing more to check reliably.
            _ => return,
        }
    }
}

/// Server-to-client frames after a `101`.
fn check_frames(mut rest: &[u8], json: bool, expect_welcome: bool) {
    let mut index = 0;
    let mut closed = false;
    while !rest.is_empty() {
        assert!(!closed, "frames after the close frame");
        assert!(rest.len() >= 2, "truncated frame header");
        let (b0, b1) = (rest[0], rest[1]);
        assert_eq!(b0 & 0x80, 0x80, "frame #{index} without FIN");
        assert_eq!(b0 & 0x70, 0, "frame #{index} with RSV bits");
        assert_eq!(
            b1 & 0x80,
            0,
            "frame #{index} is masked (a server must not mask)"
        );
        let opcode = b0 & 0x0F;
        let (len, header_len) = match b1 & 0x7F {
            126 => {
                assert!(rest.len() >= 4, "truncated 16-bit length");
                let n = u64::from(u16::from_be_bytes([rest[2], rest[3]]));
                assert!(n >= 126, "non-minimal 16-bit length {n}");
                (n, 4)
            }
            127 => {
                assert!(rest.len() >= 10, "truncated 64-bit length");
                let n = u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes"));
                assert!(
                    n > 0xFFFF && n >> 63 == 0,
                    "non-minimal or huge 64-bit length {n}"
                );
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).expect("length fits");
        assert!(
            rest.len() - header_len >= len,
            "truncated frame #{index} payload"
        );
        let payload = &rest[header_len..header_len + len];
        rest = &rest[header_len + len..];
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(payload).expect("text frame is not UTF-8");
                if json {
                    let v: serde_json::Value = serde_json::from_str(text)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
                    let kind = v.get("type").and_then(|t| t.as_str());
                    assert!(kind.is_some(), "JSON event without a type: {text}");
                    if index == 0 && expect_welcome {
                        assert_eq!(kind, Some("welcome"), "first frame: {text}");
                    }
                } else if index == 0 && expect_welcome {
                    assert!(text.starts_with(" .... you are "), "first frame: {text:?}");
                }
            }
            0x8 => {
                assert!(len <= 125, "close payload of {len} bytes");
                assert!(len != 1, "close payload of 1 byte");
                if len >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    assert!(
                        matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999),
                        "close code {code}"
                    );
                    std::str::from_utf8(&payload[2..]).expect("close reason is not UTF-8");
                }
                closed = true;
            }
            0x9 | 0xA => assert!(len <= 125, "control frame of {len} bytes"),
            other => panic!("frame #{index}: unexpected opcode {other:#x}"),
        }
        if index == 0 && expect_welcome {
            assert_eq!(opcode, 0x1, "the first frame is the welcome");
        }
        index += 1;
    }
    assert!(
        !expect_welcome || index > 0,
        "no welcome after a valid upgrade"
    );
}

// ---------------------------------------------------------------------------------------------
// Base64 and SHA-1, written out so the accept key is checked independently of the server
// ---------------------------------------------------------------------------------------------

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}
