//! Helpers the CLI's integration tests share: running the built `cairn` binary and keeping
//! its long-running parts as child processes that die with the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A spec that passes every check: a batch job of one `true`.
pub const VALID_SPEC: &str = "name: ok\ntype: batch\ntask: {engine: exec, command: [\"true\"]}\n";

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Writes a spec file `name` into `dir`.
pub fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a spec");
    path
}

/// `cairn`, untouched by the settings of whoever runs the tests.
pub fn bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for setting in [
        "CAIRN_NATS_URL",
        "CAIRN_NATS_CREDS",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
    ] {
        command.env_remove(setting);
    }
    command
}

/// `cairn --nats URL`, untouched by the settings of whoever runs the tests.
pub fn command(url: &str) -> Command {
    let mut command = bare();
    command.args(["--nats", url]);
    command
}

/// Runs a command that must succeed and returns what it printed.
pub fn succeed(command: &mut Command) -> String {
    let out = command.output().expect("running cairn");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cairn printed text")
}

/// Runs `cairn --nats URL ARGS…` to completion.
pub fn cairn(url: &str, args: &[&str]) -> Output {
    command(url).args(args).output().expect("running cairn")
}

/// Runs a command with `-o json`, which must succeed, and parses its answer.
pub fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let out = succeed(command(url).args(args).args(["-o", "json"]));
    serde_json::from_str(&out).expect("cairn printed JSON")
}

/// A long-running `cairn` part (orchestrator, edge), SIGKILLed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `cairn --nats URL ARGS… --data DIR`.
    pub fn spawn(url: &str, args: &[&str], data: &Path) -> Self {
        Proc(
            command(url)
                .args(args)
                .arg("--data")
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting cairn"),
        )
    }

    /// SIGSTOP: frozen, its connections open, its children running on; peers hear nothing.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Proc::freeze`].
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).expect("a pid"));
        nix::sys::signal::kill(pid, signal).expect("signalling a part");
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
