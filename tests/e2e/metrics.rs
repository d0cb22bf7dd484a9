//! The Prometheus metrics of a real deployment (PostgreSQL, NATS, every role, a real `edict-agent`),
//! scraped from `/metrics` on the API and gateway ports while a rule travels: the counters move for a
//! command, a push and an acknowledgement, the gauges show the team converged; a request relayed by an
//! untrusted proxy is refused. The dashboard and alert rules shipped in `docs/ops/` name only metrics
//! the scrape shows.

use crate::harness::{Layout, Machine, Store, TestApp, attach, eventually, rule_spec};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One scrape: every series (`name{labels}`) with its value.
type Scrape = BTreeMap<String, f64>;

async fn scrape(app: &TestApp, base: &str) -> Scrape {
    let response = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {base}/metrics");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the series named `name` whose labels include every `labels` pair (summed when several
/// match); 0 when none does.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value)
        .sum()
}

/// The metric families a scrape shows (histogram series folded into their family).
fn families(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .keys()
        .map(|series| {
            let name = series.split('{').next().unwrap();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// Every `edict_…` metric name in `text` (a dashboard's or alert rule's queries).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("edict_") {
        let start = at + found;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
        at = end;
    }
    names
}

#[tokio::test]
async fn counters_move_for_a_command_a_push_and_an_ack_and_the_dashboards_name_real_metrics() {
    let app = TestApp::spawn_with_vars(
        Store::Postgres,
        Layout::distributed(),
        &[("EDICT_METRICS_SAMPLE_MS", "200")],
    )
    .await;
    let (admin, second) = app.admins().await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let before = scrape(&app, &app.base).await;
    let drafted = [
        ("aggregate", "Rule"),
        ("command", "DraftRule"),
        ("outcome", "ok"),
    ];
    assert_eq!(value(&before, "edict_commands_total", &drafted), 0.0);

    // A machine, a team with a rule: a command, a push, an acknowledgement.
    let (mut machine, _) =
        Machine::enrolled(&app, &admin, json!({"user_id": dev_id, "note": "metrics"})).await;
    machine.run();
    let team = app.team(&admin, "measured").await;
    app.add_member(&admin, &team, &dev_id, "member").await;
    let mut spec = rule_spec("measure", "team");
    spec["content"] = json!("Always measure.");
    let rule = app.created("/api/v1/rules", &admin, spec).await;
    app.ok(&format!("/api/v1/rules/{rule}/submit"), &admin, json!({}))
        .await;
    // The author may not approve: a refused command.
    let (status, _) = app
        .post(&format!("/api/v1/rules/{rule}/approve"), &admin, json!({}))
        .await;
    assert_eq!(status, 422);
    app.ok(&format!("/api/v1/rules/{rule}/approve"), &second, json!({}))
        .await;
    attach(&app, &admin, &team, &rule).await;
    let written = eventually(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(machine.team_file()).unwrap_or_default();
        text.contains("Always measure.").then_some(())
    })
    .await;
    assert!(written.is_some(), "the rule reaches the machine");

    let api = scrape(&app, &app.base).await;
    assert_eq!(value(&api, "edict_commands_total", &drafted), 1.0);
    assert!(
        value(
            &api,
            "edict_commands_total",
            &[("command", "ApproveRule"), ("outcome", "refused")]
        ) >= 1.0,
        "the refused approval is counted: {api:#?}"
    );
    assert!(
        value(
            &api,
            "edict_events_appended_total",
            &[("aggregate", "Rule")]
        ) >= 3.0
    );
    assert!(
        value(
            &api,
            "edict_http_requests_total",
            &[
                ("route", "/api/v1/rules/{id}/approve"),
                ("method", "POST"),
                ("status", "422")
            ]
        ) >= 1.0,
        "{:#?}",
        api.keys()
            .filter(|series| series.starts_with("edict_http_requests_total"))
            .collect::<Vec<_>>()
    );
    assert!(
        value(&api, "edict_command_duration_seconds_count", &drafted) >= 1.0,
        "the command's latency is recorded"
    );
    // An upgrade without a token is refused (401) and counted.
    let refused = app
        .client
        .get(format!("{}/ws", app.gateway))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // The gateway's port: the push and the acknowledgement, and the team converged.
    let converged = eventually(Duration::from_secs(20), || async {
        let gateway = scrape(&app, &app.gateway).await;
        let done = value(&gateway, "edict_gateway_pushes_total", &[]) >= 1.0
            && value(
                &gateway,
                "edict_gateway_acks_total",
                &[("outcome", "applied")],
            ) >= 1.0
            && value(
                &gateway,
                "edict_convergence_agents",
                &[("team", &team), ("state", "current")],
            ) == 1.0;
        done.then_some(gateway)
    })
    .await;
    let gateway =
        converged.expect("the gateway counts the push and the ack, and the team converges");
    assert_eq!(
        value(
            &gateway,
            "edict_gateway_upgrades_refused_total",
            &[("status", "401")]
        ),
        1.0
    );
    assert_eq!(value(&gateway, "edict_gateway_connections", &[]), 1.0);
    assert_eq!(
        value(
            &gateway,
            "edict_convergence_agents",
            &[("team", &team), ("state", "behind")]
        ),
        0.0
    );
    assert!(value(&gateway, "edict_relay_published_total", &[]) >= 1.0);

    // The relay catches up: its lag gauges read 0 once everything is published.
    let caught_up = eventually(Duration::from_secs(10), || async {
        let now = scrape(&app, &app.base).await;
        (value(&now, "edict_relay_lag_positions", &[]) == 0.0
            && value(&now, "edict_log_head_position", &[]) > 0.0)
            .then_some(now)
    })
    .await;
    let now = caught_up.expect("the relay's lag reads 0 once caught up");

    // A request a proxy relayed, from a proxy that is not trusted: refused on both ports.
    for base in [&app.base, &app.gateway] {
        let response = app
            .client
            .get(format!("{base}/metrics"))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{base}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:edict:problem:metrics_not_allowed");
    }
    // The gateway port's probes.
    let live = app
        .client
        .get(format!("{}/health/live", app.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready: Value = app
        .client
        .get(format!("{}/health/ready", app.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");

    // Every metric the dashboard and the alert rules query exists.
    let mut seen = families(&now);
    seen.extend(families(&gateway));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ops");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let alerts = std::fs::read_to_string(root.join("alerts.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&alerts).expect("the alert rules are YAML");
    assert!(
        rules["groups"][0]["rules"]
            .as_sequence()
            .is_some_and(|r| !r.is_empty())
    );
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let missing: Vec<_> = metric_names(text).difference(&seen).cloned().collect();
        assert!(
            missing.is_empty(),
            "the {file} queries metrics no scrape shows: {missing:?}"
        );
    }
}

#[tokio::test]
async fn a_process_without_the_api_serves_its_probes_and_metrics_on_its_port() {
    let app = TestApp::spawn(Store::Postgres).await;
    let port = crate::harness::free_port();
    let mut audit = app
        .command(Some("audit"), port)
        .spawn()
        .expect("spawn edict serve --roles audit");
    let base = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(20), || async {
        let response = app
            .client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(response.json::<Value>().await.ok()?)
    })
    .await
    .expect("the audit process answers /health/ready");
    let checks = ready["checks"].to_string();
    assert!(checks.contains("role:audit"), "{ready}");
    assert!(!checks.contains("role:api"), "{ready}");
    let page = scrape(&app, &base).await;
    assert_eq!(value(&page, "edict_role_up", &[("role", "audit")]), 1.0);
    // Only the probes and the metrics: no API on this port.
    let api = app
        .client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    audit.start_kill().unwrap();
    audit.wait().await.unwrap();
}
