//! The model registry: the built-in analyses and a file's `[models.NAME]`
//! tables, resolved and checked.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The built-in models, always in the registry, in their canonical order.
pub const BUILTIN_MODELS: &[&str] = &["objects", "joy", "colors"];

/// The emotions and genders of the face family (`mtcnn`, what `joy` is), in
/// its classifiers' output order (ANALYSIS_SPEC.md): what its results name,
/// and what an alert rule may ask for.
pub const EMOTIONS: [&str; 7] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
pub const GENDERS: [&str; 2] = ["woman", "man"];

/// The 80 COCO labels in the standard order: the default `labels` of the
/// detector families.
pub const COCO_LABELS: [&str; 80] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
];

/// How a model's files are run and decoded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// NanoDet (what `objects` is): one ONNX file, outputs `[1,n,nc]` and
    /// `[1,n,44]` per stride 8, 16, 32.
    Nanodet,
    /// MTCNN faces plus emotion and gender classifiers (what `joy` is): five
    /// files, P-Net, R-Net, O-Net, emotion, gender.
    Mtcnn,
    /// k-means colour palette (what `colors` is): no file.
    Kmeans,
    /// A YOLOv8 ONNX export: one output `[1, 4+nc, N]` (cx, cy, w, h in input
    /// pixels, then class scores; no objectness).
    Yolov8,
    /// A YOLOv5 ONNX export: one output `[1, N, 5+nc]` (cx, cy, w, h,
    /// objectness, class scores).
    Yolov5,
}

impl ModelFamily {
    pub const ALL: [ModelFamily; 5] =
        [ModelFamily::Nanodet, ModelFamily::Mtcnn, ModelFamily::Kmeans, ModelFamily::Yolov8, ModelFamily::Yolov5];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Nanodet => "nanodet",
            ModelFamily::Mtcnn => "mtcnn",
            ModelFamily::Kmeans => "kmeans",
            ModelFamily::Yolov8 => "yolov8",
            ModelFamily::Yolov5 => "yolov5",
        }
    }

    /// Whether the family is a box detector with input size, labels and thresholds.
    pub fn is_detector(self) -> bool {
        matches!(self, ModelFamily::Nanodet | ModelFamily::Yolov8 | ModelFamily::Yolov5)
    }

    /// How many files a model of this family names, and what they are.
    pub fn files_expected(self) -> (usize, &'static str) {
        match self {
            ModelFamily::Nanodet | ModelFamily::Yolov8 | ModelFamily::Yolov5 => (1, "one ONNX file, e.g. files = [\"mydet.onnx\"]"),
            ModelFamily::Mtcnn => (5, "five ONNX files: P-Net, R-Net, O-Net, emotion classifier, gender classifier"),
            ModelFamily::Kmeans => (0, "no files"),
        }
    }

    /// A model of this family with every key at its default (no files).
    pub fn defaults(self) -> ModelConfig {
        let detector = |size: u32, score: f64, nms: f64, max: u32| ModelConfig {
            family: self,
            files: Vec::new(),
            input_size: Some(size),
            labels: Some(COCO_LABELS.iter().map(|s| s.to_string()).collect()),
            score_threshold: Some(score),
            nms_threshold: Some(nms),
            max_detections: Some(max),
            engine: ModelEngine::Tract,
        };
        match self {
            ModelFamily::Nanodet => detector(416, 0.35, 0.6, 100),
            ModelFamily::Yolov8 | ModelFamily::Yolov5 => detector(640, 0.25, 0.45, 300),
            ModelFamily::Mtcnn | ModelFamily::Kmeans => ModelConfig {
                family: self,
                files: Vec::new(),
                input_size: None,
                labels: None,
                score_threshold: None,
                nms_threshold: None,
                max_detections: None,
                engine: ModelEngine::Tract,
            },
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model in the registry (`[models.NAME]`). Detector keys (`input_size`,
/// `labels`, the thresholds) are always set for detector families after
/// loading and absent for the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub family: ModelFamily,
    /// File names, relative to `worker.models_dir` (or absolute).
    #[serde(default)]
    pub files: Vec<String>,
    /// Square input side in pixels (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<u32>,
    /// Class labels in class-id order (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Candidates scoring below this are dropped (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f64>,
    /// Per-class NMS drops a box overlapping a kept one by IoU > this (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nms_threshold: Option<f64>,
    /// At most this many boxes per frame (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detections: Option<u32>,
    /// Which engine runs the model's ONNX files: `tract` (default) or
    /// `onnxruntime` (from `worker.onnxruntime_library`).
    #[serde(default, skip_serializing_if = "ModelEngine::is_tract")]
    pub engine: ModelEngine,
}

/// `engine` of a registry entry.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelEngine {
    #[default]
    Tract,
    Onnxruntime,
}

impl ModelEngine {
    pub fn is_tract(&self) -> bool {
        *self == ModelEngine::Tract
    }
}

/// A `[models.NAME]` table as written: every key optional, merged onto the
/// built-in of that name (or the family's defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    family: Option<ModelFamily>,
    files: Option<Vec<String>>,
    input_size: Option<u32>,
    labels: Option<Vec<String>>,
    score_threshold: Option<f64>,
    nms_threshold: Option<f64>,
    max_detections: Option<u32>,
    engine: Option<ModelEngine>,
}

/// The built-in registry: `objects` (NanoDet-m), `joy` (MTCNN + classifiers)
/// and `colors` (k-means).
pub fn builtin_models() -> BTreeMap<String, ModelConfig> {
    let mut objects = ModelFamily::Nanodet.defaults();
    objects.files = vec!["nanodet_m_416_coco.onnx".into()];
    let mut joy = ModelFamily::Mtcnn.defaults();
    joy.files = [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "emotion_mini_xception_fer2013.onnx",
        "gender_oarriaga_gray64.onnx",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let colors = ModelFamily::Kmeans.defaults();
    [("objects", objects), ("joy", joy), ("colors", colors)].into_iter().map(|(n, m)| (n.to_string(), m)).collect()
}

/// Merges one written entry onto the built-in of the same name; a family
/// different from the built-in's (or a new name) starts from that family's
/// defaults instead.
fn resolve_entry(name: &str, e: ModelEntry) -> Result<ModelConfig, String> {
    let builtin = builtin_models().remove(name);
    let mut m = match (builtin, e.family) {
        (Some(b), None) => b,
        (Some(b), Some(f)) if b.family == f => b,
        (_, Some(f)) => f.defaults(),
        (None, None) => {
            return Err(format!(
                "models.{name}: `family` is missing; a model that is not built in ({}) needs family = one of {}",
                BUILTIN_MODELS.join(", "),
                ModelFamily::ALL.map(|f| f.as_str()).join(", ")
            ))
        }
    };
    if let Some(v) = e.files {
        m.files = v;
    }
    if e.input_size.is_some() {
        m.input_size = e.input_size;
    }
    if e.labels.is_some() {
        m.labels = e.labels;
    }
    if e.score_threshold.is_some() {
        m.score_threshold = e.score_threshold;
    }
    if e.nms_threshold.is_some() {
        m.nms_threshold = e.nms_threshold;
    }
    if e.max_detections.is_some() {
        m.max_detections = e.max_detections;
    }
    if let Some(v) = e.engine {
        m.engine = v;
    }
    Ok(m)
}

/// `[models]`: the built-ins, overridden and extended by the file's tables.
pub(super) fn deserialize_registry<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ModelConfig>, D::Error> {
    let written = BTreeMap::<String, ModelEntry>::deserialize(d)?;
    let mut models = builtin_models();
    for (name, entry) in written {
        let m = resolve_entry(&name, entry).map_err(serde::de::Error::custom)?;
        models.insert(name, m);
    }
    Ok(models)
}

impl ModelConfig {
    /// Labels, defaulting to COCO.
    pub fn labels(&self) -> Vec<String> {
        self.labels.clone().unwrap_or_else(|| COCO_LABELS.iter().map(|s| s.to_string()).collect())
    }

    /// Checks the keys against the family, naming `models.NAME` in errors.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let fam = self.family;
        let at = format!("models.{name} (family {fam})");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(format!("models.{name:?}: a model name uses only letters, digits, '_', '-' and '.'"));
        }
        let (n, what) = fam.files_expected();
        if self.files.len() != n {
            let found = if self.files.is_empty() { "no `files` key (or an empty list)".to_string() } else { format!("{} files", self.files.len()) };
            return Err(format!("{at}: `files` must list {what}; found {found}"));
        }
        if let Some(f) = self.files.iter().find(|f| f.trim().is_empty()) {
            return Err(format!("{at}: `files` has an empty name {f:?}"));
        }
        if fam == ModelFamily::Kmeans && self.engine != ModelEngine::Tract {
            return Err(format!("{at}: `engine` applies to ONNX models; k-means runs no model"));
        }
        if !fam.is_detector() {
            let extra = [
                ("input_size", self.input_size.is_some()),
                ("labels", self.labels.is_some()),
                ("score_threshold", self.score_threshold.is_some()),
                ("nms_threshold", self.nms_threshold.is_some()),
                ("max_detections", self.max_detections.is_some()),
            ];
            if let Some((k, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(format!("{at}: `{k}` does not apply to this family; it takes only `files`"));
            }
            return Ok(());
        }
        match self.input_size {
            Some(s) if (32..=4096).contains(&s) && s % 32 == 0 => {}
            Some(s) => return Err(format!("{at}: input_size is {s}; use a multiple of 32 from 32 to 4096")),
            None => return Err(format!("{at}: input_size is missing")),
        }
        match &self.labels {
            Some(l) if l.is_empty() => return Err(format!("{at}: labels is empty; list the class names in class-id order")),
            Some(l) => {
                if let Some(i) = l.iter().position(|s| s.trim().is_empty()) {
                    return Err(format!("{at}: label {i} is empty"));
                }
            }
            None => return Err(format!("{at}: labels is missing")),
        }
        for (k, v) in [("score_threshold", self.score_threshold), ("nms_threshold", self.nms_threshold)] {
            match v {
                Some(v) if (0.0..=1.0).contains(&v) => {}
                Some(v) => return Err(format!("{at}: {k} is {v}; use a number from 0 to 1")),
                None => return Err(format!("{at}: {k} is missing")),
            }
        }
        match self.max_detections {
            Some(m) if m >= 1 => {}
            _ => return Err(format!("{at}: max_detections must be at least 1")),
        }
        Ok(())
    }
}

