//! What SELECT and STATUS return: the FCP template of TS 102 221 §11.1.1.3
//! (UICC, class 00) and the GSM response of TS 51.011 §9.2.1 (class A0).

use crate::fs::{Access, FileSystem, Kind, NodeId, Structure, USIM_AID};
use crate::pin::Pin;

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, value.len() as u8];
    out.extend_from_slice(value);
    out
}

/// The FCP template (tag 62) of a file.
pub fn fcp(fs: &FileSystem, id: NodeId, pin1: &Pin) -> Vec<u8> {
    let node = fs.node(id);
    let mut body = Vec::new();
    match &node.kind {
        Kind::Df { aid } => {
            body.extend(tlv(0x82, &[0x78, 0x21]));
            body.extend(tlv(0x83, &node.fid.to_be_bytes()));
            if let Some(aid) = aid {
                body.extend(tlv(0x84, aid));
            }
            body.extend(tlv(0x8A, &[0x05]));
            body.extend(tlv(0x8B, &[0x2F, 0x06, 0x01]));
            // PIN status template: PS_DO (b8 = PIN1 enabled, b7 = PIN2), key references.
            let ps_do = if pin1.enabled() { 0xC0 } else { 0x40 };
            let mut pins = tlv(0x90, &[ps_do]);
            pins.extend(tlv(0x83, &[0x01]));
            pins.extend(tlv(0x83, &[0x81]));
            body.extend(tlv(0xC6, &pins));
        }
        Kind::Ef(ef) => {
            match ef.structure {
                Structure::Transparent => body.extend(tlv(0x82, &[0x41, 0x21])),
                Structure::LinearFixed { record_len } => body.extend(tlv(
                    0x82,
                    &[0x42, 0x21, 0x00, record_len, ef.record_count() as u8],
                )),
            }
            body.extend(tlv(0x83, &node.fid.to_be_bytes()));
            body.extend(tlv(0x8A, &[0x05]));
            body.extend(tlv(0x8B, &[0x6F, 0x06, 0x01]));
            body.extend(tlv(0x80, &(ef.data.len() as u16).to_be_bytes()));
        }
    }
    tlv(0x62, &body)
}

/// CHV status byte: initialised, and the tries left.
fn chv_status(tries: u8) -> u8 {
    0x80 | (tries & 0x0F)
}

/// The GSM response to SELECT / STATUS of class A0.
pub fn gsm_response(fs: &FileSystem, id: NodeId, pin1: &Pin, pin2: &Pin) -> Vec<u8> {
    let node = fs.node(id);
    let fid = if matches!(node.kind, Kind::Df { aid: Some(ref a) } if a[..] == USIM_AID) {
        crate::fs::FID_ADF_USIM
    } else {
        node.fid
    };
    match &node.kind {
        Kind::Df { .. } => {
            let (dfs, efs) = fs.child_counts(id);
            let kind = if node.parent.is_none() { 0x01 } else { 0x02 };
            // Clock stop allowed; b8 set when CHV1 is disabled.
            let characteristics = 0x11 | if pin1.enabled() { 0x00 } else { 0x80 };
            let mut out = vec![0x00, 0x00, 0x00, 0x00];
            out.extend_from_slice(&fid.to_be_bytes());
            out.push(kind);
            out.extend_from_slice(&[0; 5]);
            out.push(9);
            out.extend_from_slice(&[
                characteristics,
                dfs as u8,
                efs as u8,
                4,
                0x00,
                chv_status(pin1.tries_left()),
                chv_status(pin1.puk_tries_left()),
                chv_status(pin2.tries_left()),
                chv_status(pin2.puk_tries_left()),
            ]);
            out
        }
        Kind::Ef(ef) => {
            let mut out = vec![0x00, 0x00];
            out.extend_from_slice(&(ef.data.len() as u16).to_be_bytes());
            out.extend_from_slice(&fid.to_be_bytes());
            out.extend_from_slice(&[
                0x04,
                0x00,
                (ef.read.gsm_nibble() << 4) | ef.update.gsm_nibble(),
                0xFF,
                (Access::Adm.gsm_nibble() << 4) | Access::Adm.gsm_nibble(),
                0x01,
                0x02,
            ]);
            match ef.structure {
                Structure::Transparent => out.extend_from_slice(&[0x00, 0x00]),
                Structure::LinearFixed { record_len } => out.extend_from_slice(&[0x01, record_len]),
            }
            out
        }
    }
}
