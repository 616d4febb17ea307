//! Fuzz target: one RsproPDU as BER. Whatever decodes must re-encode to DER
//! that decodes to the same PDU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rspro::Pdu;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = rspro::decode(data)
        && let Pdu::Known(pdu) = decoded.pdu
    {
        let der = rspro::encode(&pdu).expect("a decoded PDU re-encodes");
        let again = rspro::decode(&der).expect("our DER decodes");
        assert_eq!(again.pdu, Pdu::Known(pdu));
    }
});
