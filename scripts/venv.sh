# Source this file: creates or reuses the git-ignored virtual environment .venv in the repo
# and installs what the project needs (torch==2.13.0 first, then the package in editable
# mode with its extras). Re-installs only when pyproject.toml changes.
# Usage: source scripts/venv.sh [extras]   (extras default: test)
_extras="${1:-test}"
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_python="${PYTHON:-python3}"
if [ ! -x "$_root/.venv/bin/python" ]; then
  echo "Creating the virtual environment $_root/.venv" >&2
  "$_python" -m venv "$_root/.venv"
fi
_stamp="$_root/.venv/.installed-$_extras-$(sha256sum "$_root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$_stamp" ]; then
  # torch first and pinned: an open range would download a multi-GB CUDA build.
  "$_root/.venv/bin/python" -m pip install -q torch==2.13.0
  "$_root/.venv/bin/python" -m pip install -q -e "$_root[$_extras]"
  touch "$_stamp"
fi
export PATH="$_root/.venv/bin:$PATH"
