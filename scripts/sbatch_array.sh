#!/bin/bash
# One SLURM array task per line of a file of overrides, without the Hydra launcher.
#
#   printf '%s\n' 'seed=0 optim.lr=0.1' 'seed=1 optim.lr=0.1' > sweep.txt
#   sbatch --array=0-1 scripts/sbatch_array.sh sweep.txt
#
# Array task i runs `vestige-run` with line i+1 of the file, split as a shell would split it
# (quote an override that holds spaces: 'checkpoint.snapshots=[0it,every 1ep]'). Each line's
# config names its own run directory under outputs/ (relative to the submit directory), so
# re-submitting the same file skips finished lines and resumes the others.
#
# Two minutes before the time limit (or a preemption) SLURM sends USR2 to this shell, which
# passes it on: the training writes a resume state, requeues its own job and exits, and the
# requeued task continues in the same run directory. Set VESTIGE_RUN to run another command
# than `vestige-run` (a virtual environment's, for instance). Options given to sbatch on the
# command line override the #SBATCH lines below.
#
#SBATCH --job-name=vestige
#SBATCH --output=slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR2@120
#SBATCH --requeue

set -euo pipefail

overrides_file=${1:?usage: sbatch --array=0-N scripts/sbatch_array.sh OVERRIDES_FILE}
task=${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch --array=0-N}
line=$(sed -n "$((task + 1))p" "$overrides_file")
if [[ -z $line ]]; then
    echo "error: $overrides_file has no line $((task + 1)) for array task $task:" \
        "submit with --array=0-$(($(wc -l <"$overrides_file") - 1))" >&2
    exit 2
fi
eval "set -- $line"
echo "array task $task (job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}): $*"

# bash runs no trap while a foreground child runs, so the training runs in the background and
# this shell waits for it; a signal interrupts `wait`, is passed on, and the shell waits again.
"${VESTIGE_RUN:-vestige-run}" "$@" &
child=$!
trap 'kill -s USR2 "$child" 2>/dev/null || true' USR2
trap 'kill -s TERM "$child" 2>/dev/null || true' TERM
while kill -0 "$child" 2>/dev/null; do
    wait "$child" || true
done
wait "$child" # bash keeps the ended child's status: this shell exits with it
