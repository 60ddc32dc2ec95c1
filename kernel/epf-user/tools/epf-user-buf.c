// SPDX-License-Identifier: GPL-2.0
/*
 * epf-user-buf: the host VM's side of the pci-epf-user rig test. Holds a
 * physically contiguous buffer (one 2 MiB huge page, locked) whose bus
 * address (the physical address: the rig's host VM has no DMA translation)
 * the EP side maps through windows and DMA. Commands on stdin, one answer
 * line each ("ok ..." / "err ..."), as epf-user-test:
 *
 *   alloc (prints phys=<address>) | fill OFF LEN SEED | check OFF LEN SEED
 *
 * The pattern is epf-user-test's: (SEED + 13 * i + (i >> 10)) & 0xff.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BUF_SIZE	(2UL << 20)

static uint8_t *buf;

static uint8_t pat(unsigned int seed, uint64_t i)
{
	return (seed + 13 * i + (i >> 10)) & 0xff;
}

static uint64_t phys_of(void *p)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	long ps = sysconf(_SC_PAGESIZE);

	if (fd < 0)
		return 0;
	if (pread(fd, &e, 8, (uintptr_t)p / ps * 8) != 8)
		e = 0;
	close(fd);
	if (!(e & (1ULL << 63)))
		return 0;
	return (e & ((1ULL << 55) - 1)) * ps + (uintptr_t)p % ps;
}

static void run_line(char *line)
{
	char *a[6] = { 0 };
	int n = 0;
	char *tok = strtok(line, " \t\n");
	uint64_t off, len, i;
	unsigned int seed;

	while (tok && n < 5) {
		a[n++] = tok;
		tok = strtok(NULL, " \t\n");
	}
	if (!n) {
		printf("err empty\n");
		return;
	}
	if (!strcmp(a[0], "alloc")) {
		uint64_t p0;

		buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE,
			   -1, 0);
		if (buf == MAP_FAILED) {
			printf("err mmap MAP_HUGETLB: %s\n", strerror(errno));
			return;
		}
		mlock(buf, BUF_SIZE);
		memset(buf, 0, BUF_SIZE);
		p0 = phys_of(buf);
		/* one huge page: contiguous; check the end anyway */
		if (!p0 || phys_of(buf + BUF_SIZE - 1) != p0 + BUF_SIZE - 1) {
			printf("err no physical address (root? contiguous?)\n");
			return;
		}
		printf("ok phys=%#llx size=%lu\n", (unsigned long long)p0, BUF_SIZE);
		return;
	}
	if (!buf) {
		printf("err no buffer\n");
		return;
	}
	off = strtoull(a[1] ? a[1] : "0", NULL, 0);
	len = strtoull(a[2] ? a[2] : "0", NULL, 0);
	seed = strtoul(a[3] ? a[3] : "0", NULL, 0);
	if (off > BUF_SIZE || len > BUF_SIZE - off) {
		printf("err beyond the buffer\n");
		return;
	}
	if (!strcmp(a[0], "fill")) {
		for (i = 0; i < len; i++)
			buf[off + i] = pat(seed, i);
		printf("ok\n");
	} else if (!strcmp(a[0], "check")) {
		for (i = 0; i < len; i++)
			if (buf[off + i] != pat(seed, i)) {
				printf("err byte %llu is %#x, want %#x\n",
				       (unsigned long long)i, buf[off + i], pat(seed, i));
				return;
			}
		printf("ok\n");
	} else {
		printf("err unknown command %s\n", a[0]);
	}
}

int main(void)
{
	char line[256];

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin))
		run_line(line);
	return 0;
}
