//! `GET /`: the operator's status page. The server renders the first view (every source
//! and every health component, from the same public GraphQL query the page uses); the
//! embedded script (`api/assets/status/status.js`) then draws the BTC/USD chart, the DEX
//! pairs, recent EVM events and Stellar operations, and keeps everything current through
//! GraphQL subscriptions over `/graphql/ws` (graphql-transport-ws). No timer polls, nothing
//! loads from outside the binary.

use std::fmt::Write as _;

use axum::response::Html;
use serde_json::Value;

use crate::auth::{Caller, ClientAddr};
use crate::graphql::OrrerySchema;

/// The fields of a source row: the first view's query and, through the page's
/// `data-source-fields` attribute, the script's `indexerStatus` and `sourceUpdated`
/// selections, so the server and the script always show the same cells.
macro_rules! source_fields {
    () => {
        "id kind name headHeight indexedHeight status lastError lagBlocks lagSeconds progress \
         backfillFrom etaSeconds paused isSynced circuitBreaker { state }"
    };
}

/// The sources and health part of the page, rendered on the server.
pub const FIRST_VIEW_QUERY: &str = concat!(
    "query StatusFirstView { ",
    "health { status version uptimeSeconds components { name status message latencyMs } } ",
    "indexerStatus(first: 200) { edges { node { ",
    source_fields!(),
    " } } } }"
);

/// [`source_fields!`] as a constant.
pub const SOURCE_FIELDS: &str = source_fields!();

/// What the page needs besides the query results.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// `auth.public_queries`: without it the page cannot read anything.
    pub public_queries: bool,
    /// Configured DEX pairs (`stellar.dex_pairs`), shown in the DEX panel.
    pub dex_pairs: Vec<String>,
}

/// Renders the page: runs [`FIRST_VIEW_QUERY`] as an anonymous caller and lays it out.
pub async fn page(schema: &OrrerySchema, settings: &PageSettings) -> Html<String> {
    let first_view = if settings.public_queries {
        let request = async_graphql::Request::new(FIRST_VIEW_QUERY)
            .data(Caller::Anonymous)
            .data(ClientAddr(None));
        let response = schema.execute(request).await;
        let errors: Vec<String> = response.errors.iter().map(|e| e.message.clone()).collect();
        match response.data.into_json() {
            Ok(data) => FirstView { data, errors },
            Err(e) => FirstView {
                data: Value::Null,
                errors: vec![format!("cannot read the status query's result: {e}")],
            },
        }
    } else {
        FirstView {
            data: Value::Null,
            errors: vec![
                "public queries are off (auth.public_queries = false): this page reads only public queries"
                    .to_string(),
            ],
        }
    };
    Html(render(&first_view, settings))
}

struct FirstView {
    data: Value,
    errors: Vec<String>,
}

/// Escapes text for an HTML element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn render(view: &FirstView, settings: &PageSettings) -> String {
    let health = &view.data["health"];
    let mut sources = String::new();
    if let Some(edges) = view.data["indexerStatus"]["edges"].as_array() {
        for node in edges.iter().map(|e| &e["node"]) {
            sources.push_str(&source_row(node));
        }
    }
    let mut components = String::new();
    if let Some(list) = health["components"].as_array() {
        for c in list {
            let status = text(&c["status"]);
            let _ = write!(
                components,
                "<li data-component=\"{name}\" class=\"status-{cls}\"><b>{name}</b> <span class=\"component-status\">{status}</span> <span class=\"component-message\">{message}</span></li>",
                name = escape(&text(&c["name"])),
                cls = escape(&status.to_ascii_lowercase()),
                status = escape(&status),
                message = escape(&text(&c["message"])),
            );
        }
    }
    let errors: String = view
        .errors
        .iter()
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .collect();
    let dex_pairs = serde_json::to_string(&settings.dex_pairs).unwrap_or_else(|_| "[]".into());
    let overall = text(&health["status"]);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orrery status</title>
<link rel="stylesheet" href="/assets/status.css">
</head>
<body data-live-updates="0" data-dex-pairs="{dex_pairs}" data-source-fields="{source_fields}">
<header>
  <h1>Orrery</h1>
  <span id="overall" class="badge status-{overall_cls}">{overall}</span>
  <span id="version">{version}</span>
  <span id="live" class="badge live-off" title="subscription connection">connecting…</span>
  <nav><a href="/graphql">GraphiQL</a> · <a href="/metrics">metrics</a> · <a href="/api/v1/health">health JSON</a></nav>
</header>
{errors}
<main>
<section id="sources-panel">
  <h2>Sources</h2>
  <table id="sources">
    <thead><tr><th>source</th><th>status</th><th>head</th><th>indexed</th><th>lag</th><th>backfill</th><th>breaker</th><th>last error</th></tr></thead>
    <tbody>{sources}</tbody>
  </table>
</section>
<section id="health-panel">
  <h2>Health</h2>
  <ul id="components">{components}</ul>
</section>
<section id="chart-panel">
  <h2>BTC/USD</h2>
  <p class="legend"><span class="key rolling">UTXOracle rolling</span> <span class="key daily">UTXOracle daily</span> <span class="key exchange">exchange</span> <span class="key band">comparison band</span> <span class="key invalid">invalid comparison</span></p>
  <div id="chart" data-points="0"><p class="empty">no price yet</p></div>
</section>
<section id="dex-panel">
  <h2>Stellar DEX</h2>
  <table id="dex"><thead><tr><th>pair</th><th>price</th><th>at</th></tr></thead><tbody></tbody></table>
</section>
<section id="events-panel">
  <h2>Recent EVM events</h2>
  <table id="events"><thead><tr><th>chain</th><th>block</th><th>event</th><th>contract</th><th>tx</th></tr></thead><tbody></tbody></table>
</section>
<section id="operations-panel">
  <h2>Recent Stellar operations</h2>
  <table id="operations"><thead><tr><th>at</th><th>type</th><th>from</th><th>to</th><th>amount</th><th>asset</th></tr></thead><tbody></tbody></table>
</section>
</main>
<script src="/assets/graphql-ws.min.js"></script>
<script src="/assets/status.js"></script>
</body>
</html>
"#,
        dex_pairs = escape(&dex_pairs),
        source_fields = escape(SOURCE_FIELDS),
        overall_cls = escape(&overall.to_ascii_lowercase()),
        overall = escape(&overall),
        version = escape(&text(&health["version"])),
        errors = errors,
        sources = sources,
        components = components,
    )
}

/// One row of the sources table; `status.js` renders the same cells from `sourceUpdated`.
fn source_row(node: &Value) -> String {
    let status = text(&node["status"]);
    let lag = match (&node["lagBlocks"], &node["lagSeconds"]) {
        (Value::Null, Value::Null) => "–".to_string(),
        (blocks, Value::Null) => format!("{} blocks", text(blocks)),
        (Value::Null, secs) => format!("{} s", text(secs)),
        (blocks, secs) => format!(
            "{} blocks / {:.0} s",
            text(blocks),
            secs.as_f64().unwrap_or_default()
        ),
    };
    let backfill = match node["progress"].as_f64() {
        Some(p) => {
            let eta = node["etaSeconds"]
                .as_i64()
                .map(|s| format!(", ETA {s} s"))
                .unwrap_or_default();
            format!("{:.1}%{eta}", p * 100.0)
        }
        None => "–".to_string(),
    };
    format!(
        "<tr data-source=\"{id}\" class=\"status-{cls}\"><td class=\"id\">{id}</td><td class=\"status\">{status}</td><td class=\"head\">{head}</td><td class=\"indexed\">{indexed}</td><td class=\"lag\">{lag}</td><td class=\"backfill\">{backfill}</td><td class=\"breaker\">{breaker}</td><td class=\"error\">{error}</td></tr>",
        id = escape(&text(&node["id"])),
        cls = escape(&status.to_ascii_lowercase()),
        status = escape(&status),
        head = escape(&text(&node["headHeight"])),
        indexed = escape(&text(&node["indexedHeight"])),
        lag = escape(&lag),
        backfill = escape(&backfill),
        breaker = escape(&text(&node["circuitBreaker"]["state"])),
        error = escape(&text(&node["lastError"])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_source_row_shows_every_column_escaped() {
        let row = source_row(&json!({
            "id": "evm:sepolia", "status": "syncing", "headHeight": 120, "indexedHeight": 100,
            "lagBlocks": 20, "lagSeconds": 60.0, "progress": 0.5, "etaSeconds": 30,
            "circuitBreaker": {"state": "closed"}, "lastError": "<boom>"
        }));
        for cell in [
            "evm:sepolia",
            "syncing",
            "120",
            "100",
            "20 blocks / 60 s",
            "50.0%, ETA 30 s",
            "closed",
            "&lt;boom&gt;",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
    }

    #[test]
    fn an_unreadable_first_view_still_renders_the_page_with_the_error() {
        let view = FirstView {
            data: Value::Null,
            errors: vec!["db <down>".into()],
        };
        let html = render(
            &view,
            &PageSettings {
                public_queries: true,
                dex_pairs: vec!["XLM/UBEC".into()],
            },
        );
        assert!(html.contains("db &lt;down&gt;"));
        assert!(html.contains("data-dex-pairs=\"[&quot;XLM/UBEC&quot;]\""));
        assert!(html.contains("/assets/status.js"));
    }
}
