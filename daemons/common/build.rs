//! Compiles the shared protos (`proto/rookery/v1/*.proto`, package `rookery.v1`) into the
//! `rookery_common::proto` module. Needs `protoc` (Debian `protobuf-compiler`, installed by
//! `scripts/install-build-deps.sh`) or `PROTOC` pointing at one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(root.join("rookery/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("rookery/v1").display()
    );
    tonic_prost_build::configure().compile_protos(&protos, &[root])?;
    Ok(())
}
