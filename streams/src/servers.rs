//! Configuration for nats-servers that cairn starts or tests against, beyond what their
//! command line says.

use std::path::{Path, PathBuf};

/// Writes, beside `config` (such as `cairn auth init` makes), the configuration of member
/// `member` of a cluster running it on one machine: `config` included, and a full resolver
/// in `resolver` of its own, since members must not share one. Returns its path.
pub fn cluster_member_config(
    config: &Path,
    member: usize,
    resolver: &Path,
) -> std::io::Result<PathBuf> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let dir = config
        .parent()
        .ok_or_else(|| invalid("the configuration is not in a directory"))?;
    let name = config
        .file_name()
        .ok_or_else(|| invalid("the configuration names no file"))?
        .to_string_lossy();
    let path = dir.join(format!("member-{member}.conf"));
    // An include is relative to the file that includes it, hence beside `config`.
    let text = format!(
        "include {name:?}\nresolver: {{\n  type: full\n  dir: {:?}\n  allow_delete: false\n  interval: \"2m\"\n}}\n",
        resolver.display().to_string()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}
