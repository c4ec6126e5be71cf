#!/usr/bin/env bash
# slurm/stop-cluster.sh - stop the cluster started by slurm/start-cluster.sh.
# Kills ONLY the pids recorded in $SLURM_CI_BASE/run/*.pid (never by process name).
#   1. cancel remaining jobs (so slurmstepd/job processes exit), unless SLURM_CI_KEEP_JOBS=1
#   2. SIGTERM slurmd, slurmctld, slurmdbd, mariadbd, munged (that order), wait, SIGKILL fallback
# State (job ids, accounting DB) is kept so a later start continues job numbering.
set -uo pipefail
BASE=${SLURM_CI_BASE:-/var/lib/bilateral-slurm}
RUN=$BASE/run
T0=$(date +%s.%N)
log() { printf '[stop-cluster %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# 1. cancel jobs while the controller is still up
if [ "${SLURM_CI_KEEP_JOBS:-0}" != 1 ] && [ -s "$RUN/slurmctld.pid" ] && alive "$(cat "$RUN/slurmctld.pid")" \
   && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 75); do [ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

# 2. stop daemons by recorded pid
stop_pid() { # name expected_comm
  local name=$1 comm=$2 f="$RUN/$1.pid" pid
  [ -s "$f" ] || { log "$name: no pid file, skipping"; return 0; }
  pid=$(cat "$f")
  if ! alive "$pid"; then log "$name: pid $pid not running"; rm -f "$f"; return 0; fi
  # guard against pid reuse: the recorded pid must still be the expected program
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then
    log "$name: pid $pid is '$(cat /proc/$pid/comm 2>/dev/null)', not $comm - leaving it alone"; rm -f "$f"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then log "$name: still alive after 10s, SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.5; fi
  alive "$pid" && log "$name: pid $pid STILL alive" || log "$name: stopped (pid $pid)"
  rm -f "$f"
}
stop_pid slurmd    slurmd
stop_pid slurmctld slurmctld
stop_pid slurmdbd  slurmdbd
stop_pid mariadbd  mariadbd
stop_pid munged    munged       # only present if start-cluster.sh started munged itself
log "done"
