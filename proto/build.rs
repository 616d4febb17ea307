//! Compiles remsim/v1/*.proto with protox (pure Rust: no protoc needed) and
//! generates the tonic server and client; also writes the encoded descriptor
//! set that the server's reflection service publishes.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=remsim");
    let fds = protox::compile(["remsim/v1/remsim.proto"], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("remsim_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
