"""What each class of a model *is* for a differential count: the class roles of the model card.

A lab's differential is a share of white cells only; nucleated red cells are reported per 100
white cells and platelets apart. Which class is which is declared in the card (``roles``), so
a model trained on other classes (a Myeloblast, a smudge-cell class) says so itself instead of
the user typing substrings on the command line. Cards written before roles existed get them
derived from their class names (:func:`derive_role`), so every existing model keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from wbc_edge.errors import UserError

LEUKOCYTE = "leukocyte"  # a mature white cell: counted in the WBC differential
IMMATURE = "immature"  # an immature granulocyte (promyelocyte ... metamyelocyte): a WBC too
BLAST = "blast"  # a blast of any line: a WBC, and any one raises a flag
NRBC = "nrbc"  # nucleated red cell (erythroblast): per 100 WBC, not inside the WBC %
PLATELET = "platelet"  # counted apart
OTHER = "other"  # artefacts, smudge cells, classes of unknown meaning: counted apart

ROLES = (LEUKOCYTE, IMMATURE, BLAST, NRBC, PLATELET, OTHER)
WBC_ROLES = (LEUKOCYTE, IMMATURE, BLAST)  # the roles whose cells make up the 100 %

# Known class names (letters only, lower case) -> role. PBC's, CellaVision's and Raabin's names,
# BCCD's upper-case ones, and the usual abbreviations.
_KNOWN = {
    LEUKOCYTE: (
        "neutrophil segmentedneutrophil bandneutrophil band segmented seg lymphocyte "
        "reactivelymphocyte variantlymphocyte atypicallymphocyte largegranularlymphocyte "
        "monocyte eosinophil basophil plasmacell wbc leukocyte"
    ),
    IMMATURE: "promyelocyte myelocyte metamyelocyte immaturegranulocyte ig",
    NRBC: "erythroblast normoblast nrbc nucleatedredcell nucleatedrbc nucleatederythrocyte",
    PLATELET: "platelet platelets plt thrombocyte giantplatelet plateletclump",
    OTHER: "artefact artifact smudge smudgecell smudgecells basket basketcell unknown debris",
}
_BY_NAME = {name: role for role, names in _KNOWN.items() for name in names.split()}


def _letters(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def derive_role(class_name: str) -> str:
    """The role of a class from its name; ``other`` when the name is not a known cell type.

    Any ``...blast`` other than an erythroblast or normoblast is a blast (Myeloblast,
    Lymphoblast, Monoblast, Blast).
    """
    key = _letters(class_name)
    if key in _BY_NAME:
        return _BY_NAME[key]
    if key.endswith("blast") or key.endswith("blasts"):
        return BLAST
    return OTHER


def resolve_roles(class_names: Iterable[str], declared: dict[str, str] | None) -> dict[str, str]:
    """Every class's role: the card's declaration, derived from the name where it has none.

    Raises a UserError for a role that does not exist or a class the model does not have.
    """
    names = list(class_names)
    declared = dict(declared or {})
    unknown_classes = sorted(set(declared) - set(names))
    if unknown_classes:
        raise UserError(
            f"model card: roles name classes {unknown_classes} that the model does not have "
            f"(its classes: {', '.join(names)})"
        )
    bad = {c: r for c, r in declared.items() if r not in ROLES}
    if bad:
        raise UserError(f"model card: unknown class roles {bad}; roles are {', '.join(ROLES)}")
    return {c: declared.get(c) or derive_role(c) for c in names}
