//! Who is who in a run, by fixed formulas, so that runs are reproducible
//! and every id is valid RSPRO (0..=1023):
//! * client i → ClientSlot { client_id: client_id_base + i / 1000, slot_nr: i % 1000 };
//! * bank b (from 0) → bank id bank_id_base + b, with slots 0..S;
//! * map k → bank slot (bank_id_base + k / S, k % S) for client k;
//! * with source-ip endpoints, bank b connects from and listens on
//!   source_ip_base + b, port 9999: the C server sends clients to the
//!   bankd's source address and port 9999 (spec §1.1).

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use rspro::validate::MAX_ID;
use rspro::{BankSlot, ClientSlot};

/// Client slots per client id.
pub const SLOTS_PER_CLIENT_ID: usize = 1000;
/// The bankd port the C server tells clients, whatever the bankd listens on.
pub const BANKD_PORT: u16 = 9999;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub client_id_base: u32,
    pub bank_id_base: u32,
    /// Slots per bank.
    pub slots: u32,
}

impl Layout {
    /// Client `i`'s slot; valid for every `i` that [`Layout::check`] allowed.
    pub fn client_slot(&self, i: usize) -> ClientSlot {
        ClientSlot::new(
            self.client_id_base + (i / SLOTS_PER_CLIENT_ID) as u32,
            (i % SLOTS_PER_CLIENT_ID) as u32,
        )
    }

    /// Bank `b`'s id (from 0).
    pub fn bank_id(&self, b: u32) -> u32 {
        self.bank_id_base + b
    }

    /// The bank slot of map `k`.
    pub fn bank_slot(&self, k: usize) -> BankSlot {
        let slots = self.slots.max(1) as usize;
        BankSlot::new(self.bank_id_base + (k / slots) as u32, (k % slots) as u32)
    }

    /// Refuses sizes whose ids would leave 0..=1023 or whose maps do not fit.
    pub fn check(&self, clients: usize, banks: u32, maps: usize) -> anyhow::Result<()> {
        let base = self.client_id_base;
        if base > MAX_ID {
            bail!("--client-id-base {base} is above {MAX_ID}");
        }
        let max_clients = (MAX_ID - base + 1) as usize * SLOTS_PER_CLIENT_ID;
        if clients > max_clients {
            bail!(
                "at most {max_clients} clients from --client-id-base {base} \
                 (client ids up to {MAX_ID}, {SLOTS_PER_CLIENT_ID} slots each)"
            );
        }
        if maps > clients {
            bail!("{maps} maps but {clients} clients: each map serves one client");
        }
        if banks == 0 {
            if maps > 0 {
                bail!("{maps} maps need at least one bank (--banks)");
            }
            return Ok(());
        }
        if self.slots == 0 || self.slots > MAX_ID + 1 {
            bail!("--slots must be 1..={}", MAX_ID + 1);
        }
        let last = self.bank_id_base.checked_add(banks - 1);
        if last.is_none_or(|id| id > MAX_ID) {
            bail!(
                "{banks} banks from --bank-id-base {} go beyond bank id {MAX_ID}",
                self.bank_id_base
            );
        }
        let capacity = banks as usize * self.slots as usize;
        if maps > capacity {
            bail!(
                "{maps} maps need {maps} bank slots: {banks} banks × {} slots have {capacity}",
                self.slots
            );
        }
        Ok(())
    }
}

/// The address bank `b` uses with source-ip endpoints.
pub fn source_ip(base: Ipv4Addr, b: u32) -> anyhow::Result<Ipv4Addr> {
    u32::from(base)
        .checked_add(b)
        .map(Ipv4Addr::from)
        .with_context(|| format!("bank {b}: no address {base} + {b}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        client_id_base: 1,
        bank_id_base: 1,
        slots: 4,
    };

    #[test]
    fn ids_follow_the_documented_formulas() {
        assert_eq!(LAYOUT.client_slot(0), ClientSlot::new(1, 0));
        assert_eq!(LAYOUT.client_slot(1234), ClientSlot::new(2, 234));
        assert_eq!(LAYOUT.bank_slot(5), BankSlot::new(2, 1));
        assert_eq!(LAYOUT.bank_id(2), 3);
        assert_eq!(
            source_ip(Ipv4Addr::new(127, 0, 0, 10), 3).ok(),
            Some(Ipv4Addr::new(127, 0, 0, 13))
        );
    }

    #[test]
    fn sizes_beyond_valid_ids_are_refused() {
        assert!(LAYOUT.check(8, 2, 8).is_ok());
        assert!(LAYOUT.check(9, 2, 9).is_err(), "9 maps in 8 bank slots");
        assert!(LAYOUT.check(4, 0, 4).is_err(), "maps without banks");
        assert!(LAYOUT.check(4, 1, 5).is_err(), "more maps than clients");
        assert!(
            LAYOUT.check(1_023_001, 0, 0).is_err(),
            "client ids above 1023"
        );
        assert!(LAYOUT.check(1, 1024, 1).is_err(), "bank ids above 1023");
    }
}
