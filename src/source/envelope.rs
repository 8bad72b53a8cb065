//! The producer's wrapping around a record (`--envelope`): none, an SNS notification (a
//! subscription without raw delivery) or an EventBridge event. Unwrapping yields the record's
//! JSON text and the envelope's own ID; a body that is not the named envelope is a rejection of
//! its own (`not_an_envelope`). The SQS message IDs stay the idempotency key: the envelope's ID
//! only travels to the DLQ copy, for tracing.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::outcome::{Reason, Rejection};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Envelope {
    /// The body is the record.
    #[default]
    None,
    /// `{"Type":"Notification","MessageId":…,"TopicArn":…,"Message":"<record as a string>",…}`.
    Sns,
    /// `{"version":"0","id":…,"detail-type":…,"source":…,"detail":{…record…},…}`.
    EventBridge,
}

pub const ENVELOPES: &[(&str, Envelope)] = &[
    ("none", Envelope::None),
    ("sns", Envelope::Sns),
    ("eventbridge", Envelope::EventBridge),
];

/// A body with its envelope taken off.
#[derive(Debug)]
pub struct Unwrapped<'a> {
    /// The record's JSON text: the body itself, the SNS `Message`, or the EventBridge `detail`.
    pub payload: Cow<'a, str>,
    /// SNS `MessageAttributes` of a wrapped notification (`{"name":{"Type":…,"Value":…}}`).
    pub sns_attributes: Option<&'a RawValue>,
    /// The envelope's own ID (SNS `MessageId`, EventBridge `id`).
    pub id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SnsNotification<'a> {
    #[serde(rename = "Type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "MessageId", borrow)]
    message_id: Cow<'a, str>,
    #[serde(rename = "TopicArn", borrow)]
    _topic_arn: Cow<'a, str>,
    #[serde(rename = "Message", borrow)]
    message: Cow<'a, str>,
    #[serde(rename = "MessageAttributes", borrow, default)]
    attributes: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "detail-type", borrow)]
    _detail_type: Cow<'a, str>,
    #[serde(rename = "source", borrow)]
    _source: Cow<'a, str>,
    #[serde(borrow)]
    detail: &'a RawValue,
}

impl Envelope {
    pub fn name(self) -> &'static str {
        ENVELOPES
            .iter()
            .find(|(_, envelope)| *envelope == self)
            .map_or("none", |(name, _)| name)
    }

    /// The record's text inside `body`, or why `body` is not this envelope.
    pub fn unwrap(self, body: &str) -> Result<Unwrapped<'_>, Rejection> {
        match self {
            Envelope::None => Ok(Unwrapped {
                payload: Cow::Borrowed(body),
                sns_attributes: None,
                id: None,
            }),
            Envelope::Sns => {
                let notification: SnsNotification = serde_json::from_str(body).map_err(|e| {
                    not_an_envelope(format!(
                        "--envelope sns: the body is not an SNS notification ({e}); a raw-delivery \
                         subscription needs --envelope none"
                    ))
                })?;
                if notification.kind != "Notification" {
                    return Err(not_an_envelope(format!(
                        "--envelope sns: an SNS {} message, not a Notification; confirm a \
                         subscription by opening its SubscribeURL",
                        notification.kind
                    )));
                }
                Ok(Unwrapped {
                    payload: notification.message,
                    sns_attributes: notification.attributes,
                    id: Some(notification.message_id),
                })
            }
            Envelope::EventBridge => {
                let event: Event = serde_json::from_str(body).map_err(|e| {
                    not_an_envelope(format!(
                        "--envelope eventbridge: the body is not an EventBridge event ({e})"
                    ))
                })?;
                Ok(Unwrapped {
                    payload: Cow::Borrowed(event.detail.get()),
                    sns_attributes: None,
                    id: Some(event.id),
                })
            }
        }
    }

    /// The DLQ attribute that names the envelope's own ID, and that ID, when `body` is this
    /// envelope with an ID that is not empty (SQS refuses an empty attribute, and a record's own
    /// `id` is not the envelope's).
    pub fn id_of(self, body: &str) -> Option<(&'static str, String)> {
        let name = match self {
            Envelope::None => return None,
            Envelope::Sns => "dlq-sns-message-id",
            Envelope::EventBridge => "dlq-eventbridge-id",
        };
        let id = self.unwrap(body).ok()?.id?;
        (!id.trim().is_empty()).then(|| (name, id.into_owned()))
    }
}

fn not_an_envelope(message: String) -> Rejection {
    Rejection::new(Reason::NotAnEnvelope, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNS: &str = r#"{"Type":"Notification","MessageId":"sns-1","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"{\"email\":\"a@b.c\"}","Timestamp":"2026-12-03T00:00:00Z","MessageAttributes":{"tenant":{"Type":"String","Value":"acme"}}}"#;
    const EVENT: &str = r#"{"version":"0","id":"ev-1","detail-type":"signup","source":"app","account":"1","time":"2026-12-03T00:00:00Z","region":"us-east-1","resources":[],"detail":{"email":"a@b.c"}}"#;

    #[test]
    fn each_envelope_yields_its_record() {
        let sns = Envelope::Sns.unwrap(SNS).unwrap();
        assert_eq!(sns.payload, r#"{"email":"a@b.c"}"#);
        assert_eq!(
            sns.sns_attributes.map(RawValue::get),
            Some(r#"{"tenant":{"Type":"String","Value":"acme"}}"#)
        );
        let event = Envelope::EventBridge.unwrap(EVENT).unwrap();
        assert_eq!(event.payload, r#"{"email":"a@b.c"}"#);
        let raw = Envelope::None.unwrap("anything").unwrap();
        assert_eq!(raw.payload, "anything");
    }

    #[test]
    fn a_body_that_is_not_the_envelope_is_rejected() {
        let confirmation = SNS.replace("\"Notification\"", "\"SubscriptionConfirmation\"");
        for (envelope, body) in [
            (Envelope::Sns, r#"{"email":"a@b.c"}"#),
            (Envelope::Sns, EVENT),
            (Envelope::Sns, confirmation.as_str()),
            (
                Envelope::Sns,
                &SNS.replace(
                    r#""Message":"{\"email\":\"a@b.c\"}""#,
                    r#""Message":{"email":"a@b.c"}"#,
                ),
            ),
            (Envelope::Sns, "not json"),
            (Envelope::EventBridge, SNS),
            (Envelope::EventBridge, r#"{"detail":{}}"#),
            (Envelope::EventBridge, "[]"),
        ] {
            let rejection = envelope.unwrap(body).unwrap_err();
            assert_eq!(rejection.reason, Reason::NotAnEnvelope, "{body}");
            assert!(rejection.message.starts_with("--envelope"), "{rejection:?}");
        }
        let said = Envelope::Sns.unwrap(&confirmation).unwrap_err().message;
        assert!(said.contains("SubscribeURL"), "{said}");
    }

    #[test]
    fn the_envelope_id_is_read_for_the_dlq() {
        assert_eq!(
            Envelope::Sns.id_of(SNS),
            Some(("dlq-sns-message-id", "sns-1".to_owned()))
        );
        assert_eq!(
            Envelope::EventBridge.id_of(EVENT),
            Some(("dlq-eventbridge-id", "ev-1".to_owned()))
        );
        assert_eq!(Envelope::Sns.id_of("{}"), None);
        assert_eq!(Envelope::None.id_of(SNS), None);
        // Only the named envelope's own ID, never an empty one or a record's `id`.
        assert_eq!(Envelope::Sns.id_of(r#"{"id":"","email":"x"}"#), None);
        assert_eq!(
            Envelope::Sns.id_of(r#"{"MessageId":"r","email":"x"}"#),
            None
        );
        assert_eq!(
            Envelope::EventBridge.id_of(r#"{"id":"rec-7","email":"x"}"#),
            None
        );
        assert_eq!(Envelope::Sns.id_of(&SNS.replace("sns-1", " ")), None);
        assert_eq!(Envelope::EventBridge.id_of(SNS), None);
    }
}
