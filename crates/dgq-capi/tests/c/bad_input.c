/*
 * Bad input through the C ABI: every call must return the documented status and leave a
 * message, never crash; run under valgrind (no invalid access, no definite or indirect leak).
 *
 * Covers NULL for each pointer argument, zero / overflowing / mismatched sizes, misaligned
 * pointers, invalid enum values, non-finite data, truncated, bit-flipped and unknown-version
 * files, missing files, double open and close of one path, the per-thread last error, and the
 * CUDA entry points of a build without CUDA.
 *
 * Usage: bad_input DIR    (DIR: an existing, writable scratch directory)
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dgq.h>

enum { N = 8, K = 16, G = 8, M = 3 };

static int checks = 0, failures = 0;

static void fail(int line, const char *what, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "FAILED line %d: %s: ", line, what);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    failures++;
}

/* Checks a call's status and that the thread's last error holds a message containing
 * `needle` (when not NULL); on success, that the message is empty. */
static void expect_at(int line, const char *what, dgq_status got, dgq_status want,
                      const char *needle) {
    char msg[1024];
    size_t len = dgq_last_error_message(msg, sizeof msg);
    checks++;
    if (got != want) {
        fail(line, what, "status %s, expected %s", dgq_status_name((int32_t)got),
             dgq_status_name((int32_t)want));
        fprintf(stderr, "    message: %s\n", msg);
        return;
    }
    if (want == DGQ_STATUS_OK) {
        if (len != 0) fail(line, what, "success left a message: %s%s", msg, "");
        return;
    }
    if (len == 0 || msg[0] == '\0') {
        fail(line, what, "no error message%s%s", "", "");
    } else if (needle && !strstr(msg, needle)) {
        fail(line, what, "message \"%s\" lacks \"%s\"", msg, needle);
    }
}

#define EXPECT(call, want, needle) expect_at(__LINE__, #call, (call), (want), (needle))
#define TRUE_OR_FAIL(cond)                                                        \
    do {                                                                          \
        checks++;                                                                 \
        if (!(cond)) fail(__LINE__, #cond, "condition is false%s%s", "", "");    \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

static int write_file(const char *path, const unsigned char *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(buf, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* Offset of `needle` in buf, or -1. */
static long find(const unsigned char *buf, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0) return (long)i;
    return -1;
}

/* A thread's failure must not change another thread's message. */
static void *other_thread(void *arg) {
    char msg[256];
    (void)arg;
    dgq_weight_free(NULL);
    if (dgq_model_num_layers(NULL, NULL) != DGQ_STATUS_INVALID_ARGUMENT) return (void *)1;
    dgq_last_error_message(msg, sizeof msg);
    return strstr(msg, "model is NULL") ? NULL : (void *)1;
}

static void test_errors_and_threads(void) {
    char small[8], msg[256];
    size_t full;
    void *thread_result = (void *)1;
    pthread_t th;

    EXPECT(dgq_weight_shape(NULL, NULL, NULL, NULL), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    full = dgq_last_error_message(NULL, 0);
    TRUE_OR_FAIL(full == strlen("w is NULL"));
    TRUE_OR_FAIL(dgq_last_error_message(NULL, 5) == full); /* NULL buffer: length only */
    TRUE_OR_FAIL(dgq_last_error_message(small, sizeof small) == full);
    TRUE_OR_FAIL(strcmp(small, "w is NU") == 0); /* truncated, NUL-terminated */

    TRUE_OR_FAIL(pthread_create(&th, NULL, other_thread, NULL) == 0);
    TRUE_OR_FAIL(pthread_join(th, &thread_result) == 0);
    TRUE_OR_FAIL(thread_result == NULL);
    dgq_last_error_message(msg, sizeof msg);
    TRUE_OR_FAIL(strcmp(msg, "w is NULL") == 0); /* untouched by the other thread */

    TRUE_OR_FAIL(strcmp(dgq_status_name(DGQ_STATUS_FORMAT), "DGQ_STATUS_FORMAT") == 0);
    TRUE_OR_FAIL(strcmp(dgq_status_name(-1), "DGQ_STATUS_UNKNOWN") == 0);
    TRUE_OR_FAIL(strcmp(dgq_status_name(1000), "DGQ_STATUS_UNKNOWN") == 0);
    TRUE_OR_FAIL(dgq_abi_version() == DGQ_ABI_VERSION);
    TRUE_OR_FAIL(dgq_version() != NULL && dgq_version()[0] != '\0');

    /* free(NULL) is a no-op for every handle type. */
    dgq_weight_free(NULL);
    dgq_model_free(NULL);
    dgq_cuda_weight_free(NULL);
}

static void fill(float *w, size_t n, float scale) {
    uint32_t s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = scale * ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f);
    }
}

static dgq_weight *test_quantize(void) {
    float w[N * K], x[M * K], bad[N * K];
    dgq_weight *q = (dgq_weight *)&q; /* non-NULL garbage: must be reset to NULL on failure */
    dgq_quant_config cfg = dgq_quant_config_default(), c2;
    fill(w, N * K, 1.0f);
    fill(x, M * K, 2.0f);
    cfg.group_size = G;

    EXPECT(dgq_quantize_weight(NULL, N, K, x, M, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    TRUE_OR_FAIL(q == NULL);
    EXPECT(dgq_quantize_weight(w, N, K, NULL, M, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "x is NULL");
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &cfg, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_quantize_weight(w, 0, K, x, M, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "n must be > 0");
    EXPECT(dgq_quantize_weight(w, N, 0, x, M, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "k must be > 0");
    EXPECT(dgq_quantize_weight(w, N, K, x, 0, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "m");
    EXPECT(dgq_quantize_weight(w, SIZE_MAX, 2, x, M, &cfg, &q), DGQ_STATUS_INVALID_ARGUMENT, "overflow");
    EXPECT(dgq_quantize_weight((const float *)((const char *)w + 1), N, K, x, M, &cfg, &q),
           DGQ_STATUS_INVALID_ARGUMENT, "aligned");
    /* NULL config: defaults, whose group size 128 does not divide K = 16. */
    EXPECT(dgq_quantize_weight(w, N, K, x, M, NULL, &q), DGQ_STATUS_INVALID_CONFIG, "group size");
    c2 = cfg;
    c2.group_size = 3;
    EXPECT(dgq_quantize_weight(w, N, 15, x, M, &c2, &q), DGQ_STATUS_INVALID_CONFIG, "even");
    c2 = cfg;
    c2.method = 7;
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &c2, &q), DGQ_STATUS_INVALID_ARGUMENT, "method");
    c2 = cfg;
    c2.loss = -1;
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &c2, &q), DGQ_STATUS_INVALID_ARGUMENT, "loss");
    c2 = cfg;
    c2.phase2_grid = 0;
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &c2, &q), DGQ_STATUS_INVALID_CONFIG, "phase2_grid");
    c2 = cfg;
    c2.phase1_min_ratio = NAN;
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &c2, &q), DGQ_STATUS_INVALID_CONFIG, "phase1_min_ratio");
    c2 = cfg;
    c2.method = DGQ_QUANT_RTN;
    EXPECT(dgq_quantize_weight(w, N, K, x, M, &c2, &q), DGQ_STATUS_INVALID_ARGUMENT, "RTN");
    memcpy(bad, w, sizeof w);
    bad[5] = NAN;
    EXPECT(dgq_quantize_weight(bad, N, K, x, M, &cfg, &q), DGQ_STATUS_NON_FINITE, "weight");
    memcpy(bad, x, sizeof x);
    bad[2] = INFINITY;
    EXPECT(dgq_quantize_weight(w, N, K, bad, M, &cfg, &q), DGQ_STATUS_NON_FINITE, "activations");
    TRUE_OR_FAIL(q == NULL);

    EXPECT(dgq_quantize_weight(w, N, K, x, M, &cfg, &q), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(q != NULL);
    return q;
}

static void test_weight(const dgq_weight *w) {
    dgq_weight_parts p, bad;
    dgq_weight *out = (dgq_weight *)&out;
    float f[N * K + 1];
    int8_t i8[N * K];
    uint8_t u8[N * K / 2];
    uint8_t q_copy[N * K];
    size_t n = 0;

    EXPECT(dgq_weight_get_parts(NULL, &p), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    EXPECT(dgq_weight_get_parts(w, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_weight_get_parts(w, &p), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_weight_shape(w, &n, NULL, NULL), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(n == N);

    EXPECT(dgq_weight_from_parts(NULL, &out), DGQ_STATUS_INVALID_ARGUMENT, "parts is NULL");
    TRUE_OR_FAIL(out == NULL);
    EXPECT(dgq_weight_from_parts(&p, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    bad = p;
    bad.q = NULL;
    EXPECT(dgq_weight_from_parts(&bad, &out), DGQ_STATUS_INVALID_ARGUMENT, "parts.q is NULL");
    bad = p;
    bad.s1 = (const uint16_t *)((const char *)p.s1 + 1);
    EXPECT(dgq_weight_from_parts(&bad, &out), DGQ_STATUS_INVALID_ARGUMENT, "aligned");
    bad = p;
    bad.group_size = 0;
    EXPECT(dgq_weight_from_parts(&bad, &out), DGQ_STATUS_INVALID_CONFIG, "group size");
    bad = p;
    bad.k = 0;
    EXPECT(dgq_weight_from_parts(&bad, &out), DGQ_STATUS_INVALID_ARGUMENT, "k must be > 0");
    memcpy(q_copy, p.q, sizeof q_copy);
    q_copy[3] = 16; /* not a u4 code */
    bad = p;
    bad.q = q_copy;
    EXPECT(dgq_weight_from_parts(&bad, &out), DGQ_STATUS_INVALID_DATA, "q");
    TRUE_OR_FAIL(out == NULL);
    EXPECT(dgq_weight_from_parts(&p, &out), DGQ_STATUS_OK, NULL);
    dgq_weight_free(out);

    EXPECT(dgq_weight_dequantize(NULL, f, N * K), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    EXPECT(dgq_weight_dequantize(w, NULL, N * K), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_weight_dequantize(w, f, N * K - 1), DGQ_STATUS_SHAPE_MISMATCH, "needs 128");
    EXPECT(dgq_weight_dequantize(w, (float *)((char *)f + 2), N * K), DGQ_STATUS_INVALID_ARGUMENT,
           "aligned");
    EXPECT(dgq_weight_dequantize(w, f, N * K + 1), DGQ_STATUS_OK, NULL); /* larger is fine */
    EXPECT(dgq_weight_to_int8(w, NULL, N * K), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_weight_to_int8(w, i8, 0), DGQ_STATUS_SHAPE_MISMATCH, "holds 0");
    EXPECT(dgq_weight_pack_q(NULL, u8, sizeof u8), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    EXPECT(dgq_weight_pack_q(w, u8, sizeof u8 - 1), DGQ_STATUS_SHAPE_MISMATCH, "needs 64");
    EXPECT(dgq_weight_pack_q(w, u8, sizeof u8), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL((u8[0] & 15) == p.q[0] && (u8[0] >> 4) == p.q[1]);
}

static void test_acts_and_gemm(const dgq_weight *w) {
    float x[M * K], s[M], smooth[K], y[M * N], bias[N];
    int8_t q[M * K];
    int32_t acc[M * N];
    fill(x, M * K, 3.0f);
    for (int i = 0; i < K; i++) smooth[i] = 1.0f + (float)i / K;
    for (int i = 0; i < N; i++) bias[i] = 0.5f;

    EXPECT(dgq_quantize_acts_per_token(NULL, M, K, NULL, 0, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "x is NULL");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, NULL, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "q is NULL");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, q, M * K, NULL, M),
           DGQ_STATUS_INVALID_ARGUMENT, "scales is NULL");
    EXPECT(dgq_quantize_acts_per_token(x, 0, K, NULL, 0, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "m must be > 0");
    EXPECT(dgq_quantize_acts_per_token(x, M, 0, NULL, 0, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "k must be > 0");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, q, M * K - 1, s, M),
           DGQ_STATUS_SHAPE_MISMATCH, "q holds");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, q, M * K, s, M - 1),
           DGQ_STATUS_SHAPE_MISMATCH, "scales holds");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, K, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "smooth is NULL but its length");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, smooth, 0, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "smooth is non-NULL but its length is 0");
    EXPECT(dgq_quantize_acts_per_token(x, M, K, smooth, K - 1, q, M * K, s, M),
           DGQ_STATUS_SHAPE_MISMATCH, "smooth has 15 elements");
    EXPECT(dgq_quantize_acts_per_token(x, SIZE_MAX / 2, 4, NULL, 0, q, M * K, s, M),
           DGQ_STATUS_INVALID_ARGUMENT, "overflow");
    x[7] = NAN;
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, q, M * K, s, M), DGQ_STATUS_NON_FINITE,
           NULL);
    fill(x, M * K, 3.0f);
    EXPECT(dgq_quantize_acts_per_token(x, M, K, smooth, K, q, M * K, s, M), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_quantize_acts_per_token(x, M, K, NULL, 0, q, M * K, s, M), DGQ_STATUS_OK, NULL);

    EXPECT(dgq_quantize_acts_static(x, M, K, NULL, 0, 0.0f, q, M * K), DGQ_STATUS_INVALID_CONFIG,
           "scale");
    EXPECT(dgq_quantize_acts_static(x, M, K, NULL, 0, NAN, q, M * K), DGQ_STATUS_INVALID_CONFIG,
           "scale");
    EXPECT(dgq_quantize_acts_static(x, M, K, NULL, 0, 0.1f, NULL, M * K),
           DGQ_STATUS_INVALID_ARGUMENT, "q is NULL");
    EXPECT(dgq_quantize_acts_static(x, M, K, NULL, 0, 0.1f, q, 1), DGQ_STATUS_SHAPE_MISMATCH,
           "q holds 1");

    EXPECT(dgq_w4a8_gemm_cpu(NULL, q, M, K, s, M, NULL, 0, y, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "w is NULL");
    EXPECT(dgq_w4a8_gemm_cpu(w, NULL, M, K, s, M, NULL, 0, y, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "xq is NULL");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, NULL, M, NULL, 0, y, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "x_scales is NULL");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, M, NULL, 0, NULL, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "y is NULL");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, 0, K, s, M, NULL, 0, y, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "m must be > 0");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K - 2, s, M, NULL, 0, y, M * N), DGQ_STATUS_SHAPE_MISMATCH,
           "K = 16");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, 2, NULL, 0, y, M * N), DGQ_STATUS_SHAPE_MISMATCH,
           "num_scales");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, M, bias, N - 1, y, M * N), DGQ_STATUS_SHAPE_MISMATCH,
           "bias has 7 elements");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, M, NULL, 3, y, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "bias is NULL");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, M, NULL, 0, y, M * N - 1), DGQ_STATUS_SHAPE_MISMATCH,
           "y holds 23");
    EXPECT(dgq_w4a8_gemm_cpu(w, q, M, K, s, M, bias, N, y, M * N), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_w4a8_gemm_i32_cpu(w, q, M, K, NULL, M * N), DGQ_STATUS_INVALID_ARGUMENT,
           "acc is NULL");
    EXPECT(dgq_w4a8_gemm_i32_cpu(w, q, M, K, acc, 5), DGQ_STATUS_SHAPE_MISMATCH, "acc holds 5");
    EXPECT(dgq_w4a8_gemm_i32_cpu(w, q, M, K, acc, M * N), DGQ_STATUS_OK, NULL);
}

static void test_model(const dgq_weight *w, const char *dir) {
    char path[4096], other[4096];
    dgq_model *m = (dgq_model *)&m, *a = NULL, *b = NULL;
    dgq_layer_options o = dgq_layer_options_default();
    dgq_layer_info info;
    dgq_weight *got = (dgq_weight *)&got;
    float bias[N], vec[K], f[N * K];
    size_t n = 99, idx = 99, len = 0;
    unsigned char *bytes;
    long at;
    for (int i = 0; i < N; i++) bias[i] = (float)i;
    snprintf(path, sizeof path, "%s/bad_input.dgq.safetensors", dir);

    EXPECT(dgq_model_create(NULL, NULL, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_model_create(NULL, NULL, &m), DGQ_STATUS_OK, NULL); /* NULL strings: empty */
    EXPECT(dgq_model_add_layer(NULL, "l", w, NULL), DGQ_STATUS_INVALID_ARGUMENT, "model is NULL");
    EXPECT(dgq_model_add_layer(m, NULL, w, NULL), DGQ_STATUS_INVALID_ARGUMENT, "name is NULL");
    EXPECT(dgq_model_add_layer(m, "l", NULL, NULL), DGQ_STATUS_INVALID_ARGUMENT, "w is NULL");
    EXPECT(dgq_model_add_layer(m, "", w, NULL), DGQ_STATUS_INVALID_ARGUMENT, "non-empty");
    EXPECT(dgq_model_add_layer(m, "a\nb", w, NULL), DGQ_STATUS_INVALID_ARGUMENT, "control");
    o.act_mode = 9;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_INVALID_ARGUMENT, "act_mode");
    o = dgq_layer_options_default();
    o.act_mode = DGQ_ACT_STATIC;
    o.act_scale = -1.0f;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_INVALID_ARGUMENT, "static activation scale");
    o = dgq_layer_options_default();
    o.bias = bias;
    o.bias_len = N + 1;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_SHAPE_MISMATCH, "opts.bias has 9");
    o.bias_len = 0;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_INVALID_ARGUMENT, "opts.bias");
    bias[1] = NAN;
    o.bias_len = N;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_INVALID_ARGUMENT, "bias[1]");
    bias[1] = 1.0f;
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_model_add_layer(m, "l", w, &o), DGQ_STATUS_INVALID_ARGUMENT, "already");
    EXPECT(dgq_model_add_layer(m, "k", w, NULL), DGQ_STATUS_OK, NULL);

    EXPECT(dgq_model_num_layers(NULL, &n), DGQ_STATUS_INVALID_ARGUMENT, "model is NULL");
    EXPECT(dgq_model_num_layers(m, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_model_num_layers(m, &n), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(n == 2);
    EXPECT(dgq_model_layer_info(m, 2, &info), DGQ_STATUS_INVALID_ARGUMENT, "out of range");
    EXPECT(dgq_model_layer_info(m, 0, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_model_layer_info(m, 0, &info), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(strcmp(info.name, "k") == 0 && !info.has_bias); /* name order */
    EXPECT(dgq_model_find_layer(m, "zz", &idx), DGQ_STATUS_NOT_FOUND, "zz");
    EXPECT(dgq_model_find_layer(m, NULL, &idx), DGQ_STATUS_INVALID_ARGUMENT, "name is NULL");
    EXPECT(dgq_model_find_layer(m, "l", NULL), DGQ_STATUS_INVALID_ARGUMENT, "index is NULL");
    EXPECT(dgq_model_find_layer(m, "l", &idx), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(idx == 1);
    EXPECT(dgq_model_get_weight(m, 5, &got), DGQ_STATUS_INVALID_ARGUMENT, "out of range");
    TRUE_OR_FAIL(got == NULL);
    EXPECT(dgq_model_get_weight(m, 0, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_model_get_f32(m, 0, f, N * K - 1), DGQ_STATUS_SHAPE_MISMATCH, "needs 128");
    EXPECT(dgq_model_get_bias(m, 0, vec, K), DGQ_STATUS_NOT_FOUND, "no bias");
    EXPECT(dgq_model_get_bias(m, 1, vec, N - 1), DGQ_STATUS_SHAPE_MISMATCH, "needs 8");
    EXPECT(dgq_model_get_smooth(m, 1, vec, K), DGQ_STATUS_NOT_FOUND, "no smooth");

    EXPECT(dgq_model_save(NULL, path), DGQ_STATUS_INVALID_ARGUMENT, "model is NULL");
    EXPECT(dgq_model_save(m, NULL), DGQ_STATUS_INVALID_ARGUMENT, "path is NULL");
    EXPECT(dgq_model_save(m, ""), DGQ_STATUS_INVALID_ARGUMENT, "path is empty");
    snprintf(other, sizeof other, "%s/no/such/dir/x.dgq.safetensors", dir);
    EXPECT(dgq_model_save(m, other), DGQ_STATUS_IO, "no/such/dir");
    EXPECT(dgq_model_save(m, path), DGQ_STATUS_OK, NULL);

    /* Opening: NULL, missing, a directory. */
    EXPECT(dgq_model_open(NULL, &a), DGQ_STATUS_INVALID_ARGUMENT, "path is NULL");
    EXPECT(dgq_model_open(path, NULL), DGQ_STATUS_INVALID_ARGUMENT, "out is NULL");
    EXPECT(dgq_model_open(other, &a), DGQ_STATUS_IO, "no/such/dir");
    TRUE_OR_FAIL(a == NULL);
    EXPECT(dgq_model_open(dir, &a), DGQ_STATUS_IO, NULL);

    /* Double open and close of one path: independent handles. */
    EXPECT(dgq_model_open(path, &a), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_model_open(path, &b), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(a != NULL && b != NULL && a != b);
    EXPECT(dgq_model_save(m, path), DGQ_STATUS_OK, NULL); /* atomic replace while open */
    EXPECT(dgq_model_num_layers(b, &n), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(n == 2);
    dgq_model_free(a);
    dgq_model_free(b);
    EXPECT(dgq_model_open(path, &a), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_model_get_weight(a, 1, &got), DGQ_STATUS_OK, NULL);
    EXPECT(dgq_model_get_bias(a, 1, vec, K), DGQ_STATUS_OK, NULL);
    TRUE_OR_FAIL(vec[7] == 7.0f);
    dgq_weight_free(got);
    dgq_model_free(a);
    a = NULL;

    /* Damaged files. */
    bytes = read_file(path, &len);
    TRUE_OR_FAIL(bytes != NULL && len > 64);
    if (bytes && len > 64) {
        snprintf(other, sizeof other, "%s/damaged.dgq.safetensors", dir);

        TRUE_OR_FAIL(write_file(other, bytes, 0));
        EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, NULL); /* empty */
        TRUE_OR_FAIL(write_file(other, bytes, 5));
        EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, NULL); /* shorter than the length */
        TRUE_OR_FAIL(write_file(other, bytes, len / 2));
        EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, NULL); /* truncated header */
        TRUE_OR_FAIL(write_file(other, bytes, len - 1));
        EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, NULL); /* truncated data */

        bytes[len - 1] ^= 0x10; /* a bit of the last tensor's data: its CRC no longer matches */
        TRUE_OR_FAIL(write_file(other, bytes, len));
        EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, "CRC");
        bytes[len - 1] ^= 0x10;

        at = find(bytes, len, "dgq_w4");
        TRUE_OR_FAIL(at >= 0);
        if (at >= 0) {
            unsigned char *p = bytes + at;
            while (*p != 'w') p++;
            *p ^= 0x01; /* "dgq_w4" -> "dgq_v4" inside the metadata */
            TRUE_OR_FAIL(write_file(other, bytes, len));
            EXPECT(dgq_model_open(other, &a), DGQ_STATUS_FORMAT, NULL);
            *p ^= 0x01;
        }

        at = find(bytes, len, "\"format_version\":\"1\"");
        TRUE_OR_FAIL(at >= 0);
        if (at >= 0) {
            bytes[at + strlen("\"format_version\":\"")] = '9';
            TRUE_OR_FAIL(write_file(other, bytes, len));
            EXPECT(dgq_model_open(other, &a), DGQ_STATUS_UNSUPPORTED_VERSION, "9");
        }
        TRUE_OR_FAIL(a == NULL);
        remove(other);
    }
    free(bytes);
    remove(path);
    dgq_model_free(m);
}

static void test_cuda(const dgq_weight *w) {
    dgq_cuda_weight *cw = (dgq_cuda_weight *)&cw;
    size_t bytes = 0;
    if (dgq_cuda_built()) {
        printf("bad_input: CUDA build, skipping the unsupported-status checks\n");
        return;
    }
    EXPECT(dgq_cuda_weight_upload(w, 0, NULL, &cw), DGQ_STATUS_UNSUPPORTED, "built without CUDA");
    TRUE_OR_FAIL(cw == NULL);
    dgq_cuda_gemm_config gc = dgq_cuda_gemm_config_default();
    TRUE_OR_FAIL(gc.kernel == DGQ_CUDA_KERNEL_AUTO && gc.split_k == 0);
    TRUE_OR_FAIL(gc.pdl == 1 && gc.wgmma_tma_store == 1 && gc.decode_max_cta_parts == 8);
    TRUE_OR_FAIL(gc.decode_plan_parts == 0 && gc.decode_plan_split == 0);
    /* Unsupported comes before any argument check: NULL out, bad device, dtype, m and config. */
    EXPECT(dgq_cuda_weight_upload(NULL, -1, NULL, NULL), DGQ_STATUS_UNSUPPORTED, "CUDA");
    EXPECT(dgq_cuda_gemm_workspace_size(NULL, 0, NULL, NULL), DGQ_STATUS_UNSUPPORTED, "CUDA");
    {
        dgq_cuda_gemm_config bad = gc;
        bad.kernel = 99;
        bad.pdl = 7;
        EXPECT(dgq_cuda_w4a8_gemm(NULL, NULL, 0, NULL, 5, NULL, NULL, 42, &bad, NULL, 3, NULL),
               DGQ_STATUS_UNSUPPORTED, "CUDA");
        EXPECT(dgq_cuda_w4a8_gemm_i32(NULL, NULL, 0, NULL, &bad, NULL, 3, NULL), DGQ_STATUS_UNSUPPORTED,
               "CUDA");
    }
    EXPECT(dgq_cuda_quantize_acts_per_token(-1, NULL, 9, 0, 3, NULL, NULL, NULL, NULL), DGQ_STATUS_UNSUPPORTED,
           "CUDA");
    EXPECT(dgq_cuda_quantize_acts_static(-1, NULL, 9, 0, 3, NULL, -1.0f, NULL, NULL), DGQ_STATUS_UNSUPPORTED,
           "CUDA");
    EXPECT(dgq_cuda_gemm_workspace_size(NULL, 1, NULL, &bytes), DGQ_STATUS_UNSUPPORTED, "CUDA");
    EXPECT(dgq_cuda_w4a8_gemm(NULL, NULL, 1, NULL, 1, NULL, NULL, DGQ_DTYPE_F16, &gc, NULL, 0, NULL),
           DGQ_STATUS_UNSUPPORTED, "CUDA");
    EXPECT(dgq_cuda_w4a8_gemm_i32(NULL, NULL, 1, NULL, NULL, NULL, 0, NULL),
           DGQ_STATUS_UNSUPPORTED, "CUDA");
    EXPECT(dgq_cuda_quantize_acts_per_token(0, NULL, DGQ_DTYPE_BF16, 1, 8, NULL, NULL, NULL, NULL),
           DGQ_STATUS_UNSUPPORTED, "CUDA");
    EXPECT(dgq_cuda_quantize_acts_static(0, NULL, DGQ_DTYPE_F16, 1, 8, NULL, 1.0f, NULL, NULL),
           DGQ_STATUS_UNSUPPORTED, "CUDA");
}

int main(int argc, char **argv) {
    dgq_weight *w;
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    test_errors_and_threads();
    w = test_quantize();
    if (w) {
        test_weight(w);
        test_acts_and_gemm(w);
        test_model(w, argv[1]);
        test_cuda(w);
    }
    dgq_weight_free(w);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
