//! PostgreSQL connections that notice a dead peer within a bounded time.
//!
//! A partition (a dropped route, a stuck firewall, a failed-over host) does
//! not close a TCP connection: both ends wait, by the OS defaults for about
//! two hours. Meanwhile the server keeps the session's advisory locks (the
//! relay's leadership) and open transactions (row locks a consumer needs).
//! So every connection sets keepalives and a TCP user timeout on
//! both ends:
//!
//! * the client side (`tokio_postgres::Config`), so our process gives up on a
//!   dead connection and reconnects;
//! * the server side (the session's `tcp_keepalives_*` and `tcp_user_timeout`),
//!   so the server ends the session, releasing its locks and rolling back its
//!   transaction, after at most [`DEAD_PEER_BOUND`].

use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg_tls::{self, TlsError, TlsMode};

/// A connection string that cannot be used, or a connection that failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The driver refused the string, or the connection failed (with the
    /// causes, e.g. why a TLS handshake failed).
    #[error("{}", chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Its TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// An error and its causes, one after the other: tokio-postgres says only
/// "error performing TLS handshake" and keeps the reason in its source.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes before the connection is declared dead.
pub const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dropped.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a partitioned peer keeps a session (and its locks) alive:
/// idle + interval × retries = 11 s when nothing is in flight, the user
/// timeout (10 s) when something is, plus the last probe's round trip.
/// Tests check a lock comes free within this.
pub const DEAD_PEER_BOUND: Duration = Duration::from_secs(20);

/// The same limits for the server's side of a session, as startup options
/// (`-c name=value`), so they hold from the first byte with no extra round trip.
pub fn server_side_options() -> String {
    format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} \
         -c tcp_keepalives_count={} -c tcp_user_timeout={}",
        KEEPALIVE_IDLE.as_secs(),
        KEEPALIVE_INTERVAL.as_secs(),
        KEEPALIVE_RETRIES,
        TCP_USER_TIMEOUT.as_millis(),
    )
}

/// Parses `url` (a URL or a key=value string, as libpq takes) and applies the
/// limits above to both sides. Startup `options` the URL already has are
/// kept, after ours, so an operator's own value wins. The TLS mode comes
/// from `sslmode` and `sslrootcert` (see [`crate::pg_tls`]).
pub fn config(url: &str) -> Result<(Config, TlsMode), PgError> {
    config_with(url, "")
}

/// [`config`], with `ours` (server options such as `-c lock_timeout=5s`)
/// after the dead-peer limits and before the URL's own options, which win.
pub fn config_with(url: &str, ours: &str) -> Result<(Config, TlsMode), PgError> {
    let (url, tls) = pg_tls::split(url)?;
    let mut config: Config = url.parse()?;
    let ours = format!("{} {ours}", server_side_options());
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{} {theirs}", ours.trim_end()),
        _ => ours.trim_end().to_owned(),
    };
    config
        .options(&options)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    Ok((config, tls))
}

/// A driven connection: TLS or not, the same type.
pub type PgConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens a connection with the limits on both sides and the URL's TLS mode.
/// The caller drives the returned `Connection` (spawns it, or polls it for
/// notifications).
pub async fn connect(url: &str) -> Result<(Client, PgConnection), PgError> {
    connect_with(url, "").await
}

/// [`connect`], with server options of the caller's (see [`config_with`]).
pub async fn connect_with(url: &str, ours: &str) -> Result<(Client, PgConnection), PgError> {
    let (config, tls) = config_with(url, ours)?;
    Ok(config.connect(pg_tls::connector(&tls)?).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_to_urls_and_key_value_strings() {
        for url in [
            "postgres://mall@127.0.0.1:5432/order",
            "host=127.0.0.1 user=mall dbname=order",
        ] {
            let (config, _) = config(url).expect("valid");
            assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
            assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
            assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
            assert_eq!(config.get_options(), Some(server_side_options().as_str()));
        }
    }

    #[test]
    fn an_operators_own_options_are_kept_after_ours() {
        let (config, _) =
            config("postgres://mall@localhost/order?options=-c%20work_mem%3D64MB").expect("valid");
        let options = config.get_options().expect("set");
        assert!(options.starts_with(&server_side_options()), "{options}");
        assert!(options.ends_with("-c work_mem=64MB"), "{options}");
        let (config, _) = config_with(
            "postgres://mall@localhost/order?options=-c%20lock_timeout%3D1s",
            "-c lock_timeout=5000 -c statement_timeout=30000",
        )
        .expect("valid");
        let options = config.get_options().expect("set");
        assert!(options.starts_with(&server_side_options()), "{options}");
        assert!(
            options.ends_with("-c lock_timeout=5000 -c statement_timeout=30000 -c lock_timeout=1s"),
            "the operator's own option comes last and wins: {options}"
        );
    }

    #[test]
    fn the_bound_covers_both_ways_of_noticing() {
        let probes = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_RETRIES;
        assert!(probes < DEAD_PEER_BOUND);
        assert!(TCP_USER_TIMEOUT < DEAD_PEER_BOUND);
        assert!(server_side_options().contains("tcp_user_timeout=10000"));
    }
}
