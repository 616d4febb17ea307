//! Codec throughput: `cargo bench -p rspro --bench codec`. Encodes and
//! decodes a TpduModemToCard (the per-APDU hot path) and frames a stream of
//! them; prints nanoseconds per operation (median of 7 runs).

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use rspro::ipa::{Frame, IpaCodec};
use rspro::{BankSlot, ClientSlot, RsproPdu};
use tokio_util::codec::{Decoder, Encoder};

const N: u32 = 200_000;

fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..N {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn main() {
    let pdu = RsproPdu::tpdu_modem_to_card(
        ClientSlot::new(23, 0),
        BankSlot::new(1, 0),
        vec![0xA0, 0xA4, 0, 0, 2, 0x3F, 0],
    );
    let der = rspro::encode(&pdu).expect("encodes");
    let frame = Frame::rspro(&pdu)
        .expect("frame")
        .to_bytes()
        .expect("bytes");
    let encode = median_ns(|| {
        black_box(rspro::encode(black_box(&pdu)).expect("encodes"));
    });
    let decode = median_ns(|| {
        black_box(rspro::decode(black_box(&der)).expect("decodes"));
    });
    let mut codec = IpaCodec::default();
    let framing = median_ns(|| {
        let mut buf = BytesMut::from(&frame[..]);
        black_box(codec.decode(&mut buf).expect("frame"));
        let mut out = BytesMut::new();
        codec
            .encode(Frame::Rspro(der.clone().into()), &mut out)
            .expect("encodes");
        black_box(out);
    });
    println!("TpduModemToCard DER encode   {encode:8.0} ns/op");
    println!("TpduModemToCard BER decode   {decode:8.0} ns/op");
    println!("IPA frame decode + encode    {framing:8.0} ns/op");
}
