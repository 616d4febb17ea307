//! The bankd's per-APDU path with a soft card: `cargo bench -p remsim-bankd
//! --bench tpdu`. One client's TpduModemToCard taken through the steps of
//! its worker (`worker.rs`, `Worker::execute`), without a socket: the IPA
//! frame decoded as the connection decodes it, the session (`session.rs`)
//! turning it into a card transmit, the soft SIM answering through
//! `card::Card`, the APDU counted in the metrics, and the session's
//! TpduCardToModem encoded into an IPA frame; no GSMTAP target, as by
//! default. Prints microseconds per APDU for the whole path, for the same
//! path with a canned answer in place of the card (session and codec), and
//! for the soft card alone; each the median of 7 runs.

use std::collections::VecDeque;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use remsim_bankd::card::{Backend, CardError, SoftBackend};
use remsim_bankd::maps::MapTable;
use remsim_bankd::metrics::Metrics;
use remsim_bankd::session::{Out, Session, State};
use rspro::ipa::{Frame, IpaCodec};
use rspro::link::ConnectionConfig;
use rspro::{BankSlot, ClientSlot, ComponentType, Identity, Pdu, ResultCode, RsproPdu};
use simcard::CardProfile;
use tokio_util::codec::{Decoder, Encoder};

/// APDUs per run.
const N: u32 = 20_000;

const BANK: BankSlot = BankSlot {
    bank_id: 1,
    slot_nr: 0,
};
const CLIENT: ClientSlot = ClientSlot {
    client_id: 23,
    slot_nr: 0,
};

/// What a modem sends again and again: SELECT EF.ICCID, READ BINARY of it.
const APDUS: [&[u8]; 2] = [
    &[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0xE2],
    &[0x00, 0xB0, 0x00, 0x00, 0x0A],
];

/// Soft cards answer without waiting: their futures are ready at the first
/// poll, so no runtime is needed (nor timed).
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a soft card answers at once"),
    }
}

/// The client connection's codec and buffers, without its socket.
struct Link {
    codec: IpaCodec,
    /// Bytes read from the client.
    inbox: BytesMut,
    /// Bytes for the client; the socket write is left out.
    outbox: BytesMut,
}

/// One TpduModemToCard frame through the worker's steps; `card` answers
/// the session's transmit. Returns the bytes framed for the client.
fn one_apdu(
    link: &mut Link,
    session: &mut Session,
    maps: &MapTable,
    metrics: &Metrics,
    frame: &[u8],
    card: &mut impl FnMut(&[u8]) -> Result<Vec<u8>, CardError>,
) -> usize {
    link.inbox.extend_from_slice(frame);
    let Some(Frame::Rspro(der)) = link.codec.decode(&mut link.inbox).expect("a valid frame") else {
        panic!("a whole RSPRO frame");
    };
    let Pdu::Known(pdu) = rspro::decode(&der).expect("a valid PDU").pdu else {
        panic!("a known PDU");
    };
    let mut queue: VecDeque<Out> = session.on_pdu(pdu, maps).into();
    while let Some(out) = queue.pop_front() {
        match out {
            Out::Transmit(apdu) => {
                let slot = session.bank();
                let started = Instant::now();
                let result = card(apdu.as_slice());
                metrics.apdu(slot, started.elapsed());
                queue.extend(session.on_transmit(apdu, result));
            }
            Out::Send(pdu) => {
                let frame = Frame::rspro(&pdu).expect("encodes");
                link.codec.encode(frame, &mut link.outbox).expect("frames");
            }
            Out::TraceApdu(..) => {}
            other => panic!("not an APDU's work: {other:?}"),
        }
    }
    let framed = link.outbox.len();
    link.outbox.clear();
    framed
}

fn median_us(mut apdu: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..N {
                apdu();
            }
            start.elapsed().as_nanos() as f64 / 1e3 / f64::from(N)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn main() {
    let backend = Backend::Soft(
        SoftBackend::new(CardProfile::generate(0, 1), false).expect("a generated profile"),
    );
    let mut maps = MapTable::default();
    assert_eq!(maps.create(BANK.bank_id, 1, BANK, CLIENT), ResultCode::Ok);
    let metrics = Metrics::new();

    // The client connects and gets its card, as before any APDU.
    let bankd = Identity::new(ComponentType::RemsimBankd, "bench", "remsim-bankd", "bench");
    let client = Identity::new(
        ComponentType::RemsimClient,
        "bench",
        "remsim-client",
        "bench",
    );
    let mut session = Session::new(bankd);
    let connect = RsproPdu::connect_client_req(client, Some(CLIENT));
    assert_eq!(session.on_pdu(connect, &maps), vec![Out::Open(BANK)]);
    let mut card = ready(backend.open(BANK)).expect("the soft card opens");
    session.on_open(Ok(card.atr()));
    assert_eq!(session.state(), State::MappedCard);

    let frames: Vec<Vec<u8>> = APDUS
        .iter()
        .map(|apdu| {
            let pdu = RsproPdu::tpdu_modem_to_card(CLIENT, BANK, apdu.to_vec());
            Frame::rspro(&pdu)
                .expect("encodes")
                .to_bytes()
                .expect("frames")
                .to_vec()
        })
        .collect();
    // The card's answers, for the runs without it.
    let answers: Vec<Vec<u8>> = APDUS
        .iter()
        .map(|apdu| ready(card.transmit(apdu)).expect("the card answers"))
        .collect();
    for answer in &answers {
        assert!(answer.ends_with(&[0x90, 0x00]), "{answer:02x?}");
    }
    let mut link = Link {
        codec: IpaCodec::with_max_payload(ConnectionConfig::bankd_worker().max_payload),
        inbox: BytesMut::with_capacity(1024),
        outbox: BytesMut::with_capacity(1024),
    };

    let mut i = 0;
    let whole = median_us(|| {
        let frame = &frames[i % frames.len()];
        i += 1;
        let mut soft = |apdu: &[u8]| ready(card.transmit(apdu));
        black_box(one_apdu(
            &mut link,
            &mut session,
            &maps,
            &metrics,
            frame,
            &mut soft,
        ));
    });
    let mut i = 0;
    let without_card = median_us(|| {
        let k = i % frames.len();
        i += 1;
        let mut canned = |_: &[u8]| Ok::<_, CardError>(answers[k].clone());
        black_box(one_apdu(
            &mut link,
            &mut session,
            &maps,
            &metrics,
            &frames[k],
            &mut canned,
        ));
    });
    let mut i = 0;
    let card_alone = median_us(|| {
        let apdu = APDUS[i % APDUS.len()];
        i += 1;
        black_box(ready(card.transmit(black_box(apdu))).expect("the card answers"));
    });
    println!("TpduModemToCard → TpduCardToModem, soft SIM, median of 7 runs of {N}");
    println!("whole path (frame, session, card, frame)  {whole:8.2} µs/APDU");
    println!("session + codec, canned answer            {without_card:8.2} µs/APDU");
    println!("soft SIM transmit alone                   {card_alone:8.2} µs/APDU");
}
