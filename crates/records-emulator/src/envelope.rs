//! Response envelopes: `{"success":true,"data":..}` and `{"success":false,"error":..}`, each with a
//! correlation ID in the body and the `x-correlation-id` header.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use records_contract::{CORRELATION_ID, Envelope, ErrorBody, ErrorDetails, codes};

pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A response whose body is already encoded (also used to replay a stored one).
pub fn raw(status: StatusCode, correlation: &str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(correlation) {
        headers.insert(CORRELATION_ID, value);
    }
    response
}

pub fn success_body(correlation: &str, data: Value) -> Bytes {
    body(&Envelope::success(correlation, data))
}

fn body(envelope: &Envelope) -> Bytes {
    Bytes::from(serde_json::to_string(envelope).unwrap_or_default())
}

pub fn success(status: StatusCode, data: Value) -> Response {
    let id = correlation_id();
    raw(status, &id, success_body(&id, data))
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_with(status, code, message, None)
}

pub fn error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    details: Option<ErrorDetails>,
) -> Response {
    let id = correlation_id();
    let error = ErrorBody {
        code: Some(code.to_owned()),
        message: Some(message.into()),
        details,
    };
    raw(status, &id, body(&Envelope::failure(&id, error)))
}

/// A 5xx with no body at all, as a gateway would send.
pub fn bare(status: StatusCode) -> Response {
    let id = correlation_id();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

pub fn rate_limited(retry_after_s: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        format!("rate limit exceeded; retry after {retry_after_s} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// The response an injected status gets: the contract's code for it, or no body for gateway errors.
pub fn injected(status: u16, retry_after_s: u64) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = "injected fault";
    match status {
        429 => rate_limited(retry_after_s),
        502 | 504 => bare(code),
        400 | 413 => error(code, codes::REQUEST_INVALID, message),
        401 => error(code, codes::UNAUTHORIZED, message),
        403 => error(code, codes::FORBIDDEN, message),
        404 => error(code, codes::NOT_FOUND, message),
        409 => error(code, codes::IN_PROGRESS, message),
        422 => error(code, codes::REQUEST_SCHEMA, message),
        503 => error(code, codes::INTERNAL_UNAVAILABLE, message),
        _ => error(code, codes::INTERNAL_ERROR, message),
    }
}
