/* State of the CPU stand-in for CUDA (see cuda_runtime.h). */
#include "cuda_runtime.h"

int fake_ndev = 1;
static int fake_fail_at;
static int fake_calls;

cudaError_t fake_err(void)
{
	int c = __atomic_add_fetch(&fake_calls, 1, __ATOMIC_RELAXED);

	return fake_fail_at && c == fake_fail_at ? cudaErrorFake : cudaSuccess;
}

__attribute__((constructor)) static void fake_init(void)
{
	const char *nd = getenv("FAKE_NDEV"), *fa = getenv("FAKE_FAIL_AT");

	if (nd)
		fake_ndev = atoi(nd);
	if (fa)
		fake_fail_at = atoi(fa);
}
