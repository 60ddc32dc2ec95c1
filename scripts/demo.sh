#!/usr/bin/env bash
# The main job: two virtio-epf endpoint functions (virtio-rng and virtio-console) served over
# vfio-user to a real Linux kernel booted under QEMU, and the guest's view of them: lspci,
# drivers bound, entropy read from /dev/hwrng, text sent both ways over /dev/hvc0. Ends with
# the endpoint's per-queue counters.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/prepare.sh
source scripts/lib.sh
epf_setup demo
work=$EPF_WORK

epf_daemon rng rng
epf_daemon console console --backend "unix:$work/console-backend.sock"
epf_wait_socket "$work/console-backend.sock"

# The endpoint's console backend: print what the guest writes, answer with a greeting.
python3 - "$work/console-backend.sock" >"$work/from-guest.txt" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
data = b""
while not data.endswith(b"over\n"):
    chunk = s.recv(4096)
    if not chunk: break
    data += chunk
sys.stdout.write(data.decode(errors="replace")); sys.stdout.flush()
s.sendall(b"hello guest, this is the endpoint\n")
PY
EPF_PIDS+=($!)

cat >"$work/job/run.sh" <<'GUEST'
#!/bin/bash
echo "== guest kernel: $(uname -r)"
echo "== lspci -nn (our functions are the 1af4:104x devices behind the root ports)"
lspci -nn | grep -E '1af4:104[34]'
for a in $(lspci -D -d 1af4: | awk '{print $1}'); do
	drv=$(basename "$(readlink /sys/bus/pci/devices/$a/driver)")
	echo "   $a $(cat /sys/bus/pci/devices/$a/device) bound to $drv"
done | grep -E '0x104[34]'
modprobe virtio_rng
echo "== hw_random: $(cat /sys/class/misc/hw_random/rng_current)"
echo "== 16 bytes from /dev/hwrng: $(head -c 16 /dev/hwrng | od -An -tx1 | tr -d '\n')"
t0=$(date +%s.%N); head -c 1048576 /dev/hwrng >/dev/null; t1=$(date +%s.%N)
echo "== 1 MiB from /dev/hwrng in $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s"
exec 3<>/dev/hvc0; stty -F /dev/hvc0 raw -echo
echo "hello endpoint, this is $(uname -n) over /dev/hvc0, over" >&3
read -r -t 20 line <&3 && echo "== the endpoint answered on /dev/hvc0: $line"
echo "== MSI-X interrupts of our functions"
grep -E 'PCI-MSIX-0000:0[12]:00.0' /proc/interrupts
GUEST
chmod +x "$work/job/run.sh"

epf_qemu_function 1 rng
epf_qemu_function 2 console
harness/run-guest.sh --job-dir "$work/job" --socket-dir "$work/sock" --timeout 180 -- "${EPF_QEMU[@]}"
sleep 1.2
echo "== the endpoint's console backend received: $(cat "$work/from-guest.txt")"
echo "== endpoint counters (virtio-epf rng)"; cat "$work/rng.stats"
echo "== endpoint counters (virtio-epf console)"; cat "$work/console.stats"
