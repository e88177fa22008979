"""Running a model: the embedder protocol, torch and onnxruntime embedders, ONNX export, frozen runners.

Modules, in the order they import each other (a module imports only those above it):

* :mod:`dva.runtime.protocol`: :class:`EmbedderLike`, what retrieval and evaluation need of a
  model, and the batching helpers every runtime shares;
* :mod:`dva.runtime.sessions`: onnxruntime sessions, providers and availability (one factory);
* :mod:`dva.runtime.cache`: where exported graphs are kept (``$DVA_CACHE``);
* :mod:`dva.runtime.torch_embedder`: :class:`Embedder`, backbone + adapters in torch;
* :mod:`dva.runtime.onnx_export`: the embedder as one ONNX graph, adapters merged or folded;
* :mod:`dva.runtime.onnx_embedder`: the same embedder run by onnxruntime from that file;
* :mod:`dva.runtime.frozen`: the frozen prefix below the first adapter (training's cache);
* :mod:`dva.runtime.load`: :func:`load_embedder`, a checkpoint or a frozen backbone on a runtime.
"""

# The runtimes a command can ask for. ``auto``: onnxruntime when it is installed, else torch.
RUNTIMES = ("auto", "torch", "onnx")
