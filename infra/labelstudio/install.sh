#!/usr/bin/env bash
# Install the Label Studio server into its own virtualenv (.venv-labelstudio).
# It cannot share .venv: label-studio pins a redis client that conflicts with celery[redis].
# Idempotent: a marker file records the installed version; re-running is a no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LABEL_STUDIO_VENV:-$ROOT/.venv-labelstudio}"
VERSION="1.23.2"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.installed-label-studio-$VERSION"

if [[ -f "$MARKER" && -f "$VENV/template/label_studio.sqlite3" ]]; then
  echo "label-studio $VERSION already installed in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "label-studio==$VERSION"
"$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('label-studio') == '$VERSION'"
# A migrated, empty database: `python -m infra.labelstudio start` copies it into a fresh data
# folder, so a first start takes seconds instead of a minute or more of Django migrations.
TEMPLATE="$VENV/template"
rm -rf "$TEMPLATE.tmp"
mkdir -p "$TEMPLATE.tmp"
(cd "$TEMPLATE.tmp" && LABEL_STUDIO_BASE_DATA_DIR="$TEMPLATE.tmp" LATEST_VERSION_CHECK=false \
  "$VENV/bin/label-studio" version >/dev/null 2>&1)
test -f "$TEMPLATE.tmp/label_studio.sqlite3"
rm -rf "$TEMPLATE"
mv "$TEMPLATE.tmp" "$TEMPLATE"
touch "$MARKER"
echo "label-studio $VERSION installed in $VENV"
