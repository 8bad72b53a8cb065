//! The DLQ message format (shared/worker-cli.md): the original body byte for byte, and `dlq-*`
//! String attributes saying why. FIFO DLQs keep the source's group; dedup comes from the source ID.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use crate::message::Received;
use crate::outcome::Rejection;

/// The longest `dlq-error-message`, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

fn attribute(value: impl Into<String>) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
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

/// The DLQ entry for one message; `id` is its index within the SendMessageBatch call.
pub fn entry(
    id: usize,
    message: &Received,
    rejection: &Rejection,
    source_queue: &str,
    fifo_dlq: bool,
) -> SendMessageBatchRequestEntry {
    let text = if rejection.message.is_empty() {
        rejection.reason.as_str()
    } else {
        truncate(&rejection.message, MAX_ERROR_MESSAGE)
    };
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(message.body.clone())
        .message_attributes("dlq-reason", attribute(rejection.reason.as_str()))
        .message_attributes("dlq-error-message", attribute(text))
        .message_attributes("dlq-source-message-id", attribute(message.id.clone()))
        .message_attributes("dlq-source-queue", attribute(source_queue))
        .message_attributes(
            "dlq-receive-count",
            attribute(message.receive_count.to_string()),
        );
    if let Some(code) = rejection.code.as_deref().filter(|code| !code.is_empty()) {
        builder = builder.message_attributes("dlq-error-code", attribute(code));
    }
    if let Some(job_id) = &rejection.job_id {
        builder = builder.message_attributes("dlq-job-id", attribute(job_id.clone()));
    }
    if let Some(row) = rejection.row_index {
        builder = builder.message_attributes("dlq-row-index", attribute(row.to_string()));
    }
    if fifo_dlq {
        builder = builder
            .message_group_id(
                message
                    .group_id
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
            )
            .message_deduplication_id(message.id.clone());
    }
    builder.build().expect("id and body are set")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;

    #[test]
    fn entry_keeps_the_body_and_says_why() {
        let mut message = Received::fake("m-1", "{\"email\": \"x\"} \u{e9}");
        message.group_id = Some("g1".into());
        message.receive_count = 3;
        let rejection = Rejection::new(Reason::InvalidRow, "e".repeat(3000))
            .with_code(Some("CDP_ETL.VALIDATION.REQUEST_INVALID".into()))
            .in_job("rjob_1", Some(4));
        let entry = entry(7, &message, &rejection, "http://q", true);
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

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
