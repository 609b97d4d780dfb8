//! The processes of a fleet (the fault run's replicas, the benchmark's
//! mall): each started from its spec with its environment, its output
//! appended to a log file of its own, under a uid of its own when the run
//! may switch (so a partition can drop exactly its packets), and killed
//! when dropped. Written on `tokio::process`: testcontainers would need a
//! Docker engine, which these machines do not have.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// How to run one process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Its name in logs and reports, e.g. `order-service-1`.
    pub name: String,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments (the mall's binaries take none: their settings are
    /// their environment).
    pub args: Vec<String>,
    /// Its environment, beside the inherited one.
    pub env: Vec<(String, String)>,
    /// The file its stdout and stderr are appended to.
    pub log: PathBuf,
    /// The uid (and gid) it runs as, when the run may switch (root).
    pub uid: Option<u32>,
}

/// A running process; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl ProcessSpec {
    /// Starts the process, first appending a line that says why to its log.
    pub async fn spawn(&self, why: &str) -> std::io::Result<Process> {
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .await?;
        log.write_all(format!("---- starting {} ({why})\n", self.name).as_bytes())
            .await?;
        let log = log.into_std().await;
        let mut command = Command::new(&self.program);
        if let Some(uid) = self.uid {
            command.uid(uid).gid(uid);
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", self.program.display()),
                )
            })?;
        Ok(Process { child })
    }
}

impl Process {
    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.start_kill()?;
        self.child.wait().await
    }

    /// SIGTERM, the way an orchestrator stops it (a consumer leaves its
    /// group), and waits until it is gone.
    pub async fn stop(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await
    }

    /// SIGSTOP: the process stops where it is, its connections (and any
    /// lock or replication slot they hold) left open, as a process the
    /// scheduler never runs would.
    pub async fn pause(&mut self) -> std::io::Result<()> {
        self.signal("-STOP").await
    }

    /// SIGCONT after [`Self::pause`].
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.signal("-CONT").await
    }

    async fn signal(&mut self, signal: &str) -> std::io::Result<()> {
        let Some(pid) = self.child.id() else {
            return Err(std::io::Error::other("the process has exited"));
        };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {signal} {pid}: {status}"
            )))
        }
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(vm_hwm_kib(&status)? as f64 / 1024.0)
    }

    /// CPU time it has used so far (user and system), in seconds: what a
    /// benchmark compares when two processes do the same work.
    pub fn cpu_secs(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: Linux's `USER_HZ`,
/// 100 on every architecture it exports to user space.
const USER_HZ: f64 = 100.0;

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks. The name
/// in parentheses may hold spaces, so fields count from its closing one.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// `VmHWM` (peak resident set) of a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_is_read_from_proc_status() {
        let status =
            "Name:\torder-service\nVmPeak:\t  900 kB\nVmHWM:\t   41236 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(41_236));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat_past_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let stat = "4242 (a b) c) S 1 1 1 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[tokio::test]
    async fn a_process_logs_runs_and_is_killed() {
        let dir = std::env::temp_dir().join(crate::env::unique_name("proc"));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ProcessSpec {
            name: "sleeper".into(),
            program: "sleep".into(),
            args: vec!["600".into()],
            env: Vec::new(),
            log: dir.join("sleeper.log"),
            uid: None,
        };
        let mut process = spec.spawn("a test").await.unwrap();
        assert!(process.exited().is_none());
        assert!(!process.kill().await.unwrap().success());
        let log = std::fs::read_to_string(&spec.log).unwrap();
        assert!(log.contains("starting sleeper (a test)"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
