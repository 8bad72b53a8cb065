//! The worker under `Type=notify`: READY=1 after the first receive and the metadata fetch,
//! WATCHDOG=1 pings while the poll loops turn, STOPPING=1 when the drain begins. The socket is a
//! real datagram socket standing in for systemd's.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::rig::Rig;

fn receive_until(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let done = message.contains(wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted} within {timeout:?}; saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_and_stopping_reach_systemd() {
    let rig = Rig::new().await;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}.notify", common::unique("sd")));
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let log = common::log_path("notify");
    let mut child = common::worker_binary()
        .arg("run")
        .args(rig.args(&[]))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("the worker starts");

    let socket = std::sync::Arc::new(socket);
    let s = socket.clone();
    let before_stop = tokio::task::spawn_blocking(move || {
        let mut seen = receive_until(&s, "READY=1", Duration::from_secs(30));
        seen.extend(receive_until(&s, "WATCHDOG=1", Duration::from_secs(5)));
        seen
    })
    .await
    .expect("the reader");
    assert!(before_stop.iter().any(|m| m.starts_with("READY=1")));

    common::signal(&child, libc::SIGTERM);
    let s = socket.clone();
    let after_stop = tokio::task::spawn_blocking(move || {
        receive_until(&s, "STOPPING=1", Duration::from_secs(10))
    })
    .await
    .expect("the reader");
    assert!(after_stop.iter().any(|m| m.starts_with("STOPPING=1")));
    let status = child.wait().await.expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&path);
}
