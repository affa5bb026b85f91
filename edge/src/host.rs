//! What this host offers placement when the operator does not say: its cores, its memory
//! and the space free where the edge keeps its data.

use std::path::Path;

use cairn_shared::Resources;
use cairn_shared::resources::{Bytes, Millicores};

/// The host's cpu (every core it may use), memory (`MemTotal`) and the disk free under
/// `data_dir` now (which must exist). A figure the host does not give is not limited (`u64::MAX`), so a
/// missing `/proc` never makes a node take nothing.
pub fn resources(data_dir: &Path) -> Resources {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Resources {
        cpu: Millicores(
            u64::try_from(cores)
                .unwrap_or(u64::MAX)
                .saturating_mul(1000),
        ),
        memory: Bytes(memory().unwrap_or(u64::MAX)),
        disk: Bytes(disk_free(data_dir).unwrap_or(u64::MAX)),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total(&info)
}

fn mem_total(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The space an unprivileged process may still use on the file system holding `dir`,
/// rounded down to 256 MiB, so that a restart a few writes later declares the same (a
/// node that declares something else registers again).
fn disk_free(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = stat.blocks_available().checked_mul(stat.fragment_size())?;
    Some(free >> 28 << 28)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_kibibytes() {
        let info = "MemTotal:       16316412 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(info), Some(16_316_412 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_host_offers_something_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let offered = resources(dir.path());
        assert!(offered.cpu.0 >= 1000, "{offered:?}");
        assert!(offered.memory.0 > 0 && offered.disk.0 > 0, "{offered:?}");
    }
}
