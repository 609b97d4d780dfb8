//! Ports on the loopback interface.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where [`free_port`] looks: below Linux's ephemeral range (32768–60999
/// by default), so no outgoing connection takes the port between the moment
/// it is handed out and a process (re)binding it, as a restarted replica
/// once met ("Address already in use") while dozens of Kafka connections
/// came and went.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Every port [`free_port`] handed out in this process, with the lock file
/// that claims it for as long as this process lives. A port is free only
/// until someone binds it, and a Kafka node or a restarted replica binds
/// its port seconds after it was handed out, so no two callers may ever get
/// the same one: not in this process (a fault run once gave a service's
/// gRPC port to a relay's metrics as well), and not in another test process
/// running beside it (two tests' Kafka clusters once got the same
/// controller port, and one cluster's controller spoke to the other's).
static HANDED_OUT: LazyLock<Mutex<HashMap<u16, File>>> = LazyLock::new(Default::default);

/// The directory of the claims every process on this machine shares.
fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("mall-ports")
}

/// Claims `port` for this process: an exclusive lock on its file in
/// [`claims_dir`], which the kernel releases when the process ends however
/// it ends. `None` when another process holds it.
///
/// The directory is open to every user (like `/tmp` itself), and a claim
/// file another user made is locked through a read-only handle, so tests run
/// as root and as a user share one set of claims.
fn claim(port: u16) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = claims_dir();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    let path = dir.join(port.to_string());
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => File::open(&path)?,
        opened => opened?,
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now (bound and
/// released), outside the ephemeral range, and never handed out before by
/// this process or by another one still running.
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng;
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let port = rng.random_range(PORTS);
        if handed.contains_key(&port) {
            continue;
        }
        let Some(claimed) = claim(port)? else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port, claimed);
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

    #[test]
    fn a_port_claimed_elsewhere_is_not_claimed_again_until_released() {
        // Each claim is a lock on a file opened afresh, exactly what another
        // process holds. A port below the range free_port hands out, so the
        // test beside it in this process never claims it.
        let port = PORTS.start - 1;
        let held = claim(port).expect("claiming").expect("nobody holds it yet");
        assert!(claim(port).expect("claiming").is_none(), "held elsewhere");
        drop(held);
        assert!(claim(port).expect("claiming").is_some(), "released");
    }
}
