//! `remsimctl decode` and `remsimctl encode`: IPA frames in hex to JSON or
//! text, and JSON back to hex. A bad frame is reported with its byte offset
//! and the remaining frames are still processed; the exit code is then 1.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use bytes::BytesMut;
use clap::Args;
use rspro::ipa::{self, Frame, FrameError, IpaCodec};
use rspro::json;
use serde_json::Value;
use tokio_util::codec::Decoder;

/// Bytes before the PDU in an RSPRO frame: LEN(2) PROTO(1) EXT(1).
const RSPRO_PDU_OFFSET: usize = ipa::HEADER_LEN + 1;

#[derive(Args, Clone)]
pub struct DecodeArgs {
    /// Frames as hex (spaces and colons ignored); read from stdin, one per
    /// line, when none are given. A line may hold several whole frames.
    frames: Vec<String>,
    /// One JSON object per frame instead of text.
    #[arg(long)]
    json: bool,
    /// Decode every IPA frame of the TCP streams in this capture instead.
    #[arg(long, conflicts_with = "frames")]
    pcap: Option<std::path::PathBuf>,
}

#[derive(Args, Clone)]
pub struct EncodeArgs {
    /// A frame as JSON, e.g. '{"ipa":"ccm","ccm":"PING"}'; read from stdin,
    /// one object per line, when not given.
    #[arg(long)]
    json: Option<String>,
}

/// Input lines from the arguments or, without any, from stdin.
fn inputs(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    if !args.is_empty() {
        return Ok(args);
    }
    io::stdin()
        .lock()
        .lines()
        .collect::<Result<_, _>>()
        .context("reading stdin")
}

fn parse_hex(line: &str) -> Result<Vec<u8>, String> {
    let clean: String = line
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    hex::decode(clean).map_err(|e| format!("not hex: {e}"))
}

/// Where in the frame a framing error points.
fn frame_error_offset(e: &FrameError) -> usize {
    match e {
        FrameError::UnknownProto(_) => 2,
        FrameError::UnknownExt(_) => 3,
        _ => 0,
    }
}

fn render(frame: &Frame, as_json: bool) -> Result<String, (usize, String)> {
    let value =
        json::frame_to_json(frame).map_err(|e| (RSPRO_PDU_OFFSET + e.offset, e.reason.clone()))?;
    if as_json {
        return Ok(value.to_string());
    }
    Ok(text(&value))
}

/// A one-line human form: `PING`, or `rspro v2 tag 0 connectBankReq {...}`.
pub fn text(value: &Value) -> String {
    let get = |k: &str| value.get(k).cloned().unwrap_or(Value::Null);
    if get("ipa") == "ccm" {
        let mut s = get("ccm").as_str().unwrap_or("?").to_string();
        for key in ["tags", "ids", "type"] {
            if let Some(v) = value.get(key) {
                s.push_str(&format!(" {key}={v}"));
            }
        }
        return s;
    }
    let (name, body) = match get("msg") {
        Value::Object(m) => m.into_iter().next().unwrap_or(("?".into(), Value::Null)),
        _ => ("?".into(), Value::Null),
    };
    let mut s = format!("rspro v{} tag {} {name} {body}", get("version"), get("tag"));
    if let Some(notes) = value.get("notes") {
        s.push_str(&format!(" notes={notes}"));
    }
    s
}

/// Decodes every frame of one input line; returns false on any error.
fn decode_line(n: usize, line: &str, as_json: bool, out: &mut impl Write) -> io::Result<bool> {
    let bytes = match parse_hex(line) {
        Ok(b) => b,
        Err(reason) => {
            eprintln!("frame {n}: {reason}");
            return Ok(false);
        }
    };
    let total = bytes.len();
    let mut buf = BytesMut::from(&bytes[..]);
    let mut ok = true;
    while !buf.is_empty() {
        let start = total - buf.len();
        match IpaCodec::default().decode_eof(&mut buf) {
            Ok(Some(frame)) => match render(&frame, as_json) {
                Ok(s) => writeln!(out, "{s}")?,
                Err((offset, reason)) => {
                    eprintln!("frame {n}: byte {}: {reason}", start + offset);
                    ok = false;
                }
            },
            Ok(None) => break,
            Err(e) => {
                let reason = match &e {
                    FrameError::Truncated(have) => {
                        let need = usize::from(u16::from_be_bytes([
                            bytes[start],
                            *bytes.get(start + 1).unwrap_or(&0),
                        ]));
                        if *have < ipa::HEADER_LEN {
                            format!("truncated: {have} byte(s), an IPA header needs 3")
                        } else {
                            format!(
                                "truncated: LEN says {need} payload byte(s), {} present",
                                have - ipa::HEADER_LEN
                            )
                        }
                    }
                    other => other.to_string(),
                };
                eprintln!(
                    "frame {n}: byte {}: {reason}",
                    start + frame_error_offset(&e)
                );
                return Ok(false);
            }
        }
    }
    Ok(ok)
}

pub fn decode(args: DecodeArgs, json_output: bool) -> anyhow::Result<ExitCode> {
    let as_json = args.json || json_output;
    if let Some(path) = &args.pcap {
        return Ok(match crate::pcap::decode(path, as_json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(f) => f.exit(),
        });
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    let mut n = 0;
    for line in inputs(args.frames)? {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        n += 1;
        all_ok &= decode_line(n, trimmed, as_json, &mut out)?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn encode(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let lines = match args.json {
        Some(j) => vec![j],
        None => inputs(Vec::new())?,
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    let mut n = 0;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        n += 1;
        let frame = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| json::frame_from_json(&v).map_err(|e| e.to_string()))
            .and_then(|f| f.to_bytes().map_err(|e| e.to_string()));
        match frame {
            Ok(bytes) => writeln!(out, "{}", hex::encode(bytes))?,
            Err(reason) => {
                eprintln!("frame {n}: {reason}");
                all_ok = false;
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
