//! Malformed, hostile and merely unusual input: every case gets the
//! documented result (a typed error, or a decode with a note), never a panic.

use bytes::BytesMut;
use rspro::ipa::{Frame, FrameError, IpaCodec};
use rspro::validate::Violation;
use rspro::{BankSlot, ClientSlot, Msg, Note, Pdu, ResultCode, RsproPdu};
use tokio_util::codec::Decoder;

/// A BER element with a definite length.
fn tlv(tag: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(content);
    out
}

/// An RsproPDU (version 2, tag 0) around a raw alternative element.
fn pdu_with(alternative: &[u8]) -> Vec<u8> {
    let mut body = tlv(&[0x80], &[2]);
    body.extend(tlv(&[0x81], &[0]));
    body.extend(tlv(&[0xa2], alternative));
    tlv(&[0x30], &body)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn known(bytes: &[u8]) -> (RsproPdu, Vec<Note>) {
    let decoded = rspro::decode(bytes).expect("decodes");
    match decoded.pdu {
        Pdu::Known(pdu) => (pdu, decoded.notes),
        other => panic!("not a known PDU: {other:?}"),
    }
}

fn frames(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut codec = IpaCodec::default();
    let mut out = Vec::new();
    while let Some(f) = codec.decode_eof(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn zero_length_frames_are_errors() {
    for proto in [0xfe, 0xee] {
        let err = frames(&[0, 0, proto]).expect_err("zero length refused");
        assert!(
            matches!(err, FrameError::ZeroLength(p) if p == proto),
            "{err}"
        );
    }
}

#[test]
fn unknown_protocol_and_extension_are_errors() {
    assert!(matches!(
        frames(&[0, 1, 0x00, 0x00]),
        Err(FrameError::UnknownProto(0x00))
    ));
    assert!(matches!(
        frames(&[0, 2, 0xee, 0x05, 0x00]),
        Err(FrameError::UnknownExt(0x05))
    ));
}

#[test]
fn truncated_frames_wait_then_fail_at_eof() {
    let whole = hex::decode("0010ee07300d800102810100a205a5030a0100").expect("hex");
    for cut in 1..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut codec = IpaCodec::default();
        assert_eq!(
            codec.decode(&mut buf).expect("no error yet"),
            None,
            "cut at {cut}"
        );
        let err = codec.decode_eof(&mut buf).expect_err("truncated at EOF");
        assert!(
            matches!(err, FrameError::Truncated(n) if n == cut),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn maximum_length_frame() {
    // LEN 65535: waited for, and accepted by default.
    let mut frame = vec![0xff, 0xff, 0xee, 0x07];
    let mut buf = BytesMut::from(&frame[..]);
    assert_eq!(IpaCodec::default().decode(&mut buf).expect("waits"), None);
    frame.resize(3 + 65535, 0x30);
    let got = frames(&frame).expect("frames");
    let [Frame::Rspro(pdu)] = got.as_slice() else {
        panic!("one RSPRO frame")
    };
    assert_eq!(pdu.len(), 65534);
    // Its garbage PDU is a decode error, not a panic.
    assert!(rspro::decode(pdu).is_err());
    // A smaller limit refuses it at once, before the payload arrives.
    let mut head = BytesMut::from(&[0xffu8, 0xff, 0xee][..]);
    let err = IpaCodec::with_max_payload(1024)
        .decode(&mut head)
        .expect_err("too long");
    assert!(matches!(
        err,
        FrameError::TooLong {
            len: 65535,
            max: 1024
        }
    ));
}

#[test]
fn truncated_pdus_are_typed_errors_with_offsets() {
    let der = hex::decode(
        "3036800102810100a22ea02c30240a0102160a6669786d652d6e616d65800c72656d73696d2d62616e6b648105312e302e30020101020108",
    )
    .expect("hex");
    for cut in 0..der.len() {
        let err = rspro::decode(&der[..cut]).expect_err("truncated PDU refused");
        assert!(
            err.offset <= cut,
            "cut {cut}: offset {} beyond input",
            err.offset
        );
        assert!(!err.reason.is_empty());
    }
}

#[test]
fn trailing_bytes_after_the_pdu_are_noted() {
    let mut der = hex::decode("300d800102810100a205a5030a0100").expect("hex");
    der.extend_from_slice(&[0xde, 0xad]);
    let (pdu, notes) = known(&der);
    assert_eq!(pdu, RsproPdu::create_mapping_res(ResultCode::Ok));
    assert_eq!(notes, vec![Note::TrailingBytes(2)]);
}

#[test]
fn unknown_extension_additions_are_skipped() {
    // createMappingRes { result ok, [5] 01 (a future addition) }
    let res = tlv(&[0xa5], &cat(&[&tlv(&[0x0a], &[0]), &tlv(&[0x85], &[1])]));
    let (pdu, notes) = known(&pdu_with(&res));
    assert_eq!(pdu, RsproPdu::create_mapping_res(ResultCode::Ok));
    assert_eq!(notes, vec![Note::SkippedExtensions(1)]);

    // Nested: an addition inside ClientSlot, two at the end of the message.
    let client = tlv(
        &[0x30],
        &cat(&[
            &tlv(&[0x02], &[23]),
            &tlv(&[0x02], &[0]),
            &tlv(&[0x04], b"x"),
        ]),
    );
    let bank = tlv(&[0x30], &cat(&[&tlv(&[0x02], &[1]), &tlv(&[0x02], &[2])]));
    let req = tlv(
        &[0xa4],
        &cat(&[
            &client,
            &bank,
            &tlv(&[0x80], &[1]),
            &tlv(&[0xbf, 0x40], &tlv(&[0x02], &[7])),
        ]),
    );
    let (pdu, notes) = known(&pdu_with(&req));
    assert_eq!(
        pdu,
        RsproPdu::create_mapping_req(ClientSlot::new(23, 0), BankSlot::new(1, 2))
    );
    assert_eq!(notes, vec![Note::SkippedExtensions(3)]);
}

#[test]
fn lenient_path_takes_padded_long_form_lengths() {
    // createMappingRes with an extension addition (so rasn refuses it) whose
    // SEQUENCE length is written as 0x88 followed by eight octets.
    let mut res = vec![0xa5, 0x88, 0, 0, 0, 0, 0, 0, 0, 6];
    res.extend(cat(&[&tlv(&[0x0a], &[0]), &tlv(&[0x85], &[1])]));
    let (pdu, notes) = known(&pdu_with(&res));
    assert_eq!(pdu, RsproPdu::create_mapping_res(ResultCode::Ok));
    assert_eq!(notes, vec![Note::SkippedExtensions(1)]);
    // More than four significant length octets is refused, not misread.
    let huge = vec![0xa5, 0x85, 1, 0, 0, 0, 0];
    assert!(rspro::decode(&pdu_with(&huge)).is_err());
}

#[test]
fn unknown_message_alternatives_are_surfaced() {
    let (alt21, alt40) = (tlv(&[0xb5], &[]), tlv(&[0xbf, 0x28], &tlv(&[0x02], &[1])));
    for (raw, number) in [(alt21, 21), (alt40, 40)] {
        let decoded = rspro::decode(&pdu_with(&raw)).expect("accepted");
        assert_eq!(
            decoded.pdu,
            Pdu::UnknownMsg {
                version: 2,
                tag: 0,
                alternative: number
            }
        );
    }
}

#[test]
fn unknown_enumerated_values_are_kept() {
    let der = hex::decode("300d800102810100a205a5030a0107").expect("hex");
    let (pdu, _) = known(&der);
    let Msg::CreateMappingRes(res) = &pdu.msg else {
        panic!("createMappingRes")
    };
    assert_eq!(res.result, ResultCode::Unknown(7));
    assert_eq!(res.result.to_string(), "unknown(7)");
    assert_eq!(rspro::encode(&pdu).expect("encodes"), der);
}

#[test]
fn constraint_violations_are_reported_not_fatal() {
    let pdu = RsproPdu::create_mapping_req(ClientSlot::new(23, 5000), BankSlot::new(1, 0));
    let der = rspro::encode(&pdu).expect("encodes");
    let (back, notes) = known(&der);
    assert_eq!(back, pdu);
    assert_eq!(
        notes,
        vec![Note::Constraint(Violation {
            field: "createMappingReq.client.slotNr".into(),
            problem: "5000 outside 0..1023".into(),
        })]
    );
}

#[test]
fn any_ber_is_accepted() {
    let der = hex::decode("300d800102810100a205a5030a0100").expect("hex");
    // Indefinite lengths on the constructed elements.
    let indefinite = hex::decode("3080800102810100a280a5800a0100000000000000").expect("hex");
    // Long-form lengths where short form would do.
    let long_form = hex::decode("30810e800102810100a28105a5030a0100").expect("hex");
    for ber in [indefinite, long_form] {
        let (pdu, notes) = known(&ber);
        assert_eq!(rspro::encode(&pdu).expect("encodes"), der);
        assert!(notes.is_empty(), "{notes:?}");
    }
    // BOOLEAN TRUE as 0x01 instead of 0xff.
    let status = hex::decode(
        "3028800102810100a220ae1e30060201170201003006020101020100300c8001018101008201008301ff",
    )
    .expect("hex");
    let (pdu, _) = known(&status);
    let Msg::ClientSlotStatusInd(ind) = pdu.msg else {
        panic!("clientSlotStatusInd")
    };
    assert!(ind.slot_phys_status.reset_active);
}

#[test]
fn structural_errors_name_their_offset() {
    // createMappingRes without its mandatory result.
    let err = rspro::decode(&pdu_with(&tlv(&[0xa5], &[]))).expect_err("refused");
    assert!(err.reason.contains("mandatory result missing"), "{err}");
    // A negative bankId: beyond what our integer types hold.
    let bank = tlv(
        &[0x30],
        &cat(&[&tlv(&[0x02], &[0xff]), &tlv(&[0x02], &[0])]),
    );
    let client = tlv(&[0x30], &cat(&[&tlv(&[0x02], &[1]), &tlv(&[0x02], &[0])]));
    let bytes = pdu_with(&tlv(&[0xa4], &cat(&[&client, &bank])));
    let err = rspro::decode(&bytes).expect_err("refused");
    assert!(err.reason.contains("bankId"), "{err}");
    assert_eq!(bytes[err.offset], 0xff, "offset points at the value: {err}");
    // RsproPDU is not extensible: a fourth element is an error.
    let body = cat(&[
        &tlv(&[0x80], &[2]),
        &tlv(&[0x81], &[0]),
        &tlv(&[0xa2], &tlv(&[0xb3], &[])),
        &tlv(&[0x83], &[0]),
    ]);
    let err = rspro::decode(&tlv(&[0x30], &body)).expect_err("refused");
    assert!(err.reason.contains("4 elements"), "{err}");
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        bytes.extend_from_slice(&[0x30, 0x80]);
    }
    assert!(rspro::decode(&bytes).is_err());
    let mut definite = vec![0x02, 0x01, 0x00];
    for _ in 0..200 {
        definite = tlv(&[0xa0], &definite);
    }
    assert!(rspro::decode(&pdu_with(&definite)).is_err());
}

#[test]
fn ccm_bodies_are_parsed_defensively() {
    assert!(rspro::ipa::parse_id_get(&[0]).is_err());
    assert!(rspro::ipa::parse_id_get(&[5, 8]).is_err());
    assert!(rspro::ipa::parse_id_resp(&[0]).is_err());
    assert!(rspro::ipa::parse_id_resp(&[0, 9, 8, b'x']).is_err());
    let resp = rspro::ipa::build_id_resp(&[(8, "0/0/0")]);
    let rspro::ipa::Ccm::IdResp(body) = resp else {
        panic!("ID_RESP")
    };
    assert_eq!(hex::encode(&body), "000708302f302f3000");
}
