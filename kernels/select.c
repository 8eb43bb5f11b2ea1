/* select: pick the kernel table for this CPU, once.
 *
 * The tables themselves are const; the chosen pointer is the only state, kept
 * in an atomic so that a racing first call from two threads is harmless. The
 * ST_KERNELS environment variable ("ref", "avx2") overrides the probe, which is
 * how the reference path is run on a machine with SIMD.
 */
#include "st_kernels.h"
#include "st_log.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(ST_HAVE_AVX2)
static bool s_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
#endif

const st_kernels_t *st_kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "ref")) return &st_kernels_ref;
#if defined(ST_HAVE_AVX2)
    if (!strcmp(name, "avx2")) return s_cpu_has_avx2() ? &st_kernels_avx2 : NULL;
#endif
    return NULL;
}

static const st_kernels_t *s_probe(void) {
    const char *env = getenv("ST_KERNELS");
    if (env && *env) {
        const st_kernels_t *k = st_kernels_by_name(env);
        if (k) return k;
        st_log(ST_LOG_WARN, "ST_KERNELS=%s is not available here; probing the CPU", env);
    }
    const st_kernels_t *best = st_kernels_by_name("avx2");
    return best ? best : &st_kernels_ref;
}

const st_kernels_t *st_kernels_select(void) {
    static _Atomic(const st_kernels_t *) chosen = NULL;
    const st_kernels_t *k = atomic_load_explicit(&chosen, memory_order_acquire);
    if (!k) {
        k = s_probe();
        atomic_store_explicit(&chosen, k, memory_order_release);
        st_log(ST_LOG_DEBUG, "kernels: %s", k->name);
    }
    return k;
}
