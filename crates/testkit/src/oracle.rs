//! The one invariant oracle of docs/saga.md, for the e2e tests and the
//! fault run alike: what the public gRPC APIs show once the mall is quiet
//! (every order settled, approved iff its delivery started, stock exact,
//! never negative) held against the stock the run started with and, when
//! the caller kept it, what the customers were told (every acknowledged
//! order there and unchanged, no extra order, cancellations cancelled, no
//! wrong answer). [`judge`] is pure, and its tests feed it broken histories.

use std::collections::HashMap;

use mall_proto::delivery::v1::delivery_service_client::DeliveryServiceClient;
use mall_proto::delivery::v1::{Delivery, DeliveryStatus, ListDeliveriesRequest};
use mall_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use mall_proto::inventory::v1::{Inventory, ListInventoriesRequest};
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::order::v1::{ListOrdersRequest, Order, OrderStatus};
use tonic::transport::Channel;

/// What the customers saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Acknowledged orders: id → (product, qty).
    pub placed: HashMap<i64, (i64, i64)>,
    /// Calls whose outcome was unknown (the replica died mid-call) and were
    /// retried with the same `request_id`, so none may leave an extra order.
    pub ambiguous: usize,
    /// Orders whose cancellation was acknowledged.
    pub cancelled: Vec<i64>,
    /// Cancellations refused with FAILED_PRECONDITION (already rejected).
    pub cancel_refused: usize,
    /// Answers a correct request must never get, such as INTERNAL.
    pub unexpected: Vec<String>,
}

/// What the checker found; every count but the informational ones must be 0.
#[derive(Debug, Default)]
pub struct Findings {
    /// Orders in the system.
    pub orders: usize,
    /// Final statuses.
    pub approved: usize,
    /// Final statuses.
    pub rejected: usize,
    /// Final statuses.
    pub cancelled: usize,
    /// Orders still PENDING.
    pub stuck: usize,
    /// Events whose effect never appeared: acknowledged orders missing,
    /// orders without a delivery, outbox rows never on the wire, handled
    /// events without an inbox row, poison that never reached a DLQ.
    pub lost: usize,
    /// Units of stock taken beyond the approved orders.
    pub double_taken: i64,
    /// Units of stock given back beyond the approved orders.
    pub double_compensated: i64,
    /// Other broken invariants, spelled out.
    pub violations: Vec<String>,
    /// Distinct poison messages found in dead-letter topics.
    pub dead_lettered: usize,
    /// (poison, consuming group) pairs that must reach a dead-letter topic.
    pub dead_letter_expected: usize,
    /// Dead-letter records in all.
    pub dead_letter_records: usize,
    /// Real saga events found in a dead-letter topic (each also a violation).
    pub real_dead_lettered: usize,
}

impl Findings {
    /// Records a broken invariant, spelled out.
    pub fn violation(&mut self, text: String) {
        if self.violations.len() < 50 {
            tracing::error!(%text, "Invariant broken.");
        }
        self.violations.push(text);
    }

    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.stuck == 0
            && self.lost == 0
            && self.double_taken == 0
            && self.double_compensated == 0
            && self.violations.is_empty()
    }
}

/// The gRPC endpoints of one replica of each service.
pub struct Apis {
    /// Order service.
    pub order: OrderServiceClient<Channel>,
    /// Delivery service.
    pub delivery: DeliveryServiceClient<Channel>,
    /// Inventory service.
    pub inventory: InventoryServiceClient<Channel>,
}

/// Follows `next_page_token` until the last page; `fetch` returns one
/// page's items and the token of the next.
async fn every_page<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, tonic::Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let (mut all, mut page_token) = (Vec::new(), String::new());
    loop {
        let (items, next) = fetch(page_token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        page_token = next;
    }
}

/// Every order, page by page.
pub async fn all_orders(api: &Apis) -> Result<Vec<Order>, tonic::Status> {
    every_page(|page_token| {
        let mut order = api.order.clone();
        async move {
            let page = order
                .list_orders(ListOrdersRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.orders, page.next_page_token))
        }
    })
    .await
}

/// Every delivery, page by page.
pub async fn all_deliveries(api: &Apis) -> Result<Vec<Delivery>, tonic::Status> {
    every_page(|page_token| {
        let mut delivery = api.delivery.clone();
        async move {
            let page = delivery
                .list_deliveries(ListDeliveriesRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.deliveries, page.next_page_token))
        }
    })
    .await
}

/// Every product's inventory, page by page.
pub async fn all_inventories(api: &Apis) -> Result<Vec<Inventory>, tonic::Status> {
    every_page(|page_token| {
        let mut inventory = api.inventory.clone();
        async move {
            let page = inventory
                .list_inventories(ListInventoriesRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.inventories, page.next_page_token))
        }
    })
    .await
}

/// The invariants of docs/saga.md, through the public gRPC APIs only.
pub async fn public_invariants(
    api: &Apis,
    initial_stock: &HashMap<i64, i64>,
    outcome: Option<&Outcome>,
    findings: &mut Findings,
) -> Result<(), tonic::Status> {
    let orders = all_orders(api).await?;
    let deliveries: HashMap<i64, Delivery> = all_deliveries(api)
        .await?
        .into_iter()
        .map(|d| (d.order_id, d))
        .collect();
    let stock: HashMap<i64, i64> = all_inventories(api)
        .await?
        .into_iter()
        .map(|i| (i.id, i.stock))
        .collect();
    judge(
        &State {
            orders: &orders,
            deliveries: &deliveries,
            stock: &stock,
        },
        initial_stock,
        outcome,
        findings,
    );
    Ok(())
}

/// What the public APIs showed once the mall was quiet.
pub struct State<'a> {
    /// Every order.
    pub orders: &'a [Order],
    /// Every delivery, by order id.
    pub deliveries: &'a HashMap<i64, Delivery>,
    /// Every product's stock.
    pub stock: &'a HashMap<i64, i64>,
}

/// Holds `state` against the invariants, the stock the run started with and
/// (when kept) what the customers were told; pure, so it can be fed broken
/// histories.
pub fn judge(
    state: &State<'_>,
    initial_stock: &HashMap<i64, i64>,
    outcome: Option<&Outcome>,
    findings: &mut Findings,
) {
    let State {
        orders,
        deliveries,
        stock,
    } = state;
    findings.orders = orders.len();
    let by_id: HashMap<i64, &Order> = orders.iter().map(|o| (o.id, o)).collect();
    let mut approved_qty: HashMap<i64, i64> = HashMap::new();
    for order in orders.iter() {
        match order.status() {
            OrderStatus::Approved => {
                findings.approved += 1;
                *approved_qty.entry(order.product_id).or_default() += order.qty;
            }
            OrderStatus::Rejected => findings.rejected += 1,
            OrderStatus::Cancelled => findings.cancelled += 1,
            _ => {
                findings.stuck += 1;
                continue;
            }
        }
        let Some(delivery) = deliveries.get(&order.id) else {
            findings.lost += 1;
            findings.violation(format!(
                "order {} has no delivery (OrderCreated lost)",
                order.id
            ));
            continue;
        };
        let started = delivery.status() == DeliveryStatus::Started;
        if started != (order.status() == OrderStatus::Approved) {
            findings.violation(format!(
                "order {} is {:?} but its delivery is {:?}",
                order.id,
                order.status(),
                delivery.status()
            ));
        }
    }
    for (&product, &initial) in initial_stock {
        let now = stock.get(&product).copied().unwrap_or(i64::MIN);
        let expected = initial - approved_qty.get(&product).copied().unwrap_or(0);
        if now < 0 {
            findings.violation(format!("stock of product {product} is negative: {now}"));
        }
        if now < expected {
            findings.double_taken += expected - now;
        } else if now > expected {
            findings.double_compensated += now - expected;
        }
    }
    let Some(outcome) = outcome else {
        return;
    };
    for (id, &(product, qty)) in &outcome.placed {
        match by_id.get(id) {
            None => {
                findings.lost += 1;
                findings.violation(format!("acknowledged order {id} is missing"));
            }
            Some(order) if order.product_id != product || order.qty != qty => {
                findings.violation(format!("order {id} changed: {order:?}"));
            }
            Some(_) => {}
        }
    }
    // Every call carries a request_id and retries reuse it, so even the
    // ambiguous calls may not leave an extra order: exactly the acknowledged.
    if orders.len() != outcome.placed.len() {
        findings.violation(format!(
            "{} orders exist but {} were acknowledged ({} calls were retried \
             after an unknown outcome): zero extra allowed",
            orders.len(),
            outcome.placed.len(),
            outcome.ambiguous
        ));
    }
    for id in &outcome.cancelled {
        if by_id
            .get(id)
            .is_some_and(|o| o.status() != OrderStatus::Cancelled)
        {
            findings.violation(format!(
                "order {id} was cancelled but is {:?}",
                by_id[id].status()
            ));
        }
    }
    for unexpected in &outcome.unexpected {
        findings.violation(format!("a correct call failed: {unexpected}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TV: i64 = 1;

    fn order(id: i64, qty: i64, status: OrderStatus) -> Order {
        Order {
            id,
            product_id: TV,
            qty,
            status: status.into(),
            ..Default::default()
        }
    }

    fn delivery(order_id: i64, status: DeliveryStatus) -> (i64, Delivery) {
        let delivery = Delivery {
            order_id,
            product_id: TV,
            status: status.into(),
            ..Default::default()
        };
        (order_id, delivery)
    }

    /// A healthy history: order 1 approved (2 taken), order 2 rejected,
    /// order 3 cancelled after approval (its stock given back).
    fn history() -> (
        Vec<Order>,
        HashMap<i64, Delivery>,
        HashMap<i64, i64>,
        Outcome,
    ) {
        let orders = vec![
            order(1, 2, OrderStatus::Approved),
            order(2, 50, OrderStatus::Rejected),
            order(3, 1, OrderStatus::Cancelled),
        ];
        let deliveries = HashMap::from([
            delivery(1, DeliveryStatus::Started),
            delivery(2, DeliveryStatus::Cancelled),
            delivery(3, DeliveryStatus::Cancelled),
        ]);
        let stock = HashMap::from([(TV, 8)]);
        let outcome = Outcome {
            placed: HashMap::from([(1, (TV, 2)), (2, (TV, 50)), (3, (TV, 1))]),
            ambiguous: 0,
            cancelled: vec![3],
            cancel_refused: 0,
            unexpected: Vec::new(),
        };
        (orders, deliveries, stock, outcome)
    }

    fn findings_of(
        orders: &[Order],
        deliveries: &HashMap<i64, Delivery>,
        stock: &HashMap<i64, i64>,
        outcome: &Outcome,
    ) -> Findings {
        let mut findings = Findings::default();
        let state = State {
            orders,
            deliveries,
            stock,
        };
        judge(
            &state,
            &HashMap::from([(TV, 10)]),
            Some(outcome),
            &mut findings,
        );
        findings
    }

    #[test]
    fn a_healthy_history_passes() {
        let (orders, deliveries, stock, outcome) = history();
        let findings = findings_of(&orders, &deliveries, &stock, &outcome);
        assert!(findings.passed(), "{findings:?}");
        assert_eq!(
            (findings.approved, findings.rejected, findings.cancelled),
            (1, 1, 1)
        );
    }

    #[test]
    fn without_what_customers_were_told_the_state_alone_is_judged() {
        let (orders, deliveries, stock, _) = history();
        let mut findings = Findings::default();
        let state = State {
            orders: &orders,
            deliveries: &deliveries,
            stock: &stock,
        };
        judge(&state, &HashMap::from([(TV, 10)]), None, &mut findings);
        assert!(findings.passed(), "{findings:?}");
        let taken_twice = HashMap::from([(TV, 7)]);
        let mut findings = Findings::default();
        let state = State {
            orders: &orders,
            deliveries: &deliveries,
            stock: &taken_twice,
        };
        judge(&state, &HashMap::from([(TV, 10)]), None, &mut findings);
        assert_eq!(findings.double_taken, 1);
    }

    #[test]
    fn a_pending_order_is_stuck() {
        let (mut orders, deliveries, stock, outcome) = history();
        orders[1].status = OrderStatus::Pending.into();
        let findings = findings_of(&orders, &deliveries, &stock, &outcome);
        assert_eq!(findings.stuck, 1);
        assert!(!findings.passed());
    }

    #[test]
    fn stock_taken_twice_or_given_back_twice_is_caught() {
        let (orders, deliveries, _, outcome) = history();
        let taken_twice = findings_of(&orders, &deliveries, &HashMap::from([(TV, 6)]), &outcome);
        assert_eq!(taken_twice.double_taken, 2);
        assert!(!taken_twice.passed());
        let given_twice = findings_of(&orders, &deliveries, &HashMap::from([(TV, 9)]), &outcome);
        assert_eq!(given_twice.double_compensated, 1);
        assert!(!given_twice.passed());
    }

    #[test]
    fn approved_iff_delivery_started() {
        let (orders, mut deliveries, stock, outcome) = history();
        deliveries.insert(1, delivery(1, DeliveryStatus::Cancelled).1);
        assert!(!findings_of(&orders, &deliveries, &stock, &outcome).passed());
        let (orders, mut deliveries, stock, outcome) = history();
        deliveries.insert(2, delivery(2, DeliveryStatus::Started).1);
        assert!(!findings_of(&orders, &deliveries, &stock, &outcome).passed());
    }

    #[test]
    fn lost_and_extra_orders_are_caught() {
        let (orders, mut deliveries, stock, outcome) = history();
        deliveries.remove(&2);
        let no_delivery = findings_of(&orders, &deliveries, &stock, &outcome);
        assert_eq!(
            no_delivery.lost, 1,
            "an order without a delivery lost its OrderCreated"
        );

        let (mut orders, deliveries, stock, outcome) = history();
        orders.remove(1);
        let missing = findings_of(&orders, &deliveries, &stock, &outcome);
        assert!(missing.lost >= 1, "an acknowledged order vanished");
        assert!(!missing.passed());

        let (mut orders, mut deliveries, stock, outcome) = history();
        orders.push(order(4, 1, OrderStatus::Rejected));
        deliveries.insert(4, delivery(4, DeliveryStatus::Cancelled).1);
        let extra = findings_of(&orders, &deliveries, &stock, &outcome);
        assert!(!extra.passed(), "a retried call left an extra order");
    }

    #[test]
    fn a_cancelled_order_that_is_not_cancelled_or_a_wrong_answer_fails() {
        let (orders, deliveries, stock, mut outcome) = history();
        outcome.cancelled.push(1);
        assert!(!findings_of(&orders, &deliveries, &stock, &outcome).passed());
        let (orders, deliveries, stock, mut outcome) = history();
        outcome.unexpected.push("INTERNAL on PlaceOrder".into());
        assert!(!findings_of(&orders, &deliveries, &stock, &outcome).passed());
    }
}
