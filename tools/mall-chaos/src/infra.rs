//! The run's own PostgreSQL cluster and Tansu broker, which faults restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bound, read back and released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on `port`.
///
/// A connection to itself does not count: when the probe's own ephemeral
/// port happens to be `port`, Linux completes a TCP "simultaneous open" with
/// nobody listening, which once let a run start before a replica was up.
pub async fn wait_for_port(port: u16, what: &str, patience: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < patience {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
            if !to_itself {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within {patience:?}")
}

/// Opens `path` for appending, for a child's stdout and stderr.
pub fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((file.try_clone()?.into(), file.into()))
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
}

impl Postgres {
    /// A cluster in `dir` (created if empty) run by `user` when given.
    pub fn new(bin: PathBuf, dir: PathBuf, user: Option<String>, port: u16) -> Self {
        Self {
            bin,
            dir,
            user,
            port,
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

/// A Tansu broker with durable sqlite storage.
pub struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
    child: Option<Child>,
    /// Length of the broker log when it last started.
    log_mark: u64,
}

impl Tansu {
    /// A broker keeping its data in `dir/tansu.db`.
    pub fn new(bin: PathBuf, dir: PathBuf, port: u16) -> Self {
        Self {
            bin,
            dir,
            port,
            child: None,
            log_mark: 0,
        }
    }

    /// Whether the broker hit its own defect since it last started: Tansu
    /// 0.6's sqlite storage panics ("more or less than one row") when an
    /// idempotent producer bumps its epoch after a message timed out, and
    /// from then on answers every request with a storage error while its
    /// port stays open. An orchestrator would restart such a broker.
    /// Each call reads only what the log gained since the last one.
    pub fn wedged(&mut self) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut log) = std::fs::File::open(self.dir.join("tansu.log")) else {
            return false;
        };
        let mut tail = Vec::new();
        if log.seek(SeekFrom::Start(self.log_mark)).is_err() || log.read_to_end(&mut tail).is_err()
        {
            return false;
        }
        self.log_mark += tail.len() as u64;
        String::from_utf8_lossy(&tail).contains("panicked at")
    }

    /// `host:port` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker and waits until it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.log_mark = std::fs::metadata(self.dir.join("tansu.log")).map_or(0, |m| m.len());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let (out, err) = log_file(&self.dir.join("tansu.log"))?;
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        wait_for_port(self.port, "Tansu", Duration::from_secs(60)).await
    }

    /// Runs `script` (`scripts/tansu_indexes.py`) on the broker's database;
    /// the indexes stay in the file, so restarts need nothing more.
    pub async fn add_missing_indexes(&self, script: &Path) -> anyhow::Result<()> {
        let status = Command::new("python3")
            .arg(script)
            .arg(self.dir.join("tansu.db"))
            .status()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(status.success(), "{} failed ({status})", script.display());
        Ok(())
    }

    /// `kill -9`: the broker gets no chance to flush or say goodbye.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }
}
