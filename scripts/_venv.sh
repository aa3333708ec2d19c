# Sourced by scripts/start and scripts/test: create .venv if it is missing, with the first
# Python 3.11+ found (python3, python3.13, python3.12, python3.11), or with $PYTHON.

_python_ok() {
    command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))'
}

ensure_venv() {
    [ -x .venv/bin/python ] && return 0
    local python=""
    for candidate in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
        if _python_ok "$candidate"; then
            python="$candidate"
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "error: Threadline needs Python 3.11 or newer; none found (set PYTHON=/path/to/python3)" >&2
        exit 1
    fi
    echo "Creating .venv with $("$python" -V 2>&1)"
    "$python" -m venv .venv
}
