//! A pass-through proxy in front of LocalStack that corrupts `MD5OfBody` on received messages whose
//! body contains a marker. Real SQS never does this on purpose, but a corrupted transfer would, and
//! the Rust SDK does not check it: the worker must.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

const BAD_MD5: &str = "00000000000000000000000000000000";

/// Starts the proxy on a free loopback port and returns its URL.
pub async fn start(marker: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let upstream = super::localstack_url();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request<Body>| {
        let http = http.clone();
        let upstream = upstream.clone();
        async move { forward(http, &upstream, marker, request).await }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn forward(
    http: reqwest::Client,
    upstream: &str,
    marker: &str,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let is_receive = parts
        .headers
        .get("x-amz-target")
        .is_some_and(|t| t.as_bytes().ends_with(b".ReceiveMessage"));
    let (status, headers, bytes) = match relay(
        &http,
        upstream,
        parts.method,
        &parts.uri,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(reply) => reply,
        Err(problem) => return (StatusCode::BAD_GATEWAY, problem).into_response(),
    };
    let bytes = if is_receive && status.is_success() {
        corrupt(&bytes, marker).unwrap_or(bytes)
    } else {
        bytes
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

async fn relay(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http.request(method, format!("{upstream}{path}")).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, headers, bytes))
}

/// Rewrites `MD5OfBody` of every message whose body holds the marker; None if nothing matched.
fn corrupt(bytes: &[u8], marker: &str) -> Option<Bytes> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    let mut changed = false;
    for message in value.get_mut("Messages")?.as_array_mut()? {
        if message["Body"].as_str().is_some_and(|b| b.contains(marker)) {
            message["MD5OfBody"] = Value::String(BAD_MD5.to_owned());
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&value).ok().map(Bytes::from)
}
