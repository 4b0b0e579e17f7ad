//! `waitline serve`: the Telnyx-compatible call-queue service.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use waitline_server::auth::KeySpec;
use waitline_server::config::{Cli, Command};
use waitline_server::durable::{SecretOrigin, stored_secret};
use waitline_server::webhook::Signer;

// Request handling allocates small short-lived buffers on every worker thread: mimalloc
// serves them from thread-local pages where glibc malloc takes arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to standard error; colour only on a terminal (and never with NO_COLOR), so a
    // log written to a file or a pipe carries no escape sequences.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let args = match Cli::parse().command {
        Command::Serve(args) => args,
        Command::Inspect(args) => {
            return match waitline_server::durable::inspect(&args.data_dir) {
                Ok(text) => {
                    print!("{text}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("waitline: {e}");
                    std::process::ExitCode::from(1)
                }
            };
        }
    };
    let mut config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("waitline: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The journal is replayed before the service listens: once it answers, it is ready.
    let (engine, durability) = match waitline_server::open_engine(&config) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("waitline: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let dir = config.data_dir.clone();
    let kept = |name: &str| {
        dir.as_ref().map_or_else(String::new, |d| format!(" (kept in {})", d.join(name).display()))
    };
    if config.api_keys.is_empty() {
        // The quickstart works with nothing set: a key for tenant `default`, shown on
        // standard output when it is made (never in the log), and kept in the data directory.
        match stored_secret(dir.as_deref(), "api-key", waitline_server::auth::generate_key) {
            Ok((key, SecretOrigin::Made)) => {
                println!("No API key configured; generated one for tenant 'default': {key}");
                if dir.is_some() {
                    println!("  {}", kept("api-key").trim_start());
                }
                config.api_keys.push(KeySpec { key, tenant: waitline::DEFAULT_TENANT.into() });
            }
            Ok((key, SecretOrigin::Stored)) => {
                println!("No API key configured; using the one for tenant 'default'{}", kept("api-key"));
                config.api_keys.push(KeySpec { key, tenant: waitline::DEFAULT_TENANT.into() });
            }
            Err(e) => {
                eprintln!("waitline: {e}");
                return std::process::ExitCode::from(1);
            }
        }
    }
    let configured = config.signing_key.clone();
    let seed = match configured {
        Some(seed) => Ok((seed, None)),
        None => stored_secret(dir.as_deref(), "signing-key", || Signer::generate().seed_base64())
            .map(|(s, o)| (s, Some(o))),
    };
    let signer = match seed.and_then(|(seed, origin)| Ok((Signer::from_base64_seed(&seed)?, origin))) {
        Ok((s, origin)) => {
            match origin {
                Some(SecretOrigin::Made) => println!(
                    "No signing key configured; webhooks are signed with a generated key{}. Public key: {}",
                    kept("signing-key"),
                    s.public_key_base64()
                ),
                Some(SecretOrigin::Stored) => println!(
                    "No signing key configured; webhooks are signed with the key{}. Public key: {}",
                    kept("signing-key"),
                    s.public_key_base64()
                ),
                None => {}
            }
            s
        }
        Err(e) => {
            eprintln!("waitline: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("waitline: cannot listen on {}: {e}", config.listen);
            return std::process::ExitCode::from(1);
        }
    };
    // The address bound (with port 0 in the configuration, the one the system chose).
    let bound = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(listen = %bound, tenants = config.api_keys.len(), "waitline serving");
    println!("Listening on http://{bound}");
    match waitline_server::run(config, engine, durability, signer, listener, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waitline: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}
