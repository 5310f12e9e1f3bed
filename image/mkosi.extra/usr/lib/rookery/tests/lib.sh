# Helpers of the guest test scenarios.
fail() { echo "FAIL: $*"; exit 1; }
# Units the image ships (test and first-boot helpers excluded).
daemon_units() {
  for f in /usr/lib/systemd/system/rookery-*.service; do
    u=$(basename "$f")
    case "$u" in rookery-firstboot.service|rookery-dirs.service|rookery-qemu-test.service) ;; *) echo "$u" ;; esac
  done
}
wait_active() { # unit seconds
  for _ in $(seq 1 "$2"); do
    [ "$(systemctl is-active "$1")" = active ] && return 0
    sleep 1
  done
  return 1
}
digest() { rookeryctl status --daemons licensed | awk '$1 == "licensed" { print $5 }'; }
# vm_https ADDR METHOD PATH [BODY] [TOKEN] -> the whole HTTP/1.1 response of apid on ADDR:443
# (the image has no curl: openssl s_client).
vm_https() {
  local req
  req="$2 $3 HTTP/1.1\r\nHost: rookery\r\nConnection: close\r\n"
  [ -n "${5:-}" ] && req+="Authorization: Bearer $5\r\n"
  if [ -n "${4:-}" ]; then
    req+="Content-Type: application/json\r\nContent-Length: ${#4}\r\n\r\n$4"
  else
    req+="\r\n"
  fi
  printf '%b' "$req" | timeout 60 openssl s_client -connect "$1:443" -quiet -verify_quiet 2>/dev/null
}
http_status() { head -n1 | awk '{ print $2 }'; }
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n1; }
# first_admin_login ADDR: logs in with the one-time admin password and does the forced
# change; sets admin_user, admin_pass (the new, random password) and admin_token.
first_admin_login() {
  local resp pass
  [ -s /run/rookery/initial-admin ] || fail "no /run/rookery/initial-admin (not the first boot?)"
  admin_user=$(sed -n 's/^username=//p' /run/rookery/initial-admin)
  pass=$(sed -n 's/^password=//p' /run/rookery/initial-admin)
  resp=""
  for _ in $(seq 1 30); do # apid may still be generating its certificate on a slow TCG boot
    resp=$(vm_https "$1" POST /api/v1/auth/login "{\"username\":\"$admin_user\",\"password\":\"$pass\"}")
    [ -n "$resp" ] && break
    sleep 2
  done
  [ "$(http_status <<<"$resp")" = 200 ] || fail "login with the one-time admin password: $(head -n1 <<<"$resp") $(tail -n1 <<<"$resp")"
  admin_token=$(json_field access_token <<<"$resp")
  admin_pass="Qemu-$(openssl rand -hex 12)"
  resp=$(vm_https "$1" POST /api/v1/auth/change-password "{\"current_password\":\"$pass\",\"new_password\":\"$admin_pass\"}" "$admin_token")
  [ "$(http_status <<<"$resp")" = 200 ] || fail "change-password: $(head -n1 <<<"$resp") $(tail -n1 <<<"$resp")"
  admin_token=$(json_field access_token <<<"$resp")
  [ -n "$admin_token" ] || fail "change-password answer has no access_token"
}
