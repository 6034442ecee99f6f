//! Drives a [`Room`] without sockets and prints what each member sees.
//!
//! ```text
//! cargo run -p chat-core --example simulate                  # default config: every feature
//! cargo run -p chat-core --example simulate -- --seed-compat # RoomConfig::seed(), the tutorial
//! cargo run -p chat-core --example simulate -- --seed 7      # another RNG seed (random nicks)
//! ```
//!
//! The `Shell` below does what a real server does around a room, minus the sockets: it feeds
//! one input at a time, drains `poll_output` after each one, and resolves every output's
//! `Audience` against the room's members at that moment. Each client's transcript is what
//! its socket would have received, rendered with `to_string()`.

use chat_core::{Audience, ConnId, Input, Output, Room, RoomConfig};

/// The shell's side of one person: their current connection and what they have received.
struct Client {
    name: &'static str,
    /// `None` while disconnected.
    conn: Option<ConnId>,
    /// The nickname it had when it disconnected, asked for again on reconnect.
    nick: Option<String>,
    /// The latest event seq this client has seen: what it sends back when it reconnects.
    last_seq: Option<u64>,
    transcript: Vec<String>,
}

struct Shell {
    room: Room,
    clients: Vec<Client>,
    now_ms: u64,
    next_conn: u64,
}

impl Shell {
    fn new(config: RoomConfig, seed: u64, names: &[&'static str]) -> Shell {
        let clients = names
            .iter()
            .map(|&name| Client {
                name,
                conn: None,
                nick: None,
                last_seq: None,
                transcript: Vec::new(),
            })
            .collect();
        Shell {
            room: Room::new(config, seed),
            clients,
            now_ms: 0,
            next_conn: 1,
        }
    }

    fn client(&mut self, name: &str) -> &mut Client {
        let found = self.clients.iter_mut().find(|c| c.name == name);
        found.expect("a client of this scenario")
    }

    /// Connects `name` on a fresh connection, asking for `nick` (`None`: a random one).
    fn join(&mut self, name: &str, nick: Option<&str>) {
        let conn = self.connect(name);
        println!("{name} joins on conn {} asking for nick {nick:?}", conn.0);
        self.feed(Input::Join {
            conn,
            nick,
            resume_after: None,
        });
    }

    /// Connects `name` again: it asks for its old nickname and sends the last seq it saw, so
    /// the room replays exactly the events it missed.
    fn reconnect(&mut self, name: &str) {
        let conn = self.connect(name);
        let client = self.client(name);
        let (nick, resume_after) = (client.nick.take(), client.last_seq);
        let note = format!(
            "reconnected on conn {}, resume_after {resume_after:?}",
            conn.0
        );
        client.transcript.push(format!("      -- {note} --"));
        println!("{name} {note}, asking for nick {nick:?}");
        self.feed(Input::Join {
            conn,
            nick: nick.as_deref(),
            resume_after,
        });
    }

    fn connect(&mut self, name: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.client(name).conn = Some(conn);
        conn
    }

    fn say(&mut self, name: &str, text: &str) {
        let conn = self.client(name).conn.expect("a connected client");
        println!("{name} sends {text:?}");
        self.feed(Input::Message { conn, text });
    }

    fn leave(&mut self, name: &str) {
        // The socket is closed first: this client receives nothing from now on.
        let conn = self.client(name).conn.take().expect("a connected client");
        // Remember the nickname, to ask for it again on reconnect.
        let nick = self.room.nick(conn).map(|n| n.to_string());
        let client = self.client(name);
        client.nick = nick;
        client
            .transcript
            .push("      -- disconnected --".to_owned());
        println!("{name} disconnects");
        self.feed(Input::Leave { conn });
    }

    /// The drive contract: one `handle`, then `poll_output` until `None`.
    fn feed(&mut self, input: Input<'_>) {
        self.now_ms += 250;
        if let Err(error) = self.room.handle(self.now_ms, input) {
            println!("    refused: {error:?}");
        }
        while let Some(out) = self.room.poll_output() {
            self.deliver(&out);
        }
    }

    /// Sends `out` to the connections its audience names, as the room stands now.
    fn deliver(&mut self, out: &Output) {
        let line = match (out.seq(), out.is_replay()) {
            (Some(seq), false) => format!("#{seq:<4} | {out}"),
            (Some(seq), true) => format!("#{seq:<4} | {out}   <- replayed"),
            (None, _) => format!("      | {out}"),
        };
        let audience = out.audience();
        for client in &mut self.clients {
            let Some(conn) = client.conn else { continue };
            let receives = match audience {
                // A reply goes to its connection, member or not.
                Audience::Only(only) => only == conn,
                // A broadcast goes to the members it includes.
                _ => self.room.is_member(conn) && audience.includes(conn),
            };
            if receives {
                client.transcript.push(line.clone());
                client.last_seq = out.seq().or(client.last_seq);
            }
        }
    }

    fn print_transcripts(&self) {
        for client in &self.clients {
            let nick = client.conn.and_then(|conn| self.room.nick(conn));
            let now = nick.map_or("disconnected".to_owned(), |n| format!("now {n}"));
            println!("\n=== what {} saw ({now}) ===", client.name);
            println!("seq   | line, as rendered by to_string()");
            for line in &client.transcript {
                println!("{line}");
            }
        }
    }
}

/// Every feature on: welcome, join notices, commands, history and resume.
fn full_scenario(seed: u64) -> Shell {
    let mut shell = Shell::new(RoomConfig::default(), seed, &["ann", "ben", "cat"]);
    shell.join("ann", Some("ann"));
    shell.join("ben", None);
    shell.say("ann", "hi ben!");
    shell.join("cat", None);
    shell.say("ben", "/nick ben");
    shell.say("cat", "/me waves");
    shell.say("ben", "");
    shell.say("ben", "ding\u{7}");
    shell.say("cat", "/who");
    shell.say("cat", "/help");
    shell.leave("cat");
    shell.say("ann", "cat left; ben, did you see the game?");
    shell.say("ben", "//shrug yes");
    shell.reconnect("cat");
    shell.say("cat", "back, and I caught up");
    shell.leave("ben");
    shell
}

/// The tutorial's own scenario (as in `tests/seed_transcript.rs`) with `RoomConfig::seed()`:
/// random nicks, silent joins, `NICK: TEXT` to everyone, a leave notice to those who remain.
/// There are no commands, so `/who` and `/nick` are plain text.
fn seed_scenario(seed: u64) -> Shell {
    let mut shell = Shell::new(RoomConfig::seed(), seed, &["ann", "ben", "cat"]);
    shell.join("ann", None);
    shell.join("ben", None);
    shell.join("cat", None);
    shell.say("ann", "hello everyone");
    shell.say("ben", "hi! /who is here?");
    shell.say("cat", "/nick not-a-command here");
    shell.say("ann", "bye");
    shell.leave("ann");
    shell.say("ben", "see you, \u{1F44B}");
    shell
}

fn main() {
    let (mut seed_compat, mut seed) = (false, 42);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed-compat" => seed_compat = true,
            "--seed" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => seed = n,
                None => usage(),
            },
            _ => usage(),
        }
    }
    println!("--- inputs (seed {seed}) ---");
    let shell = if seed_compat {
        seed_scenario(seed)
    } else {
        full_scenario(seed)
    };
    shell.print_transcripts();
}

fn usage() -> ! {
    eprintln!("usage: simulate [--seed-compat] [--seed N]");
    std::process::exit(2);
}
