//! Hostile job answers (issue 20): a redirect to another origin, a report padded to N MiB, and a
//! report that drips one byte at a time. The bodies are streamed, so a 1 GiB answer costs the
//! emulator a 64 KiB buffer, not a gigabyte.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::envelope::{correlation_id, success_body};
use super::faults::HostileAnswer;

const PAD_CHUNK: usize = 64 * 1024;

/// The job report `view`, answered as `answer` says.
pub fn answer(answer: HostileAnswer, path: &str, view: Value) -> Response {
    let id = correlation_id();
    let body = success_body(&id, view);
    match answer {
        HostileAnswer::Plain => super::envelope::raw(StatusCode::OK, &id, body),
        HostileAnswer::Redirect(origin) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            if let Ok(location) = HeaderValue::from_str(&format!("{origin}{path}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        HostileAnswer::Big(mib) => json_response(Body::from_stream(padded(body, mib << 20))),
        HostileAnswer::Drip(every) => json_response(Body::from_stream(dripped(body, every))),
    }
}

fn json_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `padding` bytes of JSON whitespace, then the report: still valid JSON, so a reader without a
/// ceiling reads all of it and then succeeds.
fn padded(
    body: Bytes,
    padding: u64,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let chunk = Bytes::from(vec![b' '; PAD_CHUNK]);
    futures::stream::unfold((padding, Some(body)), move |(left, body)| {
        let chunk = chunk.clone();
        async move {
            if left > 0 {
                let n = left.min(PAD_CHUNK as u64);
                return Some((Ok(chunk.slice(..n as usize)), (left - n, body)));
            }
            body.map(|body| (Ok(body), (0, None)))
        }
    })
}

/// The report one byte every `every`.
fn dripped(
    body: Bytes,
    every: Duration,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures::stream::unfold(0usize, move |at| {
        let body = body.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(body.slice(at..at + 1)), at + 1))
        }
    })
}
