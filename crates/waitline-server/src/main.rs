//! `waitline serve`: the Telnyx-compatible call-queue service.

use std::io::IsTerminal;

use clap::Parser;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

use waitline_server::Reloader;
use waitline_server::auth::{DIGEST_PREFIX, KeySpec, generate_key, hashed_form};
use waitline_server::config::{Cli, Command, FileConfig};
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
        Command::Keygen(args) => {
            // The key for the client, then the line for the server's configuration.
            let key = generate_key();
            println!("{key}");
            println!("{}:{}", hashed_form(&key), args.tenant);
            eprintln!(
                "The first line is the API key (shown only now); the second is what the server's --api-key or api_keys takes."
            );
            return std::process::ExitCode::SUCCESS;
        }
        // Bad flags are a usage error (2); a directory that cannot be read is a failure (1).
        Command::Simulate(args) => return print_or_fail(waitline_server::simulate::run(&args), 2),
        Command::Inspect(args) => {
            return print_or_fail(waitline_server::durable::inspect(&args.data_dir), 1);
        }
    };
    // What SIGHUP reads again: the file's keys, unless flags or the environment gave them.
    let key_file = if args.api_keys.is_empty() { args.config.clone() } else { None };
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
    // The quickstart works with nothing set: a key for tenant `default`, shown on standard
    // output when it is made (never in the log), and kept in the data directory as its hash
    // only (a directory from before keeps the key itself, which stays usable). Also what a
    // reload falls back to when the file then names no key.
    let mut generated = Vec::new();
    if config.api_keys.is_empty() {
        let mut made = None;
        let stored = stored_secret(dir.as_deref(), "api-key", || {
            let key = generate_key();
            let hashed = hashed_form(&key);
            made = Some(key);
            hashed
        });
        let tenant = waitline::DEFAULT_TENANT;
        let spec = match stored {
            Ok((_, SecretOrigin::Made)) => {
                let key = made.unwrap_or_default();
                println!("No API key configured; generated one for tenant '{tenant}': {key}");
                if dir.is_some() {
                    println!("  {} (its hash only)", kept("api-key").trim_start());
                }
                Ok(KeySpec::plain(&key, tenant))
            }
            Ok((text, SecretOrigin::Stored)) => {
                println!("No API key configured; using the one for tenant '{tenant}'{}", kept("api-key"));
                if text.starts_with(DIGEST_PREFIX) {
                    KeySpec::parse(&format!("{text}:{tenant}"))
                } else {
                    Ok(KeySpec::plain(&text, tenant))
                }
            }
            Err(e) => Err(e),
        };
        match spec {
            Ok(spec) => generated.push(spec),
            Err(e) => {
                eprintln!("waitline: {e}");
                return std::process::ExitCode::from(1);
            }
        }
        config.api_keys.clone_from(&generated);
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
                    "No signing key configured; webhooks are signed with a generated key{} (the operator's webhook URLs and tenant 'default' get it; every other tenant's calls' own webhook URLs a key derived from it). Public key of tenant 'default': {}",
                    kept("signing-key"),
                    s.public_key_base64()
                ),
                Some(SecretOrigin::Stored) => println!(
                    "No signing key configured; webhooks are signed with the key{} (the operator's webhook URLs and tenant 'default' get it; every other tenant's calls' own webhook URLs a key derived from it). Public key of tenant 'default': {}",
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
    print_tenant_public_keys(&signer, &config.api_keys);
    // Before serving: SIGHUP's default action would end the process.
    let hangups = match hangup_signals() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("waitline: cannot handle SIGHUP: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("waitline: cannot listen on {}: {e}", config.listen);
            return std::process::ExitCode::from(1);
        }
    };
    let metrics_listener = match waitline_server::bind_metrics(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("waitline: cannot listen for metrics on {:?}: {e}", config.metrics.listen);
            return std::process::ExitCode::from(1);
        }
    };
    // The address bound (with port 0 in the configuration, the one the system chose).
    let bound = listener.local_addr().unwrap_or(config.listen);
    let metrics_bound = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let keys = config.api_keys.len();
    let server = match waitline_server::HttpServer::new(config, engine, durability, &signer) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("waitline: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let scheme = server.scheme();
    if scheme == "http" && !bound.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on a non-loopback address: API keys cross the network in clear unless a TLS proxy is in front (see --tls-cert)"
        );
    }
    tokio::spawn(reload_on_hangup(hangups, server.reloader(), key_file, generated));
    tracing::info!(listen = %bound, keys, scheme, "waitline serving");
    println!("Listening on {scheme}://{bound}");
    if let Some(addr) = metrics_bound {
        tracing::info!(listen = %addr, "metrics served, without a key");
        println!("Metrics on {scheme}://{addr}/metrics");
    }
    server.serve(listener, metrics_listener, shutdown_signal()).await;
    std::process::ExitCode::SUCCESS
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangup_signals() -> std::io::Result<Hangups> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
fn hangup_signals() -> std::io::Result<Hangups> {
    Ok(())
}

/// On each SIGHUP: the API keys from the config file again (when the keys come from it; the
/// generated key when it names none), and the TLS certificate. What fails to load is logged
/// and the old keys or certificate stay. Connections stay open.
#[cfg_attr(not(unix), allow(unused_variables, clippy::needless_pass_by_value))]
async fn reload_on_hangup(
    mut hangups: Hangups,
    reloader: Reloader,
    key_file: Option<PathBuf>,
    generated: Vec<KeySpec>,
) {
    #[cfg(unix)]
    while hangups.recv().await.is_some() {
        match &key_file {
            Some(path) => match FileConfig::api_keys(path) {
                // A file that names no key falls back to the generated key, if the service
                // started with one; never to no key at all.
                Ok(keys) if keys.is_empty() && generated.is_empty() => {
                    tracing::error!("API keys not reloaded, the old ones stay: the file names none");
                }
                Ok(keys) => {
                    let keys = if keys.is_empty() { generated.clone() } else { keys };
                    reloader.reload_keys(&keys);
                    tracing::info!(keys = keys.len(), "API keys reloaded");
                }
                Err(e) => tracing::error!("API keys not reloaded, the old ones stay: {e}"),
            },
            None => tracing::info!("API keys come from flags, the environment or nowhere: nothing to reload"),
        }
        match reloader.reload_tls() {
            Ok(true) => tracing::info!("TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("TLS certificate not reloaded, the old one stays: {e}"),
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

/// Prints a subcommand's report, or its error with the given exit code.
fn print_or_fail(report: Result<String, String>, code: u8) -> std::process::ExitCode {
    match report {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("waitline: {e}");
            std::process::ExitCode::from(code)
        }
    }
}

/// How many tenants' webhook public keys are printed at start (the rest: ask the server).
const TENANT_KEYS_PRINTED: usize = 20;

/// Prints the webhook public key of each tenant with an API key other than `default` (whose
/// key is the configured one): what the receivers of its calls' own `webhook_url` verify with.
fn print_tenant_public_keys(signer: &Signer, keys: &[KeySpec]) {
    let mut tenants: Vec<&str> =
        keys.iter().map(|k| k.tenant.as_str()).filter(|t| *t != waitline::DEFAULT_TENANT).collect();
    tenants.sort_unstable();
    tenants.dedup();
    for tenant in tenants.iter().take(TENANT_KEYS_PRINTED) {
        println!(
            "Webhook public key of tenant '{tenant}' (its calls' own webhook URLs): {}",
            signer.for_tenant(tenant).public_key_base64()
        );
    }
    if tenants.len() > TENANT_KEYS_PRINTED {
        println!(
            "...and {} more tenants: GET /v2/webhook_public_key with a tenant's API key gives its key",
            tenants.len() - TENANT_KEYS_PRINTED
        );
    }
}
