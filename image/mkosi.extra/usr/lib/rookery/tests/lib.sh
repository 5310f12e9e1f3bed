# Helpers of the guest test scenarios.
fail() { echo "FAIL: $*"; exit 1; }
# Units the image ships (test and first-boot helpers excluded).
daemon_units() {
  for f in /usr/lib/systemd/system/rookery-*.service; do
    u=$(basename "$f")
    case "$u" in rookery-firstboot.service|rookery-qemu-test.service) ;; *) echo "$u" ;; esac
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
