//! Rendering answers: JSON (one document), YAML, or an aligned table for people. Tables show
//! short ids and colour states; JSON and YAML always carry full ids and no styling, because
//! scripts read them.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use serde::Serialize;

use crate::Output;

/// The fewest characters a table shows of an id (as `nomad` shows 8 of an allocation id).
pub const SHORT_ID: usize = 8;

/// How a listing shows ids: every id cut to one length, the shortest (at least
/// [`SHORT_ID`]) that still tells apart every id in the listing, or whole with `--wide`.
///
/// One length for the whole column keeps it aligned. ULIDs begin with their creation time,
/// so ids made in the same second share their first 8 characters and those made in the
/// same millisecond (one decision's executions) their first 10: such listings show 11 or 12.
#[derive(Clone, Copy, Debug)]
pub struct ShortIds {
    len: usize,
}

impl ShortIds {
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>, wide: bool) -> Self {
        if wide {
            return Self { len: usize::MAX };
        }
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let len = ids
            .windows(2)
            .map(|pair| common_prefix(pair[0], pair[1]) + 1)
            .fold(SHORT_ID, usize::max);
        Self { len }
    }

    pub fn show(&self, id: &str) -> String {
        id.chars().take(self.len).collect()
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// One table cell: its text and how to style it on a terminal.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    /// A state, coloured by what it means (see [`state_style`]).
    pub fn state(state: impl ToString) -> Self {
        let text = state.to_string();
        Self {
            style: state_style(&text),
            text,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self {
            text,
            style: Style::new(),
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

/// The colour of a node, job or execution state: green when it is well (connected,
/// running, completed), yellow while it waits or is away (queued, deploying, pending,
/// accepted, disconnected), red when it went wrong (failed, lost), dim when it was ended on
/// purpose (stopped, cancelled). Anything else is left plain.
pub fn state_style(state: &str) -> Style {
    let colour = match state {
        "connected" | "running" | "completed" => AnsiColor::Green,
        "queued" | "deploying" | "pending" | "accepted" | "disconnected" => AnsiColor::Yellow,
        "failed" | "lost" => AnsiColor::Red,
        "stopped" | "cancelled" => return Style::new().dimmed(),
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(colour.into()))
}

/// Prints `value` in the chosen format to stdout.
pub fn print<T: Serialize>(
    format: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    match format {
        Output::Json => {
            let text = serde_json::to_string_pretty(value).context("encoding JSON")? + "\n";
            write_plain(&text)
        }
        Output::Yaml => write_plain(&serde_saphyr::to_string(value).context("encoding YAML")?),
        Output::Table => write_styled(&table()),
    }
}

/// A listing that can also be shown as a table.
pub trait Tabular: Sized {
    /// The table of `rows`; `wide` shows full ids and every column.
    fn table(rows: &[Self], wide: bool) -> String;
}

/// Prints a list: as a JSON array, a YAML sequence, or a table with a header row.
pub fn print_list<T: Serialize + Tabular>(format: Output, rows: &[T], wide: bool) -> Result<()> {
    print(format, &rows, || T::table(rows, wide))
}

fn write_plain(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Writes text that may carry styles. `anstream` keeps them only where they belong: on a
/// terminal, unless `NO_COLOR` is set (to anything but the empty string) or `CLICOLOR=0`;
/// `CLICOLOR_FORCE` keeps them anywhere, except under `NO_COLOR`.
fn write_styled(text: &str) -> Result<()> {
    let mut out = anstream::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Columns padded to their widest cell, separated by two spaces; a bold header row.
pub fn table(headers: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let line = |cells: Vec<Cell>| {
        let last = cells.iter().rposition(|c| !c.text.is_empty());
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if Some(i) > last {
                break;
            }
            // Styles wrap the text only, so padding never carries a colour or underline.
            let (style, text) = (cell.style, &cell.text);
            out += &format!("{style}{text}{style:#}");
            if Some(i) != last {
                out += &" ".repeat(w - text.chars().count() + 2);
            }
        }
        out + "\n"
    };
    let bold = Style::new().bold();
    let mut out = line(
        headers
            .iter()
            .map(|h| Cell {
                text: h.to_uppercase(),
                style: bold,
            })
            .collect(),
    );
    for row in rows {
        out += &line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips styles the way output that is not a terminal does.
    fn plain(text: &str) -> String {
        let mut out = anstream::StripStream::new(Vec::new());
        out.write_all(text.as_bytes()).unwrap();
        String::from_utf8(out.into_inner()).unwrap()
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["id", "state"],
            vec![
                vec!["a".into(), Cell::state("running")],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(plain(&t), "ID       STATE\na        running\nlong-id  x\n");
    }

    #[test]
    fn styles_wrap_the_text_and_not_the_padding() {
        let t = table(
            &["state", "n"],
            vec![vec![Cell::state("failed"), "1".into()]],
        );
        let row = t.lines().nth(1).unwrap();
        let red = state_style("failed");
        assert_eq!(row, format!("{red}failed{red:#}  1"));
    }

    #[test]
    fn states_are_coloured_by_what_they_mean() {
        let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
        let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
        for well in ["completed", "running", "connected"] {
            assert_eq!(state_style(well), green, "{well}");
        }
        for wrong in ["failed", "lost"] {
            assert_eq!(state_style(wrong), red, "{wrong}");
        }
        assert_eq!(state_style("stopped"), Style::new().dimmed());
        assert_eq!(state_style("3"), Style::new(), "other text stays plain");
    }

    #[test]
    fn short_ids_grow_until_every_id_in_the_listing_is_told_apart() {
        let ids = ["01JD3AAAAA0000", "01JD3AAAAB1111", "01JZZZZZZZ2222"];
        let short = ShortIds::new(ids, false);
        assert_eq!(short.show(ids[0]), "01JD3AAAAA");
        assert_eq!(short.show(ids[2]), "01JZZZZZZZ");
        let apart = ShortIds::new(["01JD3AAAAA", "01JZZZZZZZ"], false);
        assert_eq!(apart.show("01JD3AAAAA"), "01JD3AAA", "never fewer than 8");
        let same = ShortIds::new(["01JD3AAAAA", "01JD3AAAAA"], false);
        assert_eq!(same.show("01JD3AAAAA"), "01JD3AAA", "one id listed twice");
        assert_eq!(ShortIds::new(ids, true).show(ids[1]), ids[1], "--wide");
        assert_eq!(ShortIds::new([], false).show("short"), "short");
    }
}
