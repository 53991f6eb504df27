//! `GET /graphql`: the GraphiQL IDE, loading only files embedded in the binary
//! ([`super::assets`]); subscriptions go over `/graphql/ws` (graphql-transport-ws).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The IDE page, or 404 when `graphql.graphiql = false`.
pub fn page(enabled: bool) -> Response {
    if !enabled {
        return (
            StatusCode::NOT_FOUND,
            "GraphiQL is disabled (graphql.graphiql = false)",
        )
            .into_response();
    }
    Html(PAGE).into_response()
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orrery GraphiQL</title>
<style>body{height:100%;margin:0;width:100%;overflow:hidden}#graphiql{height:100vh}</style>
<link rel="stylesheet" href="/graphql/assets/graphiql.min.css">
<script src="/graphql/assets/react.production.min.js"></script>
<script src="/graphql/assets/react-dom.production.min.js"></script>
<script src="/graphql/assets/graphiql.min.js"></script>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script>
(function () {
  var http = new URL("/graphql", window.location.href).toString();
  var ws = new URL("/graphql/ws", window.location.href);
  ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
  var fetcher = GraphiQL.createFetcher({ url: http, subscriptionUrl: ws.toString() });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      defaultQuery: "# Orrery: every list is a Relay connection; subscriptions run over /graphql/ws.\n{\n  health { status }\n  chains { edges { node { id status headHeight indexedHeight lagBlocks } } }\n}\n"
    })
  );
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_only_embedded_files() {
        for src in PAGE
            .split("src=\"")
            .skip(1)
            .chain(PAGE.split("href=\"").skip(1))
        {
            let url = src.split('"').next().unwrap_or_default();
            assert!(url.starts_with("/graphql/assets/"), "{url} is not embedded");
            let name = url.trim_start_matches("/graphql/assets/");
            assert!(super::super::assets::find(name).is_some(), "{name} missing");
        }
        assert!(!PAGE.contains("https://"));
    }
}
