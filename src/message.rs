//! A message as the worker holds it after `ReceiveMessage`: the exact body bytes and what the
//! DLQ format and the FIFO ordering need from its attributes. A `MessageGroupId` is an order on a
//! FIFO queue (`group_id`) and a tenant on a standard one (`tenant`, SQS fair queues): only the
//! first holds messages back behind each other; both travel to the DLQ copy.

use std::time::Instant;

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub body: String,
    pub md5_of_body: Option<String>,
    /// The FIFO group: messages of a group commit in order.
    pub group_id: Option<String>,
    /// A standard queue's `MessageGroupId`: the tenant of a fair queue, which orders nothing.
    pub tenant: Option<String>,
    /// The order of a FIFO message within its group: SQS's `SequenceNumber` as received, then
    /// the worker's own receive-order number (`sqs::sequence`).
    pub sequence: Option<u128>,
    pub receive_count: u32,
    /// SQS `SentTimestamp`, milliseconds since the epoch.
    pub sent_at_ms: Option<u64>,
    pub received_at: Instant,
    /// The producer's message attributes, kept for the DLQ copy (and so for a redrive).
    pub attributes: Option<HashMap<String, MessageAttributeValue>>,
}

/// Lets the batch logic take a received message or a lease alike.
impl AsRef<Received> for Received {
    fn as_ref(&self) -> &Received {
        self
    }
}

impl Received {
    /// The message and its receipt handle; None for an SDK message without an ID or receipt
    /// handle, which SQS never sends.
    pub fn from_sdk(message: Message, received_at: Instant, fifo: bool) -> Option<(Self, String)> {
        let mut attributes = message.attributes.unwrap_or_default();
        let mut attribute = |name: MessageSystemAttributeName| attributes.remove(&name);
        let receipt = message.receipt_handle?;
        let group = attribute(MessageSystemAttributeName::MessageGroupId);
        let (group_id, tenant) = if fifo { (group, None) } else { (None, group) };
        let received = Self {
            id: message.message_id?,
            body: message.body.unwrap_or_default(),
            md5_of_body: message.md5_of_body,
            group_id,
            tenant,
            sequence: attribute(MessageSystemAttributeName::SequenceNumber)
                .and_then(|sequence| sequence.parse().ok()),
            receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|count| count.parse().ok())
                .unwrap_or(1),
            sent_at_ms: attribute(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse().ok()),
            received_at,
            attributes: message.message_attributes.filter(|a| !a.is_empty()),
        };
        Some((received, receipt))
    }

    /// The `MessageGroupId` it came with, FIFO group or tenant: what its DLQ copy carries.
    pub fn message_group(&self) -> Option<&str> {
        self.group_id.as_deref().or(self.tenant.as_deref())
    }

    /// A message for unit tests and benchmarks.
    pub fn fake(id: &str, body: &str) -> Self {
        Self {
            id: id.to_owned(),
            body: body.to_owned(),
            md5_of_body: None,
            group_id: None,
            tenant: None,
            sequence: None,
            receive_count: 1,
            sent_at_ms: None,
            received_at: Instant::now(),
            attributes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_group() -> Message {
        Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::MessageGroupId, "acme")
            .build()
    }

    /// A fair queue's group is a tenant: kept for the DLQ copy, never a FIFO order that would
    /// hold the tenant's later messages behind a released one.
    #[test]
    fn a_standard_queues_group_is_a_tenant_and_a_fifo_queues_an_order() {
        let (standard, _) = Received::from_sdk(with_group(), Instant::now(), false).unwrap();
        assert_eq!(standard.group_id, None);
        assert_eq!(standard.tenant.as_deref(), Some("acme"));
        assert_eq!(standard.message_group(), Some("acme"));
        let (fifo, _) = Received::from_sdk(with_group(), Instant::now(), true).unwrap();
        assert_eq!(fifo.group_id.as_deref(), Some("acme"));
        assert_eq!(fifo.tenant, None);
        assert_eq!(fifo.message_group(), Some("acme"));
    }
}
