//! Digests of the view tables, so a live orchestrator's views can be compared with a
//! rebuild from the log without shipping them: one SHA-256 per table over every row in key
//! order, and per-row hashes to find the first row that differs when a table does.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One table's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub table: String,
    pub rows: u64,
    /// Hex SHA-256 over every row in key order, each as the length-prefixed key and value.
    pub digest: String,
}

/// One row, by key, with the hash of its stored value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowHash {
    pub key: String,
    /// Hex SHA-256 of the stored value bytes.
    pub hash: String,
}

/// A stored value shown to a person: its decoded fields when it decodes, else why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RowValue {
    pub fn of(bytes: &[u8]) -> Self {
        match rmp_serde::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => Self {
                value: Some(value),
                error: None,
            },
            Err(e) => Self {
                value: None,
                error: Some(format!("undecodable ({} bytes): {e}", bytes.len())),
            },
        }
    }
}

/// Accumulates one table's digest, row by row in key order.
#[derive(Default)]
pub struct TableHasher {
    hasher: Sha256,
    rows: u64,
}

impl TableHasher {
    pub fn row(&mut self, key: &str, value: &[u8]) {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        self.hasher.update((key.len() as u64).to_le_bytes());
        self.hasher.update(key.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self.rows += 1;
    }

    pub fn finish(self, table: &str) -> TableDigest {
        TableDigest {
            table: table.to_owned(),
            rows: self.rows,
            digest: hex(&self.hasher.finalize()),
        }
    }
}

pub fn row_hash(key: &str, value: &[u8]) -> RowHash {
    RowHash {
        key: key.to_owned(),
        hash: hex(&Sha256::digest(value)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tell_rows_apart_and_ignore_nothing() {
        let digest = |rows: &[(&str, &[u8])]| {
            let mut h = TableHasher::default();
            for (k, v) in rows {
                h.row(k, v);
            }
            h.finish("t")
        };
        let base = digest(&[("a", b"1"), ("b", b"2")]);
        assert_eq!(base, digest(&[("a", b"1"), ("b", b"2")]));
        assert_eq!(base.rows, 2);
        assert_ne!(base.digest, digest(&[("a", b"1"), ("b", b"3")]).digest);
        assert_ne!(base.digest, digest(&[("a", b"12")]).digest);
        assert_ne!(base.digest, digest(&[("a1", b""), ("b", b"2")]).digest);
        assert_eq!(row_hash("k", b"v"), row_hash("k", b"v"));
        assert_ne!(row_hash("k", b"v").hash, row_hash("k", b"w").hash);
    }

    #[test]
    fn row_values_decode_or_say_why_not() {
        let bytes = rmp_serde::to_vec_named(&serde_json::json!({"state": "lost"})).unwrap();
        assert_eq!(
            RowValue::of(&bytes).value,
            Some(serde_json::json!({"state": "lost"}))
        );
        assert!(RowValue::of(&[0xc1]).error.is_some());
    }
}
