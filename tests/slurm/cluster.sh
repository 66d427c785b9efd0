#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + slurmdbd + MariaDB + munge) for
# end-to-end tests of the Snakemake SLURM executor on one machine, without systemd.
#
#   tests/slurm/cluster.sh install   # apt packages (idempotent; needs root + network/mirror)
#   tests/slurm/cluster.sh start     # configure + start all daemons (no-op if already up)
#   tests/slurm/cluster.sh status    # exit 0 if every recorded daemon is alive and the node is usable
#   tests/slurm/cluster.sh stop      # kill exactly the recorded daemon PIDs
#   tests/slurm/cluster.sh env       # print `export SLURM_CONF=...` etc. for eval
#
# Environment knobs:
#   VIMODES_SLURM_STATE    state dir (configs, logs, DB, spool, PIDs)   default /tmp/vimodes-slurm
#   VIMODES_SLURM_TIMEOUT  seconds to wait for each daemon               default 60
#   VIMODES_SLURM_USERS    users added to the account                    default: $(id -un)
#   VIMODES_SLURM_DB_PORT  TCP port of the private MariaDB (127.0.0.1)   default 3306
#   VIMODES_SLURM_NO_ETC_LINK=1  do not create the /etc/slurm/slurm.conf symlink
set -euo pipefail

STATE=${VIMODES_SLURM_STATE:-/tmp/vimodes-slurm}
TIMEOUT=${VIMODES_SLURM_TIMEOUT:-60}
USERS=${VIMODES_SLURM_USERS:-$(id -un)}
DB_PORT=${VIMODES_SLURM_DB_PORT:-3306}
ACCOUNT=vimodes
PARTITION=main
CLUSTER=localcluster
PACKAGES=(munge slurm-wlm slurmdbd mariadb-server)
DAEMONS=(mariadb munged slurmdbd slurmctld slurmd)   # start order; stop is the reverse

ETC=$STATE/etc
LOG=$STATE/log
PIDS=$STATE/pids
RUN=$STATE/run
SPOOL=$STATE/spool
DBDIR=$STATE/mysql
DBSOCK=$RUN/mysqld/mysqld.sock
export SLURM_CONF=$ETC/slurm.conf

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster.sh] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (daemons run as munge/mysql/slurm users)"; }

# ---------------------------------------------------------------- install
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

cmd_install() {
    need_root
    local missing=() p
    for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if ((${#missing[@]} == 0)); then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: ${missing[*]}"
    # Keep package scripts from starting services (there is no systemd/init here).
    local prc=/usr/sbin/policy-rc.d backup=""
    if [[ -e $prc ]]; then backup=$(mktemp /usr/sbin/policy-rc.d.vimodes.XXXXXX); cp -p "$prc" "$backup"; fi
    # shellcheck disable=SC2064
    trap "rm -f '$prc'; [[ -n '$backup' ]] && mv -f '$backup' '$prc' || true" EXIT
    printf '#!/bin/sh\nexit 101\n' >"$prc"
    chmod 755 "$prc"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q || die "apt-get update failed"
    timeout 1200 apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" || die "apt-get install failed"
    for p in "${PACKAGES[@]}"; do pkg_installed "$p" || die "package $p still not installed"; done
    log "installed: ${missing[*]}"
}

# ---------------------------------------------------------------- PID bookkeeping
# Each $PIDS/<name>.pid holds "<pid> <starttime>" (field 22 of /proc/<pid>/stat), so a
# recycled PID is never mistaken for our daemon.
proc_start() { awk '{sub(/^.*\) /,""); print $20}' "/proc/$1/stat" 2>/dev/null; }

record_pid() { echo "$2 $(proc_start "$2")" >"$PIDS/$1.pid"; }

# prints the PID if the recorded daemon is alive, fails otherwise
alive_pid() {
    local f=$PIDS/$1.pid pid st
    [[ -r $f ]] || return 1
    read -r pid st <"$f" || return 1
    [[ -n ${pid:-} && -d /proc/$pid ]] || return 1
    [[ $(proc_start "$pid") == "$st" ]] || return 1
    # a zombie is not alive
    [[ $(awk '{sub(/^.*\) /,""); print $1}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

logfile_of() {
    case $1 in
        mariadb) echo "$LOG/mariadb.log" ;;
        munged) echo "$LOG/munge/munged.log" ;;
        *) echo "$LOG/$1.log" ;;
    esac
}

show_logs() {
    local name=$1 f
    for f in "$(logfile_of "$name")" "$LOG/$name.stdout"; do
        if [[ -s $f ]]; then
            printf '%s\n' "----- last 25 lines of $f -----" >&2
            tail -n 25 "$f" >&2
        fi
    done
}

fail() { # fail <daemon> <message>
    printf '[cluster.sh] ERROR: %s\n' "$2" >&2
    show_logs "$1"
    if [[ ${STARTING:-0} == 1 ]]; then
        printf '[cluster.sh] stopping the daemons this start launched; logs stay in %s/log\n' "$STATE" >&2
        do_stop || true
    fi
    exit 1
}

# launch <name> <cmd...>: start a foreground daemon detached in its own session, record its PID.
# setsid execs in place (the background child is no process-group leader), so $! is the daemon.
launch() {
    local name=$1; shift
    # 9>&- : the daemon must not inherit the lock fd (it would hold the lock forever)
    setsid "$@" </dev/null >>"$LOG/$name.stdout" 2>&1 9>&- &
    local pid=$!
    record_pid "$name" "$pid"
    log "started $name (pid $pid)"
}

# wait_until <daemon> <description> <command...>: bounded poll; fails early if the daemon died.
wait_until() {
    local name=$1 what=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        alive_pid "$name" >/dev/null || fail "$name" "$name exited while waiting for: $what"
        if "$@" >/dev/null 2>&1; then return 0; fi   # every probe is itself bounded
        sleep 0.5
    done
    fail "$name" "timed out after ${TIMEOUT}s waiting for: $what"
}

# ---------------------------------------------------------------- configuration
node_line() {
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    local line
    line=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || die "slurmd -C failed"
    line=$(sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/" <<<"$line")
    echo "$line State=UNKNOWN"
}

write_configs() {
    install -d -m 755 "$STATE" "$ETC" "$LOG" "$PIDS" "$RUN" "$SPOOL"
    install -d -m 755 -o slurm -g slurm "$RUN/slurm" "$SPOOL/slurmctld"
    install -d -m 755 "$SPOOL/slurmd"
    install -d -m 755 -o mysql -g mysql "$RUN/mysqld"
    install -d -m 700 -o munge -g munge "$LOG/munge"
    local f
    for f in slurmctld slurmdbd; do
        touch "$LOG/$f.log"; chown slurm:slurm "$LOG/$f.log"
    done
    touch "$LOG/slurmd.log" "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"

    if [[ ! -s $STATE/db.pass ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/db.pass")
    fi

    cat >"$ETC/slurm.conf.new" <<EOF
# generated by tests/slurm/cluster.sh -- do not edit
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=$RUN/slurm/slurmctld.pid
SlurmdPidFile=$RUN/slurm/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
$(node_line)
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv -f "$ETC/slurm.conf.new" "$ETC/slurm.conf"
    chmod 644 "$ETC/slurm.conf"

    (umask 077; cat >"$ETC/slurmdbd.conf" <<EOF
# generated by tests/slurm/cluster.sh -- do not edit
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/db.pass")
StorageLoc=slurm_acct_db
EOF
    )
    chown slurm:slurm "$ETC/slurmdbd.conf"
    chmod 600 "$ETC/slurmdbd.conf"

    # Let plain `sinfo`/`sbatch` (and Snakemake's calls) find the config without SLURM_CONF.
    if [[ ${VIMODES_SLURM_NO_ETC_LINK:-0} != 1 ]]; then
        if [[ ! -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
            install -d -m 755 /etc/slurm
            ln -sfn "$ETC/slurm.conf" /etc/slurm/slurm.conf
        else
            log "NOTE: /etc/slurm/slurm.conf exists and is not ours; export SLURM_CONF=$ETC/slurm.conf"
        fi
    fi
}

ensure_hostname() {
    HOST=$(hostname -s)
    [[ -n $HOST ]] || die "hostname -s is empty"
    if ! getent hosts "$HOST" >/dev/null; then
        log "adding '127.0.0.1 $HOST' to /etc/hosts (hostname did not resolve)"
        echo "127.0.0.1 $HOST" >>/etc/hosts
        getent hosts "$HOST" >/dev/null || die "$HOST still does not resolve after editing /etc/hosts"
    fi
}

ensure_munge_key() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        log "creating munge key"
        install -d -m 700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force
        else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
    fi
    chown munge:munge "$key"; chmod 400 "$key"
    install -d -m 755 -o munge -g munge /run/munge
    install -d -m 700 -o munge -g munge /var/lib/munge
}

# ---------------------------------------------------------------- daemons
mysql_q() { timeout 20 mariadb --no-defaults --protocol=socket --socket="$DBSOCK" -u root -N -B -e "$1"; }

start_mariadb() {
    if [[ ! -d $DBDIR/mysql ]]; then
        log "initialising MariaDB data dir $DBDIR"
        rm -rf "$DBDIR"; install -d -m 750 -o mysql -g mysql "$DBDIR"
        timeout 120 mariadb-install-db --no-defaults --user=mysql --datadir="$DBDIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install.log" 2>&1 ||
            { tail -n 25 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    launch mariadb mariadbd --no-defaults --user=mysql --datadir="$DBDIR" \
        --socket="$DBSOCK" --pid-file="$RUN/mysqld/mariadb.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$LOG/mariadb.log" \
        --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 --innodb-use-native-aio=0 --skip-name-resolve=0
    wait_until mariadb "MariaDB to accept connections on $DBSOCK" mysql_q "SELECT 1"
    local pw; pw=$(cat "$STATE/db.pass")
    mysql_q "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
             CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
             CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
             ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
             ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
             FLUSH PRIVILEGES;" || fail mariadb "could not create the slurm DB user"
}

start_munged() {
    launch munged setpriv --reuid=munge --regid=munge --init-groups -- \
        munged --foreground --log-file="$LOG/munge/munged.log"
    # setpriv execs munged, so the recorded PID is munged's
    wait_until munged "munge to answer (munge -n | unmunge)" timeout 5 bash -c 'munge -n | unmunge'
}

sacctmgr_q() { timeout 20 sacctmgr -n -P "$@"; }

start_slurmdbd() {
    launch slurmdbd slurmdbd -D
    wait_until slurmdbd "slurmdbd to answer (sacctmgr show cluster)" timeout 5 sacctmgr -n show cluster
    if [[ -z $(sacctmgr_q show cluster where cluster="$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail slurmdbd "sacctmgr add cluster failed"
    fi
    if [[ -z $(sacctmgr_q show account where account="$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="vimodes tests" \
            Organization=vimodes >/dev/null || fail slurmdbd "sacctmgr add account failed"
    fi
    local u
    for u in $USERS; do
        if [[ -z $(sacctmgr_q show assoc where cluster="$CLUSTER" account="$ACCOUNT" user="$u" format=user) ]]; then
            sacctmgr -i add user "$u" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null ||
                fail slurmdbd "sacctmgr add user $u failed"
        fi
    done
}

start_slurmctld() {
    launch slurmctld slurmctld -D
    wait_until slurmctld "slurmctld to answer (scontrol ping)" \
        bash -c 'timeout 10 scontrol ping | grep -q "is UP"'
}

node_state() { timeout 10 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }

start_slurmd() {
    launch slurmd slurmd -D
    local deadline=$((SECONDS + TIMEOUT)) st resumed=0
    while ((SECONDS < deadline)); do
        node_ready && return 0
        alive_pid slurmd >/dev/null || fail slurmd "slurmd exited while waiting for node $HOST to become idle"
        st=$(node_state)
        # left over from an earlier run (state is kept in the spool dir)
        if [[ $st =~ ^(down|drain|drained|draining) && $resumed == 0 ]]; then
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 0.5
    done
    fail slurmd "timed out after ${TIMEOUT}s waiting for node $HOST to become idle (state: ${st:-?})"
}

all_alive() {
    local d
    for d in "${DAEMONS[@]}"; do alive_pid "$d" >/dev/null || return 1; done
}

print_usage_info() {
    cat <<EOF
SLURM_CONF=$ETC/slurm.conf
SLURM_ACCOUNT=$ACCOUNT
SLURM_PARTITION=$PARTITION
# snakemake --executor slurm --default-resources slurm_account=$ACCOUNT slurm_partition=$PARTITION ...
EOF
}

cmd_start() {
    need_root
    for b in mariadbd mariadb-install-db munged slurmdbd slurmctld slurmd sacctmgr setpriv; do
        command -v "$b" >/dev/null || die "$b not found; run '$0 install' first"
    done
    install -d -m 755 "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 300 9 || die "another cluster.sh start/stop holds $STATE/.lock"
    ensure_hostname
    if all_alive && node_ready; then
        log "cluster already running (state $STATE)"
        print_usage_info
        return 0
    fi
    if compgen -G "$PIDS/*.pid" >/dev/null; then
        log "partially running or stale cluster found; restarting cleanly"
        do_stop
    fi
    local t0=$SECONDS
    STARTING=1
    ensure_munge_key
    write_configs
    start_mariadb
    start_munged
    start_slurmdbd
    start_slurmctld
    start_slurmd
    STARTING=0
    log "cluster up in $((SECONDS - t0))s: node $HOST, partition $PARTITION, account $ACCOUNT"
    print_usage_info
}

do_stop() {
    local i d pid pids=() deadline
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[i]}
        if pid=$(alive_pid "$d"); then
            log "stopping $d (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            # give each daemon a moment so the stop order is respected (bounded)
            deadline=$((SECONDS + 15))
            while alive_pid "$d" >/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
            if alive_pid "$d" >/dev/null; then
                log "$d (pid $pid) ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                pids+=("$pid")
            fi
        fi
        rm -f "$PIDS/$d.pid"
    done
    for pid in "${pids[@]}"; do
        deadline=$((SECONDS + 5))
        while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.2; done
    done
}

cmd_stop() {
    need_root
    [[ -d $PIDS ]] || { log "nothing to stop (no $PIDS)"; return 0; }
    exec 9>"$STATE/.lock"
    flock -w 300 9 || die "another cluster.sh start/stop holds $STATE/.lock"
    do_stop
    log "stopped"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(alive_pid "$d"); then printf '%-10s running (pid %s)\n' "$d" "$pid"
        else printf '%-10s stopped\n' "$d"; rc=1; fi
    done
    if alive_pid slurmctld >/dev/null; then
        HOST=$(hostname -s)
        printf 'node %s: %s\n' "$HOST" "$(node_state || true)"
        node_ready || rc=1
    fi
    ((rc == 0)) && print_usage_info
    return $rc
}

cmd_env() {
    printf 'export SLURM_CONF=%q\nexport VIMODES_SLURM_ACCOUNT=%q\nexport VIMODES_SLURM_PARTITION=%q\n' \
        "$ETC/slurm.conf" "$ACCOUNT" "$PARTITION"
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 {install|start|stop|restart|status|env}" >&2; exit 2 ;;
esac
