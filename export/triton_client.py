"""Classify white-cell crops with a wbc-edge model served by Triton Inference Server.

Stand-alone (numpy, opencv-python and tritonclient[grpc]; no wbc-edge needed): ``wbc-edge export
triton`` copies this file into the model's folder as ``client.py``. The preprocessing comes from
the model's own config: the ``wbc_edge.*`` parameters hold the model card's input size,
mean/std, channel order and interpolation, so the client cannot drift from how the model was
trained::

    python client.py --url localhost:8001 --model student-tinyresnet_xs cell1.jpg cell2.jpg

or from Python::

    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient("localhost:8001")
    print(classify(client, "student-tinyresnet_xs", [cv2.imread("cell.jpg")]))
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

PARAM_PREFIX = "wbc_edge."
_INTERP = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0}  # cv2.INTER_* values


def preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """The card's preprocessing from a model config as JSON (what
    ``client.get_model_config(name, as_json=True)["config"]`` returns)."""
    params = config.get("parameters", {})
    prep = {
        key[len(PARAM_PREFIX) :]: json.loads(value["string_value"])
        for key, value in params.items()
        if key.startswith(PARAM_PREFIX)
    }
    missing = {"input_size", "mean", "std", "channel_order", "interpolation", "class_names"}
    missing -= set(prep)  # crop_fraction / crop_aspect are absent for models made before them
    if missing:
        raise ValueError(f"model config lacks wbc_edge parameters {sorted(missing)}")
    if prep.get("stain"):  # a step this stand-alone client does not carry out
        raise ValueError(
            "the model's card declares stain normalisation, which this client does not "
            "implement: classify with `wbc-edge run` (or the wbc_edge Python API) instead"
        )
    return prep


def preprocess(images_bgr: list[np.ndarray], prep: dict[str, Any]) -> np.ndarray:
    """BGR uint8 images (as ``cv2.imread`` gives) -> the float32 NCHW batch the model takes:
    centred crop (``crop_fraction`` of the side, window shape ``crop_aspect``), square resize
    to the input size, channel order, ``(x / 255 - mean) / std``."""
    import cv2

    size = int(prep["input_size"])
    fraction, aspect = float(prep.get("crop_fraction", 1.0)), prep.get("crop_aspect")
    out = []
    for image in images_bgr:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if fraction != 1.0 or aspect is not None:
            y0, y1, x0, x1 = _crop_window(*image.shape[:2], fraction, aspect)
            image = image[y0:y1, x0:x1]
        h, w = image.shape[:2]
        if (h, w) != (size, size):
            interp = prep["interpolation"]
            if interp == "area" and (h < size or w < size):  # area only anti-aliases shrinking
                interp = "linear"
            image = cv2.resize(image, (size, size), interpolation=_INTERP[interp])
        if prep["channel_order"] == "RGB":
            image = image[:, :, ::-1]
        out.append(image)
    x = np.stack(out).astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(prep["mean"], np.float32)
    x /= np.asarray(prep["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _crop_window(height: int, width: int, fraction: float, aspect: float | None) -> tuple:
    """The largest centred window of shape ``aspect`` (width / height; None: the image's own),
    scaled by ``fraction``; at least one pixel each way."""
    if aspect is None:
        h, w = height * fraction, width * fraction
    elif width / height >= aspect:
        h = height * fraction
        w = h * aspect
    else:
        w = width * fraction
        h = w / aspect
    h, w = max(1, min(height, round(h))), max(1, min(width, round(w)))
    y0, x0 = (height - h) // 2, (width - w) // 2
    return y0, y0 + h, x0, x0 + w


def classify(client: Any, model: str, images_bgr: list[np.ndarray]) -> list[tuple[str, float]]:
    """(class, probability) per image through a ``tritonclient.grpc`` client."""
    import tritonclient.grpc as grpcclient

    config = client.get_model_config(model, as_json=True)["config"]
    prep = preprocessing(config)
    batch = preprocess(images_bgr, prep)
    request = grpcclient.InferInput(config["input"][0]["name"], list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    result = client.infer(model, [request], outputs=[grpcclient.InferRequestedOutput("probs")])
    names = prep["class_names"]
    return [(names[int(p.argmax())], float(p.max())) for p in result.as_numpy("probs")]


def main() -> None:
    import cv2
    import tritonclient.grpc as grpcclient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--url", default="localhost:8001", help="Triton's gRPC address")
    parser.add_argument("--model", required=True, help="model name in the repository")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    images = [cv2.imread(p, cv2.IMREAD_COLOR) for p in args.images]
    for path, (label, prob) in zip(args.images, classify(client, args.model, images), strict=True):
        print(f"{path}\t{label}\t{prob:.3f}")


if __name__ == "__main__":
    main()
