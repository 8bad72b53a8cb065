//! Hostile answers (issue 20): a redirect to another origin, a job report padded to N MiB, a
//! report that drips one byte at a time, and error text that echoes the credential it was shown. The bodies are streamed, so a 1 GiB answer costs the
//! emulator a 64 KiB buffer, not a gigabyte.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::state::Emulator;

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

/// With `echo_credentials`, error messages and job report errors repeat the `Authorization`
/// header the request carried.
pub async fn echo_credentials(
    State(emu): State<Arc<Emulator>>,
    request: Request,
    next: Next,
) -> Response {
    let shown = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let response = match shown.filter(|_| emu.echo_credentials()) {
        Some(shown) => echo(response, &shown).await,
        None => response,
    };
    match emu.pad_errors_mib() {
        mib if mib > 0 && response.status().as_u16() >= 400 => pad(response, mib).await,
        _ => response,
    }
}

/// The error answer with `mib` MiB of JSON whitespace before its body, streamed.
async fn pad(response: Response, mib: u64) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(padded(body, mib << 20)))
}

async fn echo(response: Response, shown: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let note = format!(" (credential shown: {shown})");
    let append = |message: &mut Value| {
        if let Some(text) = message.as_str() {
            *message = Value::String(format!("{text}{note}"));
        }
    };
    if let Some(errors) = value
        .pointer_mut("/data/errors")
        .and_then(Value::as_array_mut)
    {
        errors
            .iter_mut()
            .filter_map(|e| e.get_mut("message"))
            .for_each(append);
    }
    if let Some(message) = value.pointer_mut("/error/message") {
        append(message);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}
