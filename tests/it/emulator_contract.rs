//! The emulator over real HTTP on port 0: every row of the status table, idempotency, the job
//! timeline, every fault knob, and malformed input.

use std::time::{Duration, Instant};

use records_emulator::{EmulatorConfig, RunningEmulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

struct Api {
    emu: RunningEmulator,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    async fn start() -> Self {
        Self::with(EmulatorConfig::for_tests(TOKEN)).await
    }

    async fn with(config: EmulatorConfig) -> Self {
        let emu = records_emulator::start(config)
            .await
            .expect("emulator starts");
        Self {
            emu,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the emulator");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !bytes.is_empty() && status != StatusCode::NO_CONTENT {
            assert!(
                headers.contains_key("x-correlation-id"),
                "correlation header on {status}"
            );
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.emu.api_url()))
            .bearer_auth(TOKEN)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.emu.api_url()))
            .bearer_auth(TOKEN)
    }

    async fn upsert(&self, records: Value, key: Option<&str>) -> Reply {
        let mut request = self
            .post("/records/profiles/upsert-batch")
            .json(&json!({"records": records, "matchKey": "email"}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    async fn faults(&self, faults: Value) {
        let response = self
            .http
            .post(format!("{}/__emu/faults", self.emu.base_url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "faults accepted");
    }

    async fn control(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/__emu/{path}", self.emu.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_job(&self, status_path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.send(self.get(status_path)).await;
            assert_eq!(reply.status, StatusCode::OK);
            let state = reply.body["data"]["state"].as_str().unwrap().to_owned();
            if state == "completed" || state == "failed" {
                return reply.body["data"].clone();
            }
            assert!(Instant::now() < deadline, "job never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn batch_is_accepted_and_the_job_commits_valid_rows() {
    let api = Api::start().await;
    let reply = api
        .upsert(
            json!([
                {"email": "a@x.io", "tier": "gold", "score": 3},
                {"email": "no-at-sign", "tier": "silver"},
                {"email": "b@x.io", "last_seen_at": "2026-04-21T10:00:00"},
                {"email": "c@x.io", "last_seen_at": "2026-04-21T10:00:00+02:00", "plan": null}
            ]),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["success"], true);
    let data = &reply.body["data"];
    assert_eq!(data["operation"], "upsert-batch");
    assert_eq!(data["objectName"], "profiles");
    assert_eq!(data["state"], "queued");
    assert_eq!(data["acceptedRecords"], 4);
    assert!(data["jobId"].as_str().unwrap().starts_with("rjob_"));
    assert_eq!(
        reply.body["correlationId"],
        reply.headers["x-correlation-id"].to_str().unwrap()
    );

    let job = api.wait_job(data["statusPath"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(
        job["metrics"],
        json!({"totalRows": 4, "validRows": 2, "invalidRows": 2})
    );
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["path"], "records[1].email");
    assert_eq!(errors[1]["index"], 2);
    assert_eq!(errors[1]["path"], "records[2].last_seen_at");
    assert!(job["completedAt"].is_string());

    let rows = api.control("records/profiles").await;
    assert_eq!(
        rows,
        json!([{"email": "a@x.io", "tier": "gold", "score": 3}, {"email": "c@x.io", "last_seen_at": "2026-04-21T10:00:00+02:00"}])
    );
}

#[tokio::test]
async fn job_moves_through_queued_processing_completed_on_its_own() {
    let mut config = EmulatorConfig::for_tests(TOKEN);
    config.queued = Duration::from_millis(300);
    config.processing = Duration::from_millis(300);
    let api = Api::with(config).await;
    let reply = api.upsert(json!([{"email": "t@x.io"}]), None).await;
    let path = reply.body["data"]["statusPath"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = |reply: Reply| reply.body["data"]["state"].as_str().unwrap().to_owned();
    assert_eq!(state(api.send(api.get(&path)).await), "queued");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(state(api.send(api.get(&path)).await), "processing");
    // Nobody polls now: the job must still complete and commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.control("records/profiles").await,
        json!([{"email": "t@x.io"}])
    );
    assert_eq!(state(api.send(api.get(&path)).await), "completed");
}

#[tokio::test]
async fn upsert_merges_field_by_field_and_null_clears() {
    let api = Api::start().await;
    let first = api
        .upsert(
            json!([{"email": "m@x.io", "tier": "gold", "country": "NL"}]),
            None,
        )
        .await;
    api.wait_job(first.body["data"]["statusPath"].as_str().unwrap())
        .await;
    let second = api
        .upsert(json!([{"email": "m@x.io", "tier": "silver", "country": null}, {"email": "m@x.io", "plan": "pro"}]), None)
        .await;
    api.wait_job(second.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(
        api.control("records/profiles").await,
        json!([{"email": "m@x.io", "tier": "silver", "plan": "pro"}])
    );
}

#[tokio::test]
async fn append_inserts_every_record_and_checks_required_fields() {
    let api = Api::start().await;
    let event = json!({"session_id": "s1", "event": "view", "occurred_at": "2026-04-21T15:00:00Z"});
    let reply = api
        .send(
            api.post("/records/events/append-batch")
                .json(&json!({"records": [event, event, {"session_id": "s2"}]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["data"]["operation"], "append-batch");
    let job = api
        .wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(job["metrics"]["invalidRows"], 1);
    assert_eq!(
        api.control("records/events")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn single_writes_answer_200_and_commit_at_once() {
    let api = Api::start().await;
    let reply = api
        .send(
            api.post("/records/profiles/upsert")
                .json(&json!({"record": {"email": "s@x.io", "tier": "gold"}, "matchKey": "email"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body["data"],
        json!({"operation": "upsert", "objectName": "profiles", "accepted": true, "acceptedRecords": 1})
    );
    let event = json!({"session_id": "s1", "event": "view", "occurred_at": "2026-04-21T15:00:00Z"});
    let reply = api
        .send(
            api.post("/records/events/append")
                .json(&json!({"record": event})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let bad = api
        .send(
            api.post("/records/profiles/upsert")
                .json(&json!({"record": {"email": "nope"}, "matchKey": "email"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["details"]["path"], "record.email");
    assert_eq!(
        api.control("records/profiles").await,
        json!([{"email": "s@x.io", "tier": "gold"}])
    );
}

/// A missing or wrong token is 401.
#[tokio::test]
async fn unauthorized_requests_are_401() {
    let api = Api::start().await;
    let url = |path: &str| format!("{}{path}", api.emu.api_url());
    // 401: no token, wrong token.
    let reply = api
        .send(
            api.http
                .post(url("/records/profiles/upsert-batch"))
                .body("{}"),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNAUTHORIZED, "CDP_ETL.AUTH.UNAUTHORIZED")
    );
    let reply = api
        .send(
            api.http
                .get(url("/metadata/objects/profiles"))
                .bearer_auth("wrong"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// The contract's 404s and 405.
#[tokio::test]
async fn unknown_objects_jobs_and_routes_are_404_and_a_wrong_method_405() {
    let api = Api::start().await;
    let url = |path: &str| format!("{}{path}", api.emu.api_url());
    // 404: unknown object, unknown job, unknown route.
    let reply = api
        .send(api.post("/records/nope/upsert-batch").body("{}"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "CDP_ETL.NOT_FOUND")
    );
    let reply = api
        .send(api.get("/records/profiles/jobs/rjob_missing"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = api.send(api.get("/metadata/objects/nope")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = api.send(api.get("/no/such/route")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "CDP_ETL.NOT_FOUND")
    );
    let reply = api
        .send(
            api.http
                .delete(url("/records/profiles/upsert-batch"))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.body["success"], false);
}

/// Shape problems are 400 REQUEST_INVALID; the largest batch is not one.
#[tokio::test]
async fn malformed_requests_are_400_and_a_batch_of_10000_is_accepted() {
    let api = Api::start().await;
    // 400: bad JSON, truncated JSON, wrong types, no records, 0 and 10,001 records, no matchKey.
    for body in [
        "not json".to_owned(),
        r#"{"records":[{"email":"a@x.io"}"#.to_owned(),
        "[1,2,3]".to_owned(),
        r#"{"records":"many","matchKey":"email"}"#.to_owned(),
        r#"{"records":[1,2],"matchKey":"email"}"#.to_owned(),
        r#"{"matchKey":"email"}"#.to_owned(),
        r#"{"records":[],"matchKey":"email"}"#.to_owned(),
        r#"{"records":[{"email":"a@x.io"}]}"#.to_owned(),
        r#"{"records":[{"email":"a@x.io"}],"matchKey":7}"#.to_owned(),
        r#"{"records":[{"email":"a@x.io"}],"matchKey":"tier"}"#.to_owned(),
        json!({"records": vec![json!({"email": "a@x.io"}); 10_001], "matchKey": "email"})
            .to_string(),
    ] {
        let reply = api
            .send(
                api.post("/records/profiles/upsert-batch")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "body {}",
            &body[..body.len().min(60)]
        );
        assert_eq!(reply.code(), "CDP_ETL.VALIDATION.REQUEST_INVALID");
        assert_eq!(reply.body["success"], false);
    }
    // A batch of exactly 10,000 is fine.
    let reply = api
        .upsert(json!(vec![json!({"email": "a@x.io"}); 10_000]), None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_still_well(&api).await;
}

/// 413, whether the size is declared or streamed.
#[tokio::test]
async fn bodies_over_10_mb_are_413() {
    let api = Api::start().await;
    // 413: more than 10 MB, whether declared or streamed.
    let huge = format!(
        r#"{{"records":[{{"email":"{}@x.io"}}],"matchKey":"email"}}"#,
        "a".repeat(10_485_760)
    );
    let reply = api
        .send(api.post("/records/profiles/upsert-batch").body(huge))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "CDP_ETL.VALIDATION.REQUEST_INVALID"
        )
    );
    let chunks =
        futures::stream::iter((0..11).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024])));
    let reply = api
        .send(
            api.post("/records/profiles/upsert-batch")
                .body(reqwest::Body::wrap_stream(chunks)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_still_well(&api).await;
}

/// 422 names the first offender; a malformed key is 400; the emulator stays well.
#[tokio::test]
async fn fields_outside_the_schema_are_422_and_the_emulator_stays_well() {
    let api = Api::start().await;
    // 422 REQUEST_SCHEMA names the first offender; nothing is committed.
    let reply = api
        .upsert(
            json!([{"email": "a@x.io"}, {"email": "b@x.io", "favourite_color": "red"}]),
            None,
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "CDP_ETL.VALIDATION.REQUEST_SCHEMA"
        )
    );
    assert_eq!(
        reply.body["error"]["details"]["path"],
        "records[1].favourite_color"
    );
    // Malformed Idempotency-Key.
    let reply = api
        .upsert(json!([{"email": "a@x.io"}]), Some("not-a-uuid"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_still_well(&api).await;
}

/// After the abuse, the emulator still answers its metadata in full.
async fn assert_still_well(api: &Api) {
    let reply = api.send(api.get("/metadata/objects/profiles")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["matchKeys"], json!(["email"]));
    assert_eq!(
        reply.body["data"]["fields"][0],
        json!({"name": "email", "type": "email", "required": true})
    );
}

#[tokio::test]
async fn forbidden_token_reads_but_cannot_write() {
    let mut config = EmulatorConfig::for_tests(TOKEN);
    config.forbidden_token = Some("reader".into());
    let api = Api::with(config).await;
    let url = format!("{}/records/profiles/upsert-batch", api.emu.api_url());
    let reply = api
        .send(api.http.post(url).bearer_auth("reader").body("{}"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "CDP_ETL.AUTH.FORBIDDEN")
    );
    let url = format!("{}/metadata/objects/profiles", api.emu.api_url());
    let reply = api.send(api.http.get(url).bearer_auth("reader")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn idempotency_replays_rejects_reuse_and_reports_in_progress() {
    let api = Api::start().await;
    let k = key();
    let records = json!([{"email": "i@x.io"}]);
    let first = api.upsert(records.clone(), Some(&k)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = api.upsert(records.clone(), Some(&k)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["data"]["jobId"], first.body["data"]["jobId"]);
    let reused = api.upsert(json!([{"email": "other@x.io"}]), Some(&k)).await;
    assert_eq!(
        (reused.status, reused.code()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "CDP_ETL.IDEMPOTENCY.KEY_REUSED"
        )
    );
    // Errors are not stored: a 422 under a fresh key can later succeed with a good body.
    let k2 = key();
    let bad = api
        .upsert(json!([{"email": "a@x.io", "zzz": 1}]), Some(&k2))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_again = api
        .upsert(json!([{"email": "a@x.io", "zzz": 1}]), Some(&k2))
        .await;
    assert_eq!(bad_again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_again.code(), "CDP_ETL.VALIDATION.REQUEST_SCHEMA");
    // 409 while the first request with a key is still running.
    api.faults(json!({"latency_ms": 600})).await;
    let k3 = key();
    let (slow, racing) = tokio::join!(api.upsert(records.clone(), Some(&k3)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api.upsert(records.clone(), Some(&k3)).await
    });
    assert_eq!(slow.status, StatusCode::ACCEPTED);
    assert_eq!(
        (racing.status, racing.code()),
        (StatusCode::CONFLICT, "CDP_ETL.IDEMPOTENCY.IN_PROGRESS")
    );
    let stats = api.control("stats").await;
    assert_eq!(stats["replays"], 1);
    assert_eq!(api.control("jobs").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn scripted_statuses_and_retry_after() {
    let api = Api::start().await;
    api.faults(json!({"next": [{"status": 503, "count": 2}, {"status": 429}, {"status": 502}], "retry_after_s": 3})).await;
    let records = json!([{"email": "f@x.io"}]);
    let r1 = api.upsert(records.clone(), None).await;
    assert_eq!(
        (r1.status, r1.code()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "CDP_ETL.INTERNAL.UNAVAILABLE"
        )
    );
    let r2 = api.upsert(records.clone(), None).await;
    assert_eq!(r2.status, StatusCode::SERVICE_UNAVAILABLE);
    let r3 = api.upsert(records.clone(), None).await;
    assert_eq!(
        (r3.status, r3.code()),
        (StatusCode::TOO_MANY_REQUESTS, "CDP_ETL.RATE.LIMITED")
    );
    assert_eq!(r3.headers["retry-after"], "3");
    let r4 = api.upsert(records.clone(), None).await;
    assert_eq!(r4.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r4.body, Value::Null, "gateway errors come without a body");
    let r5 = api.upsert(records.clone(), None).await;
    assert_eq!(r5.status, StatusCode::ACCEPTED);
    // Faults stay off job reads unless asked for.
    api.faults(json!({"next": [{"status": 500, "count": 5}]}))
        .await;
    let reply = api
        .send(api.get(r5.body["data"]["statusPath"].as_str().unwrap()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    api.faults(json!({"next": [{"status": 504}], "apply_to": ["jobs"]}))
        .await;
    let reply = api
        .send(api.get(r5.body["data"]["statusPath"].as_str().unwrap()))
        .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn probabilistic_statuses_are_seeded_and_repeatable() {
    async fn run() -> Vec<u16> {
        let mut config = EmulatorConfig::for_tests(TOKEN);
        config.faults = vec![(500, 0.3), (503, 0.3)];
        config.seed = 42;
        let api = Api::with(config).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(
                api.upsert(json!([{"email": "p@x.io"}]), None)
                    .await
                    .status
                    .as_u16(),
            );
        }
        statuses
    }
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.contains(&500) && first.contains(&503) && first.contains(&202));
}

#[tokio::test]
async fn commit_then_500_commits_and_the_retry_replays() {
    let api = Api::start().await;
    api.faults(json!({"commit_then_500": 1.0})).await;
    let k = key();
    let records = json!([{"email": "c@x.io"}]);
    let first = api.upsert(records.clone(), Some(&k)).await;
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    api.faults(json!({"commit_then_500": 0.0})).await;
    let retry = api.upsert(records, Some(&k)).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    api.wait_job(retry.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(api.control("jobs").await.as_array().unwrap().len(), 1);
    assert_eq!(
        api.control("records/profiles").await,
        json!([{"email": "c@x.io"}])
    );
}

#[tokio::test]
async fn job_fail_commits_nothing() {
    let mut config = EmulatorConfig::for_tests(TOKEN);
    config.job_fail = 1.0;
    let api = Api::with(config).await;
    let reply = api.upsert(json!([{"email": "j@x.io"}]), None).await;
    let job = api
        .wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(api.control("records/profiles").await, json!([]));
    assert_eq!(api.control("stats").await["jobs_failed"], 1);
}

#[tokio::test]
async fn errors_limit_leaves_rows_unidentified() {
    let api = Api::start().await;
    api.faults(json!({"errors_limit": 1})).await;
    let reply = api
        .upsert(
            json!([{"email": "bad1"}, {"email": "bad2"}, {"email": "ok@x.io"}]),
            None,
        )
        .await;
    let job = api
        .wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(job["metrics"]["invalidRows"], 2);
    assert_eq!(job["errors"].as_array().unwrap().len(), 1);
    api.faults(json!({"errors_limit": 0})).await;
    let reply = api.upsert(json!([{"email": "bad3"}]), None).await;
    let job = api
        .wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(job["metrics"]["invalidRows"], 1);
    assert!(job.get("errors").is_none());
}

#[tokio::test]
async fn rate_limit_per_class_answers_429_with_retry_after() {
    let api = Api::start().await;
    api.faults(json!({"rate_limit_per_s": 2.0})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = api.upsert(json!([{"email": "r@x.io"}]), None).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.headers["retry-after"], "1");
            assert_eq!(reply.code(), "CDP_ETL.RATE.LIMITED");
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 429, 429]);
    // Single writes are a different class with their own bucket; job reads are not limited.
    let reply = api
        .send(
            api.post("/records/profiles/upsert")
                .json(&json!({"record": {"email": "s@x.io"}, "matchKey": "email"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        api.upsert(json!([{"email": "r@x.io"}]), None).await.status,
        StatusCode::ACCEPTED
    );
    assert!(api.control("stats").await["rate_limited"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn cli_rate_limit_per_minute() {
    let mut config = EmulatorConfig::for_tests(TOKEN);
    config.rate_limit = records_contract::quota::parse_quota("60/min").unwrap();
    let api = Api::with(config).await;
    assert_eq!(
        api.upsert(json!([{"email": "r@x.io"}]), None).await.status,
        StatusCode::ACCEPTED
    );
    let limited = api.upsert(json!([{"email": "r@x.io"}]), None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
}

#[tokio::test]
async fn latency_reset_and_hang() {
    let api = Api::start().await;
    api.faults(json!({"latency_ms": 300})).await;
    let started = Instant::now();
    assert_eq!(
        api.upsert(json!([{"email": "l@x.io"}]), None).await.status,
        StatusCode::ACCEPTED
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    api.faults(json!({"latency_ms": 0, "next": [{"fault": "reset"}]}))
        .await;
    let reset = api
        .post("/records/profiles/upsert-batch")
        .json(&json!({"records": [{"email": "l@x.io"}], "matchKey": "email"}))
        .send()
        .await;
    assert!(reset.is_err(), "connection reset: {reset:?}");
    api.faults(json!({"next": [{"fault": "hang"}], "hang_ms": 5000}))
        .await;
    let hung = api
        .post("/records/profiles/upsert-batch")
        .timeout(Duration::from_millis(300))
        .json(&json!({"records": [{"email": "l@x.io"}], "matchKey": "email"}))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    // Only the first batch was committed.
    assert_eq!(api.control("stats").await["batches"], 1);
}

#[tokio::test]
async fn control_endpoints_reset_and_reject_bad_settings() {
    let api = Api::start().await;
    let reply = api.upsert(json!([{"email": "z@x.io"}]), Some(&key())).await;
    api.wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    let bad = api
        .http
        .post(format!("{}/__emu/faults", api.emu.base_url()))
        .body(r#"{"statuses":{"503":7}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = api
        .http
        .post(format!("{}/__emu/faults", api.emu.base_url()))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    api.faults(json!({"statuses": {"503": 1.0}})).await;
    let reset = api
        .http
        .post(format!("{}/__emu/reset", api.emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.control("records/profiles").await, json!([]));
    assert_eq!(api.control("jobs").await, json!([]));
    assert_eq!(api.control("stats").await["batches"], 0);
    assert_eq!(
        api.upsert(json!([{"email": "z@x.io"}]), None).await.status,
        StatusCode::ACCEPTED
    );
    let stats = api.control("stats").await;
    assert_eq!(
        stats["requests"]["POST /public/v1/records/{object}/upsert-batch"]["202"],
        1
    );
    let unknown = api
        .http
        .get(format!("{}/__emu/records/nope", api.emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn schemas_load_from_a_file() {
    let dir = std::env::temp_dir().join(format!("emu-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("schemas.json");
    std::fs::write(
        &file,
        r#"[{"name":"widgets","matchKeys":["sku"],"fields":[{"name":"sku","type":"string","required":true},{"name":"in_stock","type":"boolean"}]}]"#,
    )
    .unwrap();
    let mut config = EmulatorConfig::for_tests(TOKEN);
    config.schemas = Some(file);
    let api = Api::with(config).await;
    let reply = api
        .send(api.post("/records/widgets/upsert-batch").json(&json!({"records": [{"sku": "w1", "in_stock": "yes"}, {"sku": "w2", "in_stock": true}], "matchKey": "sku"})))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let job = api
        .wait_job(reply.body["data"]["statusPath"].as_str().unwrap())
        .await;
    assert_eq!(job["metrics"]["invalidRows"], 1);
    assert_eq!(
        api.send(api.get("/metadata/objects/profiles")).await.status,
        StatusCode::NOT_FOUND
    );
}
