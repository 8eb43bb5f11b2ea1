/* grammar-cost: what a response_format grammar adds to each sampled token.
 *
 *   grammar-cost MODEL.gguf [-n TOKENS] [-r ROUNDS]
 *
 * Samples answers under three schemas from the model's vocabulary with
 * seeded random logits (a model with random weights: the worst case for the
 * first try, since the best tokens are as likely as any to break the
 * format) and prints, per sampler setting, the time per token of the draw
 * with the mask and without it, how often the whole vocabulary had to be
 * walked, and the tokens and bytes tried per token. No model weights are
 * read: only the tokenizer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "sampler.h"
#include "schema.h"
#include "tokenizer.h"
#include "vocab_mask.h"

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: other processes on the cores do not count */
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *const SCHEMAS[][2] = {
    {"person",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},\"age\":{\"type\":"
     "\"integer\",\"minimum\":0,\"maximum\":150},\"email\":{\"type\":\"string\"},\"tags\":{\"type\":\"array\","
     "\"items\":{\"enum\":[\"a\",\"b\",\"c\"]},\"maxItems\":8}},\"required\":[\"name\",\"age\",\"email\",\"tags\"]}"},
    {"numbers",
     "{\"type\":\"array\",\"items\":{\"type\":\"number\",\"minimum\":-100,\"maximum\":100},\"maxItems\":64}"},
    {"json_object", NULL},
};

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: grammar-cost MODEL.gguf [-n TOKENS (default 256)] [-r ROUNDS (default 3)]\n"
               "Time per sampled token with a response_format grammar against without, on random logits.\n");
        return argc < 2 ? 1 : 0;
    }
    int n_tok = 256, rounds = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n"))
            n_tok = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "grammar-cost: unknown option %s\n", argv[i]);
            return 1;
        }
    }
    if (n_tok < 16 || rounds < 1) {
        fprintf(stderr, "grammar-cost: -n must be at least 16 and -r at least 1\n");
        return 1;
    }
    st_gguf_t *g = st_gguf_open(argv[1]);
    st_tokenizer_t *tok = g ? st_tokenizer_from_gguf(g, NULL) : NULL;
    st_gguf_destroy(&g);
    if (!tok) {
        fprintf(stderr, "grammar-cost: %s has no usable vocabulary\n", argv[1]);
        return 1;
    }
    double t0 = s_now();
    st_vocab_t *v = st_vocab_new(tok);
    int V = st_tokenizer_n_vocab(tok);
    printf("vocabulary: %d tokens, sorted in %.1f ms\n", V, (s_now() - t0) * 1e3);
    float *logits = malloc((size_t)V * sizeof *logits), *base = malloc((size_t)V * sizeof *base);
    struct {
        const char *name;
        float temp;
        int top_k;
    } modes[] = {{"greedy", 0.0f, 0}, {"temp 1, top_k 40", 1.0f, 40}, {"temp 1, top_k 0", 1.0f, 0}};
    printf("| schema | sampler | us/token without | us/token with | whole-vocabulary walks | tokens tried/token |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: |\n");
    for (size_t k = 0; k < sizeof SCHEMAS / sizeof SCHEMAS[0]; k++) {
        for (size_t md = 0; md < sizeof modes / sizeof modes[0]; md++) {
            double with = 0, without = 0;
            uint64_t walks = 0, tried = 0, sampled = 0;
            for (int r = 0; r < rounds; r++) {
                st_sampler_params_t sp = st_sampler_default_params();
                sp.temp = modes[md].temp, sp.top_k = modes[md].top_k, sp.seed = (uint64_t)r + 1;
                uint64_t x = 0x12345 + (uint64_t)r;
                /* without: the same draws on unmasked logits */
                st_sampler_t *s = st_sampler_new(&sp, V);
                for (int i = 0; i < n_tok; i++) {
                    for (int j = 0; j < V; j++) x = x * 6364136223846793005ull + 1, base[j] = (float)(x >> 40) / 1e6f;
                    memcpy(logits, base, (size_t)V * sizeof *logits);
                    double a = s_now();
                    st_sampler_sample(s, logits);
                    without += s_now() - a;
                }
                st_sampler_destroy(&s);
                char err[256];
                cJSON *j = SCHEMAS[k][1] ? cJSON_Parse(SCHEMAS[k][1]) : NULL;
                st_grammar_t *gr = j ? st_schema_compile(j, err, sizeof err) : st_schema_any_object();
                cJSON_Delete(j);
                s = st_sampler_new(&sp, V);
                st_gmask_t *m = st_gmask_new(gr, v, n_tok);
                st_sampler_constraint_t con = st_gmask_constraint(m);
                st_sampler_constrain(s, &con);
                x = 0x12345 + (uint64_t)r;
                for (int i = 0; i < n_tok && !st_gmask_finished(m); i++) {
                    for (int jj = 0; jj < V; jj++)
                        x = x * 6364136223846793005ull + 1, base[jj] = (float)(x >> 40) / 1e6f;
                    double a = s_now();
                    int32_t t = st_sampler_sample(s, base);
                    with += s_now() - a;
                    sampled++;
                    if (t < 0 || st_token_is_eog(tok, t)) break;
                }
                st_gmask_stats_t stt = st_gmask_stats(m);
                walks += stt.full_walks, tried += stt.tokens_checked;
                st_gmask_destroy(&m);
                st_sampler_destroy(&s);
                st_grammar_destroy(&gr);
            }
            printf("| %s | %s | %.1f | %.1f | %.1f%% | %.0f |\n", SCHEMAS[k][0], modes[md].name,
                   without / (rounds * n_tok) * 1e6, with / (double)sampled * 1e6,
                   100.0 * (double)walks / (double)sampled, (double)tried / (double)sampled);
        }
    }
    free(logits);
    free(base);
    st_vocab_destroy(&v);
    st_tokenizer_destroy(&tok);
    return 0;
}
