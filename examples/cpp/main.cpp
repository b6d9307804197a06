// C++ consumer of libdgq through the RAII wrapper in dgq.hpp: quantize a layer with DGQ, save it,
// reopen the file, run the W4A8 GEMM on the CPU and compare with the float product; check that a
// failing call surfaces as dgq::Error with the right status. Every handle is released by its
// owner (the test script runs this under valgrind).
//
// Usage: dgq_cpp_example [FILE]   (the packed file to write; default: dgq-cpp-example.dgq.safetensors)
#include "dgq.hpp"

#include <cmath>
#include <cstdio>
#include <random>

namespace {

constexpr std::size_t N = 96, K = 128, G = 32, M = 5, T = 64;

int failures = 0;

void expect(bool cond, const char *what) {
    if (!cond) {
        std::fprintf(stderr, "CHECK FAILED: %s\n", what);
        ++failures;
    }
}

std::vector<float> random(std::size_t n, float scale, std::mt19937 &rng) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

} // namespace

int main(int argc, char **argv) {
    const std::string path = argc > 1 ? argv[1] : "dgq-cpp-example.dgq.safetensors";
    std::mt19937 rng(7);
    auto w = random(N * K, 0.05f, rng), xcal = random(T * K, 1.0f, rng), x = random(M * K, 1.0f, rng);
    auto bias = random(N, 0.1f, rng);
    try {
        dgq_quant_config cfg = dgq_quant_config_default();
        cfg.group_size = G;
        {
            dgq::Model out = dgq::Model::create("examples/cpp synthetic", "dgq-search g32");
            dgq_layer_options opts = dgq_layer_options_default();
            opts.bias = bias.data();
            opts.bias_len = bias.size();
            out.add_layer("decoder.0.fc1", dgq::Weight::quantize(w.data(), N, K, xcal.data(), T, cfg), opts);
            out.save(path);
        } // model and weight freed here

        dgq::Model model = dgq::Model::open(path);
        for (std::size_t i = 0; i < model.size(); ++i) {
            dgq_layer_info li = model.info(i);
            std::printf("layer %zu: %s [%zu, %zu] g%zu\n", i, li.name, li.shape[0], li.shape[1], li.group_size);
        }
        const std::size_t idx = model.find("decoder.0.fc1");
        dgq::Weight wq = model.weight(idx);
        expect(wq.n() == N && wq.k() == K && wq.group_size() == G, "shape round trip");
        std::vector<float> b = model.bias(idx);
        expect(b == bias, "bias round trip");

        dgq::QuantizedActs xq = dgq::quantize_per_token(x, M, K);
        std::vector<float> y = dgq::w4a8_gemm(wq, xq, &b);

        // Float reference and the two error sources on their own (see examples/c).
        std::vector<float> wd = wq.dequantize();
        double num = 0, num_w = 0, num_a = 0, den = 0;
        for (std::size_t m = 0; m < M; ++m)
            for (std::size_t n = 0; n < N; ++n) {
                double ref = b[n], ref_w = b[n], ref_a = b[n];
                for (std::size_t k = 0; k < K; ++k) {
                    ref += double(x[m * K + k]) * w[n * K + k];
                    ref_w += double(x[m * K + k]) * wd[n * K + k];
                    ref_a += double(xq.q[m * K + k]) * xq.scales[m] * w[n * K + k];
                }
                const double e = y[m * N + n] - ref;
                num += e * e;
                num_w += (ref_w - ref) * (ref_w - ref);
                num_a += (ref_a - ref) * (ref_a - ref);
                den += ref * ref;
            }
        std::printf("NMSE vs float: W4A8 %.3e (weights only %.3e, activations only %.3e)\n", num / den,
                    num_w / den, num_a / den);
        expect(num < 1.25 * (num_w + num_a), "W4A8 error is about the sum of its two sources");

        // Errors become exceptions with the library's status and message.
        bool threw = false;
        try {
            dgq::Model::open(path + ".missing");
        } catch (const dgq::Error &e) {
            threw = e.status() == DGQ_STATUS_IO;
            std::printf("expected error: %s\n", e.what());
        }
        expect(threw, "opening a missing file throws dgq::Error(DGQ_STATUS_IO)");
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected error: %s\n", e.what());
        return 1;
    }
    std::remove(path.c_str());
    std::printf("dgq_cpp_example: %s\n", failures == 0 ? "all checks passed" : "FAILED");
    return failures == 0 ? 0 : 1;
}
