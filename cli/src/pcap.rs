//! `remsimctl decode --pcap FILE`: reassembles the TCP streams of a capture
//! (Ethernet, Linux cooked, raw IP or BSD loopback; IPv4 and IPv6) and
//! decodes every IPA frame, RSPRO and CCM, with its time, direction and
//! stream. Streams that are not IPA are reported once and skipped.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use bytes::BytesMut;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use rspro::ipa::IpaCodec;
use rspro::json;
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

use crate::api::{EXIT_FAILURE, EXIT_INVALID, Failure};

/// One direction of a TCP connection.
#[derive(Default)]
struct Direction {
    next_seq: Option<u32>,
    buf: BytesMut,
    broken: bool,
}

struct Segment<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    payload: &'a [u8],
}

fn segment<'a>(link: DataLink, data: &'a [u8]) -> Option<Segment<'a>> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    Some(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        payload: tcp.payload(),
    })
}

/// Appends a segment's new bytes (retransmitted ones are skipped, a gap
/// restarts the buffer). A stream found not to be IPA is only followed, never
/// buffered again, so a long non-IPA capture cannot fill memory.
fn reassemble(d: &mut Direction, seq: u32, payload: &[u8]) {
    let next = *d.next_seq.get_or_insert(seq);
    let ahead = seq.wrapping_sub(next) as i32;
    if d.broken {
        d.buf.clear();
    } else if ahead > 0 {
        // Bytes were not captured: whatever was buffered cannot be completed.
        d.buf.clear();
        d.buf.extend_from_slice(payload);
    } else {
        let overlap = (-ahead) as usize;
        if overlap < payload.len() {
            d.buf.extend_from_slice(&payload[overlap..]);
        }
    }
    let end = seq.wrapping_add(payload.len() as u32);
    if end.wrapping_sub(next) as i32 > 0 {
        d.next_seq = Some(end);
    }
}

pub fn decode(path: &Path, as_json: bool) -> Result<bool, Failure> {
    let file =
        File::open(path).map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))?;
    let mut reader = PcapReader::new(file)
        .map_err(|e| Failure::invalid(format!("{}: not a pcap file: {e}", path.display())))?;
    let link = reader.header().datalink;
    let mut streams: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut dirs: HashMap<(SocketAddr, SocketAddr), Direction> = HashMap::new();
    let mut start = None;
    let mut all_ok = true;
    let mut codec = IpaCodec::default();
    while let Some(packet) = reader.next_packet() {
        let packet =
            packet.map_err(|e| Failure::new(EXIT_FAILURE, format!("{}: {e}", path.display())))?;
        let t0 = *start.get_or_insert(packet.timestamp);
        let time = packet.timestamp.saturating_sub(t0).as_secs_f64();
        let Some(seg) = segment(link, &packet.data) else {
            continue;
        };
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let n = streams.len();
        let stream = *streams.entry(key).or_insert(n);
        let d = dirs.entry((seg.src, seg.dst)).or_default();
        if seg.syn {
            // A new connection on the same addresses: judged afresh.
            *d = Direction {
                next_seq: Some(seg.seq.wrapping_add(1)),
                ..Direction::default()
            };
            continue;
        }
        if seg.payload.is_empty() {
            continue;
        }
        reassemble(d, seg.seq, seg.payload);
        if d.broken {
            continue;
        }
        loop {
            match codec.decode(&mut d.buf) {
                Ok(Some(frame)) => {
                    let decoded = json::frame_to_json(&frame)
                        .unwrap_or_else(|e| json!({"error": e.to_string()}));
                    if as_json {
                        let mut v = json!({"time": time, "stream": stream, "src": seg.src.to_string(), "dst": seg.dst.to_string()});
                        if let (Value::Object(o), Value::Object(f)) = (&mut v, decoded) {
                            o.extend(f);
                        }
                        println!("{v}");
                    } else {
                        println!(
                            "{time:10.6} #{stream} {} -> {} {}",
                            seg.src,
                            seg.dst,
                            crate::frames::text(&decoded)
                        );
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!(
                        "stream #{stream} {} -> {}: not IPA ({e}); skipped",
                        seg.src, seg.dst
                    );
                    d.broken = true;
                    all_ok = false;
                    d.buf.clear();
                    break;
                }
            }
        }
    }
    if streams.is_empty() {
        return Err(Failure::new(
            EXIT_INVALID,
            format!("{}: no TCP traffic found", path.display()),
        ));
    }
    Ok(all_ok)
}
