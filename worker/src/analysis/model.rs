//! Loading ONNX files into optimised tract plans, with errors that name the
//! file and what was wrong.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::ModelError;

/// An optimised, runnable tract plan; `run` takes `&self` and is safe to call
/// from several threads at once (each call makes its own state).
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Parses an ONNX file (not yet typed or optimised).
pub(crate) fn read(path: &Path) -> Result<InferenceModel, ModelError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(ModelError::Invalid {
                path: path.into(),
                reason: "not a regular file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::NotFound { path: path.into() })
        }
        Err(source) => {
            return Err(ModelError::Io {
                path: path.into(),
                source,
            })
        }
    }
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
        .map_err(unusable)
}

/// The output shapes of a plan, `None` for a dimension that is not concrete.
pub(crate) fn output_shapes(plan: &Plan) -> Vec<Vec<Option<usize>>> {
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
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, data)?;
    plan.run(tvec!(Tensor::from(input).into_tvalue()))
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
