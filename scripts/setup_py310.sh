#!/usr/bin/env bash
# Set up the Python 3.10 environment of the threshold-CKKS backend (extra ``threshold``):
# a virtual environment in .venv310 with numpy, cryptography, openfhe, flwr 1.30, pytest,
# hypothesis and fedcrypt itself (editable). The ``openfhe`` wheel on the package index ships a CPython
# 3.10 extension only, hence a second interpreter beside the project's default one.
#
# The interpreter is found, in order: $PYTHON310, `python3.10` on PATH, `pyenv prefix 3.10`,
# then $PYENV_ROOT/versions/3.10*/ and ~/.pyenv/versions/3.10*/.
# Exit status 3 (and a loud message) means no Python 3.10 can be had on this machine.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
    local candidate
    for candidate in "${PYTHON310:-}" "$(command -v python3.10 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        local prefix
        prefix="$(pyenv prefix 3.10 2>/dev/null | head -n 1 || true)"
        if [ -z "$prefix" ]; then
            # `pyenv prefix 3.10` needs an exact name on older pyenv: take the newest 3.10.x.
            local version
            version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.[0-9]+$' | sort -t. -k3 -n | tail -n 1 || true)"
            [ -n "$version" ] && prefix="$(pyenv prefix "$version" 2>/dev/null || true)"
        fi
        if [ -n "$prefix" ] && [ -x "$prefix/bin/python3.10" ]; then
            echo "$prefix/bin/python3.10"
            return 0
        fi
    fi
    # pyenv not on PATH (a non-interactive shell): look in its root directly.
    local root
    for root in "${PYENV_ROOT:-}" "${HOME:-}/.pyenv"; do
        [ -n "$root" ] || continue
        for candidate in "$root"/versions/3.10*/bin/python3.10; do
            if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
                echo "$candidate"
                return 0
            fi
        done
    done
    return 1
}

if [ ! -x .venv310/bin/python ]; then
    if ! PY310="$(find_python310)"; then
        echo "##################################################################" >&2
        echo "# setup_py310: NO Python 3.10 interpreter found (PYTHON310, PATH,  #" >&2
        echo "# pyenv); the threshold-CKKS (openfhe) environment is NOT set up.  #" >&2
        echo "##################################################################" >&2
        exit 3
    fi
    "$PY310" -m venv .venv310
    # Keep the environment out of git without touching the shared .gitignore.
    printf '*\n' > .venv310/.gitignore
fi
PIP=(.venv310/bin/python -m pip --disable-pip-version-check -q)
# flwr: the index serves Python 3.10 up to 1.30 (1.31+ need 3.11); the threshold Flower
# adapter (fedcrypt.integrations.flower.threshold) is tested with it.
"${PIP[@]}" install "numpy>=1.24" "cryptography>=42" "openfhe>=1.2" "pytest>=8" "pytest-timeout>=2.2" "hypothesis>=6.100" \
    "flwr==1.30.0"
"${PIP[@]}" install --no-deps -e .
.venv310/bin/python -c "import openfhe, flwr.app" >/dev/null
echo "fedcrypt's threshold-CKKS backend is set up in .venv310"
