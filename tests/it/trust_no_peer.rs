//! Trust no peer: the token goes only to the API's origin, every answer has a ceiling,
//! every socket of the metrics server has a deadline, no output channel echoes the token, and a
//! shared `--state-dir` is refused. Each test drives the real worker against LocalStack and a
//! hostile `records-emulator` (`hostile` in `POST /__emu/faults`, docs/emulator.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common;
use crate::common::rig::{Rig, TOKEN, profile, wait_for};

/// A listener on another loopback port that records the head of every request it gets and
/// answers 404: the "other host" an answer or a redirect may point at.
struct Spy {
    origin: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Spy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the spy");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                });
            }
        });
        Self { origin, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn saw_the_token(&self) -> bool {
        self.heads()
            .iter()
            .any(|head| head.to_ascii_lowercase().contains("authorization") || head.contains(TOKEN))
    }
}

/// Waits until the queue is empty (acked on completion: every job read to its end), or until the
/// spy has seen the token.
async fn jobs_read_or_token_seen(rig: &Rig, spy: &Spy) {
    wait_for(
        "the jobs read to their end, or the token at the other origin",
        Duration::from_secs(60),
        || async { rig.source_empty().await || spy.saw_the_token() },
    )
    .await;
}

async fn rows(rig: &Rig) -> usize {
    rig.rows("profiles").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_leaves_the_api_origin() {
    let rig = Rig::new().await;
    let spy = Spy::start().await;
    rig.faults(json!({"hostile": {"status_path_origin": spy.origin}}))
        .await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    // Acked on completion: the queue empties only once the worker has read each job's end.
    let worker = rig
        .start(&[("--job-timeout", "20s"), ("--ack-on", "completed")])
        .await;
    jobs_read_or_token_seen(&rig, &spy).await;
    assert!(
        !spy.saw_the_token(),
        "a statusPath on another origin got the token: {:?}",
        spy.heads()
    );
    let (_, metrics) = worker.get("/metrics").await;
    assert!(
        metrics.contains("sbw_api_foreign_status_paths_total"),
        "{metrics}"
    );

    // A redirect to another origin is not followed at all (reqwest alone would follow it
    // without the header, but with a 307's records, and believe the answer).
    rig.faults(json!({"hostile": {"redirect_to": spy.origin, "redirect_next": 3}}))
        .await;
    rig.send(&(20..40).map(profile).collect::<Vec<_>>()).await;
    jobs_read_or_token_seen(&rig, &spy).await;
    assert!(
        spy.heads().is_empty(),
        "a redirect to another origin was followed: {:?}",
        spy.heads()
    );
    let faults: serde_json::Value =
        reqwest::get(format!("{}/__emu/faults", rig.emulator.base_url()))
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("JSON");
    assert_eq!(
        faults["hostile"]["redirect_next"], 0,
        "the 3 redirects were answered"
    );
    rig.finish(worker, Duration::from_secs(60)).await;
    assert_eq!(rows(&rig).await, 40);
}

/// Peak resident memory (`VmHWM`) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_job_report_leaves_the_worker_under_100_mb() {
    let rig = Rig::new().await;
    rig.faults(json!({"hostile": {"big_mib": 1024, "big_next": 2}}))
        .await;
    rig.send(&(0..50).map(profile).collect::<Vec<_>>()).await;
    let log = common::log_path("big-report");
    // Acked on completion: the queue empties only once the reports were read (or refused).
    let mut child = rig.spawn_binary(
        &[("--request-timeout", "60s"), ("--ack-on", "completed")],
        &log,
    );
    wait_for("the queue to empty", Duration::from_secs(180), || {
        rig.source_empty()
    })
    .await;
    assert_eq!(rows(&rig).await, 50);
    let peak = peak_rss_mib(child.id().expect("running"));
    common::signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().await.expect("wait").code(), Some(0));
    eprintln!("peak RSS with two 1 GiB job reports: {peak} MiB");
    assert!(peak < 100, "peak RSS {peak} MiB");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("size ceiling"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_answer_does_not_wedge_the_worker() {
    let rig = Rig::new().await;
    rig.faults(json!({"hostile": {"drip_next": 3, "drip_ms": 1000}}))
        .await;
    rig.send(&(0..30).map(profile).collect::<Vec<_>>()).await;
    let worker = rig.start(&[("--request-timeout", "2s")]).await;
    rig.finish(worker, Duration::from_secs(90)).await;
    assert_eq!(rows(&rig).await, 30);
    assert!(rig.dlq().await.is_empty());
}

/// The review of issue 20: an answer over its ceiling lost its status, so a 401 stopped pausing
/// and a 413 stopped splitting; they were retried as transient failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_refusal_keeps_its_meaning() {
    let rig = Rig::new().await;
    rig.faults(json!({
        "hostile": {"pad_errors_mib": 2},
        "next": [{"status": 401, "count": 1}, {"status": 413, "count": 1}]
    }))
    .await;
    rig.send(&(0..40).map(profile).collect::<Vec<_>>()).await;
    let worker = rig.start(&[("--auth-retry", "1s")]).await;
    wait_for("the queue to empty", Duration::from_secs(60), || {
        rig.source_empty()
    })
    .await;
    let (_, metrics) = worker.get("/metrics").await;
    worker.stop().await;
    assert_eq!(rows(&rig).await, 40);
    assert!(rig.dlq().await.is_empty());
    for line in [
        r#"sbw_api_requests_total{route="batch",status="401"} 1"#,
        r#"sbw_api_requests_total{route="batch",status="413"} 1"#,
        r#"sbw_api_answer_too_large_total{route="batch"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn wait_healthy(listen: &str) {
    wait_for("/healthz", Duration::from_secs(30), || async {
        reqwest::get(format!("http://{listen}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_metrics_request_does_not_stretch_the_drain() {
    let rig = Rig::new().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let log = common::log_path("half-sent");
    let mut child = rig.spawn_binary(&[("--listen", &listen), ("--drain-timeout", "3s")], &log);
    wait_healthy(&listen).await;
    let mut with_body = TcpStream::connect(&listen).await.expect("connect");
    with_body
        .write_all(b"POST /metrics HTTP/1.1\r\nHost: worker\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .expect("a head that announces 1 MiB");
    let mut answer = [0u8; 12];
    with_body.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(
        &answer, b"HTTP/1.1 413",
        "a request with a body is refused unread"
    );
    let mut half = TcpStream::connect(&listen).await.expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n")
        .await
        .expect("half a request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    common::signal(&child, libc::SIGTERM);
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let took = asked.elapsed();
    assert!(
        exited.is_ok(),
        "still running {took:?} after SIGTERM with --drain-timeout 3s"
    );
    eprintln!("exit after SIGTERM with a half-sent request open: {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(half);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_metrics_connections_do_not_stop_commits() {
    let rig = Rig::new().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(common::log_path("idle-connections")).expect("log");
    let mut child = common::worker_binary_with_fd_limit(1024)
        .arg("run")
        .args(rig.args(&[("--listen", &listen)]))
        .stderr(log)
        .spawn()
        .expect("the worker starts");
    wait_healthy(&listen).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        // A full accept queue stops the handshakes: stop trying at the first that hangs.
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&listen)).await {
            Ok(Ok(stream)) => idle.push(stream),
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    eprintln!("{} idle connections open", idle.len());
    // One address holds at most 32 of them, each for at most the 5 s head timeout.
    wait_healthy(&listen).await;
    // Cut the worker's pooled API connections: it must open new ones while the flood is held.
    rig.faults(json!({"next": [{"fault": "reset", "count": 2}]}))
        .await;
    rig.send(&(0..200).map(profile).collect::<Vec<_>>()).await;
    wait_for("200 rows", Duration::from_secs(90), || async {
        rows(&rig).await == 200
    })
    .await;
    wait_for("the queue to empty", Duration::from_secs(60), || {
        rig.source_empty()
    })
    .await;
    common::signal(&child, libc::SIGTERM);
    let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("wait")
        .code();
    assert_eq!(code, Some(0));
    drop(idle);
}

/// Runs the binary with `args` and the token in the environment; returns stdout and stderr.
async fn output_of(args: &[String]) -> (Option<i32>, String) {
    let mut command = common::worker_binary();
    command.args(args).env("RECORDS_API_TOKEN", TOKEN);
    common::output_text(command).await
}

/// `rig.args` without `--api-token`: the token comes from the environment.
fn args_without_token(rig: &Rig, extra: &[(&str, &str)]) -> Vec<String> {
    let mut args = rig.args(extra);
    let at = args
        .iter()
        .position(|a| a == "--api-token")
        .expect("the rig passes a token");
    args.drain(at..at + 2);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_appears_in_no_output_channel() {
    let rig = Rig::new().await;
    // A gateway that repeats the credential it was shown, in a 401 and in every job report.
    rig.faults(json!({
        "hostile": {"echo_credentials": true},
        "next": [{"status": 401, "count": 1}]
    }))
    .await;
    let mut bodies: Vec<String> = (0..20).map(profile).collect();
    bodies.extend((0..5).map(|i| format!(r#"{{"email":"bad{i}-without-at","tier":"x"}}"#)));
    rig.send(&bodies).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let stderr_path = common::log_path("echo-stderr");
    let stdout_path = common::log_path("echo-stdout");
    let mut child = common::worker_binary()
        .arg("run")
        .args(args_without_token(
            &rig,
            &[("--listen", &listen), ("--auth-retry", "1s")],
        ))
        .env("RECORDS_API_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(&stdout_path).expect("stdout"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr"))
        .spawn()
        .expect("the worker starts");
    let mut served = String::new();
    let mut rejected = Vec::new();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    // `rig.dlq()` takes what it reads off the queue.
    while !(rig.source_empty().await && rejected.len() == 5) {
        rejected.extend(rig.dlq().await);
        assert!(Instant::now() < deadline, "the queue did not empty");
        for path in ["/readyz", "/metrics", "/healthz"] {
            if let Ok(response) = http.get(format!("http://{listen}{path}")).send().await {
                served.push_str(&response.text().await.unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().await.expect("wait").code(), Some(0));
    let logs = std::fs::read_to_string(&stderr_path).expect("stderr")
        + &std::fs::read_to_string(&stdout_path).expect("stdout");
    let dlq: String = rejected
        .iter()
        .map(|entry| format!("{:?}\n", entry.attributes))
        .collect();
    let echoed = dlq.contains("[redacted]") && logs.contains("[redacted]");

    // A TOML file with the token and a syntax error on line 3.
    let config = std::env::temp_dir().join(format!("{}.toml", common::unique("echo")));
    std::fs::write(
        &config,
        format!("object = \"profiles\"\n\napi_token = \"{TOKEN}\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("write the config");
    let mut toml_args = args_without_token(&rig, &[]);
    toml_args.splice(0..0, ["run".to_owned(), "--config".to_owned()]);
    toml_args.insert(2, config.display().to_string());
    let (code, toml_error) = output_of(&toml_args).await;
    assert_eq!(code, Some(2), "{toml_error}");
    assert!(toml_error.contains("line 3"), "{toml_error}");

    let mut check_args = vec!["check".to_owned()];
    check_args.extend(args_without_token(&rig, &[]));
    let (_, check) = output_of(&check_args).await;
    let check_reports_security = check.contains("security:");
    let mut channels = vec![
        ("stdout and stderr of run", logs),
        ("/readyz, /metrics, /healthz", served),
        ("DLQ attributes", dlq),
        ("a TOML error", toml_error),
        ("check", check),
    ];
    for args in [&["run", "--help"][..], &["check", "--help"], &["man"]] {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        channels.push(("help and man", output_of(&args).await.1));
    }
    for (channel, text) in channels {
        assert!(
            !text.contains(TOKEN),
            "the token is in {channel}:\n{}",
            text.lines()
                .filter(|line| line.contains(TOKEN))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(check_reports_security, "check prints its security: line");
    assert!(
        echoed,
        "the emulator's echo reached both the logs and the DLQ attributes, redacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_outside_loopback_is_refused_without_consent() {
    let rig = Rig::new().await;
    let insecure = [("--api-url", "http://records.invalid:8080/public/v1")];
    let mut args = vec!["run".to_owned()];
    args.extend(rig.args(&insecure));
    let (code, text) = output_of(&args).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--api-url") && text.contains("--allow-insecure-http"),
        "{text}"
    );
    let mut args = vec!["check".to_owned()];
    args.extend(rig.args(&[
        insecure[0],
        ("--allow-insecure-http", "true"),
        ("--listen", "0.0.0.0:0"),
    ]));
    let (_, text) = output_of(&args).await;
    for warning in ["--allow-insecure-http", "--listen 0.0.0.0:0"] {
        assert!(
            text.contains(&format!("WARNING: security: {warning}")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_state_dir_is_refused_to_a_second_process() {
    let rig = Rig::new().await;
    let dir = std::env::temp_dir().join(common::unique("state-dir"));
    let dir_text = dir.display().to_string();
    let shared = [("--state-dir", dir_text.as_str()), ("--rate-limit", "20/s")];
    rig.send(&(0..60).map(profile).collect::<Vec<_>>()).await;
    let mut first = rig.spawn_binary(&shared, &common::log_path("state-first"));
    wait_for(
        "the first worker to commit",
        Duration::from_secs(60),
        || async { rows(&rig).await > 0 },
    )
    .await;
    let mut args = vec!["run".to_owned()];
    args.extend(rig.args(&shared));
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        common::worker_binary().args(&args).output(),
    )
    .await;
    let Ok(second) = second else {
        panic!("a second process on the same --state-dir was still running after 30 s")
    };
    let second = second.expect("runs");
    let text = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--state-dir") && text.contains("--budget-queue"),
        "{text}"
    );
    wait_for("60 rows", Duration::from_secs(60), || async {
        rows(&rig).await == 60
    })
    .await;
    common::signal(&first, libc::SIGTERM);
    assert_eq!(first.wait().await.expect("wait").code(), Some(0));
    let saved = std::fs::read(dir.join("budget.json")).expect("the saved budget");
    serde_json::from_slice::<serde_json::Value>(&saved).expect("whole JSON");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("the dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["budget.json", "budget.lock"]);
    let _ = std::fs::remove_dir_all(dir);
}
