// SPDX-License-Identifier: GPL-2.0
/*
 * PCI endpoint controller driver for the simulated controller of virtio-epf
 * (PCI ID 1af4:10fe), served over vfio-user by epf-link. The register
 * interface is described in docs/sim-epc.md of the virtio-epf repository.
 *
 * The controller is a PCI device of the endpoint VM. Its BAR 0 holds the
 * control registers, BAR 2 is the outbound aperture (accesses go through the
 * ATU windows to host memory) and BAR 4 the MSI-X table of its own three
 * interrupts: link events, DMA completion and doorbells.
 *
 * The driver registers a pci_epc (for the endpoint core and configfs) and a
 * dmaengine provider on the PCI device, so that endpoint functions find the
 * DMA channels the way they find those of a DesignWare eDMA.
 */

#include <linux/bitfield.h>
#include <linux/bitops.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/pci-epc.h>
#include <linux/pci-epf.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

#include "virt-dma.h"

#define DRV_NAME "sim-epc"

#define PCI_DEVICE_ID_SIM_EPC		0x10fe

#define SIM_EPC_BAR_REGS		0
#define SIM_EPC_BAR_APERTURE		2

/* Identification and capabilities */
#define SIM_MAGIC			0x000
#define SIM_MAGIC_VALUE			0x43504556	/* "VEPC" */
#define SIM_VERSION			0x004
#define SIM_CAPS			0x008
#define SIM_CAP_MSI			BIT(0)
#define SIM_CAP_MSIX			BIT(1)
#define SIM_CAP_INTX			BIT(2)
#define SIM_CAP_DMA			BIT(3)
#define SIM_CAP_DOORBELLS		BIT(4)
#define SIM_NUM_WINDOWS			0x00c
#define SIM_WINDOW_ALIGN		0x010
#define SIM_NUM_DMA			0x014
#define SIM_NUM_DOORBELLS		0x018
#define SIM_MAX_MSI			0x01c
#define SIM_MAX_MSIX			0x020
#define SIM_APERTURE_SIZE_LO		0x024
#define SIM_APERTURE_SIZE_HI		0x028

/* Link, events, errors */
#define SIM_LINK_CTRL			0x030
#define SIM_LINK_START			BIT(0)
#define SIM_LINK_STATUS			0x034
#define SIM_LINK_ATTACHED		BIT(0)
#define SIM_LINK_UP			BIT(1)
#define SIM_EVENT_STATUS		0x038
#define SIM_EVENT_MASK			0x03c
#define SIM_EV_LINK_UP			BIT(0)
#define SIM_EV_LINK_DOWN		BIT(1)
#define SIM_EV_BME			BIT(2)
#define SIM_EV_HOST_RESET		BIT(3)
#define SIM_EV_DOORBELL			BIT(4)
#define SIM_EV_DMA(c)			BIT(8 + (c))
#define SIM_EV_LINK_ALL			(SIM_EV_LINK_UP | SIM_EV_LINK_DOWN | \
					 SIM_EV_BME | SIM_EV_HOST_RESET)
#define SIM_ERROR			0x040
#define SIM_ERROR_COUNT			0x044
#define SIM_APERTURE_BASE_LO		0x048
#define SIM_APERTURE_BASE_HI		0x04c
#define SIM_IRQ_RAISE			0x050
#define SIM_IRQ_NUM			GENMASK(15, 0)
#define SIM_IRQ_TYPE			GENMASK(19, 16)
#define SIM_IRQ_INTX_ASSERT		1
#define SIM_IRQ_MSI			2
#define SIM_IRQ_MSIX			3
#define SIM_IRQ_INTX_DEASSERT		4
#define SIM_IRQ_RESULT			0x054
#define SIM_MSI_ENABLED			0x058
#define SIM_MSIX_ENABLED		0x05c
#define SIM_DOORBELL_PENDING		0x060

/* ERROR codes */
#define SIM_ERR_BAR			1
#define SIM_ERR_WINDOW			2
#define SIM_ERR_DMA			3
#define SIM_ERR_IRQ			4
#define SIM_ERR_CONFIG			5
#define SIM_ERR_BUSY			6
#define SIM_ERR_NOT_EP_RAM		7
#define SIM_ERR_DOORBELL		8

/* Configuration header of the function */
#define SIM_HDR_ID			0x100
#define SIM_HDR_CLASS_REV		0x104
#define SIM_HDR_SUBSYS			0x108
#define SIM_HDR_INTX			0x10c
#define SIM_MSI_VECTORS			0x110
#define SIM_MSIX_VECTORS		0x114
#define SIM_MSIX_TABLE			0x118
#define SIM_MSIX_PBA			0x11c

/* BARs of the function */
#define SIM_BAR(n)			(0x200 + (n) * 0x20)
#define SIM_BAR_PHYS_LO			0x00
#define SIM_BAR_PHYS_HI			0x04
#define SIM_BAR_SIZE_LO			0x08
#define SIM_BAR_SIZE_HI			0x0c
#define SIM_BAR_FLAGS			0x10
#define SIM_BAR_CTRL			0x14

/* Outbound ATU windows */
#define SIM_WIN(w)			(0x400 + (w) * 0x20)
#define SIM_WIN_AP_OFFSET_LO		0x00
#define SIM_WIN_AP_OFFSET_HI		0x04
#define SIM_WIN_SIZE_LO			0x08
#define SIM_WIN_SIZE_HI			0x0c
#define SIM_WIN_PCI_ADDR_LO		0x10
#define SIM_WIN_PCI_ADDR_HI		0x14
#define SIM_WIN_CTRL			0x18
#define SIM_MAX_WINDOWS			32

/* DMA channels */
#define SIM_DMA(c)			(0x800 + (c) * 0x40)
#define SIM_DMA_SRC_LO			0x00
#define SIM_DMA_SRC_HI			0x04
#define SIM_DMA_DST_LO			0x08
#define SIM_DMA_DST_HI			0x0c
#define SIM_DMA_LEN			0x10
#define SIM_DMA_CTRL			0x14
#define SIM_DMA_SRC_HOST		BIT(0)
#define SIM_DMA_DST_HOST		BIT(1)
#define SIM_DMA_START			BIT(31)
#define SIM_DMA_STATUS			0x18
#define SIM_DMA_ST_STATE		GENMASK(7, 0)
#define SIM_DMA_ST_ERROR		GENMASK(15, 8)
#define SIM_DMA_IDLE			0
#define SIM_DMA_BUSY			1
#define SIM_DMA_DONE			2
#define SIM_DMA_FAILED			3
#define SIM_DMA_DONE_COUNT		0x1c
#define SIM_DMA_MAX_LEN			SZ_64M
#define SIM_MAX_DMA			2

/* Doorbells */
#define SIM_DB(d)			(0xa00 + (d) * 0x10)
#define SIM_DB_CTRL			0x08

/* MSI-X vectors of the controller */
#define SIM_VEC_LINK			0
#define SIM_VEC_DMA			1
#define SIM_VEC_DOORBELL		2
#define SIM_NUM_VECTORS			3

/* How long terminate_sync waits for a transfer it cannot abort. */
#define SIM_DMA_SYNC_TIMEOUT_MS		10000

enum sim_dma_mode {
	SIM_DMA_MODE_NONE,
	SIM_DMA_MODE_SLAVE,
	SIM_DMA_MODE_MEMCPY,
};

static char *dma = "slave";
module_param(dma, charp, 0444);
MODULE_PARM_DESC(dma,
		 "DMA channels offered: slave (DesignWare eDMA style, default), memcpy, none");

struct sim_dma_seg {
	u64 src;
	u64 dst;
	u32 len;
};

struct sim_dma_desc {
	struct virt_dma_desc vd;
	u32 ctrl;
	unsigned int cur;
	unsigned int nsegs;
	struct sim_dma_seg segs[] __counted_by(nsegs);
};

struct sim_dma_chan {
	struct virt_dma_chan vc;
	struct sim_epc *sim;
	unsigned int id;
	/* slave mode: the only direction of this channel */
	enum dma_transfer_direction dir;
	/* protected by vc.lock */
	struct dma_slave_config cfg;
	struct sim_dma_desc *active;
	bool hw_busy;
	dma_cookie_t error_cookie;
	wait_queue_head_t idle_wq;
};

struct sim_epc {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct pci_epc *epc;
	struct pci_epc_features features;

	u32 caps;
	u32 win_align;
	phys_addr_t ap_base;
	u64 ap_size;

	/* serialises write + ERROR check sequences; never sleeps */
	spinlock_t reg_lock;

	/* outbound windows; under epc->lock (every EPC op holds it) */
	unsigned int num_windows;
	unsigned long win_used;
	phys_addr_t win_phys[SIM_MAX_WINDOWS];
	u8 bar_enabled;

	bool link_up;		/* only touched by the link IRQ thread */
	u32 event_mask;

	enum sim_dma_mode dma_mode;
	unsigned int num_dma;
	struct dma_device dmadev;
	struct sim_dma_chan chan[SIM_MAX_DMA];
	bool dma_registered;
};

/* ------------------------------------------------------------ registers */

static u32 sim_rd(struct sim_epc *sim, u32 off)
{
	return readl(sim->regs + off);
}

static void sim_wr(struct sim_epc *sim, u32 off, u32 val)
{
	writel(val, sim->regs + off);
}

static void sim_wr64(struct sim_epc *sim, u32 off, u64 val)
{
	sim_wr(sim, off, lower_32_bits(val));
	sim_wr(sim, off + 4, upper_32_bits(val));
}

static int sim_errno(u32 code)
{
	switch (code) {
	case SIM_ERR_BUSY:
		return -EBUSY;
	case SIM_ERR_NOT_EP_RAM:
		return -EFAULT;
	default:
		return -EINVAL;
	}
}

/*
 * Reads and clears ERROR. A rejected write leaves the controller unchanged, so
 * one check after a sequence of writes tells whether all of them took effect.
 * Caller holds reg_lock.
 */
static int sim_check_locked(struct sim_epc *sim, const char *what)
{
	u32 code = sim_rd(sim, SIM_ERROR);

	if (!code)
		return 0;
	sim_wr(sim, SIM_ERROR, 0);
	dev_dbg(&sim->pdev->dev, "%s rejected: error %u\n", what, code);
	return sim_errno(code);
}

/* One register write, checked. */
static int sim_wr_checked(struct sim_epc *sim, u32 off, u32 val,
			  const char *what)
{
	unsigned long flags;
	int ret;

	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr(sim, off, val);
	ret = sim_check_locked(sim, what);
	spin_unlock_irqrestore(&sim->reg_lock, flags);
	return ret;
}

/* ------------------------------------------------------------ EPC ops */

static int sim_epc_write_header(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
				struct pci_epf_header *hdr)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	unsigned long flags;
	int ret;

	if (func_no || vfunc_no)
		return -EINVAL;
	if (hdr->interrupt_pin > PCI_INTERRUPT_INTD)
		return -EINVAL;

	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr(sim, SIM_HDR_ID, hdr->vendorid | (u32)hdr->deviceid << 16);
	sim_wr(sim, SIM_HDR_CLASS_REV,
	       hdr->revid | (u32)hdr->progif_code << 8 |
	       (u32)hdr->subclass_code << 16 | (u32)hdr->baseclass_code << 24);
	sim_wr(sim, SIM_HDR_SUBSYS,
	       hdr->subsys_vendor_id | (u32)hdr->subsys_id << 16);
	sim_wr(sim, SIM_HDR_INTX, hdr->interrupt_pin);
	ret = sim_check_locked(sim, "header");
	spin_unlock_irqrestore(&sim->reg_lock, flags);
	if (ret)
		dev_err(&sim->pdev->dev, "configuration header refused (%d)\n",
			ret);
	return ret;
}

static int sim_epc_bar_disable(struct sim_epc *sim, enum pci_barno bar)
{
	int ret;

	ret = sim_wr_checked(sim, SIM_BAR(bar) + SIM_BAR_CTRL, 0, "BAR disable");
	if (!ret)
		sim->bar_enabled &= ~BIT(bar);
	return ret;
}

static int sim_epc_set_bar(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			   struct pci_epf_bar *epf_bar)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	enum pci_barno bar = epf_bar->barno;
	u32 base = SIM_BAR(bar);
	unsigned long flags;
	int ret;

	if (func_no || vfunc_no || bar < BAR_0 || bar > BAR_5)
		return -EINVAL;
	if (epf_bar->flags & PCI_BASE_ADDRESS_SPACE_IO)
		return -EINVAL;
	if (!is_power_of_2(epf_bar->size) || epf_bar->size < 128 ||
	    epf_bar->size > SZ_1G)
		return -EINVAL;
	if (!IS_ALIGNED(epf_bar->phys_addr, PAGE_SIZE))
		return -EINVAL;

	/*
	 * Like DesignWare, allow an EPF to move a BAR by calling set_bar()
	 * again: the controller validates only on enable, so disable first.
	 */
	if (sim->bar_enabled & BIT(bar)) {
		ret = sim_epc_bar_disable(sim, bar);
		if (ret)
			goto err;
	}

	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr64(sim, base + SIM_BAR_PHYS_LO, epf_bar->phys_addr);
	sim_wr64(sim, base + SIM_BAR_SIZE_LO, epf_bar->size);
	sim_wr(sim, base + SIM_BAR_FLAGS, epf_bar->flags &
	       (PCI_BASE_ADDRESS_MEM_TYPE_MASK | PCI_BASE_ADDRESS_MEM_PREFETCH));
	sim_wr(sim, base + SIM_BAR_CTRL, 1);
	ret = sim_check_locked(sim, "BAR");
	spin_unlock_irqrestore(&sim->reg_lock, flags);
	if (ret)
		goto err;

	sim->bar_enabled |= BIT(bar);
	return 0;

err:
	dev_err(&sim->pdev->dev, "BAR%d (%#llx, %zu bytes) refused (%d)\n",
		bar, (u64)epf_bar->phys_addr, epf_bar->size, ret);
	return ret;
}

static void sim_epc_clear_bar(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			      struct pci_epf_bar *epf_bar)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	enum pci_barno bar = epf_bar->barno;
	int ret;

	if (func_no || vfunc_no || bar < BAR_0 || bar > BAR_5 ||
	    !(sim->bar_enabled & BIT(bar)))
		return;

	ret = sim_epc_bar_disable(sim, bar);
	if (ret)
		dev_warn(&sim->pdev->dev, "BAR%d: clear refused (%d)\n",
			 bar, ret);
}

static int sim_epc_map_addr(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			    phys_addr_t addr, u64 pci_addr, size_t size)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	unsigned long flags;
	unsigned int w;
	u64 off;
	u32 base;
	int ret;

	if (func_no || vfunc_no || !size)
		return -EINVAL;
	if (addr < sim->ap_base || addr - sim->ap_base >= sim->ap_size ||
	    size > sim->ap_size - (addr - sim->ap_base))
		return -EINVAL;
	off = addr - sim->ap_base;
	if (!IS_ALIGNED(off, sim->win_align))
		return -EINVAL;

	w = find_first_zero_bit(&sim->win_used, sim->num_windows);
	if (w >= sim->num_windows) {
		dev_err(&sim->pdev->dev, "no free outbound window\n");
		return -ENOSPC;
	}

	base = SIM_WIN(w);
	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr64(sim, base + SIM_WIN_AP_OFFSET_LO, off);
	sim_wr64(sim, base + SIM_WIN_SIZE_LO, size);
	sim_wr64(sim, base + SIM_WIN_PCI_ADDR_LO, pci_addr);
	sim_wr(sim, base + SIM_WIN_CTRL, 1);
	ret = sim_check_locked(sim, "window");
	spin_unlock_irqrestore(&sim->reg_lock, flags);
	if (ret) {
		dev_err(&sim->pdev->dev,
			"window %u (aperture %#llx, %zu bytes -> %#llx) refused (%d)\n",
			w, off, size, pci_addr, ret);
		return ret;
	}

	__set_bit(w, &sim->win_used);
	sim->win_phys[w] = addr;
	return 0;
}

static void sim_epc_unmap_addr(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			       phys_addr_t addr)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	unsigned int w;
	int ret;

	for_each_set_bit(w, &sim->win_used, sim->num_windows) {
		if (sim->win_phys[w] != addr)
			continue;
		ret = sim_wr_checked(sim, SIM_WIN(w) + SIM_WIN_CTRL, 0,
				     "window disable");
		if (ret)
			dev_warn(&sim->pdev->dev,
				 "window %u: disable refused (%d)\n", w, ret);
		__clear_bit(w, &sim->win_used);
		return;
	}
}

/* @interrupts: log2 of the vector count (the MSI Multiple Message Capable field) */
static int sim_epc_set_msi(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			   u8 interrupts)
{
	struct sim_epc *sim = epc_get_drvdata(epc);

	if (func_no || vfunc_no || interrupts > 5)
		return -EINVAL;
	return sim_wr_checked(sim, SIM_MSI_VECTORS, 1U << interrupts, "MSI");
}

static int sim_epc_get_msi(struct pci_epc *epc, u8 func_no, u8 vfunc_no)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	u32 n;

	if (func_no || vfunc_no)
		return -EINVAL;
	n = sim_rd(sim, SIM_MSI_ENABLED);
	if (!n || n > 32)
		return -EINVAL;
	return ilog2(n);
}

static int sim_epc_set_msix(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			    u16 nr_irqs, enum pci_barno bir, u32 offset)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	unsigned long flags;
	int ret;

	if (func_no || vfunc_no || bir < BAR_0 || bir > BAR_5 ||
	    !IS_ALIGNED(offset, 8))
		return -EINVAL;

	/* The PBA follows the table, as DesignWare lays it out. */
	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr(sim, SIM_MSIX_VECTORS, nr_irqs);
	sim_wr(sim, SIM_MSIX_TABLE, offset | bir);
	sim_wr(sim, SIM_MSIX_PBA, (offset + nr_irqs * PCI_MSIX_ENTRY_SIZE) | bir);
	ret = sim_check_locked(sim, "MSI-X");
	spin_unlock_irqrestore(&sim->reg_lock, flags);
	return ret;
}

static int sim_epc_get_msix(struct pci_epc *epc, u8 func_no, u8 vfunc_no)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	u32 n;

	if (func_no || vfunc_no)
		return -EINVAL;
	n = sim_rd(sim, SIM_MSIX_ENABLED);
	if (!n || n > 2048)
		return -EINVAL;
	return n - 1;
}

static int sim_epc_irq(struct sim_epc *sim, u32 type, u16 num)
{
	unsigned long flags;
	u32 result;
	int ret;

	spin_lock_irqsave(&sim->reg_lock, flags);
	sim_wr(sim, SIM_IRQ_RAISE, FIELD_PREP(SIM_IRQ_TYPE, type) |
	       FIELD_PREP(SIM_IRQ_NUM, num));
	result = sim_rd(sim, SIM_IRQ_RESULT);
	ret = sim_check_locked(sim, "IRQ");
	spin_unlock_irqrestore(&sim->reg_lock, flags);

	if (result)
		return result < MAX_ERRNO ? -(int)result : -EIO;
	return ret;
}

static int sim_epc_raise_irq(struct pci_epc *epc, u8 func_no, u8 vfunc_no,
			     unsigned int type, u16 interrupt_num)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	int ret;

	if (func_no || vfunc_no)
		return -EINVAL;

	switch (type) {
	case PCI_IRQ_INTX:
		if (!(sim->caps & SIM_CAP_INTX))
			return -EINVAL;
		/* As DesignWare does: assert, hold for about 1 ms, deassert. */
		ret = sim_epc_irq(sim, SIM_IRQ_INTX_ASSERT, interrupt_num);
		if (ret)
			break;
		usleep_range(1000, 2000);
		ret = sim_epc_irq(sim, SIM_IRQ_INTX_DEASSERT, interrupt_num);
		break;
	case PCI_IRQ_MSI:
		ret = sim_epc_irq(sim, SIM_IRQ_MSI, interrupt_num);
		break;
	case PCI_IRQ_MSIX:
		ret = sim_epc_irq(sim, SIM_IRQ_MSIX, interrupt_num);
		break;
	default:
		return -EINVAL;
	}
	if (ret)
		dev_dbg(&sim->pdev->dev, "IRQ type %u number %u not raised (%d)\n",
			type, interrupt_num, ret);
	return ret;
}

static int sim_epc_start(struct pci_epc *epc)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	int ret;

	ret = sim_wr_checked(sim, SIM_LINK_CTRL, SIM_LINK_START, "start");
	if (ret)
		dev_err(&sim->pdev->dev, "start refused (%d)\n", ret);
	return ret;
}

static void sim_epc_stop(struct pci_epc *epc)
{
	struct sim_epc *sim = epc_get_drvdata(epc);
	int ret;

	ret = sim_wr_checked(sim, SIM_LINK_CTRL, 0, "stop");
	if (ret)
		dev_warn(&sim->pdev->dev, "stop refused (%d)\n", ret);
}

static const struct pci_epc_features *
sim_epc_get_features(struct pci_epc *epc, u8 func_no, u8 vfunc_no)
{
	struct sim_epc *sim = epc_get_drvdata(epc);

	if (func_no || vfunc_no)
		return NULL;
	return &sim->features;
}

static const struct pci_epc_ops sim_epc_ops = {
	.write_header	= sim_epc_write_header,
	.set_bar	= sim_epc_set_bar,
	.clear_bar	= sim_epc_clear_bar,
	.map_addr	= sim_epc_map_addr,
	.unmap_addr	= sim_epc_unmap_addr,
	.set_msi	= sim_epc_set_msi,
	.get_msi	= sim_epc_get_msi,
	.set_msix	= sim_epc_set_msix,
	.get_msix	= sim_epc_get_msix,
	.raise_irq	= sim_epc_raise_irq,
	.start		= sim_epc_start,
	.stop		= sim_epc_stop,
	.get_features	= sim_epc_get_features,
	.owner		= THIS_MODULE,
};

/* ------------------------------------------------------------ DMA engine */

static struct sim_dma_chan *to_sim_chan(struct dma_chan *c)
{
	return container_of(to_virt_chan(c), struct sim_dma_chan, vc);
}

static struct sim_dma_desc *to_sim_desc(struct virt_dma_desc *vd)
{
	return container_of(vd, struct sim_dma_desc, vd);
}

static void sim_dma_desc_free(struct virt_dma_desc *vd)
{
	kfree(to_sim_desc(vd));
}

/* Starts segment desc->cur on the channel; caller holds vc.lock. */
static int sim_dma_program(struct sim_dma_chan *chan, struct sim_dma_desc *desc)
{
	struct sim_epc *sim = chan->sim;
	struct sim_dma_seg *seg = &desc->segs[desc->cur];
	u32 base = SIM_DMA(chan->id);
	int ret;

	spin_lock(&sim->reg_lock);
	sim_wr64(sim, base + SIM_DMA_SRC_LO, seg->src);
	sim_wr64(sim, base + SIM_DMA_DST_LO, seg->dst);
	sim_wr(sim, base + SIM_DMA_LEN, seg->len);
	sim_wr(sim, base + SIM_DMA_CTRL, desc->ctrl | SIM_DMA_START);
	ret = sim_check_locked(sim, "DMA");
	spin_unlock(&sim->reg_lock);
	if (!ret)
		chan->hw_busy = true;
	return ret;
}

/* Finishes the active descriptor; caller holds vc.lock. */
static void sim_dma_finish(struct sim_dma_chan *chan, bool ok)
{
	struct sim_dma_desc *desc = chan->active;

	chan->active = NULL;
	if (!ok) {
		chan->error_cookie = desc->vd.tx.cookie;
		desc->vd.tx_result.result = chan->dir == DMA_DEV_TO_MEM ?
					    DMA_TRANS_READ_FAILED :
					    DMA_TRANS_WRITE_FAILED;
	}
	vchan_cookie_complete(&desc->vd);
}

/* Starts the next issued descriptor if the channel is idle; holds vc.lock. */
static void sim_dma_start_next(struct sim_dma_chan *chan)
{
	struct virt_dma_desc *vd;
	int ret;

	while (!chan->active && !chan->hw_busy) {
		vd = vchan_next_desc(&chan->vc);
		if (!vd)
			return;
		list_del(&vd->node);
		chan->active = to_sim_desc(vd);
		ret = sim_dma_program(chan, chan->active);
		if (ret) {
			dev_err(&chan->sim->pdev->dev,
				"DMA channel %u: transfer refused (%d)\n",
				chan->id, ret);
			sim_dma_finish(chan, false);
		}
	}
}

/* Completion of the channel's current hardware transfer; holds vc.lock. */
static void sim_dma_complete(struct sim_dma_chan *chan)
{
	struct sim_epc *sim = chan->sim;
	struct sim_dma_desc *desc = chan->active;
	u32 status, state;
	int ret;

	if (!chan->hw_busy)
		return;
	status = sim_rd(sim, SIM_DMA(chan->id) + SIM_DMA_STATUS);
	state = FIELD_GET(SIM_DMA_ST_STATE, status);
	if (state != SIM_DMA_DONE && state != SIM_DMA_FAILED)
		return;
	chan->hw_busy = false;
	wake_up_all(&chan->idle_wq);

	if (desc) {
		if (state == SIM_DMA_FAILED) {
			dev_err(&sim->pdev->dev,
				"DMA channel %u: transfer failed, error %lu\n",
				chan->id, FIELD_GET(SIM_DMA_ST_ERROR, status));
			sim_dma_finish(chan, false);
		} else if (++desc->cur < desc->nsegs) {
			ret = sim_dma_program(chan, desc);
			if (ret)
				sim_dma_finish(chan, false);
		} else {
			sim_dma_finish(chan, true);
		}
	}
	sim_dma_start_next(chan);
}

static irqreturn_t sim_dma_irq(int irq, void *data)
{
	struct sim_epc *sim = data;
	irqreturn_t handled = IRQ_NONE;
	unsigned long flags;
	unsigned int c;
	u32 mask = 0, ev;

	for (c = 0; c < sim->num_dma; c++)
		mask |= SIM_EV_DMA(c);

	for (;;) {
		ev = sim_rd(sim, SIM_EVENT_STATUS) & mask;
		if (!ev)
			break;
		sim_wr(sim, SIM_EVENT_STATUS, ev);
		handled = IRQ_HANDLED;
		for (c = 0; c < sim->num_dma; c++) {
			struct sim_dma_chan *chan = &sim->chan[c];

			if (!(ev & SIM_EV_DMA(c)))
				continue;
			spin_lock_irqsave(&chan->vc.lock, flags);
			sim_dma_complete(chan);
			spin_unlock_irqrestore(&chan->vc.lock, flags);
		}
	}
	return handled;
}

static struct sim_dma_desc *sim_dma_alloc_desc(unsigned int nsegs)
{
	struct sim_dma_desc *desc;

	desc = kzalloc(struct_size(desc, segs, nsegs), GFP_NOWAIT);
	if (desc)
		desc->nsegs = nsegs;
	return desc;
}

/* Appends [src, src + len) -> dst in pieces the engine accepts. */
static unsigned int sim_dma_fill(struct sim_dma_desc *desc, unsigned int i,
				 u64 src, u64 dst, size_t len)
{
	while (len) {
		u32 n = min_t(size_t, len, SIM_DMA_MAX_LEN);

		desc->segs[i].src = src;
		desc->segs[i].dst = dst;
		desc->segs[i].len = n;
		src += n;
		dst += n;
		len -= n;
		i++;
	}
	return i;
}

static struct dma_async_tx_descriptor *
sim_dma_prep_slave_sg(struct dma_chan *c, struct scatterlist *sgl,
		      unsigned int sg_len, enum dma_transfer_direction dir,
		      unsigned long flags, void *context)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	struct sim_dma_desc *desc;
	struct scatterlist *sg;
	unsigned int i, n = 0;
	unsigned long lflags;
	u64 remote;

	if (chan->sim->dma_mode != SIM_DMA_MODE_SLAVE || dir != chan->dir ||
	    !sg_len)
		return NULL;

	for_each_sg(sgl, sg, sg_len, i) {
		if (!sg_dma_len(sg))
			return NULL;
		n += DIV_ROUND_UP(sg_dma_len(sg), SIM_DMA_MAX_LEN);
	}
	desc = sim_dma_alloc_desc(n);
	if (!desc)
		return NULL;

	spin_lock_irqsave(&chan->vc.lock, lflags);
	remote = dir == DMA_MEM_TO_DEV ? chan->cfg.dst_addr : chan->cfg.src_addr;
	spin_unlock_irqrestore(&chan->vc.lock, lflags);

	/* Local side: the EP addresses of the entries; remote: contiguous. */
	n = 0;
	for_each_sg(sgl, sg, sg_len, i) {
		if (dir == DMA_MEM_TO_DEV)
			n = sim_dma_fill(desc, n, sg_dma_address(sg), remote,
					 sg_dma_len(sg));
		else
			n = sim_dma_fill(desc, n, remote, sg_dma_address(sg),
					 sg_dma_len(sg));
		remote += sg_dma_len(sg);
	}
	desc->ctrl = dir == DMA_MEM_TO_DEV ? SIM_DMA_DST_HOST : SIM_DMA_SRC_HOST;

	return vchan_tx_prep(&chan->vc, &desc->vd, flags);
}

static struct dma_async_tx_descriptor *
sim_dma_prep_memcpy(struct dma_chan *c, dma_addr_t dst, dma_addr_t src,
		    size_t len, unsigned long flags)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	struct sim_dma_desc *desc;

	if (chan->sim->dma_mode != SIM_DMA_MODE_MEMCPY || !len)
		return NULL;

	desc = sim_dma_alloc_desc(DIV_ROUND_UP(len, SIM_DMA_MAX_LEN));
	if (!desc)
		return NULL;
	/* Both sides EP-physical; aperture addresses go through the windows. */
	sim_dma_fill(desc, 0, src, dst, len);
	desc->ctrl = 0;

	return vchan_tx_prep(&chan->vc, &desc->vd, flags);
}

static int sim_dma_config(struct dma_chan *c, struct dma_slave_config *cfg)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	unsigned long flags;

	spin_lock_irqsave(&chan->vc.lock, flags);
	chan->cfg = *cfg;
	spin_unlock_irqrestore(&chan->vc.lock, flags);
	return 0;
}

static void sim_dma_issue_pending(struct dma_chan *c)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	unsigned long flags;

	spin_lock_irqsave(&chan->vc.lock, flags);
	if (vchan_issue_pending(&chan->vc))
		sim_dma_start_next(chan);
	spin_unlock_irqrestore(&chan->vc.lock, flags);
}

static size_t sim_dma_residue(struct sim_dma_desc *desc)
{
	size_t bytes = 0;
	unsigned int i;

	for (i = desc->cur; i < desc->nsegs; i++)
		bytes += desc->segs[i].len;
	return bytes;
}

static enum dma_status sim_dma_tx_status(struct dma_chan *c,
					 dma_cookie_t cookie,
					 struct dma_tx_state *state)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	struct virt_dma_desc *vd;
	enum dma_status ret;
	unsigned long flags;
	size_t residue = 0;

	ret = dma_cookie_status(c, cookie, state);

	spin_lock_irqsave(&chan->vc.lock, flags);
	if (ret == DMA_COMPLETE) {
		if (cookie == chan->error_cookie)
			ret = DMA_ERROR;
	} else if (state) {
		if (chan->active && chan->active->vd.tx.cookie == cookie) {
			residue = sim_dma_residue(chan->active);
		} else {
			vd = vchan_find_desc(&chan->vc, cookie);
			if (vd)
				residue = sim_dma_residue(to_sim_desc(vd));
		}
	}
	spin_unlock_irqrestore(&chan->vc.lock, flags);

	dma_set_residue(state, residue);
	return ret;
}

static int sim_dma_terminate_all(struct dma_chan *c)
{
	struct sim_dma_chan *chan = to_sim_chan(c);
	unsigned long flags;
	LIST_HEAD(head);

	spin_lock_irqsave(&chan->vc.lock, flags);
	/*
	 * The engine has no abort: a transfer in flight runs to its end, and
	 * sim_dma_synchronize() waits for that. Its descriptor is dropped now.
	 */
	if (chan->active) {
		vchan_terminate_vdesc(&chan->active->vd);
		chan->active = NULL;
	}
	vchan_get_all_descriptors(&chan->vc, &head);
	spin_unlock_irqrestore(&chan->vc.lock, flags);

	vchan_dma_desc_free_list(&chan->vc, &head);
	return 0;
}

static bool sim_dma_idle(struct sim_dma_chan *chan)
{
	unsigned long flags;
	bool idle;

	spin_lock_irqsave(&chan->vc.lock, flags);
	idle = !chan->hw_busy;
	spin_unlock_irqrestore(&chan->vc.lock, flags);
	return idle;
}

static void sim_dma_synchronize(struct dma_chan *c)
{
	struct sim_dma_chan *chan = to_sim_chan(c);

	if (!wait_event_timeout(chan->idle_wq, sim_dma_idle(chan),
				msecs_to_jiffies(SIM_DMA_SYNC_TIMEOUT_MS)))
		dev_warn(&chan->sim->pdev->dev,
			 "DMA channel %u: transfer still running after terminate\n",
			 chan->id);
	vchan_synchronize(&chan->vc);
}

static void sim_dma_free_chan_resources(struct dma_chan *c)
{
	struct sim_dma_chan *chan = to_sim_chan(c);

	sim_dma_terminate_all(c);
	sim_dma_synchronize(c);
	vchan_free_chan_resources(&chan->vc);
}

static void sim_dma_caps(struct dma_chan *c, struct dma_slave_caps *caps)
{
	struct sim_dma_chan *chan = to_sim_chan(c);

	if (chan->sim->dma_mode == SIM_DMA_MODE_SLAVE)
		caps->directions = BIT(chan->dir);
}

static void sim_dma_cleanup(void *data)
{
	struct sim_epc *sim = data;
	unsigned int c;

	if (sim->dma_registered)
		dma_async_device_unregister(&sim->dmadev);
	for (c = 0; c < sim->num_dma; c++) {
		list_del(&sim->chan[c].vc.chan.device_node);
		tasklet_kill(&sim->chan[c].vc.task);
	}
}

static int sim_dma_probe(struct sim_epc *sim)
{
	struct device *dev = &sim->pdev->dev;
	struct dma_device *dd = &sim->dmadev;
	const u32 widths = BIT(DMA_SLAVE_BUSWIDTH_1_BYTE) |
			   BIT(DMA_SLAVE_BUSWIDTH_2_BYTES) |
			   BIT(DMA_SLAVE_BUSWIDTH_4_BYTES) |
			   BIT(DMA_SLAVE_BUSWIDTH_8_BYTES);
	unsigned int c;
	int ret;

	dma_cap_zero(dd->cap_mask);
	if (sim->dma_mode == SIM_DMA_MODE_SLAVE) {
		/*
		 * As dw-edma: private slave channels, one MEM_TO_DEV (EP memory
		 * to host, "write") and one DEV_TO_MEM (host to EP memory).
		 */
		dma_cap_set(DMA_SLAVE, dd->cap_mask);
		dma_cap_set(DMA_PRIVATE, dd->cap_mask);
		dd->directions = BIT(DMA_MEM_TO_DEV) | BIT(DMA_DEV_TO_MEM);
		dd->device_prep_slave_sg = sim_dma_prep_slave_sg;
		dd->device_config = sim_dma_config;
		dd->device_caps = sim_dma_caps;
	} else {
		dma_cap_set(DMA_MEMCPY, dd->cap_mask);
		dd->directions = BIT(DMA_MEM_TO_MEM);
		dd->device_prep_dma_memcpy = sim_dma_prep_memcpy;
	}
	dd->src_addr_widths = widths;
	dd->dst_addr_widths = widths;
	dd->residue_granularity = DMA_RESIDUE_GRANULARITY_SEGMENT;
	dd->dev = dev;
	dd->device_issue_pending = sim_dma_issue_pending;
	dd->device_tx_status = sim_dma_tx_status;
	dd->device_terminate_all = sim_dma_terminate_all;
	dd->device_synchronize = sim_dma_synchronize;
	dd->device_free_chan_resources = sim_dma_free_chan_resources;
	INIT_LIST_HEAD(&dd->channels);

	for (c = 0; c < sim->num_dma; c++) {
		struct sim_dma_chan *chan = &sim->chan[c];

		chan->sim = sim;
		chan->id = c;
		chan->dir = c == 0 ? DMA_MEM_TO_DEV : DMA_DEV_TO_MEM;
		if (sim->dma_mode == SIM_DMA_MODE_MEMCPY)
			chan->dir = DMA_MEM_TO_MEM;
		init_waitqueue_head(&chan->idle_wq);
		chan->vc.desc_free = sim_dma_desc_free;
		vchan_init(&chan->vc, dd);
	}

	ret = devm_add_action_or_reset(dev, sim_dma_cleanup, sim);
	if (ret)
		return ret;

	dma_set_max_seg_size(dev, SIM_DMA_MAX_LEN);

	ret = dma_async_device_register(dd);
	if (ret)
		return ret;
	sim->dma_registered = true;
	return 0;
}

/* ------------------------------------------------------------ events */

static irqreturn_t sim_link_irq(int irq, void *data)
{
	struct sim_epc *sim = data;
	u32 ev, status;

	ev = sim_rd(sim, SIM_EVENT_STATUS) & SIM_EV_LINK_ALL;
	if (!ev)
		return IRQ_NONE;
	sim_wr(sim, SIM_EVENT_STATUS, ev);
	status = sim_rd(sim, SIM_LINK_STATUS);

	if (ev & SIM_EV_HOST_RESET)
		dev_info(&sim->pdev->dev, "host reset the function\n");
	if ((ev & SIM_EV_LINK_DOWN) && sim->link_up) {
		sim->link_up = false;
		dev_info(&sim->pdev->dev, "link down\n");
		pci_epc_linkdown(sim->epc);
	}
	if ((ev & SIM_EV_LINK_UP) && (status & SIM_LINK_UP) && !sim->link_up) {
		sim->link_up = true;
		dev_info(&sim->pdev->dev, "link up\n");
		pci_epc_linkup(sim->epc);
	}
	if (ev & SIM_EV_BME)
		pci_epc_bus_master_enable_notify(sim->epc);
	return IRQ_HANDLED;
}

/*
 * The 6.12 endpoint API has no doorbell interface for EPC drivers: note and
 * acknowledge rings (the vector is only unmasked if someone enables it).
 */
static irqreturn_t sim_doorbell_irq(int irq, void *data)
{
	struct sim_epc *sim = data;
	u32 pending;

	if (!(sim_rd(sim, SIM_EVENT_STATUS) & SIM_EV_DOORBELL))
		return IRQ_NONE;
	sim_wr(sim, SIM_EVENT_STATUS, SIM_EV_DOORBELL);
	pending = sim_rd(sim, SIM_DOORBELL_PENDING);
	sim_wr(sim, SIM_DOORBELL_PENDING, pending);
	dev_dbg(&sim->pdev->dev, "doorbells rung: %#x\n", pending);
	return IRQ_HANDLED;
}

/* ------------------------------------------------------------ probe */

/*
 * Puts the controller into a known state: function stopped, no events, no
 * windows or BARs left over from a previous driver instance.
 */
static void sim_epc_reset(struct sim_epc *sim)
{
	unsigned int i;

	sim_wr(sim, SIM_EVENT_MASK, 0);
	sim_wr(sim, SIM_LINK_CTRL, 0);
	for (i = 0; i < sim->num_windows; i++)
		sim_wr(sim, SIM_WIN(i) + SIM_WIN_CTRL, 0);
	for (i = 0; i < PCI_STD_NUM_BARS; i++)
		sim_wr(sim, SIM_BAR(i) + SIM_BAR_CTRL, 0);
	sim_wr(sim, SIM_EVENT_STATUS, ~0U);
	sim_wr(sim, SIM_DOORBELL_PENDING, ~0U);
	/* BARs cannot be disabled while a host is attached: not an error here */
	sim_wr(sim, SIM_ERROR, 0);
}

static void sim_epc_mem_exit(void *data)
{
	pci_epc_mem_exit(data);
}

static int sim_epc_parse_dma_param(struct device *dev)
{
	if (sysfs_streq(dma, "slave"))
		return SIM_DMA_MODE_SLAVE;
	if (sysfs_streq(dma, "memcpy"))
		return SIM_DMA_MODE_MEMCPY;
	if (sysfs_streq(dma, "none"))
		return SIM_DMA_MODE_NONE;
	dev_err(dev, "dma=%s: expected slave, memcpy or none\n", dma);
	return -EINVAL;
}

static int sim_epc_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct sim_epc *sim;
	struct pci_epc *epc;
	u32 magic, version;
	int ret, mode;

	mode = sim_epc_parse_dma_param(dev);
	if (mode < 0)
		return mode;

	sim = devm_kzalloc(dev, sizeof(*sim), GFP_KERNEL);
	if (!sim)
		return -ENOMEM;
	sim->pdev = pdev;
	spin_lock_init(&sim->reg_lock);
	pci_set_drvdata(pdev, sim);

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	sim->regs = pcim_iomap_region(pdev, SIM_EPC_BAR_REGS, DRV_NAME);
	if (IS_ERR(sim->regs))
		return dev_err_probe(dev, PTR_ERR(sim->regs), "cannot map BAR0\n");
	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64));
	if (ret)
		return dev_err_probe(dev, ret, "no 64-bit DMA\n");
	pci_set_master(pdev);

	magic = sim_rd(sim, SIM_MAGIC);
	version = sim_rd(sim, SIM_VERSION);
	if (magic != SIM_MAGIC_VALUE)
		return dev_err_probe(dev, -ENODEV, "bad magic %#x\n", magic);
	if (version != 1)
		return dev_err_probe(dev, -ENODEV, "unsupported version %u\n",
				     version);

	sim->caps = sim_rd(sim, SIM_CAPS);
	sim->num_windows = min(sim_rd(sim, SIM_NUM_WINDOWS), SIM_MAX_WINDOWS);
	sim->win_align = sim_rd(sim, SIM_WINDOW_ALIGN);
	sim->ap_size = sim_rd(sim, SIM_APERTURE_SIZE_LO) |
		       (u64)sim_rd(sim, SIM_APERTURE_SIZE_HI) << 32;
	sim->ap_base = pci_resource_start(pdev, SIM_EPC_BAR_APERTURE);
	if (!sim->num_windows || !is_power_of_2(sim->win_align) ||
	    sim->win_align < SZ_4K)
		return dev_err_probe(dev, -ENODEV,
				     "unusable windows (%u, align %u)\n",
				     sim->num_windows, sim->win_align);
	if (!sim->ap_base || !sim->ap_size ||
	    sim->ap_size > pci_resource_len(pdev, SIM_EPC_BAR_APERTURE))
		return dev_err_probe(dev, -ENODEV,
				     "aperture of %llu bytes does not fit BAR2 (%pR)\n",
				     sim->ap_size,
				     &pdev->resource[SIM_EPC_BAR_APERTURE]);

	sim->dma_mode = mode;
	if (!(sim->caps & SIM_CAP_DMA))
		sim->dma_mode = SIM_DMA_MODE_NONE;
	sim->num_dma = min(sim_rd(sim, SIM_NUM_DMA), SIM_MAX_DMA);
	if (sim->dma_mode == SIM_DMA_MODE_SLAVE && sim->num_dma < 2)
		sim->dma_mode = SIM_DMA_MODE_NONE;
	if (sim->dma_mode == SIM_DMA_MODE_NONE)
		sim->num_dma = 0;

	sim_epc_reset(sim);
	ret = sim_wr_checked(sim, SIM_APERTURE_BASE_LO,
			     lower_32_bits(sim->ap_base), "aperture base");
	if (!ret)
		ret = sim_wr_checked(sim, SIM_APERTURE_BASE_HI,
				     upper_32_bits(sim->ap_base), "aperture base");
	if (ret)
		return dev_err_probe(dev, ret, "aperture base refused\n");

	ret = pci_alloc_irq_vectors(pdev, SIM_NUM_VECTORS, SIM_NUM_VECTORS,
				    PCI_IRQ_MSIX);
	if (ret < 0)
		return dev_err_probe(dev, ret, "cannot get %d MSI-X vectors\n",
				     SIM_NUM_VECTORS);

	sim->features.linkup_notifier = true;
	sim->features.msi_capable = !!(sim->caps & SIM_CAP_MSI);
	sim->features.msix_capable = !!(sim->caps & SIM_CAP_MSIX);
	/* every BAR is BAR_PROGRAMMABLE (0) and may be 32- or 64-bit */
	sim->features.align = sim->win_align;

	epc = devm_pci_epc_create(dev, &sim_epc_ops);
	if (IS_ERR(epc))
		return dev_err_probe(dev, PTR_ERR(epc), "cannot create EPC\n");
	epc->max_functions = 1;
	epc_set_drvdata(epc, sim);
	sim->epc = epc;

	ret = pci_epc_mem_init(epc, sim->ap_base, sim->ap_size, sim->win_align);
	if (ret)
		return dev_err_probe(dev, ret, "cannot manage the aperture\n");
	ret = devm_add_action_or_reset(dev, sim_epc_mem_exit, epc);
	if (ret)
		return ret;

	ret = devm_request_threaded_irq(dev, pci_irq_vector(pdev, SIM_VEC_LINK),
					NULL, sim_link_irq, IRQF_ONESHOT,
					DRV_NAME "-link", sim);
	if (!ret)
		ret = devm_request_threaded_irq(dev,
						pci_irq_vector(pdev, SIM_VEC_DMA),
						NULL, sim_dma_irq, IRQF_ONESHOT,
						DRV_NAME "-dma", sim);
	if (!ret)
		ret = devm_request_threaded_irq(dev,
						pci_irq_vector(pdev, SIM_VEC_DOORBELL),
						NULL, sim_doorbell_irq,
						IRQF_ONESHOT, DRV_NAME "-doorbell",
						sim);
	if (ret)
		return dev_err_probe(dev, ret, "cannot request IRQs\n");

	if (sim->dma_mode != SIM_DMA_MODE_NONE) {
		ret = sim_dma_probe(sim);
		if (ret)
			return dev_err_probe(dev, ret, "cannot register DMA\n");
	}

	sim->event_mask = SIM_EV_LINK_ALL;
	if (sim->num_dma)
		sim->event_mask |= GENMASK(8 + sim->num_dma - 1, 8);
	ret = sim_wr_checked(sim, SIM_EVENT_MASK, sim->event_mask, "event mask");
	if (ret)
		return dev_err_probe(dev, ret, "event mask refused\n");

	/* EPFs bound from now on get epc_init right away. */
	pci_epc_init_notify(epc);

	dev_info(dev,
		 "simulated EPC: aperture %#llx+%#llx, %u windows, DMA %s (%u channels), caps %#x\n",
		 (u64)sim->ap_base, sim->ap_size, sim->num_windows,
		 sim->dma_mode == SIM_DMA_MODE_SLAVE ? "slave" :
		 sim->dma_mode == SIM_DMA_MODE_MEMCPY ? "memcpy" : "none",
		 sim->num_dma, sim->caps);
	return 0;
}

static void sim_epc_remove(struct pci_dev *pdev)
{
	struct sim_epc *sim = pci_get_drvdata(pdev);

	/*
	 * Stop the function first (BARs can change only while stopped) and
	 * silence link events; tell bound EPFs the link is gone, then let them
	 * clear their BARs and give back their DMA channels (DMA completions
	 * stay enabled for that). The rest (DMA device, aperture, EPC, IRQs,
	 * vectors, BAR0 mapping) is unwound by devres.
	 */
	sim_epc_stop(sim->epc);
	sim_wr(sim, SIM_EVENT_MASK, sim->event_mask & ~SIM_EV_LINK_ALL);
	synchronize_irq(pci_irq_vector(pdev, SIM_VEC_LINK));
	if (sim->link_up) {
		sim->link_up = false;
		pci_epc_linkdown(sim->epc);
	}
	pci_epc_deinit_notify(sim->epc);
	sim_wr(sim, SIM_EVENT_MASK, 0);
	synchronize_irq(pci_irq_vector(pdev, SIM_VEC_DMA));
}

static const struct pci_device_id sim_epc_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_REDHAT_QUMRANET, PCI_DEVICE_ID_SIM_EPC) },
	{ }
};
MODULE_DEVICE_TABLE(pci, sim_epc_ids);

static struct pci_driver sim_epc_driver = {
	.name		= DRV_NAME,
	.id_table	= sim_epc_ids,
	.probe		= sim_epc_probe,
	.remove		= sim_epc_remove,
};
module_pci_driver(sim_epc_driver);

MODULE_DESCRIPTION("PCI endpoint controller driver for the virtio-epf simulated controller");
MODULE_LICENSE("GPL");
