//! ISO 7816-4 APDU case (1-4) of a T=0 TPDU header, by the rules of the
//! SIMtrace2 host library's "UICC + SIM" profile (spec simtrace2-cardem.md
//! §7.4): over T=0 only P3 is on the wire, so the case comes from CLA/INS.
//! 0 means unknown.

/// A table: INS values for cases 1-4, and INS values decided by a helper.
struct Table {
    case1: &'static [u8],
    case2: &'static [u8],
    case3: &'static [u8],
    case4: &'static [u8],
    helper: &'static [u8],
}

const GSM: Table = Table {
    case1: &[0x04, 0x44, 0xFA],
    case2: &[0xB0, 0xB2, 0xC0, 0xF2, 0x12],
    case3: &[0xD6, 0xDC, 0x20, 0x24, 0x26, 0x28, 0x2C, 0x10, 0x14],
    case4: &[0xA4, 0xA2, 0x32, 0x88, 0xC2],
    helper: &[],
};

const ETSI_80: Table = Table {
    case1: &[],
    case2: &[0x12],
    case3: &[0x10, 0x14],
    case4: &[0xC2, 0x76, 0x7A],
    helper: &[],
};

const UICC: Table = Table {
    case1: &[0x04, 0x44],
    case2: &[0xB0, 0xB2, 0x84, 0x70, 0xC0],
    case3: &[0xD6, 0xDC, 0x20, 0x24, 0x26, 0x28, 0x2C],
    case4: &[0xA4, 0xA2, 0x88, 0x89],
    helper: &[0x73, 0x75],
};

const GLOBAL_PLATFORM: Table = Table {
    case1: &[],
    case2: &[0xC0],
    case3: &[0xF0],
    case4: &[0xE4, 0xE6, 0xE8, 0xD8],
    helper: &[0xE2, 0xCA, 0xCB, 0xF2],
};

const ETSI_PROPRIETARY: Table = Table {
    case1: &[],
    case2: &[0xF2],
    case3: &[0xDB, 0xAA],
    case4: &[0x32, 0xCB, 0x78],
    helper: &[],
};

/// Some(case) when the table decides (a helper's answer is final, even 0).
fn lookup(t: &Table, h: &[u8; 5]) -> Option<u8> {
    let ins = h[1];
    for (case, list) in [(1, t.case1), (2, t.case2), (3, t.case3), (4, t.case4)] {
        if list.contains(&ins) {
            return Some(case);
        }
    }
    t.helper.contains(&ins).then(|| helper(h))
}

fn helper(h: &[u8; 5]) -> u8 {
    let [_, ins, p1, p2, p3] = *h;
    match ins {
        // MANAGE SECURE CHANNEL
        0x73 => match (p1, p1 & 0x07) {
            (0x00, _) => 2,
            (_, 1..=3) if p2 == 0x80 || p2 >> 5 == 0 => 3,
            (_, 1..=3) if matches!(p2 >> 5, 1 | 5) => 2,
            (_, 4) => 3,
            _ => 0,
        },
        // TRANSACT DATA
        0x75 => {
            if p1 & 0x04 != 0 {
                3
            } else {
                2
            }
        }
        // STORE DATA
        0xE2 => {
            if p1 & 0x01 != 0 {
                4
            } else {
                3
            }
        }
        // GP GET STATUS or ETSI STATUS
        0xF2 => {
            if p1 & 0xF0 != 0 {
                4
            } else {
                2
            }
        }
        // GET DATA
        0xCA | 0xCB => {
            if p3 == 0 {
                2
            } else {
                4
            }
        }
        _ => 0,
    }
}

/// The case of a TPDU header, 0 when unknown.
pub fn classify(h: &[u8; 5]) -> u8 {
    let cla = h[0];
    let hi = cla & 0xF0;
    let rules: [(bool, &Table); 6] = [
        (cla == 0xA0, &GSM),
        (cla == 0x80, &ETSI_80),
        (matches!(hi, 0x00 | 0x40 | 0x60), &UICC),
        (hi == 0x80, &GLOBAL_PLATFORM),
        (matches!(hi, 0x80 | 0xC0 | 0xE0), &ETSI_PROPRIETARY),
        (matches!(hi, 0x80 | 0xC0 | 0xE0), &GLOBAL_PLATFORM),
    ];
    for (applies, table) in rules {
        // A table only yields 0 through a helper, whose answer is final.
        if applies && let Some(case) = lookup(table, h) {
            return case;
        }
    }
    if cla == 0x00 {
        return match h[1] {
            0xA4 => 4,
            0xCA | 0xC0 => 2,
            _ => 0,
        };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_of_the_spec() {
        let cases = [
            ([0xA0, 0xA4, 0x00, 0x00, 0x02], 4),
            ([0x00, 0xB0, 0x00, 0x00, 0x10], 2),
            ([0x80, 0xF2, 0x00, 0x0C, 0x00], 2),
            ([0x80, 0xCA, 0x9F, 0x7F, 0x00], 2),
            ([0x00, 0xCA, 0x01, 0x00, 0x00], 2),
            ([0x00, 0x12, 0x00, 0x00, 0x00], 0),
            ([0xA0, 0xC0, 0x00, 0x00, 0x17], 2),
            ([0xA0, 0xD6, 0x00, 0x00, 0x04], 3),
            ([0x00, 0x88, 0x00, 0x81, 0x22], 4),
            ([0x80, 0xE2, 0x01, 0x00, 0x10], 4),
            ([0x00, 0x73, 0x01, 0x80, 0x00], 3),
            ([0x00, 0x73, 0x07, 0x80, 0x00], 0),
        ];
        for (h, case) in cases {
            assert_eq!(classify(&h), case, "{h:02x?}");
        }
    }
}
