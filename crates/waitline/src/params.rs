//! Command parameters and their validation. Every range, length and enumeration of
//! docs/behaviour.md is checked here, so frontends only translate types.
//!
//! Parameters are Rust types ([`Duration`] for waits, `u8` for priorities, `bool` flags, an
//! enum for `park_after_unbridge`); what a type cannot rule out (an empty name, a priority of
//! 12, a wait of two days) the core refuses, naming the parameter by its wire name, so every
//! frontend answers the same error. A frontend whose numbers come in another type (JSON
//! integers, Python ints) converts them with the [`Bounds`] of the parameter, which refuses
//! what does not fit exactly as the core refuses what is out of range.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::text;

/// Longest call id, queue name, number or connection id (bytes).
pub const MAX_NAME_LEN: usize = 255;
/// Longest `client_state` (bytes of base64 text).
pub const MAX_CLIENT_STATE_LEN: usize = 4096;
/// Longest `webhook_url` (bytes).
pub const MAX_URL_LEN: usize = 2048;
/// Default `max_size` of a queue made by an enqueue.
pub const DEFAULT_AUTO_QUEUE_SIZE: usize = 100;
/// Default `max_size` of a queue made by the create call.
pub const DEFAULT_EXPLICIT_QUEUE_SIZE: usize = 300;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A numeric parameter: its wire name and its inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The parameter's name on the wire.
    pub parameter: &'static str,
    /// Smallest value allowed.
    pub min: i64,
    /// Largest value allowed.
    pub max: i64,
}

/// `max_wait_time_secs`: 1 s to 24 h.
pub const MAX_WAIT_TIME_SECS: Bounds = Bounds { parameter: "max_wait_time_secs", min: 1, max: 86_400 };
/// `max_size` of a queue.
pub const QUEUE_MAX_SIZE: Bounds = Bounds { parameter: "max_size", min: 1, max: 1_000_000 };
/// \[ext\] `priority`: bands 0 to 9, higher served first.
pub const PRIORITY: Bounds = Bounds { parameter: "priority", min: 0, max: 9 };
/// `page[number]`, 1-based.
pub const PAGE_NUMBER: Bounds = Bounds { parameter: "page[number]", min: 1, max: i64::MAX };
/// `page[size]`.
pub const PAGE_SIZE: Bounds = Bounds { parameter: "page[size]", min: 1, max: 250 };
/// Bridge media option `record_max_length` (seconds).
pub const RECORD_MAX_LENGTH: Bounds = Bounds { parameter: "record_max_length", min: 0, max: 43_200 };
/// Bridge media option `record_timeout_secs`.
pub const RECORD_TIMEOUT_SECS: Bounds =
    Bounds { parameter: "record_timeout_secs", min: 0, max: i32::MAX as i64 };

impl Bounds {
    /// The value, if it is in range; else the core's out-of-range error for the parameter.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`10033`) naming the parameter.
    pub fn check(self, value: i64) -> Result<i64> {
        if (self.min..=self.max).contains(&value) { Ok(value) } else { Err(self.error()) }
    }

    /// A wire number as the parameter's Rust type, refused as out of range when it is not in
    /// range (or does not fit the type).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`10033`) naming the parameter.
    pub fn convert<T: TryFrom<i64>>(self, value: i64) -> Result<T> {
        T::try_from(self.check(value)?).map_err(|_| self.error())
    }

    /// Checks a value of the parameter's Rust type.
    fn check_unsigned(self, value: impl Into<u64>) -> Result<u64> {
        let value = value.into();
        match i64::try_from(value) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(value),
            _ => Err(self.error()),
        }
    }

    fn error(self) -> Error {
        Error::out_of_range(
            self.parameter,
            format!("The '{}' parameter must be between {} and {}.", self.parameter, self.min, self.max),
        )
    }
}

/// What every call command accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandOptions {
    /// Stored on the call and echoed in its later events (base64 text).
    pub client_state: Option<String>,
    /// A repeat of an accepted `command_id` within 60 s is answered with success and not
    /// executed again.
    pub command_id: Option<String>,
}

impl CommandOptions {
    /// Inlined, with the checks of given options out of line: most commands carry neither,
    /// and two tests then cost less than a call (left to the compiler, it was kept out of
    /// line in a caller with several commands, ~20 instructions a command).
    #[inline(always)]
    pub(crate) fn validate(&self) -> Result<()> {
        if self.client_state.is_none() && self.command_id.is_none() {
            return Ok(());
        }
        self.validate_given()
    }

    #[inline(never)]
    fn validate_given(&self) -> Result<()> {
        if let Some(cs) = &self.client_state {
            validate_client_state(cs)?;
        }
        if let Some(id) = &self.command_id {
            validate_text("command_id", id)?;
        }
        Ok(())
    }
}

/// Parameters of dial (create a call).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DialParams {
    /// The called party.
    pub to: String,
    /// The calling party.
    pub from: String,
    /// The Call Control application.
    pub connection_id: String,
    /// Initial client state.
    pub client_state: Option<String>,
    /// Where this call's webhooks go.
    pub webhook_url: Option<String>,
    /// \[ext\] Adopt this id (from an external switch) instead of making one.
    pub call_control_id: Option<String>,
    /// A repeat of a dial's accepted `command_id` within 60 s makes no second call and
    /// answers the first dial's call (docs/behaviour.md §2.1). Recorded apart from the other
    /// fields ([`crate::journal::Change::DialWithCommandId`]), so that the records of dials
    /// written before dial took one still read.
    #[serde(skip)]
    pub command_id: Option<String>,
}

impl DialParams {
    /// A dial from `from` to `to` on `connection_id`.
    #[must_use]
    pub fn new(to: impl Into<String>, from: impl Into<String>, connection_id: impl Into<String>) -> Self {
        Self { to: to.into(), from: from.into(), connection_id: connection_id.into(), ..Self::default() }
    }

    /// Checks every parameter as [`crate::Tenant::dial`] does, without dialling: a frontend
    /// with work of its own between the checks and the dial (the HTTP service checks the
    /// webhook's destination, then starts its webhook outbox) calls this first, so that its
    /// errors come after the parameters' (docs/behaviour.md §2.1).
    ///
    /// # Errors
    /// The first parameter out of its rule, as dial would name it.
    pub fn check(&self) -> Result<()> {
        self.validate().map(|_| ())
    }

    pub(crate) fn validate(&self) -> Result<(&str, &str, &str)> {
        validate_text("to", &self.to)?;
        validate_text("from", &self.from)?;
        validate_text("connection_id", &self.connection_id)?;
        if let Some(cs) = &self.client_state {
            validate_client_state(cs)?;
        }
        if let Some(url) = &self.webhook_url {
            validate_url("webhook_url", url)?;
        }
        if let Some(id) = &self.call_control_id {
            validate_text("call_control_id", id)?;
        }
        if let Some(id) = &self.command_id {
            validate_text("command_id", id)?;
        }
        Ok((&self.to, &self.from, &self.connection_id))
    }
}

/// Parameters of enqueue. `S` holds the queue name: `String` (the default, and what the
/// journal records), or a `&str` the caller lends for the command (the Python module lends
/// the Python string's text: no copy per command).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnqueueParams<S = String> {
    /// The queue; made if absent.
    pub queue_name: S,
    /// Whole seconds from 1 s to 24 h: the call leaves with reason `timeout` after this long.
    pub max_wait: Option<Duration>,
    /// 1..=1 000 000, default 100; used only when the enqueue makes the queue.
    pub max_size: Option<u32>,
    /// Stay in the queue (as a dead member) after hangup.
    pub keep_after_hangup: bool,
    /// \[ext\] 0..=9, default 0; higher is served first.
    pub priority: Option<u8>,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

// For the owned form only, so that `EnqueueParams::default()` needs no annotation.
impl Default for EnqueueParams {
    fn default() -> Self {
        Self {
            queue_name: String::new(),
            max_wait: None,
            max_size: None,
            keep_after_hangup: false,
            priority: None,
            options: CommandOptions::default(),
        }
    }
}

impl EnqueueParams {
    /// Enqueue into `queue_name` with every default.
    #[must_use]
    pub fn new(queue_name: impl Into<String>) -> Self {
        Self { queue_name: queue_name.into(), ..Self::default() }
    }
}

impl<S> EnqueueParams<S> {
    /// Sets the longest wait.
    #[must_use]
    pub const fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Sets the longest wait in seconds (`max_wait_time_secs` on the wire).
    #[must_use]
    pub const fn max_wait_time_secs(self, secs: u64) -> Self {
        self.max_wait(Duration::from_secs(secs))
    }

    /// Sets `max_size`.
    #[must_use]
    pub const fn max_size(mut self, size: u32) -> Self {
        self.max_size = Some(size);
        self
    }

    /// Sets `keep_after_hangup`.
    #[must_use]
    pub const fn keep_after_hangup(mut self, keep: bool) -> Self {
        self.keep_after_hangup = keep;
        self
    }

    /// Sets the priority.
    #[must_use]
    pub const fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
}

impl<S: AsRef<str>> EnqueueParams<S> {
    pub(crate) fn validate(&self) -> Result<ValidEnqueue<'_>> {
        let queue = self.queue_name.as_ref();
        validate_queue_name("queue_name", queue)?;
        let max_wait_secs = self.max_wait.map(validate_max_wait).transpose()?;
        let max_size = self.max_size.map_or(Ok(DEFAULT_AUTO_QUEUE_SIZE), validate_max_size)?;
        let priority = self.priority.map(validate_priority).transpose()?;
        self.options.validate()?;
        Ok(ValidEnqueue {
            queue,
            max_wait_secs,
            max_size,
            keep_after_hangup: self.keep_after_hangup,
            priority: priority.unwrap_or(0),
        })
    }
}

impl<S: AsRef<str>> EnqueueParams<S> {
    /// The parameters with the queue name owned, as the journal records them.
    pub(crate) fn to_owned_params(&self) -> EnqueueParams {
        EnqueueParams {
            queue_name: self.queue_name.as_ref().to_owned(),
            max_wait: self.max_wait,
            max_size: self.max_size,
            keep_after_hangup: self.keep_after_hangup,
            priority: self.priority,
            options: self.options.clone(),
        }
    }
}

pub(crate) struct ValidEnqueue<'a> {
    pub(crate) queue: &'a str,
    pub(crate) max_wait_secs: Option<u64>,
    pub(crate) max_size: usize,
    pub(crate) keep_after_hangup: bool,
    pub(crate) priority: u8,
}

/// A wait must be whole seconds in range (the wire speaks seconds, and so do the figures).
fn validate_max_wait(wait: Duration) -> Result<u64> {
    if wait.subsec_nanos() != 0 {
        return Err(MAX_WAIT_TIME_SECS.error());
    }
    MAX_WAIT_TIME_SECS.check_unsigned(wait.as_secs())
}

fn validate_priority(priority: u8) -> Result<u8> {
    PRIORITY.check_unsigned(priority).map(|_| priority)
}

/// What happens to a leg when its bridge ends (`park_after_unbridge` on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AfterUnbridge {
    /// The leg is hung up (no `park_after_unbridge`).
    #[default]
    HangUp,
    /// The leg is parked: it stays `active` (`park_after_unbridge: "self"`).
    Park,
}

impl AfterUnbridge {
    /// The values `park_after_unbridge` takes on the wire.
    pub const WIRE_VALUES: &'static [&'static str] = &["self"];

    /// From the wire's `park_after_unbridge` (absent: hang up).
    ///
    /// # Errors
    /// `10032` for a value other than `"self"`.
    pub fn from_wire(value: Option<&str>) -> Result<Self> {
        match value {
            None => Ok(Self::HangUp),
            Some("self") => Ok(Self::Park),
            Some(_) => Err(Error::invalid_enum("park_after_unbridge", Self::WIRE_VALUES)),
        }
    }
}

/// Media options of bridge: checked for type and enumeration, otherwise without effect (no
/// media flows through waitline), so they stay the wire's strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct BridgeMediaOptions {
    pub play_ringtone: Option<bool>,
    pub ringtone: Option<String>,
    pub record: Option<String>,
    pub record_channels: Option<String>,
    pub record_format: Option<String>,
    pub record_max_length: Option<u32>,
    pub record_timeout_secs: Option<u32>,
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
    /// No option given.
    pub const NONE: Self = Self {
        play_ringtone: None,
        ringtone: None,
        record: None,
        record_channels: None,
        record_format: None,
        record_max_length: None,
        record_timeout_secs: None,
        record_track: None,
        record_trim: None,
        record_custom_file_name: None,
        mute_dtmf: None,
        hold_after_unbridge: None,
        prevent_double_bridge: None,
        video_room_id: None,
        video_room_context: None,
    };

    /// The options as [`BridgeParams::media`] holds them: `None` when none is given.
    #[must_use]
    pub fn given(self) -> Option<Box<Self>> {
        (self != Self::NONE).then(|| Box::new(self))
    }

    fn validate(&self) -> Result<()> {
        one_of("ringtone", self.ringtone.as_deref(), RINGTONES)?;
        one_of("record", self.record.as_deref(), &["record-from-answer"])?;
        one_of("record_channels", self.record_channels.as_deref(), &["single", "dual"])?;
        one_of("record_format", self.record_format.as_deref(), &["wav", "mp3"])?;
        one_of("record_track", self.record_track.as_deref(), &["both", "inbound", "outbound"])?;
        one_of("record_trim", self.record_trim.as_deref(), &["trim-silence"])?;
        one_of("mute_dtmf", self.mute_dtmf.as_deref(), &["none", "both", "self", "opposite"])?;
        if let Some(v) = self.record_max_length {
            RECORD_MAX_LENGTH.check_unsigned(v)?;
        }
        if let Some(v) = self.record_timeout_secs {
            RECORD_TIMEOUT_SECS.check_unsigned(v)?;
        }
        if let Some(name) = &self.record_custom_file_name {
            if name.is_empty() || name.len() > 40 {
                return Err(Error::out_of_range(
                    "record_custom_file_name",
                    "The 'record_custom_file_name' parameter must be 1 to 40 characters long.",
                ));
            }
        }
        if let Some(v) = &self.video_room_id {
            validate_text("video_room_id", v)?;
        }
        if let Some(v) = &self.video_room_context {
            validate_text("video_room_context", v)?;
        }
        Ok(())
    }
}

/// Parameters of bridge: with a queue (its head) or with a call. `S` holds the ids and
/// names, as in [`EnqueueParams`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BridgeParams<S = String> {
    /// The other call (ignored when `queue` is given).
    pub call_control_id: Option<S>,
    /// Bridge with the head of this queue.
    pub queue: Option<S>,
    /// What happens to this leg when the bridge ends.
    pub after_unbridge: AfterUnbridge,
    /// Media options (validated, no effect); `None` when none is given (the common case:
    /// boxed, so a bridge's parameters are ~100 bytes, not ~360, and checking them reads
    /// two cache lines, not six). [`BridgeMediaOptions::given`] makes it from the options.
    /// Journal records keep the options inline, as before they were boxed.
    #[serde(with = "media_inline")]
    pub media: Option<Box<BridgeMediaOptions>>,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

/// `BridgeParams::media` serialized as the options themselves (all absent for `None`), so
/// that records written before the options were boxed read the same.
mod media_inline {
    use super::BridgeMediaOptions;

    pub(super) fn serialize<S: serde::Serializer>(
        media: &Option<Box<BridgeMediaOptions>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(media.as_deref().unwrap_or(&BridgeMediaOptions::NONE), s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Box<BridgeMediaOptions>>, D::Error> {
        <BridgeMediaOptions as serde::Deserialize>::deserialize(d).map(BridgeMediaOptions::given)
    }
}

// For the owned form only, as for `EnqueueParams`.
impl Default for BridgeParams {
    fn default() -> Self {
        Self {
            call_control_id: None,
            queue: None,
            after_unbridge: AfterUnbridge::default(),
            media: None,
            options: CommandOptions::default(),
        }
    }
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
}

impl<S> BridgeParams<S> {
    /// Park this leg when the bridge ends (`park_after_unbridge: "self"`).
    #[must_use]
    pub const fn park_after_unbridge(mut self) -> Self {
        self.after_unbridge = AfterUnbridge::Park;
        self
    }
}

impl<S: AsRef<str>> BridgeParams<S> {
    pub(crate) fn validate(&self) -> Result<(BridgeTarget<'_>, bool)> {
        let target = match (
            self.queue.as_ref().map(AsRef::as_ref),
            self.call_control_id.as_ref().map(AsRef::as_ref),
        ) {
            (Some(q), _) => {
                validate_queue_name("queue", q)?;
                BridgeTarget::Queue(q)
            }
            (None, Some(c)) => {
                validate_text("call_control_id", c)?;
                BridgeTarget::Call(c)
            }
            (None, None) => return Err(Error::missing("call_control_id")),
        };
        if let Some(media) = &self.media {
            media.validate()?;
        }
        self.options.validate()?;
        Ok((target, self.after_unbridge == AfterUnbridge::Park))
    }

    /// The parameters with the ids and names owned, as the journal records them.
    pub(crate) fn to_owned_params(&self) -> BridgeParams {
        let owned = |s: &Option<S>| s.as_ref().map(|s| s.as_ref().to_owned());
        BridgeParams {
            call_control_id: owned(&self.call_control_id),
            queue: owned(&self.queue),
            after_unbridge: self.after_unbridge,
            media: self.media.clone(),
            options: self.options.clone(),
        }
    }
}

pub(crate) enum BridgeTarget<'a> {
    Queue(&'a str),
    Call(&'a str),
}

/// Parameters of transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferParams {
    /// The new call's destination.
    pub to: String,
    /// The new call's caller id (default: the transferred call's `to`).
    pub from: Option<String>,
    /// `client_state` and `command_id`.
    pub options: CommandOptions,
}

impl TransferParams {
    /// Transfer to `to`.
    #[must_use]
    pub fn new(to: impl Into<String>) -> Self {
        Self { to: to.into(), ..Self::default() }
    }

    pub(crate) fn validate(&self) -> Result<&str> {
        validate_text("to", &self.to)?;
        if let Some(from) = &self.from {
            validate_text("from", from)?;
        }
        self.options.validate()?;
        Ok(&self.to)
    }
}

/// Changes to a queue member; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueCallUpdate {
    /// Keep the call in the queue after hangup.
    pub keep_after_hangup: Option<bool>,
    /// \[ext\] New priority, 0..=9; the call keeps its arrival order within the new band.
    pub priority: Option<u8>,
}

impl QueueCallUpdate {
    pub(crate) fn validate(&self) -> Result<Option<u8>> {
        self.priority.map(validate_priority).transpose()
    }
}

/// Which page of a list; `None` takes the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number, default 1.
    pub number: Option<u64>,
    /// 1..=250, default 20.
    pub size: Option<u32>,
}

impl PageRequest {
    /// Page `number` of `size` items.
    #[must_use]
    pub const fn new(number: u64, size: u32) -> Self {
        Self { number: Some(number), size: Some(size) }
    }

    pub(crate) fn validate(self) -> Result<(usize, usize)> {
        let number = self.number.map(|n| PAGE_NUMBER.check_unsigned(n)).transpose()?.unwrap_or(1);
        let size = self.size.map(|n| PAGE_SIZE.check_unsigned(n)).transpose()?;
        Ok((usize::try_from(number).unwrap_or(usize::MAX), size.map_or(DEFAULT_PAGE_SIZE, |s| s as usize)))
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

pub(crate) fn validate_max_size(size: u32) -> Result<usize> {
    Ok(QUEUE_MAX_SIZE.check_unsigned(size)? as usize)
}

fn one_of(parameter: &'static str, v: Option<&str>, allowed: &[&str]) -> Result<()> {
    match v {
        Some(v) if !allowed.contains(&v) => Err(Error::invalid_enum(parameter, allowed)),
        _ => Ok(()),
    }
}

/// 1..=255 bytes, no control characters: call ids, numbers, connection ids, command ids.
#[inline]
pub(crate) fn validate_text(parameter: &'static str, v: &str) -> Result<()> {
    // The common case, without early exits: the right length and printable ASCII only
    // (0x20..=0x7E), so no control character. Names of 4 to 16 bytes (of a length in
    // range) as two words, others in one pass (the compiler vectorises it).
    let fits = match text::words(v.as_bytes()) {
        Some([head, tail]) => text::printable(head) & text::printable(tail),
        None => {
            let printable = v.bytes().fold(true, |ok, b| ok & (b.wrapping_sub(0x20) < 0x5f));
            printable && !v.is_empty() && v.len() <= MAX_NAME_LEN
        }
    };
    if fits {
        return Ok(());
    }
    validate_text_slowly(parameter, v)
}

/// [`validate_text`] past its common case: text beyond ASCII, or refused.
#[cold]
#[inline(never)]
fn validate_text_slowly(parameter: &'static str, v: &str) -> Result<()> {
    // Control characters are ASCII ones or U+0080..=U+009F: scan chars only past ASCII.
    let has_control =
        if v.is_ascii() { v.bytes().any(|b| b.is_ascii_control()) } else { v.chars().any(char::is_control) };
    if v.is_empty() || v.len() > MAX_NAME_LEN || has_control {
        return Err(Error::out_of_range(
            parameter,
            format!(
                "The '{parameter}' parameter must be 1 to {MAX_NAME_LEN} bytes without control characters."
            ),
        ));
    }
    Ok(())
}

/// Queue names follow the same rule as other names (docs/behaviour.md §1).
pub(crate) fn validate_queue_name(parameter: &'static str, v: &str) -> Result<()> {
    validate_text(parameter, v)
}

fn validate_client_state(v: &str) -> Result<()> {
    let body = v.trim_end_matches('=');
    let padding = v.len() - body.len();
    let alphabet_ok =
        body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if v.is_empty() || v.len() > MAX_CLIENT_STATE_LEN || padding > 2 || !alphabet_ok {
        return Err(Error::out_of_range(
            "client_state",
            format!("The 'client_state' parameter must be base64 text of 1 to {MAX_CLIENT_STATE_LEN} bytes."),
        ));
    }
    Ok(())
}

fn validate_url(parameter: &'static str, v: &str) -> Result<()> {
    let scheme_ok = v.starts_with("http://") || v.starts_with("https://");
    if !scheme_ok || v.len() > MAX_URL_LEN || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::out_of_range(
            parameter,
            format!("The '{}' parameter must be an http(s) URL of at most {MAX_URL_LEN} bytes.", parameter),
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
        let bad = |p: EnqueueParams, parameter: &str| {
            let e = p.validate().err().expect("must fail");
            assert_eq!(e.parameter(), Some(parameter));
        };
        bad(EnqueueParams::new(""), "queue_name");
        bad(EnqueueParams::new("a\u{7}b"), "queue_name");
        bad(EnqueueParams::new("x".repeat(256)), "queue_name");
        bad(EnqueueParams::new("q").max_wait_time_secs(0), "max_wait_time_secs");
        bad(EnqueueParams::new("q").max_wait_time_secs(86_401), "max_wait_time_secs");
        bad(EnqueueParams::new("q").max_wait(Duration::from_millis(1500)), "max_wait_time_secs");
        bad(EnqueueParams::new("q").max_size(0), "max_size");
        bad(EnqueueParams::new("q").max_size(1_000_001), "max_size");
        bad(EnqueueParams::new("q").priority(10), "priority");
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
    fn wire_numbers_convert_with_the_cores_error() {
        assert_eq!(PRIORITY.convert::<u8>(9).ok(), Some(9));
        for v in [-1, 10, 300, i64::MIN] {
            let e = PRIORITY.convert::<u8>(v).expect_err("out of range");
            assert_eq!((e.code(), e.parameter()), ("10033", Some("priority")));
            assert_eq!(e, EnqueueParams::new("q").priority(10).validate().err().expect("refused"));
        }
        assert_eq!(QUEUE_MAX_SIZE.convert::<u32>(1_000_000).ok(), Some(1_000_000));
        assert!(QUEUE_MAX_SIZE.convert::<u32>(-5).is_err());
        assert_eq!(PAGE_NUMBER.convert::<u64>(i64::MAX).ok(), Some(i64::MAX as u64));
        assert_eq!(PAGE_NUMBER.check(0).err().and_then(|e| e.parameter()), Some("page[number]"));
    }

    /// Names: 1..=255 bytes, every byte at the edges of the printable ASCII fast path, and
    /// the control characters past ASCII.
    #[test]
    fn names_at_their_limits() {
        let ok = |v: &str| validate_text("to", v).is_ok();
        assert!(ok("a") && ok(&"a".repeat(MAX_NAME_LEN)));
        assert!(!ok("") && !ok(&"a".repeat(MAX_NAME_LEN + 1)));
        for b in 0u8..=0x7f {
            let v = format!("ab{}cd", char::from(b));
            assert_eq!(ok(&v), !b.is_ascii_control(), "byte {b:#x}");
        }
        assert!(ok("caf\u{e9}") && ok("\u{a0}") && ok("\u{1F600}"));
        assert!(!ok("a\u{80}") && !ok("\u{85}") && !ok("a\u{9f}b"));
        assert!(ok("\u{e9}".repeat(MAX_NAME_LEN / 2).as_str()));
        assert!(!ok(&format!("{}\u{e9}", "a".repeat(MAX_NAME_LEN - 1))));
    }

    /// Each text rule at its edges (the mutants of these checks survived the other tests).
    #[test]
    fn text_parameters_at_their_limits() {
        let refused = |r: Result<()>| r.err().map(|e| (e.code(), e.parameter().unwrap_or("")));
        // client_state: 1..=4096 bytes, at most two '=' of padding.
        let ok = "A".repeat(MAX_CLIENT_STATE_LEN);
        assert_eq!(refused(validate_client_state(&ok)), None);
        assert_eq!(refused(validate_client_state(&format!("{ok}A"))), Some(("10033", "client_state")));
        assert_eq!(refused(validate_client_state("YQ==")), None);
        assert_eq!(refused(validate_client_state("YQ===")), Some(("10033", "client_state")));
        assert_eq!(
            refused(validate_client_state("A".repeat(5000).as_str())),
            Some(("10033", "client_state"))
        );
        // webhook_url: http or https, at most 2048 bytes, no white space.
        assert_eq!(refused(validate_url("webhook_url", "http://h/")), None);
        assert_eq!(refused(validate_url("webhook_url", "https://h/")), None);
        assert_eq!(refused(validate_url("webhook_url", "ftp://h/")), Some(("10033", "webhook_url")));
        let long = format!("https://h/{}", "p".repeat(MAX_URL_LEN - "https://h/".len()));
        assert_eq!(refused(validate_url("webhook_url", &long)), None);
        assert_eq!(refused(validate_url("webhook_url", &format!("{long}p"))), Some(("10033", "webhook_url")));
        assert_eq!(refused(validate_url("webhook_url", "https://h/a b")), Some(("10033", "webhook_url")));
        assert_eq!(refused(validate_url("webhook_url", "ftp://h/a b")), Some(("10033", "webhook_url")));
        // Enumerations accept their own values.
        assert_eq!(refused(one_of("ringtone", Some("us"), RINGTONES)), None);
        assert_eq!(refused(one_of("ringtone", Some("xx"), RINGTONES)), Some(("10032", "ringtone")));
        // record_custom_file_name: 1..=40 bytes.
        let file = |name: &str| {
            let mut p = BridgeParams::queue("q");
            p.media.get_or_insert_default().record_custom_file_name = Some(name.into());
            p.validate().err().map(|e| e.code())
        };
        assert_eq!(file(&"f".repeat(40)), None);
        assert_eq!(file(&"f".repeat(41)), Some("10033"));
        assert_eq!(file(""), Some("10033"));
        assert_eq!(file("f"), None);
    }

    #[test]
    fn command_options_are_checked_by_every_command_that_takes_them() {
        let bad_state = CommandOptions { client_state: Some("not base64!".into()), command_id: None };
        let bad_id = CommandOptions { client_state: None, command_id: Some(String::new()) };
        for (options, parameter) in [(bad_state, "client_state"), (bad_id, "command_id")] {
            assert_eq!(options.validate().err().and_then(|e| e.parameter()), Some(parameter));
            let p = EnqueueParams { options: options.clone(), ..EnqueueParams::new("q") };
            assert_eq!(p.validate().err().and_then(|e| e.parameter()), Some(parameter));
            let p = BridgeParams { options: options.clone(), ..BridgeParams::queue("q") };
            assert_eq!(p.validate().err().and_then(|e| e.parameter()), Some(parameter));
            let p = TransferParams { options, ..TransferParams::new("+1") };
            assert_eq!(p.validate().err().and_then(|e| e.parameter()), Some(parameter));
        }
    }

    #[test]
    fn client_state_must_be_base64() {
        assert!(validate_client_state("aGF2ZSBhIG5pY2UgZGF5ID1d").is_ok());
        assert!(validate_client_state("aGk=").is_ok());
        assert!(validate_client_state("not base64!").is_err());
        assert!(validate_client_state("").is_err());
    }

    /// Boxing the media options changed no byte of a journal record: `None` is written as
    /// the options all absent, and options read back are boxed only when one is given.
    #[test]
    fn media_options_keep_their_record_format() {
        let none = BridgeParams::queue("q");
        let inline = |media: &BridgeMediaOptions| {
            let fields = (None::<String>, Some("q"), AfterUnbridge::HangUp, media, CommandOptions::default());
            postcard::to_allocvec(&fields).unwrap()
        };
        assert_eq!(postcard::to_allocvec(&none).unwrap(), inline(&BridgeMediaOptions::NONE));
        assert_eq!(postcard::from_bytes::<BridgeParams>(&inline(&BridgeMediaOptions::NONE)).unwrap(), none);
        let ringtone = BridgeMediaOptions { ringtone: Some("de".into()), ..BridgeMediaOptions::NONE };
        let given = BridgeParams { media: ringtone.clone().given(), ..none };
        assert_eq!(given.media.as_deref(), Some(&ringtone));
        assert_eq!(postcard::to_allocvec(&given).unwrap(), inline(&ringtone));
        assert_eq!(postcard::from_bytes::<BridgeParams>(&inline(&ringtone)).unwrap(), given);
        assert_eq!(BridgeMediaOptions::default().given(), None);
    }

    #[test]
    fn bridge_needs_a_target_and_valid_enums() {
        assert_eq!(BridgeParams::default().validate().err().map(|e| e.code()), Some("10004"));
        assert_eq!(AfterUnbridge::from_wire(Some("other")).err().map(|e| e.code()), Some("10032"));
        assert_eq!(AfterUnbridge::from_wire(Some("self")).ok(), Some(AfterUnbridge::Park));
        assert_eq!(AfterUnbridge::from_wire(None).ok(), Some(AfterUnbridge::HangUp));
        let mut p = BridgeParams::queue("q");
        p.media.get_or_insert_default().ringtone = Some("xx".into());
        assert_eq!(p.validate().err().map(|e| e.code()), Some("10032"));
        let mut p = BridgeParams::queue("q");
        p.media.get_or_insert_default().record_max_length = Some(43_201);
        assert_eq!(p.validate().err().map(|e| e.code()), Some("10033"));
    }

    #[test]
    fn pages() {
        assert_eq!(PageRequest::default().validate().ok(), Some((1, 20)));
        assert_eq!(PageRequest::new(0, 1).validate().err().and_then(|e| e.parameter()), Some("page[number]"));
        assert_eq!(PageRequest::new(1, 251).validate().err().and_then(|e| e.parameter()), Some("page[size]"));
        let p: Page<u8> = Page::new(vec![], 1, 20, 41);
        assert_eq!(p.total_pages, 3);
    }

    /// A name's check put together: a control character is refused at every place of
    /// names of every length up to 20 (the two-word path covers 4 to 16 bytes), other
    /// characters are not.
    #[test]
    fn control_characters_are_refused_at_every_place() {
        for n in 1..=20 {
            for i in 0..n {
                for bad in ["\u{0}", "\u{1f}", "\u{7f}"] {
                    let mut v = "a".repeat(n);
                    v.replace_range(i..=i, bad);
                    assert!(validate_text("x", &v).is_err(), "length {n}, byte {i}, {bad:?}");
                }
            }
            assert!(validate_text("x", &"~".repeat(n)).is_ok());
        }
        for ok in ["a\u{e9}", "abcd\u{e9}fgh", "abcdefghijklmno\u{e9}", "\u{a0}bc"] {
            assert!(validate_text("x", ok).is_ok(), "{ok:?}");
        }
        for bad in ["ab\u{85}", "abcdefghijklmn\u{85}", "", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(validate_text("x", bad).is_err(), "{bad:?}");
        }
        assert!(validate_text("x", &"a".repeat(MAX_NAME_LEN)).is_ok());
    }
}
