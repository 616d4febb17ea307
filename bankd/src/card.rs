//! Card backends: real cards in PC/SC readers (blocking pcsc calls, made
//! on the client session's own thread: see `worker::serve`), or soft SIMs
//! in-process (`--backend soft`, for demos and tests).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::sync::{Arc, Mutex};

use pcsc::{Context, Disposition, Protocols, Scope, ShareMode};
use rspro::{BankSlot, ResultCode};
use simcard::{CardProfile, SimCard};

use crate::slots::{self, SlotFile};

/// Why a card cannot be used; each maps to an RSPRO result code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("no card: {0}")]
    NotPresent(String),
    #[error("card does not answer: {0}")]
    Unresponsive(String),
    #[error("transmission failed: {0}")]
    Transmission(String),
}

impl CardError {
    pub fn result_code(&self) -> ResultCode {
        match self {
            CardError::NotPresent(_) => ResultCode::CardNotPresent,
            CardError::Unresponsive(_) => ResultCode::CardUnresponsive,
            CardError::Transmission(_) => ResultCode::CardTransmissionError,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// Power cycle (VCC went off).
    Cold,
    /// RST asserted.
    Warm,
}

/// The largest response we accept from a card (extended length with SW).
const MAX_RESPONSE: usize = 65538;

pub enum Backend {
    Pcsc(PcscBackend),
    Soft(SoftBackend),
}

pub enum Card {
    Pcsc(PcscCard),
    Soft(SoftCard),
}

impl Backend {
    /// Opens the card of a bank slot.
    pub async fn open(&self, slot: BankSlot) -> Result<Card, CardError> {
        match self {
            Backend::Pcsc(b) => b.open(slot).await.map(Card::Pcsc),
            Backend::Soft(b) => b.open(slot).map(Card::Soft),
        }
    }
}

impl Card {
    pub fn atr(&self) -> Vec<u8> {
        match self {
            Card::Pcsc(c) => c.atr.clone(),
            Card::Soft(c) => c.atr.clone(),
        }
    }

    /// Sends a C-APDU; the R-APDU includes SW1 SW2.
    pub async fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        match self {
            Card::Pcsc(c) => c.transmit(apdu).await,
            Card::Soft(c) => {
                c.present()?;
                Ok(c.lock().transmit(apdu))
            }
        }
    }

    /// Resets the card; returns its (new) ATR.
    pub async fn reset(&mut self, kind: ResetKind) -> Result<Vec<u8>, CardError> {
        match self {
            Card::Pcsc(c) => c.reset(kind).await,
            Card::Soft(c) => {
                c.present()?;
                let atr = {
                    let mut card = c.lock();
                    card.reset();
                    card.atr().to_vec()
                };
                c.atr = atr.clone();
                Ok(atr)
            }
        }
    }

    /// Powers the card down and gives it up.
    pub async fn release(self) {
        match self {
            Card::Pcsc(c) => c.release().await,
            Card::Soft(c) => c.lock().reset(),
        }
    }
}

// ----- PC/SC -------------------------------------------------------------

pub struct PcscBackend {
    slots: Arc<SlotFile>,
    share: ShareMode,
}

/// An open card and the buffer its responses are received in (allocated
/// once, not per APDU).
struct OpenCard {
    card: pcsc::Card,
    response: Vec<u8>,
}

pub struct PcscCard {
    card: Arc<Mutex<Option<OpenCard>>>,
    share: ShareMode,
    atr: Vec<u8>,
}

fn pcsc_error(e: pcsc::Error) -> CardError {
    use pcsc::Error as E;
    match e {
        E::NoSmartcard
        | E::RemovedCard
        | E::UnknownReader
        | E::ReaderUnavailable
        | E::NoReadersAvailable => CardError::NotPresent(e.to_string()),
        E::SharingViolation => CardError::NotPresent(format!("reader in use ({e})")),
        E::UnresponsiveCard | E::UnpoweredCard | E::Timeout => {
            CardError::Unresponsive(e.to_string())
        }
        _ => CardError::Transmission(e.to_string()),
    }
}

/// Runs a blocking PC/SC call: in place on a client session's own thread
/// (a current-thread runtime that serves nothing else: blocking is what
/// it is for), else on the blocking pool, so that no tokio worker waits.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CardError> + Send + 'static,
) -> Result<T, CardError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CardError::Transmission(format!("PC/SC call failed: {e}")))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another holder leaves the data as it was: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PcscBackend {
    /// `shared`: open readers in shared mode (`-s`) instead of exclusive.
    pub fn new(slots: SlotFile, shared: bool) -> Self {
        PcscBackend {
            slots: Arc::new(slots),
            share: if shared {
                ShareMode::Shared
            } else {
                ShareMode::Exclusive
            },
        }
    }

    async fn open(&self, slot: BankSlot) -> Result<PcscCard, CardError> {
        let Some(expr) = self.slots.reader_for(slot).cloned() else {
            return Err(CardError::NotPresent(format!(
                "no slot file entry for bank slot {slot}"
            )));
        };
        let share = self.share;
        blocking(move || {
            // One context per card, as the C bankd has one per worker:
            // pcsc-lite serialises the calls made through one context, so a
            // shared one would make every slot wait for the slowest card. The
            // card keeps its context alive; a restarted pcscd is met with a
            // fresh context at the next open.
            let ctx = Context::establish(Scope::System).map_err(pcsc_error)?;
            let readers: Vec<String> = ctx
                .list_readers_owned()
                .map_err(pcsc_error)?
                .into_iter()
                .map(|r| r.to_string_lossy().into_owned())
                .collect();
            let candidates = slots::matching(&expr, &readers);
            if candidates.is_empty() {
                return Err(CardError::NotPresent(format!(
                    "no reader matches {:?}",
                    expr.as_str()
                )));
            }
            // Unlike the C bankd, later matches are tried when the first fails.
            let mut last = CardError::NotPresent("no reader".into());
            for name in candidates {
                let Ok(cname) = CString::new(name) else {
                    continue;
                };
                match ctx.connect(&cname, share, Protocols::T0 | Protocols::T1) {
                    Ok(card) => {
                        let atr = card.status2_owned().map_err(pcsc_error)?.atr().to_vec();
                        return Ok(PcscCard {
                            card: Arc::new(Mutex::new(Some(OpenCard {
                                card,
                                response: vec![0; MAX_RESPONSE],
                            }))),
                            share,
                            atr,
                        });
                    }
                    Err(e) => last = pcsc_error(e),
                }
            }
            Err(last)
        })
        .await
    }
}

impl PcscCard {
    async fn transmit(&self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let card = self.card.clone();
        let apdu = apdu.to_vec();
        blocking(move || {
            let mut guard = lock(&card);
            let Some(OpenCard { card, response }) = guard.as_mut() else {
                return Err(CardError::NotPresent("card released".into()));
            };
            let response = card.transmit(&apdu, response).map_err(pcsc_error)?;
            if response.len() < 2 {
                return Err(CardError::Transmission(format!(
                    "{}-byte response without status word",
                    response.len()
                )));
            }
            Ok(response.to_vec())
        })
        .await
    }

    async fn reset(&mut self, kind: ResetKind) -> Result<Vec<u8>, CardError> {
        let card = self.card.clone();
        let share = self.share;
        let atr = blocking(move || {
            let mut guard = lock(&card);
            let Some(OpenCard { card, .. }) = guard.as_mut() else {
                return Err(CardError::NotPresent("card released".into()));
            };
            let how = match kind {
                ResetKind::Cold => Disposition::UnpowerCard,
                ResetKind::Warm => Disposition::ResetCard,
            };
            card.reconnect(share, Protocols::T0 | Protocols::T1, how)
                .map_err(pcsc_error)?;
            Ok(card.status2_owned().map_err(pcsc_error)?.atr().to_vec())
        })
        .await?;
        self.atr = atr.clone();
        Ok(atr)
    }

    async fn release(self) {
        let card = self.card;
        let _ = blocking(move || {
            if let Some(OpenCard { card, .. }) = lock(&card).take() {
                let _ = card.disconnect(Disposition::UnpowerCard);
            }
            Ok(())
        })
        .await;
    }
}

// ----- soft SIMs -----------------------------------------------------------

pub struct SoftBackend {
    cards: Vec<Arc<Mutex<SimCard>>>,
    /// Open handles per slot number: more than one only in shared mode.
    in_use: Arc<Mutex<HashMap<u32, usize>>>,
    /// Slot numbers whose card has been pulled out.
    removed: Arc<Mutex<HashSet<u32>>>,
    shared: bool,
}

pub struct SoftCard {
    card: Arc<Mutex<SimCard>>,
    slot_nr: u32,
    in_use: Arc<Mutex<HashMap<u32, usize>>>,
    removed: Arc<Mutex<HashSet<u32>>>,
    /// Pulled out while this handle was open.
    gone: bool,
    atr: Vec<u8>,
}

impl SoftBackend {
    /// One card per slot, from `profiles` (slot i gets profile i).
    pub fn new(
        profiles: Vec<CardProfile>,
        shared: bool,
    ) -> Result<Self, simcard::profile::ProfileError> {
        let cards = profiles
            .into_iter()
            .map(|p| SimCard::new(p).map(|c| Arc::new(Mutex::new(c))))
            .collect::<Result<_, _>>()?;
        Ok(SoftBackend {
            cards,
            in_use: Arc::new(Mutex::new(HashMap::new())),
            removed: Arc::new(Mutex::new(HashSet::new())),
            shared,
        })
    }

    /// Pulls the card of a slot out (`false`) or puts it back (`true`), as
    /// a hand at a reader would: open handles fail until it is opened again.
    #[cfg(test)]
    pub fn set_present(&self, slot_nr: u32, present: bool) {
        let mut removed = lock(&self.removed);
        if present {
            removed.remove(&slot_nr);
        } else {
            removed.insert(slot_nr);
        }
    }

    fn open(&self, slot: BankSlot) -> Result<SoftCard, CardError> {
        let Some(card) = self.cards.get(slot.slot_nr as usize) else {
            return Err(CardError::NotPresent(format!(
                "no soft card in slot {}",
                slot.slot_nr
            )));
        };
        if lock(&self.removed).contains(&slot.slot_nr) {
            return Err(CardError::NotPresent(format!(
                "card of slot {} removed",
                slot.slot_nr
            )));
        }
        let mut in_use = lock(&self.in_use);
        let holders = in_use.entry(slot.slot_nr).or_default();
        if *holders > 0 && !self.shared {
            return Err(CardError::NotPresent(format!(
                "slot {} in use",
                slot.slot_nr
            )));
        }
        *holders += 1;
        drop(in_use);
        let atr = {
            let mut c = lock(card);
            c.reset();
            c.atr().to_vec()
        };
        Ok(SoftCard {
            card: card.clone(),
            slot_nr: slot.slot_nr,
            in_use: self.in_use.clone(),
            removed: self.removed.clone(),
            gone: false,
            atr,
        })
    }
}

impl SoftCard {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimCard> {
        lock(&self.card)
    }

    /// A card pulled out stays failed even once it is back: like a reader's
    /// handle, this one must be given up and the card opened again.
    fn present(&mut self) -> Result<(), CardError> {
        if lock(&self.removed).contains(&self.slot_nr) {
            self.gone = true;
        }
        if self.gone {
            return Err(CardError::NotPresent(format!(
                "card of slot {} removed",
                self.slot_nr
            )));
        }
        Ok(())
    }
}

impl Drop for SoftCard {
    fn drop(&mut self) {
        // The slot is free again only when its last holder is gone.
        let mut in_use = lock(&self.in_use);
        if let Some(holders) = in_use.get_mut(&self.slot_nr) {
            *holders = holders.saturating_sub(1);
            if *holders == 0 {
                in_use.remove(&self.slot_nr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(shared: bool) -> SoftBackend {
        SoftBackend::new(CardProfile::generate(0, 2), shared).expect("profiles")
    }

    #[test]
    fn exclusive_soft_slots_have_one_holder() {
        let b = backend(false);
        let first = b.open(BankSlot::new(1, 0)).expect("free");
        assert!(b.open(BankSlot::new(1, 0)).is_err(), "in use");
        assert!(b.open(BankSlot::new(1, 1)).is_ok(), "other slots are free");
        drop(first);
        assert!(b.open(BankSlot::new(1, 0)).is_ok(), "free again");
        assert!(b.open(BankSlot::new(1, 2)).is_err(), "no such card");
    }

    #[test]
    fn shared_soft_slots_are_free_only_when_the_last_holder_goes() {
        let b = backend(true);
        let first = b.open(BankSlot::new(1, 0)).expect("free");
        let second = b.open(BankSlot::new(1, 0)).expect("shared");
        drop(first);
        assert_eq!(lock(&b.in_use).get(&0), Some(&1));
        drop(second);
        assert!(lock(&b.in_use).is_empty());
    }
}
