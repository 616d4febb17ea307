//! The bankd's slot maps, as the server installs them: CreateMappingReq,
//! RemoveMappingReq and ResetStateReq answered as the C bankd does (spec
//! §5.3), sans I/O. Client sessions see the table through a watch channel.

use std::collections::BTreeMap;

use rspro::{BankSlot, ClientSlot, ResultCode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapTable {
    by_bank: BTreeMap<BankSlot, ClientSlot>,
}

impl MapTable {
    /// The bank slot serving a client slot.
    pub fn bank_for(&self, client: ClientSlot) -> Option<BankSlot> {
        self.by_bank
            .iter()
            .find(|(_, c)| **c == client)
            .map(|(b, _)| *b)
    }

    pub fn len(&self) -> usize {
        self.by_bank.len()
    }

    /// Beside `len`, as clippy asks of a public type.
    pub fn is_empty(&self) -> bool {
        self.by_bank.is_empty()
    }

    fn check(&self, bank_id: u32, slots: u32, bank: BankSlot) -> Result<(), ResultCode> {
        if bank.bank_id != bank_id {
            return Err(ResultCode::IllegalBankId);
        }
        if bank.slot_nr >= slots {
            return Err(ResultCode::IllegalSlotId);
        }
        Ok(())
    }

    /// CreateMappingReq: replaces any map of the bank slot or of the client.
    pub fn create(
        &mut self,
        bank_id: u32,
        slots: u32,
        bank: BankSlot,
        client: ClientSlot,
    ) -> ResultCode {
        if let Err(r) = self.check(bank_id, slots, bank) {
            return r;
        }
        if self.by_bank.get(&bank) == Some(&client) {
            return ResultCode::Ok;
        }
        self.by_bank.retain(|_, c| *c != client);
        self.by_bank.insert(bank, client);
        ResultCode::Ok
    }

    /// RemoveMappingReq: only the exact map is removed.
    pub fn remove(
        &mut self,
        bank_id: u32,
        slots: u32,
        bank: BankSlot,
        client: ClientSlot,
    ) -> ResultCode {
        if let Err(r) = self.check(bank_id, slots, bank) {
            return r;
        }
        if self.by_bank.get(&bank) != Some(&client) {
            return ResultCode::UnknownSlotmap;
        }
        self.by_bank.remove(&bank);
        ResultCode::Ok
    }

    /// ResetStateReq.
    pub fn reset(&mut self) -> ResultCode {
        self.by_bank.clear();
        ResultCode::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_as_the_c_bankd() {
        let mut t = MapTable::default();
        let (b, c) = (BankSlot::new(1, 0), ClientSlot::new(23, 0));
        assert_eq!(
            t.create(1, 8, BankSlot::new(2, 0), c),
            ResultCode::IllegalBankId
        );
        assert_eq!(
            t.create(1, 8, BankSlot::new(1, 8), c),
            ResultCode::IllegalSlotId
        );
        assert_eq!(t.create(1, 8, b, c), ResultCode::Ok);
        assert_eq!(t.create(1, 8, b, c), ResultCode::Ok, "identical: ok");
        assert_eq!(t.bank_for(c), Some(b));
        // The client moves to another slot: its old map goes.
        assert_eq!(t.create(1, 8, BankSlot::new(1, 1), c), ResultCode::Ok);
        assert_eq!((t.len(), t.bank_for(c)), (1, Some(BankSlot::new(1, 1))));
        // Another client takes slot 1:1: the old map of the slot goes.
        let d = ClientSlot::new(24, 0);
        assert_eq!(t.create(1, 8, BankSlot::new(1, 1), d), ResultCode::Ok);
        assert_eq!(
            (t.bank_for(c), t.bank_for(d)),
            (None, Some(BankSlot::new(1, 1)))
        );
        assert_eq!(
            t.remove(1, 8, BankSlot::new(1, 1), c),
            ResultCode::UnknownSlotmap
        );
        assert_eq!(
            t.remove(1, 8, BankSlot::new(1, 9), d),
            ResultCode::IllegalSlotId
        );
        assert_eq!(
            t.remove(1, 8, BankSlot::new(3, 1), d),
            ResultCode::IllegalBankId
        );
        assert_eq!(t.remove(1, 8, BankSlot::new(1, 1), d), ResultCode::Ok);
        assert_eq!(t.len(), 0);
        t.create(1, 8, b, c);
        assert_eq!(t.reset(), ResultCode::Ok);
        assert_eq!(t.len(), 0);
    }
}
