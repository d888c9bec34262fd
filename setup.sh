#!/usr/bin/env bash
# Creates .venv with everything the pipeline and its tests need.
# torch/torchvision are pinned to the builds our offline machines carry on disk
# (shared/spec/offline-assets.md); on your own machine `pip install -e ".[dev]"` is enough.
set -euo pipefail
cd "$(dirname "$0")"

# A JVM for pyspark (the test of img2dataset's pyspark distributor), from Debian's packages.
if ! command -v java >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jre-headless
  else
    echo "setup.sh: no java on PATH; install a JRE (e.g. apt-get install default-jre-headless)" \
      "for the pyspark ingest test" >&2
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]" "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python - <<'PY'
import torch, torchvision
print(f"set-up done: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
