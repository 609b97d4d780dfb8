//! Ports on the loopback interface.

use std::time::{Duration, Instant};

/// Where [`free_port`] looks: below Linux's ephemeral range (32768–60999
/// by default), so no outgoing connection takes the port between the moment
/// it is handed out and a process (re)binding it, as a restarted replica
/// once met ("Address already in use") while dozens of Kafka connections
/// came and went.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Every port [`free_port`] handed out in this process: a port is free
/// only until someone binds it, and a replica restarted later binds its
/// port again, so no two callers may ever get the same one (a fault run
/// once gave a service's gRPC port to a relay's metrics as well).
static HANDED_OUT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
    std::sync::LazyLock::new(Default::default);

/// A TCP port on 127.0.0.1 that nobody listens on right now (bound and
/// released), outside the ephemeral range, and never handed out before by
/// this process.
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng;
    let mut handed = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let port = rng.random_range(PORTS);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {PORTS:?}"),
    ))
}

/// Waits until something accepts connections on `127.0.0.1:port`; false if
/// nothing did within `patience`.
///
/// A connection to itself does not count: when the probe's own ephemeral
/// port happens to be `port`, Linux completes a TCP "simultaneous open" with
/// nobody listening, which once let a run start before a replica was up.
pub async fn wait_for_port(port: u16, patience: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
            if !to_itself {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().expect("a port")).collect();
        assert!(ports.iter().all(|p| PORTS.contains(p)));
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len());
    }
}
