// SPDX-License-Identifier: GPL-2.0
/*
 * epf-user-test: drives /dev/epf-user-<name> from the EP VM for the rig
 * test (kernel/epf-user/rig-test.sh). Reads one command per line on stdin
 * and answers each with one line on stdout: "ok ..." or "err <what>", so a
 * shell script can keep the device open across steps (closing it tears the
 * function down). Commands (numbers in C notation):
 *
 *   open PATH | close | open2 PATH (a second open must fail with EBUSY)
 *   features | header VID DID | bar N SIZE [64] | irqs MSI MSIX BAR OFF
 *   start | stop | raise intx|msi|msix N | irqstate
 *   mmapbar N | barr N OFF | barw N OFF VAL | barfill N OFF LEN SEED
 *   barcheck N OFF LEN SEED | munmapbar N
 *   map PCI SIZE (and mmap it) | unmap ID | winfill ID OFF LEN SEED
 *   wincheck ID OFF LEN SEED (OFF from the mapped host address)
 *   dma to|from PCI LEN SEED (to: sends the pattern; from: checks it)
 *   event MS [TYPE] (waits up to MS for an event, of TYPE if given)
 *   hostile (invalid arguments, each must fail as expected)
 *
 * The pattern of SEED at byte i is (SEED + 13 * i + (i >> 10)) & 0xff, the
 * same as epf-user-buf's.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pci-epf-user.h"

static int fd = -1;
static struct epf_user_bar bars[EPF_USER_NUM_BARS];
static uint8_t *barmap[EPF_USER_NUM_BARS];
struct win {
	struct epf_user_window w;
	uint8_t *map;
};

static struct win wins[32];

static uint8_t pat(unsigned int seed, uint64_t i)
{
	return (seed + 13 * i + (i >> 10)) & 0xff;
}

static unsigned long long num(const char *s)
{
	return s ? strtoull(s, NULL, 0) : 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("err ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	return -1;
}

static int syserr(const char *what)
{
	return fail("%s: %s", what, strerror(errno));
}

/* MMIO-safe accesses to mapped BARs and windows: never merged or elided */
static uint8_t rd8(uint8_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void wr8(uint8_t *p, uint8_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static uint32_t rd32(uint8_t *p)
{
	return __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
}

static void wr32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

static int do_features(void)
{
	struct epf_user_features f;
	int i;

	if (ioctl(fd, EPF_USER_GET_FEATURES, &f))
		return syserr("GET_FEATURES");
	printf("ok abi=%u flags=%#x align=%llu window_size=%llu ", f.abi_version,
	       f.flags, (unsigned long long)f.align,
	       (unsigned long long)f.window_size);
	printf("window_page=%u msi=%u msix=%u bars=",
	       f.window_page, f.max_msi, f.max_msix);
	for (i = 0; i < EPF_USER_NUM_BARS; i++)
		printf("%u", f.bar_type[i]);
	printf("\n");
	return 0;
}

static int do_mmapbar(int n)
{
	void *p;

	if (n < 0 || n >= EPF_USER_NUM_BARS || !bars[n].mmap_size)
		return fail("no BAR %d", n);
	p = mmap(NULL, bars[n].mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, EPF_USER_BAR_OFFSET(n));
	if (p == MAP_FAILED)
		return syserr("mmap");
	barmap[n] = p;
	printf("ok %llu bytes\n", (unsigned long long)bars[n].mmap_size);
	return 0;
}

static void fill(uint8_t *p, uint64_t len, unsigned int seed)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		wr8(p + i, pat(seed, i));
}

static long check(uint8_t *p, uint64_t len, unsigned int seed)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		if (rd8(p + i) != pat(seed, i))
			return i;
	return -1;
}

static int do_dma(char **a)
{
	struct epf_user_dma d = { 0 };
	uint64_t len = num(a[3]);
	unsigned int seed = num(a[4]);
	double t;
	uint8_t *buf;
	long bad;

	buf = malloc(len ? len : 1);
	if (!buf)
		return fail("malloc");
	d.user = (uintptr_t)buf;
	d.pci_addr = num(a[2]);
	d.len = len;
	if (!strcmp(a[1], "to")) {
		d.flags = EPF_USER_DMA_TO_HOST;
		fill(buf, len, seed);
	} else {
		d.flags = EPF_USER_DMA_FROM_HOST;
		memset(buf, 0, len);
	}
	t = now_ms();
	if (ioctl(fd, EPF_USER_DMA, &d)) {
		free(buf);
		return syserr("DMA");
	}
	t = now_ms() - t;
	bad = d.flags & EPF_USER_DMA_FROM_HOST ? check(buf, len, seed) : -1;
	free(buf);
	if (bad >= 0)
		return fail("byte %ld differs", bad);
	printf("ok used_dma=%d %.1f ms\n", !!(d.flags & EPF_USER_DMA_USED_DMA), t);
	return 0;
}

static int do_map(char **a)
{
	struct epf_user_window w = { 0 };
	void *p;

	w.pci_addr = num(a[1]);
	w.size = num(a[2]);
	if (ioctl(fd, EPF_USER_MAP_WINDOW, &w))
		return syserr("MAP_WINDOW");
	if (w.id >= 32)
		return fail("id %u", w.id);
	p = mmap(NULL, w.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 w.mmap_offset);
	if (p == MAP_FAILED)
		return syserr("mmap");
	wins[w.id].w = w;
	wins[w.id].map = p;
	printf("ok id=%u size=%llu offset_in_map=%u mmap_size=%llu\n", w.id,
	       (unsigned long long)w.size, w.offset_in_map,
	       (unsigned long long)w.mmap_size);
	return 0;
}

static int do_unmap(unsigned int id)
{
	struct epf_user_window w = { .id = id };

	if (id < 32 && wins[id].map) {
		/* while mapped, UNMAP must refuse */
		if (!ioctl(fd, EPF_USER_UNMAP_WINDOW, &w) || errno != EBUSY)
			return fail("UNMAP_WINDOW of a mapped window did not fail with EBUSY");
		munmap((void *)wins[id].map, wins[id].w.mmap_size);
		wins[id].map = NULL;
	}
	if (ioctl(fd, EPF_USER_UNMAP_WINDOW, &w))
		return syserr("UNMAP_WINDOW");
	printf("ok\n");
	return 0;
}

static uint8_t *winptr(char **a, uint64_t *len)
{
	unsigned int id = num(a[1]);
	uint64_t off = num(a[2]);

	*len = num(a[3]);
	if (id >= 32 || !wins[id].map ||
	    wins[id].w.offset_in_map + off + *len > wins[id].w.mmap_size)
		return NULL;
	return wins[id].map + wins[id].w.offset_in_map + off;
}

static int do_event(char **a)
{
	int ms = num(a[1]), want = a[2] ? (int)num(a[2]) : 0;
	double end = now_ms() + ms;
	struct epf_user_event ev;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (;;) {
		int left = end - now_ms();

		if (left < 0 || poll(&p, 1, left) <= 0)
			return fail("no event%s within %d ms", want ? " of that type" : "", ms);
		if (read(fd, &ev, sizeof(ev)) != sizeof(ev))
			return syserr("read");
		if (!want || (int)ev.type == want)
			break;
	}
	printf("ok type=%u dropped=%u\n", ev.type, ev.dropped);
	return 0;
}

/* ---- hostile arguments: each must fail with the given errno */
static int hostile_fails;

static void expect(const char *what, int ret, int want)
{
	if (ret == -1 && errno == want)
		return;
	if (!hostile_fails++)
		printf("err ");
	printf("[%s: got %d/%s, want %s] ", what, ret,
	       ret ? strerror(errno) : "-", strerror(want));
}

static int do_hostile(void)
{
	struct epf_user_bar b;
	struct epf_user_header h = { 0 };
	struct epf_user_irqs q;
	struct epf_user_irq irq;
	struct epf_user_window w;
	struct epf_user_dma d;
	struct epf_user_doorbell db = { 0 };
	void *p;

	hostile_fails = 0;
	b = (struct epf_user_bar){ .bar = 6, .size = 4096 };
	expect("BAR 6", ioctl(fd, EPF_USER_SET_BAR, &b), EINVAL);
	b = (struct epf_user_bar){ .bar = 0, .flags = 1, .size = 4096 };
	expect("I/O BAR flag", ioctl(fd, EPF_USER_SET_BAR, &b), EINVAL);
	b = (struct epf_user_bar){ .bar = 3, .size = 4096 };
	expect("SET_BAR while started", ioctl(fd, EPF_USER_SET_BAR, &b), EBUSY);
	h.pad[1] = 1;
	expect("header padding", ioctl(fd, EPF_USER_SET_HEADER, &h), EINVAL);
	h.pad[1] = 0;
	h.interrupt_pin = 5;
	expect("interrupt pin 5", ioctl(fd, EPF_USER_SET_HEADER, &h), EINVAL);
	q = (struct epf_user_irqs){ .msi_vectors = 3 };
	expect("3 MSI vectors", ioctl(fd, EPF_USER_SET_IRQS, &q), EINVAL);
	q = (struct epf_user_irqs){ .msix_vectors = 4096 };
	expect("4096 MSI-X vectors", ioctl(fd, EPF_USER_SET_IRQS, &q), EINVAL);
	q = (struct epf_user_irqs){ .msix_vectors = 4, .msix_bar = 5 };
	expect("MSI-X in an unset BAR", ioctl(fd, EPF_USER_SET_IRQS, &q), EINVAL);
	q = (struct epf_user_irqs){ .msix_vectors = 4, .msix_bar = 0, .msix_offset = 0xfff0 };
	expect("MSI-X table beyond its BAR", ioctl(fd, EPF_USER_SET_IRQS, &q), EINVAL);
	irq = (struct epf_user_irq){ .type = 9, .number = 1 };
	expect("IRQ type 9", ioctl(fd, EPF_USER_RAISE_IRQ, &irq), EINVAL);
	irq = (struct epf_user_irq){ .type = EPF_USER_IRQ_MSI, .number = 0 };
	expect("MSI number 0", ioctl(fd, EPF_USER_RAISE_IRQ, &irq), EINVAL);
	w = (struct epf_user_window){ .pci_addr = 0x1000, .size = 0 };
	expect("window size 0", ioctl(fd, EPF_USER_MAP_WINDOW, &w), EINVAL);
	w = (struct epf_user_window){ .pci_addr = ~0ULL - 10, .size = 4096 };
	expect("window wrapping", ioctl(fd, EPF_USER_MAP_WINDOW, &w), EINVAL);
	w = (struct epf_user_window){ .id = 99 };
	expect("unmap window 99", ioctl(fd, EPF_USER_UNMAP_WINDOW, &w), EINVAL);
	w = (struct epf_user_window){ .id = 31 };
	expect("unmap unused window", ioctl(fd, EPF_USER_UNMAP_WINDOW, &w), EINVAL);
	d = (struct epf_user_dma){ .user = 0x10000, .pci_addr = 0x1000, .len = 0,
				   .flags = EPF_USER_DMA_TO_HOST };
	expect("DMA of 0 bytes", ioctl(fd, EPF_USER_DMA, &d), EINVAL);
	d.len = (16 << 20) + 1;
	expect("DMA over 16 MiB", ioctl(fd, EPF_USER_DMA, &d), EINVAL);
	d.len = 16;
	d.flags = 3;
	expect("DMA both ways", ioctl(fd, EPF_USER_DMA, &d), EINVAL);
	d.flags = EPF_USER_DMA_TO_HOST;
	d.user = 0;
	expect("DMA from NULL", ioctl(fd, EPF_USER_DMA, &d), EFAULT);
	d.user = 0xffff888000000000ULL;
	expect("DMA from kernel memory", ioctl(fd, EPF_USER_DMA, &d), EFAULT);
	d.flags = EPF_USER_DMA_FROM_HOST;
	expect("DMA into kernel memory", ioctl(fd, EPF_USER_DMA, &d), EFAULT);
	expect("doorbells", ioctl(fd, EPF_USER_SET_DOORBELL, &db), EOPNOTSUPP);
	expect("unknown ioctl", ioctl(fd, _IO(EPF_USER_MAGIC, 99)), ENOTTY);
	expect("bad argument pointer", ioctl(fd, EPF_USER_SET_BAR, (void *)8), EFAULT);

	p = mmap(NULL, 1 << 20, PROT_READ, MAP_SHARED, fd, EPF_USER_BAR_OFFSET(0));
	expect("mmap beyond BAR 0", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, EPF_USER_BAR_OFFSET(5));
	expect("mmap of an unset BAR", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, EPF_USER_BAR_OFFSET(0));
	expect("private mmap", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, EPF_USER_WINDOW_OFFSET +
		 (30ULL << 32));
	expect("mmap of an unused window", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, EPF_USER_BAR_OFFSET(7));
	expect("mmap between BARs and windows", p == MAP_FAILED ? -1 : 0, EINVAL);
	if (hostile_fails)
		printf("\n");
	else
		printf("ok all refused\n");
	return 0;
}

static int run_line(char *line)
{
	char *a[8] = { 0 };
	int n = 0;
	char *tok = strtok(line, " \t\n");

	while (tok && n < 7) {
		a[n++] = tok;
		tok = strtok(NULL, " \t\n");
	}
	if (!n)
		return fail("empty command");
	if (!strcmp(a[0], "open")) {
		if (fd >= 0)
			return fail("already open");
		fd = open(a[1], O_RDWR);
		if (fd < 0)
			return syserr("open");
		printf("ok\n");
	} else if (!strcmp(a[0], "open2")) {
		int fd2 = open(a[1], O_RDWR);

		if (fd2 >= 0) {
			close(fd2);
			return fail("a second open succeeded");
		}
		if (errno != EBUSY)
			return syserr("second open");
		printf("ok EBUSY\n");
	} else if (fd < 0) {
		return fail("not open");
	} else if (!strcmp(a[0], "close")) {
		int i;

		for (i = 0; i < EPF_USER_NUM_BARS; i++)
			if (barmap[i])
				munmap((void *)barmap[i], bars[i].mmap_size);
		for (i = 0; i < 32; i++)
			if (wins[i].map)
				munmap((void *)wins[i].map, wins[i].w.mmap_size);
		memset(barmap, 0, sizeof(barmap));
		memset(bars, 0, sizeof(bars));
		memset(wins, 0, sizeof(wins));
		close(fd);
		fd = -1;
		printf("ok\n");
	} else if (!strcmp(a[0], "features")) {
		do_features();
	} else if (!strcmp(a[0], "header")) {
		struct epf_user_header h = { 0 };

		h.vendor_id = num(a[1]);
		h.device_id = num(a[2]);
		h.baseclass_code = 0xff;
		h.interrupt_pin = 1;
		if (ioctl(fd, EPF_USER_SET_HEADER, &h))
			return syserr("SET_HEADER");
		printf("ok\n");
	} else if (!strcmp(a[0], "bar")) {
		struct epf_user_bar b = { 0 };

		b.bar = num(a[1]);
		b.size = num(a[2]);
		if (a[3] && !strcmp(a[3], "64"))
			b.flags = EPF_USER_BAR_64BIT;
		if (ioctl(fd, EPF_USER_SET_BAR, &b))
			return syserr("SET_BAR");
		if (b.bar < EPF_USER_NUM_BARS)
			bars[b.bar] = b;
		printf("ok size=%llu mmap_size=%llu\n", (unsigned long long)b.size,
		       (unsigned long long)b.mmap_size);
	} else if (!strcmp(a[0], "irqs")) {
		struct epf_user_irqs q = { num(a[1]), num(a[2]), num(a[3]), num(a[4]) };

		if (ioctl(fd, EPF_USER_SET_IRQS, &q))
			return syserr("SET_IRQS");
		printf("ok\n");
	} else if (!strcmp(a[0], "start") || !strcmp(a[0], "stop")) {
		if (ioctl(fd, a[0][2] == 'a' ? EPF_USER_START : EPF_USER_STOP))
			return syserr(a[0]);
		printf("ok\n");
	} else if (!strcmp(a[0], "raise")) {
		struct epf_user_irq q = { 0 };

		q.type = !strcmp(a[1], "intx") ? EPF_USER_IRQ_INTX :
			 !strcmp(a[1], "msi") ? EPF_USER_IRQ_MSI : EPF_USER_IRQ_MSIX;
		q.number = num(a[2]);
		if (ioctl(fd, EPF_USER_RAISE_IRQ, &q))
			return syserr("RAISE_IRQ");
		printf("ok\n");
	} else if (!strcmp(a[0], "irqstate")) {
		struct epf_user_irq_state s;

		if (ioctl(fd, EPF_USER_GET_IRQ_STATE, &s))
			return syserr("GET_IRQ_STATE");
		printf("ok msi=%d msix=%d\n", s.msi, s.msix);
	} else if (!strcmp(a[0], "mmapbar")) {
		do_mmapbar(num(a[1]));
	} else if (!strcmp(a[0], "munmapbar")) {
		int b = num(a[1]);

		if (b >= EPF_USER_NUM_BARS || !barmap[b])
			return fail("BAR %d not mapped", b);
		munmap((void *)barmap[b], bars[b].mmap_size);
		barmap[b] = NULL;
		printf("ok\n");
	} else if (!strncmp(a[0], "bar", 3)) {
		int b = num(a[1]);
		uint64_t off = num(a[2]), len = num(a[3]);

		if (b >= EPF_USER_NUM_BARS || !barmap[b])
			return fail("BAR %d not mapped", b);
		if (!strcmp(a[0], "barr")) {
			printf("ok %#x\n", rd32(barmap[b] + off));
			return 0;
		}
		if (!strcmp(a[0], "barw")) {
			wr32(barmap[b] + off, len);
			printf("ok\n");
			return 0;
		}
		if (off + len > bars[b].mmap_size)
			return fail("beyond the BAR");
		if (!strcmp(a[0], "barfill")) {
			fill(barmap[b] + off, len, num(a[4]));
		} else {
			long bad = check(barmap[b] + off, len, num(a[4]));

			if (bad >= 0)
				return fail("byte %ld differs", bad);
		}
		printf("ok\n");
	} else if (!strcmp(a[0], "map")) {
		do_map(a);
	} else if (!strcmp(a[0], "unmap")) {
		do_unmap(num(a[1]));
	} else if (!strcmp(a[0], "winfill") || !strcmp(a[0], "wincheck")) {
		uint64_t len;
		uint8_t *p = winptr(a, &len);
		long bad;

		if (!p)
			return fail("not inside a mapped window");
		if (a[0][3] == 'f') {
			fill(p, len, num(a[4]));
			printf("ok\n");
			return 0;
		}
		bad = check(p, len, num(a[4]));
		if (bad >= 0)
			return fail("byte %ld differs", bad);
		printf("ok\n");
	} else if (!strcmp(a[0], "dma")) {
		do_dma(a);
	} else if (!strcmp(a[0], "event")) {
		do_event(a);
	} else if (!strcmp(a[0], "hostile")) {
		do_hostile();
	} else {
		return fail("unknown command %s", a[0]);
	}
	return 0;
}

int main(void)
{
	char line[512];

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin))
		run_line(line);
	return 0;
}
