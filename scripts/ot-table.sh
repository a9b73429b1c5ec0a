#!/usr/bin/env bash
# Energy distance against Euler steps for I-CFM, OT-CFM and SB-CFM (issue #8):
# N(0, I) → moons and 8 Gaussians → moons, same seed, steps and model for all.
#
#   scripts/ot-table.sh [OUT_DIR] [STEPS] [SEED]     (defaults: runs/ot-table 3000 0)
#
# Prints a Markdown table; the checkpoints stay in OUT_DIR/<source>-<matcher>.
# FM=path/to/fm overrides the binary (default: build and use the release one).
set -euo pipefail
out=${1:-runs/ot-table}
steps=${2:-3000}
seed=${3:-0}
if [[ -z "${FM:-}" ]]; then
    cargo build --release -q -p fm-cli
    FM=target/release/fm
fi
solvers=euler:1,euler:2,euler:4,euler:8,euler:100
echo "| source | matcher | Euler 1 | 2 | 4 | 8 | 100 |"
echo "|---|---|---|---|---|---|---|"
for source in normal 8gaussians; do
    for m in "icfm --sigma 0" "otcfm --sigma 0" "sbcfm --sigma 0.1"; do
        name=${m%% *}
        dir="$out/$source-$name"
        "$FM" train --data moons --source "$source" --matcher $m --steps "$steps" --seed "$seed" \
            --out "$dir" --quiet > /dev/null
        # The rows of `fm eval`'s table: solver, NFE, energy distance, ...
        energies=$("$FM" eval --checkpoint "$dir" --solvers "$solvers" | awk '/^euler-/ {printf " %s |", $3}')
        echo "| $source | $name |$energies"
    done
done
