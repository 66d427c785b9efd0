#!/usr/bin/env bash
# End-to-end check of the local SLURM cluster: install (no-op when installed), start, run the
# two-rule demo workflow through `snakemake --executor slurm`, check its outputs, stop.
# If the cluster was already running before this script, it is left running.
#
#   tests/slurm/run_demo.sh          (as root; uses /work/main/.venv unless SNAKEMAKE is set)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=$HERE/cluster.sh
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-600}

[[ -x $SNAKEMAKE ]] || { echo "snakemake not found at $SNAKEMAKE (set SNAKEMAKE=...)" >&2; exit 1; }
export PATH="$(dirname "$SNAKEMAKE"):$PATH"

t0=$SECONDS
"$CLUSTER" install

started_here=0
if ! "$CLUSTER" status >/dev/null 2>&1; then started_here=1; fi
WORK=$(mktemp -d /tmp/vimodes-slurm-demo.XXXXXX)
cleanup() {
    local rc=$?
    if ((started_here)); then "$CLUSTER" stop || true; fi
    if ((rc == 0)); then rm -rf "$WORK"; else echo "demo work dir kept: $WORK" >&2; fi
    exit $rc
}
trap cleanup EXIT

t1=$SECONDS
"$CLUSTER" start
eval "$("$CLUSTER" env)"    # SLURM_CONF, VIMODES_SLURM_ACCOUNT, VIMODES_SLURM_PARTITION
echo "cluster ready after $((SECONDS - t1))s"

cp -r "$HERE/demo/." "$WORK/"
cd "$WORK"
t2=$SECONDS
timeout "$DEMO_TIMEOUT" "$SNAKEMAKE" --executor slurm --jobs 2 \
    --default-resources slurm_account="$VIMODES_SLURM_ACCOUNT" slurm_partition="$VIMODES_SLURM_PARTITION" \
    runtime=5 mem_mb=500 \
    --slurm-init-seconds-before-status-checks 2
echo "snakemake finished after $((SECONDS - t2))s"

fail() { echo "DEMO FAILED: $*" >&2; exit 1; }
[[ -s results/summary.txt ]] || fail "results/summary.txt missing"
cat results/summary.txt
grep -qx 'sum=55' results/summary.txt || fail "wrong sum"
grep -qE '^make_numbers_job_id=[0-9]+$' results/summary.txt || fail "make_numbers did not run under SLURM"
grep -qE '^summarise_job_id=[0-9]+$' results/summary.txt || fail "summarise did not run under SLURM"
# accounting must know both jobs as COMPLETED (the plugin relies on sacct)
ids=$(grep -oE '_job_id=[0-9]+' results/summary.txt | cut -d= -f2 | paste -sd,)
states=$(sacct --clusters all -X -n -P -j "$ids" -o State | sort -u | paste -sd,)
[[ $states == COMPLETED ]] || fail "sacct states for jobs $ids: '$states'"
echo "sacct: jobs $ids COMPLETED"
echo "DEMO PASSED in $((SECONDS - t0))s"
