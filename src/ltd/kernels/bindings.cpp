// The extension's functions, one module for all of ltd's kernels.
#include <torch/extension.h>

#include <string>
#include <vector>

std::string path();
torch::Tensor linear(const torch::Tensor& x, const std::vector<torch::Tensor>& codes,
                     const std::vector<torch::Tensor>& sub, const std::vector<torch::Tensor>& d,
                     const std::vector<int64_t>& formats, bool portable, const torch::Tensor& norm, double eps);
torch::Tensor attend(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                     torch::Tensor keys, torch::Tensor values, int64_t start, const torch::Tensor& seen,
                     int64_t heads, int64_t kv_heads);
double dot_peak(int64_t rounds);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "x @ W.T for W in GGUF k-quant blocks (gguf_linear.cpp)");
  m.def("path", &path, "the SIMD path this build runs");
  m.def("dot_peak", &dot_peak, "multiply-adds a second of the dot-product instructions (dot_peak.cpp)");
  m.def("attend", &attend, "rotary, cache append and attention, each row on its own (attention.cpp)");
}
