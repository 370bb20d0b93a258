# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=

# What a processor without AVX-512 runs: PyTorch's kernels, oneDNN's, MKL's and OpenCV's dispatch
# capped at AVX2 (docs/reproducibility.md). `make test-avx2` runs the suite that way.
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX

.PHONY: demo quick test test-avx2 install clean

demo: $(VENV)/.installed
	$(BIN)/synthdet demo $(DEMO_ARGS)

quick: $(VENV)/.installed
	$(BIN)/synthdet demo --quick

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-avx2: $(VENV)/.installed
	$(AVX2_ENV) $(BIN)/python -c "import cv2, torch; cap = torch.backends.cpu.get_cpu_capability(); \
	assert cap in ('AVX2', 'DEFAULT'), cap; assert 'AVX512' not in cv2.getCPUFeaturesLine().replace('AVX512-SKX?', ''); \
	print('AVX-512 off: PyTorch', cap, '| OpenCV', cv2.getCPUFeaturesLine())"
	$(AVX2_ENV) $(BIN)/python -m pytest -q

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info
