//! Helpers the CLI's integration tests share: running the built `cairn` binary and keeping
//! its long-running parts as child processes that die with the test.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Runs `cairn --nats URL ARGS…` to completion.
pub fn cairn(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CAIRN_NATS_URL")
        .env_remove("CAIRN_NATS_CREDS")
        .args(["--nats", url])
        .args(args)
        .output()
        .expect("running cairn")
}

/// Runs a command with `-o json`, which must succeed, and parses its answer.
pub fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cairn(url, &all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cairn printed JSON")
}

/// A long-running `cairn` part (orchestrator, edge), SIGKILLed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `cairn --nats URL ARGS… --data DIR`.
    pub fn spawn(url: &str, args: &[&str], data: &Path) -> Self {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .env_remove("CAIRN_NATS_URL")
                .args(["--nats", url])
                .args(args)
                .arg("--data")
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting cairn"),
        )
    }

    /// SIGKILL: no clean-up, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub mod stack;
