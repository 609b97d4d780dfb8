//! Durability settings are checked, not assumed: a service refuses to start
//! on a consumed topic that keeps records longer than its inbox remembers
//! them, since a late redelivery would then be applied twice.

use mall_e2e::mall::{PARTITIONS, brokers, service_args};
use mall_e2e::{postgres, unique_name};
use mall_saga::Topics;
use platform_service::kafka::{Retention, ensure_topics};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_kept_forever_is_refused_at_start_up() {
    platform_service::telemetry::init();
    let prefix = unique_name("t");
    let topics = Topics::new(&prefix);
    // Someone created the order topic, which delivery consumes, by hand.
    ensure_topics(
        &brokers(),
        &[topics.order_events()],
        PARTITIONS,
        1,
        Retention::Forever,
        None,
    )
    .await
    .expect("create the topic");
    let database = postgres::create_database(&format!("{prefix}_delivery")).await;
    let args = service_args(&database, &brokers(), &prefix);
    let refused = match delivery_service::start(&args, CancellationToken::new()).await {
        Ok(_) => panic!("delivery started on a topic kept forever"),
        Err(error) => error.to_string(),
    };
    assert!(
        refused.contains(&topics.order_events())
            && refused.contains("keeps records forever")
            && refused.contains("INBOX_RETENTION_SECS"),
        "{refused}"
    );
}
