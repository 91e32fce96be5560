#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels that benchmarks/gpu_check.sh installs on the GPU
# machine, which has Python 3.12 with torch 2.11.0+cu130, numpy, packaging, cloudpickle, pyyaml, tqdm,
# pillow, opencv-python-headless, matplotlib, tensorboard and typing-extensions, and no registry.
#
#   bash benchmarks/prepare_gpu_wheels.sh        # -> .whl/ (git-ignored), about 20 MiB
#
# Exactly these, with every Requires-Dist they need that the GPU image lacks (found with
# `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`, extras skipped):
#   torchrl 0.14.1       needs torch, numpy, packaging, cloudpickle, tensordict, pyvers, hoptorch (cp312)
#   hoptorch 0.1.4       needs torch, pyvers (pure)
#   tensordict 0.14.3    needs torch, numpy, cloudpickle, packaging, importlib_metadata, orjson, pyvers
#   importlib_metadata 8.7.0  needs zipp (in the image); 10.x would also need lazy-importer
#   orjson, pyvers       (orjson: cp312 manylinux; pyvers: pure)
#   hydra-core 1.3.8     needs omegaconf, antlr4-python3-runtime==4.9.*, packaging
#   omegaconf 2.3.1      needs antlr4-python3-runtime==4.9.*, PyYAML
#   antlr4-python3-runtime 4.9.3: sdist only on PyPI, so a wheel is built here (pure Python)
#   gymnasium 1.4.0      needs numpy, cloudpickle, typing-extensions, farama-notifications
#   farama-notifications (pure)
#   ale-py 0.12.1        needs numpy, gymnasium (the Atari ROMs are inside the wheel)
# Versions: the ones this project is tested with (orjson: the newest 3.10, any version serves tensordict).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
rm -rf "$DEST" && mkdir -p "$DEST"  # one version of each: two would stop the install there
PY=${PYTHON:-python3}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
WHEELS=(
  torchrl==0.14.1
  tensordict==0.14.3
  hoptorch==0.1.4
  importlib_metadata==8.7.0
  orjson==3.10.18
  pyvers==0.2.3
  hydra-core==1.3.8
  omegaconf==2.3.1
  gymnasium==1.4.0
  farama-notifications==0.0.6
  ale-py==0.12.1
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" antlr4-python3-runtime==4.9.3
ls -la "$DEST"
du -sh "$DEST"
for whl in "$DEST"/*.whl; do
  echo "== $(basename "$whl")"
  unzip -p "$whl" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done
