//! The lenient BER path: when rasn refuses a PDU, walk its TLV tree against a
//! schema of `RSPRO.asn`, drop unknown extension additions (as asn1c does),
//! spot an unknown RsproPDUchoice alternative, and locate real errors by byte
//! offset. The result is a clean encoding for rasn to decode again.

/// Class bits of a BER identifier octet.
const UNIVERSAL: u8 = 0;
const CONTEXT: u8 = 2;

/// How deep a PDU may nest; RSPRO itself needs 6.
const MAX_DEPTH: usize = 24;

/// A structural error, with the offset of the offending byte in the PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkError {
    pub offset: usize,
    pub reason: String,
}

fn err<T>(offset: usize, reason: impl Into<String>) -> Result<T, WalkError> {
    Err(WalkError {
        offset,
        reason: reason.into(),
    })
}

/// One BER element, borrowed from the input.
struct Tlv<'a> {
    offset: usize,
    class: u8,
    constructed: bool,
    number: u32,
    ident: &'a [u8],
    /// Primitive contents, or nothing for a constructed element.
    content: &'a [u8],
    content_offset: usize,
    children: Vec<Tlv<'a>>,
    /// The whole element as it was received.
    raw: &'a [u8],
}

/// Parses one element at `pos`; returns it and the position after it.
fn parse<'a>(buf: &'a [u8], pos: usize, depth: usize) -> Result<(Tlv<'a>, usize), WalkError> {
    if depth > MAX_DEPTH {
        return err(pos, "nested too deeply");
    }
    let start = pos;
    let Some(&first) = buf.get(pos) else {
        return err(pos, "truncated: identifier missing");
    };
    let class = first >> 6;
    let constructed = first & 0x20 != 0;
    let mut number = u32::from(first & 0x1f);
    let mut p = pos + 1;
    if number == 0x1f {
        number = 0;
        loop {
            let Some(&b) = buf.get(p) else {
                return err(p, "truncated: tag number");
            };
            if number > (u32::MAX >> 7) {
                return err(p, "tag number too large");
            }
            number = (number << 7) | u32::from(b & 0x7f);
            p += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let ident = &buf[start..p];
    let Some(&lb) = buf.get(p) else {
        return err(p, "truncated: length missing");
    };
    let len_offset = p;
    p += 1;
    let definite_len = match lb {
        0x00..=0x7f => Some(usize::from(lb)),
        0x80 => None,
        0x81..=0xfe => {
            let n = usize::from(lb & 0x7f);
            let Some(bytes) = buf.get(p..p + n) else {
                return err(p, "truncated: long-form length");
            };
            p += n;
            // Leading zero octets are allowed in BER; more than 4
            // significant ones cannot describe anything we would accept.
            let significant = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
            if significant.len() > 4 {
                return err(len_offset, "length does not fit 32 bits");
            }
            Some(
                significant
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            )
        }
        _ => return err(len_offset, "reserved length octet 0xff"),
    };
    let mut tlv = Tlv {
        offset: start,
        class,
        constructed,
        number,
        ident,
        content: &[],
        content_offset: p,
        children: Vec::new(),
        raw: &[],
    };
    let end = match definite_len {
        Some(len) => {
            let Some(end) = p.checked_add(len).filter(|e| *e <= buf.len()) else {
                return err(
                    len_offset,
                    format!(
                        "length {len} runs past the end ({} bytes left)",
                        buf.len() - p
                    ),
                );
            };
            if constructed {
                let mut q = p;
                while q < end {
                    let (child, next) = parse(&buf[..end], q, depth + 1)?;
                    tlv.children.push(child);
                    q = next;
                }
            } else {
                tlv.content = &buf[p..end];
            }
            end
        }
        None => {
            if !constructed {
                return err(len_offset, "indefinite length on a primitive element");
            }
            let mut q = p;
            loop {
                match buf.get(q..q + 2) {
                    Some([0, 0]) => break q + 2,
                    Some(_) => {
                        let (child, next) = parse(buf, q, depth + 1)?;
                        tlv.children.push(child);
                        q = next;
                    }
                    None => return err(q, "truncated: end-of-contents missing"),
                }
            }
        }
    };
    tlv.raw = &buf[start..end];
    Ok((tlv, end))
}

/// What a leaf must look like for rasn to take it.
#[derive(Clone, Copy)]
enum Leaf {
    /// INTEGER that must fit u32.
    U32,
    /// ENUMERATED, any value that fits i64.
    Enum,
    Bool,
    Octets,
    /// IA5String, which we hold as UTF-8.
    Text,
}

#[derive(Clone, Copy)]
enum Shape {
    Leaf(Leaf),
    Seq(&'static Seq),
    /// An untagged CHOICE; unknown alternatives are errors (IpAddress is not extensible).
    Choice(&'static [Elem]),
}

struct Seq {
    extensible: bool,
    elems: &'static [Elem],
}

struct Elem {
    name: &'static str,
    class: u8,
    number: u32,
    optional: bool,
    shape: Shape,
}

const fn e(name: &'static str, class: u8, number: u32, shape: Shape) -> Elem {
    Elem {
        name,
        class,
        number,
        optional: false,
        shape,
    }
}

const fn opt(name: &'static str, class: u8, number: u32, shape: Shape) -> Elem {
    Elem {
        name,
        class,
        number,
        optional: true,
        shape,
    }
}

const U32: Shape = Shape::Leaf(Leaf::U32);
const ENUM: Shape = Shape::Leaf(Leaf::Enum);
const BOOL: Shape = Shape::Leaf(Leaf::Bool);
const OCTETS: Shape = Shape::Leaf(Leaf::Octets);
const TEXT: Shape = Shape::Leaf(Leaf::Text);
const T_INT: u32 = 2;
const T_BOOL: u32 = 1;
const T_OCTETS: u32 = 4;
const T_ENUM: u32 = 10;
const T_SEQ: u32 = 16;
const T_IA5: u32 = 22;

const fn seq(elems: &'static [Elem]) -> Seq {
    Seq {
        extensible: true,
        elems,
    }
}

static CLIENT_SLOT: Seq = seq(&[
    e("clientId", UNIVERSAL, T_INT, U32),
    e("slotNr", UNIVERSAL, T_INT, U32),
]);
static BANK_SLOT: Seq = seq(&[
    e("bankId", UNIVERSAL, T_INT, U32),
    e("slotNr", UNIVERSAL, T_INT, U32),
]);
static IDENTITY: Seq = seq(&[
    e("type", UNIVERSAL, T_ENUM, ENUM),
    e("name", UNIVERSAL, T_IA5, TEXT),
    e("software", CONTEXT, 0, TEXT),
    e("swVersion", CONTEXT, 1, TEXT),
    opt("hwManufacturer", CONTEXT, 2, TEXT),
    opt("hwModel", CONTEXT, 3, TEXT),
    opt("hwSerialNr", CONTEXT, 4, TEXT),
    opt("hwVersion", CONTEXT, 5, TEXT),
    opt("fwVersion", CONTEXT, 6, TEXT),
]);
static IP_ADDRESS: [Elem; 2] = [e("ipv4", CONTEXT, 0, OCTETS), e("ipv6", CONTEXT, 1, OCTETS)];
static IP_PORT: Seq = Seq {
    extensible: false,
    elems: &[
        // Untagged CHOICE: matched through its alternatives.
        e("ip", UNIVERSAL, 0, Shape::Choice(&IP_ADDRESS)),
        e("port", UNIVERSAL, T_INT, U32),
    ],
};
static TPDU_FLAGS: Seq = seq(&[
    e("tpduHeaderPresent", UNIVERSAL, T_BOOL, BOOL),
    e("finalPart", UNIVERSAL, T_BOOL, BOOL),
    e("procByteContinueTx", UNIVERSAL, T_BOOL, BOOL),
    e("procByteContinueRx", UNIVERSAL, T_BOOL, BOOL),
]);
static SLOT_PHYS_STATUS: Seq = seq(&[
    e("resetActive", CONTEXT, 0, BOOL),
    opt("vccPresent", CONTEXT, 1, BOOL),
    opt("clkActive", CONTEXT, 2, BOOL),
    opt("cardPresent", CONTEXT, 3, BOOL),
]);

const fn s(shape: &'static Seq) -> Shape {
    Shape::Seq(shape)
}

const IDENTITY_ELEM: Elem = e("identity", UNIVERSAL, T_SEQ, s(&IDENTITY));
static RESULT_ONLY: Seq = seq(&[e("result", UNIVERSAL, T_ENUM, ENUM)]);
static CONNECT_BANK_REQ: Seq = seq(&[
    IDENTITY_ELEM,
    e("bankId", UNIVERSAL, T_INT, U32),
    e("numberOfSlots", UNIVERSAL, T_INT, U32),
]);
static IDENTITY_RESULT: Seq = seq(&[IDENTITY_ELEM, e("result", UNIVERSAL, T_ENUM, ENUM)]);
static CONNECT_CLIENT_REQ: Seq = seq(&[
    IDENTITY_ELEM,
    opt("clientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
]);
static MAPPING_REQ: Seq = seq(&[
    e("client", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("bank", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
]);
static CONFIG_CLIENT_ID_REQ: Seq = seq(&[e("clientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT))]);
static CONFIG_CLIENT_BANK_REQ: Seq = seq(&[
    e("bankSlot", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
    e("bankd", UNIVERSAL, T_SEQ, s(&IP_PORT)),
]);
static SET_ATR_REQ: Seq = seq(&[
    e("slot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("atr", UNIVERSAL, T_OCTETS, OCTETS),
]);
static TPDU_M2C: Seq = seq(&[
    e("fromClientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("toBankSlot", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
    e("flags", UNIVERSAL, T_SEQ, s(&TPDU_FLAGS)),
    e("data", UNIVERSAL, T_OCTETS, OCTETS),
]);
static TPDU_C2M: Seq = seq(&[
    e("fromBankSlot", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
    e("toClientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("flags", UNIVERSAL, T_SEQ, s(&TPDU_FLAGS)),
    e("data", UNIVERSAL, T_OCTETS, OCTETS),
]);
static CLIENT_STATUS: Seq = seq(&[
    e("fromClientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("toBankSlot", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
    e("slotPhysStatus", UNIVERSAL, T_SEQ, s(&SLOT_PHYS_STATUS)),
]);
static BANK_STATUS: Seq = seq(&[
    e("fromBankSlot", UNIVERSAL, T_SEQ, s(&BANK_SLOT)),
    e("toClientSlot", UNIVERSAL, T_SEQ, s(&CLIENT_SLOT)),
    e("slotPhysStatus", UNIVERSAL, T_SEQ, s(&SLOT_PHYS_STATUS)),
]);
static ERROR_IND: Seq = seq(&[
    e("sender", UNIVERSAL, T_ENUM, ENUM),
    e("severity", UNIVERSAL, T_ENUM, ENUM),
    e("code", UNIVERSAL, T_ENUM, ENUM),
    opt("bankSlot", CONTEXT, 0, s(&BANK_SLOT)),
    opt("clientSlot", CONTEXT, 1, s(&CLIENT_SLOT)),
    opt("errorString", CONTEXT, 2, TEXT),
]);
static EMPTY: Seq = seq(&[]);

/// RsproPDUchoice alternatives, indexed by their context tag number.
static MSG_ALTERNATIVES: [&Seq; 21] = [
    &CONNECT_BANK_REQ,       // 0 connectBankReq
    &IDENTITY_RESULT,        // 1 connectBankRes
    &CONNECT_CLIENT_REQ,     // 2 connectClientReq
    &IDENTITY_RESULT,        // 3 connectClientRes
    &MAPPING_REQ,            // 4 createMappingReq
    &RESULT_ONLY,            // 5 createMappingRes
    &MAPPING_REQ,            // 6 removeMappingReq
    &RESULT_ONLY,            // 7 removeMappingRes
    &CONFIG_CLIENT_ID_REQ,   // 8 configClientIdReq
    &RESULT_ONLY,            // 9 configClientIdRes
    &SET_ATR_REQ,            // 10 setAtrReq
    &RESULT_ONLY,            // 11 setAtrRes
    &TPDU_M2C,               // 12 tpduModemToCard
    &TPDU_C2M,               // 13 tpduCardToModem
    &CLIENT_STATUS,          // 14 clientSlotStatusInd
    &BANK_STATUS,            // 15 bankSlotStatusInd
    &ERROR_IND,              // 16 errorInd
    &CONFIG_CLIENT_BANK_REQ, // 17 configClientBankReq
    &RESULT_ONLY,            // 18 configClientBankRes
    &EMPTY,                  // 19 resetStateReq
    &RESULT_ONLY,            // 20 resetStateRes
];

/// What the walk made of a PDU.
pub(crate) enum Walked {
    /// A clean re-encoding for rasn, and how many extension additions were dropped.
    Clean {
        bytes: Vec<u8>,
        skipped: usize,
        trailing: usize,
    },
    /// A message alternative this module does not know.
    UnknownAlternative {
        version: u32,
        tag: u32,
        alternative: u32,
        trailing: usize,
    },
}

/// Walks an RsproPDU (BER) leniently.
pub(crate) fn walk_pdu(buf: &[u8]) -> Result<Walked, WalkError> {
    let (top, end) = parse(buf, 0, 0)?;
    let trailing = buf.len() - end;
    expect_tag(&top, UNIVERSAL, T_SEQ, "RsproPDU")?;
    expect_constructed(&top, "RsproPDU")?;
    let [version, tag, msg] = top.children.as_slice() else {
        return err(
            top.content_offset,
            format!(
                "RsproPDU has {} elements, expected version, tag and msg",
                top.children.len()
            ),
        );
    };
    expect_tag(version, CONTEXT, 0, "version")?;
    expect_tag(tag, CONTEXT, 1, "tag")?;
    expect_tag(msg, CONTEXT, 2, "msg")?;
    check_leaf(version, Leaf::U32, "version")?;
    check_leaf(tag, Leaf::U32, "tag")?;
    expect_constructed(msg, "msg")?;
    let [alt] = msg.children.as_slice() else {
        return err(
            msg.content_offset,
            format!(
                "msg holds {} elements, expected exactly one alternative",
                msg.children.len()
            ),
        );
    };
    let known = (alt.class == CONTEXT)
        .then(|| MSG_ALTERNATIVES.get(alt.number as usize))
        .flatten();
    let Some(alt_shape) = known else {
        return Ok(Walked::UnknownAlternative {
            version: unsigned(version.content),
            tag: unsigned(tag.content),
            alternative: alt.number,
            trailing,
        });
    };
    let mut skipped = 0;
    let mut inner = Vec::with_capacity(alt.raw.len());
    write_seq(&mut inner, alt, alt_shape, "msg", &mut skipped)?;
    let mut msg_bytes = Vec::with_capacity(inner.len() + 4);
    write_constructed(&mut msg_bytes, msg.ident, &inner);
    let mut body = Vec::with_capacity(msg_bytes.len() + 16);
    body.extend_from_slice(version.raw);
    body.extend_from_slice(tag.raw);
    body.extend_from_slice(&msg_bytes);
    let mut bytes = Vec::with_capacity(body.len() + 4);
    write_constructed(&mut bytes, top.ident, &body);
    Ok(Walked::Clean {
        bytes,
        skipped,
        trailing,
    })
}

/// The value of a small unsigned INTEGER already checked by `check_leaf`.
fn unsigned(content: &[u8]) -> u32 {
    content
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        .try_into()
        .unwrap_or(u32::MAX)
}

fn expect_tag(tlv: &Tlv, class: u8, number: u32, what: &str) -> Result<(), WalkError> {
    if tlv.class == class && tlv.number == number {
        Ok(())
    } else {
        err(
            tlv.offset,
            format!(
                "{what}: unexpected tag 0x{} (class {}, number {})",
                hex::encode(tlv.ident),
                tlv.class,
                tlv.number
            ),
        )
    }
}

fn expect_constructed(tlv: &Tlv, what: &str) -> Result<(), WalkError> {
    if tlv.constructed {
        Ok(())
    } else {
        err(tlv.offset, format!("{what}: must be constructed"))
    }
}

fn check_leaf(tlv: &Tlv, leaf: Leaf, what: &str) -> Result<(), WalkError> {
    // Constructed (segmented) strings are valid BER: rasn checks them.
    if tlv.constructed && !matches!(leaf, Leaf::Octets | Leaf::Text) {
        return err(tlv.offset, format!("{what}: must be primitive"));
    }
    let c = tlv.content;
    let at = tlv.content_offset;
    match leaf {
        Leaf::U32 => {
            if c.is_empty() {
                return err(at, format!("{what}: empty INTEGER"));
            }
            if c[0] & 0x80 != 0 {
                return err(at, format!("{what}: negative INTEGER not supported"));
            }
            let significant = c.iter().skip_while(|b| **b == 0).count();
            if significant > 4 {
                return err(at, format!("{what}: INTEGER larger than 32 bits"));
            }
        }
        Leaf::Enum => {
            if c.is_empty() || c.len() > 8 {
                return err(
                    at,
                    format!("{what}: ENUMERATED of {} octets not supported", c.len()),
                );
            }
        }
        Leaf::Bool => {
            if c.len() != 1 {
                return err(
                    at,
                    format!("{what}: BOOLEAN must be 1 octet, got {}", c.len()),
                );
            }
        }
        Leaf::Octets => {}
        Leaf::Text if tlv.constructed => {}
        Leaf::Text => {
            if std::str::from_utf8(c).is_err() {
                return err(at, format!("{what}: string is not ASCII/UTF-8"));
            }
        }
    }
    Ok(())
}

fn matches(elem: &Elem, tlv: &Tlv) -> bool {
    match elem.shape {
        Shape::Choice(alts) => alts
            .iter()
            .any(|a| a.class == tlv.class && a.number == tlv.number),
        _ => elem.class == tlv.class && elem.number == tlv.number,
    }
}

fn write_constructed(out: &mut Vec<u8>, ident: &[u8], body: &[u8]) {
    out.extend_from_slice(ident);
    write_len(out, body.len());
    out.extend_from_slice(body);
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn write_elem(
    out: &mut Vec<u8>,
    tlv: &Tlv,
    elem: &Elem,
    skipped: &mut usize,
) -> Result<(), WalkError> {
    match elem.shape {
        Shape::Leaf(leaf) => {
            check_leaf(tlv, leaf, elem.name)?;
            out.extend_from_slice(tlv.raw);
            Ok(())
        }
        Shape::Seq(shape) => {
            expect_constructed(tlv, elem.name)?;
            write_seq(out, tlv, shape, elem.name, skipped)
        }
        Shape::Choice(alts) => {
            let alt = alts
                .iter()
                .find(|a| a.class == tlv.class && a.number == tlv.number);
            match alt {
                Some(alt) => write_elem(out, tlv, alt, skipped),
                None => err(tlv.offset, format!("{}: unknown alternative", elem.name)),
            }
        }
    }
}

fn write_seq(
    out: &mut Vec<u8>,
    tlv: &Tlv,
    shape: &Seq,
    what: &str,
    skipped: &mut usize,
) -> Result<(), WalkError> {
    let mut body = Vec::with_capacity(tlv.raw.len());
    let mut next = 0;
    let mut in_extensions = false;
    for child in &tlv.children {
        if in_extensions {
            *skipped += 1;
            continue;
        }
        match shape.elems[next..].iter().position(|el| matches(el, child)) {
            Some(skip) => {
                if let Some(missing) = shape.elems[next..next + skip]
                    .iter()
                    .find(|el| !el.optional)
                {
                    return err(
                        child.offset,
                        format!("{what}: mandatory {} missing", missing.name),
                    );
                }
                let elem = &shape.elems[next + skip];
                write_elem(&mut body, child, elem, skipped)?;
                next += skip + 1;
            }
            None if shape.extensible => {
                // Extension additions follow the root components: skip the rest.
                in_extensions = true;
                *skipped += 1;
            }
            None => {
                return err(
                    child.offset,
                    format!(
                        "{what}: unexpected element with tag 0x{}",
                        hex::encode(child.ident)
                    ),
                );
            }
        }
    }
    if let Some(missing) = shape.elems[next..].iter().find(|el| !el.optional) {
        return err(
            tlv.offset + tlv.raw.len(),
            format!("{what}: mandatory {} missing", missing.name),
        );
    }
    write_constructed(out, tlv.ident, &body);
    Ok(())
}
