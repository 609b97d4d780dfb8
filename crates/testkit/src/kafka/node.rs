//! One Apache Kafka node as a child process: formatted once, started,
//! killed, stopped, and probed for readiness with a metadata request.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::process::{Child, Command};

use super::KafkaError;
use super::properties::NodePorts;

/// Kafka's own id for a test cluster (Testcontainers uses the same): any
/// 16 bytes in base64url do, and every node of one cluster shares it.
const CLUSTER_ID: &str = "4L6g3nShT-eMCtK--X86sw";

/// The JVM flags of every node: Kafka's own G1 settings, a fixed heap, and
/// GC and JIT threads for a two-core machine that also runs PostgreSQL and
/// the mall. `MALL_KAFKA_JAVA_OPTS` adds more (they win, coming last).
fn jvm_flags(heap_mb: u32) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        format!("-Xms{heap_mb}m"),
        format!("-Xmx{heap_mb}m"),
        "-XX:+UseG1GC".into(),
        "-XX:MaxGCPauseMillis=20".into(),
        "-XX:InitiatingHeapOccupancyPercent=35".into(),
        "-XX:+ExplicitGCInvokesConcurrent".into(),
        "-XX:ParallelGCThreads=2".into(),
        "-XX:ConcGCThreads=1".into(),
        "-XX:CICompilerCount=2".into(),
        "-Djava.awt.headless=true".into(),
    ];
    if let Ok(more) = std::env::var("MALL_KAFKA_JAVA_OPTS") {
        flags.extend(more.split_whitespace().map(str::to_owned));
    }
    flags
}

/// `$JAVA_HOME/bin/java`, or `java` on the PATH.
fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| java.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KafkaError {
    let what = what.into();
    move |source| KafkaError::Io { what, source }
}

/// One node of a cluster, and its process while it runs.
pub(super) struct Node {
    pub ports: NodePorts,
    pub dir: PathBuf,
    pub uid: Option<u32>,
    child: Option<Child>,
}

impl Node {
    pub fn new(ports: NodePorts, dir: PathBuf, uid: Option<u32>) -> Self {
        Self {
            ports,
            dir,
            uid,
            child: None,
        }
    }

    /// Gives the node's directory to its uid, when it runs under one.
    pub fn hand_over(&self) -> Result<(), KafkaError> {
        let Some(uid) = self.uid else {
            return Ok(());
        };
        chown_tree(&self.dir, uid).map_err(io(format!("chown -R {uid} {}", self.dir.display())))
    }

    fn command(&self) -> Command {
        let mut command = Command::new(java());
        if let Some(uid) = self.uid {
            command.uid(uid).gid(uid);
        }
        command
    }

    /// `java` for a Kafka command-line tool: a small heap, a quick start,
    /// warnings only, the jars of `libs`; as the node's uid.
    fn tool_command(&self, libs: &Path, tools_log4j: &Path) -> Command {
        let mut command = self.command();
        command
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                tools_log4j.display()
            ))
            .arg("-cp")
            .arg(libs.join("*"))
            .stdin(Stdio::null());
        command
    }

    /// Runs a Kafka command-line tool (its main class and arguments) and
    /// returns what it printed on standard output.
    pub async fn tool(
        &self,
        libs: &Path,
        tools_log4j: &Path,
        args: &[&str],
    ) -> Result<String, KafkaError> {
        let output = self
            .tool_command(libs, tools_log4j)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io(format!("running java {}", args.first().unwrap_or(&""))))?;
        if !output.status.success() {
            return Err(KafkaError::Tool {
                what: args.join(" "),
                output: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `kafka.tools.StorageTool format`, unless the node's storage already
    /// is (a restart keeps what the node had).
    pub async fn format(
        &self,
        libs: &Path,
        tools_log4j: &Path,
        scram: &[(String, String)],
    ) -> Result<(), KafkaError> {
        if self.data().join("meta.properties").exists() {
            return Ok(());
        }
        let mut command = self.tool_command(libs, tools_log4j);
        command
            .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
            .arg(self.properties());
        for (user, password) in scram {
            command
                .arg("--add-scram")
                .arg(format!("SCRAM-SHA-512=[name={user},password={password}]"));
        }
        let output = command
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io("running java kafka.tools.StorageTool"))?;
        if !output.status.success() {
            return Err(KafkaError::Tool {
                what: format!("formatting node {}", self.ports.id),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Starts `kafka.Kafka` in a process group of its own (so a Ctrl-C meant
    /// for the caller reaches the broker only through [`Node::stop`]).
    pub fn spawn(&mut self, libs: &Path, log4j: &Path, heap_mb: u32) -> Result<(), KafkaError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(io(format!("opening {}", self.log().display())))?;
        let err = log.try_clone().map_err(io("duplicating the log file"))?;
        let child = self
            .command()
            .args(jvm_flags(heap_mb))
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg("-cp")
            .arg(libs.join("*"))
            .arg("kafka.Kafka")
            .arg(self.properties())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io("starting java kafka.Kafka (is Java 17 installed?)"))?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: no flush, no controlled shutdown.
    pub async fn kill(&mut self) -> Result<(), KafkaError> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().map_err(io("killing a Kafka node"))?;
            child.wait().await.map_err(io("reaping a Kafka node"))?;
        }
        Ok(())
    }

    /// SIGTERM (Kafka's shutdown hook: a controlled shutdown that hands its
    /// leaderships over), then `kill -9` if it has not ended in `patience`.
    pub async fn stop(&mut self, patience: Duration) -> Result<(), KafkaError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(patience, child.wait()).await.is_err() {
            child.start_kill().map_err(io("killing a Kafka node"))?;
            child.wait().await.map_err(io("reaping a Kafka node"))?;
        }
        Ok(())
    }

    /// Whether the process has ended on its own (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                true
            }
            _ => false,
        }
    }

    /// Waits until a metadata request to this node lists it among the
    /// brokers: it has joined the quorum, caught up and been unfenced.
    pub async fn wait_ready(&mut self, patience: Duration) -> Result<(), KafkaError> {
        let started = Instant::now();
        let bootstrap = format!("127.0.0.1:{}", self.ports.broker);
        let id = self.ports.id;
        loop {
            if self.exited() {
                return Err(self.not_ready("it exited", patience));
            }
            let probe = bootstrap.clone();
            let listed = tokio::task::spawn_blocking(move || lists_broker(&probe, id))
                .await
                .unwrap_or(false);
            if listed {
                return Ok(());
            }
            if started.elapsed() > patience {
                return Err(self.not_ready("it was never listed", patience));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn not_ready(&self, why: &str, patience: Duration) -> KafkaError {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        KafkaError::NotReady {
            node: self.ports.id,
            why: why.to_owned(),
            patience,
            log: self.log(),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }
}

/// `chown -R uid:uid dir`.
fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            chown_tree(&path, uid)?;
        } else {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// One metadata request to `bootstrap`: whether broker `id` is listed.
fn lists_broker(bootstrap: &str, id: u32) -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "2000")
        .set("log_level", "0")
        .create();
    let Ok(consumer) = consumer else {
        return false;
    };
    consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .is_ok_and(|m| m.brokers().iter().any(|b| b.id() == id as i32))
}
