// Rotary embedding, the KV-cache append and attention of one decoder layer, for the few rows of a
// decoding step or a draft tree, each row computed on its own.
//
// Why: a quantised target turns a last-bit difference in attention into another activation level,
// so a row verified inside a tree must see exactly the numbers it sees decoded alone. torch's
// attention sums in another order for one query than for several; calling it once per row keeps
// rows apart but costs ~100 us a call (28 layers x 8 rows: 20 ms a verification on the 1.5B).
// Here every (row, head) runs the same loops over the keys it sees, in cache order, whatever the
// other rows: bit-identical by construction, and a few microseconds each.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <initializer_list>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// sum_i a[i] * b[i] for n a multiple of 16, in 16 interleaved partial sums reduced in a fixed
// order: the same numbers give the same sum on every call of this build.
inline float dot(const float* a, const float* b, int64_t n) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  return _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    low = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), low);
    high = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), high);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(low, high));
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
#else
  float lanes[16] = {0.0f};
  for (int64_t i = 0; i < n; i += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += a[i + l] * b[i + l];
  float total = 0.0f;
  for (int l = 0; l < 16; ++l) total += lanes[l];
  return total;
#endif
}

// o[i] += p * v[i], i < n (a multiple of 16).
inline void add_scaled(float* o, float p, const float* v, int64_t n) {
#if defined(__AVX512F__)
  const __m512 scale = _mm512_set1_ps(p);
  for (int64_t i = 0; i < n; i += 16)
    _mm512_storeu_ps(o + i, _mm512_fmadd_ps(scale, _mm512_loadu_ps(v + i), _mm512_loadu_ps(o + i)));
#else
  for (int64_t i = 0; i < n; ++i) o[i] += p * v[i];
#endif
}

// scores[m] = dot(q, the key at positions[m]) * scale for m < n. Four keys at a time where AVX-512
// is at hand: four independent sums where one dot's chain of dependent multiply-adds left the core
// waiting (each key's sum is still exactly `dot`'s).
inline void key_scores(const float* q, const float* keys, const int64_t* positions, int64_t n, int64_t d, float scale,
                       float* scores) {
  int64_t m = 0;
#if defined(__AVX512F__)
  for (; m + 4 <= n; m += 4) {
    const float* k[4] = {keys + positions[m] * d, keys + positions[m + 1] * d, keys + positions[m + 2] * d,
                         keys + positions[m + 3] * d};
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < d; i += 16) {
      const __m512 x = _mm512_loadu_ps(q + i);
      for (int j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(x, _mm512_loadu_ps(k[j] + i), acc[j]);
    }
    for (int j = 0; j < 4; ++j) scores[m + j] = _mm512_reduce_add_ps(acc[j]) * scale;
  }
#endif
  for (; m < n; ++m) scores[m] = dot(q, keys + positions[m] * d, d) * scale;
}

#if defined(__AVX512F__)
// o = (sum over m of p[m] * the value at positions[m]) * inverse, d = 16 C, the sum in registers.
template <int C>
void weighted_values(const float* values, const int64_t* positions, const float* p, int64_t n, float inverse, float* o) {
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t m = 0; m < n; ++m) {
    const float* v = values + positions[m] * 16 * C;
    const __m512 scale = _mm512_set1_ps(p[m]);
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(scale, _mm512_loadu_ps(v + 16 * c), acc[c]);
  }
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(inverse)));
}
#endif

// The same sums in memory, for any d (a multiple of 16) and any CPU.
inline void weighted_values(const float* values, const int64_t* positions, const float* p, int64_t n, float inverse,
                            float* o, int64_t d) {
#if defined(__AVX512F__)
  if (d == 64) return weighted_values<4>(values, positions, p, n, inverse, o);
  if (d == 128) return weighted_values<8>(values, positions, p, n, inverse, o);
#endif
  std::fill(o, o + d, 0.0f);
  for (int64_t m = 0; m < n; ++m) add_scaled(o, p[m], values + positions[m] * d, d);
  for (int64_t c = 0; c < d; ++c) o[c] *= inverse;
}

// p[m] = exp(p[m] - largest) for m < n; returns their sum, taken in order. Where AVX-512 is at hand
// exp is computed 16 at a time (Cephes' expf: n ln 2 split off, a degree-7 polynomial, 2^n by
// scalef; within 1 ulp of glibc's expf on every float in [-87, 0]), each value alone: a score's weight never depends on its neighbours.
// glibc's expf, one at a time, was most of a tree's attention.
inline float exponentials(float* p, int64_t n, float largest) {
#if defined(__AVX512F__)
  const __m512 top = _mm512_set1_ps(largest);
  for (int64_t m = 0; m < n; m += 16) {
    const __mmask16 valid = n - m >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - m)) - 1);
    const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(valid, p + m), top);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
      y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    _mm512_mask_storeu_ps(p + m, valid, _mm512_scalef_ps(y, k));
  }
  float total = 0.0f;
  for (int64_t m = 0; m < n; ++m) total += p[m];
  return total;
#else
  float total = 0.0f;
  for (int64_t m = 0; m < n; ++m) {
    p[m] = std::exp(p[m] - largest);
    total += p[m];
  }
  return total;
#endif
}

// x (d values) rotated in place by the half-split rotary convention (transformers' rotate_half).
inline void rotate(float* x, const float* cos, const float* sin, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

}  // namespace

// qkv [T, (heads + 2 kv_heads) * d] float32: the layer's projections of T new tokens (bias and any
// q/k norm applied). cos, sin [T, d]: their rotary tables. keys, values [kv_heads, capacity, d]:
// the layer's cache, the T new entries written at start..start+T-1 (rotated keys). seen [T,
// start+T] bool, or an empty tensor for a single token that sees every position: which cache
// positions each row attends to. Returns [T, heads * d] float32.
torch::Tensor attend(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                     torch::Tensor keys, torch::Tensor values, int64_t start, const torch::Tensor& seen,
                     int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == torch::kFloat32 && qkv.is_contiguous(), "qkv: [T, width] float32");
  TORCH_CHECK(keys.dim() == 3 && keys.stride(2) == 1 && keys.stride(1) == keys.size(2) && values.strides() == keys.strides(),
              "keys and values: [kv_heads, capacity, d] with contiguous rows");
  const int64_t T = qkv.size(0), d = keys.size(2), end = start + T, group = heads / kv_heads;
  TORCH_CHECK(qkv.size(1) == (heads + 2 * kv_heads) * d && end <= keys.size(1), "shapes disagree");
  TORCH_CHECK(d % 16 == 0, "head size must be a multiple of 16");
  TORCH_CHECK(!seen.defined() || seen.numel() == 0 || (seen.size(0) == T && seen.size(1) == end && seen.is_contiguous()),
              "seen: [T, start + T] bool");
  TORCH_CHECK(seen.numel() != 0 || T == 1, "several rows need `seen`");
  const float* pqkv = qkv.data_ptr<float>();
  const float* pcos = cos.contiguous().data_ptr<float>();
  const float* psin = sin.contiguous().data_ptr<float>();
  float* pk = keys.data_ptr<float>();
  float* pv = values.data_ptr<float>();
  const int64_t kv_stride = keys.stride(0), width = qkv.size(1);
  const bool* pseen = seen.numel() ? seen.data_ptr<bool>() : nullptr;

  for (int64_t t = 0; t < T; ++t) {
    const float* row = pqkv + t * width;
    for (int64_t h = 0; h < kv_heads; ++h) {
      float* k = pk + h * kv_stride + (start + t) * d;
      std::copy(row + (heads + h) * d, row + (heads + h + 1) * d, k);
      rotate(k, pcos + t * d, psin + t * d, d);
      std::copy(row + (heads + kv_heads + h) * d, row + (heads + kv_heads + h + 1) * d, pv + h * kv_stride + (start + t) * d);
    }
  }

  torch::Tensor out = torch::empty({T, heads * d}, qkv.options());
  float* po = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, T * heads, 1, [&](int64_t begin, int64_t stop) {
    std::vector<float> q(d), scores(end);
    std::vector<int64_t> positions(end);
    for (int64_t i = begin; i < stop; ++i) {
      const int64_t t = i / heads, h = i % heads, kv = h / group;
      std::copy(pqkv + t * width + h * d, pqkv + t * width + (h + 1) * d, q.begin());
      rotate(q.data(), pcos + t * d, psin + t * d, d);
      int64_t n = 0;
      for (int64_t j = 0; j < end; ++j)
        if (pseen == nullptr || pseen[t * end + j]) positions[n++] = j;
      key_scores(q.data(), pk + kv * kv_stride, positions.data(), n, d, scale, scores.data());
      float largest = -INFINITY;
      for (int64_t m = 0; m < n; ++m) largest = std::max(largest, scores[m]);
      const float total = exponentials(scores.data(), n, largest);
      weighted_values(pv + kv * kv_stride, positions.data(), scores.data(), n, 1.0f / total, po + t * heads * d + h * d, d);
    }
  });
  return out;
}
