#!/usr/bin/env bash
# slurm/start-cluster.sh - idempotently install, configure and start a real single-node Slurm
# cluster on this machine WITHOUT systemd (Debian 12 / Slurm 22.05), for tests and local trials.
# Adapted from ../shared/notes/slurm-on-one-machine.md (the gotchas behind each setting are there).
#
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, then wait for node "idle".
#
# Re-running while everything is up is a no-op (each daemon is checked by its pid
# file + a liveness probe). Must run as root.
#
# Env knobs:
#   SLURM_CI_BASE        state/log/pid dir            (default /var/lib/bilateral-slurm)
#   SLURM_CI_ACCOUNTING  1 = slurmdbd+MariaDB (sacct works; needed for submitit job states,
#                        cancel/timeout detection); 0 = accounting_storage/none (default 1)
#   SLURM_CI_FAKE_GPUS   N>0 advertises N fake "gpu" GRES on the node (default 0)
#   SLURM_CI_CPUS        CPUs advertised (default: nproc)
#   SLURM_CI_MEM_MB      RealMemory advertised (default: 90% of MemTotal)
#   SLURM_CI_CLEAN       1 = wipe previous slurm state + accounting DB before start (default 0)
#   SLURM_CI_WAIT_S      max seconds to wait for the node to become idle (default 60)
set -euo pipefail

BASE=${SLURM_CI_BASE:-/var/lib/bilateral-slurm}
ACCOUNTING=${SLURM_CI_ACCOUNTING:-1}
FAKE_GPUS=${SLURM_CI_FAKE_GPUS:-0}
CLEAN=${SLURM_CI_CLEAN:-0}
WAIT_S=${SLURM_CI_WAIT_S:-60}
CLUSTER=localci
NODE=$(hostname -s)
CPUS=${SLURM_CI_CPUS:-$(nproc)}
MEM_MB=${SLURM_CI_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)}
CONF_DIR=/etc/slurm                 # default location, so sbatch/sacct/submitit need no SLURM_CONF
DB_PORT=${SLURM_CI_DB_PORT:-3306}
DB_PASS=slurmci
RUN=$BASE/run LOG=$BASE/log STATE=$BASE/state SPOOL=$BASE/spool MY=$BASE/mysql

T0=$(date +%s.%N)
log() { printf '[start-cluster %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
die() { log "ERROR: $*"; for f in "$LOG"/*.log "$MY"/mariadb.err; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }; done; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
# one start at a time (two test sessions may start the cluster concurrently)
mkdir -p "$BASE"; exec 9>"$BASE/.start.lock"; flock -w 600 9 || die "another start-cluster.sh holds $BASE/.start.lock"

# alive PID: process exists and is not a zombie (PID 1 in containers may reap late)
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }
wait_until() { # wait_until <timeout_s> <cmd...>
  local t=$1; shift; local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}

# ---------------------------------------------------------------- 1. install
need_pkgs=()
for b in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${b%%:*}" >/dev/null 2>&1 || need_pkgs+=("${b##*:}")
done
if [ "$ACCOUNTING" = 1 ]; then
  command -v slurmdbd >/dev/null 2>&1 || need_pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null 2>&1 || need_pkgs+=(mariadb-server)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  # keep postinst scripts from starting services through systemd/init.d
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  log "installed"
fi

# ---------------------------------------------------------------- 2. layout + config
if [ "$CLEAN" = 1 ]; then
  log "SLURM_CI_CLEAN=1: wiping $STATE $SPOOL $MY"
  alive "$(pid_of "$RUN/slurmctld.pid")" && die "cluster is running; run slurm/stop-cluster.sh before SLURM_CI_CLEAN=1"
  rm -rf "$STATE" "$SPOOL" "$MY"
fi
mkdir -p "$RUN" "$LOG" "$STATE" "$SPOOL" "$CONF_DIR"
chmod 755 "$BASE"

# node name must resolve; pin addresses to 127.0.0.1 so DNS is never needed
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

gres_line="" ; gres_types=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  gres_types="GresTypes=gpu"
  gres_line="Gres=gpu:$FAKE_GPUS"
  # File= must be a char/block device (regular files are rejected: "not a valid character
  # or block device") and end in a number (-> CUDA_VISIBLE_DEVICES index): symlink to /dev/null
  mkdir -p "$BASE/fakegpu"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do rm -f "$BASE/fakegpu/nvidia$i"; ln -s /dev/null "$BASE/fakegpu/nvidia$i"; done
  cat > "$CONF_DIR/gres.conf.new" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$BASE/fakegpu/nvidia[0-$((FAKE_GPUS - 1))]
EOF
else
  : > "$CONF_DIR/gres.conf.new"
fi

if [ "$ACCOUNTING" = 1 ]; then
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  [ "$FAKE_GPUS" -gt 0 ] && acct="$acct
AccountingStorageTRES=gres/gpu"
else
  acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat > "$CONF_DIR/slurm.conf.new" <<EOF
# generated by bilateral slurm/start-cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# job credential lifetime; also the delay before a requeued job may restart (default 120s, min 5)
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups at all: works in containers / without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
$acct
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# small intervals: pending/requeued jobs start within seconds instead of up to 60s
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM_MB $gres_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
conf_changed=0
for f in slurm.conf gres.conf; do
  if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f" 2>/dev/null; then mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"; conf_changed=1; else rm -f "$CONF_DIR/$f.new"; fi
done

# ---------------------------------------------------------------- 3. munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
  log "munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge; chown munge:munge /run/munge; chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged 9>&-   # daemonizes, writes /run/munge/munged.pid
  wait_until 10 munge_ok || die "munged did not come up"
  cp /run/munge/munged.pid "$RUN/munged.pid"      # we started it -> we stop it
  log "munged started (pid $(cat "$RUN/munged.pid"))"
fi

# ---------------------------------------------------------------- 4. MariaDB + slurmdbd
if [ "$ACCOUNTING" = 1 ]; then
  SOCK=$MY/mysqld.sock
  db_ok() { mariadb-admin --socket="$SOCK" ping; }
  if alive "$(pid_of "$RUN/mariadbd.pid")" && db_ok >/dev/null 2>&1; then
    log "mariadbd already running"
  else
    if [ ! -d "$MY/data/mysql" ]; then
      mkdir -p "$MY/data"; chown -R mysql:mysql "$MY"
      mariadb-install-db --no-defaults --user=mysql --datadir="$MY/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed"
      log "mariadb datadir initialised"
    fi
    chown -R mysql:mysql "$MY"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MY/data" --socket="$SOCK" \
      --pid-file="$MY/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-log-bin \
      --log-error="$MY/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 9>&- &
    wait_until 60 db_ok || die "mariadbd did not come up"
    cp "$MY/mariadbd.pid" "$RUN/mariadbd.pid"   # pid written by mariadbd itself
    log "mariadbd started (pid $(cat "$RUN/mariadbd.pid"))"
  fi
  mariadb --socket="$SOCK" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "cannot create DB user"

  cat > "$CONF_DIR/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf.new"
  if ! cmp -s "$CONF_DIR/slurmdbd.conf.new" "$CONF_DIR/slurmdbd.conf" 2>/dev/null; then
    mv "$CONF_DIR/slurmdbd.conf.new" "$CONF_DIR/slurmdbd.conf"
    alive "$(pid_of "$RUN/slurmdbd.pid")" && { kill "$(cat "$RUN/slurmdbd.pid")"; wait_until 20 bash -c "! kill -0 $(cat "$RUN/slurmdbd.pid")" || true; }
  else rm -f "$CONF_DIR/slurmdbd.conf.new"; fi

  dbd_ok() { sacctmgr -n -P list cluster format=cluster; }
  if alive "$(pid_of "$RUN/slurmdbd.pid")"; then
    log "slurmdbd already running"
  else
    slurmdbd 9>&- || die "slurmdbd failed to start"
    wait_until 60 dbd_ok || die "slurmdbd not answering"
    log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
  fi
  wait_until 60 dbd_ok || die "slurmdbd not answering"
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster $CLUSTER in accounting DB"
  fi
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
ctld_pid=$(pid_of "$RUN/slurmctld.pid"); d_pid=$(pid_of "$RUN/slurmd.pid")
if alive "$ctld_pid" && [ "$conf_changed" = 1 ]; then
  log "config changed: restarting slurmctld/slurmd"
  kill "$ctld_pid" ${d_pid:+$d_pid} 2>/dev/null || true
  wait_until 30 bash -c "! { [ -r /proc/$ctld_pid/stat ] && [ \"\$(awk '{print \$3}' /proc/$ctld_pid/stat)\" != Z ]; }" || die "slurmctld did not stop"
  [ -n "$d_pid" ] && { wait_until 30 bash -c "! { [ -r /proc/$d_pid/stat ] && [ \"\$(awk '{print \$3}' /proc/$d_pid/stat)\" != Z ]; }" || true; }
fi
if alive "$(pid_of "$RUN/slurmctld.pid")"; then
  log "slurmctld already running"
else
  rm -f "$RUN/slurmctld.pid"
  slurmctld 9>&- || die "slurmctld failed to start"
  wait_until 30 scontrol ping || die "slurmctld not answering"
  log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
fi
if alive "$(pid_of "$RUN/slurmd.pid")"; then
  log "slurmd already running"
else
  rm -f "$RUN/slurmd.pid"
  slurmd_t0=$(date +%s)
  slurmd 9>&- || die "slurmd failed to start"
  wait_until 10 test -s "$RUN/slurmd.pid" || die "slurmd wrote no pid file"
  log "slurmd started (pid $(cat "$RUN/slurmd.pid"))"
fi

# ---------------------------------------------------------------- 6. wait for node
# slurmctld restores the old node state from disk, so "idle" alone can be stale: also require
# that the running slurmd has registered (SlurmdStartTime >= when we launched it).
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }
slurmd_registered() {
  [ -z "${slurmd_t0:-}" ] && return 0
  local t; t=$(scontrol show node "$NODE" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s)" -ge $((slurmd_t0 - 1)) ]
}
end=$(( $(date +%s) + WAIT_S ))
while :; do
  st=$(node_state)
  slurmd_registered || st="unregistered($st)"
  case "$st" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*|fail*)
      scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  [ "$(date +%s)" -ge "$end" ] && die "node $NODE not idle after ${WAIT_S}s (state=$st)"
  sleep 0.3
done
# end-to-end probe (munge creds, step launch) when the node is free
if [ "$st" = idle ]; then
  timeout 30 srun --immediate=10 -N1 -n1 -t 1 -J start-cluster-probe true || die "srun probe failed"
fi
log "cluster ready: node $NODE is $st"
sinfo
