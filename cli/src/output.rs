//! Rendering answers: JSON (one document), YAML, or an aligned table for people.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::Output;

/// A value that can also be shown as a table.
pub trait Tabular {
    fn headers() -> &'static [&'static str];
    fn row(&self) -> Vec<String>;
}

/// Prints `value` in the chosen format to stdout.
pub fn print<T: Serialize>(
    format: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let text = match format {
        Output::Json => serde_json::to_string_pretty(value).context("encoding JSON")? + "\n",
        Output::Yaml => serde_saphyr::to_string(value).context("encoding YAML")?,
        Output::Table => table(),
    };
    print!("{text}");
    Ok(())
}

/// Prints a list: as a JSON array, a YAML sequence, or a table with a header row.
pub fn print_list<T: Serialize + Tabular>(format: Output, rows: &[T]) -> Result<()> {
    print(format, &rows, || {
        table(T::headers(), rows.iter().map(Tabular::row).collect())
    })
}

/// Columns padded to their widest cell, separated by two spaces.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["id", "state"],
            vec![
                vec!["a".into(), "running".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       STATE\na        running\nlong-id  x\n");
    }
}
