//! The demo's results: an aligned table for people, or one JSON object per
//! line (`-o json`) for scripts and tests. Everything else the demo says
//! goes to stderr in JSON mode, so that stdout holds the results only.

use serde_json::json;

use crate::modem::Reading;

/// One modem's result in one phase.
pub struct Row {
    pub client: (u32, u32),
    pub bank: (u32, u32),
    pub reading: Reading,
    /// For a remapped modem: the ICCID it had before.
    pub was: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Initial,
    Remapped,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Initial => "initial",
            Phase::Remapped => "remapped",
        }
    }
}

fn slot(s: (u32, u32)) -> String {
    format!("{}:{}", s.0, s.1)
}

/// The JSON line of one row.
pub fn json_line(phase: Phase, row: &Row) -> String {
    json!({
        "phase": phase.name(),
        "client": slot(row.client),
        "bank": slot(row.bank),
        "iccid": row.reading.iccid,
        "imsi": row.reading.imsi,
        "auth": row.reading.auth,
    })
    .to_string()
}

/// The rows as an aligned table with a header line.
pub fn table(rows: &[Row]) -> String {
    let dash = || "-".to_string();
    let mut lines = vec![[
        "CLIENT".to_string(),
        "BANK".into(),
        "ICCID".into(),
        "IMSI".into(),
        "AUTHENTICATE".into(),
    ]];
    for row in rows {
        let mut iccid = row.reading.iccid.clone().unwrap_or_else(dash);
        if let Some(was) = &row.was {
            iccid = format!("{iccid} (was {was})");
        }
        lines.push([
            slot(row.client),
            slot(row.bank),
            iccid,
            row.reading.imsi.clone().unwrap_or_else(dash),
            row.reading.auth.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("  {}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(auth: &str, was: Option<&str>) -> Row {
        Row {
            client: (2, 0),
            bank: (1, 5),
            reading: Reading {
                iccid: Some("8900101000000000013".into()),
                imsi: Some("001010000000001".into()),
                auth: auth.into(),
            },
            was: was.map(String::from),
        }
    }

    #[test]
    fn json_lines_carry_the_fields_the_issue_names() {
        let v: serde_json::Value =
            serde_json::from_str(&json_line(Phase::Remapped, &row("ok", None))).unwrap();
        assert_eq!(v["phase"], "remapped");
        assert_eq!(v["client"], "2:0");
        assert_eq!(v["bank"], "1:5");
        assert_eq!(v["iccid"], "8900101000000000013");
        assert_eq!(v["imsi"], "001010000000001");
        assert_eq!(v["auth"], "ok");
        let failed = Row {
            reading: Reading::failed("no card (SET_ATR) within 30 s".into()),
            ..row("", None)
        };
        let v: serde_json::Value =
            serde_json::from_str(&json_line(Phase::Initial, &failed)).unwrap();
        assert!(v["iccid"].is_null());
        assert_eq!(v["phase"], "initial");
    }

    #[test]
    fn table_columns_line_up() {
        let t = table(&[
            row("ok", Some("8900101000000000021")),
            row("MAC failure (98 62)", None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l.find("001010000000001").or_else(|| l.find("IMSI"));
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].contains("(was 8900101000000000021)"));
    }
}
