// A decoder's layers on GGUF blocks in one call, for one sequence. The Python loop over layers
// spent ~140 us a layer between the kernels (argument lists, views, dispatch): 8 % of a step of the
// 1.5B and 13 % of the 0.5B's. The same kernels and the same ATen element-wise ops run here in the
// same order, so the bits are those of ltd.models.decoder's loop.
#include <torch/extension.h>

#include <utility>
#include <vector>

torch::Tensor linear(const torch::Tensor& x, const std::vector<torch::Tensor>& codes,
                     const std::vector<torch::Tensor>& sub, const std::vector<torch::Tensor>& d,
                     const std::vector<int64_t>& formats, bool portable, const torch::Tensor& norm, double eps,
                     int64_t amx_rows);
torch::Tensor attend(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                     torch::Tensor keys, torch::Tensor values, int64_t start, const torch::Tensor& seen,
                     int64_t heads, int64_t kv_heads);

namespace {

struct Matrix {
  std::vector<torch::Tensor> codes, sub, d;
  std::vector<int64_t> formats;
};

class Layers {
 public:
  // matrices: per layer its q/k/v, o, gate/up and down, each as its parts' [codes, sub, d, codes,
  // ...]; formats: per matrix its parts' formats; norms: per layer its input and post-attention RMS
  // norms; biases: per layer the q/k/v bias, or an empty tensor.
  Layers(const std::vector<std::vector<torch::Tensor>>& matrices, const std::vector<std::vector<int64_t>>& formats,
         std::vector<torch::Tensor> norms, std::vector<torch::Tensor> biases, int64_t heads, int64_t kv_heads,
         double eps)
      : norms_(std::move(norms)), biases_(std::move(biases)), heads_(heads), kv_heads_(kv_heads), eps_(eps) {
    TORCH_CHECK(matrices.size() == formats.size() && matrices.size() == 4 * biases_.size() &&
                    norms_.size() == 2 * biases_.size(), "four matrices, two norms and a bias per layer");
    for (size_t m = 0; m < matrices.size(); ++m) {
      TORCH_CHECK(matrices[m].size() == 3 * formats[m].size(), "codes, sub and d for every part");
      Matrix matrix{{}, {}, {}, formats[m]};
      for (size_t p = 0; p < formats[m].size(); ++p) {
        matrix.codes.push_back(matrices[m][3 * p]);
        matrix.sub.push_back(matrices[m][3 * p + 1]);
        matrix.d.push_back(matrices[m][3 * p + 2]);
      }
      matrices_.push_back(std::move(matrix));
    }
  }

  // x [T, hidden] float32 through every layer: keys, values [layers, 1, kv_heads, capacity, d] the
  // cache (the T new entries written from `start`), cos, sin and seen as attention.cpp's `attend`
  // takes them. Returns the residual stream after the last layer.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& keys,
                        const torch::Tensor& values, int64_t start, const torch::Tensor& seen, int64_t amx_rows) const {
    const torch::Tensor none = torch::empty({0}, x.options());
    for (size_t i = 0; i < biases_.size(); ++i) {
      const Matrix &qkv = matrices_[4 * i], &o = matrices_[4 * i + 1], &gate_up = matrices_[4 * i + 2],
                   &down = matrices_[4 * i + 3];
      torch::Tensor projected = apply(x, qkv, norms_[2 * i], amx_rows);
      if (biases_[i].numel()) projected = projected + biases_[i];
      const torch::Tensor attended = attend(projected.contiguous(), cos, sin, keys[i][0], values[i][0], start, seen,
                                            heads_, kv_heads_);
      x = x + apply(attended, o, none, amx_rows);
      const std::vector<torch::Tensor> halves = apply(x, gate_up, norms_[2 * i + 1], amx_rows).chunk(2, -1);
      x = x + apply(torch::silu(halves[0]) * halves[1], down, none, amx_rows);
    }
    return x;
  }

 private:
  torch::Tensor apply(const torch::Tensor& x, const Matrix& w, const torch::Tensor& norm, int64_t amx_rows) const {
    return linear(x, w.codes, w.sub, w.d, w.formats, false, norm, eps_, amx_rows);
  }

  std::vector<Matrix> matrices_;
  std::vector<torch::Tensor> norms_, biases_;
  int64_t heads_, kv_heads_;
  double eps_;
};

}  // namespace

void bind_layers(pybind11::module& m) {
  pybind11::class_<Layers>(m, "Layers", "a decoder's layers on GGUF blocks, run in one call (layers.cpp)")
      .def(pybind11::init<const std::vector<std::vector<torch::Tensor>>&, const std::vector<std::vector<int64_t>>&,
                          std::vector<torch::Tensor>, std::vector<torch::Tensor>, int64_t, int64_t, double>(),
           pybind11::arg("matrices"), pybind11::arg("formats"), pybind11::arg("norms"), pybind11::arg("biases"),
           pybind11::arg("heads"), pybind11::arg("kv_heads"), pybind11::arg("eps"))
      .def("forward", &Layers::forward, pybind11::arg("x"), pybind11::arg("cos"), pybind11::arg("sin"),
           pybind11::arg("keys"), pybind11::arg("values"), pybind11::arg("start"), pybind11::arg("seen"),
           pybind11::arg("amx_rows"));
}
