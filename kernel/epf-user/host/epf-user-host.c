// SPDX-License-Identifier: GPL-2.0
/*
 * epf-user-host: a minimal host-side driver for the pci-epf-user rig test.
 * Bound through driver_override to whatever function the EP programmed, it
 * enables the device as a bus master and requests `nvec` MSI or MSI-X
 * vectors ("epf-user-host-<n>" in /proc/interrupts, which counts them).
 */
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/pci.h>

static char *irq_type = "msix";
module_param(irq_type, charp, 0444);
MODULE_PARM_DESC(irq_type, "msi or msix");
static unsigned int nvec = 1;
module_param(nvec, uint, 0444);
MODULE_PARM_DESC(nvec, "vectors to request");

static irqreturn_t epf_user_host_irq(int irq, void *data)
{
	return IRQ_HANDLED;
}

static int epf_user_host_probe(struct pci_dev *pdev,
			       const struct pci_device_id *id)
{
	unsigned int flags = sysfs_streq(irq_type, "msi") ? PCI_IRQ_MSI :
			     PCI_IRQ_MSIX;
	unsigned int i;
	int ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	pci_set_master(pdev);
	ret = pci_alloc_irq_vectors(pdev, nvec, nvec, flags);
	if (ret < 0)
		return dev_err_probe(&pdev->dev, ret, "cannot get %u vectors\n",
				     nvec);
	for (i = 0; i < nvec; i++) {
		const char *name = devm_kasprintf(&pdev->dev, GFP_KERNEL,
						  "epf-user-host-%u", i + 1);

		if (!name)
			return -ENOMEM;
		ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, i),
				       epf_user_host_irq, 0, name, pdev);
		if (ret)
			return ret;
	}
	dev_info(&pdev->dev, "%u %s vectors\n", nvec,
		 flags == PCI_IRQ_MSI ? "MSI" : "MSI-X");
	return 0;
}

static struct pci_driver epf_user_host_driver = {
	.name		= "epf-user-host",
	.id_table	= NULL,	/* bound through driver_override only */
	.probe		= epf_user_host_probe,
};
module_pci_driver(epf_user_host_driver);

MODULE_DESCRIPTION("Host-side interrupt counter for the pci-epf-user rig test");
MODULE_LICENSE("GPL");
