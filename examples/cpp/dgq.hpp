// dgq.hpp: a thin C++17 RAII layer over the C API of libdgq (dgq.h).
//
// Handles become move-only owners (std::unique_ptr with the matching *_free), failed calls throw
// dgq::Error carrying the status and the library's message, and buffers are std::vector.
// Header-only; link with libdgq as for C.
#pragma once

#include <dgq.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace dgq {

/// A failed libdgq call: its status and the thread's last error message.
class Error : public std::runtime_error {
  public:
    Error(dgq_status status, const std::string &what)
        : std::runtime_error(what), status_(status) {}
    dgq_status status() const noexcept { return status_; }

  private:
    dgq_status status_;
};

/// Throws dgq::Error unless `s` is DGQ_STATUS_OK.
inline void check(dgq_status s, const char *call) {
    if (s == DGQ_STATUS_OK) return;
    std::vector<char> buf(dgq_last_error_message(nullptr, 0) + 1);
    dgq_last_error_message(buf.data(), buf.size());
    throw Error(s, std::string(call) + ": " + dgq_status_name(static_cast<int32_t>(s)) + ": " +
                       buf.data());
}

namespace detail {
template <class T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
} // namespace detail

/// INT8 activations [m, k] with their scales ([m] per token, [1] per tensor).
struct QuantizedActs {
    std::size_t m = 0, k = 0;
    std::vector<int8_t> q;
    std::vector<float> scales;
};

/// A DGQ W4 weight [N, K].
class Weight {
  public:
    /// Quantizes `w` [n, k]; calibration `x` [m, k] for DGQ_QUANT_SEARCH (nullptr, 0 for RTN).
    static Weight quantize(const float *w, std::size_t n, std::size_t k, const float *x,
                           std::size_t m, const dgq_quant_config &cfg) {
        dgq_weight *h = nullptr;
        check(dgq_quantize_weight(w, n, k, x, m, &cfg, &h), "dgq_quantize_weight");
        return Weight(h);
    }
    /// Builds (and validates) a weight from canonical parts.
    static Weight from_parts(const dgq_weight_parts &p) {
        dgq_weight *h = nullptr;
        check(dgq_weight_from_parts(&p, &h), "dgq_weight_from_parts");
        return Weight(h);
    }
    /// Borrowed views of the canonical arrays, valid while this weight lives.
    dgq_weight_parts parts() const {
        dgq_weight_parts p;
        check(dgq_weight_get_parts(h_.get(), &p), "dgq_weight_get_parts");
        return p;
    }
    std::size_t n() const { return parts().n; }
    std::size_t k() const { return parts().k; }
    std::size_t group_size() const { return parts().group_size; }
    /// s1 · S2 · (q − z) as f32 [N, K].
    std::vector<float> dequantize() const {
        std::vector<float> out(n() * k());
        check(dgq_weight_dequantize(h_.get(), out.data(), out.size()), "dgq_weight_dequantize");
        return out;
    }
    const dgq_weight *get() const noexcept { return h_.get(); }

  private:
    explicit Weight(dgq_weight *h) : h_(h) {}
    friend class Model;
    std::unique_ptr<dgq_weight, detail::Deleter<dgq_weight, dgq_weight_free>> h_;
};

/// A packed model: open a file and read its layers, or collect layers and save them.
class Model {
  public:
    static Model create(const std::string &source_model, const std::string &method) {
        dgq_model *h = nullptr;
        check(dgq_model_create(source_model.c_str(), method.c_str(), &h), "dgq_model_create");
        return Model(h);
    }
    static Model open(const std::string &path) {
        dgq_model *h = nullptr;
        check(dgq_model_open(path.c_str(), &h), "dgq_model_open");
        return Model(h);
    }
    void save(const std::string &path) const {
        check(dgq_model_save(h_.get(), path.c_str()), "dgq_model_save");
    }
    void add_layer(const std::string &name, const Weight &w,
                   const dgq_layer_options &opts = dgq_layer_options_default()) {
        check(dgq_model_add_layer(h_.get(), name.c_str(), w.get(), &opts), "dgq_model_add_layer");
    }
    std::size_t size() const {
        std::size_t n = 0;
        check(dgq_model_num_layers(h_.get(), &n), "dgq_model_num_layers");
        return n;
    }
    dgq_layer_info info(std::size_t i) const {
        dgq_layer_info li;
        check(dgq_model_layer_info(h_.get(), i, &li), "dgq_model_layer_info");
        return li;
    }
    std::size_t find(const std::string &name) const {
        std::size_t i = 0;
        check(dgq_model_find_layer(h_.get(), name.c_str(), &i), "dgq_model_find_layer");
        return i;
    }
    Weight weight(std::size_t i) const {
        dgq_weight *h = nullptr;
        check(dgq_model_get_weight(h_.get(), i, &h), "dgq_model_get_weight");
        return Weight(h);
    }
    std::vector<float> bias(std::size_t i) const {
        std::vector<float> b(info(i).shape[0]);
        check(dgq_model_get_bias(h_.get(), i, b.data(), b.size()), "dgq_model_get_bias");
        return b;
    }

  private:
    explicit Model(dgq_model *h) : h_(h) {}
    std::unique_ptr<dgq_model, detail::Deleter<dgq_model, dgq_model_free>> h_;
};

/// Dynamic per-token INT8 quantization of x [m, k] (row-major).
inline QuantizedActs quantize_per_token(const std::vector<float> &x, std::size_t m,
                                        std::size_t k) {
    if (x.size() != m * k) throw std::invalid_argument("quantize_per_token: x.size() != m * k");
    QuantizedActs a{m, k, std::vector<int8_t>(m * k), std::vector<float>(m)};
    check(dgq_quantize_acts_per_token(x.data(), m, k, nullptr, 0, a.q.data(), a.q.size(),
                                      a.scales.data(), a.scales.size()),
          "dgq_quantize_acts_per_token");
    return a;
}

/// The W4A8 GEMM on the CPU: y [m, N] = (s_x ⊗ s1) · (xq · W_s8ᵀ) (+ bias).
inline std::vector<float> w4a8_gemm(const Weight &w, const QuantizedActs &x,
                                    const std::vector<float> *bias = nullptr) {
    std::vector<float> y(x.m * w.n());
    check(dgq_w4a8_gemm_cpu(w.get(), x.q.data(), x.m, x.k, x.scales.data(), x.scales.size(),
                            bias ? bias->data() : nullptr, bias ? bias->size() : 0, y.data(),
                            y.size()),
          "dgq_w4a8_gemm_cpu");
    return y;
}

} // namespace dgq
