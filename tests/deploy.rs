//! Checks the deployment files in `deploy/` against the code they describe.
//!
//! - Every PromQL expression (alert rules, Grafana panels and variables) may only name metrics
//!   that `indexer/src/metrics.rs` registers (histograms also with `_bucket`/`_sum`/`_count`).
//! - `deploy/prometheus/alerts.yml` rules are well formed (alert, expr, for, severity, summary,
//!   description, runbook); when `promtool` is on PATH it also runs `promtool check rules` and
//!   the unit tests in `deploy/prometheus/alerts.test.yml`.
//! - The Grafana dashboard is valid JSON and its provisioning matches the compose mounts.
//! - Compose and Kubernetes use the `/health` and `/ready` probes, and the `orrery.toml` in the
//!   ConfigMap plus the example environment are accepted by Orrery's own config loader.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use orrery_api::config::{Config, EnvSource};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Known metrics, read from the source that registers them.

/// Metric names registered in `indexer/src/metrics.rs`, and which of them are histograms.
struct KnownMetrics {
    names: HashSet<String>,
    histograms: HashSet<String>,
}

impl KnownMetrics {
    fn load() -> Self {
        let src = read("indexer/src/metrics.rs");
        let mut names = HashSet::new();
        let mut histograms = HashSet::new();
        for (pos, _) in src.match_indices("\"orrery_") {
            let name: String = src[pos + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // The constructor is the identifier before the last '(' preceding the literal:
            // `histogram(\n &r,\n "orrery_..."`.
            let before = &src[..pos];
            if let Some(open) = before.rfind('(') {
                let ident: String = before[..open]
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                if ident == "histogram" {
                    histograms.insert(name.clone());
                }
            }
            names.insert(name);
        }
        assert!(
            names.len() >= 30,
            "expected the metric definitions in indexer/src/metrics.rs, found only {names:?}"
        );
        assert!(
            !histograms.is_empty(),
            "found no histogram(...) definitions in indexer/src/metrics.rs"
        );
        KnownMetrics { names, histograms }
    }

    /// Whether `series` is a registered metric or a histogram's derived series.
    fn knows(&self, series: &str) -> bool {
        if self.names.contains(series) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            series
                .strip_suffix(suffix)
                .is_some_and(|base| self.histograms.contains(base))
        })
    }

    /// Problems with `expr`: unknown metrics or unknown functions.
    fn check_expr(&self, expr: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match promql_identifiers(expr) {
            Ok(metrics) => {
                if metrics.is_empty() {
                    problems.push(format!("names no metric: {expr}"));
                }
                for m in metrics {
                    if !self.knows(&m) {
                        problems.push(format!("unknown metric {m} in: {expr}"));
                    }
                }
            }
            Err(e) => problems.push(format!("{e} in: {expr}")),
        }
        problems
    }
}

const PROMQL_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "day_of_month",
    "day_of_week",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stddev_over_time",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "vector",
    "year",
];
const PROMQL_KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Keywords followed by a parenthesised label list.
const PROMQL_LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the `close` matching the `open` at `start`, skipping quoted strings.
fn skip_balanced(s: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut i = start;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = skip_string(s, i)?,
            c if c == open => {
                depth += 1;
                i += 1;
            }
            c if c == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err(format!("unbalanced {open}{close}"))
}

/// Index just past the string literal starting at `start`.
fn skip_string(s: &[char], start: usize) -> Result<usize, String> {
    let quote = s[start];
    let mut i = start + 1;
    while i < s.len() {
        if s[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if s[i] == quote {
            return Ok(i + 1);
        }
        i += 1;
    }
    Err("unterminated string".to_string())
}

/// The metric names an expression selects (Grafana `$variables` allowed). Errors on unknown
/// functions and unbalanced brackets. A small lexer, not a PromQL parser: label matchers,
/// ranges, strings, numbers and grouping label lists are skipped, every other identifier must
/// be a function, a keyword or a metric.
fn promql_identifiers(expr: &str) -> Result<Vec<String>, String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i)?;
        } else if c == '{' {
            i = skip_balanced(&s, i, '{', '}')?;
        } else if c == '[' {
            i = skip_balanced(&s, i, '[', ']')?;
        } else if c == '$' {
            i += 1;
            if i < s.len() && s[i] == '{' {
                i = skip_balanced(&s, i, '{', '}')?;
            } else {
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == ':') {
                i += 1;
            }
            let ident: String = s[start..i].iter().collect();
            let mut j = i;
            while j < s.len() && s[j].is_whitespace() {
                j += 1;
            }
            let called = j < s.len() && s[j] == '(';
            let lower = ident.to_ascii_lowercase();
            if PROMQL_LABEL_LISTS.contains(&lower.as_str()) {
                if called {
                    i = skip_balanced(&s, j, '(', ')')?;
                }
            } else if PROMQL_FUNCTIONS.contains(&ident.as_str())
                || PROMQL_KEYWORDS.contains(&lower.as_str())
            {
                // fine
            } else if called {
                return Err(format!("unknown function {ident}"));
            } else {
                out.push(ident);
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

#[test]
fn metric_checker_rejects_what_does_not_exist() {
    let known = KnownMetrics::load();
    assert!(known
        .check_expr("sum(rate(orrery_http_requests_total[5m]))")
        .is_empty());
    assert!(known
        .check_expr(
            "histogram_quantile(0.95, sum by (le) (rate(orrery_http_request_duration_seconds_bucket{route!=\"/x\"}[$__rate_interval])))"
        )
        .is_empty());
    assert!(known
        .check_expr("a_b{job=\"orrery\"} == 0")
        .iter()
        .any(|p| p.contains("unknown metric a_b")));
    assert!(!known.check_expr("up == 0").is_empty());
    assert!(!known
        .check_expr("orrery_no_such_metric_total > 0")
        .is_empty());
    // Only histograms have derived series.
    assert!(!known
        .check_expr("orrery_action_queue_depth_bucket > 0")
        .is_empty());
    assert!(!known
        .check_expr("frobnicate(orrery_action_queue_depth)")
        .is_empty());
    assert!(
        !known.check_expr("vector(1)").is_empty(),
        "no metric at all"
    );
}

// ---------------------------------------------------------------------------------------------
// Alert rules.

/// One rule from `alerts.yml`: top-level keys plus the `labels` and `annotations` maps.
#[derive(Debug, Default)]
struct Rule {
    line: usize,
    fields: HashMap<String, String>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Removes YAML quoting from a scalar.
fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        v[1..v.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        v[1..v.len() - 1].replace("''", "'")
    } else {
        v.to_string()
    }
}

/// Parses the rule list of a Prometheus rule file with the layout used in `alerts.yml`
/// (`- alert:` items, scalars or `|`/`>` blocks, one level of nested maps).
fn parse_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(rest) = line.trim_start().strip_prefix("- alert:") else {
            i += 1;
            continue;
        };
        let key_indent = indent(line) + 2;
        let mut rule = Rule {
            line: i + 1,
            ..Rule::default()
        };
        rule.fields.insert("alert".into(), unquote(rest));
        i += 1;
        let mut section: Option<String> = None;
        while i < lines.len() {
            let l = lines[i];
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                i += 1;
                continue;
            }
            let ind = indent(l);
            if ind < key_indent || (ind == key_indent - 2 && l.trim_start().starts_with("- ")) {
                break;
            }
            let body = l.trim();
            let (key, value) = body
                .split_once(':')
                .unwrap_or_else(|| panic!("alerts.yml line {}: expected key: value", i + 1));
            let (key, value) = (key.trim().to_string(), value.trim().to_string());
            i += 1;
            // Block scalars take the following more-indented lines.
            let value = if value.starts_with('|') || value.starts_with('>') {
                let mut parts = Vec::new();
                while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > ind) {
                    parts.push(lines[i].trim());
                    i += 1;
                }
                parts.join(if value.starts_with('|') { "\n" } else { " " })
            } else {
                unquote(&value)
            };
            if ind == key_indent {
                if value.is_empty() {
                    section = Some(key.clone());
                } else {
                    section = None;
                }
                rule.fields.insert(key, value);
            } else {
                match section.as_deref() {
                    Some("labels") => {
                        rule.labels.insert(key, value);
                    }
                    Some("annotations") => {
                        rule.annotations.insert(key, value);
                    }
                    other => panic!(
                        "alerts.yml line {}: nested key {key} outside labels/annotations ({other:?})",
                        i
                    ),
                }
            }
        }
        rules.push(rule);
    }
    rules
}

fn is_duration(s: &str) -> bool {
    let mut digits = false;
    let mut chars = s.chars().peekable();
    let mut ok = !s.is_empty();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits = true;
        } else if digits && c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            digits = false;
        } else if digits && matches!(c, 's' | 'm' | 'h' | 'd' | 'w' | 'y') {
            digits = false;
        } else {
            ok = false;
        }
    }
    ok && !digits
}

#[test]
fn alert_rules_are_complete_and_use_existing_metrics() {
    let known = KnownMetrics::load();
    let text = read("deploy/prometheus/alerts.yml");
    let rules = parse_rules(&text);
    assert!(
        rules.len() >= 15,
        "expected the full alert set, got {}",
        rules.len()
    );
    assert_eq!(
        rules.len(),
        text.matches("- alert:").count(),
        "every `- alert:` must be parsed"
    );

    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut referenced = HashSet::new();
    for r in &rules {
        let name = r.fields.get("alert").cloned().unwrap_or_default();
        let at = format!("{name} (alerts.yml line {})", r.line);
        if name.is_empty() || !names.insert(name.clone()) {
            problems.push(format!("{at}: empty or duplicate alert name"));
        }
        match r.fields.get("expr") {
            Some(expr) if !expr.is_empty() => {
                for p in known.check_expr(expr) {
                    problems.push(format!("{at}: {p}"));
                }
                referenced.extend(promql_identifiers(expr).unwrap_or_default());
            }
            _ => problems.push(format!("{at}: no expr")),
        }
        match r.fields.get("for") {
            Some(d) if is_duration(d) => {}
            other => problems.push(format!("{at}: `for` missing or not a duration: {other:?}")),
        }
        match r.labels.get("severity").map(String::as_str) {
            Some("critical" | "warning" | "info") => {}
            other => problems.push(format!(
                "{at}: severity must be critical|warning|info, got {other:?}"
            )),
        }
        for key in ["summary", "description", "runbook"] {
            if r.annotations.get(key).is_none_or(|v| v.trim().is_empty()) {
                problems.push(format!("{at}: annotation {key} missing"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "alert rule problems:\n{}",
        problems.join("\n")
    );

    // The operators' thresholds (see deploy/README.md) must all be covered.
    for metric in [
        "orrery_source_lag_blocks",
        "orrery_source_lag_seconds",
        "orrery_source_indexed_height",
        "orrery_source_head_height",
        "orrery_http_requests_total",
        "orrery_http_request_duration_seconds_bucket",
        "orrery_action_queue_depth",
        "orrery_db_pool_connections",
        "orrery_circuit_breaker_state",
        "orrery_auth_failures_total",
        "orrery_health_status",
        "orrery_upstream_requests_total",
        "orrery_reorgs_total",
        "orrery_bus_publish_failures_total",
        "orrery_price_write_buffered",
    ] {
        assert!(referenced.contains(metric), "no alert uses {metric}");
    }
    let by_name: HashMap<_, _> = rules
        .iter()
        .map(|r| (r.fields["alert"].as_str(), r.fields["expr"].as_str()))
        .collect();
    let expect = |alert: &str, fragment: &str| {
        let expr = by_name
            .get(alert)
            .unwrap_or_else(|| panic!("alert {alert} is missing"));
        assert!(
            expr.contains(fragment),
            "{alert}: expected `{fragment}` in `{expr}`"
        );
    };
    expect("OrrerySyncLagBlocks", "> 10");
    expect(
        "OrreryIndexedHeightStalled",
        "changes(orrery_source_indexed_height[30m])) == 0",
    );
    expect("OrreryHttpErrorRate", "> 0.05");
    expect("OrreryHttpLatencyP95", "> 0.5");
    expect("OrreryActionQueueDepth", "> 10000");
    expect("OrreryDbPoolSaturated", "> 0.8");
    expect("OrreryCircuitBreakerOpen", "== 2");
    expect("OrreryAuthFailures", "* 60 > 10");
}

/// `promtool check rules` and the rule unit tests, when promtool is installed.
#[test]
fn promtool_accepts_rules_and_unit_tests_pass() {
    let dir = repo().join("deploy/prometheus");
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        eprintln!("promtool not on PATH: skipping promtool checks (structure is checked above)");
        return;
    };
    assert!(out.status.success(), "promtool --version failed");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana.

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == "expr" {
                    out.push(
                        child
                            .as_str()
                            .unwrap_or_else(|| panic!("expr is not a string: {child}"))
                            .to_string(),
                    );
                } else {
                    collect_exprs(child, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|c| collect_exprs(c, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_parses_and_uses_existing_metrics() {
    let known = KnownMetrics::load();
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/orrery.json")).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(!dash["uid"].as_str().unwrap().is_empty());

    let panels = dash["panels"].as_array().unwrap();
    let mut ids = HashSet::new();
    let mut problems = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id in {title}"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("panel {title}: no targets"));
        }
    }

    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(
        exprs.len() >= 14,
        "expected a panel per topic, got {} exprs",
        exprs.len()
    );
    let mut referenced = HashSet::new();
    for e in &exprs {
        problems.extend(known.check_expr(e));
        referenced.extend(promql_identifiers(e).unwrap_or_default());
    }
    // Template variables: label_values(METRIC, label).
    for var in dash["templating"]["list"].as_array().unwrap() {
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or("");
        if let Some(args) = query.strip_prefix("label_values(") {
            let metric = args.split([',', '{', ')']).next().unwrap().trim();
            if !known.knows(metric) {
                problems.push(format!("variable {}: unknown metric {metric}", var["name"]));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );

    for metric in [
        "orrery_http_requests_total",
        "orrery_http_request_duration_seconds_bucket",
        "orrery_source_head_height",
        "orrery_source_indexed_height",
        "orrery_source_lag_blocks",
        "orrery_indexed_items_total",
        "orrery_upstream_requests_total",
        "orrery_rate_limit_remaining",
        "orrery_circuit_breaker_state",
        "orrery_reorgs_total",
        "orrery_subscriptions_open",
        "orrery_action_queue_depth",
        "orrery_db_pool_connections",
        "orrery_auth_failures_total",
        "orrery_price_usd",
    ] {
        assert!(
            referenced.contains(metric),
            "no dashboard panel shows {metric}"
        );
    }
}

#[test]
fn grafana_provisioning_matches_compose_mounts() {
    let compose = read("deploy/docker-compose.yml");
    let provider = read("deploy/grafana/provisioning/dashboards/orrery.yml");
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(compose.contains("./grafana/dashboards:/etc/grafana/dashboards"));
    assert!(compose.contains("./grafana/provisioning:/etc/grafana/provisioning"));
    assert!(provider.contains("path: /etc/grafana/dashboards"));
    assert!(datasource.contains("url: http://prometheus:9090"));
    // The dashboard's datasource variable defaults to the provisioned uid.
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/orrery.json")).unwrap();
    let ds_var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("datasource variable");
    let uid = ds_var["current"]["value"].as_str().unwrap();
    assert!(
        datasource.contains(&format!("uid: {uid}")),
        "no datasource with uid {uid}"
    );
}

// ---------------------------------------------------------------------------------------------
// Compose, Prometheus, Docker, Kubernetes.

#[test]
fn compose_and_prometheus_wire_the_stack() {
    let compose = read("deploy/docker-compose.yml");
    for service in ["orrery", "postgres", "redis", "prometheus", "grafana"] {
        assert!(
            compose.contains(&format!("\n  {service}:\n")),
            "compose has no {service} service"
        );
    }
    for needle in [
        "dockerfile: deploy/Dockerfile",
        "condition: service_healthy",
        "pg_isready",
        "redis-cli",
        "DATABASE_URL: ${DATABASE_URL",
        "REDIS_URL: ${REDIS_URL",
        "JWT_SECRET: ${JWT_SECRET",
        "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml",
        "./prometheus/alerts.yml:/etc/prometheus/alerts.yml",
    ] {
        assert!(compose.contains(needle), "compose lacks `{needle}`");
    }
    // The orrery healthcheck probes both endpoints.
    let health = compose
        .split("healthcheck:")
        .nth(1)
        .and_then(|rest| rest.split("\n  postgres:").next())
        .expect("orrery has a healthcheck");
    assert!(health.contains("/health") && health.contains("/ready"));

    let env = read("deploy/.env.example");
    for var in [
        "DATABASE_URL=",
        "REDIS_URL=",
        "JWT_SECRET=",
        "POSTGRES_PASSWORD=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(var)),
            ".env.example lacks {var}"
        );
    }

    let prom = read("deploy/prometheus/prometheus.yml");
    assert!(prom.contains("orrery:8080"));
    assert!(prom.contains("metrics_path: /metrics"));
    assert!(prom.contains("/etc/prometheus/alerts.yml"));

    let docker = read("deploy/Dockerfile");
    for needle in [
        "FROM rust:1-bookworm",
        "cargo build --release --locked --bin orrery",
        "FROM debian:bookworm-slim",
        "USER 10001",
        "EXPOSE 8080",
        "ORRERY_LISTEN=0.0.0.0:8080",
        "orrery\", \"health\", \"--url\", \"http://127.0.0.1:8080\"",
        "ENTRYPOINT [\"orrery\"]",
        "CMD [\"serve\"]",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks `{needle}`");
    }
    let ignore = read(".dockerignore");
    for entry in ["target", ".git", "*.db"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

/// The value of the first `path:` after the line that starts `probe:`.
fn probe_path(manifest: &str, probe: &str) -> Option<String> {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != format!("{probe}:"));
    lines.next()?;
    lines
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(|p| p.trim().to_string())
}

#[test]
fn kubernetes_manifests_probe_and_harden_the_pod() {
    let dep = read("deploy/k8s/deployment.yaml");
    assert_eq!(
        probe_path(&dep, "livenessProbe").as_deref(),
        Some("/health")
    );
    assert_eq!(
        probe_path(&dep, "readinessProbe").as_deref(),
        Some("/ready")
    );
    assert_eq!(probe_path(&dep, "startupProbe").as_deref(), Some("/health"));
    for needle in [
        "replicas: 2",
        "image: orrery:latest",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "mountPath: /tmp",
        "emptyDir:",
        "containerPort: 8080",
        "name: orrery-env",
        "name: orrery-secrets",
        "mountPath: /etc/orrery",
        "resources:",
    ] {
        assert!(dep.contains(needle), "deployment.yaml lacks `{needle}`");
    }
    let job = read("deploy/k8s/migrate-job.yaml");
    assert!(job.contains("kind: Job") && job.contains("args: [\"migrate\"]"));
    let kustomization = read("deploy/k8s/kustomization.yaml");
    for file in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "kustomization lacks {file}"
        );
        assert!(repo().join("deploy/k8s").join(file).is_file());
    }
    assert!(read("deploy/k8s/service.yaml").contains("port: 8080"));
}

/// `KEY: value` pairs of the first `data:`/`stringData:` map in a manifest.
fn manifest_map(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim_end() != format!("{section}:"));
    lines.next();
    for l in lines {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) != 2 || l.trim() == "---" {
            if indent(l) < 2 {
                break;
            }
            continue;
        }
        if let Some((k, v)) = l.trim().split_once(':') {
            out.insert(k.trim().to_string(), unquote(v));
        }
    }
    out
}

/// The block scalar under `key: |` in a manifest, dedented.
fn block_scalar(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let base = indent(head);
    lines
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .map(|l| l.get(base + 2..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

struct MapEnv(HashMap<String, String>);

impl EnvSource for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

fn load_config(toml: &str, env: HashMap<String, String>) -> Config {
    let mut config = Config::from_toml(toml).unwrap_or_else(|e| panic!("orrery.toml: {e}"));
    config.apply_env(&MapEnv(env)).unwrap();
    config.validate().unwrap();
    config
}

#[test]
fn shipped_configuration_is_accepted_by_orrery() {
    let cm = read("deploy/k8s/configmap.yaml");
    let toml = block_scalar(&cm, "orrery.toml");
    let mut env = manifest_map(&cm, "data");
    assert_eq!(
        env.get("ORRERY_CONFIG").map(String::as_str),
        Some("/etc/orrery/orrery.toml")
    );
    let secret = manifest_map(&read("deploy/k8s/secret.example.yaml"), "stringData");
    for key in ["DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
        assert!(secret.contains_key(key), "secret.example.yaml lacks {key}");
    }
    env.extend(secret);
    let config = load_config(&toml, env);
    assert!(config.database_url.starts_with("postgres://"));
    assert!(config.redis_url.is_some(), "replicas need the Redis bus");
    assert!(
        !config.database.migrate_on_start,
        "the migrate Job owns migrations"
    );
    assert_eq!(config.listen.port(), 8080);
    assert!(config.listen.ip().is_unspecified());

    // The compose environment from .env.example.
    let dotenv: HashMap<String, String> = read("deploy/.env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let config = load_config("", dotenv);
    assert!(config.database_url.starts_with("postgres://"));
    assert!(config.redis_url.is_some());
}

#[test]
fn scale_out_manifests_split_api_and_indexer_replicas() {
    let api = read("deploy/k8s/deployment.yaml");
    assert!(
        api.contains("args: [\"serve\", \"--role\", \"api\"]"),
        "API replicas run --role api"
    );
    let indexer = read("deploy/k8s/indexer.yaml");
    for needle in [
        "kind: Deployment",
        "name: orrery-indexer",
        "args: [\"serve\", \"--role\", \"indexer\"]",
        "app.kubernetes.io/component: indexer",
        "replicas: 2",
        "PgBouncer",
        "session pooling",
    ] {
        assert!(indexer.contains(needle), "indexer.yaml lacks `{needle}`");
    }
    assert_eq!(
        probe_path(&indexer, "readinessProbe").as_deref(),
        Some("/ready")
    );
    let hpa = read("deploy/k8s/hpa.yaml");
    for needle in [
        "kind: HorizontalPodAutoscaler",
        "name: cpu",
        "orrery_http_requests_per_second",
        "orrery_http_requests_total",
        "name: orrery\n",
    ] {
        assert!(hpa.contains(needle), "hpa.yaml lacks `{needle}`");
    }
    let pdb = read("deploy/k8s/pdb.yaml");
    assert_eq!(pdb.matches("kind: PodDisruptionBudget").count(), 2);
    assert!(pdb.contains("component: api") && pdb.contains("component: indexer"));
    let kustomization = read("deploy/k8s/kustomization.yaml");
    for file in ["indexer.yaml", "hpa.yaml", "pdb.yaml"] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "kustomization lacks {file}"
        );
    }
    // The Service fronts the API pods, which the HPA scales.
    assert!(read("deploy/k8s/service.yaml").contains("app.kubernetes.io/component: api"));
    // Compose: three replicas of one definition, distinct ids and ports, migrations first.
    let compose = read("deploy/docker-compose.yml");
    for (service, id, port) in [
        ("orrery", "orrery-1", "8080"),
        ("orrery-2", "orrery-2", "8081"),
        ("orrery-3", "orrery-3", "8082"),
    ] {
        let body = compose
            .split(&format!("\n  {service}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("compose has no {service}"));
        let body = body.split("\n\n").next().unwrap();
        assert!(
            body.contains("<<: *orrery"),
            "{service} does not use the shared definition"
        );
        assert!(
            body.contains(&format!("ORRERY_REPLICA_ID: {id}")),
            "{service} id"
        );
        assert!(
            body.contains(&format!("127.0.0.1:{port}:8080")),
            "{service} port"
        );
    }
    assert!(compose.contains("command: [\"migrate\"]"));
    assert!(compose.contains("condition: service_completed_successfully"));
    let prom = read("deploy/prometheus/prometheus.yml");
    assert!(prom.contains("orrery-2:8080") && prom.contains("orrery-3:8080"));
}
