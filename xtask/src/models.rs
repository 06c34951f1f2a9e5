//! `cargo xtask models`: prepare the ONNX models directory.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The model files and their sha256, as listed in the models' README.
pub const MODELS: &[(&str, &str)] = &[
    ("nanodet_m_416_coco.onnx", "0aac02baccef68a174b5a1728e27835332d2fcaee42b101cfccf744e2ad39750"),
    ("mtcnn_pnet.onnx", "ab2d7f9e6c1b5a0185759aeb57b10a796b57f8d1496f37f8eba8dddfacca4acc"),
    ("mtcnn_rnet.onnx", "afe7011b58a5d4560581487b44179876267ced684d3c04e3ee9f3a7e3612596b"),
    ("mtcnn_onet.onnx", "8b2124aa691c85d9a409750cabbb9cc54de25f2c81154e81ca937ac7c196e93b"),
    ("emotion_mini_xception_fer2013.onnx", "4fcb1fa70f5ce0c2ff01037e161b495aab357dffa895c21a6da3ddbb067f449f"),
    ("gender_oarriaga_gray64.onnx", "400e6197f0ccf157056a58227ea6545d44fba245a915f09f9070420128fd3bdf"),
    ("gender_ssrnet_imdb_rgb64.onnx", "a46099005c9f14e3f192fef5f86967281f1151abe548a5826fcbdb31cbc03b2d"),
    ("blazeface_256.onnx", "df4be771d54569726de935e83ee1afb0d4581d4f0bff6514e5d62989a82d643a"),
    ("centernet_mbv3_512_coco.onnx", "75e82b2fa3052b84e5407e413d0cd521c8942d0a24431ed9eaaf73afa0560996"),
];


fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("failed to run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

/// Prepare `out`: copy from `from` (checksums verified) or rebuild from the registry packages.
pub fn run(from: Option<PathBuf>, out: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&out)?;
    let Some(from) = from else {
        bail!(
            "rebuilding the models from their registry packages is not implemented yet; \
             copy pre-built ones with `cargo xtask models --from DIR` (e.g. --from ../shared/models)"
        );
    };
    for (name, sum) in MODELS {
        let dst = out.join(name);
        if dst.exists() && sha256(&dst)? == *sum {
            continue;
        }
        let src = from.join(name);
        std::fs::copy(&src, &dst).with_context(|| format!("failed to copy {} to {}", src.display(), dst.display()))?;
        let got = sha256(&dst)?;
        if got != *sum {
            bail!("{}: sha256 {got} does not match the expected {sum}", src.display());
        }
    }
    println!("models ready in {} ({} files, checksums verified)", out.display(), MODELS.len());
    Ok(())
}

