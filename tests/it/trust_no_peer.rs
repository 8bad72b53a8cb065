//! Issue 20, trust no peer: the token goes only to the API's origin, every answer has a ceiling,
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
    let worker = rig.start(&[("--job-timeout", "20s")]).await;
    wait_for(
        "20 rows, or the token at the other origin",
        Duration::from_secs(60),
        || async { rows(&rig).await == 20 || spy.saw_the_token() },
    )
    .await;
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

    // A redirect to another origin: reqwest follows it without the header.
    rig.faults(json!({"hostile": {"redirect_to": spy.origin, "redirect_next": 3}}))
        .await;
    rig.send(&(20..40).map(profile).collect::<Vec<_>>()).await;
    wait_for(
        "40 rows, or the token at the other origin",
        Duration::from_secs(60),
        || async { rows(&rig).await == 40 || spy.saw_the_token() },
    )
    .await;
    assert!(!spy.heads().is_empty(), "the redirects were followed");
    assert!(
        !spy.saw_the_token(),
        "a redirect carried the token: {:?}",
        spy.heads()
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
    let mut child = rig.spawn_binary(&[("--request-timeout", "60s")], &log);
    wait_for("50 rows", Duration::from_secs(180), || async {
        rows(&rig).await == 50
    })
    .await;
    let peak = peak_rss_mib(child.id().expect("running"));
    common::signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().await.expect("wait").code(), Some(0));
    eprintln!("peak RSS with two 1 GiB job reports: {peak} MiB");
    assert!(peak < 100, "peak RSS {peak} MiB");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("size ceiling"), "{text}");
    wait_for("the queue to empty", Duration::from_secs(30), || {
        rig.source_empty()
    })
    .await;
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
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&listen)).await
        {
            idle.push(stream);
        }
    }
    eprintln!("{} idle connections open", idle.len());
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
