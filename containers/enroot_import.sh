#!/usr/bin/env bash
# Import a container image as an Enroot squashfs (.sqsh) that Pyxis runs with
# `srun --container-image=/path/nemo-rence.sqsh` (slurm/submit.sh --container /path/nemo-rence.sqsh).
#
#   containers/enroot_import.sh SOURCE OUTPUT.sqsh
#     SOURCE: dockerd://nemo-rence:0.1.0            (an image in the local docker daemon)
#             docker://nvcr.io#nvidia/pytorch:25.06-py3   (a registry; note the '#' after the host)
#             docker://registry.example.com#team/nemo-rence:0.1.0
#
# Registries: enroot reads credentials from $ENROOT_CONFIG_PATH/.credentials (default
# ~/.config/enroot/.credentials), netrc syntax, e.g. for NGC:
#   machine nvcr.io login $oauthtoken password <your NGC API key>
# Import once on a login node into shared storage; every job then reads the same .sqsh (Pyxis can
# also pull `--container-image=nvcr.io#...` per job, but that repeats the download on every node).
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
SOURCE=$1 OUTPUT=$2
command -v enroot >/dev/null || { echo "enroot_import: enroot is not installed here" >&2; exit 1; }
mkdir -p "$(dirname "$OUTPUT")"
tmp="$OUTPUT.partial.$$"
trap 'rm -f "$tmp"' EXIT
enroot import --output "$tmp" "$SOURCE"
mv "$tmp" "$OUTPUT"   # atomic: a job never sees a half-written image
echo "enroot_import: wrote $OUTPUT ($(du -h "$OUTPUT" | cut -f1))"
