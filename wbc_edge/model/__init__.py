"""The model core: everything that runs a model, and nothing that depends on the application.

The card (:mod:`.card`), preprocessing (decode, image checks, stain and scale, the field-to-crop
rule of :mod:`.fieldcrop`), the backends (:mod:`.backends`), class roles, the OOD check, the
review rule (:mod:`.review`) and labelled-set scoring live here, and :class:`~.model.Model` puts
them together: ``Model.load(path)`` is the one way to run a model. numpy, OpenCV and one
inference backend; never torch at import (a ``.pt`` file's backend imports it when opened),
never ``wbc_edge.runtime``, ``kd``, ``export`` or ``benchmarks``, which all stand on it.
"""
