//! The event envelope, its validation and the built-in handlers.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

pub use services::iso_millis;

/// The JSON envelope of every event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// A UUID.
    pub event_id: Uuid,
    /// `user.created`, `order.created`, `custom`, ...: picks the handler.
    pub event_type: String,
    /// The tenant; also the record key.
    pub tenant_id: String,
    /// RFC 3339 with milliseconds, e.g. `2026-12-05T17:02:23.045Z`.
    pub timestamp: String,
    /// The event's data, kept as the JSON text it came in.
    pub payload: Box<RawValue>,
}

/// An event as `process` writes it to `.processed`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessedEvent<'a> {
    /// The original event's fields.
    #[serde(borrow, flatten)]
    pub event: EventRef<'a>,
    /// When the handler finished it (RFC 3339, ms).
    pub processed_at: String,
}

/// The envelope, borrowed: what `.processed` carries besides `processed_at`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventRef<'a> {
    /// See [`Event::event_id`].
    pub event_id: Uuid,
    /// See [`Event::event_type`].
    pub event_type: &'a str,
    /// See [`Event::tenant_id`].
    pub tenant_id: &'a str,
    /// See [`Event::timestamp`].
    pub timestamp: &'a str,
    /// See [`Event::payload`].
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl Event {
    /// A new event of `tenant_id` stamped `now`.
    pub fn new(
        event_type: impl Into<String>,
        tenant_id: impl Into<String>,
        payload: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            tenant_id: tenant_id.into(),
            timestamp: iso_millis(now),
            payload: serde_json::value::to_raw_value(payload).expect("JSON value"),
        }
    }

    /// A new event stamped now with a payload already in JSON text.
    pub fn with_raw(
        event_type: impl Into<String>,
        tenant_id: impl Into<String>,
        payload: Box<RawValue>,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            tenant_id: tenant_id.into(),
            timestamp: iso_millis(OffsetDateTime::now_utc()),
            payload,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    /// The event's timestamp, if it parses.
    pub fn time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.timestamp, &Rfc3339).ok()
    }

    /// The `.processed` JSON: the envelope plus `processed_at`.
    pub fn processed_json(&self, now: OffsetDateTime) -> Vec<u8> {
        let p = ProcessedEvent {
            event: EventRef {
                event_id: self.event_id,
                event_type: &self.event_type,
                tenant_id: &self.tenant_id,
                timestamp: &self.timestamp,
                payload: &self.payload,
            },
            processed_at: iso_millis(now),
        };
        serde_json::to_vec(&p).expect("serializable")
    }
}

/// Why an event was not handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It can never succeed (bad JSON, a missing field, an unknown type):
    /// straight to the DLQ.
    Invalid(String),
    /// The handler failed: retried until the last attempt.
    Failed(String),
}

impl Failure {
    /// The message for the `x-error` header.
    pub fn message(&self) -> &str {
        match self {
            Failure::Invalid(m) | Failure::Failed(m) => m,
        }
    }

    /// Whether another attempt could succeed.
    pub fn retriable(&self) -> bool {
        matches!(self, Failure::Failed(_))
    }
}

/// Parses and validates an envelope: every field present, the id a UUID,
/// the timestamp RFC 3339.
pub fn parse(value: Option<&[u8]>) -> Result<Event, Failure> {
    let bytes = value.ok_or_else(|| Failure::Invalid("record without a value".into()))?;
    let event: Event = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Invalid(format!("invalid event JSON: {e}")))?;
    if event.time().is_none() {
        return Err(Failure::Invalid(format!(
            "timestamp {:?} is not RFC 3339",
            event.timestamp
        )));
    }
    if event.event_type.is_empty() {
        return Err(Failure::Invalid("empty event_type".into()));
    }
    if event.tenant_id.is_empty() {
        return Err(Failure::Invalid("empty tenant_id".into()));
    }
    Ok(event)
}

/// Runs the handler of the event's type; `attempt` counts from 1.
///
/// - `user.created`, `users`, `user.*`: the payload needs a non-empty
///   `user_id` and an `email` with an `@`.
/// - `order.*`, `orders`: the payload needs an `order_id` and a
///   non-negative numeric `amount`.
/// - `custom` and `custom.*`: any payload.
/// - `test.fail`: always fails (ends in the DLQ after the last attempt).
/// - `test.flaky`: fails its first attempt, then succeeds.
/// - anything else: invalid (no handler), straight to the DLQ.
pub fn handle(event: &Event, attempt: u32) -> Result<(), Failure> {
    let t = event.event_type.as_str();
    match t {
        "test.fail" => Err(Failure::Failed("test.fail always fails".into())),
        "test.flaky" if attempt <= 1 => {
            Err(Failure::Failed("test.flaky fails its first attempt".into()))
        }
        "test.flaky" => Ok(()),
        "users" | "user.created" => user(event),
        _ if t.starts_with("user.") => user(event),
        "orders" => order(event),
        _ if t.starts_with("order.") => order(event),
        "custom" => Ok(()),
        _ if t.starts_with("custom.") => Ok(()),
        _ => Err(Failure::Invalid(format!("no handler for event type {t:?}"))),
    }
}

#[derive(Deserialize)]
struct UserPayload<'a> {
    #[serde(borrow)]
    user_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    email: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct OrderPayload<'a> {
    #[serde(borrow)]
    #[allow(dead_code)] // only its presence is checked
    order_id: std::borrow::Cow<'a, str>,
    amount: f64,
}

fn user(event: &Event) -> Result<(), Failure> {
    let p: UserPayload = serde_json::from_str(event.payload.get())
        .map_err(|e| Failure::Invalid(format!("user payload: {e}")))?;
    if p.user_id.is_empty() || !p.email.contains('@') {
        return Err(Failure::Invalid(
            "user payload: empty user_id or an email without @".into(),
        ));
    }
    Ok(())
}

fn order(event: &Event) -> Result<(), Failure> {
    let p: OrderPayload = serde_json::from_str(event.payload.get())
        .map_err(|e| Failure::Invalid(format!("order payload: {e}")))?;
    if p.amount.is_nan() || p.amount < 0.0 {
        return Err(Failure::Invalid("order payload: negative amount".into()));
    }
    Ok(())
}

/// A sample payload of a `user.created` event.
pub fn user_payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "user_id": format!("user-{n}"),
        "email": format!("user{n}@example.com"),
        "name": format!("User {n}"),
    })
}

/// A sample payload of an `order.created` event.
pub fn order_payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "order_id": format!("order-{n}"),
        "amount": (n % 1000) as f64 + 0.99,
        "currency": "EUR",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t: &str, payload: serde_json::Value) -> Event {
        let now = time::macros::datetime!(2026-12-05 17:02:23.045 UTC);
        Event::new(t, "tenant-1", &payload, now)
    }

    #[test]
    fn round_trip_and_processed() {
        let e = event("user.created", user_payload(7));
        assert_eq!(e.timestamp, "2026-12-05T17:02:23.045Z");
        let back = parse(Some(&e.to_json())).unwrap();
        assert_eq!(back.event_id, e.event_id);
        assert_eq!(back.payload.get(), e.payload.get());
        let later = e.time().unwrap() + time::Duration::milliseconds(5);
        let p: serde_json::Value = serde_json::from_slice(&e.processed_json(later)).unwrap();
        assert_eq!(p["processed_at"], "2026-12-05T17:02:23.050Z");
        assert_eq!(p["payload"]["user_id"], "user-7");
        assert_eq!(p["event_id"], e.event_id.to_string());
    }

    #[test]
    fn validation() {
        assert!(matches!(parse(Some(b"{nope")), Err(Failure::Invalid(_))));
        assert!(matches!(parse(None), Err(Failure::Invalid(_))));
        let mut v = serde_json::to_value(event("custom", serde_json::json!({}))).unwrap();
        v["event_id"] = "not-a-uuid".into();
        assert!(parse(Some(&serde_json::to_vec(&v).unwrap())).is_err());
        v["event_id"] = uuid::Uuid::new_v4().to_string().into();
        v["timestamp"] = "yesterday".into();
        assert!(parse(Some(&serde_json::to_vec(&v).unwrap())).is_err());
        v.as_object_mut().unwrap().remove("timestamp");
        assert!(parse(Some(&serde_json::to_vec(&v).unwrap())).is_err());
    }

    #[test]
    fn handlers() {
        assert_eq!(handle(&event("user.created", user_payload(1)), 1), Ok(()));
        assert_eq!(handle(&event("order.created", order_payload(1)), 1), Ok(()));
        assert_eq!(
            handle(&event("custom", serde_json::json!([1, 2])), 1),
            Ok(())
        );
        let bad_user = event("user.created", serde_json::json!({"user_id": "u"}));
        assert!(matches!(handle(&bad_user, 1), Err(Failure::Invalid(_))));
        let fail = event("test.fail", serde_json::json!({}));
        assert!(handle(&fail, 1).unwrap_err().retriable());
        assert!(handle(&fail, 9).is_err());
        let flaky = event("test.flaky", serde_json::json!({}));
        assert!(handle(&flaky, 1).is_err());
        assert_eq!(handle(&flaky, 2), Ok(()));
        let unknown = event("nobody.handles", serde_json::json!({}));
        assert!(!handle(&unknown, 1).unwrap_err().retriable());
    }
}
