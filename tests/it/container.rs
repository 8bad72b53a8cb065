//! The image as ECS runs it: built from the repo's Dockerfile by `scripts/image.sh` (the README's
//! test command builds it first), run by podman with `--network host` as the user the image
//! names and on a read-only root file system (`deploy/ecs/task-definition.json`), and as PID 1,
//! with no init in front of it. It commits, its own `HEALTHCHECK` passes, and `podman stop`
//! drains it: the batch it holds is committed and it exits 0 before podman's SIGKILL.
//! A missing podman or image fails the test with the fix; it is never skipped.

use std::process::Output;

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::rig::{Rig, TOKEN, profile, wait_for};

/// The image under test: `SBW_TEST_IMAGE`, or the tag `scripts/image.sh` builds by default.
fn image() -> String {
    std::env::var("SBW_TEST_IMAGE").unwrap_or_else(|_| "localhost/sqs-batch-worker:dev".to_owned())
}

/// The drain budget the container gets, and the margin podman waits beyond it before SIGKILL
/// (the task definition's stopTimeout is likewise longer than its DRAIN_TIMEOUT).
const DRAIN_S: u64 = 20;
const STOP_MARGIN_S: u64 = 5;

async fn podman(args: &[&str]) -> Output {
    let conf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/podman/containers.conf"
    );
    let run = tokio::process::Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("podman {args:?} ends within 120 s"))
        .unwrap_or_else(|e| {
            panic!(
                "podman cannot be run ({e}). Fix: scripts/install-podman.sh, then scripts/image.sh \
                 (the README's test command does both)"
            )
        })
}

/// `podman image inspect` of the image under test; a missing image fails with the fix.
async fn inspected(image: &str) -> Value {
    let output = podman(&["image", "inspect", image]).await;
    assert!(
        output.status.success(),
        "no image {image}. Fix: scripts/image.sh (the README's test command runs it first). CI={}: {}",
        std::env::var("CI").unwrap_or_default(),
        text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("podman prints JSON")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Removes the container whatever the test's end.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let conf = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/podman/containers.conf"
        );
        let _ = std::process::Command::new("podman")
            .env("CONTAINERS_CONF", conf)
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

impl Container {
    async fn inspect(&self, format: &str) -> String {
        let output = podman(&["inspect", "--format", format, &self.0]).await;
        assert!(output.status.success(), "podman inspect: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    async fn logs(&self) -> String {
        text(&podman(&["logs", &self.0]).await)
    }
}

/// The value of `field` (`Uid:`) in /proc/PID/status: its first column.
fn proc_status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// The process's PID in its innermost PID namespace: the last column of NSpid.
fn innermost_pid(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|rest| rest.split_whitespace().last())
        .unwrap_or_default()
        .to_owned()
}

/// The mount options of the process's root file system, from /proc/PID/mountinfo.
fn root_mount_options(pid: &str) -> String {
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("/proc mountinfo");
    mountinfo
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(4) == Some(&"/"))
        .and_then(|fields| fields.get(5).map(|options| (*options).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_commits_passes_its_healthcheck_and_drains_on_podman_stop() {
    let image = image();
    inspected(&image).await;
    // The image listens on 9090 (WORKER_LISTEN) and its HEALTHCHECK asks 127.0.0.1:9090; with
    // the host's network, that port must be free (Debian's prometheus package, where an init
    // system starts it, also listens there).
    assert!(
        std::net::TcpListener::bind("0.0.0.0:9090").is_ok(),
        "port 9090 is taken on this host, and the container shares the host's network. Fix: stop \
         what listens there (e.g. `systemctl stop prometheus`, or a container left by a killed \
         run: `podman rm -f $(podman ps -aq --filter label=sbw-test)`)"
    );
    let rig = Rig::new().await;
    let name = common::unique("sbw-container");
    // Removes the container whatever the test's end, also when `podman run` fails half-way.
    let container = Container(name.clone());
    let api_url = rig.emulator.api_url();
    let env = [
        format!("SQS_QUEUE_URL={}", rig.queue_url),
        format!("SQS_DLQ_URL={}", rig.dlq_url),
        format!("RECORDS_API_URL={api_url}"),
        format!("RECORDS_API_TOKEN={TOKEN}"),
        "RECORDS_OBJECT=profiles".to_owned(),
        "BATCH_MAX_RECORDS=10".to_owned(),
        // Batches leave when full; the one the drain must flush is the partial one at the end.
        "BATCH_MAX_WAIT=10m".to_owned(),
        "SQS_RECEIVE_WAIT=1s".to_owned(),
        format!("DRAIN_TIMEOUT={DRAIN_S}s"),
        format!("AWS_ENDPOINT_URL={}", common::localstack_url()),
        "AWS_REGION=us-east-1".to_owned(),
        "AWS_ACCESS_KEY_ID=test".to_owned(),
        "AWS_SECRET_ACCESS_KEY=test".to_owned(),
    ];
    let mut args = vec![
        "run",
        "--detach",
        "--name",
        &name,
        "--label",
        "sbw-test=container",
        "--network",
        "host",
        "--read-only",
        // ECS's readonlyRootFilesystem mounts no tmpfs; podman's --read-only adds some unless told.
        "--read-only-tmpfs=false",
        // A timer for the periodic check needs systemd; the test runs the check itself.
        "--health-interval",
        "disable",
    ];
    for pair in &env {
        args.extend(["--env", pair.as_str()]);
    }
    args.push(&image);
    let started = podman(&args).await;
    assert!(started.status.success(), "podman run: {}", text(&started));

    let first: Vec<String> = (0..30).map(profile).collect();
    rig.send(&first).await;
    wait_for(
        "30 rows from three full batches",
        Duration::from_secs(90),
        || async { rig.rows("profiles").await.len() == 30 },
    )
    .await;

    let health = podman(&["healthcheck", "run", &name]).await;
    assert!(
        health.status.success(),
        "the image's HEALTHCHECK: {}\n{}",
        text(&health),
        container.logs().await
    );
    let test = container.inspect("{{.Config.Healthcheck.Test}}").await;
    assert!(
        test.contains("healthcheck") && test.contains("127.0.0.1:9090"),
        "the container runs the image's own check: {test}"
    );

    let pid = container.inspect("{{.State.Pid}}").await;
    assert_eq!(
        proc_status_field(&pid, "Uid:"),
        "10001",
        "the worker runs as the image's non-root user"
    );
    let options = root_mount_options(&pid);
    assert!(
        options.split(',').any(|option| option == "ro"),
        "the root file system is read-only: {options}"
    );
    assert_eq!(
        innermost_pid(&pid),
        "1",
        "the worker is the container's PID 1, with no init in front of it"
    );

    let held: Vec<String> = (30..37).map(profile).collect();
    rig.send(&held).await;
    wait_for(
        "the 7 held messages in flight",
        Duration::from_secs(30),
        || async { rig.depth(&rig.queue_url).await == (0, 7) },
    )
    .await;
    let stop_began = Instant::now();
    let stop_after = (DRAIN_S + STOP_MARGIN_S).to_string();
    let stopped = podman(&["stop", "--time", &stop_after, &name]).await;
    let stop_took = stop_began.elapsed();
    assert!(stopped.status.success(), "podman stop: {}", text(&stopped));
    let logs = container.logs().await;
    assert_eq!(
        container.inspect("{{.State.ExitCode}}").await,
        "0",
        "the worker drains and exits 0 before podman's SIGKILL ({stop_took:?}): {logs}"
    );
    assert_eq!(
        rig.rows("profiles").await.len(),
        37,
        "the drain commits the held batch"
    );
    assert!(
        rig.source_empty().await,
        "the drain deletes what it committed"
    );
    assert!(
        !logs.contains(TOKEN),
        "the token never reaches the container's logs"
    );
    eprintln!("container: podman stop drained in {stop_took:?}");
}

/// ECS does not read the image's HEALTHCHECK or USER: the task definition repeats them, and this
/// keeps the two equal (docs/operations.md, "Health check mapping").
#[tokio::test]
async fn the_task_definition_repeats_the_images_healthcheck_and_user() {
    let image = image();
    let inspected = inspected(&image).await;
    let config = &inspected[0];
    let task: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/ecs/task-definition.json"
        ))
        .expect("the task definition"),
    )
    .expect("the task definition is JSON");
    let container = &task["containerDefinitions"][0];
    let check = &config["Healthcheck"];
    assert!(
        check.is_object(),
        "the image keeps its HEALTHCHECK (built with --format docker)"
    );
    let seconds = |field: &str| json!(check[field].as_u64().unwrap_or_default() / 1_000_000_000);
    assert_eq!(
        container["healthCheck"],
        json!({
            "command": check["Test"],
            "interval": seconds("Interval"),
            "timeout": seconds("Timeout"),
            "retries": check["Retries"],
            "startPeriod": seconds("StartPeriod"),
        }),
        "the task definition's healthCheck (left) repeats the image's HEALTHCHECK (right)"
    );
    assert_eq!(
        container["user"], config["Config"]["User"],
        "the same non-root user"
    );
}
