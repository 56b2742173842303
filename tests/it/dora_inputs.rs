//! The inputs of DORA through the real binary (docs/dora.md): `POST /api/v1/pushes`,
//! `POST /api/v1/incidents`, `GET /api/v1/incidents`, and the GitHub `push` and `issues` and
//! GitLab `Push Hook` and `Issue Hook` fixtures, used as they are. Expected values are read off
//! the fixture files by hand; each assertion says which field gives them.

use serde_json::Value;

use crate::common::{pipestat, Daemon};
use crate::webhooks::{github, gitlab, read, GH_SECRET, GL_TOKEN};

/// The stored pushes as "project branch head pushed_at: sha@committed_at …", in rowid order.
fn pushes(d: &Daemon) -> Vec<String> {
    let conn = d.db();
    let mut stmt = conn
        .prepare(
            "SELECT pr.slug || ' ' || p.branch || ' ' || p.head_sha || ' ' || p.pushed_at || ':' ||
                (SELECT group_concat(c.sha || '@' || c.committed_at, ' ')
                 FROM (SELECT * FROM push_commits WHERE push_id = p.id ORDER BY position) c)
             FROM pushes p JOIN projects pr ON pr.id = p.project_id ORDER BY p.id",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn incidents(d: &Daemon, query: &str) -> Vec<Value> {
    let body = d.get_ok(&format!("/api/v1/incidents{query}"));
    body["items"].as_array().unwrap().clone()
}

const PUSH_A: &str = r#"{"project":"acme/shop","branch":"main","pushed_at":"2026-03-02T10:00:00Z",
    "commits":[{"sha":"a1","committed_at":"2026-03-02T09:00:00Z"},{"sha":"a2","committed_at":"2026-03-02T09:30:00Z"}]}"#;
const PUSH_B: &str = r#"{"project":"gh/acme/shop","branch":"main","pushed_at":1772449200,
    "commits":[{"sha":"b1","committed_at":1772445600}]}"#;

#[test]
fn pushes_are_upserted_all_or_nothing() {
    let d = Daemon::start(&[]);
    let a = d.post_json("/api/v1/pushes", &format!("[{PUSH_A},{PUSH_B}]"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (&a.body["accepted"], &a.body["created"], &a.body["updated"]),
        (&2.into(), &2.into(), &0.into())
    );
    // 2026-03-02T10:00:00Z = 1772445600 s + 3600 s; PUSH_B's times are Unix seconds.
    let stored = [
        "gh/acme/shop main a2 1772445600000:a1@1772442000000 a2@1772443800000",
        "gh/acme/shop main b1 1772449200000:b1@1772445600000",
    ];
    assert_eq!(pushes(&d), stored);
    // A redelivery of PUSH_A with another time replaces it: same row, nothing duplicated.
    let again = PUSH_A.replace("2026-03-02T10:00:00Z", "2026-03-02T10:05:00Z");
    let a = d.call(
        "POST",
        "/api/v1/pushes",
        &[("Content-Type", "application/x-ndjson")],
        Some(again.replace('\n', " ").as_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (&a.body["created"], &a.body["updated"]),
        (&0.into(), &1.into())
    );
    assert_eq!(
        pushes(&d)[0],
        stored[0].replace("1772445600000:", "1772445900000:")
    );
    assert_eq!(pushes(&d).len(), 2);

    // A bad item refuses the whole request, naming the item and the field; nothing lands.
    let bad = PUSH_B.replace(r#""sha":"b1""#, r#""sha":"c1","committed_at":"later""#);
    let bad = bad.replace(r#","committed_at":1772445600"#, "");
    let a = d.post_json(
        "/api/v1/pushes",
        &format!("[{}, {bad}]", PUSH_A.replace("a2", "a3")),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("item 1: field \"commits[0].committed_at\""),
        "{message}"
    );
    assert_eq!(
        pushes(&d).len(),
        2,
        "nothing of the refused request is stored"
    );
    for (body, field) in [
        (
            r#"{"project":"acme/shop","branch":"main","pushed_at":1,"commits":[]}"#,
            "commits",
        ),
        (
            r#"{"project":"acme/shop","pushed_at":1,"commits":[{"sha":"x","committed_at":1}]}"#,
            "branch",
        ),
        (
            r#"{"project":"svn/a/b","branch":"m","pushed_at":1,"commits":[{"sha":"x","committed_at":1}]}"#,
            "project",
        ),
    ] {
        let a = d.post_json("/api/v1/pushes", body);
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert!(
            a.text.contains(&format!("field \\\"{field}\\\"")),
            "{}",
            a.text
        );
    }
    let a = d.call(
        "POST",
        "/api/v1/pushes",
        &[("Content-Type", "text/plain")],
        Some(PUSH_A.as_bytes()),
    );
    assert_eq!(a.status, 415, "{}", a.text);
    assert_eq!(d.get("/api/v1/pushes").status, 405);
}

#[test]
fn incidents_are_upserted_and_listed_newest_first() {
    let d = Daemon::start(&[]);
    let one = r#"{"id":"inc-1","project":"acme/shop","title":"checkout down","service":"web",
        "started_at":"2026-03-02T10:00:00Z","severity":"sev1","deployment":"run-7"}"#;
    let two = r#"{"id":"inc-2","project":"acme/shop","title":"slow search",
        "started_at":"2026-03-03T10:00:00Z","resolved_at":"2026-03-03T11:00:00Z","commit":"abc"}"#;
    let a = d.post_json("/api/v1/incidents", &format!("[{one},{two}]"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (&a.body["created"], &a.body["updated"]),
        (&2.into(), &0.into())
    );
    let listed = incidents(&d, "?project=acme/shop");
    let ids: Vec<&str> = listed.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["inc-2", "inc-1"], "newest first by started_at");
    assert_eq!(listed[1]["deployment"], "run-7");
    assert_eq!(listed[1]["resolved_at"], Value::Null);
    assert_eq!(listed[0]["resolved_at"], "2026-03-03T11:00:00.000Z");
    assert_eq!(listed[0]["commit"], "abc");
    // The incident resolved by a later delivery: replaced, not duplicated.
    let resolved = one.replace(
        r#""severity""#,
        r#""resolved_at":"2026-03-02T12:00:00Z","severity""#,
    );
    let a = d.post_json("/api/v1/incidents", &resolved);
    assert_eq!(
        (&a.body["created"], &a.body["updated"]),
        (&0.into(), &1.into())
    );
    assert_eq!(incidents(&d, "").len(), 2);
    assert_eq!(incidents(&d, "?state=open").len(), 0);
    assert_eq!(incidents(&d, "?state=resolved").len(), 2);
    // Paging: one a page, then the next from the cursor, then none.
    let page = d.get_ok("/api/v1/incidents?limit=1");
    assert_eq!(page["items"][0]["id"], "inc-2");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page = d.get_ok(&format!("/api/v1/incidents?limit=1&cursor={cursor}"));
    assert_eq!(page["items"][0]["id"], "inc-1");
    assert_eq!(page["next_cursor"], Value::Null);

    let bad = two.replace("2026-03-03T11:00:00Z", "2026-03-03T09:00:00Z");
    let a = d.post_json("/api/v1/incidents", &format!("[{one},{bad}]"));
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["error"]["message"],
        "item 1: field \"resolved_at\": is before started_at"
    );
    assert_eq!(incidents(&d, "?state=resolved").len(), 2, "nothing changed");
    for q in [
        "?state=closed",
        "?limit=0",
        "?cursor=zz",
        "?project=svn/a/b",
    ] {
        assert_eq!(d.get(&format!("/api/v1/incidents{q}")).status, 400, "{q}");
    }
}

fn webhook_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--github-secret", GH_SECRET, "--gitlab-secret", GL_TOKEN];
    args.extend(extra);
    Daemon::start(&args)
}

#[test]
fn github_push_fixtures_are_pushes_and_tags_are_ignored() {
    let d = webhook_daemon(&[]);
    let a = github(&d, "push", &read("github/push/with-new-branch.json"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["commits"], 1);
    // ref refs/heads/master; repository.pushed_at 1557933657 (Unix seconds); the one commit
    // 6113728f… with timestamp 2019-05-15T15:19:25Z = 1557933565 s.
    let stored =
        "gh/Codertocat/Hello-World master 6113728f27ae82c7b1a177c8d03f9e96e0adf246 1557933657000:\
         6113728f27ae82c7b1a177c8d03f9e96e0adf246@1557933565000";
    assert_eq!(pushes(&d), [stored]);
    // Redelivered: the same push.
    github(&d, "push", &read("github/push/with-new-branch.json"));
    assert_eq!(pushes(&d), [stored]);
    // payload.json deletes the tag refs/tags/simple-tag: no change, 202.
    let a = github(&d, "push", &read("github/push/payload.json"));
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["ignored"], "push");
    assert_eq!(pushes(&d).len(), 1);
}

#[test]
fn github_issues_with_the_incident_label_are_incidents() {
    // The fixtures' issue #1 carries the label "bug".
    let d = webhook_daemon(&["--incident-label", "BUG"]);
    let project = "?project=gh/Codertocat/Hello-World";
    let a = github(&d, "issues", &read("github/issues/opened.json"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["incident"], "issue-1");
    let listed = incidents(&d, project);
    assert_eq!(listed.len(), 1);
    // issue.created_at 2019-05-15T15:20:18Z, state open, title and html_url as given.
    assert_eq!(listed[0]["started_at"], "2019-05-15T15:20:18.000Z");
    assert_eq!(listed[0]["resolved_at"], Value::Null);
    assert_eq!(listed[0]["title"], "Spelling error in the README file");
    assert_eq!(
        listed[0]["url"],
        "https://github.com/Codertocat/Hello-World/issues/1"
    );
    let a = github(&d, "issues", &read("github/issues/labeled.json"));
    assert_eq!(
        (a.status, &a.body["updated"]),
        (200, &1.into()),
        "{}",
        a.text
    );
    // unlabeled.json takes the label "bug" off: the incident is removed.
    let a = github(&d, "issues", &read("github/issues/unlabeled.json"));
    assert_eq!(
        (a.status, &a.body["removed"]),
        (200, &true.into()),
        "{}",
        a.text
    );
    assert!(incidents(&d, project).is_empty());
    // reopened.json: issue #1 again, created 2021-07-05T18:05:24Z, labelled "bug", open.
    github(&d, "issues", &read("github/issues/reopened.json"));
    let listed = incidents(&d, project);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["started_at"], "2021-07-05T18:05:24.000Z");

    // With the default label, "incident", the same issue is no incident.
    let d = webhook_daemon(&[]);
    let a = github(&d, "issues", &read("github/issues/opened.json"));
    assert_eq!(a.status, 202, "{}", a.text);
    assert!(incidents(&d, "").is_empty());
}

#[test]
fn a_closed_issue_resolves_its_incident_and_its_body_links_it() {
    let d = webhook_daemon(&[]);
    // Derived from opened.json: labelled "Incident", closed, with links in the body.
    let mut v: Value = serde_json::from_slice(&read("github/issues/opened.json")).unwrap();
    v["action"] = "closed".into();
    v["issue"]["labels"][0]["name"] = "Incident".into();
    v["issue"]["state"] = "closed".into();
    v["issue"]["closed_at"] = "2019-05-15T16:20:18Z".into();
    v["issue"]["body"] = "Checkout broke.\r\nRoot cause: 6113728f\r\nDeployment: 42\r\n".into();
    let a = github(&d, "issues", v.to_string().as_bytes());
    assert_eq!(a.status, 200, "{}", a.text);
    let listed = incidents(&d, "");
    assert_eq!(listed[0]["resolved_at"], "2019-05-15T16:20:18.000Z");
    assert_eq!(listed[0]["commit"], "6113728f");
    assert_eq!(listed[0]["deployment"], "42");
    // Deleted: removed.
    v["action"] = "deleted".into();
    let a = github(&d, "issues", v.to_string().as_bytes());
    assert_eq!(a.body["removed"], true, "{}", a.text);
    assert!(incidents(&d, "").is_empty());
}

#[test]
fn gitlab_push_and_issue_hooks() {
    let d = webhook_daemon(&["--incident-label", "api", "--now", "2026-03-02T10:00:00Z"]);
    let a = gitlab(&d, "Push Hook", &read("gitlab/push_hook.json"));
    assert_eq!(a.status, 200, "{}", a.text);
    // ref refs/heads/master of mike/diaspora; commits b6568db… at 2011-12-12T14:27:31+02:00
    // (1323692851 s) and da15608… at 2012-01-03T23:36:29+02:00 (1325626589 s), in that
    // order; GitLab sends no push time, so the push is dated --now (1772445600 s).
    assert_eq!(
        pushes(&d),
        [
            "gl/mike/diaspora master da1560886d4f094c3e6c9ef40349f7d38b5d27d7 1772445600000:\
          b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327@1323692851000 \
          da1560886d4f094c3e6c9ef40349f7d38b5d27d7@1325626589000"
        ]
    );
    // The issue hook's issue (iid 23) carries the label "API": an incident with --incident-label api.
    let a = gitlab(&d, "Issue Hook", &read("gitlab/issue_hook.json"));
    assert_eq!(a.status, 200, "{}", a.text);
    let listed = incidents(&d, "?project=gl/gitlabhq/gitlab-test");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], "issue-23");
    assert_eq!(listed[0]["severity"], "high");
    assert_eq!(listed[0]["started_at"], "2013-12-03T17:15:43.000Z");
    assert_eq!(listed[0]["title"], "New API: create/update/delete file");
    assert_eq!(listed[0]["resolved_at"], Value::Null, "state opened");

    // With the default label the issue (type Issue, label API) is no incident; and when an
    // update takes the label off (changes.labels.previous held it), the incident goes.
    let d2 = webhook_daemon(&[]);
    let a = gitlab(&d2, "Issue Hook", &read("gitlab/issue_hook.json"));
    assert_eq!(a.status, 202, "{}", a.text);
    let mut v: Value = serde_json::from_slice(&read("gitlab/issue_hook.json")).unwrap();
    v["labels"] = serde_json::json!([]);
    v["object_attributes"]["action"] = "update".into();
    let a = gitlab(&d, "Issue Hook", v.to_string().as_bytes());
    assert_eq!(a.body["removed"], true, "{}", a.text);
    assert!(incidents(&d, "").is_empty());
    // Of type Incident it is one whatever its labels.
    v["object_attributes"]["type"] = "Incident".into();
    let a = gitlab(&d2, "Issue Hook", v.to_string().as_bytes());
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(incidents(&d2, "").len(), 1);
}

#[test]
fn incident_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        ["--incident-window", "72x"],
        ["--incident-window", "-1h"],
        ["--incident-window", "400d"],
        ["--incident-label", " "],
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend(args);
        let out = pipestat(dir.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
    // The variables stand in for the flags.
    let out = std::process::Command::new(crate::common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PIPESTAT_INCIDENT_WINDOW", "3 days")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--incident-window"));
}

#[test]
fn a_github_deployment_to_production_is_a_dora_deployment() {
    let d = webhook_daemon(&["--incident-label", "bug"]);
    // deployment_status/payload.json: state success, environment production, at
    // 2019-05-15T15:20:55Z, sha f95f852b…; gh-pages.payload.json is still in progress.
    for f in ["payload.json", "gh-pages.payload.json"] {
        let a = github(
            &d,
            "deployment_status",
            &read(&format!("github/deployment_status/{f}")),
        );
        assert_eq!(a.status, 200, "{f}: {}", a.text);
    }
    // The issue opened at 15:20:18Z, before the deployment finished: not caused by it.
    github(&d, "issues", &read("github/issues/opened.json"));
    let q = "project=gh/Codertocat/Hello-World&start=2019-05-15&end=2019-05-15";
    let a = d.get_ok(&format!("/api/v1/dora?{q}"));
    assert_eq!(a["deployment_frequency"]["deployments"], 1, "{a}");
    assert_eq!(a["change_failure_rate"]["failures"], 0);
    assert_eq!(a["change_failure_rate"]["rate"], 0.0);
    // No push holds the deployed sha and the deployment has no commit time: no lead time.
    assert_eq!(a["lead_time"]["changes"], 0);
    assert!(a["lead_time"]["missing"].is_string());
    let list = d.get_ok(&format!("/api/v1/dora/deployments?{q}"));
    assert_eq!(
        list["items"][0]["commit"],
        "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    );
    assert_eq!(list["items"][0]["env"], "production");
    assert_eq!(list["items"][0]["stopped_at"], "2019-05-15T15:20:55.000Z");
}
