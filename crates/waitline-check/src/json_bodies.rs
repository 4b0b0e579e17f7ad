//! Structured bodies for every command: valid-shaped objects whose values have odd types,
//! sizes, unicode and numbers at the edges.

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Map, Number, Value};

/// A JSON value the fuzzer builds.
#[derive(Debug, Arbitrary)]
pub enum JsonValue {
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An integer beyond `i64`.
    Big(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A long string.
    Long(u16, char),
    /// An array.
    Array(Vec<JsonValue>),
    /// An object (keys from the known fields).
    Object(Vec<(u8, JsonValue)>),
}

const FIELDS: [&str; 24] = [
    "queue_name",
    "max_wait_time_secs",
    "max_size",
    "keep_after_hangup",
    "priority",
    "client_state",
    "command_id",
    "call_control_id",
    "queue",
    "park_after_unbridge",
    "ringtone",
    "record",
    "record_max_length",
    "mute_dtmf",
    "to",
    "from",
    "connection_id",
    "webhook_url",
    "webhook_url_method",
    "record_custom_file_name",
    "play_ringtone",
    "record_timeout_secs",
    "video_room_id",
    "record_channels",
];

impl JsonValue {
    fn to_json(&self, depth: u8) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => Value::from(*i),
            Self::Big(u) => Value::from(*u),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::String(s.clone()),
            Self::Long(n, c) => Value::String(std::iter::repeat_n(*c, usize::from(*n) % 5000).collect()),
            Self::Array(v) if depth < 3 => {
                Value::Array(v.iter().take(8).map(|x| x.to_json(depth + 1)).collect())
            }
            Self::Object(v) if depth < 3 => Value::Object(
                v.iter()
                    .take(8)
                    .map(|(k, x)| (FIELDS[*k as usize % FIELDS.len()].to_owned(), x.to_json(depth + 1)))
                    .collect(),
            ),
            Self::Array(_) | Self::Object(_) => Value::Null,
        }
    }
}

/// A command with a body of chosen fields.
#[derive(Debug, Arbitrary)]
pub struct JsonCommand {
    /// Which route.
    pub route: u8,
    /// Which of the seeded calls/queues it names.
    pub target: bool,
    /// The body's fields.
    pub fields: Vec<(u8, JsonValue)>,
}

const ROUTES: [(&str, &str); 10] = [
    ("POST", "/v2/calls"),
    ("POST", "/v2/calls/{c}/actions/enqueue"),
    ("POST", "/v2/calls/{c}/actions/leave_queue"),
    ("POST", "/v2/calls/{c}/actions/bridge"),
    ("POST", "/v2/calls/{c}/actions/hangup"),
    ("POST", "/v2/calls/{c}/actions/transfer"),
    ("POST", "/v2/queues"),
    ("POST", "/v2/queues/q0"),
    ("PATCH", "/v2/queues/q0/calls/{c}"),
    ("DELETE", "/v2/queues/q0/calls/{c}"),
];

/// Sends each command's body to one seeded server and checks the answers.
///
/// # Errors
/// As [`crate::http::check_requests`].
pub fn check_commands(commands: &[JsonCommand]) -> Result<(), String> {
    let (state, tenant) = crate::http::seeded_state();
    let router = waitline_server::router(state.clone());
    for c in commands.iter().take(8) {
        let (method, path) = ROUTES[c.route as usize % ROUTES.len()];
        let path = path.replace("{c}", if c.target { "c0" } else { "c1" });
        let body: Map<String, Value> = c
            .fields
            .iter()
            .take(16)
            .map(|(k, v)| (FIELDS[*k as usize % FIELDS.len()].to_owned(), v.to_json(0)))
            .collect();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer fuzz-key")
            .body(Body::from(Value::Object(body).to_string()))
            .map_err(|e| e.to_string())?;
        crate::http::send(&router, &tenant, request, &state)?;
    }
    Ok(())
}
