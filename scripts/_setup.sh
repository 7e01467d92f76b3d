# Shared by demo.sh and test.sh: pick a Python, make pip usable, check for a C compiler.
# Sourced, not run.

PYTHON="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore        # no "running pip as root" warning
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A Debian-packaged Python refuses `pip install` outside a virtualenv (PEP 668); this
# project installs into whichever Python runs it, as the README says.
export PIP_BREAK_SYSTEM_PACKAGES=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "PowerFusion needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi

# PowerFusion compiles its kernels with gcc (C + OpenMP).
if ! command -v gcc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "gcc not found: installing it with apt-get" >&2
        apt-get update -qq && apt-get install -y -qq gcc >/dev/null
    else
        echo "PowerFusion compiles kernels with gcc; install it (e.g. apt-get install gcc)." >&2
        exit 1
    fi
fi

pip_install() {
    "$PYTHON" -m pip install --quiet "$@"
}
