"""onnxruntime latency (one thread) on the same files and inputs as
worker/examples/model_latency.rs. Prints one JSON object per line."""
import json, sys, time
import numpy as np
import onnxruntime as ort

CASES = [
    ("nanodet_m_416_coco.onnx", [1, 3, 416, 416]),
    ("mtcnn_pnet.onnx", [1, 288, 384, 3]),
    ("mtcnn_rnet.onnx", [1, 24, 24, 3]),
    ("mtcnn_onet.onnx", [1, 48, 48, 3]),
    ("emotion_mini_xception_fer2013.onnx", [1, 64, 64, 1]),
    ("gender_oarriaga_gray64.onnx", [1, 64, 64, 1]),
]

def main():
    d, iterations = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    for f, shape in CASES:
        s = ort.InferenceSession(f"{d}/{f}", opts, providers=["CPUExecutionProvider"])
        n = int(np.prod(shape))
        x = ((np.arange(n, dtype=np.int64) * 7919) % 255).astype(np.float32) / 255.0 - 0.5
        feed = {s.get_inputs()[0].name: x.reshape(shape)}
        s.run(None, feed)
        t = []
        for _ in range(iterations):
            a = time.perf_counter()
            s.run(None, feed)
            t.append((time.perf_counter() - a) * 1000.0)
        t.sort()
        print(json.dumps({"kind": "model", "model": f, "ort_ms": t[len(t) // 2]}))

main()
