#!/usr/bin/env bash
# On a GPU machine without network: install the anchor wheels carried in .whl/ into /tmp/site.
# Usage: source benchmarks/setup_device.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
