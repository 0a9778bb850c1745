"""What a training run measures on its train crops for the model card: the crops' scale (the
finder's field of view), the appearance statistics of the out-of-distribution score, and the
stain reference. Also used by ``wbc_edge.models.refresh`` and ``kd.adapt``."""

from __future__ import annotations

from wbc_edge.kd.run_folder import RunLog
from wbc_edge.model.card import Preprocess
from wbc_edge.model.ood import OodStats
from wbc_edge.model.scale import CropScale
from wbc_edge.model.stain import StainReference


def training_scale(rows: list, log: RunLog) -> CropScale | None:  # rows: list[ManifestRow]
    """The training crops' scale for the card; None (logged) when the crops show no red cell."""
    from wbc_edge.model.scale import measure_files

    try:
        scale = measure_files([str(r.path) for r in rows])
    except ValueError as exc:
        log(f"crop scale: not recorded ({exc}); the finder will crop by box + margin")
        return None
    log(
        f"crop scale: red cells {scale.rbc_px:.1f} px (IQR {scale.rbc_px_q25:.1f}-"
        f"{scale.rbc_px_q75:.1f}) in {scale.crop_px:.0f} px crops = field of view "
        f"{scale.fov_rbc:.2f} red-cell diameters ({scale.measured}/{scale.sampled} crops)"
    )
    return scale


def training_ood(rows: list, log: RunLog) -> OodStats | None:  # rows: list[ManifestRow]
    """Appearance statistics of the train crops for the card's out-of-distribution score."""
    from wbc_edge.model import ood
    from wbc_edge.model.decode import read_image
    from wbc_edge.model.scale import DEFAULT_SCALE_SAMPLE, evenly_spaced

    paths = evenly_spaced([str(r.path) for r in rows], DEFAULT_SCALE_SAMPLE)
    try:
        stats = ood.fit([read_image(p) for p in paths])
    except ValueError as exc:
        log(f"OOD statistics: not recorded ({exc})")
        return None
    log(f"OOD statistics: {stats.fitted_on} train crops, threshold {stats.threshold:.2f}")
    return stats


def training_stain(rows: list, pre: Preprocess, over: str, log: RunLog) -> StainReference:
    """The stain reference for the card: the train crops' Lab statistics (over ``over``'s
    pixels, :mod:`wbc_edge.model.stain`), taken on the crops as ``pre`` resizes them, because
    that is where the runtime normalises."""
    from wbc_edge.model import stain
    from wbc_edge.model.decode import read_image
    from wbc_edge.model.scale import DEFAULT_SCALE_SAMPLE, evenly_spaced

    plain = pre.replace(stain=None, channel_order="BGR")  # the statistics are of BGR crops
    paths = evenly_spaced([str(r.path) for r in rows], DEFAULT_SCALE_SAMPLE)
    ref = stain.fit([plain.resize(read_image(p)) for p in paths], over)
    log(
        f"stain reference: Lab mean {', '.join(f'{v:.1f}' for v in ref.mean)}, std "
        f"{', '.join(f'{v:.1f}' for v in ref.std)} over {over} pixels of {ref.fitted_on} crops"
    )
    return ref
