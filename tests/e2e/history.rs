//! The history, for auditors: the global log listed with filters and pages, a resource's history with its
//! state after each event, time travel of a team's rule set, and `edict events tail` following the log.

use crate::harness::{
    Signal, Store, TestApp, approve, attach, attach_with, logged_in, rule_spec, signal,
    team_with_member,
};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

crate::on_both_stores!(
    the_log_is_listed_in_commit_order_with_every_filter,
    pages_never_skip_or_repeat_while_commands_commit,
    a_rules_history_shows_each_state_from_draft_to_approved,
    time_travel_answers_the_rule_set_in_force_then,
    tail_follows_new_events_from_the_store_and_the_api,
    a_machines_enforced_revision_travels_in_time,
);

/// A GET as `token`, asserting 200; answers the body.
async fn get(app: &TestApp, path: &str, token: &str) -> Value {
    let (status, body) = app.get(path, token).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// Every event of the log, in one request.
async fn whole_log(app: &TestApp, token: &str) -> Vec<Value> {
    let page = get(app, "/api/v1/events?limit=1000", token).await;
    assert!(page.get("next").is_none(), "the test log fits one page");
    page["items"].as_array().unwrap().clone()
}

/// The whole log once it lists `count` events. On PostgreSQL the log is listed below a horizon that
/// is cluster-wide (`infrastructure/src/store/global_log.rs`): a transaction still running in another
/// test's database holds a committed event back for a moment, so the listing may lag the commands.
async fn whole_log_of(app: &TestApp, token: &str, count: usize) -> Vec<Value> {
    let listed = crate::harness::eventually(Duration::from_secs(10), || async {
        let all = whole_log(app, token).await;
        (all.len() >= count).then_some(all)
    })
    .await;
    match listed {
        Some(all) => all,
        None => whole_log(app, token).await,
    }
}

/// `(transaction_id, global_position)`: the commit order.
fn order(event: &Value) -> (u64, i64) {
    (
        event["transaction_id"].as_u64().unwrap(),
        event["global_position"].as_i64().unwrap(),
    )
}

fn recorded(event: &Value) -> DateTime<Utc> {
    event["recorded_at"].as_str().unwrap().parse().unwrap()
}

/// Drafts, submits and approves (by `second`) a rule of `layer`; answers its id.
async fn approved_rule(app: &TestApp, admin: &str, second: &str, name: &str) -> String {
    approve(app, admin, second, rule_spec(name, "team")).await
}

/// Percent-encodes the `+` and `:` of a time for a query string.
fn query_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace(':', "%3A")
}

async fn the_log_is_listed_in_commit_order_with_every_filter(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (second_id, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let rule = approved_rule(&app, &admin, &second, "first").await;
    let team = app.team(&admin, "Platform").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = approved_rule(&app, &admin, &second, "second").await;
    attach(&app, &admin, &team, &rule).await;

    let all = whole_log_of(&app, &auditor, 3 + 8 + 2).await;
    // Users (3 created), 2 rules × 4 events (drafted, submitted, approval recorded, revision
    // approved), the team and its attachment.
    assert_eq!(all.len(), 3 + 8 + 2, "{all:#?}");
    let orders: Vec<_> = all.iter().map(order).collect();
    let mut sorted = orders.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(orders, sorted, "commit order, no duplicate");
    for event in &all {
        let meta = &event["metadata"];
        assert!(!meta["request_id"].as_str().unwrap().is_empty(), "{event}");
        assert!(
            !meta["correlation_id"].as_str().unwrap().is_empty(),
            "{event}"
        );
        assert!(meta["actor"].as_str().unwrap().contains(':'), "{event}");
        assert!(["api", "system"].contains(&meta["source"].as_str().unwrap()));
    }

    // Each filter answers exactly what filtering the whole log answers.
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<i64> {
        all.iter()
            .filter(|e| keep(e))
            .map(|e| e["global_position"].as_i64().unwrap())
            .collect()
    };
    let listed = |query: String| {
        let app = &app;
        let auditor = auditor.clone();
        async move {
            let page = get(app, &format!("/api/v1/events?{query}"), &auditor).await;
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["global_position"].as_i64().unwrap())
                .collect::<Vec<i64>>()
        }
    };
    let rules = expect(&|e| e["aggregate_type"] == "Rule");
    assert_eq!(rules.len(), 8);
    assert_eq!(listed("aggregate_type=Rule".into()).await, rules);
    let rules_and_teams =
        expect(&|e| e["aggregate_type"] == "Rule" || e["aggregate_type"] == "Team");
    assert_eq!(
        listed("aggregate_type=Rule,Team".into()).await,
        rules_and_teams
    );
    let of_other = expect(&|e| e["aggregate_id"] == other.as_str());
    assert_eq!(of_other.len(), 4);
    assert_eq!(
        listed(format!("aggregate_type=Rule&aggregate_id={other}")).await,
        of_other
    );
    let by_second = expect(&|e| e["metadata"]["actor"] == format!("user:{second_id}"));
    assert_eq!(by_second.len(), 4, "the two approvals, two events each");
    assert_eq!(listed(format!("actor=user:{second_id}")).await, by_second);
    let approvals =
        expect(&|e| e["event_type"] == "RuleRevisionApproved" || e["event_type"] == "TeamCreated");
    assert_eq!(approvals.len(), 3);
    assert_eq!(
        listed("event_type=RuleRevisionApproved,TeamCreated".into()).await,
        approvals
    );
    let after_middle = expect(&|e| recorded(e) >= middle);
    let before_middle = expect(&|e| recorded(e) <= middle);
    assert_eq!(after_middle.len(), 5, "the second rule and the attachment");
    assert_eq!(
        listed(format!("since={}", query_time(middle))).await,
        after_middle
    );
    assert_eq!(
        listed(format!("until={}", query_time(middle))).await,
        before_middle
    );
    assert_eq!(
        listed(format!(
            "since={}&aggregate_type=Team&event_type=RuleAttached",
            query_time(middle)
        ))
        .await,
        expect(&|e| recorded(e) >= middle && e["event_type"] == "RuleAttached")
    );
    // Starting after a position.
    let third = all[2]["global_position"].as_i64().unwrap();
    assert_eq!(
        listed(format!("after_position={third}")).await,
        expect(&|e| order(e) > order(&all[2]))
    );

    // Malformed parameters are 400s that name the parameter.
    for (query, parameter) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("after=nonsense", "after"),
        ("aggregate_type=Invoice", "aggregate_type"),
        ("after_position=999999", "after_position"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/events?{query}"), &auditor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], parameter, "{query}: {body}");
    }
}

async fn pages_never_skip_or_repeat_while_commands_commit(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    for n in 0..5 {
        app.ok(
            "/api/v1/rules",
            &admin,
            rule_spec(&format!("before {n}"), "team"),
        )
        .await;
    }
    // Page by 2 while a writer keeps committing: the pages must end up as the whole log.
    let writer = {
        let base = app.base.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..30 {
                let response = client
                    .post(format!("{base}/api/v1/rules"))
                    .bearer_auth(&admin)
                    .json(&rule_spec(&format!("during {n}"), "team"))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut writer = Some(writer);
    let expected = 2 + 5 + 30;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {expected} events seen",
            seen.len()
        );
        let path = match &cursor {
            Some(after) => format!("/api/v1/events?limit=2&after={after}"),
            None => "/api/v1/events?limit=2".to_owned(),
        };
        let page = get(&app, &path, &auditor).await;
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().cloned());
        if let Some(last) = items.last() {
            cursor = Some(last["cursor"].as_str().unwrap().to_owned());
        }
        if page.get("next").is_none() {
            // The end of the log so far: let the writer finish, then read on.
            if let Some(w) = writer.take() {
                w.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after_last = get(
        &app,
        &format!("/api/v1/events?after={}", cursor.unwrap()),
        &auditor,
    )
    .await;
    assert_eq!(after_last["items"], json!([]), "nothing after the end");
    let all = whole_log_of(&app, &auditor, expected).await;
    assert_eq!(all.len(), expected);
    let seen_orders: Vec<_> = seen.iter().map(order).collect();
    let all_orders: Vec<_> = all.iter().map(order).collect();
    assert_eq!(
        seen_orders, all_orders,
        "paging while writing returns the whole log, in order, once"
    );
    let unique: HashSet<_> = seen_orders.iter().collect();
    assert_eq!(unique.len(), seen_orders.len());
}

async fn a_rules_history_shows_each_state_from_draft_to_approved(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (admin_id, _) = {
        let me = get(&app, "/api/v1/users/me", &admin).await;
        (me["id"].as_str().unwrap().to_owned(), ())
    };
    let (second_id, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (member_id, _member) = app.user(&admin, "member", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let rule = approved_rule(&app, &admin, &second, "history").await;

    let history = get(&app, &format!("/api/v1/rules/{rule}/history"), &auditor).await;
    assert_eq!(history["aggregate_type"], "Rule");
    assert_eq!(history["aggregate_id"], rule.as_str());
    assert_eq!(history["version"], 4);
    let entries = history["entries"].as_array().unwrap();
    let types: Vec<_> = entries
        .iter()
        .map(|e| e["event"]["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "RuleDrafted",
            "RuleSubmitted",
            "RuleApprovalRecorded",
            "RuleRevisionApproved"
        ]
    );
    let actors: Vec<_> = entries
        .iter()
        .map(|e| e["event"]["metadata"]["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        [
            format!("user:{admin_id}"),
            format!("user:{admin_id}"),
            format!("user:{second_id}"),
            format!("user:{second_id}")
        ]
    );
    let sequences: Vec<_> = entries
        .iter()
        .map(|e| e["event"]["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    for entry in entries {
        assert!(entry["event"]["recorded_at"].as_str().is_some());
    }
    // The state after each event.
    let drafted = &entries[0]["state"];
    assert_eq!(drafted["working"]["state"], "draft", "{drafted}");
    assert_eq!(drafted["approved"], Value::Null);
    assert_eq!(drafted["version"], 1);
    let submitted = &entries[1]["state"];
    assert_eq!(submitted["working"]["state"], "pending", "{submitted}");
    assert_eq!(submitted["working"]["submitted_by"], admin_id.as_str());
    assert_eq!(submitted["approved"], Value::Null);
    let recorded = &entries[2]["state"];
    assert_eq!(recorded["working"]["state"], "pending", "{recorded}");
    assert_eq!(
        recorded["working"]["approvals"][0]["by"],
        second_id.as_str(),
        "{recorded}"
    );
    assert_eq!(recorded["approved"], Value::Null);
    let approved = &entries[3]["state"];
    assert_eq!(approved["working"], Value::Null, "{approved}");
    assert_eq!(approved["approved"]["number"], 1);
    assert_eq!(approved["approved"]["approvers"], json!([second_id]));
    assert_eq!(
        approved["approved"]["spec"]["name"], "history",
        "{approved}"
    );
    // The org_admin may read it too.
    get(&app, &format!("/api/v1/rules/{rule}/history"), &admin).await;

    // The other resources.
    let team = team_with_member(&app, &admin, "Platform", &member_id).await;
    let team_history = get(&app, &format!("/api/v1/teams/{team}/history"), &auditor).await;
    let last = team_history["entries"].as_array().unwrap().last().unwrap();
    assert_eq!(last["event"]["event_type"], "MemberAdded");
    assert_eq!(last["state"]["members"][&member_id], "member", "{last}");
    let user_history = get(
        &app,
        &format!("/api/v1/users/{member_id}/history"),
        &auditor,
    )
    .await;
    assert_eq!(
        user_history["entries"][0]["event"]["event_type"],
        "UserCreated"
    );
    assert!(
        !user_history.to_string().contains("member-password-123"),
        "no credential in a user's history"
    );

    // Unknown resources are 404 problems.
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/v1/rules/{unknown}/history"),
        format!("/api/v1/teams/{unknown}/history"),
        format!("/api/v1/change-requests/{unknown}/history"),
        format!("/api/v1/users/{unknown}/history"),
        format!("/api/v1/agents/{unknown}/history"),
        "/api/v1/rules/not-a-uuid/history".to_owned(),
        // A team's id is not a rule's.
        format!("/api/v1/rules/{team}/history"),
    ] {
        let response = app
            .send(Method::GET, &path, Some(&auditor), None, &[])
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json"),
            "{path}"
        );
    }
}

/// The live rule set once it covers `position`, without its freshness.
async fn live_ruleset(app: &TestApp, team: &str, token: &str, position: i64) -> Value {
    let mut live = get(
        app,
        &format!("/api/v1/teams/{team}/ruleset?min_position={position}"),
        token,
    )
    .await;
    live.as_object_mut().unwrap().remove("freshness");
    live
}

async fn time_travel_answers_the_rule_set_in_force_then(store: Store) {
    let app = TestApp::spawn(store).await;
    let (admin, second) = app.admins().await;
    let (member_id, member) = app.user(&admin, "member", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let team = team_with_member(&app, &admin, "Platform", &member_id).await;
    let first = approved_rule(&app, &admin, &second, "first rule").await;
    let attached = app
        .ok(
            &format!("/api/v1/teams/{team}/rules"),
            &admin,
            json!({"rule_id": first, "enforcement": {"mode": "block"}}),
        )
        .await;
    let then_position = attached["position"].as_i64().unwrap();
    let then = live_ruleset(&app, &team, &auditor, then_position).await;
    assert!(
        then["layers"]["team"]["text"]
            .as_str()
            .unwrap()
            .contains("first rule"),
        "{then}"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let then_time = Utc::now();
    tokio::time::sleep(Duration::from_millis(30)).await;

    // Later changes: a second rule attached, and a new revision of the first approved.
    let later = approved_rule(&app, &admin, &second, "later rule").await;
    attach_with(&app, &admin, &team, &later, json!({"mode": "warning"})).await;
    let mut revised = rule_spec("first rule", "team");
    revised["content"] = json!("- first rule, revised.\n");
    app.ok(&format!("/api/v1/rules/{first}/revisions"), &admin, revised)
        .await;
    app.ok(&format!("/api/v1/rules/{first}/submit"), &admin, json!({}))
        .await;
    let approved = app
        .ok(
            &format!("/api/v1/rules/{first}/approve"),
            &second,
            json!({}),
        )
        .await;
    let now = live_ruleset(
        &app,
        &team,
        &auditor,
        approved["position"].as_i64().unwrap(),
    )
    .await;
    assert_ne!(now["hash"], then["hash"]);
    assert!(now["revision"].as_u64() > then["revision"].as_u64());

    // As of the position and as of the time: what the live endpoint answered then.
    for as_of in [then_position.to_string(), query_time(then_time)] {
        let mut past = get(
            &app,
            &format!("/api/v1/teams/{team}/ruleset?as_of={as_of}"),
            &member,
        )
        .await;
        let meta = past.as_object_mut().unwrap().remove("as_of").unwrap();
        assert_eq!(meta["position"], then_position, "{meta}");
        assert_eq!(past["hash"], then["hash"], "as_of={as_of}");
        assert_eq!(past["revision"], then["revision"]);
        assert_eq!(
            past["layers"]["team"]["text"], then["layers"]["team"]["text"],
            "as_of={as_of}"
        );
        assert_eq!(past, then, "as_of={as_of}: the whole document");
    }
    // As of now: the live rule set.
    let mut present = get(
        &app,
        &format!(
            "/api/v1/teams/{team}/ruleset?as_of={}",
            query_time(Utc::now())
        ),
        &auditor,
    )
    .await;
    present.as_object_mut().unwrap().remove("as_of");
    assert_eq!(present, now);
    // Before the team existed: 404.
    let (status, body) = app
        .get(&format!("/api/v1/teams/{team}/ruleset?as_of=1"), &auditor)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Malformed or unknown as_of: 400 naming it.
    for as_of in ["yesterday", "2026-11-22", "99999999"] {
        let (status, body) = app
            .get(
                &format!("/api/v1/teams/{team}/ruleset?as_of={as_of}"),
                &auditor,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{as_of}: {body}");
        assert_eq!(body["field"], "as_of", "{body}");
        assert_eq!(body["type"], "urn:edict:problem:malformed-request");
    }
    // An agent's enforced revisions as of a time before it ever applied one: none.
    let enrolled = app.enroll_agent(&member, "laptop", "Laptop").await;
    let agent = enrolled["id"].as_str().unwrap();
    let enforced = get(
        &app,
        &format!(
            "/api/v1/agents/{agent}/enforced?as_of={}",
            query_time(then_time)
        ),
        &auditor,
    )
    .await;
    assert_eq!(enforced, json!([]));
    let (status, body) = app
        .get(
            &format!("/api/v1/agents/{agent}/enforced?as_of=soon"),
            &auditor,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "as_of");
}

/// `edict events tail` with `args`, its stdout piped.
fn tail(args: &[&str]) -> tokio::process::Child {
    Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["events", "tail", "--interval-ms", "50"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn edict events tail")
}

/// The next line of `lines` within 10 s.
async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .expect("tail still running")
}

/// SIGINT, then the exit status.
async fn interrupt(mut child: tokio::process::Child) -> std::process::ExitStatus {
    signal(child.id().unwrap(), Signal::SIGINT);
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("tail exits within 10 s of Ctrl-C")
        .unwrap()
}

async fn tail_follows_new_events_from_the_store_and_the_api(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let old = app
        .created("/api/v1/rules", &admin, rule_spec("old", "team"))
        .await;

    // From the store, NDJSON, starting at the end of the log: only new events.
    let mut from_store = tail(&["--database-url", &app.database_url, "--output", "json"]);
    let mut store_lines = BufReader::new(from_store.stdout.take().unwrap()).lines();
    // From the API, text, only rule events, from the beginning.
    let mut from_api = tail(&[
        "--server",
        &app.base,
        "--token",
        &auditor,
        "--from",
        "0",
        "--aggregate-type",
        "Rule",
    ]);
    let mut api_lines = BufReader::new(from_api.stdout.take().unwrap()).lines();
    let first_api = next_line(&mut api_lines).await;
    assert!(
        first_api.contains(&format!("Rule/{old} #1")) && first_api.contains("RuleDrafted"),
        "{first_api}"
    );

    // The store tail starts at the end of the log, whenever it gets there: commit rules until it
    // prints one. The first line must be one of them, never an older event.
    let mut new_rules = Vec::new();
    let first_new = loop {
        assert!(new_rules.len() < 40, "the store tail printed nothing");
        let rule = app
            .ok(
                "/api/v1/rules",
                &admin,
                rule_spec(&format!("new {}", new_rules.len()), "team"),
            )
            .await;
        new_rules.push(rule["id"].as_str().unwrap().to_owned());
        if let Ok(line) =
            tokio::time::timeout(Duration::from_millis(500), store_lines.next_line()).await
        {
            break line.unwrap().expect("tail still running");
        }
    };
    let last_rule = new_rules.last().unwrap().clone();
    app.ok(
        &format!("/api/v1/rules/{last_rule}/submit"),
        &admin,
        json!({}),
    )
    .await;
    let mut from_store_events: Vec<Value> = vec![serde_json::from_str(&first_new).unwrap()];
    while from_store_events.last().unwrap()["event_type"] != "RuleSubmitted" {
        from_store_events.push(serde_json::from_str(&next_line(&mut store_lines).await).unwrap());
    }
    let first = &from_store_events[0];
    assert_eq!(first["event_type"], "RuleDrafted", "{first}");
    assert!(
        new_rules
            .iter()
            .any(|r| first["aggregate_id"] == r.as_str()),
        "the first event printed is new: {first}"
    );
    assert!(
        first["metadata"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("user:")
    );
    // What it printed is exactly the log from that event on: nothing skipped, nothing twice.
    let all = whole_log(&app, &auditor).await;
    let start = all
        .iter()
        .position(|e| order(e) == order(first))
        .expect("the printed event is in the log");
    let printed: Vec<_> = from_store_events.iter().map(order).collect();
    let logged: Vec<_> = all[start..].iter().map(order).collect();
    assert_eq!(printed, logged);

    // The API tail printed every rule event of the log, in order, as text.
    let rule_events: Vec<i64> = all
        .iter()
        .filter(|e| e["aggregate_type"] == "Rule")
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    let mut api_printed = vec![first_api];
    while api_printed.len() < rule_events.len() {
        api_printed.push(next_line(&mut api_lines).await);
    }
    let api_positions: Vec<i64> = api_printed
        .iter()
        .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(api_positions, rule_events, "{api_printed:#?}");
    let last_line = api_printed.last().unwrap();
    assert!(
        last_line.contains(&format!("Rule/{last_rule} #2")) && last_line.contains("RuleSubmitted"),
        "{last_line}"
    );

    // Ctrl-C ends both with status 0.
    assert!(interrupt(from_store).await.success());
    assert!(interrupt(from_api).await.success());

    // A position that does not exist is an error, not a silent wait.
    let output = Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["events", "tail", "--database-url", &app.database_url])
        .args(["--from", "999999"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("999999"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A machine running the real `edict-agent`, enrolled with an enrollment token; answers its agent id
/// and the daemon (killed on drop) with the directory it runs in.
async fn running_agent(
    app: &TestApp,
    admin: &str,
    user_id: &str,
) -> (String, tokio::process::Child, tempfile::TempDir) {
    let agent = std::path::PathBuf::from(env!("CARGO_BIN_EXE_edict")).with_file_name("edict-agent");
    assert!(
        agent.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`)",
        agent.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let command = || {
        let mut command = Command::new(&agent);
        command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--home")
            .arg(&home)
            .arg("--org-file")
            .arg(dir.path().join("etc").join("CLAUDE.md"))
            .env("EDICT_AGENT_LOG", "warn")
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    };
    let enrollment = app
        .ok(
            "/api/v1/enrollment-tokens",
            admin,
            json!({"user_id": user_id}),
        )
        .await;
    let mut login = command();
    login
        .args(["login", "--server", &app.base, "--output", "json"])
        .args(["--enrollment-token", enrollment["token"].as_str().unwrap()]);
    let agent_id = logged_in(login).await;
    let daemon = command().arg("run").stdout(Stdio::null()).spawn().unwrap();
    (agent_id, daemon, dir)
}

/// Waits until the agent reports `revision` of `team`'s rule set applied; answers the enforced row.
async fn applied(app: &TestApp, token: &str, agent: &str, team: &str, revision: u64) -> Value {
    let row = crate::harness::eventually(Duration::from_secs(20), || async {
        let (_, enforced) = app
            .get(&format!("/api/v1/agents/{agent}/enforced"), token)
            .await;
        enforced
            .as_array()?
            .iter()
            .find(|e| e["team_id"] == team && e["revision"] == revision)
            .cloned()
    })
    .await;
    row.unwrap_or_else(|| panic!("the agent applies revision {revision} of {team}"))
}

async fn a_machines_enforced_revision_travels_in_time(store: Store) {
    let app = TestApp::spawn(store).await;
    let (admin, second) = app.admins().await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let team = team_with_member(&app, &admin, "Platform", &dev_id).await;
    let before_agent = Utc::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let first = approved_rule(&app, &admin, &second, "first rule").await;
    attach(&app, &admin, &team, &first).await;
    let (agent, mut daemon, _dir) = running_agent(&app, &admin, &dev_id).await;
    // The rule set is a read model: on PostgreSQL it is projected after the attach answers.
    let live = crate::harness::eventually(Duration::from_secs(20), || async {
        let (status, body) = app
            .get(&format!("/api/v1/teams/{team}/ruleset"), &auditor)
            .await;
        (status == StatusCode::OK).then_some(body)
    })
    .await
    .expect("the team's rule set is projected");
    let then_revision = live["revision"].as_u64().unwrap();
    let then = applied(&app, &auditor, &agent, &team, then_revision).await;
    assert_eq!(then["hash"], live["hash"]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let then_time = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The team's rule set changes; the machine applies the new revision.
    let later = approved_rule(&app, &admin, &second, "later rule").await;
    let attached = app
        .ok(
            &format!("/api/v1/teams/{team}/rules"),
            &admin,
            json!({"rule_id": later, "enforcement": {"mode": "warning"}}),
        )
        .await;
    let now = applied(&app, &auditor, &agent, &team, then_revision + 1).await;
    assert_ne!(now["hash"], then["hash"]);

    let as_of = |as_of: String| {
        let app = &app;
        let auditor = auditor.clone();
        let agent = agent.clone();
        async move {
            get(
                app,
                &format!("/api/v1/agents/{agent}/enforced?as_of={as_of}"),
                &auditor,
            )
            .await
        }
    };
    // Before it enrolled: nothing.
    assert_eq!(as_of(query_time(before_agent)).await, json!([]));
    // At a time between the two: the first revision, the team's latest then.
    let past = as_of(query_time(then_time)).await;
    assert_eq!(past.as_array().unwrap().len(), 1, "{past}");
    assert_eq!(past[0]["revision"], then_revision);
    assert_eq!(past[0]["hash"], then["hash"]);
    assert_eq!(past[0]["current"], true, "{past}");
    // At the event that attached the later rule: still the first revision, no longer the latest.
    let at_attach = as_of(attached["position"].as_i64().unwrap().to_string()).await;
    assert_eq!(at_attach[0]["revision"], then_revision, "{at_attach}");
    assert_eq!(at_attach[0]["current"], false, "{at_attach}");
    // Now: the second revision, as the live view says.
    let present = as_of(query_time(Utc::now())).await;
    assert_eq!(present[0]["revision"], then_revision + 1);
    assert_eq!(present[0]["hash"], now["hash"]);
    assert_eq!(present[0]["current"], true);
    daemon.kill().await.unwrap();
}
