/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pci-epf-user: a PCI endpoint function that hands its resources to one
 * userspace process through /dev/epf-user-<name>, where <name> is the
 * function's configfs directory (functions/pci_epf_user/<name>).
 *
 * ABI version 1. All structures are little-endian on the platforms we
 * build for, naturally aligned, with explicit padding; every ioctl checks
 * that reserved/padding fields are zero and fails with -EINVAL otherwise.
 *
 * Life cycle: configfs binds the function to a controller (ln -s). The
 * process opens the device (a second opener gets -EBUSY), reads the
 * controller's features, writes the header, BARs and interrupts, then
 * starts the function; it mmaps BARs and windows, moves data, raises
 * interrupts and reads events. Closing the device (or the process dying)
 * stops the function, unmaps every window, clears and frees every BAR.
 */
#ifndef _UAPI_PCI_EPF_USER_H
#define _UAPI_PCI_EPF_USER_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define EPF_USER_ABI_VERSION	1
#define EPF_USER_NUM_BARS	6

/* struct epf_user_features.flags */
#define EPF_USER_FEAT_LINKUP_NOTIFIER	0x01U
#define EPF_USER_FEAT_MSI		0x02U
#define EPF_USER_FEAT_MSIX		0x04U
#define EPF_USER_FEAT_INTX		0x08U /* always set: the EPC API has no flag */
#define EPF_USER_FEAT_DMA_TX		0x10U /* a channel for EP -> host (MEM_TO_DEV) */
#define EPF_USER_FEAT_DMA_RX		0x20U /* a channel for host -> EP (DEV_TO_MEM) */
#define EPF_USER_FEAT_DMA_MEMCPY	0x40U /* a DMA_MEMCPY channel (windows as targets) */
#define EPF_USER_FEAT_DOORBELL		0x80U /* EPC/kernel offer RC-to-EP doorbells */

/* struct epf_user_features.bar_type[] (enum pci_barno_type) */
#define EPF_USER_BAR_PROGRAMMABLE	0
#define EPF_USER_BAR_FIXED		1
#define EPF_USER_BAR_RESIZABLE		2
#define EPF_USER_BAR_RESERVED		3

/* EPF_USER_GET_FEATURES: what pci_epc_get_features() said, and more. */
struct epf_user_features {
	__u32 abi_version;	/* EPF_USER_ABI_VERSION */
	__u32 flags;		/* EPF_USER_FEAT_* */
	__u64 align;		/* epc_features->align (0: none) */
	__u64 window_size;	/* bytes of outbound address space (all windows) */
	__u32 window_page;	/* page size of that space (mapping granularity) */
	__u32 num_windows;	/* 0 if the controller does not say */
	__u8 bar_type[EPF_USER_NUM_BARS];
	__u8 bar_only_64bit;	/* bit n: BAR n must be 64-bit */
	__u8 pad0;
	__u64 bar_fixed_size[EPF_USER_NUM_BARS];
	__u32 max_msi;		/* 32 when MSI capable, else 0 */
	__u32 max_msix;		/* 2048 when MSI-X capable, else 0 */
};

/* EPF_USER_SET_HEADER: pci_epc_write_header(). */
struct epf_user_header {
	__u16 vendor_id;
	__u16 device_id;
	__u8 revision_id;
	__u8 progif_code;
	__u8 subclass_code;
	__u8 baseclass_code;
	__u16 subsys_vendor_id;
	__u16 subsys_id;
	__u8 interrupt_pin;	/* 0 none, 1 INTA .. 4 INTD */
	__u8 pad[3];
};

/* struct epf_user_bar.flags: PCI_BASE_ADDRESS_* bits */
#define EPF_USER_BAR_64BIT		0x04U
#define EPF_USER_BAR_PREFETCH		0x08U

/*
 * EPF_USER_SET_BAR: allocates `size` bytes (pci_epf_alloc_space) and
 * programs BAR `bar` (pci_epc_set_bar). size 0 clears and frees the BAR.
 * Only while the function is stopped. On return `size` holds the BAR size
 * the host will see and `mmap_size` the bytes the process may map at
 * offset EPF_USER_BAR_OFFSET(bar).
 */
struct epf_user_bar {
	__u32 bar;
	__u32 flags;
	__u64 size;
	__u64 mmap_size;	/* out */
};

/*
 * EPF_USER_SET_IRQS: pci_epc_set_msi(msi_vectors) and
 * pci_epc_set_msix(msix_vectors, msix_bar, msix_offset); 0 vectors leaves
 * that capability out. Only while stopped.
 */
struct epf_user_irqs {
	__u32 msi_vectors;	/* 0, 1, 2, 4, 8, 16, 32 */
	__u32 msix_vectors;	/* 0 .. 2048 */
	__u32 msix_bar;
	__u32 msix_offset;	/* table offset in that BAR; the PBA follows it */
};

/* EPF_USER_RAISE_IRQ: pci_epc_raise_irq(); returns its result. */
#define EPF_USER_IRQ_INTX	1
#define EPF_USER_IRQ_MSI	2
#define EPF_USER_IRQ_MSIX	3
struct epf_user_irq {
	__u32 type;		/* EPF_USER_IRQ_* */
	__u32 number;		/* 1-based, as pci_epc_raise_irq() */
};

/* EPF_USER_GET_IRQ_STATE: what the host enabled. */
struct epf_user_irq_state {
	__s32 msi;		/* pci_epc_get_msi(): vectors enabled, or < 0 */
	__s32 msix;		/* pci_epc_get_msix(): vectors, or < 0 */
};

/*
 * EPF_USER_MAP_WINDOW: maps host bus address `pci_addr` for `size` bytes
 * through an outbound window (pci_epc_mem_alloc_addr + pci_epc_map_addr,
 * honouring the controller's alignment). The mapping may be shorter than
 * asked: `size` then holds what was mapped. The process may mmap
 * `mmap_size` bytes at `mmap_offset`; host address `pci_addr` sits at
 * `mmap_offset + offset_in_map` of the device file. -ENOSPC when no window
 * or window space is free. Windows live until EPF_USER_UNMAP_WINDOW with
 * their `id`, or close.
 */
struct epf_user_window {
	__u64 pci_addr;
	__u64 size;		/* in: wanted, out: mapped (from pci_addr) */
	__u64 mmap_offset;	/* out */
	__u64 mmap_size;	/* out: page multiple */
	__u32 offset_in_map;	/* out */
	__u32 id;		/* out; in for UNMAP */
};

/*
 * EPF_USER_DMA: copies `len` bytes between the process's buffer at `user`
 * and host bus address `pci_addr`, through the controller's DMA channels
 * when it has them, else through an outbound window with memcpy_toio /
 * memcpy_fromio. Blocks until done (or -ETIMEDOUT after 5 s, -EINTR).
 * `flags` out: EPF_USER_DMA_USED_DMA if a DMA engine moved the data.
 */
#define EPF_USER_DMA_TO_HOST	1
#define EPF_USER_DMA_FROM_HOST	2
#define EPF_USER_DMA_USED_DMA	0x100U
struct epf_user_dma {
	__u64 user;		/* pointer into the process */
	__u64 pci_addr;
	__u32 len;		/* 1 .. 16 MiB */
	__u32 flags;		/* in: EPF_USER_DMA_TO_HOST or _FROM_HOST */
};

/*
 * Events: read() returns whole struct epf_user_event records (blocking
 * unless O_NONBLOCK); poll() reports POLLIN while any are queued. At most
 * 64 are queued; older ones are dropped and counted in `dropped`.
 */
#define EPF_USER_EV_LINK_UP	1
#define EPF_USER_EV_LINK_DOWN	2
#define EPF_USER_EV_BME		3
#define EPF_USER_EV_EPC_INIT	4
#define EPF_USER_EV_EPC_DEINIT	5
#define EPF_USER_EV_DOORBELL	6
struct epf_user_event {
	__u32 type;		/* EPF_USER_EV_* */
	__u32 dropped;		/* events lost before this one */
	__u64 data;		/* doorbell number for EV_DOORBELL */
};

/*
 * Doorbells where the kernel and controller offer them
 * (pci_epf_alloc_doorbell, Linux >= 6.17): EPF_USER_SET_DOORBELL asks for
 * `count` doorbells, returns where the host must write (BAR and offset)
 * and gives one eventfd per doorbell; -EOPNOTSUPP elsewhere.
 */
struct epf_user_doorbell {
	__u32 count;
	__u32 bar;		/* out */
	__u64 offset;		/* out: of doorbell 0; doorbell i at offset + 4 * i */
	__s32 eventfd[8];	/* in: eventfds to signal */
};

#define EPF_USER_BAR_OFFSET(bar)	((__u64)(bar) << 40)
#define EPF_USER_WINDOW_OFFSET		((__u64)8 << 40)

#define EPF_USER_MAGIC	0xe9
#define EPF_USER_GET_FEATURES	_IOR(EPF_USER_MAGIC, 0, struct epf_user_features)
#define EPF_USER_SET_HEADER	_IOW(EPF_USER_MAGIC, 1, struct epf_user_header)
#define EPF_USER_SET_BAR	_IOWR(EPF_USER_MAGIC, 2, struct epf_user_bar)
#define EPF_USER_SET_IRQS	_IOW(EPF_USER_MAGIC, 3, struct epf_user_irqs)
#define EPF_USER_START		_IO(EPF_USER_MAGIC, 4)
#define EPF_USER_STOP		_IO(EPF_USER_MAGIC, 5)
#define EPF_USER_RAISE_IRQ	_IOW(EPF_USER_MAGIC, 6, struct epf_user_irq)
#define EPF_USER_GET_IRQ_STATE	_IOR(EPF_USER_MAGIC, 7, struct epf_user_irq_state)
#define EPF_USER_MAP_WINDOW	_IOWR(EPF_USER_MAGIC, 8, struct epf_user_window)
#define EPF_USER_UNMAP_WINDOW	_IOW(EPF_USER_MAGIC, 9, struct epf_user_window)
#define EPF_USER_DMA		_IOWR(EPF_USER_MAGIC, 10, struct epf_user_dma)
#define EPF_USER_SET_DOORBELL	_IOWR(EPF_USER_MAGIC, 11, struct epf_user_doorbell)

#endif /* _UAPI_PCI_EPF_USER_H */
