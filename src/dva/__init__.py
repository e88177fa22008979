"""dva: fine-grained image retrieval with Dual-Vision Adaptation (DVA).

A frozen pre-trained backbone, tiny In-Context Adaptation bottlenecks (:mod:`dva.ica`),
object/background views in training (:mod:`dva.opa`) and distillation from the object view into
the plain encoder (:mod:`dva.dpt`). At query time only the original image runs.

>>> from dva import DVAConfig, build_model
>>> model = build_model(DVAConfig(), num_classes=100)   # bundled ImageNet MobileNetV2 + ICA
>>> emb = model.embed(images)                            # (B, 1280), L2-normalised
"""
from dva.config import DVAConfig, load_config

__all__ = ["DVAConfig", "DVAModel", "build_model", "count_parameters", "evaluate", "load_config",
           "load_checkpoint", "load_embedder"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import dva` (every `dva` command, `dva --help` too) must not import torch and timm,
    # seconds on a small machine; the model's names load them when first used.
    if name in ("DVAModel", "build_model", "count_parameters"):
        from dva import model

        return getattr(model, name)
    if name == "load_checkpoint":
        from dva.checkpoint import load_checkpoint

        return load_checkpoint
    if name == "evaluate":
        from dva.evaluation import evaluate

        return evaluate
    if name == "load_embedder":
        from dva.runtime.load import load_embedder

        return load_embedder
    raise AttributeError(name)
