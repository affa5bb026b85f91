//! The orchestrator's HTTP side through the built binary against a real nats-server:
//! `/metrics` read by a real Prometheus text parser, and the `/v1/…` endpoints answering
//! exactly the JSON the CLI prints.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod support;
use support::stack::{SLOW_LIVENESS, Stack, events, eventually};
use support::{free_port, json};

const TRIO: &str = r#"
name: trio
type: batch
count: 3
task:
  engine: exec
  command: ["sh", "-c", "echo hi"]
"#;

/// `GET path`: the status code and the body. HTTP/1.1 by hand, one request per
/// connection: the test needs nothing more.
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    request(port, path, &[]).map(|(status, _, body)| (status, body))
}

/// `GET path` with more header lines: the status code, the head and the body.
fn request(port: u16, path: &str, headers: &[&str]) -> Result<(u16, String, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    // Chunked bodies are de-chunked; axum sends a length for these small ones.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// The complete chunks of a chunked body, joined; an incomplete last chunk is left out.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n + 2 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The first `count` Server-Sent Events of `GET path`, each event's `data:` parsed as JSON.
fn sse(port: u16, path: &str, count: usize) -> Vec<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .expect("the event stream stays open and sends");
        assert!(n > 0, "the server closed the event stream");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        assert!(head.contains("text/event-stream"), "{head}");
        let data: Vec<serde_json::Value> = dechunk(body)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        if data.len() >= count {
            return data.into_iter().take(count).collect();
        }
    }
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = get(port, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn metrics_parse_and_the_api_answers_what_the_cli_prints() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _orchestrator = stack.orchestrator_with("orchestrator", &["--http", &addr]);
    let edge_port = free_port();
    let edge_addr = format!("127.0.0.1:{edge_port}");
    let more = ["--capacity", "4", "--metrics", edge_addr.as_str()];
    let mut edges = [
        stack.edge_with("edge-1", &[("role", "edge")], &more),
        stack.edge("edge-2", "edge", 4),
    ];
    stack.nodes_in(&["edge-1", "edge-2"], "connected").await;
    eventually("the HTTP API to answer", 30, || {
        match get(port, "/healthz") {
            Ok((200, body)) if body == "ok\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(stack.deploy("trio", TRIO, true)["state"], "completed");

    // The views answer once they include the job; the metrics then count its executions.
    let scrape = eventually("the metrics to count the batch", 30, || {
        let (status, body) = get(port, "/metrics")?;
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
        let completed = value(&scrape, "cairn_executions", Some(("state", "completed")));
        if status == 200 && completed == Some(3.0) {
            Ok((scrape, body))
        } else {
            Err(format!("{status}: completed {completed:?}"))
        }
    })
    .await;
    let (scrape, text) = scrape;
    let orchestrator_text = text.clone();
    for help in [
        "cairn_nodes",
        "cairn_jobs",
        "cairn_executions",
        "cairn_decisions",
        "cairn_projector_lag_events",
        "cairn_events_appended",
        "cairn_append_conflicts",
        "cairn_decision_round_seconds",
        "cairn_dispatch_seconds",
        "cairn_assignments_waiting",
    ] {
        assert!(
            text.contains(&format!("# HELP {help} ")),
            "help for {help}: {text}"
        );
    }
    assert_eq!(
        value(&scrape, "cairn_nodes", Some(("state", "connected"))),
        Some(2.0)
    );
    assert_eq!(
        value(&scrape, "cairn_jobs", Some(("state", "completed"))),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "cairn_executions", Some(("state", "failed"))),
        Some(0.0)
    );
    let decisions = value(&scrape, "cairn_decisions_total", None).unwrap_or(0.0);
    assert!(
        decisions >= 10.0,
        "a deploy and a dozen reports decided: {decisions}"
    );
    assert!(value(&scrape, "cairn_projector_lag_events", None).is_some());
    // Three assignments were dispatched, each measured from its decision.
    let dispatched: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cairn_dispatch_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        dispatched >= 3.0,
        "dispatches measured: {dispatched}: {text}"
    );

    // The API's JSON is the CLI's.
    assert_eq!(get_json(port, "/v1/jobs"), json(&url, &["job", "list"]));
    assert_eq!(
        get_json(port, "/v1/jobs/trio"),
        json(&url, &["job", "describe", "trio"])
    );
    assert_eq!(
        get_json(port, "/v1/executions?job=trio&state=completed"),
        json(
            &url,
            &["execution", "list", "--job", "trio", "--state", "completed"]
        )
    );
    assert_eq!(get_json(port, "/v1/nodes"), json(&url, &["node", "list"]));
    assert_eq!(
        get_json(port, "/v1/jobs/trio/versions"),
        json(&url, &["job", "history", "trio", "-p"])
    );
    assert_eq!(get(port, "/v1/jobs/absent/versions").unwrap().0, 404);
    // The edge counts its own: what it started, that nothing failed, nothing left to send.
    let on_edge_1 = json(&url, &["execution", "list", "--node", "edge-1"])
        .as_array()
        .unwrap()
        .len() as f64;
    let edge = eventually("the edge's outbox to drain", 30, || {
        let (status, body) = get(edge_port, "/metrics")?;
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
        let outbox = value(&scrape, "cairn_edge_outbox_entries", None);
        if status == 200 && outbox == Some(0.0) {
            Ok((scrape, body))
        } else {
            Err(format!("{status}: outbox {outbox:?}"))
        }
    })
    .await;
    let (scrape, text) = edge;
    assert_eq!(
        value(&scrape, "cairn_edge_task_starts_total", None),
        Some(on_edge_1),
        "{text}"
    );
    assert_eq!(
        value(&scrape, "cairn_edge_task_failures_total", None),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "cairn_edge_running_executions", None),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "cairn_edge_outbox_oldest_age_seconds", None),
        Some(0.0)
    );
    assert!(
        text.contains("# HELP cairn_edge_assignment_to_start_seconds "),
        "{text}"
    );
    // Every metric the Grafana dashboard graphs is one that is served.
    let served = format!("{orchestrator_text}{text}");
    let grafana = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/cairn.json");
    let grafana: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(grafana).unwrap()).unwrap();
    let mut graphed = 0;
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    served.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "the dashboard's {:?} graphs {name}, which nothing serves",
                    panel["title"]
                );
                graphed += 1;
            }
        }
    }
    assert!(graphed >= 15, "{graphed} metrics graphed");

    // A task's output, as `cairn execution logs` prints it; following ends at its end.
    let trio = json(&url, &["execution", "list", "--job", "trio"]);
    let id = trio[0]["id"].as_str().unwrap().to_owned();
    let printed = support::cairn(&url, &["execution", "logs", &id]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout), "hi\n");
    for path in [
        format!("/v1/executions/{id}/logs"),
        format!("/v1/executions/{id}/logs?follow=1"),
    ] {
        assert_eq!(
            get(port, &path).unwrap(),
            (200, "hi\n".to_owned()),
            "{path}"
        );
    }
    assert_eq!(
        get(port, "/v1/executions/01ABSENT0000000000000000XY/logs")
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        get(port, &format!("/v1/executions/{id}/logs?follow=often"))
            .unwrap()
            .0,
        400
    );

    // The log as Server-Sent Events, from any sequence: the same JSON as `cairn events`.
    let log = events(&url);
    assert_eq!(sse(port, "/v1/events?from_seq=1", log.len()), log);
    assert_eq!(sse(port, "/v1/events?from_seq=3", log.len() - 2), log[2..]);

    let (status, body) = get(port, "/v1/jobs/nothing-here").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (404, "unknown job \"nothing-here\"\n")
    );
    let (status, body) = get(port, "/v1/executions?state=asleep").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("asleep"), "{body}");

    // Work for a node that is away waits in its queue, and the metrics say so until the
    // node is back and has taken it.
    let waiting = |stage: &str| {
        let (_, body) = get(port, "/metrics")?;
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
        Ok::<_, String>(value(
            &scrape,
            "cairn_assignments_waiting",
            Some(("stage", stage)),
        ))
    };
    assert_eq!(waiting("undelivered").unwrap(), Some(0.0));
    assert_eq!(waiting("unacked").unwrap(), Some(0.0));
    edges[1].kill9();
    stack.deploy("pinned", PINNED, false);
    eventually(
        "the pinned work to wait undelivered",
        30,
        || match waiting("undelivered")? {
            Some(1.0) => Ok(()),
            other => Err(format!("undelivered {other:?}")),
        },
    )
    .await;
    edges[1] = stack.edge("edge-2", "edge", 4);
    stack.executions_in("pinned", "completed", 1).await;
    eventually(
        "the queue to empty once the node took its work",
        30,
        || match (waiting("undelivered")?, waiting("unacked")?) {
            (Some(0.0), Some(0.0)) => Ok(()),
            other => Err(format!("waiting {other:?}")),
        },
    )
    .await;
}

const PINNED: &str = r#"
name: pinned
type: batch
count: 1
selector: {host: edge-2}
task:
  engine: exec
  command: ["true"]
"#;

/// The `cairn_…` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("cairn_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The value of the sample `name` (with the label, if given).
fn value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn with_a_token_the_api_answers_only_who_presents_it() {
    let stack = Stack::new(SLOW_LIVENESS);
    let token = stack.dir.path().join("http.token");
    std::fs::write(&token, "t0k3n-for-this-test\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _orchestrator = stack.orchestrator_with(
        "orchestrator",
        &["--http", &addr, "--http-token", token.to_str().unwrap()],
    );
    // The health check stays open, for load balancers and supervisors.
    eventually("the HTTP API to answer", 30, || {
        match get(port, "/healthz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = |path: &str, headers: &[&str]| request(port, path, headers).unwrap().0;
    for path in ["/", "/metrics", "/v1/jobs", "/v1/events?tail=1"] {
        assert_eq!(status(path, &[]), 401, "{path} without the token");
        assert_eq!(
            status(path, &["Authorization: Bearer not-it"]),
            401,
            "{path} with another token"
        );
    }
    let bearer = "Authorization: Bearer t0k3n-for-this-test";
    assert_eq!(status("/v1/jobs", &[bearer]), 200);
    assert_eq!(status("/metrics", &[bearer]), 200);
    let (code, _, body) = request(port, "/v1/jobs", &[]).unwrap();
    assert!(body.contains("http.token"), "{code}: {body}");

    // A browser logs in once: the token becomes a cookie for this origin.
    assert_eq!(status("/login?token=not-it", &[]), 401);
    let (code, head, _) = request(port, "/login?token=t0k3n-for-this-test", &[]).unwrap();
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: "))
        .map(|l| &l["set-cookie: ".len()..])
        .expect("a cookie is set");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(status("/", &[&format!("Cookie: {pair}")]), 200);
    assert_eq!(
        status("/v1/nodes", &[&format!("Cookie: other=1; {pair}")]),
        200
    );
}
