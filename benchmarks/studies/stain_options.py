"""Which pixels should the Reinhard statistics be taken over? Zero-shot, no retraining.

    python benchmarks/studies/stain_options.py MODEL.pt [MODEL.pt ...]
    python benchmarks/studies/stain_options.py --record /work/scratch-11/stain_exp.json

For each model and option (none; per crop over all pixels; per crop over unstained pixels;
per *field* over the whole field's pixels, unstained or all, with PBC crops as their own field)
it scores the BCCD val and eval fields (field-type accuracy, macro recall N/E/L/M, immature
alarm) and the PBC test accuracy (written to /work/scratch-11/stain_exp.json), the reference
fitted on 400 evenly spaced PBC train crops.
The per-field options need the field beside each crop, which the runtime's one-crop transform
does not have: they are measured here to see whether that would be worth it. ``--record``
merges the table into benchmarks/results/cross-lab.json/.md (section ``stain_options``).
"""

import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from wbc_edge import records
from wbc_edge.benchmarks.studies.cross_lab import _immature_alarm
from wbc_edge.data.manifest import read_manifest
from wbc_edge.kd.fields import field_metrics, field_types, read_field_split
from wbc_edge.model import stain
from wbc_edge.model.decode import read_image
from wbc_edge.model.fieldcrop import cells_in_field
from wbc_edge.model.labelled import check_labels
from wbc_edge.model.model import Model
from wbc_edge.model.review import review_threshold
from wbc_edge.model.scale import evenly_spaced

if sys.argv[1:2] == ["--record"]:
    from wbc_edge.benchmarks.studies.cross_lab import write_results

    done = json.loads(Path(sys.argv[2]).read_text())
    out = Path("benchmarks/results")
    report = json.loads((out / "cross-lab.json").read_text())
    report["stain_options"] = {
        "results": done["results"],
        "refs": done["refs"],
        "command": done.get("command", "python benchmarks/studies/stain_options.py"),
        "load_average": round(done["load"][0], 2),
        "date": done.get("date") or records.utc_date(os.path.getmtime(sys.argv[2])),
        "machine": records.machine_line(),
    }
    write_results(report, out, "cross-lab")
    sys.exit(0)

torch.set_num_threads(1)  # two OpenMP threads on a starved shared CPU spin at their barriers
root = Path("/work/shared/data/bccd-smears")
split = read_field_split("benchmarks/results/bccd-split.csv")
pbc = "benchmarks/results/pbc9-split.csv"
models = sys.argv[1:]
t0 = time.time()
with Model.load(models[0]) as b:
    card0 = b.card
fields = {s: {f: t for f, t, sp in split if sp == s} for s in ("val", "eval")}
crops, fstats = {}, {}
for s in fields:
    for f in fields[s]:
        im = read_image(str(root / "JPEGImages" / f))
        crops[f] = cells_in_field(im, card0.preprocess.crop_scale).crops
        fstats[f] = {
            o: stain.lab_statistics(
                cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), o
            )
            for o in stain.OVER
        }
pbc_test = read_manifest(pbc, "test")
pbc_imgs = [read_image(str(r.path)) for r in pbc_test]
train = read_manifest(pbc, "train")
ref_paths = evenly_spaced([str(r.path) for r in train], 400)
ref_imgs = [read_image(p) for p in ref_paths]
print(f"loaded in {time.time() - t0:.0f}s", flush=True)


def apply_with(im, ref, src):
    lab = cv2.cvtColor(im, cv2.COLOR_BGR2LAB).astype(np.float32)
    mean, std = src[0], np.maximum(src[1], 1.0)
    scale = np.clip(np.asarray(ref.std) / std, 0.25, 4)
    out = lab * scale + (np.asarray(ref.mean) - mean * scale)
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


results = {}
for model in models:
    with Model.load(model) as b:
        card = b.card
        pre = card.preprocess
        bgr = pre.replace(channel_order="BGR")
        thr = review_threshold(None, card)
        refs = {o: stain.fit([bgr.resize(im) for im in ref_imgs], o) for o in stain.OVER}
        opts = os.environ.get("OPTIONS", "none,crop,unstained,field-unstained,field-crop").split(
            ","
        )
        for opt in opts:

            def prep(ims, fkey=None, opt=opt, refs=refs, bgr=bgr, pre=pre, b=b):
                out = []
                for im in ims:
                    x = bgr.resize(im)
                    if opt in ("crop", "unstained"):
                        x = stain.normalize_stain(x, refs[opt])
                    elif opt.startswith("field") and fkey is not None:
                        o = opt.split("-")[1]
                        x = apply_with(x, refs[o], fstats[fkey][o])
                    elif opt.startswith("field"):  # PBC crops: the crop is the field
                        x = stain.normalize_stain(x, refs[opt.split("-")[1]])
                    out.append(cv2.cvtColor(x, cv2.COLOR_BGR2RGB))
                return b.infer(pre.lut(out))

            row = {}
            for s, ev in fields.items():
                probs = {
                    f: prep(crops[f], f) if crops[f] else np.zeros((0, card.num_classes))
                    for f in ev
                }
                m = field_metrics(ev, field_types(probs, card.class_names, thr))
                row[s] = {
                    "acc": m["field_accuracy"],
                    "macro": m["macro_recall_NELM"],
                    "conf": m["confusion"],
                    "alarm": _immature_alarm(probs, card, thr),
                }
            p = prep(pbc_imgs)
            y = check_labels(card, [r.label for r in pbc_test], "the PBC test split")
            row["pbc_test"] = float((p.argmax(1) == y).mean())
            results[f"{model} | {opt}"] = row
            print(
                f"{model} {opt}: val {100 * row['val']['acc']:.1f}% {row['val']['macro']:.2f}, "
                f"eval {100 * row['eval']['acc']:.1f}% {row['eval']['macro']:.2f}, alarm "
                f"{row['eval']['alarm']}, PBC {100 * row['pbc_test']:.1f}%, "
                f"{time.time() - t0:.0f} s",
                flush=True,
            )
Path("/work/scratch-11/stain_exp.json").write_text(
    json.dumps(
        {
            "results": results,
            "refs": {o: r.to_dict() for o, r in refs.items()},
            "load": [records.load_average()],
            "command": "python benchmarks/studies/stain_options.py " + " ".join(models),
        },
        indent=1,
        default=str,
    )
)
