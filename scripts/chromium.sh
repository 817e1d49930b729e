# Sourced by test.sh: Debian's Chromium for the dashboard's browser test.
# Usage: ensure_chromium  (installs the chromium and chromium-driver packages where missing;
# if that cannot be done, says why and the browser test skips itself)

ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "note: no Chromium, and installing it needs root; the browser test will be skipped" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "note: no Chromium and no apt-get to install it; the browser test will be skipped" >&2
        return 0
    fi
    echo "installing Chromium for the dashboard browser test (apt-get, first run only) ..." >&2
    local log
    log="$(mktemp)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
        echo "note: apt-get could not install Chromium (last lines below); the browser test will be skipped" >&2
        tail -n 3 "$log" >&2
    fi
    rm -f "$log"
}
