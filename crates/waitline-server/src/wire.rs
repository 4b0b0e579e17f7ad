//! JSON in and out: reading request bodies field by field (so each mistake names its field),
//! and the Telnyx response envelopes.

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

use waitline::{
    AfterUnbridge, Bounds, BridgeMediaOptions, BridgeParams, CommandOptions, DialParams, EnqueueParams, Page,
    QueueCallUpdate, TransferParams,
};

use crate::error::ApiError;

/// A request body: a JSON object whose fields are read with their types checked. Unknown
/// fields are ignored and `null` counts as absent. Fields are named as on the wire (the
/// engine's errors name them the same way); an error's JSON pointer is made from the name.
#[derive(Debug)]
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses raw bytes; an empty body is an empty object.
    ///
    /// # Errors
    /// `MalformedJson` for anything that is not a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::MalformedJson("expected an object".into())),
            Err(e) => Err(ApiError::MalformedJson(e.to_string())),
        }
    }

    fn get(&self, parameter: &'static str) -> Option<&Value> {
        self.0.get(parameter).filter(|v| !v.is_null())
    }

    /// A string field.
    ///
    /// # Errors
    /// `WrongType` when present and not a string.
    pub fn string(&self, parameter: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(parameter) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::WrongType { parameter, expected: "a string" }),
        }
    }

    /// A string field the request must have (the engine's "missing" error otherwise).
    ///
    /// # Errors
    /// `WrongType`, or the engine's `10004` when absent.
    pub fn required_string(&self, parameter: &'static str) -> Result<String, ApiError> {
        self.string(parameter)?.ok_or_else(|| waitline::Error::missing(parameter).into())
    }

    /// An integer field, as any JSON integer (an integer too large for 64 bits is taken as
    /// `i64::MAX`, or `i64::MIN` when negative: out of every range).
    ///
    /// # Errors
    /// `WrongType` when present and not an integer.
    pub fn int(&self, parameter: &'static str) -> Result<Option<i64>, ApiError> {
        /// 2^63: from here on a whole number does not fit an `i64`.
        const BEYOND_I64: f64 = 9_223_372_036_854_775_808.0;
        match self.get(parameter) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                // Beyond `i64` (a `u64` above it, or digits beyond 64 bits, which serde reads
                // as a float): a whole number is an integer out of range, not a fraction.
                (None, Some(f)) if f.fract() == 0.0 && f.abs() >= BEYOND_I64 => {
                    Ok(Some(if f > 0.0 { i64::MAX } else { i64::MIN }))
                }
                (None, _) => Err(ApiError::WrongType { parameter, expected: "an integer" }),
            },
            Some(_) => Err(ApiError::WrongType { parameter, expected: "an integer" }),
        }
    }

    /// An integer field in the Rust type of the engine's parameter: what does not fit is
    /// refused with the engine's out-of-range error for it.
    ///
    /// # Errors
    /// `WrongType`, or the engine's `10033`.
    pub fn bounded<T: TryFrom<i64>>(&self, bounds: Bounds) -> Result<Option<T>, ApiError> {
        Ok(self.int(bounds.parameter)?.map(|v| bounds.convert(v)).transpose()?)
    }

    /// A boolean field.
    ///
    /// # Errors
    /// `WrongType` when present and not a boolean.
    pub fn boolean(&self, parameter: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(parameter) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::WrongType { parameter, expected: "a boolean" }),
        }
    }

    /// `client_state` and `command_id`.
    ///
    /// # Errors
    /// A wrong type.
    pub fn command_options(&self) -> Result<CommandOptions, ApiError> {
        Ok(CommandOptions {
            client_state: self.string("client_state")?,
            command_id: self.string("command_id")?,
        })
    }

    /// The body of dial.
    ///
    /// # Errors
    /// A wrong type, a missing field, or a `webhook_url_method` other than `POST` (the only
    /// method waitline delivers webhooks with).
    pub fn dial(&self) -> Result<DialParams, ApiError> {
        let to = self.required_string("to")?;
        let from = self.required_string("from")?;
        let connection_id = self.required_string("connection_id")?;
        if self.string("webhook_url_method")?.is_some_and(|m| m != "POST") {
            return Err(ApiError::InvalidEnum { parameter: "webhook_url_method", allowed: &["POST"] });
        }
        Ok(DialParams {
            to,
            from,
            connection_id,
            client_state: self.string("client_state")?,
            webhook_url: self.string("webhook_url")?,
            call_control_id: self.string("call_control_id")?,
            command_id: self.string("command_id")?,
        })
    }

    /// The body of enqueue.
    ///
    /// # Errors
    /// A wrong type, a missing queue name, a number that fits no range.
    pub fn enqueue(&self) -> Result<EnqueueParams, ApiError> {
        Ok(EnqueueParams {
            queue_name: self.required_string("queue_name")?,
            max_wait: self.bounded::<u64>(waitline::MAX_WAIT_TIME_SECS)?.map(Duration::from_secs),
            max_size: self.bounded(waitline::QUEUE_MAX_SIZE)?,
            keep_after_hangup: self.boolean("keep_after_hangup")?.unwrap_or(false),
            priority: self.bounded(waitline::PRIORITY)?,
            options: self.command_options()?,
        })
    }

    /// The body of bridge.
    ///
    /// # Errors
    /// A wrong type, a value outside an enumeration or a range.
    pub fn bridge(&self) -> Result<BridgeParams, ApiError> {
        Ok(BridgeParams {
            call_control_id: self.string("call_control_id")?,
            queue: self.string("queue")?,
            after_unbridge: AfterUnbridge::from_wire(self.string("park_after_unbridge")?.as_deref())?,
            media: BridgeMediaOptions {
                play_ringtone: self.boolean("play_ringtone")?,
                ringtone: self.string("ringtone")?,
                record: self.string("record")?,
                record_channels: self.string("record_channels")?,
                record_format: self.string("record_format")?,
                record_max_length: self.bounded(waitline::RECORD_MAX_LENGTH)?,
                record_timeout_secs: self.bounded(waitline::RECORD_TIMEOUT_SECS)?,
                record_track: self.string("record_track")?,
                record_trim: self.string("record_trim")?,
                record_custom_file_name: self.string("record_custom_file_name")?,
                mute_dtmf: self.string("mute_dtmf")?,
                hold_after_unbridge: self.boolean("hold_after_unbridge")?,
                prevent_double_bridge: self.boolean("prevent_double_bridge")?,
                video_room_id: self.string("video_room_id")?,
                video_room_context: self.string("video_room_context")?,
            }
            .given(),
            options: self.command_options()?,
        })
    }

    /// The body of transfer.
    ///
    /// # Errors
    /// A wrong type or a missing `to`.
    pub fn transfer(&self) -> Result<TransferParams, ApiError> {
        Ok(TransferParams {
            to: self.required_string("to")?,
            from: self.string("from")?,
            options: self.command_options()?,
        })
    }

    /// The body of a queue-call update.
    ///
    /// # Errors
    /// A wrong type or a priority out of range.
    pub fn queue_call_update(&self) -> Result<QueueCallUpdate, ApiError> {
        Ok(QueueCallUpdate {
            keep_after_hangup: self.boolean("keep_after_hangup")?,
            priority: self.bounded(waitline::PRIORITY)?,
        })
    }
}

/// `{"data": …}`, serialised straight from the value (no intermediate JSON tree).
#[derive(Serialize)]
struct Data<'a, T> {
    data: &'a T,
}

/// `{"data": …}` with status 200.
pub fn data<T: Serialize>(value: &T) -> Response {
    Json(Data { data: value }).into_response()
}

/// `{"data":{"result":"ok"}}`, the answer of every call action (a constant).
pub fn ok_result() -> Response {
    ([(CONTENT_TYPE, "application/json")], r#"{"data":{"result":"ok"}}"#).into_response()
}

#[derive(Serialize)]
struct PageMeta {
    page_number: usize,
    page_size: usize,
    total_pages: usize,
    total_results: usize,
}

#[derive(Serialize)]
struct PageBody<'a, T> {
    data: &'a [T],
    meta: PageMeta,
}

/// `{"data":[…],"meta":{…}}`.
pub fn page<T: Serialize>(p: &Page<T>) -> Response {
    let meta = PageMeta {
        page_number: p.page_number,
        page_size: p.page_size,
        total_pages: p.total_pages,
        total_results: p.total_results,
    };
    Json(PageBody { data: &p.data, meta }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_type_checked_with_pointers() {
        let b = Body::parse(
            br#"{"queue_name": 5, "max_size": "x", "keep_after_hangup": 1, "priority": 2.5, "x": {}}"#,
        )
        .unwrap();
        assert!(matches!(b.string("queue_name"), Err(ApiError::WrongType { parameter: "queue_name", .. })));
        assert!(matches!(b.int("max_size"), Err(ApiError::WrongType { parameter: "max_size", .. })));
        assert!(matches!(b.boolean("keep_after_hangup"), Err(ApiError::WrongType { .. })));
        assert!(matches!(b.int("priority"), Err(ApiError::WrongType { .. })));
        let b = Body::parse(br#"{"max_size": 18446744073709551615, "priority": -1, "client_state": null}"#)
            .unwrap();
        assert_eq!(b.int("max_size").unwrap(), Some(i64::MAX));
        let too_big = b.bounded::<u32>(waitline::QUEUE_MAX_SIZE).unwrap_err().body();
        assert_eq!(
            (&too_big["errors"][0]["code"], &too_big["errors"][0]["source"]["pointer"]),
            (&"10033".into(), &"/max_size".into())
        );
        assert!(b.bounded::<u8>(waitline::PRIORITY).is_err(), "negative: out of range, not a wrong type");
        // Digits beyond 64 bits (serde reads them as a float) are an integer out of range too.
        let b = Body::parse(
            br#"{"max_size": 100000000000000000000000000000, "priority": -9223372036854775809, "a": 1e3, "b": 2.0e19}"#,
        )
        .unwrap();
        assert_eq!(b.int("max_size").unwrap(), Some(i64::MAX));
        assert_eq!(b.int("priority").unwrap(), Some(i64::MIN));
        assert!(
            matches!(b.int("a"), Err(ApiError::WrongType { .. })),
            "a float within range is not an integer"
        );
        assert_eq!(b.int("b").unwrap(), Some(i64::MAX));
        let (too_big, wrong) =
            (b.bounded::<u32>(waitline::QUEUE_MAX_SIZE).unwrap_err().body(), b.int("a").unwrap_err().body());
        assert_ne!(too_big["errors"][0]["detail"], wrong["errors"][0]["detail"], "a range, not a type");
        assert!(b.bounded::<u8>(waitline::PRIORITY).is_err());
        assert_eq!(b.string("client_state").unwrap(), None);
        assert!(Body::parse(b"").is_ok());
        assert!(matches!(Body::parse(b"[1]"), Err(ApiError::MalformedJson(_))));
        assert!(matches!(Body::parse(b"{"), Err(ApiError::MalformedJson(_))));
    }
}
