/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Glue for pci-ep-core.ko: the unmodified PCI endpoint core of Linux 6.12
 * (pci-epc-core.c, pci-epc-mem.c, pci-epf-core.c, pci-ep-cfs.c) linked into
 * one out-of-tree module.
 *
 * The four files cannot be separate modules (pci-epc-core.c calls into
 * pci-ep-cfs.c and the other way round), and linked together their
 * module_init()/module_exit() would collide. Kbuild force-includes this header
 * into the core objects with EP_CORE_OBJ set to a per-object name, which turns
 * their module_init(fn)/module_exit(fn) into global aliases
 * ep_core_init_<name>()/ep_core_exit_<name>() of fn (in fn's own __init or
 * __exit section), which glue.c calls in order.
 */
#ifndef EP_CORE_GLUE_H
#define EP_CORE_GLUE_H

#include <linux/init.h>
#include <linux/module.h>

int ep_core_init_epc(void);
int ep_core_init_epf(void);
int ep_core_init_cfs(void);
void ep_core_exit_epc(void);
void ep_core_exit_epf(void);
void ep_core_exit_cfs(void);

#ifdef EP_CORE_OBJ
#define EP_CORE_CAT(a, b) a##b
#define EP_CORE_NAME(a, b) EP_CORE_CAT(a, b)

#undef module_init
#undef module_exit
#define module_init(fn) \
	__alias(fn) __cold int EP_CORE_NAME(ep_core_init_, EP_CORE_OBJ)(void)
#define module_exit(fn) \
	__alias(fn) __cold void EP_CORE_NAME(ep_core_exit_, EP_CORE_OBJ)(void)
#endif /* EP_CORE_OBJ */

#endif /* EP_CORE_GLUE_H */
