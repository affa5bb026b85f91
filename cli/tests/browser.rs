//! The web dashboard in a real browser: headless Chromium (Debian's `chromium`, driven
//! through `chromedriver` by WebDriver) loads the page of a live stack and must show its
//! nodes, its jobs and their states, follow a job deployed after it loaded without being
//! reloaded, and show a job's versions and an execution's output.
//!
//! With `CAIRN_SCREENSHOTS=DIR` the test also saves what it saw as PNGs (the README's).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_streams::testing::wait_until;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

mod support;
use support::free_port;
use support::stack::{SLOW_LIVENESS, Stack};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const TRIO: &str = r#"
name: trio
type: batch
count: 3
task:
  engine: exec
  command: ["sh", "-c", "echo hello from $CAIRN_NODE_ID"]
"#;

const WEB: &str = r#"
name: web
type: service
count: 2
update: {max_parallel: 1, min_healthy_time: 1s}
task:
  engine: exec
  command: ["sh", "-c", "echo serving; exec sleep 600"]
"#;

/// `chromedriver` on a free port, killed when dropped.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the browser test needs Debian's chromium and \
                 chromium-driver (scripts/ensure-chromium installs them)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium session, as a user's would be: a fresh profile, a desktop window,
/// and no calls out of this machine.
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.1);
    wait_until(
        "chromedriver to open a session",
        Duration::from_secs(30),
        || {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

/// The text of every element `css` matches, in page order.
async fn texts(page: &Client, css: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for element in page
        .find_all(Locator::Css(css))
        .await
        .map_err(|e| e.to_string())?
    {
        out.push(element.text().await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Waits until `css` matches at least one element, and returns their texts.
async fn shown(page: &Client, what: &str, css: &str) -> Vec<String> {
    wait_until(what, Duration::from_secs(30), || async {
        match texts(page, css).await? {
            found if found.is_empty() => Err(format!("nothing matches {css}")),
            found => Ok(found),
        }
    })
    .await
}

/// Saves what the page shows as `name`.png under `CAIRN_SCREENSHOTS`, when it is set.
async fn screenshot(page: &Client, name: &str) {
    let Some(dir) = std::env::var_os("CAIRN_SCREENSHOTS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test]
async fn browser_the_dashboard_shows_the_fleet_and_follows_it_live() {
    let stack = Stack::new(SLOW_LIVENESS);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _orchestrator = stack.orchestrator_with("orchestrator", &["--http", &addr]);
    let _edges = stack
        .connected_edges(&["edge-1", "edge-2"], "edge", 4)
        .await;
    assert_eq!(stack.deploy("trio", TRIO, true)["state"], "completed");

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&driver, profile.path()).await;
    let home = format!("http://{addr}/");
    page.goto(&home).await.unwrap();
    assert_eq!(page.title().await.unwrap(), "cairn");

    // The fleet: both nodes connected, with their labels; the batch completed, its bar all
    // three completed.
    for node in ["edge-1", "edge-2"] {
        let row = shown(
            &page,
            "the node's row",
            &format!(r#"tr[data-node="{node}"][data-state="connected"]"#),
        )
        .await;
        assert!(row[0].contains("role=edge"), "{row:?}");
        assert!(row[0].contains(&format!("host={node}")), "{row:?}");
    }
    shown(
        &page,
        "the batch completed",
        r#"tr[data-job="trio"][data-state="completed"]"#,
    )
    .await;
    let bar = page
        .find(Locator::Css(r#"tr[data-job="trio"] .progress i"#))
        .await
        .unwrap();
    assert_eq!(
        bar.attr("data-state").await.unwrap().as_deref(),
        Some("completed")
    );
    assert_eq!(bar.attr("data-count").await.unwrap().as_deref(), Some("3"));
    shown(
        &page,
        "the live event feed",
        r#"#feed li[data-type="JobDeployed"]"#,
    )
    .await;
    shown(&page, "the feed to be live", r#"#live[data-live="live"]"#).await;

    // A job deployed after the page loaded appears, running, without a reload: a mark left
    // on the page's window survives.
    page.execute("window.cairnTestMark = 'still here'; return null;", vec![])
        .await
        .unwrap();
    stack.deploy("web", WEB, false);
    let web = shown(
        &page,
        "the new service running on the page",
        r#"tr[data-job="web"][data-state="running"]"#,
    )
    .await;
    assert!(web[0].contains("2 running"), "{web:?}");
    let mark = page
        .execute("return window.cairnTestMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("still here"), "the page was reloaded");
    screenshot(&page, "dashboard").await;

    // A second version: the job's page lists both and diffs the new spec against the old.
    stack.deploy(
        "web",
        &WEB.replace("echo serving", "echo serving v2"),
        false,
    );
    page.goto(&format!("{home}#job=web")).await.unwrap();
    shown(&page, "the job's second version", r#"li[data-version="2"]"#).await;
    let diff = shown(&page, "the version's diff", ".diff .add").await;
    assert!(
        diff.iter().any(|line| line.contains("echo serving v2")),
        "{diff:?}"
    );
    let removed = texts(&page, ".diff .del").await.unwrap();
    assert!(
        removed.iter().any(|line| line.contains("echo serving;")),
        "{removed:?}"
    );
    shown(
        &page,
        "the rolled-out version running",
        r#"tr[data-execution][data-state="running"]"#,
    )
    .await;
    screenshot(&page, "job").await;

    // An execution's output, as it is written.
    let trio = support::json(&stack.url(), &["execution", "list", "--job", "trio"]);
    let execution = trio[0]["id"].as_str().unwrap();
    let node = trio[0]["node_id"].as_str().unwrap();
    page.goto(&format!("{home}#job=trio&execution={execution}"))
        .await
        .unwrap();
    wait_until(
        "the execution's output on the page",
        Duration::from_secs(30),
        || async {
            let logs = texts(&page, "#logs").await?;
            match logs.first() {
                Some(text) if text.trim() == format!("hello from {node}") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_until(
        "the output to end with its attempt",
        Duration::from_secs(30),
        || async {
            match texts(&page, "#logs-status").await?.first() {
                Some(status) if status == "the attempt ended" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    page.close().await.unwrap();
}
