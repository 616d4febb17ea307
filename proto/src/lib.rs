//! `remsim-api`: the `remsim.v1` gRPC management API (tonic server and
//! client, prost messages) and its encoded descriptor set for reflection.

pub mod v1 {
    tonic::include_proto!("remsim.v1");
}

/// The encoded `FileDescriptorSet` of `remsim/v1/remsim.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/remsim_descriptor.bin"));
