//! Command parameters and their validation. Every range, length and enumeration of docs/behaviour.md
//! is checked here, so frontends only translate types.
//!
//! Numbers are `i64` and required fields are `Option` on purpose: a frontend passes what the
//! client sent, and the engine alone decides what is out of range or missing.

use crate::error::{Error, Result};

/// Longest call id, queue name, number or connection id (bytes).
pub const MAX_NAME_LEN: usize = 255;
/// Longest `client_state` (bytes of base64 text).
pub const MAX_CLIENT_STATE_LEN: usize = 4096;
/// Longest `webhook_url` (bytes).
pub const MAX_URL_LEN: usize = 2048;
/// Largest `max_wait_time_secs`.
pub const MAX_WAIT_TIME_SECS: i64 = 86_400;
/// Largest `max_size` of a queue.
pub const MAX_QUEUE_SIZE: i64 = 1_000_000;
/// Default `max_size` of a queue made by an enqueue.
pub const DEFAULT_AUTO_QUEUE_SIZE: usize = 100;
/// Default `max_size` of a queue made by the create call.
pub const DEFAULT_EXPLICIT_QUEUE_SIZE: usize = 300;
/// Highest priority band.
pub const MAX_PRIORITY: i64 = 9;
/// Largest page.
pub const MAX_PAGE_SIZE: i64 = 250;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// What every call command accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOptions {
    /// Stored on the call and echoed in its later events (base64 text).
    pub client_state: Option<String>,
    /// A repeat of an accepted `command_id` within 60 s is answered with success and not
    /// executed again.
    pub command_id: Option<String>,
}

impl CommandOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(cs) = &self.client_state {
            validate_client_state(cs)?;
        }
        if let Some(id) = &self.command_id {
            validate_text("/command_id", id)?;
        }
        Ok(())
    }
}

/// Parameters of dial (create a call).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialParams {
    /// The called party (required).
    pub to: Option<String>,
    /// The calling party (required).
    pub from: Option<String>,
    /// The Call Control application (required).
    pub connection_id: Option<String>,
    /// Initial client state.
    pub client_state: Option<String>,
    /// Where this call's webhooks go.
    pub webhook_url: Option<String>,
    /// Only `POST` is supported.
    pub webhook_url_method: Option<String>,
    /// \[ext\] Adopt this id (from an external switch) instead of making one.
    pub call_control_id: Option<String>,
}

impl DialParams {
    /// A dial from `from` to `to` on `connection_id`.
    #[must_use]
    pub fn new(to: impl Into<String>, from: impl Into<String>, connection_id: impl Into<String>) -> Self {
        Self {
            to: Some(to.into()),
            from: Some(from.into()),
            connection_id: Some(connection_id.into()),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(&str, &str, &str)> {
        let to = required("/to", self.to.as_deref())?;
        let from = required("/from", self.from.as_deref())?;
        let connection_id = required("/connection_id", self.connection_id.as_deref())?;
        validate_text("/to", to)?;
        validate_text("/from", from)?;
        validate_text("/connection_id", connection_id)?;
        if let Some(cs) = &self.client_state {
            validate_client_state(cs)?;
        }
        if let Some(url) = &self.webhook_url {
            validate_url("/webhook_url", url)?;
        }
        if let Some(m) = &self.webhook_url_method {
            if m != "POST" {
                return Err(Error::invalid_enum("/webhook_url_method", &["POST"]));
            }
        }
        if let Some(id) = &self.call_control_id {
            validate_text("/call_control_id", id)?;
        }
        Ok((to, from, connection_id))
    }
}

/// Parameters of enqueue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnqueueParams {
    /// The queue (required); made if absent.
    pub queue_name: Option<String>,
    /// 1..=86 400: the call leaves with reason `timeout` after this long.
    pub max_wait_time_secs: Option<i64>,
    /// 1..=1 000 000, default 100; used only when the enqueue makes the queue.
    pub max_size: Option<i64>,
    /// Stay in the queue (as a dead member) after hangup.
    pub keep_after_hangup: Option<bool>,
    /// \[ext\] 0..=9, default 0; higher is served first.
    pub priority: Option<i64>,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

impl EnqueueParams {
    /// Enqueue into `queue_name` with every default.
    #[must_use]
    pub fn new(queue_name: impl Into<String>) -> Self {
        Self { queue_name: Some(queue_name.into()), ..Self::default() }
    }

    /// Sets `max_wait_time_secs`.
    #[must_use]
    pub const fn max_wait_time_secs(mut self, secs: i64) -> Self {
        self.max_wait_time_secs = Some(secs);
        self
    }

    /// Sets `max_size`.
    #[must_use]
    pub const fn max_size(mut self, size: i64) -> Self {
        self.max_size = Some(size);
        self
    }

    /// Sets `keep_after_hangup`.
    #[must_use]
    pub const fn keep_after_hangup(mut self, keep: bool) -> Self {
        self.keep_after_hangup = Some(keep);
        self
    }

    /// Sets the priority.
    #[must_use]
    pub const fn priority(mut self, priority: i64) -> Self {
        self.priority = Some(priority);
        self
    }

    pub(crate) fn validate(&self) -> Result<ValidEnqueue<'_>> {
        let queue = required("/queue_name", self.queue_name.as_deref())?;
        validate_queue_name("/queue_name", queue)?;
        let max_wait = self
            .max_wait_time_secs
            .map(|s| in_range("/max_wait_time_secs", s, 1, MAX_WAIT_TIME_SECS))
            .transpose()?;
        let max_size = self
            .max_size
            .map(|s| in_range("/max_size", s, 1, MAX_QUEUE_SIZE))
            .transpose()?
            .map_or(DEFAULT_AUTO_QUEUE_SIZE, |s| s as usize);
        let priority = self.priority.map(|p| in_range("/priority", p, 0, MAX_PRIORITY)).transpose()?;
        self.options.validate()?;
        Ok(ValidEnqueue {
            queue,
            max_wait_secs: max_wait.map(|s| s as u64),
            max_size,
            keep_after_hangup: self.keep_after_hangup.unwrap_or(false),
            priority: priority.map_or(0, |p| p as u8),
        })
    }
}

pub(crate) struct ValidEnqueue<'a> {
    pub(crate) queue: &'a str,
    pub(crate) max_wait_secs: Option<u64>,
    pub(crate) max_size: usize,
    pub(crate) keep_after_hangup: bool,
    pub(crate) priority: u8,
}

/// Media options of bridge: checked for type and enumeration, otherwise without effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BridgeMediaOptions {
    pub play_ringtone: Option<bool>,
    pub ringtone: Option<String>,
    pub record: Option<String>,
    pub record_channels: Option<String>,
    pub record_format: Option<String>,
    pub record_max_length: Option<i64>,
    pub record_timeout_secs: Option<i64>,
    pub record_track: Option<String>,
    pub record_trim: Option<String>,
    pub record_custom_file_name: Option<String>,
    pub mute_dtmf: Option<String>,
    pub hold_after_unbridge: Option<bool>,
    pub prevent_double_bridge: Option<bool>,
    pub video_room_id: Option<String>,
    pub video_room_context: Option<String>,
}

const RINGTONES: &[&str] = &[
    "at", "au", "be", "bg", "br", "ch", "cl", "cn", "cz", "de", "dk", "ee", "es", "fi", "fr", "gr", "hu",
    "il", "in", "it", "jp", "lt", "mx", "my", "nl", "no", "nz", "ph", "pl", "pt", "ru", "se", "sg", "th",
    "tw", "uk", "us-old", "us", "ve", "za",
];

impl BridgeMediaOptions {
    fn validate(&self) -> Result<()> {
        one_of("/ringtone", self.ringtone.as_deref(), RINGTONES)?;
        one_of("/record", self.record.as_deref(), &["record-from-answer"])?;
        one_of("/record_channels", self.record_channels.as_deref(), &["single", "dual"])?;
        one_of("/record_format", self.record_format.as_deref(), &["wav", "mp3"])?;
        one_of("/record_track", self.record_track.as_deref(), &["both", "inbound", "outbound"])?;
        one_of("/record_trim", self.record_trim.as_deref(), &["trim-silence"])?;
        one_of("/mute_dtmf", self.mute_dtmf.as_deref(), &["none", "both", "self", "opposite"])?;
        if let Some(v) = self.record_max_length {
            in_range("/record_max_length", v, 0, 43_200)?;
        }
        if let Some(v) = self.record_timeout_secs {
            in_range("/record_timeout_secs", v, 0, i64::from(i32::MAX))?;
        }
        if let Some(name) = &self.record_custom_file_name {
            if name.is_empty() || name.len() > 40 {
                return Err(Error::out_of_range(
                    "/record_custom_file_name",
                    "The 'record_custom_file_name' parameter must be 1 to 40 characters long.",
                ));
            }
        }
        if let Some(v) = &self.video_room_id {
            validate_text("/video_room_id", v)?;
        }
        if let Some(v) = &self.video_room_context {
            validate_text("/video_room_context", v)?;
        }
        Ok(())
    }
}

/// Parameters of bridge: with a queue (its head) or with a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeParams {
    /// The other call (ignored when `queue` is given).
    pub call_control_id: Option<String>,
    /// Bridge with the head of this queue.
    pub queue: Option<String>,
    /// `"self"`: this leg is parked, not hung up, when the bridge ends.
    pub park_after_unbridge: Option<String>,
    /// Media options (validated, no effect).
    pub media: BridgeMediaOptions,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

impl BridgeParams {
    /// Bridge with the head of `queue`.
    #[must_use]
    pub fn queue(queue: impl Into<String>) -> Self {
        Self { queue: Some(queue.into()), ..Self::default() }
    }

    /// Bridge with the call `call_control_id`.
    #[must_use]
    pub fn call(call_control_id: impl Into<String>) -> Self {
        Self { call_control_id: Some(call_control_id.into()), ..Self::default() }
    }

    /// Park this leg when the bridge ends (`park_after_unbridge: "self"`).
    #[must_use]
    pub fn park_after_unbridge(mut self) -> Self {
        self.park_after_unbridge = Some("self".into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(BridgeTarget<'_>, bool)> {
        let park = match self.park_after_unbridge.as_deref() {
            None => false,
            Some("self") => true,
            Some(_) => return Err(Error::invalid_enum("/park_after_unbridge", &["self"])),
        };
        let target = match (self.queue.as_deref(), self.call_control_id.as_deref()) {
            (Some(q), _) => {
                validate_queue_name("/queue", q)?;
                BridgeTarget::Queue(q)
            }
            (None, Some(c)) => {
                validate_text("/call_control_id", c)?;
                BridgeTarget::Call(c)
            }
            (None, None) => return Err(Error::missing("/call_control_id")),
        };
        self.media.validate()?;
        self.options.validate()?;
        Ok((target, park))
    }
}

pub(crate) enum BridgeTarget<'a> {
    Queue(&'a str),
    Call(&'a str),
}

/// Parameters of transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferParams {
    /// The new call's destination (required).
    pub to: Option<String>,
    /// The new call's caller id (default: the transferred call's `to`).
    pub from: Option<String>,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

impl TransferParams {
    /// Transfer to `to`.
    #[must_use]
    pub fn new(to: impl Into<String>) -> Self {
        Self { to: Some(to.into()), ..Self::default() }
    }

    pub(crate) fn validate(&self) -> Result<&str> {
        let to = required("/to", self.to.as_deref())?;
        validate_text("/to", to)?;
        if let Some(from) = &self.from {
            validate_text("/from", from)?;
        }
        self.options.validate()?;
        Ok(to)
    }
}

/// Changes to a queue member; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueCallUpdate {
    /// Keep the call in the queue after hangup.
    pub keep_after_hangup: Option<bool>,
    /// \[ext\] New priority, 0..=9; the call keeps its arrival order within the new band.
    pub priority: Option<i64>,
}

impl QueueCallUpdate {
    pub(crate) fn validate(&self) -> Result<Option<u8>> {
        Ok(self.priority.map(|p| in_range("/priority", p, 0, MAX_PRIORITY)).transpose()?.map(|p| p as u8))
    }
}

/// Which page of a list; `None` takes the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number, default 1.
    pub number: Option<i64>,
    /// 1..=250, default 20.
    pub size: Option<i64>,
}

impl PageRequest {
    /// Page `number` of `size` items.
    #[must_use]
    pub const fn new(number: i64, size: i64) -> Self {
        Self { number: Some(number), size: Some(size) }
    }

    pub(crate) fn validate(self) -> Result<(usize, usize)> {
        let number = self.number.map(|n| in_range("/page[number]", n, 1, i64::MAX)).transpose()?.unwrap_or(1);
        let size = self
            .size
            .map(|n| in_range("/page[size]", n, 1, MAX_PAGE_SIZE))
            .transpose()?
            .map_or(DEFAULT_PAGE_SIZE, |s| s as usize);
        Ok((usize::try_from(number).unwrap_or(usize::MAX), size))
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Page<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// The page's number (1-based).
    pub page_number: usize,
    /// Items per page.
    pub page_size: usize,
    /// Pages in all (0 when the list is empty).
    pub total_pages: usize,
    /// Items in all.
    pub total_results: usize,
}

impl<T> Page<T> {
    pub(crate) fn new(data: Vec<T>, page_number: usize, page_size: usize, total_results: usize) -> Self {
        Self { data, page_number, page_size, total_pages: total_results.div_ceil(page_size), total_results }
    }
}

pub(crate) fn validate_max_size(pointer: &'static str, size: Option<i64>) -> Result<usize> {
    let size = required_value(pointer, size)?;
    Ok(in_range(pointer, size, 1, MAX_QUEUE_SIZE)? as usize)
}

fn required<'a>(pointer: &'static str, v: Option<&'a str>) -> Result<&'a str> {
    v.ok_or_else(|| Error::missing(pointer))
}

fn required_value<T>(pointer: &'static str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::missing(pointer))
}

fn in_range(pointer: &'static str, v: i64, lo: i64, hi: i64) -> Result<i64> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::out_of_range(
            pointer,
            format!("The '{}' parameter must be between {lo} and {hi}.", &pointer[1..]),
        ))
    }
}

fn one_of(pointer: &'static str, v: Option<&str>, allowed: &[&str]) -> Result<()> {
    match v {
        Some(v) if !allowed.contains(&v) => Err(Error::invalid_enum(pointer, allowed)),
        _ => Ok(()),
    }
}

/// 1..=255 bytes, no control characters: call ids, numbers, connection ids, command ids.
pub(crate) fn validate_text(pointer: &'static str, v: &str) -> Result<()> {
    // Control characters are ASCII ones or U+0080..=U+009F: scan chars only past ASCII.
    let has_control =
        if v.is_ascii() { v.bytes().any(|b| b.is_ascii_control()) } else { v.chars().any(char::is_control) };
    if v.is_empty() || v.len() > MAX_NAME_LEN || has_control {
        return Err(Error::out_of_range(
            pointer,
            format!(
                "The '{}' parameter must be 1 to {MAX_NAME_LEN} bytes without control characters.",
                &pointer[1..]
            ),
        ));
    }
    Ok(())
}

/// Queue names follow the same rule as other names (docs/behaviour.md §1).
pub(crate) fn validate_queue_name(pointer: &'static str, v: &str) -> Result<()> {
    validate_text(pointer, v)
}

fn validate_client_state(v: &str) -> Result<()> {
    let body = v.trim_end_matches('=');
    let padding = v.len() - body.len();
    let alphabet_ok =
        body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if v.is_empty() || v.len() > MAX_CLIENT_STATE_LEN || padding > 2 || !alphabet_ok {
        return Err(Error::out_of_range(
            "/client_state",
            format!("The 'client_state' parameter must be base64 text of 1 to {MAX_CLIENT_STATE_LEN} bytes."),
        ));
    }
    Ok(())
}

fn validate_url(pointer: &'static str, v: &str) -> Result<()> {
    let scheme_ok = v.starts_with("http://") || v.starts_with("https://");
    if !scheme_ok || v.len() > MAX_URL_LEN || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::out_of_range(
            pointer,
            format!(
                "The '{}' parameter must be an http(s) URL of at most {MAX_URL_LEN} bytes.",
                &pointer[1..]
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_ranges() {
        assert!(EnqueueParams::new("q").validate().is_ok());
        let bad = |p: EnqueueParams, ptr: &str| {
            let e = p.validate().err().expect("must fail");
            assert_eq!(e.pointer(), Some(ptr));
        };
        bad(EnqueueParams::default(), "/queue_name");
        bad(EnqueueParams::new(""), "/queue_name");
        bad(EnqueueParams::new("a\u{7}b"), "/queue_name");
        bad(EnqueueParams::new("x".repeat(256)), "/queue_name");
        bad(EnqueueParams::new("q").max_wait_time_secs(0), "/max_wait_time_secs");
        bad(EnqueueParams::new("q").max_wait_time_secs(86_401), "/max_wait_time_secs");
        bad(EnqueueParams::new("q").max_size(0), "/max_size");
        bad(EnqueueParams::new("q").max_size(1_000_001), "/max_size");
        bad(EnqueueParams::new("q").priority(10), "/priority");
        bad(EnqueueParams::new("q").priority(-1), "/priority");
        assert!(
            EnqueueParams::new("x".repeat(255))
                .max_wait_time_secs(86_400)
                .max_size(1_000_000)
                .priority(9)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn client_state_must_be_base64() {
        assert!(validate_client_state("aGF2ZSBhIG5pY2UgZGF5ID1d").is_ok());
        assert!(validate_client_state("aGk=").is_ok());
        assert!(validate_client_state("not base64!").is_err());
        assert!(validate_client_state("").is_err());
    }

    #[test]
    fn bridge_needs_a_target_and_valid_enums() {
        assert_eq!(BridgeParams::default().validate().err().map(|e| e.code()), Some("10004"));
        let mut p = BridgeParams::call("x");
        p.park_after_unbridge = Some("other".into());
        assert_eq!(p.validate().err().map(|e| e.code()), Some("10032"));
        let mut p = BridgeParams::queue("q");
        p.media.ringtone = Some("xx".into());
        assert_eq!(p.validate().err().map(|e| e.code()), Some("10032"));
        let mut p = BridgeParams::queue("q");
        p.media.record_max_length = Some(43_201);
        assert_eq!(p.validate().err().map(|e| e.code()), Some("10033"));
    }

    #[test]
    fn pages() {
        assert_eq!(PageRequest::default().validate().ok(), Some((1, 20)));
        assert_eq!(PageRequest::new(0, 1).validate().err().and_then(|e| e.pointer()), Some("/page[number]"));
        assert_eq!(PageRequest::new(1, 251).validate().err().and_then(|e| e.pointer()), Some("/page[size]"));
        let p: Page<u8> = Page::new(vec![], 1, 20, 41);
        assert_eq!(p.total_pages, 3);
    }
}
