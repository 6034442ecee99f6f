//! Opens N idle WebSocket clients against a running server and holds them, so the server's
//! memory per idle connection can be read from `/proc/PID/status` (VmRSS).
//!
//! ```text
//! cargo run --release -p chat-server -- --port 9000 &
//! cargo run --release -p chat-server --example idle_clients -- ws://127.0.0.1:9000/chat/idle 1000 10
//! ```
//! Arguments: URL, number of clients (default 1000), seconds to hold them (default 10).

use std::time::Duration;

use futures_util::StreamExt;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/chat/idle".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let hold = Duration::from_secs(args.next().and_then(|n| n.parse().ok()).unwrap_or(10));

    // Each client keeps reading (join notices, pings) so the server never sees a slow consumer.
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => tasks.push(tokio::spawn(async move {
                let (_sink, mut stream) = ws.split();
                while let Some(Ok(_)) = stream.next().await {}
            })),
            Err(err) => {
                eprintln!("client {i}: {err}");
                std::process::exit(1);
            }
        }
    }
    println!("{count} idle clients connected to {url}; holding for {hold:?}");
    tokio::time::sleep(hold).await;
    for task in tasks {
        task.abort();
    }
}
