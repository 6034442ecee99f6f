//! Builds `examples/c/tcp_chat.c` (a line-based TCP chat server over chat.h) against the
//! static library, the shared library and the static library under ASan+UBSan, and talks to
//! it over TCP: nicknames, chat both ways, errors to the sender only, `/who`, leave notices,
//! an over-long line, the client limit, and a clean exit 0 on SIGTERM (leak-checked under
//! the sanitizers).
//!
//! Every read has a timeout and the server is killed if a test panics, so nothing can hang.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{command, compile, Link};

/// The longest wait for anything: a line, a connection, the server's exit.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The server's input buffer: a line must end within this many bytes.
const IN_MAX: usize = 8192;

/// A running tcp_chat, killed on drop unless [`Server::stop`] saw it exit.
struct Server {
    child: Child,
    link: Link,
    port: u16,
    /// Lines the server prints after `listening on ...`.
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    exited: bool,
}

impl Server {
    /// Starts `exe` on an ephemeral port; `fd_limit` runs it under `ulimit -n`.
    fn start(exe: &Path, link: Link, fd_limit: Option<u32>) -> Server {
        let mut cmd = command(exe, link);
        if let Some(limit) = fd_limit {
            // The same environment, but the program runs from a shell that lowers the limit.
            let script = format!("ulimit -n {limit} && exec \"$0\" 0");
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(script).arg(exe);
            for (key, value) in cmd.get_envs() {
                if let Some(value) = value {
                    sh.env(key, value);
                }
            }
            cmd = sh;
        } else {
            cmd.arg("0");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        // Reader threads, so a full pipe can never block the server and reads can time out.
        let (lines, stdout_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let mut server = Server {
            child,
            link,
            port: 0,
            stdout: stdout_rx,
            stderr: Some(stderr),
            exited: false,
        };
        let first = server
            .stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("tcp_chat ({link:?}) printed no `listening on` line: {e}"));
        server.port = first
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from tcp_chat ({link:?}): {first:?}"));
        assert_ne!(server.port, 0, "the actual port, not the requested 0");
        server
    }

    fn connect(&self, who: &str) -> Client {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("{who}: cannot connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        Client {
            who: who.to_owned(),
            reader: BufReader::new(stream),
        }
    }

    /// Sends SIGTERM and checks the server exits 0 in time, silently (no sanitizer report on
    /// stderr, nothing more on stdout).
    fn stop(mut self) {
        let link = self.link;
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for tcp_chat") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "tcp_chat ({link:?}) still runs {TIMEOUT:?} after SIGTERM"
            );
            thread::sleep(Duration::from_millis(10));
        };
        self.exited = true;
        let stderr = self.stderr.take().expect("stderr reader").join().unwrap();
        assert!(
            status.success(),
            "tcp_chat ({link:?}) exited with {status} after SIGTERM:\n{stderr}"
        );
        assert!(
            stderr.is_empty(),
            "tcp_chat ({link:?}) wrote to stderr:\n{stderr}"
        );
        let mut more = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(TIMEOUT) {
            more.push(line);
        }
        assert!(
            more.is_empty(),
            "tcp_chat ({link:?}) printed more: {more:?}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One TCP client of the server.
struct Client {
    who: String,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        let who = &self.who;
        self.reader
            .get_mut()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{who}: send failed: {e}"));
    }

    /// The next line, without its newline.
    fn line(&mut self) -> String {
        let who = &self.who;
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => panic!(
                "{who}: connection closed while waiting for a line (got {:?})",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!(
                "{who}: no line within {TIMEOUT:?}: {e} (got {:?})",
                String::from_utf8_lossy(&line)
            ),
        }
        line.pop();
        String::from_utf8(line).unwrap_or_else(|e| panic!("{who}: a line is not UTF-8: {e}"))
    }

    /// The next lines are exactly `want`, in order.
    fn expect<S: AsRef<str>>(&mut self, want: &[S]) {
        for want in want {
            let got = self.line();
            assert_eq!(
                got,
                want.as_ref(),
                "{} received an unexpected line",
                self.who
            );
        }
    }

    /// The server closed the connection cleanly with nothing more to say.
    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let who = &self.who;
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "{who}: expected the connection to close, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("{who}: expected the connection to close: {e}"),
        }
    }

    /// Reads the welcome line, checks who else it lists, and returns the random nickname.
    fn welcome(&mut self, also_here: &str) -> String {
        let line = self.line();
        let nick = welcome_nick(&line);
        assert_eq!(
            line,
            format!(" .... you are {nick}; {also_here} Type /help for commands."),
            "{}: welcome",
            self.who
        );
        nick
    }
}

/// The nickname a welcome line (" .... you are NICK; ...") gives.
fn welcome_nick(line: &str) -> String {
    line.strip_prefix(" .... you are ")
        .and_then(|rest| rest.split_once(';'))
        .map(|(nick, _)| nick.to_owned())
        .unwrap_or_else(|| panic!("not a welcome line: {line:?}"))
}

/// Two clients rename themselves, chat, make mistakes, list the room, and one leaves.
fn conversation(exe: &Path, link: Link) {
    let server = Server::start(exe, link, None);

    let mut alice = server.connect("alice");
    let a = alice.welcome("nobody else is here yet.");
    alice.send(b"/nick alice\n");
    alice.expect(&[format!(" .... {a} is now known as alice.")]);

    let mut bob = server.connect("bob");
    let b = bob.welcome("also here: alice.");
    // The history replayed to a joiner, then the joiner's own notice to the others.
    bob.expect(&[
        format!(" .... {a} has joined."),
        format!(" .... {a} is now known as alice."),
    ]);
    alice.expect(&[format!(" .... {b} has joined.")]);
    bob.send(b"/nick bob\n");
    let renamed = format!(" .... {b} is now known as bob.");
    alice.expect(&[&renamed]);
    bob.expect(&[&renamed]);

    // Chat both ways; CRLF line ends, several lines in one write and a line split across
    // writes all arrive as whole messages, in order.
    alice.send(b"hello\n");
    alice.expect(&["alice: hello"]);
    bob.expect(&["alice: hello"]);
    bob.send(b"hi alice\r\n");
    bob.expect(&["bob: hi alice"]);
    alice.expect(&["bob: hi alice"]);
    alice.send(b"one\ntw");
    thread::sleep(Duration::from_millis(50));
    alice.send(b"o\n/me waves\n");
    let chat = ["alice: one", "alice: two", "* alice waves"];
    alice.expect(&chat);
    bob.expect(&chat);

    // Bad input: an error line to the sender only.
    alice.send(b"caf\xe9\n");
    alice.send(b"bell\x07\n");
    alice.send(b"\n");
    alice.send(b"/nick BOB\n");
    alice.send(b"/bogus\n");
    alice.send(&[b'x'; IN_MAX - 1]);
    alice.send(b"\n");
    alice.expect(&[
        " .... error: text is not valid UTF-8",
        " .... error: control characters are not allowed (only tab and newline)",
        " .... error: empty message ignored",
        " .... error: nickname BOB is taken",
        " .... error: unknown command /bogus; type /help for the list",
        " .... error: message too long (8191 bytes; the limit is 4096)",
    ]);
    alice.send(b"/who\n");
    alice.expect(&[" .... 2 here: alice, bob"]);
    // Bob's stream is ordered: his next line being his own message proves he got none of
    // alice's errors.
    bob.send(b"still here\n");
    bob.expect(&["bob: still here"]);
    alice.expect(&["bob: still here"]);

    drop(bob);
    alice.expect(&[" .... bob has left."]);
    alice.send(b"/who\n");
    alice.expect(&[" .... 1 here: alice"]);

    // Shutting down with a member still connected: it is closed, and nothing leaks.
    server.stop();
    alice.expect_eof();
}

/// A line longer than the input buffer gets an error and a disconnect; the others see the
/// leave and the room carries on.
fn overlong_line(exe: &Path, link: Link) {
    let server = Server::start(exe, link, None);
    let mut alice = server.connect("alice");
    let a = alice.welcome("nobody else is here yet.");
    let mut mallory = server.connect("mallory");
    let m = mallory.welcome(&format!("also here: {a}."));
    mallory.expect(&[format!(" .... {a} has joined.")]);
    alice.expect(&[format!(" .... {m} has joined.")]);

    // More than the buffer, so the server has unread input when it closes.
    mallory.send(&vec![b'x'; 3 * IN_MAX]);
    mallory.expect(&[format!(
        " .... error: line too long (no newline in {IN_MAX} bytes); closing"
    )]);
    mallory.expect_eof();
    alice.expect(&[format!(" .... {m} has left.")]);

    alice.send(b"still open?\n");
    alice.expect(&[format!("{a}: still open?")]);
    server.stop();
    alice.expect_eof();
}

/// With few file descriptors the server takes fewer clients, and refuses the rest with a line.
fn client_limit(exe: &Path, link: Link) {
    // tcp_chat keeps 16 descriptors in reserve: a limit of 24 leaves room for 8 clients.
    let server = Server::start(exe, link, Some(24));
    let mut first = server.connect("first");
    let nick = first.welcome("nobody else is here yet.");
    let mut others = Vec::new();
    for i in 1..8 {
        let mut client = server.connect(&format!("client {i}"));
        let other = welcome_nick(&client.line());
        first.expect(&[format!(" .... {other} has joined.")]);
        others.push((client, other));
    }

    // `/who` lists the members in nickname order, ignoring ASCII case.
    let who = |others: &[(Client, String)]| {
        let mut nicks: Vec<&str> = others.iter().map(|(_, n)| n.as_str()).collect();
        nicks.push(&nick);
        nicks.sort_by_key(|n| n.to_ascii_lowercase());
        format!(" .... {} here: {}", nicks.len(), nicks.join(", "))
    };

    let mut refused = server.connect("refused");
    refused.expect(&[" .... error: the server is full; try again later"]);
    refused.expect_eof();
    first.send(b"/who\n");
    first.expect(&[who(&others)]);

    // A leave frees a place.
    let (gone, gone_nick) = others.pop().expect("seven others");
    drop(gone);
    first.expect(&[format!(" .... {gone_nick} has left.")]);
    let mut next = server.connect("next");
    let next_nick = welcome_nick(&next.line());
    first.expect(&[format!(" .... {next_nick} has joined.")]);
    others.push((next, next_nick));
    first.send(b"/who\n");
    first.expect(&[who(&others)]);
    server.stop();
}

fn run(link: Link) {
    let start = Instant::now();
    let exe = compile("examples/c/tcp_chat.c", link);
    conversation(&exe, link);
    overlong_line(&exe, link);
    client_limit(&exe, link);
    eprintln!("tcp_chat ({link:?}): {:.2?}", start.elapsed());
}

#[test]
fn tcp_chat_linked_statically() {
    run(Link::Static);
}

#[test]
fn tcp_chat_linked_dynamically() {
    run(Link::Dynamic);
}

#[test]
fn tcp_chat_under_address_and_undefined_behaviour_sanitizers() {
    run(Link::Sanitized);
}
