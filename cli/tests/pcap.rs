//! `remsimctl decode --pcap`: a capture written here (Ethernet, IPv4, TCP)
//! with frames of the C reference session split and merged across segments,
//! a retransmission, and a second stream that is not IPA.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use serde_json::Value;

const CLIENT: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([127, 0, 0, 1], 9998);
const CONNECT_CLIENT_REQ: &str = "0039ee073036800102810100a22ea22c30220a0100160773696d686f7374800d72656d73696d2d636c69656e748105312e302e303006020117020100";
const CONNECT_CLIENT_RES: &str = "0038ee07303580010281020926a22ca32a30250a0101160a6669786d652d6e616d65800d72656d73696d2d7365727665728105312e302e300a0100";

fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 65535);
    let b = if syn { b.syn() } else { b.psh().ack(1) };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("packet");
    out
}

fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("pcap file");
    let mut w = PcapWriter::new(file).expect("writer");
    for (i, p) in packets.iter().enumerate() {
        let ts = Duration::from_millis(1_000_000 + 10 * i as u64);
        w.write_packet(&PcapPacket::new(ts, p.len() as u32, p))
            .expect("write");
    }
}

/// `remsimctl decode --pcap PATH EXTRA...`.
fn decode_pcap(path: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remsimctl"))
        .args(["decode", "--pcap"])
        .arg(path)
        .args(extra)
        .output()
        .expect("runs")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

#[test]
fn decodes_the_rspro_streams_of_a_capture() {
    let dir = std::env::temp_dir().join(format!("remsimctl-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let req = [h("0001fe00"), h(CONNECT_CLIENT_REQ)].concat();
    let res = [h("0001fe01"), h(CONNECT_CLIENT_RES)].concat();
    let (a, b) = res.split_at(20);
    let packets = vec![
        tcp(CLIENT, SERVER, 1000, true, &[]),
        tcp(SERVER, CLIENT, 5000, true, &[]),
        // PING and ConnectClientReq in one segment.
        tcp(CLIENT, SERVER, 1001, false, &req),
        // PONG and ConnectClientRes over two segments, the second retransmitted.
        tcp(SERVER, CLIENT, 5001, false, a),
        tcp(SERVER, CLIENT, 5001 + a.len() as u32, false, b),
        tcp(SERVER, CLIENT, 5001 + a.len() as u32, false, b),
    ];
    let clean = dir.join("rspro.pcap");
    write_pcap(&clean, &packets);
    let out = decode_pcap(&clean, &["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let what: Vec<String> = lines
        .iter()
        .map(|v| match v["ipa"].as_str() {
            Some("ccm") => v["ccm"].as_str().unwrap_or("?").to_string(),
            _ => v["msg"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default(),
        })
        .collect();
    assert_eq!(
        what,
        ["PING", "connectClientReq", "PONG", "connectClientRes"]
    );
    assert!(lines.iter().all(|v| v["stream"] == 0));
    assert_eq!(
        (lines[0]["src"].as_str(), lines[0]["dst"].as_str()),
        (Some("127.0.0.1:40000"), Some("127.0.0.1:9998"))
    );
    assert_eq!(lines[3]["src"], "127.0.0.1:9998");
    assert_eq!(lines[3]["msg"]["connectClientRes"]["result"], "ok");
    let times: Vec<f64> = lines
        .iter()
        .map(|v| v["time"].as_f64().expect("time"))
        .collect();
    // The PONG completes with the first segment, the response with the second.
    assert_eq!(times, [0.02, 0.02, 0.03, 0.04]);

    // Text output, and a stream that is not IPA (other traffic): a note,
    // exit code 0.
    let mut mixed = packets.clone();
    mixed.push(tcp(
        ([127, 0, 0, 1], 41000),
        ([127, 0, 0, 1], 80),
        1,
        false,
        b"GET / HTTP/1.1\r\n\r\n",
    ));
    // More of it, the second segment after a gap: the stream stays skipped.
    for seq in [19, 1000] {
        mixed.push(tcp(
            ([127, 0, 0, 1], 41000),
            ([127, 0, 0, 1], 80),
            seq,
            false,
            b"Host: example\r\n\r\n",
        ));
    }
    // A new connection on the same addresses is judged afresh.
    mixed.push(tcp(
        ([127, 0, 0, 1], 41000),
        ([127, 0, 0, 1], 80),
        7000,
        true,
        &[],
    ));
    mixed.push(tcp(
        ([127, 0, 0, 1], 41000),
        ([127, 0, 0, 1], 80),
        7001,
        false,
        &req,
    ));
    let path = dir.join("mixed.pcap");
    write_pcap(&path, &mixed);
    let out = decode_pcap(&path, &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.lines().any(|l| l
            .contains("#0 127.0.0.1:9998 -> 127.0.0.1:40000 rspro v2 tag 2342 connectClientRes")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l
                .contains("#1 127.0.0.1:41000 -> 127.0.0.1:80 rspro v2 tag 0 connectClientReq")),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("#1 127.0.0.1:41000 -> 127.0.0.1:80: not IPA")
            .count(),
        1,
        "{stderr}"
    );

    // An IPA stream that breaks after its first frames: an error, exit 1.
    let mut broken = packets.clone();
    broken.push(tcp(
        CLIENT,
        SERVER,
        1001 + req.len() as u32,
        false,
        &h("0000fe00"),
    ));
    let path = dir.join("broken.pcap");
    write_pcap(&path, &broken);
    let out = decode_pcap(&path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("#0 127.0.0.1:40000 -> 127.0.0.1:9998: IPA stream broken after 2 frames"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same session as pcapng (what Wireshark, dumpcap and tshark write),
/// captured with Linux cooked v2 headers (what `tcpdump -i any` writes).
#[test]
fn reads_pcapng_with_cooked_v2_headers() {
    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;

    let dir = std::env::temp_dir().join(format!("remsimctl-pcapng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cooked = |src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, payload: &[u8]| {
        let b = PacketBuilder::ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 65535)
            .psh()
            .ack(1);
        let mut out = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6];
        out.extend_from_slice(&[0; 8]);
        b.write(&mut out, payload).expect("packet");
        out
    };
    let packets = [
        cooked(CLIENT, SERVER, 1001, &h("0001fe00")),
        cooked(SERVER, CLIENT, 5001, &h("0001fe01")),
        cooked(CLIENT, SERVER, 1005, &h(CONNECT_CLIENT_REQ)),
    ];
    let path = dir.join("session.pcapng");
    let mut w = PcapNgWriter::new(std::fs::File::create(&path).expect("file")).expect("writer");
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL2, 65535))
        .expect("interface");
    for (i, p) in packets.iter().enumerate() {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(1_000 + 10 * i as u64),
            original_len: p.len() as u32,
            data: std::borrow::Cow::Borrowed(p),
            options: vec![],
        };
        w.write_pcapng_block(block).expect("packet");
    }
    drop(w);
    let out = decode_pcap(&path, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with("127.0.0.1:40000 -> 127.0.0.1:9998 PING"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("127.0.0.1:9998 -> 127.0.0.1:40000 PONG"),
        "{text}"
    );
    assert!(lines[2].contains("connectClientReq"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
