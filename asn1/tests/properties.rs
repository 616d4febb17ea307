//! Property tests: every valid PDU survives DER and JSON round trips, and a
//! stream of frames decodes the same however TCP splits it.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use rspro::ipa::{Ccm, Frame, IpaCodec};
use rspro::types::*;
use rspro::{Pdu, json};
use tokio_util::codec::{Decoder, Encoder};

fn id() -> impl Strategy<Value = u32> {
    0u32..=1023
}

fn name() -> impl Strategy<Value = String> {
    "[ -~]{1,32}"
}

fn client_slot() -> impl Strategy<Value = ClientSlot> {
    (id(), id()).prop_map(|(c, s)| ClientSlot::new(c, s))
}

fn bank_slot() -> impl Strategy<Value = BankSlot> {
    (id(), id()).prop_map(|(b, s)| BankSlot::new(b, s))
}

fn component_type() -> impl Strategy<Value = ComponentType> {
    (0i64..=2).prop_map(ComponentType::from_value)
}

fn result() -> impl Strategy<Value = ResultCode> {
    prop_oneof![
        prop::sample::select(ResultCode::KNOWN.to_vec()),
        any::<i32>().prop_map(|v| ResultCode::from_value(i64::from(v))),
    ]
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        component_type(),
        (name(), name(), name()),
        (option::of(name()), option::of(name()), option::of(name())),
        (option::of(name()), option::of(name())),
    )
        .prop_map(|(t, (n, sw, ver), (m, model, serial), (hv, fv))| Identity {
            hw_manufacturer: m,
            hw_model: model,
            hw_serial_nr: serial,
            hw_version: hv,
            fw_version: fv,
            ..Identity::new(t, n, sw, ver)
        })
}

fn ip_port() -> impl Strategy<Value = IpPort> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddress::Ipv4(a.to_vec().into())),
        any::<[u8; 16]>().prop_map(|a| IpAddress::Ipv6(a.to_vec().into())),
    ]
    .prop_flat_map(|ip| (Just(ip), 0u32..=65535))
    .prop_map(|(ip, port)| IpPort { ip, port })
}

fn flags() -> impl Strategy<Value = TpduFlags> {
    any::<[bool; 4]>().prop_map(|[a, b, c, d]| TpduFlags {
        tpdu_header_present: a,
        final_part: b,
        proc_byte_continue_tx: c,
        proc_byte_continue_rx: d,
    })
}

fn status() -> impl Strategy<Value = SlotPhysStatus> {
    (
        any::<bool>(),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    )
        .prop_map(|(r, v, c, p)| SlotPhysStatus {
            reset_active: r,
            vcc_present: v,
            clk_active: c,
            card_present: p,
        })
}

fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn msg() -> impl Strategy<Value = RsproPdu> {
    prop_oneof![
        (identity(), id(), id()).prop_map(|(i, b, n)| RsproPdu::connect_bank_req(i, b, n)),
        (identity(), result()).prop_map(|(i, r)| RsproPdu::connect_bank_res(i, r)),
        (identity(), option::of(client_slot()))
            .prop_map(|(i, s)| RsproPdu::connect_client_req(i, s)),
        (identity(), result()).prop_map(|(i, r)| RsproPdu::connect_client_res(i, r)),
        (client_slot(), bank_slot()).prop_map(|(c, b)| RsproPdu::create_mapping_req(c, b)),
        result().prop_map(RsproPdu::create_mapping_res),
        (client_slot(), bank_slot()).prop_map(|(c, b)| RsproPdu::remove_mapping_req(c, b)),
        result().prop_map(RsproPdu::remove_mapping_res),
        client_slot().prop_map(RsproPdu::config_client_id_req),
        result().prop_map(RsproPdu::config_client_id_res),
        (bank_slot(), ip_port()).prop_map(|(b, a)| RsproPdu::config_client_bank_req(b, a)),
        result().prop_map(RsproPdu::config_client_bank_res),
        (client_slot(), vec(any::<u8>(), 1..=55))
            .prop_map(|(c, atr)| RsproPdu::set_atr_req(c, atr)),
        result().prop_map(RsproPdu::set_atr_res),
        (client_slot(), bank_slot(), flags(), data(300)).prop_map(|(c, b, f, d)| {
            let mut pdu = RsproPdu::tpdu_modem_to_card(c, b, d);
            if let Msg::TpduModemToCard(m) = &mut pdu.msg {
                m.flags = f;
            }
            pdu
        }),
        (bank_slot(), client_slot(), flags(), data(300)).prop_map(|(b, c, f, d)| {
            let mut pdu = RsproPdu::tpdu_card_to_modem(b, c, d);
            if let Msg::TpduCardToModem(m) = &mut pdu.msg {
                m.flags = f;
            }
            pdu
        }),
        (client_slot(), bank_slot(), status())
            .prop_map(|(c, b, s)| RsproPdu::client_slot_status_ind(c, b, s)),
        (bank_slot(), client_slot(), status())
            .prop_map(|(b, c, s)| RsproPdu::bank_slot_status_ind(b, c, s)),
        (
            component_type(),
            (1i64..=3).prop_map(ErrorSeverity::from_value),
            (1i64..=3).prop_map(ErrorCode::from_value),
            option::of(bank_slot()),
            option::of(client_slot()),
            option::of("[ -~]{1,255}"),
        )
            .prop_map(|(s, sev, c, b, cl, e)| RsproPdu::error_ind(s, sev, c, b, cl, e)),
        Just(RsproPdu::reset_state_req()),
        result().prop_map(RsproPdu::reset_state_res),
    ]
}

fn pdu() -> impl Strategy<Value = RsproPdu> {
    (msg(), 0u32..=32, 0u32..=2_147_483_647).prop_map(|(p, v, t)| RsproPdu {
        version: v,
        tag: t,
        ..p
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => pdu().prop_map(|p| Frame::rspro(&p).expect("encodes")),
        1 => prop::sample::select(vec![Ccm::Ping, Ccm::Pong, Ccm::IdAck]).prop_map(Frame::Ccm),
        1 => vec(0u8..=12, 0..8).prop_map(|t| Frame::Ccm(rspro::ipa::build_id_get(&t))),
    ]
}

fn decode_all(codec: &mut IpaCodec, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(f) = codec.decode(buf).expect("valid stream") {
        out.push(f);
    }
}

proptest! {
    /// The lenient walk carries its own copy of the schema: it must take
    /// every PDU the rasn types encode and give back the same bytes,
    /// skipping nothing. A field added to one and not the other fails here.
    #[test]
    fn lenient_schema_matches_the_rasn_types(p in pdu()) {
        let der = rspro::encode(&p).expect("encodes");
        let (walked, skipped) = rspro::codec::lenient_walk(&der).expect("the walk knows it");
        prop_assert_eq!(skipped, 0);
        prop_assert_eq!(walked, der);
    }

    #[test]
    fn der_round_trip(pdu in pdu()) {
        let der = rspro::encode(&pdu).expect("encodes");
        let decoded = rspro::decode(&der).expect("decodes");
        prop_assert_eq!(decoded.pdu, Pdu::Known(pdu.clone()));
        prop_assert!(decoded.notes.is_empty(), "{:?}", decoded.notes);
        prop_assert_eq!(rspro::encode(&pdu).expect("encodes"), der);
    }

    #[test]
    fn json_round_trip(frame in frame()) {
        let value = json::frame_to_json(&frame).expect("decodes");
        let text = value.to_string();
        let back = json::frame_from_json(&serde_json::from_str(&text).expect("json")).expect("encodes");
        prop_assert_eq!(back.to_bytes().expect("bytes"), frame.to_bytes().expect("bytes"));
    }

    #[test]
    fn split_stream_decodes_the_same(frames in vec(frame(), 1..6)) {
        let mut codec = IpaCodec::default();
        let mut stream = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut stream).expect("encodes");
        }
        for split in 0..=stream.len() {
            let mut got = Vec::new();
            let mut buf = BytesMut::from(&stream[..split]);
            decode_all(&mut codec, &mut buf, &mut got);
            buf.extend_from_slice(&stream[split..]);
            decode_all(&mut codec, &mut buf, &mut got);
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &frames, "split at {}", split);
        }
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in stream.iter() {
            buf.extend_from_slice(&[*byte]);
            decode_all(&mut codec, &mut buf, &mut got);
        }
        prop_assert_eq!(&got, &frames, "byte by byte");
    }

    /// Arbitrary bytes never panic the frame or PDU decoders.
    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        let _ = rspro::decode(&bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = IpaCodec::default();
        while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
            let _ = json::frame_to_json(&frame);
        }
    }
}
