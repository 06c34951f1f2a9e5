"""The baseline a user would write instead of Panoptes: one Python process
that decodes a clip with PyAV and runs the analyses of docs/ANALYSIS_SPEC.md
(objects, joy, colors) with onnxruntime on the CPU, numpy and Pillow.

Needs: pip install onnxruntime numpy pillow av

    python_loop.py CLIP --models objects,joy,colors --models-dir DIR
                   [--frame-step N] [--threads 2] [--out FILE.jsonl] [--max-frames N]

Writes one JSON object per (frame, model) to --out (if given), in the form of
`panoptes results --json`, and prints one JSON summary line on stdout:
frames analysed, seconds from the first decode to the last result (model
loading excluded), fps, load_seconds, per_model_seconds, threads, onnxruntime.
"""
import argparse
import json
import math
import os
import sys
import time

import av
import numpy as np
import onnxruntime as ort
from PIL import Image

BILINEAR = Image.Resampling.BILINEAR
TARGET_HEIGHT = 720

COCO = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
        "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
        "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
        "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
        "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
        "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
        "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
        "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
        "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
        "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
        "toothbrush"]
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
GENDERS = ["woman", "man"]


# ---------------------------------------------------------------- helpers

def round_half_up(v, decimals=0):
    p = 10.0 ** decimals
    return math.floor(v * p + 0.5) / p


def resize(img, w, h):
    """The spec's bilinear: Pillow's antialiased BILINEAR on uint8."""
    return np.asarray(Image.fromarray(img).resize((w, h), BILINEAR))


def gray_of(rgb):
    """BT.601 luma in integers."""
    c = rgb.astype(np.int32)
    return ((299 * c[..., 0] + 587 * c[..., 1] + 114 * c[..., 2] + 500) // 1000).astype(np.uint8)


def nms(boxes, scores, thr, mode="union"):
    """Greedy NMS; candidates in descending score, ties in input order."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        with np.errstate(divide="ignore", invalid="ignore"):
            if mode == "min":
                ov = inter / np.minimum(areas[i], areas[rest])
            else:
                ov = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ov > thr)]
    return np.array(keep, dtype=np.int64)


def clip_box(b, w, h):
    return (min(max(b[0], 0.0), w), min(max(b[1], 0.0), h),
            min(max(b[2], 0.0), w), min(max(b[3], 0.0), h))


def xywh(b):
    """A clipped x1,y1,x2,y2 box as the results' [x, y, w, h], 2 decimals."""
    return [round_half_up(b[0], 2), round_half_up(b[1], 2),
            round_half_up(b[2] - b[0], 2), round_half_up(b[3] - b[1], 2)]


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- objects

class Objects:
    MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
    STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)

    def __init__(self, models_dir, threads):
        self.s = session(os.path.join(models_dir, "nanodet_m_416_coco.onnx"), threads)
        self.input = self.s.get_inputs()[0].name
        self.outputs = [o.name for o in self.s.get_outputs()]

    def __call__(self, rgb):
        H, W = rgb.shape[:2]
        r = resize(rgb, 416, 416).astype(np.float32)
        x = ((r[..., ::-1] - self.MEAN) / self.STD).transpose(2, 0, 1)[None]
        outs = self.s.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        boxes, scores, classes = [], [], []
        for stride in (8, 16, 32):
            g = 416 // stride
            n = g * g
            cls = next(o for o in outs if o.shape == (1, n, 80))[0]
            reg = next(o for o in outs if o.shape == (1, n, 44))[0]
            score = cls.max(1)
            k = np.nonzero(score >= 0.35)[0]
            if k.size == 0:
                continue
            bins = reg[k].reshape(-1, 4, 11).astype(np.float64)
            e = np.exp(bins - bins.max(-1, keepdims=True))
            p = e / e.sum(-1, keepdims=True)
            d = (p * np.arange(11)).sum(-1) * stride
            cx = (k % g + 0.5) * stride
            cy = (k // g + 0.5) * stride
            boxes.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1))
            scores.append(score[k].astype(np.float64))
            classes.append(cls[k].argmax(1))
        if not boxes:
            return []
        boxes, scores, classes = np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)
        kept = []
        for c in np.unique(classes):
            idx = np.nonzero(classes == c)[0]
            kept.extend(idx[nms(boxes[idx], scores[idx], 0.6)])
        kept = np.array(kept, dtype=np.int64)
        # score descending, then lower class id, then candidate order
        kept = kept[np.lexsort((kept, classes[kept], -scores[kept]))][:100]
        out = []
        for i in kept:
            b = boxes[i] * [W / 416, H / 416, W / 416, H / 416]
            out.append({"label": COCO[classes[i]], "class_id": int(classes[i]),
                        "score": round_half_up(float(scores[i]), 4), "box": xywh(clip_box(b, W, H))})
        return out


# ---------------------------------------------------------------- joy

def square(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    l = np.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - l * 0.5
    y1 = b[:, 1] + h * 0.5 - l * 0.5
    return np.stack([x1, y1, x1 + l, y1 + l], 1)


def crop(img, x1, y1, x2, y2):
    """Pixels [x1,x2) x [y1,y2) of img (integer bounds), black outside."""
    h, w = img.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1) + img.shape[2:], dtype=img.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
    return out


class Joy:
    def __init__(self, models_dir, threads):
        m = lambda f: session(os.path.join(models_dir, f), threads)
        self.pnet = m("mtcnn_pnet.onnx")
        self.rnet = m("mtcnn_rnet.onnx")
        self.onet = m("mtcnn_onet.onnx")
        self.emotion = m("emotion_mini_xception_fer2013.onnx")
        self.gender = m("gender_oarriaga_gray64.onnx")

    @staticmethod
    def norm(img):
        return (img.astype(np.float32) - 127.5) / 128.0

    def faces(self, rgb):
        h, w = rgb.shape[:2]
        m = 12.0 / 20.0
        level_boxes, level_scores = [], []
        k = 0
        while min(h, w) * m * 0.709 ** k >= 12:
            scale = m * 0.709 ** k
            k += 1
            img = resize(rgb, math.ceil(w * scale), math.ceil(h * scale))
            reg, prob = self.pnet.run(["bbox_reg", "prob"], {"input": self.norm(img)[None]})
            r, c = np.nonzero(prob[0, :, :, 1] >= 0.6)  # row-major
            if r.size == 0:
                continue
            d = reg[0, r, c].astype(np.float64)
            b = np.stack([(2 * c + 12 * d[:, 0]) / scale, (2 * r + 12 * d[:, 1]) / scale,
                          (2 * c + 12 + 12 * d[:, 2]) / scale, (2 * r + 12 + 12 * d[:, 3]) / scale], 1)
            s = prob[0, r, c, 1].astype(np.float64)
            keep = nms(b, s, 0.5)
            level_boxes.append(b[keep])
            level_scores.append(s[keep])
        if not level_boxes:
            return np.zeros((0, 4)), np.zeros(0)
        b, s = np.concatenate(level_boxes), np.concatenate(level_scores)
        keep = nms(b, s, 0.7)
        b = square(b[keep])
        b, s = self.refine(rgb, b, self.rnet, 24, 0.7, "union")
        if len(b) == 0:
            return b, s
        b, s = self.refine(rgb, square(b), self.onet, 48, 0.8, "min")
        return b, s

    def refine(self, rgb, boxes, net, size, thr, mode):
        crops, kept = [], []
        for bx in boxes:
            x1, y1, x2, y2 = (int(math.floor(v + 0.5)) for v in bx)
            if x2 <= x1 or y2 <= y1:
                continue
            crops.append(resize(crop(rgb, x1, y1, x2, y2), size, size))
            kept.append(bx)  # the regression moves the unrounded box
        if not crops:
            return np.zeros((0, 4)), np.zeros(0)
        outs = dict(zip([o.name for o in net.get_outputs()],
                        net.run(None, {"input": self.norm(np.stack(crops))})))
        prob = outs["prob"][:, 1].astype(np.float64)
        sel = prob >= thr
        b = np.array(kept, dtype=np.float64)[sel]
        d = outs["bbox_reg"][sel].astype(np.float64)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        b = b + d * np.stack([w, h, w, h], 1)
        s = prob[sel]
        keep = nms(b, s, 0.7, mode)
        return b[keep], s[keep]

    def classify(self, sess, gray, box):
        x1, y1, x2, y2 = (int(math.floor(v + 0.5)) for v in box)
        if x2 <= x1 or y2 <= y1:
            return None
        g = resize(gray[y1:y2, x1:x2], 64, 64).astype(np.float32)
        x = ((g / 255.0 - 0.5) * 2.0)[None, :, :, None].astype(np.float32)
        p = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
        i = int(p.argmax())
        return i, float(p[i])

    def __call__(self, rgb):
        H, W = rgb.shape[:2]
        boxes, scores = self.faces(rgb)
        if len(boxes) == 0:
            return []
        gray = gray_of(rgb)
        out = []
        for bx, sc in zip(boxes, scores):
            b = clip_box(bx, W, H)
            emo = self.classify(self.emotion, gray, b)
            big = clip_box((b[0] - 10, b[1] - 10, b[2] + 10, b[3] + 10), W, H)
            gen = self.classify(self.gender, gray, big)
            if emo is None or gen is None:
                continue
            out.append({"face_id": len(out), "box": xywh(b), "score": round_half_up(float(sc), 4),
                        "emotion": EMOTIONS[emo[0]], "emotion_score": round_half_up(emo[1], 4),
                        "gender": GENDERS[gen[0]], "gender_score": round_half_up(gen[1], 4),
                        "joy": EMOTIONS[emo[0]] == "happy"})
        return out


# ---------------------------------------------------------------- colors

class Colors:
    def __init__(self, models_dir, threads):
        pass

    def __call__(self, rgb):
        H, W = rgb.shape[:2]
        L = max(H, W)
        if L > 128:
            f = 128 / L
            nw = 128 if W == L else max(1, int(math.floor(W * f + 0.5)))
            nh = 128 if H == L else max(1, int(math.floor(H * f + 0.5)))
            rgb = resize(rgb, nw, nh)
        px = rgb.reshape(-1, 3)
        pts = px.astype(np.float64)
        n = len(pts)
        k = min(3, len(np.unique(px, axis=0)))
        order = np.argsort(gray_of(px), kind="stable")
        centres = pts[order[[(2 * j + 1) * n // (2 * k) for j in range(k)]]]
        for _ in range(50):
            dist = ((pts[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            assign = dist.argmin(1)  # ties: lower index
            counts = np.bincount(assign, minlength=k)
            new = centres.copy()
            for j in range(k):
                if counts[j]:
                    new[j] = pts[assign == j].mean(0)
            move = np.sqrt(((new - centres) ** 2).sum(1)).max()
            centres = new
            if move <= 1.0:
                break
        out = []
        for j in sorted(range(k), key=lambda j: (-counts[j], j)):
            if counts[j] == 0:
                continue
            r, g, b = (int(math.floor(v + 0.5)) for v in centres[j])
            out.append({"color": f"#{r:02x}{g:02x}{b:02x}", "fraction": round_half_up(counts[j] / n, 4)})
        return out


ANALYSES = {"objects": Objects, "joy": Joy, "colors": Colors}


# ---------------------------------------------------------------- decoding

def to_rgb(frame):
    """swscale bilinear to rgb24, scaled to at most TARGET_HEIGHT rows, with
    swscale's default colour details: YUV read as BT.601, limited range
    (full for yuvj), whatever the stream's tags say."""
    w, h = frame.width, frame.height
    kw = {}
    name = frame.format.name
    if name.startswith(("yuv", "nv")):
        kw = dict(src_colorspace="ITU601", dst_colorspace="ITU601",
                  src_color_range="JPEG" if name.startswith("yuvj") else "MPEG")
    if h > TARGET_HEIGHT:
        w, h = int(math.floor(w * TARGET_HEIGHT / h + 0.5)), TARGET_HEIGHT
        if kw:
            # PyAV's swscale honours the frame's chroma_location when it
            # scales (left-sited H.264 chroma shifts by up to ~60 levels at
            # edges); the spec's plain swscale call does not. A copy of the
            # planes in a fresh frame carries no chroma_location.
            try:
                frame = av.VideoFrame.from_ndarray(frame.to_ndarray(), format=name)
            except (ValueError, TypeError):
                pass
    return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="BILINEAR", **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--models", default="objects,joy,colors")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--frame-step", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--max-frames", type=int, help="stop after this many analysed frames")
    a = ap.parse_args()
    names = [m for m in a.models.split(",") if m]
    for m in names:
        if m not in ANALYSES:
            sys.exit(f"unknown model {m!r} (known: {', '.join(ANALYSES)})")

    t = time.perf_counter()
    analyses = [(m, ANALYSES[m](a.models_dir, a.threads)) for m in names]
    load_seconds = time.perf_counter() - t

    out = open(a.out, "w") if a.out else None
    per_model = {m: 0.0 for m in names}
    frames = 0
    container = av.open(a.clip)
    stream = container.streams.video[0]
    tb = stream.time_base
    pts0 = None
    start = time.perf_counter()
    for n, frame in enumerate(container.decode(stream)):
        pts = frame.pts if frame.pts is not None else 0
        if pts0 is None:
            pts0 = pts
        if n % a.frame_step:
            continue
        ts = float(pts - pts0) * tb.numerator / tb.denominator
        rgb = to_rgb(frame)
        for m, analyse in analyses:
            t = time.perf_counter()
            results = analyse(rgb)
            per_model[m] += time.perf_counter() - t
            if out:
                out.write(json.dumps({"frame": n, "timestamp": ts, "model": m, "results": results}) + "\n")
        frames += 1
        if a.max_frames is not None and frames >= a.max_frames:
            break
    seconds = time.perf_counter() - start
    container.close()
    if out:
        out.close()
    print(json.dumps({"frames": frames, "seconds": round(seconds, 3),
                      "fps": round(frames / seconds, 3) if seconds > 0 else None,
                      "load_seconds": round(load_seconds, 3),
                      "per_model_seconds": {m: round(v, 3) for m, v in per_model.items()},
                      "threads": a.threads, "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
