//! Database errors are classified by the SQLSTATE the real server sends: a
//! value the database cannot store (class 22) or a broken rule (class 23)
//! is permanent, contention and outages wait. Checked against PostgreSQL
//! itself, so a driver that stopped handing the code over would show here.

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use mall_e2e::postgres;
use platform_service::db::{self, Failure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_s_sqlstate_decides_what_waits() {
    let database = postgres::create_database(&mall_e2e::unique_name("sqlstate")).await;
    let pool = db::connect(
        database.url(),
        2,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await
    .expect("pool");
    let mut conn = pool.get().await.expect("connection");

    let cases = [
        // A NUL byte, as a forged event once carried (22021).
        ("SELECT $1::text", "a\0b", "22021", Failure::Permanent),
        // A number out of range (22003).
        (
            "SELECT $1::int * 2147483647",
            "2",
            "22003",
            Failure::Permanent,
        ),
        // Text that is not a number (22P02).
        ("SELECT $1::bigint", "many", "22P02", Failure::Permanent),
        // The statement timeout of every pooled connection (57014).
        ("SELECT pg_sleep(5), $1", "", "57014", Failure::Transient),
    ];
    for (sql, text, code, failure) in cases {
        let error = diesel::sql_query(sql)
            .bind::<Text, _>(text)
            .execute(&mut conn)
            .await
            .expect_err("the server refuses it");
        assert_eq!(
            db::sqlstate(&error).as_deref(),
            Some(code),
            "{sql}: {error}"
        );
        assert_eq!(db::classify(&error), failure, "{sql}: {error}");
    }
    // A broken rule the driver has no name for: exclusion (23P01).
    diesel::sql_query(
        "CREATE TEMPORARY TABLE slots (during int4range, EXCLUDE USING gist (during WITH &&))",
    )
    .execute(&mut conn)
    .await
    .expect("table");
    let insert = "INSERT INTO slots VALUES (int4range($1::int, $1::int + 10))";
    diesel::sql_query(insert)
        .bind::<BigInt, _>(1)
        .execute(&mut conn)
        .await
        .expect("first slot");
    let overlap = diesel::sql_query(insert)
        .bind::<BigInt, _>(5)
        .execute(&mut conn)
        .await
        .expect_err("overlaps");
    assert_eq!(
        db::sqlstate(&overlap).as_deref(),
        Some("23P01"),
        "{overlap}"
    );
    assert_eq!(db::classify(&overlap), Failure::Permanent);
}
