//! The card's ISO 7816-4 file tree (MF, DF_TELECOM, DF_GSM, ADF_USIM and
//! their EFs), built from a profile, with the encodings of TS 51.011 and
//! TS 31.102 for the identity files.

use crate::profile::CardProfile;

pub const FID_MF: u16 = 0x3F00;
pub const FID_ICCID: u16 = 0x2FE2;
pub const FID_DIR: u16 = 0x2F00;
pub const FID_TELECOM: u16 = 0x7F10;
pub const FID_GSM: u16 = 0x7F20;
pub const FID_ADN: u16 = 0x6F3A;
pub const FID_SMS: u16 = 0x6F3C;
pub const FID_IMSI: u16 = 0x6F07;
pub const FID_AD: u16 = 0x6FAD;
pub const FID_SPN: u16 = 0x6F46;
pub const FID_UST: u16 = 0x6F38;
pub const FID_ACC: u16 = 0x6F78;
pub const FID_LOCI: u16 = 0x6F7E;
/// The FID by which the current ADF can always be selected.
pub const FID_CURRENT_ADF: u16 = 0x7FFF;
/// FID given to ADF_USIM in its FCP.
pub const FID_ADF_USIM: u16 = 0x7FF0;

/// The USIM application identifier (RID A000000087, application 1002).
pub const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09, 0x00, 0x00,
];

/// Who may read or update a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Always,
    Pin1,
    /// Administrative: never from this card's interface.
    Adm,
}

impl Access {
    /// The TS 51.011 access condition nibble.
    pub fn gsm_nibble(self) -> u8 {
        match self {
            Access::Always => 0x0,
            Access::Pin1 => 0x1,
            Access::Adm => 0xA,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    Transparent,
    LinearFixed { record_len: u8 },
}

#[derive(Debug, Clone)]
pub struct Ef {
    pub structure: Structure,
    pub data: Vec<u8>,
    pub read: Access,
    pub update: Access,
}

impl Ef {
    pub fn record_count(&self) -> usize {
        match self.structure {
            Structure::Transparent => 0,
            Structure::LinearFixed { record_len } => self.data.len() / usize::from(record_len),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// MF, DF or ADF (with its AID).
    Df {
        aid: Option<Vec<u8>>,
    },
    Ef(Ef),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub fid: u16,
    pub parent: Option<NodeId>,
    pub children: Vec<NodeId>,
    pub kind: Kind,
}

impl Node {
    pub fn is_df(&self) -> bool {
        matches!(self.kind, Kind::Df { .. })
    }
}

pub type NodeId = usize;

/// The tree, as an arena; node 0 is the MF.
#[derive(Debug, Clone)]
pub struct FileSystem {
    nodes: Vec<Node>,
}

pub const MF: NodeId = 0;

/// BCD with swapped nibbles, padded with F (EF_ICCID, TS 102 221 §13.2).
pub fn swapped_bcd(digits: &str, len: usize) -> Vec<u8> {
    let mut nibbles: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    nibbles.resize(len * 2, 0xF);
    nibbles.chunks(2).map(|p| p[0] | (p[1] << 4)).collect()
}

/// EF_IMSI: length, then the digits after a parity/type nibble (TS 31.102 §4.2.2).
pub fn encode_imsi(imsi: &str) -> [u8; 9] {
    let odd = imsi.len() % 2 == 1;
    let mut nibbles = vec![if odd { 0x9 } else { 0x1 }];
    nibbles.extend(imsi.bytes().map(|b| b - b'0'));
    let used = nibbles.len().div_ceil(2);
    nibbles.resize(16, 0xF);
    let mut out = [0xFFu8; 9];
    out[0] = used as u8;
    for (i, p) in nibbles.chunks(2).enumerate() {
        out[1 + i] = p[0] | (p[1] << 4);
    }
    out
}

/// EF_SPN: display condition, then the name padded with FF to 16 bytes.
pub fn encode_spn(spn: &str) -> Vec<u8> {
    let mut out = vec![0x01];
    out.extend_from_slice(spn.as_bytes());
    out.resize(17, 0xFF);
    out
}

/// EF_DIR record for the USIM application.
fn dir_record() -> Vec<u8> {
    let mut body = vec![0x4F, USIM_AID.len() as u8];
    body.extend_from_slice(&USIM_AID);
    body.extend_from_slice(&[0x50, 0x04]);
    body.extend_from_slice(b"USIM");
    let mut rec = vec![0x61, body.len() as u8];
    rec.extend(body);
    rec.resize(0x20, 0xFF);
    rec
}

/// EF_ACC: the access class bit of the IMSI's last digit.
fn access_class(imsi: &str) -> Vec<u8> {
    let last = imsi.bytes().last().map_or(0, |b| b - b'0');
    (1u16 << last).to_be_bytes().to_vec()
}

fn records(count: usize, len: u8, fill: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            let mut r = fill(i);
            r.resize(usize::from(len), 0xFF);
            r
        })
        .collect()
}

fn ef(structure: Structure, data: Vec<u8>, read: Access, update: Access) -> Kind {
    Kind::Ef(Ef {
        structure,
        data,
        read,
        update,
    })
}

impl FileSystem {
    /// The files of a card with this profile.
    pub fn for_profile(p: &CardProfile) -> Self {
        let mut fs = FileSystem {
            nodes: vec![Node {
                fid: FID_MF,
                parent: None,
                children: Vec::new(),
                kind: Kind::Df { aid: None },
            }],
        };
        use Access::*;
        use Structure::*;
        let imsi = encode_imsi(&p.imsi).to_vec();
        let ad = vec![0x00, 0x00, 0x00, p.mnc_len];
        let spn = encode_spn(&p.spn);
        let loci = vec![
            0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xF1, 0x10, 0xFF, 0xFE, 0xFF, 0x01,
        ];
        let adn = LinearFixed { record_len: 0x20 };
        let sms = LinearFixed { record_len: 176 };

        fs.add(
            MF,
            FID_ICCID,
            ef(Transparent, swapped_bcd(&p.iccid, 10), Always, Adm),
        );
        fs.add(
            MF,
            FID_DIR,
            ef(LinearFixed { record_len: 0x20 }, dir_record(), Always, Adm),
        );

        let telecom = fs.add(MF, FID_TELECOM, Kind::Df { aid: None });
        fs.add(
            telecom,
            FID_ADN,
            ef(adn, records(10, 0x20, |_| vec![]), Pin1, Pin1),
        );
        fs.add(
            telecom,
            FID_SMS,
            ef(sms, records(10, 176, |_| vec![0x00]), Pin1, Pin1),
        );

        let gsm = fs.add(MF, FID_GSM, Kind::Df { aid: None });
        fs.add(gsm, FID_IMSI, ef(Transparent, imsi.clone(), Pin1, Adm));
        fs.add(gsm, FID_AD, ef(Transparent, ad.clone(), Always, Adm));
        fs.add(gsm, FID_SPN, ef(Transparent, spn.clone(), Always, Adm));
        fs.add(
            gsm,
            FID_ACC,
            ef(Transparent, access_class(&p.imsi), Pin1, Adm),
        );
        fs.add(gsm, FID_LOCI, ef(Transparent, loci.clone(), Pin1, Pin1));

        let usim = fs.add(
            MF,
            FID_ADF_USIM,
            Kind::Df {
                aid: Some(USIM_AID.to_vec()),
            },
        );
        fs.add(usim, FID_IMSI, ef(Transparent, imsi, Pin1, Adm));
        fs.add(usim, FID_AD, ef(Transparent, ad, Always, Adm));
        fs.add(usim, FID_SPN, ef(Transparent, spn, Always, Adm));
        // Services: local phone book, SMS, ... (a modest, plausible table).
        fs.add(
            usim,
            FID_UST,
            ef(
                Transparent,
                vec![0x0A, 0x2E, 0x00, 0x0C, 0x00, 0x00],
                Pin1,
                Adm,
            ),
        );
        fs.add(
            usim,
            FID_ACC,
            ef(Transparent, access_class(&p.imsi), Pin1, Adm),
        );
        fs.add(usim, FID_LOCI, ef(Transparent, loci, Pin1, Pin1));
        fs.add(
            usim,
            FID_SMS,
            ef(sms, records(10, 176, |_| vec![0x00]), Pin1, Pin1),
        );
        fs
    }

    fn add(&mut self, parent: NodeId, fid: u16, kind: Kind) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            fid,
            parent: Some(parent),
            children: Vec::new(),
            kind,
        });
        self.nodes[parent].children.push(id);
        id
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    /// A direct child of `df` with this FID.
    pub fn child(&self, df: NodeId, fid: u16) -> Option<NodeId> {
        self.nodes[df]
            .children
            .iter()
            .copied()
            .find(|c| self.nodes[*c].fid == fid)
    }

    /// The ADF whose AID starts with `prefix` (at least the 5-byte RID).
    pub fn adf_by_aid(&self, prefix: &[u8]) -> Option<NodeId> {
        if prefix.len() < 5 {
            return None;
        }
        self.nodes.iter().position(|n| match &n.kind {
            Kind::Df { aid: Some(aid) } => aid.starts_with(prefix),
            _ => false,
        })
    }

    /// The ADF this node lives in, if any.
    pub fn adf_of(&self, mut id: NodeId) -> Option<NodeId> {
        loop {
            if let Kind::Df { aid: Some(_) } = self.nodes[id].kind {
                return Some(id);
            }
            id = self.nodes[id].parent?;
        }
    }

    /// Counts of DF and EF children.
    pub fn child_counts(&self, df: NodeId) -> (usize, usize) {
        let dfs = self.nodes[df]
            .children
            .iter()
            .filter(|c| self.nodes[**c].is_df())
            .count();
        (dfs, self.nodes[df].children.len() - dfs)
    }
}
