/*
 * The SIGBUS guard (busguard.h).
 *
 * The handler reads only this thread's armed windows (thread-locals set
 * by rfs_busguard_arm in the same thread, so a fault always sees them
 * complete) and the saved previous action (written once, before our
 * handler is installed).  It calls only async-signal-safe functions:
 * mmap, sigaction, raise.
 */
#include "busguard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u /* install refuses other page sizes */

static __thread const struct rfs_busguard_win *tl_wins;
static __thread unsigned tl_nwins;
static __thread volatile sig_atomic_t tl_hit;
static __thread void *tl_addr;

static struct sigaction old_action;
static atomic_int installed;
static int install_ret = -1;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

/* Not a fault of ours: what would have happened without us. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	if (old_action.sa_handler == SIG_DFL || old_action.sa_handler == SIG_IGN) {
		/* a fault cannot be ignored: die of it as we would have */
		struct sigaction dfl;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		sigaction(sig, &dfl, NULL);
		raise(sig);
		return;
	}
	if (old_action.sa_flags & SA_SIGINFO)
		old_action.sa_sigaction(sig, si, uc);
	else
		old_action.sa_handler(sig);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	unsigned k;

	for (k = 0; k < tl_nwins && tl_wins; k++) {
		uintptr_t lo = (uintptr_t)tl_wins[k].map;

		if (tl_wins[k].map && a >= lo && a < lo + tl_wins[k].maplen) {
			void *p = mmap((void *)(a & ~(uintptr_t)(PAGE - 1)), PAGE, PROT_READ,
				       MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p != MAP_FAILED) {
				tl_hit = 1;
				tl_addr = si->si_addr;
				return; /* the access is retried and reads zeros */
			}
		}
	}
	chain(sig, si, uc);
}

static void install(void)
{
	struct sigaction sa;

	if (sysconf(_SC_PAGESIZE) != PAGE)
		return; /* the handler assumes 4 KiB pages; readers use pread elsewhere */
	/* the previous action is saved before ours can run */
	if (sigaction(SIGBUS, NULL, &old_action))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL))
		return;
	install_ret = 0;
	atomic_store(&installed, 1);
}

int rfs_busguard_install(void)
{
	pthread_once(&install_once, install);
	return install_ret;
}

int rfs_busguard_ready(void)
{
	return atomic_load(&installed);
}

void rfs_busguard_arm(const struct rfs_busguard_win *w, unsigned n)
{
	tl_hit = 0;
	tl_addr = NULL;
	tl_wins = w;
	tl_nwins = n;
}

int rfs_busguard_disarm(void **addr)
{
	tl_wins = NULL;
	tl_nwins = 0;
	if (tl_hit && addr)
		*addr = tl_addr;
	return tl_hit ? 1 : 0;
}
