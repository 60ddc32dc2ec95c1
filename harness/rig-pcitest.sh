#!/usr/bin/env bash
# The endpoint-side rig by hand: Linux's pci-epf-test in the EP VM on the simulated
# controller, Linux's pcitest in the host VM, and a summary of the link's counters.
#
# Usage: harness/rig-pcitest.sh [--dma slave|memcpy|none] [--work DIR]
#   --dma   the controller driver's DMA mode (default slave: private channels like DesignWare
#           eDMA; memcpy: a public DMA_MEMCPY channel; none: no DMA engine)
#   --work  scratch directory (default /tmp/virtio-epf-rig)
# Builds what it needs first (harness/setup.sh, harness/build-modules.sh, the link).

set -Eeuo pipefail
# shellcheck disable=SC2034 # used by log()/die() in lib.sh
LOG_TAG=rig-pcitest
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DMA=slave WORK=/tmp/virtio-epf-rig
while [[ $# -gt 0 ]]; do
	case "$1" in
	--dma) DMA=${2:?}; shift 2 ;;
	--work) WORK=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
case $DMA in slave | memcpy | none) ;; *) die "--dma must be slave, memcpy or none" ;; esac

MODS=$("$HARNESS_DIR/build-modules.sh" | tail -n1)
(cd "$HARNESS_DIR/.." && cargo build --release -q -p epf-link)
rm -rf "$WORK"
mkdir -p "$WORK/ep" "$WORK/host"
cp "$MODS"/ep/* "$WORK/ep/"
cp "$MODS"/host/* "$WORK/host/"
cat >"$WORK/ep/run.sh" <<EOS
#!/bin/bash
. /job/rig-guest.sh
check "the endpoint function starts (dma=$DMA)" ep_start $DMA
ep_end
EOS
cat >"$WORK/host/run.sh" <<'EOS'
#!/bin/bash
. /job/rig-guest.sh
insmod /job/pci_endpoint_test.ko || exit 1
lspci -nn -s 01:00.0
for b in 0 1 2 3 4 5; do pt "BAR$b" -b $b; done
pt "irq type MSI" -i 1; for n in 1 2 16; do pt "MSI $n" -m $n; done
pt "irq type MSI-X" -i 2; for n in 1 8; do pt "MSI-X $n" -x $n; done
pt "irq type MSI" -i 1
for s in 1 4096 65536; do pt "read $s" -r -s $s; pt "write $s" -w -s $s; pt "copy $s" -c -s $s; done
# With --dma none these report NOT OKAY: pci-epf-test has no channel to use.
for s in 1 65536 1048576; do pt "DMA read $s" -r -d -s $s; pt "DMA write $s" -w -d -s $s; done
finish
EOS
chmod +x "$WORK"/{ep,host}/run.sh
rc=0
"$HARNESS_DIR/run-rig.sh" --work "$WORK/w" --ep-job "$WORK/ep" --host-job "$WORK/host" \
	--link "$HARNESS_DIR/../target/release/epf-link" \
	--ep-opt --append --ep-opt nosoftlockup \
	--host-qemu -device --host-qemu intel-iommu,intremap=on,dma-translation=off \
	--host-qemu -machine --host-qemu kernel-irqchip=split || rc=$?
echo "--- host VM (pcitest) ---"
cat "$WORK/host/output-all.log"
echo "--- EP VM (pci-epf-test) ---"
grep "pci_epf_test.0:" "$WORK/ep/dmesg.txt" 2>/dev/null | sed 's/^\[[^]]*\] //' || true
echo "--- link counters (non-zero) ---"
grep -v ' 0$' "$WORK/w/link.stats" || true
exit "$rc"
