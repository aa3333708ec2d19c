# Sourced by scripts/start, scripts/test and scripts/upgrade-deps.
#
# Installs exactly what uv.lock pins (every package, with hashes) into a virtual environment,
# so a new machine runs the versions CI tested. uv itself is pinned here and installed with
# pip into .tools/ the first time. The environment is .venv, or $THREADLINE_VENV; its Python
# is the first 3.11+ of python3, python3.13, python3.12, python3.11, or $PYTHON.

UV_VERSION=0.13.9
VENV="${THREADLINE_VENV:-.venv}"
UV=".tools/uv-$UV_VERSION/bin/uv"

# uv never downloads an interpreter of its own: it uses the one found below.
export UV_PYTHON_DOWNLOADS=never

_python_version() { # command -> "3.11" (empty when it does not run)
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

find_python() {
    local candidate version found=""
    for candidate in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        version="$(_python_version "$candidate")" || continue
        [ -n "$version" ] || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            command -v "$candidate"
            return 0
        fi
        found="$found $candidate ($version)"
    done
    if [ -n "$found" ]; then
        echo "error: Threadline needs Python 3.11 or newer; found only:$found (set PYTHON=/path/to/python3.11)" >&2
    else
        echo "error: Threadline needs Python 3.11 or newer; none found (set PYTHON=/path/to/python3)" >&2
    fi
    exit 1
}

ensure_uv() { # python
    [ -x "$UV" ] && return 0
    echo "Installing uv $UV_VERSION into .tools/"
    rm -rf ".tools/uv-$UV_VERSION"
    "$1" -m venv ".tools/uv-$UV_VERSION"
    ".tools/uv-$UV_VERSION/bin/python" -m pip install --quiet --disable-pip-version-check \
        "uv==$UV_VERSION"
}

# Makes $VENV hold exactly the locked packages (plus Threadline itself, editable); extra
# arguments go to `uv sync` (--extra dev, --inexact, ...). Installed packages are compiled to
# bytecode once, at install, so no start pays for it. A stamp of the lock, pyproject.toml, the
# interpreter and the arguments skips the whole step while nothing changed.
sync_venv() {
    local python stamp
    python="$(find_python)"
    stamp="$(cat uv.lock pyproject.toml | cksum) $python uv-$UV_VERSION $*"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.threadline-synced" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    ensure_uv "$python"
    UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --frozen --quiet --compile-bytecode \
        --python "$python" "$@"
    echo "$stamp" >"$VENV/.threadline-synced"
}
