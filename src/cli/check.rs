//! `sqs-batch-worker check`: with the same settings as `run`, reaches both queues and the API's
//! metadata endpoint, prints what it found, and returns the problems that would stop the worker
//! from working safely (the caller exits non-zero on any).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use records_contract::ObjectSchema;

use crate::config::{AckOn, Settings};
use crate::run::match_key_fits;
use crate::schema::SchemaHandle;
use crate::sink::api::RecordsApi;

use crate::sqs::Queue;
use crate::sqs::queue::visibility_of;
use crate::telemetry::Telemetry;

/// SQS's limit on in-flight messages per standard queue (20,000 for FIFO).
const STANDARD_IN_FLIGHT_LIMIT: usize = 120_000;
const FIFO_IN_FLIGHT_LIMIT: usize = 20_000;
/// Below this, a heartbeat cannot reliably renew a message before its visibility ends.
const MIN_VISIBILITY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub(super) fn found(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Prints the report; success when it found no problem.
    pub fn print(&self) -> std::process::ExitCode {
        for line in &self.lines {
            println!("check: {line}");
        }
        for warning in &self.warnings {
            println!("check: WARNING: {warning}");
        }
        for problem in &self.problems {
            println!("check: PROBLEM: {problem}");
        }
        println!(
            "check: {} problem(s), {} warning(s)",
            self.problems.len(),
            self.warnings.len()
        );
        if self.problems.is_empty() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        }
    }
}

/// The longest a message can be held with no heartbeat: the batch wait, every submit attempt
/// at its timeout, and (in `completed` mode) the job.
pub fn worst_case_hold(settings: &Settings) -> Duration {
    let submit = settings.request_timeout * settings.retry_attempts as u32;
    let job = match settings.ack_on {
        AckOn::Completed => settings.job_timeout,
        AckOn::Accepted => Duration::ZERO,
    };
    settings.batch_max_wait + submit + job
}

async fn check_source(settings: &Settings, source: &Queue, report: &mut Report) {
    let attributes = [
        QueueAttributeName::VisibilityTimeout,
        QueueAttributeName::RedrivePolicy,
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ];
    let mut found = Vec::new();
    for name in attributes {
        match source.attribute(name.clone()).await {
            Ok(value) => found.push(value),
            Err(error) => {
                report.problems.push(format!(
                    "--queue-url (env SQS_QUEUE_URL): {error}. Fix: check the URL, the region and sqs:GetQueueAttributes"
                ));
                return;
            }
        }
    }
    let queue_visibility = visibility_of(found[0].as_deref());
    let visibility = settings.visibility_timeout.unwrap_or(queue_visibility);
    report.found(format!(
        "source queue: reachable, {} visible, {} in flight, visibility timeout {}s{}",
        found[2].as_deref().unwrap_or("?"),
        found[3].as_deref().unwrap_or("?"),
        visibility.as_secs(),
        if source.is_fifo() { ", FIFO" } else { "" }
    ));
    let hold = worst_case_hold(settings);
    if visibility < MIN_VISIBILITY {
        report.problems.push(format!(
            "the visibility timeout ({}s) is too short for the heartbeat to renew it. Fix: set the queue's VisibilityTimeout or --visibility-timeout to at least 30s",
            visibility.as_secs()
        ));
    } else if visibility < hold {
        report.warnings.push(format!(
            "a batch can be held up to {}s (wait {}s + {} attempts x {}s request timeout{}), longer than the {}s visibility timeout: the heartbeat extends it, and if the worker stalls the messages are redelivered (no loss; idempotency absorbs the repeat)",
            hold.as_secs(),
            settings.batch_max_wait.as_secs(),
            settings.retry_attempts,
            settings.request_timeout.as_secs(),
            match settings.ack_on {
                AckOn::Completed => format!(" + {}s job timeout", settings.job_timeout.as_secs()),
                AckOn::Accepted => String::new(),
            },
            visibility.as_secs()
        ));
    } else {
        report.found(format!(
            "worst-case hold of a message without a heartbeat: {}s, within the visibility timeout",
            hold.as_secs()
        ));
    }
    match &found[1] {
        Some(policy) => report.found(format!("redrive policy: {policy}")),
        None => report.problems.push(
            "the source queue has no RedrivePolicy: a message that keeps failing transiently is retried forever. Fix: attach a redrive DLQ with maxReceiveCount (deploy/cloudformation/queues.yaml does)".into(),
        ),
    }
    let limit = if source.is_fifo() {
        FIFO_IN_FLIGHT_LIMIT
    } else {
        STANDARD_IN_FLIGHT_LIMIT
    };
    let held = settings.max_in_flight * settings.batch_max_records + settings.pollers * 10;
    if held > limit {
        report.problems.push(format!(
            "--max-in-flight x --batch-max-records holds up to {held} messages, over SQS's {limit} in-flight limit. Fix: lower either"
        ));
    }
}

async fn check_dlq(dlq: &Queue, source: &Queue, report: &mut Report) {
    match dlq
        .attribute(QueueAttributeName::ApproximateNumberOfMessages)
        .await
    {
        Ok(depth) => report.found(format!(
            "reject DLQ: reachable, {} messages waiting{}",
            depth.as_deref().unwrap_or("?"),
            if dlq.is_fifo() { ", FIFO" } else { "" }
        )),
        Err(error) => report.problems.push(format!(
            "--dlq-url (env SQS_DLQ_URL): {error}. Fix: check the URL and sqs:SendMessage on it"
        )),
    }
    let (source_max, dlq_max) = (
        crate::run::startup::max_message_bytes(source).await,
        crate::run::startup::max_message_bytes(dlq).await,
    );
    if let Some(dlq_max) = dlq_max {
        report.found(format!(
            "message size: source {} bytes, DLQ {dlq_max} bytes",
            source_max.map_or("?".to_owned(), |n| n.to_string())
        ));
        if let Err(error) = crate::run::startup::dlq_fits_the_source(source_max, dlq_max) {
            report.problems.push(error.to_string());
        }
    }
    if source.is_fifo() && !dlq.is_fifo() {
        report.warnings.push(
            "the source is FIFO but the DLQ is not: DLQ entries lose their message group".into(),
        );
    }
}

/// The record a sample body makes under `--envelope` and `--field`, checked against the API's
/// schema as `run` would, or the DLQ reason it would get.
fn check_sample(
    settings: &Settings,
    schema: Option<ObjectSchema>,
    sample: &Sample,
    report: &mut Report,
) {
    let Sample { path, attributes } = sample;
    let shown = path.display();
    let body = match std::fs::read_to_string(path) {
        Ok(body) => body,
        Err(error) => {
            report.problems.push(format!(
                "--sample {shown}: cannot read it: {error}. Fix: give a file holding one message body"
            ));
            return;
        }
    };
    let Some(schema) = schema else {
        report.problems.push(format!(
            "--sample {shown}: not applied, since the record is checked against the API's \
             schema, which could not be read (above)"
        ));
        return;
    };
    let telemetry = Arc::new(Telemetry::new());
    let (_, decoder) =
        crate::run::batcher_and_decoder(settings, telemetry.clone(), SchemaHandle::new(schema));
    let body = body.strip_suffix('\n').unwrap_or(&body);
    let attributes: HashMap<String, MessageAttributeValue> = attributes
        .iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("the data type is set");
            (name.clone(), value)
        })
        .collect();
    match decoder.decode(body, None, Some(&attributes)) {
        Ok(record) => {
            report.found(format!("sample {shown}: record {}", record.encoded));
            let dropped = telemetry.unknown_fields_dropped_count();
            if dropped > 0 {
                report.found(format!(
                    "sample {shown}: {dropped} field(s) the schema does not know were dropped \
                     (--unknown-fields drop)"
                ));
            }
        }
        Err(rejection) => report.problems.push(format!(
            "sample {shown}: would go to the DLQ as {}: {}",
            rejection.reason.as_str(),
            rejection.message
        )),
    }
}

async fn check_api(settings: &Settings, report: &mut Report) -> Option<ObjectSchema> {
    let telemetry = Arc::new(Telemetry::new());
    let budget = Arc::new(crate::sink::budget::Budget::unlimited(telemetry.clone()));
    let api = match RecordsApi::new(settings, budget, telemetry) {
        Ok(api) => api,
        Err(error) => {
            report.problems.push(format!("--api-url: {error}"));
            return None;
        }
    };
    match api.metadata().await {
        Ok(schema) => {
            report.found(format!(
                "Records API: object '{}' with {} fields, match keys {:?}",
                schema.name,
                schema.fields.len(),
                schema.match_keys
            ));
            if let Err(problem) = match_key_fits(settings, &schema) {
                report.problems.push(problem.to_string());
            }
            Some(schema)
        }
        Err(error) => {
            report.problems.push(format!(
                "GET {}/metadata/objects/{}: {error}. Fix: check --api-url, --object and the token",
                settings.api_url, settings.object
            ));
            None
        }
    }
}

/// `check --sample FILE [--sample-attribute NAME=VALUE ...]`: a body to put through the
/// envelope and the mapping, with the String message attributes it would arrive with.
#[derive(Debug, Default)]
pub struct Sample {
    pub path: PathBuf,
    pub attributes: Vec<(String, String)>,
}

pub async fn check(
    settings: &Settings,
    sample: Option<&Sample>,
    client: aws_sdk_sqs::Client,
) -> Report {
    let mut report = Report::default();
    report.found(format!(
        "config: {} '{}' ({}), batches of up to {} records / {} bytes / {:?}, {} pollers, {} in flight, ack on {:?}",
        settings.operation.path(),
        settings.object,
        settings.api_url,
        settings.batch_max_records,
        settings.batch_max_bytes,
        settings.batch_max_wait,
        settings.pollers,
        settings.max_in_flight,
        settings.ack_on
    ));
    let source = Queue::new(client.clone(), settings.queue_url.clone());
    let dlq = Queue::new(client.clone(), settings.dlq_url.clone());
    check_source(settings, &source, &mut report).await;
    check_dlq(&dlq, &source, &mut report).await;
    let schema = check_api(settings, &mut report).await;
    report.found(format!(
        "producers: envelope {}; fields: {}",
        settings.envelope.name(),
        settings.fields
    ));
    if let Some(sample) = sample {
        check_sample(settings, schema, sample, &mut report);
    }
    check_quota(settings, &client, &mut report).await;
    match super::exposure::exposure(settings) {
        Ok(line) => report.found(line),
        Err(warnings) => report.warnings.extend(warnings),
    }
    report
}

/// The quota in words, and the shared budget queue reached.
async fn check_quota(settings: &Settings, client: &aws_sdk_sqs::Client, report: &mut Report) {
    if settings.rate_limit.is_empty() {
        report.found("quota: none (--rate-limit not set)".into());
        return;
    }
    let limits: Vec<String> = settings
        .rate_limit
        .iter()
        .map(ToString::to_string)
        .collect();
    let per_s = settings
        .rate_limit
        .iter()
        .map(|limit| limit.per_second())
        .fold(f64::MAX, f64::min);
    let carried = per_s * settings.batch_max_records as f64 / (1.0 + crate::sink::budget::MARGIN);
    let home = match (
        &settings.budget_table,
        &settings.budget_queue,
        &settings.state_dir,
    ) {
        (Some(table), _, _) => format!("shared through the DynamoDB table {table}"),
        (None, Some(url), _) => format!("shared through {url}"),
        (None, None, Some(dir)) => format!("local, saved in {}", dir.display()),
        (None, None, None) => "local, full again after a restart".into(),
    };
    report.found(format!(
        "quota: {} ({home}); at full batches it carries {carried:.1} records a second",
        limits.join(", ")
    ));
    if let Some(table) = &settings.budget_table {
        let tokens = crate::sink::budget::TableTokens::connect(table.clone()).await;
        if let Err(error) = tokens.reach().await {
            report.problems.push(format!(
                "--budget-table cannot be reached: {error}. Fix: create the table (partition key \
                 `limit`, a string; deploy/cloudformation/queues.yaml makes one with \
                 SharedBudget=table) and allow dynamodb:DescribeTable, GetItem, UpdateItem"
            ));
        }
    }
    if let Some(url) = &settings.budget_queue {
        let queue = Queue::new(client.clone(), url.clone());
        if let Err(error) = queue.attribute(QueueAttributeName::FifoQueue).await {
            report
                .problems
                .push(format!("--budget-queue cannot be reached: {error}"));
            return;
        }
        use crate::sqs::clock::{self, ClockCheck};
        match clock::offset_from_sqs(&queue)
            .await
            .map(|off| (off, clock::judge(off)))
        {
            Some((offset, ClockCheck::TooFar)) => report.problems.push(format!(
                "--budget-queue: this host's clock is {offset:.0} s off SQS's; the worker refuses \
                 to start beyond {:.0} s. Fix: keep the clock in step (NTP), or use --budget-table",
                clock::REFUSE_S
            )),
            Some((offset, _)) => report.found(format!(
                "budget queue: this host's clock is {offset:+.1} s off SQS's (refused beyond \
                 {:.0} s, a warning beyond {:.0} s)",
                clock::REFUSE_S,
                clock::WARN_S
            )),
            None => report.found("budget queue: SQS's clock could not be read".to_owned()),
        }
    }
}
