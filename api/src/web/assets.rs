//! Front-end files compiled into the binary (see `api/assets/graphiql/README.md` for where
//! each comes from): GraphiQL, React, graphql-ws and the status page's own script and styles.
//! Nothing is fetched from a CDN, so both pages work on a machine with no internet access.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// File name as served (`/assets/NAME`, `/graphql/assets/NAME`).
    pub name: &'static str,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every embedded file.
pub static ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/graphiql/graphiql.min.js"),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        body: include_bytes!("../../assets/graphiql/graphiql.min.css"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/graphiql/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    },
    Asset {
        name: "graphql-ws.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/graphiql/graphql-ws.min.js"),
    },
    Asset {
        name: "LICENSE.graphiql",
        content_type: TEXT,
        body: include_bytes!("../../assets/graphiql/LICENSE.graphiql"),
    },
    Asset {
        name: "LICENSE.react",
        content_type: TEXT,
        body: include_bytes!("../../assets/graphiql/LICENSE.react"),
    },
    Asset {
        name: "LICENSE.react-dom",
        content_type: TEXT,
        body: include_bytes!("../../assets/graphiql/LICENSE.react-dom"),
    },
    Asset {
        name: "LICENSE.graphql-ws",
        content_type: TEXT,
        body: include_bytes!("../../assets/graphiql/LICENSE.graphql-ws"),
    },
    Asset {
        name: "status.js",
        content_type: JS,
        body: include_bytes!("../../assets/status/status.js"),
    },
    Asset {
        name: "status.css",
        content_type: CSS,
        body: include_bytes!("../../assets/status/status.css"),
    },
];

/// The asset called `name`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// Strong validators, one per asset, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// `GET /assets/{name}` and `GET /graphql/assets/{name}`: the file, with an `ETag`; `304`
/// when the browser already has it.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no asset named {name:?}")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600, must-revalidate"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files are the pinned releases listed in `SHA256SUMS`.
    #[test]
    fn vendored_files_match_their_pinned_checksums() {
        let sums = include_str!("../../assets/graphiql/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, name) = line.split_once("  ").expect("`SUM  NAME` lines");
            let asset = find(name.trim()).unwrap_or_else(|| panic!("{name} is not embedded"));
            assert_eq!(hex::encode(Sha256::digest(asset.body)), sum, "{name}");
            checked += 1;
        }
        assert_eq!(checked, 5);
    }

    #[test]
    fn every_vendored_script_has_its_licence() {
        for lib in ["graphiql", "react", "react-dom", "graphql-ws"] {
            let licence = find(&format!("LICENSE.{lib}")).expect("licence embedded");
            let text = std::str::from_utf8(licence.body).unwrap();
            assert!(text.contains("MIT"), "{lib} licence");
        }
    }

    #[test]
    fn production_builds_only() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.body);
            // React's development builds carry this warning banner; the production ones do not.
            assert!(!text.contains("react.development"), "{}", a.name);
            assert!(
                !text.contains("unpkg.com"),
                "{} must not load from a CDN",
                a.name
            );
        }
    }
}
