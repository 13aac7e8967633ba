//! `-o table|json|yaml`: one set of rows, three renderings. Tables are plain text, columns
//! padded to their widest cell, numbers right-aligned, so they read well and diff well.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A column: its header and whether its cells are numbers (right-aligned).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub numeric: bool,
}

pub const fn text(header: &'static str) -> Column {
    Column { header, numeric: false }
}

pub const fn number(header: &'static str) -> Column {
    Column { header, numeric: true }
}

/// Rows as a table: headers, then one line per row, two spaces between columns, no trailing
/// spaces.
pub fn table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|r| r[i].chars().count()).chain([c.header.len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(columns)
            .zip(&widths)
            .map(
                |((cell, col), width)| {
                    if col.numeric { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                },
            )
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.header).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `rows` in `format`; `as_table` renders them as a table.
pub fn render<T: Serialize>(
    format: Format,
    rows: &[T],
    as_table: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => as_table(rows),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(rows)?),
        Format::Yaml => serde_yaml::to_string(rows)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_numbers_right_aligned() {
        let rows =
            vec![vec!["SKIFF_CT".to_owned(), "12".to_owned()], vec!["X".to_owned(), "3456".to_owned()]];
        let got = table(&[text("MAP"), number("ENTRIES")], &rows);
        assert_eq!(got, "MAP       ENTRIES\nSKIFF_CT       12\nX            3456\n");
    }

    #[test]
    fn the_last_text_column_leaves_no_trailing_spaces() {
        let rows = vec![vec!["1".to_owned(), "a".to_owned()], vec!["2".to_owned(), "longer".to_owned()]];
        let got = table(&[number("N"), text("NOTE")], &rows);
        assert_eq!(got, "N  NOTE\n1  a\n2  longer\n");
    }
}
