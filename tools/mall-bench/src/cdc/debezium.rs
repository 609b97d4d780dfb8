//! P8 and P9's baseline: Debezium's PostgreSQL connector with its Outbox
//! Event Router, in Kafka Connect standalone, as its users deploy it (two
//! properties files, the connector jars on `plugin.path`, no code of
//! ours). It reads the mall's outbox table as it is: the router maps the
//! event id, key, payload and topic from its columns.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mall_testkit::process::{Process, ProcessSpec};
use tokio_postgres::Client;

/// Where Connect and the connector were installed (`ensure_debezium` in
/// scripts/lib.sh).
#[derive(Debug, Clone)]
pub struct Install {
    /// The `java` to run.
    pub java: PathBuf,
    /// Kafka Connect's jars (its classpath).
    pub connect_libs: PathBuf,
    /// Connect's `plugin.path`: a directory holding the connector's.
    pub plugins: PathBuf,
}

/// The connector's own settings beside the wiring: every one is in
/// docs/benchmarks.md. The outbox's columns mapped as the relay maps them.
pub const CONNECTOR: &[(&str, &str)] = &[
    (
        "connector.class",
        "io.debezium.connector.postgresql.PostgresConnector",
    ),
    ("tasks.max", "1"),
    ("plugin.name", "pgoutput"),
    ("publication.autocreate.mode", "disabled"),
    ("table.include.list", "public.outbox"),
    // Rows before the slot are not sent: the relay gets fresh tables too.
    ("snapshot.mode", "no_data"),
    ("tombstones.on.delete", "false"),
    ("extended.headers.enabled", "false"),
    ("binary.handling.mode", "bytes"),
    // Down from 500 ms: a batch not full waits this long before it is
    // handed to Connect, which would be most of the lag at 500 rows/s.
    ("poll.interval.ms", "10"),
    (
        "key.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    (
        "value.converter",
        "io.debezium.converters.BinaryDataConverter",
    ),
    (
        "value.converter.delegate.converter.type",
        "org.apache.kafka.connect.json.JsonConverter",
    ),
    (
        "value.converter.delegate.converter.type.schemas.enable",
        "false",
    ),
    ("transforms", "outbox"),
    (
        "transforms.outbox.type",
        "io.debezium.transforms.outbox.EventRouter",
    ),
    ("transforms.outbox.table.field.event.id", "event_id"),
    ("transforms.outbox.table.field.event.key", "msg_key"),
    ("transforms.outbox.table.field.event.payload", "payload"),
    ("transforms.outbox.route.by.field", "topic"),
    (
        "transforms.outbox.route.topic.replacement",
        "${routedByValue}",
    ),
    (
        "transforms.outbox.table.fields.additional.placement",
        "event_type:header:ce_type,source:header:ce_source,subject:header:ce_subject",
    ),
    ("transforms.outbox.table.op.invalid.behavior", "warn"),
];

/// The worker's settings beside the wiring. Its producer gets the relay's
/// settings where they mean the same (idempotent, acks=all, no linger, five
/// requests in flight); Connect's own defaults are no idempotence and one.
pub const WORKER: &[(&str, &str)] = &[
    (
        "key.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    (
        "value.converter",
        "org.apache.kafka.connect.converters.ByteArrayConverter",
    ),
    ("offset.flush.interval.ms", "1000"),
    ("producer.enable.idempotence", "true"),
    ("producer.acks", "all"),
    ("producer.linger.ms", "0"),
    ("producer.max.in.flight.requests.per.connection", "5"),
];

/// The JVM's options (Kafka's scripts give Connect 256 MiB–2 GiB).
pub const JVM: &[&str] = &["-Xms256m", "-Xmx1g", "-XX:+UseG1GC"];

const LOG4J: &str = "status = warn\n\
    appender.out.type = Console\n\
    appender.out.name = OUT\n\
    appender.out.layout.type = PatternLayout\n\
    appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
    rootLogger.level = info\n\
    rootLogger.appenderRef.out.ref = OUT\n\
    logger.reflections.name = org.reflections\n\
    logger.reflections.level = error\n";

/// Where the connector reads from and writes to.
pub struct Wiring<'a> {
    /// The database with the outbox (`wal_level=logical`).
    pub database_url: &'a str,
    /// Bootstrap brokers.
    pub brokers: &'a str,
    /// The replication slot it creates (dropped by [`Connect::stop`]).
    pub slot: &'a str,
    /// The publication it reads (made by [`publish_outbox`]).
    pub publication: &'a str,
}

/// A publication of the outbox's inserts, which pgoutput streams.
pub async fn publish_outbox(client: &Client, publication: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE outbox WITH (publish = 'insert')"
        ))
        .await
        .context("creating the publication")
}

fn properties(pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{k}={v}");
        out
    })
}

/// A running Kafka Connect worker with the connector.
pub struct Connect {
    process: Process,
    rest_port: u16,
    admin: Client,
    slot: String,
}

impl Connect {
    /// Writes the worker's and the connector's files into `dir` and starts
    /// the worker (the connector then creates its slot and streams; see
    /// the caller's canary for when it does).
    pub async fn start(
        install: &Install,
        dir: &Path,
        wiring: &Wiring<'_>,
        admin: Client,
    ) -> anyhow::Result<Self> {
        let db: tokio_postgres::Config = wiring.database_url.parse()?;
        let host = match db.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => anyhow::bail!("{} names no TCP host", wiring.database_url),
        };
        let port = db.get_ports().first().copied().unwrap_or(5432).to_string();
        let user = db.get_user().unwrap_or("postgres").to_owned();
        let dbname = db.get_dbname().context("the URL names no database")?;
        std::fs::create_dir_all(dir)?;
        let rest_port = mall_testkit::free_port()?;
        let rest = format!("http://127.0.0.1:{rest_port}");
        let plugins = install.plugins.display().to_string();
        // A fresh start: offsets of an earlier run name WAL long gone.
        let offsets = dir.join("connect.offsets");
        if offsets.exists() {
            std::fs::remove_file(&offsets)?;
        }
        let offsets = offsets.display().to_string();
        let mut worker = vec![
            ("bootstrap.servers", wiring.brokers),
            ("listeners", rest.as_str()),
            ("plugin.path", plugins.as_str()),
            ("offset.storage.file.filename", offsets.as_str()),
        ];
        worker.extend_from_slice(WORKER);
        let mut connector = vec![
            ("name", "mall-bench-outbox"),
            ("database.hostname", host.as_str()),
            ("database.port", port.as_str()),
            ("database.user", user.as_str()),
            // Trust authentication; the connector insists on a value.
            ("database.password", "unused"),
            ("database.dbname", dbname),
            ("topic.prefix", "mallbench"),
            ("slot.name", wiring.slot),
            ("publication.name", wiring.publication),
        ];
        connector.extend_from_slice(CONNECTOR);
        let (worker_file, connector_file) = (
            dir.join("worker.properties"),
            dir.join("connector.properties"),
        );
        std::fs::write(&worker_file, properties(&worker))?;
        std::fs::write(&connector_file, properties(&connector))?;
        let log4j = dir.join("log4j2.properties");
        std::fs::write(&log4j, LOG4J)?;
        let mut args: Vec<String> = JVM.iter().map(|s| (*s).to_owned()).collect();
        args.extend([
            format!("-Dlog4j2.configurationFile={}", log4j.display()),
            "-cp".to_owned(),
            format!("{}/*", install.connect_libs.display()),
            "org.apache.kafka.connect.cli.ConnectStandalone".to_owned(),
            worker_file.display().to_string(),
            connector_file.display().to_string(),
        ]);
        let spec = ProcessSpec {
            name: "kafka-connect".to_owned(),
            program: install.java.clone(),
            args,
            env: Vec::new(),
            log: dir.join("connect.log"),
            uid: None,
        };
        let process = spec.spawn("benchmark, Debezium baseline").await?;
        Ok(Self {
            process,
            rest_port,
            admin,
            slot: wiring.slot.to_owned(),
        })
    }

    /// The worker's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Why the connector or its task failed, when Connect's REST API says
    /// one did (a failed task stays failed in a running worker); `None`
    /// while starting or running.
    pub async fn failure(&self) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.rest_port))
            .await
            .ok()?;
        let request = "GET /connectors/mall-bench-outbox/status HTTP/1.0\r\n\
                       Host: 127.0.0.1\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let status: serde_json::Value = serde_json::from_str(body).ok()?;
        let states = std::iter::once(&status["connector"])
            .chain(status["tasks"].as_array().into_iter().flatten());
        states
            .filter(|s| s["state"] == "FAILED")
            .map(|s| {
                let trace = s["trace"].as_str().unwrap_or("no trace");
                trace.lines().next().unwrap_or(trace).to_owned()
            })
            .next()
    }

    /// Stops the worker (SIGTERM) and drops its replication slot, waiting
    /// until the slot is no longer in use.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop().await?;
        let released = std::time::Instant::now();
        while self
            .admin
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&self.slot],
            )
            .await?
            .is_some()
        {
            if released.elapsed() > std::time::Duration::from_secs(60) {
                anyhow::bail!("slot {} still in use 60 s after Connect stopped", self.slot);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .context("dropping the connector's slot")?;
        Ok(())
    }
}
