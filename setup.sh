#!/usr/bin/env bash
# Set up everything on a fresh Debian machine (root, PyPI + Debian mirrors): FFCV's build
# dependencies from apt, then one pip command into .venv. Idempotent: a second call is a no-op
# unless pyproject.toml or this file changed.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.setup-done
want=$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

if ! pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    pkg-config g++ libopencv-dev libturbojpeg0-dev libgl1 libglib2.0-0 >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch 2.14.1 + torchvision 0.29.1 is the pair that works on these machines (CPU or CUDA).
.venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e ".[all]"
# torchattacks pins requests~=2.25.1, which Ray's dependencies refuse; it needs nothing else beyond torch.
.venv/bin/pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
echo "$want" > "$stamp"
