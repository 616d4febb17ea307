//! Property tests of the engine in the deterministic world: random
//! sequences of API calls, connects, disconnects, partial answers, store
//! failures and time, with the invariants checked after every step and
//! again once every bankd has answered.

use std::time::Duration;

use proptest::prelude::*;
use rspro::{BankSlot, ClientSlot};

use super::harness::World;
use super::*;

#[derive(Debug, Clone)]
enum Step {
    Create {
        bank: (u32, u32),
        client: (u32, u32),
        store_fails: bool,
    },
    DeleteByBank((u32, u32)),
    DeleteByClient((u32, u32)),
    ResetAll,
    ConnectBank(u32),
    DisconnectBank(u32),
    ConnectClient((u32, u32)),
    DisconnectClient((u32, u32)),
    /// A second connection claims a live identity.
    DuplicateBank(u32),
    Silent,
    Answer {
        bank: u32,
        n: usize,
    },
    Advance(u64),
}

fn slot() -> impl Strategy<Value = (u32, u32)> {
    (1u32..4, 0u32..5)
}

fn client() -> impl Strategy<Value = (u32, u32)> {
    (1u32..5, 0u32..2)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (slot(), client(), prop::bool::weighted(0.1))
            .prop_map(|(bank, client, store_fails)| Step::Create { bank, client, store_fails }),
        2 => slot().prop_map(Step::DeleteByBank),
        1 => client().prop_map(Step::DeleteByClient),
        1 => Just(Step::ResetAll),
        2 => (1u32..4).prop_map(Step::ConnectBank),
        1 => (1u32..4).prop_map(Step::DisconnectBank),
        2 => client().prop_map(Step::ConnectClient),
        1 => client().prop_map(Step::DisconnectClient),
        1 => (1u32..4).prop_map(Step::DuplicateBank),
        1 => Just(Step::Silent),
        4 => ((1u32..4), (1usize..4)).prop_map(|(bank, n)| Step::Answer { bank, n }),
        1 => (0u64..15_000).prop_map(Step::Advance),
    ]
}

/// Banks have 4 slots: slot 4 exists in requests but not in the bank.
const SLOTS: u32 = 4;

fn run(world: &mut World, step: &Step) {
    match *step {
        Step::Create {
            bank,
            client,
            store_fails,
        } => {
            let before = world.maps();
            let command = ApiCommand::CreateSlotmap(
                BankSlot::new(bank.0, bank.1),
                ClientSlot::new(client.0, client.1),
            );
            if world.api(command, store_fails).is_err() {
                assert_eq!(world.maps(), before, "a refused create changed nothing");
            }
        }
        Step::DeleteByBank((b, s)) => {
            let key = MapKey::Bank(BankSlot::new(b, s));
            let _ = world.api(ApiCommand::DeleteSlotmap(key), false);
        }
        Step::DeleteByClient((c, s)) => {
            let key = MapKey::Client(ClientSlot::new(c, s));
            let _ = world.api(ApiCommand::DeleteSlotmap(key), false);
        }
        Step::ResetAll => {
            let _ = world.api(ApiCommand::ResetAll, false);
        }
        Step::ConnectBank(id) => {
            if world.bank_conn(id).is_none() {
                world.connect_bank(id, SLOTS);
                assert!(
                    world.bank_conn(id).is_some(),
                    "bank {id} admitted: no holder"
                );
            }
        }
        Step::DisconnectBank(id) => {
            if let Some(conn) = world.bank_conn(id) {
                world.disconnect(conn);
            }
        }
        Step::ConnectClient((c, s)) => {
            let slot = ClientSlot::new(c, s);
            if world.client_conn(slot).is_none() {
                world.connect_client(slot);
                assert!(
                    world.client_conn(slot).is_some(),
                    "{slot} admitted: no holder"
                );
            }
        }
        Step::DisconnectClient((c, s)) => {
            if let Some(conn) = world.client_conn(ClientSlot::new(c, s)) {
                world.disconnect(conn);
            }
        }
        Step::DuplicateBank(id) => {
            if let Some(holder) = world.bank_conn(id) {
                let newcomer = world.connect_bank(id, SLOTS);
                // The holder answers its probe: the newcomer is refused.
                assert_eq!(world.bank_conn(id), Some(holder));
                world.advance(REJECT_CLOSE_DELAY);
                assert!(world.closed.contains(&newcomer), "duplicate closed");
            }
        }
        Step::Silent => {
            let conn = world.connect_silent();
            world.advance(IDENTIFY_TIMEOUT);
            assert!(world.closed.contains(&conn), "silent connection closed");
        }
        Step::Answer { bank, n } => {
            if let Some(conn) = world.bank_conn(bank) {
                world.bank_answers(conn, n);
            }
        }
        Step::Advance(ms) => world.advance(Duration::from_millis(ms)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step_and_once_settled(steps in prop::collection::vec(step(), 1..60)) {
        let mut world = World::default();
        for (i, step) in steps.iter().enumerate() {
            run(&mut world, step);
            if let Err(e) = world.check_always() {
                prop_assert!(false, "after step {i} {step:?}: {e}");
            }
        }
        world.settle();
        if let Err(e) = world.check_settled() {
            prop_assert!(false, "settled: {e}");
        }
    }

    /// A bank that never connects: maps come and go, Watch and List agree,
    /// and what is owed to it stays one removal per pair.
    #[test]
    fn removals_owed_to_an_absent_bank_stay_bounded(pairs in prop::collection::vec((0u32..3, 1u32..3), 1..200)) {
        let mut world = World::default();
        for (s, c) in pairs {
            let bank = BankSlot::new(9, s);
            let client = ClientSlot::new(c, 0);
            let _ = world.api(ApiCommand::CreateSlotmap(bank, client), false);
            let _ = world.api(ApiCommand::DeleteSlotmap(MapKey::Bank(bank)), false);
            prop_assert!(world.check_always().is_ok());
        }
        // At most one per (bank slot, client slot) pair: 3 × 2.
        prop_assert!(world.stored_removals.len() <= 6);
        world.connect_bank(9, SLOTS);
        world.settle();
        prop_assert!(world.stored_removals.is_empty());
        prop_assert!(world.check_settled().is_ok());
    }
}
