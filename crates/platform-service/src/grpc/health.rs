//! Truthful health: a service says `SERVING` only while its database and
//! its broker answer, none of its background tasks has died, and it is not
//! shutting down.
//!
//! A monitor probes both every [`PROBE_PERIOD`]; an outage shorter than the
//! configured threshold (`HEALTH_UNAVAILABLE_AFTER_SECS`) changes nothing,
//! since a failover or a broker restart is waited out anyway. What to report
//! is decided by the pure [`decide`]; the monitor only probes and reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::db::PgPool;
use platform_core::kafka::LogContext;
use platform_core::kafka_refusal::Refusals;

/// How often the database and the broker are probed.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// How long one probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the monitor knows at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Since when the database has failed every probe, if it does.
    pub database_down_since: Option<Instant>,
    /// Since when the broker has failed every probe, if it does.
    pub broker_down_since: Option<Instant>,
    /// A background task ended or panicked.
    pub task_failed: bool,
    /// Shutdown has begun.
    pub stopping: bool,
    /// The broker refused this service's principal lately (an ACL is
    /// missing), in the words of the consumer's log.
    pub refused: Option<String>,
}

/// The status to report, and why when it is not `SERVING`.
pub fn decide(observed: &Observed, now: Instant, threshold: Duration) -> (ServingStatus, String) {
    let down_too_long =
        |since: Option<Instant>| since.is_some_and(|at| now.duration_since(at) >= threshold);
    let reason = if observed.task_failed {
        "a background task ended".to_owned()
    } else if observed.stopping {
        "shutting down".to_owned()
    } else if down_too_long(observed.database_down_since) {
        format!("the database has not answered for over {threshold:?}")
    } else if down_too_long(observed.broker_down_since) {
        format!("the broker has not answered for over {threshold:?}")
    } else if let Some(refusal) = &observed.refused {
        refusal.clone()
    } else {
        return (ServingStatus::Serving, String::new());
    };
    (ServingStatus::NotServing, reason)
}

/// The same verdict as the gRPC health service, for `GET /health` on the
/// plaintext metrics endpoint: what a probe can ask when gRPC speaks TLS
/// (Kubernetes' gRPC probes cannot).
#[derive(Clone, Default)]
pub struct Verdict(Arc<std::sync::Mutex<(bool, String)>>);

impl Verdict {
    /// Not serving yet: the gRPC server has not started.
    pub fn starting() -> Self {
        Self(Arc::new(std::sync::Mutex::new((
            false,
            "starting".to_owned(),
        ))))
    }

    fn set(&self, serving: bool, reason: &str) {
        let text = if serving { "serving" } else { reason };
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (serving, text.to_owned());
    }

    /// The check the metrics endpoint answers `GET /health` with.
    pub fn check(&self) -> platform_core::metrics::HealthCheck {
        let verdict = self.clone();
        Arc::new(move || {
            verdict
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }
}

/// The health of one server: every name it reports on, set together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Vec<&'static str>,
    verdict: Verdict,
}

impl Health {
    /// Reports for `names` (and the whole server, `""`) through `reporter`,
    /// and to `verdict`.
    pub fn new(reporter: HealthReporter, names: &[&'static str], verdict: Verdict) -> Self {
        let mut names = names.to_vec();
        names.push("");
        Self {
            reporter,
            names,
            verdict,
        }
    }

    /// Sets every name to `status`, `reason` saying why when not serving.
    pub async fn set(&self, status: ServingStatus, reason: &str) {
        self.verdict.set(status == ServingStatus::Serving, reason);
        for name in &self.names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

/// What the monitor probes.
pub struct Probes {
    /// The service's pool.
    pub pool: PgPool,
    /// A client for metadata requests (no group: it never consumes).
    pub broker: Arc<BaseConsumer<LogContext>>,
    /// A topic the service uses, whose metadata is asked for.
    pub topic: String,
    /// The consumer's authorisation refusals.
    pub refusals: Arc<Refusals>,
}

impl Probes {
    async fn database(&self) -> bool {
        let probe = async {
            let mut conn = self.pool.get().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Some(_))
        )
    }

    async fn broker(&self) -> bool {
        let (client, topic) = (Arc::clone(&self.broker), self.topic.clone());
        let asked = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(Some(&topic), PROBE_TIMEOUT).is_ok()
        });
        matches!(asked.await, Ok(true))
    }
}

/// Probes until `shutdown` or `failed` fires, reporting through `health`;
/// then reports `NOT_SERVING` for good.
pub async fn monitor(
    health: Health,
    probes: Probes,
    threshold: Duration,
    shutdown: CancellationToken,
    failed: CancellationToken,
) {
    let mut observed = Observed::default();
    let mut reported = ServingStatus::Serving;
    loop {
        let now = Instant::now();
        let (database, broker) = tokio::join!(probes.database(), probes.broker());
        observed.database_down_since = if database {
            None
        } else {
            observed.database_down_since.or(Some(now))
        };
        observed.broker_down_since = if broker {
            None
        } else {
            observed.broker_down_since.or(Some(now))
        };
        // A refusal counts while it keeps coming: the consumer retries every
        // half second, so one seen within the threshold is still current.
        observed.refused = probes.refusals.recent(now, threshold.max(PROBE_PERIOD * 5));
        observed.task_failed = failed.is_cancelled();
        observed.stopping = shutdown.is_cancelled();
        let (status, reason) = decide(&observed, Instant::now(), threshold);
        if status != reported {
            if status == ServingStatus::Serving {
                tracing::info!("Database and broker answer again; health is SERVING.");
            } else if observed.refused.is_some() {
                tracing::error!(%reason, "Health is NOT_SERVING.");
            } else if observed.task_failed {
                tracing::error!(%reason, "Health is NOT_SERVING.");
            } else if observed.stopping {
                tracing::info!(%reason, "Health is NOT_SERVING.");
            } else {
                tracing::warn!(%reason, "Health is NOT_SERVING.");
            }
            health.set(status, &reason).await;
            reported = status;
        }
        if observed.task_failed || observed.stopping {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = failed.cancelled() => {}
            () = tokio::time::sleep(PROBE_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn serving_while_everything_answers() {
        let (status, reason) = decide(&Observed::default(), Instant::now(), LIMIT);
        assert_eq!(status, ServingStatus::Serving);
        assert!(reason.is_empty());
    }

    #[test]
    fn a_short_outage_is_waited_out_and_a_long_one_is_reported() {
        let start = Instant::now();
        for which in ["database", "broker"] {
            let observed = Observed {
                database_down_since: (which == "database").then_some(start),
                broker_down_since: (which == "broker").then_some(start),
                ..Observed::default()
            };
            let early = decide(&observed, start + LIMIT / 2, LIMIT);
            assert_eq!(early.0, ServingStatus::Serving, "{which}");
            let (status, reason) = decide(&observed, start + LIMIT, LIMIT);
            assert_eq!(status, ServingStatus::NotServing, "{which}");
            assert!(reason.contains(which), "{reason}");
        }
    }

    #[test]
    fn a_refused_principal_is_not_serving_and_says_why() {
        let observed = Observed {
            refused: Some("Kafka refused User:x the Read operation on group g".into()),
            ..Observed::default()
        };
        let (status, reason) = decide(&observed, Instant::now(), LIMIT);
        assert_eq!(status, ServingStatus::NotServing);
        assert!(
            reason.contains("User:x") && reason.contains("group g"),
            "{reason}"
        );
    }

    #[test]
    fn a_dead_task_and_shutdown_are_never_serving() {
        let now = Instant::now();
        for observed in [
            Observed {
                task_failed: true,
                ..Observed::default()
            },
            Observed {
                stopping: true,
                ..Observed::default()
            },
        ] {
            assert_eq!(decide(&observed, now, LIMIT).0, ServingStatus::NotServing);
        }
    }
}
