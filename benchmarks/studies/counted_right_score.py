"""Score a model's review signals on every labelled set of ``../shared/data`` (issue 29).

    python benchmarks/studies/counted_right_score.py [--model M.onnx] [--out CACHE.npz]

Per cell: raw logits and the penultimate features of the ONNX graph (an extra output added in
memory, for the study only), the logits of the 8 dihedral views (test-time augmentation), the
card's OOD appearance distance, and the label (-1 for a class the model lacks, e.g. Blast).
Images are decoded and preprocessed as ``wbc-edge run`` does (wbc_edge/model/decode.py, the card's
preprocessing); smear fields are cut by the runtime's own cell finder. The numbers go to one
npz (default: ``$WBC_EDGE_CACHE/counted-right/<model>.npz``, or under ``~/.cache/wbc-edge``)
that ``counted_right.py`` analyses; nothing here is a result.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from wbc_edge.data.manifest import read_manifest
from wbc_edge.kd.fields import read_field_split
from wbc_edge.model import ood
from wbc_edge.model.backends.onnxruntime import open_session, read_onnx_card
from wbc_edge.model.decode import model_min_side, read_image
from wbc_edge.model.labelled import dihedral_views

SHARED = Path("../shared/data")
PBC_SPLIT = Path("benchmarks/results/pbc9-split.csv")
BCCD_SPLIT = Path("benchmarks/results/bccd-split.csv")
LABS = ("deepapl", "lisc", "tecom", "cvblog")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
DEFAULT_MODEL = "wbc_edge/models/student-tinyresnet_xs_wide.onnx"


def default_cache(model: str) -> Path:
    """Where the scores of ``model`` are kept between the two scripts (outside the repository,
    so no record names an absolute path)."""
    root = Path(os.environ.get("WBC_EDGE_CACHE", Path.home() / ".cache" / "wbc-edge"))
    return root / "counted-right" / f"{Path(model).stem}.npz"


def class_folder(root: Path) -> list[tuple[str, str]]:
    return [
        (str(p), d.name)
        for d in sorted(root.iterdir())
        if d.is_dir()
        for p in sorted(d.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]


def sets(card) -> dict[str, list[tuple[object, str]]]:
    """{set name: [(path or crop array, label name)]}."""
    out: dict[str, list[tuple[object, str]]] = {}
    out["pbc9-extra"] = class_folder(SHARED / "pbc9-extra")
    for split in ("val", "test"):
        out[f"pbc9-{split}"] = [(str(r.path), r.label) for r in read_manifest(PBC_SPLIT, split)]
    for lab in LABS:
        out[lab] = class_folder(SHARED / "multilab" / lab)
    from wbc_edge.model.fieldcrop import cells_in_field

    bccd = []
    for name, kind, split in read_field_split(BCCD_SPLIT):
        if split not in ("adapt", "val"):  # the eval fields stay unseen
            continue
        image = read_image(str(SHARED / "bccd-smears" / "JPEGImages" / name))
        bccd += [(c, kind) for c in cells_in_field(image, card.preprocess.crop_scale).crops]
    out["bccd-dev"] = bccd
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", help="the npz [default: default_cache(MODEL)]")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated set names (default: all)")
    args = ap.parse_args()
    import onnx

    card = read_onnx_card(args.model)
    graph = onnx.load(args.model)
    feat_name = next(n.output[0] for n in graph.graph.node if n.op_type == "Flatten")
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(feat_name))
    sess = open_session(graph.SerializeToString(), device="cpu", threads=2, where=args.model)
    pre, names = card.preprocess, card.class_names
    index = {c: i for i, c in enumerate(names)}
    min_side = model_min_side(pre)
    result: dict[str, np.ndarray] = {"class_names": np.array(names)}
    wanted = set(filter(None, args.only.split(",")))
    for set_name, items in sets(card).items():
        if wanted and set_name not in wanted:
            continue
        t0 = time.time()
        logits, feats, tta, dist, y, app = [], [], [], [], [], []
        for s in range(0, len(items), args.batch):
            chunk = items[s : s + args.batch]
            images = [read_image(x, min_side) if isinstance(x, str) else x for x, _ in chunk]
            batch = pre(images)
            views = []
            for k, v in enumerate(dihedral_views(batch, 8)):
                lo, fe = sess.run(["logits", feat_name], {sess.get_inputs()[0].name: v})
                views.append(lo)
                if k == 0:
                    logits.append(lo)
                    feats.append(fe)
            tta.append(np.stack(views, 1))
            if card.ood is not None:
                dist.append(ood.scores(card.ood, images))
            app.append(ood.appearance(images))
            y += [index.get(label, -1) for _, label in chunk]
        result[f"{set_name}/logits"] = np.concatenate(logits).astype(np.float32)
        result[f"{set_name}/features"] = np.concatenate(feats).astype(np.float32)
        result[f"{set_name}/tta"] = np.concatenate(tta).astype(np.float32)
        result[f"{set_name}/ood"] = np.concatenate(dist) if dist else np.zeros(len(y))
        result[f"{set_name}/appearance"] = np.concatenate(app)
        result[f"{set_name}/y"] = np.array(y, np.int64)
        print(f"{set_name}: {len(y)} cells in {time.time() - t0:.0f} s", flush=True)
    result["temperature"] = np.array(card.temperature)
    result["ood_threshold"] = np.array(card.ood.threshold if card.ood else np.nan)
    out = Path(args.out) if args.out else default_cache(args.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **result)
    print(f"scores: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
