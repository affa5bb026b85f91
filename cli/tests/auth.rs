//! `cairn auth` against a real nats-server running the configuration it generates: each
//! role can do what it is for and nothing else, a node is confined to its own work, and a
//! revoked node is cut off from the running server.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cairn_streams::StreamKind;
use cairn_streams::testing::{NatsCluster, NatsServer, wait_until};
use futures::StreamExt;
use serde_json::Value;

mod support;
use support::{Proc, command};

const PAIR: &str = r#"
name: pair
type: batch
count: 2
task:
  engine: exec
  command: ["sh", "-c", "echo ran on $CAIRN_NODE_ID"]
"#;

/// `cairn --creds CREDS ARGS…` (none: no credentials).
fn cli(url: &str, creds: Option<&Path>, args: &[&str]) -> Output {
    let mut command = command(url);
    if let Some(creds) = creds {
        command.arg("--creds").arg(creds);
    }
    command.args(args).output().expect("running cairn")
}

fn json(url: &str, creds: &Path, args: &[&str]) -> Value {
    let out = cli(url, Some(creds), &[args, &["-o", "json"]].concat());
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cairn printed JSON")
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What runs the deployment's configuration: one server or a 3-server cluster.
enum Servers {
    One(NatsServer),
    Three(NatsCluster),
}

/// A deployment's credentials and servers that accept only them.
struct Secured {
    dir: tempfile::TempDir,
    servers: Servers,
}

impl Secured {
    fn start() -> Self {
        Self::start_with(&[], false)
    }

    fn clustered() -> Self {
        Self::start_with(&[], true)
    }

    /// With more `cairn auth init` arguments (`--tls`), on one server or three.
    fn start_with(more: &[&str], cluster: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        let made = support::succeed(
            support::bare()
                .args(["auth", "init", "--dir"])
                .arg(&auth)
                .args(more)
                .args(["-o", "json"]),
        );
        let made: Value = serde_json::from_str(&made).unwrap();
        assert_eq!(made["admin"], auth.join("admin.creds").to_str().unwrap());
        let config = auth.join("nats-server.conf");
        let servers = match cluster {
            false => Servers::One(NatsServer::start_with_config(&config)),
            true => Servers::Three(NatsCluster::start_unready_with_config(&config)),
        };
        Self { dir, servers }
    }

    fn auth(&self) -> PathBuf {
        self.dir.path().join("auth")
    }

    fn creds(&self, role: &str) -> PathBuf {
        self.auth().join(format!("{role}.creds"))
    }

    /// Issues `node`'s credentials; `cairn auth node` prints their path.
    fn node(&self, node: &str) -> PathBuf {
        let printed = support::succeed(
            support::bare()
                .args(["auth", "node", node, "--dir"])
                .arg(self.auth()),
        );
        let path = PathBuf::from(printed.trim());
        assert_eq!(
            path,
            self.auth().join("nodes").join(format!("{node}.creds"))
        );
        path
    }

    fn url(&self) -> String {
        match &self.servers {
            Servers::One(server) => server.url(),
            Servers::Three(cluster) => cluster.url(),
        }
    }

    fn spawn(&self, args: &[&str], creds: &Path, data: &str) -> Proc {
        let mut args = args.to_vec();
        let creds = creds.to_str().unwrap();
        args.extend(["--creds", creds]);
        if args[0] == "orchestrator" && matches!(self.servers, Servers::Three(_)) {
            args.extend(["--replicas", "3"]);
        }
        Proc::spawn(&self.url(), &args, &self.dir.path().join(data))
    }

    fn edge(&self, node: &str, creds: &Path) -> Proc {
        let host = format!("host={node}");
        self.spawn(
            &[
                "edge",
                "--node-id",
                node,
                "--label",
                "role=edge",
                "--label",
                &host,
                "--heartbeat-interval",
                "200ms",
            ],
            creds,
            node,
        )
    }

    async fn nodes_in(&self, ids: &[&str], state: &str) {
        let (url, admin) = (self.url(), self.creds("admin"));
        wait_until(
            &format!("nodes {ids:?} to be {state}"),
            Duration::from_secs(30),
            || {
                let out = cli(&url, Some(&admin), &["node", "list", "-o", "json"]);
                let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                let ok = ids.iter().all(|id| {
                    nodes
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|n| n["id"] == *id && n["state"] == state)
                });
                async move { if ok { Ok(()) } else { Err(nodes) } }
            },
        )
        .await;
    }

    /// What each of cairn's streams holds, as the admin sees it: the last sequence (any
    /// append moves it) and, but for the assignment shards (where the orchestrator sweeps
    /// acked work away on a cluster), the messages held (any removal lowers it).
    async fn counts(&self) -> Vec<(String, u64, Option<u64>)> {
        let client = cairn_streams::connect(&self.url(), Some(&self.creds("admin")), "test")
            .await
            .unwrap();
        let js = cairn_streams::jetstream(client);
        let mut counts = Vec::new();
        for kind in StreamKind::all() {
            let mut stream = js.get_stream(kind.name()).await.unwrap();
            let state = stream.info().await.unwrap().state.clone();
            let held = (!matches!(kind, StreamKind::Assignments(_))).then_some(state.messages);
            counts.push((kind.name().to_owned(), state.last_sequence, held));
        }
        counts
    }
}

/// A raw client with `node`'s credentials, its replies on the node's own inbox (as the
/// edge connects).
async fn as_node(url: &str, creds: &Path, node: &str) -> async_nats::Client {
    let node = cairn_shared::NodeId::new(node).unwrap();
    let access = cairn_streams::Access {
        creds: Some(creds.to_owned()),
        tls_ca: None,
        inbox_prefix: Some(cairn_streams::subjects::inbox_prefix(&node)),
    };
    cairn_streams::connect_as(url, &access, "test-node", false)
        .await
        .unwrap()
}

#[tokio::test]
async fn roles_and_nodes_can_do_what_they_are_for_and_nothing_else() {
    roles_and_nodes(Secured::start()).await;
}

#[tokio::test]
async fn cluster_roles_and_nodes_can_do_what_they_are_for_and_nothing_else() {
    roles_and_nodes(Secured::clustered()).await;
}

/// Acceptance of the roles, a node's confinement and revocation on `secured`.
async fn roles_and_nodes(secured: Secured) {
    let url = secured.url();
    let (admin, reader) = (secured.creds("admin"), secured.creds("reader"));
    let (creds_a, creds_b) = (secured.node("edge-a"), secured.node("edge-b"));
    // Asking again gives the same credentials, not a second key that would stay valid.
    let issued = std::fs::read(&creds_a).unwrap();
    assert_eq!(secured.node("edge-a"), creds_a);
    assert_eq!(std::fs::read(&creds_a).unwrap(), issued);
    let _orchestrator = secured.spawn(
        &[
            "orchestrator",
            "--heartbeat-interval",
            "200ms",
            "--disconnect-after",
            "1s",
            "--lost-after",
            "60s",
        ],
        &secured.creds("orchestrator"),
        "orchestrator",
    );
    let _a = secured.edge("edge-a", &creds_a);
    let _b = secured.edge("edge-b", &creds_b);
    secured.nodes_in(&["edge-a", "edge-b"], "connected").await;

    // Two nodes with their own credentials run their own work.
    let spec = secured.dir.path().join("pair.yaml");
    std::fs::write(&spec, PAIR).unwrap();
    let spec = spec.to_str().unwrap();
    let deployed = json(&url, &admin, &["job", "deploy", spec, "--wait"]);
    assert_eq!(deployed["state"], "completed", "{deployed}");
    let executions = json(&url, &admin, &["execution", "list", "--job", "pair"]);
    let mut nodes: Vec<&str> = executions
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node_id"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["edge-a", "edge-b"], "{executions}");
    let id = executions[0]["id"].as_str().unwrap();
    let logs = cli(&url, Some(&reader), &["execution", "logs", id]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).starts_with("ran on edge-"),
        "{logs:?}"
    );

    // Without credentials a client is refused.
    let refused = failed(&cli(&url, None, &["node", "list"]));
    assert!(refused.to_lowercase().contains("authoriz"), "{refused}");

    // The reader lists and follows, and can neither deploy nor stop: nothing is stored.
    assert_eq!(
        json(&url, &reader, &["job", "list"]),
        json(&url, &admin, &["job", "list"])
    );
    assert_eq!(
        json(&url, &reader, &["node", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let events = cli(&url, Some(&reader), &["events", "-o", "json"]);
    assert!(events.status.success(), "{events:?}");
    assert!(String::from_utf8_lossy(&events.stdout).contains("JobDeployed"));
    let before = secured.counts().await;
    let deploy = failed(&cli(&url, Some(&reader), &["job", "deploy", spec]));
    assert!(deploy.to_lowercase().contains("permission"), "{deploy}");
    let stop = failed(&cli(&url, Some(&reader), &["job", "stop", "pair"]));
    assert!(stop.to_lowercase().contains("permission"), "{stop}");
    assert_eq!(
        secured.counts().await,
        before,
        "the reader stored something"
    );

    // With node A's credentials, everything beyond its own work is refused and changes
    // nothing.
    let a = as_node(&url, &creds_a, "edge-a").await;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(a.clone());
    let node_b = cairn_shared::NodeId::new("edge-b").unwrap();
    let refused = |what: &str, result: Result<(), String>| {
        assert!(result.is_err(), "edge-a could {what}");
    };
    let publish = |subject: String| {
        let js = js.clone();
        async move {
            let ack = js
                .publish(subject, "forged".into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    refused(
        "publish on edge-b's report subject",
        publish(cairn_streams::subjects::report(&node_b).to_string()).await,
    );
    refused(
        "publish a command",
        publish("cairn.cmd.StopJob".to_owned()).await,
    );
    for stream in ["CAIRN_EVT", "CAIRN_CMD"] {
        refused(
            &format!("read {stream}"),
            js.get_stream(stream)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        let consumer = js
            .create_consumer_on_stream(
                async_nats::jetstream::consumer::pull::OrderedConfig::default(),
                stream,
            )
            .await;
        refused(
            &format!("create a consumer on {stream}"),
            consumer.map(|_| ()).map_err(|e| e.to_string()),
        );
    }
    let shard_b = StreamKind::assignments_of(&node_b).name();
    let consumer_b = cairn_streams::subjects::node_consumer(&node_b);
    let stream_b = js.get_stream_no_info(shard_b).await.unwrap();
    refused(
        "read edge-b's consumer",
        stream_b
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer_b)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let pulled = tokio::time::timeout(
        Duration::from_secs(2),
        a.request(
            format!("$JS.API.CONSUMER.MSG.NEXT.{shard_b}.{consumer_b}"),
            r#"{"batch":1,"expires":1000000000}"#.into(),
        ),
    )
    .await;
    assert!(
        !matches!(pulled, Ok(Ok(ref reply)) if !reply.payload.is_empty()),
        "edge-a pulled from edge-b's consumer: {pulled:?}"
    );
    refused(
        "create a stream",
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "FORGED".into(),
            subjects: vec!["forged.>".into()],
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()),
    );
    refused(
        "delete a stream",
        js.delete_stream("CAIRN_EVT")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    refused(
        "delete edge-b's consumer",
        js.delete_consumer_from_stream(&consumer_b, shard_b)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    // Subscribing to everything gets nothing of edge-b's, though it beats five times a
    // second.
    let mut everything = a.subscribe("cairn.>").await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), everything.next()).await;
    assert!(
        heard.is_err() || heard.unwrap().is_none(),
        "edge-a heard cairn.>"
    );
    assert_eq!(secured.counts().await, before, "edge-a changed a stream");

    // What permissions cannot stop, the decider does: a report on edge-a's own subject
    // about edge-b's execution is refused, recorded, and changes nothing.
    let of_b = executions
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node_id"] == "edge-b")
        .unwrap();
    let execution_b: cairn_shared::ExecutionId = of_b["id"].as_str().unwrap().parse().unwrap();
    let node_a = cairn_shared::NodeId::new("edge-a").unwrap();
    let forged = cairn_shared::Envelope::new(
        cairn_shared::ReportId::generate(),
        None,
        cairn_shared::time::Timestamp::now(),
        cairn_shared::Report::ExecutionUpdate(cairn_shared::report::ExecutionUpdate {
            node: node_a.clone(),
            execution: execution_b,
            attempt: 1,
            state: cairn_shared::ExecutionState::Failed,
            exit_code: Some(9),
            reason: Some("forged".into()),
        }),
    );
    let outgoing = cairn_streams::Outgoing::report(&node_a, &forged).unwrap();
    js.publish(outgoing.subject.clone(), outgoing.payload.clone())
        .await
        .unwrap()
        .await
        .expect("edge-a may publish on its own report subject");
    let (admin_url, admin_creds) = (url.clone(), admin.clone());
    wait_until(
        "the forged report to be refused and recorded",
        Duration::from_secs(30),
        || {
            let log = cli(&admin_url, Some(&admin_creds), &["events", "-o", "json"]);
            let text = String::from_utf8_lossy(&log.stdout).into_owned();
            let refused = text
                .lines()
                .any(|line| line.contains("InputRejected") && line.contains("belongs to node"));
            async move {
                if refused {
                    Ok(())
                } else {
                    Err(text.lines().count())
                }
            }
        },
    )
    .await;
    let after = json(&url, &admin, &["execution", "list", "--job", "pair"]);
    let still = after
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == of_b["id"])
        .unwrap();
    assert_eq!(still["state"], "completed", "{still}");
    let streams = json(&url, &admin, &["node", "list"]);
    assert_eq!(streams.as_array().unwrap().len(), 2);

    // Revoking edge-b cuts it off on the running server; edge-a keeps working.
    let revoked = support::succeed(
        support::bare()
            .args(["--nats", &url, "--creds"])
            .arg(&admin)
            .args(["auth", "revoke", "edge-b", "--dir"])
            .arg(secured.auth()),
    );
    assert!(revoked.contains("edge-b"), "{revoked}");
    secured.nodes_in(&["edge-b"], "disconnected").await;
    let set_aside = creds_b.with_extension("creds.revoked");
    let again = cairn_streams::connect(&url, Some(&set_aside), "test").await;
    assert!(again.is_err(), "edge-b's credentials still connect");
    secured.nodes_in(&["edge-a"], "connected").await;
    let pinned = PAIR
        .replace("name: pair", "name: pinned")
        .replace("count: 2", "count: 1\nselector: {host: edge-a}");
    let pinned_spec = secured.dir.path().join("pinned.yaml");
    std::fs::write(&pinned_spec, pinned).unwrap();
    let deployed = json(
        &url,
        &admin,
        &["job", "deploy", pinned_spec.to_str().unwrap(), "--wait"],
    );
    assert_eq!(deployed["state"], "completed", "{deployed}");
}

#[tokio::test]
async fn with_tls_a_client_must_trust_the_deployments_ca() {
    let secured = Secured::start_with(&["--tls"], false);
    let url = secured.url();
    let ca = secured.auth().join("tls").join("ca.pem");
    assert!(ca.is_file());
    let admin = secured.creds("admin");

    // Without the CA the server's certificate is not trusted: refused.
    let refused = failed(&cli(&url, Some(&admin), &["node", "list"]));
    assert!(refused.contains("cannot reach NATS"), "{refused}");
    // With it, the README's flow: an orchestrator, an edge, a batch job run to the end.
    let ca_flag = ["--tls-ca", ca.to_str().unwrap()];
    let node = secured.node("edge-a");
    let _orchestrator = secured.spawn(
        &[
            &["orchestrator", "--heartbeat-interval", "200ms"][..],
            &ca_flag,
        ]
        .concat(),
        &secured.creds("orchestrator"),
        "orchestrator",
    );
    let _edge = secured.spawn(
        &[
            &["edge", "--node-id", "edge-a", "--label", "role=edge"][..],
            &["--heartbeat-interval", "200ms"],
            &ca_flag,
        ]
        .concat(),
        &node,
        "edge-a",
    );
    let spec = secured.dir.path().join("pair.yaml");
    std::fs::write(&spec, PAIR.replace("count: 2", "count: 1")).unwrap();
    let deploy = [
        &["job", "deploy", spec.to_str().unwrap(), "--wait"][..],
        &ca_flag,
    ]
    .concat();
    let deployed = json(&url, &admin, &deploy);
    assert_eq!(deployed["state"], "completed", "{deployed}");
}

#[test]
fn init_never_overwrites_a_deployments_keys() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth");
    let init = |more: &[&str]| {
        support::bare()
            .args(["auth", "init", "--dir"])
            .arg(&auth)
            .args(more)
            .output()
            .unwrap()
    };
    assert!(init(&[]).status.success());
    let seed = std::fs::read(auth.join("keys").join("operator.nk")).unwrap();
    let again = failed(&init(&[]));
    assert!(again.contains("already holds"), "{again}");
    assert!(init(&["--if-missing"]).status.success());
    assert_eq!(
        std::fs::read(auth.join("keys").join("operator.nk")).unwrap(),
        seed,
        "the operator key was replaced"
    );
}
