//! A Tansu broker of a test's own, for tests that stop it or change how it
//! is started (authentication), unlike the shared one `scripts/test.sh` runs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::mall::SETTLE_DEADLINE;
use crate::wait_for;

/// A Tansu that is killed (`kill -9`) when dropped.
pub struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts Tansu on `port` with its sqlite storage in `dir` (so a restart
/// keeps what it had), demanding SASL when `authentication`; returns once it
/// listens.
pub async fn start_tansu(dir: &Path, port: u16, authentication: bool) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new("tansu");
    command
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if authentication {
        command.arg("--authentication");
    }
    let broker = Broker(
        command
            .spawn()
            .expect("tansu on PATH (scripts/test.sh installs it)"),
    );
    wait_for("the broker to listen", SETTLE_DEADLINE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    broker
}
