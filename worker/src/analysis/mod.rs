//! Per-frame analyses, exactly as `docs/ANALYSIS_SPEC.md` defines them.
//!
//! Every analysis reads one packed RGB24 frame and returns the JSON array the
//! spec defines for it. Models are loaded and optimised once in [`load`]; the
//! returned [`Analysis`] is cheap to share and may be called from several
//! threads at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use panoptes_media::RgbFrame;

mod colors;
pub mod geometry;
mod joy;
mod model;
mod objects;
pub mod resize;
mod yolo;

pub use colors::Colors;
pub use model::Engine;
pub use joy::Joy;
pub use objects::{DetectorParams, Objects};
pub use panoptes_common::config::{ModelConfig, ModelFamily};
pub use yolo::{letterbox_input, Letterbox, Yolo, YoloVersion};

/// One built-in analysis.
pub trait Analysis: Send + Sync {
    fn name(&self) -> &str;
    /// The JSON array the spec defines for this analysis, for one RGB frame.
    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<serde_json::Value>;
}

/// Why a built-in analysis could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown analysis {name:?}; built-in analyses: {}", builtin_names().join(", "))]
    UnknownAnalysis { name: String },
    #[error("model file {}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("model file {}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {}: not a loadable ONNX model: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("model file {}: does not run on {input}: {reason}", path.display())]
    Unusable {
        path: PathBuf,
        input: String,
        reason: String,
    },
    #[error("model file {}: expected {expected}, found {found}", path.display())]
    Layout {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("model {name:?}: {reason}")]
    Config { name: String, reason: String },
    #[error("{reason}")]
    Engine { reason: String },
}

/// Names of the built-in analyses available.
pub fn builtin_names() -> &'static [&'static str] {
    &["colors", "objects", "joy"]
}

/// Loads a built-in analysis by name with its default settings, reading
/// model files from `models_dir`.
pub fn load(name: &str, models_dir: &Path) -> Result<Arc<dyn Analysis>, ModelError> {
    load_on(name, models_dir, &Engine::Tract)
}

/// [`load`] with the given engine.
pub fn load_on(name: &str, models_dir: &Path, engine: &Engine) -> Result<Arc<dyn Analysis>, ModelError> {
    match panoptes_common::config::builtin_models().get(name) {
        Some(m) => load_with(name, m, models_dir, engine),
        None => Err(ModelError::UnknownAnalysis {
            name: name.to_owned(),
        }),
    }
}

/// Loads the registry entry `m` under `name`, its files relative to
/// `models_dir` (absolute file names are used as they are). A missing,
/// unreadable or wrongly shaped file is an error naming it.
///
/// `onnxruntime_library` is the library for an entry with `engine =
/// "onnxruntime"` (`worker.onnxruntime_library`).
pub fn load_model(
    name: &str,
    m: &ModelConfig,
    models_dir: &Path,
    onnxruntime_library: &Path,
) -> Result<Arc<dyn Analysis>, ModelError> {
    let engine = match m.engine {
        panoptes_common::config::ModelEngine::Tract => Engine::Tract,
        panoptes_common::config::ModelEngine::Onnxruntime => Engine::Onnxruntime { library: onnxruntime_library.to_path_buf() },
    };
    load_with(name, m, models_dir, &engine)
}

/// The name of the onnxruntime library in the models directory, where
/// `cargo xtask models` puts it.
pub use panoptes_common::config::ONNXRUNTIME_LIBRARY;

/// [`load_model`] with the engine given (the entry's `engine` is not read).
pub fn load_with(
    name: &str,
    m: &ModelConfig,
    models_dir: &Path,
    engine: &Engine,
) -> Result<Arc<dyn Analysis>, ModelError> {
    let files: Vec<PathBuf> = m.files.iter().map(|f| models_dir.join(f)).collect();
    let (want, what) = m.family.files_expected();
    if files.len() != want {
        return Err(ModelError::Config {
            name: name.to_owned(),
            reason: format!(
                "family {} needs {what}, got {} files",
                m.family,
                files.len()
            ),
        });
    }
    let detector = || DetectorParams {
        labels: m.labels(),
        score_threshold: m.score_threshold.unwrap_or(0.0),
        nms_threshold: m.nms_threshold.unwrap_or(1.0),
        max_detections: m.max_detections.map_or(usize::MAX, |v| v as usize),
    };
    let size = || m.input_size.unwrap_or(640) as usize;
    let a: Arc<dyn Analysis> = match m.family {
        ModelFamily::Kmeans => Arc::new(Colors),
        ModelFamily::Nanodet => Arc::new(Objects::load_with(engine, &files[0], size(), detector())?),
        ModelFamily::Mtcnn => {
            let files: [PathBuf; 5] = files.try_into().expect("five files checked above");
            Arc::new(Joy::load_files(engine, &files)?)
        }
        ModelFamily::Yolov8 => Arc::new(Yolo::load(
            engine,
            name,
            YoloVersion::V8,
            &files[0],
            size(),
            detector(),
        )?),
        ModelFamily::Yolov5 => Arc::new(Yolo::load(
            engine,
            name,
            YoloVersion::V5,
            &files[0],
            size(),
            detector(),
        )?),
    };
    Ok(if a.name() == name {
        a
    } else {
        Arc::new(Renamed {
            name: name.to_owned(),
            inner: a,
        })
    })
}

/// A registry model of a built-in family under another name.
struct Renamed {
    name: String,
    inner: Arc<dyn Analysis>,
}

impl Analysis for Renamed {
    fn name(&self) -> &str {
        &self.name
    }

    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<serde_json::Value> {
        self.inner.analyze(frame)
    }
}

/// BT.601 luma in integers, `(299 R + 587 G + 114 B + 500) / 1000`, one byte
/// per pixel.
pub fn gray(frame: &RgbFrame) -> Vec<u8> {
    gray_of(&frame.data)
}

/// [`gray`] of a packed RGB24 buffer.
pub(crate) fn gray_of(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| gray_px(p[0], p[1], p[2]))
        .collect()
}

#[inline]
pub(crate) fn gray_px(r: u8, g: u8, b: u8) -> u8 {
    ((299 * r as u32 + 587 * g as u32 + 114 * b as u32 + 500) / 1000) as u8
}

/// Checks the frame's buffer against its size, so analyses can index freely.
pub(crate) fn check_frame(frame: &RgbFrame) -> anyhow::Result<()> {
    let expected = frame.width as usize * frame.height as usize * 3;
    anyhow::ensure!(
        frame.width > 0 && frame.height > 0 && frame.data.len() == expected,
        "bad RGB24 frame: {}x{} with {} bytes (expected {expected}, non-empty)",
        frame.width,
        frame.height,
        frame.data.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_is_integer_bt601() {
        assert_eq!(gray_px(0, 0, 0), 0);
        assert_eq!(gray_px(255, 255, 255), 255);
        // 299*10 + 587*20 + 114*30 + 500 = 18150 -> 18
        assert_eq!(gray_px(10, 20, 30), 18);
        // exactly on .5: 299*1 + 500 = 799 -> 0; 587*1 + 500 = 1087 -> 1
        assert_eq!(gray_px(1, 0, 0), 0);
        assert_eq!(gray_px(0, 1, 0), 1);
        let f = RgbFrame::new(2, 1, vec![255, 0, 0, 0, 0, 255]);
        assert_eq!(gray(&f), vec![76, 29]);
    }

    #[test]
    fn unknown_analysis_is_named() {
        let err = load("nope", Path::new("/nonexistent")).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("colors"), "{msg}");
    }

    #[test]
    fn missing_model_file_is_named() {
        let err = load("objects", Path::new("/nonexistent")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "model file /nonexistent/nanodet_m_416_coco.onnx: not found"
        );
    }
}
