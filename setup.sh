#!/usr/bin/env bash
# Set up .venv on a fresh machine: torch, then the project with every extra. Idempotent: a second call
# is a no-op unless pyproject.toml, this file or the choices below changed.
#
#   bash setup.sh                      # PyPI's torch 2.14.1 (CUDA 13.0: NVIDIA driver 580+, GPUs sm_75+)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash setup.sh   # driver 525+, V100/P100 too
#   TORCH_SPEC=keep bash setup.sh      # keep the torch/torchvision already in .venv (a site's own build)
#   bash setup.sh --dry-run            # print the commands, run none
#
# FFCV (data.loader=ffcv) builds against OpenCV 4 and libjpeg-turbo headers. Where pkg-config cannot find
# them and apt-get cannot install them (no Debian, no root or sudo), everything but FFCV is installed and
# the script says what FFCV needs; the memory and torch loaders work without it.
set -euo pipefail
cd "$(dirname "$0")"
run=(); [ "${1:-}" = --dry-run ] && run=(echo "+")
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
FFCV_NEEDS="pkg-config, g++ and the OpenCV 4 and libjpeg-turbo development files (Debian: libopencv-dev \
libturbojpeg0-dev; RHEL/Rocky: opencv-devel turbojpeg-devel from EPEL)"

ffcv_libs() { pkg-config --exists opencv4 libturbojpeg 2>/dev/null; }
can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; }

extras=all
if ! ffcv_libs; then
  installed=no
  if can_apt; then
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    "${run[@]}" "${sudo[@]}" apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive "${run[@]}" "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends pkg-config g++ libopencv-dev libturbojpeg0-dev libgl1 libglib2.0-0 &&
      installed=yes
  fi
  if ! { [ -n "${run[*]}" ] && [ $installed = yes ] || ffcv_libs; }; then
    extras=all-but-ffcv
    echo "setup.sh: installing everything but FFCV (data.loader=ffcv): it needs $FFCV_NEEDS," \
      "and apt-get as root or with sudo -n could not install them here. Install them, then rerun" \
      "bash setup.sh" >&2
  fi
fi

stamp=.venv/.setup-done
want=$(cat pyproject.toml setup.sh <(echo "$TORCH_SPEC|$TORCH_INDEX_URL|$extras") | sha256sum | cut -c1-16)
if [ -z "${run[*]}" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

[ -x .venv/bin/python ] || "${run[@]}" python3 -m venv .venv
pip=("${run[@]}" .venv/bin/pip install -q --disable-pip-version-check)
if [ "$TORCH_SPEC" != keep ]; then
  # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
  "${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} $TORCH_SPEC
fi
"${pip[@]}" -e ".[$extras]"
# torchattacks pins requests~=2.25.1, which Ray's dependencies refuse; it needs nothing else beyond torch.
"${pip[@]}" --no-deps torchattacks==3.5.1
[ -n "${run[*]}" ] || echo "$want" > "$stamp"
