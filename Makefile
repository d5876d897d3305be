# Two entry points for a fresh machine; both create the virtual environment in .venv on
# first use and reuse it afterwards.
#
#   make train    install, unpack CIFAR-10 if needed, run the long-tailed IF 100 job
#   make test     install and run the test suite
#
# Variables: PYTHON (interpreter for the venv), DATA_ARCHIVE (cifar10-jpg.tar.gz),
# DATA_DIR (where it is unpacked), ARGS (extra flags for main.py).

PYTHON ?= python3
VENV ?= .venv
DATA_ARCHIVE ?= ../shared/data/cifar10-jpg.tar.gz
DATA_DIR ?= $(HOME)/.cache/meta-weight-net/data
ARGS ?=

STAMP := $(VENV)/.installed

.PHONY: install train test data

install: $(STAMP)

# Betty 0.2.1 declares Python < 3.11 but runs on 3.11 and later, so it is installed first
# without that check; `pip install -e .` then accepts the betty-ml==0.2.1 pin.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --ignore-requires-python --no-deps betty-ml==0.2.1
	$(VENV)/bin/python -m pip install --quiet -e '.[test,plots]'
	touch $(STAMP)

data: $(DATA_DIR)/cifar10-jpg/train

$(DATA_DIR)/cifar10-jpg/train:
	@test -f "$(DATA_ARCHIVE)" || { echo "error: $(DATA_ARCHIVE) not found; pass DATA_ARCHIVE=path/to/cifar10-jpg.tar.gz" >&2; exit 2; }
	mkdir -p "$(DATA_DIR)"
	tar xzf "$(DATA_ARCHIVE)" -C "$(DATA_DIR)"

train: install data
	$(VENV)/bin/python main.py --dataset cifar10 --imbalanced_factor 100 \
		--data_root "$(DATA_DIR)/cifar10-jpg" $(ARGS)

test: install
	DATA_ARCHIVE="$(DATA_ARCHIVE)" $(VENV)/bin/python -m pytest
