//! The slot file `bankd_pcsc_slots.csv`: which PC/SC reader serves which
//! bank slot, as `"bankId","slotNr","reader name regex"` lines (the C
//! bankd's format; POSIX-ERE-style expressions matched as an unanchored
//! search). Bad lines are reported with their line number and refuse the
//! whole file.

use regex::Regex;
use rspro::BankSlot;
use rspro::validate::MAX_ID;

#[derive(Debug, thiserror::Error)]
pub enum SlotFileError {
    #[error("{path} line {line}: {problem}")]
    Line {
        path: String,
        line: u64,
        problem: String,
    },
}

#[derive(Debug, Clone)]
pub struct SlotEntry {
    pub slot: BankSlot,
    pub reader: Regex,
    /// Line of the file, for messages.
    pub line: u64,
}

/// The parsed file.
#[derive(Debug, Clone, Default)]
pub struct SlotFile {
    pub entries: Vec<SlotEntry>,
}

impl SlotFile {
    pub fn parse(name: &str, text: &str) -> Result<Self, SlotFileError> {
        let mut entries = Vec::new();
        // Line by line, so that messages name the line as an editor shows it.
        for (index, text_line) in text.lines().enumerate() {
            let line = index as u64 + 1;
            let bad = |problem: String| SlotFileError::Line {
                path: name.to_string(),
                line,
                problem,
            };
            let trimmed = text_line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(text_line.as_bytes());
            let record = match reader.records().next() {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => continue,
            };
            if record.len() < 3 {
                return Err(bad(format!(
                    "{} field(s); expected \"bankId\",\"slotNr\",\"reader regex\"",
                    record.len()
                )));
            }
            let number = |i: usize, what: &str| -> Result<u32, SlotFileError> {
                let field = record[i].trim();
                field
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_ID)
                    .ok_or_else(|| bad(format!("{what} {field:?} is not a number 0..{MAX_ID}")))
            };
            let slot = BankSlot::new(number(0, "bankId")?, number(1, "slotNr")?);
            // As the C bankd: with more than three fields the last one counts.
            let pattern = &record[record.len() - 1];
            let reader = Regex::new(pattern)
                .map_err(|e| bad(format!("reader expression {pattern:?}: {e}")))?;
            entries.push(SlotEntry { slot, reader, line });
        }
        Ok(SlotFile { entries })
    }

    /// The expression for a bank slot (first entry wins, as in C).
    pub fn reader_for(&self, slot: BankSlot) -> Option<&Regex> {
        self.entries
            .iter()
            .find(|e| e.slot == slot)
            .map(|e| &e.reader)
    }

    /// Entries for other banks than ours: reported, then ignored.
    pub fn foreign(&self, bank_id: u32) -> impl Iterator<Item = &SlotEntry> {
        self.entries
            .iter()
            .filter(move |e| e.slot.bank_id != bank_id)
    }
}

/// Readers matching an expression, in the order PC/SC lists them.
pub fn matching<'a>(expr: &Regex, readers: &'a [String]) -> Vec<&'a str> {
    readers
        .iter()
        .filter(|r| expr.is_match(r))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_c_format() {
        let text = "\"1\",\"0\",\"Virtual PCD 00 00\"\n1,1,\"Example Vendor Reader [0-9]{2} 02\"\n# comment\n\n\"1\",\"2\",\"ignored\",\"Last field wins\"\n";
        let f = SlotFile::parse("t.csv", text).expect("valid");
        assert_eq!(f.entries.len(), 3);
        let readers = vec![
            "Virtual PCD 00 00".to_string(),
            "Example Vendor Reader 17 02".to_string(),
            "Last field wins 00 00".to_string(),
        ];
        let m = |slot| {
            matching(
                f.reader_for(BankSlot::new(1, slot)).expect("entry"),
                &readers,
            )
        };
        assert_eq!(m(0), vec!["Virtual PCD 00 00"]);
        assert_eq!(m(1), vec!["Example Vendor Reader 17 02"]);
        assert_eq!(m(2), vec!["Last field wins 00 00"], "unanchored search");
        assert!(f.reader_for(BankSlot::new(1, 3)).is_none());
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        let cases = [
            ("1,0,\"ok\"\n1,1\n", 2, "2 field(s)"),
            ("1,0,\"ok\"\n\n1,x,\"r\"\n", 3, "slotNr"),
            ("1,0,\"(unclosed\"\n", 1, "reader expression"),
            ("5000,0,\"r\"\n", 1, "bankId"),
        ];
        for (text, line, what) in cases {
            let err = SlotFile::parse("t.csv", text)
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(&format!("line {line}:")), "{err}");
            assert!(err.contains(what), "{err}");
        }
    }
}
