// SPDX-License-Identifier: GPL-2.0
/*
 * The one module_init()/module_exit() of pci-ep-core.ko: initialises the
 * endpoint core parts in the order their initcalls run in a kernel built with
 * CONFIG_PCI_ENDPOINT (EPC class, EPF bus, then configfs) and tears them down
 * in reverse. See ep-core-glue.h.
 */
#include "ep-core-glue.h"

static int __init ep_core_init(void)
{
	int ret;

	ret = ep_core_init_epc();
	if (ret)
		return ret;
	ret = ep_core_init_epf();
	if (ret)
		goto err_epc;
	ret = ep_core_init_cfs();
	if (ret)
		goto err_epf;
	return 0;

err_epf:
	ep_core_exit_epf();
err_epc:
	ep_core_exit_epc();
	return ret;
}
module_init(ep_core_init);

static void __exit ep_core_exit(void)
{
	ep_core_exit_cfs();
	ep_core_exit_epf();
	ep_core_exit_epc();
}
module_exit(ep_core_exit);

MODULE_DESCRIPTION("PCI endpoint core (EPC, EPF, configfs) of Linux 6.12 as one module");
MODULE_LICENSE("GPL");
