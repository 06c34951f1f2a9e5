//! The model registry end to end: a YOLO-format ONNX model built by the test
//! itself (a hand-encoded ModelProto whose output is a known tensor),
//! registered through a TOML config, loaded by name through the worker's own
//! start-up path (`WorkerConfig::local` + `load_analyses`), run on a
//! frame and decoded: letterbox mapping back to frame pixels, thresholds,
//! per-class NMS, labels.

use std::path::Path;

use panoptes_common::config::{Config, WorkerConfig, WorkerFlags};
use panoptes_worker::analysis::RgbFrame;
use panoptes_worker::node::load_analyses;
use serde_json::{json, Value};

/// A minimal protobuf writer, enough for the ONNX messages used here.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
        varint(out, ((field << 3) | wire) as u64);
    }
    pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        key(out, field, 0);
        varint(out, v as u64);
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(out, field, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        bytes(out, field, s.as_bytes());
    }
}

/// TensorProto: FLOAT with dims and raw little-endian data.
fn tensor(name: &str, dims: &[i64], data: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        pb::int(&mut t, 1, d);
    }
    pb::int(&mut t, 2, 1); // FLOAT
    pb::string(&mut t, 8, name);
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    pb::bytes(&mut t, 9, &raw);
    t
}

/// ValueInfoProto of a FLOAT tensor with a fixed shape.
fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        pb::int(&mut dim, 1, d);
        pb::bytes(&mut shape, 1, &dim);
    }
    let mut tensor_type = Vec::new();
    pb::int(&mut tensor_type, 1, 1);
    pb::bytes(&mut tensor_type, 2, &shape);
    let mut ty = Vec::new();
    pb::bytes(&mut ty, 1, &tensor_type);
    let mut vi = Vec::new();
    pb::string(&mut vi, 1, name);
    pb::bytes(&mut vi, 2, &ty);
    vi
}

/// NodeProto; `attrs` are already-encoded AttributeProtos.
fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        pb::string(&mut n, 1, i);
    }
    for o in outputs {
        pb::string(&mut n, 2, o);
    }
    pb::string(&mut n, 3, &format!("{op}_{}", outputs[0]));
    pb::string(&mut n, 4, op);
    for a in attrs {
        pb::bytes(&mut n, 5, a);
    }
    n
}

fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut a = Vec::new();
    pb::string(&mut a, 1, name);
    for &x in v {
        pb::int(&mut a, 8, x);
    }
    pb::int(&mut a, 20, 7); // INTS
    a
}

fn attr_int(name: &str, v: i64) -> Vec<u8> {
    let mut a = Vec::new();
    pb::string(&mut a, 1, name);
    pb::int(&mut a, 3, v);
    pb::int(&mut a, 20, 2); // INT
    a
}

/// An ONNX model with input `images` `[1,3,size,size]` whose one output is
/// `pred` (shape `dims`) + 0 × mean(images): the crafted tensor, still
/// depending on the input so it is a real graph, not a lone constant.
fn onnx_model(size: i64, dims: &[i64], pred: &[f32]) -> Vec<u8> {
    let mut g = Vec::new();
    pb::bytes(
        &mut g,
        1,
        &node(
            "ReduceMean",
            &["images"],
            &["mean"],
            &[attr_ints("axes", &[1, 2, 3]), attr_int("keepdims", 0)],
        ),
    );
    pb::bytes(
        &mut g,
        1,
        &node("Mul", &["mean", "zero"], &["nothing"], &[]),
    );
    pb::bytes(
        &mut g,
        1,
        &node("Add", &["pred", "nothing"], &["output0"], &[]),
    );
    pb::string(&mut g, 2, "crafted_yolo");
    pb::bytes(&mut g, 5, &tensor("pred", dims, pred));
    pb::bytes(&mut g, 5, &tensor("zero", &[1], &[0.0]));
    pb::bytes(&mut g, 11, &value_info("images", &[1, 3, size, size]));
    pb::bytes(&mut g, 12, &value_info("output0", dims));
    let mut m = Vec::new();
    pb::int(&mut m, 1, 7); // ir_version
    pb::string(&mut m, 2, "panoptes-test");
    pb::bytes(&mut m, 7, &g);
    let mut opset = Vec::new();
    pb::string(&mut opset, 1, "");
    pb::int(&mut opset, 2, 13);
    pb::bytes(&mut m, 8, &opset);
    m
}

/// A YOLOv8 output `[1, 4+nc, N]` from rows `(cx, cy, w, h, scores…)`.
fn v8_tensor(anchors: &[[f32; 7]]) -> Vec<f32> {
    let n = anchors.len();
    let mut out = vec![0f32; 7 * n];
    for (i, a) in anchors.iter().enumerate() {
        for (k, v) in a.iter().enumerate() {
            out[k * n + i] = *v;
        }
    }
    out
}

fn config(dir: &Path, models_toml: &str, worker_models: &str) -> Config {
    let text = format!(
        "[worker]\nmodels_dir = {:?}\nmodels = {worker_models}\n{models_toml}",
        dir.display().to_string()
    );
    let cfg = Config::from_toml(&text, Path::new("test.toml")).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// A 128×64 frame: letterboxed into 64×64 at scale 0.5, 16 px bars top and
/// bottom.
fn frame() -> RgbFrame {
    RgbFrame::new(128, 64, vec![90; 128 * 64 * 3])
}

const SIZE: i64 = 64;

#[test]
fn a_yolov8_model_registered_in_config_is_loaded_by_name_and_decoded() {
    let dir = tempfile::tempdir().unwrap();
    // 3 classes; anchors (cx, cy, w, h) in letterbox pixels, then scores.
    let anchors = [
        [32.0, 32.0, 20.0, 10.0, 0.1, 0.2, 0.9], // A: class 2, 0.9
        [33.0, 32.0, 20.0, 10.0, 0.1, 0.2, 0.8], // B: class 2, overlaps A (IoU 0.9): suppressed
        [33.0, 32.0, 20.0, 10.0, 0.7, 0.1, 0.1], // C: class 0, same place, other class: kept
        [10.0, 40.0, 8.0, 8.0, 0.2, 0.29, 0.1],  // D: below 0.3: dropped
        [60.0, 20.0, 16.0, 12.0, 0.1, 0.6, 0.1], // E: class 1, crosses the right edge: clipped
        [5.0, 45.0, 6.0, 6.0, 0.5, 0.3, 0.3],    // F: class 0, 0.5
    ];
    let nc = 3;
    let n = anchors.len() as i64;
    std::fs::write(
        dir.path().join("mydet.onnx"),
        onnx_model(SIZE, &[1, 4 + nc, n], &v8_tensor(&anchors)),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        r#"
        [models.mydet]
        family = "yolov8"
        files = ["mydet.onnx"]
        input_size = 64
        labels = ["cat", "dog", "bird"]
        score_threshold = 0.3
        nms_threshold = 0.5
        "#,
        r#"["mydet", "colors"]"#,
    );
    let opts = WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap();
    let analyses = load_analyses(&opts).unwrap();
    assert!(analyses.contains_key("colors"));
    let det = &analyses["mydet"];
    assert_eq!(det.name(), "mydet");
    let got = det.analyze(&frame()).unwrap();
    // Back to the frame: x = x' / 0.5, y = (y' − 16) / 0.5.
    let want = json!([
        {"label": "bird", "class_id": 2, "score": 0.9, "box": [44.0, 22.0, 40.0, 20.0]},
        {"label": "cat", "class_id": 0, "score": 0.7, "box": [46.0, 22.0, 40.0, 20.0]},
        // x' 52..68 -> 104..136, clipped to 128; y' 14..26 -> -4..20, clipped to 0
        {"label": "dog", "class_id": 1, "score": 0.6, "box": [104.0, 0.0, 24.0, 20.0]},
        // x' 2..8 -> 4..16; y' 42..48 -> 52..64
        {"label": "cat", "class_id": 0, "score": 0.5, "box": [4.0, 52.0, 12.0, 12.0]},
    ]);
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());

    // max_detections and a stricter threshold, same file, another name.
    let cfg = config(
        dir.path(),
        r#"
        [models.top2]
        family = "yolov8"
        files = ["mydet.onnx"]
        input_size = 64
        labels = ["cat", "dog", "bird"]
        score_threshold = 0.3
        nms_threshold = 0.5
        max_detections = 2
        "#,
        r#"["top2"]"#,
    );
    let analyses = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap()).unwrap();
    let got = analyses["top2"].analyze(&frame()).unwrap();
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(got[1]["label"], "cat");
}

#[test]
fn a_yolov5_model_multiplies_objectness() {
    let dir = tempfile::tempdir().unwrap();
    // [1, N, 5+nc], nc = 2: cx, cy, w, h, objectness, c0, c1
    let rows: [[f32; 7]; 3] = [
        [32.0, 32.0, 10.0, 10.0, 0.5, 0.2, 0.8], // class 1, 0.4
        [20.0, 30.0, 4.0, 4.0, 0.9, 0.9, 0.1],   // class 0, 0.81
        [40.0, 40.0, 4.0, 4.0, 0.3, 0.9, 0.9],   // 0.27 < 0.3: dropped
    ];
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    std::fs::write(
        dir.path().join("v5.onnx"),
        onnx_model(SIZE, &[1, 3, 7], &data),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "[models.v5]\nfamily = \"yolov5\"\nfiles = [\"v5.onnx\"]\ninput_size = 64\nlabels = [\"a\", \"b\"]\nscore_threshold = 0.3\n",
        r#"["v5"]"#,
    );
    let analyses = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap()).unwrap();
    let got = analyses["v5"].analyze(&frame()).unwrap();
    let want = json!([
        {"label": "a", "class_id": 0, "score": 0.81, "box": [36.0, 24.0, 8.0, 8.0]},
        {"label": "b", "class_id": 1, "score": 0.4, "box": [54.0, 22.0, 20.0, 20.0]},
    ]);
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn a_wrong_output_shape_or_missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.onnx");
    // [1, 6, 2] is YOLOv8 for 2 classes, but 3 labels are configured.
    std::fs::write(&path, onnx_model(SIZE, &[1, 6, 2], &[0.0; 12])).unwrap();
    let cfg = config(
        dir.path(),
        "[models.bad]\nfamily = \"yolov8\"\nfiles = [\"bad.onnx\"]\ninput_size = 64\nlabels = [\"a\", \"b\", \"c\"]\n",
        r#"["bad"]"#,
    );
    let err = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "model file {}: expected a YOLOv8 output [1,7,N]",
            path.display()
        )) && msg.contains("found [1,6,2]"),
        "{msg}"
    );
    assert!(msg.contains("cannot load analysis 'bad'"), "{msg}");

    let cfg = config(
        dir.path(),
        "[models.gone]\nfamily = \"yolov5\"\nfiles = [\"gone.onnx\"]\n",
        r#"["gone"]"#,
    );
    let err = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "model file {}: not found",
            dir.path().join("gone.onnx").display()
        )),
        "{msg}"
    );

    // Not an ONNX file at all.
    std::fs::write(dir.path().join("junk.onnx"), b"not a model").unwrap();
    let cfg = config(
        dir.path(),
        "[models.junk]\nfamily = \"yolov8\"\nfiles = [\"junk.onnx\"]\n",
        r#"["junk"]"#,
    );
    let err = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "model file {}: not a loadable ONNX model",
            dir.path().join("junk.onnx").display()
        )),
        "{msg}"
    );
}

#[test]
fn builtins_under_the_registry_still_name_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[models.objects]\nfiles = [\"my_nanodet.onnx\"]\n",
        r#"["colors", "objects"]"#,
    );
    let err = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "model file {}: not found",
            dir.path().join("my_nanodet.onnx").display()
        )),
        "{msg}"
    );
    // colors needs no file
    let cfg = config(dir.path(), "", r#"["colors"]"#);
    let analyses = load_analyses(&WorkerConfig::local(&cfg, WorkerFlags::named("w1")).unwrap()).unwrap();
    let v: Value = analyses["colors"].analyze(&frame()).unwrap();
    assert_eq!(v[0]["color"], "#5a5a5a");
}
