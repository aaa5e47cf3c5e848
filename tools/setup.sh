# shellcheck shell=bash
# Sourced by tools/run and tools/test: install the Debian packages ugate needs, if missing.
UGATE_DEPS="gcc make cmake pkg-config liburing-dev libhttp-parser-dev libcunit1-dev"
# For tools/test only, and not required: clang (libFuzzer) for the fuzz smoke, node-llhttp
# (llhttp's C sources) for the differential parser fuzzer.
# shellcheck disable=SC2034 # used by tools/test
UGATE_TEST_DEPS="clang node-llhttp"
# usage: ugate_setup [extra-package...]
# shellcheck disable=SC2120
ugate_setup() {
    local missing=() p
    for p in $UGATE_DEPS "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if ! $sudo apt-get update -qq ||
        ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; then
        echo "setup: could not install ${missing[*]}" >&2
        return 1
    fi
}

# usage: ugate_setup_optional package...: like ugate_setup, but what cannot be installed is
# reported and skipped.
ugate_setup_optional() {
    local p
    for p in "$@"; do
        ugate_setup "$p" 2>/dev/null || echo "setup: $p is not available: the steps that need it are skipped"
    done
}
