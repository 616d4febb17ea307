//! Slot maps as CSV text, `bank_id,bank_slot,client_id,client_slot` one map
//! per line, parsed into slot pairs: pure, so that the fuzzer reaches it.

pub const HEADER: &str = "bank_id,bank_slot,client_id,client_slot";
pub type Row = ((u32, u32), (u32, u32));

/// Parses the file (through the csv crate, as the bankd reads its slot
/// file: quoting, spaces and `#` comments as CSV tools write them); errors
/// name the line.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let max = rspro::validate::MAX_ID;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        // From the byte offset (past blank lines the reader skipped): its
        // own line count leaves blank lines out.
        let mut start = record.position().map_or(0, |p| p.byte() as usize);
        while matches!(text.as_bytes().get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        let line = 1 + text.as_bytes()[..start.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        let fields: Vec<&str> = record.iter().collect();
        if fields.join(",") == HEADER || fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let nums: Option<Vec<u32>> = fields
            .iter()
            .map(|f| f.parse().ok().filter(|v| *v <= max))
            .collect();
        match nums.as_deref() {
            Some([b, bs, c, cs]) => rows.push(((*b, *bs), (*c, *cs))),
            _ => {
                return Err(format!(
                    "line {line}: {:?} is not {HEADER} (numbers 0..{max})",
                    fields.join(",")
                ));
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_read_as_csv_tools_write_them() {
        let text = "bank_id, bank_slot, client_id, client_slot\n# a comment\n1,0,23,0\n\"1\",\"1\" ,24,0\n\n2,3,25,1\n";
        assert_eq!(
            parse(text),
            Ok(vec![
                ((1, 0), (23, 0)),
                ((1, 1), (24, 0)),
                ((2, 3), (25, 1))
            ])
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = parse("1,0,23,0\n1,0,23\n").expect_err("three fields");
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("1,0,23,0\n\n1,0,23,1024\n").expect_err("out of range");
        assert!(e.starts_with("line 3:") && e.contains("0..1023"), "{e}");
        assert!(parse("1,0,x,0\n").is_err());
    }
}
