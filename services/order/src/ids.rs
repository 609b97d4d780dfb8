//! Order ids drawn ahead, in blocks, so that `PlaceOrder` knows its order's
//! id before it writes: the order, its request id and its `OrderCreated`
//! (whose payload carries the id) then go in one statement, one round trip
//! (see `place`). One round trip in `BLOCK` orders draws the next block
//! from `orders_id_seq`, as the column's default would have.
//!
//! What it changes: ids are still unique and come from the same sequence,
//! but a replica hands out its block while others hand out theirs, so ids
//! no longer follow the time orders were placed across replicas (they never
//! followed commit order), and the ids of a block not used up when a
//! replica stops are never used (a sequence has gaps anyway).

use std::collections::VecDeque;

use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::Mutex;

/// How many ids one round trip draws.
pub const BLOCK: i64 = 64;

/// Ids drawn from `orders_id_seq` and not handed out yet.
#[derive(Debug, Default)]
pub struct OrderIds {
    drawn: Mutex<VecDeque<i64>>,
}

#[derive(diesel::QueryableByName)]
struct Drawn {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

impl OrderIds {
    /// The next id, drawing a block on `conn` when none is left.
    pub async fn next(&self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
        let mut drawn = self.drawn.lock().await;
        if let Some(id) = drawn.pop_front() {
            return Ok(id);
        }
        let block: Vec<Drawn> =
            diesel::sql_query("SELECT nextval('orders_id_seq') AS id FROM generate_series(1, $1)")
                .bind::<BigInt, _>(BLOCK)
                .load(conn)
                .await?;
        drawn.extend(block.into_iter().map(|row| row.id));
        drawn
            .pop_front()
            .ok_or_else(|| diesel::result::Error::NotFound)
    }
}
