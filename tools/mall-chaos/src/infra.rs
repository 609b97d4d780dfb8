//! The run's own PostgreSQL cluster, which faults restart (the Kafka
//! cluster comes from the testkit).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

/// A free TCP port on 127.0.0.1 (bound, read back and released).
pub fn free_port() -> anyhow::Result<u16> {
    mall_testkit::free_port().context("finding a free port")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, what: &str, patience: Duration) -> anyhow::Result<()> {
    if mall_testkit::wait_for_port(port, patience).await {
        return Ok(());
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within {patience:?}")
}

/// A client for `url`, its connection driven in the background.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A PostgreSQL 15 cluster with trust auth for the user `mall`.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    user: Option<String>,
    /// The port it listens on.
    pub port: u16,
    /// Held while a crash-restart runs: two restarts scheduled close
    /// together (one per round) would otherwise run `pg_ctl` over each
    /// other, and the second fail to start the server the first was
    /// starting (seen with seed 2712).
    restarting: tokio::sync::Mutex<()>,
}

impl Postgres {
    /// A cluster in `dir` (created if empty) run by `user` when given.
    pub fn new(bin: PathBuf, dir: PathBuf, user: Option<String>, port: u16) -> Self {
        Self {
            bin,
            dir,
            user,
            port,
            restarting: tokio::sync::Mutex::new(()),
        }
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://mall@127.0.0.1:{}/{database}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    async fn run(&self, what: &str, mut command: Command) -> anyhow::Result<()> {
        let output = command
            .output()
            .await
            .with_context(|| format!("running {what}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Creates the cluster if needed and starts it.
    pub async fn start(&self) -> anyhow::Result<()> {
        if !self.data().join("PG_VERSION").exists() {
            let mut initdb = self.command("initdb");
            initdb.arg("-D").arg(self.data()).args([
                "-U",
                "mall",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]);
            self.run("initdb", initdb).await?;
        }
        // fsync=off survives process crashes (the OS keeps the pages), which
        // is the fault injected here; synchronous_commit stays on, so an
        // acknowledged commit is never lost to an immediate shutdown.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "120", "-o", &options, "start"]);
        self.run("pg_ctl start", start).await
    }

    /// Stops the cluster the way a crash would (`-m immediate`: no
    /// checkpoint, clients cut off) and starts it again, which recovers
    /// from the WAL.
    pub async fn crash_restart(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.restarting.lock().await;
        let mut restart = self.command("pg_ctl");
        restart
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-m", "immediate", "-w", "-t", "120", "restart"]);
        self.run("pg_ctl restart", restart).await
    }

    /// Stops the cluster cleanly.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]);
        self.run("pg_ctl stop", stop).await
    }
}
