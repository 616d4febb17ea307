//! `remsim-api`: the `remsim.v1` gRPC management API (tonic server and
//! client, prost messages) and its encoded descriptor set for reflection.

pub mod v1 {
    tonic::include_proto!("remsim.v1");
}

/// The encoded `FileDescriptorSet` of `remsim/v1/remsim.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/remsim_descriptor.bin"));

/// Slots and requests as the C tools write them: `(id, slot)` pairs.
impl v1::BankSlot {
    pub fn of((bank_id, slot_nr): (u32, u32)) -> Self {
        v1::BankSlot { bank_id, slot_nr }
    }
}

impl v1::ClientSlot {
    pub fn of((client_id, slot_nr): (u32, u32)) -> Self {
        v1::ClientSlot { client_id, slot_nr }
    }
}

impl v1::CreateSlotmapRequest {
    /// Maps bank slot `bank` to client slot `client`.
    pub fn new(bank: (u32, u32), client: (u32, u32)) -> Self {
        v1::CreateSlotmapRequest {
            bank: Some(v1::BankSlot::of(bank)),
            client: Some(v1::ClientSlot::of(client)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn create_request_from_pairs() {
        let r = v1::CreateSlotmapRequest::new((1, 2), (23, 4));
        assert_eq!(
            r.bank,
            Some(v1::BankSlot {
                bank_id: 1,
                slot_nr: 2
            })
        );
        assert_eq!(
            r.client,
            Some(v1::ClientSlot {
                client_id: 23,
                slot_nr: 4
            })
        );
    }
}
