//! Relay connections: the one pagination convention for every list.
//!
//! `first` is bounded by `graphql.max_page_size`; `after` is an opaque cursor produced by a
//! previous page. Lists are paged by keyset (the cursor holds the last sort key), so pages stay
//! stable and cheap however deep a client goes.

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{OutputType, SimpleObject};

use super::error::bad_input;

/// Fields every connection carries besides `edges` and `pageInfo`.
#[derive(SimpleObject, Default)]
pub struct ConnectionExtra {
    /// Total number of items matching the filter, ignoring paging. Computed only when asked.
    pub total_count: Option<u64>,
}

/// A page of `Node`s with opaque string cursors.
pub type Page<Node> = Connection<OpaqueCursor<String>, Node, ConnectionExtra>;

/// Validated paging arguments.
#[derive(Debug, Clone)]
pub struct PageArgs {
    /// Items to return.
    pub limit: u64,
    /// Sort key after which to start, if any.
    pub after: Option<String>,
}

impl PageArgs {
    /// Checks `first` against the limits and decodes `after`.
    pub fn parse(
        first: Option<i32>,
        after: Option<String>,
        default_size: u32,
        max_size: u32,
    ) -> async_graphql::Result<Self> {
        let limit = match first {
            None => default_size as u64,
            Some(n) if n < 1 => return Err(bad_input("first", "must be at least 1")),
            Some(n) if n as u32 > max_size => {
                return Err(bad_input(
                    "first",
                    format!("must be at most {max_size} (graphql.max_page_size)"),
                ))
            }
            Some(n) => n as u64,
        };
        let after = match after {
            None => None,
            Some(c) => Some(
                <OpaqueCursor<String> as async_graphql::connection::CursorType>::decode_cursor(&c)
                    .map_err(|_| bad_input("after", "is not a cursor returned by this API"))?
                    .0,
            ),
        };
        Ok(Self { limit, after })
    }

    /// `after` as a numeric row id, for lists keyed by an integer id.
    pub fn after_id(&self) -> async_graphql::Result<Option<i64>> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse::<i64>()
                    .map_err(|_| bad_input("after", "is not a cursor returned by this API"))
            })
            .transpose()
    }

    /// How many rows to fetch: one more than asked, to learn whether a next page exists.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }
}

/// Builds a connection from rows fetched with [`PageArgs::fetch`]; `key` gives each node's cursor.
pub fn build_page<Node: OutputType>(
    args: &PageArgs,
    mut rows: Vec<Node>,
    total_count: Option<u64>,
    key: impl Fn(&Node) -> String,
) -> Page<Node> {
    let has_next = rows.len() as u64 > args.limit;
    rows.truncate(args.limit as usize);
    let mut page = Connection::with_additional_fields(
        args.after.is_some(),
        has_next,
        ConnectionExtra { total_count },
    );
    page.edges.extend(
        rows.into_iter()
            .map(|node| Edge::new(OpaqueCursor(key(&node)), node)),
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::connection::CursorType;

    #[test]
    fn first_is_bounded() {
        assert_eq!(PageArgs::parse(None, None, 50, 200).unwrap().limit, 50);
        assert_eq!(
            PageArgs::parse(Some(200), None, 50, 200).unwrap().limit,
            200
        );
        let err = PageArgs::parse(Some(201), None, 50, 200).unwrap_err();
        assert!(err.message.contains("at most 200"));
        assert!(PageArgs::parse(Some(0), None, 50, 200).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let c = OpaqueCursor("evm:sepolia".to_string()).encode_cursor();
        let args = PageArgs::parse(Some(1), Some(c), 50, 200).unwrap();
        assert_eq!(args.after.as_deref(), Some("evm:sepolia"));
        let err = PageArgs::parse(Some(1), Some("garbage!".into()), 50, 200).unwrap_err();
        assert!(err.message.contains("after"));
    }
}
