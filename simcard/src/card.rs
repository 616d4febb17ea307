//! The soft SIM: a sans-I/O APDU processor. Class A0 follows TS 51.011
//! (GSM SIM: 9Fxx, 98xx, 94xx), class 00/80 TS 102 221 / TS 31.102 (UICC and
//! USIM: 61xx, 6Cxx, 6Axx, 63Cx). Responses to case-4 commands wait for GET
//! RESPONSE, as T=0 requires; a wrong Le gets 6Cxx (UICC) or 67xx (GSM).

use crate::fcp;
use crate::fs::{self, Access, FileSystem, Kind, MF, NodeId, Structure};
use crate::milenage::{AuthResult, Milenage, c2, c3};
use crate::pin::{Pin, PinResult, pad};
use crate::profile::{CardProfile, ProfileError};

/// Historical bytes of our ATR: card service data / capabilities, then a name.
const HISTORICAL: &[u8] = b"\x80\x31\xA0\x73\xBE\x21\x13remsim";

/// The ATR: direct convention, TA1 = 96, T=0 (TD1), then T=15 with TA3 =
/// C7 (classes A/B/C, clock stop), the historical bytes and TCK. Offering
/// T=0 matters: the C bankd connects with T=0 only.
pub fn default_atr() -> Vec<u8> {
    let mut atr = vec![0x3B, 0x90 | HISTORICAL.len() as u8, 0x96, 0x80, 0x1F, 0xC7];
    atr.extend_from_slice(HISTORICAL);
    let tck = atr[1..].iter().fold(0, |acc, b| acc ^ b);
    atr.push(tck);
    atr
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// CLA A0: GSM SIM.
    Gsm,
    /// CLA 0x/8x: UICC.
    Uicc,
}

/// What a command produced.
enum Reply {
    Sw(u16),
    Data(Vec<u8>),
    /// Data that waits for GET RESPONSE (case 4 under T=0).
    Pending(Vec<u8>),
}

const OK: u16 = 0x9000;
const WRONG_LENGTH: u16 = 0x6700;
const INS_NOT_SUPPORTED: u16 = 0x6D00;
const CLA_NOT_SUPPORTED: u16 = 0x6E00;
const AUTH_MAC_FAILURE: u16 = 0x9862;

impl Class {
    fn security_not_satisfied(self) -> u16 {
        match self {
            Class::Uicc => 0x6982,
            Class::Gsm => 0x9804,
        }
    }
    fn file_not_found(self) -> u16 {
        match self {
            Class::Uicc => 0x6A82,
            Class::Gsm => 0x9404,
        }
    }
    fn out_of_range(self) -> u16 {
        match self {
            Class::Uicc => 0x6B00,
            Class::Gsm => 0x9402,
        }
    }
    fn record_not_found(self) -> u16 {
        match self {
            Class::Uicc => 0x6A83,
            Class::Gsm => 0x9402,
        }
    }
    fn no_ef_selected(self) -> u16 {
        match self {
            Class::Uicc => 0x6986,
            Class::Gsm => 0x9400,
        }
    }
    fn wrong_structure(self) -> u16 {
        match self {
            Class::Uicc => 0x6981,
            Class::Gsm => 0x9408,
        }
    }
    fn wrong_p1p2(self) -> u16 {
        match self {
            Class::Uicc => 0x6A86,
            Class::Gsm => 0x6B00,
        }
    }
    fn conditions_not_satisfied(self) -> u16 {
        match self {
            Class::Uicc => 0x6985,
            Class::Gsm => 0x9808,
        }
    }
    /// Le does not match what is available: 6Cxx tells the exact length.
    fn wrong_le(self, exact: usize) -> u16 {
        match self {
            Class::Uicc => 0x6C00 | (exact & 0xFF) as u16,
            Class::Gsm => WRONG_LENGTH,
        }
    }
    fn response_ready(self, len: usize) -> u16 {
        let len = (len & 0xFF) as u16;
        match self {
            Class::Uicc => 0x6100 | len,
            Class::Gsm => 0x9F00 | len,
        }
    }
    fn pin(self, r: PinResult) -> u16 {
        match (self, r) {
            (_, PinResult::Ok) => OK,
            (Class::Uicc, PinResult::Wrong { tries_left }) => 0x63C0 | u16::from(tries_left),
            (Class::Gsm, PinResult::Wrong { .. }) => 0x9804,
            (Class::Uicc, PinResult::Blocked) => 0x6983,
            (Class::Gsm, PinResult::Blocked) => 0x9840,
            (c, PinResult::Contradiction) => c.conditions_not_satisfied(),
        }
    }
}

/// Lc data of a case-3/4 command; a trailing Le byte is tolerated.
fn lc_data(p3: u8, body: &[u8]) -> Option<&[u8]> {
    let lc = usize::from(p3);
    (body.len() == lc || body.len() == lc + 1).then(|| &body[..lc])
}

/// Le of a case-2 command (P3 = 0 means 256).
fn le(p3: u8) -> usize {
    if p3 == 0 { 256 } else { usize::from(p3) }
}

pub struct SimCard {
    profile: CardProfile,
    fs: FileSystem,
    milenage: Milenage,
    atr: Vec<u8>,
    current_df: NodeId,
    current_ef: Option<NodeId>,
    current_record: Option<usize>,
    pin1: Pin,
    pin2: Pin,
    pending: Vec<u8>,
}

impl SimCard {
    /// A card for a valid profile.
    pub fn new(profile: CardProfile) -> Result<Self, ProfileError> {
        profile.validate()?;
        Ok(SimCard {
            fs: FileSystem::for_profile(&profile),
            milenage: Milenage::new(&profile.k, &profile.opc),
            atr: default_atr(),
            current_df: MF,
            current_ef: None,
            current_record: None,
            pin1: Pin::new(&profile.pin1, &profile.puk1, profile.pin1_enabled),
            pin2: Pin::new(&profile.pin2, &profile.puk2, true),
            pending: Vec::new(),
            profile,
        })
    }

    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    /// The profile, with `sqn` kept up to date by AUTHENTICATE.
    pub fn profile(&self) -> &CardProfile {
        &self.profile
    }

    /// Cold or warm reset: selection, PIN verification and pending data are
    /// forgotten; files, PIN values and counters are kept.
    pub fn reset(&mut self) {
        self.current_df = MF;
        self.current_ef = None;
        self.current_record = None;
        self.pin1.reset_security();
        self.pin2.reset_security();
        self.pending.clear();
    }

    /// Processes one C-APDU and returns the R-APDU (data, SW1, SW2).
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let reply = self.process(apdu);
        let (mut out, sw) = match reply {
            Reply::Sw(sw) => (Vec::new(), sw),
            Reply::Data(data) => (data, OK),
            Reply::Pending(data) => {
                let class = if apdu.first() == Some(&0xA0) {
                    Class::Gsm
                } else {
                    Class::Uicc
                };
                let sw = class.response_ready(data.len());
                self.pending = data;
                (Vec::new(), sw)
            }
        };
        out.extend_from_slice(&sw.to_be_bytes());
        out
    }

    fn process(&mut self, apdu: &[u8]) -> Reply {
        let [cla, ins, p1, p2, rest @ ..] = apdu else {
            return Reply::Sw(WRONG_LENGTH);
        };
        let (cla, ins, p1, p2) = (*cla, *ins, *p1, *p2);
        let class = match cla {
            0xA0 => Class::Gsm,
            c if c & 0xF0 == 0x00 || c & 0xF0 == 0x80 => Class::Uicc,
            _ => return Reply::Sw(CLA_NOT_SUPPORTED),
        };
        let (p3, body) = match rest {
            [] => (0, &[][..]),
            [p3, body @ ..] => (*p3, body),
        };
        if ins != 0xC0 {
            self.pending.clear();
        }
        let data = || lc_data(p3, body);
        match ins {
            0xA4 => match data() {
                Some(d) => self.select(class, p1, p2, d),
                None => Reply::Sw(WRONG_LENGTH),
            },
            0xC0 => self.get_response(class, p3),
            0xF2 => self.status(class, p2, p3),
            0xB0 => self.read_binary(class, p1, p2, p3),
            0xD6 => match data() {
                Some(d) => self.update_binary(class, p1, p2, d),
                None => Reply::Sw(WRONG_LENGTH),
            },
            0xB2 => self.read_record(class, p1, p2, p3),
            0xDC => match data() {
                Some(d) => self.update_record(class, p1, p2, d),
                None => Reply::Sw(WRONG_LENGTH),
            },
            0x20 | 0x24 | 0x26 | 0x28 | 0x2C => self.pin_command(class, ins, p2, p3, body),
            0x88 => match (class, data()) {
                (_, None) => Reply::Sw(WRONG_LENGTH),
                (Class::Gsm, Some(d)) => self.run_gsm_algorithm(d),
                (Class::Uicc, Some(d)) => self.authenticate(p1, p2, d),
            },
            // TERMINAL PROFILE: accepted, we run no proactive commands.
            0x10 => Reply::Sw(OK),
            _ => Reply::Sw(INS_NOT_SUPPORTED),
        }
    }

    fn fid_in_scope(&self, class: Class, fid: u16) -> Option<NodeId> {
        let df = self.current_df;
        if fid == fs::FID_MF {
            return Some(MF);
        }
        if fid == fs::FID_CURRENT_ADF && class == Class::Uicc {
            return self.fs.adf_of(df);
        }
        if self.fs.node(df).fid == fid {
            return Some(df);
        }
        if let Some(child) = self.fs.child(df, fid) {
            return Some(child);
        }
        let parent = self.fs.node(df).parent?;
        if self.fs.node(parent).fid == fid {
            return Some(parent);
        }
        self.fs.child(parent, fid)
    }

    fn path(&self, from: NodeId, path: &[u8]) -> Option<NodeId> {
        if !path.len().is_multiple_of(2) {
            return None;
        }
        let mut id = from;
        for (i, pair) in path.chunks(2).enumerate() {
            let fid = u16::from_be_bytes([pair[0], pair[1]]);
            if i == 0 && from == MF && fid == fs::FID_MF {
                continue;
            }
            id = self.fs.child(id, fid)?;
        }
        Some(id)
    }

    fn select(&mut self, class: Class, p1: u8, p2: u8, data: &[u8]) -> Reply {
        let fid = |d: &[u8]| match d {
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        };
        let target = match (class, p1) {
            (Class::Gsm, 0x00) if p2 == 0x00 => fid(data).and_then(|f| self.fid_in_scope(class, f)),
            (Class::Gsm, _) => return Reply::Sw(class.wrong_p1p2()),
            (Class::Uicc, 0x00) if data.is_empty() => Some(MF),
            (Class::Uicc, 0x00) => fid(data).and_then(|f| self.fid_in_scope(class, f)),
            (Class::Uicc, 0x03) => self.fs.node(self.current_df).parent,
            (Class::Uicc, 0x04) => self.fs.adf_by_aid(data),
            (Class::Uicc, 0x08) => self.path(MF, data),
            (Class::Uicc, 0x09) => self.path(self.current_df, data),
            (Class::Uicc, _) => return Reply::Sw(class.wrong_p1p2()),
        };
        let Some(id) = target else {
            return Reply::Sw(class.file_not_found());
        };
        let node = self.fs.node(id);
        if node.is_df() {
            self.current_df = id;
            self.current_ef = None;
        } else {
            self.current_df = node.parent.unwrap_or(MF);
            self.current_ef = Some(id);
        }
        self.current_record = None;
        match class {
            Class::Gsm => Reply::Pending(fcp::gsm_response(&self.fs, id, &self.pin1, &self.pin2)),
            Class::Uicc if p2 & 0x0C == 0x0C => Reply::Sw(OK),
            Class::Uicc => Reply::Pending(fcp::fcp(&self.fs, id, &self.pin1)),
        }
    }

    fn get_response(&mut self, class: Class, p3: u8) -> Reply {
        if self.pending.is_empty() {
            return Reply::Sw(match class {
                Class::Uicc => 0x6985,
                Class::Gsm => 0x6F00,
            });
        }
        let want = le(p3);
        if want > self.pending.len() {
            // Keep the data for the retry with the right length.
            return Reply::Sw(class.wrong_le(self.pending.len()));
        }
        let data = self.pending[..want].to_vec();
        self.pending.clear();
        Reply::Data(data)
    }

    fn status(&self, class: Class, p2: u8, p3: u8) -> Reply {
        let data = match class {
            Class::Gsm => fcp::gsm_response(&self.fs, self.current_df, &self.pin1, &self.pin2),
            Class::Uicc if p2 == 0x0C => return Reply::Sw(OK),
            Class::Uicc => fcp::fcp(&self.fs, self.current_df, &self.pin1),
        };
        let want = le(p3);
        match class {
            _ if want == data.len() => Reply::Data(data),
            Class::Gsm if want < data.len() => Reply::Data(data[..want].to_vec()),
            _ => Reply::Sw(class.wrong_le(data.len())),
        }
    }

    /// The selected EF, if `access` is met.
    fn ef_for(&self, class: Class, access: impl Fn(&fs::Ef) -> Access) -> Result<NodeId, u16> {
        let id = self.current_ef.ok_or(class.no_ef_selected())?;
        let Kind::Ef(ef) = &self.fs.node(id).kind else {
            return Err(class.no_ef_selected());
        };
        let allowed = match access(ef) {
            Access::Always => true,
            Access::Pin1 => self.pin1.satisfied(),
            Access::Adm => false,
        };
        if allowed {
            Ok(id)
        } else {
            Err(class.security_not_satisfied())
        }
    }

    /// The contents of an EF returned by `ef_for` (empty for anything else).
    fn ef_data(&mut self, id: NodeId) -> &mut Vec<u8> {
        match &mut self.fs.node_mut(id).kind {
            Kind::Ef(ef) => &mut ef.data,
            Kind::Df { .. } => &mut self.pending,
        }
    }

    fn transparent(
        &self,
        class: Class,
        p1: u8,
        access: impl Fn(&fs::Ef) -> Access,
    ) -> Result<NodeId, u16> {
        if p1 & 0x80 != 0 {
            // Short file identifiers are not offered by this card.
            return Err(class.wrong_p1p2());
        }
        let id = self.ef_for(class, access)?;
        match &self.fs.node(id).kind {
            Kind::Ef(ef) if ef.structure == Structure::Transparent => Ok(id),
            _ => Err(class.wrong_structure()),
        }
    }

    fn read_binary(&mut self, class: Class, p1: u8, p2: u8, p3: u8) -> Reply {
        let id = match self.transparent(class, p1, |ef| ef.read) {
            Ok(id) => id,
            Err(sw) => return Reply::Sw(sw),
        };
        let offset = usize::from(u16::from_be_bytes([p1, p2]));
        let data = &*self.ef_data(id);
        if offset >= data.len() {
            return Reply::Sw(class.out_of_range());
        }
        let available = data.len() - offset;
        let want = le(p3);
        if want > available {
            return Reply::Sw(class.wrong_le(available));
        }
        Reply::Data(data[offset..offset + want].to_vec())
    }

    fn update_binary(&mut self, class: Class, p1: u8, p2: u8, new: &[u8]) -> Reply {
        let id = match self.transparent(class, p1, |ef| ef.update) {
            Ok(id) => id,
            Err(sw) => return Reply::Sw(sw),
        };
        let offset = usize::from(u16::from_be_bytes([p1, p2]));
        let data = self.ef_data(id);
        if offset + new.len() > data.len() {
            return Reply::Sw(class.out_of_range());
        }
        data[offset..offset + new.len()].copy_from_slice(new);
        Reply::Sw(OK)
    }

    /// Resolves P1/P2 of READ/UPDATE RECORD to a 0-based record index.
    fn record_index(&self, class: Class, p1: u8, p2: u8, count: usize) -> Result<usize, u16> {
        let index = match p2 & 0x07 {
            0x04 if p1 == 0 => self.current_record,
            0x04 => Some(usize::from(p1) - 1),
            0x02 => Some(self.current_record.map_or(0, |r| r + 1)),
            0x03 => match self.current_record {
                Some(0) => None,
                Some(r) => Some(r - 1),
                None => count.checked_sub(1),
            },
            _ => return Err(class.wrong_p1p2()),
        };
        index.filter(|i| *i < count).ok_or(class.record_not_found())
    }

    fn record(
        &self,
        class: Class,
        p1: u8,
        p2: u8,
        access: impl Fn(&fs::Ef) -> Access,
    ) -> Result<(NodeId, usize, usize), u16> {
        let id = self.ef_for(class, access)?;
        let Kind::Ef(ef) = &self.fs.node(id).kind else {
            return Err(class.no_ef_selected());
        };
        let Structure::LinearFixed { record_len } = ef.structure else {
            return Err(class.wrong_structure());
        };
        let index = self.record_index(class, p1, p2, ef.record_count())?;
        Ok((id, index, usize::from(record_len)))
    }

    fn read_record(&mut self, class: Class, p1: u8, p2: u8, p3: u8) -> Reply {
        let (id, index, len) = match self.record(class, p1, p2, |ef| ef.read) {
            Ok(r) => r,
            Err(sw) => return Reply::Sw(sw),
        };
        if le(p3) != len {
            return Reply::Sw(class.wrong_le(len));
        }
        self.current_record = Some(index);
        Reply::Data(self.ef_data(id)[index * len..(index + 1) * len].to_vec())
    }

    fn update_record(&mut self, class: Class, p1: u8, p2: u8, new: &[u8]) -> Reply {
        let (id, index, len) = match self.record(class, p1, p2, |ef| ef.update) {
            Ok(r) => r,
            Err(sw) => return Reply::Sw(sw),
        };
        if new.len() != len {
            return Reply::Sw(WRONG_LENGTH);
        }
        self.current_record = Some(index);
        self.ef_data(id)[index * len..(index + 1) * len].copy_from_slice(new);
        Reply::Sw(OK)
    }

    fn pin_command(&mut self, class: Class, ins: u8, p2: u8, p3: u8, body: &[u8]) -> Reply {
        // GSM numbers CHV1/CHV2 as 1/2 (UNBLOCK CHV1 uses 0); UICC as 01/81.
        let pin = match (class, ins, p2) {
            (Class::Gsm, 0x2C, 0x00) | (_, _, 0x01) => &mut self.pin1,
            (Class::Gsm, _, 0x02) | (Class::Uicc, _, 0x81) => &mut self.pin2,
            _ => return Reply::Sw(class.wrong_p1p2()),
        };
        // UICC VERIFY without data asks for the retry counter.
        if ins == 0x20 && class == Class::Uicc && p3 == 0 && body.is_empty() {
            return Reply::Sw(if pin.satisfied() {
                OK
            } else {
                0x63C0 | u16::from(pin.tries_left())
            });
        }
        let need = if matches!(ins, 0x24 | 0x2C) { 16 } else { 8 };
        let Some(data) = lc_data(p3, body).filter(|d| d.len() == need) else {
            return Reply::Sw(WRONG_LENGTH);
        };
        let (first, second) = data.split_at(8);
        // Only CHANGE and UNBLOCK carry a second block (the new PIN).
        let new: [u8; 8] = second.try_into().unwrap_or([0xFF; 8]);
        let result = match ins {
            0x20 => pin.verify(first),
            0x24 => pin.change(first, &new),
            0x26 => pin.disable(first),
            0x28 => pin.enable(first),
            _ => pin.unblock(first, &new),
        };
        Reply::Sw(class.pin(result))
    }

    fn gsm_keys(&self, rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
        let keys = self.milenage.f2345(rand);
        (c2(&keys.res), c3(&keys.ck, &keys.ik))
    }

    /// RUN GSM ALGORITHM: SRES ‖ Kc from MILENAGE through c2/c3.
    fn run_gsm_algorithm(&mut self, data: &[u8]) -> Reply {
        let Ok(rand) = <[u8; 16]>::try_from(data) else {
            return Reply::Sw(WRONG_LENGTH);
        };
        if !self.pin1.satisfied() {
            return Reply::Sw(Class::Gsm.security_not_satisfied());
        }
        let (sres, kc) = self.gsm_keys(&rand);
        let mut out = sres.to_vec();
        out.extend_from_slice(&kc);
        Reply::Pending(out)
    }

    /// AUTHENTICATE in the USIM: 3G context (P2 81) or GSM context (P2 80).
    fn authenticate(&mut self, p1: u8, p2: u8, data: &[u8]) -> Reply {
        let class = Class::Uicc;
        if p1 != 0x00 || !matches!(p2, 0x80 | 0x81) {
            return Reply::Sw(class.wrong_p1p2());
        }
        if self.fs.adf_of(self.current_df).is_none() {
            return Reply::Sw(class.conditions_not_satisfied());
        }
        if !self.pin1.satisfied() {
            return Reply::Sw(class.security_not_satisfied());
        }
        let field = |at: usize| -> Option<[u8; 16]> {
            (data.get(at) == Some(&16))
                .then(|| data.get(at + 1..at + 17)?.try_into().ok())
                .flatten()
        };
        let Some(rand) = field(0) else {
            return Reply::Sw(0x6A80);
        };
        if p2 == 0x80 {
            let (sres, kc) = self.gsm_keys(&rand);
            let mut out = vec![0x04];
            out.extend_from_slice(&sres);
            out.push(0x08);
            out.extend_from_slice(&kc);
            return Reply::Pending(out);
        }
        let Some(autn) = field(17) else {
            return Reply::Sw(0x6A80);
        };
        match self.milenage.authenticate(&rand, &autn, self.profile.sqn) {
            AuthResult::MacFailure => Reply::Sw(AUTH_MAC_FAILURE),
            AuthResult::SyncFailure { auts } => {
                let mut out = vec![0xDC, auts.len() as u8];
                out.extend_from_slice(&auts);
                Reply::Pending(out)
            }
            AuthResult::Ok { keys, sqn } => {
                self.profile.sqn = sqn;
                let mut out = vec![0xDB, 0x08];
                out.extend_from_slice(&keys.res);
                out.push(0x10);
                out.extend_from_slice(&keys.ck);
                out.push(0x10);
                out.extend_from_slice(&keys.ik);
                out.push(0x08);
                out.extend_from_slice(&c3(&keys.ck, &keys.ik));
                Reply::Pending(out)
            }
        }
    }
}

/// Pads a PIN as an APDU carries it (for tools and tests).
pub fn pin_block(digits: &str) -> [u8; 8] {
    pad(digits)
}
