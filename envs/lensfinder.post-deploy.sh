#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) once the environment exists, inside it, in the directory
# Snakemake runs in: the repository root. Every package comes from the hash-checked lock.
set -euo pipefail
if [[ ! -f requirements.lock ]]; then
    echo "lensfinder post-deploy: no requirements.lock in $(pwd): run snakemake from the repository root" >&2
    exit 1
fi
pip install --require-hashes -r requirements.lock
pip install --no-deps --no-build-isolation -e .
