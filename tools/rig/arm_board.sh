#!/usr/bin/env bash
# Build an emulated aarch64 "ARM board": a Debian 12 arm64 sysroot with CPython 3.11, numpy,
# onnxruntime and ai-edge-litert, run under qemu-user (a Cortex-A76 model) on an x86 host.
#
#   tools/rig/arm_board.sh [DEST]
#   tools/rig/arm_board.sh --executorch [DEST]   the same board, plus torch 2.13.0 and executorch 1.5.1
#
# DEST defaults to ${EDGEPIPE_RIG_DIR:-$HOME/.cache/edgepipe/rig}/arm64 (arm64-executorch). Afterwards
# DEST/bin/python3 is the board's python3 (put DEST/bin first on PATH, e.g. in an sshd's
# SetEnv, and `python3 runner.py ...` runs on the "board"); DEST/bin/uname reports aarch64.
#
# Nothing is emulated while building: the arm64 .debs come from Debian through a private apt
# root (the host's apt state is untouched) and are unpacked with `dpkg -x`; the aarch64
# wheels come from PyPI with `pip download --platform ...`. Downloads are cached under
# ${EDGEPIPE_RIG_DIR:-$HOME/.cache/edgepipe/rig}/cache. The build goes to DEST.tmp and is
# renamed to DEST only once it has passed a smoke test, with a stamp file, so an interrupted
# build is never trusted and a second call returns at once.
#
# Exit status: 0 ready; 3 qemu-aarch64-static is missing and cannot be installed (not root);
# anything else: the build failed (its log is printed).
#
# Environment: PYTHON (a host python with pip for downloading wheels; default: this repo's
# .venv, else python3), EDGEPIPE_RIG_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# EDGEPIPE_RIG_DEBIAN_SECURITY (default http://deb.debian.org/debian-security).
set -euo pipefail

START=$(date +%s.%N)
elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
log() { printf 'arm_board: %s\n' "$*" >&2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RIG=${EDGEPIPE_RIG_DIR:-$HOME/.cache/edgepipe/rig}
EXECUTORCH=0
if [ "${1:-}" = --executorch ]; then EXECUTORCH=1; shift; fi
if [ $EXECUTORCH = 1 ]; then DEST=${1:-$RIG/arm64-executorch}; else DEST=${1:-$RIG/arm64}; fi
mkdir -p "$(dirname "$DEST")"
DEST=$(cd "$(dirname "$DEST")" && pwd)/$(basename "$DEST")
CACHE=$RIG/cache

# What the board runs. The stamp records all of it: change any of it and the board is rebuilt.
SUITE=bookworm
DEB_ROOTS=(python3.11-minimal libpython3.11-stdlib libstdc++6)
DEB_SKIP=" dpkg tar "  # pulled in by apt's resolution, only needed by maintainer scripts
WHEELS=(numpy==2.4.6 onnxruntime==1.32.0 ai-edge-litert==2.3.0 flatbuffers==25.12.19 protobuf==7.36.2
  packaging==26.4 ml_dtypes==0.6.0 tqdm==4.70.1 typing_extensions==4.12.2 backports.strenum==1.2.8)
# Without the _2_27 tag pip silently falls back to ai-edge-litert 1.4.0.
PLATFORMS=(manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64
  manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64)
# ExecuTorch's Python runtime links libtorch_python, and PyPI's aarch64 torch 2.13.0 is a CUDA 13 build that
# links these CUDA libraries at import (DT_NEEDED of libtorch_cpu/libtorch_cuda/libtorch_nvshmem); no GPU is
# needed to import it. ~2.6 GB of wheels, +3.3 GB of sysroot after pruning what is never mapped (measured with
# the guest's /proc/self/maps): `import torch` + `executorch.runtime` take 23-36 s under qemu. Not needed:
# triton, cuda-bindings, nvtx. nccl 2.29.7 is tagged manylinux_2_18 only, hence the full platform range below.
if [ $EXECUTORCH = 1 ]; then
  WHEELS+=(torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 nvidia-cusparse==12.6.3.3
    nvidia-nvjitlink==13.5.37 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6 nvidia-cusparselt-cu13==0.8.1
    nvidia-nccl-cu13==2.29.7 nvidia-curand==10.4.0.35 nvidia-cublas==13.1.1.3 nvidia-cudnn-cu13==9.20.0.48
    nvidia-cuda-nvrtc==13.0.88 nvidia-nvshmem-cu13==3.4.5 nvidia-cusolver==12.0.4.66
    sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 filelock==4.3.1 jinja2==3.1.6 markupsafe==3.0.4
    executorch==1.5.1 ruamel.yaml==0.19.1 torchao==0.18.0 tabulate==0.10.0)
  for v in $(seq 18 39); do PLATFORMS+=("manylinux_2_${v}_aarch64"); done
fi
QEMU_CPU_MODEL=cortex-a76  # never `max`: under qemu 7.2 its SME emulation makes LiteRT int8 kernels wrong
NCPU=4                     # a Raspberry Pi 5 has 4 Cortex-A76 cores
STAMP_KEY="edgepipe-arm-board v3 debian=$SUITE debs=${DEB_ROOTS[*]} wheels=${WHEELS[*]} cpu=$QEMU_CPU_MODEL x$NCPU dest=$DEST"

# ---- host tools ---------------------------------------------------------------------------
apt_install() {  # apt_install PKG...: as root; `apt-get update` only when the install fails
  [ "$(id -u)" = 0 ] || return 1
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null || missing+=(openssh-server)
command -v adb >/dev/null || missing+=(adb)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_install "${missing[@]}" || log "could not install ${missing[*]} (need root and apt-get)"
  if ! command -v qemu-aarch64-static >/dev/null; then
    log "qemu-aarch64-static is missing and cannot be installed; as root: apt-get install qemu-user-static"
    exit 3
  fi
fi
QEMU=$(command -v qemu-aarch64-static)

if [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$STAMP_KEY" ]; then
  log "ready: $DEST (cached, $(elapsed) s)"
  echo "$DEST"
  exit 0
fi

# ---- build --------------------------------------------------------------------------------
mkdir -p "$CACHE"
exec 9>"$DEST.lock"
flock 9  # one build at a time; the loser of a race finds the winner's stamp
if [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$STAMP_KEY" ]; then
  log "ready: $DEST (built by another process, $(elapsed) s)"
  echo "$DEST"
  exit 0
fi
for tool in apt-get dpkg; do command -v $tool >/dev/null || { log "$tool is needed to build the sysroot"; exit 1; }; done
TMP=$DEST.tmp
rm -rf "$TMP"
mkdir -p "$TMP"
LOG=$CACHE/build.log
: >"$LOG"
fail() { log "$1; log follows"; tail -n 60 "$LOG" >&2; exit 1; }

# Debian arm64 packages through a private apt root: lists, cache and (empty) dpkg status
# live under $CACHE/apt; the host's own apt configuration parts (proxies) still apply.
A=$CACHE/apt
mkdir -p "$A/state/lists/partial" "$A/archives/partial" "$A/cache" "$A/etc/sources.list.d" "$A/etc/preferences.d"
[ -f "$A/state/status" ] || : >"$A/state/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || apt_install debian-archive-keyring || fail "no $KEYRING (install debian-archive-keyring)"
cat >"$A/etc/debian.sources" <<EOF
Types: deb
URIs: ${EDGEPIPE_RIG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: $KEYRING

Types: deb
URIs: ${EDGEPIPE_RIG_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
Suites: $SUITE-security
Components: main
Signed-By: $KEYRING
EOF
cat >"$A/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
APT::Get::List-Cleanup "false";
Dir::State "$A/state";
Dir::State::status "$A/state/status";
Dir::Cache "$A/cache";
Dir::Cache::archives "$A/archives";
Dir::Etc::SourceList "$A/etc/debian.sources";
Dir::Etc::SourceParts "$A/etc/sources.list.d";
Dir::Etc::Preferences "$A/etc/preferences";
Dir::Etc::PreferencesParts "$A/etc/preferences.d";
Debug::NoLocking "true";
APT::Sandbox::User "root";
EOF
xapt() { APT_CONFIG=$A/apt.conf "$@"; }
resolve() {  # the full dependency closure, as apt resolves it for an empty arm64 system
  # "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [arm64]) []" -> "libc6 2.36-9+deb12u14 arm64"
  xapt apt-get -s -q install "${DEB_ROOTS[@]}" 2>>"$LOG" |
    awk '$1 == "Inst" && match($0, /\[[a-z0-9]+\]\)/) { v = $3; sub(/^\(/, "", v); print $2, v, substr($0, RSTART + 1, RLENGTH - 3) }'
}
PKGS=$(resolve || true)
if [ -z "$PKGS" ] || ! xapt apt-get -q -y install --download-only "${DEB_ROOTS[@]}" >>"$LOG" 2>&1; then
  # no lists yet, or stale ones (a cached list names a .deb the mirror has since replaced)
  xapt apt-get -q update >>"$LOG" 2>&1 || fail "apt-get update (arm64, private root) failed"
  PKGS=$(resolve) || fail "cannot resolve ${DEB_ROOTS[*]} for arm64"
  xapt apt-get -q -y install --download-only "${DEB_ROOTS[@]}" >>"$LOG" 2>&1 || fail "downloading arm64 .debs failed"
fi
n=0
while read -r p v a; do
  case "$DEB_SKIP" in *" $p "*) continue ;; esac
  deb=$A/archives/${p}_${v//:/%3a}_${a}.deb  # apt's file name: the epoch's ':' is '%3a'
  [ -f "$deb" ] || fail "no $deb"
  dpkg -x "$deb" "$TMP"
  echo "$p $v $a" >>"$TMP/.packages"
  n=$((n + 1))
done <<<"$PKGS"
rm -rf "$TMP"/usr/share/{doc,man,info,locale,lintian}
log "unpacked $n arm64 packages ($(elapsed) s)"

# aarch64 wheels, installed where Debian's python finds them without PYTHONPATH (so -E/-I work)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  apt_install python3-pip >>"$LOG" 2>&1 || true
  PY=python3
  "$PY" -m pip --version >/dev/null 2>&1 || fail "no pip on the host (set PYTHON to a python with pip)"
fi
PIPARGS=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none --platform any)
for p in "${PLATFORMS[@]}"; do PIPARGS+=(--platform "$p"); done
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INPUT=1
mkdir -p "$CACHE/wheels"
# offline from the cache first; the index only when something is missing
"$PY" -m pip download -q --no-deps "${PIPARGS[@]}" --no-index --find-links "$CACHE/wheels" -d "$CACHE/wheels" "${WHEELS[@]}" >>"$LOG" 2>&1 ||
  "$PY" -m pip download -q --no-deps "${PIPARGS[@]}" -d "$CACHE/wheels" "${WHEELS[@]}" >>"$LOG" 2>&1 ||
  fail "pip download of the aarch64 wheels failed"
SITE=$TMP/usr/lib/python3/dist-packages
"$PY" -m pip install -q --no-deps --no-compile --no-index --find-links "$CACHE/wheels" "${PIPARGS[@]}" \
  --target "$SITE" "${WHEELS[@]}" >>"$LOG" 2>&1 || fail "installing the aarch64 wheels failed"
rm -rf "$SITE/bin"
if [ $EXECUTORCH = 1 ]; then  # files never mapped by import torch + executorch.runtime + an XNNPACK .pte
  rm -f "$SITE"/nvidia/cudnn/lib/libcudnn_{adv,cnn,engines_precompiled,engines_runtime_compiled,graph,heuristic,ops}.so.9
  rm -f "$SITE"/nvidia/cu13/lib/{libcusolverMg.so.12,libnvperf_host.so,libnvperf_target.so,libcheckpoint.so}
  rm -f "$SITE"/nvidia/nvshmem/lib/nvshmem_{bootstrap,transport}_*.so.3
  rm -rf "$SITE"/nvidia/*/include "$SITE"/torch/include "$SITE"/torch/share "$SITE"/executorch/include
fi
printf '%s\n' "${WHEELS[@]}" >"$TMP/.wheels"
log "installed ${#WHEELS[@]} aarch64 wheels ($(elapsed) s)"

# What the guest sees of the CPU. qemu-user passes the host's /proc through, and an x86
# /proc/cpuinfo makes aarch64 onnxruntime (pytorch/cpuinfo) segfault at import. qemu's -L
# prefix is tried first for every absolute path, so these files shadow the host's.
mkdir -p "$TMP/proc" "$TMP/sys/devices/system/cpu"
{
  for ((i = 0; i < NCPU; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
  done
  printf 'Hardware\t: edgepipe emulated Cortex-A76 (qemu-user)\n'
} >"$TMP/proc/cpuinfo"
for f in possible present online; do echo "0-$((NCPU - 1))" >"$TMP/sys/devices/system/cpu/$f"; done
for ((i = 0; i < NCPU; i++)); do  # MIDR_EL1 of a Cortex-A76 r4p1 (as cpuinfo says): oneDNN reads it from sysfs
  mkdir -p "$TMP/sys/devices/system/cpu/cpu$i/regs/identification"
  echo 0x00000000414fd0b1 >"$TMP/sys/devices/system/cpu/cpu$i/regs/identification/midr_el1"
done

# The board's commands, with DEST's final path baked in.
mkdir -p "$TMP/bin"
cat >"$TMP/bin/python3" <<EOF
#!/bin/sh
# aarch64 CPython 3.11 of the emulated ARM board ($QEMU_CPU_MODEL under qemu-user), built by
# tools/rig/arm_board.sh. Packages live in the sysroot's dist-packages, so -E and -I work.
ROOT='$DEST'
QEMU='$QEMU'
[ -x "\$QEMU" ] || QEMU=qemu-aarch64-static
unset PYTHONHOME QEMU_LD_PREFIX QEMU_CPU QEMU_STRACE QEMU_GUEST_BASE QEMU_RESERVED_VA
# devices/standalone/runner.py reports this, so every number measured here is labelled as emulated
export EDGEPIPE_EMULATED=qemu-user
exec "\$QEMU" -cpu $QEMU_CPU_MODEL -L "\$ROOT" "\$ROOT/usr/bin/python3.11" "\$@"
EOF
cat >"$TMP/bin/uname" <<'EOF'
#!/bin/sh
# The board's uname: the host kernel's answers, with the machine reported as aarch64
# (python's platform.machine() already says aarch64 under qemu-user).
for u in /usr/bin/uname /bin/uname; do [ -x "$u" ] && break; done
"$u" "$@" | sed 's/x86_64/aarch64/g'
EOF
chmod 755 "$TMP/bin/python3" "$TMP/bin/uname"
ln -sf python3 "$TMP/bin/python"
ln -sf python3 "$TMP/bin/python3.11"

# Smoke test (the wrapper points at DEST, not yet there: run qemu on TMP directly), then
# byte-compile everything once, so the board does not recompile the stdlib on every import.
qemu_tmp() { "$QEMU" -cpu "$QEMU_CPU_MODEL" -L "$TMP" "$TMP/usr/bin/python3.11" -I "$@"; }
SMOKE='import platform, ssl, sqlite3, ctypes, lzma, bz2, zlib, json, numpy, onnxruntime, ai_edge_litert
from ai_edge_litert.interpreter import Interpreter'
[ $EXECUTORCH = 1 ] && SMOKE+='
import torch, executorch.kernels.quantized
from executorch.runtime import Runtime'
out=$(qemu_tmp -c "$SMOKE
print(platform.machine(), numpy.__version__, onnxruntime.__version__)" 2>>"$LOG") || fail "smoke test of the aarch64 python failed"
[ "${out%% *}" = aarch64 ] || fail "smoke test: machine is '${out%% *}', not aarch64"
# A host CPython 3.11 writes the same .pyc files (one magic number per minor release) ~5x faster.
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then COMPILER=("$PY"); else COMPILER=(qemu_tmp); fi
if [ $EXECUTORCH = 1 ]; then  # torch and executorch vendor a few files that are templates, not Python
  "${COMPILER[@]}" -m compileall -q -j 0 "$TMP/usr/lib/python3.11" "$SITE" >>"$LOG" 2>&1 || log "compileall: some vendored files do not compile (kept as source)"
else
  "${COMPILER[@]}" -m compileall -q -j 0 "$TMP/usr/lib/python3.11" "$SITE" >>"$LOG" 2>&1 || fail "compileall failed"
fi

echo "$STAMP_KEY" >"$TMP/.stamp"
if [ -e "$DEST" ]; then rm -rf "$DEST.old" && mv "$DEST" "$DEST.old"; fi
mv "$TMP" "$DEST"
rm -rf "$DEST.old"
log "ready: $DEST ($out; $(du -sh "$DEST" | cut -f1); built in $(elapsed) s)"
echo "$DEST"
