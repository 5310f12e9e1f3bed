# QEMU helpers shared by run.sh (tests) and vm.sh (make vm).

# firmware ARCH -> "CODE VARS"
firmware() {
  case "$1" in
    x86-64) echo "/usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd" ;;
    arm64) echo "/usr/share/AAVMF/AAVMF_CODE.fd /usr/share/AAVMF/AAVMF_VARS.fd" ;;
  esac
}

# qemu_cmd ARCH DISK VARS -> prints the machine part of the command line (TCG: this
# machine's KVM cannot run firmware).
qemu_cmd() {
  local arch=$1 disk=$2 vars=$3 code
  code=$(firmware "$arch" | cut -d' ' -f1)
  case "$arch" in
    x86-64) echo "qemu-system-x86_64 -machine q35 -accel tcg -cpu max" ;;
    arm64) echo "qemu-system-aarch64 -machine virt -accel tcg -cpu cortex-a72" ;;
  esac
  echo "-smp 2 -m 1536 -no-reboot"
  echo "-drive if=pflash,format=raw,unit=0,readonly=on,file=$code"
  echo "-drive if=pflash,format=raw,unit=1,file=$vars"
  echo "-drive if=virtio,format=raw,file=$disk,cache=writeback"
  echo "-device virtio-rng-pci"
}
