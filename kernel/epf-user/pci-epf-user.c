// SPDX-License-Identifier: GPL-2.0
/*
 * pci-epf-user: a PCI endpoint function driver that hands the resources of
 * one function (header, BARs, interrupts, outbound windows, DMA channels,
 * events) to one userspace process through /dev/epf-user-<name>, <name>
 * being the function's configfs directory (functions/pci_epf_user/<name>).
 * The ABI is include file pci-epf-user.h (version 1).
 *
 * Locking: u->lock serialises ioctls and the EPF callbacks that change
 * state (epc_init, epc_deinit, bind, unbind); it may be held across user
 * copies and page pinning. u->map_lock protects the BAR and window regions
 * as seen by mmap() and the vm_ops (which run under mmap_lock), so it is
 * never held across anything that faults in user memory. Order: epf->lock,
 * u->lock, mmap_lock, u->map_lock. Events use their own spinlock.
 *
 * Memory a process has mapped is never freed under it: a BAR or window with
 * live mappings refuses SET_BAR / UNMAP_WINDOW (-EBUSY); when the function
 * loses its controller (epc_deinit, unbind) while mapped, the page tables
 * are zapped (later accesses fault with SIGBUS) and BAR memory is freed
 * only when the last mapping goes away.
 *
 * BAR memory outlives the process that asked for it: on release it is
 * parked with the function, and the next process asking for the same BAR
 * (size and flags) gets it back zeroed, so a restarted process presents
 * the same BARs at the same addresses (a host keeps its mappings of them).
 * Parked memory is freed on unbind or when the BAR is asked for with
 * another size.
 */

#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci-epc.h>
#include <linux/pci-epf.h>
#include <linux/poll.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "compat.h"
#include "pci-epf-user.h"

#define EPFU_MAX_WINDOWS	32
#define EPFU_WINDOW_STRIDE	BIT_ULL(32)	/* mmap offset space per window */
#define EPFU_MAX_WINDOW_SIZE	EPFU_WINDOW_STRIDE
#define EPFU_BAR_STRIDE		EPF_USER_BAR_OFFSET(1)
#define EPFU_NUM_EVENTS		64
#define EPFU_DMA_MAX_LEN	SZ_16M
#define EPFU_DMA_TIMEOUT	(5 * HZ)
#define EPFU_BOUNCE_SIZE	SZ_64K

static unsigned long max_bar_size = PAGE_SIZE << MAX_PAGE_ORDER;
module_param(max_bar_size, ulong, 0644);
MODULE_PARM_DESC(max_bar_size,
		 "Largest BAR a process may allocate (default: the page allocator's largest block; raise it where CMA serves larger coherent allocations)");

/* A BAR's memory or an outbound window, possibly mapped by the process. */
struct epfu_region {
	unsigned int mmaps;	/* live vmas; under map_lock */
	bool orphan;		/* detached: freed with the last vma */
	bool is_window;
	/* BAR memory (pci_epf_alloc_space) */
	struct device *dev;
	void *cpu;
	dma_addr_t dma;
	size_t mem_size;
	/* window (pci_epc_mem_alloc_addr + pci_epc_map_addr) */
	phys_addr_t phys;
	void __iomem *virt;
	size_t size;
	u64 pci_addr;		/* aligned-down host address at phys */
};

/* BAR memory kept for the next process (see the top of the file). */
struct epfu_parked {
	struct epfu_region *r;
	struct pci_epf_bar eb;
	u64 size;		/* as asked: SET_BAR's size and flags */
	u32 flags;
};

struct epfu_dma_wait {
	struct completion done;
	atomic_t pending;
	bool failed;
};

struct epfu {
	struct kref ref;
	struct pci_epf *epf;		/* NULL once the EPF device is gone */
	struct pci_epf_header header;	/* epf->header: configfs writes here */
	struct miscdevice misc;
	bool misc_registered;

	struct mutex lock;		/* ioctls and state below */
	struct pci_epc *epc;		/* while bound */
	const struct pci_epc_features *features;
	bool epc_ready;			/* epc_init seen, no epc_deinit since */
	bool open;
	bool started;
	bool link_up;
	unsigned int gen;		/* bumped on unbind: stale files */
	struct address_space *mapping;	/* of the open file */

	struct dma_chan *dma_tx;
	struct dma_chan *dma_rx;
	bool dma_private;
	struct epfu_dma_wait dma_wait;

	struct mutex map_lock;		/* bar[], win[], region mmaps */
	struct epfu_region *bar[PCI_STD_NUM_BARS];
	u64 bar_size[PCI_STD_NUM_BARS];	/* as asked, for parking */
	u32 bar_flags[PCI_STD_NUM_BARS];
	struct epfu_parked parked[PCI_STD_NUM_BARS];	/* under lock */
	struct epfu_region *win[EPFU_MAX_WINDOWS];

	spinlock_t ev_lock;		/* the event ring */
	wait_queue_head_t ev_wq;
	struct epf_user_event ev[EPFU_NUM_EVENTS];
	unsigned int ev_head;
	unsigned int ev_count;
};

struct epfu_file {
	struct epfu *u;
	unsigned int gen;
};

static void epfu_free(struct kref *ref)
{
	struct epfu *u = container_of(ref, struct epfu, ref);

	kfree(u->misc.name);
	kfree(u);
}

static void epfu_put(struct epfu *u)
{
	kref_put(&u->ref, epfu_free);
}

/* ------------------------------------------------------------ events */

static void epfu_event(struct epfu *u, u32 type)
{
	struct epf_user_event *ev;
	unsigned long flags;

	spin_lock_irqsave(&u->ev_lock, flags);
	if (u->ev_count == EPFU_NUM_EVENTS) {
		/* drop the oldest; the next one carries its count */
		u32 lost = u->ev[u->ev_head].dropped + 1;

		u->ev_head = (u->ev_head + 1) % EPFU_NUM_EVENTS;
		u->ev_count--;
		u->ev[u->ev_head].dropped += lost;
	}
	ev = &u->ev[(u->ev_head + u->ev_count) % EPFU_NUM_EVENTS];
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	u->ev_count++;
	spin_unlock_irqrestore(&u->ev_lock, flags);
	wake_up_interruptible(&u->ev_wq);
}

static void epfu_events_reset(struct epfu *u)
{
	unsigned long flags;

	spin_lock_irqsave(&u->ev_lock, flags);
	u->ev_head = 0;
	u->ev_count = 0;
	spin_unlock_irqrestore(&u->ev_lock, flags);
}

static bool epfu_events_pending(struct epfu *u)
{
	unsigned long flags;
	bool ret;

	spin_lock_irqsave(&u->ev_lock, flags);
	ret = u->ev_count;
	spin_unlock_irqrestore(&u->ev_lock, flags);
	return ret;
}

/* ------------------------------------------------------------ regions */

static void epfu_region_free(struct epfu_region *r)
{
	if (!r->is_window && r->cpu) {
		dma_free_coherent(r->dev, r->mem_size, r->cpu, r->dma);
		put_device(r->dev);
	}
	kfree(r);
}

/* Zaps the process's page tables for [off, off + len) of the device file. */
static void epfu_zap(struct epfu *u, u64 off, u64 len)
{
	if (u->mapping)
		unmap_mapping_range(u->mapping, off, len, 1);
}

/*
 * Detaches a region from its slot: frees it now if nothing maps it, else
 * zaps the mappings and leaves it to the last vma. Caller holds map_lock.
 */
static void epfu_region_detach(struct epfu *u, struct epfu_region **slot,
			       u64 off, u64 len)
{
	struct epfu_region *r = *slot;

	*slot = NULL;
	if (!r->mmaps) {
		epfu_region_free(r);
		return;
	}
	epfu_zap(u, off, len);
	r->orphan = true;
}

static u64 epfu_win_offset(unsigned int id)
{
	return EPF_USER_WINDOW_OFFSET + (u64)id * EPFU_WINDOW_STRIDE;
}

/* Unmaps and frees window @id. Caller holds lock (not map_lock). */
static void epfu_window_release(struct epfu *u, unsigned int id)
{
	struct pci_epf *epf = u->epf;
	struct epfu_region *r;

	mutex_lock(&u->map_lock);
	r = u->win[id];
	if (!r) {
		mutex_unlock(&u->map_lock);
		return;
	}
	pci_epc_unmap_addr(u->epc, epf->func_no, epf->vfunc_no, r->phys);
	pci_epc_mem_free_addr(u->epc, r->phys, r->virt, r->size);
	r->virt = NULL;
	epfu_region_detach(u, &u->win[id], epfu_win_offset(id),
			   EPFU_WINDOW_STRIDE);
	mutex_unlock(&u->map_lock);
}

/* BAR @bar's memory: clears epf->bar[bar] and detaches it. Holds lock. */
static void epfu_bar_free(struct epfu *u, unsigned int bar)
{
	mutex_lock(&u->map_lock);
	if (u->bar[bar]) {
		if (u->epf)
			memset(&u->epf->bar[bar], 0, sizeof(u->epf->bar[bar]));
		epfu_region_detach(u, &u->bar[bar], EPF_USER_BAR_OFFSET(bar),
				   EPFU_BAR_STRIDE);
	}
	mutex_unlock(&u->map_lock);
}

static bool epfu_bar_is_set(struct epfu *u, unsigned int bar)
{
	return u->bar[bar] && u->bar[bar]->size;
}

static void epfu_bar_clear(struct epfu *u, unsigned int bar)
{
	struct pci_epf *epf = u->epf;

	if (!epfu_bar_is_set(u, bar))
		return;
	if (u->epc_ready)
		pci_epc_clear_bar(u->epc, epf->func_no, epf->vfunc_no,
				  &epf->bar[bar]);
	u->bar[bar]->size = 0;	/* allocated, not programmed */
}

/* ------------------------------------------------------------ DMA channels */

struct epfu_dma_filter {
	struct device *dev;
	u32 dma_mask;
};

static bool epfu_dma_filter_fn(struct dma_chan *chan, void *node)
{
	struct epfu_dma_filter *filter = node;
	struct dma_slave_caps caps = { };

	dma_get_slave_caps(chan, &caps);
	return chan->device->dev == filter->dev &&
	       (filter->dma_mask & caps.directions);
}

/*
 * As pci-epf-test: private DMA_SLAVE channels of the controller's parent
 * device (DesignWare eDMA style), else a public DMA_MEMCPY channel.
 */
static void epfu_dma_request(struct epfu *u)
{
	struct epfu_dma_filter filter = { .dev = u->epc->dev.parent };
	struct dma_chan *chan;
	dma_cap_mask_t mask;

	dma_cap_zero(mask);
	dma_cap_set(DMA_SLAVE, mask);
	filter.dma_mask = BIT(DMA_DEV_TO_MEM);
	u->dma_rx = dma_request_channel(mask, epfu_dma_filter_fn, &filter);
	if (u->dma_rx) {
		filter.dma_mask = BIT(DMA_MEM_TO_DEV);
		u->dma_tx = dma_request_channel(mask, epfu_dma_filter_fn,
						&filter);
		if (u->dma_tx) {
			u->dma_private = true;
			return;
		}
		dma_release_channel(u->dma_rx);
		u->dma_rx = NULL;
	}

	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	chan = dma_request_chan_by_mask(&mask);
	if (IS_ERR(chan))
		return;
	u->dma_tx = chan;
	u->dma_rx = chan;
	u->dma_private = false;
}

static void epfu_dma_release(struct epfu *u)
{
	if (u->dma_tx)
		dma_release_channel(u->dma_tx);
	if (u->dma_rx && u->dma_rx != u->dma_tx)
		dma_release_channel(u->dma_rx);
	u->dma_tx = NULL;
	u->dma_rx = NULL;
	u->dma_private = false;
}

/* ------------------------------------------------------------ teardown */

/*
 * Everything that involves the controller: stop, windows, BARs (cleared,
 * memory kept), DMA channels. Caller holds lock.
 */
static void epfu_teardown_epc(struct epfu *u)
{
	unsigned int i;

	if (!u->epc)
		return;
	if (u->started) {
		pci_epc_stop(u->epc);
		u->started = false;
	}
	for (i = 0; i < EPFU_MAX_WINDOWS; i++)
		epfu_window_release(u, i);
	for (i = 0; i < PCI_STD_NUM_BARS; i++)
		epfu_bar_clear(u, i);
	epfu_dma_release(u);
}

static void epfu_free_bars(struct epfu *u)
{
	unsigned int i;

	for (i = 0; i < PCI_STD_NUM_BARS; i++)
		epfu_bar_free(u, i);
}

static void epfu_unpark(struct epfu *u, unsigned int bar)
{
	if (u->parked[bar].r)
		epfu_region_free(u->parked[bar].r);
	memset(&u->parked[bar], 0, sizeof(u->parked[bar]));
}

static void epfu_unpark_all(struct epfu *u)
{
	unsigned int i;

	for (i = 0; i < PCI_STD_NUM_BARS; i++)
		epfu_unpark(u, i);
}

/*
 * Keeps the BARs' memory for the next process (the caller tore the EPC
 * state down: nothing is programmed). Memory still mapped, which a
 * released file cannot have, is freed as usual. Holds lock.
 */
static void epfu_park_bars(struct epfu *u)
{
	struct epfu_region *r;
	unsigned int i;

	for (i = 0; i < PCI_STD_NUM_BARS; i++) {
		mutex_lock(&u->map_lock);
		r = u->bar[i];
		if (r && !r->mmaps && r->cpu && u->epf) {
			epfu_unpark(u, i);
			u->parked[i].r = r;
			u->parked[i].eb = u->epf->bar[i];
			u->parked[i].size = u->bar_size[i];
			u->parked[i].flags = u->bar_flags[i];
			memset(&u->epf->bar[i], 0, sizeof(u->epf->bar[i]));
			u->bar[i] = NULL;
		}
		mutex_unlock(&u->map_lock);
		epfu_bar_free(u, i);
	}
}

/* ------------------------------------------------------------ ioctls */

static int epfu_get_features(struct epfu *u, void __user *argp)
{
	const struct pci_epc_features *f = u->features;
	struct epf_user_features out = { };
	struct pci_epc *epc = u->epc;
	unsigned int i;

	out.abi_version = EPF_USER_ABI_VERSION;
	out.flags = EPF_USER_FEAT_INTX;
#if EPFU_HAS_INTX_CAPABLE
	if (!f->intx_capable)
		out.flags &= ~EPF_USER_FEAT_INTX;
#endif
	if (f->linkup_notifier)
		out.flags |= EPF_USER_FEAT_LINKUP_NOTIFIER;
	if (f->msi_capable) {
		out.flags |= EPF_USER_FEAT_MSI;
		out.max_msi = 32;
	}
	if (f->msix_capable) {
		out.flags |= EPF_USER_FEAT_MSIX;
		out.max_msix = 2048;
	}
	if (u->dma_private)
		out.flags |= EPF_USER_FEAT_DMA_TX | EPF_USER_FEAT_DMA_RX;
	else if (u->dma_tx)
		out.flags |= EPF_USER_FEAT_DMA_MEMCPY;
	out.align = f->align;
	for (i = 0; i < epc->num_windows; i++)
		out.window_size += epc->windows[i]->window.size;
	if (epc->num_windows)
		out.window_page = epc->windows[0]->window.page_size;
	out.num_windows = 0;	/* the EPC API does not tell */

	for (i = 0; i < PCI_STD_NUM_BARS; i++) {
		switch (f->bar[i].type) {
		case BAR_PROGRAMMABLE:
			out.bar_type[i] = EPF_USER_BAR_PROGRAMMABLE;
			break;
		case BAR_FIXED:
			out.bar_type[i] = EPF_USER_BAR_FIXED;
			break;
#if EPFU_HAS_BAR_RESIZABLE
		case BAR_RESIZABLE:
			out.bar_type[i] = EPF_USER_BAR_RESIZABLE;
			break;
#endif
		default:	/* BAR_RESERVED, and BAR_DISABLED of 7.x */
			out.bar_type[i] = EPF_USER_BAR_RESERVED;
			break;
		}
		if (f->bar[i].only_64bit)
			out.bar_only_64bit |= BIT(i);
		out.bar_fixed_size[i] = f->bar[i].fixed_size;
	}

	return copy_to_user(argp, &out, sizeof(out)) ? -EFAULT : 0;
}

static int epfu_set_header(struct epfu *u, void __user *argp)
{
	struct pci_epf *epf = u->epf;
	struct epf_user_header h;

	if (copy_from_user(&h, argp, sizeof(h)))
		return -EFAULT;
	if (memchr_inv(h.pad, 0, sizeof(h.pad)) ||
	    h.interrupt_pin > PCI_INTERRUPT_INTD)
		return -EINVAL;

	u->header.vendorid = h.vendor_id;
	u->header.deviceid = h.device_id;
	u->header.revid = h.revision_id;
	u->header.progif_code = h.progif_code;
	u->header.subclass_code = h.subclass_code;
	u->header.baseclass_code = h.baseclass_code;
	u->header.subsys_vendor_id = h.subsys_vendor_id;
	u->header.subsys_id = h.subsys_id;
	u->header.interrupt_pin = h.interrupt_pin;
	if (!u->epc_ready)
		return 0;	/* written by START */
	return pci_epc_write_header(u->epc, epf->func_no, epf->vfunc_no,
				    &u->header);
}

static int epfu_set_bar(struct epfu *u, void __user *argp)
{
	const struct pci_epc_features *f = u->features;
	struct pci_epf *epf = u->epf;
	struct epf_user_bar b;
	struct epfu_region *r;
	struct pci_epf_bar *eb;
	bool is64 = false;
	void *cpu;
	int ret;

	if (copy_from_user(&b, argp, sizeof(b)))
		return -EFAULT;
	if (b.bar >= PCI_STD_NUM_BARS ||
	    b.flags & ~(EPF_USER_BAR_64BIT | EPF_USER_BAR_PREFETCH))
		return -EINVAL;
	if (u->started)
		return -EBUSY;
	if (b.size) {
		if (!u->epc_ready)
			return -EAGAIN;
		if (f->bar[b.bar].type != BAR_PROGRAMMABLE &&
		    f->bar[b.bar].type != BAR_FIXED)
			return -EINVAL;
		if (b.size > max_bar_size)
			return -E2BIG;
		if (f->bar[b.bar].type == BAR_FIXED &&
		    f->bar[b.bar].fixed_size &&
		    b.size > f->bar[b.bar].fixed_size)
			return -EINVAL;
		is64 = (b.flags & EPF_USER_BAR_64BIT) ||
		       f->bar[b.bar].only_64bit;
		if (is64 && (b.bar == BAR_5 || u->bar[b.bar + 1]))
			return -EINVAL;
		/* the upper half of a 64-bit BAR */
		if (b.bar > BAR_0 && u->bar[b.bar - 1] &&
		    (epf->bar[b.bar - 1].flags & PCI_BASE_ADDRESS_MEM_TYPE_64))
			return -EINVAL;
	}

	/* Replacing or freeing a BAR the process maps: refuse. */
	if (u->bar[b.bar] && u->bar[b.bar]->mmaps)
		return -EBUSY;
	epfu_bar_clear(u, b.bar);
	epfu_bar_free(u, b.bar);
	if (!b.size) {
		b.mmap_size = 0;
		return copy_to_user(argp, &b, sizeof(b)) ? -EFAULT : 0;
	}

	eb = &epf->bar[b.bar];
	if (u->parked[b.bar].r && u->parked[b.bar].size == b.size &&
	    u->parked[b.bar].flags == b.flags) {
		/* what the last process had here, zeroed */
		r = u->parked[b.bar].r;
		*eb = u->parked[b.bar].eb;
		u->parked[b.bar].r = NULL;
		memset(r->cpu, 0, r->mem_size);
	} else {
		epfu_unpark(u, b.bar);
		r = kzalloc(sizeof(*r), GFP_KERNEL);
		if (!r)
			return -ENOMEM;
		memset(eb, 0, sizeof(*eb));
		cpu = pci_epf_alloc_space(epf, b.size, b.bar, f,
					  PRIMARY_INTERFACE);
		if (!cpu) {
			kfree(r);
			return -ENOMEM;
		}
		if (is64)
			eb->flags |= PCI_BASE_ADDRESS_MEM_TYPE_64;
		if (b.flags & EPF_USER_BAR_PREFETCH)
			eb->flags |= PCI_BASE_ADDRESS_MEM_PREFETCH;
		r->dev = get_device(u->epc->dev.parent);
		r->cpu = cpu;
		r->dma = eb->phys_addr;
		r->mem_size = EPFU_BAR_MEM_SIZE(eb);
	}

	ret = pci_epc_set_bar(u->epc, epf->func_no, epf->vfunc_no, eb);
	if (ret) {
		epfu_region_free(r);
		memset(eb, 0, sizeof(*eb));
		return ret;
	}
	r->size = eb->size;
	mutex_lock(&u->map_lock);
	u->bar[b.bar] = r;
	u->bar_size[b.bar] = b.size;
	u->bar_flags[b.bar] = b.flags;
	mutex_unlock(&u->map_lock);

	b.size = eb->size;
	b.mmap_size = PAGE_ALIGN(r->mem_size);
	return copy_to_user(argp, &b, sizeof(b)) ? -EFAULT : 0;
}

static int epfu_set_irqs(struct epfu *u, void __user *argp)
{
	const struct pci_epc_features *f = u->features;
	struct pci_epf *epf = u->epf;
	struct epf_user_irqs q;
	u64 end;
	int ret;

	if (copy_from_user(&q, argp, sizeof(q)))
		return -EFAULT;
	if (q.msi_vectors > 32 ||
	    (q.msi_vectors && !is_power_of_2(q.msi_vectors)) ||
	    (q.msi_vectors && !f->msi_capable))
		return -EINVAL;
	if (q.msix_vectors > 2048 || (q.msix_vectors && !f->msix_capable))
		return -EINVAL;
	if (!q.msix_vectors && (q.msix_bar || q.msix_offset))
		return -EINVAL;
	if (q.msix_vectors) {
		if (q.msix_bar >= PCI_STD_NUM_BARS ||
		    !epfu_bar_is_set(u, q.msix_bar) ||
		    !IS_ALIGNED(q.msix_offset, 8))
			return -EINVAL;
		/* table, then the PBA (8-byte aligned) */
		end = (u64)q.msix_offset + q.msix_vectors * PCI_MSIX_ENTRY_SIZE +
		      ALIGN(DIV_ROUND_UP(q.msix_vectors, 8), 8);
		if (end > u->bar[q.msix_bar]->size)
			return -EINVAL;
	}
	if (u->started)
		return -EBUSY;
	if (!u->epc_ready)
		return -EAGAIN;

	if (q.msi_vectors) {
		ret = pci_epc_set_msi(u->epc, epf->func_no, epf->vfunc_no,
				      q.msi_vectors);
		if (ret)
			return ret;
	}
	if (q.msix_vectors) {
		ret = pci_epc_set_msix(u->epc, epf->func_no, epf->vfunc_no,
				       q.msix_vectors, q.msix_bar,
				       q.msix_offset);
		if (ret)
			return ret;
	}
	return 0;
}

static int epfu_start(struct epfu *u)
{
	struct pci_epf *epf = u->epf;
	int ret;

	if (!u->epc_ready)
		return -EAGAIN;
	if (u->started)
		return 0;
	ret = pci_epc_write_header(u->epc, epf->func_no, epf->vfunc_no,
				   &u->header);
	if (ret)
		return ret;
	ret = pci_epc_start(u->epc);
	if (!ret)
		u->started = true;
	return ret;
}

static int epfu_raise_irq(struct epfu *u, void __user *argp)
{
	struct pci_epf *epf = u->epf;
	struct epf_user_irq q;
	unsigned int type;

	if (copy_from_user(&q, argp, sizeof(q)))
		return -EFAULT;
	switch (q.type) {
	case EPF_USER_IRQ_INTX:
		type = PCI_IRQ_INTX;
		break;
	case EPF_USER_IRQ_MSI:
		type = PCI_IRQ_MSI;
		break;
	case EPF_USER_IRQ_MSIX:
		type = PCI_IRQ_MSIX;
		break;
	default:
		return -EINVAL;
	}
	if (q.number > 2048 || (q.type != EPF_USER_IRQ_INTX && !q.number))
		return -EINVAL;
	if (!u->started)
		return -EAGAIN;
	return pci_epc_raise_irq(u->epc, epf->func_no, epf->vfunc_no, type,
				 q.number);
}

static int epfu_get_irq_state(struct epfu *u, void __user *argp)
{
	struct pci_epf *epf = u->epf;
	struct epf_user_irq_state s = { };

	if (!u->epc_ready)
		return -EAGAIN;
	s.msi = pci_epc_get_msi(u->epc, epf->func_no, epf->vfunc_no);
	s.msix = pci_epc_get_msix(u->epc, epf->func_no, epf->vfunc_no);
	return copy_to_user(argp, &s, sizeof(s)) ? -EFAULT : 0;
}

/*
 * Maps host range [pci_addr, pci_addr + size) through a new window,
 * starting at pci_addr aligned down to the controller's alignment (and a
 * page); shortens the window while window space is short. *mapped: bytes
 * from pci_addr that the window covers.
 */
static struct epfu_region *epfu_window_map(struct epfu *u, u64 pci_addr,
					   u64 size, u64 *mapped)
{
	struct pci_epf *epf = u->epf;
	u64 align = max_t(u64, u->features->align, PAGE_SIZE);
	struct epfu_region *r;
	u64 base, off, want;
	int ret;

	align = roundup_pow_of_two(align);
	base = ALIGN_DOWN(pci_addr, align);
	off = pci_addr - base;
	size = min_t(u64, size, EPFU_MAX_WINDOW_SIZE - align);
	want = ALIGN(off + size, align);

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return ERR_PTR(-ENOMEM);
	r->is_window = true;
	for (;;) {
		r->virt = pci_epc_mem_alloc_addr(u->epc, &r->phys, want);
		if (r->virt)
			break;
		if (want <= align) {
			kfree(r);
			return ERR_PTR(-ENOSPC);
		}
		want = ALIGN(want / 2, align);
		if (want <= off)
			want = ALIGN(off + 1, align);
	}
	ret = pci_epc_map_addr(u->epc, epf->func_no, epf->vfunc_no, r->phys,
			       base, want);
	if (ret) {
		pci_epc_mem_free_addr(u->epc, r->phys, r->virt, want);
		kfree(r);
		return ERR_PTR(ret);
	}
	r->size = want;
	r->pci_addr = base;
	*mapped = min(size, want - off);
	return r;
}

/* Unmaps a window made by epfu_window_map() that was never published. */
static void epfu_window_unmap(struct epfu *u, struct epfu_region *r)
{
	struct pci_epf *epf = u->epf;

	pci_epc_unmap_addr(u->epc, epf->func_no, epf->vfunc_no, r->phys);
	pci_epc_mem_free_addr(u->epc, r->phys, r->virt, r->size);
	kfree(r);
}

static int epfu_map_window(struct epfu *u, void __user *argp)
{
	struct epf_user_window w;
	struct epfu_region *r;
	unsigned int id;
	u64 end, mapped;

	if (copy_from_user(&w, argp, sizeof(w)))
		return -EFAULT;
	if (!w.size || check_add_overflow(w.pci_addr, w.size - 1, &end))
		return -EINVAL;
	if (!u->epc_ready)
		return -EAGAIN;
	for (id = 0; id < EPFU_MAX_WINDOWS; id++)
		if (!u->win[id])
			break;
	if (id == EPFU_MAX_WINDOWS)
		return -ENOSPC;

	r = epfu_window_map(u, w.pci_addr, w.size, &mapped);
	if (IS_ERR(r))
		return PTR_ERR(r);
	mutex_lock(&u->map_lock);
	u->win[id] = r;
	mutex_unlock(&u->map_lock);

	w.size = mapped;
	w.mmap_offset = epfu_win_offset(id);
	w.mmap_size = r->size;
	w.offset_in_map = w.pci_addr - r->pci_addr;
	w.id = id;
	if (copy_to_user(argp, &w, sizeof(w))) {
		epfu_window_release(u, id);
		return -EFAULT;
	}
	return 0;
}

static int epfu_unmap_window(struct epfu *u, void __user *argp)
{
	struct epf_user_window w;

	if (copy_from_user(&w, argp, sizeof(w)))
		return -EFAULT;
	/* only id is read; the other fields may hold what MAP returned */
	if (w.id >= EPFU_MAX_WINDOWS || !u->win[w.id])
		return -EINVAL;
	if (u->win[w.id]->mmaps)
		return -EBUSY;
	epfu_window_release(u, w.id);
	return 0;
}

static void epfu_dma_callback(void *param, const struct dmaengine_result *res)
{
	struct epfu_dma_wait *wait = param;

	if (res && res->result != DMA_TRANS_NOERROR)
		wait->failed = true;
	if (atomic_dec_and_test(&wait->pending))
		complete(&wait->done);
}

/* Submits one transfer; the caller issues and waits. */
static int epfu_dma_submit(struct epfu *u, struct dma_chan *chan,
			   struct dma_async_tx_descriptor *tx)
{
	dma_cookie_t cookie;

	if (!tx)
		return -EIO;
	tx->callback_result = epfu_dma_callback;
	tx->callback_param = &u->dma_wait;
	atomic_inc(&u->dma_wait.pending);
	cookie = dmaengine_submit(tx);
	if (dma_submit_error(cookie)) {
		atomic_dec(&u->dma_wait.pending);
		return -EIO;
	}
	return 0;
}

static void epfu_dma_wait_init(struct epfu *u)
{
	init_completion(&u->dma_wait.done);
	/* one extra count, dropped after the last submit */
	atomic_set(&u->dma_wait.pending, 1);
	u->dma_wait.failed = false;
}

static int epfu_dma_wait(struct epfu *u, struct dma_chan *chan)
{
	long t;

	if (atomic_dec_and_test(&u->dma_wait.pending))
		complete(&u->dma_wait.done);
	dma_async_issue_pending(chan);
	/*
	 * Killable, not interruptible: io_uring completions for this task
	 * (task work) and ordinary signals make interruptible waits return
	 * early, and the transfer would fail for nothing. Only a dying
	 * process stops waiting.
	 */
	t = wait_for_completion_killable_timeout(&u->dma_wait.done,
						 EPFU_DMA_TIMEOUT);
	if (t <= 0) {
		dmaengine_terminate_sync(chan);
		return t ? -EINTR : -ETIMEDOUT;
	}
	return u->dma_wait.failed ? -EIO : 0;
}

/* Through a DMA engine, on pinned user pages. */
static int epfu_dma_engine(struct epfu *u, struct epf_user_dma *d,
			   bool to_host)
{
	struct dma_chan *chan = to_host ? u->dma_tx : u->dma_rx;
	enum dma_data_direction dir = to_host ? DMA_TO_DEVICE : DMA_FROM_DEVICE;
	unsigned long first = d->user & PAGE_MASK;
	unsigned int npages = DIV_ROUND_UP(offset_in_page(d->user) + d->len,
					   PAGE_SIZE);
	struct device *dev = dmaengine_get_dma_device(chan);
	struct scatterlist *sg;
	struct sg_table sgt;
	struct page **pages;
	u64 done = 0;
	int ret, n;

	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	n = pin_user_pages_fast(first, npages, to_host ? 0 : FOLL_WRITE, pages);
	if (n != npages) {
		ret = n < 0 ? n : -EFAULT;
		if (n > 0)
			unpin_user_pages(pages, n);
		goto out_free;
	}
	ret = sg_alloc_table_from_pages(&sgt, pages, npages,
					offset_in_page(d->user), d->len,
					GFP_KERNEL);
	if (ret)
		goto out_unpin;
	ret = dma_map_sgtable(dev, &sgt, dir, 0);
	if (ret)
		goto out_sgt;

	if (u->dma_private) {
		struct dma_async_tx_descriptor *tx;
		struct dma_slave_config cfg = { };

		cfg.direction = to_host ? DMA_MEM_TO_DEV : DMA_DEV_TO_MEM;
		if (to_host)
			cfg.dst_addr = d->pci_addr;
		else
			cfg.src_addr = d->pci_addr;
		ret = dmaengine_slave_config(chan, &cfg);
		if (ret)
			goto out_unmap;
		epfu_dma_wait_init(u);
		tx = dmaengine_prep_slave_sg(chan, sgt.sgl, sgt.nents,
					     cfg.direction,
					     DMA_CTRL_ACK | DMA_PREP_INTERRUPT);
		ret = epfu_dma_submit(u, chan, tx);
		if (!ret)
			ret = epfu_dma_wait(u, chan);
		goto out_unmap;
	}

	/* DMA_MEMCPY: the host side through windows, chunk by chunk */
	sg = sgt.sgl;
	n = 0;		/* offset in sg */
	while (done < d->len) {
		struct epfu_region *r;
		u64 mapped, in_win = 0;
		phys_addr_t remote;

		r = epfu_window_map(u, d->pci_addr + done, d->len - done,
				    &mapped);
		if (IS_ERR(r)) {
			ret = PTR_ERR(r);
			break;
		}
		remote = r->phys + (d->pci_addr + done - r->pci_addr);
		epfu_dma_wait_init(u);
		ret = 0;
		while (in_win < mapped && !ret) {
			u32 len = min_t(u64, sg_dma_len(sg) - n,
					mapped - in_win);
			dma_addr_t local = sg_dma_address(sg) + n;
			dma_addr_t rem = remote + in_win;
			struct dma_async_tx_descriptor *tx;

			tx = dmaengine_prep_dma_memcpy(chan,
						       to_host ? rem : local,
						       to_host ? local : rem,
						       len, DMA_CTRL_ACK |
						       DMA_PREP_INTERRUPT);
			ret = epfu_dma_submit(u, chan, tx);
			in_win += len;
			n += len;
			if (n == sg_dma_len(sg)) {
				sg = sg_next(sg);
				n = 0;
			}
		}
		if (ret) {
			/* wait for what was submitted, report the error */
			epfu_dma_wait(u, chan);
		} else {
			ret = epfu_dma_wait(u, chan);
		}
		epfu_window_unmap(u, r);
		if (ret)
			break;
		done += mapped;
	}

out_unmap:
	dma_unmap_sgtable(dev, &sgt, dir, 0);
out_sgt:
	sg_free_table(&sgt);
out_unpin:
	unpin_user_pages_dirty_lock(pages, npages, !to_host);
out_free:
	kvfree(pages);
	return ret;
}

/* Without a DMA engine: memcpy_toio/fromio through temporary windows. */
static int epfu_dma_cpu(struct epfu *u, struct epf_user_dma *d, bool to_host)
{
	u8 __user *user = u64_to_user_ptr(d->user);
	u64 done = 0;
	void *buf;
	int ret = 0;

	buf = kmalloc(EPFU_BOUNCE_SIZE, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	while (done < d->len && !ret) {
		struct epfu_region *r;
		u64 mapped, in_win = 0;
		void __iomem *io;

		r = epfu_window_map(u, d->pci_addr + done, d->len - done,
				    &mapped);
		if (IS_ERR(r)) {
			ret = PTR_ERR(r);
			break;
		}
		io = r->virt + (d->pci_addr + done - r->pci_addr);
		while (in_win < mapped) {
			size_t n = min_t(u64, mapped - in_win, EPFU_BOUNCE_SIZE);

			if (signal_pending(current)) {
				ret = -EINTR;
				break;
			}
			if (to_host) {
				if (copy_from_user(buf, user + done + in_win, n)) {
					ret = -EFAULT;
					break;
				}
				memcpy_toio(io + in_win, buf, n);
			} else {
				memcpy_fromio(buf, io + in_win, n);
				if (copy_to_user(user + done + in_win, buf, n)) {
					ret = -EFAULT;
					break;
				}
			}
			in_win += n;
			cond_resched();
		}
		epfu_window_unmap(u, r);
		done += mapped;
	}
	kfree(buf);
	return ret;
}

static int epfu_dma(struct epfu *u, void __user *argp)
{
	struct epf_user_dma d;
	bool to_host;
	u64 end;
	int ret;

	if (copy_from_user(&d, argp, sizeof(d)))
		return -EFAULT;
	if (d.flags != EPF_USER_DMA_TO_HOST && d.flags != EPF_USER_DMA_FROM_HOST)
		return -EINVAL;
	if (!d.len || d.len > EPFU_DMA_MAX_LEN ||
	    check_add_overflow(d.pci_addr, (u64)d.len - 1, &end) ||
	    check_add_overflow(d.user, (u64)d.len - 1, &end))
		return -EINVAL;
	if (!access_ok(u64_to_user_ptr(d.user), d.len))
		return -EFAULT;
	if (!u->epc_ready)
		return -EAGAIN;
	to_host = d.flags == EPF_USER_DMA_TO_HOST;

	if (to_host ? u->dma_tx : u->dma_rx) {
		ret = epfu_dma_engine(u, &d, to_host);
		d.flags |= EPF_USER_DMA_USED_DMA;
	} else {
		ret = epfu_dma_cpu(u, &d, to_host);
	}
	if (ret)
		return ret;
	return copy_to_user(argp, &d, sizeof(d)) ? -EFAULT : 0;
}

static long epfu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct epfu_file *uf = file->private_data;
	struct epfu *u = uf->u;
	void __user *argp = (void __user *)arg;
	long ret;

	mutex_lock(&u->lock);
	if (uf->gen != u->gen || !u->epc) {
		ret = -ENODEV;
		goto out;
	}
	switch (cmd) {
	case EPF_USER_GET_FEATURES:
		ret = epfu_get_features(u, argp);
		break;
	case EPF_USER_SET_HEADER:
		ret = epfu_set_header(u, argp);
		break;
	case EPF_USER_SET_BAR:
		ret = epfu_set_bar(u, argp);
		break;
	case EPF_USER_SET_IRQS:
		ret = epfu_set_irqs(u, argp);
		break;
	case EPF_USER_START:
		ret = epfu_start(u);
		break;
	case EPF_USER_STOP:
		if (u->started)
			pci_epc_stop(u->epc);
		u->started = false;
		ret = 0;
		break;
	case EPF_USER_RAISE_IRQ:
		ret = epfu_raise_irq(u, argp);
		break;
	case EPF_USER_GET_IRQ_STATE:
		ret = epfu_get_irq_state(u, argp);
		break;
	case EPF_USER_MAP_WINDOW:
		ret = epfu_map_window(u, argp);
		break;
	case EPF_USER_UNMAP_WINDOW:
		ret = epfu_unmap_window(u, argp);
		break;
	case EPF_USER_DMA:
		ret = epfu_dma(u, argp);
		break;
	case EPF_USER_SET_DOORBELL:
		/* Linux 6.12 has no EPF doorbell API */
		ret = -EOPNOTSUPP;
		break;
	default:
		ret = -ENOTTY;
		break;
	}
out:
	mutex_unlock(&u->lock);
	return ret;
}

/* ------------------------------------------------------------ mmap */

static void epfu_vm_open(struct vm_area_struct *vma)
{
	struct epfu_file *uf = vma->vm_file->private_data;
	struct epfu_region *r = vma->vm_private_data;

	mutex_lock(&uf->u->map_lock);
	r->mmaps++;
	mutex_unlock(&uf->u->map_lock);
}

static void epfu_vm_close(struct vm_area_struct *vma)
{
	struct epfu_file *uf = vma->vm_file->private_data;
	struct epfu_region *r = vma->vm_private_data;

	mutex_lock(&uf->u->map_lock);
	if (!--r->mmaps && r->orphan)
		epfu_region_free(r);
	mutex_unlock(&uf->u->map_lock);
}

static const struct vm_operations_struct epfu_vm_ops = {
	.open	= epfu_vm_open,
	.close	= epfu_vm_close,
};

static int epfu_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct epfu_file *uf = file->private_data;
	struct epfu *u = uf->u;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;
	struct epfu_region *r;
	unsigned long pgoff;
	u64 rel, end;
	int ret = -EINVAL;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (check_add_overflow(off, len, &end))
		return -EINVAL;

	mutex_lock(&u->map_lock);
	if (uf->gen != u->gen)
		goto out;
	if (off >= EPF_USER_WINDOW_OFFSET) {
		u64 id = (off - EPF_USER_WINDOW_OFFSET) / EPFU_WINDOW_STRIDE;

		if (id >= EPFU_MAX_WINDOWS || !u->win[id])
			goto out;
		r = u->win[id];
		rel = off - epfu_win_offset(id);
		if (rel >= r->size || len > r->size - rel)
			goto out;
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
		ret = io_remap_pfn_range(vma, vma->vm_start,
					 (r->phys + rel) >> PAGE_SHIFT, len,
					 vma->vm_page_prot);
	} else {
		u64 bar = off / EPFU_BAR_STRIDE;

		if (bar >= PCI_STD_NUM_BARS || !u->bar[bar])
			goto out;
		r = u->bar[bar];
		rel = off - EPF_USER_BAR_OFFSET(bar);
		if (rel >= PAGE_ALIGN(r->mem_size) ||
		    len > PAGE_ALIGN(r->mem_size) - rel)
			goto out;
		/* dma_mmap_coherent() takes vm_pgoff as the buffer offset */
		pgoff = vma->vm_pgoff;
		vma->vm_pgoff = rel >> PAGE_SHIFT;
		ret = dma_mmap_coherent(r->dev, vma, r->cpu, r->dma,
					r->mem_size);
		vma->vm_pgoff = pgoff;
	}
	if (ret)
		goto out;
	vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_private_data = r;
	vma->vm_ops = &epfu_vm_ops;
	r->mmaps++;
out:
	mutex_unlock(&u->map_lock);
	return ret;
}

/* ------------------------------------------------------------ file */

static int epfu_open(struct inode *inode, struct file *file)
{
	struct epfu *u = container_of(file->private_data, struct epfu, misc);
	struct epfu_file *uf;
	int ret = 0;

	uf = kzalloc(sizeof(*uf), GFP_KERNEL);
	if (!uf)
		return -ENOMEM;

	mutex_lock(&u->lock);
	if (!u->epc) {
		ret = -ENODEV;
	} else if (u->open) {
		ret = -EBUSY;
	} else {
		u->open = true;
		kref_get(&u->ref);
		uf->u = u;
		uf->gen = u->gen;
		u->mapping = file->f_mapping;
		file->private_data = uf;
		epfu_events_reset(u);
		if (u->epc_ready) {
			epfu_dma_request(u);
			epfu_event(u, EPF_USER_EV_EPC_INIT);
		}
		if (u->link_up)
			epfu_event(u, EPF_USER_EV_LINK_UP);
	}
	mutex_unlock(&u->lock);
	if (ret)
		kfree(uf);
	else
		stream_open(inode, file);
	return ret;
}

static int epfu_release(struct inode *inode, struct file *file)
{
	struct epfu_file *uf = file->private_data;
	struct epfu *u = uf->u;

	/* no vma holds the file any more: nothing is mapped */
	mutex_lock(&u->lock);
	if (uf->gen == u->gen) {
		epfu_teardown_epc(u);
		epfu_park_bars(u);
	}
	epfu_free_bars(u);
	u->mapping = NULL;
	u->open = false;
	mutex_unlock(&u->lock);
	kfree(uf);
	epfu_put(u);
	return 0;
}

static ssize_t epfu_read(struct file *file, char __user *buf, size_t count,
			 loff_t *ppos)
{
	struct epfu_file *uf = file->private_data;
	struct epfu *u = uf->u;
	struct epf_user_event ev;
	unsigned long flags;
	size_t done = 0;
	int ret;

	if (count < sizeof(ev))
		return -EINVAL;
	while (!epfu_events_pending(u)) {
		if (uf->gen != READ_ONCE(u->gen))
			return -ENODEV;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(u->ev_wq,
					       epfu_events_pending(u) ||
					       uf->gen != READ_ONCE(u->gen));
		if (ret)
			return ret;
	}
	while (count - done >= sizeof(ev)) {
		spin_lock_irqsave(&u->ev_lock, flags);
		if (!u->ev_count) {
			spin_unlock_irqrestore(&u->ev_lock, flags);
			break;
		}
		ev = u->ev[u->ev_head];
		u->ev_head = (u->ev_head + 1) % EPFU_NUM_EVENTS;
		u->ev_count--;
		spin_unlock_irqrestore(&u->ev_lock, flags);
		if (copy_to_user(buf + done, &ev, sizeof(ev)))
			return done ? done : -EFAULT;
		done += sizeof(ev);
	}
	return done;
}

static __poll_t epfu_poll(struct file *file, poll_table *wait)
{
	struct epfu_file *uf = file->private_data;
	struct epfu *u = uf->u;
	__poll_t mask = 0;

	poll_wait(file, &u->ev_wq, wait);
	if (epfu_events_pending(u))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (uf->gen != READ_ONCE(u->gen))
		mask |= EPOLLHUP | EPOLLERR;
	return mask;
}

static const struct file_operations epfu_fops = {
	.owner		= THIS_MODULE,
	.open		= epfu_open,
	.release	= epfu_release,
	.read		= epfu_read,
	.poll		= epfu_poll,
	.unlocked_ioctl	= epfu_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= epfu_mmap,
	.llseek		= noop_llseek,
};

/* ------------------------------------------------------------ EPF callbacks */

static int epfu_epc_init(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	mutex_lock(&u->lock);
	u->epc_ready = true;
	if (u->open && !u->dma_tx)
		epfu_dma_request(u);
	mutex_unlock(&u->lock);
	epfu_event(u, EPF_USER_EV_EPC_INIT);
	return 0;
}

static void epfu_epc_deinit(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	mutex_lock(&u->lock);
	epfu_teardown_epc(u);
	u->epc_ready = false;
	u->link_up = false;
	mutex_unlock(&u->lock);
	epfu_event(u, EPF_USER_EV_EPC_DEINIT);
}

static int epfu_link_up(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	WRITE_ONCE(u->link_up, true);
	epfu_event(u, EPF_USER_EV_LINK_UP);
	return 0;
}

static int epfu_link_down(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	WRITE_ONCE(u->link_up, false);
	epfu_event(u, EPF_USER_EV_LINK_DOWN);
	return 0;
}

static int epfu_bme(struct pci_epf *epf)
{
	epfu_event(epf_get_drvdata(epf), EPF_USER_EV_BME);
	return 0;
}

static const struct pci_epc_event_ops epfu_event_ops = {
	.epc_init		= epfu_epc_init,
	.epc_deinit		= epfu_epc_deinit,
	.link_up		= epfu_link_up,
	.link_down		= epfu_link_down,
	.bus_master_enable	= epfu_bme,
};

static int epfu_bind(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);
	const struct pci_epc_features *f;
	const char *name;
	int ret;

	if (WARN_ON_ONCE(!epf->epc))
		return -EINVAL;
	f = pci_epc_get_features(epf->epc, epf->func_no, epf->vfunc_no);
	if (!f)
		return -EOPNOTSUPP;

	/* the configfs directory's name, else the device's */
	name = epf->group ? config_item_name(&epf->group->cg_item) :
			    dev_name(&epf->dev);
	kfree(u->misc.name);
	u->misc.name = kasprintf(GFP_KERNEL, "epf-user-%s", name);
	if (!u->misc.name)
		return -ENOMEM;

	mutex_lock(&u->lock);
	u->epc = epf->epc;
	u->features = f;
	u->epc_ready = false;	/* epc_init follows if the EPC is ready */
	u->link_up = false;
	mutex_unlock(&u->lock);

	u->misc.minor = MISC_DYNAMIC_MINOR;
	u->misc.fops = &epfu_fops;
	u->misc.parent = &epf->dev;
	u->misc.mode = 0600;
	ret = misc_register(&u->misc);
	if (ret) {
		mutex_lock(&u->lock);
		u->epc = NULL;
		mutex_unlock(&u->lock);
		return ret;
	}
	u->misc_registered = true;
	dev_info(&epf->dev, "/dev/%s\n", u->misc.name);
	return 0;
}

static void epfu_unbind(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	/* no new opens; misc_open() holds misc_mtx while it calls us */
	if (u->misc_registered) {
		misc_deregister(&u->misc);
		u->misc_registered = false;
	}

	mutex_lock(&u->lock);
	if (u->open) {
		mutex_lock(&u->map_lock);
		u->gen++;	/* the open file is stale from now on */
		mutex_unlock(&u->map_lock);
	}
	epfu_teardown_epc(u);
	epfu_free_bars(u);	/* mapped memory goes with its last vma */
	epfu_unpark_all(u);
	u->epc = NULL;
	u->epc_ready = false;
	mutex_unlock(&u->lock);
	wake_up_interruptible(&u->ev_wq);
}

static int epfu_probe(struct pci_epf *epf, const struct pci_epf_device_id *id)
{
	struct epfu *u;

	u = kzalloc(sizeof(*u), GFP_KERNEL);
	if (!u)
		return -ENOMEM;
	kref_init(&u->ref);
	mutex_init(&u->lock);
	mutex_init(&u->map_lock);
	spin_lock_init(&u->ev_lock);
	init_waitqueue_head(&u->ev_wq);
	u->epf = epf;
	u->header.baseclass_code = PCI_CLASS_OTHERS;
	u->header.interrupt_pin = PCI_INTERRUPT_INTA;
	epf->header = &u->header;
	epf->event_ops = &epfu_event_ops;
	epf_set_drvdata(epf, u);
	return 0;
}

static void epfu_remove(struct pci_epf *epf)
{
	struct epfu *u = epf_get_drvdata(epf);

	mutex_lock(&u->lock);
	u->epf = NULL;
	mutex_unlock(&u->lock);
	epf->header = NULL;
	epf->event_ops = NULL;
	epfu_put(u);
}

static const struct pci_epf_device_id epfu_ids[] = {
	{ .name = "pci_epf_user" },
	{ },
};

static const struct pci_epf_ops epfu_ops = {
	.bind	= epfu_bind,
	.unbind	= epfu_unbind,
};

static struct pci_epf_driver epfu_driver = {
	.driver.name	= "pci_epf_user",
	.probe		= epfu_probe,
	.remove		= epfu_remove,
	.id_table	= epfu_ids,
	.ops		= &epfu_ops,
	.owner		= THIS_MODULE,
};

static int __init epfu_init(void)
{
	return pci_epf_register_driver(&epfu_driver);
}
module_init(epfu_init);

static void __exit epfu_exit(void)
{
	pci_epf_unregister_driver(&epfu_driver);
}
module_exit(epfu_exit);

MODULE_DESCRIPTION("PCI endpoint function handing its resources to userspace");
MODULE_LICENSE("GPL");
