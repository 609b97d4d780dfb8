//! The fault plan, drawn from the seed, and the injector that carries it out
//! at random moments while the load runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::sync::Mutex;

use crate::cluster;
use crate::fleet::Fleet;
use crate::infra::Postgres;
use crate::inject::Injector;
use mall_testkit::Kafka;
use mall_testkit::binaries::Role;

/// One fault.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL a replica (index into the fleet), restart it after `down`.
    Kill { replica: usize, down: Duration },
    /// Crash-stop PostgreSQL (`-m immediate`) and start it again.
    RestartPostgres,
    /// `kill -9` of one Kafka node (index), started again after `down`.
    KillBroker { node: usize, down: Duration },
    /// Re-send a range of already-published records of one topic.
    Replay { topic: usize, pick: u64 },
    /// Re-send the events of some orders in reverse and then in order,
    /// compensations included.
    Reorder { topic: usize, pick: u64 },
    /// Garbage bytes, unknown types and invalid payloads on every topic.
    Poison { round: usize },
    /// One service's database read-only for `window`, as during a failover.
    ReadOnly { service: usize, window: Duration },
    /// Every inventory row held from outside for `window`, with deadlocks.
    LockContention { window: Duration },
    /// Every Kafka node down for longer than the producers'
    /// `message.timeout.ms`.
    BrokerOutage { down: Duration },
    /// A replica's packets to PostgreSQL or the broker dropped for `window`.
    Partition {
        replica: usize,
        peer: Peer,
        window: Duration,
    },
    /// `kill -9` of the node leading `partition` of event topic `topic`
    /// (a leader election under load), started again after `down`.
    KillLeader {
        topic: usize,
        partition: i32,
        down: Duration,
    },
    /// `kill -9` of the active KRaft controller, started again after `down`.
    KillController { down: Duration },
    /// A node cut off from the other nodes and every client for `window`,
    /// longer than `replica.lag.time.max.ms`: the ISR shrinks, then grows.
    IsolateBroker { node: usize, window: Duration },
    /// Two nodes down at once, below `min.insync.replicas`; one back after
    /// `down`, the other half of that later.
    TwoDown { first: usize, down: Duration },
    /// Every node in turn: controlled shutdown, start, in sync again.
    RollingRestart,
    /// The coordinator of `service`'s consumer group killed while the group
    /// rebalances (one of its replicas killed and started again).
    KillCoordinator { service: usize, down: Duration },
}

/// What a partition cuts a replica off from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// PostgreSQL.
    Database,
    /// The broker.
    Broker,
}

/// Fault kinds, as the figures count them.
pub const KINDS: [&str; 18] = [
    "service replica SIGKILL",
    "relay replica SIGKILL",
    "PostgreSQL crash-restart",
    "broker kill -9",
    "replay of a topic range",
    "duplicate/out-of-order injection",
    "poison round",
    "read-only window (failover)",
    "lock contention with deadlocks",
    "broker outage > message.timeout.ms",
    "partition from PostgreSQL",
    "partition from the broker",
    "partition leader kill -9 under load",
    "active controller kill -9",
    "broker isolated (ISR shrank, regrew)",
    "two brokers down (< min.insync.replicas)",
    "rolling restart of every broker",
    "group coordinator kill -9 in a rebalance",
];

/// How long a partition lasts: past the keepalive bound, so sessions and
/// their locks really die.
fn partition_window(rng: &mut StdRng) -> Duration {
    platform_core::pg::DEAD_PEER_BOUND + Duration::from_millis(rng.random_range(2_000..8_000))
}

/// A fault with the pause before it.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// Wait this long once the fault is due (random jitter).
    pub after: Duration,
    /// What to do.
    pub fault: Fault,
}

/// Which optional fault kinds a plan may hold.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Network partitions (replicas under their own uids).
    pub partitions: bool,
    /// Broker outages longer than `message.timeout.ms`.
    pub long_broker_outages: bool,
    /// Nodes of the Kafka cluster.
    pub kafka_nodes: usize,
    /// Partitions of every topic.
    pub topic_partitions: i32,
}

/// Draws the plan: every replica killed `kills` times, `rounds` of every
/// other kind, shuffled and spread over about `span`.
pub fn plan(
    rng: &mut StdRng,
    fleet: &Fleet,
    kills: usize,
    rounds: usize,
    span: Duration,
    options: Options,
) -> Vec<Scheduled> {
    let fleet_size = fleet.names.len();
    let of_kind = |relay: bool| -> Vec<usize> {
        (0..fleet_size)
            .filter(|i| fleet.roles[*i].is_relay() == relay)
            .collect()
    };
    let (services, relays) = (of_kind(false), of_kind(true));
    let mut faults = Vec::new();
    for replica in 0..fleet_size {
        for _ in 0..kills {
            let down = Duration::from_millis(rng.random_range(200..2_500));
            faults.push(Fault::Kill { replica, down });
        }
    }
    for round in 0..rounds {
        faults.push(Fault::RestartPostgres);
        let down = Duration::from_millis(rng.random_range(1_000..4_000));
        let node = rng.random_range(0..options.kafka_nodes.max(1));
        faults.push(Fault::KillBroker { node, down });
        for topic in 0..3 {
            faults.push(Fault::Replay {
                topic,
                pick: rng.random(),
            });
            faults.push(Fault::Reorder {
                topic,
                pick: rng.random(),
            });
        }
        faults.push(Fault::Poison { round });
        for service in 0..3 {
            let window = Duration::from_millis(rng.random_range(12_000..20_000));
            faults.push(Fault::ReadOnly { service, window });
        }
        let window = Duration::from_millis(rng.random_range(12_000..18_000));
        faults.push(Fault::LockContention { window });
        let down =
            crate::fleet::MESSAGE_TIMEOUT + Duration::from_millis(rng.random_range(3_000..8_000));
        // Drawn either way, so a seed picks the same other faults with or
        // without this option.
        if options.long_broker_outages {
            faults.push(Fault::BrokerOutage { down });
        }
        if options.kafka_nodes >= 3 {
            let short = |rng: &mut StdRng| Duration::from_millis(rng.random_range(1_000..4_000));
            let (topic, partition) = (
                rng.random_range(0..3),
                rng.random_range(0..options.topic_partitions.max(1)),
            );
            let down = short(rng);
            faults.push(Fault::KillLeader {
                topic,
                partition,
                down,
            });
            let down = short(rng);
            faults.push(Fault::KillController { down });
            let node = rng.random_range(0..options.kafka_nodes);
            let window = Duration::from_millis(rng.random_range(20_000..26_000));
            // Isolation is a per-uid nftables rule, like the partitions.
            if options.partitions {
                faults.push(Fault::IsolateBroker { node, window });
            }
            let first = rng.random_range(0..options.kafka_nodes);
            let down = Duration::from_millis(rng.random_range(5_000..10_000));
            faults.push(Fault::TwoDown { first, down });
            faults.push(Fault::RollingRestart);
            let service = rng.random_range(0..3);
            let down = short(rng);
            faults.push(Fault::KillCoordinator { service, down });
        }
        if options.partitions {
            for (peer, pool) in [
                (Peer::Database, &services),
                (Peer::Database, &relays),
                (Peer::Broker, &services),
                (Peer::Broker, &relays),
            ] {
                let replica = pool[rng.random_range(0..pool.len())];
                let window = partition_window(rng);
                faults.push(Fault::Partition {
                    replica,
                    peer,
                    window,
                });
            }
        }
    }
    faults.shuffle(rng);
    let mean = span.as_secs_f64() / faults.len().max(1) as f64;
    faults
        .into_iter()
        .map(|fault| Scheduled {
            after: Duration::from_secs_f64(mean * rng.random_range(0.0..1.0)),
            fault,
        })
        .collect()
}

/// What the injector did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Faults carried out, by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Records sent again by replays and duplicate injection.
    pub resent: u64,
    /// Poison messages sent.
    pub poison: u64,
    /// Faults that could not be carried out, with the reason.
    pub failures: Vec<String>,
    /// Deadlocks PostgreSQL counted during lock contention.
    pub deadlocks: i64,
}

/// Everything a fault can act on.
pub struct Targets {
    /// The replicas.
    pub fleet: Arc<Fleet>,
    /// The database cluster.
    pub postgres: Arc<Postgres>,
    /// The Kafka cluster.
    pub kafka: Arc<Mutex<Kafka>>,
    /// Record re-sender.
    pub injector: Arc<Injector>,
    /// URL of the `postgres` database, for administration.
    pub admin_url: String,
    /// (database name, URL) per service, in `Service::ALL` order.
    pub databases: Vec<(String, String)>,
}

/// Carries out `plan`, each fault in its own task so a slow restart does not
/// delay the next fault; returns once every fault has finished and every
/// replica and the broker run again. Fault `i` of `n` waits until `i/n` of
/// the `total` orders were placed (`progress`), so the faults stay spread
/// over the whole load however fast the mall turns out to be.
pub async fn inject(
    plan: Vec<Scheduled>,
    targets: Arc<Targets>,
    progress: Arc<AtomicUsize>,
    total: usize,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let count = plan.len().max(1);
    for (i, scheduled) in plan.into_iter().enumerate() {
        let due = i * total / count;
        while progress.load(Ordering::Relaxed) < due {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(scheduled.after).await;
        let (targets, tally) = (Arc::clone(&targets), Arc::clone(&tally));
        tasks.spawn(async move {
            let fault = scheduled.fault;
            let kind = kind_of(&fault, &targets.fleet);
            match carry_out(&fault, &targets).await {
                Ok(resent) => {
                    let mut tally = tally.lock().await;
                    *tally.by_kind.entry(kind).or_default() += 1;
                    if matches!(fault, Fault::Poison { .. }) {
                        tally.poison += resent;
                    } else if matches!(fault, Fault::LockContention { .. }) {
                        tally.deadlocks += resent as i64;
                    } else {
                        tally.resent += resent;
                    }
                }
                Err(error) => {
                    tracing::error!(?fault, %error, "Fault could not be injected.");
                    tally
                        .lock()
                        .await
                        .failures
                        .push(format!("{fault:?}: {error:#}"));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally).map_or_else(|_| Tally::default(), Mutex::into_inner)
}

fn kind_of(fault: &Fault, fleet: &Fleet) -> &'static str {
    match fault {
        Fault::Kill { replica, .. } if fleet.roles[*replica].is_relay() => KINDS[1],
        Fault::Kill { .. } => KINDS[0],
        Fault::RestartPostgres => KINDS[2],
        Fault::KillBroker { .. } => KINDS[3],
        Fault::Replay { .. } => KINDS[4],
        Fault::Reorder { .. } => KINDS[5],
        Fault::Poison { .. } => KINDS[6],
        Fault::ReadOnly { .. } => KINDS[7],
        Fault::LockContention { .. } => KINDS[8],
        Fault::BrokerOutage { .. } => KINDS[9],
        Fault::Partition {
            peer: Peer::Database,
            ..
        } => KINDS[10],
        Fault::Partition {
            peer: Peer::Broker, ..
        } => KINDS[11],
        Fault::KillLeader { .. } => KINDS[12],
        Fault::KillController { .. } => KINDS[13],
        Fault::IsolateBroker { .. } => KINDS[14],
        Fault::TwoDown { .. } => KINDS[15],
        Fault::RollingRestart => KINDS[16],
        Fault::KillCoordinator { .. } => KINDS[17],
    }
}

/// What must be fully in sync before and after a broker fault: the event
/// topics and the consumer groups' offsets.
fn in_sync_topics() -> Vec<String> {
    let mut topics = mall_saga::Topics::new(crate::PREFIX).events();
    topics.push("__consumer_offsets".to_owned());
    topics
}

/// Carries out one fault; returns how many records it sent.
async fn carry_out(fault: &Fault, targets: &Targets) -> anyhow::Result<u64> {
    match fault {
        Fault::Kill { replica, down } => {
            let mut replica = targets.fleet.replicas[*replica].lock().await;
            tracing::info!(replica = %replica.name, down_ms = down.as_millis() as u64, "Fault: SIGKILL.");
            replica.kill().await?;
            tokio::time::sleep(*down).await;
            replica.start("after SIGKILL").await?;
            Ok(0)
        }
        Fault::RestartPostgres => {
            tracing::info!("Fault: PostgreSQL crash-restart.");
            targets.postgres.crash_restart().await?;
            Ok(0)
        }
        Fault::KillBroker { node, down } => {
            let mut kafka = targets.kafka.lock().await;
            tracing::info!(
                node,
                down_ms = down.as_millis() as u64,
                "Fault: Kafka node kill -9."
            );
            kafka.kill(*node).await?;
            tokio::time::sleep(*down).await;
            kafka.restart(*node).await?;
            Ok(0)
        }
        Fault::BrokerOutage { down } => {
            let mut kafka = targets.kafka.lock().await;
            tracing::info!(
                down_ms = down.as_millis() as u64,
                "Fault: every Kafka node kill -9."
            );
            for node in 0..kafka.len() {
                kafka.kill(node).await?;
            }
            tokio::time::sleep(*down).await;
            kafka.restart_all().await?;
            Ok(0)
        }
        Fault::KillLeader {
            topic,
            partition,
            down,
        } => {
            let mut kafka = targets.kafka.lock().await;
            let topic = mall_saga::Topics::new(crate::PREFIX).events()[*topic].clone();
            let node = cluster::leader_of(&kafka, &topic, *partition).await?;
            tracing::info!(%topic, partition, node, "Fault: kill -9 of a partition leader.");
            cluster::kill_for(&mut kafka, node, *down).await?;
            Ok(0)
        }
        Fault::KillController { down } => {
            let mut kafka = targets.kafka.lock().await;
            let node = cluster::controller(&kafka).await?;
            tracing::info!(node, "Fault: kill -9 of the active controller.");
            cluster::kill_for(&mut kafka, node, *down).await?;
            Ok(0)
        }
        Fault::IsolateBroker { node, window } => {
            let kafka = targets.kafka.lock().await;
            let uid = kafka
                .uid(*node)
                .context("isolating a broker needs its own uid")?;
            tracing::info!(
                node,
                window_ms = window.as_millis() as u64,
                "Fault: broker isolated."
            );
            let table = format!("mall_chaos_kafka_{}_{node}", std::process::id());
            let seen =
                cluster::isolate(&kafka, *node, uid, *window, &in_sync_topics(), &table).await?;
            tracing::info!(
                node,
                shrank_after_ms = seen.shrank_after.as_millis() as u64,
                regrown_after_ms = seen.regrown_after.as_millis() as u64,
                "The ISR shrank without the isolated broker and grew back after the heal."
            );
            Ok(0)
        }
        Fault::TwoDown { first, down } => {
            let mut kafka = targets.kafka.lock().await;
            tracing::info!(
                first,
                down_ms = down.as_millis() as u64,
                "Fault: two brokers down."
            );
            cluster::two_down(&mut kafka, *first, *down).await?;
            Ok(0)
        }
        Fault::RollingRestart => {
            let mut kafka = targets.kafka.lock().await;
            tracing::info!("Fault: rolling restart of every broker.");
            cluster::rolling_restart(&mut kafka, &in_sync_topics()).await?;
            Ok(0)
        }
        Fault::KillCoordinator { service, down } => {
            let service = mall_saga::Service::ALL[*service];
            let role = Role::Service(service);
            let index = targets
                .fleet
                .roles
                .iter()
                .position(|r| *r == role)
                .with_context(|| format!("no replica of {role:?}"))?;
            let group = mall_saga::Topics::new(crate::PREFIX).group_of(service);
            let mut kafka = targets.kafka.lock().await;
            let node = cluster::coordinator_of(&kafka, &group).await?;
            {
                // A member gone without leaving and a new one joining: the
                // group rebalances until the old session times out.
                let mut replica = targets.fleet.replicas[index].lock().await;
                replica.kill().await?;
                replica.start("to make its group rebalance").await?;
            }
            tracing::info!(%group, node, "Fault: kill -9 of the group coordinator in a rebalance.");
            cluster::kill_for(&mut kafka, node, *down).await?;
            Ok(0)
        }
        Fault::Replay { topic, pick } => targets.injector.replay(*topic, *pick).await,
        Fault::Reorder { topic, pick } => targets.injector.reorder(*topic, *pick).await,
        Fault::Poison { round } => targets.injector.poison(*round).await,
        Fault::ReadOnly { service, window } => {
            let (name, _) = &targets.databases[*service];
            tracing::info!(database = %name, window_ms = window.as_millis() as u64, "Fault: read-only window.");
            crate::ops::read_only_window(&targets.admin_url, name, *window).await?;
            Ok(0)
        }
        Fault::LockContention { window } => {
            let (_, url) = &targets.databases[2];
            tracing::info!(
                window_ms = window.as_millis() as u64,
                "Fault: lock contention on the inventory."
            );
            let deadlocks = crate::ops::lock_contention(url, *window).await?;
            Ok(deadlocks.max(0) as u64)
        }
        Fault::Partition {
            replica,
            peer,
            window,
        } => {
            let uid = targets.fleet.uids[*replica]
                .context("partitions need replicas under their own uids")?;
            let ports = match peer {
                Peer::Database => vec![targets.postgres.port],
                Peer::Broker => {
                    let kafka = targets.kafka.lock().await;
                    (0..kafka.len())
                        .filter_map(|n| kafka.broker_port(n))
                        .collect()
                }
            };
            let name = &targets.fleet.names[*replica];
            tracing::info!(replica = %name, ?peer, window_ms = window.as_millis() as u64, "Fault: network partition.");
            let table = format!(
                "mall_chaos_{}_{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            crate::ops::partition(uid, &ports, *window, &table).await?;
            Ok(0)
        }
    }
}
