# Sourced by test.sh: Debian packages some tests use, installed where missing.
# Usage: ensure_debian_package PATH WHAT PACKAGE...
#   installs PACKAGE... with apt-get unless PATH exists; if that cannot be done, says why
#   (the tests that need WHAT then skip themselves).

ensure_debian_package() {
    local path="$1" what="$2"
    shift 2
    if [ -e "$path" ]; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "note: no $what, and installing it needs root; the tests that need it will be skipped" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "note: no $what and no apt-get to install it; the tests that need it will be skipped" >&2
        return 0
    fi
    echo "installing $what ($*; apt-get, first run only) ..." >&2
    local log
    log="$(mktemp)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; } >"$log" 2>&1; then
        echo "note: apt-get could not install $what (last lines below); the tests that need it will be skipped" >&2
        tail -n 3 "$log" >&2
    fi
    rm -f "$log"
}
