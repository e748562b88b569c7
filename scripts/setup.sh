#!/usr/bin/env bash
# Sets up everything ember needs on a fresh machine, idempotently:
#   1. a Python virtual environment with the pinned wheels (runtimes, and the reference
#      implementation used to build test models), cached outside the clone by content hash,
#      with the real clients the tests run (scripts/requirements-clients.txt) on top;
#   2. the test models and their reference outputs (scripts/make_fixtures.py), cached the same way;
#   3. a release build of the host and the plugins;
#   4. the native runtimes from the wheels linked next to the plugins, so no LD_LIBRARY_PATH
#      is needed.
# Prints nothing but progress; safe to run again. Environment:
#   EMBER_CACHE        cache root (default ~/.cache/ember)
#   CARGO_TARGET_DIR   cargo's target directory (default ./target)
#   EMBER_PROFILE      cargo profile to build (default release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${EMBER_CACHE:-$HOME/.cache/ember}
PROFILE=${EMBER_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$CACHE"

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. Python environment from the pinned requirements.
REQ_HASH=$(hash_of requirements.txt scripts/requirements-fixtures.txt scripts/requirements-nodeps.txt)
VENV=$CACHE/venv-$REQ_HASH
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
  echo "setup: creating $VENV (pinned wheels; first time only)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-fixtures.txt
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r scripts/requirements-nodeps.txt
  touch "$VENV/.complete"
fi
# The test clients, on top: a marker per version of their list.
CLIENTS_HASH=$(hash_of scripts/requirements-clients.txt)
if [ ! -f "$VENV/.clients-$CLIENTS_HASH" ]; then
  echo "setup: installing the test clients into $VENV"
  # Constrained by the pinned lists, so a client can add packages but never move a pinned one.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c requirements.txt \
    -c scripts/requirements-fixtures.txt -c scripts/requirements-nodeps.txt \
    -r scripts/requirements-clients.txt
  rm -f "$VENV"/.clients-*
  touch "$VENV/.clients-$CLIENTS_HASH"
fi
ln -sfn "$VENV" "$CACHE/venv"
# libtorch of the torch wheel, for tch's build script (.cargo/config.toml reads ./.libtorch).
TORCH_DIR=$(ls -d "$VENV"/lib/python3*/site-packages/torch)
ln -sfn "$TORCH_DIR" "$ROOT/.libtorch"
# libctranslate2 of the ctranslate2 wheel, for the plugin's build script (CTRANSLATE2_LIBS).
CT2_LIBS=$(ls -d "$VENV"/lib/python3*/site-packages/ctranslate2.libs)
ln -sfn "$CT2_LIBS" "$ROOT/.ctranslate2"

# 2. Test models and reference outputs.
FIX_HASH=$(hash_of scripts/make_fixtures.py requirements.txt scripts/requirements-fixtures.txt scripts/requirements-nodeps.txt)
FIXTURES=$CACHE/fixtures-$FIX_HASH
if [ ! -f "$FIXTURES/.complete" ]; then
  echo "setup: generating test models into $FIXTURES"
  rm -rf "$FIXTURES"
  HF_HUB_OFFLINE=1 "$VENV/bin/python" scripts/make_fixtures.py "$FIXTURES" >/dev/null 2>"$CACHE/make_fixtures.log" \
    || { cat "$CACHE/make_fixtures.log" >&2; exit 1; }
  touch "$FIXTURES/.complete"
fi
ln -sfn "$FIXTURES" "$ROOT/fixtures"

# 3. Build.
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p ember-host -p ember-optimum -p ember-candle -p ember-torch \
    -p ember-ctranslate2
  OUT=$TARGET/release
else
  cargo build --locked -p ember-host -p ember-optimum -p ember-candle -p ember-torch \
    -p ember-ctranslate2
  OUT=$TARGET/debug
fi

# 4. Runtimes next to the plugins (symbolic links into the venv).
bash scripts/runtimes.sh "$VENV" "$OUT" link
echo "setup: ready: $OUT/ember with plugins $(cd "$OUT" && ls libember_*.so | tr '\n' ' ')"
