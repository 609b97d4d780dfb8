//! Page size and page token handling shared by every `List*` call.

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

use crate::grpc::error::ApiError;
use crate::store::db::PgPool;

/// Rows a list call returns when the caller asks for no page size, and the
/// most it ever returns in one page.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// A validated page request: return rows with key greater than `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Exclusive lower bound of the row key.
    pub after: i64,
    /// Rows to return.
    pub size: i64,
}

/// Why a page request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// The page size was negative.
    #[error("page_size must be zero (meaning {MAX_PAGE_SIZE}) or positive, got {0}")]
    NegativeSize(i32),
    /// The token was not one this server handed out (shown clipped).
    #[error(
        "page_token {0:?} is not valid; pass the next_page_token of a previous response, or leave it empty"
    )]
    BadToken(String),
}

impl Page {
    /// Validates `page_size` and `page_token` as they arrive on the wire.
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self, PageError> {
        if page_size < 0 {
            return Err(PageError::NegativeSize(page_size));
        }
        let size = if page_size == 0 {
            MAX_PAGE_SIZE
        } else {
            i64::from(page_size).min(MAX_PAGE_SIZE)
        };
        let after = if page_token.is_empty() {
            0
        } else {
            match page_token.parse::<i64>() {
                Ok(after) if after >= 0 => after,
                _ => {
                    return Err(PageError::BadToken(platform_envelope::validate::clip(
                        page_token, 40,
                    )));
                }
            }
        };
        Ok(Self { after, size })
    }

    /// The token for the page after one that ended at `last_key`, or empty
    /// when the page was not full (there is nothing more).
    pub fn next_token(&self, rows: usize, last_key: Option<i64>) -> String {
        match last_key {
            Some(key) if rows as i64 == self.size => key.to_string(),
            _ => String::new(),
        }
    }
}

/// Serves one page of a `List*` call: validates the paging fields, takes a
/// pooled connection, loads the rows above the page's start with
/// `load(conn, page)` (ordered by `key`, at most `page.size`), and returns
/// them with the next page token.
pub async fn serve<R>(
    pool: &PgPool,
    page_size: i32,
    page_token: &str,
    load: impl AsyncFnOnce(&mut AsyncPgConnection, Page) -> QueryResult<Vec<R>>,
    key: impl Fn(&R) -> i64,
) -> Result<(Vec<R>, String), ApiError> {
    let page = Page::parse(page_size, page_token)?;
    let mut conn = pool.get().await?;
    let rows = load(&mut conn, page).await?;
    let next = page.next_token(rows.len(), rows.last().map(key));
    Ok((rows, next))
}

/// One page of a `List*` call over `$table`, keyed and ordered by `$key`,
/// selecting `$row`: expands to a [`serve`] call whose future yields the rows
/// and the next page token. The caller has diesel's prelude and
/// `diesel_async::RunQueryDsl` in scope.
#[macro_export]
macro_rules! list_page {
    ($pool:expr, $request:expr, $table:path, $key:path, $row:ty, $key_of:expr) => {{
        let load = async |conn: &mut diesel_async::AsyncPgConnection,
                          page: $crate::grpc::paging::Page| {
            $table
                .filter($key.gt(page.after))
                .order($key)
                .limit(page.size)
                .select(<$row>::as_select())
                .load(conn)
                .await
        };
        $crate::grpc::paging::serve(
            &$pool,
            $request.page_size,
            &$request.page_token,
            load,
            $key_of,
        )
    }};
}

/// The row of `$table` whose primary key is `$key`, selected as `$row`, or
/// `ApiError::NotFound` with `$missing` (a message naming what is missing):
/// the whole body of a `Get*` call but for the conversion. Expands to a
/// future of `Result<$row, ApiError>`; the caller has diesel's prelude and
/// `diesel_async::RunQueryDsl` in scope.
#[macro_export]
macro_rules! find_row {
    ($pool:expr, $table:path, $key:expr, $row:ty, $missing:expr) => {
        async {
            let mut conn = $pool.get().await?;
            let row: Option<$row> = $table
                .find($key)
                .select(<$row>::as_select())
                .first(&mut conn)
                .await
                .optional()?;
            row.ok_or_else(|| $crate::grpc::error::ApiError::NotFound($missing))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_maximum() {
        assert_eq!(
            Page::parse(0, ""),
            Ok(Page {
                after: 0,
                size: MAX_PAGE_SIZE
            })
        );
        assert_eq!(Page::parse(5000, "").map(|p| p.size), Ok(MAX_PAGE_SIZE));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Page::parse(-1, ""), Err(PageError::NegativeSize(-1)));
        assert!(matches!(Page::parse(1, "abc"), Err(PageError::BadToken(_))));
        assert!(matches!(Page::parse(1, "-4"), Err(PageError::BadToken(_))));
    }

    #[test]
    fn next_token_only_for_full_pages() {
        let page = Page::parse(2, "10").expect("valid");
        assert_eq!(page.after, 10);
        assert_eq!(page.next_token(2, Some(12)), "12");
        assert_eq!(page.next_token(1, Some(11)), "");
    }
}
