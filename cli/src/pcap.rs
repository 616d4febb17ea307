//! `remsimctl decode --pcap FILE`: reassembles the TCP streams of a capture
//! (pcap or pcapng; Ethernet, Linux cooked v1 and v2, raw IP or BSD
//! loopback; IPv4 and IPv6) and decodes every IPA frame, RSPRO and CCM,
//! with its time, direction and stream. Other TCP traffic (the REST port,
//! DNS over TCP) is noted once and skipped; only an IPA stream that breaks
//! is an error.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use bytes::BytesMut;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
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
    /// IPA frames decoded so far: a stream that never had one is not IPA.
    frames: u64,
}

/// The first bytes of a pcapng file (its section header block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// The packets of a capture, whichever of the two formats it is in.
enum Capture {
    Pcap(PcapReader<File>, DataLink),
    /// pcapng: each packet names its interface, each interface its link type.
    PcapNg(PcapNgReader<File>, Vec<DataLink>),
}

/// One captured packet: time since the epoch, link type, bytes.
type Packet = (std::time::Duration, DataLink, Vec<u8>);

impl Capture {
    fn open(path: &Path) -> Result<Capture, String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut magic = [0u8; 4];
        let mut file = File::open(path).map_err(|e| e.to_string())?;
        file.read_exact(&mut magic)
            .map_err(|e| format!("not a capture: {e}"))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        if magic == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(file).map_err(|e| format!("not a pcapng file: {e}"))?;
            Ok(Capture::PcapNg(reader, Vec::new()))
        } else {
            let reader =
                PcapReader::new(file).map_err(|e| format!("not a pcap or pcapng file: {e}"))?;
            let link = reader.header().datalink;
            Ok(Capture::Pcap(reader, link))
        }
    }

    fn next(&mut self) -> Option<Result<Packet, String>> {
        match self {
            Capture::Pcap(reader, link) => Some(
                reader
                    .next_packet()?
                    .map(|p| (p.timestamp, *link, p.data.into_owned()))
                    .map_err(|e| e.to_string()),
            ),
            Capture::PcapNg(reader, links) => loop {
                let block = match reader.next_block()? {
                    Ok(block) => block,
                    Err(e) => return Some(Err(e.to_string())),
                };
                match block {
                    // A new section starts its interfaces afresh.
                    Block::SectionHeader(_) => links.clear(),
                    Block::InterfaceDescription(i) => links.push(i.linktype),
                    Block::EnhancedPacket(p) => {
                        let Some(link) = links.get(p.interface_id as usize) else {
                            return Some(Err(format!(
                                "packet of undeclared interface {}",
                                p.interface_id
                            )));
                        };
                        return Some(Ok((p.timestamp, *link, p.data.into_owned())));
                    }
                    Block::SimplePacket(p) => {
                        let Some(link) = links.first() else {
                            return Some(Err("packet before any interface".into()));
                        };
                        return Some(Ok((std::time::Duration::ZERO, *link, p.data.into_owned())));
                    }
                    _ => {}
                }
            },
        }
    }
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
        // Cooked v2 (tcpdump -i any): a 20-byte header, protocol first.
        DataLink::LINUX_SLL2 => match data.get(..2)? {
            [0x08, 0x00] | [0x86, 0xDD] => SlicedPacket::from_ip(data.get(20..)?).ok()?,
            _ => return None,
        },
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
    let mut capture =
        Capture::open(path).map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))?;
    let mut streams: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut dirs: HashMap<(SocketAddr, SocketAddr), Direction> = HashMap::new();
    let mut start = None;
    let mut all_ok = true;
    let mut codec = IpaCodec::default();
    while let Some(packet) = capture.next() {
        let (timestamp, link, data) =
            packet.map_err(|e| Failure::new(EXIT_FAILURE, format!("{}: {e}", path.display())))?;
        let t0 = *start.get_or_insert(timestamp);
        let time = timestamp.saturating_sub(t0).as_secs_f64();
        let Some(seg) = segment(link, &data) else {
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
                    d.frames += 1;
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
                Err(e) if d.frames == 0 => {
                    // Other traffic in the capture: a note, not an error.
                    eprintln!(
                        "stream #{stream} {} -> {}: not IPA ({e}); skipped",
                        seg.src, seg.dst
                    );
                    d.broken = true;
                    d.buf.clear();
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "stream #{stream} {} -> {}: IPA stream broken after {} frames ({e}); rest skipped",
                        seg.src, seg.dst, d.frames
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
