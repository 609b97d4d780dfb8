//! Apache Kafka 4 in KRaft mode, as the mall's tests, fault run and
//! benchmark run it: one node, or a cluster of nodes that are each broker
//! and controller, on 127.0.0.1, from the jars `scripts/lib.sh`
//! (`ensure_kafka`) copied from Maven Central into `$MALL_KAFKA_LIBS`.
//!
//! The settings all brokers share are `deploy/kafka/server.properties`,
//! compiled in, so a test, a script and Compose run the same broker.

mod node;
pub mod properties;
pub mod tls;
pub mod view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use node::Node;
use properties::NodePorts;
pub use properties::replication;

use crate::ports::free_port;

/// The Apache Kafka release the mall is tested on; `deploy/kafka/pom.xml`
/// and `docker-compose.yml` pin the same (a unit test checks).
pub const KAFKA_VERSION: &str = "4.1.1";

/// The variable naming the directory of the broker's jars.
pub const LIBS_ENV: &str = "MALL_KAFKA_LIBS";

const SHARED: &str = include_str!("../../../../deploy/kafka/server.properties");
const LOG4J: &str = include_str!("../../../../deploy/kafka/log4j2.properties");
const TOOLS_LOG4J: &str = include_str!("../../../../deploy/kafka/tools-log4j2.properties");

/// The value of `key` in `deploy/kafka/server.properties`, the settings
/// every node shares.
pub fn shared_setting(key: &str) -> Option<&'static str> {
    SHARED
        .lines()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// How long a node may take from `java` to being listed in metadata: a
/// few seconds alone, far longer when three JVMs start on two busy cores.
const READY_PATIENCE: Duration = Duration::from_secs(180);

/// Why a broker could not be run.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The jars were never fetched.
    #[error(
        "{LIBS_ENV} is not set to a directory of jars: run through scripts/test.sh, or source \
         scripts/lib.sh and call ensure_kafka, which fetches Apache Kafka {KAFKA_VERSION} from \
         Maven Central"
    )]
    NoLibs,
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A Kafka command-line tool failed.
    #[error("{what} failed: {output}")]
    Tool {
        /// What was being done.
        what: String,
        /// What it printed.
        output: String,
    },
    /// A node did not come up.
    #[error(
        "Kafka node {node} was not ready within {patience:?} ({why}); its log {log:?} ends:\n{tail}"
    )]
    NotReady {
        /// The node's id.
        node: u32,
        /// What was seen.
        why: String,
        /// How long it was given.
        patience: Duration,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A metadata or admin request failed.
    #[error("asking the cluster: {0}")]
    Metadata(String),
    /// An index past the cluster's nodes.
    #[error("the cluster has no node at index {0}")]
    NoNode(usize),
}

/// Secure listeners beside the PLAINTEXT one the nodes talk to each other
/// on: SASL_SSL (SCRAM-SHA-512 and PLAIN) and SSL with client certificates
/// required, signed by a CA the cluster makes in `<dir>/tls`.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// SASL (user, password) pairs, for both mechanisms; no commas or
    /// quotes in either.
    pub users: Vec<(String, String)>,
    /// Common names of the client certificates to make; on the SSL
    /// listener each is the principal `User:<cn>`.
    pub client_certs: Vec<String>,
    /// Kafka's `StandardAuthorizer`: nothing is allowed without an ACL,
    /// except to the super user `User:ANONYMOUS` of the PLAINTEXT and
    /// CONTROLLER listeners (the nodes and the set-up tools).
    pub authorizer: bool,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct KafkaSpec {
    /// Where each node keeps its data and log (`<dir>/node-<id>`); a
    /// directory that already holds a formatted node is reused as it is.
    pub dir: PathBuf,
    /// How many nodes, each broker and controller.
    pub nodes: usize,
    /// Heap of each node's JVM, in MiB.
    pub heap_mb: u32,
    /// Secure listeners, when set.
    pub security: Option<Security>,
    /// More `server.properties` lines for every node (they win).
    pub properties: Vec<(String, String)>,
    /// The jars; `$MALL_KAFKA_LIBS` when `None`.
    pub libs: Option<PathBuf>,
    /// The client port of the first node; a free one when `None`.
    pub first_port: Option<u16>,
    /// Run node `i` (from 0) as uid and gid `uid_base + i`, so nftables can
    /// tell its packets apart (`meta skuid`); needs root, and `dir` and
    /// `libs` readable by those uids. Same uid as the caller when `None`.
    pub uid_base: Option<u32>,
}

impl KafkaSpec {
    /// `nodes` nodes in `dir`, 512 MiB of heap each, no SASL.
    pub fn new(dir: impl Into<PathBuf>, nodes: usize) -> Self {
        Self {
            dir: dir.into(),
            nodes: nodes.max(1),
            heap_mb: 512,
            security: None,
            properties: Vec::new(),
            libs: None,
            first_port: None,
            uid_base: None,
        }
    }
}

/// A running cluster; every node still running is killed when it is dropped.
pub struct Kafka {
    spec: KafkaSpec,
    libs: PathBuf,
    tls: Option<tls::TlsFiles>,
    nodes: Vec<Node>,
}

impl Kafka {
    /// Formats (where new) and starts every node at once (a quorum needs a
    /// majority), and returns when each is listed in metadata.
    pub async fn start(spec: KafkaSpec) -> Result<Self, KafkaError> {
        let libs = spec
            .libs
            .clone()
            .or_else(|| std::env::var_os(LIBS_ENV).map(PathBuf::from))
            .filter(|dir| dir.is_dir())
            .ok_or(KafkaError::NoLibs)?;
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|source| KafkaError::Io {
                what: format!("writing {}", path.display()),
                source,
            })
        };
        std::fs::create_dir_all(&spec.dir).map_err(|source| KafkaError::Io {
            what: format!("creating {}", spec.dir.display()),
            source,
        })?;
        write(spec.dir.join("log4j2.properties"), LOG4J)?;
        write(spec.dir.join("tools-log4j2.properties"), TOOLS_LOG4J)?;
        let port = || {
            free_port().map_err(|source| KafkaError::Io {
                what: "finding a free port".into(),
                source,
            })
        };
        let mut ports = Vec::with_capacity(spec.nodes);
        for id in 1..=spec.nodes as u32 {
            let broker = match spec.first_port {
                Some(first) if id == 1 => first,
                _ => port()?,
            };
            ports.push(NodePorts {
                id,
                broker,
                controller: port()?,
                sasl_ssl: spec.security.as_ref().map(|_| port()).transpose()?,
                ssl: spec.security.as_ref().map(|_| port()).transpose()?,
            });
        }
        let tls = match &spec.security {
            Some(security) => Some(
                tls::make(&spec.dir.join("tls"), &security.client_certs).map_err(|source| {
                    KafkaError::Io {
                        what: "making the test CA and certificates".into(),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let mut nodes = Vec::with_capacity(spec.nodes);
        for me in &ports {
            let dir = spec.dir.join(format!("node-{}", me.id));
            std::fs::create_dir_all(&dir).map_err(|source| KafkaError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
            let uid = spec.uid_base.map(|base| base + me.id - 1);
            let node = Node::new(*me, dir, uid);
            let text = properties::render(
                SHARED,
                &ports,
                me,
                &node.data(),
                spec.security.as_ref().zip(tls.as_ref()),
                &spec.properties,
            );
            write(node.properties(), &text)?;
            node.hand_over()?;
            nodes.push(node);
        }
        let mut kafka = Self {
            spec,
            libs,
            tls,
            nodes,
        };
        let scram = kafka
            .spec
            .security
            .as_ref()
            .map(|s| s.users.clone())
            .unwrap_or_default();
        let tools_log4j = kafka.spec.dir.join("tools-log4j2.properties");
        let formats = kafka
            .nodes
            .iter()
            .map(|node| node.format(&kafka.libs, &tools_log4j, &scram));
        // Side by side: each is a JVM start.
        for formatted in futures::future::join_all(formats).await {
            formatted?;
        }
        for index in 0..kafka.nodes.len() {
            kafka.spawn(index)?;
        }
        for node in &mut kafka.nodes {
            node.wait_ready(READY_PATIENCE).await?;
        }
        Ok(kafka)
    }

    fn spawn(&mut self, index: usize) -> Result<(), KafkaError> {
        let log4j = self.spec.dir.join("log4j2.properties");
        let heap = self.spec.heap_mb;
        let libs = self.libs.clone();
        self.node_mut(index)?.spawn(&libs, &log4j, heap)
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, KafkaError> {
        self.nodes.get_mut(index).ok_or(KafkaError::NoNode(index))
    }

    /// `host:port,…` of every node's PLAINTEXT listener, for clients.
    pub fn bootstrap(&self) -> String {
        self.join_ports(|p| Some(p.broker))
    }

    /// `host:port,…` of every node's SASL_SSL listener, when secured.
    pub fn sasl_ssl_bootstrap(&self) -> Option<String> {
        self.tls.as_ref().map(|_| self.join_ports(|p| p.sasl_ssl))
    }

    /// `host:port,…` of every node's SSL (client certificate) listener,
    /// when secured.
    pub fn ssl_bootstrap(&self) -> Option<String> {
        self.tls.as_ref().map(|_| self.join_ports(|p| p.ssl))
    }

    /// The CA and client certificates, when secured.
    pub fn tls(&self) -> Option<&tls::TlsFiles> {
        self.tls.as_ref()
    }

    /// Runs Kafka's `kafka-acls` (`org.apache.kafka.tools.AclCommand`) with
    /// `args` against the PLAINTEXT listener, as the super user; what it
    /// printed.
    pub async fn kafka_acls(&self, args: &[&str]) -> Result<String, KafkaError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .ok_or(KafkaError::Metadata("no node is running".into()))?;
        let bootstrap = format!("127.0.0.1:{}", node.ports.broker);
        let mut full = vec![
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &bootstrap,
        ];
        full.extend_from_slice(args);
        node.tool(
            &self.libs,
            &self.spec.dir.join("tools-log4j2.properties"),
            &full,
        )
        .await
    }

    fn join_ports(&self, port: impl Fn(&NodePorts) -> Option<u16>) -> String {
        self.nodes
            .iter()
            .filter_map(|n| port(&n.ports))
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: a spec has at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `node.id` of the node at `index`.
    pub fn node_id(&self, index: usize) -> Option<u32> {
        self.nodes.get(index).map(|n| n.ports.id)
    }

    /// The index of the node whose `node.id` is `id`.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.nodes.iter().position(|n| n.ports.id == id)
    }

    /// The client (PLAINTEXT) port of the node at `index`.
    pub fn broker_port(&self, index: usize) -> Option<u16> {
        self.nodes.get(index).map(|n| n.ports.broker)
    }

    /// The controller port of the node at `index`.
    pub fn controller_port(&self, index: usize) -> Option<u16> {
        self.nodes.get(index).map(|n| n.ports.controller)
    }

    /// The uid the node at `index` runs as, when it has one of its own.
    pub fn uid(&self, index: usize) -> Option<u32> {
        self.nodes.get(index).and_then(|n| n.uid)
    }

    /// Whether the node at `index` is running (as far as this handle knows).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes.get(index).is_some_and(Node::running)
    }

    /// The log file of the node at `index`.
    pub fn log_path(&self, index: usize) -> Option<PathBuf> {
        self.nodes.get(index).map(Node::log)
    }

    /// The directory the cluster lives in.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// `kill -9` of the node at `index`.
    pub async fn kill(&mut self, index: usize) -> Result<(), KafkaError> {
        self.node_mut(index)?.kill().await
    }

    /// A controlled shutdown (SIGTERM) of the node at `index`.
    pub async fn stop_node(&mut self, index: usize) -> Result<(), KafkaError> {
        self.node_mut(index)?.stop(Duration::from_secs(60)).await
    }

    /// Starts the node at `index` again (its data kept) and waits until it
    /// is listed in metadata.
    pub async fn restart(&mut self, index: usize) -> Result<(), KafkaError> {
        if self.node_mut(index)?.running() {
            return Ok(());
        }
        self.spawn(index)?;
        self.node_mut(index)?.wait_ready(READY_PATIENCE).await
    }

    /// Starts every node that is not running at once (a quorum needs a
    /// majority before any of them is ready), then waits for each.
    pub async fn restart_all(&mut self) -> Result<(), KafkaError> {
        let down: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].running())
            .collect();
        for &index in &down {
            self.spawn(index)?;
        }
        for index in down {
            self.node_mut(index)?.wait_ready(READY_PATIENCE).await?;
        }
        Ok(())
    }

    /// The `node.id` of the active KRaft controller (the quorum's leader),
    /// from Kafka's own `MetadataQuorumCommand` through a running node.
    pub async fn active_controller(&self) -> Result<u32, KafkaError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .ok_or(KafkaError::Metadata("no node is running".into()))?;
        let text = node
            .tool(
                &self.libs,
                &self.spec.dir.join("tools-log4j2.properties"),
                &[
                    "org.apache.kafka.tools.MetadataQuorumCommand",
                    "--bootstrap-server",
                    &format!("127.0.0.1:{}", node.ports.broker),
                    "describe",
                    "--status",
                ],
            )
            .await?;
        text.lines()
            .find_map(|line| line.trim().strip_prefix("LeaderId:"))
            .and_then(|id| id.trim().parse().ok())
            .ok_or_else(|| KafkaError::Metadata(format!("no LeaderId in: {text}")))
    }

    /// `kill -9` of every node: the end of a throwaway cluster whose data
    /// nobody reads again. A controlled shutdown ([`Kafka::stop`]) of a
    /// cluster's last nodes waits for a quorum that is gone, a minute each.
    pub async fn kill_all(&mut self) -> Result<(), KafkaError> {
        for node in &mut self.nodes {
            node.kill().await?;
        }
        Ok(())
    }

    /// A controlled shutdown of every node, one after another: for a single
    /// node, or a cluster whose data is kept (see [`Kafka::kill_all`]).
    pub async fn stop(&mut self) -> Result<(), KafkaError> {
        for node in &mut self.nodes {
            node.stop(Duration::from_secs(60)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::KAFKA_VERSION;

    #[test]
    fn shared_settings_are_read_from_the_file() {
        assert_eq!(
            super::shared_setting("offsets.topic.num.partitions"),
            Some("5")
        );
        assert_eq!(super::shared_setting("no.such.key"), None);
    }

    #[test]
    fn the_pom_and_compose_pin_the_same_release() {
        let pom = include_str!("../../../../deploy/kafka/pom.xml");
        assert!(
            pom.contains(&format!("<kafka.version>{KAFKA_VERSION}</kafka.version>")),
            "deploy/kafka/pom.xml pins Kafka {KAFKA_VERSION}"
        );
        let compose = include_str!("../../../../docker-compose.yml");
        assert!(
            compose.contains(&format!("image: apache/kafka:{KAFKA_VERSION}")),
            "docker-compose.yml runs apache/kafka:{KAFKA_VERSION}"
        );
    }
}
