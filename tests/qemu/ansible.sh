#!/usr/bin/env bash
# Host side of the QEMU "ansible" check (run.sh starts it when the guest's ansible scenario
# says "QEMU-TEST: ansible-ready USER PASS"): the playbooks of ansible/ against the VM, over
# SSH (QEMU forwards SSH_PORT to the guest's 22, key only) and the REST API (HTTPS_PORT to 443),
# with the example inventory's group_vars (the VM is a host of site lon1):
#   1. a password login is refused (sshd offers publickey only);
#   2. deploy --check --diff reports changes and applies none (GET /api/v1/probes/targets);
#   3. deploy changes things, a second deploy changes nothing (changed=0);
#   4. the REST API shows the result: lon1's targets (not nyc1's), the users, the licence key,
#      probed's config; the saved API key authenticates;
#   5. one changed variable changes one file and reloads only that daemon; a value the daemon's
#      check-config rejects fails the run and leaves the file as it was;
#   6. status.yml reports every daemon serving; rotate-api-keys.yml replaces the key (the
#      old one is refused, the new one accepted).
# Prints the ansible output, then one last line "ok ..." or "failed: ...", which it also
# writes to the guest's /run/rookery-qemu-ansible-done (the guest's verdict waits for it).
#   tests/qemu/ansible.sh SSH_PORT HTTPS_PORT KEY USER PASS WORKDIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ssh_port=$1 https_port=$2 key=$3 user=$4 pass=$5 work=$6
mkdir -p "$work"
export PATH="/opt/rookery-test-venv/bin:$PATH" ANSIBLE_CONFIG="$repo/ansible/ansible.cfg" \
  ANSIBLE_HOME="$work/ansible-home" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
api="https://127.0.0.1:$https_port/api/v1"
ssh_opts=(-i "$key" -p "$ssh_port" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20
  -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$work/known_hosts")

verdict() { # LINE: print it and hand it to the guest
  echo "$1"
  timeout 60 ssh "${ssh_opts[@]}" root@127.0.0.1 "cat > /run/rookery-qemu-ansible-done" <<<"$1" ||
    echo "(could not write the verdict to the guest)"
}
fail() { verdict "failed: $*"; exit 1; }

# --- SSH: keys only ---
up=""
for _ in $(seq 1 30); do
  timeout 40 ssh "${ssh_opts[@]}" root@127.0.0.1 true 2>"$work/ssh.err" && { up=1; break; }
  sleep 2
done
[ -n "$up" ] || { echo "failed: no SSH login with the test key on 127.0.0.1:$ssh_port: $(tail -n1 "$work/ssh.err")"; exit 1; }
if timeout 40 ssh "${ssh_opts[@]}" -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=0 \
     -o PreferredAuthentications=password,keyboard-interactive root@127.0.0.1 true 2>"$work/ssh-pw.err"; then
  fail "a login without the key succeeded"
fi
grep -q 'Permission denied (publickey)' "$work/ssh-pw.err" ||
  fail "sshd offers more than publickey: $(tail -n1 "$work/ssh-pw.err")"
timeout 60 ssh "${ssh_opts[@]}" root@127.0.0.1 cat /etc/rookery/tls/apid.crt > "$work/apid.pem" ||
  fail "cannot read the appliance's certificate over SSH"

# --- inventory: the example's group_vars, the VM in site lon1 ---
inv=$work/inventory
rm -rf "$inv" && mkdir -p "$inv/host_vars" && cp -r "$repo/ansible/inventories/example/group_vars" "$inv/"
cat > "$inv/hosts.yml" <<YAML
all:
  children:
    rookery:
      children:
        lon1:
          hosts:
            qemu:
YAML
cat > "$inv/host_vars/qemu.yml" <<YAML
ansible_host: 127.0.0.1
ansible_port: $ssh_port
ansible_ssh_private_key_file: $key
ansible_ssh_common_args: -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$work/known_hosts
rookery_api_url: https://127.0.0.1:$https_port
rookery_api_ca_path: $work/apid.pem
rookery_api_key_dir: $work/api-keys
# No licence server here: let licensed fail fast.
rookery_licensed:
  licence:
    server-url: https://127.0.0.1:9
    request-timeout: 2s
    max-attempts: 1
YAML
# Secrets in place of the vault: the admin's password from the guest, a valid licence key.
body="PENG-$(openssl rand -hex 8 | tr a-f A-F | sed 's/\(....\)/\1-/g; s/-$//')"
licence="$body-$(printf %s "$body" | sha256sum | cut -c1-4 | tr a-f A-F)"
(umask 077; cat > "$work/secrets.yml" <<YAML
vault_rookery_admin_password: "$pass"
vault_rookery_licence_key: "$licence"
vault_rookery_user_passwords:
  noc: "Viewer-$(openssl rand -hex 10)"
  netops: "Maint-$(openssl rand -hex 10)"
YAML
)

run_play() { # NAME PLAYBOOK [ARGS...]: runs it (bounded), prints the output; sets rc
  local name=$1 book=$2; shift 2
  echo "==== ansible-playbook $book $*"
  (cd "$repo/ansible" && timeout 900 ansible-playbook -i "$inv" -e @"$work/secrets.yml" "playbooks/$book" "$@") > "$work/$name.out" 2>&1
  rc=$?
  cat "$work/$name.out"
}
play() { # NAME PLAYBOOK [ARGS...]: run_play, which must succeed; sets rc and changed
  local name=$1 book=$2
  run_play "$@"
  shift 2
  changed=$(grep -E '^qemu +:' "$work/$name.out" | sed -n 's/.* changed=\([0-9]*\) .*/\1/p')
  failed=$(grep -E '^qemu +:' "$work/$name.out" | sed -n 's/.* failed=\([0-9]*\) .*/\1/p')
  [ "$rc" -eq 0 ] && [ "${failed:-1}" = 0 ] || fail "$book $* exited $rc (failed=${failed:-?}): $(grep -E '^(fatal|failed):' "$work/$name.out" | head -n1 | cut -c1-300)"
}
# get PATH [BEARER] -> body (or "" and the status on stderr); token from a login.
get() {
  curl -s --max-time 60 --cacert "$work/apid.pem" -H "Authorization: Bearer $2" -w '\n%{http_code}' "$api/$1"
}
login() {
  curl -s --max-time 60 --cacert "$work/apid.pem" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$user\",\"password\":\"$pass\"}" "$api/auth/login" |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'
}
token=$(login)
[ -n "$token" ] || fail "cannot log in to $api as $user (certificate from the appliance)"
targets() { get probes/targets "$token" | head -n1 | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | sort | paste -sd' '; }

# --- check mode: reports, applies nothing ---
play check deploy.yml --check --diff
check_changed=$changed
[ "${check_changed:-0}" -gt 0 ] || fail "deploy --check reported no changes on a factory appliance"
grep -q '^+name = "lon1-gateway"' "$work/check.out" || fail "deploy --check --diff shows no diff adding lon1-gateway to probed.toml"
[ -z "$(targets)" ] || fail "deploy --check changed probed's targets: $(targets)"

# --- deploy twice ---
play deploy1 deploy.yml
first=$changed
[ "${first:-0}" -gt 0 ] || fail "the first deploy changed nothing"
play deploy2 deploy.yml
[ "$changed" = 0 ] || fail "the second deploy changed $changed things: $(grep -E '^changed:' "$work/deploy2.out" | head -n3 | paste -sd' ')"

# --- what the REST API shows ---
token=$(login)
[ "$(targets)" = "lon1-gateway lon1-intranet lon1-resolver" ] || fail "GET probes/targets: '$(targets)' (expected lon1's three)"
users=$(get users "$token" | head -n1)
grep -q '"username":"noc","role":"viewer"' <<<"$users" && grep -q '"username":"netops","role":"maintainer"' <<<"$users" ||
  fail "GET users lacks noc (viewer) or netops (maintainer): ${users:0:300}"
lic=$(get licence "$token" | head -n1)
grep -q "\"key_masked\":\"PENG-\\*\\*\\*\\*-\\*\\*\\*\\*-\\*\\*\\*\\*-\\*\\*\\*\\*-${licence##*-}\"" <<<"$lic" ||
  fail "GET licence does not show the key ending ${licence##*-}: ${lic:0:300}"
conf=$(get config/probed "$token" | head -n1)
grep -q '"default-interval":"30s"' <<<"$conf" || fail "GET config/probed lacks default-interval 30s: ${conf:0:300}"
[ -s "$work/api-keys/qemu/prometheus.key" ] || fail "no saved API key $work/api-keys/qemu/prometheus.key"
old_key=$(cat "$work/api-keys/qemu/prometheus.key")
[ "$(get system "$old_key" | tail -n1)" = 200 ] || fail "the saved prometheus API key is refused by GET system"

# --- one variable changed: one file, one reload ---
play one deploy.yml -e '{"rookery_probed": {"scheduler": {"default-interval": "45s"}, "store": {"retention": "14days"}}}'
[ "$changed" = 2 ] || fail "changing probed's default-interval changed $changed things (expected its file and its reload)"
reloaded=$(sed -n '/^RUNNING HANDLER/,/^TASK\|^PLAY RECAP/p' "$work/one.out" | grep -o '(item=[a-z]*)' | paste -sd' ')
[ "$reloaded" = "(item=probed)" ] || fail "reloaded after changing probed.toml: '$reloaded' (expected probed only)"
conf=$(get config/probed "$token" | head -n1)
grep -q '"default-interval":"45s"' <<<"$conf" || fail "GET config/probed lacks the new default-interval 45s: ${conf:0:300}"

# --- a value probed rejects: check-config on the appliance fails the task, nothing installed ---
run_play bad deploy.yml -e '{"rookery_probed": {"scheduler": {"default-interval": "45s", "max-concurrency": 0}, "store": {"retention": "14days"}}}'
[ "$rc" -ne 0 ] || fail "deploy with probed's max-concurrency = 0 succeeded"
grep -q 'scheduler.max-concurrency: 0 is out of range' "$work/bad.out" ||
  fail "the failed deploy does not show rookery-probed check-config's message"
conf=$(get config/probed "$token" | head -n1)
grep -q '"default-interval":"45s"' <<<"$conf" && ! grep -q 'max-concurrency' <<<"$conf" ||
  fail "probed.toml changed after check-config rejected the new one: ${conf:0:300}"

# --- status, key rotation ---
play status status.yml
grep -q 'probed: serving, ready' "$work/status.out" || fail "status.yml does not report probed serving"
play rotate rotate-api-keys.yml
[ "${changed:-0}" -gt 0 ] || fail "rotate-api-keys.yml changed nothing"
new_key=$(cat "$work/api-keys/qemu/prometheus.key")
[ "$new_key" != "$old_key" ] || fail "rotation did not replace the saved prometheus key"
[ "$(get system "$new_key" | tail -n1)" = 200 ] || fail "the rotated prometheus key is refused"
[ "$(get system "$old_key" | tail -n1)" = 401 ] || fail "the replaced prometheus key still works"

verdict "ok check mode changed=$check_changed and applied nothing; deploy changed=$first, again changed=0; GET probes/targets: lon1's 3 targets; users, licence ...-${licence##*-} and probed's config as set; one changed key reloaded probed only; a value check-config rejects failed the run, file kept; status serving; rotated key accepted, old one 401"
