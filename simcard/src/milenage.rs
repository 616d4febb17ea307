//! MILENAGE (3GPP TS 35.206) with AES-128 as the kernel, the 2G conversion
//! functions c2/c3 (TS 33.102 §6.8.1.2), and the USIM side of AKA: checking
//! an AUTN and producing RES/CK/IK or an AUTS for resynchronisation.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};

const C1: [u8; 16] = [0; 16];
const C2: [u8; 16] = const_c(1);
const C3: [u8; 16] = const_c(2);
const C4: [u8; 16] = const_c(4);
const C5: [u8; 16] = const_c(8);
const R1: usize = 64;
const R2: usize = 0;
const R3: usize = 32;
const R4: usize = 64;
const R5: usize = 96;

const fn const_c(last: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[15] = last;
    c
}

fn xor(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Cyclic left rotation of a 128-bit value by `bits` (a multiple of 8).
fn rot(x: &[u8; 16], bits: usize) -> [u8; 16] {
    let n = bits / 8;
    std::array::from_fn(|i| x[(i + n) % 16])
}

/// A subscriber's key K with its OPc.
#[derive(Clone)]
pub struct Milenage {
    cipher: Aes128,
    opc: [u8; 16],
}

/// The outputs of f2..f5 for one RAND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkaKeys {
    pub res: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    pub ak: [u8; 6],
}

/// The USIM's verdict on an AUTN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// MAC and SQN accepted.
    Ok { keys: AkaKeys, sqn: u64 },
    /// The MAC does not match: the network is not genuine.
    MacFailure,
    /// The MAC is right but SQN is not fresh: AUTS for resynchronisation.
    SyncFailure { auts: [u8; 14] },
}

impl Milenage {
    pub fn new(k: &[u8; 16], opc: &[u8; 16]) -> Self {
        Milenage {
            cipher: Aes128::new(k.into()),
            opc: *opc,
        }
    }

    /// OPc = E_K(OP) ⊕ OP.
    pub fn opc_from_op(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
        let m = Milenage {
            cipher: Aes128::new(k.into()),
            opc: [0; 16],
        };
        xor(&m.encrypt(op), op)
    }

    fn encrypt(&self, block: &[u8; 16]) -> [u8; 16] {
        let mut b = (*block).into();
        self.cipher.encrypt_block(&mut b);
        b.into()
    }

    /// TEMP = E_K(RAND ⊕ OPc).
    fn temp(&self, rand: &[u8; 16]) -> [u8; 16] {
        self.encrypt(&xor(rand, &self.opc))
    }

    /// OUT_n = E_K(rot(TEMP ⊕ OPc, r) ⊕ c) ⊕ OPc, for n = 2..5.
    fn out(&self, temp: &[u8; 16], r: usize, c: &[u8; 16]) -> [u8; 16] {
        xor(
            &self.encrypt(&xor(&rot(&xor(temp, &self.opc), r), c)),
            &self.opc,
        )
    }

    /// OUT1, whose halves are MAC-A (f1) and MAC-S (f1*).
    fn out1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 16] {
        let temp = self.temp(rand);
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..].copy_from_slice(amf);
        let x = xor(&temp, &rot(&xor(&in1, &self.opc), R1));
        xor(&self.encrypt(&xor(&x, &C1)), &self.opc)
    }

    /// f1: the network authentication code MAC-A.
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        std::array::from_fn(|i| out[i])
    }

    /// f1*: the resynchronisation code MAC-S.
    pub fn f1_star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        std::array::from_fn(|i| out[8 + i])
    }

    /// f2 (RES), f3 (CK), f4 (IK) and f5 (AK).
    pub fn f2345(&self, rand: &[u8; 16]) -> AkaKeys {
        let temp = self.temp(rand);
        let out2 = self.out(&temp, R2, &C2);
        let ck = self.out(&temp, R3, &C3);
        let ik = self.out(&temp, R4, &C4);
        AkaKeys {
            res: std::array::from_fn(|i| out2[8 + i]),
            ck,
            ik,
            ak: std::array::from_fn(|i| out2[i]),
        }
    }

    /// f5*: the anonymity key for resynchronisation.
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let out5 = self.out(&self.temp(rand), R5, &C5);
        std::array::from_fn(|i| out5[i])
    }

    /// Checks AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A as a USIM does. SQN must be
    /// greater than `sqn_ms`, the highest one accepted so far.
    pub fn authenticate(&self, rand: &[u8; 16], autn: &[u8; 16], sqn_ms: u64) -> AuthResult {
        let keys = self.f2345(rand);
        let sqn: [u8; 6] = std::array::from_fn(|i| autn[i] ^ keys.ak[i]);
        let amf = [autn[6], autn[7]];
        if self.f1(rand, &sqn, &amf)[..] != autn[8..] {
            return AuthResult::MacFailure;
        }
        let sqn_value = sqn.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if sqn_value <= sqn_ms {
            return AuthResult::SyncFailure {
                auts: self.auts(rand, sqn_ms),
            };
        }
        AuthResult::Ok {
            keys,
            sqn: sqn_value,
        }
    }

    /// AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S, with AMF 0000 as TS 33.102 requires.
    pub fn auts(&self, rand: &[u8; 16], sqn_ms: u64) -> [u8; 14] {
        let sqn_bytes = sqn_ms.to_be_bytes();
        let sqn: [u8; 6] = std::array::from_fn(|i| sqn_bytes[2 + i]);
        let ak_star = self.f5_star(rand);
        let mac_s = self.f1_star(rand, &sqn, &[0, 0]);
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn[i] ^ ak_star[i];
        }
        auts[6..].copy_from_slice(&mac_s);
        auts
    }
}

/// c2: SRES from RES (64-bit RES: the two halves XORed).
pub fn c2(res: &[u8; 8]) -> [u8; 4] {
    std::array::from_fn(|i| res[i] ^ res[4 + i])
}

/// c3: Kc from CK and IK.
pub fn c3(ck: &[u8; 16], ik: &[u8; 16]) -> [u8; 8] {
    std::array::from_fn(|i| ck[i] ^ ck[8 + i] ^ ik[i] ^ ik[8 + i])
}
