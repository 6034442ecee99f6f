//! The `chat-server` binary: parse flags, bind, print the address, serve until Ctrl-C/SIGTERM.

use std::process::ExitCode;

use chat_server::{Config, Server};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("chat-server: cannot listen: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match server.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("chat-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Signal listeners exist before the address is printed, so a signal sent as soon as the
    // line appears shuts down gracefully instead of killing the process.
    let signals = wait_for_signal();
    // The first stdout line is the address: scripts and tests read the port from it.
    let scheme = if server.is_tls() { "https" } else { "http" };
    println!("listening on {scheme}://{addr}");

    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        signals.await;
        tracing::info!("signal received");
        handle.shutdown();
    });
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat-server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now; the returned future resolves on either.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
