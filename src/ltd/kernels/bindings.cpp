// The extension's functions, one module for all of ltd's kernels.
#include <torch/extension.h>

#include <string>
#include <vector>

std::string path();
torch::Tensor linear(const torch::Tensor& x, const std::vector<torch::Tensor>& codes,
                     const std::vector<torch::Tensor>& sub, const std::vector<torch::Tensor>& d,
                     const std::vector<int64_t>& formats, bool portable, const torch::Tensor& norm, double eps,
                     int64_t amx_rows);
std::vector<torch::Tensor> panel_q4_k(const torch::Tensor& codes, const torch::Tensor& sub, const torch::Tensor& d);
bool panels_built();
bool panels_amx();
torch::Tensor attend(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                     torch::Tensor keys, torch::Tensor values, int64_t start, const torch::Tensor& seen,
                     int64_t heads, int64_t kv_heads);
double dot_peak(int64_t rounds);
void bind_layers(pybind11::module& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Named arguments: callers pass all but the first by name.
  m.def("linear", &linear, "x @ W.T for W in GGUF k-quant blocks (gguf_linear.cpp)", py::arg("x"), py::arg("codes"),
        py::arg("sub"), py::arg("d"), py::arg("formats"), py::arg("portable"), py::arg("norm"), py::arg("eps"), py::arg("amx_rows"));
  m.def("panel_q4_k", &panel_q4_k, "Q4_K blocks as panels of 16 output rows (panels.cpp)");
  m.def("panels_built", &panels_built, "whether this build runs Q4_K panels (AVX-512 VNNI)");
  m.def("panels_amx", &panels_amx, "whether Q4_K panels run on AMX here (built with it, and Linux grants it)");
  m.def("path", &path, "the SIMD path this build runs");
  m.def("dot_peak", &dot_peak, "multiply-adds a second of the dot-product instructions (dot_peak.cpp)");
  m.def("attend", &attend, "rotary, cache append and attention, each row on its own (attention.cpp)", py::arg("qkv"),
        py::arg("cos"), py::arg("sin"), py::arg("keys"), py::arg("values"), py::arg("start"), py::arg("seen"),
        py::arg("heads"), py::arg("kv_heads"));
  bind_layers(m);
}
