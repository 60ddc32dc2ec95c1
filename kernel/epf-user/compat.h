/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What differs between the two kernels pci-epf-user is built for: Debian's
 * 6.12 (the rig's guests) and trixie-backports' 7.x (compile-checked by
 * harness/build-modules.sh --check-api-drift). Kernels in between are not
 * built; the boundary is the first one we build that has the change.
 */
#ifndef _EPF_USER_COMPAT_H
#define _EPF_USER_COMPAT_H

#include <linux/version.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
/* struct pci_epf_bar: aligned_size became mem_size */
#define EPFU_BAR_MEM_SIZE(b)	((b)->mem_size)
/* enum pci_epc_bar_type gained BAR_RESIZABLE (and BAR_DISABLED) */
#define EPFU_HAS_BAR_RESIZABLE	1
/* struct pci_epc_features gained intx_capable */
#define EPFU_HAS_INTX_CAPABLE	1
#else
#define EPFU_BAR_MEM_SIZE(b)	((b)->aligned_size)
#define EPFU_HAS_BAR_RESIZABLE	0
#define EPFU_HAS_INTX_CAPABLE	0
#endif

#endif /* _EPF_USER_COMPAT_H */
