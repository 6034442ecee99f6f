//! A benchmark peer for `chat-server`: the chat server most people would write with
//! tokio-tungstenite, following the shape of that crate's own `examples/server.rs`.
//!
//! One global `Mutex<HashMap<room, HashMap<peer, UnboundedSender<Message>>>>`; every
//! connection gets a task that reads frames and broadcasts by locking the map and
//! `unbounded_send`ing to each peer of its room, while the connection's outbound queue
//! is forwarded to its socket. Default tungstenite and socket settings throughout.
//!
//! Wire semantics are the tutorial's (like `chat-server --seed-compat`): the room is the
//! request path, each client is `user-N`, a text `T` from it reaches everyone in its room
//! (itself included) as `user-N: T`, and its departure as ` .... user-N has left.`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::Message;

type Tx = UnboundedSender<Message>;
/// Room (request path) -> peers in it -> their outbound queue.
type Rooms = Arc<Mutex<HashMap<String, HashMap<SocketAddr, Tx>>>>;

/// Naive tokio-tungstenite chat server (benchmark peer).
#[derive(Parser, Debug)]
#[command(name = "naive-chat-server", about, long_about = None)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

/// Sends `msg` to every peer of `room` (peers whose task already ended are skipped).
fn broadcast(peers: &HashMap<SocketAddr, Tx>, msg: &Message) {
    for tx in peers.values() {
        let _ = tx.unbounded_send(msg.clone());
    }
}

async fn handle_connection(rooms: Rooms, raw_stream: TcpStream, addr: SocketAddr) {
    // The handshake callback sees the HTTP request; remember its path as the room.
    let mut room = String::new();
    #[allow(clippy::result_large_err)] // the signature tungstenite's `Callback` requires
    let callback = |req: &Request, resp: Response| {
        room = req.uri().path().to_owned();
        Ok(resp)
    };
    let ws_stream = match tokio_tungstenite::accept_hdr_async(raw_stream, callback).await {
        Ok(ws) => ws,
        Err(_) => return, // not a WebSocket client; nothing to clean up
    };

    // Like the tutorial: a random nickname, not necessarily unique.
    let nick = format!("user-{}", rand::random_range(0..100_000u32));

    // Join: insert the write queue of this peer into its room.
    let (tx, rx) = unbounded();
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .insert(addr, tx);

    let (outgoing, incoming) = ws_stream.split();

    // Every text frame goes to the whole room, sender included. Broadcasting under the
    // lock gives all members of a room the same order.
    let broadcast_incoming = incoming.try_for_each(|msg| {
        if let Message::Text(text) = msg {
            let line = Message::text(format!("{nick}: {text}"));
            if let Some(peers) = rooms.lock().unwrap().get(&room) {
                broadcast(peers, &line);
            }
        }
        future::ok(())
    });

    // Drain this peer's queue into its socket.
    let receive_from_others = rx.map(Ok).forward(outgoing);

    // Whichever side ends first (close, read or write error) ends the connection.
    pin_mut!(broadcast_incoming, receive_from_others);
    future::select(broadcast_incoming, receive_from_others).await;

    // Leave: drop the peer, drop the room if it is now empty, otherwise tell the rest.
    let mut rooms = rooms.lock().unwrap();
    if let Some(peers) = rooms.get_mut(&room) {
        peers.remove(&addr);
        if peers.is_empty() {
            rooms.remove(&room);
        } else {
            broadcast(peers, &Message::text(format!(" .... {nick} has left.")));
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rooms = Rooms::default();

    let listener = TcpListener::bind((args.bind, args.port)).await?;
    // The bench harness waits for exactly this line.
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    // One task per connection.
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                tokio::spawn(handle_connection(rooms.clone(), stream, addr));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off briefly instead of spinning.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
