//! `remsimctl decode` / `encode` as a user runs them: the real binary, the
//! C session's frames on stdin, JSON out, errors with offsets and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn remsimctl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remsimctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remsimctl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("remsimctl exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// Every frame (hex) of the C reference session, in file order.
fn c_session_frames() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conformance/c-reference-vectors.txt"
    );
    let vectors = std::fs::read_to_string(path).expect("vectors file");
    vectors
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split(|c: char| c == '|' || c.is_whitespace())
                .rev()
                .filter(|t| t.len() >= 8 && t.len().is_multiple_of(2))
                .find(|t| {
                    t.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn decodes_every_frame_of_the_c_session_as_json() {
    let frames = c_session_frames();
    assert!(frames.len() > 200, "{} frames", frames.len());
    let out = remsimctl(&["decode", "--json"], &frames.join("\n"));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), frames.len());
    for (line, hex) in lines.iter().zip(&frames) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per frame");
        match v["ipa"].as_str() {
            Some("ccm") => assert!(v["ccm"].is_string(), "{line}"),
            Some("rspro") => {
                assert_eq!(v["version"], 2, "{line}");
                assert!(v["msg"].as_object().is_some_and(|m| m.len() == 1), "{line}");
                assert!(v.get("notes").is_none(), "{line}");
            }
            _ => panic!("{hex}: {line}"),
        }
    }
    // The same JSON encodes back to the same bytes.
    let back = remsimctl(&["encode"], &lines.join("\n"));
    assert!(back.status.success(), "stderr: {}", text(&back.stderr));
    let hexes: Vec<String> = text(&back.stdout).lines().map(str::to_string).collect();
    assert_eq!(hexes, frames);
}

#[test]
fn json_uses_the_asn1_identifiers() {
    let out = remsimctl(
        &[
            "decode",
            "--json",
            "0039ee07 3036800102810100a22ea02c30240a0102160a6669786d652d6e616d65800c72656d73696d2d62616e6b648105312e302e30020101020108",
            "00:01:fe:00",
            "002dee07302a800102810100a222aa20300602011702010004163b9f96801fc78031a073be21136743200718000001a5",
        ],
        "",
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"ipa":"rspro","version":2,"tag":0,"msg":{"connectBankReq":{
            "identity":{"type":"remsimBankd","name":"fixme-name","software":"remsim-bankd","swVersion":"1.0.0"},
            "bankId":1,"numberOfSlots":8}}})
    );
    assert_eq!(lines[1], serde_json::json!({"ipa":"ccm","ccm":"PING"}));
    assert_eq!(
        lines[2]["msg"]["setAtrReq"]["atr"],
        "3b9f96801fc78031a073be21136743200718000001a5"
    );
}

#[test]
fn malformed_frames_are_reported_and_the_rest_decoded() {
    let input = [
        "0001fe00",
        "0000fe",                         // zero length
        "0001aa00",                       // unknown protocol
        "0010ee07300d800102810100a205a5", // LEN beyond the data
        "zz",                             // not hex
        "0007ee07300480010281",           // PDU cut short
        "0001fe01",
    ]
    .join("\n");
    let out = remsimctl(&["decode", "--json"], &input);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("PING") && stdout.contains("PONG"));
    let stderr = text(&out.stderr);
    for want in [
        "frame 2: byte 0: zero-length",
        "frame 3: byte 2: unknown IPA protocol 0xaa",
        "frame 4: byte 0: truncated",
        "frame 5: not hex",
        "frame 6: byte ",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn text_output_and_several_frames_per_line() {
    let out = remsimctl(
        &[
            "decode",
            "0001fe000001fe01 000dee07300a800102810100a202b300",
        ],
        "",
    );
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "PING\nPONG\nrspro v2 tag 0 resetStateReq {}\n"
    );
}

#[test]
fn encode_takes_defaults_and_reports_bad_json() {
    let ok = remsimctl(&["encode", "--json", r#"{"msg":{"resetStateReq":{}}}"#], "");
    assert!(ok.status.success());
    assert_eq!(text(&ok.stdout), "000dee07300a800102810100a202b300\n");
    let ccm = remsimctl(
        &[
            "encode",
            "--json",
            r#"{"ipa":"ccm","ccm":"ID_GET","tags":["UNIT"]}"#,
        ],
        "",
    );
    assert_eq!(text(&ccm.stdout), "0003fe040108\n");
    let bad = remsimctl(
        &["encode"],
        "{\"msg\":{\"noSuchMessage\":{}}}\n{\"ipa\":\"ccm\",\"ccm\":\"PONG\"}\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(text(&bad.stdout), "0001fe01\n");
    assert!(
        text(&bad.stderr).contains("frame 1:"),
        "{}",
        text(&bad.stderr)
    );
}
