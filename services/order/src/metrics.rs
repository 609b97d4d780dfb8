//! The order service's own figure: how long a saga takes from the order's
//! creation to its final state, by outcome.

use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::sql_types::Double;
use platform_service::metrics::{self, HistogramVec, Registry};

use crate::domain::OrderStatus;

/// The order's age in seconds, computed by the database in the
/// transaction that settles it (no clock of this host involved).
pub fn age_seconds() -> SqlLiteral<Double> {
    sql::<Double>("extract(epoch FROM now() - orders.created_at)::float8")
}

/// `saga_duration_seconds{outcome}`.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    duration: HistogramVec,
}

impl SagaMetrics {
    /// Creates the histogram and exports it through `registry`.
    pub fn new(registry: &Registry) -> Self {
        let duration = metrics::latency_vec(
            "saga_duration_seconds",
            "Time from an order's creation to its final state (approved, rejected or \
             cancelled), observed when the state is written.",
            &["outcome"],
        );
        metrics::register(registry, &duration);
        Self { duration }
    }

    /// An order reached `status` `age` seconds after it was created. A
    /// transaction retried after this call observes again: rare, and only
    /// a histogram sample.
    pub fn finished(&self, status: OrderStatus, age: f64) {
        let outcome = match status {
            OrderStatus::Pending => return,
            OrderStatus::Approved => "approved",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        };
        self.duration
            .with_label_values(&[outcome])
            .observe(age.max(0.0));
    }
}
