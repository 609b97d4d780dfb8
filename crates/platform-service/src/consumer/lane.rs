//! The task of one lane: its partition's records, strictly in order, in
//! runs of what the partition's queue already holds (never waiting for
//! more), each handled by the [`Processor`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::context::{Client, PartitionQueue};
use super::handler::EventHandler;
use super::lanes;
use super::process::Processor;
use super::receive_errors::{self, ErrorPace};

/// Records a lane hands over at most in one run.
pub const MAX_RUN: usize = 64;

/// The task of one lane: its partition's records, strictly in order.
pub(super) async fn run_lane<H: EventHandler>(
    processor: Arc<Processor<H>>,
    client: Arc<Client>,
    queue: Arc<PartitionQueue>,
    activity: Arc<lanes::Activity>,
    stop: CancellationToken,
    halt: CancellationToken,
) {
    // `stop` fires on a revoke, or with the whole consumer (its parent).
    let mut pace = ErrorPace::default();
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            received = queue.recv() => received.map(|m| m.detach()),
        };
        let mut run = match received {
            Ok(message) => vec![message],
            Err(error) => {
                let step = pace.after_error(tokio::time::Instant::now());
                if let Some(unlogged) = step.log {
                    tracing::warn!(%error, unlogged, "Kafka receive failed on a partition; retrying.");
                }
                if step.pause {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(receive_errors::FLOOD_PAUSE) => {}
                    }
                }
                continue;
            }
        };
        // Whatever else the partition's queue holds already joins the run
        // (never waiting for more), so the records share one commit.
        while run.len() < MAX_RUN {
            match futures::FutureExt::now_or_never(queue.recv()) {
                Some(Ok(message)) => run.push(message.detach()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "Kafka receive failed on a partition; handling the run so far.");
                    break;
                }
                None => break,
            }
        }
        activity.begin();
        let handled = processor.process_run(&client, &run, &stop, &halt).await;
        activity.end();
        if !handled || stop.is_cancelled() {
            break;
        }
        if let Some(last) = run.last() {
            fault_stop_fetching(
                &client,
                rdkafka::Message::topic(last),
                rdkafka::Message::partition(last),
            );
        }
    }
    // What the queue still holds is fetched again by the partition's next owner.
}

/// Fault test: the client silently stops fetching this partition, as after a
/// lost session whose rejoin never completed; only the self-healing check
/// can notice. Compiled out without the `failpoints` feature.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn fault_stop_fetching(client: &Client, topic: &str, partition: i32) {
    fail::fail_point!("consumer::stop-fetching", |_| {
        use rdkafka::consumer::Consumer;
        tracing::error!(%topic, partition, "Failpoint: the client stops fetching a partition.");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(topic, partition);
        if let Err(error) = client.pause(&list) {
            tracing::error!(%error, "Failpoint could not pause.");
        }
    });
}
