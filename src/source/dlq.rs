//! The DLQ message format (docs/operations.md): the original body byte for byte, and `dlq-*`
//! String attributes saying why (with the producer's envelope ID, for tracing). A copy keeps the
//! source's `MessageGroupId`, FIFO group or fair-queue tenant, on any DLQ; a FIFO DLQ's dedup
//! comes from the source ID.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::envelope::Envelope;
use crate::message::Received;
use crate::outcome::Rejection;

/// The longest `dlq-error-message`, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

fn attribute(value: String) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

/// Whether SQS takes this character in a message or attribute: `#x9 | #xA | #xD | #x20-#xD7FF |
/// #xE000-#xFFFD | #x10000-#x10FFFF` (SendMessage's documented set).
fn sqs_allows(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The text with every character SQS refuses replaced by U+FFFD, so that a field name, an API
/// message or a job ID can never make the DLQ send fail. Borrowed when nothing needs replacing.
pub fn sqs_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(sqs_allows) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| if sqs_allows(c) { c } else { '\u{FFFD}' })
        .collect::<String>()
        .into()
}

/// Cuts to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The group a FIFO DLQ copy takes when its message had none; `redrive` does not make it a
/// tenant on a standard queue.
pub const NO_GROUP: &str = "default";

/// SendMessageBatch takes at most 256 KiB in all; stay under it with room to spare.
pub const SEND_BATCH_BYTES: usize = 200 * 1024;
/// SQS's default `MaximumMessageSize`, for a DLQ whose attribute cannot be read.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The `dlq-*` attributes of one message, required ones first. SQS counts each attribute's name,
/// type and value against the message size.
fn attributes(
    message: &Received,
    rejection: &Rejection,
    source_queue: &str,
    envelope: Envelope,
) -> Vec<(&'static str, String)> {
    let text = if rejection.message.is_empty() {
        rejection.reason.as_str()
    } else {
        truncate(&rejection.message, MAX_ERROR_MESSAGE)
    };
    let mut attributes = vec![
        ("dlq-reason", rejection.reason.as_str().to_owned()),
        ("dlq-source-message-id", message.id.clone()),
        ("dlq-receive-count", message.receive_count.to_string()),
        ("dlq-error-message", text.to_owned()),
        ("dlq-source-queue", source_queue.to_owned()),
    ];
    if let Some(code) = rejection.code.as_deref().filter(|code| !code.is_empty()) {
        attributes.push(("dlq-error-code", code.to_owned()));
    }
    if let Some(job_id) = &rejection.job_id {
        attributes.push(("dlq-job-id", job_id.clone()));
    }
    if let Some(row) = rejection.row_index {
        attributes.push(("dlq-row-index", row.to_string()));
    }
    // Last: the API's words about a row come before the producer's tracing ID.
    if let Some(id) = envelope.id_of(&message.body) {
        attributes.push(id);
    }
    // Sanitized before sizing, since a replaced character may take more bytes than it did.
    for (_, value) in &mut attributes {
        if let std::borrow::Cow::Owned(clean) = sqs_text(value) {
            *value = clean;
        }
    }
    attributes
}

fn attribute_bytes(name: &str, value: &str) -> usize {
    name.len() + "String".len() + value.len()
}

/// SQS takes at most 10 message attributes on a message.
const MAX_ATTRIBUTES: usize = 10;
/// The `dlq-*` attributes a copy keeps however many the producer set: the three required ones and
/// `dlq-error-message`.
const DLQ_ATTRIBUTES_KEPT: usize = 4;

fn value_bytes(value: &MessageAttributeValue) -> usize {
    value.data_type.len()
        + value.string_value.as_deref().map_or(0, str::len)
        + value.binary_value.as_ref().map_or(0, |b| b.as_ref().len())
}

/// The producer's attributes a copy carries, by name; never one named like ours.
fn producer_attributes(message: &Received) -> Vec<(&String, &MessageAttributeValue)> {
    let mut attributes: Vec<_> = message
        .attributes
        .iter()
        .flatten()
        .filter(|(name, _)| !name.starts_with("dlq-"))
        .collect();
    attributes.sort_by(|a, b| a.0.cmp(b.0));
    attributes
}

fn producer_bytes(message: &Received) -> usize {
    producer_attributes(message)
        .iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

/// Bytes that SQS counts for a DLQ copy: the body and every attribute.
pub fn entry_bytes(message: &Received, rejection: &Rejection, envelope: Envelope) -> usize {
    message.body.len()
        + producer_bytes(message)
        + attributes(message, rejection, "", envelope)
            .iter()
            .map(|(name, value)| attribute_bytes(name, value))
            .sum::<usize>()
        + 512
}

/// Fits the attributes into what the DLQ takes beside the body: the error message is cut
/// first, then the optional attributes go, last first. The three required ones always stay.
fn fit(mut attributes: Vec<(&'static str, String)>, room: usize) -> Vec<(&'static str, String)> {
    let size = |attributes: &[(&'static str, String)]| -> usize {
        attributes
            .iter()
            .map(|(name, value)| attribute_bytes(name, value))
            .sum()
    };
    let over = size(&attributes).saturating_sub(room);
    if over > 0
        && let Some((_, text)) = attributes
            .iter_mut()
            .find(|(name, _)| *name == "dlq-error-message")
    {
        let keep = text.len().saturating_sub(over);
        *text = truncate(text, keep).to_owned();
    }
    while size(&attributes) > room && attributes.len() > 3 {
        attributes.pop();
    }
    attributes
}

/// Where a DLQ copy goes and what it may say: the source it names, the DLQ's kind and size, and
/// the envelope whose ID it carries.
#[derive(Clone, Copy)]
pub struct CopyTo<'a> {
    pub source_queue: &'a str,
    pub fifo_dlq: bool,
    pub max_message_bytes: usize,
    pub envelope: Envelope,
}

/// The DLQ entry for one message; `id` is its index within the SendMessageBatch call. The body
/// is the original, byte for byte; the attributes are trimmed to fit `max_message_bytes`.
pub fn entry(
    id: usize,
    message: &Received,
    rejection: &Rejection,
    to: CopyTo<'_>,
) -> SendMessageBatchRequestEntry {
    let CopyTo {
        source_queue,
        fifo_dlq,
        max_message_bytes,
        envelope,
    } = to;
    let mut room = max_message_bytes.saturating_sub(message.body.len());
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(message.body.clone());
    let producer = producer_attributes(message);
    let mut ours = fit(attributes(message, rejection, source_queue, envelope), room);
    // The producer's attributes (a redrive keeps them) take the places of our optional ones.
    ours.truncate(
        MAX_ATTRIBUTES
            .saturating_sub(producer.len())
            .max(DLQ_ATTRIBUTES_KEPT),
    );
    for (name, value) in ours {
        room = room.saturating_sub(attribute_bytes(name, &value));
        builder = builder.message_attributes(name, attribute(value));
    }
    let mut places = MAX_ATTRIBUTES.saturating_sub(
        builder
            .get_message_attributes()
            .as_ref()
            .map_or(0, |a| a.len()),
    );
    for (name, value) in producer {
        let bytes = name.len() + value_bytes(value);
        if places == 0 || bytes > room {
            tracing::warn!(
                message_id = message.id,
                attribute = name,
                "the DLQ copy has no room for this message attribute; it is left out"
            );
            continue;
        }
        places -= 1;
        room -= bytes;
        builder = builder.message_attributes(name.clone(), value.clone());
    }
    if fifo_dlq {
        builder = builder
            .message_group_id(message.message_group().unwrap_or(NO_GROUP))
            .message_deduplication_id(message.id.clone());
    } else if let Some(group) = message.message_group() {
        // A standard DLQ takes a group as a fair queue's tenant: a noisy tenant's rejects stay
        // its own, there and after a redrive.
        builder = builder.message_group_id(group);
    }
    builder.build().expect("id and body are set")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;

    fn to(source_queue: &str, fifo_dlq: bool, max_message_bytes: usize) -> CopyTo<'_> {
        CopyTo {
            source_queue,
            fifo_dlq,
            max_message_bytes,
            envelope: Envelope::None,
        }
    }

    /// The envelope's ID is the first optional attribute to make way for the producer's: the
    /// API's code, job and row stay.
    #[test]
    fn the_envelope_id_gives_way_to_the_apis_words() {
        let body = r#"{"Type":"Notification","MessageId":"sns-9","TopicArn":"t","Message":"{}"}"#;
        let mut message = Received::fake("m-1", body);
        let rejection = Rejection::new(Reason::InvalidRow, "bad email")
            .with_code(Some("INVALID".into()))
            .in_job("rjob_1", Some(4));
        let sns = CopyTo {
            envelope: Envelope::Sns,
            ..to("q", false, 256 * 1024)
        };
        let names = |message: &Received| {
            let copy = entry(0, message, &rejection, sns);
            let mut names: Vec<String> = copy.message_attributes.unwrap().into_keys().collect();
            names.sort();
            names
        };
        assert!(names(&message).contains(&"dlq-sns-message-id".to_owned()));
        message.attributes = Some(
            (0..2)
                .map(|i| (format!("p{i}"), attribute("v".into())))
                .collect(),
        );
        let kept = names(&message);
        assert_eq!(kept.len(), 10);
        for name in ["dlq-error-code", "dlq-job-id", "dlq-row-index", "p0", "p1"] {
            assert!(kept.contains(&name.to_owned()), "{name} in {kept:?}");
        }
        assert!(!kept.contains(&"dlq-sns-message-id".to_owned()), "{kept:?}");
    }

    /// A standard queue's group (a fair queue's tenant) stays on the copy on a standard DLQ, and
    /// the envelope's ID is carried for tracing.
    #[test]
    fn a_copy_keeps_the_tenant_and_names_the_envelope() {
        let body = r#"{"Type":"Notification","MessageId":"sns-9","TopicArn":"t","Message":"{}"}"#;
        let mut message = Received::fake("m-1", body);
        message.tenant = Some("acme".into());
        let rejection = Rejection::new(Reason::MissingMatchKey, "no key");
        let copy = entry(
            0,
            &message,
            &rejection,
            CopyTo {
                envelope: Envelope::Sns,
                ..to("q", false, 256 * 1024)
            },
        );
        assert_eq!(copy.message_group_id.as_deref(), Some("acme"));
        assert_eq!(copy.message_deduplication_id, None);
        let attributes = copy.message_attributes.unwrap();
        assert_eq!(
            attributes["dlq-sns-message-id"].string_value.as_deref(),
            Some("sns-9")
        );
        let fifo = entry(0, &message, &rejection, to("q", true, 256 * 1024));
        assert_eq!(fifo.message_group_id.as_deref(), Some("acme"));
        message.tenant = None;
        assert_eq!(
            entry(0, &message, &rejection, to("q", false, 1 << 18)).message_group_id,
            None
        );
    }

    #[test]
    fn entry_keeps_the_body_and_says_why() {
        let mut message = Received::fake("m-1", "{\"email\": \"x\"} \u{e9}");
        message.group_id = Some("g1".into());
        message.receive_count = 3;
        let rejection = Rejection::new(Reason::InvalidRow, "e".repeat(3000))
            .with_code(Some("CDP_ETL.VALIDATION.REQUEST_INVALID".into()))
            .in_job("rjob_1", Some(4));
        let entry = entry(7, &message, &rejection, to("http://q", true, 256 * 1024));
        assert_eq!(entry.id, "7");
        assert_eq!(entry.message_body, message.body);
        let attributes = entry.message_attributes.unwrap();
        let get = |name: &str| attributes[name].string_value.clone().unwrap();
        assert_eq!(get("dlq-reason"), "invalid_row");
        assert_eq!(get("dlq-error-code"), "CDP_ETL.VALIDATION.REQUEST_INVALID");
        assert_eq!(get("dlq-error-message").len(), MAX_ERROR_MESSAGE);
        assert_eq!(get("dlq-job-id"), "rjob_1");
        assert_eq!(get("dlq-row-index"), "4");
        assert_eq!(get("dlq-source-message-id"), "m-1");
        assert_eq!(get("dlq-source-queue"), "http://q");
        assert_eq!(get("dlq-receive-count"), "3");
        assert_eq!(entry.message_group_id.as_deref(), Some("g1"));
        assert_eq!(entry.message_deduplication_id.as_deref(), Some("m-1"));
    }

    /// Attribute values are texts from the body, the API and the job; SQS takes
    /// only some characters, so the rest become U+FFFD instead of failing the DLQ send.
    #[test]
    fn attribute_text_keeps_only_what_sqs_allows() {
        let cases = [
            ("field 'email' is unknown", "field 'email' is unknown"),
            ("tab\tnew\nline\rcr", "tab\tnew\nline\rcr"),
            (
                "field '\u{1}' is not in the schema",
                "field '\u{FFFD}' is not in the schema",
            ),
            (
                "\u{0}\u{8}\u{B}\u{C}\u{1F}",
                "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
            ),
            ("\u{FFFE}\u{FFFF}", "\u{FFFD}\u{FFFD}"),
            (
                "caf\u{e9} \u{1F600} \u{D7FF}\u{E000}",
                "caf\u{e9} \u{1F600} \u{D7FF}\u{E000}",
            ),
            ("\u{7F}", "\u{7F}"),
        ];
        for (input, expected) in cases {
            assert_eq!(sqs_text(input), expected, "{input:?}");
        }
        let message = Received::fake("m-\u{1}", "{}");
        let rejection = Rejection::new(Reason::UnknownField, "field '\u{1}'")
            .with_code(Some("C\u{2}".into()))
            .in_job("j\u{3}", None);
        let entry = entry(0, &message, &rejection, to("http://q", false, 256 * 1024));
        for (name, value) in entry.message_attributes.unwrap() {
            let text = value.string_value.unwrap();
            assert!(text.chars().all(sqs_allows), "{name}: {text:?}");
        }
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn a_copy_near_the_dlq_limit_keeps_its_body_and_the_required_attributes() {
        let message = Received::fake("m-1", &"b".repeat(1000));
        let rejection = Rejection::new(Reason::InvalidRow, "e".repeat(1024))
            .with_code(Some("CODE".into()))
            .in_job("rjob_1", Some(4));
        let entry = entry(0, &message, &rejection, to("http://q", false, 1300));
        assert_eq!(entry.message_body, message.body);
        let attributes = entry.message_attributes.unwrap();
        let bytes: usize = attributes
            .iter()
            .map(|(name, value)| attribute_bytes(name, value.string_value().unwrap()))
            .sum();
        assert!(message.body.len() + bytes <= 1300, "{bytes}");
        for required in ["dlq-reason", "dlq-source-message-id", "dlq-receive-count"] {
            assert!(attributes.contains_key(required), "{required}");
        }
    }

    /// The producer's attributes ride along, within SQS's 10, taking the places
    /// of our optional ones first.
    #[test]
    fn a_copy_keeps_the_producers_attributes_within_ten() {
        let mut message = Received::fake("m-1", "{}");
        let value = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .unwrap()
        };
        message.attributes = Some(
            (0..3)
                .map(|i| (format!("p{i}"), value("x")))
                .chain([("dlq-reason".to_owned(), value("forged"))])
                .collect(),
        );
        let rejection = Rejection::new(Reason::InvalidRow, "bad")
            .with_code(Some("C".into()))
            .in_job("j", Some(1));
        let attributes = entry(0, &message, &rejection, to("q", false, 256 * 1024))
            .message_attributes
            .unwrap();
        assert_eq!(attributes.len(), 10);
        assert_eq!(attributes["dlq-reason"].string_value(), Some("invalid_row"));
        for i in 0..3 {
            assert!(attributes.contains_key(&format!("p{i}")));
        }
        message.attributes = Some((0..9).map(|i| (format!("p{i}"), value("x"))).collect());
        let attributes = entry(0, &message, &rejection, to("q", false, 256 * 1024))
            .message_attributes
            .unwrap();
        assert_eq!(attributes.len(), 10);
        for kept in [
            "dlq-reason",
            "dlq-source-message-id",
            "dlq-receive-count",
            "dlq-error-message",
        ] {
            assert!(attributes.contains_key(kept), "{kept}");
        }
    }
}
