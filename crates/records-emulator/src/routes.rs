//! HTTP routes: the contract under `/public/v1` and the control endpoints under `/__emu`.
//! Order of checks on a write: auth, object, rate limit, body size, idempotency key, injected
//! faults, request validation (400, then 422), commit.
// Handlers return `Response` as the error of their checks: that is how axum composes early exits.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::envelope::{self, error, error_with, injected, rate_limited, success};
use super::faults::{Class, Decision, FaultsPatch};
use super::listener::ConnectionHandle;
use super::state::{Claim, Emulator, LoggedRequest, Operation, Record};
use super::validate::validate_row;
use records_contract::{
    BatchAccepted, ErrorDetails, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, MAX_BATCH_RECORDS,
    MAX_BODY_BYTES, ObjectSchema, codes,
};

type Emu = State<Arc<Emulator>>;

pub fn router(emulator: Arc<Emulator>) -> Router {
    let api = Router::new()
        .route("/metadata/objects/{object}", get(metadata))
        .route("/records/{object}/upsert-batch", post(upsert_batch))
        .route("/records/{object}/append-batch", post(append_batch))
        .route("/records/{object}/upsert", post(upsert_single))
        .route("/records/{object}/append", post(append_single))
        .route("/records/{object}/jobs/{job_id}", get(job))
        .layer(middleware::from_fn_with_state(
            emulator.clone(),
            super::hostile::echo_credentials,
        ));
    let control = Router::new()
        .route("/faults", post(set_faults).get(get_faults))
        .route("/reset", post(reset))
        .route("/stats", get(stats))
        .route("/records/{object}", get(rows))
        .route("/jobs", get(jobs))
        .route("/jobs/records", get(jobs_with_records))
        .route("/requests", get(requests))
        .route("/schemas", put(set_schemas));
    Router::new()
        .nest("/public/v1", api)
        .nest("/__emu", control)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            emulator.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(emulator)
}

async fn count_requests(State(emu): Emu, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let path = request.uri().path().to_owned();
    let idempotency_key = request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let at = time::OffsetDateTime::now_utc();
    let response = next.run(request).await;
    emu.record_request(LoggedRequest {
        at,
        route,
        path,
        status: response.status().as_u16(),
        idempotency_key,
    });
    response
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
}

#[derive(PartialEq, Eq)]
enum Access {
    Full,
    ReadOnly,
}

fn authorize(emu: &Emulator, headers: &HeaderMap) -> Result<Access, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if token == emu.config.token => Ok(Access::Full),
        Some(token) if emu.config.forbidden_token.as_deref() == Some(token) => Ok(Access::ReadOnly),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "missing or invalid bearer token",
        )),
    }
}

fn object_schema(emu: &Emulator, object: &str) -> Result<ObjectSchema, Response> {
    emu.schema(object).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("unknown object '{object}'"),
        )
    })
}

/// Reads at most the contract's body limit; anything larger is a 413 without reading the rest.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::REQUEST_INVALID,
            format!("request body is larger than {MAX_BODY_BYTES} bytes; split the batch"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                codes::REQUEST_INVALID,
                format!("could not read the request body: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if buffer.len() + data.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buffer.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(buffer))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| uuid::Uuid::parse_str(text.trim()).ok())
        .map(|key| Some(key.to_string()))
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                codes::REQUEST_INVALID,
                "Idempotency-Key must be a UUID",
            )
        })
}

/// Releases an idempotency claim unless the request stored a response: a dropped or failed
/// request must not leave its key "in progress" forever.
struct ClaimGuard<'a> {
    emu: &'a Emulator,
    scope: Option<String>,
}

impl ClaimGuard<'_> {
    fn store(&mut self, status: StatusCode, body: Bytes, correlation: String) {
        if let Some(scope) = self.scope.take() {
            self.emu.store(&scope, status, body, correlation);
        }
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if let Some(scope) = &self.scope {
            self.emu.release(scope);
        }
    }
}

/// Applies the injected fault, if any, after the configured latency. `Ok` means carry on.
async fn injected_fault(
    emu: &Emulator,
    class: Class,
    conn: &ConnectionHandle,
) -> Result<(), Response> {
    let (decision, latency, retry_after) = emu.decide(class);
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = emu.shutdown.cancelled() => {}
        }
    }
    match decision {
        Decision::Pass => Ok(()),
        Decision::Status(status) => Err(injected(status, retry_after)),
        Decision::Reset => {
            conn.reset();
            Err(envelope::bare(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Decision::Hang(duration) => {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = emu.shutdown.cancelled() => {}
            }
            Err(envelope::bare(StatusCode::GATEWAY_TIMEOUT))
        }
    }
}

macro_rules! write_route {
    ($name:ident, $op:expr) => {
        async fn $name(
            State(emu): Emu,
            ConnectInfo(conn): ConnectInfo<ConnectionHandle>,
            Path(object): Path<String>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            match write(&emu, &conn, $op, &object, &headers, body).await {
                Ok(response) | Err(response) => response,
            }
        }
    };
}

write_route!(upsert_batch, Operation::UpsertBatch);
write_route!(append_batch, Operation::AppendBatch);
write_route!(upsert_single, Operation::Upsert);
write_route!(append_single, Operation::Append);

async fn write(
    emu: &Arc<Emulator>,
    conn: &ConnectionHandle,
    op: Operation,
    object: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    if authorize(emu, headers)? == Access::ReadOnly {
        return Err(error(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            "this token may read but not write",
        ));
    }
    let schema = object_schema(emu, object)?;
    // Busy (--concurrency): answered before the quota is charged, as a gateway in front would.
    let _in_progress = emu.enter_write().ok_or_else(|| injected(503, 1))?;
    emu.take_token(op.class()).map_err(rate_limited)?;
    let body = read_body(headers, body).await?;
    let key = idempotency_key(headers)?;
    let scope = claim(emu, op, object, key.as_deref(), &body)?;
    let mut guard = ClaimGuard { emu, scope };
    injected_fault(emu, op.class(), conn).await?;
    let request = parse_write(op, &schema, &body)?;
    let per_record = emu.latency_for(request.records.len());
    if !per_record.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(per_record) => {}
            _ = emu.shutdown.cancelled() => {}
        }
    }
    let correlation = envelope::correlation_id();
    let (status, data) = match op {
        Operation::UpsertBatch | Operation::AppendBatch => (
            StatusCode::ACCEPTED,
            accept_batch(emu, op, object, request, key),
        ),
        Operation::Upsert | Operation::Append => (
            StatusCode::OK,
            write_single(emu, op, object, &schema, request)?,
        ),
    };
    let body = envelope::success_body(&correlation, data);
    guard.store(status, body.clone(), correlation.clone());
    if op.class() == Class::Batch && emu.roll_commit_then_500() {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL_ERROR,
            "internal error after the batch was committed",
        ));
    }
    Ok(envelope::raw(status, &correlation, body))
}

/// Claims the idempotency key for this body: the scope to store the answer under when the
/// request is fresh. A replay, a request still in progress and a reused key are answered at
/// once, as the `Err` side.
fn claim(
    emu: &Arc<Emulator>,
    op: Operation,
    object: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<Option<String>, Response> {
    let Some(key) = key else {
        return Ok(None);
    };
    let scope = format!("{} {object} {key}", op.name());
    match emu.claim(&scope, Md5::digest(body).into()) {
        Claim::Fresh => Ok(Some(scope)),
        Claim::Replay {
            status,
            body,
            correlation,
        } => {
            let mut response = envelope::raw(status, &correlation, body);
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Err(response)
        }
        Claim::InProgress => Err(error(
            StatusCode::CONFLICT,
            codes::IN_PROGRESS,
            "a request with this Idempotency-Key is still being processed; retry later",
        )),
        Claim::Reused => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::KEY_REUSED,
            "this Idempotency-Key was used with a different request body",
        )),
    }
}

/// Creates the batch's job, starts it, and says where to poll it.
fn accept_batch(
    emu: &Arc<Emulator>,
    op: Operation,
    object: &str,
    request: WriteRequest,
    key: Option<String>,
) -> Value {
    let accepted = request.records.len();
    let job = emu.create_job(object, op, request.match_key, request.records, key);
    tokio::spawn(super::jobs::run(
        emu.clone(),
        job.id.clone(),
        job.number,
        job.generation,
        job.queued,
        job.processing,
    ));
    let status_path = if let Some(origin) = emu.status_path_origin() {
        format!("{origin}/public/v1/records/{object}/jobs/{}", job.id)
    } else if emu.status_path_relative() {
        format!("records/{object}/jobs/{}", job.id)
    } else {
        format!("/records/{object}/jobs/{}", job.id)
    };
    let accepted = BatchAccepted {
        job_id: job.id,
        status_path,
        accepted_records: accepted,
        operation: Some(op.name().to_owned()),
        object_name: Some(object.to_owned()),
        state: Some("queued".to_owned()),
    };
    serde_json::to_value(accepted).unwrap_or_default()
}

/// The single-record routes validate and write at once.
fn write_single(
    emu: &Arc<Emulator>,
    op: Operation,
    object: &str,
    schema: &ObjectSchema,
    request: WriteRequest,
) -> Result<Value, Response> {
    let record = &request.records[0];
    if let Err(row) = validate_row(schema, request.match_key.as_deref(), 0, record) {
        let path = row.path.replacen("records[0]", "record", 1);
        return Err(error_with(
            StatusCode::BAD_REQUEST,
            row.code,
            row.message,
            Some(ErrorDetails {
                path: Some(path),
                value: None,
            }),
        ));
    }
    emu.write_single(object, request.match_key.as_deref(), record);
    Ok(
        json!({"operation": op.name(), "objectName": object, "accepted": true, "acceptedRecords": 1}),
    )
}

struct WriteRequest {
    records: Vec<Record>,
    match_key: Option<String>,
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, codes::REQUEST_INVALID, message)
}

/// Request-level checks: 400 for shape problems, then 422 for field names outside the schema.
fn parse_write(
    op: Operation,
    schema: &ObjectSchema,
    body: &[u8],
) -> Result<WriteRequest, Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(invalid("request body must be a JSON object"));
    };
    let batch = op.class() == Class::Batch;
    let (records, prefix): (Vec<Record>, &str) = if batch {
        let Some(Value::Array(items)) = top.remove("records") else {
            return Err(invalid("'records' must be an array of objects"));
        };
        if items.is_empty() || items.len() > MAX_BATCH_RECORDS {
            return Err(invalid(format!(
                "'records' holds {} records; a batch takes 1 to {MAX_BATCH_RECORDS}",
                items.len()
            )));
        }
        let mut records = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Value::Object(record) => records.push(record),
                _ => return Err(invalid(format!("records[{index}] is not a JSON object"))),
            }
        }
        (records, "records")
    } else {
        let Some(Value::Object(record)) = top.remove("record") else {
            return Err(invalid("'record' must be a JSON object"));
        };
        (vec![record], "record")
    };
    let match_key = if op.is_upsert() {
        match top.get("matchKey") {
            Some(Value::String(key)) if schema.match_keys.contains(key) => Some(key.clone()),
            Some(Value::String(key)) => {
                return Err(invalid(format!(
                    "matchKey '{key}' is not a match key of '{}' (it has {:?})",
                    schema.name, schema.match_keys
                )));
            }
            _ => {
                return Err(invalid(
                    "'matchKey' is required on an upsert and must be a string",
                ));
            }
        }
    } else {
        None
    };
    for (index, record) in records.iter().enumerate() {
        if let Some(field) = record.keys().find(|field| !schema.has_field(field)) {
            let path = if batch {
                format!("{prefix}[{index}].{field}")
            } else {
                format!("{prefix}.{field}")
            };
            return Err(error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::REQUEST_SCHEMA,
                format!("field '{field}' is not in the schema of '{}'", schema.name),
                Some(ErrorDetails {
                    path: Some(path),
                    value: Some(Value::String(field.clone())),
                }),
            ));
        }
    }
    Ok(WriteRequest { records, match_key })
}

async fn metadata(
    State(emu): Emu,
    ConnectInfo(conn): ConnectInfo<ConnectionHandle>,
    Path(object): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&emu, &headers)?;
        let schema = object_schema(&emu, &object)?;
        emu.take_token(Class::Metadata).map_err(rate_limited)?;
        injected_fault(&emu, Class::Metadata, &conn).await?;
        Ok::<_, Response>(success(StatusCode::OK, json!(schema)))
    };
    result.await.unwrap_or_else(|response| response)
}

async fn job(
    State(emu): Emu,
    ConnectInfo(conn): ConnectInfo<ConnectionHandle>,
    Path((object, job_id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&emu, &headers)?;
        object_schema(&emu, &object)?;
        emu.take_token(Class::Jobs).map_err(rate_limited)?;
        injected_fault(&emu, Class::Jobs, &conn).await?;
        let view = emu
            .job_view(&object, &job_id)
            .filter(|_| !emu.roll_job_unknown())
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    codes::NOT_FOUND,
                    format!("unknown job '{job_id}' for object '{object}'"),
                )
            })?;
        Ok::<_, Response>(super::hostile::answer(
            emu.hostile_answer(),
            // Inside the `/public/v1` nest the path has lost its prefix.
            &format!("/public/v1{}", uri.path()),
            view,
        ))
    };
    result.await.unwrap_or_else(|response| response)
}

async fn set_faults(State(emu): Emu, body: Bytes) -> Response {
    let patch: FaultsPatch = if body.iter().all(u8::is_ascii_whitespace) {
        FaultsPatch::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(patch) => patch,
            Err(e) => return invalid(format!("fault settings are not valid: {e}")),
        }
    };
    match emu.apply_faults(patch) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(problem) => invalid(problem),
    }
}

async fn get_faults(State(emu): Emu) -> Response {
    axum::Json(emu.faults()).into_response()
}

async fn reset(State(emu): Emu) -> Response {
    emu.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(emu): Emu) -> Response {
    axum::Json(emu.stats()).into_response()
}

async fn requests(State(emu): Emu) -> Response {
    axum::Json(emu.request_log()).into_response()
}

/// Replaces the live schemas, as a migration on the real API would (tests of the 422 path).
async fn set_schemas(State(emu): Emu, body: Bytes) -> Response {
    match super::schema::parse(&body) {
        Ok(schemas) => {
            emu.set_schemas(schemas);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(problem) => invalid(problem),
    }
}

async fn jobs(State(emu): Emu) -> Response {
    axum::Json(emu.jobs()).into_response()
}

async fn jobs_with_records(State(emu): Emu) -> Response {
    axum::Json(emu.jobs_with_records()).into_response()
}

async fn rows(State(emu): Emu, Path(object): Path<String>) -> Response {
    if let Err(response) = object_schema(&emu, &object) {
        return response;
    }
    axum::Json(emu.rows(&object)).into_response()
}
