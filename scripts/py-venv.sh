#!/usr/bin/env bash
# Sourced by the scripts that need a Python venv: `py_venv NAME REQUIREMENTS_FILE [native]` builds (once)
# a venv holding exactly those pinned requirements and sets $py to its python. The venv lives
# outside the checkout, in ${BIOINSTRUCT_VENVS:-${XDG_CACHE_HOME:-~/.cache}/bioinstruct/venvs},
# under a name keyed by the requirements' SHA-256: a clean clone on the same machine reuses it,
# a changed pin builds a new one.
py_venv() {
  local name=$1 requirements=$2
  local root=${BIOINSTRUCT_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/bioinstruct/venvs}
  local key
  # A venv that compiles native code for this CPU (llama.cpp builds with -march=native) is
  # also keyed by the CPU's flags: one built on a CPU with AVX-512 would die of SIGILL on one
  # without, and one built without would run slow on one with.
  key=$( (cat "$requirements"; python3 --version
    if [ "${3:-}" = native ]; then grep -m1 '^flags' /proc/cpuinfo; fi) | sha256sum | cut -c1-16)
  local venv=$root/$name-$key
  py=$venv/bin/python
  if [ ! -f "$venv/.complete" ]; then
    echo "building the $name venv in $venv from $requirements (once)" >&2
    rm -rf "$venv"
    mkdir -p "$root"
    python3 -m venv "$venv"
    "$py" -m pip install -q --disable-pip-version-check --upgrade pip
    "$py" -m pip install -q --disable-pip-version-check -r "$requirements"
    touch "$venv/.complete"
  fi
}
