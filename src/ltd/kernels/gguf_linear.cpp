// x @ W.T for W kept in a GGUF's own k-quant blocks (Q4_K, Q6_K), for a few rows of x at a time.
//
// Why a kernel: a decoding step streams every weight once. With W in 4-6 bits that is ~1 GB for a
// 1.5B model, and the step is bound by memory, not by arithmetic. Verifying a tree of 8-16 tokens
// should then cost about one step, but only if each weight block is read and unpacked once and
// applied to every row while it sits in registers. llama.cpp reads the block once per row (8 rows
// cost it ~6 steps on a 2-core EPYC), fbgemm quantises the activations of a whole call on one scale
// (a row's result then depends on its batch). Here:
//   - activations are quantised per row, per block of 256, to int8 (127 levels): a row's output
//     depends on that row alone, and every row runs the same instructions in the same order, so a
//     row decoded alone and the same row inside a tree give bit-identical results;
//   - weight codes are unsigned (0..15 or 0..63) and multiplied by the int8 activations with
//     AVX-512 VNNI (vpdpbusd: 64 products a cycle), AVX2 (vpmaddubsw + vpmaddwd) or plain C++;
//   - integer sums are exact; each of a block's 16 groups of 16 weights has its own float scale a
//     and offset b (w = a * code - b), applied per SIMD lane in float32.
//
// The layout (made by ltd.kernels.blocks.repack). A block is 256 consecutive weights of one output
// row. Its codes form 4 chunks of 64 bytes; byte 4l+j of chunk c holds weight 16l+4c+j, so SIMD
// lane l (4 bytes of each chunk) sees exactly group l. Stored per block:
//   Q4_K: 128 bytes of codes (chunk 0 low nibbles | chunk 1 high, chunk 2 low | chunk 3 high),
//         sub = 8 scales then 8 mins (6-bit values, group l uses sub-block l/2), d and dmin (fp16):
//         a_l = d * scale[l/2], b_l = dmin * min[l/2].
//   Q6_K: the low 4 bits as Q4_K, then 64 bytes of high bits (bits 2c, 2c+1 of byte p: chunk c,
//         byte p), sub = 16 signed scales, d (fp16): a_l = d * scale[l], b_l = 32 a_l.
// The activations of a row in the same order: q (int8), and per block its scale s and, per group,
// s * (sum of the group's q).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LTD_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LTD_AVX2 1
#include <immintrin.h>
#endif

namespace {

constexpr int kBlock = 256;
constexpr int kGroups = 16;
enum Format { Q4_K = 0, Q6_K = 1, Q4_K_PANELS = 2 };  // the last: panels.cpp's layout

int code_bytes(int format) { return format == Q4_K ? 128 : 192; }
constexpr int kPanel = 16;

float half_to_float(const int16_t* p) {
  c10::Half h;
  std::memcpy(&h, p, 2);
  return static_cast<float>(h);
}

// Per block: the groups' scale a and offset b, in float.
void group_scales(int format, const uint8_t* sub, const int16_t* d, float* a, float* b) {
  if (format == Q4_K) {
    const float scale = half_to_float(d), min = half_to_float(d + 1);
    for (int l = 0; l < kGroups; ++l) {
      a[l] = scale * static_cast<float>(sub[l / 2]);
      b[l] = min * static_cast<float>(sub[8 + l / 2]);
    }
  } else {
    const float scale = half_to_float(d);
    for (int l = 0; l < kGroups; ++l) {
      a[l] = scale * static_cast<float>(static_cast<int8_t>(sub[l]));
      b[l] = 32.0f * a[l];
    }
  }
}

// The 256 codes of a block, in the kernel's order (chunk c, byte p).
void unpack_codes(int format, const uint8_t* codes, uint8_t* out) {
  for (int half = 0; half < 2; ++half) {
    for (int p = 0; p < 64; ++p) {
      const uint8_t v = codes[64 * half + p];
      out[128 * half + p] = v & 0x0F;
      out[128 * half + 64 + p] = v >> 4;
    }
  }
  if (format == Q6_K) {
    for (int c = 0; c < 4; ++c)
      for (int p = 0; p < 64; ++p) out[64 * c + p] |= ((codes[128 + p] >> (2 * c)) & 3) << 4;
  }
}

struct Activations {
  torch::Tensor q;      // [R, K] int8, in the kernel's order
  torch::Tensor scale;  // [R, K / 256] float
  torch::Tensor sums;   // [R, K / 256, 16] float: scale * sum of each group's q
  torch::Tensor offsets;  // [R, K / 256, 16] int32: -32 * sum of each group's q (Q6_K's offset, exact)
  // For panels only (else empty): q in weight order, its rows padded with zeros to a multiple of 16
  // (AMX loads 16 at a time), and the sum of each sub-block's q.
  torch::Tensor natural;   // [R padded, K] int8
  torch::Tensor sub_sums;  // [R, K / 256, 8] float
};

// 1 / sqrt(mean(x^2) + eps) of each row of px [R, columns], summed in 16 interleaved lanes in a
// fixed order.
std::vector<float> inverse_rms(const float* px, int64_t R, int64_t columns, float eps) {
  std::vector<float> inverse(R);
  for (int64_t r = 0; r < R; ++r) {
    float lanes[16] = {0.0f};
    for (int64_t k = 0; k < columns; ++k) lanes[k % 16] += px[r * columns + k] * px[r * columns + k];
    float total = 0.0f;
    for (int l = 0; l < 16; ++l) total += lanes[l];
    inverse[r] = 1.0f / std::sqrt(total / static_cast<float>(columns) + eps);
  }
  return inverse;
}

// Each row on its own: a block's scale is its largest magnitude / 127 (or 1 for an all-zero
// block), q = x * (127 / largest), rounded half to even. With `norm` ([K]) the row is first RMS-
// normalised and scaled by it, (x / rms) * norm, as the decoder's layers do before their matrices.
// x [R, columns] for a weight of K >= columns columns (padded to whole blocks): the activations past
// x's columns are zeros, padded here rather than by a copy of x (a torch call per matrix).
Activations quantize_rows(const torch::Tensor& x, const torch::Tensor& norm, double eps, int64_t K, bool panels) {
  const int64_t R = x.size(0), columns = x.size(1), nb = K / kBlock;
  Activations act{torch::empty({R, K}, torch::kInt8), torch::empty({R, nb}, torch::kFloat32),
                  torch::empty({R, nb, kGroups}, torch::kFloat32), torch::empty({R, nb, kGroups}, torch::kInt32),
                  panels ? torch::zeros({(R + kPanel - 1) / kPanel * kPanel, K}, torch::kInt8) : torch::Tensor(),
                  panels ? torch::empty({R, nb, 8}, torch::kFloat32) : torch::Tensor()};
  int8_t* pnatural = panels ? act.natural.data_ptr<int8_t>() : nullptr;
  float* psub = panels ? act.sub_sums.data_ptr<float>() : nullptr;
  const float* px = x.data_ptr<float>();
  int8_t* pq = act.q.data_ptr<int8_t>();
  float* ps = act.scale.data_ptr<float>();
  float* psum = act.sums.data_ptr<float>();
  int32_t* poffset = act.offsets.data_ptr<int32_t>();
  const bool normed = norm.defined() && norm.numel() > 0;
  const float* pnorm = normed ? norm.data_ptr<float>() : nullptr;
  const std::vector<float> inverse_rms_of = normed ? inverse_rms(px, R, columns, static_cast<float>(eps)) : std::vector<float>();
  at::parallel_for(0, R * nb, 16, [&](int64_t begin, int64_t end) {
    float y[kBlock];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / nb, b = i % nb;
      const int64_t first = b * kBlock, count = std::min<int64_t>(kBlock, columns - first);
      const float* v = px + r * columns + first;
      if (normed || count < kBlock) {
        for (int k = 0; k < count; ++k) y[k] = normed ? (v[k] * inverse_rms_of[r]) * pnorm[first + k] : v[k];
        std::fill(y + count, y + kBlock, 0.0f);
        v = y;
      }
      float largest = 0.0f;
      for (int k = 0; k < kBlock; ++k) largest = std::max(largest, std::fabs(v[k]));
      const float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
      const float scale = largest > 0.0f ? largest / 127.0f : 1.0f;
      int8_t* q = pq + r * K + b * kBlock;
      for (int l = 0; l < kGroups; ++l) {
        int sum = 0;
        for (int c = 0; c < 4; ++c) {
          for (int j = 0; j < 4; ++j) {
            const int level = static_cast<int>(std::nearbyint(v[16 * l + 4 * c + j] * inverse));
            q[64 * c + 4 * l + j] = static_cast<int8_t>(level);
            sum += level;
          }
        }
        psum[i * kGroups + l] = scale * static_cast<float>(sum);
        poffset[i * kGroups + l] = -32 * sum;
        if (panels && l % 2 == 1) psub[i * 8 + l / 2] = static_cast<float>(-(poffset[i * kGroups + l - 1] + poffset[i * kGroups + l]) / 32);
      }
      if (panels)
        for (int c = 0; c < 4; ++c)
          for (int l = 0; l < kGroups; ++l)
            std::memcpy(pnatural + r * K + b * kBlock + 16 * l + 4 * c, q + 64 * c + 4 * l, 4);
      ps[i] = scale;
    }
  });
  return act;
}

struct Weights {
  const uint8_t* codes;
  const uint8_t* sub;
  const int16_t* d;
  int format;
  int64_t nb;
  int64_t first;  // the output column of the part's first row
};

// Plain C++: any CPU. The same sums in the same order as the SIMD paths would not be worth the
// trouble; what matters is that a row's result does not depend on the other rows.
void rows_portable(const Weights& w, const Activations& act, int64_t n0, int64_t n1, float* out, int64_t N) {
  const int64_t R = act.q.size(0), K = act.q.size(1), cb = code_bytes(w.format);
  const int8_t* pq = act.q.data_ptr<int8_t>();
  const float* ps = act.scale.data_ptr<float>();
  const float* psum = act.sums.data_ptr<float>();
  uint8_t codes[kBlock];
  float a[kGroups], b[kGroups];
  std::vector<float> acc(R * kGroups);
  for (int64_t n = n0; n < n1; ++n) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t blk = 0; blk < w.nb; ++blk) {
      const int64_t at = (n - w.first) * w.nb + blk;
      unpack_codes(w.format, w.codes + at * cb, codes);
      group_scales(w.format, w.sub + at * kGroups, w.d + at * 2, a, b);
      for (int64_t r = 0; r < R; ++r) {
        const int8_t* q = pq + r * K + blk * kBlock;
        const float s = ps[r * w.nb + blk];
        for (int l = 0; l < kGroups; ++l) {
          int dot = 0;
          for (int c = 0; c < 4; ++c)
            for (int j = 0; j < 4; ++j) dot += codes[64 * c + 4 * l + j] * q[64 * c + 4 * l + j];
          float& lane = acc[r * kGroups + l];
          lane = std::fma(a[l], static_cast<float>(dot) * s, lane);
          lane = std::fma(-b[l], psum[(r * w.nb + blk) * kGroups + l], lane);
        }
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      float total = 0.0f;
      for (int l = 0; l < kGroups; ++l) total += acc[r * kGroups + l];
      out[r * N + n] = total;
    }
  }
}

#if defined(LTD_AVX512) || defined(LTD_AVX2)
// The blocks a row reads are consecutive, yet the hardware prefetcher alone left one row's step at
// about half the memory's bandwidth: asking for the block 32 ahead (~5 KB) ran it 2.3x faster at
// one row, 1.4x at 8 (the 2-core AVX-512 EPYC).
constexpr int64_t kAhead = 32;

inline void prefetch(const Weights& w, int64_t at, int64_t cb) {
  const char* codes = reinterpret_cast<const char*>(w.codes + (at + kAhead) * cb);
  for (int64_t line = 0; line < cb; line += 64) _mm_prefetch(codes + line, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(w.sub + (at + kAhead) * kGroups), _MM_HINT_T0);
}
#endif

#if defined(LTD_AVX512)
// The block's codes as 4 vectors of 64 unsigned bytes.
inline void load_codes(int format, const uint8_t* codes, __m512i* v) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i first = _mm512_loadu_si512(codes), second = _mm512_loadu_si512(codes + 64);
  v[0] = _mm512_and_si512(first, low);
  v[1] = _mm512_and_si512(_mm512_srli_epi16(first, 4), low);
  v[2] = _mm512_and_si512(second, low);
  v[3] = _mm512_and_si512(_mm512_srli_epi16(second, 4), low);
  if (format == Q6_K) {
    const __m512i high = _mm512_loadu_si512(codes + 128), two = _mm512_set1_epi8(0x03);
    for (int c = 0; c < 4; ++c) {
      const __m512i bits = _mm512_and_si512(_mm512_srli_epi16(high, 2 * c), two);
      v[c] = _mm512_or_si512(v[c], _mm512_slli_epi16(bits, 4));
    }
  }
}

// The block's fp16 d (and dmin) in float: [d, dmin, 0, 0].
inline __m128 load_d(const int16_t* d) {
  int32_t both;
  std::memcpy(&both, d, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(both));
}

inline void load_scales(int format, const uint8_t* sub, const int16_t* d, __m512* a, __m512* b) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sub));
  if (format == Q4_K) {
    // [scale_0..7, min_0..7] * [d x 8, dmin x 8], then group l takes sub-block l/2 of each half.
    const __m512 twice = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                               _mm512_castps128_ps512(load_d(d)));
    const __m512 both = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), twice);
    *a = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), both);
    *b = _mm512_permutexvar_ps(_mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15), both);
  } else {
    *a = _mm512_mul_ps(_mm512_broadcastss_ps(load_d(d)), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)));
    *b = _mm512_mul_ps(_mm512_set1_ps(32.0f), *a);
  }
}

// Output rows n0..n1 for RT activation rows starting at row r0. Q6_K's offset (32 a) is exact in
// integers: -32 * the group's sum is added to its dot products, one float instruction fewer a row
// (starting the products from it instead ran 8 rows 18 % slower).
template <int RT, bool Q6>
void tile_avx512(const Weights& w, const Activations& act, int64_t r0, int64_t n0, int64_t n1, float* out,
                 int64_t N) {
  const int64_t K = act.q.size(1), cb = code_bytes(w.format);
  const int8_t* pq = act.q.data_ptr<int8_t>() + r0 * K;
  const float* ps = act.scale.data_ptr<float>() + r0 * w.nb;
  const float* psum = act.sums.data_ptr<float>() + r0 * w.nb * kGroups;
  const int32_t* poffset = act.offsets.data_ptr<int32_t>() + r0 * w.nb * kGroups;
  for (int64_t n = n0; n < n1; ++n) {
    __m512 acc[RT];
    for (int r = 0; r < RT; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t blk = 0; blk < w.nb; ++blk) {
      const int64_t at = (n - w.first) * w.nb + blk;
      __m512i v[4];
      __m512 a, b;
      prefetch(w, at, cb);
      load_codes(w.format, w.codes + at * cb, v);
      load_scales(w.format, w.sub + at * kGroups, w.d + at * 2, &a, &b);
      for (int r = 0; r < RT; ++r) {
        const int8_t* q = pq + r * K + blk * kBlock;
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(q));
        dot = _mm512_dpbusd_epi32(dot, v[1], _mm512_loadu_si512(q + 64));
        dot = _mm512_dpbusd_epi32(dot, v[2], _mm512_loadu_si512(q + 128));
        dot = _mm512_dpbusd_epi32(dot, v[3], _mm512_loadu_si512(q + 192));
        if (Q6) dot = _mm512_add_epi32(dot, _mm512_loadu_si512(poffset + (r * w.nb + blk) * kGroups));
        const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(ps[r * w.nb + blk]));
        acc[r] = _mm512_fmadd_ps(a, scaled, acc[r]);
        if (!Q6) acc[r] = _mm512_fnmadd_ps(b, _mm512_loadu_ps(psum + (r * w.nb + blk) * kGroups), acc[r]);
      }
    }
    for (int r = 0; r < RT; ++r) out[(r0 + r) * N + n] = _mm512_reduce_add_ps(acc[r]);
  }
}

template <int RT>
void tile_avx512(const Weights& w, const Activations& act, int64_t r0, int64_t n0, int64_t n1, float* out,
                 int64_t N) {
  if (w.format == Q6_K)
    tile_avx512<RT, true>(w, act, r0, n0, n1, out, N);
  else
    tile_avx512<RT, false>(w, act, r0, n0, n1, out, N);
}

constexpr int kTile = 8;
#define LTD_TILE tile_avx512
#endif

#if defined(LTD_AVX2)
inline __m256 half_ps(const int16_t* d) { return _mm256_set1_ps(half_to_float(d)); }

// A chunk's 64 codes as two vectors of 32 unsigned bytes (lanes 0-7 and 8-15).
inline void load_codes(int format, const uint8_t* codes, __m256i* v) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int half = 0; half < 2; ++half) {
    for (int part = 0; part < 2; ++part) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * half + 32 * part));
      v[2 * (2 * half) + part] = _mm256_and_si256(raw, low);
      v[2 * (2 * half + 1) + part] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
    }
  }
  if (format == Q6_K) {
    const __m256i two = _mm256_set1_epi8(0x03);
    for (int part = 0; part < 2; ++part) {
      const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 128 + 32 * part));
      for (int c = 0; c < 4; ++c) {
        const __m256i bits = _mm256_and_si256(_mm256_srli_epi16(high, 2 * c), two);
        v[2 * c + part] = _mm256_or_si256(v[2 * c + part], _mm256_slli_epi16(bits, 4));
      }
    }
  }
}

template <int RT>
void tile_avx2(const Weights& w, const Activations& act, int64_t r0, int64_t n0, int64_t n1, float* out,
               int64_t N) {
  const int64_t K = act.q.size(1), cb = code_bytes(w.format);
  const int8_t* pq = act.q.data_ptr<int8_t>() + r0 * K;
  const float* ps = act.scale.data_ptr<float>() + r0 * w.nb;
  const float* psum = act.sums.data_ptr<float>() + r0 * w.nb * kGroups;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t n = n0; n < n1; ++n) {
    __m256 acc[RT][2];
    for (int r = 0; r < RT; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < w.nb; ++blk) {
      const int64_t at = (n - w.first) * w.nb + blk;
      __m256i v[8];
      float a[kGroups], b[kGroups];
      prefetch(w, at, cb);
      load_codes(w.format, w.codes + at * cb, v);
      group_scales(w.format, w.sub + at * kGroups, w.d + at * 2, a, b);
      for (int part = 0; part < 2; ++part) {
        const __m256 pa = _mm256_loadu_ps(a + 8 * part), pb = _mm256_loadu_ps(b + 8 * part);
        for (int r = 0; r < RT; ++r) {
          const int8_t* q = pq + r * K + blk * kBlock + 32 * part;
          __m256i dot = _mm256_setzero_si256();
          for (int c = 0; c < 4; ++c) {
            const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * c));
            dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(v[2 * c + part], qa), ones));
          }
          const __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(ps[r * w.nb + blk]));
          acc[r][part] = _mm256_fmadd_ps(pa, scaled, acc[r][part]);
          acc[r][part] = _mm256_fnmadd_ps(pb, _mm256_loadu_ps(psum + (r * w.nb + blk) * kGroups + 8 * part),
                                          acc[r][part]);
        }
      }
    }
    for (int r = 0; r < RT; ++r) {
      const __m256 sum8 = _mm256_add_ps(acc[r][0], acc[r][1]);
      __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
      sum4 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
      sum4 = _mm_add_ss(sum4, _mm_movehdup_ps(sum4));
      out[(r0 + r) * N + n] = _mm_cvtss_f32(sum4);
    }
  }
}

constexpr int kTile = 4;
#define LTD_TILE tile_avx2
#endif

#if defined(LTD_TILE)
void rows_simd(const Weights& w, const Activations& act, int64_t n0, int64_t n1, float* out, int64_t N) {
  const int64_t R = act.q.size(0);
  // Output rows in slices that keep their weights in cache while every tile of rows reads them.
  constexpr int64_t kSlice = 16;
  for (int64_t s0 = n0; s0 < n1; s0 += kSlice) {
    const int64_t s1 = std::min(n1, s0 + kSlice);
    for (int64_t r0 = 0; r0 < R; r0 += kTile) {
      switch (std::min<int64_t>(kTile, R - r0)) {
        case 1: LTD_TILE<1>(w, act, r0, s0, s1, out, N); break;
        case 2: LTD_TILE<2>(w, act, r0, s0, s1, out, N); break;
        case 3: LTD_TILE<3>(w, act, r0, s0, s1, out, N); break;
#if defined(LTD_AVX512)
        case 4: LTD_TILE<4>(w, act, r0, s0, s1, out, N); break;
        case 5: LTD_TILE<5>(w, act, r0, s0, s1, out, N); break;
        case 6: LTD_TILE<6>(w, act, r0, s0, s1, out, N); break;
        case 7: LTD_TILE<7>(w, act, r0, s0, s1, out, N); break;
        default: LTD_TILE<8>(w, act, r0, s0, s1, out, N); break;
#else
        default: LTD_TILE<4>(w, act, r0, s0, s1, out, N); break;
#endif
      }
    }
  }
}
#endif

}  // namespace

// Which path this build runs: "avx512-vnni", "avx2" or "portable".
std::string path() {
#if defined(LTD_AVX512)
  return "avx512-vnni";
#elif defined(LTD_AVX2)
  return "avx2";
#else
  return "portable";
#endif
}

// The 256 codes of a Q4_K block in weight order (panels.cpp rearranges them).
void q4_k_natural_codes(const uint8_t* codes, uint8_t* natural) {
  uint8_t ordered[kBlock];
  unpack_codes(Q4_K, codes, ordered);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < kGroups; ++l)
      for (int j = 0; j < 4; ++j) natural[16 * l + 4 * c + j] = ordered[64 * c + 4 * l + j];
}

void panel_rows(const uint8_t* codes, const uint8_t* sub, const int16_t* d, int64_t nb, const int8_t* q,
                const float* scale, const float* sub_sums, int64_t R, int64_t K, int64_t p0, int64_t p1, float* out,
                int64_t N, int64_t column0, int64_t amx_rows);

// x [R, columns] float32 times W [N, K], K the multiple of 256 at or just above `columns` (a weight's
// columns padded with zeros to whole blocks), W given as parts stacked by rows (q, k and v, say,
// each in its own format): part i is codes[i] [N_i, K/256, code bytes], sub[i] [N_i, K/256, 16]
// bytes, d[i] [N_i, K/256, 2] fp16, in formats[i] (Q4_K_PANELS: panel_q4_k's tensors, N_i / 16 of
// each). Returns [R, sum of N_i] float32. x is quantised once for all parts (RMS-normalised first by
// `norm` [columns] when norm is not empty); output rows are shared out among threads, 16 at a time.
// Panels run on AMX from `amx_rows` rows of x (0: never), bit for bit as without.
torch::Tensor linear(const torch::Tensor& x, const std::vector<torch::Tensor>& codes,
                     const std::vector<torch::Tensor>& sub, const std::vector<torch::Tensor>& d,
                     const std::vector<int64_t>& formats, bool portable, const torch::Tensor& norm, double eps,
                     int64_t amx_rows) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "x must be [rows, K] float32");
  TORCH_CHECK(!codes.empty() && codes.size() == sub.size() && codes.size() == d.size() &&
                  codes.size() == formats.size(), "one codes, sub, d and format per part");
  std::vector<Weights> parts;
  std::vector<int64_t> first{0};
  bool panels = false;
  for (size_t i = 0; i < codes.size(); ++i) {
    const int64_t format = formats[i], nb = codes[i].size(1);
    TORCH_CHECK(format == Q4_K || format == Q6_K || format == Q4_K_PANELS, "format must be 0 (Q4_K), 1 (Q6_K) or 2 (Q4_K panels)");
    TORCH_CHECK(x.size(1) <= nb * kBlock && x.size(1) > (nb - 1) * kBlock, "x has ", x.size(1),
                " columns, the weight ", nb * kBlock);
    const bool panel = format == Q4_K_PANELS;
    TORCH_CHECK(codes[i].size(2) == (panel ? 2048 : code_bytes(format)) && codes[i].is_contiguous() &&
                    sub[i].is_contiguous() && d[i].is_contiguous() && d[i].scalar_type() == torch::kHalf,
                "weight blocks in the wrong layout");
    TORCH_CHECK(!panel || !portable, "Q4_K panels have no portable path");
    panels = panels || panel;
    parts.push_back({codes[i].data_ptr<uint8_t>(), sub[i].data_ptr<uint8_t>(),
                     reinterpret_cast<const int16_t*>(d[i].data_ptr<at::Half>()), static_cast<int>(format), nb,
                     first.back()});
    first.push_back(first.back() + codes[i].size(0) * (panel ? kPanel : 1));
  }
  const int64_t N = first.back();
  for (size_t i = 0; panels && i < parts.size(); ++i)
    TORCH_CHECK(first[i] % kPanel == 0, "with Q4_K panels, every part starts at a multiple of 16 rows");
  TORCH_CHECK(norm.numel() == 0 || (norm.numel() == x.size(1) && norm.scalar_type() == torch::kFloat32 &&
                                     norm.is_contiguous()), "norm must be [columns] float32");
  const Activations act = quantize_rows(x.contiguous(), norm, eps, parts[0].nb * kBlock, panels);
  torch::Tensor out = torch::empty({x.size(0), N}, x.options());
  float* po = out.data_ptr<float>();
  const int64_t R = x.size(0), K = parts[0].nb * kBlock;
  at::parallel_for(0, (N + kPanel - 1) / kPanel, 4, [&](int64_t u0, int64_t u1) {
    const int64_t n0 = u0 * kPanel, n1 = std::min(N, u1 * kPanel);
    for (size_t i = 0; i < parts.size(); ++i) {
      const int64_t begin = std::max(n0, first[i]), end = std::min(n1, first[i + 1]);
      if (begin >= end) continue;
      const Weights& w = parts[i];
      if (w.format == Q4_K_PANELS) {
        panel_rows(w.codes, w.sub, w.d, w.nb, act.natural.data_ptr<int8_t>(), act.scale.data_ptr<float>(),
                   act.sub_sums.data_ptr<float>(), R, K, (begin - w.first) / kPanel, (end - w.first) / kPanel, po, N,
                   w.first, amx_rows);
        continue;
      }
#if defined(LTD_TILE)
      if (!portable) {
        rows_simd(w, act, begin, end, po, N);
        continue;
      }
#endif
      rows_portable(w, act, begin, end, po, N);
    }
  });
  return out;
}
