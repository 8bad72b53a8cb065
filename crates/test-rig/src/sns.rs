//! A real SNS topic on LocalStack with SQS subscriptions, for the producer tests: the worker must
//! take what SNS really delivers, wrapped in a notification or raw. Spoken over SNS's query API
//! with plain HTTP, so that the tests need no second AWS SDK crate.

use std::fmt::Write;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

pub struct Topic {
    pub arn: String,
    http: reqwest::Client,
    url: String,
}

/// `application/x-www-form-urlencoded` text of one value.
fn encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

async fn call(http: &reqwest::Client, url: &str, params: &[(&str, &str)]) -> String {
    let mut body = String::from("Version=2010-03-31");
    for (name, value) in params {
        let _ = write!(body, "&{}={}", encoded(name), encoded(value));
    }
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("LocalStack's SNS answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "SNS {params:?}: {status} {text}");
    text
}

/// A queue's ARN.
pub async fn queue_arn(sqs: &Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("a queue ARN")
}

impl Topic {
    /// A fresh topic on LocalStack.
    pub async fn create(name: &str) -> Self {
        let http = reqwest::Client::new();
        let url = format!("{}/", super::localstack_url());
        let answer = call(&http, &url, &[("Action", "CreateTopic"), ("Name", name)]).await;
        let arn = element(&answer, "TopicArn")
            .expect("CreateTopic names the topic")
            .to_owned();
        Self { arn, http, url }
    }

    /// Subscribes an SQS queue; `raw` is the subscription's RawMessageDelivery.
    pub async fn subscribe(&self, sqs: &Client, queue_url: &str, raw: bool) {
        let endpoint = queue_arn(sqs, queue_url).await;
        call(
            &self.http,
            &self.url,
            &[
                ("Action", "Subscribe"),
                ("TopicArn", &self.arn),
                ("Protocol", "sqs"),
                ("Endpoint", &endpoint),
                ("Attributes.entry.1.key", "RawMessageDelivery"),
                (
                    "Attributes.entry.1.value",
                    if raw { "true" } else { "false" },
                ),
            ],
        )
        .await;
    }

    /// Publishes one message with String message attributes; returns its SNS MessageId.
    pub async fn publish(&self, message: &str, attributes: &[(&str, &str)]) -> String {
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "Publish".into()),
            ("TopicArn".into(), self.arn.clone()),
            ("Message".into(), message.into()),
        ];
        for (n, (name, value)) in attributes.iter().enumerate() {
            let entry = format!("MessageAttributes.entry.{}", n + 1);
            params.push((format!("{entry}.Name"), (*name).into()));
            params.push((format!("{entry}.Value.DataType"), "String".into()));
            params.push((format!("{entry}.Value.StringValue"), (*value).into()));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answer = call(&self.http, &self.url, &params).await;
        element(&answer, "MessageId")
            .expect("Publish names the message")
            .to_owned()
    }

    pub async fn delete(self) {
        call(
            &self.http,
            &self.url,
            &[("Action", "DeleteTopic"), ("TopicArn", &self.arn)],
        )
        .await;
    }
}
