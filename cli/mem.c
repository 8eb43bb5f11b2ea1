/* mem: what the programs with `--mem SIZE` (st-run, st-coordinator, st-bench)
 * print about the memory-budgeted expert cache: why a budget is refused, and
 * the cache's statistics line. model/expert_cache computes the figures and
 * prints nothing. */
#include <stdio.h>

#include "cli.h"
#include "st_log.h"

st_expert_cache_t *st_cli_mem_install(const char *prog, st_ctx_t *c, uint64_t mem_total) {
    st_expert_cache_budget_t b;
    st_expert_cache_t *ec = NULL;
    const int rc = st_expert_cache_install(c, mem_total, &b, &ec);
    if (rc == ST_EUNSUP)
        fprintf(stderr, "%s: --mem needs a model whose experts are read from its GGUF file as stored\n", prog);
    else if (rc == ST_ERANGE)
        fprintf(stderr,
                "%s: --mem %.0f MiB is too small for this model: dense weights, KV cache and the process need "
                "about %.0f MiB, and the expert cache at least %d experts of %.2f MiB: use --mem %.0fM or more\n",
                prog, mem_total / 1048576.0, b.reserve / 1048576.0, b.min_slots, b.slot_bytes / 1048576.0,
                b.min_total / 1048576.0 + 1);
    else if (rc < 0)
        fprintf(stderr, "%s: cannot set up the memory-budgeted expert cache (see the log above)\n", prog);
    return ec;
}

void st_cli_mem_print_stats(st_expert_cache_t *ec, FILE *f) {
    st_expert_cache_stats_t s;
    st_expert_cache_stats(ec, &s);
    fprintf(f,
            "expert cache: %d slots (%.1f MiB of a %.1f MiB budget, %s); hit rate %.1f%% (%llu of %llu); "
            "%.1f MiB read per token (%llu tokens); reads %.1f MiB at %.0f MB/s while busy, waited %.2f s\n",
            s.n_slots, s.resident_bytes / 1048576.0, s.cache_bytes / 1048576.0, s.direct ? "O_DIRECT" : "buffered",
            s.lookups ? 100.0 * s.hits / s.lookups : 0.0, (unsigned long long)s.hits, (unsigned long long)s.lookups,
            s.tokens ? s.bytes_read / 1048576.0 / s.tokens : 0.0, (unsigned long long)s.tokens,
            s.bytes_read / 1048576.0, s.read_busy_s > 0 ? s.bytes_read / s.read_busy_s / 1e6 : 0.0, s.wait_s);
}
