# Sourced by run.sh and test.sh: make .venv and install a requirements file into it.
# Usage: ensure_venv REQUIREMENTS_FILE  (re-installs only when that file changes)

ensure_venv() {
    local requirements="$1"
    local root venv stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$root/.venv"
    stamp="$venv/.installed-$(basename "$requirements")"
    if [ ! -x "$venv/bin/python" ]; then
        local python
        python="$(command -v python3 || command -v python || true)"
        if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "error: Python 3.11 or newer is needed as python3 (found: ${python:-none})" >&2
            return 1
        fi
        echo "setting up $venv (first run only) ..." >&2
        "$python" -m venv "$venv" || { echo "error: could not create $venv" >&2; return 1; }
    fi
    # Hash every requirements file involved, so an edit to any of them triggers a reinstall.
    want="$(cat "$root"/requirements*.txt | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing $(basename "$requirements") into .venv (a few minutes the first time) ..." >&2
        install_requirements "$venv" "$root/$requirements" \
            || { echo "error: pip could not install $requirements (see above)" >&2; return 1; }
        echo "$want" > "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
    export VIRTUAL_ENV="$venv"
    # Each module is compiled once, by the first process that imports it, and its bytecode kept in
    # .venv/pycache (none beside the sources), even where PYTHONDONTWRITEBYTECODE is set (as on the
    # machine this was measured on): without a cache every process compiles TensorFlow's modules
    # again, 9.1 s to import it instead of 4.1 s.
    unset PYTHONDONTWRITEBYTECODE
    export PYTHONPYCACHEPREFIX="$venv/pycache"
}

# uv installs the same pinned wheels as pip, in parallel and from its cache: 2 s here once uv's cache
# holds the wheels, against about 70 s with pip. It compiles no bytecode: compiling all 16,000 modules
# took 19 s, while the processes compile the quarter they import, once (ensure_venv). uv reads none
# of pip's configuration (indexes, constraints): the pins are exact.
# Where uv cannot be had or fails, pip does the install, as before.
UV_VERSION=0.13.9

install_requirements() {
    local venv="$1" requirements="$2"
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" >/dev/null 2>&1 \
        && "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$requirements"; then
        return 0
    fi
    echo "note: uv could not install $(basename "$requirements"); installing with pip" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
}
