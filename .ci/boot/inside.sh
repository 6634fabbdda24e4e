#!/bin/bash
# Runs inside the booted Debian 12 container (a oneshot unit, as root), does what an
# installer does with the .deb and checks the result under the real systemd.
# Writes one line per check to /root/boot-check.result ("name|PASS|detail" or
# "name|FAIL|detail"), then "DONE", and powers the container off.
# Called by .ci/boot/run.sh; the .debs are in /root/debs/ (v1 and v2).
set -u
out=/root/boot-check.result
log=/root/boot-check.log
: >"$out"
exec >>"$log" 2>&1
set -x

pass() { echo "$1|PASS|$2" >>"$out"; }
fail() { echo "$1|FAIL|$2" >>"$out"; }
check() { # name detail command...
	local name=$1 detail=$2
	shift 2
	if "$@"; then pass "$name" "$detail"; else fail "$name" "$detail"; fi
}
main_pid() { systemctl show -p MainPID --value fieldgate.service; }
wait_for() { # seconds command...: poll every 0.2 s
	local deadline=$((SECONDS + $1))
	shift
	while ((SECONDS < deadline)); do
		"$@" && return 0
		sleep 0.2
	done
	"$@"
}
is_active() { [ "$(systemctl is-active fieldgate.service)" = active ]; }
radio_up() { fieldgate status --json 2>/dev/null | jq -e '.radios[] | select(.name == "zigbee0") | .state == "up"' >/dev/null; }
audit_count() { fieldgate audit verify --json | jq -r '.records'; }
finish() {
	echo DONE >>"$out"
	sync
	systemctl poweroff --no-block
	exit 0
}
trap finish EXIT

v1=$(ls /root/debs/v1/fieldgate_*.deb)
v2=$(ls /root/debs/v2/fieldgate_*.deb)

# --- install as the README says -----------------------------------------------
check "install" "apt install ./fieldgate_*.deb" \
	env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$v1"
check "socket unit" "fieldgate.socket active, api.sock root:fieldgate 0660" \
	bash -c '[ "$(systemctl is-active fieldgate.socket)" = active ] &&
		[ "$(stat -c %U:%G:%a /run/fieldgate/api.sock)" = root:fieldgate:660 ]'
check "enabled" "fieldgate.service and fieldgate.socket enabled" \
	bash -c '[ "$(systemctl is-enabled fieldgate.service)" = enabled ] &&
		[ "$(systemctl is-enabled fieldgate.socket)" = enabled ]'

# --- add a radio, restart -----------------------------------------------------
cat >>/etc/fieldgate/fieldgate.toml <<'TOML'

[[radio]]
name = "zigbee0"
protocol = "zigbee"
port = "sim://zigbee"
TOML
check "config check" "fieldgate config check on the edited config" \
	fieldgate config check /etc/fieldgate/fieldgate.toml
systemctl restart fieldgate.service
check "active (Type=notify)" "systemctl restart reaches active with READY=1" \
	bash -c '[ "$(systemctl show -p Type --value fieldgate.service)" = notify ] &&
		[ "$(systemctl is-active fieldgate.service)" = active ]'
check "radio up" "sim://zigbee radio zigbee0 reports up" wait_for 20 radio_up

# --- who may use the API ------------------------------------------------------
useradd --create-home --groups fieldgate alice
useradd --create-home bob
check "status as root" "fieldgate status" fieldgate status
check "status in group" "user in group fieldgate" runuser -u alice -- fieldgate status
check "status refused" "user outside the group is refused" \
	bash -c '! runuser -u bob -- fieldgate status'

# --- kill -9: restarted within RestartSec, nothing committed lost ---------------
# Let the emulated devices join first, so the registry has something to lose.
timeout 30 fieldgate pair zigbee0 --seconds 8 || true
check "pairing" "emulated devices joined through a join window" \
	wait_for 20 bash -c '[ "$(fieldgate devices --json | jq length)" -ge 1 ]'
devices_before=$(fieldgate devices --json | jq length)
audit_before=$(audit_count)
pid=$(main_pid)
t0=$SECONDS
kill -9 "$pid"
wait_for 30 bash -c "p=\$(systemctl show -p MainPID --value fieldgate.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && [ \"\$(systemctl is-active fieldgate.service)\" = active ]"
restart_s=$((SECONDS - t0))
wait_for 20 radio_up
devices_after=$(fieldgate devices --json | jq length)
audit_after=$(audit_count)
check "kill -9" "restarted in ${restart_s}s (RestartSec=5s); devices $devices_before -> $devices_after, audit records $audit_before -> $audit_after" \
	bash -c "[ $restart_s -le 15 ] && [ $devices_after -ge $devices_before ] && [ $audit_after -gt $audit_before ] && fieldgate audit verify >/dev/null"

# --- watchdog: a daemon that stops pinging is killed and restarted --------------
pid=$(main_pid)
restarts_before=$(systemctl show -p NRestarts --value fieldgate.service)
t0=$SECONDS
kill -STOP "$pid"
# WatchdogSec=30s, then SIGABRT; a stopped process only dies of the SIGKILL that
# follows TimeoutAbortSec (= TimeoutStopSec, 30 s); then RestartSec=5s.
wait_for 100 bash -c "p=\$(systemctl show -p MainPID --value fieldgate.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && [ \"\$(systemctl is-active fieldgate.service)\" = active ]"
wd_s=$((SECONDS - t0))
check "watchdog" "stopped daemon killed and restarted after ${wd_s}s ($(journalctl -u fieldgate.service -b --no-pager | grep -c 'Watchdog timeout') watchdog timeout(s) logged, NRestarts $restarts_before -> $(systemctl show -p NRestarts --value fieldgate.service))" \
	bash -c "journalctl -u fieldgate.service -b --no-pager | grep -q 'Watchdog timeout' && [ \"\$(systemctl show -p NRestarts --value fieldgate.service)\" -gt $restarts_before ]"
wait_for 20 radio_up

# --- stop: STOPPING=1, quick exit, structured journal ---------------------------
# SIGTERM sent directly (not by systemctl): the unit only goes to "deactivating"
# when the daemon itself says STOPPING=1.
pid=$(main_pid)
kill -TERM "$pid"
check "STOPPING=1" "unit went deactivating on the daemon's own STOPPING=1" \
	wait_for 5 bash -c '[ "$(systemctl show -p ActiveState --value fieldgate.service)" != active ]'
wait_for 10 bash -c '[ "$(systemctl is-active fieldgate.service)" = inactive ]'
check "clean exit" "exit status 0 after SIGTERM" \
	bash -c '[ "$(systemctl show -p ExecMainStatus --value fieldgate.service)" = 0 ]'
systemctl start fieldgate.service
wait_for 20 radio_up
t0=$(date +%s%N)
systemctl stop fieldgate.service
stop_ms=$((($(date +%s%N) - t0) / 1000000))
check "systemctl stop" "stopped in ${stop_ms} ms" bash -c "[ $stop_ms -lt 5000 ]"
check "journal" "the message names its fields (fieldgate ready ... radios=1) and they are journal fields too (F_GATEWAY, F_RADIOS=1)" \
	bash -c 'journalctl -u fieldgate.service -b -o json --no-pager |
		jq -e -s "map(select((.MESSAGE | startswith(\"fieldgate ready \")) and (.MESSAGE | contains(\"radios=1\")) and .F_GATEWAY != null and .F_RADIOS == \"1\")) | length > 0" >/dev/null'
# The socket stays and starts the service on the next connection.
check "socket activation" "a CLI call on the idle socket starts the service" \
	bash -c 'fieldgate status >/dev/null && [ "$(systemctl is-active fieldgate.service)" = active ]'
wait_for 20 radio_up

# --- doctor -------------------------------------------------------------------
fieldgate doctor --json >/root/doctor.json || true
fieldgate doctor || true
check "doctor" "no failure on the fresh install ($(jq -r '.summary | "\(.ok) ok, \(.warn) warning(s), \(.fail) failure(s)"' /root/doctor.json))" \
	bash -c '[ "$(jq .summary.fail /root/doctor.json)" = 0 ]'

# --- upgrade keeps config, key and database -----------------------------------
key_sum=$(sha256sum </etc/fieldgate/master.key)
devices_before=$(fieldgate devices --json | jq length)
check "upgrade" "apt install of the rebuilt .deb" \
	env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$v2"
wait_for 20 radio_up
check "upgrade keeps" "config, master key, database ($devices_before device(s)) kept; service active on the new version" \
	bash -c "grep -q 'sim://zigbee' /etc/fieldgate/fieldgate.toml &&
		[ \"\$(sha256sum </etc/fieldgate/master.key)\" = '$key_sum' ] &&
		[ \$(fieldgate devices --json | jq length) -ge $devices_before ] &&
		[ \"\$(systemctl is-active fieldgate.service)\" = active ] &&
		dpkg-query -W -f='\${Version}' fieldgate | grep -q -- '-2\$'"

# --- purge --------------------------------------------------------------------
check "purge" "apt purge fieldgate" env DEBIAN_FRONTEND=noninteractive apt-get purge -y fieldgate
check "purge removes" "state, config, key and socket gone; user kept as documented" \
	bash -c '[ ! -e /var/lib/fieldgate ] && [ ! -e /etc/fieldgate ] && [ ! -e /run/fieldgate/api.sock ] &&
		[ "$(systemctl is-active fieldgate.service)" != active ] && getent passwd fieldgate >/dev/null'
