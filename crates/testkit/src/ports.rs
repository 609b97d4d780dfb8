//! Ports on the loopback interface.

use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that nobody listens on right now (bound, read
/// back and released).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
