//! Cost limits that hold: every request is measured before any resolver runs, cheapest
//! measure first, and refused with a GraphQL error naming the limit it broke.
//!
//! 1. Before parsing: the query text's size (`graphql.max_query_bytes`), its number of
//!    lexical tokens (`graphql.max_tokens`) and its bracket nesting (`graphql.max_depth`), by
//!    one linear scan, so an oversized or absurdly nested document never reaches the parser.
//! 2. After parsing (our own parse, before async-graphql's, whose recursion check expands
//!    fragments): aliases (`graphql.max_aliases`), directives (`graphql.max_directives`)
//!    and the number of fields once fragments are expanded (`graphql.max_complexity`, counted
//!    with memoised fragments, so a fragment bomb is refused before anything expands it).
//! 3. After validation: depth (`graphql.max_depth`) and complexity (`graphql.max_complexity`),
//!    where every connection costs its `first` (or `graphql.default_page_size`) times the
//!    cost of its selection (see [`connection_cost`]).
//!
//! The whole request, resolvers and their database work included, runs under
//! `graphql.timeout_ms`; when it expires the resolver futures are dropped (which abandons
//! their statements) and the client gets a `TIMEOUT` error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{
    ErrorExtensionValues, Name, Request, Response, ServerError, ServerResult, ValidationResult,
    Variables,
};

use super::error::coded_server_error;
use crate::config::GraphqlConfig;

/// `extensions.code` of a request refused for its cost (complexity, depth, aliases, tokens,
/// directives).
pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
/// `extensions.code` of a request refused for its size.
pub const QUERY_TOO_LARGE: &str = "QUERY_TOO_LARGE";
/// `extensions.code` of a request that ran out of time.
pub const TIMEOUT: &str = "TIMEOUT";

/// `graphql.default_page_size` of the schema last built: the cost of a connection queried
/// without `first`. (Complexity functions get no schema data, hence a process-wide value.)
static DEFAULT_PAGE_SIZE: AtomicUsize = AtomicUsize::new(50);

/// Sets the page size [`connection_cost`] assumes when `first` is absent.
pub fn set_default_page_size(size: u32) {
    DEFAULT_PAGE_SIZE.store(size as usize, Ordering::Relaxed);
}

/// The complexity of a connection field: one for the field, plus the cost of its selection
/// (`edges { node { ... } }`, `pageInfo`, `totalCount`) once per item of the page, i.e.
/// `first` items, or `graphql.default_page_size` when `first` is absent.
pub fn connection_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = match first {
        Some(n) => n.max(1) as usize,
        None => DEFAULT_PAGE_SIZE.load(Ordering::Relaxed),
    };
    items.saturating_mul(child_complexity).saturating_add(1)
}

/// A refusal naming the limit (`extensions.limit`), its value (`max`) and what the request
/// had (`actual`).
pub fn limit_error(code: &str, limit: &str, what: &str, max: usize, actual: usize) -> ServerError {
    let mut err = coded_server_error(code, format!("{what}: {actual} exceeds {limit} = {max}"));
    let ext = err
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    ext.set("limit", limit);
    ext.set("max", max as u64);
    ext.set("actual", actual as u64);
    err
}

/// `Ok` when `actual` is at most `max`, else the refusal naming `limit`.
fn within(actual: usize, max: usize, code: &str, limit: &str, what: &str) -> ServerResult<()> {
    if actual > max {
        return Err(limit_error(code, limit, what, max, actual));
    }
    Ok(())
}

/// What one scan of the query text found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TextMeasure {
    /// Lexical tokens (names, numbers, strings, punctuators; not white space, commas or
    /// comments).
    pub tokens: usize,
    /// Deepest nesting of `{`, `(` and `[`.
    pub nesting: usize,
}

/// Counts the GraphQL tokens and bracket nesting of `query` in one pass.
pub fn measure_text(query: &str) -> TextMeasure {
    let b = query.as_bytes();
    let mut m = TextMeasure::default();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'.' if b[i..].starts_with(b"...") => i += 3,
            b'{' | b'(' | b'[' => {
                depth += 1;
                m.nesting = m.nesting.max(depth);
                i += 1;
            }
            b'}' | b')' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                i += 1;
                while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
            }
            c if c == b'-' || c.is_ascii_digit() => {
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
            }
            _ => {
                // Other punctuators (`! $ & : = @ |`) and anything the parser will refuse.
                i += 1;
                while i < b.len() && !b[i].is_ascii() {
                    i += 1;
                }
            }
        }
        m.tokens += 1;
    }
    m
}

/// What the parsed document contains.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DocumentMeasure {
    /// Aliased fields, in the text (fragments counted once).
    pub aliases: usize,
    /// Directives anywhere in the text.
    pub directives: usize,
    /// Fields of the largest operation with every fragment spread expanded.
    pub expanded_fields: usize,
}

/// Measures `doc`; fragment sizes are memoised, so this is linear in the text however much
/// the fragments multiply (a cycle counts as nothing here; validation refuses it).
pub fn measure_document(doc: &ExecutableDocument) -> DocumentMeasure {
    let mut m = DocumentMeasure::default();
    for (_, op) in doc.operations.iter() {
        m.directives += op.node.directives.len();
        for v in &op.node.variable_definitions {
            m.directives += v.node.directives.len();
        }
        count_set(&op.node.selection_set.node, &mut m);
    }
    for frag in doc.fragments.values() {
        m.directives += frag.node.directives.len();
        count_set(&frag.node.selection_set.node, &mut m);
    }
    let mut memo = HashMap::new();
    for (_, op) in doc.operations.iter() {
        let n = expanded(&op.node.selection_set.node, doc, &mut memo);
        m.expanded_fields = m.expanded_fields.max(n);
    }
    m
}

fn count_set(set: &SelectionSet, m: &mut DocumentMeasure) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                m.aliases += usize::from(f.node.alias.is_some());
                m.directives += f.node.directives.len();
                count_set(&f.node.selection_set.node, m);
            }
            Selection::FragmentSpread(s) => m.directives += s.node.directives.len(),
            Selection::InlineFragment(i) => {
                m.directives += i.node.directives.len();
                count_set(&i.node.selection_set.node, m);
            }
        }
    }
}

/// Fields under `set` with fragments expanded. `memo` holds finished fragments (`Some`) and
/// those being expanded (`None`, a cycle).
fn expanded<'a>(
    set: &'a SelectionSet,
    doc: &'a ExecutableDocument,
    memo: &mut HashMap<&'a Name, Option<usize>>,
) -> usize {
    let mut n = 0usize;
    for item in &set.items {
        n = n.saturating_add(match &item.node {
            Selection::Field(f) => {
                1usize.saturating_add(expanded(&f.node.selection_set.node, doc, memo))
            }
            Selection::InlineFragment(i) => expanded(&i.node.selection_set.node, doc, memo),
            Selection::FragmentSpread(s) => {
                let name = &s.node.fragment_name.node;
                match memo.get(name) {
                    Some(Some(size)) => *size,
                    Some(None) => 0,
                    None => match doc.fragments.get(name) {
                        Some(frag) => {
                            memo.insert(name, None);
                            let size = expanded(&frag.node.selection_set.node, doc, memo);
                            memo.insert(name, Some(size));
                            size
                        }
                        None => 0,
                    },
                }
            }
        });
    }
    n
}

/// The schema extension enforcing `[graphql]`'s limits.
pub struct QueryLimits {
    limits: Arc<GraphqlConfig>,
}

impl QueryLimits {
    /// Limits from `config`.
    pub fn new(config: &GraphqlConfig) -> Self {
        Self {
            limits: Arc::new(config.clone()),
        }
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryLimitsExt {
            limits: self.limits.clone(),
        })
    }
}

struct QueryLimitsExt {
    limits: Arc<GraphqlConfig>,
}

/// Bracket nesting allowed before parsing: selection sets plus argument values (input
/// objects and lists) inside the deepest field.
fn max_nesting(max_depth: usize) -> usize {
    (max_depth * 2).max(32)
}

impl QueryLimitsExt {
    fn check_text(&self, query: &str) -> ServerResult<()> {
        let l = &self.limits;
        if query.len() > l.max_query_bytes {
            return Err(limit_error(
                QUERY_TOO_LARGE,
                "graphql.max_query_bytes",
                "query text too large (bytes)",
                l.max_query_bytes,
                query.len(),
            ));
        }
        let m = measure_text(query);
        within(
            m.tokens,
            l.max_tokens,
            QUERY_TOO_COMPLEX,
            "graphql.max_tokens",
            "query has too many tokens",
        )?;
        let nesting = max_nesting(l.max_depth);
        within(
            m.nesting,
            nesting,
            QUERY_TOO_COMPLEX,
            "graphql.max_depth",
            "query is nested too deep (bracket nesting, at most twice graphql.max_depth)",
        )?;
        Ok(())
    }

    fn check_document(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let l = &self.limits;
        let m = measure_document(doc);
        within(
            m.aliases,
            l.max_aliases,
            QUERY_TOO_COMPLEX,
            "graphql.max_aliases",
            "query has too many aliases",
        )?;
        within(
            m.directives,
            l.max_directives,
            QUERY_TOO_COMPLEX,
            "graphql.max_directives",
            "query has too many directives",
        )?;
        within(
            m.expanded_fields,
            l.max_complexity,
            QUERY_TOO_COMPLEX,
            "graphql.max_complexity",
            "query is too complex (fields with fragments expanded)",
        )?;
        Ok(())
    }

    /// Mutations need POST: a GET request (marked by the handler) runs queries only.
    fn check_method(
        &self,
        ctx: &ExtensionContext<'_>,
        doc: &ExecutableDocument,
    ) -> ServerResult<()> {
        let mutation = doc
            .operations
            .iter()
            .any(|(_, op)| op.node.ty == OperationType::Mutation);
        if mutation && ctx.data_opt::<super::http::HttpGet>().is_some() {
            return Err(coded_server_error(
                super::http::BAD_REQUEST,
                "mutations need POST; GET runs queries only",
            ));
        }
        Ok(())
    }

    fn check_validated(&self, v: &ValidationResult) -> Result<(), Vec<ServerError>> {
        let l = &self.limits;
        within(
            v.depth,
            l.max_depth,
            QUERY_TOO_COMPLEX,
            "graphql.max_depth",
            "query is nested too deep",
        )
        .map_err(|e| vec![e])?;
        within(
            v.complexity,
            l.max_complexity,
            QUERY_TOO_COMPLEX,
            "graphql.max_complexity",
            "query is too complex (each connection costs `first` times its selection)",
        )
        .map_err(|e| vec![e])?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Extension for QueryLimitsExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let limit = Duration::from_millis(self.limits.timeout_ms);
        match tokio::time::timeout(limit, next.run(ctx)).await {
            Ok(response) => response,
            Err(_) => {
                let ms = self.limits.timeout_ms as usize;
                let mut err = limit_error(
                    TIMEOUT,
                    "graphql.timeout_ms",
                    "request took too long (milliseconds); its work was cancelled",
                    ms,
                    ms,
                );
                err.message = format!(
                    "request cancelled after {ms} ms (graphql.timeout_ms); narrow the query or page through it"
                );
                Response::from_errors(vec![err])
            }
        }
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        self.check_text(&request.query)?;
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Measure a document of our own first: async-graphql's recursion-depth check, run
        // with its parse, expands every fragment spread (exponential for a fragment bomb).
        // The text limits already bound what this parse costs.
        if !query.is_empty() {
            let pre = async_graphql::parser::parse_query(query)?;
            self.check_document(&pre)?;
            self.check_method(ctx, &pre)?;
            return next.run(ctx, query, variables).await;
        }
        // A document given already parsed (no text): measured as it is.
        let doc = next.run(ctx, query, variables).await?;
        self.check_document(&doc)?;
        self.check_method(ctx, &doc)?;
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        self.check_validated(&result)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted_like_the_grammar() {
        let m = measure_text("{ a(x: 1, y: \"s, t\") { b ...F } } # comment { {");
        // { a ( x : 1 y : "s, t" ) { b ... F } }
        assert_eq!(m.tokens, 16);
        assert_eq!(m.nesting, 2);
        let m = measure_text("query Q($v: [Int!] = [-1.5e3]) @skip(if: true) { f }");
        // query Q ( $ v : [ Int ! ] = [ -1.5e3 ] ) @ skip ( if : true ) { f }
        assert_eq!(m.tokens, 25);
        assert_eq!(measure_text("\"\"\"a \\\"\"\" b\"\"\" x").tokens, 2);
        assert_eq!(measure_text("").tokens, 0);
    }

    #[test]
    fn nesting_is_found_without_parsing() {
        let deep = format!("{}{}", "{a".repeat(5000), "}".repeat(5000));
        let m = measure_text(&deep);
        assert_eq!(m.nesting, 5000);
        assert_eq!(m.tokens, 15_000);
    }

    #[test]
    fn aliases_directives_and_expanded_fragments() {
        let doc = async_graphql::parser::parse_query(
            "query @a { x: f y: f @include(if: true) ...F0 }
             fragment F0 on Q { a b ...F1 ...F1 }
             fragment F1 on Q { z: c d }",
        )
        .unwrap();
        let m = measure_document(&doc);
        assert_eq!(m.aliases, 3);
        assert_eq!(m.directives, 2);
        // x, y, a, b, then F1 (2 fields) twice.
        assert_eq!(m.expanded_fields, 8);
    }

    #[test]
    fn a_fragment_bomb_is_measured_in_linear_time() {
        let mut q = String::from("{ ...F30 }\nfragment F0 on Q { a }\n");
        for i in 1..=30 {
            q.push_str(&format!(
                "fragment F{i} on Q {{ ...F{p} ...F{p} }}\n",
                p = i - 1
            ));
        }
        let doc = async_graphql::parser::parse_query(&q).unwrap();
        assert_eq!(measure_document(&doc).expanded_fields, 1 << 30);
    }

    #[test]
    fn connections_cost_their_page_times_their_selection() {
        assert_eq!(connection_cost(Some(10), 5), 51);
        assert_eq!(connection_cost(Some(-3), 5), 6);
        let default = DEFAULT_PAGE_SIZE.load(Ordering::Relaxed);
        assert_eq!(connection_cost(None, 2), default * 2 + 1);
        assert_eq!(connection_cost(Some(i32::MAX), usize::MAX), usize::MAX);
    }

    #[test]
    fn errors_name_their_limit() {
        let e = limit_error(
            QUERY_TOO_COMPLEX,
            "graphql.max_aliases",
            "too many aliases",
            30,
            2000,
        );
        assert!(
            e.message.contains("graphql.max_aliases = 30"),
            "{}",
            e.message
        );
        let ext = e.extensions.unwrap();
        assert_eq!(
            ext.get("code"),
            Some(&async_graphql::Value::from(QUERY_TOO_COMPLEX))
        );
        assert_eq!(
            ext.get("limit"),
            Some(&async_graphql::Value::from("graphql.max_aliases"))
        );
    }
}
