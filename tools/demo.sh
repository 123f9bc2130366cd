#!/usr/bin/env bash
# The walking skeleton end to end: synthetic DICOM studies -> ingest -> COCO dataset -> train
# -> predict every series -> web UI and a worker left running. Called by `make demo`.
set -euo pipefail
: "${RADSEG_HOME:=var}" "${DEMO_DATA:=demo-data}" "${DEMO_ITERATIONS:=400}" "${DEMO_PORT:=5000}"
export RADSEG_HOME
run_dir="$RADSEG_HOME/run"
mkdir -p "$run_dir" "$RADSEG_HOME/logs"
start=$(date +%s)

# Stop what an earlier demo left running, so the port and the queue are ours.
for f in "$run_dir"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done

# The admin's password: RADSEG_ADMIN_PASSWORD if you set one, else generated on the first run and
# kept (mode 0600) in $RADSEG_HOME/demo-admin-password, so that later runs can print it again.
# radseg itself has no default password.
password_file="$RADSEG_HOME/demo-admin-password"
chosen=${RADSEG_ADMIN_PASSWORD:-}
admin_password=$chosen
if [ -z "$admin_password" ]; then
  admin_password=$(head -c 15 /dev/urandom | base64 | tr '+/' '-_')
fi
init_out=$(RADSEG_ADMIN_PASSWORD="$admin_password" radseg init | tee /dev/stderr)
if grep -q "^created admin user" <<<"$init_out"; then
  if [ -z "$chosen" ]; then
    (umask 077 && printf '%s\n' "$admin_password" >"$password_file")
    login="admin / $admin_password   (generated; also in $password_file)"
  else
    rm -f "$password_file"
    login="admin / the RADSEG_ADMIN_PASSWORD you set"
  fi
elif [ -s "$password_file" ]; then
  login="admin / $(cat "$password_file")   (from $password_file, unless you changed it)"
else
  login="admin / the password it was given when $RADSEG_HOME was first set up"
fi
if [ ! -d "$DEMO_DATA/patient-1" ]; then
  radseg demo-data "$DEMO_DATA" --patients 4 --slices 40 --size 128
fi
for patient in "$DEMO_DATA"/patient-*; do
  radseg ingest "$patient/dicom" --labels "$patient/labels.nii.gz" --dataset demo
done
# the liver window separates liver (~60 HU) from other soft tissue (~40 HU) far better
# than the lung window, which adds little over soft tissue for air/tissue edges
radseg datasets build demo --windows soft_tissue,liver,bone

nohup radseg worker >"$RADSEG_HOME/logs/worker.log" 2>&1 &
echo $! >"$run_dir/worker.pid"

train_out=$(radseg train --dataset demo --iterations "$DEMO_ITERATIONS" --wait | tee /dev/stderr)
model_version=$(sed -n 's/^model version \([0-9]*\):.*/\1/p' <<<"$train_out" | tail -n1)
radseg predict --model-version "$model_version" --all-series --wait
predictions_out=$(radseg predictions list | tee /dev/stderr)
# the newest prediction as a DICOM SEG, read back with highdicom and checked by dciodvfy
latest=$(sed -n 's/^prediction \([0-9]*\) .*/\1/p' <<<"$predictions_out" | tail -n1)
radseg export --prediction "$latest" --format dicom-seg --out "$RADSEG_HOME/demo-exports/"

nohup radseg serve --port "$DEMO_PORT" >"$RADSEG_HOME/logs/web.log" 2>&1 &
echo $! >"$run_dir/web.pid"
for _ in $(seq 30); do
  curl -fs -o /dev/null "http://127.0.0.1:$DEMO_PORT/login" && break
  sleep 1
done

cat <<TXT

radseg demo ready in $(( $(date +%s) - start )) s
  UI:      http://127.0.0.1:$DEMO_PORT/
  login:   $login
  worker:  running (log: $RADSEG_HOME/logs/worker.log)
  export:  $RADSEG_HOME/demo-exports/ (a DICOM SEG of prediction $latest; more on its page)
  stop:    make demo-stop
TXT
