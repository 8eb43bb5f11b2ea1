/* select: pick the kernel table for this CPU, once.
 *
 * The tables themselves are const; the chosen pointer is the only state, kept
 * in an atomic so that a racing first call from two threads is harmless. The
 * ST_KERNELS environment variable ("ref", "avx2", "avx512", "neon",
 * "neon-dotprod") overrides the probe, which is how the reference path is run
 * on a machine with SIMD.
 *
 * x86-64 asks cpuid (through libgcc's __builtin_cpu_supports, which also checks
 * that the OS saves the vector registers). aarch64 asks the kernel: the
 * AT_HWCAP bits of the auxiliary vector say what the CPU implements and the
 * kernel allows (ASIMD on every Linux aarch64 core; ASIMDDP, the dot-product
 * extension, on Cortex-A76 and later, not on the Pi 4's A72). qemu-user
 * fills them in from the CPU it emulates (QEMU_CPU).
 */
#include "st_kernels.h"
#include "st_log.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(ST_HAVE_AVX2)
static bool s_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

#if defined(ST_HAVE_AVX512)
static bool s_cpu_has_avx512(void) {
    __builtin_cpu_init(); /* libgcc's probe also checks that the OS saves the zmm state (XCR0) */
    return s_cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
}
#endif

#if defined(ST_HAVE_NEON) || defined(ST_HAVE_NEON_DOTPROD)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1ul << 1) /* linux/arch/arm64/include/uapi/asm/hwcap.h */
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1ul << 20)
#endif
static bool s_cpu_has_neon(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0; }
static bool s_cpu_has_neon_dotprod(void) { return s_cpu_has_neon() && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#endif

const st_kernels_t *st_kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "ref")) return &st_kernels_ref;
#if defined(ST_HAVE_AVX2)
    if (!strcmp(name, "avx2")) return s_cpu_has_avx2() ? &st_kernels_avx2 : NULL;
#endif
#if defined(ST_HAVE_AVX512)
    if (!strcmp(name, "avx512")) return s_cpu_has_avx512() ? &st_kernels_avx512 : NULL;
#endif
#if defined(ST_HAVE_NEON)
    if (!strcmp(name, "neon")) return s_cpu_has_neon() ? &st_kernels_neon : NULL;
#endif
#if defined(ST_HAVE_NEON_DOTPROD)
    if (!strcmp(name, "neon-dotprod")) return s_cpu_has_neon_dotprod() ? &st_kernels_neon_dotprod : NULL;
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
    const char *const order[] = {"avx512", "avx2", "neon-dotprod", "neon"}; /* best first */
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const st_kernels_t *k = st_kernels_by_name(order[i]);
        if (k) return k;
    }
    return &st_kernels_ref;
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
