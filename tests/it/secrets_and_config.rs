//! Non-negotiables through the real binary: the API token never appears in logs, errors or
//! `--help`, and a configuration that cannot work exits 2 naming the setting and the fix.

use crate::common;

use std::time::Duration;

use crate::common::rig::{Rig, profile, wait_for};
use serde_json::json;

const SECRET: &str = "tok-5ecret-never-print-me";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_errors_or_help() {
    let rig = Rig::new().await;
    rig.send(&(0..20).map(profile).collect::<Vec<_>>()).await;
    rig.faults(json!({"next": [{"status": 401, "count": 1}]}))
        .await;
    // The emulator accepts only its own token; the worker gets it from the environment.
    let log = common::log_path("secret");
    let mut args = rig.args(&[("--auth-retry", "1s")]);
    let at = args
        .iter()
        .position(|a| a == "--api-token")
        .expect("rig passes a token");
    args.drain(at..at + 2);
    let mut child = common::worker_binary()
        .arg("run")
        .args(&args)
        .env("RECORDS_API_TOKEN", common::rig::TOKEN)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("the worker starts");
    wait_for("the queue to empty", Duration::from_secs(60), || {
        rig.source_empty()
    })
    .await;
    common::signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().await.expect("wait").code(), Some(0));
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(text.contains("401"), "the 401 was logged");
    assert!(
        !text.contains(common::rig::TOKEN),
        "the token is not in the debug log"
    );

    // A token the API refuses at start-up: the error says what to fix, not the token.
    let mut args = rig.args(&[]);
    let at = args
        .iter()
        .position(|a| a == "--api-token")
        .expect("token flag");
    args[at + 1] = SECRET.to_owned();
    let output = common::worker_binary()
        .arg("run")
        .args(&args)
        .output()
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("--api-token"), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    let help = common::worker_binary()
        .args(["run", "--help"])
        .env("RECORDS_API_TOKEN", SECRET)
        .output()
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--api-token"));
    assert!(!text.contains(SECRET), "--help hides the token's value");
}

/// Runs the binary with one setting overridden; it must exit 2. Returns what it printed.
async fn config_error(rig: &Rig, flag: &str, value: &str) -> String {
    let output = common::worker_binary()
        .arg("run")
        .args(rig.args(&[(flag, value)]))
        .output()
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_object_is_a_configuration_error_at_start_up() {
    let rig = Rig::new().await;
    let text = config_error(&rig, "--object", "unicorns").await;
    assert!(
        text.contains("--object") && text.contains("unicorns") && text.contains("Fix:"),
        "{text}"
    );
    let text = config_error(&rig, "--batch-max-bytes", "64MiB").await;
    assert!(
        text.contains("--batch-max-bytes") && text.contains("BATCH_MAX_BYTES"),
        "{text}"
    );
}
