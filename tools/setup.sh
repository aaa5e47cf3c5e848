# shellcheck shell=bash
# Sourced by tools/run and tools/test: install the Debian packages ugate needs, if missing.
UGATE_DEPS="gcc make cmake pkg-config liburing-dev libhttp-parser-dev libcunit1-dev zlib1g-dev"
# For tools/test only, and not required: clang (libFuzzer) for the fuzz smoke, node-llhttp
# (llhttp's C sources) for the differential parser fuzzer; prometheus (promtool) below.
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

# promtool (Debian's prometheus package), for the exposition check in tools/test; optional.
# The package would also start a Prometheus server: a policy-rc.d (the Debian way to veto
# service starts during an install) keeps it from doing so, and is removed afterwards.
ugate_setup_promtool() {
    command -v promtool >/dev/null && return 0
    dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed" && return 0
    local sudo="" made=0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null &&
            $sudo chmod +x /usr/sbin/policy-rc.d && made=1
    fi
    echo "setup: installing prometheus (for promtool)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null 2>&1 || echo "setup: prometheus is not available: the promtool check is skipped"
    [ $made -eq 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
    return 0
}

# usage: ugate_setup_optional package...: like ugate_setup, but what cannot be installed is
# reported and skipped.
ugate_setup_optional() {
    local p
    for p in "$@"; do
        ugate_setup "$p" 2>/dev/null || echo "setup: $p is not available: the steps that need it are skipped"
    done
}
