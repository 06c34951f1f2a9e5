//! Loading ONNX files into runnable plans, with errors that name the file and
//! what was wrong. Two engines: tract (the default, pure Rust, optimised
//! plans fixed to a concrete input shape) and onnxruntime (`engine =
//! "onnxruntime"` in the model registry: the `ort` crate over a
//! libonnxruntime.so loaded at run time).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tract_onnx::prelude::*;

use super::ModelError;

/// Which engine runs a model (`engine` in the model registry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    Tract,
    /// onnxruntime, from this shared library (`worker.onnxruntime_library`).
    Onnxruntime { library: PathBuf },
}

/// A runnable plan; `run` takes `&self` and is safe to call from several
/// threads at once.
#[derive(Clone)]
pub(crate) enum Plan {
    /// An optimised tract plan (each call makes its own state).
    Tract(Arc<TypedRunnableModel>),
    Ort(Arc<OrtPlan>),
}

/// onnxruntime sessions of one model file. A session runs one call at a
/// time (`Session::run` takes `&mut self`), so there is one per core, each
/// with one intra-op thread: frames run in parallel across sessions, as they
/// do across tract states, and the worker's `threads` permits bound them.
pub(crate) struct OrtPlan {
    sessions: Vec<Mutex<ort::session::Session>>,
    next: AtomicUsize,
    /// Output shapes for the input shape the plan was loaded with (from a
    /// run on zeros at load time).
    shapes: Vec<Vec<Option<usize>>>,
}

/// The onnxruntime environment: the library is loaded once per process.
static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn ort_environment(library: &Path) -> Result<&'static ort::environment::Environment, ModelError> {
    let env = ORT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "the onnxruntime library {} does not exist: set worker.onnxruntime_library to a libonnxruntime.so \
                 (the onnxruntime wheel from PyPI ships one in onnxruntime/capi/; `cargo xtask models` fetches it into the models \
                 directory), or set engine = \"tract\" for this model",
                library.display()
            ));
        }
        ort::init_from(library)
            .map_err(|e| format!("cannot load the onnxruntime library {}: {e} (worker.onnxruntime_library)", library.display()))?
            .with_name("panoptes")
            .build()
            .map_err(|e| format!("onnxruntime from {} did not start: {e}", library.display()))
    });
    env.as_ref().map_err(|reason| ModelError::Engine { reason: reason.clone() })
}

/// Checks that `path` is a regular file, with the usual errors.
fn check_file(path: &Path) -> Result<(), ModelError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ModelError::Invalid { path: path.into(), reason: "not a regular file".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ModelError::NotFound { path: path.into() }),
        Err(source) => Err(ModelError::Io { path: path.into(), source }),
    }
}

/// Loads `path` for input 0 of the f32 `shape` with `engine`.
pub(crate) fn load(engine: &Engine, path: &Path, shape: &[usize]) -> Result<Plan, ModelError> {
    match engine {
        Engine::Tract => plan(path, read(path)?, shape),
        Engine::Onnxruntime { library } => load_ort(library, path, shape),
    }
}

fn load_ort(library: &Path, path: &Path, shape: &[usize]) -> Result<Plan, ModelError> {
    check_file(path)?;
    let env = ort_environment(library)?;
    let invalid = |reason: String| ModelError::Invalid { path: path.into(), reason };
    let count = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        let s = ort::session::Session::builder(env)
            .map_err(|e| invalid(e.to_string()))?
            .with_intra_threads(1)
            .and_then(|b| b.with_inter_threads(1))
            .map_err(|e| invalid(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| invalid(e.to_string()))?;
        sessions.push(Mutex::new(s));
    }
    let inputs = sessions[0].lock().unwrap().inputs().len();
    if inputs != 1 {
        return Err(ModelError::Layout { path: path.into(), expected: "one input".into(), found: format!("{inputs} inputs") });
    }
    let mut plan = OrtPlan { sessions, next: AtomicUsize::new(0), shapes: Vec::new() };
    // One run on zeros: checks the shape, gives concrete output shapes, warms up.
    let n: usize = shape.iter().product();
    let out = plan.run(shape, vec![0.0; n]).map_err(|e| ModelError::Unusable {
        path: path.into(),
        input: format!("an f32 input {shape:?}"),
        reason: format!("{e:#}"),
    })?;
    plan.shapes = out.iter().map(|v| v.shape().iter().map(|&d| Some(d)).collect()).collect();
    Ok(Plan::Ort(Arc::new(plan)))
}

impl OrtPlan {
    fn run(&self, shape: &[usize], data: Vec<f32>) -> anyhow::Result<TVec<TValue>> {
        // A free session, starting from the next in turn; else wait for that one.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        let mut session = (0..n)
            .find_map(|i| self.sessions[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.sessions[start % n].lock().unwrap_or_else(|e| e.into_inner()));
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let input = ort::value::Tensor::from_array((dims, data))?;
        let outputs = session.run(ort::inputs![input])?;
        let mut out = TVec::new();
        for (_, v) in outputs.iter() {
            let (s, values) = v.try_extract_tensor::<f32>()?;
            let dims: Vec<usize> = s.iter().map(|&d| d.max(0) as usize).collect();
            out.push(Tensor::from_shape(&dims, values)?.into_tvalue());
        }
        Ok(out)
    }
}

/// Parses an ONNX file (not yet typed or optimised).
pub(crate) fn read(path: &Path) -> Result<InferenceModel, ModelError> {
    check_file(path)?;
    tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| ModelError::Invalid {
            path: path.into(),
            reason: format!("{e:#}"),
        })
}

/// Fixes input 0 to the concrete f32 `shape`, then types, optimises and
/// plans the model.
pub(crate) fn plan(
    path: &Path,
    model: InferenceModel,
    shape: &[usize],
) -> Result<Plan, ModelError> {
    let inputs = model.inputs.len();
    if inputs != 1 {
        return Err(ModelError::Layout {
            path: path.into(),
            expected: "one input".into(),
            found: format!("{inputs} inputs"),
        });
    }
    let expected = format!("an f32 input {shape:?}");
    let unusable = |e: TractError| ModelError::Unusable {
        path: path.into(),
        input: expected.clone(),
        reason: format!("{e:#}"),
    };
    model
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map(Plan::Tract)
        .map_err(unusable)
}

/// The output shapes of a plan, `None` for a dimension that is not concrete.
pub(crate) fn output_shapes(plan: &Plan) -> Vec<Vec<Option<usize>>> {
    let plan = match plan {
        Plan::Tract(p) => p,
        Plan::Ort(p) => return p.shapes.clone(),
    };
    let model = plan.model();
    (0..model.outputs.len())
        .map(|i| match model.output_fact(i) {
            Ok(f) => f
                .shape
                .iter()
                .map(|d| d.as_i64().map(|v| v as usize))
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect()
}

/// Renders shapes as `[1,169,80], [1,n,44]` for error messages.
pub(crate) fn fmt_shapes(shapes: &[Vec<Option<usize>>]) -> String {
    let one = |s: &Vec<Option<usize>>| {
        let dims: Vec<String> = s
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        format!("[{}]", dims.join(","))
    };
    let all: Vec<String> = shapes.iter().map(one).collect();
    if all.is_empty() {
        "no outputs".into()
    } else {
        all.join(", ")
    }
}

/// Runs a plan on one f32 tensor of `shape` holding `data`.
pub(crate) fn run(plan: &Plan, shape: &[usize], data: Vec<f32>) -> anyhow::Result<TVec<TValue>> {
    match plan {
        Plan::Tract(p) => {
            let input = tract_ndarray::ArrayD::from_shape_vec(shape, data)?;
            p.run(tvec!(Tensor::from(input).into_tvalue()))
        }
        Plan::Ort(p) => p.run(shape, data),
    }
}

/// An output as a contiguous f32 slice, checking its length.
pub(crate) fn as_f32<'a>(v: &'a TValue, len: usize, what: &str) -> anyhow::Result<&'a [f32]> {
    let s = v.try_as_plain_ram()?.as_slice::<f32>()?;
    anyhow::ensure!(
        s.len() == len,
        "{what}: expected {len} values, got {} (shape {:?})",
        s.len(),
        v.shape()
    );
    Ok(s)
}
