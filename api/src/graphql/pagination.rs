//! Relay connections: the one pagination convention for every list, and the one keyset
//! paging implementation behind them ([`keyset_page`]).
//!
//! `first` is bounded by `graphql.max_page_size`; `after` is an opaque cursor produced by a
//! previous page. Lists are paged by keyset (the cursor holds the last row's sort key), so
//! pages stay stable and cheap however deep a client goes.

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{Context, OutputType, SimpleObject};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    Condition, EntityTrait, IntoSimpleExpr, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Value,
};

use super::context::state;
use super::error::{bad_input, internal};

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

fn bad_cursor() -> async_graphql::Error {
    bad_input("after", "is not a cursor returned by this API")
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
                OpaqueCursor::<String>::decode_cursor(&c)
                    .map_err(|_| bad_cursor())?
                    .0,
            ),
        };
        Ok(Self { limit, after })
    }

    /// How many rows to fetch: one more than asked, to learn whether a next page exists.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }
}

/// Sort direction of one key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// A type a key column holds, and how it is written in a cursor.
pub trait KeyType: Sized + Into<Value> {
    /// The cursor text of a value.
    fn encode(&self) -> String;
    /// The value of a cursor text (None: not a cursor of this list).
    fn decode(text: &str) -> Option<Self>;
}

impl KeyType for i64 {
    fn encode(&self) -> String {
        self.to_string()
    }
    fn decode(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl KeyType for String {
    fn encode(&self) -> String {
        self.clone()
    }
    fn decode(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
}

impl KeyType for DateTime<Utc> {
    fn encode(&self) -> String {
        self.to_rfc3339()
    }
    fn decode(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// One column (or expression) of a sort key.
struct KeyPart<M> {
    expr: Expr,
    dir: Dir,
    encode: Box<dyn Fn(&M) -> String + Send + Sync>,
    decode: fn(&str) -> Option<Value>,
}

fn decode_value<K: KeyType>(text: &str) -> Option<Value> {
    K::decode(text).map(Into::into)
}

/// The sort key of a list of rows `M`: key columns in order, each with its direction. The
/// columns together must be unique per row (end with the primary key). In a cursor the parts
/// are joined with `:`; only the last part may contain `:` itself.
pub struct Keyset<M> {
    parts: Vec<KeyPart<M>>,
}

impl<M> Keyset<M> {
    /// A key of one column.
    pub fn by<K: KeyType + 'static>(
        expr: impl IntoSimpleExpr,
        dir: Dir,
        value: impl Fn(&M) -> K + Send + Sync + 'static,
    ) -> Self {
        Self { parts: Vec::new() }.then(expr, dir, value)
    }

    /// The key extended with a further column (the tie-breaker of the ones before).
    pub fn then<K: KeyType + 'static>(
        mut self,
        expr: impl IntoSimpleExpr,
        dir: Dir,
        value: impl Fn(&M) -> K + Send + Sync + 'static,
    ) -> Self {
        self.parts.push(KeyPart {
            expr: expr.into_simple_expr(),
            dir,
            encode: Box::new(move |m| value(m).encode()),
            decode: decode_value::<K>,
        });
        self
    }

    /// The cursor of `row`.
    fn cursor(&self, row: &M) -> String {
        let parts: Vec<String> = self.parts.iter().map(|p| (p.encode)(row)).collect();
        parts.join(":")
    }

    /// The condition selecting the rows after the cursor `after`: for key `(k1, k2, ...)`,
    /// `k1 > v1 OR (k1 = v1 AND k2 > v2) OR ...` with `<` for descending columns.
    fn after(&self, after: &str) -> async_graphql::Result<Condition> {
        let n = self.parts.len();
        let texts: Vec<&str> = after.splitn(n, ':').collect();
        if texts.len() != n {
            return Err(bad_cursor());
        }
        let values = self
            .parts
            .iter()
            .zip(texts)
            .map(|(p, t)| (p.decode)(t).ok_or_else(bad_cursor))
            .collect::<async_graphql::Result<Vec<Value>>>()?;
        let mut any = Condition::any();
        for i in 0..n {
            let mut all = Condition::all();
            for (p, v) in self.parts[..i].iter().zip(&values) {
                all = all.add(p.expr.clone().eq(v.clone()));
            }
            let p = &self.parts[i];
            let v = values[i].clone();
            all = all.add(match p.dir {
                Dir::Asc => p.expr.clone().gt(v),
                Dir::Desc => p.expr.clone().lt(v),
            });
            any = any.add(all);
        }
        Ok(any)
    }

    /// `query` ordered by the key.
    fn order<E: EntityTrait<Model = M>>(&self, mut query: Select<E>) -> Select<E> {
        for p in &self.parts {
            let ord = match p.dir {
                Dir::Asc => Order::Asc,
                Dir::Desc => Order::Desc,
            };
            query = query.order_by(p.expr.clone(), ord);
        }
        query
    }
}

/// Whether the client selected `totalCount` on the connection being resolved.
pub(crate) fn wants_total(ctx: &Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

/// One page of the rows of `base` (already filtered) in the order of `key`, after
/// `args.after`, as nodes `N`; `totalCount` is counted only when selected. `what` names the
/// rows in error messages (`listing {what}`).
pub async fn keyset_page<E, N>(
    ctx: &Context<'_>,
    base: Select<E>,
    key: &Keyset<E::Model>,
    args: PageArgs,
    what: &str,
) -> async_graphql::Result<Page<N>>
where
    E: EntityTrait,
    E::Model: Into<N> + Send + Sync,
    N: OutputType,
{
    let db = &state(ctx).db;
    let total = if wants_total(ctx) {
        let n = base
            .clone()
            .count(db)
            .await
            .map_err(|e| internal(&format!("counting {what}"), e))?;
        Some(n)
    } else {
        None
    };
    let mut q = base;
    if let Some(after) = &args.after {
        q = q.filter(key.after(after)?);
    }
    let mut rows = key
        .order(q)
        .limit(args.fetch())
        .all(db)
        .await
        .map_err(|e| internal(&format!("listing {what}"), e))?;
    let has_next = rows.len() as u64 > args.limit;
    rows.truncate(args.limit as usize);
    let mut page = Connection::with_additional_fields(
        args.after.is_some(),
        has_next,
        ConnectionExtra { total_count: total },
    );
    page.edges.extend(rows.into_iter().map(|row| {
        let cursor = OpaqueCursor(key.cursor(&row));
        Edge::new(cursor, row.into())
    }));
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orrery_entity::stellar_balance;
    use sea_orm::{DbBackend, QueryTrait};

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

    fn balance_key() -> Keyset<stellar_balance::Model> {
        Keyset::by(
            stellar_balance::Column::BalanceStroops,
            Dir::Desc,
            |m: &stellar_balance::Model| m.balance_stroops,
        )
        .then(stellar_balance::Column::AccountId, Dir::Asc, |m| {
            m.account_id.clone()
        })
    }

    #[test]
    fn composite_keys_mix_directions_and_check_every_part() {
        let key = balance_key();
        let cond = key.after("500:GABC").unwrap();
        let sql = stellar_balance::Entity::find()
            .filter(cond)
            .build(DbBackend::Sqlite)
            .to_string();
        assert!(
            sql.contains(r#""stellar_balance"."balance_stroops" < 500"#)
                && sql.contains(r#""stellar_balance"."balance_stroops" = 500"#)
                && sql.contains(r#""stellar_balance"."account_id" > 'GABC'"#),
            "{sql}"
        );
        // Wrong arity or a non-number in a numeric part: not a cursor of this list.
        assert!(key.after("GABC").is_err());
        assert!(key.after("x:GABC").is_err());
        // The last part keeps its colons.
        let by_id = Keyset::by(
            stellar_balance::Column::AccountId,
            Dir::Asc,
            |m: &stellar_balance::Model| m.account_id.clone(),
        );
        assert!(by_id.after("evm:sepolia").is_ok());
    }

    #[test]
    fn times_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(DateTime::<Utc>::decode(&t.encode()), Some(t));
        assert_eq!(DateTime::<Utc>::decode("yesterday"), None);
    }
}

/// Order of a list that has a natural time order.
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// Oldest first (the order items were indexed in).
    #[default]
    OldestFirst,
    /// Newest first: the most recently indexed items on the first page.
    NewestFirst,
}

impl ListOrder {
    /// The key direction of this order.
    pub fn dir(self) -> Dir {
        match self {
            Self::OldestFirst => Dir::Asc,
            Self::NewestFirst => Dir::Desc,
        }
    }
}
