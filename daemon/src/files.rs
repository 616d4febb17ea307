//! Reading the files operators hand to remsim (slot files, token files,
//! CSV imports) with a bound: a wrong path such as /dev/zero or a log
//! file of gigabytes is an error naming the limit, not an allocation the
//! file decides.

use std::io::{self, Read};
use std::path::Path;

/// The largest input file read: far beyond any real one (a CSV of every
/// possible slot map, 1024 × 1024 lines, is about 20 MB).
pub const FILE_LIMIT: u64 = 64 << 20;

/// The largest PEM file read: a certificate chain or a key is a few kB.
pub const PEM_LIMIT: u64 = 1 << 20;

/// Reads a UTF-8 text file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes: not a file for this"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beyond_the_limit_are_refused_and_others_read() {
        let dir = std::env::temp_dir().join(format!("files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        std::fs::write(&path, "12345").expect("write");
        assert_eq!(read_text(&path, 5).expect("at the limit"), "12345");
        let e = read_text(&path, 4).expect_err("beyond");
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        let e = read_text(Path::new("/dev/zero"), 1 << 20).expect_err("endless");
        assert!(e.to_string().contains("larger than"), "{e}");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert!(read_text(&path, 5).is_err(), "not UTF-8");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
