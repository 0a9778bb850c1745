"""Make the reference study's models for `wbc-edge bench`: EfficientNet-B3 (its teacher) and
ResNet-18 (its student), random-init, as checkpoints and ONNX files with model cards.

No offline ImageNet weights exist here for B3 (only EfficientNet-Lite0-2 ship as packages) and
the study's trained weights are not published, so these are timed only: latency and size do not
depend on the weights' values. Their cards say ``extra.untrained = true``; bench then reports
their accuracy as n/a instead of a chance-level number.

    .venv/bin/python benchmarks/studies/bench_reference_models.py --size 224 --out runs/bench
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from wbc_edge.data.manifest import class_names, read_manifest
from wbc_edge.export.onnx_export import export_onnx
from wbc_edge.kd.checkpoint import save_checkpoint
from wbc_edge.kd.students import create_student
from wbc_edge.kd.teacher import create_teacher
from wbc_edge.model.card import ModelCard, Preprocess

RESULTS = Path(__file__).resolve().parents[1] / "results"  # records only live there


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input size in pixels")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--manifest", type=Path, default=RESULTS / "pbc9-split.csv")
    args = ap.parse_args()
    torch.manual_seed(0)
    names = class_names(read_manifest(args.manifest))
    models = {
        "efficientnet_b3": create_teacher("efficientnet_b3", len(names), weights=None),
        "resnet18": create_student("resnet18", len(names)),
    }
    for arch, model in models.items():
        # Random BatchNorm scales: the zero-init of each block's last BN (a training trick) would
        # make folded conv weights all-zero and identical, and the exporter stores identical
        # tensors once, so the file would be smaller than a trained model's.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
        card = ModelCard(
            arch,
            names,
            preprocess=Preprocess(
                input_size=args.size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
            ),
            extra={"untrained": True, "note": "random init: for latency and size only"},
        )
        stem = args.out / f"ref-{arch}-{args.size}"
        save_checkpoint(stem.with_suffix(".pt"), model, card)
        parity = export_onnx(model, card, stem.with_suffix(".onnx"))
        params = sum(p.numel() for p in model.parameters())
        print(f"{stem}.onnx: {params / 1e6:.2f}M parameters; parity {parity.line()}")


if __name__ == "__main__":
    main()
