//! Faults of the Kafka cluster itself: a leader election under load, the
//! active controller's death, a broker cut off until the ISR shrinks, two
//! brokers down (below `min.insync.replicas`), a rolling restart, and a
//! group coordinator killed while its group rebalances. Each one checks
//! from outside that it did what it says (the ISR really shrank and grew
//! back, the cluster is fully in sync again) before it counts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mall_testkit::Kafka;
use mall_testkit::kafka::view::{self, PartitionView};

/// How much longer an isolation may last than planned while the ISR has
/// not shrunk yet.
const SHRINK_PATIENCE: Duration = Duration::from_secs(60);

/// How long the cluster may take to have every partition in sync again.
const IN_SYNC_PATIENCE: Duration = Duration::from_secs(180);

/// A running node other than `except`'s, to ask the cluster from.
fn witness(kafka: &Kafka, except: Option<usize>) -> anyhow::Result<String> {
    (0..kafka.len())
        .filter(|&i| Some(i) != except && kafka.is_running(i))
        .find_map(|i| kafka.broker_port(i))
        .map(|port| format!("127.0.0.1:{port}"))
        .context("no running Kafka node to ask")
}

/// The partitions of `topics` as a running node reports them.
async fn partitions(kafka: &Kafka, topics: &[String]) -> anyhow::Result<Vec<PartitionView>> {
    Ok(view::partitions(&witness(kafka, None)?, topics).await?)
}

/// Waits until no partition of `topics` is under-replicated and each has a
/// leader: the state an operator waits for between two broker restarts.
pub async fn wait_in_sync(kafka: &Kafka, topics: &[String]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(views) = partitions(kafka, topics).await
            && !views.is_empty()
            && views.iter().all(|p| p.leader >= 0 && !p.under_replicated())
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > IN_SYNC_PATIENCE {
            bail!("the cluster was not fully in sync within {IN_SYNC_PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The index of the node leading `partition` of `topic`.
pub async fn leader_of(kafka: &Kafka, topic: &str, partition: i32) -> anyhow::Result<usize> {
    let views = partitions(kafka, &[topic.to_owned()]).await?;
    let leader = views
        .iter()
        .find(|p| p.partition == partition)
        .map(|p| p.leader)
        .with_context(|| format!("no partition {partition} of {topic}"))?;
    u32::try_from(leader)
        .ok()
        .and_then(|id| kafka.index_of(id))
        .with_context(|| format!("partition {partition} of {topic} has no leader"))
}

/// The index of the node coordinating consumer group `group`: the leader of
/// its partition of `__consumer_offsets`.
pub async fn coordinator_of(kafka: &Kafka, group: &str) -> anyhow::Result<usize> {
    let offsets_partitions = mall_testkit::kafka::shared_setting("offsets.topic.num.partitions")
        .and_then(|v| v.parse().ok())
        .context("offsets.topic.num.partitions in deploy/kafka/server.properties")?;
    let partition = view::offsets_partition(group, offsets_partitions);
    leader_of(kafka, "__consumer_offsets", partition).await
}

/// The index of the active KRaft controller.
pub async fn controller(kafka: &Kafka) -> anyhow::Result<usize> {
    let id = kafka.active_controller().await?;
    kafka
        .index_of(id)
        .with_context(|| format!("no node has id {id}"))
}

/// `kill -9` of the node at `index`, started again after `down`.
pub async fn kill_for(kafka: &mut Kafka, index: usize, down: Duration) -> anyhow::Result<()> {
    kafka.kill(index).await?;
    tokio::time::sleep(down).await;
    kafka.restart(index).await?;
    Ok(())
}

/// Every node in turn: a controlled shutdown, a start, and a wait until
/// `topics` are fully in sync before the next, as an operator rolls a
/// cluster.
pub async fn rolling_restart(kafka: &mut Kafka, topics: &[String]) -> anyhow::Result<()> {
    for index in 0..kafka.len() {
        wait_in_sync(kafka, topics).await?;
        tracing::info!(node = index, "Rolling restart: stopping a node.");
        kafka.stop_node(index).await?;
        kafka.restart(index).await?;
    }
    wait_in_sync(kafka, topics).await?;
    Ok(())
}

/// Two nodes `kill -9`ed at once, below `min.insync.replicas` (and below
/// the controller quorum, the nodes being combined): sends fail and the
/// relays wait. One returns after `down`, the other once the first is in.
pub async fn two_down(kafka: &mut Kafka, first: usize, down: Duration) -> anyhow::Result<()> {
    let second = (first + 1) % kafka.len();
    kafka.kill(first).await?;
    kafka.kill(second).await?;
    tokio::time::sleep(down).await;
    kafka.restart(first).await?;
    tokio::time::sleep(down / 2).await;
    kafka.restart(second).await?;
    Ok(())
}

/// What an isolation showed.
#[derive(Debug, Clone, Copy)]
pub struct Isolation {
    /// How long after the cut a partition's ISR first lacked the node.
    pub shrank_after: Duration,
    /// How long after the heal every partition was in sync again.
    pub regrown_after: Duration,
}

/// Cuts the node at `index` (running as `uid`) off from the other nodes and
/// from every client for `window` (longer, up to a minute more, until the
/// ISR has shrunk), by nftables: every packet its uid sends and every
/// packet sent to its ports is dropped. Then heals. Fails unless
/// some partition of `topics` that the node replicates lost it from its ISR
/// during the window, and every partition was in sync again after.
pub async fn isolate(
    kafka: &Kafka,
    index: usize,
    uid: u32,
    window: Duration,
    topics: &[String],
    table: &str,
) -> anyhow::Result<Isolation> {
    let id = kafka.node_id(index).context("no such node")? as i32;
    let ports: Vec<u16> = [kafka.broker_port(index), kafka.controller_port(index)]
        .into_iter()
        .flatten()
        .collect();
    let ask = witness(kafka, Some(index))?;
    let cut_at = Instant::now();
    crate::ops::isolate(uid, &ports, table).await?;
    // The cut lasts `window`, and longer if the ISR has not shrunk yet: a
    // shrink commits only through an active controller, and when the
    // isolated node was the controller the others must elect one first.
    let mut shrank_after = None;
    while cut_at.elapsed() < window
        || (shrank_after.is_none() && cut_at.elapsed() < window + SHRINK_PATIENCE)
    {
        if shrank_after.is_none()
            && let Ok(views) = view::partitions(&ask, topics).await
            && views
                .iter()
                .any(|p| p.replicas.contains(&id) && !p.isr.contains(&id))
        {
            shrank_after = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    crate::ops::heal(table).await?;
    let regrown_after = wait_in_sync(kafka, topics).await?;
    let shrank_after = shrank_after
        .with_context(|| format!("node {id} stayed in every ISR through a {window:?} isolation"))?;
    Ok(Isolation {
        shrank_after,
        regrown_after,
    })
}
