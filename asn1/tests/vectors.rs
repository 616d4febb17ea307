//! Conformance with osmo-remsim 1.0.0: every frame in the C reference
//! vectors decodes to the values shown there (asn1c's XER) and re-encodes
//! byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::BytesMut;
use rspro::ipa::{Frame, IpaCodec};
use rspro::{Pdu, json};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn vectors_text() -> String {
    let path = repo_file("conformance/c-reference-vectors.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One frame from the file, with its XER decode when the line has one.
struct Vector {
    line: usize,
    hex: String,
    xer: Option<String>,
}

fn is_frame_hex(s: &str) -> bool {
    s.len() >= 8
        && s.len().is_multiple_of(2)
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    for (i, line) in vectors_text().lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        if let Some(pos) = fields.iter().position(|f| is_frame_hex(f)) {
            let xer = fields
                .get(pos + 1)
                .filter(|f| f.starts_with("<RsproPDU>"))
                .map(|f| f.to_string());
            out.push(Vector {
                line: i + 1,
                hex: fields[pos].to_string(),
                xer,
            });
            continue;
        }
        // Ladder lines: "... RSPRO name  [conn #3]  <hex>".
        if (line.contains("RSPRO ") || line.contains("IPA CCM"))
            && let Some(last) = line.split_whitespace().last().filter(|t| is_frame_hex(t))
        {
            out.push(Vector {
                line: i + 1,
                hex: last.to_string(),
                xer: None,
            });
        }
    }
    out
}

fn decode_frame(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = IpaCodec::default()
        .decode_eof(&mut buf)
        .expect("frame decodes")
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes after the frame", buf.len());
    frame
}

/// Flattens XER into (path, value) pairs; `<x/>` inside an element is its value.
fn flatten_xer(xer: &str) -> BTreeSet<(String, Option<String>)> {
    #[derive(Default)]
    struct Node {
        name: String,
        text: String,
        children: Vec<Node>,
        empty: bool,
    }
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut rest = xer;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').expect("tag closes");
            let tag = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let node = stack.pop().expect("open element");
                assert_eq!(node.name, name, "XER nesting");
                stack.last_mut().expect("parent").children.push(node);
            } else if let Some(name) = tag.strip_suffix('/') {
                let leaf = Node {
                    name: name.to_string(),
                    empty: true,
                    ..Node::default()
                };
                stack.last_mut().expect("parent").children.push(leaf);
            } else {
                stack.push(Node {
                    name: tag.to_string(),
                    ..Node::default()
                });
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            stack
                .last_mut()
                .expect("element")
                .text
                .push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    fn walk(node: &Node, path: &str, out: &mut BTreeSet<(String, Option<String>)>) {
        for child in &node.children {
            let p = if path.is_empty() {
                child.name.clone()
            } else {
                format!("{path}/{}", child.name)
            };
            match child.children.as_slice() {
                [only] if only.empty && only.children.is_empty() => {
                    out.insert((p, Some(only.name.to_lowercase())));
                }
                [] if !child.text.is_empty() => {
                    out.insert((p, Some(child.text.to_lowercase())));
                }
                _ => {
                    out.insert((p.clone(), None));
                    walk(child, &p, out);
                }
            }
        }
    }
    let root = stack.pop().expect("document");
    let mut out = BTreeSet::new();
    let pdu = root.children.first().expect("RsproPDU element");
    assert_eq!(pdu.name, "RsproPDU");
    walk(pdu, "", &mut out);
    out
}

fn flatten_json(value: &Value, path: &str, out: &mut BTreeSet<(String, Option<String>)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if path.is_empty() && (k == "ipa" || k == "notes") {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}/{k}")
                };
                if let Value::Object(_) = v {
                    out.insert((p.clone(), None));
                }
                flatten_json(v, &p, out);
            }
        }
        Value::String(s) => {
            out.insert((path.to_string(), Some(s.to_lowercase())));
        }
        other => {
            out.insert((path.to_string(), Some(other.to_string())));
        }
    }
}

#[test]
fn copy_matches_shared_when_present() {
    let shared = repo_file("../shared/conformance/c-reference-vectors.txt");
    if shared.exists() {
        let theirs = std::fs::read(&shared).expect("read shared vectors");
        let ours =
            std::fs::read(repo_file("conformance/c-reference-vectors.txt")).expect("read copy");
        assert!(
            ours == theirs,
            "conformance/c-reference-vectors.txt differs from {}",
            shared.display()
        );
    }
    // The C server's REST answers (replayed by server/tests/rest.rs):
    // the same files, byte for byte (CRLF line ends included).
    let shared = repo_file("../shared/conformance/rsres");
    if shared.exists() {
        let ours = repo_file("conformance/rsres");
        let names = |dir: &PathBuf| -> BTreeSet<String> {
            std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| {
                    entry
                        .expect("directory entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        let names_ours = names(&ours);
        assert_eq!(
            names_ours,
            names(&shared),
            "conformance/rsres/ holds other files than {}",
            shared.display()
        );
        for name in &names_ours {
            let theirs = std::fs::read(shared.join(name)).expect("read shared answer");
            let copy = std::fs::read(ours.join(name)).expect("read copy");
            assert!(
                copy == theirs,
                "conformance/rsres/{name} differs from {}",
                shared.join(name).display()
            );
        }
    }
}

#[test]
fn every_frame_round_trips_byte_for_byte() {
    let vectors = vectors();
    assert!(
        vectors.len() > 200,
        "only {} frames found in the vectors file",
        vectors.len()
    );
    let mut codec = IpaCodec::default();
    for v in &vectors {
        let bytes = hex::decode(&v.hex).expect("hex");
        let frame = decode_frame(&bytes);
        let mut again = BytesMut::new();
        codec
            .encode(frame.clone(), &mut again)
            .expect("frame encodes");
        assert_eq!(
            hex::encode(&again),
            v.hex,
            "line {}: frame re-encoding",
            v.line
        );
        if let Frame::Rspro(der) = &frame {
            let decoded = rspro::decode(der).unwrap_or_else(|e| panic!("line {}: {e}", v.line));
            assert!(
                decoded.notes.is_empty(),
                "line {}: notes {:?}",
                v.line,
                decoded.notes
            );
            let Pdu::Known(pdu) = decoded.pdu else {
                panic!("line {}: unknown message", v.line)
            };
            let der_again = rspro::encode(&pdu).expect("encodes");
            assert_eq!(
                hex::encode(der_again),
                hex::encode(der),
                "line {}: DER re-encoding",
                v.line
            );
        }
    }
}

#[test]
fn every_frame_decodes_to_the_values_shown() {
    let mut compared = 0;
    let mut alternatives = BTreeMap::new();
    for v in vectors() {
        let Some(xer) = &v.xer else { continue };
        let frame = decode_frame(&hex::decode(&v.hex).expect("hex"));
        let value = json::frame_to_json(&frame).expect("decodes");
        let mut ours = BTreeSet::new();
        flatten_json(&value, "", &mut ours);
        let theirs = flatten_xer(xer);
        assert_eq!(
            ours, theirs,
            "line {}: decoded values differ from the C decode",
            v.line
        );
        let name = value["msg"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .expect("msg");
        *alternatives.entry(name).or_insert(0) += 1;
        compared += 1;
    }
    assert!(compared > 50, "only {compared} decodes compared");
    // Every RsproPDUchoice alternative appears in the vectors.
    assert_eq!(
        alternatives.len(),
        21,
        "alternatives seen: {:?}",
        alternatives.keys()
    );
}

#[test]
fn ccm_frames_of_the_c_suite() {
    let cases = [
        ("0001fe00", Frame::Ccm(rspro::ipa::Ccm::Ping)),
        ("0001fe01", Frame::Ccm(rspro::ipa::Ccm::Pong)),
        ("0001fe06", Frame::Ccm(rspro::ipa::Ccm::IdAck)),
    ];
    for (hex_frame, want) in cases {
        assert_eq!(decode_frame(&hex::decode(hex_frame).expect("hex")), want);
    }
    // The libosmocore ID_GET layout asks for these tags, in this order.
    let id_get =
        decode_frame(&hex::decode("0011fe0401080107010201030104010501010100").expect("hex"));
    let Frame::Ccm(rspro::ipa::Ccm::IdGet(body)) = id_get else {
        panic!("not ID_GET")
    };
    assert_eq!(
        rspro::ipa::parse_id_get(&body).expect("parses"),
        vec![8, 7, 2, 3, 4, 5, 1, 0]
    );
    assert_eq!(
        rspro::ipa::build_id_get(&[8, 7, 2, 3, 4, 5, 1, 0]),
        rspro::ipa::Ccm::IdGet(body)
    );
}

/// The comparison above is not vacuous: a single changed value is caught.
#[test]
fn comparison_catches_a_changed_value() {
    let v = vectors()
        .into_iter()
        .find(|v| {
            v.xer
                .as_deref()
                .is_some_and(|x| x.contains("<numberOfSlots>8<"))
        })
        .expect("a connectBankReq vector");
    let frame = decode_frame(&hex::decode(&v.hex).expect("hex"));
    let mut value = json::frame_to_json(&frame).expect("decodes");
    let theirs = flatten_xer(v.xer.as_deref().expect("xer"));
    let mut ours = BTreeSet::new();
    flatten_json(&value, "", &mut ours);
    assert_eq!(ours, theirs);
    value["msg"]["connectBankReq"]["numberOfSlots"] = Value::from(9);
    let mut changed = BTreeSet::new();
    flatten_json(&value, "", &mut changed);
    assert_ne!(changed, theirs);
    assert!(
        theirs.len() > 10,
        "XER flattened to {} entries",
        theirs.len()
    );
}
