fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/panoptes.proto", "proto/worker.proto", "proto/raft.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("panoptes_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
