//! Malformed and oversized files given to remsim-bankd: a slot file with a
//! bad line, soft SIM profiles that do not parse or break a rule, and a
//! path that never ends (/dev/zero). Each stops the bankd at start with
//! one clear error naming the file (and the line), never a panic or an
//! allocation the file decides.

use std::process::Command;

struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("bankd-files-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the bankd with `args` (it must stop by itself) and returns its
/// stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_remsim-bankd"))
        .args(["-i", "127.0.0.1", "-p", "1", "-P", "0"])
        .args(args)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn malformed_and_endless_files_stop_the_bankd_with_a_clear_error() {
    let dir = Scratch::new("bad");
    let slots = dir.file(
        "slots.csv",
        "\"1\",\"0\",\"Reader A\"\n\"1\",\"x\",\"Reader B\"\n",
    );
    let e = refused(&["--slot-file", &slots]);
    assert!(e.contains("slots.csv line 2"), "{e}");
    let e = refused(&["--slot-file", "/dev/zero"]);
    assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");

    let toml = dir.file("cards.toml", "[[card]]\niccid = \"not digits\"\n");
    let e = refused(&["--backend", "soft", "--soft-profiles", &toml]);
    assert!(e.contains("cards.toml"), "{e}");
    let json = dir.file("cards.json", "{\"cards\": [");
    let e = refused(&["--backend", "soft", "--soft-profiles", &json]);
    assert!(e.contains("cards.json"), "{e}");
    let e = refused(&["--backend", "soft", "--soft-profiles", "/dev/zero"]);
    assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
}
