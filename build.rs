//! Compiles `proto/nexus/v1/nexus.proto` with protox (pure Rust, no `protoc` needed) into the
//! tonic/prost code and the encoded descriptor set that server reflection and `nexus ctl` use.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["nexus/v1/nexus.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("nexus_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // These carry the swarm key: their Debug is written by hand, redacted.
        .skip_debug(["nexus.v1.JoinKit", "nexus.v1.CreateNetworkRequest"])
        .compile_fds(fds)?;
    Ok(())
}
