//! Configuration: flags, environment variables and an optional TOML file, in that order of
//! precedence (a flag beats its variable, which beats the file, which beats the default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
pub use waitline_store::Fsync;

use crate::auth::KeySpec;
use crate::cluster_secret::ClusterSecret;
use crate::rate_limit::RateLimit;
use crate::webhook::WebhookConfig;
use crate::webhook_destination::DestinationPolicy;

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// API keys and their tenants (empty: `main` generates one).
    pub api_keys: Vec<KeySpec>,
    /// Base64 of the 32-byte Ed25519 seed that signs webhooks (absent: generated).
    pub signing_key: Option<String>,
    /// How long an empty auto queue is kept.
    pub queue_idle_ttl: Duration,
    /// Answered within this counts as answered in time in the queues' figures.
    pub service_level_threshold: Duration,
    /// Per-tenant cap on live calls.
    pub max_calls_per_tenant: usize,
    /// Per-tenant cap on queues.
    pub max_queues_per_tenant: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Event streams (`GET /v2/events`) open at once, all tenants together.
    pub max_event_streams: usize,
    /// Event streams open at once of one tenant (`None`: a quarter of `max_event_streams`,
    /// at least 1).
    pub max_event_streams_per_tenant: Option<usize>,
    /// Webhook delivery.
    pub webhooks: WebhookConfig,
    /// How long shutdown waits for the webhook outbox to drain.
    pub shutdown_grace: Duration,
    /// Where the journal lives (`None`: in memory, nothing kept, unless `postgres_url`).
    pub data_dir: Option<PathBuf>,
    /// Keep the journal in PostgreSQL instead (a libpq URL); this node takes every
    /// bucket's lease, or its share of them with `cluster`.
    pub postgres_url: Option<String>,
    /// The CA (PEM) PostgreSQL's certificate must chain to under `sslmode=require`, instead
    /// of the webpki roots.
    pub postgres_ca: Option<PathBuf>,
    /// How long a bucket's lease lasts without renewal (PostgreSQL only).
    pub lease: Duration,
    /// This node in a cluster of several (`--node-url` with `--cluster-secret`; needs
    /// `postgres_url`). `None`: a single node.
    pub cluster: Option<ClusterNode>,
    /// When a change counts as durable.
    pub fsync: Fsync,
    /// Start even when the journal has a damaged record (dropping it and what follows).
    pub recover_truncate: bool,
    /// Records of a tenant between two of its snapshots (0: never snapshot).
    pub snapshot_every: u64,
    /// Requests per second per tenant (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Serve HTTPS with this certificate chain and key (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// Connection limits against slow and greedy clients.
    pub connections: ConnectionLimits,
    /// Metrics: `GET /metrics` and the HTTP request counts.
    pub metrics: MetricsConfig,
}

/// `GET /metrics` (docs/behaviour.md §5, "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Off: no `/metrics` anywhere and no request counting (the benchmarks' baseline).
    pub enabled: bool,
    /// A listener of its own serving every tenant's series without a key (the operator's
    /// view); on the main listener a key sees its own tenant's only.
    pub listen: Option<SocketAddr>,
    /// Queues per tenant with a label of their own; the rest are summed under `_other`.
    pub max_queues: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: None, max_queues: 100 }
    }
}

/// The PEM files of `--tls-cert` and `--tls-key`, read at start and on `SIGHUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How long a client may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the connection (or the end of the previous request) to the end of a request's
    /// headers, TLS handshake included: also how long an idle connection is kept.
    pub header_timeout: Duration,
    /// From the headers to the end of the body.
    pub body_timeout: Duration,
    /// From the headers to the start of the answer (the event stream's body is not counted).
    pub request_timeout: Duration,
    /// Connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// How other nodes reach this one and prove they are nodes of the same cluster.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The base URL other nodes forward requests to (`--node-url`).
    pub url: String,
    /// Shared by every node (`--cluster-secret`).
    pub secret: ClusterSecret,
}

/// How long a bucket's lease lasts, unless `--lease-ms` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// The data directory when none is given: in the working directory.
pub const DEFAULT_DATA_DIR: &str = "waitline-data";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: Vec::new(),
            signing_key: None,
            queue_idle_ttl: waitline::DEFAULT_QUEUE_IDLE_TTL,
            service_level_threshold: waitline::DEFAULT_SERVICE_LEVEL_THRESHOLD,
            max_calls_per_tenant: 100_000,
            max_queues_per_tenant: 10_000,
            max_body_bytes: 64 * 1024,
            max_event_streams: 64,
            max_event_streams_per_tenant: None,
            webhooks: WebhookConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            postgres_url: None,
            postgres_ca: None,
            lease: DEFAULT_LEASE,
            cluster: None,
            fsync: Fsync::Always,
            recover_truncate: false,
            snapshot_every: waitline_store::engine::DEFAULT_SNAPSHOT_EVERY,
            rate_limit: None,
            tls: None,
            connections: ConnectionLimits::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `waitline`: the call-queue service.
#[derive(Debug, Parser)]
#[command(name = "waitline", version, about = "Telnyx-compatible call-queue service")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Print a new random API key and its hashed form (`sha256:<hex>:TENANT`) for the
    /// configuration: the server then holds no copy of the key itself.
    Keygen(KeygenArgs),
    /// Print what a data directory holds (tenants, queues, calls, sequence numbers, sizes)
    /// without serving; the directory must not be in use.
    Inspect(InspectArgs),
    /// Plan capacity: drive the real engine on a simulated clock with random callers and
    /// agents, and print service level, waits, abandonment and occupancy beside the Erlang C
    /// or Erlang A figures (docs/simulation.md).
    Simulate(crate::simulate::SimulateArgs),
}

/// Flags of `waitline keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The tenant the key is for.
    #[arg(long, default_value = waitline::DEFAULT_TENANT)]
    pub tenant: String,
}

/// Flags of `waitline inspect`.
#[derive(Debug, Args, Default)]
pub struct InspectArgs {
    /// The data directory [default: waitline-data].
    #[arg(long, env = "WAITLINE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Flags of `waitline serve`; each also reads an environment variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "WAITLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "WAITLINE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// API key: KEY or KEY:TENANT, or its hash as sha256:HEX or sha256:HEX:TENANT (see
    /// `waitline keygen`); repeatable (env: comma-separated). Keys from the config file are
    /// reloaded on SIGHUP.
    #[arg(long = "api-key", env = "WAITLINE_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Default webhook URL (for calls dialed without one).
    #[arg(long, env = "WAITLINE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Webhook URL tried after the primary failed every attempt.
    #[arg(long, env = "WAITLINE_WEBHOOK_FAILOVER_URL")]
    pub webhook_failover_url: Option<String>,
    /// Where a call's own `webhook_url` may point besides public addresses: a network
    /// (CIDR), an address or a host name; repeatable (env: comma-separated).
    #[arg(long = "webhook-allow", env = "WAITLINE_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<String>,
    /// Base64 of the 32-byte Ed25519 seed that signs webhooks.
    #[arg(long, env = "WAITLINE_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Seconds an empty auto queue is kept [default: 300].
    #[arg(long, env = "WAITLINE_QUEUE_IDLE_TTL_SECS")]
    pub queue_idle_ttl_secs: Option<u64>,
    /// Service-level threshold of the queues' figures: a caller answered after waiting at
    /// most this many seconds is answered in time [default: 20].
    #[arg(long, env = "WAITLINE_SERVICE_LEVEL_SECS")]
    pub service_level_secs: Option<u64>,
    /// Per-tenant cap on live calls, and on ended calls kept readable [default: 100000].
    #[arg(long, env = "WAITLINE_MAX_CALLS_PER_TENANT")]
    pub max_calls_per_tenant: Option<usize>,
    /// Per-tenant cap on queues [default: 10000].
    #[arg(long, env = "WAITLINE_MAX_QUEUES_PER_TENANT")]
    pub max_queues_per_tenant: Option<usize>,
    /// Largest request body in bytes [default: 65536].
    #[arg(long, env = "WAITLINE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Event streams open at once [default: 64].
    #[arg(long, env = "WAITLINE_MAX_EVENT_STREAMS")]
    pub max_event_streams: Option<usize>,
    /// Event streams open at once of one tenant [default: a quarter of --max-event-streams,
    /// at least 1].
    #[arg(long, env = "WAITLINE_MAX_EVENT_STREAMS_PER_TENANT")]
    pub max_event_streams_per_tenant: Option<usize>,
    /// Attempts per webhook URL [default: 3].
    #[arg(long, env = "WAITLINE_WEBHOOK_ATTEMPTS")]
    pub webhook_attempts: Option<u32>,
    /// First retry delay in milliseconds, doubling after each [default: 500].
    #[arg(long, env = "WAITLINE_WEBHOOK_BACKOFF_MS")]
    pub webhook_backoff_ms: Option<u64>,
    /// Time allowed per webhook attempt in milliseconds [default: 5000].
    #[arg(long, env = "WAITLINE_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
    /// Seconds shutdown waits for undelivered webhooks [default: 10].
    #[arg(long, env = "WAITLINE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Directory of the journal, created on first start [default: waitline-data].
    #[arg(long, env = "WAITLINE_DATA_DIR", conflicts_with = "in_memory")]
    pub data_dir: Option<PathBuf>,
    /// Keep nothing on disk: every call and queue is lost when the process ends.
    #[arg(long, env = "WAITLINE_IN_MEMORY")]
    pub in_memory: bool,
    /// Keep the journal in PostgreSQL (a URL such as postgres://user@host:5432/db) instead
    /// of a data directory; this node takes every bucket's lease (with --node-url, its share
    /// of them). Give --api-key and --signing-key with it: no generated key is kept.
    #[arg(long, env = "WAITLINE_POSTGRES_URL", conflicts_with_all = ["in_memory", "data_dir"])]
    pub postgres_url: Option<String>,
    /// A CA file (PEM) to verify PostgreSQL's certificate with instead of the webpki roots
    /// (a private CA). Used with sslmode=require in --postgres-url, which encrypts and
    /// verifies; without it the connection is plaintext, and giving a CA is refused.
    #[arg(long, env = "WAITLINE_POSTGRES_CA", value_name = "FILE", requires = "postgres_url")]
    pub postgres_ca: Option<PathBuf>,
    /// How long a bucket's lease lasts without renewal, in milliseconds (PostgreSQL only;
    /// renewed every third of it) [default: 5000].
    #[arg(long, env = "WAITLINE_LEASE_MS", value_parser = clap::value_parser!(u64).range(30..))]
    pub lease_ms: Option<u64>,
    /// The base URL other nodes reach this node at (http://host:port), when several nodes
    /// share one PostgreSQL store: requests for tenants another node owns are forwarded
    /// there. Needs --postgres-url and --cluster-secret.
    #[arg(long, env = "WAITLINE_NODE_URL", requires_all = ["postgres_url", "cluster_secret"], value_parser = parse_node_url)]
    pub node_url: Option<String>,
    /// The secret every node of the cluster shares (at least 16 printable characters):
    /// proves a forwarded request comes from a node. Needs --node-url. Never logged.
    #[arg(long, env = "WAITLINE_CLUSTER_SECRET", requires = "node_url", value_parser = parse_cluster_secret, hide_env_values = true)]
    pub cluster_secret: Option<ClusterSecret>,
    /// When a change is acknowledged: `always` once synced to disk (survives a power
    /// loss), `periodic` once written to the OS, synced every second [default: always].
    #[arg(long, env = "WAITLINE_FSYNC", value_parser = parse_fsync)]
    pub fsync: Option<Fsync>,
    /// Start even when the journal has a damaged record: drop it and the tenant's later
    /// records (logged).
    #[arg(long, env = "WAITLINE_RECOVER_TRUNCATE")]
    pub recover_truncate: bool,
    /// Snapshot a tenant once this many of its changes were journaled since its last
    /// snapshot; a restart restores it and replays only what follows, and the journal it
    /// covers is deleted. 0: never [default: 1000000].
    #[arg(long, env = "WAITLINE_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Requests per second per tenant, answered 429 past it [default: unlimited].
    #[arg(long, env = "WAITLINE_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Requests a tenant may make at once after a quiet spell [default: the rate].
    #[arg(long, env = "WAITLINE_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// PEM certificate chain: serve HTTPS (reloaded on SIGHUP) [default: plain HTTP].
    #[arg(long, env = "WAITLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WAITLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (and the TLS handshake), and that
    /// an idle connection is kept [default: 10].
    #[arg(long, env = "WAITLINE_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body [default: 10].
    #[arg(long, env = "WAITLINE_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Seconds until a request must be answered [default: 30].
    #[arg(long, env = "WAITLINE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Connections open at once; more wait to be accepted [default: 1024].
    #[arg(long, env = "WAITLINE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// `on`: `GET /metrics` and the HTTP request counts; `off`: neither [default: on].
    #[arg(long, env = "WAITLINE_METRICS", value_parser = parse_switch)]
    pub metrics: Option<bool>,
    /// Serve `GET /metrics` also on this address, without a key and for every tenant (the
    /// operator's view: keep it private) [default: none].
    #[arg(long, env = "WAITLINE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Queues per tenant with series of their own; the rest are summed under
    /// queue="_other" [default: 100].
    #[arg(long, env = "WAITLINE_METRICS_MAX_QUEUES")]
    pub metrics_max_queues: Option<usize>,
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("'{other}' is not a switch: use on or off")),
    }
}

fn parse_cluster_secret(s: &str) -> Result<ClusterSecret, String> {
    ClusterSecret::new(s)
}

/// A node's URL: http or https with a host, nothing after the path (requests' paths are
/// appended to it).
fn parse_node_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("the node URL must be http:// or https:// with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the node URL takes no query or fragment".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_fsync(s: &str) -> Result<Fsync, String> {
    match s {
        "always" => Ok(Fsync::Always),
        "periodic" => Ok(Fsync::Periodic),
        other => Err(format!("'{other}' is not a policy: use always or periodic")),
    }
}

/// The TOML file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    api_keys: Option<Vec<String>>,
    webhook_url: Option<String>,
    webhook_failover_url: Option<String>,
    webhook_allow: Option<Vec<String>>,
    signing_key: Option<String>,
    queue_idle_ttl_secs: Option<u64>,
    service_level_secs: Option<u64>,
    max_calls_per_tenant: Option<usize>,
    max_queues_per_tenant: Option<usize>,
    max_body_bytes: Option<usize>,
    max_event_streams: Option<usize>,
    max_event_streams_per_tenant: Option<usize>,
    webhook_attempts: Option<u32>,
    webhook_backoff_ms: Option<u64>,
    webhook_timeout_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    data_dir: Option<PathBuf>,
    in_memory: Option<bool>,
    fsync: Option<String>,
    snapshot_every: Option<u64>,
    rate_limit: Option<u32>,
    rate_limit_burst: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    metrics: Option<String>,
    metrics_listen: Option<SocketAddr>,
    metrics_max_queues: Option<usize>,
}

impl FileConfig {
    /// Reads and checks the file.
    ///
    /// # Errors
    /// The file cannot be read, or is not valid.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The message and the line, never the line's text: it may hold a key.
        toml::from_str::<Self>(&text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map_or(0, |before| before.matches('\n').count() + 1);
            format!("{}: line {line}: {}", path.display(), without_value(e.message().trim_end()))
        })
    }

    /// The file's API keys (on `SIGHUP`).
    ///
    /// # Errors
    /// The file cannot be read, is not valid, or has an invalid key.
    pub fn api_keys(path: &std::path::Path) -> Result<Vec<KeySpec>, String> {
        parse_keys(&Self::read(path)?.api_keys.unwrap_or_default())
    }
}

fn parse_keys(keys: &[String]) -> Result<Vec<KeySpec>, String> {
    let keys: Vec<&String> = keys.iter().filter(|k| !k.trim().is_empty()).collect();
    let specs = keys.iter().map(|k| KeySpec::parse(k)).collect::<Result<Vec<_>, _>>()?;
    for (text, spec) in keys.iter().zip(&specs) {
        if crate::auth::is_short_plain_key(text) {
            tracing::warn!(tenant = %spec.tenant, "a short API key is configured: use `waitline keygen` for one that cannot be guessed");
        }
    }
    Ok(specs)
}

/// A parse error's message without the value it quotes: serde's type errors quote the value
/// read (`invalid type: string "...", expected a sequence`), and a value put under the wrong
/// name, or of the wrong type, may be a key. What was expected is kept; field names are kept.
fn without_value(message: &str) -> String {
    const QUOTING: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    let Some(head) = QUOTING.iter().find(|head| message.starts_with(*head)) else {
        return message.to_owned();
    };
    // What was expected comes last and quotes no value; the value may hold anything.
    match message.rfind(", expected ").or_else(|| message.rfind(", there are no variants")) {
        Some(tail) => format!("{}(value not shown){}", head, &message[tail..]),
        None => format!("{head}(value not shown)"),
    }
}

/// A setting that must be at least 1.
fn positive<T: PartialOrd + From<u8>>(name: &str, value: Option<T>) -> Result<Option<T>, String> {
    match value {
        Some(v) if v < T::from(1) => Err(format!("{name} must be at least 1")),
        v => Ok(v),
    }
}

impl ServeArgs {
    /// Merges flags/environment (already merged by clap) over the file over the defaults.
    ///
    /// # Errors
    /// An unreadable or invalid file, or an invalid key.
    pub fn resolve(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let keys = if self.api_keys.is_empty() { file.api_keys.unwrap_or_default() } else { self.api_keys };
        let api_keys = parse_keys(&keys)?;
        let allow = if self.webhook_allow.is_empty() {
            file.webhook_allow.unwrap_or_default()
        } else {
            self.webhook_allow
        };
        let allow = DestinationPolicy::new(&allow)?;
        let rate = positive("rate_limit", self.rate_limit.or(file.rate_limit))?;
        let burst = positive("rate_limit_burst", self.rate_limit_burst.or(file.rate_limit_burst))?;
        let rate_limit = match (rate, burst) {
            (Some(r), burst) => Some(RateLimit { burst: burst.unwrap_or(r), ..RateLimit::per_second(r) }),
            (None, Some(_)) => return Err("rate_limit_burst needs rate_limit".into()),
            (None, None) => None,
        };
        let tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together".into()),
        };
        let dc = d.connections;
        let timeout = |name, flag: Option<u64>, file: Option<u64>, default| {
            positive(name, flag.or(file)).map(|v| v.map_or(default, Duration::from_secs))
        };
        let connections = ConnectionLimits {
            header_timeout: timeout(
                "header_timeout_secs",
                self.header_timeout_secs,
                file.header_timeout_secs,
                dc.header_timeout,
            )?,
            body_timeout: timeout(
                "body_timeout_secs",
                self.body_timeout_secs,
                file.body_timeout_secs,
                dc.body_timeout,
            )?,
            request_timeout: timeout(
                "request_timeout_secs",
                self.request_timeout_secs,
                file.request_timeout_secs,
                dc.request_timeout,
            )?,
            max_connections: positive("max_connections", self.max_connections.or(file.max_connections))?
                .unwrap_or(dc.max_connections),
        };
        let metrics = MetricsConfig {
            enabled: match (self.metrics, file.metrics) {
                (Some(on), _) => on,
                (None, Some(m)) => parse_switch(&m).map_err(|e| format!("metrics: {e}"))?,
                (None, None) => d.metrics.enabled,
            },
            listen: self.metrics_listen.or(file.metrics_listen),
            max_queues: self.metrics_max_queues.or(file.metrics_max_queues).unwrap_or(d.metrics.max_queues),
        };
        if !metrics.enabled && metrics.listen.is_some() {
            return Err("metrics_listen needs metrics on".into());
        }
        let secs = Duration::from_secs;
        let millis = Duration::from_millis;
        Ok(Config {
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            api_keys,
            signing_key: self.signing_key.or(file.signing_key),
            queue_idle_ttl: self
                .queue_idle_ttl_secs
                .or(file.queue_idle_ttl_secs)
                .map_or(d.queue_idle_ttl, secs),
            service_level_threshold: self
                .service_level_secs
                .or(file.service_level_secs)
                .map_or(d.service_level_threshold, secs),
            max_calls_per_tenant: self
                .max_calls_per_tenant
                .or(file.max_calls_per_tenant)
                .unwrap_or(d.max_calls_per_tenant),
            max_queues_per_tenant: self
                .max_queues_per_tenant
                .or(file.max_queues_per_tenant)
                .unwrap_or(d.max_queues_per_tenant),
            max_body_bytes: self.max_body_bytes.or(file.max_body_bytes).unwrap_or(d.max_body_bytes),
            max_event_streams: self
                .max_event_streams
                .or(file.max_event_streams)
                .unwrap_or(d.max_event_streams),
            max_event_streams_per_tenant: positive(
                "max_event_streams_per_tenant",
                self.max_event_streams_per_tenant.or(file.max_event_streams_per_tenant),
            )?,
            webhooks: WebhookConfig {
                url: self.webhook_url.or(file.webhook_url),
                failover_url: self.webhook_failover_url.or(file.webhook_failover_url),
                allow,
                attempts: self.webhook_attempts.or(file.webhook_attempts).unwrap_or(d.webhooks.attempts),
                backoff: self
                    .webhook_backoff_ms
                    .or(file.webhook_backoff_ms)
                    .map_or(d.webhooks.backoff, millis),
                timeout: self
                    .webhook_timeout_ms
                    .or(file.webhook_timeout_ms)
                    .map_or(d.webhooks.timeout, millis),
                ..d.webhooks
            },
            shutdown_grace: self
                .shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .map_or(d.shutdown_grace, secs),
            lease: self.lease_ms.map_or(d.lease, millis),
            cluster: self.node_url.zip(self.cluster_secret).map(|(url, secret)| ClusterNode { url, secret }),
            data_dir: if self.postgres_url.is_some()
                || self.in_memory
                || (self.data_dir.is_none() && file.in_memory == Some(true))
            {
                None
            } else {
                self.data_dir.or(file.data_dir).or(d.data_dir)
            },
            fsync: match (self.fsync, file.fsync) {
                (Some(f), _) => f,
                (None, Some(f)) => parse_fsync(&f).map_err(|e| format!("fsync: {e}"))?,
                (None, None) => d.fsync,
            },
            recover_truncate: self.recover_truncate,
            postgres_url: self.postgres_url,
            postgres_ca: self.postgres_ca,
            snapshot_every: self.snapshot_every.or(file.snapshot_every).unwrap_or(d.snapshot_every),
            rate_limit,
            tls,
            connections,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every flag of `waitline serve` is in the README's settings table, with its
    /// environment variable.
    #[test]
    fn the_readme_lists_every_serve_flag() {
        use clap::CommandFactory;
        let readme = include_str!("../../../README.md");
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "config" {
                continue;
            }
            assert!(readme.contains(&format!("`--{long}")), "the README's table lacks --{long}");
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(readme.contains(&*env), "the README's table lacks {env} (--{long})");
            }
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("waitline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nqueue_idle_ttl_secs = 7\napi_keys = [\"f:filetenant\"]\nwebhook_attempts = 5\n").unwrap();
        let args =
            ServeArgs { config: Some(path.clone()), queue_idle_ttl_secs: Some(9), ..ServeArgs::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.queue_idle_ttl, Duration::from_secs(9));
        assert_eq!(c.api_keys[0].tenant, "filetenant");
        assert_eq!(c.webhooks.attempts, 5);
        assert_eq!(c.max_body_bytes, 65_536);
        assert_eq!((c.data_dir.as_deref(), c.fsync), (Some(Path::new(DEFAULT_DATA_DIR)), Fsync::Always));
        assert_eq!(c.snapshot_every, waitline_store::engine::DEFAULT_SNAPSHOT_EVERY);
        std::fs::write(&path, "snapshot_every = 50\n").unwrap();
        let from_file = ServeArgs { config: Some(path.clone()), ..ServeArgs::default() };
        assert_eq!(from_file.resolve().unwrap().snapshot_every, 50);
        let flag = ServeArgs { config: Some(path.clone()), snapshot_every: Some(0), ..ServeArgs::default() };
        assert_eq!(flag.resolve().unwrap().snapshot_every, 0, "the flag beats the file");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        let args = ServeArgs { config: Some(path), ..ServeArgs::default() };
        assert!(args.resolve().unwrap_err().contains("lisen"));
    }

    #[test]
    fn cli_parses_repeated_keys() {
        let cli = Cli::parse_from([
            "waitline",
            "serve",
            "--api-key",
            "a:t1",
            "--api-key",
            "b",
            "--listen",
            "127.0.0.1:1",
        ]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let c = args.resolve().unwrap();
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.api_keys[1].tenant, "default");
    }

    #[test]
    fn webhook_allow_entries() {
        let parse = |args: &[&str]| {
            let Command::Serve(a) = Cli::parse_from([&["waitline", "serve"], args].concat()).command else {
                panic!("serve")
            };
            a.resolve()
        };
        let c = parse(&["--webhook-allow", "10.0.0.0/8", "--webhook-allow", "hooks.internal"]).unwrap();
        assert_eq!(c.webhooks.allow, DestinationPolicy::new(&["10.0.0.0/8", "hooks.internal"]).unwrap());
        assert!(c.webhooks.allow.check_url("http://10.2.3.4/").is_ok());
        assert_eq!(parse(&[]).unwrap().webhooks.allow, DestinationPolicy::default());
        assert!(parse(&["--webhook-allow", "10.0.0.0/99"]).unwrap_err().contains("10.0.0.0/99"));
    }

    #[test]
    fn durability_flags() {
        let parse = |args: &[&str]| {
            let Command::Serve(a) = Cli::try_parse_from([&["waitline", "serve"], args].concat())?.command
            else {
                panic!("serve")
            };
            Ok::<_, clap::Error>(a.resolve().unwrap())
        };
        let c = parse(&["--data-dir", "/somewhere", "--fsync", "periodic"]).unwrap();
        assert_eq!((c.data_dir.as_deref(), c.fsync), (Some(Path::new("/somewhere")), Fsync::Periodic));
        assert_eq!(parse(&["--in-memory"]).unwrap().data_dir, None);
        assert!(parse(&["--in-memory", "--data-dir", "x"]).is_err(), "one or the other");
        assert!(parse(&["--fsync", "sometimes"]).unwrap_err().to_string().contains("always or periodic"));
        assert!(parse(&["--recover-truncate"]).unwrap().recover_truncate);
        let c = parse(&["--postgres-url", "postgres://u@db/w", "--lease-ms", "2000"]).unwrap();
        assert_eq!(
            (c.postgres_url.as_deref(), c.data_dir, c.lease),
            (Some("postgres://u@db/w"), None, Duration::from_millis(2000))
        );
        assert_eq!(parse(&[]).unwrap().lease, DEFAULT_LEASE);
        let c = parse(&["--postgres-url", "postgres://u@db/w?sslmode=require", "--postgres-ca", "ca.pem"])
            .unwrap();
        assert_eq!(c.postgres_ca.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(parse(&["--postgres-url", "x"]).unwrap().postgres_ca, None);
        assert!(parse(&["--postgres-ca", "ca.pem"]).is_err(), "a CA without PostgreSQL");
        assert!(parse(&["--postgres-url", "x", "--data-dir", "y"]).is_err(), "one store");
        assert!(parse(&["--postgres-url", "x", "--in-memory"]).is_err(), "one store");
        assert!(parse(&["--lease-ms", "10"]).is_err(), "a lease too short to renew");
        assert!(parse(&[]).unwrap().cluster.is_none());
        let secret = "a-secret-of-16-chars";
        let node =
            ["--postgres-url", "x", "--node-url", "http://127.0.0.1:9001/", "--cluster-secret", secret];
        let cluster = parse(&node).unwrap().cluster.unwrap();
        assert_eq!(cluster.url, "http://127.0.0.1:9001");
        assert!(cluster.secret.matches(secret.as_bytes()));
        assert!(parse(&node[..4]).is_err(), "a node URL needs the secret");
        assert!(parse(&node[2..]).is_err(), "and PostgreSQL");
        assert!(
            parse(&["--postgres-url", "x", "--cluster-secret", secret]).is_err(),
            "a secret needs a node URL"
        );
        let short = parse(&["--postgres-url", "x", "--node-url", "http://h:1", "--cluster-secret", "short"]);
        assert!(short.unwrap_err().to_string().contains("at least 16"));
        for bad in ["ftp://h/", "h:1", "http://h:1/?q=1"] {
            let with = parse(&["--postgres-url", "x", "--node-url", bad, "--cluster-secret", secret]);
            assert!(with.is_err(), "{bad}");
        }
    }

    #[test]
    fn hardening_flags_and_file_settings() {
        let parse = |args: &[&str]| -> Result<Config, String> {
            let cli =
                Cli::try_parse_from([&["waitline", "serve"], args].concat()).map_err(|e| e.to_string())?;
            let Command::Serve(a) = cli.command else { panic!("serve") };
            a.resolve()
        };
        let c = parse(&[]).unwrap();
        assert!(c.rate_limit.is_none() && c.tls.is_none(), "off by default");
        assert_eq!(c.connections, ConnectionLimits::default());
        let c =
            parse(&["--rate-limit", "5", "--max-connections", "7", "--header-timeout-secs", "3"]).unwrap();
        let limit = c.rate_limit.unwrap();
        assert_eq!((limit.per_second, limit.burst), (5, 5), "the burst defaults to one second's worth");
        assert_eq!(
            (c.connections.max_connections, c.connections.header_timeout),
            (7, Duration::from_secs(3))
        );
        let c = parse(&[
            "--rate-limit",
            "5",
            "--rate-limit-burst",
            "20",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(c.rate_limit.unwrap().burst, 20);
        assert_eq!(c.tls, Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
        assert!(parse(&["--tls-cert", "c.pem"]).is_err(), "a certificate needs its key");
        assert!(parse(&["--rate-limit-burst", "3"]).unwrap_err().contains("needs rate_limit"));
        for zero in ["--rate-limit", "--max-connections", "--body-timeout-secs", "--request-timeout-secs"] {
            assert!(parse(&[zero, "0"]).unwrap_err().contains("at least 1"), "{zero}");
        }

        let dir = tempfile_dir("hardening");
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "rate_limit = 9\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nbody_timeout_secs = 4\nrequest_timeout_secs = 8\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--rate-limit", "2"]).unwrap();
        assert_eq!(c.rate_limit.unwrap().per_second, 2, "the flag wins");
        assert_eq!(
            (c.connections.body_timeout, c.connections.request_timeout),
            (Duration::from_secs(4), Duration::from_secs(8))
        );
        assert!(c.tls.is_some());
        std::fs::write(&path, "tls_cert = \"c.pem\"\n").unwrap();
        assert!(parse(&["--config", path.to_str().unwrap()]).unwrap_err().contains("go together"));
    }

    #[test]
    fn metrics_settings() {
        let parse = |args: &[&str]| -> Result<Config, String> {
            let cli =
                Cli::try_parse_from([&["waitline", "serve"], args].concat()).map_err(|e| e.to_string())?;
            let Command::Serve(a) = cli.command else { panic!("serve") };
            a.resolve()
        };
        assert_eq!(parse(&[]).unwrap().metrics, MetricsConfig::default());
        let c = parse(&["--metrics-listen", "127.0.0.1:9100", "--metrics-max-queues", "3"]).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig { enabled: true, listen: Some("127.0.0.1:9100".parse().unwrap()), max_queues: 3 }
        );
        assert!(!parse(&["--metrics", "off"]).unwrap().metrics.enabled);
        assert!(parse(&["--metrics", "maybe"]).unwrap_err().contains("on or off"));
        assert!(
            parse(&["--metrics", "off", "--metrics-listen", "127.0.0.1:1"])
                .unwrap_err()
                .contains("needs metrics on")
        );
        let dir = tempfile_dir("metrics");
        let path = dir.join("w.toml");
        std::fs::write(&path, "metrics = \"off\"\nmetrics_max_queues = 7\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!((c.metrics.enabled, c.metrics.max_queues), (false, 7));
        assert!(
            parse(&["--config", path.to_str().unwrap(), "--metrics", "on"]).unwrap().metrics.enabled,
            "the flag wins"
        );
    }

    #[test]
    fn file_errors_name_the_line_but_never_quote_it() {
        let dir = tempfile_dir("quote");
        let path = dir.join("w.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\napi_keys = [\"a-secret-key:t\"\n").unwrap();
        let err = FileConfig::api_keys(&path).unwrap_err();
        assert!(err.contains("line 2") || err.contains("line 3"), "{err}");
        assert!(!err.contains("a-secret-key"), "{err}");
        std::fs::write(&path, format!("api_keys = [\"k1:a\", \"{}:b\"]\n", crate::auth::hashed_form("k2")))
            .unwrap();
        let keys = FileConfig::api_keys(&path).unwrap();
        assert_eq!(keys, vec![KeySpec::plain("k1", "a"), KeySpec::plain("k2", "b")]);
    }

    /// A value of the wrong type may be a key put in the wrong place: the message says what
    /// was expected and where, never the value (serde's type errors quote it).
    #[test]
    fn file_type_errors_do_not_quote_the_value() {
        let dir = tempfile_dir("type");
        let path = dir.join("w.toml");
        for (text, secret, expected, line) in [
            ("api_keys = \"Sup3rSecretKey-abcdefgh:acme\"\n", "Sup3rSecretKey", "expected a sequence", 1),
            ("signing_key = 1234567890123456789\n", "1234567890123456789", "expected a string", 1),
            ("cluster_secret = 98765432109876543210\n", "98765432109876543210", "", 1),
            ("listen = 8765432.5\n", "8765432.5", "", 1),
            ("api_keys = [\"k:a\"]\nunknown_setting = 1\n", "", "unknown field `unknown_setting`", 2),
        ] {
            std::fs::write(&path, text).unwrap();
            for err in [
                FileConfig::read(&path).map(|_| ()).unwrap_err(),
                FileConfig::api_keys(&path).map(|_| ()).unwrap_err(),
            ] {
                assert!(secret.is_empty() || !err.contains(secret), "{text:?} -> {err}");
                assert!(err.contains(expected), "{text:?} -> {err}");
                assert!(err.contains(&format!(": line {line}: ")), "{text:?} -> {err}");
            }
        }
        assert_eq!(without_value("invalid value: integer `7`"), "invalid value: (value not shown)");
        assert_eq!(without_value("missing field `listen`"), "missing field `listen`");
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("waitline-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
