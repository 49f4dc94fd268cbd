#!/usr/bin/env bash
# Refuses tracked build outputs: every tracked file is text (by git's own test) or a picture
# under docs/. Compiled binaries belong in bin/, which .gitignore keeps out of the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r f; do
  [[ -s "$f" ]] || continue
  case "$f" in
    docs/*.png | docs/*/*.png | docs/*.svg | docs/*/*.svg) continue ;;
  esac
  echo "tracked binary file: $f (build outputs go to bin/; remove it with git rm --cached)" >&2
  bad=1
done < <(comm -23 <(git ls-files | sort) <(git grep -I --name-only -e '' | sort))
exit "$bad"
