//! Readers for the two sides the manual must agree on: a program's
//! `--help` (clap's layout) and the manual's flag tables, Markdown tables
//! between `<!-- flags: COMMAND -->` and `<!-- end flags -->`. Pure text in,
//! values out; the tests in `tests/` run the programs and compare.

use std::collections::BTreeSet;

/// One option as `--help` shows it, or as a manual row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// Its spellings, e.g. {"-i", "--server-host"}.
    pub names: BTreeSet<String>,
    pub env: Option<String>,
    pub default: Option<String>,
}

impl Opt {
    /// The name it is best known by: the long one when there is one.
    pub fn key(&self) -> String {
        self.names
            .iter()
            .find(|n| n.starts_with("--"))
            .or(self.names.iter().next())
            .cloned()
            .unwrap_or_default()
    }
}

/// What `--help` lists: options and subcommands.
#[derive(Debug, Default)]
pub struct Help {
    pub options: Vec<Opt>,
    pub commands: Vec<String>,
}

/// The text inside `[tag: ...]`, e.g. `[default: 9998]`.
fn bracketed<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("[{tag}: "))? + tag.len() + 3;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// Parses clap's help: an option starts on a line indented by at most six
/// spaces with a dash; its description, env and default follow until the
/// next one. Commands are the first words of the "Commands:" section.
pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    let mut current: Option<(String, String)> = None; // (names line, rest)
    let flush = |current: &mut Option<(String, String)>, help: &mut Help| {
        if let Some((head, body)) = current.take() {
            let names = head
                .split([',', ' '])
                .map(str::trim)
                .filter(|w| w.starts_with('-'))
                .map(String::from)
                .collect();
            let all = format!("{head} {body}");
            help.options.push(Opt {
                names,
                env: bracketed(&all, "env").map(|e| e.split('=').next().unwrap_or(e).to_string()),
                default: bracketed(&all, "default").map(String::from),
            });
        }
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 0 && line.ends_with(':') {
            flush(&mut current, &mut help);
            section = line;
            continue;
        }
        if indent == 0 && !line.is_empty() {
            flush(&mut current, &mut help);
            section = "";
            continue;
        }
        match section {
            "Options:" if indent <= 6 && line.trim_start().starts_with('-') => {
                flush(&mut current, &mut help);
                // The names end where two spaces start the description.
                let trimmed = line.trim_start();
                let (head, rest) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
                current = Some((head.to_string(), rest.to_string()));
            }
            "Options:" => {
                if let Some((_, body)) = &mut current {
                    body.push(' ');
                    body.push_str(line.trim());
                }
            }
            "Commands:" if indent == 2 => {
                if let Some(name) = line.split_whitespace().next() {
                    help.commands.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    flush(&mut current, &mut help);
    help
}

/// One flag table of the manual.
#[derive(Debug)]
pub struct Table {
    /// The command as typed, e.g. "remsimctl slotmap create".
    pub command: String,
    pub rows: Vec<Opt>,
    /// Where it is, for messages: "docs/reference.md:120".
    pub place: String,
}

const OPEN: &str = "<!-- flags: ";
const CLOSE: &str = "<!-- end flags -->";

/// The contents of each backtick span of a cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// A cell holding one code span, or none for a dash.
fn single(cell: &str) -> Option<String> {
    code_spans(cell).first().map(|s| s.to_string())
}

/// The cells of a table row; `\|` does not split.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                if let Some(s) = out.last_mut() {
                    s.push('|');
                }
                chars.next();
            }
            '|' => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

/// Every flag table of one Markdown file, or a message naming a malformed one.
pub fn parse_tables(file: &str, text: &str) -> Result<Vec<Table>, String> {
    let mut tables = Vec::new();
    let mut open: Option<Table> = None;
    for (i, line) in text.lines().enumerate() {
        let place = format!("{file}:{}", i + 1);
        if let Some(rest) = line.trim().strip_prefix(OPEN) {
            if open.is_some() {
                return Err(format!("{place}: a table opens inside another"));
            }
            let command = rest.trim_end_matches("-->").trim().to_string();
            open = Some(Table {
                command,
                rows: Vec::new(),
                place,
            });
        } else if line.trim() == CLOSE {
            tables.push(
                open.take()
                    .ok_or_else(|| format!("{place}: end without a table"))?,
            );
        } else if let Some(table) = &mut open {
            let row = cells(line);
            if !line.trim_start().starts_with('|') || row.len() < 3 {
                continue;
            }
            let names: BTreeSet<String> = code_spans(&row[0])
                .iter()
                .filter_map(|s| s.split_whitespace().next())
                .filter(|s| s.starts_with('-'))
                .map(String::from)
                .collect();
            if names.is_empty() {
                continue; // the header and its rule
            }
            table.rows.push(Opt {
                names,
                env: single(&row[1]),
                default: single(&row[2]),
            });
        }
    }
    match open {
        Some(t) => Err(format!("{}: table not closed with {CLOSE}", t.place)),
        None => Ok(tables),
    }
}

/// Differences between what `--help` lists (`own`, the command's own
/// options) and a manual table, one line each; empty when they agree.
pub fn compare(own: &[Opt], table: &Table) -> Vec<String> {
    let mut problems = Vec::new();
    let find = |names: &BTreeSet<String>, set: &[Opt]| {
        set.iter().find(|o| !o.names.is_disjoint(names)).cloned()
    };
    for opt in own {
        match find(&opt.names, &table.rows) {
            None => problems.push(format!(
                "{}: {} is missing from the manual",
                table.command,
                opt.key()
            )),
            Some(row) => {
                if row.names != opt.names {
                    problems.push(format!(
                        "{}: {} is spelt {:?} in --help, {:?} in the manual",
                        table.command,
                        opt.key(),
                        opt.names,
                        row.names
                    ));
                }
                if row.env != opt.env {
                    problems.push(format!(
                        "{}: {} has environment {:?} in --help, {:?} in the manual",
                        table.command,
                        opt.key(),
                        opt.env,
                        row.env
                    ));
                }
                if row.default != opt.default {
                    problems.push(format!(
                        "{}: {} has default {:?} in --help, {:?} in the manual",
                        table.command,
                        opt.key(),
                        opt.default,
                        row.default
                    ));
                }
            }
        }
    }
    for row in &table.rows {
        if find(&row.names, own).is_none() {
            problems.push(format!(
                "{}: the manual lists {}, which --help does not",
                table.command,
                row.key()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "remsim thing

Usage: thing [OPTIONS] <COMMAND>

Commands:
  list    All of them
  help    Print this message

Options:
  -i, --server-host <SERVER_HOST>
          remsim-server host
          
          [env: REMSIM_SERVER_HOST=]

  -p, --server-port <SERVER_PORT>
          port [env: REMSIM_SERVER_PORT=10.0.0.1] [default: 9998]
      --log-format <LOG_FORMAT>
          [env: REMSIM_LOG_FORMAT=] [default: text] [possible values: text, json]
  -s
          shared
  -h, --help
          Print help

Exit codes: 0 ok.
";

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_options_and_commands() {
        let h = parse_help(HELP);
        assert_eq!(h.commands, ["list", "help"]);
        assert_eq!(h.options.len(), 5);
        assert_eq!(h.options[0].names, names(&["-i", "--server-host"]));
        assert_eq!(h.options[0].env.as_deref(), Some("REMSIM_SERVER_HOST"));
        assert_eq!(h.options[0].default, None);
        assert_eq!(h.options[1].env.as_deref(), Some("REMSIM_SERVER_PORT"));
        assert_eq!(h.options[1].default.as_deref(), Some("9998"));
        assert_eq!(h.options[2].names, names(&["--log-format"]));
        assert_eq!(h.options[2].default.as_deref(), Some("text"));
        assert_eq!(h.options[3].names, names(&["-s"]));
        assert_eq!(h.options[3].key(), "-s");
    }

    const DOC: &str = "text
<!-- flags: thing -->
| flag | environment | default | meaning |
|---|---|---|---|
| `-i`, `--server-host HOST` | `REMSIM_SERVER_HOST` | – | host |
| `-p`, `--server-port PORT` | `REMSIM_SERVER_PORT` | `9998` | a \\| b |
| `--log-format FORMAT` | `REMSIM_LOG_FORMAT` | `json` | format |
| `--extra` | – | – | not in help |
<!-- end flags -->
";

    #[test]
    fn tables_and_their_differences_from_help() {
        let tables = parse_tables("x.md", DOC).unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].command, "thing");
        assert_eq!(tables[0].place, "x.md:2");
        assert_eq!(tables[0].rows.len(), 4);
        let own: Vec<Opt> = parse_help(HELP)
            .options
            .into_iter()
            .filter(|o| !o.names.contains("--help"))
            .collect();
        let problems = compare(&own, &tables[0]);
        assert_eq!(
            problems,
            [
                "thing: --log-format has default Some(\"text\") in --help, Some(\"json\") in the manual",
                "thing: -s is missing from the manual",
                "thing: the manual lists --extra, which --help does not",
            ]
        );
        assert!(parse_tables("y.md", "<!-- flags: a -->\n| x |").is_err());
    }
}
