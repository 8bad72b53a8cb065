//! systemd's notify protocol (`Type=notify`): READY=1 once the worker has reached SQS and the API,
//! STOPPING=1 when the drain begins, WATCHDOG=1 while the poll loops keep turning. Messages go to
//! the datagram socket named by `$NOTIFY_SOCKET`; without it (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when systemd asked this process for watchdog pings.
    watchdog_every: Option<Duration>,
    last_poll: Mutex<Instant>,
}

fn address(path: &str) -> Option<std::os::unix::net::SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path).ok(),
    }
}

fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let meant_for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    (meant_for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}

impl Notifier {
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .and_then(|path| Some((UnixDatagram::unbound().ok()?, address(&path)?)));
        Self {
            watchdog_every: socket.as_ref().and(watchdog_from_env()),
            socket,
            last_poll: Mutex::new(Instant::now()),
        }
    }

    pub fn disabled() -> Self {
        Self {
            socket: None,
            watchdog_every: None,
            last_poll: Mutex::new(Instant::now()),
        }
    }

    fn send(&self, state: &str) {
        if let Some((socket, address)) = &self.socket
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            tracing::warn!(%error, state, "cannot notify systemd");
        }
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=receiving and submitting");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// A poll loop turned (a receive returned, or it is waiting on backpressure).
    pub fn poll_alive(&self) {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// Pings the watchdog if a poll loop turned within the watchdog's window; a stuck loop stops
    /// the pings, and systemd restarts the worker.
    pub fn watchdog_tick(&self) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        let last = *self.last_poll.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < every * 2 {
            self.send("WATCHDOG=1");
        } else {
            tracing::error!(
                stalled_s = last.elapsed().as_secs(),
                "no poll loop has turned within the watchdog window; not pinging systemd"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("sbw-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixDatagram::bind(&dir).unwrap();
        let notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                address(dir.to_str().unwrap()).unwrap(),
            )),
            watchdog_every: Some(Duration::from_secs(10)),
            last_poll: Mutex::new(Instant::now()),
        };
        notifier.ready();
        notifier.watchdog_tick();
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        assert!(
            std::str::from_utf8(&buffer[..n])
                .unwrap()
                .starts_with("READY=1")
        );
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        let notifier = Notifier::disabled();
        notifier.ready();
        notifier.watchdog_tick();
        assert_eq!(notifier.watchdog_every(), None);
    }
}
